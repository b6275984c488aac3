//! The vCPU threads: each owns one vCPU and is a small state machine driven by requests from the
//! VMM thread.
//!
//! ```text
//!            Resume                    Stop
//!   Paused ---------> Running  ----------------> Exited
//!     ^  | Reset, SaveState  |  (attention: wait for a request)
//!     |  +-------------------+
//!     +------ Pause ---------+
//! ```
//!
//! A thread starts `Paused` and answers every request on its response channel, so the VMM thread
//! knows when all vCPUs have left guest code (pause), reloaded their registers (reset) or ended
//! (stop). Requests are delivered with a kick (signal + `immediate_exit`) so a vCPU inside
//! KVM_RUN sees them at once; while running, a vCPU only reads the shared `attention` flag after
//! each exit.

mod boot;
pub(crate) mod error;
mod exit;

pub use boot::{BootTarget, VcpuBoot, WakeEntry};
pub use error::{VcpuError, RESPONSE_TIMEOUT};

use crate::control::{Control, Request};
use crate::exit_stats::ExitStats;
use exit::{complete_pending_exit, run_once, Buses};
use rvmm_devices::{MmioBus, PioBus};
use rvmm_hypervisor::{kick_signal, kvm_regs, kvm_sregs, Vcpu, VcpuSnapshot};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use vm_memory::GuestMemoryMmap;

/// Counters kept across vCPUs (rare paths only; relaxed atomics).
#[derive(Default)]
pub struct ExitCounters {
    pub unclaimed_pio: AtomicU64,
    pub unclaimed_mmio: AtomicU64,
    /// Instructions completed in user space after KVM could not emulate them.
    pub emulated: crate::emulation::EmulationCounters,
}

/// Everything a vCPU thread needs besides its vCPU.
#[derive(Clone)]
pub struct VcpuContext {
    pub control: Arc<Control>,
    pub pio: Arc<PioBus>,
    pub mmio: Arc<MmioBus>,
    pub mem: Arc<GuestMemoryMmap>,
    pub counters: Arc<ExitCounters>,
    pub boot: Arc<VcpuBoot>,
    /// The user-space IOAPIC under the split irqchip.
    pub ioapic: Option<Arc<rvmm_devices::legacy::Ioapic>>,
    /// Linux thread id of each vCPU thread, by vCPU index (QMP query-cpus-fast `thread-id`).
    pub thread_ids: Arc<[AtomicI32]>,
    /// Set with `-exit-stats`.
    pub stats: Option<Arc<ExitStats>>,
    /// The MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST).
    pub msr_indices: Arc<[u32]>,
    /// KVM's coalesced MMIO ring (the VGA window's writes), replayed before each exit.
    pub coalesced: Option<Arc<rvmm_hypervisor::CoalescedRing>>,
    /// `-name ...,debug-threads=on`: vCPU threads are named "CPU N/KVM", as QEMU's.
    pub debug_threads: bool,
}

/// What the VMM thread asks of a vCPU.
#[derive(Debug)]
pub enum VcpuRequest {
    /// Leave guest code and wait.
    Pause,
    /// Run guest code again, exactly where it stopped.
    Resume,
    /// Reload the power-on registers for the next boot (while paused).
    Reset,
    /// Load the registers of a wake-up from S3 (while paused); answered with `ResetDone`.
    Wake(WakeEntry),
    /// Report the registers (while paused).
    SaveState,
    /// Report the whole KVM state for a snapshot (while paused).
    Snapshot,
    /// Load a snapshot's state (while paused, before the first run); answered with `ResetDone`.
    Restore(Box<VcpuSnapshot>),
    /// End the thread.
    Stop,
}

/// The registers a paused vCPU reports (the start of a snapshot's per-vCPU state).
#[derive(Debug, Clone)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
}

/// A vCPU's answer to each request, in order.
#[derive(Debug)]
pub enum VcpuResponse {
    Paused,
    Resumed,
    ResetDone(Result<(), VcpuError>),
    State(Result<Box<VcpuState>, VcpuError>),
    Snapshot(Result<Box<VcpuSnapshot>, VcpuError>),
    Stopped,
}

