//! Advisory image locks, taken the way QEMU's file-posix driver takes them, so that rvmm and
//! QEMU (qemu-system, qemu-img, qemu-io) keep each other off an image in use.
//!
//! QEMU 7.2 (block/file-posix.c, `raw_apply_lock_bytes` and `raw_check_lock_bytes`) maps each
//! block permission bit `i` (include/block/block-common.h: consistent read 0, write 1, write
//! unchanged 2, resize 3) to two bytes of the image file, locked with open file description
//! (OFD) locks, always as read (shared) locks:
//!
//! - byte `100 + i` while the user holds permission `i`;
//! - byte `200 + i` while the user does not let others hold permission `i`.
//!
//! Before it counts as holding them, a user tests (F_OFD_GETLK for a write lock, so any other
//! holder shows up) byte `200 + i` for each permission it wants, and byte `100 + i` for each one
//! it does not share. A qcow2 writer takes {consistent read, write, resize} and shares
//! {consistent read, write unchanged}; a raw writer takes {consistent read, write} and shares
//! {consistent read, write unchanged, resize} (QEMU's raw driver passes the device's
//! permissions through, and a virtio-blk device lets others resize); a reader (a read-only
//! drive, a CD-ROM, a backing file, a `-snapshot` original) takes {consistent read} and shares
//! {consistent read, write unchanged}. So readers share with each other, a second writer fails
//! on byte 201 ("write"), and a reader fails on a writer's byte 101. A device's `share-rw=on`
//! adds write to what a raw image's user shares (a qcow2 image's file never: its metadata has
//! one writer, QEMU's `bdrv_default_perms_for_storage`), so raw writers with it coexist.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// QEMU's `RAW_LOCK_PERM_BASE`: byte `100 + i` is locked while permission `i` is held.
pub const LOCK_PERM_BASE: i64 = 100;
/// QEMU's `RAW_LOCK_SHARED_BASE`: byte `200 + i` is locked while permission `i` is not shared.
pub const LOCK_SHARED_BASE: i64 = 200;

/// QEMU's block permissions (`BLK_PERM_*`), by bit number, with the names its messages use.
const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];
const PERM_CONSISTENT_READ: u32 = 1 << 0;
const PERM_WRITE: u32 = 1 << 1;
const PERM_WRITE_UNCHANGED: u32 = 1 << 2;
const PERM_RESIZE: u32 = 1 << 3;
const PERM_ALL: u32 = 0xf;

/// What one image user holds and lets others hold (QEMU's `perm` and `shared_perm` on the
/// file node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Perms {
    perm: u32,
    shared: u32,
}

impl Perms {
    /// A format driver on a file it writes: it writes, may grow the file, and lets nobody else
    /// write or resize (QEMU's `bdrv_default_perms_for_storage`).
    const WRITER: Perms = Perms {
        perm: PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE,
        shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
    };
    /// A read-only user: other readers are welcome, writers are not (QEMU without share-rw).
    const READER: Perms = Perms {
        perm: PERM_CONSISTENT_READ,
        shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
    };
    /// A device writing a raw image: QEMU's raw driver passes the device's permissions to the
    /// file (`raw_child_perm`), and virtio-blk shares resize (`blkconf_apply_backend_options`
    /// with `resizable`). Measured on QEMU 7.2: bytes 100, 101, 201.
    const RAW_WRITER: Perms = Perms {
        perm: PERM_CONSISTENT_READ | PERM_WRITE,
        shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED | PERM_RESIZE,
    };

    fn of(mode: LockMode) -> Perms {
        let (perms, share_write) = match mode {
            LockMode::Reader { share_write } => (Self::READER, share_write),
            LockMode::Writer => (Self::WRITER, false),
            LockMode::RawWriter { share_write } => (Self::RAW_WRITER, share_write),
        };
        Perms {
            shared: perms.shared | if share_write { PERM_WRITE } else { 0 },
            ..perms
        }
    }
}

