//! Opening an image and its backing chain, one layer at a time.
//!
//! imago would open backing files by itself, recursively and without looking for loops, so an
//! image that names itself overflows the stack. Here every qcow2 layer is opened with no backing
//! file, its header checked first ([`crate::qcow2::read_header`]); the walk down the chain
//! stops at a file already in it (by device and inode, so links and `..` do not hide a loop)
//! and after [`MAX_CHAIN_LEN`] images; then each layer gets the one below as its backing image.

use crate::lock::{ImageLock, LockError, LockMode};
use crate::qcow2::{self, HeaderError};
use crate::ImageFormat;
use imago::file::File;
use imago::format::gate::ImplicitOpenGate;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most images in one chain, the top image included. QEMU has no limit (a read-only loop hangs
/// it; image locking stops a read-write one); crosvm and Cloud Hypervisor allow 10 nested
/// images. 256 leaves room for long snapshot chains and keeps a chain's file descriptors (one
/// per image) well under the usual limit of 1024.
pub const MAX_CHAIN_LEN: usize = 256;

/// Why an image or one of its backing files could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("it is a {0}, not a regular file or block device")]
    NotAFile(&'static str),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("unknown backing file format '{0}' (supported: raw, qcow2)")]
    BackingFormat(String),
    #[error("backing file '{path}' (named by '{named_by}'): {source}")]
    Backing {
        path: String,
        named_by: String,
        #[source]
        source: Box<OpenError>,
    },
    #[error(
        "the backing chain loops: '{named_by}' names '{backing}' as its backing file, {}",
        match earlier {
            Some(e) => format!("which is '{e}', already in the chain"),
            None => "which is already in the chain".to_string(),
        }
    )]
    Loop {
        named_by: String,
        backing: String,
        /// How the chain first named that file, when it was another path.
        earlier: Option<String>,
    },
    #[error(
        "the backing chain is longer than {MAX_CHAIN_LEN} images: '{named_by}' names yet \
         another backing file, '{backing}'"
    )]
    TooLong { named_by: String, backing: String },
}

/// One opened layer, before the layers are joined.
enum Layer {
    Raw(Raw<File>),
    Qcow2(Box<Qcow2<File>>),
}

/// The file type, when it is not one rvmm serves as a disk.
fn unusable_type(meta: &fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_block_device() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

/// Opens `path` without blocking, even if it has become a FIFO since it was looked at, and
/// checks again what it is.
fn open_nonblocking(path: &Path, write: bool, direct: bool) -> Result<fs::File, OpenError> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags)
        .open(path)?;
    if let Some(kind) = unusable_type(&file.metadata()?) {
        return Err(OpenError::NotAFile(kind));
    }
    // SAFETY: F_GETFL/F_SETFL on a descriptor this function owns; no memory is passed.
    let cleared = unsafe {
        let fl = libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_GETFL);
        fl >= 0
            && libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::F_SETFL,
                fl & !libc::O_NONBLOCK,
            ) == 0
    };
    if !cleared {
        return Err(io::Error::last_os_error().into());
    }
    Ok(file)
}

/// What imago may open by itself for an image: an external data file, as a regular file or
/// block device only, never waiting on a FIFO. Backing images are opened by [`open_chain`].
struct FileGate;

