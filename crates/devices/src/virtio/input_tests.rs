use super::*;
use crate::input::{BUTTON_LEFT, BUTTON_RIGHT};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::testing::{init_device, memory, notify, rd, wr, Ring, F_WRITE};
use crate::virtio::{STATUS_DEVICE_NEEDS_RESET, VIRTIO_F_VERSION_1};
use crate::BusDevice;
use vm_memory::{Bytes, GuestAddress};

const BUFS: u64 = 0x8_0000;

type Driven = (MmioTransport, InputHandle, crate::virtio::GuestMemory, Ring);

/// `dev` on virtio-mmio driven to DRIVER_OK, its handle, and `n` 8-byte event buffers posted on
/// the eventq.
fn drive(dev: InputDevice, n: u16) -> Driven {
    let mem = memory();
    let handle = dev.handle();
    let t = MmioTransport::new(Box::new(dev), mem.clone()).unwrap();
    assert!(!handle.is_active(), "active before the driver");
    let mut evq = Ring::new(0, 16);
    let stq = Ring::new(1, 16);
    let status = init_device(&t, 1 << VIRTIO_F_VERSION_1, &[evq.clone_layout(), stq]);
    assert_eq!(status & STATUS_DEVICE_NEEDS_RESET, 0);
    for i in 0..n {
        evq.set_desc(&mem, i, BUFS + u64::from(i) * 8, 8, F_WRITE, 0);
        evq.push(&mem, i);
    }
    notify(&t, 0);
    (t, handle, mem, evq)
}

/// A tablet with serial "tab0".
fn tablet(n: u16) -> Driven {
    drive(InputDevice::tablet(Some("tab0")).unwrap(), n)
}

impl Ring {
    fn clone_layout(&self) -> Ring {
        let mut r = Ring::new(0, self.size);
        r.desc = self.desc;
        r.avail = self.avail;
        r.used = self.used;
        r
    }
}

