//! The VMM: build a VM from a validated [`VmConfig`], run its vCPU threads, and handle stop, reset
//! and signals until the guest or the user ends it.
//!
//! ```text
//! VmConfig -> build (memory, irqchip, devices, kernel, vCPUs) -> vCPU threads
//!          -> event loop on this thread, driving the VM state machine -> finish
//! ```

mod bios;
mod builder;
mod chardev;
mod console;
mod control;
mod daemon;
mod device_manager;
mod display;
// Public for the fuzz targets (fuzz/); not an API.
#[doc(hidden)]
pub mod emulation;
mod event_loop;
pub mod exit_stats;
mod firmware;
mod host;
mod input;
mod interrupts;
mod netdev;
mod passt;
mod platform;
pub mod qmp;
mod sandbox;
pub mod screendump;
pub mod snapshot;
mod vcpu;
pub mod virtio;
pub mod virtio_pci;
mod vm;

pub use control::FATAL_STATUS;

/// The tracing target of status lines the CLI prints plain, without a "warning:"/"note:" kind
/// ("rvmm: terminating on signal 15", as QEMU prints it).
pub const NOTICE_TARGET: &str = "rvmm::notice";

use rvmm_arch::LoadError;
use rvmm_cli::VmConfig;
use rvmm_hypervisor::HvError;

/// Errors that stop rvmm before or while it runs a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    #[error("-vnc: {0}")]
    Vnc(#[from] rvmm_vnc::VncError),
    #[error("-smp {requested}: this host's KVM supports at most {max} vCPUs")]
    TooManyCpus { requested: u32, max: usize },
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    Memory {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error(transparent)]
    Input(#[from] input::InputError),
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
    Vcpu(#[from] vcpu::VcpuError),
    #[error("The VM is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    ExitStats(#[from] exit_stats::ExitStatsError),
    #[error(transparent)]
    Firmware(#[from] firmware::FirmwareError),
    #[error(transparent)]
    Cpuid(#[from] rvmm_arch::cpu::CpuidError),
    #[error("-cpu: {0}")]
    Hyperv(#[from] rvmm_arch::cpu::HypervError),
    #[error(transparent)]
    Bios(#[from] bios::BiosError),
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
    #[error("load of migration failed: {0}")]
    Incoming(#[source] snapshot::SnapshotError),
    #[error(transparent)]
    Sandbox(#[from] rvmm_sandbox::SandboxError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Boot and run the VM described by `config`; returns the process exit status (QEMU's meaning:
/// 0 for a clean power-off, reset under -no-reboot or a terminating signal; (v << 1) | 1 for an
/// isa-debug-exit write of v; [`FATAL_STATUS`] when the VM had to be stopped on an error).
pub fn run(config: &VmConfig) -> Result<i32, VmmError> {
    if config.qmp_only {
        return qmp::run_qmp_only(config);
    }
    builder::build_and_run(config)
}
