//! The ACPI tables for PC firmware: QEMU's fw_cfg interface, where the firmware allocates the
//! tables itself and links them with the commands of `etc/table-loader`
//! (QEMU hw/acpi/bios-linker-loader.c; SeaBIOS src/fw/romfile_loader.c runs them).
//!
//! Files: `etc/acpi/tables` (every table but the RSDP, pointers relative to the file's start),
//! `etc/acpi/rsdp` (the RSDP, XSDT pointer relative to `etc/acpi/tables`), and the command list.
//! Each command is 128 bytes, little-endian: u32 command, then
//! - ALLOCATE (1): file name [56], u32 alignment, u8 zone (1 = high memory, 2 = F segment);
//! - ADD_POINTER (2): destination file [56], source file [56], u32 offset, u8 size: the
//!   little-endian pointer of `size` bytes at `offset` in the destination gets the source file's
//!   address added;
//! - ADD_CHECKSUM (3): file [56], u32 checksum offset, u32 start, u32 length: the byte at
//!   `offset` (zero in the file, QEMU asserts it) is set so that the range sums to zero.
//!
//! SeaBIOS looks for the RSDP only in its F-segment allocations, so the RSDP is allocated there;
//! the tables go high.

use super::{place_tables, rsdp, AcpiConfig, AcpiError};

pub const TABLE_LOADER_FILE: &str = "etc/table-loader";
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const RSDP_FILE: &str = "etc/acpi/rsdp";

const COMMAND_LEN: usize = 128;
const FILE_NAME_LEN: usize = 56;
const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;
const ZONE_HIGH: u8 = 1;
const ZONE_FSEG: u8 = 2;

/// Offset of the checksum byte in every table header (ACPI 6.5 section 5.2.6).
const SDT_CHECKSUM: usize = 9;
/// FADT pointers (ACPI 6.5 table 5.9): FIRMWARE_CTRL, DSDT, X_FIRMWARE_CTRL, X_DSDT.
const FADT_POINTERS: [(usize, u8, &str); 4] = [
    (36, 4, "FACS"),
    (40, 4, "DSDT"),
    (132, 8, "FACS"),
    (140, 8, "DSDT"),
];
/// XSDT entries start after the header, 8 bytes each.
const XSDT_ENTRIES: usize = 36;
/// RSDP (ACPI 6.5 table 5.3): checksum of the first 20 bytes at 8, XSDT address at 24, extended
/// checksum of all 36 bytes at 32.
const RSDP_CHECKSUM: usize = 8;
const RSDP_XSDT: usize = 24;
const RSDP_EXT_CHECKSUM: usize = 32;
const RSDP_V1_LEN: u32 = 20;

/// The three fw_cfg files QEMU offers for the ACPI tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareAcpi {
    pub tables: Vec<u8>,
    pub rsdp: Vec<u8>,
    pub loader: Vec<u8>,
}

/// A fixed-size, NUL-padded file name field (QEMU truncates to 55 bytes; ours are constants).
fn name_field(name: &str) -> [u8; FILE_NAME_LEN] {
    let mut field = [0u8; FILE_NAME_LEN];
    let n = name.len().min(FILE_NAME_LEN - 1);
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    field
}

#[derive(Default)]
struct Commands(Vec<u8>);

impl Commands {
    fn push(&mut self, command: u32, body: &[u8]) {
        let mut entry = [0u8; COMMAND_LEN];
        entry[..4].copy_from_slice(&command.to_le_bytes());
        entry[4..4 + body.len()].copy_from_slice(body);
        self.0.extend_from_slice(&entry);
    }

    fn allocate(&mut self, file: &str, align: u32, zone: u8) {
        let mut body = name_field(file).to_vec();
        body.extend_from_slice(&align.to_le_bytes());
        body.push(zone);
        self.push(CMD_ALLOCATE, &body);
    }

    fn add_pointer(&mut self, dest: &str, src: &str, offset: usize, size: u8) {
        let mut body = name_field(dest).to_vec();
        body.extend_from_slice(&name_field(src));
        body.extend_from_slice(&(offset as u32).to_le_bytes());
        body.push(size);
        self.push(CMD_ADD_POINTER, &body);
    }

