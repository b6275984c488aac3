//! Why a vCPU cannot go on: what its thread reports to the VMM thread, and what the VMM thread
//! reports when a vCPU does not answer.

use rvmm_hypervisor::HvError;
use std::time::Duration;

/// How long the VMM thread waits for a vCPU to answer before calling it stuck. Generous: at load
/// average 55 on two cores, one of 288 vCPU threads once took over 10 s to be scheduled and
/// answer a resume (tests/interrupts.rs `smp_288_...`); a vCPU really stuck in KVM is a bug
/// either way, and this only bounds how long rvmm waits to report it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a vCPU cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {vcpu}: KVM_RUN failed: {source}")]
    Run {
        vcpu: u32,
        #[source]
        source: HvError,
    },
    #[error("vCPU {vcpu}: KVM internal error, suberror {suberror}, data {data}\n{state}")]
    InternalError {
        vcpu: u32,
        suberror: u32,
        data: String,
        /// Register dump.
        state: String,
    },
    #[error("vCPU {vcpu}: KVM could not enter the guest (hardware reason {reason:#x})\n{state}")]
    FailEntry {
        vcpu: u32,
        reason: u64,
        state: String,
    },
    #[error("vCPU {vcpu}: unhandled KVM exit reason {reason}\n{state}")]
    Unhandled {
        vcpu: u32,
        reason: u32,
        state: String,
    },
    #[error("vCPU {vcpu}: the guest reported a crash (system event)")]
    GuestCrash { vcpu: u32 },
    #[error("vCPU {vcpu}: unhandled guest system event {kind}")]
    SystemEvent { vcpu: u32, kind: u32 },
    #[error("vCPU {vcpu}: {source}")]
    Emulation {
        vcpu: u32,
        #[source]
        source: crate::emulation::EmulationError,
    },
    #[error("vCPU {vcpu}: reset failed: {source}")]
    Reset {
        vcpu: u32,
        #[source]
        source: Box<crate::VmmError>,
    },
    #[error("vCPU {vcpu}: {what}: {source}")]
    State {
        vcpu: u32,
        what: &'static str,
        #[source]
        source: HvError,
    },
    #[error("vCPU {vcpu} did not answer within {RESPONSE_TIMEOUT:?} ({request})")]
    Stuck { vcpu: u32, request: &'static str },
    #[error("vCPU {vcpu}'s thread is gone")]
    Gone { vcpu: u32 },
}
