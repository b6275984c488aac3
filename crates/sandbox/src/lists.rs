//! The allow-list of each thread kind, as measured (docs/SANDBOX.md: `scripts/seccomp-profile.py`
//! over strace logs of the test suite, then the suite in `-sandbox on,log=on` mode). A name here
//! is a system call the kind was seen to make after its filter went in; nothing is added "just
//! in case". `ioctl` is allowed only with the request numbers listed per kind.

use crate::ThreadKind;

/// Calls every thread makes after its start: the allocator (mmap, munmap, mprotect, madvise),
/// locks and channels (futex), a thread's end (sigaltstack, rt_sigprocmask, exit) and the
/// SIGSYS message (write, exit_group).
const COMMON: &[&str] = &[
    // malloc: a thread that shares glibc's main arena (more threads than arenas: -smp 288)
    // grows it with brk.
    "brk",
    "futex",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "sigaltstack",
    "rt_sigprocmask",
    "exit",
    "exit_group",
    "write",
    "close",
    "fcntl",
    "sched_yield",
    "gettid",
    // abort() after a panic (release builds) and the vCPU kick: raise a signal in this process
    // only (tgkill's first argument must be rvmm's pid, crates/sandbox/src/filter.rs).
    "getpid",
    "tgkill",
];

/// Disk I/O (IDE/AHCI on the vCPU, virtio-blk on its worker): raw and qcow2 (imago grows a
/// qcow2 with ftruncate and writes zeroes or discards with fallocate).
const DISK_IO: &[&str] = &[
    "preadv",
    "pwritev",
    "pread64",
    "pwrite64",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
];

const VCPU: &[&str] = &[
    "ioctl",
    "read",
    "rt_sigreturn",
    "poll",
    "timerfd_settime",
    "sendto",
    "clock_nanosleep",
];

const WORKER: &[&str] = &[
    // A stream back-end whose peer hung up (passt died) takes its socket out of the worker's
    // epoll; found by the usernet Linux test, which kills passt under a running driver.
    "epoll_ctl",
    "epoll_wait",
    "ioctl",
    "read",
    "getrandom",
    "poll",
    "recvfrom",
    "sendmsg",
    "sendto",
    "clock_nanosleep",
];

const VNC: &[&str] = &[
    "accept4",
    "clock_nanosleep",
    "ioctl",
    "read",
    "recvfrom",
    "sendto",
    "setsockopt",
    "shutdown",
];

const VNC_DISPLAY: &[&str] = &["clock_nanosleep", "ioctl"];

const PASST: &[&str] = &[
    "read", "wait4",
    // Waiting for passt's pid on the start-up pipe, and killing a passt that never got ready.
    "poll", "ppoll", "kill",
];

/// The spawner makes the threads that filtered threads ask for (workers, VNC clients), and
/// sets up a worker's epoll and eventfds for it.
const SPAWNER: &[&str] = &[
    // The new thread restricts itself (Landlock, then its filter) on top of the spawner's.
    "seccomp",
    "landlock_restrict_self",
    "clone3",
    "clone",
    "sched_getaffinity",
    "prctl",
    "epoll_create1",
    "epoll_ctl",
    "eventfd2",
    "set_robust_list",
    "rseq",
];

/// The VMM thread after set-up: the event loop (QMP, signals, the console), snapshots and
/// migration, and the end of the VM (joining threads, flushing disks, reports).
const MAIN: &[&str] = &[
    "accept4",
    // `migrate-incoming unix:|tcp:` listens at run time.
    "bind",
    "listen",
    "brk",
    "connect",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "eventfd2",
    "fstat",
    "fsync",
    "fdatasync",
    "ftruncate",
    "getpid",
    "getrandom",
    "getsockname",
    "ioctl",
    "lseek",
    "newfstatat",
    "openat",
    "pipe2",
    "poll",
    "pread64",
    "preadv",
    "pwrite64",
    "pwritev",
    "read",
    "recvfrom",
    "recvmsg",
    "rename",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "statx",
    "timerfd_settime",
    "unlink",
    "wait4",
    "clock_nanosleep",
    "sched_getaffinity",
];

