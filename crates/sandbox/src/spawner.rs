//! The spawner thread: runs closures for filtered threads that need a new thread, so the new
//! thread inherits only the spawner's filter (a superset of its own) and then installs its own.

use crate::{SandboxError, ThreadKind};
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

pub(crate) fn start() -> Result<(), SandboxError> {
    if JOBS.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = channel::<Job>();
    std::thread::Builder::new()
        .name("rvmm-spawner".into())
        .spawn(move || {
            crate::IS_SPAWNER.with(|s| s.set(true));
            crate::enter_or_die(ThreadKind::Spawner);
            for job in rx {
                job();
            }
        })
        .map_err(|source| SandboxError::Io {
            what: "start the spawner thread",
            source,
        })?;
    let _ = JOBS.set(Mutex::new(tx));
    Ok(())
}

/// Run `f` on the spawner and wait for its result.
pub(crate) fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(jobs) = JOBS.get() else {
        return f();
    };
    let (tx, rx) = sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send(job);
    match sent {
        Ok(()) => match rx.recv() {
            Ok(v) => v,
            Err(_) => fatal(),
        },
        Err(_) => fatal(),
    }
}

/// The spawner is gone (it never ends while rvmm runs): nothing can be started safely.
fn fatal() -> ! {
    eprintln!("rvmm: sandbox: the spawner thread is gone");
    std::process::exit(2);
}
