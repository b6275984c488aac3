//! Emulated devices and the buses they sit on.

pub mod bus;
pub mod chipset;
pub mod display;
pub mod input;
pub mod interrupt;
pub mod legacy;
pub mod pci;
pub mod state;
pub mod storage;
#[cfg(test)]
mod test_utils;
pub mod usb;
pub mod virtio;

pub use bus::{
    AddressSpace, Bus, BusDevice, BusError, BusMap, BusRange, BusReader, DeviceId, Mmio, MmioBus,
    Pio, PioBus,
};
pub use interrupt::{InterruptError, IrqLine, MsiController, MsiMessage};
pub use state::{DeviceState, Persist, StateError};

/// What a device can ask of the VM as a whole (debug-exit, reset, power-off, sleep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRequest {
    /// Stop the VM and exit the process with this status (isa-debug-exit).
    Exit(i32),
    /// Reset the machine (i8042 0xFE, ACPI reset register, triple fault).
    Reset,
    /// Power off (ACPI S5).
    PowerOff,
    /// Suspend to RAM (ACPI S3): the vCPUs stop, RAM and the wake-up devices stay powered.
    Suspend,
    /// The RTC alarm fired with its interrupt enabled: wakes a suspended VM if the guest enabled
    /// RTC wake-up (PM1_EN.RTC_EN).
    RtcWake,
    /// The guest powered off the slot of the PCIe root port whose secondary bus has this index
    /// (rvmm's bus index): what sits behind the port goes away (PCIe native hot-unplug).
    PciEject(u8),
}

/// Handed to devices that can stop or reset the VM; implemented by the VMM.
pub trait VmControl: Send + Sync {
    fn request(&self, req: VmRequest);
}
