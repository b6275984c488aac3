//! PCI: the configuration-space access mechanisms (ports 0xCF8/0xCFC and ECAM), the bus that
//! devices attach to, and the host bridge at 00:00.0.
//!
//! Only bus 0 exists. Absent functions, other buses and registers past a function's space read
//! all-ones, as on real hardware (PCI Local Bus spec 3.0, 6.1: "master abort" returns all-ones).

mod bus;
mod config_io;
mod host_bridge;

pub use bus::{PciBus, PciBusError, PciDevice};
pub use config_io::{
    PciConfigIo, PciConfigMmio, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN, Q35_ECAM_BASE, Q35_ECAM_LEN,
};
pub use host_bridge::{HostBridge, HostBridgeKind};
