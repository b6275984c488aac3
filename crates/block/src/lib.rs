//! Disk image backends for virtio-blk: raw and qcow2 (with backing files), through imago.
//!
//! A [`Disk`] is a byte-addressed image of fixed size. Every request is checked against the
//! size here, so a guest asking past the end gets an error, never a short or wild access.
//! Opening walks the backing chain itself (chain.rs: no loops, at most [`MAX_CHAIN_LEN`] images)
//! and checks each qcow2 header as QEMU does (qcow2.rs). An I/O error while the guest runs
//! reaches the guest as an error and the host once per disk as a log line naming the image.

mod chain;
mod lock;
mod overlay;
mod qcow2;
mod stats;

pub use chain::{OpenError, MAX_CHAIN_LEN};
pub use lock::{ImageLock, LockError, LockMode, LOCK_PERM_BASE, LOCK_SHARED_BASE};
pub use qcow2::HeaderError;
pub use stats::{DiskStats, Op, OpStats};

use imago::file::File;
use imago::FormatAccess;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// An I/O error a disk reports to [`DiskEvents`].
#[derive(Debug)]
pub struct DiskIoError<'a> {
    /// A write or flush (QMP's `operation` is "read" or "write").
    pub write: bool,
    pub reason: &'a str,
    /// The host is out of space (ENOSPC).
    pub nospace: bool,
}

/// Told of the first I/O error of each kind on a disk, beside the log line.
pub trait DiskEvents: Send + Sync {
    fn io_error(&self, error: &DiskIoError);

    /// The disk's request counters, handed over once when the events are set.
    fn stats(&self, _path: &Path, _stats: Arc<DiskStats>) {}
}

/// Errors opening or using a disk image.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("could not open disk image '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: OpenError,
    },
    #[error("disk image '{path}': unknown format '{format}' (supported: raw, qcow2)")]
    UnknownFormat { path: String, format: String },
    #[error("{what} of {len} bytes at offset {offset} is past the end of the disk ({size} bytes)")]
    OutOfRange {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("disk is read-only")]
    ReadOnly,
    #[error("{what} of {len} bytes at offset {offset}: {source}")]
    Io {
        what: &'static str,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
}

/// On-disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    /// `format=` as QEMU spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "raw" => Some(Self::Raw),
            "qcow2" => Some(Self::Qcow2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    pub path: PathBuf,
    /// `None`: probe the file, as QEMU does (with a warning).
    pub format: Option<ImageFormat>,
    pub readonly: bool,
    /// `cache=none`: bypass the host page cache (O_DIRECT).
    pub direct: bool,
    /// `file.locking=on|auto` (the default): lock every file of the chain as QEMU does.
    pub locking: bool,
    /// `snapshot=on` / `-snapshot`: the image is only read; writes go to a temporary overlay.
    pub snapshot: bool,
    /// The device's `share-rw=on`: a raw image's write lock is shared with other writers
    /// (ignored for qcow2, whose metadata has one writer, and under `-snapshot`, as in QEMU).
    pub share_rw: bool,
}

/// Guess the format from the file's first bytes (QEMU's probing: qcow2 magic, else raw).
/// A FIFO, socket or directory is refused, never waited on.
pub fn probe_format(path: &Path) -> Result<ImageFormat, OpenError> {
    chain::probe_format(path)
}

/// An open disk image.
pub struct Disk {
    access: FormatAccess<File>,
    path: PathBuf,
    format: ImageFormat,
    readonly: bool,
    size: u64,
    /// Whether the host was told of an I/O error from the host side (an OS error) ...
    io_error_reported: AtomicBool,
    /// Who else hears of the first error of each kind (QMP's BLOCK_IO_ERROR).
    events: OnceLock<Arc<dyn DiskEvents>>,
    /// ... and of one from the image's own contents (corrupt metadata).
    corruption_reported: AtomicBool,
    /// The locks on every file of the chain, released when the disk is dropped.
    _locks: Vec<ImageLock>,
    /// Writes go to a temporary overlay, which is never synced.
    snapshot: bool,
    /// Requests counted for QMP `query-blockstats`.
    stats: Arc<DiskStats>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("readonly", &self.readonly)
            .field("size", &self.size)
            .finish()
    }
}

