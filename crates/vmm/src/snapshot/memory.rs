//! Guest RAM in its own file next to the state file (`PATH.mem`), so a restore maps it instead of
//! reading it: MAP_PRIVATE | MAP_FIXED over the VM's RAM, pages fault in from the page cache on
//! first touch and writes stay private to this VM. Restore cost does not grow with RAM size.
//!
//! ```text
//! 0     8  magic "RVMMMEM\0"
//! 8     4  format version (LE), 1
//! 16    8  snapshot id (LE): the state file names the same id
//! 24    8  RAM bytes that follow (LE)
//! 4096  -  each RAM region in guest-physical order, at page-aligned offsets; pages that were
//!          never written are holes (zero)
//! ```

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const MAGIC: &[u8; 8] = b"RVMMMEM\0";
const VERSION: u32 = 1;
/// RAM starts one page into the file, so every region stays page-aligned for mmap.
pub const DATA_OFFSET: u64 = 4096;
const PAGE: usize = 4096;
/// Pages looked at per step while saving.
const CHUNK_PAGES: usize = 512;

/// Errors saving or mapping the memory file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an rvmm memory file (no RVMMMEM magic) or truncated header")]
    Magic { path: String },
    #[error("{path}: memory file version {found}, this rvmm reads version {VERSION}")]
    Version { path: String, found: u32 },
    #[error(
        "{path}: belongs to another snapshot (id {found:#x}, the state file says {expected:#x})"
    )]
    Id {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("{path}: truncated: {found} bytes, the snapshot needs {needed}")]
    Truncated {
        path: String,
        found: u64,
        needed: u64,
    },
    #[error("the snapshot's RAM layout ({saved}) is not this VM's ({ours})")]
    Layout { saved: String, ours: String },
}

/// One RAM region and where it sits in the memory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub gpa: u64,
    pub len: u64,
    pub offset: u64,
}

/// The memory file as the state file describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRecord {
    pub id: u64,
    pub regions: Vec<RegionRecord>,
}

impl MemoryRecord {
    /// The layout of `mem` in a memory file.
    pub fn layout(mem: &GuestMemoryMmap, id: u64) -> Self {
        let mut offset = DATA_OFFSET;
        let regions = mem
            .iter()
            .map(|r| {
                let rec = RegionRecord {
                    gpa: r.start_addr().raw_value(),
                    len: r.len(),
                    offset,
                };
                offset += r.len().next_multiple_of(PAGE as u64);
                rec
            })
            .collect();
        Self { id, regions }
    }

    /// Bytes of the file, header included.
    fn file_len(&self) -> u64 {
        self.regions
            .iter()
            .map(|r| r.offset.saturating_add(r.len))
            .max()
            .unwrap_or(DATA_OFFSET)
    }

    fn describe(&self) -> String {
        self.regions
            .iter()
            .map(|r| format!("{:#x}+{:#x}", r.gpa, r.len))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `PATH.mem` for state file `PATH`.
pub fn mem_path(state: &Path) -> std::path::PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".mem");
    p.into()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MemoryFileError + '_ {
    move |source| MemoryFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// /proc/self/pagemap, opened once while rvmm may still open any file: under the sandbox,
/// Landlock later refuses it, and every save then read all of RAM (400 ms instead of 4 ms for
/// an idle 2 GiB guest).
static PAGEMAP: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();

/// Open /proc/self/pagemap for later saves (call before the sandbox restricts files).
pub fn open_pagemap() {
    PAGEMAP.get_or_init(|| File::open("/proc/self/pagemap").ok());
}

/// Pages of a region a page-map read says were never touched (neither present nor swapped):
/// anonymous memory that reads as zero. None if /proc/self/pagemap cannot be read.
struct PageMap(Option<&'static File>);

impl PageMap {
    fn open() -> Self {
        open_pagemap();
        Self(PAGEMAP.get().and_then(Option::as_ref))
    }

    /// For each of `pages` pages from `addr`: may it hold data (present or swapped)?
    fn touched(&self, addr: usize, pages: usize, out: &mut Vec<bool>) {
        out.clear();
        let mut raw = vec![0u8; pages * 8];
        let ok = self
            .0
            .is_some_and(|f| f.read_exact_at(&mut raw, (addr / PAGE) as u64 * 8).is_ok());
        for i in 0..pages {
            let e = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0xff; 8]));
            // Bit 63 present, bit 62 swapped; unreadable: assume touched.
            out.push(!ok || e & (3 << 62) != 0);
        }
    }
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, words, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the aligned middle.
        unsafe { page.align_to::<u64>() }
    };
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

