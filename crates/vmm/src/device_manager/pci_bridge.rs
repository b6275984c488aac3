//! PCI bridges in the device manager: `-device pcie-root-port` (a function with a secondary bus
//! that devices name with `bus=`), bus numbering when rvmm programs the PCI functions itself
//! (direct kernel boot), and the ports' snapshot state.
//!
//! A device behind a port gets its BARs from the same windows and relocator as one on the root
//! bus; rvmm does not clip them to the port's windows (docs/PCI.md).

use super::pci::{PciFunctionParts, RegionParts};
use super::{DeviceManager, DeviceManagerError};
use crate::virtio_pci::KvmMsiRoutes;
use rvmm_cli::PcieRootPortConfig;
use rvmm_devices::pci::{
    msix_bar_layout, MsiRoutes, Msix, MsixBar, MsixState, MsixVector, PciBus, PciLoc, PciSpace,
    PcieRootPort, RootPortSpec, ROOT_PORT_MSIX_REGION,
};
use rvmm_devices::{Persist, StateError};
use std::sync::Arc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const NAME: &str = "pcie-root-port";
/// Dword of the primary, secondary and subordinate bus numbers (PCI-to-PCI bridge spec 1.2,
/// 3.2.5.2-3.2.5.5).
const BUS_NUMBERS_REG: usize = 6;

impl DeviceManager {
    /// Attach a `pcie-root-port` and give it its secondary bus, named by its `id=`.
    pub fn attach_root_port(&self, cfg: &PcieRootPortConfig) -> Result<(), DeviceManagerError> {
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
