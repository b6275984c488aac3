//! QEMU firmware configuration device (QEMU docs/specs/fw_cfg.rst): the traditional port I/O
//! interface and the DMA interface.
//!
//! Port mapping (one bus device at [`FW_CFG_PORT_BASE`], [`FW_CFG_PORT_LEN`] ports), as QEMU's
//! combined x86 region (`fw_cfg_comb_valid`): a 16-bit write at offset 0 (port 0x510) selects
//! an item and rewinds it; an 8-bit read at offset 0 or 1 (0x510 or 0x511) returns the next
//! byte of the selected item. Data writes are ignored (the spec deprecates them) and so are
//! accesses of other sizes; QEMU rejects those, and invalid reads return 0 there and here.
//!
//! DMA ([`FW_CFG_DMA_PORT`], 8 ports, [`FwCfg::dma_port`]): the guest writes the guest-physical
//! address of a `FWCfgDmaAccess` (be32 control, be32 length, be64 address) big-endian, as two
//! 32-bit writes (high half at 0x514, low half at 0x518, which starts the transfer) or one
//! 64-bit write; reading the port returns the "QEMU CFG" signature. Every guest address is
//! checked against guest memory: a bad one sets the error bit (or, for the descriptor itself,
//! is ignored), never more. Reading past the end of an item or from an unknown one fills zeros,
//! as QEMU does; DMA writes to items are refused with the error bit (no item is writable).
//!
//! Items are added while the VM is built (`&mut self`); at run time only the selector and offset
//! change, behind one small lock. Reading an unknown selector or past the end of an item
//! returns 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::BusDevice;

/// The selector port; the data port is `FW_CFG_PORT_BASE + 1`.
pub const FW_CFG_PORT_BASE: u64 = 0x510;
/// Selector (16-bit at 0x510) and data (8-bit at 0x511).
pub const FW_CFG_PORT_LEN: u64 = 2;

/// The DMA address register (x86 `FW_CFG_IO_BASE + 4`).
pub const FW_CFG_DMA_PORT: u64 = 0x514;
/// 64-bit DMA address register.
pub const FW_CFG_DMA_PORT_LEN: u64 = 8;
/// What reading the DMA register returns: "QEMU CFG", big-endian.
pub const FW_CFG_DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// "QEMU" signature.
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Feature bitmap: bit 0 traditional interface, bit 1 DMA.
pub const FW_CFG_ID: u16 = 0x0001;
/// Guest RAM size in bytes, u64 LE.
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Number of boot CPUs, u16 LE.
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// Where the loader puts the kernel's protected-mode part, u32 LE.
pub const FW_CFG_KERNEL_ADDR: u16 = 0x0007;
/// Size of `FW_CFG_KERNEL_DATA`, u32 LE.
pub const FW_CFG_KERNEL_SIZE: u16 = 0x0008;
/// Address of the initrd, u32 LE.
pub const FW_CFG_INITRD_ADDR: u16 = 0x000a;
/// Size of `FW_CFG_INITRD_DATA`, u32 LE.
pub const FW_CFG_INITRD_SIZE: u16 = 0x000b;
/// Boot menu enabled (`-boot menu=on`), u16 LE.
pub const FW_CFG_BOOT_MENU: u16 = 0x000e;
/// No graphical console: SeaBIOS then puts its console on the serial port.
pub const FW_CFG_NOGRAPHIC: u16 = 0x0004;
/// x86: the interrupt controller routes ISA IRQ 0 to IOAPIC pin 2 (QEMU `FW_CFG_IRQ0_OVERRIDE`).
pub const FW_CFG_IRQ0_OVERRIDE: u16 = 0x8002;
/// Kernel entry point, u32 LE (PVH and multiboot).
pub const FW_CFG_KERNEL_ENTRY: u16 = 0x0010;
/// The kernel (for bzImage: the protected-mode part after the setup sectors).
pub const FW_CFG_KERNEL_DATA: u16 = 0x0011;
/// The initrd.
pub const FW_CFG_INITRD_DATA: u16 = 0x0012;
/// Where the command line goes, u32 LE.
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x0013;
/// Size of `FW_CFG_CMDLINE_DATA` including the NUL, u32 LE.
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x0014;
/// The NUL-terminated command line.
pub const FW_CFG_CMDLINE_DATA: u16 = 0x0015;
/// Where the bzImage setup sectors go, u32 LE.
pub const FW_CFG_SETUP_ADDR: u16 = 0x0016;
/// Size of `FW_CFG_SETUP_DATA`, u32 LE.
pub const FW_CFG_SETUP_SIZE: u16 = 0x0017;
/// The bzImage setup sectors (boot sector and real-mode code with the setup header).
pub const FW_CFG_SETUP_DATA: u16 = 0x0018;
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
/// `FW_CFG_ID` bit 1: the DMA interface is supported.
const FEATURE_DMA: u32 = 2;
/// `FWCfgDmaAccess.control` bits (fw_cfg.rst, "DMA interface").
const DMA_CTL_ERROR: u32 = 0x01;
const DMA_CTL_READ: u32 = 0x02;
const DMA_CTL_SKIP: u32 = 0x04;
const DMA_CTL_SELECT: u32 = 0x08;
const DMA_CTL_WRITE: u32 = 0x10;
/// Bytes of a `FWCfgDmaAccess`.
const DMA_ACCESS_LEN: usize = 16;
/// Zero-fill chunk for reads past the end of an item.
const ZERO_CHUNK: usize = 4096;
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

