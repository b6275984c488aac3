//! `-daemonize` and `-pidfile`, as QEMU's `os_daemonize` / `os_setup_post` / `qemu_write_pidfile`.
//!
//! Daemonizing forks before anything else exists: KVM ties a VM to the process that created it
//! (a forked child cannot use its parent's VM), and forking a threaded process is unsafe. The
//! parent waits on a pipe and exits 0 only when the child reports it is set up (QMP listening,
//! vCPUs started), or 1 if the child fails first. The child starts a new session, forks again
//! so it can never reacquire a terminal, and once ready moves to `/` with stdio on /dev/null.

use crate::VmmError;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

fn os_err(what: &'static str) -> VmmError {
    VmmError::Io {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// The daemon's end of the start-up pipe.
pub struct Daemon {
    pipe: File,
}

/// Fork into the background. Returns in the daemon; the original process exits.
pub fn daemonize() -> Result<Daemon, VmmError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("-daemonize: pipe"));
    }
    // SAFETY: pipe2 just returned these descriptors and nothing else owns them.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: rvmm is still single-threaded here (nothing has spawned a thread yet).
    match unsafe { libc::fork() } {
        -1 => return Err(os_err("-daemonize: fork")),
        0 => {}
        _ => {
            drop(write_end);
            wait_for_child(read_end);
        }
    }
    drop(read_end);
    // SAFETY: setsid has no memory-safety preconditions; failure only means already a leader.
    unsafe { libc::setsid() };
    // SAFETY: still single-threaded (see above).
    match unsafe { libc::fork() } {
        -1 => return Err(os_err("-daemonize: fork")),
        // The session leader exits; the grandchild keeps the pipe.
        0 => {}
        // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to the daemon.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o027) };
    Ok(Daemon { pipe: write_end })
}

/// In the original process: exit 0 once the daemon reports success, 1 otherwise (QEMU's rule).
fn wait_for_child(mut pipe: File) -> ! {
    let mut status = [1u8];
    let ok = matches!(pipe.read(&mut status), Ok(1)) && status[0] == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

impl Daemon {
    /// Set-up is complete: let the original process exit 0, then detach from the terminal.
    pub fn ready(mut self) -> Result<(), VmmError> {
        std::env::set_current_dir("/").map_err(|source| VmmError::Io {
            what: "-daemonize: chdir /",
            source,
        })?;
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|source| VmmError::Io {
                what: "-daemonize: open /dev/null",
                source,
            })?;
        for fd in 0..3 {
            // SAFETY: both descriptors are open; dup2 replaces stdio atomically.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(os_err("-daemonize: dup2"));
            }
        }
        self.pipe.write_all(&[0]).map_err(|source| VmmError::Io {
            what: "-daemonize: report ready",
            source,
        })?;
        drop(OwnedFd::from(self.pipe));
        Ok(())
    }
}

/// A pidfile removed when dropped (QEMU 7.2 unlinks it at exit too).
pub struct Pidfile(PathBuf);

impl Pidfile {
    pub fn create(path: &Path) -> Result<Self, VmmError> {
        let err = |source| VmmError::Pidfile {
            path: path.display().to_string(),
            source,
        };
        // Absolute, so removal still works after a daemon's chdir("/").
        let abs = std::path::absolute(path).map_err(err)?;
        std::fs::write(&abs, format!("{}\n", std::process::id())).map_err(err)?;
        Ok(Self(abs))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Someone else may have removed it; nothing to do then.
        let _ = std::fs::remove_file(&self.0);
    }
}
