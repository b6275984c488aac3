use super::*;

/// One parsed structure: type, formatted area (header included), handle and strings.
#[derive(Debug)]
struct Parsed {
    ty: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Parsed {
    fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.formatted[offset..offset + 2].try_into().unwrap())
    }

    fn u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.formatted[offset..offset + 4].try_into().unwrap())
    }

    fn u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.formatted[offset..offset + 8].try_into().unwrap())
    }

    /// The string a string field at `offset` refers to; None for 0.
    fn string(&self, offset: usize) -> Option<&str> {
        match self.formatted[offset] {
            0 => None,
            n => Some(&self.strings[usize::from(n) - 1]),
        }
    }
}

/// Walks a structure table as a reader of DSP0134 6.1.3 would, checking its framing.
fn parse(mut bytes: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 4, "truncated header");
        let len = usize::from(bytes[1]);
        assert!(len >= 4 && bytes.len() >= len + 2, "bad length {len}");
        let formatted = bytes[..len].to_vec();
        let mut rest = &bytes[len..];
        let mut strings = Vec::new();
        if rest.starts_with(&[0, 0]) {
            rest = &rest[2..];
        } else {
            loop {
                let end = rest
                    .iter()
                    .position(|&b| b == 0)
                    .expect("unterminated string");
                assert!(end > 0, "empty string in a string set");
                strings.push(String::from_utf8(rest[..end].to_vec()).unwrap());
                rest = &rest[end + 1..];
                if rest[0] == 0 {
                    rest = &rest[1..];
                    break;
                }
            }
        }
        out.push(Parsed {
            ty: formatted[0],
            handle: u16::from_le_bytes([formatted[2], formatted[3]]),
            formatted,
            strings,
        });
        bytes = rest;
    }
    assert_eq!(
        out.last().map(|s| s.ty),
        Some(127),
        "the table ends with type 127"
    );
    out
}

fn config<'a>(fields: &'a SmbiosFields, ram: &'a [(u64, u64)]) -> SmbiosConfig<'a> {
    SmbiosConfig {
        fields,
        product: "Standard PC (Q35 + ICH9, 2009)",
        version: "pc-q35-7.2",
        sockets: 1,
        dies: 1,
        cores: 2,
        threads: 1,
        cpuid_version: 0x000a_0671,
        cpuid_features: 0x178b_fbff,
        ram_size: ram.iter().map(|r| r.1).sum(),
        ram_ranges: ram,
        entry_point: EntryPointType::Bits32,
    }
}

const RAM_256M: [(u64, u64); 1] = [(0, 256 << 20)];

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

#[test]
fn default_tables_are_qemus() {
    let fields = SmbiosFields::default();
    let blobs = build(&config(&fields, &RAM_256M)).unwrap();
    let t = parse(&blobs.tables);
    let types: Vec<(u8, u16, usize)> = t
        .iter()
        .map(|s| (s.ty, s.handle, s.formatted.len()))
        .collect();
    assert_eq!(
        types,
        [
            (1, 0x100, 0x1b),
            (3, 0x300, 0x16),
            (4, 0x400, 0x2a),
            (16, 0x1000, 0x17),
            (17, 0x1100, 0x28),
            (19, 0x1300, 0x1f),
            (32, 0x2000, 0x0b),
            (127, 0x7f00, 0x04),
        ]
    );

    let t1 = &t[0];
    assert_eq!(
        t1.strings,
        ["QEMU", "Standard PC (Q35 + ICH9, 2009)", "pc-q35-7.2"]
    );
    assert_eq!(t1.string(4), Some("QEMU"));
    assert_eq!(t1.string(5), Some("Standard PC (Q35 + ICH9, 2009)"));
    assert_eq!(t1.string(6), Some("pc-q35-7.2"));
    assert_eq!(t1.string(7), None);
    assert_eq!(t1.formatted[8..24], [0; 16]);
    assert_eq!(t1.formatted[0x18], 6);

    let t3 = &t[1];
    assert_eq!(t3.strings, ["QEMU", "pc-q35-7.2"]);
    assert_eq!(t3.formatted[5], 1);
    assert_eq!(t3.formatted[9..13], [3, 3, 3, 2]);

    let t4 = &t[2];
    assert_eq!(t4.strings, ["CPU 0", "QEMU", "pc-q35-7.2"]);
    assert_eq!(t4.string(0x10), Some("pc-q35-7.2"));
    assert_eq!(t4.u32(8), 0x000a_0671);
    assert_eq!(t4.u32(12), 0x178b_fbff);
    assert_eq!((t4.u16(0x14), t4.u16(0x16)), (2000, 2000));
    assert_eq!(t4.formatted[0x18], 0x41);
    assert_eq!(t4.formatted[0x23..0x26], [2, 2, 2]);
    assert_eq!([t4.u16(0x1a), t4.u16(0x1c), t4.u16(0x1e)], [0xffff; 3]);

    let t16 = &t[3];
    assert_eq!(t16.u32(7), 256 * 1024);
    assert_eq!(t16.u16(0x0d), 1);
    assert!(t16.strings.is_empty());

    let t17 = &t[4];
    assert_eq!(t17.strings, ["DIMM 0", "QEMU"]);
    assert_eq!(t17.u16(4), 0x1000);
    assert_eq!(t17.u16(0x0c), 256);
    assert_eq!(t17.formatted[0x0e], 9);

    let t19 = &t[5];
    assert_eq!((t19.u32(4), t19.u32(8)), (0, 256 * 1024 - 1));
    assert_eq!(t19.u16(0x0c), 0x1000);

    // The entry point describes the table; the firmware fills in address and checksums.
    let a = &blobs.anchor;
    assert_eq!(a.len(), 0x1f);
    assert_eq!(&a[0..4], b"_SM_");
    assert_eq!(&a[0x10..0x15], b"_DMI_");
    assert_eq!((a[5], a[6], a[7], a[0x1e]), (0x1f, 2, 8, 0x28));
    assert_eq!(
        usize::from(u16::from_le_bytes([a[0x16], a[0x17]])),
        blobs.tables.len()
    );
    assert_eq!(u16::from_le_bytes([a[0x1c], a[0x1d]]), 8);
    let max = blobs.tables.len(); // some structure is the largest
    let max_size = usize::from(u16::from_le_bytes([a[8], a[9]]));
    assert!(max_size > 0x2a && max_size < max);
    assert_eq!(a[4], 0);
    assert_eq!(a[0x15], 0);
    assert_eq!(a[0x18..0x1c], [0; 4]);
}

