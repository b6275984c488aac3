//! PCI: the configuration-space access mechanisms (ports 0xCF8/0xCFC and ECAM), the bus that
//! devices attach to, the configuration-space model every function uses, the host bridge at
//! 00:00.0 and QEMU's pci-testdev.
//!
//! Bus 0 is the root bus; bridges (`pcie-root-port`) add secondary buses that config cycles reach
//! once firmware numbers them (bus.rs). Absent functions and unnumbered buses read all-ones, as
//! on real hardware (PCI Local Bus spec 3.0, 6.1: "master abort" returns all-ones); registers
//! past a present function's space read zero.

mod bus;
mod config;
mod config_io;
mod host_bridge;
mod msix;
mod root_port;
mod testdev;

pub use bus::{BarRelocation, PciBus, PciBusError, PciDevice, PciLoc};
pub use config::{
    BarChange, BarKind, BarSpec, BridgeKind, BridgeWindows, PciConfig, PciConfigError, PciIdentity,
    PciRegion, PciSpace, PCIE_CONFIG_SPACE_SIZE, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_IO,
    PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_COMMAND_SERR, PCI_CONFIG_SPACE_SIZE,
    PCI_HEADER_TYPE_MULTI_FUNCTION, PCI_STATUS_CAP_LIST, PCI_SUBDEVICE_ID_QEMU,
    PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
pub use config_io::{
    PciConfigIo, PciConfigMmio, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN, Q35_ECAM_LEN,
};
pub use host_bridge::{HostBridge, HostBridgeKind, PAM_COUNT};
pub use msix::{
    msix_bar_layout, msix_capability, MsiRoutes, Msix, MsixBar, MsixEntryState, MsixState,
    MsixVector, MSIX_ENTRY_SIZE, MSIX_MAX_VECTORS, PCI_CAP_ID_MSIX,
};
pub use root_port::{
    HotplugError, PcieRootPort, RootPortSpec, SlotEjector, UnplugRequest, PCIE_CAP,
    PCI_DEVICE_ID_REDHAT_PCIE_RP, ROOT_PORT_MSIX_BAR, ROOT_PORT_MSIX_REGION,
};
pub use testdev::{
    IoEvent, PciTestdev, PCI_DEVICE_ID_REDHAT_TEST, PCI_TESTDEV_MMIO_SIZE, PCI_TESTDEV_PORTIO_SIZE,
    PCI_VENDOR_ID_REDHAT,
};
