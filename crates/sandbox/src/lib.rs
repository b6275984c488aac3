//! rvmm's sandbox (docs/SANDBOX.md): a seccomp allow-list per thread kind, installed by each
//! thread on itself at its start (no TSYNC), a SIGSYS handler that names the thread and the
//! refused call, a launcher process for the commands QMP `migrate exec:` runs, and Landlock.
//!
//! ```text
//! init (main, before any thread) -> threads start with spawn(kind, ..) -> enter(kind)
//! main's own filter goes in last (enter(Main)), just before the guest runs
//! ```
//!
//! Filters stack: a thread made by a filtered thread keeps its parent's filter. So threads that
//! filtered threads need (virtio workers started when the guest sets DRIVER_OK, VNC clients) are
//! made by the spawner thread, whose list is the union of theirs.

mod filter;
mod landlock;
pub mod launcher;
mod lists;
mod spawner;
pub mod syscalls;
mod trap;

pub use landlock::{restrict_paths, Access, LandlockStatus, PathRule};

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

/// Errors setting the sandbox up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("-sandbox: cannot build the {kind} filter: {source}")]
    Compile {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("-sandbox: cannot install the {kind} filter: {source}")]
    Install {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("-sandbox: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("-sandbox: the {kind} filter: {message}")]
    Filter { kind: &'static str, message: String },
    #[error("-sandbox: Landlock: {0}")]
    Landlock(String),
}

/// What a filter does with a call outside its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No filters (`-sandbox off`).
    Off,
    /// SIGSYS: the process ends with a message naming the thread and the call (the default).
    Kill,
    /// The call goes through and the kernel logs it (`-sandbox on,log=on`, or
    /// `RVMM_SECCOMP=log`): for regenerating the lists (docs/SANDBOX.md).
    Log,
}

/// The kinds of threads rvmm runs; each has its own list ([`lists`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The VMM thread once the guest runs: event loop, QMP, signals, console, migration, exit.
    Main,
    /// One per vCPU: KVM_RUN and device emulation.
    Vcpu,
    /// A virtio device's worker (queues, block I/O, the network backend).
    Worker,
    /// The VNC server: the listener, each client and its writer.
    Vnc,
    /// The VNC display refresh.
    VncDisplay,
    /// Watches a helper process (passt): its stderr and its exit.
    Passt,
    /// Makes the threads filtered threads ask for.
    Spawner,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 7] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Worker,
        ThreadKind::Vnc,
        ThreadKind::VncDisplay,
        ThreadKind::Passt,
        ThreadKind::Spawner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Worker => "worker",
            ThreadKind::Vnc => "vnc",
            ThreadKind::VncDisplay => "vnc-display",
            ThreadKind::Passt => "passt",
            ThreadKind::Spawner => "spawner",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The system calls this kind may make, by name (docs/SANDBOX.md).
    pub fn syscalls(self) -> Vec<&'static str> {
        lists::syscalls(self)
    }
}

static MODE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// Whether this thread runs under a filter (so threads it needs come from the spawner).
    static FILTERED: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is the spawner (which makes threads itself).
    static IS_SPAWNER: Cell<bool> = const { Cell::new(false) };
}

/// The sandbox mode in force ([`Mode::Off`] until [`init`]).
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Kill,
        2 => Mode::Log,
        _ => Mode::Off,
    }
}

/// Set up the sandbox for this process: the mode each kind's filter is compiled for (on its
/// first thread), the SIGSYS handler and the spawner. Call once on the main thread, before other threads exist
/// (after the terminating signals are blocked, so the spawner inherits the mask).
pub fn init(mode: Mode) -> Result<(), SandboxError> {
    if mode == Mode::Off {
        return Ok(());
    }
    filter::prepare(mode);
    trap::install()?;
    MODE.store(if mode == Mode::Kill { 1 } else { 2 }, Ordering::SeqCst);
    spawner::start()?;
    Ok(())
}

/// Install `kind`'s filter on the calling thread (nothing when the sandbox is off). Threads made
/// with [`spawn`] call it themselves; the main thread calls it with [`ThreadKind::Main`] once
/// set-up is over.
pub fn enter(kind: ThreadKind) -> Result<(), SandboxError> {
    if mode() == Mode::Off {
        return Ok(());
    }
    trap::set_thread(kind);
    landlock::enter(kind == ThreadKind::Main)?;
    filter::install(kind)?;
    FILTERED.with(|f| f.set(true));
    Ok(())
}

/// [`enter`] for a thread's first line: a thread that cannot install its filter must not go on
/// unfiltered, so the process stops with the reason.
fn enter_or_die(kind: ThreadKind) {
    if let Err(e) = enter(kind) {
        eprintln!("rvmm: {e}");
        std::process::exit(2);
    }
}

/// Start a thread named `name` that installs `kind`'s filter before running `f`. From a filtered
/// thread, the spawner makes it (so it does not inherit the caller's filter).
pub fn spawn<F, T>(kind: ThreadKind, name: String, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    on_spawner(move || {
        std::thread::Builder::new().name(name).spawn(move || {
            enter_or_die(kind);
            f()
        })
    })
}

/// Run `f` where new threads get only their own filter: here on an unfiltered thread, else on
/// the spawner (the caller waits). For set-up that must happen with the thread's creation
/// (a worker's epoll and eventfds).
pub fn on_spawner<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if !FILTERED.with(Cell::get) || IS_SPAWNER.with(Cell::get) {
        return f();
    }
    spawner::run(f)
}