impl ImplicitOpenGate<File> for FileGate {
    fn open_format<F: FormatDriverBuilder<File>>(
        &mut self,
        _builder: F,
    ) -> io::Result<FormatAccess<File>> {
        Err(io::Error::other(
            "backing images are opened by rvmm, not imago",
        ))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<File> {
        let path = opts
            .get_filename()
            .ok_or_else(|| io::Error::other("no file name"))?
            .to_path_buf();
        let file = open_nonblocking(&path, opts.get_writable(), opts.get_direct())
            .map_err(|e| io::Error::other(e.to_string()))?;
        File::from_open_file(file, opts)
    }
}

/// Reads and checks the qcow2 header of `path` through a buffered descriptor of its own (the
/// image's may be O_DIRECT).
fn read_qcow2_header(path: &Path) -> Result<qcow2::Header, OpenError> {
    let mut file = open_nonblocking(path, false, false)?;
    // Block devices stat as 0 bytes; their end is their size.
    let size = file.seek(SeekFrom::End(0))?;
    Ok(qcow2::read_header(&file, size)?)
}

/// Guesses the format from the file's first bytes, as QEMU probes: qcow2 magic, else raw.
pub(crate) fn probe_format(path: &Path) -> Result<ImageFormat, OpenError> {
    let file = open_nonblocking(path, false, false)?;
    let mut magic = [0u8; 4];
    let n = qcow2::ReadAt::read_at(&file, &mut magic, 0)?;
    Ok(if n == 4 && magic == qcow2::MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// Where QEMU looks for a backing file: an absolute name as it is, a relative one in the
/// directory of the image that names it (`bdrv_get_full_backing_filename`).
fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match image.parent() {
        Some(dir) => dir.join(name),
        None => name.to_path_buf(),
    }
}

/// Opens one layer. `format` `None` probes it.
fn open_layer(
    path: &Path,
    format: Option<ImageFormat>,
    write: bool,
    direct: bool,
) -> Result<(Layer, ImageFormat, Option<qcow2::Header>), OpenError> {
    let format = match format {
        Some(f) => f,
        None => probe_format(path)?,
    };
    let storage = StorageOpenOptions::new()
        .filename(path)
        .write(write)
        .direct(direct);
    match format {
        ImageFormat::Raw => {
            let file =
                File::from_open_file(open_nonblocking(path, write, direct)?, storage.clone())?;
            let raw = Raw::<File>::builder(file)
                .write(write)
                .storage_open_options(storage)
                .open(FileGate)?;
            Ok((Layer::Raw(raw), format, None))
        }
        ImageFormat::Qcow2 => {
            let header = read_qcow2_header(path)?;
            let file =
                File::from_open_file(open_nonblocking(path, write, direct)?, storage.clone())?;
            // No backing image: this walk opens it, after checking for loops.
            let qcow2 = Qcow2::<File>::builder(file)
                .backing(None)
                .write(write)
                .storage_open_options(storage)
                .open(FileGate)?;
            Ok((Layer::Qcow2(Box::new(qcow2)), format, Some(header)))
        }
    }
}

fn backing_format(name: Option<&str>) -> Result<Option<ImageFormat>, OpenError> {
    match name {
        None => Ok(None),
        Some("qcow2") => Ok(Some(ImageFormat::Qcow2)),
        Some("raw" | "file") => Ok(Some(ImageFormat::Raw)),
        Some(other) => Err(OpenError::BackingFormat(other.to_string())),
    }
}

/// The next image down the chain: where it is, its format, and who named it.
struct Next {
    path: PathBuf,
    format: Option<ImageFormat>,
    named_by: Option<PathBuf>,
}

/// An opened chain: the top image's access (the layers below joined in), its format, and the
/// locks on every file of the chain (held as long as this lives).
pub(crate) struct Chain {
    pub access: FormatAccess<File>,
    pub format: ImageFormat,
    pub locks: Vec<ImageLock>,
}

/// Opens the image at `path` (`format` `None`: probe it) and its whole backing chain (backing
/// files read-only). With `locking` `Some(share_rw)`, each file is locked before it is opened,
/// the top one for a writer when `write`, the rest for a reader ([`crate::lock`]); `share_rw`
/// (the device's `share-rw=on`) shares the top file's write lock if it is a raw image.
pub(crate) fn open_chain(
    path: &Path,
    format: Option<ImageFormat>,
    write: bool,
    direct: bool,
    locking: Option<bool>,
) -> Result<Chain, OpenError> {
    let show = |p: &Path| p.display().to_string();
    // (device, inode, path) of every image opened so far.
    let mut seen: Vec<(u64, u64, PathBuf)> = Vec::new();
    let mut layers = Vec::new();
    let mut next = Some(Next {
        path: path.to_path_buf(),
        format,
        named_by: None,
    });
    let mut top_format = None;
    let mut locks = Vec::new();
    while let Some(n) = next.take() {
        let in_backing = |e: OpenError| match &n.named_by {
            None => e,
            Some(by) => OpenError::Backing {
                path: show(&n.path),
                named_by: show(by),
                source: Box::new(e),
            },
        };
        if let Some(by) = &n.named_by {
            if layers.len() >= MAX_CHAIN_LEN {
                return Err(OpenError::TooLong {
                    named_by: show(by),
                    backing: show(&n.path),
                });
            }
        }
        let meta = fs::metadata(&n.path).map_err(|e| in_backing(e.into()))?;
        if let Some(kind) = unusable_type(&meta) {
            return Err(in_backing(OpenError::NotAFile(kind)));
        }
        if let Some((_, _, earlier)) = seen
            .iter()
            .find(|(dev, ino, _)| (*dev, *ino) == (meta.dev(), meta.ino()))
        {
            return Err(OpenError::Loop {
                named_by: n.named_by.as_deref().map(show).unwrap_or_default(),
                backing: show(&n.path),
                earlier: (earlier != &n.path).then(|| show(earlier)),
            });
        }
        seen.push((meta.dev(), meta.ino(), n.path.clone()));
        // Backing files are only read.
        let write = write && n.named_by.is_none();
        // The format decides the locks (a raw image's may be shared), so probe first.
        let format = match n.format {
            Some(f) => f,
            None => probe_format(&n.path).map_err(&in_backing)?,
        };
        if let Some(share_rw) = locking {
            let share_write = share_rw && n.named_by.is_none() && format == ImageFormat::Raw;
            let mode = match (write, format) {
                (false, _) => LockMode::Reader { share_write },
                (true, ImageFormat::Raw) => LockMode::RawWriter { share_write },
                (true, _) => LockMode::Writer,
            };
            locks.push(ImageLock::acquire(&n.path, mode).map_err(|e| in_backing(e.into()))?);
        }
        let (layer, format, header) =
            open_layer(&n.path, Some(format), write, direct).map_err(&in_backing)?;
        top_format.get_or_insert(format);
        layers.push(layer);
        if let Some(h) = header {
            if let Some(name) = h.backing_file.filter(|name| !name.is_empty()) {
                next = Some(Next {
                    path: resolve_backing(&n.path, &name),
                    format: backing_format(h.backing_format.as_deref()).map_err(&in_backing)?,
                    named_by: Some(n.path.clone()),
                });
            }
        }
    }
    // Join bottom-up: each qcow2 layer reads what it lacks from the one below.
    let mut below: Option<FormatAccess<File>> = None;
    while let Some(layer) = layers.pop() {
        below = Some(match layer {
            Layer::Raw(raw) => FormatAccess::new(raw),
            Layer::Qcow2(mut qcow2) => {
                qcow2.set_backing(below.take());
                FormatAccess::new(*qcow2)
            }
        });
    }
    match (below, top_format) {
        (Some(access), Some(format)) => Ok(Chain {
            access,
            format,
            locks,
        }),
        _ => Err(io::Error::other("no image opened").into()),
    }
}
