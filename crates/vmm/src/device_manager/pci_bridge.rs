//! PCI bridges in the device manager: `-device pcie-root-port` (a function with a secondary bus
//! that devices name with `bus=`), bus numbering when rvmm programs the PCI functions itself
//! (direct kernel boot), the ports' snapshot state, and hot-unplug: QMP `device_del` presses a
//! port's attention button, the guest powers the slot off, the port asks for the removal
//! (`VmRequest::PciEject`) and the VMM thread takes the functions off the bus.
//!
//! A device behind a port gets its BARs from the same windows and relocator as one on the root
//! bus; rvmm does not clip them to the port's windows (docs/PCI.md).

use super::pci::{PciFunctionParts, PciRoot, RegionParts};
use super::{DeviceManager, DeviceManagerError};
use crate::virtio_pci::KvmMsiRoutes;
use rvmm_cli::PcieRootPortConfig;
use rvmm_devices::pci::{
    msix_bar_layout, MsiRoutes, Msix, MsixBar, MsixState, MsixVector, PciBus, PciLoc, PciSpace,
    PcieRootPort, RootPortSpec, ROOT_PORT_MSIX_REGION,
};
use rvmm_devices::{Persist, StateError, VmControl, VmRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const NAME: &str = "pcie-root-port";
/// Dword of the primary, secondary and subordinate bus numbers (PCI-to-PCI bridge spec 1.2,
/// 3.2.5.2-3.2.5.5).
const BUS_NUMBERS_REG: usize = 6;

/// How long an unplug request stays pending (QEMU's `pending_deleted_expires_ms`): a second
/// `device_del` within it is refused rather than pressing the button again (which the guest
/// would take as a cancel).
const UNPLUG_PENDING: Duration = Duration::from_secs(5);

/// PCI functions by `id=`, and the `device_del` requests the guest has not finished.
#[derive(Default)]
pub struct Peripherals {
    by_id: HashMap<String, PciLoc>,
    pending: HashMap<String, Instant>,
}

/// Why `device_del` refused.
#[derive(Debug, thiserror::Error)]
pub enum UnplugError {
    #[error("Device '{0}' not found")]
    NotFound(String),
    #[error("Bus '{0}' does not support hotplugging")]
    NotHotpluggable(String),
    #[error("Device {0} is already in the process of unplug")]
    Pending(String),
    #[error("{0}")]
    Slot(#[from] rvmm_devices::pci::HotplugError),
}

impl PciRoot {
    /// QMP `device_del`: press the attention button of the port `id` sits behind.
    pub fn request_unplug(&self, id: &str) -> Result<(), UnplugError> {
        let mut p = self.peripherals.lock().unwrap_or_else(|e| e.into_inner());
        let loc = *p
            .by_id
            .get(id)
            .ok_or_else(|| UnplugError::NotFound(id.into()))?;
        let port = {
            let buses = self.buses.lock().unwrap_or_else(|e| e.into_inner());
            let on_bus = |index: u8| buses.iter().find(|(_, (i, _))| *i == index);
            match on_bus(loc.bus) {
                Some((_, (_, Some(port)))) => port.clone(),
                Some((name, _)) => return Err(UnplugError::NotHotpluggable(name.clone())),
                None => return Err(UnplugError::NotFound(id.into())),
            }
        };
        if p.pending
            .get(id)
            .is_some_and(|t| t.elapsed() < UNPLUG_PENDING)
        {
            return Err(UnplugError::Pending(id.into()));
        }
        port.request_unplug()?;
        p.pending.insert(id.into(), Instant::now());
        Ok(())
    }

    /// Take every function on bus `index` off it (its port's slot was powered off); returns
    /// where they were and their `id=`s.
    pub fn remove_bus_functions(&self, index: u8) -> Vec<(PciLoc, Option<String>)> {
        let mut bus = self.bus.write().unwrap_or_else(|e| e.into_inner());
        let locs: Vec<PciLoc> = bus
            .locations()
            .into_iter()
            .filter(|l| l.bus == index)
            .collect();
        for &loc in &locs {
            bus.remove(loc);
        }
        drop(bus);
        let mut p = self.peripherals.lock().unwrap_or_else(|e| e.into_inner());
        locs.into_iter()
            .map(|loc| {
                self.relocator.remove(loc);
                let id = p
                    .by_id
                    .iter()
                    .find(|(_, l)| **l == loc)
                    .map(|(i, _)| i.clone());
                if let Some(id) = &id {
                    p.by_id.remove(id);
                    p.pending.remove(id);
                    // The other side of a migration would still have it.
                    self.states.block(&format!("{id} (unplugged)"));
                }
                (loc, id)
            })
            .collect()
    }
}

impl DeviceManager {
    /// Name the PCI function at `loc` by its `id=`, for QMP `device_del`.
    pub fn name_pci_function(&self, id: &str, loc: PciLoc) {
        if let Some(root) = self.pci.get() {
            let mut p = root.peripherals.lock().unwrap_or_else(|e| e.into_inner());
            p.by_id.insert(id.into(), loc);
        }
    }

    /// Attach a `pcie-root-port` and give it its secondary bus, named by its `id=`; `control`
    /// hears when the guest powers its slot off.
    pub fn attach_root_port(
        &self,
        cfg: &PcieRootPortConfig,
        control: &Arc<dyn VmControl>,
    ) -> Result<(), DeviceManagerError> {
        let io = |what: &str| {
            let name = format!("{NAME}: {what}");
            move |source| DeviceManagerError::Io { name, source }
        };
        let gsi = self
            .allocate_msi_gsi()
            .ok_or_else(|| DeviceManagerError::Io {
                name: NAME.into(),
                source: std::io::Error::other("no free GSI for an MSI-X vector"),
            })?;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(io("MSI-X eventfd"))?;
        self.vm()
            .register_irqfd(&irqfd, gsi)
            .map_err(|source| DeviceManagerError::Hypervisor {
                name: format!("{NAME}: MSI-X irqfd on GSI {gsi}"),
                source,
            })?;
        let routes: Arc<dyn MsiRoutes> = Arc::new(KvmMsiRoutes(self.vm().clone()));
        let msix = Arc::new(Msix::new(vec![MsixVector { gsi, irqfd }], routes));
        let spec = RootPortSpec {
            port: cfg.port,
            slot: cfg.slot,
            multifunction: cfg.multifunction,
        };
        let port = Arc::new(PcieRootPort::new(spec, msix.clone()).map_err(|source| {
            DeviceManagerError::PciConfig {
                name: NAME.into(),
                source,
            }
        })?);
        let region = RegionParts {
            region: ROOT_PORT_MSIX_REGION,
            space: PciSpace::Memory,
            size: msix_bar_layout(1).0,
            device: Arc::new(MsixBar(msix)),
            ioevents: Vec::new(),
            memory: None,
        };
        self.states()
            .register_stateless(&format!("{NAME} {ROOT_PORT_MSIX_REGION:?}"));
        let ids = self.add_pci_on(
            cfg.bus.as_deref(),
            cfg.addr,
            PciFunctionParts {
                name: NAME.into(),
                config: port.clone(),
                regions: vec![region],
            },
        )?;
        let root = self
            .pci
            .get()
            .ok_or_else(|| DeviceManagerError::NoPciBus { name: NAME.into() })?;
        let index = root
            .bus
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add_secondary_bus(ids.loc)
            .map_err(|source| DeviceManagerError::Pci {
                name: NAME.into(),
                source,
            })?;
        let control = control.clone();
        port.set_ejector(Arc::new(move || {
            control.request(VmRequest::PciEject(index))
        }));
        let mut buses = root.buses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = &cfg.id {
            buses.insert(id.clone(), (index, Some(port.clone())));
        } else {
            // Unnamed: nothing can be put behind it, but it is listed for its state.
            buses.insert(format!("\0{index}"), (index, Some(port.clone())));
        }
        let mut ports: Vec<(u8, Arc<PcieRootPort>)> = buses
            .values()
            .filter_map(|(i, p)| Some((*i, p.clone()?)))
            .collect();
        ports.sort_by_key(|(i, _)| *i);
        drop(buses);
        self.states().register(
            "PCIe root ports",
            Arc::new(RootPortStates(ports.into_iter().map(|(_, p)| p).collect())),
        );
        tracing::debug!(loc = ?ids.loc, bus = index, id = ?cfg.id, "pcie-root-port");
        Ok(())
    }

    /// The bridges above the function at `loc`, from the root bus down, as (slot, function).
    pub fn pci_path(&self, loc: PciLoc) -> Vec<(u8, u8)> {
        let Some(root) = self.pci.get() else {
            return Vec::new();
        };
        let bus = root.bus.read().unwrap_or_else(|e| e.into_inner());
        let mut path = Vec::new();
        let mut at = loc;
        while let Some(bridge) = bus.bridge_of(at.bus) {
            path.push((bridge.slot(), bridge.function()));
            at = bridge;
        }
        path.reverse();
        path
    }
}

/// Number every bridge's secondary bus depth first, as firmware does (SeaBIOS's
/// `pci_bios_init_bus_rec`): under direct kernel boot no firmware runs and Linux would otherwise
/// find bridges with bus numbers 0.
pub(crate) fn number_buses(bus: &PciBus) {
    fn walk(bus: &PciBus, index: u8, number: u8, next: &mut u8) {
        for child in 1..bus.bus_count() {
            // Bus indexes fit in a u8 (PciBus::add_secondary_bus).
            let child = child as u8;
            let Some(bridge) = bus.bridge_of(child).filter(|b| b.bus == index) else {
                continue;
            };
            let Some(secondary) = next.checked_add(1) else {
                return;
            };
            *next = secondary;
            // Open the range while the buses below are numbered, then close it on the last.
            let write = |subordinate: u8| {
                let v = [number, secondary, subordinate, 0];
                bus.write_at_and_relocate(bridge, BUS_NUMBERS_REG, 0, &v);
            };
            write(u8::MAX);
            walk(bus, child, secondary, next);
            write(*next);
        }
    }
    let mut next = 0;
    walk(bus, 0, 0, &mut next);
}

/// The ports' MSI-X tables (their config space is saved with the bus's).
struct RootPortStates(Vec<Arc<PcieRootPort>>);

impl Persist for RootPortStates {
    type State = Vec<MsixState>;

    fn save(&self) -> Self::State {
        self.0.iter().map(|p| p.msix().save()).collect()
    }

    fn restore(&self, states: Self::State) -> Result<(), StateError> {
        if states.len() != self.0.len() {
            return Err(StateError::Invalid(format!(
                "{} PCIe root ports in the snapshot, {} here",
                states.len(),
                self.0.len()
            )));
        }
        for (p, s) in self.0.iter().zip(&states) {
            p.msix().restore(s).map_err(StateError::Invalid)?;
        }
        Ok(())
    }
}
