//! Requests to the VMM thread from devices and vCPU threads: stop with a status, shut down, reset,
//! suspend or wake up, or a vCPU's fatal error. They queue here and wake the event loop through an eventfd; the VMM
//! thread carries them out with the VM state machine (`vm.rs`).
//!
//! `attention` is what a vCPU reads after each exit (one atomic load): once anything is queued,
//! or the VMM thread is pausing the vCPUs, a vCPU stops running guest code and waits for the
//! request the VMM thread sends it.

use rvmm_devices::legacy::WakeReason;
use rvmm_devices::{VmControl, VmRequest};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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

/// What the VMM thread is asked to do.
#[derive(Debug)]
pub enum Request {
    /// Stop and exit the process with this status, without a SHUTDOWN event (isa-debug-exit).
    Exit(i32),
    /// Shut down with status 0 (SHUTDOWN event with the cause).
    Shutdown(Cause),
    /// Reset the machine (or shut down under `-no-reboot`).
    Reset(Cause),
    /// Enter ACPI S3: stop the vCPUs, keep RAM (SUSPEND event).
    Suspend,
    /// Wake a suspended VM for this reason, if the guest enabled it (WAKEUP event).
    Wakeup(WakeReason),
    /// A vCPU could not go on; the VM stops with [`FATAL_STATUS`].
    Fatal(crate::vcpu::error::VcpuError),
    /// Remove the functions on this PCI bus (rvmm's index): its root port's slot was powered
    /// off by the guest.
    PciEject(u8),
}

/// The process exit status for an rvmm failure once the guest is running (setup errors use 2 too;
/// odd statuses belong to isa-debug-exit).
pub const FATAL_STATUS: i32 = 2;

/// The queue of requests and the flag the vCPUs read.
pub struct Control {
    queue: Mutex<VecDeque<Request>>,
    /// Readable while requests are queued: the event loop waits on it.
    wake: EventFd,
    attention: Arc<AtomicBool>,
}

impl Control {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            queue: Mutex::new(VecDeque::new()),
            wake: EventFd::new(EFD_NONBLOCK)?,
            attention: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Queue `req` and wake the VMM thread; vCPUs stop running guest code at their next exit.
    pub fn request(&self, req: Request) {
        tracing::debug!(?req, "VM request");
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(req);
        self.attention.store(true, Ordering::Release);
        // Only fails if the counter would overflow, and then the loop is already woken.
        let _ = self.wake.write(1);
    }

    /// Everything queued so far, oldest first (the VMM thread).
    pub fn take(&self) -> Vec<Request> {
        // Reading resets the eventfd counter; nothing queued after the drain below is lost,
        // because its write comes after its push.
        let _ = self.wake.read();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// The eventfd the event loop polls.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// The flag vCPUs check after each exit.
    pub fn attention(&self) -> &Arc<AtomicBool> {
        &self.attention
    }
}

impl VmControl for Control {
    fn request(&self, req: VmRequest) {
        Control::request(
            self,
            match req {
                VmRequest::Exit(status) => Request::Exit(status),
                VmRequest::PowerOff => Request::Shutdown(Cause::GuestShutdown),
                VmRequest::Reset => Request::Reset(Cause::GuestReset),
                VmRequest::Suspend => Request::Suspend,
                VmRequest::RtcWake => Request::Wakeup(WakeReason::Rtc),
                VmRequest::PciEject(bus) => Request::PciEject(bus),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_queue_in_order_and_raise_attention() {
        let c = Control::new().unwrap();
        assert!(!c.attention().load(Ordering::Relaxed));
        VmControl::request(&c, VmRequest::Exit(33));
        VmControl::request(&c, VmRequest::PowerOff);
        VmControl::request(&c, VmRequest::Reset);
        assert!(c.attention().load(Ordering::Relaxed));
        assert_eq!(c.wake_fd().read().unwrap(), 3);
        let got: Vec<String> = c.take().iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(
            got,
            ["Exit(33)", "Shutdown(GuestShutdown)", "Reset(GuestReset)"]
        );
        assert!(c.take().is_empty());
    }

    #[test]
    fn causes_as_qemu_spells_them() {
        assert!(Cause::GuestReset.by_guest());
        assert!(!Cause::HostSignal.by_guest());
        assert_eq!(Cause::HostQmpQuit.as_str(), "host-qmp-quit");
    }
}
