//! The VM's run state, shared by the VMM thread, the vCPU threads and the devices.
//!
//! Devices and vCPUs *request* (stop, reset); the VMM thread *acts* (kicks vCPUs, reloads, joins).
//! The hot exit path only reads one atomic flag (`pending`) after each exit.
//!
//! Pausing (QMP `stop`, `-S`) is orthogonal to the command: `pause_requested` asks every vCPU to
//! park; the VMM thread kicks them and sets `paused` once all are parked (and the kvmclock is
//! saved). `cont` clears `pause_requested`; the VMM thread restores the clock and clears `paused`,
//! which releases the vCPUs exactly where they left KVM_RUN.

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

/// Why the VM shuts down or resets: QEMU's `ShutdownCause`, reported in SHUTDOWN and RESET events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    HostError,
    HostQmpQuit,
    HostQmpSystemReset,
    HostSignal,
    GuestShutdown,
    GuestReset,
}

impl Cause {
    /// The QAPI `ShutdownCause` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::HostError => "host-error",
            Cause::HostQmpQuit => "host-qmp-quit",
            Cause::HostQmpSystemReset => "host-qmp-system-reset",
            Cause::HostSignal => "host-signal",
            Cause::GuestShutdown => "guest-shutdown",
            Cause::GuestReset => "guest-reset",
        }
    }

    /// The events' `guest` member: did the guest itself ask for it?
    pub fn by_guest(self) -> bool {
        matches!(self, Cause::GuestShutdown | Cause::GuestReset)
    }
}

#[derive(Debug)]
pub struct State {
    pub command: Command,
    /// Bumped after each completed reset, so parked vCPUs know to reload their registers.
    pub epoch: u64,
    /// vCPUs currently parked (for a reset or a pause).
    pub parked: usize,
    /// QMP `stop` or `-S`: the vCPUs should park until `cont`.
    pub pause_requested: bool,
    /// Every vCPU is parked and the clock is saved; cleared by the VMM thread on resume.
    pub paused: bool,
    /// `-S` and no `cont` yet (QMP status "prelaunch").
    pub prelaunch: bool,
    /// Why the VM stops, when it is a shutdown QMP reports (not isa-debug-exit or an rvmm error).
    pub shutdown_cause: Option<Cause>,
    /// Why the pending reset was requested.
    pub reset_cause: Cause,
}

impl State {
    /// Whether vCPUs must stay parked for a pause.
    pub fn held(&self) -> bool {
        self.pause_requested || self.paused
    }
}

