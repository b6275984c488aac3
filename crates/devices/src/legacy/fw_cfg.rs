//! QEMU firmware configuration device, traditional port I/O interface (QEMU
//! docs/specs/fw_cfg.rst, "Traditional Interface"). The DMA interface comes later.
//!
//! Port mapping (one bus device at [`FW_CFG_PORT_BASE`], [`FW_CFG_PORT_LEN`] ports), as QEMU's
//! combined x86 region (`fw_cfg_comb_valid`): a 16-bit write at offset 0 (port 0x510) selects
//! an item and rewinds it; an 8-bit read at offset 0 or 1 (0x510 or 0x511) returns the next
//! byte of the selected item. Data writes are ignored (the spec deprecates them) and so are
//! accesses of other sizes; QEMU rejects those, and invalid reads return 0 there and here.
//!
//! Items are added while the VM is built (`&mut self`); at run time only the selector and offset
//! change, behind one small lock. Reading an unknown selector or past the end of an item
//! returns 0.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::BusDevice;

/// The selector port; the data port is `FW_CFG_PORT_BASE + 1`.
pub const FW_CFG_PORT_BASE: u64 = 0x510;
/// Selector (16-bit at 0x510) and data (8-bit at 0x511).
pub const FW_CFG_PORT_LEN: u64 = 2;

/// "QEMU" signature.
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Feature bitmap: bit 0 traditional interface, bit 1 DMA.
pub const FW_CFG_ID: u16 = 0x0001;
/// Guest RAM size in bytes, u64 LE.
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Number of boot CPUs, u16 LE.
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// Maximum number of CPUs, u16 LE.
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
/// The file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// First selector handed to files.
pub const FW_CFG_FILE_FIRST: u16 = 0x0020;
/// QEMU's default number of file slots (`x-file-slots`), so files use 0x0020..0x0040.
pub const FW_CFG_FILE_SLOTS: u16 = 0x0020;
/// Bytes of a file name including the terminating NUL.
pub const FW_CFG_MAX_FILE_NAME: usize = 56;

/// `FW_CFG_ID` bit 0: the traditional interface is supported.
const FEATURE_TRADITIONAL: u32 = 1;
/// Selector bit 14: write channel. Reads through it reach the same item, as in QEMU.
const WRITE_CHANNEL: u16 = 0x4000;
/// Bytes of one directory entry: size, select, reserved, name.
const FILE_ENTRY_LEN: usize = 4 + 2 + 2 + FW_CFG_MAX_FILE_NAME;

/// Errors adding fw_cfg items.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is empty or longer than 55 bytes")]
    BadFileName(String),
    #[error("fw_cfg file {0:?} already exists")]
    DuplicateFile(String),
    #[error("fw_cfg has no free file slot for {0:?} (at most {FW_CFG_FILE_SLOTS} files)")]
    TooManyFiles(String),
    #[error("fw_cfg selector {0:#06x} is reserved for the file directory or files")]
    ReservedSelector(u16),
    #[error("fw_cfg item {selector:#06x} is {len} bytes, more than the 32-bit size field")]
    ItemTooLarge { selector: u16, len: usize },
}

#[derive(Default)]
struct Cursor {
    /// The selected item's key, None after selecting an unknown one.
    key: Option<u16>,
    offset: usize,
}

struct File {
    name: String,
    select: u16,
    size: u32,
}

/// The fw_cfg device.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<File>,
    cursor: Mutex<Cursor>,
}

impl Default for FwCfg {
    fn default() -> Self {
        Self::new()
    }
}

impl FwCfg {
    /// A device with the signature, the feature bitmap and an empty file directory.
    pub fn new() -> Self {
        let mut fw = Self {
            items: BTreeMap::new(),
            files: Vec::new(),
            cursor: Mutex::new(Cursor::default()),
        };
        fw.items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        fw.items
            .insert(FW_CFG_ID, FEATURE_TRADITIONAL.to_le_bytes().to_vec());
        fw.rebuild_directory();
        fw
    }

