//! Attaching virtio devices over virtio-mmio: one transport per `-device`, allocated in the
//! machine's virtio-mmio window (QEMU microvm's 0xfeb00000 on microvm; on pc and q35 0xfef00000,
//! outside the 32-bit PCI window firmware assigns BARs from), with KVM ioeventfds for queue
//! notifications and an interrupt line each.
//!
//! As QEMU microvm (hw/i386/microvm.c): with ACPI the transports are announced in the DSDT
//! (LNRO0005, level-triggered GSIs from 16), without ACPI on the kernel command line
//! (`virtio_mmio.device=`, ISA IRQs from 5, edge-triggered). QEMU puts the ACPI lines on a second
//! IOAPIC (GSI 24+) unless `ioapic2=off`; rvmm has one IOAPIC and uses the `ioapic2=off` layout.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::interrupts::Resampler;
use crate::VmmError;
use rvmm_block::{Disk, DiskEvents, DiskOptions, ImageFormat};
use rvmm_cli::VirtioDeviceConfig;
use rvmm_devices::virtio::block::BlockDevice;
use rvmm_devices::virtio::mmio::QUEUE_NOTIFY;
use rvmm_devices::virtio::net::NetDevice;
use rvmm_devices::virtio::pci::VirtioPciTransport;
use rvmm_devices::virtio::rng::RngDevice;
use rvmm_devices::virtio::{MmioSlot, MmioTransport, VirtioDevice, VIRTIO_MMIO_SIZE};
use rvmm_devices::IrqLine;
use std::sync::Arc;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// First interrupt line without ACPI (QEMU microvm: `virtio_irq_base = 5`).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// First interrupt line with ACPI and one IOAPIC (QEMU microvm: `virtio_irq_base = 16`).
pub const VIRTIO_IRQ_BASE_ACPI: u32 = 16;
/// Transports QEMU microvm creates with one IOAPIC.
pub const VIRTIO_MAX_DEVICES: usize = 8;

/// The VM's virtio devices and where they sit.
#[derive(Default)]
pub struct VirtioDevices {
    transports: Vec<(MmioSlot, Arc<MmioTransport>)>,
    /// virtio-pci functions (where, transport), attached after the PCI bus exists.
    pci: Vec<(rvmm_devices::pci::PciLoc, Arc<VirtioPciTransport>)>,
    /// ACPI describes the devices (level-triggered lines); otherwise the command line does.
    acpi: bool,
    /// Device numbering, continued by the virtio-pci devices.
    pub(crate) counts: Counts,
}

impl VirtioDevices {
    /// The transports as the DSDT announces them (LNRO0005 nodes).
    pub fn acpi_devices(&self) -> Vec<rvmm_arch::acpi::VirtioMmioDevice> {
        self.transports
            .iter()
            .enumerate()
            .map(|(i, (s, _))| rvmm_arch::acpi::VirtioMmioDevice {
                index: i as u8,
                base: s.base as u32,
                size: s.size as u32,
                gsi: s.irq,
            })
            .collect()
    }

    /// ` virtio_mmio.device=512@0xfeb00000:5 ...` (empty without devices, and with ACPI, where
    /// the DSDT announces them: QEMU microvm's `microvm_machine_reset`).
    pub fn cmdline_suffix(&self) -> String {
        if self.acpi {
            return String::new();
        }
        self.transports
            .iter()
            .map(|(s, _)| format!(" {}", s.cmdline_param()))
            .collect()
    }

    /// One interrupt line per transport, for the platform's interrupt controller: edge-triggered
    /// ISA lines without ACPI; with ACPI level-triggered lines (as the DSDT says), whose
    /// resamples (served by the event loop) re-raise a line while InterruptStatus is set.
    pub fn irq_lines(&self) -> Result<(Vec<IrqLine>, Vec<Resampler>), VmmError> {
        let io_err = |what| move |source| VmmError::Io { what, source };
        let mut lines = Vec::new();
        let mut resamples = Vec::new();
        for (slot, t) in &self.transports {
            let trigger = t
                .interrupt()
                .eventfd()
                .try_clone()
                .map_err(io_err("dup virtio interrupt eventfd"))?;
            let resample = if self.acpi {
                let evt = EventFd::new(EFD_NONBLOCK).map_err(io_err("virtio resample eventfd"))?;
                let interrupt = t.interrupt().clone();
                resamples.push(Resampler::new(
                    evt.try_clone().map_err(io_err("dup resample eventfd"))?,
                    Box::new(move || interrupt.resample()),
                ));
                Some(evt)
            } else {
                None
            };
            lines.push(IrqLine {
                gsi: slot.irq,
                trigger,
                resample,
            });
        }
        Ok((lines, resamples))
    }

    /// Add the virtio-pci functions (the PCI bus resets them with the machine).
    pub fn add_pci(&mut self, functions: &[crate::virtio_pci::VirtioPciFunction]) {
        self.pci
            .extend(functions.iter().map(|f| (f.loc, f.transport.clone())));
    }

