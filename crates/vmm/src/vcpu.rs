//! The vCPU threads: each owns one vCPU, loops on KVM_RUN and dispatches every exit.
//!
//! The exit path allocates nothing and takes no global lock: each thread reads the buses through
//! its own [`BusReader`] (an atomic generation check, then a binary search), devices lock only
//! their own state, and the run state is one atomic flag.

use crate::control::{Cause, Command, Control, FATAL_STATUS};
use crate::emulation;
use crate::exit_stats::{self, Access, ExitKind, ExitStats, VcpuExitStats};
use crate::VcpuBoot;
use rvmm_devices::DeviceId;
use rvmm_devices::{BusReader, Mmio, MmioBus, Pio, PioBus};
use rvmm_hypervisor::{Vcpu, VcpuExit};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
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
}

/// One vCPU thread's view of the buses.
struct Buses {
    pio: BusReader<Pio>,
    mmio: BusReader<Mmio>,
}

enum Next {
    Continue,
    Stop,
}

/// The body of a vCPU thread.
/// `index` is the vCPU's position in -smp order (QMP's cpu-index); `vcpu.id()` is its APIC ID.
pub fn run_vcpu(mut vcpu: Vcpu, index: u32, ctx: VcpuContext) {
    if let Some(tid) = ctx.thread_ids.get(index as usize) {
        // SAFETY: gettid has no preconditions.
        tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    }
    vcpu.bind_to_thread();
    let stats = ctx.stats.as_ref().and_then(|s| s.vcpu(index));
    let stats = stats.as_deref();
    let mut buses = Buses {
        pio: ctx.pio.reader(),
        mmio: ctx.mmio.reader(),
    };
    let mut epoch = 0;
    loop {
        if ctx.control.pending() {
            match park(&ctx, &mut vcpu, &mut buses, &mut epoch) {
                Next::Continue => vcpu.clear_immediate_exit(),
                Next::Stop => return,
            }
        }
        if let Err(report) = run_once(&mut vcpu, &ctx, &mut buses, stats) {
            eprintln!("rvmm: vCPU {}: {report}", vcpu.id());
            ctx.control.stop(FATAL_STATUS);
        }
    }
}

/// What an exit was, for the statistics.
#[derive(Clone, Copy)]
enum Handled {
    Kind(ExitKind),
    /// A bus access and the device that took it (None: unclaimed).
    Access(Access, Option<DeviceId>),
}

