//! Per-disk request accounting, QEMU's `BlockDeviceStats` (qapi/block-core.json): operations,
//! bytes and time per kind, failures, and the highest offset written. Counted by [`crate::Disk`]
//! for every front-end (virtio-blk, IDE, AHCI); read by QMP `query-blockstats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What a disk request was, for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
    Unmap,
}

/// Counters of one kind of request.
#[derive(Debug, Default)]
pub struct OpStats {
    pub operations: AtomicU64,
    pub bytes: AtomicU64,
    pub total_time_ns: AtomicU64,
    pub failed: AtomicU64,
}

/// One disk's counters.
#[derive(Debug, Default)]
pub struct DiskStats {
    pub read: OpStats,
    pub write: OpStats,
    pub flush: OpStats,
    pub unmap: OpStats,
    /// One past the highest byte written (QEMU's `wr_highest_offset`).
    pub wr_highest_offset: AtomicU64,
}

impl DiskStats {
    pub fn op(&self, op: Op) -> &OpStats {
        match op {
            Op::Read => &self.read,
            Op::Write => &self.write,
            Op::Flush => &self.flush,
            Op::Unmap => &self.unmap,
        }
    }

    /// Count one request of `len` bytes at `offset` that started at `start`.
    pub(crate) fn account(&self, op: Op, offset: u64, len: u64, start: Instant, ok: bool) {
        let s = self.op(op);
        if !ok {
            s.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.operations.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(len, Ordering::Relaxed);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.total_time_ns.fetch_add(ns, Ordering::Relaxed);
        if op == Op::Write {
            self.wr_highest_offset
                .fetch_max(offset.saturating_add(len), Ordering::Relaxed);
        }
    }
}
