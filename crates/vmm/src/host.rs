//! Recognising hosts whose KVM emulates guest kernel mode (docs/EMULATED-KVM.md).
//!
//! Such a KVM is the `kvm_pvm` module (a paravirtual KVM for hosts without hardware
//! virtualization): it is the only provider of /dev/kvm when `kvm_pvm` is loaded and neither
//! `kvm_intel` nor `kvm_amd` is, and /sys/module lists every loaded module (and every built-in
//! one with parameters, which both vendor modules have). Three stat() calls, a few microseconds:
//! no ioctl, no guest probe. A normal KVM host has `kvm_intel` or `kvm_amd`, so it never matches.

use std::path::Path;

/// The one-line note rvmm logs on such a host (at info level, which the CLI shows by default as
/// "rvmm: note: ...").
pub const NOTICE: &str = "this host's KVM (kvm_pvm) emulates guest kernel code: \
CPL0 runs slowly and Linux needs extra kernel parameters; see docs/EMULATED-KVM.md";

/// Whether /dev/kvm is served by `kvm_pvm`, judged from the module directory `sys_module`.
pub fn kvm_emulates_kernel_mode_in(sys_module: &Path) -> bool {
    sys_module.join("kvm_pvm").exists()
        && !sys_module.join("kvm_intel").exists()
        && !sys_module.join("kvm_amd").exists()
}

/// Whether this host's KVM emulates guest kernel mode.
pub fn kvm_emulates_kernel_mode() -> bool {
    kvm_emulates_kernel_mode_in(Path::new("/sys/module"))
}

/// Log [`NOTICE`] on such a host.
pub fn announce() {
    if kvm_emulates_kernel_mode() {
        tracing::info!("{NOTICE}");
    }
}

/// `-machine dump-guest-core=off` (guest RAM left out of core dumps, MADV_DONTDUMP) and
/// `-overcommit mem-lock=on` (every page of the process locked, mlockall), as QEMU applies them.
pub fn apply_memory_options(
    mem: &vm_memory::GuestMemoryMmap,
    process: &rvmm_cli::ProcessConfig,
) -> Result<(), crate::VmmError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    if !process.dump_guest_core {
        for region in mem.iter() {
            let Ok(host) = mem.get_host_address(region.start_addr()) else {
                continue;
            };
            // SAFETY: `host` and the region's length describe one mapping rvmm owns; advice
            // changes no memory contents.
            let r =
                unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_DONTDUMP) };
            if r != 0 {
                return Err(crate::VmmError::Io {
                    what: "-machine dump-guest-core=off (madvise)",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
    }
    // SAFETY: mlockall only changes how the kernel keeps this process's pages.
    if process.mem_lock && unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(crate::VmmError::Io {
            what: "-overcommit mem-lock=on (mlockall)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_only_pvm_without_a_vendor_module() {
        let dir = std::env::temp_dir().join(format!("rvmm-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        assert!(!kvm_emulates_kernel_mode_in(&dir), "plain kvm only");
        std::fs::create_dir(dir.join("kvm_pvm")).unwrap();
        assert!(kvm_emulates_kernel_mode_in(&dir));
        std::fs::create_dir(dir.join("kvm_intel")).unwrap();
        assert!(!kvm_emulates_kernel_mode_in(&dir), "VMX available");
        std::fs::remove_dir(dir.join("kvm_intel")).unwrap();
        std::fs::create_dir(dir.join("kvm_amd")).unwrap();
        assert!(!kvm_emulates_kernel_mode_in(&dir), "SVM available");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn detection_is_cheap() {
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(kvm_emulates_kernel_mode());
        }
        let each = start.elapsed() / 1000;
        eprintln!("host detection: {each:?} per call");
        assert!(each < std::time::Duration::from_millis(1), "{each:?}");
    }
}