/// The syscalls of `kind`, the common ones included, sorted and without repeats.
pub fn syscalls(kind: ThreadKind) -> Vec<&'static str> {
    let own: Vec<&'static str> = match kind {
        ThreadKind::Main => [MAIN, DISK_IO].concat(),
        ThreadKind::Vcpu => [VCPU, DISK_IO].concat(),
        ThreadKind::Worker => [WORKER, DISK_IO].concat(),
        ThreadKind::Vnc => VNC.to_vec(),
        ThreadKind::VncDisplay => VNC_DISPLAY.to_vec(),
        ThreadKind::Passt => PASST.to_vec(),
        // A thread inherits the spawner's filter and adds its own: the spawner allows
        // everything its children do.
        ThreadKind::Spawner => [
            SPAWNER.to_vec(),
            syscalls(ThreadKind::Worker),
            syscalls(ThreadKind::Vnc),
            // passt's start-up thread asks for its reaper and stderr threads once passt is up.
            syscalls(ThreadKind::Passt),
        ]
        .concat(),
    };
    let mut all: Vec<&str> = COMMON.iter().copied().chain(own).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// `_IOC(dir, 0xAE, nr, size)`: a KVM ioctl request number (include/uapi/asm-generic/ioctl.h).
const fn kvm(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAE << 8) | nr
}
const NONE: u64 = 0;
const W: u64 = 1;
const R: u64 = 2;
const RW: u64 = 3;

use kvm_bindings as kb;
use std::mem::size_of;

/// The KVM ioctls a vCPU thread makes: KVM_RUN, register access for reset, S3 wake-up and
/// snapshots, and the VM-wide calls device emulation makes from the vCPU (memory slots for BAR
/// moves, interrupt routing, ioeventfds, the VGA window's dirty log).
pub const VCPU_IOCTLS: &[(&str, u64)] = &[
    ("KVM_RUN", kvm(NONE, 0x80, 0)),
    ("KVM_GET_REGS", kvm(R, 0x81, size_of::<kb::kvm_regs>())),
    ("KVM_SET_REGS", kvm(W, 0x82, size_of::<kb::kvm_regs>())),
    ("KVM_GET_SREGS", kvm(R, 0x83, size_of::<kb::kvm_sregs>())),
    ("KVM_SET_SREGS", kvm(W, 0x84, size_of::<kb::kvm_sregs>())),
    (
        "KVM_TRANSLATE",
        kvm(RW, 0x85, size_of::<kb::kvm_translation>()),
    ),
    ("KVM_GET_MSRS", kvm(RW, 0x88, size_of::<kb::kvm_msrs>())),
    ("KVM_SET_MSRS", kvm(W, 0x89, size_of::<kb::kvm_msrs>())),
    ("KVM_GET_FPU", kvm(R, 0x8c, size_of::<kb::kvm_fpu>())),
    ("KVM_SET_FPU", kvm(W, 0x8d, size_of::<kb::kvm_fpu>())),
    (
        "KVM_GET_LAPIC",
        kvm(R, 0x8e, size_of::<kb::kvm_lapic_state>()),
    ),
    (
        "KVM_SET_LAPIC",
        kvm(W, 0x8f, size_of::<kb::kvm_lapic_state>()),
    ),
    (
        "KVM_GET_MP_STATE",
        kvm(R, 0x98, size_of::<kb::kvm_mp_state>()),
    ),
    (
        "KVM_SET_MP_STATE",
        kvm(W, 0x99, size_of::<kb::kvm_mp_state>()),
    ),
    (
        "KVM_GET_VCPU_EVENTS",
        kvm(R, 0x9f, size_of::<kb::kvm_vcpu_events>()),
    ),
    (
        "KVM_SET_VCPU_EVENTS",
        kvm(W, 0xa0, size_of::<kb::kvm_vcpu_events>()),
    ),
    (
        "KVM_GET_DEBUGREGS",
        kvm(R, 0xa1, size_of::<kb::kvm_debugregs>()),
    ),
    (
        "KVM_SET_DEBUGREGS",
        kvm(W, 0xa2, size_of::<kb::kvm_debugregs>()),
    ),
    ("KVM_GET_XSAVE", kvm(R, 0xa4, size_of::<kb::kvm_xsave>())),
    ("KVM_SET_XSAVE", kvm(W, 0xa5, size_of::<kb::kvm_xsave>())),
    ("KVM_GET_XCRS", kvm(R, 0xa6, size_of::<kb::kvm_xcrs>())),
    ("KVM_SET_XCRS", kvm(W, 0xa7, size_of::<kb::kvm_xcrs>())),
    ("KVM_GET_TSC_KHZ", kvm(NONE, 0xa3, 0)),
    ("KVM_KVMCLOCK_CTRL", kvm(NONE, 0xad, 0)),
    ("KVM_CHECK_EXTENSION", kvm(NONE, 0x03, 0)),
    (
        "KVM_SET_USER_MEMORY_REGION",
        kvm(W, 0x46, size_of::<kb::kvm_userspace_memory_region>()),
    ),
    (
        "KVM_GET_DIRTY_LOG",
        kvm(W, 0x42, size_of::<kb::kvm_dirty_log>()),
    ),
    (
        "KVM_SET_GSI_ROUTING",
        kvm(W, 0x6a, size_of::<kb::kvm_irq_routing>()),
    ),
    ("KVM_IRQ_LINE", kvm(W, 0x61, size_of::<kb::kvm_irq_level>())),
    (
        "KVM_IRQ_LINE_STATUS",
        kvm(RW, 0x67, size_of::<kb::kvm_irq_level>()),
    ),
    ("KVM_SIGNAL_MSI", kvm(W, 0xa5, size_of::<kb::kvm_msi>())),
    ("KVM_IRQFD", kvm(W, 0x76, size_of::<kb::kvm_irqfd>())),
    (
        "KVM_IOEVENTFD",
        kvm(W, 0x79, size_of::<kb::kvm_ioeventfd>()),
    ),
    // virtio-net on a tap sets the offloads the driver acked when it activates the device.
    ("TUNSETOFFLOAD", TUNSETOFFLOAD),
];

