use super::*;
use crate::pci::{MsiRoutes, MsixVector, PciBus, PciConfigMmio, PciLoc, PciTestdev};
use crate::{BusDevice, MsiMessage};
use std::sync::RwLock;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Default)]
struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);

impl MsiRoutes for Routes {
    fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        self.0.lock().unwrap().push((gsi, msg));
        Ok(())
    }
}

fn port(port: u8, multifunction: bool) -> Arc<PcieRootPort> {
    let vector = MsixVector {
        gsi: 40,
        irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
    };
    let msix = Arc::new(Msix::new(vec![vector], Arc::new(Routes::default())));
    let spec = RootPortSpec {
        port,
        slot: 0,
        multifunction,
    };
    Arc::new(PcieRootPort::new(spec, msix).unwrap())
}

fn dump(dev: &dyn PciDevice, from: usize, to: usize) -> Vec<u8> {
    (from / 4..to / 4)
        .flat_map(|r| dev.config_read(r).to_le_bytes())
        .collect()
}

/// QEMU 7.2's `-device pcie-root-port,port=0x10,chassis=1,multifunction=on,addr=0x2` on q35,
/// an empty port, after SeaBIOS: config bytes 0x40-0x8f and 0x100-0x14f (`xp` of its ECAM).
const QEMU_CAPS: [u8; 0x50] = [
    0x0d, 0x00, 0x00, 0x00, 0x36, 0x1b, 0x00, 0x00, 0x11, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x08, 0x00, 0x00, 0x10, 0x48, 0x42, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x04, 0x06, 0x30, 0x10, 0x00, 0x00, 0x04, 0x02, 0x7b, 0x00, 0x02, 0x00, 0xc0, 0x07, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x1e, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const QEMU_EXT: [u8; 0x50] = [
    0x01, 0x00, 0x82, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x20, 0x46, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0xa0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x01, 0x00, 0x5f, 0x00, 0x00, 0x00,
];

#[test]
fn config_space_is_qemus() {
    let p = port(0x10, true);
    // Header at power-on: Red Hat 1b36:000c, class 06.04, multifunction type 1 header, BAR0
    // 4 KiB memory, bus numbers 0, windows closed, INTA.
    assert_eq!(p.config_read(0), 0x000c_1b36);
    assert_eq!(
        p.config_read(1),
        0x0010_0000,
        "STATUS: capability list only"
    );
    assert_eq!(p.config_read(2), 0x0604_0000);
    assert_eq!(p.config_read(3), 0x0081_0000);
    assert_eq!(p.config_read(4), 0);
    assert_eq!(p.config_read(6), 0);
    assert_eq!(p.config_read(7), 0x0000_00f0, "I/O base f0, limit 00");
    assert_eq!(p.config_read(8), 0x0000_fff0);
    assert_eq!(p.config_read(9), 0x0001_fff1);
    assert_eq!(p.config_read(0x0d), 0x54);
    assert_eq!(p.config_read(0x0f), 0x0000_0100);
    assert_eq!(dump(&*p, 0x40, 0x90), QEMU_CAPS);
    assert_eq!(dump(&*p, 0x100, 0x150), QEMU_EXT);
    // BAR0 sizes as 4 KiB.
    p.config_write(4, 0, &u32::MAX.to_le_bytes());
    assert_eq!(p.config_read(4), 0xffff_f000);
    // Function 1 of QEMU's second port: no multifunction bit, port 0x11.
    let p = port(0x11, false);
    assert_eq!(p.config_read(3), 0x0001_0000);
    assert_eq!(p.config_read((PCIE_CAP + 0x0c) / 4), 0x1130_0604);
}

#[test]
fn bridge_registers_take_what_seabios_writes() {
    let p = port(0x10, true);
    // What SeaBIOS left in QEMU's port (bus 1, no I/O window, memory and prefetchable windows).
    p.config_write(6, 0, &0x0001_0100u32.to_le_bytes());
    p.config_write(7, 0, &[0xc0, 0xb0]);
    p.config_write(8, 0, &0xfe50_fe40u32.to_le_bytes());
    p.config_write(9, 0, &0xfeb1_fea1u32.to_le_bytes());
    p.config_write(0x0f, 2, &[0x02, 0x00]);
    assert_eq!(p.config_read(6), 0x0001_0100);
    assert_eq!(p.config_read(7), 0x0000_b0c0);
    assert_eq!(p.config_read(8), 0xfe50_fe40);
    assert_eq!(p.config_read(9), 0xfeb1_fea1);
    assert_eq!(p.config_read(0x0f) >> 16, 0x0002);
    assert_eq!(p.bus_range(), Some((1, 1)));
    // Reset: bus numbers 0, windows closed again.
    p.reset();
    assert_eq!(p.config_read(6), 0);
    assert_eq!(p.config_read(8), 0x0000_fff0);
    assert_eq!(p.bus_range(), Some((0, 0)));
}

#[test]
fn populated_slot_and_command_completed() {
    let p = port(0x11, false);
    p.set_populated(None);
    p.reset();
    let lnk = p.config_read((PCIE_CAP + 0x10) / 4) >> 16;
    assert_eq!(lnk, 0x2204, "link active at the port's own speed and width");
    let p2 = port(0x12, false);
    p2.set_populated(Some(0x0011));
    let lnk = p2.config_read((PCIE_CAP + 0x10) / 4) >> 16;
    assert_eq!(lnk, 0x2011, "x1 at 2.5 GT/s: what a QEMU endpoint has");
    assert_eq!(
        p.slot_registers(),
        (0x01c0, 0x0040),
        "powered, indicator on, present"
    );
    // The guest enables hot-plug interrupts: command completed follows, and is w1c.
    p.config_write(
        (PCIE_CAP + 0x18) / 4,
        0,
        &(SLTCTL_HPIE | SLTCTL_CCIE | 0x1c0).to_le_bytes(),
    );
    assert_eq!(p.slot_registers().1, 0x0050);
    p.config_write((PCIE_CAP + 0x18) / 4, 2, &SLTSTA_CC.to_le_bytes());
    assert_eq!(p.slot_registers().1, 0x0040);
    // Writing 1 to an event that is not set keeps whatever events are pending.
    p.config_write(
        (PCIE_CAP + 0x18) / 4,
        0,
        &(SLTCTL_HPIE | 0x1c0).to_le_bytes(),
    );
    p.config_write(
        (PCIE_CAP + 0x18) / 4,
        2,
        &(SLTSTA_ABP | SLTSTA_CC).to_le_bytes(),
    );
    assert_eq!(p.slot_registers().1, 0x0050);
    // Electromechanical interlock control toggles its status and reads back 0.
    p.config_write(
        (PCIE_CAP + 0x18) / 4,
        0,
        &(SLTCTL_EIC | 0x1c0).to_le_bytes(),
    );
    assert_eq!(p.slot_registers().0 & SLTCTL_EIC, 0);
    assert_ne!(p.slot_registers().1 & SLTSTA_EIS, 0);
}

#[test]
fn command_completed_raises_the_msix_vector() {
    let p = port(0x10, false);
    // MSI-X on, entry 0 unmasked with an LAPIC address.
    let bar = crate::pci::MsixBar(p.msix().clone());
    bar.write(0, &0xfee0_0000u32.to_le_bytes());
    bar.write(8, &0x31u32.to_le_bytes());
    bar.write(12, &0u32.to_le_bytes());
    p.config_write(MSIX_CAP / 4, 2, &0x8000u16.to_le_bytes());
    assert!(p.msix().enabled());
    let irqfd = &p.msix().vectors()[0].irqfd;
    assert!(irqfd.read().is_err(), "nothing yet");
    p.config_write(
        (PCIE_CAP + 0x18) / 4,
        0,
        &(SLTCTL_HPIE | SLTCTL_CCIE).to_le_bytes(),
    );
    assert_eq!(irqfd.read().unwrap(), 1);
}

#[test]
fn config_cycles_reach_the_bus_behind_a_numbered_port() {
    let mut bus = PciBus::new();
    let p = port(0x10, false);
    let loc = bus.add_device_on(0, 2, 0, p.clone()).unwrap();
    let secondary = bus.add_secondary_bus(loc).unwrap();
    assert_eq!(secondary, 1);
    bus.add_device_on(secondary, 0, 0, Arc::new(PciTestdev::new()))
        .unwrap();
    assert!(matches!(
        bus.add_secondary_bus(PciLoc { bus: 1, devfn: 0 }),
        Err(crate::pci::PciBusError::NotABridge(_))
    ));
    let bus = Arc::new(RwLock::new(bus));
    let ecam = PciConfigMmio::new(bus.clone());
    let read = |number: u64, devfn: u64| {
        let mut d = [0u8; 4];
        ecam.read(number << 20 | devfn << 12, &mut d);
        u32::from_le_bytes(d)
    };
    assert_eq!(read(0, 2 << 3), 0x000c_1b36);
    assert_eq!(read(1, 0), u32::MAX, "not numbered yet");
    // Firmware numbers the port: primary 0, secondary 5, subordinate 7.
    ecam.write(2 << 15 | 0x18, &0x0007_0500u32.to_le_bytes());
    assert_eq!(read(5, 0), 0x0005_1b36, "pci-testdev behind the port");
    assert_eq!(read(5, 1), u32::MAX);
    assert_eq!(read(6, 0), u32::MAX, "in range but no bridge below");
    assert_eq!(read(1, 0), u32::MAX);
    // Writes through the new number reach the device.
    ecam.write(5 << 20 | 0x04, &[0x02]);
    assert_eq!(read(5, 0x04 >> 12) & 0xffff, 0x1b36);
    let b = bus.read().unwrap();
    assert_eq!(b.read_at(PciLoc { bus: 1, devfn: 0 }, 1) & 0x2, 0x2);
    assert_eq!(b.bridge_of(1), Some(loc));
    drop(b);
    bus.read().unwrap().reset_devices();
    assert_eq!(read(5, 0), u32::MAX, "reset unnumbers the port");
}

#[test]
fn unplug_goes_through_the_button_and_the_guest_powering_the_slot_off() {
    let p = port(0x11, false);
    assert_eq!(p.request_unplug(), Err(HotplugError::Empty));
    p.set_populated(Some(0x0011));
    let ejected = Arc::new(Mutex::new(0));
    let count = ejected.clone();
    p.set_ejector(Arc::new(move || *count.lock().unwrap() += 1));
    let ctl_reg = (PCIE_CAP + 0x18) / 4;
    // pciehp's set-up: hot-plug interrupt, attention button, presence changed, completion.
    let enables = SLTCTL_HPIE | SLTCTL_ABPE | SLTCTL_PDCE | SLTCTL_CCIE | SLTCTL_PIC_ON | 0xc0;
    p.config_write(ctl_reg, 0, &enables.to_le_bytes());
    p.config_write(ctl_reg, 2, &SLTSTA_CC.to_le_bytes());
    assert_eq!(p.request_unplug(), Ok(UnplugRequest::ButtonPressed));
    assert_eq!(p.slot_registers().1 & SLTSTA_ABP, SLTSTA_ABP);
    // Blinking the power indicator: a second request is refused.
    let blink = (enables & !SLTCTL_PIC) | SLTCTL_PIC_BLINK;
    p.config_write(ctl_reg, 0, &blink.to_le_bytes());
    assert_eq!(p.request_unplug(), Err(HotplugError::Busy));
    assert_eq!(*ejected.lock().unwrap(), 0);
    // Power off with the indicator off: the device goes, presence detect changed.
    let off = (enables & !SLTCTL_PIC) | SLTCTL_PIC_OFF | SLTCTL_PCC;
    p.config_write(ctl_reg, 0, &off.to_le_bytes());
    assert_eq!(*ejected.lock().unwrap(), 1);
    let (_, sta) = p.slot_registers();
    assert_eq!(sta & (SLTSTA_PDS | SLTSTA_PDC), SLTSTA_PDC);
    assert_eq!(p.config_read((PCIE_CAP + 0x10) / 4) >> 16 & 0x2000, 0);
    assert!(!p.populated());
    // Writing the same control again removes nothing more.
    p.config_write(ctl_reg, 0, &off.to_le_bytes());
    assert_eq!(*ejected.lock().unwrap(), 1);
}

#[test]
fn powering_a_populated_slot_off_removes_its_device_as_on_qemu() {
    let p = port(0x11, false);
    p.set_populated(None);
    let ejected = Arc::new(Mutex::new(0));
    let count = ejected.clone();
    p.set_ejector(Arc::new(move || *count.lock().unwrap() += 1));
    // Power controller off alone keeps it (the indicator is still on).
    let ctl_reg = (PCIE_CAP + 0x18) / 4;
    p.config_write(
        ctl_reg,
        0,
        &(SLTCTL_PIC_ON | SLTCTL_PCC | 0xc0).to_le_bytes(),
    );
    assert_eq!(*ejected.lock().unwrap(), 0);
    p.config_write(
        ctl_reg,
        0,
        &(SLTCTL_PIC_OFF | SLTCTL_PCC | 0xc0).to_le_bytes(),
    );
    assert_eq!(*ejected.lock().unwrap(), 1);
    assert_eq!(p.request_unplug(), Err(HotplugError::Empty));
}
