//! Disk image backends for virtio-blk: raw and qcow2 (with backing files), through imago.
//!
//! A [`Disk`] is a byte-addressed image of fixed size. Every request is checked against the
//! size here, so a guest asking past the end gets an error, never a short or wild access.

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, StorageOpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// qcow2 files start with "QFI\xfb" (qcow2 spec, header offset 0).
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Errors opening or using a disk image.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("could not open disk image '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
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
        source: std::io::Error,
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
}

/// Guess the format from the file's first bytes (QEMU's probing: qcow2 magic, else raw).
pub fn probe_format(path: &Path) -> std::io::Result<ImageFormat> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(if n == 4 && magic == QCOW2_MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// An open disk image.
pub struct Disk {
    access: FormatAccess<File>,
    format: ImageFormat,
    readonly: bool,
    size: u64,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
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
        let (format, warning) = match opts.format {
            Some(f) => (f, None),
            None => {
                let f = probe_format(&opts.path).map_err(open_err)?;
                let warning = format!(
                    "Image format was not specified for '{name}' and probing guessed {}.\n\
                     Automatically detecting the format is dangerous for raw images.\n\
                     Specify the format explicitly (format=raw or format=qcow2).",
                    f.name()
                );
                (f, Some(warning))
            }
        };
        let storage = StorageOpenOptions::new().direct(opts.direct);
        let writable = !opts.readonly;
        let access = match format {
            ImageFormat::Raw => FormatAccess::new(
                Raw::<File>::builder_path(&opts.path)
                    .write(writable)
                    .storage_open_options(storage)
                    .open(PermissiveImplicitOpenGate::default())
                    .map_err(open_err)?,
            ),
            ImageFormat::Qcow2 => FormatAccess::new(
                // Backing files are opened read-only by imago, as named in the image header.
                Qcow2::<File>::builder_path(&opts.path)
                    .write(writable)
                    .storage_open_options(storage)
                    .open(PermissiveImplicitOpenGate::default())
                    .map_err(open_err)?,
            ),
        };
        let size = access.size();
        Ok((
            Self {
                access,
                format,
                readonly: opts.readonly,
                size,
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

    fn io_err(
        what: &'static str,
        offset: u64,
        len: u64,
    ) -> impl FnOnce(std::io::Error) -> BlockError {
        move |source| BlockError::Io {
            what,
            offset,
            len,
            source,
        }
    }

    fn check_write(&self, what: &'static str, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.readonly {
            return Err(BlockError::ReadOnly);
        }
        self.check(what, offset, len)
    }

    /// Fill `buf` from the disk at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let len = buf.len() as u64;
        self.check("read", offset, len)?;
        self.access
            .read(buf, offset)
            .map_err(Self::io_err("read", offset, len))
    }

    /// Write `buf` to the disk at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        let len = buf.len() as u64;
        self.check_write("write", offset, len)?;
        self.access
            .write(buf, offset)
            .map_err(Self::io_err("write", offset, len))
    }

    /// Make `len` bytes at `offset` read as zeroes; `unmap` may free the space.
    pub fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), BlockError> {
        self.check_write("write-zeroes", offset, len)?;
        let res = if unmap {
            self.access.discard_to_zero(offset, len)
        } else {
            self.access.write_zeroes(offset, len)
        };
        res.map_err(Self::io_err("write-zeroes", offset, len))
    }

    /// Tell the image `len` bytes at `offset` are unused; their contents become undefined.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.check_write("discard", offset, len)?;
        self.access
            .discard_to_any(offset, len)
            .map_err(Self::io_err("discard", offset, len))
    }

    /// Write metadata and data through to stable storage.
    pub fn flush(&self) -> Result<(), BlockError> {
        if self.readonly {
            return Ok(());
        }
        // imago's flush writes its cached metadata back; sync is the fdatasync.
        self.access
            .flush()
            .and_then(|()| self.access.sync())
            .map_err(Self::io_err("flush", 0, self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvmm-block-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("disk.img")
    }

    #[test]
    fn raw_read_write_bounds_and_probe() {
        let path = temp("raw");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let (mut disk, warning) = Disk::open(&DiskOptions {
            path: path.clone(),
            format: None,
            readonly: false,
            direct: false,
        })
        .unwrap();
        assert!(warning.unwrap().contains("probing guessed raw"));
        assert_eq!(disk.size(), 8192);
        disk.write(&[0xab; 512], 512).unwrap();
        let mut buf = [0u8; 512];
        disk.read(&mut buf, 512).unwrap();
        assert_eq!(buf, [0xab; 512]);
        assert!(matches!(
            disk.read(&mut buf, 8192 - 511),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk.write(&buf, u64::MAX - 10),
            Err(BlockError::OutOfRange { .. })
        ));
        disk.write_zeroes(512, 512, false).unwrap();
        disk.read(&mut buf, 512).unwrap();
        assert_eq!(buf, [0; 512]);
        disk.flush().unwrap();
        drop(disk);
        let (disk, _) = Disk::open(&DiskOptions {
            path: path.clone(),
            format: Some(ImageFormat::Raw),
            readonly: true,
            direct: false,
        })
        .unwrap();
        assert!(matches!(disk.write(&buf, 0), Err(BlockError::ReadOnly)));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Disk::open(&DiskOptions {
            path: "/nonexistent/x.img".into(),
            format: Some(ImageFormat::Raw),
            readonly: false,
            direct: false,
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.img"), "{err}");
    }
}
