//! Video memory shared by a display device and the guest: one anonymous mapping that the VMM
//! also maps into the guest as the framebuffer BAR (a KVM memory slot), plus the device's own
//! record of the pages it wrote (the guest's direct writes show up in KVM's dirty log instead).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

/// Dirty tracking granule: a host page, as in KVM's dirty log.
pub const PAGE_SIZE: usize = 4096;

/// Errors creating video memory.
#[derive(Debug, thiserror::Error)]
pub enum VramError {
    #[error("cannot map {size} bytes of video memory: {source}")]
    Map {
        size: usize,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
}

/// Video memory: `size` bytes, zeroed, with a bitmap of pages the device itself wrote.
pub struct Vram {
    map: Arc<MmapRegion<()>>,
    dirty: Vec<AtomicU64>,
}

impl std::fmt::Debug for Vram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vram").field("size", &self.size()).finish()
    }
}

impl Vram {
    pub fn new(size: usize) -> Result<Self, VramError> {
        let map = MmapRegion::new(size).map_err(|source| VramError::Map { size, source })?;
        let pages = size.div_ceil(PAGE_SIZE);
        Ok(Self {
            map: Arc::new(map),
            dirty: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn size(&self) -> usize {
        self.map.size()
    }

    /// The mapping, for the VMM to map into the guest as well (a KVM memory slot).
    pub fn mapping(&self) -> &Arc<MmapRegion<()>> {
        &self.map
    }

    /// Whether `[offset, offset + len)` lies inside the memory (vm-memory's object accessors
    /// copy partially and then fail, so whole-object accesses are checked first).
    fn fits(&self, offset: usize, len: usize) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.size())
    }

    /// Byte at `offset`, 0xff past the end.
    pub fn read_u8(&self, offset: usize) -> u8 {
        self.map
            .as_volatile_slice()
            .read_obj(offset)
            .unwrap_or(0xff)
    }

    /// Store a byte; ignored past the end.
    pub fn write_u8(&self, offset: usize, value: u8) {
        if self.fits(offset, 1)
            && self
                .map
                .as_volatile_slice()
                .write_obj(value, offset)
                .is_ok()
        {
            self.mark(offset, 1);
        }
    }

    /// Little-endian dword at `offset` (the four planes of a VGA address); 0 past the end.
    pub fn read_u32(&self, offset: usize) -> u32 {
        if !self.fits(offset, 4) {
            return 0;
        }
        self.map
            .as_volatile_slice()
            .read_obj::<u32>(offset)
            .map(u32::from_le)
            .unwrap_or(0)
    }

    pub fn write_u32(&self, offset: usize, value: u32) {
        if self.fits(offset, 4)
            && self
                .map
                .as_volatile_slice()
                .write_obj(value.to_le(), offset)
                .is_ok()
        {
            self.mark(offset, 4);
        }
    }

    /// Copy `out.len()` bytes from `offset`; bytes past the end read 0.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        out.fill(0);
        let end = offset.saturating_add(out.len()).min(self.size());
        if offset >= end {
            return;
        }
        let n = end - offset;
        if let Ok(s) = self.map.as_volatile_slice().subslice(offset, n) {
            s.copy_to(&mut out[..n]);
        }
    }

    /// Copy `data` to `offset`, clipped to the memory.
    pub fn write(&self, offset: usize, data: &[u8]) {
        let end = offset.saturating_add(data.len()).min(self.size());
        if offset >= end {
            return;
        }
        let n = end - offset;
        if let Ok(s) = self.map.as_volatile_slice().subslice(offset, n) {
            s.copy_from(&data[..n]);
            self.mark(offset, n);
        }
    }

