//! The VMM: build a VM from a validated [`VmConfig`], run its vCPU threads, and handle stop, reset
//! and signals until the guest or the user ends it.
//!
//! ```text
//! VmConfig -> build (memory, irqchip, devices, kernel, vCPUs) -> vCPU threads -> VMM loop
//! ```

mod builder;
mod console;
mod control;
mod daemon;
mod device_manager;
mod emulation;
pub mod exit_stats;
mod firmware;
mod host;
mod interrupts;
mod platform;
pub mod qmp;
mod vcpu;
pub mod virtio;

pub use control::FATAL_STATUS;

use rvmm_arch::{BootEntry, LoadError};
use rvmm_cli::VmConfig;
use rvmm_hypervisor::{HvError, Vcpu};
use vm_memory::GuestMemoryMmap;

/// Errors that stop rvmm before or while it runs a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    #[error("-smp {requested}: this host's KVM supports at most {max} vCPUs")]
    TooManyCpus { requested: u32, max: usize },
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    Memory {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("could not load kernel '{path}': {source}")]
    KernelRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not load initrd '{path}': {source}")]
    InitrdRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("-serial file:{path}: {source}")]
    SerialFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Devices(#[from] device_manager::DeviceManagerError),
    #[error(transparent)]
    ExitStats(#[from] exit_stats::ExitStatsError),
    #[error(transparent)]
    Firmware(#[from] firmware::FirmwareError),
    #[error("QMP socket {what}: {source}")]
    Qmp {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("-pidfile {path}: {source}")]
    Pidfile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How each vCPU (re)starts: the bootstrap processor at the kernel's entry, the others waiting for
/// INIT/SIPI.
pub struct VcpuBoot {
    entry: BootEntry,
}

impl VcpuBoot {
    /// Put `vcpu` in its power-on state for this boot.
    pub fn reset_vcpu(&self, vcpu: &Vcpu, mem: &GuestMemoryMmap) -> Result<(), VmmError> {
        if vcpu.id() != 0 {
            // Application processors wait for INIT/SIPI from the guest (the in-kernel LAPIC does it).
            return Ok(vcpu.set_runnable(false)?);
        }
        let e = &self.entry;
        let mut sregs = vcpu.sregs()?;
        rvmm_arch::setup_cpu_mode(mem, e.mode, &mut sregs)?;
        vcpu.set_sregs(&sregs)?;
        let regs = rvmm_hypervisor::kvm_regs {
            rip: e.rip,
            rsp: e.rsp,
            rax: e.rax,
            rbx: e.rbx,
            rsi: e.rsi,
            // Bit 1 is reserved and always set; interrupts off.
            rflags: 0x2,
            ..Default::default()
        };
        vcpu.set_regs(&regs)?;
        // x87 and SSE control words as after FNINIT and at reset (SDM vol. 1, 8.1.5 and 10.2.3).
        let fpu = rvmm_hypervisor::kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu)?;
        // KVM_SET_FPU ignores `mxcsr`; the XSAVE area carries it.
        vcpu.set_mxcsr(0x1f80)?;
        Ok(vcpu.set_runnable(true)?)
    }
}

/// Boot and run the VM described by `config`; returns the process exit status (QEMU's meaning:
/// 0 for a clean power-off, reset under -no-reboot or a terminating signal; (v << 1) | 1 for an
/// isa-debug-exit write of v; [`FATAL_STATUS`] when the VM had to be stopped on an error).
pub fn run(config: &VmConfig) -> Result<i32, VmmError> {
    builder::build_and_run(config)
}
