//! PCIe native hot-unplug on the VMM thread (docs/PCI.md): QMP `device_del` asks the device's
//! root port to press its attention button; when the guest has powered the slot off, the port's
//! request (`Request::PciEject`) lands here and the functions behind it go: off the PCI bus,
//! their regions unmapped, virtio workers stopped, DEVICE_DELETED sent.

use super::{DeviceDeleted, Vmm};
pub use crate::device_manager::pci_bridge::UnplugError as DeviceDelError;

impl Vmm {
    /// QMP `device_del` of the device with `id=` `id`.
    pub fn device_del(&mut self, id: &str) -> Result<(), DeviceDelError> {
        let pci = self
            .devices
            .pci
            .as_ref()
            .ok_or_else(|| DeviceDelError::NotFound(id.into()))?;
        pci.request_unplug(id)
    }

    /// The guest powered off the slot above bus `bus`: remove what is on it.
    pub(crate) fn pci_eject(&mut self, bus: u8) {
        let Some(pci) = self.devices.pci.clone() else {
            return;
        };
        for (loc, id) in pci.remove_bus_functions(bus) {
            // Its worker stops; the transport stays allocated until the VM ends.
            let _ = self.devices.virtio.remove_pci(loc);
            tracing::debug!(?loc, ?id, "PCI function unplugged");
            if let Some(id) = id {
                self.events.device_deleted(DeviceDeleted(id));
            }
        }
    }
}