    /// Take a hot-unplugged virtio-pci function out, its worker stopped; None if `loc` is not
    /// one.
    pub fn remove_pci(
        &mut self,
        loc: rvmm_devices::pci::PciLoc,
    ) -> Option<Arc<VirtioPciTransport>> {
        let i = self.pci.iter().position(|(l, _)| *l == loc)?;
        let (_, t) = self.pci.remove(i);
        t.shutdown();
        Some(t)
    }

    /// Every device's counters, for the statistics report.
    pub fn stats_sources(&self) -> Vec<crate::exit_stats::DeviceSource> {
        let mmio = self
            .transports
            .iter()
            .map(|(slot, t)| crate::exit_stats::DeviceSource {
                device: t.device_name(),
                at: format!("virtio-mmio@{:#x}", slot.base),
                counters: t.counters().clone(),
            });
        let pci = self
            .pci
            .iter()
            .map(|(loc, t)| crate::exit_stats::DeviceSource {
                device: t.device_name(),
                // rvmm's bus index: the guest may number the buses differently.
                at: format!(
                    "virtio-pci@{:02x}:{:02x}.{}",
                    loc.bus,
                    loc.slot(),
                    loc.function()
                ),
                counters: t.counters().clone(),
            });
        mmio.chain(pci).collect()
    }

    /// Flush every disk (the clean-shutdown hook: power-off, reset under -no-reboot, signals,
    /// QMP quit).
    pub fn flush(&self) {
        for (_, t) in &self.transports {
            t.flush();
        }
        for (_, t) in &self.pci {
            t.flush();
        }
    }

    /// VM paused (QMP `stop`, `-S`): the device workers take no new request until `resume`.
    pub fn pause(&self) {
        for (_, t) in &self.transports {
            t.pause();
        }
        for (_, t) in &self.pci {
            t.pause();
        }
    }

    /// VM resumed: the workers catch up on the notifications that arrived while paused.
    pub fn resume(&self) {
        for (_, t) in &self.transports {
            t.resume();
        }
        for (_, t) in &self.pci {
            t.resume();
        }
    }

    /// Flush and stop every device worker (VM teardown).
    pub fn shutdown(&self) {
        for (_, t) in &self.transports {
            t.shutdown();
        }
        for (_, t) in &self.pci {
            t.shutdown();
        }
    }

    /// System reset: devices return to their power-on state (the driver reinitializes them).
    /// virtio-pci functions are reset with the PCI bus.
    pub fn reset(&self) {
        for (_, t) in &self.transports {
            t.shutdown();
            rvmm_devices::BusDevice::write(t.as_ref(), 0x70, &0u32.to_le_bytes());
        }
    }
}

/// Numbers the devices of one VM as they are built.
#[derive(Default)]
pub(crate) struct Counts {
    nics: u8,
    disks: usize,
    /// The virtio-input devices, for the input router (keys and the pointer go to one while its
    /// driver runs it).
    pub(crate) inputs: Vec<rvmm_devices::virtio::input::InputHandle>,
    /// User networks whose passt is still starting (the builder watches them once the VM can
    /// be stopped).
    pub(crate) passt: Vec<crate::passt::Starting>,
    /// The balloon (at most one), for QMP and the event loop.
    pub(crate) balloon: Option<crate::qmp::Balloon>,
}

pub(crate) fn build_device(
    cfg: &VirtioDeviceConfig,
    mem: &GuestMemoryMmap,
    counts: &mut Counts,
    disk_events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
) -> Result<Box<dyn VirtioDevice>, DeviceManagerError> {
    Ok(match cfg {
        VirtioDeviceConfig::Rng => Box::new(RngDevice::new()),
        VirtioDeviceConfig::Balloon(b) => {
            use rvmm_devices::virtio::balloon::{BalloonDevice, BalloonOptions};
            let options = BalloonOptions {
                deflate_on_oom: b.deflate_on_oom,
                free_page_reporting: b.free_page_reporting,
                page_poison: b.page_poison,
            };
            let dev = BalloonDevice::new(options, mem.iter().map(|r| r.len()).sum()).map_err(
                |source| DeviceManagerError::Io {
                    name: "virtio-balloon".into(),
                    source,
                },
            )?;
            counts.balloon = Some(crate::qmp::Balloon {
                id: b.id.clone(),
                // virtio_pci.rs renames it when it puts the device on PCI.
                type_name: "virtio-balloon-device",
                shared: dev.shared(),
            });
            Box::new(dev)
        }
        VirtioDeviceConfig::Input { kind, serial } => {
            use rvmm_devices::virtio::input::{InputDevice, InputKind};
            let kind = match kind {
                rvmm_cli::InputKind::Tablet => InputKind::Tablet,
                rvmm_cli::InputKind::Keyboard => InputKind::Keyboard,
                rvmm_cli::InputKind::Mouse => InputKind::Mouse,
            };
            let dev = InputDevice::new(kind, serial.as_deref()).map_err(|source| {
                DeviceManagerError::Io {
                    name: "virtio-input".into(),
                    source,
                }
            })?;
            counts.inputs.push(dev.handle());
            Box::new(dev)
        }
        VirtioDeviceConfig::Block(d) => {
            let opts = DiskOptions {
                path: d.file.clone(),
                format: d.format.as_deref().and_then(ImageFormat::from_name),
                readonly: d.readonly,
                direct: d.direct,
                locking: d.locking,
                snapshot: d.snapshot,
                share_rw: d.share_rw,
            };
            let (disk, warning) = Disk::open(&opts).map_err(DeviceManagerError::Disk)?;
            if let Some(w) = warning {
                tracing::warn!("{w}");
            }
            // QEMU's name for a drive without id= on if=virtio: virtio0, virtio1, ...
            let name =
                d.id.clone()
                    .unwrap_or_else(|| format!("virtio{}", counts.disks));
            counts.disks += 1;
            disk.set_events(disk_events(name));
            Box::new(BlockDevice::new(disk, d.serial.as_deref()))
        }
        VirtioDeviceConfig::Net { backend, mac } => {
            let backend = crate::netdev::open_backend(backend, counts.nics, &mut counts.passt)?;
            // QEMU's default: 52:54:00:12:34:56, the last byte counting NICs.
            let mac = mac.unwrap_or([
                0x52,
                0x54,
                0x00,
                0x12,
                0x34,
                0x56u8.wrapping_add(counts.nics),
            ]);
            counts.nics = counts.nics.wrapping_add(1);
            Box::new(NetDevice::new(backend, mac))
        }
    })
}