/// The VMM thread's side of one vCPU thread.
pub struct VcpuHandle {
    index: u32,
    requests: Sender<VcpuRequest>,
    responses: Receiver<VcpuResponse>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Start the thread (named `vcpuN`) for `vcpu`, paused.
    pub fn spawn(vcpu: Vcpu, index: u32, ctx: VcpuContext) -> std::io::Result<Self> {
        let (requests, rx) = channel();
        let (tx, responses) = channel();
        let thread = rvmm_sandbox::spawn(
            rvmm_sandbox::ThreadKind::Vcpu,
            if ctx.debug_threads {
                format!("CPU {index}/KVM")
            } else {
                format!("vcpu{index}")
            },
            move || {
                let mut t = VcpuThread {
                    vcpu,
                    index,
                    ctx,
                    requests: rx,
                    responses: tx,
                };
                t.main();
            },
        )?;
        Ok(Self {
            index,
            requests,
            responses,
            thread: Some(thread),
        })
    }

    /// Send `req` and make the vCPU leave KVM_RUN to read it.
    pub fn send(&self, req: VcpuRequest) -> Result<(), VcpuError> {
        self.requests
            .send(req)
            .map_err(|_| VcpuError::Gone { vcpu: self.index })?;
        self.kick();
        Ok(())
    }

    fn kick(&self) {
        use vmm_sys_util::signal::Killable;
        if let Some(t) = &self.thread {
            // A thread that already ended has nothing to kick.
            let _ = t.kill(kick_signal());
        }
    }

    /// The answer to the oldest request not yet answered.
    pub fn response(&self, request: &'static str) -> Result<VcpuResponse, VcpuError> {
        self.responses
            .recv_timeout(RESPONSE_TIMEOUT)
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => VcpuError::Stuck {
                    vcpu: self.index,
                    request,
                },
                RecvTimeoutError::Disconnected => VcpuError::Gone { vcpu: self.index },
            })
    }

    /// Wait for the thread to end (after `Stop`, or if it is gone).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum State {
    Running,
    Paused,
    Exited,
}

