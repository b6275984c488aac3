//! `-snapshot` and `snapshot=on`: the guest's writes go to a temporary qcow2 overlay, as in
//! QEMU (`bdrv_append_temp_snapshot`), and the image itself is only read.
//!
//! The overlay is an unnamed file in `$TMPDIR` (O_TMPFILE, or a file created and unlinked at
//! once where the file system lacks it), formatted by imago as qcow2 with the image's size and
//! the image as its backing file. Nothing else can open it, and it disappears when rvmm exits,
//! however it exits. Like QEMU's temporary overlay, it is never synced to stable storage.

use crate::chain::OpenError;
use crate::ImageFormat;
use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder,
    StorageOpenOptions,
};
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens a new file in `dir` that has no name.
fn unnamed_file(dir: &Path) -> io::Result<fs::File> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
    {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        other => return other,
    }
    // No O_TMPFILE here: a fresh name, unlinked as soon as it is open.
    for n in 0..100u32 {
        let path = dir.join(format!("rvmm-snapshot-{}-{n}.qcow2", std::process::id()));
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => {
                fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free temporary file name"))
}

/// The temporary overlay over `below` (the image `path`, of `format`), in `dir`.
pub(crate) fn temporary_overlay(
    below: FormatAccess<File>,
    path: &Path,
    format: ImageFormat,
    dir: &Path,
) -> Result<FormatAccess<File>, OpenError> {
    let size = below.size();
    let file = unnamed_file(dir)?;
    let storage = File::from_open_file(file, StorageOpenOptions::new().write(true))?;
    // The header names the image (absolute) for whoever inspects the file through /proc; rvmm
    // joins the layers itself.
    let backing: PathBuf = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut qcow2 = Qcow2::<File>::create_builder(storage)
        .size(size)
        .backing(backing.display().to_string(), format.name().to_string())
        .create_open(DenyImplicitOpenGate::default(), |f| {
            Ok(Qcow2::<File>::builder(f).backing(None).write(true))
        })?;
    qcow2.set_backing(Some(below));
    Ok(FormatAccess::new(qcow2))
}
