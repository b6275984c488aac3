use super::*;
use std::sync::Mutex;

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);
impl BusDevice for Recorder {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(offset as u8);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.0.lock().unwrap().push((offset, data.to_vec()));
    }
}

/// (base, len, name) of every range, in address order.
fn layout<S: AddressSpace>(bus: &Bus<S>) -> Vec<(u64, u64, String)> {
    bus.ranges()
        .into_iter()
        .map(|r| (r.base, r.len, r.name))
        .collect()
}

#[test]
fn routes_by_range_and_offset() {
    let bus = PioBus::new();
    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    bus.add("COM1", 0x3f8, 8, a.clone()).unwrap();
    bus.add("POST", 0x80, 1, b.clone()).unwrap();
    let map = bus.snapshot();
    let mut d = [0u8; 1];
    assert!(map.read(0x3fd, &mut d).is_some());
    assert_eq!(d, [5]);
    assert!(map.write(0x80, &[7]).is_some());
    assert_eq!(b.0.lock().unwrap().as_slice(), &[(0, vec![7])]);
    assert!(map.read(0x3f7, &mut d).is_none());
    assert!(map.read(0x400, &mut d).is_none());
    assert!(map.write(0x81, &[1]).is_none());
    assert!(a.0.lock().unwrap().is_empty());
}

#[test]
fn stable_ids_and_names() {
    let bus = PioBus::new();
    let d = Arc::new(Recorder::default());
    let com1 = bus.add("COM1", 0x3f8, 8, d.clone()).unwrap();
    let testdev = bus.add("pc-testdev", 0xe0, 4, d.clone()).unwrap();
    assert_eq!((com1.index(), testdev.index()), (0, 1));
    // A refused add registers nothing: the next id is still 2.
    assert!(bus.add("overlap", 0xe2, 1, d.clone()).is_err());
    let post = bus.add("POST", 0x80, 1, d.clone()).unwrap();
    assert_eq!(post.index(), 2);
    assert_eq!(bus.device_count(), 3);
    let map = bus.snapshot();
    let mut b = [0u8; 1];
    assert_eq!(map.read(0x3f9, &mut b), Some(com1));
    assert_eq!(map.write(0xe3, &[1]), Some(testdev));
    assert_eq!(map.write(0x80, &[1]), Some(post));
    assert_eq!(map.write(0xe4, &[1]), None);
    assert_eq!(
        layout(&bus),
        [
            (0x80, 1, "POST".into()),
            (0xe0, 4, "pc-testdev".into()),
            (0x3f8, 8, "COM1".into())
        ]
    );
    assert_eq!(bus.name(testdev).as_deref(), Some("pc-testdev"));
}

#[test]
fn rejects_overlaps_and_bad_ranges() {
    let bus = MmioBus::new();
    let d = Arc::new(Recorder::default());
    bus.add("a", 0x100, 0x10, d.clone()).unwrap();
    let err = bus.add("b", 0x10f, 1, d.clone()).unwrap_err();
    assert_eq!(
        err,
        BusError::Overlap {
            space: "MMIO",
            base: 0x10f,
            len: 1,
            other: "a".into(),
            other_base: 0x100,
            other_len: 0x10
        }
    );
    assert!(bus.add("c", 0xf8, 0x9, d.clone()).is_err());
    assert!(bus.add("d", 0x0, 0, d.clone()).is_err());
    assert!(bus.add("e", u64::MAX, 2, d.clone()).is_err());
    bus.add("f", 0x110, 1, d.clone()).unwrap();
    bus.add("g", 0xf0, 0x10, d).unwrap();
}

#[test]
fn a_registered_device_maps_several_ranges_and_removes_them() {
    let bus = MmioBus::new();
    let d = Arc::new(Recorder::default());
    let id = bus.register("bar", d);
    assert!(bus.ranges().is_empty());
    bus.insert(id, 0x1000, 0x100).unwrap();
    bus.insert(id, 0x3000, 0x10).unwrap();
    assert_eq!(bus.snapshot().write(0x3004, &[1]), Some(id));
    assert_eq!(bus.remove(id, 0x1000), Ok(0x100));
    assert_eq!(bus.snapshot().write(0x1000, &[1]), None);
    assert_eq!(
        bus.remove(id, 0x1000),
        Err(BusError::NoRange {
            space: "MMIO",
            id,
            base: 0x1000
        })
    );
    let ghost = DeviceId(7);
    assert_eq!(
        bus.insert(ghost, 0, 1),
        Err(BusError::UnknownDevice {
            space: "MMIO",
            id: ghost
        })
    );
    assert_eq!(layout(&bus), [(0x3000, 0x10, "bar".into())]);
}