/// Wait (up to 10 s) until every vCPU thread that was spawned has stored its thread id.
pub fn wait_for_thread_ids(ids: &[std::sync::atomic::AtomicI32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ids.iter().any(|t| t.load(Ordering::Relaxed) == 0) {
        if std::time::Instant::now() > deadline {
            tracing::debug!("a vCPU thread has not started after 10 s");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

struct VcpuThread {
    vcpu: Vcpu,
    index: u32,
    ctx: VcpuContext,
    requests: Receiver<VcpuRequest>,
    responses: Sender<VcpuResponse>,
}

impl VcpuThread {
    fn main(&mut self) {
        if let Some(tid) = self.ctx.thread_ids.get(self.index as usize) {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        }
        self.vcpu.bind_to_thread();
        #[cfg(debug_assertions)]
        forbidden_call_for_tests();
        let stats = self.ctx.stats.as_ref().and_then(|s| s.vcpu(self.index));
        let mut buses = Buses {
            pio: self.ctx.pio.reader(),
            mmio: self.ctx.mmio.reader(),
        };
        let attention = self.ctx.control.attention().clone();
        let mut state = State::Paused;
        loop {
            state = match state {
                State::Running => self.running(&mut buses, stats.as_deref(), &attention),
                State::Paused => self.paused(&mut buses),
                State::Exited => return,
            };
        }
    }

    /// Run guest code until the VMM thread wants something.
    fn running(
        &mut self,
        buses: &mut Buses,
        stats: Option<&crate::exit_stats::VcpuExitStats>,
        attention: &AtomicBool,
    ) -> State {
        loop {
            if attention.load(Ordering::Acquire) {
                // Something is queued for the VMM thread, or it is pausing us: wait for its word.
                return match self.requests.recv() {
                    Ok(req) => self.handle(req, buses),
                    Err(_) => State::Exited,
                };
            }
            if let Err(e) = run_once(&mut self.vcpu, &self.ctx, buses, stats) {
                self.ctx.control.request(Request::Fatal(e));
            }
        }
    }

    fn paused(&mut self, buses: &mut Buses) -> State {
        match self.requests.recv() {
            Ok(req) => self.handle(req, buses),
            Err(_) => State::Exited,
        }
    }

    fn handle(&mut self, req: VcpuRequest, buses: &mut Buses) -> State {
        let (response, next) = match req {
            VcpuRequest::Pause => {
                // Finish the instruction of the last exit now, so the registers a snapshot or a
                // debugger reads while paused are the ones after it.
                complete_pending_exit(&mut self.vcpu, &self.ctx, buses);
                (VcpuResponse::Paused, State::Paused)
            }
            VcpuRequest::Resume => {
                // A kick that arrived while paused must not stop the first KVM_RUN.
                self.vcpu.clear_immediate_exit();
                (VcpuResponse::Resumed, State::Running)
            }
            VcpuRequest::Reset => (VcpuResponse::ResetDone(self.reset(buses)), State::Paused),
            VcpuRequest::Wake(entry) => (
                VcpuResponse::ResetDone(self.wake(buses, entry)),
                State::Paused,
            ),
            VcpuRequest::SaveState => (VcpuResponse::State(self.save()), State::Paused),
            VcpuRequest::Snapshot => (VcpuResponse::Snapshot(self.snapshot()), State::Paused),
            VcpuRequest::Restore(s) => (
                VcpuResponse::ResetDone(self.restore(buses, &s)),
                State::Paused,
            ),
            VcpuRequest::Stop => (VcpuResponse::Stopped, State::Exited),
        };
        // The VMM thread waits for every answer; if it is gone, so is the VM.
        if self.responses.send(response).is_err() {
            return State::Exited;
        }
        next
    }

    fn reset(&mut self, buses: &mut Buses) -> Result<(), VcpuError> {
        // Paused vCPUs have finished their last instruction; this is for one never resumed.
        complete_pending_exit(&mut self.vcpu, &self.ctx, buses);
        self.ctx
            .boot
            .reset_vcpu(&self.vcpu, &self.ctx.mem)
            .map_err(|e| VcpuError::Reset {
                vcpu: self.vcpu.id(),
                source: Box::new(e),
            })
    }

    fn wake(&mut self, buses: &mut Buses, entry: WakeEntry) -> Result<(), VcpuError> {
        complete_pending_exit(&mut self.vcpu, &self.ctx, buses);
        self.ctx
            .boot
            .wake_vcpu(&self.vcpu, entry)
            .map_err(|e| VcpuError::Reset {
                vcpu: self.vcpu.id(),
                source: Box::new(e),
            })
    }

    fn snapshot(&self) -> Result<Box<VcpuSnapshot>, VcpuError> {
        let vcpu = self.vcpu.id();
        self.vcpu
            .save_state(&self.ctx.msr_indices)
            .map(Box::new)
            .map_err(|source| VcpuError::State {
                vcpu,
                what: "snapshot",
                source,
            })
    }

    fn restore(&mut self, buses: &mut Buses, s: &VcpuSnapshot) -> Result<(), VcpuError> {
        complete_pending_exit(&mut self.vcpu, &self.ctx, buses);
        let vcpu = self.vcpu.id();
        if s.id != vcpu {
            return Err(VcpuError::State {
                vcpu,
                what: "restore",
                source: rvmm_hypervisor::HvError::StateMismatch(
                    "the snapshot's vCPU IDs (APIC IDs) are not this VM's",
                ),
            });
        }
        self.vcpu
            .restore_state(s)
            .map_err(|source| VcpuError::State {
                vcpu,
                what: "restore",
                source,
            })
    }

    fn save(&self) -> Result<Box<VcpuState>, VcpuError> {
        let vcpu = self.vcpu.id();
        let err = |what| move |source| VcpuError::State { vcpu, what, source };
        Ok(Box::new(VcpuState {
            regs: self.vcpu.regs().map_err(err("KVM_GET_REGS"))?,
            sregs: self.vcpu.sregs().map_err(err("KVM_GET_SREGS"))?,
        }))
    }
}

/// Debug builds only: `RVMM_TEST_SECCOMP_VIOLATION=vcpu` makes each vCPU thread open a TCP
/// socket once its filter is in, as a compromised device model might (tests/sandbox.rs checks
/// that the sandbox stops rvmm and names the thread and the call).
#[cfg(debug_assertions)]
fn forbidden_call_for_tests() {
    if std::env::var_os("RVMM_TEST_SECCOMP_VIOLATION").is_some_and(|v| v == "vcpu") {
        // SAFETY: socket(2) and close(2) with valid arguments.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
}