    fn add_checksum(&mut self, file: &str, offset: usize, start: usize, len: u32) {
        let mut body = name_field(file).to_vec();
        body.extend_from_slice(&(offset as u32).to_le_bytes());
        body.extend_from_slice(&(start as u32).to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        self.push(CMD_ADD_CHECKSUM, &body);
    }
}

/// Builds the tables at offset 0 of `etc/acpi/tables`, the RSDP, and the loader commands that
/// link them wherever the firmware puts them.
pub fn firmware_tables(config: &AcpiConfig) -> Result<FirmwareAcpi, AcpiError> {
    // The tables file is addressed with 32-bit offsets.
    let placed = place_tables(config, 0, u64::from(u32::MAX))?;
    let len = placed
        .iter()
        .map(|t| t.addr as usize + t.bytes.len())
        .max()
        .unwrap_or(0);
    let mut tables = vec![0u8; len];
    let offset_of = |name: &str| {
        placed
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.addr as usize)
    };
    let mut cmds = Commands::default();
    cmds.allocate(TABLES_FILE, 64, ZONE_HIGH);
    cmds.allocate(RSDP_FILE, 16, ZONE_FSEG);
    for t in &placed {
        let at = t.addr as usize;
        tables[at..at + t.bytes.len()].copy_from_slice(&t.bytes);
        match t.name.as_str() {
            "FACP" => {
                for (field, size, _) in FADT_POINTERS {
                    cmds.add_pointer(TABLES_FILE, TABLES_FILE, at + field, size);
                }
            }
            "XSDT" => {
                let entries = (t.bytes.len() - XSDT_ENTRIES) / 8;
                for i in 0..entries {
                    cmds.add_pointer(TABLES_FILE, TABLES_FILE, at + XSDT_ENTRIES + 8 * i, 8);
                }
            }
            _ => {}
        }
    }
    // Every table but the FACS has a header checksum, recomputed after the pointers moved.
    for t in placed.iter().filter(|t| t.name != "FACS") {
        let at = t.addr as usize;
        tables[at + SDT_CHECKSUM] = 0;
        cmds.add_checksum(TABLES_FILE, at + SDT_CHECKSUM, at, t.bytes.len() as u32);
    }
    debug_assert_eq!(offset_of("FACS").map(|o| o % 64), Some(0));
    let xsdt = offset_of("XSDT").unwrap_or(0);
    let mut rsdp_bytes = rsdp(xsdt as u64);
    rsdp_bytes[RSDP_CHECKSUM] = 0;
    rsdp_bytes[RSDP_EXT_CHECKSUM] = 0;
    cmds.add_pointer(RSDP_FILE, TABLES_FILE, RSDP_XSDT, 8);
    cmds.add_checksum(RSDP_FILE, RSDP_CHECKSUM, 0, RSDP_V1_LEN);
    cmds.add_checksum(RSDP_FILE, RSDP_EXT_CHECKSUM, 0, rsdp_bytes.len() as u32);
    Ok(FirmwareAcpi {
        tables,
        rsdp: rsdp_bytes,
        loader: cmds.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::PciHostBridge;

    fn le(bytes: &[u8]) -> u64 {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }

    /// Runs the commands as SeaBIOS's romfile_loader does, with each file at `base`.
    fn run(acpi: &FirmwareAcpi, tables_base: u64, rsdp_base: u64) -> (Vec<u8>, Vec<u8>) {
        let (mut tables, mut rsdp) = (acpi.tables.clone(), acpi.rsdp.clone());
        let name = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        assert_eq!(acpi.loader.len() % COMMAND_LEN, 0);
        for cmd in acpi.loader.chunks(COMMAND_LEN) {
            let file = |b: &[u8]| match name(b).as_str() {
                TABLES_FILE => 0,
                RSDP_FILE => 1,
                other => panic!("unknown file {other}"),
            };
            match le(&cmd[..4]) as u32 {
                CMD_ALLOCATE => {
                    let zone = cmd[4 + 56 + 4];
                    assert_eq!(
                        zone,
                        if file(&cmd[4..60]) == 1 {
                            ZONE_FSEG
                        } else {
                            ZONE_HIGH
                        }
                    );
                }
                CMD_ADD_POINTER => {
                    let dest = file(&cmd[4..60]);
                    assert_eq!(file(&cmd[60..116]), 0, "everything points into the tables");
                    let offset = le(&cmd[116..120]) as usize;
                    let size = usize::from(cmd[120]);
                    let buf = if dest == 0 { &mut tables } else { &mut rsdp };
                    let value = le(&buf[offset..offset + size]) + tables_base;
                    buf[offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
                }
                CMD_ADD_CHECKSUM => {
                    let buf = if file(&cmd[4..60]) == 0 {
                        &mut tables
                    } else {
                        &mut rsdp
                    };
                    let offset = le(&cmd[60..64]) as usize;
                    let start = le(&cmd[64..68]) as usize;
                    let len = le(&cmd[68..72]) as usize;
                    let sum = buf[start..start + len]
                        .iter()
                        .fold(0u8, |a, b| a.wrapping_add(*b));
                    buf[offset] = buf[offset].wrapping_sub(sum);
                }
                other => panic!("unknown command {other}"),
            }
        }
        let _ = rsdp_base;
        (tables, rsdp)
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn linked_tables_are_consistent_wherever_the_firmware_puts_them() {
        let config = AcpiConfig {
            apic_ids: vec![0, 1],
            com1: true,
            pci: PciHostBridge::Pcie,
            virtio_mmio: Vec::new(),
            s3: true,
            i8042: true,
        };
        let acpi = firmware_tables(&config).unwrap();
        let base = 0x7ffe_0000;
        let (tables, rsdp) = run(&acpi, base, 0xf_5000);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        let xsdt = (le(&rsdp[24..32]) - base) as usize;
        assert_eq!(&tables[xsdt..xsdt + 4], b"XSDT");
        let xsdt_len = le(&tables[xsdt + 4..xsdt + 8]) as usize;
        assert_eq!(sum(&tables[xsdt..xsdt + xsdt_len]), 0);
        let mut seen = Vec::new();
        for e in tables[xsdt + 36..xsdt + xsdt_len].chunks(8) {
            let at = (le(e) - base) as usize;
            let len = le(&tables[at + 4..at + 8]) as usize;
            assert_eq!(sum(&tables[at..at + len]), 0);
            seen.push(tables[at..at + 4].to_vec());
            if &tables[at..at + 4] == b"FACP" {
                let facs = le(&tables[at + 36..at + 40]);
                let dsdt = le(&tables[at + 40..at + 44]);
                assert_eq!(le(&tables[at + 132..at + 140]), facs);
                assert_eq!(le(&tables[at + 140..at + 148]), dsdt);
                assert_eq!(facs % 64, 0, "FACS aligned");
                let facs = (facs - base) as usize;
                let dsdt = (dsdt - base) as usize;
                assert_eq!(&tables[facs..facs + 4], b"FACS");
                assert_eq!(&tables[dsdt..dsdt + 4], b"DSDT");
                let dlen = le(&tables[dsdt + 4..dsdt + 8]) as usize;
                assert_eq!(sum(&tables[dsdt..dsdt + dlen]), 0);
            }
        }
        assert_eq!(seen, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
    }
}
