use super::*;
use std::cell::RefCell;

/// Records every raise.
#[derive(Default)]
struct Recorder(RefCell<Vec<(usize, bool)>>, bool);

impl XhciIrq for Recorder {
    fn raise(&self, v: usize, level: bool) -> bool {
        self.0.borrow_mut().push((v, level));
        self.1 && level
    }
}

const MEM: usize = 0x10_0000;
const CMD_RING: u64 = 0x1_0000;
const ERST: u64 = 0x2_0000;
const EVENTS: u64 = 0x2_1000;
const RT0: u64 = OFF_RUNTIME + 0x20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn trb(mem: &GuestMemoryMmap, at: u64, param: u64, control: u32) {
    let mut t = [0u8; 16];
    t[0..8].copy_from_slice(&param.to_le_bytes());
    t[12..16].copy_from_slice(&control.to_le_bytes());
    mem.write_slice(&t, GuestAddress(at)).unwrap();
}

fn event(mem: &GuestMemoryMmap, n: u64) -> (u64, u32, u32) {
    let mut t = [0u8; 16];
    mem.read_slice(&mut t, GuestAddress(EVENTS + 16 * n))
        .unwrap();
    (
        u64::from_le_bytes(t[0..8].try_into().unwrap()),
        u32::from_le_bytes(t[8..12].try_into().unwrap()),
        u32::from_le_bytes(t[12..16].try_into().unwrap()),
    )
}

/// A driver's bring-up (Linux's xhci_init order): command ring, one event ring segment of 16
/// TRBs, interrupter 0 enabled, then Run with INTE.
fn running(mem: &GuestMemoryMmap, irq: &Recorder) -> XhciRegs {
    let mut r = XhciRegs::new(4, 4);
    let seg: Vec<u8> = [
        EVENTS.to_le_bytes().to_vec(),
        16u32.to_le_bytes().to_vec(),
        vec![0; 4],
    ]
    .concat();
    mem.write_slice(&seg, GuestAddress(ERST)).unwrap();
    r.write(OFF_OPER + 0x38, 64, mem, irq);
    r.write(OFF_OPER + 0x30, 0x3_0000, mem, irq);
    r.write(OFF_OPER + 0x34, 0, mem, irq);
    r.write(OFF_OPER + 0x18, CMD_RING as u32 | 1, mem, irq);
    r.write(OFF_OPER + 0x1c, 0, mem, irq);
    r.write(RT0 + 0x08, 1, mem, irq);
    r.write(RT0 + 0x18, EVENTS as u32, mem, irq);
    r.write(RT0 + 0x1c, 0, mem, irq);
    r.write(RT0 + 0x10, ERST as u32, mem, irq);
    r.write(RT0 + 0x14, 0, mem, irq);
    r.write(RT0, 2, mem, irq); // IMAN.IE
    r.write(OFF_OPER, 1 | 4, mem, irq); // RS | INTE
    assert_eq!(r.read(OFF_OPER + 4, 0) & 1, 0, "still halted");
    r
}

#[test]
fn capabilities_are_qemus() {
    let r = XhciRegs::new(4, 4);
    assert_eq!(r.read(0, 0), 0x0100_0040);
    assert_eq!(r.read(4, 0), (8 << 24) | (16 << 8) | 64);
    assert_eq!(r.read(0x10, 0), 0x0008_7001);
    assert_eq!(r.read(0x14, 0), 0x2000);
    assert_eq!(r.read(0x18, 0), 0x1000);
    // USB 2 on ports 5-8, USB 3 on ports 1-4.
    assert_eq!(
        [r.read(0x20, 0), r.read(0x24, 0), r.read(0x28, 0)],
        [0x0200_0402, 0x2042_5355, 0x0405]
    );
    assert_eq!(
        [r.read(0x30, 0), r.read(0x34, 0), r.read(0x38, 0)],
        [0x0300_0002, 0x2042_5355, 0x0401]
    );
    assert_eq!(r.read(OFF_OPER + 8, 0), 1);
    let big = XhciRegs::new(200, 20);
    assert_eq!(big.read(4, 0) >> 24, 30, "ports capped at 15 + 15");
}