/// Write `mem` to `path` as the layout says; `anonymous`: RAM is still the anonymous mapping
/// rvmm made (not a restored file mapping), so untouched pages can be skipped unread.
/// Returns the bytes written.
pub fn save(
    mem: &GuestMemoryMmap,
    record: &MemoryRecord,
    path: &Path,
    anonymous: bool,
) -> Result<u64, MemoryFileError> {
    // A new file, renamed over `path` by the caller ([`commit`]): the running VM's RAM may be a
    // mapping of the old one (restored from the same path), which must not change under it.
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io(&tmp))?;
    file.set_len(record.file_len()).map_err(io(&tmp))?;
    let mut header = [0u8; 32];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&record.id.to_le_bytes());
    header[24..32].copy_from_slice(&(record.file_len() - DATA_OFFSET).to_le_bytes());
    file.write_all_at(&header, 0).map_err(io(&tmp))?;
    let mut written = 0u64;
    for_each_run(mem, anonymous, |index, offset, data| {
        let base = record.regions.get(index).map_or(0, |r| r.offset);
        written += data.len() as u64;
        file.write_all_at(data, base + offset)
    })
    .map_err(io(&tmp))?;
    Ok(written)
}

/// `PATH.tmp`, where a file is written before it is renamed to `PATH`.
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    p.into()
}

/// Rename `PATH.tmp` to `PATH` (atomic: a reader sees the old file or the new one).
pub fn commit(path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp_path(path), path)
}

/// Call `f(region index, offset in the region, bytes)` for every run of RAM pages that may hold
/// data. `anonymous`: RAM is still rvmm's anonymous mapping, so pages the page map says were
/// never touched are skipped unread; all-zero pages are skipped either way.
pub fn for_each_run(
    mem: &GuestMemoryMmap,
    anonymous: bool,
    mut f: impl FnMut(usize, u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let pagemap = if anonymous {
        PageMap::open()
    } else {
        PageMap(None)
    };
    let mut touched = Vec::with_capacity(CHUNK_PAGES);
    for (index, region) in mem.iter().enumerate() {
        let base = region.as_ptr() as usize;
        let len = region.len() as usize;
        // SAFETY: the region's mapping is `len` bytes from `base` and lives as long as `mem`;
        // the vCPUs are paused and the device workers hold no request, so nothing writes it.
        let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
        let mut page = 0;
        while page * PAGE < len {
            let pages = CHUNK_PAGES.min((len - page * PAGE).div_ceil(PAGE));
            if anonymous {
                pagemap.touched(base + page * PAGE, pages, &mut touched);
            }
            let mut run: Option<usize> = None;
            for i in 0..=pages {
                let p = page + i;
                let data = i < pages && {
                    let start = p * PAGE;
                    let end = (start + PAGE).min(len);
                    (!anonymous || touched.get(i).copied().unwrap_or(true))
                        && !is_zero(&bytes[start..end])
                };
                match (data, run) {
                    (true, None) => run = Some(p),
                    (false, Some(first)) => {
                        let start = first * PAGE;
                        let end = (p * PAGE).min(len);
                        f(index, start as u64, &bytes[start..end])?;
                        run = None;
                    }
                    _ => {}
                }
            }
            page += pages;
        }
    }
    Ok(())
}

/// Map the memory file at `path` over `mem` (MAP_PRIVATE | MAP_FIXED), after checking it belongs
/// to `record` and covers it. No vCPU may have run since `mem` was made.
pub fn map(
    mem: &GuestMemoryMmap,
    record: &MemoryRecord,
    path: &Path,
) -> Result<(), MemoryFileError> {
    let shown = || path.display().to_string();
    let ours = MemoryRecord::layout(mem, record.id);
    if ours.regions != record.regions {
        return Err(MemoryFileError::Layout {
            saved: record.describe(),
            ours: ours.describe(),
        });
    }
    let file = File::open(path).map_err(io(path))?;
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| MemoryFileError::Magic { path: shown() })?;
    if &header[..8] != MAGIC {
        return Err(MemoryFileError::Magic { path: shown() });
    }
    let word = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&header[r]);
        u64::from_le_bytes(a)
    };
    let version = word(8..12) as u32;
    if version != VERSION {
        return Err(MemoryFileError::Version {
            path: shown(),
            found: version,
        });
    }
    let id = word(16..24);
    if id != record.id {
        return Err(MemoryFileError::Id {
            path: shown(),
            expected: record.id,
            found: id,
        });
    }
    let found = file.metadata().map_err(io(path))?.len();
    let needed = record.file_len();
    if found < needed {
        return Err(MemoryFileError::Truncated {
            path: shown(),
            found,
            needed,
        });
    }
    for (region, rec) in mem.iter().zip(&record.regions) {
        let offset = libc::off_t::try_from(rec.offset).map_err(|_| MemoryFileError::Truncated {
            path: shown(),
            found,
            needed,
        })?;
        // SAFETY: the range is exactly the region's own mapping (same address and length), which
        // `mem` owns and unmaps at drop; MAP_FIXED replaces its pages with the file's. No vCPU
        // has run, and KVM's MMU notifier drops any stale translation of the old pages.
        let p = unsafe {
            libc::mmap(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io(path)(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
