//! A thin layer over KVM: open and check `/dev/kvm`, create the VM, its memory, irqchip and vCPUs,
//! and turn `KVM_RUN` results into a neutral [`VcpuExit`] that the VMM dispatches to its buses.

mod cpuid;
mod state;
mod vcpu;
mod vm;

pub use cpuid::{hide_hypercall_features, vcpu_cpuid};
pub use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId};
pub use state::{VcpuSnapshot, VmSnapshot};
pub use vcpu::{install_kick_handler, kick_signal, EmulationFailure, SystemEvent, Vcpu, VcpuExit};
pub use vm::{
    CoalescedRing, GsiRoute, IoEventAddr, MemoryFlags, MemorySlot, Vm, KERNEL_IOAPIC_PINS,
};

use kvm_ioctls::Kvm;
use std::path::Path;

/// The KVM API version every KVM since Linux 2.6.22 reports (api.rst, KVM_GET_API_VERSION).
pub const KVM_API_VERSION: i32 = 12;

/// Errors from the KVM layer. Each names the ioctl or resource that failed.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("{path}: no such device; is the kvm module loaded and is this an x86_64 host with virtualization enabled?")]
    KvmMissing { path: String },
    #[error("{path}: permission denied; add yourself to the 'kvm' group or run as root")]
    KvmPermission { path: String },
    #[error("{path}: cannot open: {source}")]
    KvmOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: KVM API version {found}, rvmm needs version {KVM_API_VERSION}")]
    ApiVersion { path: String, found: i32 },
    #[error("{path}: not a KVM device (KVM_GET_API_VERSION failed)")]
    NotKvm { path: String },
    #[error("KVM does not support {0}, which rvmm needs")]
    MissingCapability(&'static str),
    #[error("{op} for {addr} (len {len}, {}) failed: {source}", vm::datamatch_text(*.datamatch))]
    IoEvent {
        op: &'static str,
        addr: IoEventAddr,
        len: u32,
        datamatch: Option<u64>,
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    #[error("ioeventfd at {addr} (len {len}, {}): {reason}", vm::datamatch_text(*.datamatch))]
    InvalidIoEvent {
        addr: IoEventAddr,
        len: u32,
        datamatch: Option<u64>,
        reason: &'static str,
    },
    #[error("{op} for slot {slot} (guest {guest_addr:#x}, size {size:#x}, host {host_addr:#x}, {flags}) failed: {source}")]
    MemorySlot {
        op: &'static str,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
        flags: MemoryFlags,
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    #[error("memory slot at guest {guest_addr:#x}, size {size:#x}, host {host_addr:#x}: {reason}")]
    InvalidMemorySlot {
        guest_addr: u64,
        size: u64,
        host_addr: u64,
        reason: &'static str,
    },
    #[error("memory slot {slot} at guest {guest_addr:#x}, size {size:#x}, overlaps slot {other} at {other_addr:#x}, size {other_size:#x}")]
    SlotOverlap {
        slot: u32,
        guest_addr: u64,
        size: u64,
        other: u32,
        other_addr: u64,
        other_size: u64,
    },
    #[error("memory slot {slot} is not mapped")]
    UnknownSlot { slot: u32 },
    #[error("no free memory slot: KVM allows {limit} and all are in use")]
    NoFreeSlot { limit: u32 },
    #[error("KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")]
    MsrRefused { index: u32, value: u64 },
    #[error("{0}")]
    StateMismatch(&'static str),
    #[error("{op} failed: {source}")]
    Ioctl {
        op: &'static str,
        #[source]
        source: vmm_sys_util::errno::Error,
    },
}

pub type Result<T> = std::result::Result<T, HvError>;

/// KVM_GET_STATS_FD (_IO(KVMIO, 0xce)): a descriptor of the VM's or a vCPU's binary statistics.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;

/// The binary statistics descriptor of a VM or vCPU fd (Linux 5.14+; Documentation/virt/kvm/api.rst 4.133).
pub(crate) fn stats_fd(fd: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new descriptor or -1.
    let r = unsafe { libc::ioctl(fd, KVM_GET_STATS_FD as _) };
    if r < 0 {
        return Err(HvError::Ioctl {
            op: "KVM_GET_STATS_FD",
            source: vmm_sys_util::errno::Error::last(),
        });
    }
    // SAFETY: `r` is a new descriptor nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r) })
}

pub(crate) fn ioctl_err(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> HvError {
    move |source| HvError::Ioctl { op, source }
}

/// The system-wide KVM handle (`/dev/kvm`).
pub struct Hypervisor {
    kvm: Kvm,
}

impl Hypervisor {
    /// Open `/dev/kvm` and check its API version.
    pub fn open() -> Result<Self> {
        Self::open_path(Path::new("/dev/kvm"))
    }

    /// Open a KVM device node at `path` and check its API version.
    pub fn open_path(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        use std::os::unix::ffi::OsStrExt;
        let cpath =
            std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| HvError::KvmOpen {
                path: shown.clone(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?;
        let fd = Kvm::open_with_cloexec_at(&cpath, true).map_err(|e| {
            let io = std::io::Error::from_raw_os_error(e.errno());
            match io.kind() {
                std::io::ErrorKind::NotFound => HvError::KvmMissing {
                    path: shown.clone(),
                },
                std::io::ErrorKind::PermissionDenied => HvError::KvmPermission {
                    path: shown.clone(),
                },
                _ => HvError::KvmOpen {
                    path: shown.clone(),
                    source: io,
                },
            }
        })?;
        // SAFETY: `fd` was just opened by us and is owned by nobody else.
        let kvm = unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let found = kvm.get_api_version();
        if found < 0 {
            return Err(HvError::NotKvm { path: shown });
        }
        if found != KVM_API_VERSION {
            return Err(HvError::ApiVersion { path: shown, found });
        }
        Ok(Self { kvm })
    }

    /// The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS).
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// The CPUID leaves KVM can present to guests, as a base for each vCPU's table.
    pub fn supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))
    }

    /// Whether KVM has capability `cap` (KVM_CHECK_EXTENSION with a `KVM_CAP_*` number, for
    /// the capabilities kvm-ioctls has no name for).
    pub fn has_capability(&self, cap: u32) -> bool {
        self.kvm.check_extension_raw(u64::from(cap)) > 0
    }

    /// The MSRs KVM saves and restores for a vCPU (KVM_GET_MSR_INDEX_LIST).
    pub fn msr_index_list(&self) -> Result<Vec<u32>> {
        let list = self
            .kvm
            .get_msr_index_list()
            .map_err(ioctl_err("KVM_GET_MSR_INDEX_LIST"))?;
        Ok(list.as_slice().to_vec())
    }

    /// `KVM_CREATE_VM`.
    pub fn create_vm(&self) -> Result<Vm> {
        let fd = self.kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        // For snapshots; a host without the list saves no MSRs beyond the registers.
        let msrs = self
            .kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .unwrap_or_default();
        Ok(Vm::new(fd, msrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_named() {
        let err = Hypervisor::open_path(Path::new("/nonexistent/kvm"))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/kvm"), "{msg}");
        assert!(matches!(err, HvError::KvmMissing { .. }));
    }

    #[test]
    fn kvm_clock_can_be_held_across_a_pause() {
        let vm = Hypervisor::open().unwrap().create_vm().unwrap();
        let before = vm.clock().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let later = vm.clock().unwrap();
        assert!(later - before >= 50_000_000, "{before} -> {later}");
        // Setting the clock back to the saved value hides the 50+ ms gap, as `cont` does.
        vm.set_clock(before).unwrap();
        let after = vm.clock().unwrap();
        assert!(
            after >= before && after - before < 20_000_000,
            "{before} -> {after}"
        );
    }

    #[test]
    fn non_kvm_node_fails_version_check() {
        // /dev/null opens fine but KVM_GET_API_VERSION on it fails.
        let err = Hypervisor::open_path(Path::new("/dev/null")).err().unwrap();
        assert!(matches!(err, HvError::NotKvm { .. }), "{err}");
    }
}
