//! Shared pieces of rvmm's fuzz targets: a reader that turns the fuzzer's bytes into values, a
//! sequence of bus accesses, guest memory filled from the input, and do-nothing stand-ins for
//! what the VMM hands devices (VM control, MSI delivery, a RAM disk).

use rvmm_block::BlockError;
use rvmm_devices::storage::BlockBackend;
use rvmm_devices::{BusDevice, MsiController, MsiMessage, VmControl, VmRequest};
use std::sync::{Mutex, OnceLock};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Takes values from the front of the fuzzer's input; missing bytes read as zero.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let src = self.take(N);
        b[..src.len()].copy_from_slice(src);
        b
    }

    pub fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }
}

/// One bus access: `device` picks the target (modulo the target's device count), `offset` is
/// inside (or, for some, just past) its range, 1-8 bytes wide (odd widths too).
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub device: u8,
    pub offset: u64,
    pub write: bool,
    pub len: usize,
    pub data: [u8; 8],
}

impl Access {
    /// Decodes one access: device, flags (bit 0 write, bits 1-3 width - 1), 32-bit offset,
    /// then the data for a write. `None` at the end of the input.
    pub fn next(r: &mut Reader) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        let device = r.u8();
        let flags = r.u8();
        let offset = u64::from(r.u32());
        let write = flags & 1 != 0;
        let len = usize::from((flags >> 1) & 7) + 1;
        let mut data = [0u8; 8];
        if write {
            let src = r.take(len);
            data[..src.len()].copy_from_slice(src);
        }
        Some(Self {
            device,
            offset,
            write,
            len,
            data,
        })
    }

    /// Performs the access on `dev`, whose range is `range_len` bytes long.
    pub fn apply(&self, dev: &dyn BusDevice, range_len: u64) {
        let offset = self.offset % range_len.max(1);
        if self.write {
            dev.write(offset, &self.data[..self.len]);
        } else {
            let mut buf = [0u8; 8];
            dev.read(offset, &mut buf[..self.len]);
        }
    }
}

/// Guest memory of `size` bytes at address 0 whose first bytes are `init`.
pub fn guest_memory(size: usize, init: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory");
    let n = init.len().min(size);
    mem.write_slice(&init[..n], GuestAddress(0))
        .expect("fill guest memory");
    mem
}

/// VM requests (reset, power-off, exit) from devices are dropped.
pub struct NoVmControl;

impl VmControl for NoVmControl {
    fn request(&self, _req: VmRequest) {}
}

/// MSIs go nowhere.
pub struct NoMsi;

impl MsiController for NoMsi {
    fn signal_msi(&self, _msi: MsiMessage) -> std::io::Result<()> {
        Ok(())
    }

    fn set_msi_routes(&self, _routes: &[(u32, MsiMessage)]) -> std::io::Result<()> {
        Ok(())
    }
}

/// A RAM disk for the storage controllers.
pub struct MemDisk {
    data: Mutex<Vec<u8>>,
    readonly: bool,
}

impl MemDisk {
    /// A disk of up to 1 MiB whose byte i is `i % 251`.
    pub fn new(size: usize, readonly: bool) -> Self {
        // Made once: an instrumented fill per input would dominate the run time.
        static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
        let pattern = PATTERN.get_or_init(|| (0..1 << 20).map(|i| (i % 251) as u8).collect());
        Self {
            data: Mutex::new(pattern[..size].to_vec()),
            readonly,
        }
    }

    fn range(&self, what: &'static str, offset: u64, len: usize) -> Result<usize, BlockError> {
        let size = self.size();
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(offset as usize),
            _ => Err(BlockError::OutOfRange {
                what,
                offset,
                len: len as u64,
                size,
            }),
        }
    }
}

impl BlockBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn readonly(&self) -> bool {
        self.readonly
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.range("read", offset, buf.len())?;
        buf.copy_from_slice(&self.data.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.readonly {
            return Err(BlockError::ReadOnly);
        }
        let at = self.range("write", offset, buf.len())?;
        self.data.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// A per-process scratch file path (several fuzz jobs may run at once).
pub fn scratch_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rvmm-fuzz-{}-{name}", std::process::id()))
}
