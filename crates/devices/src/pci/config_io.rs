//! Configuration mechanism #1 (ports 0xCF8 address / 0xCFC data, PCI Local Bus spec 3.0,
//! 3.2.2.3.2) and the PCIe enhanced configuration access mechanism (ECAM, PCIe base spec 7.2.2).
//!
//! Port 0xCF9 inside the address register is the chipset's reset control register on both QEMU
//! PC machines (ICH9 and PIIX3 RCR): a byte write with bit 2 (RST_CPU) set resets the machine.
//!
//! Data writes go through [`PciBus::write_and_relocate`]: BAR changes reach the VMM's
//! [`BarRelocation`](super::BarRelocation) before the vCPU resumes, with the `PciBus` read lock
//! held.

use std::sync::{Arc, Mutex, RwLock};

use super::PciBus;
use crate::{BusDevice, VmControl, VmRequest};

/// First port: CONFIG_ADDRESS at 0xCF8, RCR at 0xCF9, CONFIG_DATA at 0xCFC-0xCFF.
pub const PCI_CONFIG_IO_BASE: u64 = 0xcf8;
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Size of q35's ECAM window: 256 buses of 1 MiB (PCIe base spec 7.2.2). The machine's address
/// map places it (QEMU's MCH PCIEXBAR default, 0xb0000000).
pub const Q35_ECAM_LEN: u64 = 0x1000_0000;

const CONFIG_ENABLE: u32 = 1 << 31;
const RCR_OFFSET: u64 = 1;
const RCR_RST_CPU: u8 = 1 << 2;
/// RCR bits that keep their value (SYS_RST and FULL_RST), as QEMU's ICH9.
const RCR_KEPT: u8 = 0x0a;

/// Read `data.len()` bytes of `value` starting at byte `start`; bytes past it read as 0xff.
fn read_bytes(value: u32, start: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(start + i).copied().unwrap_or(0xff);
    }
}

/// Ports 0xCF8-0xCFF.
pub struct PciConfigIo {
    bus: Arc<RwLock<PciBus>>,
    address: Mutex<u32>,
    rcr: Mutex<u8>,
    control: Arc<dyn VmControl>,
}

impl PciConfigIo {
    pub fn new(bus: Arc<RwLock<PciBus>>, control: Arc<dyn VmControl>) -> Self {
        Self {
            bus,
            address: Mutex::new(0),
            rcr: Mutex::new(0),
            control,
        }
    }

    /// Bus, devfn and dword register selected by CONFIG_ADDRESS, if enabled.
    fn target(&self) -> Option<(u8, u8, usize)> {
        let a = *self.address.lock().unwrap_or_else(|e| e.into_inner());
        (a & CONFIG_ENABLE != 0).then_some((
            (a >> 16) as u8,
            (a >> 8) as u8,
            ((a >> 2) & 0x3f) as usize,
        ))
    }
}

/// CONFIG_ADDRESS and the reset control register.
impl crate::Persist for PciConfigIo {
    type State = (u32, u8);

    fn save(&self) -> (u32, u8) {
        (
            *self.address.lock().unwrap_or_else(|e| e.into_inner()),
            *self.rcr.lock().unwrap_or_else(|e| e.into_inner()),
        )
    }

    fn restore(&self, (address, rcr): (u32, u8)) -> Result<(), crate::StateError> {
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = address;
        *self.rcr.lock().unwrap_or_else(|e| e.into_inner()) = rcr;
        Ok(())
    }
}