/// Create `devices` (at most [`VIRTIO_MAX_DEVICES`]), place their transports in the machine's
/// virtio-mmio window and connect their notifications to KVM. `acpi`: the DSDT announces them
/// (level-triggered lines from [`VIRTIO_IRQ_BASE_ACPI`]); otherwise the kernel command line does.
/// `disk_events` gives, for a drive's name, who hears of its I/O errors (QMP's BLOCK_IO_ERROR).
pub fn attach_virtio(
    dm: &DeviceManager,
    devices: &[VirtioDeviceConfig],
    acpi: bool,
    mem: &Arc<GuestMemoryMmap>,
    disk_events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
) -> Result<VirtioDevices, DeviceManagerError> {
    let mut out = VirtioDevices {
        transports: Vec::new(),
        pci: Vec::new(),
        acpi,
        counts: Counts::default(),
    };
    if devices.len() > VIRTIO_MAX_DEVICES {
        return Err(DeviceManagerError::TooManyVirtioDevices {
            requested: devices.len(),
            max: VIRTIO_MAX_DEVICES,
        });
    }
    let irq_base = if acpi {
        VIRTIO_IRQ_BASE_ACPI
    } else {
        VIRTIO_IRQ_BASE
    };
    for (i, cfg) in devices.iter().enumerate() {
        let device = build_device(cfg, mem, &mut out.counts, disk_events)?;
        let name = device.name();
        let base = dm.allocate_virtio_mmio(name, VIRTIO_MMIO_SIZE)?;
        let slot = MmioSlot {
            base,
            size: VIRTIO_MMIO_SIZE,
            irq: irq_base + i as u32,
        };
        let t =
            MmioTransport::new(device, mem.clone()).map_err(|source| DeviceManagerError::Io {
                name: format!("{name}: virtio-mmio eventfds"),
                source,
            })?;
        let t = Arc::new(t);
        for (q, evt) in t.queue_notify_fds().iter().enumerate() {
            dm.vm()
                .register_ioevent(evt, slot.base + QUEUE_NOTIFY, q as u32)
                .map_err(|source| DeviceManagerError::Hypervisor {
                    name: format!("{name}: queue {q} notification"),
                    source,
                })?;
        }
        dm.add_mmio("virtio-mmio", slot.base, slot.size, t.clone())?;
        tracing::debug!(name, base = slot.base, irq = slot.irq, "virtio-mmio device");
        out.transports.push((slot, t));
    }
    if !out.transports.is_empty() {
        let all = out.transports.iter().map(|(_, t)| t.clone()).collect();
        dm.states()
            .register("virtio-mmio", Arc::new(TransportStates(all)));
    }
    Ok(out)
}

/// Every virtio-mmio transport's state, in transport order (they share the bus name).
struct TransportStates(Vec<Arc<MmioTransport>>);

impl rvmm_devices::Persist for TransportStates {
    type State = Vec<rvmm_devices::virtio::TransportState>;

    fn save(&self) -> Self::State {
        self.0.iter().map(|t| t.save()).collect()
    }

    fn restore(&self, states: Self::State) -> Result<(), rvmm_devices::StateError> {
        if states.len() != self.0.len() {
            return Err(rvmm_devices::StateError::Invalid(format!(
                "virtio-mmio: {} transports in the snapshot, {} here",
                states.len(),
                self.0.len()
            )));
        }
        for (t, s) in self.0.iter().zip(states) {
            t.restore(s)?;
        }
        Ok(())
    }
}