#[test]
fn empty_ports_after_reset_and_their_writes() {
    let (mem, irq) = (mem(), Recorder::default());
    let mut r = XhciRegs::new(4, 4);
    assert_eq!(r.read(OFF_OPER + 4, 0), 1, "HCHalted");
    for p in 0..8 {
        assert_eq!(r.read(0x440 + 0x10 * p, 0), 0x0002_02a0, "port {p}");
    }
    // Clear CSC (write-1-to-clear, PP kept), a port reset does nothing without a device.
    r.write(0x440, 0x0002_0200, &mem, &irq);
    assert_eq!(r.read(0x440, 0), 0x2a0);
    r.write(0x440, 0x0000_0210, &mem, &irq);
    assert_eq!(r.read(0x440, 0), 0x2a0);
    // PP off, then HCRST brings everything back.
    r.write(0x450, 0, &mem, &irq);
    assert_eq!(r.read(0x450, 0) & 0x200, 0);
    r.write(OFF_OPER, 2, &mem, &irq);
    assert_eq!(r.read(0x450, 0), 0x0002_02a0);
    assert_eq!(r.read(OFF_OPER, 0), 0, "HCRST clears itself");
}

#[test]
fn commands_complete_on_the_event_ring() {
    let (mem, irq) = (mem(), Recorder::default());
    let mut r = running(&mem, &irq);
    irq.0.borrow_mut().clear();
    trb(&mem, CMD_RING, 0, (23 << 10) | 1); // No Op
    trb(&mem, CMD_RING + 16, 0, (9 << 10) | 1); // Enable Slot
    trb(&mem, CMD_RING + 32, 0, (9 << 10) | 1); // Enable Slot
    trb(&mem, CMD_RING + 48, 0, (10 << 10) | (1 << 24) | 1); // Disable Slot 1
    trb(&mem, CMD_RING + 64, 0, (10 << 10) | (7 << 24) | 1); // Disable Slot 7: not enabled
    trb(&mem, CMD_RING + 80, 0x4_0000, (11 << 10) | (2 << 24) | 1); // Address Device, slot 2
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    let want = [
        (CMD_RING, 1, 0),
        (CMD_RING + 16, 1, 1),
        (CMD_RING + 32, 1, 2),
        (CMD_RING + 48, 1, 1),
        (CMD_RING + 64, 11, 0),
        (CMD_RING + 80, 5, 2),
    ];
    for (n, (ptr, cc, slot)) in want.into_iter().enumerate() {
        let (p, status, control) = event(&mem, n as u64);
        assert_eq!(p, ptr, "event {n}");
        assert_eq!(status >> 24, cc, "event {n}");
        assert_eq!(control, (slot << 24) | (33 << 10) | 1, "event {n}");
    }
    // The first event raised the interrupt; EHB held the others back until the driver's ERDP.
    assert_eq!(*irq.0.borrow(), vec![(0, true)]);
    assert_ne!(r.read(OFF_OPER + 4, 0) & USBSTS_EINT, 0);
    // QEMU reads back the low pointer bits and RCS, never CRR (`crcr_low & ~0xe`).
    assert_eq!(r.read(OFF_OPER + 0x18, 0), CMD_RING as u32 | 1);
    r.write(RT0 + 0x18, (EVENTS + 6 * 16) as u32 | ERDP_EHB, &mem, &irq);
    assert_eq!(r.read(RT0 + 0x18, 0) & ERDP_EHB, 0);
}

#[test]
fn link_trbs_toggle_the_cycle_and_loops_end() {
    let (mem, irq) = (mem(), Recorder::default());
    let mut r = running(&mem, &irq);
    trb(&mem, CMD_RING, 0, (23 << 10) | 1);
    trb(&mem, CMD_RING + 16, CMD_RING, (6 << 10) | TRB_LK_TC | 1);
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    // After the link the cycle is 0: the old No Op (cycle 1) is not run again.
    assert_eq!(event(&mem, 0).2 >> 10 & 0x3f, 33);
    assert_eq!(event(&mem, 1), (0, 0, 0));
    // A ring of links without toggles: stopped after the limit, nothing posted.
    trb(&mem, CMD_RING, CMD_RING + 16, 6 << 10);
    trb(&mem, CMD_RING + 16, CMD_RING, 6 << 10);
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    assert_eq!(event(&mem, 1), (0, 0, 0));
}