fn events(mem: &GuestMemoryMmap, ring: &Ring, n: u16) -> Vec<(u16, u16, i32)> {
    (0..n)
        .map(|i| {
            let (id, len) = ring.used(mem, i);
            assert_eq!(len, 8);
            let mut e = [0u8; 8];
            mem.read_slice(&mut e, GuestAddress(BUFS + u64::from(id) * 8))
                .unwrap();
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                i32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect()
}

/// Select (select, subsel) and read back (size, payload).
fn query(t: &MmioTransport, select: u8, subsel: u8) -> (u8, Vec<u8>) {
    t.write(0x100, &[select]);
    t.write(0x101, &[subsel]);
    let mut hdr = [0u8; 8];
    t.read(0x100, &mut hdr);
    assert_eq!((hdr[0], hdr[1]), (select, subsel));
    let mut payload = vec![0u8; usize::from(hdr[2])];
    t.read(0x108, &mut payload);
    (hdr[2], payload)
}

#[test]
fn config_space_answers_as_qemus_tablet() {
    let (t, _, _, _) = tablet(0);
    assert_eq!(rd(&t, 0x08), TYPE_INPUT);
    let (n, name) = query(&t, CFG_ID_NAME, 0);
    assert_eq!((n, &name[..]), (19, &b"QEMU Virtio Tablet\0"[..]));
    assert_eq!(query(&t, CFG_ID_SERIAL, 0).1, b"tab0");
    assert_eq!(
        query(&t, CFG_ID_DEVIDS, 0).1,
        [0x06, 0, 0x27, 0x06, 0x03, 0, 0x02, 0]
    );
    assert_eq!(query(&t, CFG_EV_BITS, EV_ABS as u8).1, [0x03]);
    assert_eq!(query(&t, CFG_EV_BITS, EV_REL as u8).1, [0, 1]);
    let keys = query(&t, CFG_EV_BITS, EV_KEY as u8).1;
    assert_eq!(keys.len(), 43);
    assert_eq!(keys[0x110 / 8], 0x1f, "BTN_LEFT..BTN_EXTRA");
    assert_eq!(keys[0x150 / 8], 0x03, "BTN_GEAR_DOWN, BTN_GEAR_UP");
    let (n, abs) = query(&t, CFG_ABS_INFO, ABS_Y as u8);
    assert_eq!(n, 20);
    assert_eq!(abs[4..8], ABS_MAX.to_le_bytes());
    // Anything else: size 0 and a zero payload.
    assert_eq!(query(&t, CFG_EV_BITS, 0x05).0, 0);
    assert_eq!(query(&t, 0, 0).0, 0);
    let mut past = [0xffu8; 4];
    t.read(0x100 + 51, &mut past);
    assert_eq!(past, [0; 4], "past the config space (8 + 43 bytes)");
}

#[test]
fn pointer_reports_reach_the_eventq() {
    let (t, handle, mem, evq) = tablet(12);
    assert!(handle.is_active());
    handle.pointer_abs(100, 200, 0, 0);
    assert!(evq.wait_used(&mem, 3));
    assert_eq!(
        events(&mem, &evq, 3),
        [(EV_ABS, ABS_X, 100), (EV_ABS, ABS_Y, 200), (EV_SYN, 0, 0)]
    );
    handle.pointer_abs(ABS_MAX + 5, 7, -1, BUTTON_LEFT | BUTTON_RIGHT);
    assert!(evq.wait_used(&mem, 9));
    assert_eq!(
        events(&mem, &evq, 9)[3..],
        [
            (EV_KEY, BTN_LEFT, 1),
            (EV_KEY, BTN_RIGHT, 1),
            (EV_REL, REL_WHEEL, 1),
            (EV_ABS, ABS_X, ABS_MAX as i32),
            (EV_ABS, ABS_Y, 7),
            (EV_SYN, 0, 0)
        ]
    );
    assert!(rd(&t, 0x60) & 1 != 0, "used-buffer interrupt");
}

#[test]
fn a_report_waits_for_enough_buffers() {
    let (t, handle, mem, mut evq) = tablet(2);
    handle.pointer_abs(1, 2, 0, 0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        evq.used_idx(&mem),
        0,
        "three events, two buffers: nothing yet"
    );
    evq.set_desc(&mem, 2, BUFS + 16, 8, F_WRITE, 0);
    evq.push(&mem, 2);
    notify(&t, 0);
    assert!(evq.wait_used(&mem, 3));
    assert_eq!(events(&mem, &evq, 3)[2], (EV_SYN, 0, 0));
}

#[test]
fn bad_buffers_come_back_empty_and_reset_deactivates() {
    let (t, handle, mem, mut evq) = tablet(0);
    // Too small, then device-readable, then three good ones.
    evq.set_desc(&mem, 0, BUFS, 4, F_WRITE, 0);
    evq.set_desc(&mem, 1, BUFS + 8, 8, 0, 0);
    for i in 2..5 {
        evq.set_desc(&mem, i, BUFS + u64::from(i) * 8, 8, F_WRITE, 0);
    }
    for i in 0..5 {
        evq.push(&mem, i);
    }
    notify(&t, 0);
    handle.pointer_abs(5, 6, 0, 0);
    assert!(evq.wait_used(&mem, 5));
    let lens: Vec<u32> = (0..5).map(|i| evq.used(&mem, i).1).collect();
    assert_eq!(lens.iter().filter(|&&l| l == 0).count(), 2);
    assert_eq!(rd(&t, 0x70) & STATUS_DEVICE_NEEDS_RESET, 0);
    wr(&t, 0x70, 0);
    assert!(
        !handle.is_active(),
        "a reset device no longer takes the pointer"
    );
    handle.pointer_abs(5, 6, 0, 0);
}

#[test]
fn scaling_matches_qemu() {
    assert_eq!(scale_axis(0, 1024), 0);
    assert_eq!(scale_axis(512, 1024), 0x3fff);
    assert_eq!(scale_axis(1023, 1024), 0x7fdf);
    assert_eq!(scale_axis(5000, 1024), ABS_MAX);
    assert_eq!(scale_axis(3, 0), ABS_MAX / 2);
}

fn device(kind: InputKind, n: u16) -> Driven {
    drive(InputDevice::new(kind, None).unwrap(), n)
}

#[test]
fn keyboard_and_mouse_are_qemus() {
    let (t, kbd, mem, evq) = device(InputKind::Keyboard, 8);
    assert_eq!(query(&t, CFG_ID_NAME, 0).1, b"QEMU Virtio Keyboard\0");
    assert_eq!(
        query(&t, CFG_ID_DEVIDS, 0).1,
        [0x06, 0, 0x27, 0x06, 0x01, 0, 0x01, 0]
    );
    assert_eq!(query(&t, CFG_EV_BITS, EV_LED as u8).1, [0x07]);
    assert_eq!(query(&t, CFG_EV_BITS, EV_REP as u8), (1, vec![0]));
    let keys = query(&t, CFG_EV_BITS, EV_KEY as u8).1;
    assert_eq!(keys[30 / 8] & (1 << (30 % 8)), 1 << (30 % 8), "KEY_A");
    assert_eq!(query(&t, CFG_ABS_INFO, 0).0, 0, "no axes");
    kbd.key(30, true);
    kbd.key(30, false);
    assert!(evq.wait_used(&mem, 4));
    assert_eq!(
        events(&mem, &evq, 4),
        [
            (EV_KEY, 30, 1),
            (EV_SYN, 0, 0),
            (EV_KEY, 30, 0),
            (EV_SYN, 0, 0)
        ]
    );

    let (t, mouse, mem, evq) = device(InputKind::Mouse, 8);
    assert_eq!(query(&t, CFG_ID_NAME, 0).1, b"QEMU Virtio Mouse\0");
    assert_eq!(query(&t, CFG_EV_BITS, EV_REL as u8).1, [0x03, 0x01]);
    assert_eq!(query(&t, CFG_EV_BITS, EV_ABS as u8).0, 0);
    mouse.pointer_rel(-4, 9, 0, BUTTON_LEFT);
    assert!(evq.wait_used(&mem, 4));
    assert_eq!(
        events(&mem, &evq, 4),
        [
            (EV_KEY, BTN_LEFT, 1),
            (EV_REL, REL_X, -4),
            (EV_REL, REL_Y, 9),
            (EV_SYN, 0, 0)
        ]
    );
}

#[test]
fn the_router_follows_active_drivers() {
    use crate::input::{InputRouter, InputSink};
    #[derive(Default)]
    struct Ps2(std::sync::Mutex<Vec<&'static str>>);
    impl InputSink for Ps2 {
        fn key(&self, _: u16, _: bool) {
            self.0.lock().unwrap().push("key");
        }
        fn pointer_rel(&self, _: i32, _: i32, _: i32, _: u8) {
            self.0.lock().unwrap().push("rel");
        }
    }
    let ps2 = std::sync::Arc::new(Ps2::default());
    let (kt, kbd, kmem, kevq) = device(InputKind::Keyboard, 8);
    let tablet_dev = InputDevice::tablet(None).unwrap();
    let tablet = tablet_dev.handle();
    let router = InputRouter::new(ps2.clone(), vec![kbd, tablet]);
    // The tablet's driver has not started: the pointer is relative and goes to PS/2.
    assert!(router.has_absolute());
    assert!(!router.pointer_is_absolute());
    router.pointer_rel(1, 1, 0, 0);
    // The keyboard's has: keys go to it.
    router.key(30, true);
    assert!(kevq.wait_used(&kmem, 2));
    assert_eq!(*ps2.0.lock().unwrap(), ["rel"]);
    // Reset the keyboard: keys go back to PS/2.
    wr(&kt, 0x70, 0);
    router.key(30, false);
    assert_eq!(*ps2.0.lock().unwrap(), ["rel", "key"]);
}

#[test]
fn snapshot_keeps_the_query_buttons_and_queued_reports() {
    let mut dev = InputDevice::tablet(None).unwrap();
    dev.write_config(0, &[CFG_ID_NAME]);
    dev.shared.active.store(true, Ordering::Release);
    dev.handle().pointer_abs(10, 20, 0, BUTTON_LEFT);
    let saved = dev.save_state();
    let mut other = InputDevice::tablet(None).unwrap();
    other.restore_state(saved.clone()).unwrap();
    assert_eq!(other.select, CFG_ID_NAME);
    assert_eq!(*other.shared.buttons.lock().unwrap(), BUTTON_LEFT);
    assert_eq!(
        other.shared.pending().iter().collect::<Vec<_>>(),
        dev.shared.pending().iter().collect::<Vec<_>>()
    );
    // Hostile sizes are refused before anything changes.
    let mut bad = saved.clone();
    bad["pending"] = serde_json::json!([vec![[0u8; 8]; MAX_REPORT_EVENTS + 1]]);
    assert!(other
        .restore_state(bad)
        .unwrap_err()
        .contains("queued reports"));
    let mut bad = saved;
    bad["pending"] = serde_json::json!(vec![vec![[0u8; 8]]; MAX_PENDING_REPORTS + 1]);
    assert!(other.restore_state(bad).is_err());
    assert!(other.restore_state(serde_json::json!("junk")).is_err());
    assert_eq!(other.shared.pending().len(), 1);
}
