use super::*;
use std::process::Command;

fn config(apic_ids: Vec<u32>) -> AcpiConfig {
    AcpiConfig {
        apic_ids,
        com1: true,
        pci: PciHostBridge::Pcie,
        virtio_mmio: Vec::new(),
        s3: true,
        i8042: true,
    }
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn find<'a>(tables: &'a [PlacedTable], name: &str) -> &'a PlacedTable {
    tables.iter().find(|t| t.name == name).unwrap()
}

/// The MADT's interrupt controller structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = usize::from(madt[off + 1]);
        assert!(len >= 2, "zero-length MADT entry at {off}");
        out.push((madt[off], madt[off..off + len].to_vec()));
        off += len;
    }
    assert_eq!(off, madt.len());
    out
}

#[test]
fn every_checksum_and_length_is_right() {
    for cpus in [1u32, 4, 300] {
        let tables = build_tables(&config((0..cpus).collect())).unwrap();
        for t in &tables {
            match t.name.as_str() {
                "RSDP" => {
                    assert_eq!(&t.bytes[..8], b"RSD PTR ");
                    assert_eq!(sum(&t.bytes[..20]), 0, "RSDP v1 checksum");
                    assert_eq!(sum(&t.bytes), 0, "RSDP extended checksum");
                    assert_eq!(u32_at(&t.bytes, 20) as usize, t.bytes.len());
                    assert_eq!(t.bytes[15], 2, "ACPI 2.0+ RSDP");
                    assert_eq!(t.addr % 16, 0);
                }
                "FACS" => {
                    assert_eq!(&t.bytes[..4], b"FACS");
                    assert_eq!(u32_at(&t.bytes, 4), 64);
                    assert_eq!(t.addr % 64, 0);
                }
                name => {
                    assert_eq!(&t.bytes[..4], name.as_bytes());
                    assert_eq!(u32_at(&t.bytes, 4) as usize, t.bytes.len(), "{name} length");
                    assert_eq!(sum(&t.bytes), 0, "{name} checksum");
                    assert_eq!(&t.bytes[10..16], b"RVMM  ");
                }
            }
            assert!(t.addr >= RSDP_ADDR && t.addr + t.bytes.len() as u64 <= ACPI_TABLES_END);
        }
        // No two tables overlap.
        let mut spans: Vec<(u64, u64)> = tables
            .iter()
            .map(|t| (t.addr, t.addr + t.bytes.len() as u64))
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    }
}

#[test]
fn pointers_link_rsdp_to_every_table() {
    let tables = build_tables(&config(vec![0, 1])).unwrap();
    let rsdp = find(&tables, "RSDP");
    let xsdt = find(&tables, "XSDT");
    assert_eq!(u64_at(&rsdp.bytes, 24), xsdt.addr);
    let entries: Vec<u64> = (36..xsdt.bytes.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt.bytes, o))
        .collect();
    assert_eq!(
        entries,
        vec![find(&tables, "FACP").addr, find(&tables, "APIC").addr]
    );
    let fadt = &find(&tables, "FACP").bytes;
    assert_eq!(u32_at(fadt, 36) as u64, find(&tables, "FACS").addr);
    assert_eq!(u32_at(fadt, 40) as u64, find(&tables, "DSDT").addr);
    assert_eq!(u64_at(fadt, 140), find(&tables, "DSDT").addr, "X_DSDT");
}