#[test]
fn move_range_moves_and_refuses_overlaps_unchanged() {
    let bus = MmioBus::new();
    let d = Arc::new(Recorder::default());
    let a = bus.add("a", 0x1000, 0x100, d.clone()).unwrap();
    let b = bus.add("b", 0x2000, 0x100, d.clone()).unwrap();
    bus.move_range(a, 0x1000, 0x4000).unwrap();
    let map = bus.snapshot();
    let mut x = [0u8; 1];
    assert_eq!(map.read(0x1000, &mut x), None, "old place is empty");
    assert_eq!(map.read(0x4010, &mut x), Some(a));
    assert_eq!(x, [0x10], "offset is relative to the new base");

    // Refused moves leave the map exactly as it was.
    let before = layout(&bus);
    let generation = bus.generation.load(Ordering::Relaxed);
    for new in [0x2000, 0x1f01, 0x20ff, u64::MAX - 0x10] {
        assert!(bus.move_range(a, 0x4000, new).is_err(), "{new:#x}");
    }
    assert!(
        bus.move_range(a, 0x1000, 0x5000).is_err(),
        "a is not at 0x1000"
    );
    assert!(bus.move_range(b, 0x4000, 0x5000).is_err(), "0x4000 is a's");
    assert_eq!(layout(&bus), before);
    assert_eq!(bus.generation.load(Ordering::Relaxed), generation);

    // Overlapping its own old range is fine, and so is touching a neighbour.
    bus.move_range(a, 0x4000, 0x4080).unwrap();
    bus.move_range(a, 0x4080, 0x1f00).unwrap();
    bus.move_range(b, 0x2000, 0x2100).unwrap();
    assert_eq!(
        layout(&bus),
        [(0x1f00, 0x100, "a".into()), (0x2100, 0x100, "b".into())]
    );
}

#[test]
fn readers_see_changes_and_keep_old_maps_alive() {
    let bus = Arc::new(MmioBus::new());
    let d = Arc::new(Recorder::default());
    let a = bus.add("a", 0x1000, 0x10, d.clone()).unwrap();
    let mut reader = bus.reader();
    let mut x = [0u8; 1];
    assert_eq!(reader.map().read(0x1000, &mut x), Some(a));
    let old = bus.snapshot();
    bus.move_range(a, 0x1000, 0x8000).unwrap();
    assert_eq!(reader.map().read(0x1000, &mut x), None);
    assert_eq!(reader.map().read(0x8000, &mut x), Some(a));
    // A map taken before the move still routes the old way (an access in flight).
    assert_eq!(old.read(0x1000, &mut x), Some(a));
}

#[test]
fn concurrent_readers_never_see_a_torn_map() {
    // One writer flips a device between two places while readers look it up: each lookup finds
    // it at exactly one of the two, never both, never neither.
    let bus = Arc::new(MmioBus::new());
    let d = Arc::new(Recorder::default());
    let a = bus.add("a", 0x1000, 0x10, d).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut r = bus.reader();
            let (stop, lookups) = (stop.clone(), lookups.clone());
            std::thread::spawn(move || {
                let mut x = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    let map = r.map();
                    let at_low = map.read(0x1000, &mut x).is_some();
                    let at_high = map.read(0x9000, &mut x).is_some();
                    assert!(at_low ^ at_high);
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut at = 0x1000;
    let mut moves = 0;
    // At least 2000 moves, and keep moving until the readers have looked many times.
    // Bounded, in case the readers died.
    while (moves < 2000 || lookups.load(Ordering::Relaxed) < 10_000) && moves < 10_000_000 {
        moves += 1;
        let next = if at == 0x1000 { 0x9000 } else { 0x1000 };
        bus.move_range(a, at, next).unwrap();
        at = next;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(lookups.load(Ordering::Relaxed) >= 10_000);
}
