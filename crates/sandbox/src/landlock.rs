//! Landlock (where the kernel has it): which paths each thread may still open. Applied per thread
//! at [`crate::enter`], before its seccomp filter, like the filters: threads other than the main
//! thread may open nothing at all; the main thread only the paths the command line names
//! ([`PathRule`], gathered by crates/vmm/src/sandbox.rs). Files opened before (images, /dev/kvm,
//! firmware) stay usable: Landlock checks opens, not fds already held.

use crate::SandboxError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

// include/uapi/linux/landlock.h
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What a [`PathRule`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read the file (a kernel, firmware, a read-only image).
    ReadFile,
    /// Read and write the file (an image, a device node).
    ReadWriteFile,
    /// Anything beneath the directory (create, remove, rename, read, write): where rvmm's
    /// sockets, pid file and outputs live, and where QMP may name files.
    Dir,
}

/// A path the main thread may still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: PathBuf,
    pub access: Access,
}

/// Whether Landlock is in force, for the log and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Off (`-sandbox off` or `landlock=off`).
    Off,
    /// The kernel has no Landlock (or it is disabled): seccomp only.
    Unavailable,
    /// In force with this ABI version.
    Abi(i32),
}

struct Rulesets {
    /// Threads that open nothing.
    none: OwnedFd,
    /// The main thread.
    main: OwnedFd,
}

static RULESETS: OnceLock<Rulesets> = OnceLock::new();

fn abi() -> i32 {
    // SAFETY: the version query takes no pointer.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        ) as i32
    }
}

/// Every filesystem right this ABI knows (Landlock refuses bits it does not know).
fn handled(abi: i32) -> u64 {
    let mut all = (1u64 << 13) - 1;
    if abi >= 2 {
        all |= 1 << 13; // REFER
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

fn create(handled: u64) -> std::io::Result<OwnedFd> {
    let attr = RulesetAttr {
        handled_access_fs: handled,
    };
    // SAFETY: attr lives across the call and its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn add_rule(ruleset: &OwnedFd, rule: &PathRule, handled: u64) -> Result<(), SandboxError> {
    let path = std::ffi::CString::new(rule.path.as_os_str().as_encoded_bytes())
        .map_err(|_| SandboxError::Landlock(format!("{}: NUL in path", rule.path.display())))?;
    // SAFETY: open(O_PATH) of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        // A path that does not exist (an output not written yet) has nothing to allow.
        return Ok(());
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file_rights = match rule.access {
        Access::ReadFile => READ_FILE,
        Access::ReadWriteFile => READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV,
        Access::Dir => handled & !EXECUTE,
    };
    let attr = PathBeneathAttr {
        allowed_access: file_rights & handled,
        parent_fd: fd.as_raw_fd(),
    };
    // SAFETY: attr lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if rc < 0 {
        return Err(SandboxError::Landlock(format!(
            "{}: {}",
            rule.path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Build the rulesets (once, on the main thread). Returns what is in force.
pub fn restrict_paths(rules: &[PathRule]) -> Result<LandlockStatus, SandboxError> {
    let abi = abi();
    if abi < 1 {
        return Ok(LandlockStatus::Unavailable);
    }
    let handled = handled(abi);
    let io = |e: std::io::Error| SandboxError::Landlock(e.to_string());
    let none = create(handled).map_err(io)?;
    let main = create(handled).map_err(io)?;
    for rule in rules {
        add_rule(&main, rule, handled)?;
    }
    let _ = RULESETS.set(Rulesets { none, main });
    Ok(LandlockStatus::Abi(abi))
}

/// Restrict the calling thread (nothing if [`restrict_paths`] was not called).
pub(crate) fn enter(main: bool) -> Result<(), SandboxError> {
    let Some(sets) = RULESETS.get() else {
        return Ok(());
    };
    let fd = if main { &sets.main } else { &sets.none };
    // SAFETY: plain prctl; Landlock needs no_new_privs (the seccomp filter sets it too).
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    // SAFETY: restrict_self on a ruleset fd we own.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0u32) };
    if rc < 0 {
        return Err(SandboxError::Landlock(format!(
            "restrict_self: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
