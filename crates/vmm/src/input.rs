//! Reading the files a command line names (kernel, initrds, `-fw_cfg` files, option ROMs) without
//! hanging or running out of memory on whatever the user gives: the file type is checked with
//! `stat` before anything is opened (opening a FIFO blocks until a writer comes), and the size
//! before anything is read (`/dev/zero` never ends).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Why an input file was refused; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("could not load {what} '{}': {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not load {what} '{}': it is {kind}, not a regular file", path.display())]
    NotRegular {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("could not load {what} '{}': it is {size} bytes, more than the {limit} bytes {why}", path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: u64,
        limit: u64,
        why: &'static str,
    },
}

/// What a non-regular file is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// The contents of the regular file `path` (the `what` of messages, e.g. "kernel"), refused if
/// it is larger than `limit` bytes (`why`: what the limit is, e.g. "of guest RAM").
pub fn read_input(
    what: &'static str,
    path: &Path,
    limit: u64,
    why: &'static str,
) -> Result<Vec<u8>, InputError> {
    let io = |source| InputError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size| InputError::TooLarge {
        what,
        path: path.to_path_buf(),
        size,
        limit,
        why,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(InputError::NotRegular {
            what,
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let file = File::open(path).map_err(io)?;
    // The file may have been replaced or grown since the stat: never read past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_or_too_large() {
        let dir = std::env::temp_dir().join(format!("rvmm-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = std::time::Instant::now();
        let e = read_input("kernel", &fifo, 1 << 20, "of guest RAM").unwrap_err();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "blocked"
        );
        assert!(
            e.to_string().ends_with("it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = read_input("initrd", Path::new("/dev/zero"), 1 << 20, "of guest RAM").unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read_input("initrd", &dir, 1 << 20, "of guest RAM").unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let file = dir.join("big");
        std::fs::write(&file, vec![7u8; 4097]).unwrap();
        let e = read_input("initrd", &file, 4096, "of guest RAM").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "could not load initrd '{}': it is 4097 bytes, more than the 4096 bytes of guest RAM",
                file.display()
            )
        );
        assert_eq!(
            read_input("initrd", &file, 4097, "of guest RAM")
                .unwrap()
                .len(),
            4097
        );
        let e = read_input("kernel", &dir.join("missing"), 1, "x").unwrap_err();
        assert!(
            matches!(e, InputError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