#[test]
fn the_command_ring_can_be_aborted() {
    let (mem, irq) = (mem(), Recorder::default());
    let mut r = running(&mem, &irq);
    trb(&mem, CMD_RING, 0, (23 << 10) | 1);
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    r.write(OFF_OPER + 0x18, CRCR_CA, &mem, &irq);
    r.write(OFF_OPER + 0x1c, 0, &mem, &irq);
    assert_eq!(event(&mem, 1).1 >> 24, CC_COMMAND_RING_STOPPED);
    assert_eq!(r.read(OFF_OPER + 0x18, 0), 0);
}

#[test]
fn garbage_sets_hce_and_never_panics() {
    let (mem, irq) = (mem(), Recorder::default());
    // Two segments: only one is supported.
    let mut r = XhciRegs::new(4, 4);
    r.write(RT0 + 0x08, 2, &mem, &irq);
    r.write(RT0 + 0x10, ERST as u32, &mem, &irq);
    r.write(RT0 + 0x14, 0, &mem, &irq);
    assert_ne!(r.read(OFF_OPER + 4, 0) & USBSTS_HCE, 0);
    // ERST outside RAM, a segment of 5 TRBs.
    let mut r = XhciRegs::new(4, 4);
    r.write(RT0 + 0x08, 1, &mem, &irq);
    r.write(RT0 + 0x10, 0xffff_ffc0, &mem, &irq);
    r.write(RT0 + 0x14, 0xffff_ffff, &mem, &irq);
    assert_ne!(r.read(OFF_OPER + 4, 0) & USBSTS_HCE, 0);
    mem.write_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 5, 0, 0, 0], GuestAddress(ERST))
        .unwrap();
    let mut r = XhciRegs::new(4, 4);
    r.write(RT0 + 0x08, 1, &mem, &irq);
    r.write(RT0 + 0x10, ERST as u32, &mem, &irq);
    r.write(RT0 + 0x14, 0, &mem, &irq);
    assert_ne!(r.read(OFF_OPER + 4, 0) & USBSTS_HCE, 0);
    // A command ring outside RAM, ERDP outside the event ring, events past RAM's end.
    let mut r = running(&mem, &irq);
    r.write(OFF_OPER + 0x18, 0xffff_f001, &mem, &irq);
    r.write(OFF_OPER + 0x1c, 0xffff, &mem, &irq);
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    assert_eq!(r.read(OFF_OPER + 4, 0) & USBSTS_HCE, 0);
    let mut r = running(&mem, &irq);
    trb(&mem, CMD_RING, 0, (23 << 10) | 1);
    r.write(RT0 + 0x18, 0x10, &mem, &irq);
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    assert_ne!(r.read(OFF_OPER + 4, 0) & USBSTS_HCE, 0);
    // Unknown registers, doorbells past the slots, every offset: no panic.
    let mut r = running(&mem, &irq);
    for off in (0..0x3000).step_by(4) {
        let _ = r.read(off, 0);
        if !(OFF_OPER..OFF_OPER + 8).contains(&off) {
            r.write(off, 0xffff_ffff, &mem, &irq);
        }
    }
}

#[test]
fn a_full_event_ring_reports_it() {
    let (mem, irq) = (mem(), Recorder(RefCell::default(), true));
    let mut r = running(&mem, &irq);
    irq.0.borrow_mut().clear();
    // 20 No Ops on a 16-TRB event ring the driver never consumes.
    for i in 0..20u64 {
        trb(&mem, CMD_RING + 16 * i, 0, (23 << 10) | 1);
    }
    r.write(OFF_DOORBELL, 0, &mem, &irq);
    // 14 completions, then Event Ring Full Error, then drops.
    assert_eq!(event(&mem, 13).1 >> 24, CC_SUCCESS);
    assert_eq!(event(&mem, 14).2 >> 10 & 0x3f, ER_HOST_CONTROLLER);
    assert_eq!(event(&mem, 14).1 >> 24, CC_EVENT_RING_FULL_ERROR);
    assert_eq!(event(&mem, 15), (0, 0, 0));
    // One message for the first event; EHB holds the rest (IP stays set) until the driver
    // moves ERDP.
    assert_eq!(*irq.0.borrow(), vec![(0, true)]);
    assert_eq!(r.read(RT0, 0) & IMAN_IP, IMAN_IP);
}

#[test]
fn state_is_checked_on_restore() {
    let r = XhciRegs::new(4, 4);
    let mut bad = r.clone();
    assert!(r.check(&bad).is_ok());
    bad.intr[3].er_size = 10_000;
    assert!(r.check(&bad).is_err());
    assert!(r.check(&XhciRegs::new(2, 4)).is_err());
}