impl Disk {
    /// Open `opts.path`; returns the disk and, when the format was probed, QEMU's warning text.
    pub fn open(opts: &DiskOptions) -> Result<(Self, Option<String>), BlockError> {
        let name = opts.path.display().to_string();
        let open_err = |source| BlockError::Open {
            path: name.clone(),
            source,
        };
        // A snapshot only reads the image: it is locked and opened as a reader.
        let snapshot = opts.snapshot && !opts.readonly;
        let write = !opts.readonly && !snapshot;
        let locking = opts.locking.then_some(opts.share_rw && !snapshot);
        let chain = chain::open_chain(&opts.path, opts.format, write, opts.direct, locking)
            .map_err(open_err)?;
        let format = chain.format;
        let access = if snapshot {
            overlay::temporary_overlay(chain.access, &opts.path, format, &std::env::temp_dir())
                .map_err(open_err)?
        } else {
            chain.access
        };
        let warning = opts.format.is_none().then(|| {
            format!(
                "Image format was not specified for '{name}' and probing guessed {}.\n\
                 Automatically detecting the format is dangerous for raw images.\n\
                 Specify the format explicitly (format=raw or format=qcow2).",
                format.name()
            )
        });
        let size = access.size();
        Ok((
            Self {
                access,
                path: opts.path.clone(),
                format,
                readonly: opts.readonly,
                size,
                io_error_reported: AtomicBool::new(false),
                events: OnceLock::new(),
                corruption_reported: AtomicBool::new(false),
                _locks: chain.locks,
                snapshot,
                stats: Arc::default(),
            },
            warning,
        ))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn format(&self) -> ImageFormat {
        self.format
    }

    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The image file, as it was named when opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<(), BlockError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BlockError::OutOfRange {
                what,
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Turns an imago error into a [`BlockError`]; the first of each kind on this disk is also
    /// logged, so the host hears of it whatever the guest makes of its I/O error.
    fn failed(&self, what: &'static str, offset: u64, len: u64, e: io::Error) -> BlockError {
        // imago reports what it finds wrong in an image (an unaligned L2 table, a compressed
        // cluster that does not inflate) as errors without an OS error code.
        let corrupt = e.raw_os_error().is_none()
            && matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::Other | io::ErrorKind::UnexpectedEof
            );
        let flag = if corrupt {
            &self.corruption_reported
        } else {
            &self.io_error_reported
        };
        if !flag.swap(true, Ordering::Relaxed) {
            let path = self.path.display();
            let at = if what == "flush" {
                String::new()
            } else {
                format!(" at guest offset {offset}")
            };
            let problem = if corrupt { " is corrupt:" } else { ":" };
            tracing::error!(
                "disk image '{path}'{problem} {what}{at} failed: {e}; the guest gets an I/O \
                 error (further such errors on this disk are not logged)"
            );
            if let Some(events) = self.events.get() {
                events.io_error(&DiskIoError {
                    write: what != "read",
                    reason: &e.to_string(),
                    nospace: e.raw_os_error() == Some(libc::ENOSPC),
                });
            }
        }
        BlockError::Io {
            what,
            offset,
            len,
            source: e,
        }
    }

    fn check_write(&self, what: &'static str, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.readonly {
            return Err(BlockError::ReadOnly);
        }
        self.check(what, offset, len)
    }

    /// Tell `events` of this disk's I/O errors too (the first of each kind, as the log line).
    pub fn set_events(&self, events: Arc<dyn DiskEvents>) {
        // Set once, when the device is built; a second call changes nothing.
        events.stats(&self.path, self.stats.clone());
        let _ = self.events.set(events);
    }

    /// This disk's request counters (shared: QMP reads them while devices count).
    pub fn stats(&self) -> Arc<DiskStats> {
        self.stats.clone()
    }

    /// Count `res`, a request of `len` bytes at `offset` that started at `start`.
    fn counted<T>(
        &self,
        op: Op,
        offset: u64,
        len: u64,
        start: std::time::Instant,
        res: Result<T, BlockError>,
    ) -> Result<T, BlockError> {
        self.stats.account(op, offset, len, start, res.is_ok());
        res
    }

    /// Fill `buf` from the disk at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let start = std::time::Instant::now();
        let len = buf.len() as u64;
        let res = self.check("read", offset, len).and_then(|()| {
            self.access
                .read(buf, offset)
                .map_err(|e| self.failed("read", offset, len, e))
        });
        self.counted(Op::Read, offset, len, start, res)
    }

    /// Write `buf` to the disk at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        let start = std::time::Instant::now();
        let len = buf.len() as u64;
        let res = self.check_write("write", offset, len).and_then(|()| {
            self.access
                .write(buf, offset)
                .map_err(|e| self.failed("write", offset, len, e))
        });
        self.counted(Op::Write, offset, len, start, res)
    }

    /// Make `len` bytes at `offset` read as zeroes; `unmap` may free the space.
    pub fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), BlockError> {
        self.check_write("write-zeroes", offset, len)?;
        let res = if self.smaller_than_zero_granularity() {
            self.write_zero_data(offset, len)
        } else if unmap {
            self.access.discard_to_zero(offset, len)
        } else {
            self.access.write_zeroes(offset, len)
        };
        res.map_err(|e| self.failed("write-zeroes", offset, len, e))
    }

    /// Whether the image is smaller than one unit of efficient zeroing (a qcow2 cluster). imago
    /// 0.2.6 computes the last such unit of a zeroing request as `min(end rounded up, size) -
    /// unit`, which wraps below 0 then (found by fuzz/block_image: a debug-build panic, a
    /// zeroing range past the image's end in release builds).
    fn smaller_than_zero_granularity(&self) -> bool {
        self.access
            .inner()
            .zero_granularity()
            .is_some_and(|unit| self.size < unit)
    }

    /// Zero `len` bytes at `offset` by writing zeroes (for images smaller than one cluster).
    fn write_zero_data(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; len.min(64 << 10) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64);
            self.access.write(&zeroes[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// Tell the image `len` bytes at `offset` are unused; their contents become undefined.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        let start = std::time::Instant::now();
        let res = self.check_write("discard", offset, len).and_then(|()| {
            self.access
                .discard_to_any(offset, len)
                .map_err(|e| self.failed("discard", offset, len, e))
        });
        self.counted(Op::Unmap, offset, len, start, res)
    }

    /// Write metadata and data through to stable storage.
    pub fn flush(&self) -> Result<(), BlockError> {
        let start = std::time::Instant::now();
        let res = self.flush_inner();
        self.counted(Op::Flush, 0, 0, start, res)
    }

    fn flush_inner(&self) -> Result<(), BlockError> {
        if self.readonly {
            return Ok(());
        }
        // imago's flush writes its cached metadata back; sync is the fdatasync. A temporary
        // overlay dies with the process, so it needs no sync (QEMU: cache.no-flush=on).
        self.access
            .flush()
            .and_then(|()| match self.snapshot {
                true => Ok(()),
                false => self.access.sync(),
            })
            .map_err(|e| self.failed("flush", 0, self.size, e))
    }
}

#[cfg(test)]
mod tests;