    /// Zero `len` bytes from `offset`, clipped.
    pub fn clear(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.size());
        if offset >= end {
            return;
        }
        if let Ok(s) = self.map.as_volatile_slice().subslice(offset, end - offset) {
            // Zeros a page at a time: no allocation the size of the guest's request.
            let zero = [0u8; PAGE_SIZE];
            let mut o = 0;
            while o < end - offset {
                let n = (end - offset - o).min(PAGE_SIZE);
                let _ = s.write_slice(&zero[..n], o);
                o += n;
            }
            self.mark(offset, end - offset);
        }
    }

    /// Record that `[offset, offset + len)` changed.
    pub fn mark(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = offset / PAGE_SIZE;
        let last = (offset + len - 1) / PAGE_SIZE;
        for page in first..=last {
            if let Some(w) = self.dirty.get(page / 64) {
                w.fetch_or(1 << (page % 64), Ordering::Relaxed);
            }
        }
    }

    /// OR the pages written since the last call into `bitmap` (one bit per page, as KVM's
    /// dirty log) and forget them.
    pub fn take_dirty(&self, bitmap: &mut [u64]) {
        for (w, out) in self.dirty.iter().zip(bitmap.iter_mut()) {
            *out |= w.swap(0, Ordering::Relaxed);
        }
    }

    /// Words of a page bitmap covering this memory.
    pub fn bitmap_words(&self) -> usize {
        self.dirty.len()
    }
}

/// A run of video memory pages that hold data, for a snapshot: `data` is the bytes in hex.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VramRun {
    pub offset: u64,
    pub data: String,
}

impl Vram {
    /// The pages that are not all zero, as runs of consecutive pages (a text screen is a few
    /// KiB; a 1024x768x32 VBE picture 3 MiB).
    pub fn save_runs(&self) -> Vec<VramRun> {
        let mut runs: Vec<VramRun> = Vec::new();
        let mut page = [0u8; PAGE_SIZE];
        let mut open = false;
        let touched = self.touched_pages();
        for (n, offset) in (0..self.size()).step_by(PAGE_SIZE).enumerate() {
            if !touched.get(n).copied().unwrap_or(true) {
                // Never faulted in: zero, and left unread (reading would fault it in).
                open = false;
                continue;
            }
            self.read(offset, &mut page);
            if page.iter().all(|&b| b == 0) {
                open = false;
                continue;
            }
            if !open {
                runs.push(VramRun {
                    offset: offset as u64,
                    data: String::new(),
                });
                open = true;
            }
            if let Some(run) = runs.last_mut() {
                run.data.reserve(2 * PAGE_SIZE);
                for b in page {
                    run.data.push(HEX[usize::from(b >> 4)] as char);
                    run.data.push(HEX[usize::from(b & 15)] as char);
                }
            }
        }
        runs
    }

    /// Become the saved memory: zero, then each run (untrusted: bounds and digits checked
    /// before anything is written).
    pub fn restore_runs(&self, runs: &[VramRun]) -> Result<(), String> {
        let mut decoded = Vec::with_capacity(runs.len());
        for run in runs {
            let bytes = decode_hex(&run.data)
                .ok_or_else(|| format!("video memory at {:#x}: not hex", run.offset))?;
            let fits = usize::try_from(run.offset)
                .ok()
                .filter(|&o| self.fits(o, bytes.len()));
            let Some(offset) = fits else {
                return Err(format!(
                    "video memory run at {:#x} of {} bytes is past its {} bytes",
                    run.offset,
                    bytes.len(),
                    self.size()
                ));
            };
            decoded.push((offset, bytes));
        }
        self.zero_all();
        for (offset, bytes) in decoded {
            self.write(offset, &bytes);
        }
        self.mark(0, self.size());
        Ok(())
    }

    /// For each page: may it hold data? /proc/self/pagemap says whether it is present or
    /// swapped; a page that is neither was never touched and reads as zero. All true when the
    /// page map cannot be read.
    fn touched_pages(&self) -> Vec<bool> {
        use std::os::unix::fs::FileExt;
        let pages = self.size().div_ceil(PAGE_SIZE);
        let mut raw = vec![0u8; pages * 8];
        let at = (self.map.as_ptr() as usize / PAGE_SIZE) as u64 * 8;
        let ok = std::fs::File::open("/proc/self/pagemap")
            .and_then(|f| f.read_exact_at(&mut raw, at))
            .is_ok();
        raw.chunks_exact(8)
            .map(|e| {
                let e = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
                // Bit 63 present, bit 62 swapped.
                !ok || e & (3 << 62) != 0
            })
            .collect()
    }