#[test]
fn fadt_describes_the_ich9_pm_block_and_reset_register() {
    let f = fadt(0xe1000, 0xe0040, true);
    assert_eq!(
        u16::from_le_bytes([f[109], f[110]]),
        2,
        "IAPC_BOOT_ARCH: 8042"
    );
    let no_kbd = fadt(0xe1000, 0xe0040, false);
    assert_eq!(u16::from_le_bytes([no_kbd[109], no_kbd[110]]), 0);
    assert_eq!(f[8], 6, "FADT revision");
    assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI_INT");
    assert_eq!(u32_at(&f, 48), 0, "no SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(&f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(&f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(&f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(u32_at(&f, 80), 0x620, "GPE0_BLK");
    assert_eq!(&f[88..93], &[4, 2, 0, 4, 0x10]);
    assert_eq!(f[108], 0x32, "century");
    let flags = u32_at(&f, 112);
    assert_eq!(flags, 0x84a5, "QEMU q35's FADT flags");
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    assert_eq!(flags & (1 << 4), 0, "fixed-feature power button");
    // RESET_REG: SystemIO, 8 bits, port 0xCF9; RESET_VALUE 0x0F.
    assert_eq!(f[116], 1);
    assert_eq!(f[117], 8);
    assert_eq!(u64_at(&f, 120), 0xcf9);
    assert_eq!(f[128], 0x0f);
    // X_PM1a_CNT_BLK GAS.
    assert_eq!(&f[172..176], &[1, 16, 0, 0]);
    assert_eq!(u64_at(&f, 176), 0x604);
}

#[test]
fn madt_has_cpus_ioapic_and_overrides() {
    let ids = vec![0, 1, 2, 4];
    let m = madt(&ids);
    assert_eq!(u32_at(&m, 36), 0xfee0_0000);
    assert_eq!(u32_at(&m, 40), 1, "PCAT_COMPAT");
    let e = madt_entries(&m);
    let lapics: Vec<(u8, u8, u32)> = e
        .iter()
        .filter(|(t, _)| *t == 0)
        .map(|(_, b)| (b[2], b[3], u32_at(b, 4)))
        .collect();
    assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 4, 1)]);
    let ioapic = e.iter().find(|(t, _)| *t == 1).unwrap();
    assert_eq!(ioapic.1[2], 0, "IOAPIC ID");
    assert_eq!(u32_at(&ioapic.1, 4), 0xfec0_0000);
    assert_eq!(u32_at(&ioapic.1, 8), 0, "GSI base");
    let overrides: Vec<(u8, u32, u16)> = e
        .iter()
        .filter(|(t, _)| *t == 2)
        .map(|(_, b)| (b[3], u32_at(b, 4), u16::from_le_bytes([b[8], b[9]])))
        .collect();
    assert_eq!(
        overrides,
        vec![
            (0, 2, 0),
            (5, 5, 0xd),
            (9, 9, 0xd),
            (10, 10, 0xd),
            (11, 11, 0xd)
        ]
    );
    assert!(e.iter().any(|(t, b)| *t == 4 && b[2] == 0xff && b[5] == 1));
    assert!(!e.iter().any(|(t, _)| *t == 9 || *t == 0xa));
}

#[test]
fn madt_uses_x2apic_entries_above_254() {
    let ids: Vec<u32> = (0..300).collect();
    let e = madt_entries(&madt(&ids));
    assert_eq!(e.iter().filter(|(t, _)| *t == 0).count(), 255);
    let x2: Vec<(u32, u32)> = e
        .iter()
        .filter(|(t, _)| *t == 9)
        .map(|(_, b)| (u32_at(b, 4), u32_at(b, 12)))
        .collect();
    assert_eq!(x2.len(), 45);
    assert_eq!(x2[0], (255, 255));
    assert_eq!(x2[44], (299, 299));
    assert!(e.iter().any(|(t, _)| *t == 0xa));
}

#[test]
fn dsdt_variants_and_s5() {
    let with = dsdt(&config(vec![0]));
    let without = dsdt(&AcpiConfig {
        apic_ids: vec![0],
        com1: false,
        pci: PciHostBridge::None,
        virtio_mmio: Vec::new(),
        s3: false,
        i8042: false,
    });
    let has = |t: &[u8], s: &[u8]| t.windows(s.len()).any(|w| w == s);
    for t in [&with, &without] {
        // NameOp "_S5_" PackageOp len 6 count 4 Zero Zero Zero Zero (QEMU's package).
        assert!(has(
            t,
            &[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00]
        ));
    }
    // \_S3 {One, One, Zero, Zero} only where offered.
    let s3 = [
        0x08, b'_', b'S', b'3', b'_', 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00,
    ];
    assert!(has(&with, &s3));
    assert!(!has(&without, b"_S3_"));
    assert!(has(&with, b"COM1") && has(&with, b"PCI0"));
    assert!(!has(&without, b"COM1") && !has(&without, b"PCI0"));
    // EISAID("PNP0501") and "PNP0A08" encodings; PNP0303 and PNP0F13 with the i8042.
    assert!(has(&with, &[0x0c, 0x41, 0xd0, 0x05, 0x01]));
    assert!(has(&with, &[0x0c, 0x41, 0xd0, 0x03, 0x03]) && has(&with, b"KBD_"));
    assert!(has(&with, &[0x0c, 0x41, 0xd0, 0x0f, 0x13]) && has(&with, b"MOU_"));
    assert!(!has(&without, b"KBD_") && !has(&without, b"MOU_"));
    assert!(has(&with, &[0x0c, 0x41, 0xd0, 0x0a, 0x08]));
}