#[derive(Default, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The selected item's key, None after selecting an unknown one.
    key: Option<u16>,
    offset: usize,
    /// High half of the DMA address, written first.
    dma_high: u32,
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
    /// Guest memory for DMA; without it the DMA interface is not offered.
    mem: Option<GuestMemoryMmap>,
}

/// Only the selector and offset change while the guest runs: the items come from the command
/// line, which a restore must repeat.
impl crate::Persist for FwCfg {
    type State = Cursor;

    fn save(&self) -> Cursor {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn restore(&self, c: Cursor) -> Result<(), crate::StateError> {
        *self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
        Ok(())
    }
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
            mem: None,
        };
        fw.items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        fw.items
            .insert(FW_CFG_ID, FEATURE_TRADITIONAL.to_le_bytes().to_vec());
        fw.rebuild_directory();
        fw
    }

    /// Offer the DMA interface, transferring to and from `mem`; sets the DMA bit in `FW_CFG_ID`.
    pub fn enable_dma(&mut self, mem: GuestMemoryMmap) {
        self.mem = Some(mem);
        self.items.insert(
            FW_CFG_ID,
            (FEATURE_TRADITIONAL | FEATURE_DMA).to_le_bytes().to_vec(),
        );
    }

    /// The bus device for the DMA register at [`FW_CFG_DMA_PORT`].
    pub fn dma_port(self: &Arc<Self>) -> Arc<FwCfgDmaPort> {
        Arc::new(FwCfgDmaPort(self.clone()))
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

    /// Add a u32 item, little-endian like every fw_cfg scalar.
    pub fn add_u32(&mut self, selector: u16, value: u32) -> Result<(), FwCfgError> {
        self.add_item(selector, value.to_le_bytes().to_vec())
    }

    /// Add a u16 item (e.g. `FW_CFG_BOOT_MENU`).
    pub fn add_u16(&mut self, selector: u16, value: u16) -> Result<(), FwCfgError> {
        self.add_item(selector, value.to_le_bytes().to_vec())
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

    /// Runs the DMA request whose `FWCfgDmaAccess` is at `addr` (fw_cfg.rst, "DMA interface").
    fn dma(&self, addr: u64) {
        let Some(mem) = &self.mem else { return };
        let mut desc = [0u8; DMA_ACCESS_LEN];
        // A descriptor outside guest memory cannot even report an error: ignore it like QEMU.
        if mem.read_slice(&mut desc, GuestAddress(addr)).is_err() {
            return;
        }
        let control = u32::from_be_bytes([desc[0], desc[1], desc[2], desc[3]]);
        let length = u32::from_be_bytes([desc[4], desc[5], desc[6], desc[7]]);
        let target = u64::from_be_bytes([
            desc[8], desc[9], desc[10], desc[11], desc[12], desc[13], desc[14], desc[15],
        ]);
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_CTL_READ != 0 {
            self.dma_read(mem, target, length, true)
        } else if control & DMA_CTL_WRITE != 0 {
            false
        } else if control & DMA_CTL_SKIP != 0 {
            self.dma_read(mem, target, length, false)
        } else {
            true
        };
        let status = if ok { 0 } else { DMA_CTL_ERROR };
        // The guest polls control for 0 (done) or the error bit. If this write fails the
        // descriptor vanished from guest memory meanwhile; nothing more can be reported.
        let _ = mem.write_slice(&status.to_be_bytes(), GuestAddress(addr));
    }

    /// Copies (or, for a skip, only advances over) `len` bytes of the selected item to `target`,
    /// zero-filling past its end. Returns false if guest memory rejects the target range.
    fn dma_read(&self, mem: &GuestMemoryMmap, target: u64, len: u32, copy: bool) -> bool {
        let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        let item: &[u8] = c
            .key
            .and_then(|k| self.items.get(&k))
            .map_or(&[], Vec::as_slice);
        let len = len as usize;
        let avail = item.len().saturating_sub(c.offset).min(len);
        if copy {
            if target.checked_add(len as u64).is_none() {
                return false;
            }
            let data = &item[c.offset.min(item.len())..][..avail];
            if mem.write_slice(data, GuestAddress(target)).is_err() {
                return false;
            }
            let zeros = [0u8; ZERO_CHUNK];
            let mut done = avail;
            while done < len {
                let n = (len - done).min(ZERO_CHUNK);
                if mem
                    .write_slice(&zeros[..n], GuestAddress(target + done as u64))
                    .is_err()
                {
                    return false;
                }
                done += n;
            }
        }
        c.offset += avail;
        true
    }

    fn dma_register_write(&self, offset: u64, data: &[u8]) {
        let addr = match (offset, data.len()) {
            (0, 8) => u64::from_be_bytes(data.try_into().unwrap_or_default()),
            (0, 4) => {
                let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
                c.dma_high = u32::from_be_bytes(data.try_into().unwrap_or_default());
                return;
            }
            (4, 4) => {
                let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
                let high = std::mem::take(&mut c.dma_high);
                drop(c);
                (u64::from(high) << 32)
                    | u64::from(u32::from_be_bytes(data.try_into().unwrap_or_default()))
            }
            _ => return,
        };
        self.dma(addr);
    }
}

/// The DMA address register of an [`FwCfg`], mapped at [`FW_CFG_DMA_PORT`].
pub struct FwCfgDmaPort(Arc<FwCfg>);

impl BusDevice for FwCfgDmaPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if self.0.mem.is_none() {
            return;
        }
        // Big-endian register: byte i of the port is byte i of the signature.
        for (i, b) in data.iter_mut().enumerate() {
            let pos = offset
                .checked_add(i as u64)
                .and_then(|p| usize::try_from(p).ok());
            if let Some(&s) = pos.and_then(|p| FW_CFG_DMA_SIGNATURE.get(p)) {
                *b = s;
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.0.dma_register_write(offset, data);
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

    fn dma_fw(mem_size: usize) -> (Arc<FwCfg>, Arc<FwCfgDmaPort>, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let mut fw = FwCfg::new();
        fw.enable_dma(mem.clone());
        fw.add_file("opt/test", b"hello dma".to_vec()).unwrap();
        let fw = Arc::new(fw);
        let port = fw.dma_port();
        (fw, port, mem)
    }

    /// Writes a FWCfgDmaAccess at `desc` and starts it with two 32-bit big-endian writes.
    fn run_dma(
        port: &FwCfgDmaPort,
        mem: &GuestMemoryMmap,
        desc: u64,
        control: u32,
        len: u32,
        addr: u64,
    ) -> u32 {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&addr.to_be_bytes());
        mem.write_slice(&d, GuestAddress(desc)).unwrap();
        port.write(0, &((desc >> 32) as u32).to_be_bytes());
        port.write(4, &(desc as u32).to_be_bytes());
        let mut c = [0u8; 4];
        mem.read_slice(&mut c, GuestAddress(desc)).unwrap();
        u32::from_be_bytes(c)
    }

    fn guest_bytes(mem: &GuestMemoryMmap, addr: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn dma_signature_and_feature_bit() {
        let (fw, port, _) = dma_fw(0x10000);
        let mut sig = [0u8; 8];
        port.read(0, &mut sig[..4]);
        port.read(4, &mut sig[4..]);
        assert_eq!(&sig, b"QEMU CFG");
        let mut b = [0u8; 1];
        port.read(2, &mut b);
        assert_eq!(&b, b"M");
        select(&fw, FW_CFG_ID);
        assert_eq!(read_n(&fw, 4), [3, 0, 0, 0]);
        // Without guest memory there is no DMA: the port reads zeros, ID has only bit 0.
        let plain = Arc::new(FwCfg::new());
        plain.dma_port().read(0, &mut sig);
        assert_eq!(sig, [0; 8]);
    }

    #[test]
    fn dma_select_read_skip_and_past_the_end() {
        let (_fw, port, mem) = dma_fw(0x10000);
        mem.write_slice(&[0xaa; 64], GuestAddress(0x2000)).unwrap();
        let ctl = (0x20u32 << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        assert_eq!(run_dma(&port, &mem, 0x1000, ctl, 5, 0x2000), 0);
        assert_eq!(guest_bytes(&mem, 0x2000, 6), b"hello\xaa");
        // Skip one byte, then read past the end: the rest is zero-filled.
        assert_eq!(run_dma(&port, &mem, 0x1000, DMA_CTL_SKIP, 1, 0), 0);
        assert_eq!(run_dma(&port, &mem, 0x1000, DMA_CTL_READ, 8, 0x2000), 0);
        assert_eq!(guest_bytes(&mem, 0x2000, 9), b"dma\0\0\0\0\0\xaa");
        // The file directory through DMA, one 64-bit write to start it.
        let desc = 0x1100u64;
        let mut d = Vec::new();
        d.extend_from_slice(
            &((u32::from(FW_CFG_FILE_DIR) << 16) | DMA_CTL_SELECT | DMA_CTL_READ).to_be_bytes(),
        );
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(&0x3000u64.to_be_bytes());
        mem.write_slice(&d, GuestAddress(desc)).unwrap();
        port.write(0, &desc.to_be_bytes());
        assert_eq!(guest_bytes(&mem, desc, 4), [0; 4]);
        assert_eq!(guest_bytes(&mem, 0x3000, 4), 1u32.to_be_bytes());
        // Unknown selector: zeros, no error.
        assert_eq!(
            run_dma(
                &port,
                &mem,
                0x1000,
                (0x1234 << 16) | DMA_CTL_SELECT | DMA_CTL_READ,
                4,
                0x2000
            ),
            0
        );
        assert_eq!(guest_bytes(&mem, 0x2000, 4), [0; 4]);
    }

    #[test]
    fn dma_errors_never_escape_guest_memory() {
        let (fw, port, mem) = dma_fw(0x10000);
        let ctl = (0x20u32 << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        // Target outside guest memory, straddling its end, and wrapping around.
        assert_eq!(
            run_dma(&port, &mem, 0x1000, ctl, 4, 0x10_0000),
            DMA_CTL_ERROR
        );
        assert_eq!(
            run_dma(&port, &mem, 0x1000, ctl, 0x100, 0xfff0),
            DMA_CTL_ERROR
        );
        assert_eq!(
            run_dma(&port, &mem, 0x1000, ctl, 0x100, u64::MAX - 4),
            DMA_CTL_ERROR
        );
        // A huge length is zero-filled only while memory lasts.
        assert_eq!(
            run_dma(&port, &mem, 0x1000, ctl, u32::MAX, 0x8000),
            DMA_CTL_ERROR
        );
        // Writes are refused.
        assert_eq!(
            run_dma(&port, &mem, 0x1000, DMA_CTL_WRITE, 4, 0x2000),
            DMA_CTL_ERROR
        );
        // No operation bits: nothing happens, success.
        assert_eq!(run_dma(&port, &mem, 0x1000, 0, 4, 0x2000), 0);
        // A descriptor outside memory is ignored; odd register accesses too.
        port.write(0, &0u32.to_be_bytes());
        port.write(4, &0x20_0000u32.to_be_bytes());
        port.write(2, &[1, 2]);
        port.write(0, &[1]);
        port.write(7, &[1; 8]);
        // The traditional interface still works afterwards.
        select(&fw, FW_CFG_SIGNATURE);
        assert_eq!(read_n(&fw, 4), b"QEMU");
    }

    #[test]
    fn typed_items() {
        let mut fw = FwCfg::new();
        fw.add_u32(FW_CFG_KERNEL_SIZE, 0x1234_5678).unwrap();
        fw.add_u16(FW_CFG_BOOT_MENU, 1).unwrap();
        select(&fw, FW_CFG_KERNEL_SIZE);
        assert_eq!(read_n(&fw, 5), [0x78, 0x56, 0x34, 0x12, 0]);
        select(&fw, FW_CFG_BOOT_MENU);
        assert_eq!(read_n(&fw, 2), [1, 0]);
    }
}