/// How one user uses one image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Only reads it: a read-only drive, a CD-ROM, a backing file, the image under
    /// `-snapshot`. `share_write`: a raw read-only drive whose device says `share-rw=on` lets
    /// writers in.
    Reader { share_write: bool },
    /// Writes a qcow2 image (metadata: never shared with another writer).
    Writer,
    /// Writes a raw image; `share_write` is the device's `share-rw=on`.
    RawWriter { share_write: bool },
}

/// Why an image lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another user holds what this one needs, or needs what this one holds (QEMU's text).
    #[error("Failed to get {shared}\"{perm}\" lock. Is another process using the image [{path}]?")]
    Conflict {
        /// `"shared "` when the conflict is a permission this user would not share.
        shared: &'static str,
        perm: &'static str,
        path: String,
    },
    #[error("Failed to lock byte {byte} of '{path}': {source}")]
    Lock {
        byte: i64,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("could not open '{path}' to lock it: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The locks one user holds on one image file; dropped, the descriptor closes and the kernel
/// releases them.
#[derive(Debug)]
pub struct ImageLock {
    _file: fs::File,
}

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: flock is plain data; every field this code reads is set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    // OFD locks require l_pid 0.
    fl.l_pid = 0;
    fl
}

/// Takes a shared OFD lock on one byte; never waits.
fn lock_byte(file: &fs::File, byte: i64) -> io::Result<()> {
    let fl = flock(libc::F_RDLCK, byte);
    // SAFETY: F_OFD_SETLK reads the flock structure, which lives across the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another open file description holds any lock on the byte (QEMU's
/// `qemu_lock_fd_test(fd, off, 1, true)`).
fn byte_taken(file: &fs::File, byte: i64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    // SAFETY: F_OFD_GETLK reads and rewrites the flock structure, which lives across the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn bits(set: u32) -> impl Iterator<Item = usize> {
    (0..PERM_NAMES.len()).filter(move |i| set & (1 << i) != 0)
}

impl ImageLock {
    /// Locks `path` for `mode`, as QEMU would, or says who is in the way in QEMU's words.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<Self, LockError> {
        let name = path.display().to_string();
        // Read access is all a read lock needs; O_NONBLOCK so a FIFO never stalls the open.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| LockError::Open {
                path: name.clone(),
                source,
            })?;
        let perms = Perms::of(mode);
        let lock_err = |byte, source| LockError::Lock {
            byte,
            path: name.clone(),
            source,
        };
        // raw_apply_lock_bytes: first what this user holds, then what it keeps for itself.
        for i in bits(perms.perm) {
            let byte = LOCK_PERM_BASE + i as i64;
            lock_byte(&file, byte).map_err(|e| lock_err(byte, e))?;
        }
        for i in bits(!perms.shared & PERM_ALL) {
            let byte = LOCK_SHARED_BASE + i as i64;
            lock_byte(&file, byte).map_err(|e| lock_err(byte, e))?;
        }
        // raw_check_lock_bytes: nobody else may refuse to share what this user takes, ...
        for i in bits(perms.perm) {
            let byte = LOCK_SHARED_BASE + i as i64;
            if byte_taken(&file, byte).map_err(|e| lock_err(byte, e))? {
                return Err(LockError::Conflict {
                    shared: "",
                    perm: PERM_NAMES[i],
                    path: name,
                });
            }
        }
        // ... nor hold what it will not share.
        for i in bits(!perms.shared & PERM_ALL) {
            let byte = LOCK_PERM_BASE + i as i64;
            if byte_taken(&file, byte).map_err(|e| lock_err(byte, e))? {
                return Err(LockError::Conflict {
                    shared: "shared ",
                    perm: PERM_NAMES[i],
                    path: name,
                });
            }
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The bytes of `path` that OFD locks cover, from /proc/locks. The file is generated in
    /// pages and can skip a line while other threads take and drop locks (it failed that way
    /// once, under load), so it is read until two readings agree.
    fn locked_bytes(path: &Path) -> Vec<i64> {
        let mut last = locked_bytes_once(path);
        for _ in 0..50 {
            let now = locked_bytes_once(path);
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    fn locked_bytes_once(path: &Path) -> Vec<i64> {
        let ino = format!(":{}", fs::metadata(path).unwrap().ino());
        let mut bytes = Vec::new();
        for line in fs::read_to_string("/proc/locks").unwrap().lines() {
            let f: Vec<_> = line.split_whitespace().collect();
            if f.len() >= 8 && f[1] == "OFDLCK" && f[3] == "READ" && f[5].ends_with(&ino) {
                let (start, end): (i64, i64) = (f[6].parse().unwrap(), f[7].parse().unwrap());
                bytes.extend(start..=end);
            }
        }
        bytes.sort();
        bytes
    }

    /// No test in this binary forks while this is held, so no child holds a copy of a lock
    /// being dropped (see crate::tests::SPAWN).
    fn no_fork() -> std::sync::MutexGuard<'static, ()> {
        crate::tests::SPAWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn the_bytes_qemu_locks() {
        let _no_fork = no_fork();
        let path = std::env::temp_dir().join(format!("rvmm-lock-{}", std::process::id()));
        fs::write(&path, [0u8; 512]).unwrap();
        let writer = ImageLock::acquire(&path, LockMode::Writer).unwrap();
        assert_eq!(locked_bytes(&path), [100, 101, 103, 201, 203]);
        drop(writer);
        assert_eq!(locked_bytes(&path), [] as [i64; 0]);
        let writer = ImageLock::acquire(&path, RAW).unwrap();
        assert_eq!(locked_bytes(&path), [100, 101, 201]);
        drop(writer);
        let writer = ImageLock::acquire(&path, RAW_SHARED).unwrap();
        assert_eq!(locked_bytes(&path), [100, 101]);
        drop(writer);
        let reader = ImageLock::acquire(&path, READER).unwrap();
        assert_eq!(locked_bytes(&path), [100, 201, 203]);
        let e = ImageLock::acquire(&path, LockMode::Writer)
            .unwrap_err()
            .to_string();
        let want = format!(
            "Failed to get \"write\" lock. Is another process using the image [{}]?",
            path.display()
        );
        assert_eq!(e, want);
        drop(reader);
        fs::remove_file(&path).unwrap();
    }

    const READER: LockMode = LockMode::Reader { share_write: false };
    const RAW: LockMode = LockMode::RawWriter { share_write: false };
    const RAW_SHARED: LockMode = LockMode::RawWriter { share_write: true };

    /// share-rw=on as QEMU: raw writers that all share write coexist; one that does not share
    /// keeps the others off (and is kept off by them), in QEMU's words.
    #[test]
    fn share_rw_lets_raw_writers_coexist() {
        let _no_fork = no_fork();
        let path = std::env::temp_dir().join(format!("rvmm-lock-share-{}", std::process::id()));
        fs::write(&path, [0u8; 512]).unwrap();
        let want = |shared: &str| {
            format!(
                "Failed to get {shared}\"write\" lock. Is another process using the image [{}]?",
                path.display()
            )
        };
        let a = ImageLock::acquire(&path, RAW_SHARED).unwrap();
        let b = ImageLock::acquire(&path, RAW_SHARED).unwrap();
        // Without share-rw, the newcomer will not share the write the others hold.
        let e = ImageLock::acquire(&path, RAW).unwrap_err().to_string();
        assert_eq!(e, want("shared "));
        // A qcow2 writer never shares.
        assert!(ImageLock::acquire(&path, LockMode::Writer).is_err());
        // A reader with share-rw lets them write; without, it does not.
        let r = ImageLock::acquire(&path, LockMode::Reader { share_write: true }).unwrap();
        assert_eq!(
            ImageLock::acquire(&path, READER).unwrap_err().to_string(),
            want("shared ")
        );
        drop((a, b, r));
        // A writer without share-rw first: a share-rw writer still wants write, refused.
        let a = ImageLock::acquire(&path, RAW).unwrap();
        assert_eq!(
            ImageLock::acquire(&path, RAW_SHARED)
                .unwrap_err()
                .to_string(),
            want("")
        );
        drop(a);
        fs::remove_file(&path).unwrap();
    }
}
