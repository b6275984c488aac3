//! Attaching virtio devices over virtio-pci (pc and q35): one PCI function per device, at its
//! `addr=` or the first free slot, with the same device models as virtio-mmio
//! (`crate::virtio::build_device`).
//!
//! Each function gets one MSI-X vector per queue plus one for config changes (virtio-net-pci:
//! QEMU's 2 per queue pair + 2), each an irqfd on a GSI of its own from [`MSI_GSI_BASE`] whose
//! MSI route follows the guest's table entry; INTA# is a level line through the machine's PCI
//! routing (the DSDT's `_PRT`), re-raised at EOI while the ISR is non-zero. Queue notifications
//! are ioeventfds in BAR4 that move with it (`device_manager/pci.rs`).

use crate::device_manager::pci::{PciFunctionParts, RegionParts};
use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::interrupts::Resampler;
use crate::virtio::{build_device, Counts};
use rvmm_block::DiskEvents;
use rvmm_cli::{VirtioDeviceConfig, VirtioPciDeviceConfig};
use rvmm_devices::pci::{MsiRoutes, MsixVector, PciLoc};
use rvmm_devices::virtio::pci::{default_vectors, VirtioPciState, VirtioPciTransport};
use rvmm_devices::{IrqLine, MsiMessage};
use rvmm_devices::{Persist, StateError};
use rvmm_hypervisor::{GsiRoute, Vm};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The first GSI for MSI-X vectors: past the IOAPIC's 24 pins, as QEMU allocates them.
pub const MSI_GSI_BASE: u32 = 24;

/// One attached virtio-pci function.
pub struct VirtioPciFunction {
    pub loc: PciLoc,
    /// The bridges above it, as (slot, function) from the root bus down (firmware boot paths).
    pub path: Vec<(u8, u8)>,
    pub transport: Arc<VirtioPciTransport>,
    /// `bootindex=` of a disk.
    pub bootindex: Option<u32>,
    pub is_block: bool,
}

/// What the builder connects after attaching: INTx lines, their resamples.
#[derive(Default)]
pub struct VirtioPciAttached {
    pub functions: Vec<VirtioPciFunction>,
    pub lines: Vec<IrqLine>,
    pub resamplers: Vec<Resampler>,
}

impl VirtioPciAttached {
    /// SeaBIOS's boot paths of the disks with a `bootindex=` (QEMU's `get_fw_dev_path`:
    /// `/pci@i0cf8/scsi@SLOT[,FN]/disk@0,0` for virtio-blk-pci on bus 0, each bridge above it
    /// as `pci-bridge@SLOT[,FN]`, which SeaBIOS's `bootprio_find_pci_device` matches by its
    /// `/pci@i0cf8/...*@SLOT[,FN]` prefix).
    pub fn boot_paths(&self) -> Vec<(u32, String)> {
        let at = |slot: u8, func: u8| {
            if func == 0 {
                format!("{slot:x}")
            } else {
                format!("{slot:x},{func:x}")
            }
        };
        self.functions
            .iter()
            .filter(|f| f.is_block)
            .filter_map(|f| {
                let bridges: String = f
                    .path
                    .iter()
                    .map(|&(s, fun)| format!("/pci-bridge@{}", at(s, fun)))
                    .collect();
                let dev = at(f.loc.slot(), f.loc.function());
                Some((
                    f.bootindex?,
                    format!("/pci@i0cf8{bridges}/scsi@{dev}/disk@0,0"),
                ))
            })
            .collect()
    }
}

/// KVM's GSI routing table as the MSI-X vectors' route keeper.
pub(crate) struct KvmMsiRoutes(pub(crate) Arc<Vm>);

impl MsiRoutes for KvmMsiRoutes {
    fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        let routes: &[GsiRoute] = match msg {
            Some(m) => &[GsiRoute::Msi {
                address: m.address,
                data: m.data,
            }],
            None => &[],
        };
        self.0
            .set_gsi_routes(gsi, routes)
            .map_err(std::io::Error::other)
    }
}