/// The `_PRT` entry `Package { slot << 16 | 0xffff, pin, LINK, 0 }` as AML (slots 1-31).
fn prt_entry(slot: u8, pin: u8, link: &str) -> Vec<u8> {
    let mut body = vec![0x04, 0x0c];
    body.extend_from_slice(&((u32::from(slot) << 16) | 0xffff).to_le_bytes());
    match pin {
        0 | 1 => body.push(pin),
        _ => body.extend_from_slice(&[0x0a, pin]),
    }
    body.extend_from_slice(link.as_bytes());
    body.push(0x00);
    let mut out = vec![0x12, body.len() as u8 + 1];
    out.extend(body);
    out
}

#[test]
fn dsdt_prt_matches_the_routing_helper() {
    use crate::pci_irq::PciIntxRouting;
    let has = |t: &[u8], s: &[u8]| t.windows(s.len()).any(|w| w == s);
    for (pci, routing) in [
        (PciHostBridge::Pcie, PciIntxRouting::Q35),
        (PciHostBridge::Pci, PciIntxRouting::I440fx),
    ] {
        let t = dsdt(&AcpiConfig {
            pci,
            ..config(vec![0])
        });
        // NameOp "_PRT" PackageOp (two-byte length) with 128 entries.
        let prt = t.windows(4).position(|w| w == b"_PRT").expect("_PRT");
        assert_eq!(t[prt + 4], 0x12);
        assert_eq!(t[prt + 7], 128);
        for slot in 1..32 {
            for pin in 0..4 {
                let link = routing.link_name(routing.pirq(slot, pin));
                assert!(has(&t, &prt_entry(slot, pin, &link)), "{slot}/{pin}");
            }
        }
        for pirq in 0..routing.pirq_count() {
            let link = routing.link_name(pirq);
            // Extended interrupt: consumer, level, active high, shared; the helper's GSI.
            let gsi = routing.pirq_gsi(pirq).to_le_bytes();
            let irq = [0x89, 0x06, 0x00, 0x09, 0x01, gsi[0], gsi[1], gsi[2], gsi[3]];
            let dev = t.windows(4).position(|w| w == link.as_bytes()).unwrap();
            assert!(has(&t[dev..dev + 80], &irq), "{link}");
            // EISAID("PNP0C0F").
            assert!(has(&t[dev..dev + 80], &[0x0c, 0x41, 0xd0, 0x0c, 0x0f]));
        }
    }
    let none = dsdt(&AcpiConfig {
        pci: PciHostBridge::None,
        ..config(vec![0])
    });
    assert!(!has(&none, b"_PRT") && !has(&none, b"LNKA") && !has(&none, b"GSIA"));
}

fn virtio_devices(n: u8) -> Vec<VirtioMmioDevice> {
    (0..n)
        .map(|index| VirtioMmioDevice {
            index,
            base: 0xfeb0_0000 + 0x200 * u32::from(index),
            size: 0x200,
            gsi: 16 + u32::from(index),
        })
        .collect()
}

#[test]
fn dsdt_virtio_mmio_nodes() {
    let has = |t: &[u8], s: &[u8]| t.windows(s.len()).any(|w| w == s);
    let none = dsdt(&config(vec![0]));
    assert!(!has(&none, b"LNRO0005"));
    let t = dsdt(&AcpiConfig {
        virtio_mmio: virtio_devices(3),
        ..config(vec![0])
    });
    assert!(has(&t, b"VR00") && has(&t, b"VR02") && !has(&t, b"VR03"));
    // StringOp "LNRO0005" NUL.
    assert!(has(&t, b"\x0dLNRO0005\x00"));
    // Memory32Fixed (0x86, length 9, read-write) at 0xfeb00400, 0x200 bytes.
    assert!(has(
        &t,
        &[0x86, 0x09, 0x00, 0x01, 0x00, 0x04, 0xb0, 0xfe, 0x00, 0x02, 0x00, 0x00]
    ));
    // Extended interrupt (0x89, length 6): consumer, level, active high, exclusive; GSI 18.
    assert!(has(&t, &[0x89, 0x06, 0x00, 0x01, 0x01, 18, 0, 0, 0]));
}

#[test]
fn too_many_cpus_for_the_bios_area_is_an_error() {
    assert!(matches!(
        build_tables(&config(vec![])),
        Err(AcpiError::NoCpus)
    ));
    let huge: Vec<u32> = (0..5000).collect();
    assert!(matches!(
        build_tables(&config(huge)),
        Err(AcpiError::TooLarge { .. })
    ));
}