#[test]
fn finalized_anchor_checksums_to_zero() {
    let fields = SmbiosFields::default();
    let mut a = build(&config(&fields, &RAM_256M)).unwrap().anchor;
    finalize_anchor(&mut a, 0xf_5a40);
    assert_eq!(a[0x18..0x1c], 0xf_5a40u32.to_le_bytes());
    assert_eq!(sum(&a[..0x10]), 0);
    assert_eq!(sum(&a[0x10..]), 0);
    // Finalizing again (SeaBIOS subtracts the sum it finds) keeps it valid.
    finalize_anchor(&mut a, 0x7ff_0000);
    assert_eq!(sum(&a[..0x10]), 0);
    assert_eq!(sum(&a[0x10..]), 0);

    let mut c = config(&fields, &RAM_256M);
    c.entry_point = EntryPointType::Bits64;
    let blobs = build(&c).unwrap();
    let mut a = blobs.anchor;
    assert_eq!((&a[0..5], a[6], a[7], a[0x0a]), (&b"_SM3_"[..], 0x18, 3, 1));
    assert_eq!(
        u32::from_le_bytes(a[0x0c..0x10].try_into().unwrap()) as usize,
        blobs.tables.len()
    );
    finalize_anchor(&mut a, 0x1_0000_0000);
    assert_eq!(sum(&a), 0);
    assert_eq!(a[0x10..0x18], 0x1_0000_0000u64.to_le_bytes());
    // A 3.0 table has the longer type 4 with the 16-bit counts.
    let t4 = parse(&blobs.tables)
        .into_iter()
        .find(|s| s.ty == 4)
        .unwrap();
    assert_eq!(t4.formatted.len(), 0x30);
    assert_eq!([t4.u16(0x2a), t4.u16(0x2c), t4.u16(0x2e)], [2, 2, 2]);
}