    /// Zero all of it without touching each page: the anonymous mapping's pages are dropped.
    fn zero_all(&self) {
        // SAFETY: the range is this region's own anonymous private mapping; MADV_DONTNEED makes
        // its pages read as zero again and leaves the mapping in place (KVM follows through
        // its MMU notifier).
        let r =
            unsafe { libc::madvise(self.map.as_ptr().cast(), self.size(), libc::MADV_DONTNEED) };
        if r != 0 {
            self.clear(0, self.size());
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The guest's direct writes to video memory mapped as guest RAM: implemented by the VMM over
/// KVM's dirty log of the framebuffer's memory slot.
pub trait DirtyLog: Send + Sync {
    /// OR the pages written since the last call into `bitmap` (bit n = page n of video
    /// memory). Returns false if the log is unavailable: the caller then treats every page as
    /// written.
    fn take_dirty(&self, bitmap: &mut [u64]) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_bounded_and_tracked() {
        let v = Vram::new(3 * PAGE_SIZE).unwrap();
        v.write_u8(5, 0x12);
        v.write_u32(PAGE_SIZE * 2, 0xaabbccdd);
        assert_eq!(v.read_u8(5), 0x12);
        assert_eq!(v.read_u32(PAGE_SIZE * 2), 0xaabbccdd);
        // Past the end: ignored, reads fixed values.
        v.write_u8(3 * PAGE_SIZE, 1);
        v.write_u32(3 * PAGE_SIZE - 2, 1);
        v.write(usize::MAX - 1, &[1, 2, 3]);
        assert_eq!(v.read_u8(3 * PAGE_SIZE), 0xff);
        assert_eq!(v.read_u32(usize::MAX - 2), 0);
        let mut buf = [9u8; 4];
        v.read(3 * PAGE_SIZE - 2, &mut buf);
        assert_eq!(buf, [0; 4]);
        let mut bm = [0u64; 1];
        v.take_dirty(&mut bm);
        assert_eq!(bm[0], 0b101);
        let mut bm = [0u64; 1];
        v.take_dirty(&mut bm);
        assert_eq!(bm[0], 0);
        v.clear(10, PAGE_SIZE);
        v.take_dirty(&mut bm);
        assert_eq!(bm[0], 0b11);
        assert_eq!(v.read_u8(5), 0x12);
        assert_eq!(v.read_u8(10), 0);
    }

    #[test]
    fn runs_round_trip_and_bad_runs_are_refused() {
        let v = Vram::new(8 * PAGE_SIZE).unwrap();
        v.write_u8(5, 0x12);
        v.write_u32(PAGE_SIZE + 8, 0xdeadbeef);
        v.write_u8(5 * PAGE_SIZE, 0xff);
        let runs = v.save_runs();
        assert_eq!(runs.len(), 2, "pages 0-1 and page 5");
        assert_eq!(runs[0].data.len(), 4 * PAGE_SIZE);
        let w = Vram::new(8 * PAGE_SIZE).unwrap();
        w.write_u8(7 * PAGE_SIZE, 9);
        w.restore_runs(&runs).unwrap();
        for o in (0..8 * PAGE_SIZE).step_by(4) {
            assert_eq!(v.read_u32(o), w.read_u32(o), "offset {o:#x}");
        }
        let past = VramRun {
            offset: 8 * PAGE_SIZE as u64 - 1,
            data: "0000".into(),
        };
        assert!(w.restore_runs(&[past]).unwrap_err().contains("past"));
        let junk = VramRun {
            offset: 0,
            data: "0g".into(),
        };
        assert!(w.restore_runs(&[junk]).unwrap_err().contains("not hex"));
        assert_eq!(w.read_u8(5), 0x12, "a refused state changes nothing");
    }
}
