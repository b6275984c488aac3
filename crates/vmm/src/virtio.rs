//! Attaching virtio devices over virtio-mmio: one transport per `-device`, at QEMU microvm's
//! addresses, with KVM ioeventfds for queue notifications and irqfds for interrupts.

use crate::VmmError;
use rvmm_block::{Disk, DiskOptions, ImageFormat};
use rvmm_cli::{IrqchipMode, TapConfig, VirtioDeviceConfig, VmConfig};
use rvmm_devices::virtio::block::BlockDevice;
use rvmm_devices::virtio::mmio::QUEUE_NOTIFY;
use rvmm_devices::virtio::net::NetDevice;
use rvmm_devices::virtio::rng::RngDevice;
use rvmm_devices::virtio::tap::Tap;
use rvmm_devices::virtio::{MmioSlot, MmioTransport, VirtioDevice, VIRTIO_MMIO_SIZE};
use rvmm_devices::Bus;
use rvmm_hypervisor::Vm;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// First transport (QEMU microvm: `VIRTIO_MMIO_BASE`).
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// First interrupt line (QEMU microvm without ACPI: `virtio_irq_base = 5`).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Transports QEMU microvm creates with one IOAPIC.
pub const VIRTIO_MAX_DEVICES: usize = 8;

/// The VM's virtio devices and where they sit.
#[derive(Default)]
pub struct VirtioDevices {
    transports: Vec<(MmioSlot, Arc<MmioTransport>)>,
}

impl VirtioDevices {
    /// The windows and lines, for the kernel command line and the ACPI DSDT (LNRO0005 nodes).
    pub fn slots(&self) -> Vec<MmioSlot> {
        self.transports.iter().map(|(s, _)| *s).collect()
    }

    /// ` virtio_mmio.device=512@0xfeb00000:5 ...` (empty without devices).
    pub fn cmdline_suffix(&self) -> String {
        self.transports
            .iter()
            .map(|(s, _)| format!(" {}", s.cmdline_param()))
            .collect()
    }

    /// Put the transports on the MMIO bus.
    pub fn insert_into(&self, mmio: &mut Bus) -> Result<(), VmmError> {
        for (slot, t) in &self.transports {
            mmio.insert(slot.base, slot.size, t.clone())
                .map_err(|source| VmmError::Bus {
                    what: "virtio-mmio",
                    source,
                })?;
        }
        Ok(())
    }

    /// Flush every disk (the clean-shutdown hook: power-off, reset under -no-reboot, signals,
    /// QMP quit).
    pub fn flush(&self) {
        for (_, t) in &self.transports {
            t.flush();
        }
    }

    /// Flush and stop every device worker (VM teardown).
    pub fn shutdown(&self) {
        for (_, t) in &self.transports {
            t.shutdown();
        }
    }

    /// System reset: devices return to their power-on state (the driver reinitializes them).
    pub fn reset(&self) {
        for (_, t) in &self.transports {
            t.shutdown();
            rvmm_devices::BusDevice::write(t.as_ref(), 0x70, &0u32.to_le_bytes());
        }
    }
}

fn device_err(what: &'static str) -> impl FnOnce(String) -> VmmError {
    move |msg| VmmError::Device { what, msg }
}

fn build_device(
    cfg: &VirtioDeviceConfig,
    nic_index: &mut u8,
) -> Result<Box<dyn VirtioDevice>, VmmError> {
    Ok(match cfg {
        VirtioDeviceConfig::Rng => Box::new(RngDevice::new()),
        VirtioDeviceConfig::Block(d) => {
            let opts = DiskOptions {
                path: d.file.clone(),
                format: d.format.as_deref().and_then(ImageFormat::from_name),
                readonly: d.readonly,
                direct: d.direct,
            };
            let (disk, warning) =
                Disk::open(&opts).map_err(|e| device_err("virtio-blk")(e.to_string()))?;
            if let Some(w) = warning {
                eprintln!("rvmm: warning: {w}");
            }
            Box::new(BlockDevice::new(disk, d.serial.as_deref()))
        }
        VirtioDeviceConfig::Net { tap, mac } => {
            let (what, tap) = match tap {
                TapConfig::Name(name) => (format!("tap '{name}'"), Tap::open(name)),
                TapConfig::Fd(fd) => (
                    format!("tap fd {fd}"),
                    // SAFETY: `fd=` hands rvmm an inherited descriptor that nothing else in this
                    // process uses (QEMU's contract for -netdev tap,fd=).
                    unsafe { Tap::from_raw_fd(*fd) },
                ),
            };
            let tap = tap.map_err(|e| device_err("virtio-net")(format!("{what}: {e}")))?;
            // QEMU's default: 52:54:00:12:34:56, the last byte counting NICs.
            let mac = mac.unwrap_or([
                0x52,
                0x54,
                0x00,
                0x12,
                0x34,
                0x56u8.wrapping_add(*nic_index),
            ]);
            *nic_index = nic_index.wrapping_add(1);
            Box::new(NetDevice::new(tap, mac))
        }
    })
}

/// Create the configured devices and connect their notifications and interrupts to KVM.
pub fn attach(
    config: &VmConfig,
    vm: &Vm,
    mem: &Arc<GuestMemoryMmap>,
) -> Result<VirtioDevices, VmmError> {
    let mut out = VirtioDevices::default();
    let mut nic_index = 0u8;
    if config.virtio.len() > VIRTIO_MAX_DEVICES {
        return Err(device_err("virtio-mmio")(format!(
            "{} virtio devices requested; at most {VIRTIO_MAX_DEVICES} are supported",
            config.virtio.len()
        )));
    }
    for (i, cfg) in config.virtio.iter().enumerate() {
        let slot = MmioSlot {
            base: VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE,
            size: VIRTIO_MMIO_SIZE,
            irq: VIRTIO_IRQ_BASE + i as u32,
        };
        let device = build_device(cfg, &mut nic_index)?;
        let name = device.name();
        let t = MmioTransport::new(device, mem.clone()).map_err(|source| VmmError::Io {
            what: "virtio-mmio eventfds",
            source,
        })?;
        for (q, evt) in t.queue_notify_fds().iter().enumerate() {
            vm.register_ioevent(evt, slot.base + QUEUE_NOTIFY, q as u32)?;
        }
        match config.irqchip {
            IrqchipMode::Kernel => vm.register_irqfd(t.interrupt().eventfd(), slot.irq)?,
            // The user-space IOAPIC of the split irqchip connects these lines when it exists.
            IrqchipMode::Split => tracing::warn!(
                "{name}: interrupts are not delivered under kernel-irqchip=split yet; \
                 use -machine kernel-irqchip=on"
            ),
        }
        tracing::debug!(name, base = slot.base, irq = slot.irq, "virtio-mmio device");
        out.transports.push((slot, Arc::new(t)));
    }
    Ok(out)
}
