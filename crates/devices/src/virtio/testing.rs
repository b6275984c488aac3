//! Test helpers: a split virtqueue laid out in a small guest memory, driven like a driver would.

use super::mmio::MmioTransport;
use super::{GuestMemory, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use crate::BusDevice;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: u64 = 0x10_0000;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

pub fn memory() -> GuestMemory {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap())
}

/// Where queue `q`'s rings live: 0x1000 apart per queue, inside the first 64 KiB.
pub struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
    avail_idx: u16,
}

impl Ring {
    pub fn new(q: u64, size: u16) -> Self {
        let base = 0x1_0000 + q * 0x4000;
        Self {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            size,
            avail_idx: 0,
        }
    }

    pub fn set_desc(
        &self,
        mem: &GuestMemoryMmap,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        self.set_desc_at(mem, self.desc, i, addr, len, flags, next);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn set_desc_at(
        &self,
        mem: &GuestMemoryMmap,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let a = GuestAddress(table + u64::from(i) * 16);
        mem.write_obj(addr.to_le(), a).unwrap();
        mem.write_obj(len.to_le(), GuestAddress(a.0 + 8)).unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(a.0 + 12))
            .unwrap();
        mem.write_obj(next.to_le(), GuestAddress(a.0 + 14)).unwrap();
    }

    /// Publish chain `head` on the available ring.
    pub fn push(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail + 4 + u64::from(self.avail_idx % self.size) * 2;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Set the raw avail index (for malformed-ring tests).
    pub fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx, GuestAddress(self.avail + 2)).unwrap();
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used ring entry `n`: (id, len).
    pub fn used(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let e = self.used + 4 + u64::from(n % self.size) * 8;
        (
            mem.read_obj(GuestAddress(e)).unwrap(),
            mem.read_obj(GuestAddress(e + 4)).unwrap(),
        )
    }

    /// Wait until the used index reaches `n` (the device works on its own thread).
    pub fn wait_used(&self, mem: &GuestMemoryMmap, n: u16) -> bool {
        self.wait_used_within(mem, n, Duration::from_secs(5))
    }

    /// Wait until the used index reaches `n`, at most `limit`.
    pub fn wait_used_within(&self, mem: &GuestMemoryMmap, n: u16, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.used_idx(mem) == n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

pub fn wr(t: &MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

pub fn rd(t: &MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

/// Run the driver initialization sequence (§3.1.1) accepting `features`, with `rings`.
pub fn init_device(t: &MmioTransport, features: u64, rings: &[Ring]) -> u32 {
    wr(t, 0x70, 0);
    wr(t, 0x70, STATUS_ACKNOWLEDGE);
    wr(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(t, 0x24, 0);
    wr(t, 0x20, features as u32);
    wr(t, 0x24, 1);
    wr(t, 0x20, (features >> 32) as u32);
    let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    wr(t, 0x70, s);
    if rd(t, 0x70) & STATUS_FEATURES_OK == 0 {
        return rd(t, 0x70);
    }
    for (i, r) in rings.iter().enumerate() {
        wr(t, 0x30, i as u32);
        wr(t, 0x38, u32::from(r.size));
        wr(t, 0x80, r.desc as u32);
        wr(t, 0x84, (r.desc >> 32) as u32);
        wr(t, 0x90, r.avail as u32);
        wr(t, 0x94, 0);
        wr(t, 0xa0, r.used as u32);
        wr(t, 0xa4, 0);
        wr(t, 0x44, 1);
    }
    wr(t, 0x70, s | STATUS_DRIVER_OK);
    rd(t, 0x70)
}

/// Notify queue `q` through the MMIO register (as without ioeventfd).
pub fn notify(t: &MmioTransport, q: u32) {
    wr(t, 0x50, q);
}