/// The VM stopped for good while a QMP command waited for a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

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
    /// `start_paused` is `-S`: the vCPUs park before running any guest code.
    pub fn new(no_reboot: bool, start_paused: bool) -> Self {
        Self {
            pending: AtomicBool::new(start_paused),
            state: Mutex::new(State {
                command: Command::Run,
                epoch: 0,
                parked: 0,
                pause_requested: start_paused,
                paused: false,
                prelaunch: start_paused,
                shutdown_cause: None,
                reset_cause: Cause::GuestReset,
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
    /// No SHUTDOWN event: isa-debug-exit and rvmm errors end QEMU without one too.
    pub fn stop(&self, status: i32) {
        self.stop_with(status, None);
    }

    /// Shut the VM down with status 0 for `cause` (reported in the SHUTDOWN event).
    pub fn shutdown(&self, cause: Cause) {
        self.stop_with(0, Some(cause));
    }

    fn stop_with(&self, status: i32, cause: Option<Cause>) {
        let mut st = self.lock();
        if !matches!(st.command, Command::Stop(_)) {
            st.command = Command::Stop(status);
            st.shutdown_cause = cause;
        }
        self.pending.store(true, Ordering::Release);
        drop(st);
        self.notify();
    }

    /// Reset the machine because the guest asked (i8042, triple fault, PSCI-style system event).
    pub fn reset(&self) {
        self.reset_for(Cause::GuestReset);
    }

    /// Reset the machine, or shut down under `-no-reboot` (as QEMU does, keeping the cause).
    pub fn reset_for(&self, cause: Cause) {
        if self.no_reboot {
            return self.shutdown(cause);
        }
        let mut st = self.lock();
        if st.command == Command::Run {
            st.command = Command::Reset;
            st.reset_cause = cause;
        }
        self.pending.store(true, Ordering::Release);
        drop(st);
        self.notify();
    }

    /// Recompute the fast-path flag after a state change (lock held).
    pub fn update_pending(&self, st: &State) {
        let pending = st.command != Command::Run || st.held();
        self.pending.store(pending, Ordering::Release);
    }

    /// Called by the VMM thread with the lock held once a reset is complete.
    pub fn resume_after_reset(&self, st: &mut State) {
        if st.command == Command::Reset {
            st.command = Command::Run;
            st.epoch += 1;
            self.update_pending(st);
        }
        self.notify();
    }

    /// QMP `stop`: park every vCPU and wait until they are. Returns true if this call paused a
    /// running VM (the caller then emits STOP); false if it was already paused.
    pub fn pause(&self) -> Result<bool, Stopped> {
        let mut st = self.lock();
        let newly = !st.pause_requested;
        if newly {
            st.pause_requested = true;
            self.update_pending(&st);
            self.notify();
        }
        while !st.paused && !matches!(st.command, Command::Stop(_)) {
            st = self.wait(st);
        }
        if st.paused {
            Ok(newly)
        } else {
            Err(Stopped)
        }
    }

    /// QMP `cont`: release the vCPUs and wait until the VMM thread has. Returns true if the VM
    /// was paused (the caller then emits RESUME).
    pub fn resume(&self) -> Result<bool, Stopped> {
        let mut st = self.lock();
        // A pause still under way (e.g. -S right at start-up) completes first, so the VMM thread
        // goes through its resume path and emits RESUME.
        while st.pause_requested && !st.paused && !matches!(st.command, Command::Stop(_)) {
            st = self.wait(st);
        }
        let was_paused = st.pause_requested;
        st.pause_requested = false;
        st.prelaunch = false;
        self.update_pending(&st);
        self.notify();
        while st.paused && !matches!(st.command, Command::Stop(_)) {
            st = self.wait(st);
        }
        // Released counts even if the guest shut down right after (it ran, so RESUME is due).
        if st.paused {
            Err(Stopped)
        } else {
            Ok(was_paused)
        }
    }
}

impl VmControl for Control {
    fn request(&self, req: VmRequest) {
        match req {
            VmRequest::Exit(status) => self.stop(status),
            VmRequest::PowerOff => self.shutdown(Cause::GuestShutdown),
            VmRequest::Reset => self.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_wins() {
        let c = Control::new(false, false);
        assert!(!c.pending());
        c.request(VmRequest::Exit(33));
        c.request(VmRequest::PowerOff);
        assert!(c.pending());
        assert_eq!(c.lock().command, Command::Stop(33));
    }

    #[test]
    fn reset_becomes_stop_under_no_reboot() {
        let c = Control::new(true, false);
        c.request(VmRequest::Reset);
        assert_eq!(c.lock().command, Command::Stop(0));
        assert_eq!(c.lock().shutdown_cause, Some(Cause::GuestReset));
    }

    #[test]
    fn causes_are_reported_and_debug_exit_has_none() {
        let c = Control::new(false, false);
        c.request(VmRequest::PowerOff);
        c.shutdown(Cause::HostQmpQuit);
        assert_eq!(c.lock().shutdown_cause, Some(Cause::GuestShutdown));
        let c = Control::new(false, false);
        c.request(VmRequest::Exit(3));
        assert_eq!(c.lock().shutdown_cause, None);
        assert!(Cause::GuestReset.by_guest());
        assert!(!Cause::HostSignal.by_guest());
        assert_eq!(Cause::HostQmpQuit.as_str(), "host-qmp-quit");
    }

    #[test]
    fn start_paused_is_pending_and_held() {
        let c = Control::new(false, true);
        assert!(c.pending());
        let st = c.lock();
        assert!(st.held() && st.prelaunch && !st.paused);
    }

    /// A stand-in VMM thread: marks the pause complete or undone, as vmm_loop does.
    fn fake_vmm(c: std::sync::Arc<Control>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut st = c.lock();
            loop {
                match st.command {
                    Command::Stop(_) => return,
                    _ if st.pause_requested && !st.paused => st.paused = true,
                    _ if !st.pause_requested && st.paused => st.paused = false,
                    _ => {
                        st = c.wait(st);
                        continue;
                    }
                }
                c.update_pending(&st);
                c.notify();
            }
        })
    }

    #[test]
    fn pause_and_resume_wait_for_the_vmm_thread() {
        let c = std::sync::Arc::new(Control::new(false, false));
        let vmm = fake_vmm(c.clone());
        assert_eq!(c.pause(), Ok(true));
        assert!(c.lock().paused);
        assert!(c.pending());
        assert_eq!(c.pause(), Ok(false), "already paused: no second STOP");
        assert_eq!(c.resume(), Ok(true));
        assert!(!c.lock().paused);
        assert!(!c.pending());
        assert_eq!(c.resume(), Ok(false), "already running: no second RESUME");
        c.shutdown(Cause::HostQmpQuit);
        vmm.join().unwrap();
        assert_eq!(c.pause(), Err(Stopped));
        assert_eq!(c.resume(), Ok(true), "released before the stop");
    }

    #[test]
    fn reset_then_resume_bumps_epoch() {
        let c = Control::new(false, false);
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
