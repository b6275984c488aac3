//! The vCPU threads: each owns one vCPU, loops on KVM_RUN and dispatches every exit.
//!
//! The exit path allocates nothing and takes no global lock: the buses are immutable after build
//! (binary search), devices lock only their own state, and the run state is one atomic flag.

use crate::control::{Command, Control, FATAL_STATUS};
use crate::emulation;
use crate::VcpuBoot;
use rvmm_devices::Bus;
use rvmm_hypervisor::{Vcpu, VcpuExit};
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub mem: Arc<GuestMemoryMmap>,
    pub counters: Arc<ExitCounters>,
    pub boot: Arc<VcpuBoot>,
    /// The user-space IOAPIC under the split irqchip.
    pub ioapic: Option<Arc<rvmm_devices::legacy::Ioapic>>,
}

enum Next {
    Continue,
    Stop,
}

/// The body of a vCPU thread.
pub fn run_vcpu(mut vcpu: Vcpu, ctx: VcpuContext) {
    vcpu.bind_to_thread();
    let mut epoch = 0;
    loop {
        if ctx.control.pending() {
            match park(&ctx, &mut vcpu, &mut epoch) {
                Next::Continue => vcpu.clear_immediate_exit(),
                Next::Stop => return,
            }
        }
        if let Err(report) = run_once(&mut vcpu, &ctx) {
            eprintln!("rvmm: vCPU {}: {report}", vcpu.id());
            ctx.control.stop(FATAL_STATUS);
        }
    }
}

/// One KVM_RUN and the dispatch of its exit. `Err` carries a report for a fatal condition.
#[inline]
fn run_once(vcpu: &mut Vcpu, ctx: &VcpuContext) -> Result<(), String> {
    let exit = match vcpu.run() {
        Ok(exit) => exit,
        Err(e) => return Err(e.to_string()),
    };
    match exit {
        VcpuExit::IoOut { port, size, data } => {
            for chunk in data.chunks(size.max(1)) {
                if !ctx.pio.write(u64::from(port), chunk) {
                    ctx.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(port, ?chunk, "write to unclaimed port dropped");
                }
            }
        }
        VcpuExit::IoIn { port, size, data } => {
            for chunk in data.chunks_mut(size.max(1)) {
                if !ctx.pio.read(u64::from(port), chunk) {
                    chunk.fill(0xff);
                    ctx.counters.unclaimed_pio.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(port, "read from unclaimed port returns all-ones");
                }
            }
        }
        VcpuExit::MmioWrite { addr, data } => {
            if !ctx.mmio.write(addr, data) {
                ctx.counters.unclaimed_mmio.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr, ?data, "MMIO write to unclaimed address dropped");
            }
        }
        VcpuExit::MmioRead { addr, data } => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0xff);
                ctx.counters.unclaimed_mmio.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr, "MMIO read from unclaimed address returns all-ones");
            }
        }
        // Only reached without an in-kernel LAPIC; with one, HLT waits in the kernel.
        VcpuExit::Hlt => std::thread::yield_now(),
        VcpuExit::Interrupted => vcpu.clear_immediate_exit(),
        VcpuExit::IoapicEoi { vector } => {
            tracing::trace!(vector, "IOAPIC EOI");
            if let Some(ioapic) = &ctx.ioapic {
                ioapic.end_of_interrupt(vector);
            }
        }
        // A triple fault: reset, or stop under -no-reboot, as QEMU does.
        VcpuExit::Shutdown => {
            tracing::debug!(vcpu = vcpu.id(), "triple fault");
            ctx.control.reset();
        }
        VcpuExit::SystemEvent { kind } => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => ctx.control.stop(0),
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => ctx.control.reset(),
            other => return Err(format!("guest system event {other} (crash)")),
        },
        VcpuExit::EmulationFailure(failure) => {
            emulation::recover(vcpu, &ctx.mem, failure, &ctx.counters)?;
        }
        VcpuExit::InternalError { suberror, data } => {
            return Err(format!(
                "KVM internal error, suberror {suberror}, data {data:x?}\n{}",
                emulation::dump_state(vcpu)
            ));
        }
        VcpuExit::FailEntry { reason } => {
            return Err(format!(
                "KVM could not enter the guest (hardware reason {reason:#x})\n{}",
                emulation::dump_state(vcpu)
            ));
        }
        VcpuExit::Unhandled { reason } => {
            return Err(format!(
                "unhandled KVM exit reason {reason}\n{}",
                emulation::dump_state(vcpu)
            ));
        }
    }
    Ok(())
}

/// Something was requested: stop, or park until a reset completes and then reload registers.
#[cold]
fn park(ctx: &VcpuContext, vcpu: &mut Vcpu, epoch: &mut u64) -> Next {
    let control = &ctx.control;
    let mut st = control.lock();
    loop {
        match st.command {
            Command::Stop(_) => return Next::Stop,
            Command::Run => break,
            Command::Reset => {
                st.parked += 1;
                control.notify();
                while st.command == Command::Reset {
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
        if let Err(e) = ctx.boot.reset_vcpu(vcpu, &ctx.mem) {
            eprintln!("rvmm: vCPU {}: reset failed: {e}", vcpu.id());
            control.stop(FATAL_STATUS);
            return Next::Stop;
        }
    }
    Next::Continue
}