/// One KVM_RUN and the dispatch of its exit. `Err` carries a report for a fatal condition.
#[inline]
fn run_once(
    vcpu: &mut Vcpu,
    ctx: &VcpuContext,
    buses: &mut Buses,
    stats: Option<&VcpuExitStats>,
) -> Result<(), String> {
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) => return Err(e.to_string()),
    };
    // Time from KVM_RUN returning to the end of the dispatch (the loop back to KVM_RUN is a
    // flag check); two rdtsc per exit when -exit-stats is on, one branch when it is off.
    let start = if stats.is_some() {
        exit_stats::now()
    } else {
        0
    };
    let (handled, result) = match exit {
        VcpuExit::IoOut { port, size, data } => {
            let pio = buses.pio.map();
            let mut id = None;
            for chunk in data.chunks(size.max(1)) {
                id = pio.write(u64::from(port), chunk);
                if id.is_none() {
                    ctx.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(port, ?chunk, "write to unclaimed port dropped");
                }
            }
            (Handled::Access(Access::PioOut, id), Ok(()))
        }
        VcpuExit::IoIn { port, size, data } => {
            let pio = buses.pio.map();
            let mut id = None;
            for chunk in data.chunks_mut(size.max(1)) {
                id = pio.read(u64::from(port), chunk);
                if id.is_none() {
                    chunk.fill(0xff);
                    ctx.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(port, "read from unclaimed port returns all-ones");
                }
            }
            (Handled::Access(Access::PioIn, id), Ok(()))
        }
        VcpuExit::MmioWrite { addr, data } => {
            let id = buses.mmio.map().write(addr, data);
            if id.is_none() {
                ctx.counters.unclaimed_mmio.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr, ?data, "MMIO write to unclaimed address dropped");
            }
            (Handled::Access(Access::MmioWrite, id), Ok(()))
        }
        VcpuExit::MmioRead { addr, data } => {
            let id = buses.mmio.map().read(addr, data);
            if id.is_none() {
                data.fill(0xff);
                ctx.counters.unclaimed_mmio.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr, "MMIO read from unclaimed address returns all-ones");
            }
            (Handled::Access(Access::MmioRead, id), Ok(()))
        }
        // Only reached without an in-kernel LAPIC; with one, HLT waits in the kernel.
        VcpuExit::Hlt => {
            std::thread::yield_now();
            (Handled::Kind(ExitKind::Hlt), Ok(()))
        }
        VcpuExit::Interrupted => {
            vcpu.clear_immediate_exit();
            (Handled::Kind(ExitKind::Interrupted), Ok(()))
        }
        VcpuExit::IoapicEoi { vector } => {
            tracing::trace!(vector, "IOAPIC EOI");
            if let Some(ioapic) = &ctx.ioapic {
                ioapic.end_of_interrupt(vector);
            }
            (Handled::Kind(ExitKind::IoapicEoi), Ok(()))
        }
        // A triple fault: reset, or stop under -no-reboot, as QEMU does.
        VcpuExit::Shutdown => {
            tracing::debug!(vcpu = vcpu.id(), "triple fault");
            ctx.control.reset();
            (Handled::Kind(ExitKind::Shutdown), Ok(()))
        }
        VcpuExit::SystemEvent(event) => {
            use rvmm_hypervisor::SystemEvent;
            let result = match event {
                SystemEvent::Shutdown => {
                    ctx.control.shutdown(Cause::GuestShutdown);
                    Ok(())
                }
                SystemEvent::Reset => {
                    ctx.control.reset();
                    Ok(())
                }
                SystemEvent::Crash => Err("the guest reported a crash (system event)".to_string()),
                SystemEvent::Other(kind) => Err(format!("unhandled guest system event {kind}")),
            };
            (Handled::Kind(ExitKind::SystemEvent), result)
        }
        VcpuExit::EmulationFailure(failure) => {
            let result = emulation::recover(vcpu, &ctx.mem, failure, &ctx.counters.emulated)
                .map_err(|e| e.to_string());
            (Handled::Kind(ExitKind::EmulationFallback), result)
        }
        VcpuExit::InternalError { suberror, data } => (
            Handled::Kind(ExitKind::InternalError),
            Err(format!(
                "KVM internal error, suberror {suberror}, data {data:x?}\n{}",
                emulation::dump_state(vcpu)
            )),
        ),
        VcpuExit::FailEntry { reason } => (
            Handled::Kind(ExitKind::FailEntry),
            Err(format!(
                "KVM could not enter the guest (hardware reason {reason:#x})\n{}",
                emulation::dump_state(vcpu)
            )),
        ),
        VcpuExit::Unhandled { reason } => (
            Handled::Kind(ExitKind::Unhandled),
            Err(format!(
                "unhandled KVM exit reason {reason}\n{}",
                emulation::dump_state(vcpu)
            )),
        ),
    };
    if let Some(stats) = stats {
        let ticks = exit_stats::now().wrapping_sub(start);
        match handled {
            Handled::Kind(kind) => stats.record(kind, ticks),
            Handled::Access(access, id) => stats.record_access(access, id, ticks),
        }
    }
    result
}

/// Finish the instruction of the last I/O or MMIO exit without running more guest code: KVM
/// completes it (writing RAX and RIP) only on the next KVM_RUN (api.rst, "KVM_RUN"), which would
/// otherwise clobber the registers a reset just loaded. Bounded: a `rep ins` may take a few rounds.
fn complete_pending_exit(vcpu: &mut Vcpu, ctx: &VcpuContext, buses: &mut Buses) {
    for _ in 0..16 {
        vcpu.set_immediate_exit();
        if let Err(report) = run_once(vcpu, ctx, buses, None) {
            tracing::debug!(
                vcpu = vcpu.id(),
                "completing an exit before reset: {report}"
            );
            return;
        }
        // The Interrupted arm of run_once clears immediate_exit: nothing was pending any more.
        if !vcpu.immediate_exit() {
            return;
        }
    }
}

/// Something was requested: stop, or park until a reset completes (then reload registers) or
/// until a pause ends (then continue exactly where KVM_RUN left off).
#[cold]
fn park(ctx: &VcpuContext, vcpu: &mut Vcpu, buses: &mut Buses, epoch: &mut u64) -> Next {
    let control = &ctx.control;
    let mut st = control.lock();
    loop {
        match st.command {
            Command::Stop(_) => return Next::Stop,
            Command::Run if !st.held() => break,
            Command::Run | Command::Reset => {
                st.parked += 1;
                control.notify();
                while st.command == Command::Reset || (st.command == Command::Run && st.held()) {
                    st = control.wait(st);
                }
                st.parked -= 1;
                control.notify();
            }
        }
    }
    let reset = st.epoch != *epoch;
    *epoch = st.epoch;
    drop(st);
    if reset {
        complete_pending_exit(vcpu, ctx, buses);
        if let Err(e) = ctx.boot.reset_vcpu(vcpu, &ctx.mem) {
            eprintln!("rvmm: vCPU {}: reset failed: {e}", vcpu.id());
            control.stop(FATAL_STATUS);
            return Next::Stop;
        }
    }
    Next::Continue
}