    /// Add or replace the item at `selector` (for example `FW_CFG_RAM_SIZE`). The file directory
    /// and file selectors are managed by [`FwCfg::add_file`] and rejected here.
    pub fn add_item(&mut self, selector: u16, data: Vec<u8>) -> Result<(), FwCfgError> {
        let key = selector & !WRITE_CHANNEL;
        if key == FW_CFG_FILE_DIR
            || (FW_CFG_FILE_FIRST..FW_CFG_FILE_FIRST + FW_CFG_FILE_SLOTS).contains(&key)
        {
            return Err(FwCfgError::ReservedSelector(selector));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::ItemTooLarge {
                selector,
                len: data.len(),
            });
        }
        self.items.insert(key, data);
        Ok(())
    }

    /// Set `FW_CFG_RAM_SIZE` (bytes).
    pub fn set_ram_size(&mut self, bytes: u64) {
        self.items
            .insert(FW_CFG_RAM_SIZE, bytes.to_le_bytes().to_vec());
    }

    /// Set `FW_CFG_NB_CPUS` and `FW_CFG_MAX_CPUS`.
    pub fn set_cpus(&mut self, boot_cpus: u16, max_cpus: u16) {
        self.items
            .insert(FW_CFG_NB_CPUS, boot_cpus.to_le_bytes().to_vec());
        self.items
            .insert(FW_CFG_MAX_CPUS, max_cpus.to_le_bytes().to_vec());
    }

    /// Add a named file (e.g. "etc/e820") and return its selector. Selectors are given in the
    /// order files are added, from 0x0020, and never change afterwards; the directory lists
    /// files sorted by name, as QEMU does.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() >= FW_CFG_MAX_FILE_NAME || name.contains('\0') {
            return Err(FwCfgError::BadFileName(name.to_string()));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(FwCfgError::DuplicateFile(name.to_string()));
        }
        let index = u16::try_from(self.files.len())
            .ok()
            .filter(|&i| i < FW_CFG_FILE_SLOTS)
            .ok_or_else(|| FwCfgError::TooManyFiles(name.to_string()))?;
        let select = FW_CFG_FILE_FIRST + index;
        let size = u32::try_from(data.len()).map_err(|_| FwCfgError::ItemTooLarge {
            selector: select,
            len: data.len(),
        })?;
        self.files.push(File {
            name: name.to_string(),
            select,
            size,
        });
        self.items.insert(select, data);
        self.rebuild_directory();
        Ok(select)
    }

    /// FW_CFG_FILE_DIR: u32 BE count, then per file u32 BE size, u16 BE select, u16 reserved,
    /// 56-byte NUL-padded name (fw_cfg.rst, "File Directory").
    fn rebuild_directory(&mut self) {
        let mut sorted: Vec<&File> = self.files.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut dir = Vec::with_capacity(4 + sorted.len() * FILE_ENTRY_LEN);
        dir.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
        for f in sorted {
            dir.extend_from_slice(&f.size.to_be_bytes());
            dir.extend_from_slice(&f.select.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut name = [0u8; FW_CFG_MAX_FILE_NAME];
            // add_file checked the length, so the name always fits with its NUL.
            let n = f.name.len().min(FW_CFG_MAX_FILE_NAME - 1);
            name[..n].copy_from_slice(&f.name.as_bytes()[..n]);
            dir.extend_from_slice(&name);
        }
        self.items.insert(FW_CFG_FILE_DIR, dir);
    }

    fn select(&self, selector: u16) {
        let key = selector & !WRITE_CHANNEL;
        let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        c.key = self.items.contains_key(&key).then_some(key);
        c.offset = 0;
    }

    fn read_byte(&self) -> u8 {
        let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        let byte = c
            .key
            .and_then(|k| self.items.get(&k))
            .and_then(|item| item.get(c.offset))
            .copied();
        match byte {
            Some(b) => {
                c.offset += 1;
                b
            }
            None => 0,
        }
    }
}