/// Create the virtio-pci `devices` on PCI bus 0; `counts` continues the virtio-mmio devices'
/// numbering (drive names, MAC addresses).
pub(crate) fn attach_virtio_pci(
    dm: &DeviceManager,
    devices: &[VirtioPciDeviceConfig],
    mem: &Arc<GuestMemoryMmap>,
    counts: &mut Counts,
    disk_events: &dyn Fn(String) -> Arc<dyn DiskEvents>,
) -> Result<VirtioPciAttached, DeviceManagerError> {
    let mut out = VirtioPciAttached::default();
    let routes: Arc<dyn MsiRoutes> = Arc::new(KvmMsiRoutes(dm.vm().clone()));
    for cfg in devices {
        let device = build_device(&cfg.device, mem, counts, disk_events)?;
        if let (VirtioDeviceConfig::Balloon(_), Some(b)) = (&cfg.device, counts.balloon.as_mut()) {
            b.type_name = "virtio-balloon-pci";
        }
        let name = device.name();
        let io = |what: &str| {
            let name = format!("{name}-pci: {what}");
            move |source| DeviceManagerError::Io { name, source }
        };
        let hv = |what: String| {
            let name = format!("{name}-pci: {what}");
            move |source| DeviceManagerError::Hypervisor { name, source }
        };
        let count = default_vectors(device.device_type(), device.queue_max_sizes().len());
        let mut vectors = Vec::with_capacity(count);
        for _ in 0..count {
            // GSIs from MSI_GSI_BASE that no one else routes (the vectors' routes come later).
            let gsi = dm
                .allocate_msi_gsi()
                .ok_or_else(|| DeviceManagerError::Io {
                    name: format!("{name}-pci"),
                    source: std::io::Error::other("no free GSI for an MSI-X vector"),
                })?;
            let irqfd = EventFd::new(EFD_NONBLOCK).map_err(io("MSI-X eventfd"))?;
            dm.vm()
                .register_irqfd(&irqfd, gsi)
                .map_err(hv(format!("MSI-X irqfd on GSI {gsi}")))?;
            vectors.push(MsixVector { gsi, irqfd });
        }
        // QEMU's disable-legacy=auto on the root bus of pc and q35: transitional; behind a PCIe
        // port modern only (virtio_pci_realize's `pcie_port`); virtio-input is modern only in
        // QEMU too (virtio_pci_force_virtio_1).
        let behind_port = cfg
            .pci
            .bus
            .as_deref()
            .is_some_and(|b| b != "pcie.0" && b != "pci.0");
        let modern_only = behind_port || matches!(cfg.device, VirtioDeviceConfig::Input { .. });
        let transitional = !modern_only && cfg.pci.disable_legacy != Some(true);
        let t = VirtioPciTransport::with_bus(
            device,
            mem.clone(),
            vectors,
            routes.clone(),
            transitional,
            behind_port,
        )
        .map_err(|e| DeviceManagerError::Io {
            name: format!("{name}-pci"),
            source: std::io::Error::other(e),
        })?;
        let t = Arc::new(t);
        let mut regions = Vec::new();
        for (region, space, size) in t.regions() {
            // Saved with the function's state below.
            dm.states()
                .register_stateless(&format!("{name}-pci {region:?}"));
            let ioevents = t.ioevents(region).map_err(io("queue eventfds"))?;
            if let Some(device) = t.region_device(region) {
                regions.push(RegionParts {
                    region,
                    space,
                    size,
                    device,
                    ioevents,
                    memory: None,
                });
            }
        }
        let ids = dm.add_pci_on(
            cfg.pci.bus.as_deref(),
            cfg.pci.addr,
            PciFunctionParts {
                name: format!("{name}-pci"),
                config: t.clone(),
                regions,
            },
        )?;
        let gsi = dm
            .pci_intx_gsi(ids.loc, 1)
            .ok_or_else(|| DeviceManagerError::NoPciBus {
                name: format!("{name}-pci"),
            })?;
        let resample = EventFd::new(EFD_NONBLOCK).map_err(io("INTx resample eventfd"))?;
        let interrupt = t.interrupt().clone();
        out.resamplers.push(Resampler::new(
            resample.try_clone().map_err(io("INTx resample eventfd"))?,
            Box::new(move || interrupt.resample()),
        ));
        out.lines.push(IrqLine {
            gsi,
            trigger: t
                .interrupt()
                .eventfd()
                .try_clone()
                .map_err(io("INTx eventfd"))?,
            resample: Some(resample),
        });
        tracing::debug!(name, loc = ?ids.loc, intx = gsi, "virtio-pci device");
        if let Some(id) = &cfg.pci.id {
            dm.name_pci_function(id, ids.loc);
        }
        out.functions.push(VirtioPciFunction {
            loc: ids.loc,
            path: dm.pci_path(ids.loc),
            transport: t,
            bootindex: cfg.pci.bootindex,
            is_block: matches!(cfg.device, VirtioDeviceConfig::Block(_)),
        });
    }
    if !out.functions.is_empty() {
        let all = out
            .functions
            .iter()
            .map(|f| (f.loc, f.transport.clone()))
            .collect();
        dm.states()
            .register("virtio-pci", Arc::new(FunctionStates(all)));
    }
    Ok(out)
}

/// One virtio-pci function's state in a snapshot, by its PCI address (rvmm's bus index:
/// 0 is the root bus, older snapshots have none).
#[derive(serde::Serialize, serde::Deserialize)]
struct FunctionState {
    #[serde(default)]
    bus: u8,
    devfn: u8,
    #[serde(flatten)]
    state: VirtioPciState,
}

/// Every virtio-pci function (functions of one type share their bus names). Restored after
/// "PCI bus 0" (the registry goes by name), so BARs and the MSI-X Enable bit are back first.
struct FunctionStates(Vec<(PciLoc, Arc<VirtioPciTransport>)>);

impl Persist for FunctionStates {
    type State = Vec<FunctionState>;

    fn save(&self) -> Self::State {
        self.0
            .iter()
            .map(|(loc, t)| FunctionState {
                bus: loc.bus,
                devfn: loc.devfn,
                state: t.save(),
            })
            .collect()
    }

    fn restore(&self, states: Self::State) -> Result<(), StateError> {
        let ours: Vec<PciLoc> = self.0.iter().map(|(l, _)| *l).collect();
        let theirs: Vec<PciLoc> = states
            .iter()
            .map(|s| PciLoc {
                bus: s.bus,
                devfn: s.devfn,
            })
            .collect();
        if ours != theirs {
            return Err(StateError::Invalid(format!(
                "virtio-pci functions at {theirs:02x?} in the snapshot, {ours:02x?} here"
            )));
        }
        for ((_, t), s) in self.0.iter().zip(states) {
            t.restore(s.state)?;
        }
        Ok(())
    }
}