/// The independent check: ACPICA's disassembler must accept every table without errors.
/// Needs `iasl` (Debian acpica-tools, installed by scripts/test.sh).
#[test]
fn iasl_disassembles_every_table_without_errors() {
    let dir = std::env::temp_dir().join(format!("rvmm-acpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (pci, cpus) in [(PciHostBridge::Pcie, 4u32), (PciHostBridge::Pci, 300)] {
        let cfg = AcpiConfig {
            apic_ids: (0..cpus).collect(),
            com1: true,
            pci,
            virtio_mmio: virtio_devices(2),
            s3: true,
            i8042: true,
        };
        // iasl only takes description tables with a header; the RSDP is checked above.
        for t in build_tables(&cfg)
            .unwrap()
            .into_iter()
            .filter(|t| t.name != "RSDP")
        {
            let file = dir.join(format!("{}.dat", t.name.to_lowercase()));
            std::fs::write(&file, &t.bytes).unwrap();
            let out = Command::new("iasl")
                .arg("-d")
                .arg(&file)
                .current_dir(&dir)
                .output()
                .expect("running iasl (install acpica-tools; scripts/test.sh does)");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "iasl -d {}: {text}", t.name);
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("error") && !lower.contains("invalid checksum"),
                "iasl -d {}: {text}",
                t.name
            );
            let dsl = std::fs::read_to_string(file.with_extension("dsl")).unwrap();
            if t.name == "DSDT" {
                // q35's root bridge grants native PCIe hot-plug, PME, AER and the PCIe
                // capability to the OS; pc's conventional one has no _OSC (as QEMU).
                let osc = dsl.find("Method (_OSC, 4").map(|i| &dsl[i..]);
                assert_eq!(osc.is_some(), pci == PciHostBridge::Pcie, "{dsl}");
                if let Some(osc) = osc {
                    assert!(
                        osc.contains("33db4d5b-1ff7-401c-9657-7441c03dd766"),
                        "{osc}"
                    );
                    assert!(osc.contains("0x1F"), "{osc}");
                    assert!(osc.contains("Return (Arg3)"), "{osc}");
                }
                assert!(dsl.contains("PNP0501"), "{dsl}");
                assert!(dsl.contains("PNP0303") && dsl.contains("PNP0F13"), "{dsl}");
                assert!(dsl.contains("Device (VR01)"), "{dsl}");
                assert!(dsl.contains("Name (_HID, \"LNRO0005\")"), "{dsl}");
                assert!(dsl.contains("0xFEB00200"), "{dsl}");
                assert!(
                    dsl.contains("Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )"),
                    "{dsl}"
                );
                assert!(dsl.contains("Name (_S5, Package"), "{dsl}");
                assert!(dsl.contains("Name (_PRT, Package (0x80)"), "{dsl}");
                assert!(dsl.contains("PNP0C0F"), "{dsl}");
                assert!(
                    dsl.contains("Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, ,, )"),
                    "{dsl}"
                );
                assert!(dsl.contains(if pci == PciHostBridge::Pcie {
                    "PNP0A08"
                } else {
                    "PNP0A03"
                }));
            }
            assert!(!dsl.contains("Incorrect checksum"), "{}: {dsl}", t.name);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rsdp_address_reaches_pvh_and_linux_boot_structures() {
    use crate::test_utils::{guest_mem, read_obj};
    use crate::{BootEntry, BootProtocol, CpuMode};
    use linux_loader::loader::bootparam::boot_params;
    use linux_loader::loader::elf::start_info::hvm_start_info;
    let mem = guest_mem(4 << 20);
    let entry = |protocol| BootEntry {
        protocol,
        mode: CpuMode::Protected32,
        rip: 0,
        rsp: 0,
        rax: 0,
        rbx: 0x6000,
        rsi: 0x7000,
        data: Default::default(),
    };
    publish_rsdp(&mem, &entry(BootProtocol::Pvh), RSDP_ADDR).unwrap();
    let si: hvm_start_info = read_obj(&mem, 0x6000);
    assert_eq!({ si.rsdp_paddr }, RSDP_ADDR);
    for p in [BootProtocol::BzImage, BootProtocol::Elf64Linux] {
        publish_rsdp(&mem, &entry(p), 0xe0010).unwrap();
        let zp: boot_params = read_obj(&mem, 0x7000);
        assert_eq!({ zp.acpi_rsdp_addr }, 0xe0010);
    }
    // Multiboot writes nothing.
    publish_rsdp(&mem, &entry(BootProtocol::Multiboot), 0x1234).unwrap();
    let si: hvm_start_info = read_obj(&mem, 0x6000);
    assert_eq!({ si.rsdp_paddr }, RSDP_ADDR);
    let written = write_acpi_tables(&mem, &config(vec![0])).unwrap();
    let sig: [u8; 8] = read_obj(&mem, written);
    assert_eq!(&sig, b"RSD PTR ");
}
