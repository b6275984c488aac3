//! One KVM_RUN and the dispatch of its exit to the buses, the IOAPIC, the emulation fallback or
//! the VMM thread.
//!
//! The exit path allocates nothing and takes no global lock: each thread reads the buses through
//! its own [`BusReader`] (an atomic generation check, then a binary search), and devices lock only
//! their own state.

use super::{VcpuContext, VcpuError};
use crate::control::{Cause, Request};
use crate::emulation;
use crate::exit_stats::{self, Access, ExitKind, VcpuExitStats};
use rvmm_devices::{BusReader, DeviceId, Mmio, Pio};
use rvmm_hypervisor::{Vcpu, VcpuExit};
use std::sync::atomic::Ordering;

/// One vCPU thread's view of the buses.
pub(super) struct Buses {
    pub pio: BusReader<Pio>,
    pub mmio: BusReader<Mmio>,
}

/// What an exit was, for the statistics.
#[derive(Clone, Copy)]
enum Handled {
    Kind(ExitKind),
    /// A bus access and the device that took it (None: unclaimed).
    Access(Access, Option<DeviceId>),
}

/// One KVM_RUN and the dispatch of its exit. `Err` is a condition the VM cannot go on from.
#[inline]
pub(super) fn run_once(
    vcpu: &mut Vcpu,
    ctx: &VcpuContext,
    buses: &mut Buses,
    stats: Option<&VcpuExitStats>,
) -> Result<(), VcpuError> {
    let id = vcpu.id();
    let exit = vcpu
        .run()
        .map_err(|source| VcpuError::Run { vcpu: id, source })?;
    // Queued writes first, so that nothing this exit does overtakes them.
    if let Some(ring) = ctx.coalesced.as_deref().filter(|r| r.pending()) {
        let mmio = buses.mmio.map();
        ring.drain(|addr, data| {
            mmio.write(addr, data);
        });
    }
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
            tracing::debug!(vcpu = id, "triple fault");
            ctx.control.request(Request::Reset(Cause::GuestReset));
            (Handled::Kind(ExitKind::Shutdown), Ok(()))
        }
        VcpuExit::SystemEvent(event) => {
            use rvmm_hypervisor::SystemEvent;
            let result = match event {
                SystemEvent::Shutdown => {
                    ctx.control.request(Request::Shutdown(Cause::GuestShutdown));
                    Ok(())
                }
                SystemEvent::Reset => {
                    ctx.control.request(Request::Reset(Cause::GuestReset));
                    Ok(())
                }
                SystemEvent::Crash => Err(VcpuError::GuestCrash { vcpu: id }),
                SystemEvent::Other(kind) => Err(VcpuError::SystemEvent { vcpu: id, kind }),
            };
            (Handled::Kind(ExitKind::SystemEvent), result)
        }
        VcpuExit::EmulationFailure(failure) => {
            let result = emulation::recover(vcpu, &ctx.mem, failure, &ctx.counters.emulated)
                .map_err(|source| VcpuError::Emulation { vcpu: id, source });
            (Handled::Kind(ExitKind::EmulationFallback), result)
        }
        VcpuExit::InternalError { suberror, data } => (
            Handled::Kind(ExitKind::InternalError),
            Err(VcpuError::InternalError {
                vcpu: id,
                suberror,
                data: format!("{data:x?}"),
                state: emulation::dump_state(vcpu),
            }),
        ),
        VcpuExit::FailEntry { reason } => (
            Handled::Kind(ExitKind::FailEntry),
            Err(VcpuError::FailEntry {
                vcpu: id,
                reason,
                state: emulation::dump_state(vcpu),
            }),
        ),
        VcpuExit::Unhandled { reason } => (
            Handled::Kind(ExitKind::Unhandled),
            Err(VcpuError::Unhandled {
                vcpu: id,
                reason,
                state: emulation::dump_state(vcpu),
            }),
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
pub(super) fn complete_pending_exit(vcpu: &mut Vcpu, ctx: &VcpuContext, buses: &mut Buses) {
    for _ in 0..16 {
        vcpu.set_immediate_exit();
        if let Err(e) = run_once(vcpu, ctx, buses, None) {
            tracing::debug!("completing an exit before reset: {e}");
            return;
        }
        // The Interrupted arm of run_once clears immediate_exit: nothing was pending any more.
        if !vcpu.immediate_exit() {
            return;
        }
    }
}
