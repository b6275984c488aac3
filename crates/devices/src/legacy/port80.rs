//! POST code port 0x80. Linux writes it for I/O delays, firmware for progress codes.
//!
//! Writes are dropped except that the last byte is remembered for tests and debugging
//! ([`Port80Sink::last_code`]); reads return all-ones like QEMU's `ioport80_read`
//! (hw/i386/pc.c), so guests see the same value on both.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::BusDevice;

/// The POST code port.
pub const PORT80_BASE: u64 = 0x80;
/// One port.
pub const PORT80_LEN: u64 = 1;

/// Port 0x80 sink. Lock-free.
#[derive(Default)]
pub struct Port80Sink {
    last: AtomicU8,
}

impl Port80Sink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first byte of the most recent write (0 before any).
    pub fn last_code(&self) -> u8 {
        self.last.load(Ordering::Relaxed)
    }
}

impl BusDevice for Port80Sink {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.last.store(code, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_ones_and_remembers_last_write() {
        let dev = Port80Sink::new();
        assert_eq!(dev.last_code(), 0);
        dev.write(0, &[0x42]);
        dev.write(0, &[0x43, 0x44]);
        dev.write(7, &[]);
        assert_eq!(dev.last_code(), 0x43);
        let mut d = [0u8; 4];
        dev.read(0, &mut d);
        assert_eq!(d, [0xff; 4]);
        dev.read(u64::MAX, &mut []);
    }
}