impl BusDevice for PciConfigIo {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match offset {
            RCR_OFFSET if data.len() == 1 => {
                data[0] = *self.rcr.lock().unwrap_or_else(|e| e.into_inner());
            }
            0..=3 => {
                let a = *self.address.lock().unwrap_or_else(|e| e.into_inner());
                read_bytes(a, offset as usize, data);
            }
            _ => {
                let start = (offset - 4) as usize;
                let value = match self.target() {
                    Some((bus, devfn, reg)) => self
                        .bus
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .read(bus, devfn, reg),
                    None => u32::MAX,
                };
                read_bytes(value, start, data);
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match offset {
            RCR_OFFSET if data.len() == 1 => {
                if data[0] & RCR_RST_CPU != 0 {
                    self.control.request(VmRequest::Reset);
                } else {
                    *self.rcr.lock().unwrap_or_else(|e| e.into_inner()) = data[0] & RCR_KEPT;
                }
            }
            // CONFIG_ADDRESS only latches full 32-bit writes (as QEMU's pci_host_config_write).
            0 if data.len() == 4 => {
                *self.address.lock().unwrap_or_else(|e| e.into_inner()) =
                    crate::legacy::le_value(data) as u32;
            }
            4..=7 => {
                let start = (offset - 4) as usize;
                if let Some((bus, devfn, reg)) = self.target() {
                    let len = data.len().min(4 - start);
                    self.bus
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .write_and_relocate(bus, devfn, reg, start, &data[..len]);
                }
            }
            _ => {}
        }
    }
}

/// The ECAM window: offset = bus << 20 | device << 15 | function << 12 | register.
pub struct PciConfigMmio {
    bus: Arc<RwLock<PciBus>>,
}

impl PciConfigMmio {
    pub fn new(bus: Arc<RwLock<PciBus>>) -> Self {
        Self { bus }
    }
}

fn ecam_target(offset: u64) -> (u8, u8, usize, usize) {
    (
        (offset >> 20) as u8,
        (offset >> 12) as u8,
        ((offset & 0xfff) >> 2) as usize,
        (offset & 3) as usize,
    )
}

impl BusDevice for PciConfigMmio {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let (bus, devfn, reg, start) = ecam_target(offset);
        let value = self
            .bus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .read(bus, devfn, reg);
        read_bytes(value, start, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (bus, devfn, reg, start) = ecam_target(offset);
        let len = data.len().min(4 - start);
        self.bus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .write_and_relocate(bus, devfn, reg, start, &data[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{
        BarChange, BarRelocation, HostBridge, HostBridgeKind, PciRegion, PciSpace, PciTestdev,
    };
    use crate::test_utils::RecordingVmControl;

    fn bus() -> Arc<RwLock<PciBus>> {
        let mut b = PciBus::new();
        b.add_device(0, 0, Arc::new(HostBridge::new(HostBridgeKind::Q35)))
            .unwrap();
        Arc::new(RwLock::new(b))
    }

    fn cf8_read(io: &PciConfigIo, bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
        let addr = CONFIG_ENABLE
            | u32::from(bus) << 16
            | u32::from(dev) << 11
            | u32::from(func) << 8
            | u32::from(reg);
        io.write(0, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_and_absent_functions() {
        let ctl = Arc::new(RecordingVmControl::default());
        let io = PciConfigIo::new(bus(), ctl.clone());
        assert_eq!(cf8_read(&io, 0, 0, 0, 0), 0x29c0_8086);
        assert_eq!(cf8_read(&io, 0, 0, 0, 8) >> 8, 0x06_0000);
        assert_eq!(
            cf8_read(&io, 0, 0, 0, 0x0c) >> 16 & 0xff,
            0,
            "header type 0"
        );
        assert_eq!(cf8_read(&io, 0, 0, 0, 0x2c), 0x1100_1af4);
        // Every other function of bus 0 and every other bus is absent.
        for dev in 0..32 {
            for func in 0..8 {
                if dev != 0 || func != 0 {
                    assert_eq!(cf8_read(&io, 0, dev, func, 0), u32::MAX);
                }
            }
        }
        assert_eq!(cf8_read(&io, 1, 0, 0, 0), u32::MAX);
        // The address register reads back; a disabled address reads all-ones.
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), CONFIG_ENABLE | 1 << 16);
        io.write(0, &0u32.to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // 16-bit read of the device ID at 0xCFE.
        io.write(0, &CONFIG_ENABLE.to_le_bytes());
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x29c0);
        assert!(ctl.requests().is_empty());
    }

    #[test]
    fn command_register_is_writable_identity_is_not() {
        let ctl = Arc::new(RecordingVmControl::default());
        let io = PciConfigIo::new(bus(), ctl);
        io.write(0, &CONFIG_ENABLE.to_le_bytes());
        io.write(4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cf8_read(&io, 0, 0, 0, 0), 0x29c0_8086);
        io.write(0, &(CONFIG_ENABLE | 4).to_le_bytes());
        io.write(4, &[0x07, 0x00]);
        assert_eq!(cf8_read(&io, 0, 0, 0, 4), 0x0200_0007);
    }

    #[test]
    fn rcr_reset_and_odd_accesses() {
        let ctl = Arc::new(RecordingVmControl::default());
        let io = PciConfigIo::new(bus(), ctl.clone());
        io.write(1, &[0x02]);
        let mut b = [0u8; 1];
        io.read(1, &mut b);
        assert_eq!(b, [0x02]);
        io.write(1, &[0x06]);
        assert_eq!(ctl.requests(), vec![VmRequest::Reset]);
        // A byte write to 0xCF8 does not change CONFIG_ADDRESS.
        io.write(0, &CONFIG_ENABLE.to_le_bytes());
        io.write(0, &[0x10]);
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), CONFIG_ENABLE);
        for offset in 0..PCI_CONFIG_IO_LEN + 2 {
            for len in [0usize, 1, 2, 3, 4, 8] {
                let mut d = vec![0; len];
                io.read(offset, &mut d);
                io.write(offset, &vec![0; len]);
            }
        }
    }

    #[test]
    fn ecam_reads_like_port_io() {
        let m = PciConfigMmio::new(bus());
        let mut d = [0u8; 4];
        m.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x29c0_8086);
        m.read(1 << 15, &mut d);
        assert_eq!(d, [0xff; 4], "slot 1 is empty");
        m.read(1 << 20, &mut d);
        assert_eq!(d, [0xff; 4], "bus 1 does not exist");
        m.read(0x100, &mut d);
        assert_eq!(d, [0; 4], "extended space of a present function");
        let mut w = [0u8; 2];
        m.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x29c0);
        m.write(Q35_ECAM_LEN - 1, &[1, 2, 3, 4]);
        m.read(Q35_ECAM_LEN - 4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    /// Records every relocation instead of moving anything.
    #[derive(Default)]
    struct RecordingRelocation(Mutex<Vec<(u8, Vec<BarChange>)>>);

    impl BarRelocation for RecordingRelocation {
        fn relocate(&self, loc: crate::pci::PciLoc, changes: &[BarChange]) {
            assert_eq!(loc.bus, 0);
            self.0.lock().unwrap().push((loc.devfn, changes.to_vec()));
        }
    }

    impl RecordingRelocation {
        fn take(&self) -> Vec<(u8, Vec<BarChange>)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    #[test]
    fn bar_changes_reach_the_relocation() {
        let reloc = Arc::new(RecordingRelocation::default());
        let bus = bus();
        {
            let mut b = bus.write().unwrap();
            b.add_device(3, 0, Arc::new(PciTestdev::new())).unwrap();
            b.set_relocation(reloc.clone());
        }
        let io = PciConfigIo::new(bus.clone(), Arc::new(RecordingVmControl::default()));
        let ecam = PciConfigMmio::new(bus.clone());
        let select = |reg: u32| {
            io.write(0, &(CONFIG_ENABLE | 3 << 11 | reg).to_le_bytes());
        };
        // Sizing and programming BAR1 with decode off: nothing to relocate.
        select(0x14);
        io.write(4, &u32::MAX.to_le_bytes());
        io.write(4, &0xc000u32.to_le_bytes());
        assert!(reloc.take().is_empty());
        // I/O decode on through a byte write to 0xCFC.
        select(0x04);
        io.write(4, &[0x01]);
        let bar1 = |old, new| BarChange {
            region: PciRegion::Bar(1),
            space: PciSpace::Io,
            size: 256,
            old,
            new,
        };
        assert_eq!(reloc.take(), vec![(3 << 3, vec![bar1(None, Some(0xc000))])]);
        // Moving it through ECAM.
        ecam.write(3 << 15 | 0x14, &0xc100u32.to_le_bytes());
        assert_eq!(
            reloc.take(),
            vec![(3 << 3, vec![bar1(Some(0xc000), Some(0xc100))])]
        );
        // The host bridge has no BARs; writes there relocate nothing.
        ecam.write(0x04, &[0x07]);
        assert!(reloc.take().is_empty());
        // Machine reset unmaps.
        bus.read().unwrap().reset_devices();
        assert_eq!(reloc.take(), vec![(3 << 3, vec![bar1(Some(0xc100), None)])]);
        assert_eq!(cf8_read(&io, 0, 3, 0, 0x14), 1);
    }
}