impl BusDevice for FwCfg {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match data {
            [byte] if offset < FW_CFG_PORT_LEN => *byte = self.read_byte(),
            _ => data.fill(0),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (0, &[lo, hi]) = (offset, data) {
            self.select(u16::from_le_bytes([lo, hi]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(fw: &FwCfg, sel: u16) {
        fw.write(0, &sel.to_le_bytes());
    }

    fn read_n(fw: &FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8; 1];
                fw.read(1, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn signature_id_and_scalars() {
        let mut fw = FwCfg::new();
        fw.set_ram_size(512 << 20);
        fw.set_cpus(2, 4);
        select(&fw, FW_CFG_SIGNATURE);
        assert_eq!(read_n(&fw, 4), b"QEMU");
        // Past the end: zeros.
        assert_eq!(read_n(&fw, 2), [0, 0]);
        select(&fw, FW_CFG_ID);
        assert_eq!(read_n(&fw, 4), [1, 0, 0, 0]);
        select(&fw, FW_CFG_RAM_SIZE);
        assert_eq!(read_n(&fw, 8), (512u64 << 20).to_le_bytes());
        select(&fw, FW_CFG_NB_CPUS);
        assert_eq!(read_n(&fw, 2), [2, 0]);
        select(&fw, FW_CFG_MAX_CPUS);
        assert_eq!(read_n(&fw, 2), [4, 0]);
    }

    #[test]
    fn selecting_rewinds_and_port_0x510_reads_data_too() {
        let fw = FwCfg::new();
        select(&fw, FW_CFG_SIGNATURE);
        assert_eq!(read_n(&fw, 2), b"QE");
        let mut b = [0u8; 1];
        fw.read(0, &mut b);
        assert_eq!(&b, b"M");
        select(&fw, FW_CFG_SIGNATURE);
        assert_eq!(read_n(&fw, 4), b"QEMU");
        // The write-channel bit reaches the same item.
        select(&fw, FW_CFG_SIGNATURE | WRITE_CHANNEL);
        assert_eq!(read_n(&fw, 1), b"Q");
    }

    #[test]
    fn unknown_selector_and_invalid_accesses() {
        let fw = FwCfg::new();
        select(&fw, 0x1234);
        assert_eq!(read_n(&fw, 3), [0, 0, 0]);
        select(&fw, FW_CFG_SIGNATURE);
        // Wide reads and data-port or odd-size writes do nothing (QEMU rejects them).
        let mut w = [0xffu8; 2];
        fw.read(0, &mut w);
        assert_eq!(w, [0, 0]);
        fw.write(1, &[0x01, 0x00]);
        fw.write(0, &[0x01]);
        fw.write(0, &[0x01, 0x00, 0x00, 0x00]);
        fw.write(u64::MAX, &[0x01, 0x00]);
        let mut b = [0xffu8; 1];
        fw.read(2, &mut b);
        assert_eq!(b, [0]);
        fw.read(0, &mut []);
        assert_eq!(read_n(&fw, 1), b"Q");
    }

    #[test]
    fn file_directory_layout() {
        let mut fw = FwCfg::new();
        assert_eq!(fw.add_file("etc/zeta", vec![1, 2, 3]).unwrap(), 0x20);
        assert_eq!(fw.add_file("etc/alpha", vec![9; 300]).unwrap(), 0x21);
        select(&fw, FW_CFG_FILE_DIR);
        assert_eq!(read_n(&fw, 4), 2u32.to_be_bytes());
        // Sorted by name: etc/alpha first, keeping its own selector.
        let e = read_n(&fw, FILE_ENTRY_LEN);
        assert_eq!(e[0..4], 300u32.to_be_bytes());
        assert_eq!(e[4..6], 0x21u16.to_be_bytes());
        assert_eq!(e[6..8], [0, 0]);
        assert_eq!(&e[8..17], b"etc/alpha");
        assert!(e[17..].iter().all(|&b| b == 0));
        let e = read_n(&fw, FILE_ENTRY_LEN);
        assert_eq!(e[0..4], 3u32.to_be_bytes());
        assert_eq!(e[4..6], 0x20u16.to_be_bytes());
        assert_eq!(&e[8..16], b"etc/zeta");
        assert_eq!(read_n(&fw, 1), [0]);
        select(&fw, 0x20);
        assert_eq!(read_n(&fw, 4), [1, 2, 3, 0]);
    }

    #[test]
    fn empty_directory_has_zero_count() {
        let fw = FwCfg::new();
        select(&fw, FW_CFG_FILE_DIR);
        assert_eq!(read_n(&fw, 5), [0; 5]);
    }

    #[test]
    fn add_file_errors() {
        let mut fw = FwCfg::new();
        let long = "x".repeat(FW_CFG_MAX_FILE_NAME);
        assert_eq!(
            fw.add_file(&long, vec![]),
            Err(FwCfgError::BadFileName(long.clone()))
        );
        assert!(fw.add_file(&long[..55], vec![]).is_ok());
        assert!(matches!(
            fw.add_file("", vec![]),
            Err(FwCfgError::BadFileName(_))
        ));
        assert!(matches!(
            fw.add_file("a\0b", vec![]),
            Err(FwCfgError::BadFileName(_))
        ));
        fw.add_file("etc/a", vec![1]).unwrap();
        assert_eq!(
            fw.add_file("etc/a", vec![2]),
            Err(FwCfgError::DuplicateFile("etc/a".into()))
        );
        for i in 2..FW_CFG_FILE_SLOTS {
            fw.add_file(&format!("f{i}"), vec![]).unwrap();
        }
        assert!(matches!(
            fw.add_file("one-too-many", vec![]),
            Err(FwCfgError::TooManyFiles(_))
        ));
    }

    #[test]
    fn add_item_rejects_reserved_selectors() {
        let mut fw = FwCfg::new();
        assert_eq!(
            fw.add_item(FW_CFG_FILE_DIR, vec![]),
            Err(FwCfgError::ReservedSelector(0x19))
        );
        assert_eq!(
            fw.add_item(0x25, vec![]),
            Err(FwCfgError::ReservedSelector(0x25))
        );
        fw.add_item(0x8003, vec![7, 8]).unwrap();
        fw.add_item(FW_CFG_SIGNATURE, b"XXXX".to_vec()).unwrap();
        select(&fw, 0x8003);
        assert_eq!(read_n(&fw, 3), [7, 8, 0]);
    }
}
