//! The device manager: the only place that wires devices to the buses, the address allocators,
//! the PCI bus and KVM (ioeventfds, memory slots).
//!
//! Devices are registered once and get a stable [`DeviceId`] per bus; PCI functions report BAR
//! changes from their config writes and [`pci::PciRelocator`] applies them while the guest runs.
//! The attach functions take the typed pieces of the configuration they need.

mod chipset;
pub mod display;
mod firmware;
mod legacy;
pub mod pci;
pub mod pci_bridge;
mod pci_memory;
pub mod storage;
pub mod usb;

pub use chipset::{attach_chipset, set_cmos_boot_order, ChipsetConfig};
pub use firmware::FirmwareImage;
pub use legacy::attach_legacy;

use crate::snapshot::DeviceStates;
use rvmm_arch::allocator::{AddressMap, AllocError, FixedMmio, FixedRange};
use rvmm_cli::MachineKind;
use rvmm_devices::{AddressSpace, Bus, BusDevice, BusError, DeviceId, MmioBus, PioBus};
use rvmm_hypervisor::{HvError, Vm};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Errors attaching or moving devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    #[error("cannot map {name}: {source}")]
    Bus {
        name: String,
        #[source]
        source: BusError,
    },
    #[error("cannot place {name}: {source}")]
    Alloc {
        name: String,
        #[source]
        source: AllocError,
    },
    #[error("{name}: {source}")]
    Hypervisor {
        name: String,
        #[source]
        source: HvError,
    },
    #[error("{name}: {source}")]
    Pci {
        name: String,
        #[source]
        source: rvmm_devices::pci::PciBusError,
    },
    #[error("{name}: {source}")]
    PciConfig {
        name: String,
        #[source]
        source: rvmm_devices::pci::PciConfigError,
    },
    #[error("{name}: {source}")]
    Interrupt {
        name: String,
        #[source]
        source: rvmm_devices::InterruptError,
    },
    #[error("{name}: {source}")]
    Input {
        name: String,
        #[source]
        source: crate::input::InputError,
    },
    #[error("COM1: {0}")]
    Serial(#[source] rvmm_devices::legacy::SerialError),
    #[error("{name}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: no PCI bus on this machine type")]
    NoPciBus { name: String },
    #[error("the PCI bus is attached twice")]
    PciBusTwice,
    #[error("{name}: no free PCI slot on its bus")]
    NoPciSlot { name: String },
    #[error("{name}: Bus '{bus}' not found")]
    NoSuchPciBus { name: String, bus: String },
    #[error("virtio-blk: {0}")]
    Disk(#[source] rvmm_block::BlockError),
    #[error(transparent)]
    Net(#[from] crate::netdev::NetdevError),
    #[error("virtio-mmio: {requested} virtio devices requested; at most {max} are supported")]
    TooManyVirtioDevices { requested: usize, max: usize },
    #[error("ich9-ahci: {0}")]
    Ahci(#[source] rvmm_devices::storage::AhciError),
    #[error("piix3-ide: {0}")]
    Ide(#[source] rvmm_devices::storage::IdeError),
    #[error("{drive}: {source}")]
    Drive {
        drive: String,
        #[source]
        source: rvmm_block::BlockError,
    },
    #[error("disk image '{path}' is an ISO 9660 CD image: attach it with -cdrom or media=cdrom (or readonly=on to use it as a read-only disk)")]
    IsoAsDisk { path: String },
    #[error("interrupt line: GSI {gsi} is past the IOAPIC's {pins} pins")]
    IrqPastIoapic { gsi: u32, pins: usize },
}

/// Register `device` on `bus` and map it, naming it in the error.
fn add<S: AddressSpace>(
    bus: &Bus<S>,
    name: &str,
    base: u64,
    len: u64,
    device: Arc<dyn BusDevice>,
) -> Result<DeviceId, DeviceManagerError> {
    bus.add(name, base, len, device)
        .map_err(|source| DeviceManagerError::Bus {
            name: name.into(),
            source,
        })
}

/// The VM's buses and what places devices on them.
pub struct DeviceManager {
    vm: Arc<Vm>,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    /// The machine's address windows, shared with the PCI relocator.
    map: Arc<Mutex<AddressMap>>,
    /// PCI bus 0, on pc and q35 once attached.
    pci: OnceLock<pci::PciRoot>,
    /// Moves the ACPI PM block when the chipset's PM base is programmed (attach_chipset).
    pm_block: OnceLock<Arc<dyn rvmm_devices::chipset::PmBaseRelocation>>,
    /// Each device's snapshot state, by bus name (docs/SNAPSHOT.md).
    states: Arc<DeviceStates>,
    /// Where the search for the next MSI vector's GSI starts.
    next_msi_gsi: Mutex<u32>,
}

impl DeviceManager {
    pub fn new(vm: Arc<Vm>, machine: MachineKind) -> Self {
        let map = match machine {
            MachineKind::Microvm => AddressMap::microvm(),
            MachineKind::Pc => AddressMap::pc(),
            MachineKind::Q35 => AddressMap::q35(),
        };
        let pio = Arc::new(PioBus::new());
        let mmio = Arc::new(MmioBus::new());
        Self {
            vm,
            states: Arc::new(DeviceStates::new(pio.clone(), mmio.clone())),
            pio,
            mmio,
            map: Arc::new(Mutex::new(map)),
            pci: OnceLock::new(),
            pm_block: OnceLock::new(),
            next_msi_gsi: Mutex::new(crate::virtio_pci::MSI_GSI_BASE),
        }
    }

    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// The GSI INTx `pin` (1 = INTA) of the PCI function at `loc` interrupts on, once the PCI
    /// bus exists.
    pub fn pci_intx_gsi(&self, loc: rvmm_devices::pci::PciLoc, pin: u8) -> Option<u32> {
        self.pci.get()?.intx_gsi(loc, pin)
    }

    /// A GSI for an MSI vector (its irqfd's): past the IOAPIC's pins, one no one routes and no
    /// earlier caller got (their routes come later, when the guest programs the vectors).
    pub(crate) fn allocate_msi_gsi(&self) -> Option<u32> {
        let mut next = self.next_msi_gsi.lock().unwrap_or_else(|e| e.into_inner());
        let gsi = self.vm.free_gsi(*next)?;
        *next = gsi.checked_add(1)?;
        Some(gsi)
    }

    /// Where devices register their snapshot state.
    pub fn states(&self) -> &Arc<DeviceStates> {
        &self.states
    }

    pub fn pio_bus(&self) -> &Arc<PioBus> {
        &self.pio
    }

    pub fn mmio_bus(&self) -> &Arc<MmioBus> {
        &self.mmio
    }

    fn map(&self) -> MutexGuard<'_, AddressMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `device` at ports `[base, base + len)` under `name` (messages and `-exit-stats`).
    pub fn add_pio(
        &self,
        name: &str,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<DeviceId, DeviceManagerError> {
        add(&self.pio, name, base, len, device)
    }

    /// Put `device` at guest-physical `[base, base + len)` under `name`.
    pub fn add_mmio(
        &self,
        name: &str,
        base: u64,
        len: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<DeviceId, DeviceManagerError> {
        add(&self.mmio, name, base, len, device)
    }

    /// Where this machine type has its fixed platform devices.
    pub fn fixed_mmio(&self) -> FixedMmio {
        self.map().fixed
    }

    /// Put `device` at its fixed placement `range`, under the range's name.
    pub fn add_fixed_mmio(
        &self,
        range: FixedRange,
        device: Arc<dyn BusDevice>,
    ) -> Result<DeviceId, DeviceManagerError> {
        self.add_mmio(range.name, range.base, range.size, device)
    }

    /// Place a virtio-mmio transport of `len` bytes in the machine's virtio-mmio window.
    pub fn allocate_virtio_mmio(&self, name: &str, len: u64) -> Result<u64, DeviceManagerError> {
        self.map()
            .virtio_mmio
            .allocate(len, len.next_power_of_two())
            .map_err(|source| DeviceManagerError::Alloc {
                name: name.into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvmm_cli::TapConfig;
    use rvmm_devices::legacy::{IOAPIC_LEN, PC_TESTDEV_IOMEM_LEN};
    use rvmm_devices::pci::Q35_ECAM_LEN;

    #[test]
    fn virtio_attach_errors_name_the_input() {
        let e = DeviceManagerError::from(crate::netdev::NetdevError::Tap {
            tap: TapConfig::Name("tap7".into()),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(e.to_string().starts_with("virtio-net: tap 'tap7': "), "{e}");
        let e = DeviceManagerError::from(crate::netdev::NetdevError::Tap {
            tap: TapConfig::Fd(42),
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        });
        assert!(e.to_string().starts_with("virtio-net: tap fd 42: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn fixed_placements_are_as_large_as_the_devices_decode() {
        for map in [AddressMap::microvm(), AddressMap::pc(), AddressMap::q35()] {
            assert_eq!(map.fixed.ioapic.size, IOAPIC_LEN);
            assert_eq!(map.fixed.pc_testdev_iomem.size, PC_TESTDEV_IOMEM_LEN);
            if let Some(ecam) = map.fixed.pci_ecam {
                assert_eq!(ecam.size, Q35_ECAM_LEN);
            }
        }
    }
}
