//! An in-memory [`BlockBackend`] for the storage unit tests.

use super::BlockBackend;
use rvmm_block::BlockError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A RAM disk that counts flushes and can be told to fail.
pub(crate) struct MemBackend {
    pub data: Mutex<Vec<u8>>,
    pub readonly: bool,
    pub flushes: AtomicUsize,
    pub fail: AtomicBool,
}

impl MemBackend {
    pub fn new(size: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; size]),
            readonly: false,
            flushes: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        }
    }

    /// A disk whose byte i is `i % 251` (so every sector differs).
    pub fn patterned(size: usize) -> Self {
        let b = Self::new(size);
        for (i, v) in b.data.lock().unwrap().iter_mut().enumerate() {
            *v = (i % 251) as u8;
        }
        b
    }

    fn check(&self, what: &'static str, offset: u64, len: usize) -> Result<usize, BlockError> {
        let size = self.data.lock().unwrap().len() as u64;
        if self.fail.load(Ordering::SeqCst) {
            return Err(BlockError::Io {
                what,
                offset,
                len: len as u64,
                source: std::io::Error::other("injected"),
            });
        }
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

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn readonly(&self) -> bool {
        self.readonly
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.check("read", offset, buf.len())?;
        buf.copy_from_slice(&self.data.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.readonly {
            return Err(BlockError::ReadOnly);
        }
        let at = self.check("write", offset, buf.len())?;
        self.data.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<(), BlockError> {
        self.check("flush", 0, 0)?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A small deterministic PRNG (xorshift64*) for the no-panic tests.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}