#[test]
fn sockets_dimms_and_ranges_follow_the_machine() {
    let fields = SmbiosFields::default();
    // 40 GiB with the PCI hole: three DIMMs of 16, 16 and 8 GiB, two mapped ranges.
    let ram = [(0, 2 << 30), (4 << 30, 38 << 30)];
    let mut c = config(&fields, &ram);
    c.sockets = 3;
    c.dies = 2;
    c.threads = 2;
    let t = parse(&build(&c).unwrap().tables);
    let t4: Vec<_> = t.iter().filter(|s| s.ty == 4).collect();
    assert_eq!(t4.len(), 3);
    assert_eq!(t4[2].handle, 0x402);
    assert_eq!(t4[2].string(4), Some("CPU 2"));
    // Cores and threads per socket: 2 dies of 2 cores of 2 threads.
    assert_eq!(t4[2].formatted[0x23..0x26], [4, 4, 8]);
    let t17: Vec<_> = t.iter().filter(|s| s.ty == 17).collect();
    let sizes: Vec<u16> = t17.iter().map(|s| s.u16(0x0c)).collect();
    assert_eq!(sizes, [16384, 16384, 8192]);
    assert_eq!(t17[2].string(0x10), Some("DIMM 2"));
    assert_eq!(t17[2].handle, 0x1102);
    let t16 = t.iter().find(|s| s.ty == 16).unwrap();
    assert_eq!(t16.u16(0x0d), 3);
    assert_eq!(t16.u32(7), 40 << 20);
    let t19: Vec<_> = t.iter().filter(|s| s.ty == 19).collect();
    assert_eq!(t19.len(), 2);
    assert_eq!(t19[1].handle, 0x1301);
    assert_eq!((t19[1].u32(4), t19[1].u32(8)), (4 << 20, (42 << 20) - 1));

    // Beyond the 32-bit fields: extended sizes and addresses.
    let ram = [(0, 3 << 30), (4 << 30, (5 << 40) - (3 << 30))];
    let mut c = config(&fields, &ram);
    c.sockets = 17;
    c.cores = 1;
    let t = parse(&build(&c).unwrap().tables);
    let t4: Vec<_> = t.iter().filter(|s| s.ty == 4).collect();
    assert_eq!(t4[16].string(4), Some("CPU10"));
    let t16 = t.iter().find(|s| s.ty == 16).unwrap();
    assert_eq!(t16.u32(7), 0x8000_0000);
    assert_eq!(t16.u64(0x0f), 5 << 40);
    let t19 = t.iter().filter(|s| s.ty == 19).nth(1).unwrap();
    assert_eq!((t19.u32(4), t19.u32(8)), (u32::MAX, u32::MAX));
    assert_eq!(
        (t19.u64(0x0f), t19.u64(0x17)),
        (4 << 30, (5 << 40) + (1 << 30) - 1)
    );
}

#[test]
fn user_fields_replace_the_defaults() {
    let fields = SmbiosFields {
        bios: Some(BiosFields {
            vendor: Some("rvmm".into()),
            date: Some("01/02/2024".into()),
            release: Some((1, 2)),
            ..Default::default()
        }),
        system: SystemFields {
            manufacturer: Some("ACME".into()),
            serial: Some("".into()),
            family: Some("Virtual".into()),
            uuid: Some([
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef,
            ]),
            ..Default::default()
        },
        oem_strings: vec!["one".into(), "two".into()],
        ..Default::default()
    };
    let t = parse(&build(&config(&fields, &RAM_256M)).unwrap().tables);
    let t0 = &t[0];
    assert_eq!((t0.ty, t0.handle, t0.formatted.len()), (0, 0, 0x18));
    assert_eq!(t0.strings, ["rvmm", "01/02/2024"]);
    assert_eq!(t0.string(5), None);
    assert_eq!(t0.string(8), Some("01/02/2024"));
    assert_eq!(t0.u16(6), 0xe800);
    assert_eq!(t0.formatted[0x13..0x18], [0x14, 1, 2, 0xff, 0xff]);

    let t1 = &t[1];
    assert_eq!(t1.string(4), Some("ACME"));
    assert_eq!(t1.string(7), None, "an empty string is no string");
    assert_eq!(t1.string(0x1a), Some("Virtual"));
    assert_eq!(
        t1.formatted[8..24],
        [
            0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef
        ]
    );
    let t11 = t.iter().find(|s| s.ty == 11).unwrap();
    assert_eq!((t11.handle, t11.formatted[4]), (0xe00, 2));
    assert_eq!(t11.strings, ["one", "two"]);

    let mut bad = SmbiosFields::default();
    bad.chassis.serial = Some("a\0b".into());
    let e = build(&config(&bad, &RAM_256M)).unwrap_err();
    assert!(matches!(e, SmbiosError::NulInString { ty: 3, .. }), "{e}");
}

#[test]
fn a_32bit_entry_point_refuses_tables_over_64k() {
    let fields = SmbiosFields {
        oem_strings: vec!["x".repeat(1000); 70],
        ..Default::default()
    };
    let e = build(&config(&fields, &RAM_256M)).unwrap_err();
    assert!(
        matches!(e, SmbiosError::TablesTooLong { max: 65535, .. }),
        "{e}"
    );
    let mut c = config(&fields, &RAM_256M);
    c.entry_point = EntryPointType::Bits64;
    assert!(build(&c).is_ok());
}