/// `_IOW('T', 208, unsigned int)` (include/uapi/linux/if_tun.h).
const TUNSETOFFLOAD: u64 = 0x4004_54d0;

/// The VGA refresh reads the dirty log of the VGA window.
pub const VNC_DISPLAY_IOCTLS: &[(&str, u64)] = &[(
    "KVM_GET_DIRTY_LOG",
    kvm(W, 0x42, size_of::<kb::kvm_dirty_log>()),
)];

/// Rust's `set_nonblocking` on sockets.
pub const FIONBIO: u64 = 0x5421;
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TIOCGWINSZ: u64 = 0x5413;

pub const VNC_IOCTLS: &[(&str, u64)] = &[("FIONBIO", FIONBIO)];

/// A virtio-pci worker brings a vector's MSI route up to date the first time the vector fires
/// after the guest changed its MSI-X entry (crates/devices/src/pci/msix.rs).
pub const WORKER_IOCTLS: &[(&str, u64)] = &[(
    "KVM_SET_GSI_ROUTING",
    kvm(W, 0x6a, size_of::<kb::kvm_irq_routing>()),
)];

/// The spawner's threads' requests (workers and VNC).
pub const SPAWNER_IOCTLS: &[(&str, u64)] = &[
    ("FIONBIO", FIONBIO),
    (
        "KVM_SET_GSI_ROUTING",
        kvm(W, 0x6a, size_of::<kb::kvm_irq_routing>()),
    ),
];

/// The VMM thread: any KVM ioctl (matched on the type byte, 0xAE) and the terminal and socket
/// calls of the console and QMP.
pub const MAIN_IOCTLS: &[(&str, u64)] = &[
    ("FIONBIO", FIONBIO),
    ("TUNSETOFFLOAD", TUNSETOFFLOAD),
    ("TCGETS", TCGETS),
    ("TCSETS", TCSETS),
    ("TCSETSW", TCSETSW),
    ("TIOCGWINSZ", TIOCGWINSZ),
];

/// The ioctl requests `kind` may make (empty: none); `true` when any KVM ioctl is allowed too.
pub fn ioctls(kind: ThreadKind) -> (&'static [(&'static str, u64)], bool) {
    match kind {
        ThreadKind::Vcpu => (VCPU_IOCTLS, false),
        ThreadKind::VncDisplay => (VNC_DISPLAY_IOCTLS, false),
        ThreadKind::Vnc => (VNC_IOCTLS, false),
        ThreadKind::Spawner => (SPAWNER_IOCTLS, false),
        ThreadKind::Main => (MAIN_IOCTLS, true),
        ThreadKind::Worker => (WORKER_IOCTLS, false),
        ThreadKind::Passt => (&[], false),
    }
}

/// The name of a known ioctl request, for the SIGSYS message.
pub fn ioctl_name(request: u64) -> Option<&'static str> {
    VCPU_IOCTLS
        .iter()
        .chain(MAIN_IOCTLS)
        .find(|(_, n)| *n == request & 0xffff_ffff)
        .map(|(name, _)| *name)
}
