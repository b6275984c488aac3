//! The VM's run state, shared by the VMM thread, the vCPU threads and the devices.
//!
//! Devices and vCPUs *request* (stop, reset); the VMM thread *acts* (kicks vCPUs, reloads, joins).
//! The hot exit path only reads one atomic flag (`pending`) after each exit.

use rvmm_devices::{VmControl, VmRequest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// What the vCPUs should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Park so the VMM can reset the machine; resume after `epoch` changes.
    Reset,
    /// Leave the run loop for good; the process exits with this status.
    Stop(i32),
}

#[derive(Debug)]
pub struct State {
    pub command: Command,
    /// Bumped after each completed reset, so parked vCPUs know to reload their registers.
    pub epoch: u64,
    /// vCPUs currently parked waiting for a reset to finish.
    pub parked: usize,
}

/// Why a stop was requested, for the status line and tests.
pub struct Control {
    pending: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    no_reboot: bool,
}

/// The process exit status for an rvmm failure once the guest is running (setup errors use 2 too;
/// odd statuses belong to isa-debug-exit).
pub const FATAL_STATUS: i32 = 2;

impl Control {
    pub fn new(no_reboot: bool) -> Self {
        Self {
            pending: AtomicBool::new(false),
            state: Mutex::new(State {
                command: Command::Run,
                epoch: 0,
                parked: 0,
            }),
            changed: Condvar::new(),
            no_reboot,
        }
    }

    /// Cheap check for the vCPU exit path: has anything been requested?
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding it; the state is still
        // plain data, so keep going and let shutdown proceed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Stop the VM with `status`, unless a stop is already under way (the first reason wins).
    pub fn stop(&self, status: i32) {
        let mut st = self.lock();
        if !matches!(st.command, Command::Stop(_)) {
            st.command = Command::Stop(status);
        }
        self.pending.store(true, Ordering::Release);
        drop(st);
        self.notify();
    }

    /// Reset the machine, or stop with status 0 under `-no-reboot` (as QEMU does).
    pub fn reset(&self) {
        if self.no_reboot {
            return self.stop(0);
        }
        let mut st = self.lock();
        if st.command == Command::Run {
            st.command = Command::Reset;
        }
        self.pending.store(true, Ordering::Release);
        drop(st);
        self.notify();
    }

    /// Called by the VMM thread with the lock held once a reset is complete.
    pub fn resume_after_reset(&self, st: &mut State) {
        if st.command == Command::Reset {
            st.command = Command::Run;
            st.epoch += 1;
            self.pending.store(false, Ordering::Release);
        }
        self.notify();
    }
}

impl VmControl for Control {
    fn request(&self, req: VmRequest) {
        match req {
            VmRequest::Exit(status) => self.stop(status),
            VmRequest::PowerOff => self.stop(0),
            VmRequest::Reset => self.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_wins() {
        let c = Control::new(false);
        assert!(!c.pending());
        c.request(VmRequest::Exit(33));
        c.request(VmRequest::PowerOff);
        assert!(c.pending());
        assert_eq!(c.lock().command, Command::Stop(33));
    }

    #[test]
    fn reset_becomes_stop_under_no_reboot() {
        let c = Control::new(true);
        c.request(VmRequest::Reset);
        assert_eq!(c.lock().command, Command::Stop(0));
    }

    #[test]
    fn reset_then_resume_bumps_epoch() {
        let c = Control::new(false);
        c.request(VmRequest::Reset);
        assert_eq!(c.lock().command, Command::Reset);
        // A stop during a reset still wins.
        let mut st = c.lock();
        c.resume_after_reset(&mut st);
        assert_eq!(st.command, Command::Run);
        assert_eq!(st.epoch, 1);
        drop(st);
        assert!(!c.pending());
        c.request(VmRequest::Reset);
        c.request(VmRequest::Exit(5));
        assert_eq!(c.lock().command, Command::Stop(5));
    }
}
