//! Compiling the lists into BPF (seccompiler) and installing a kind's filter on a thread.

use crate::{lists, syscalls, Mode, SandboxError, ThreadKind};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Per kind: the allow-list, and for kinds that never open files a second filter that answers
/// `openat` with EACCES instead of stopping rvmm (glibc's malloc reads
/// /proc/sys/vm/overcommit_memory once, on whichever thread first trims an arena, and copes
/// with the failure).
struct Programs {
    allow: BpfProgram,
    refuse: Option<BpfProgram>,
}

/// Each kind's programs, compiled the first time a thread of that kind starts (kinds rvmm does
/// not use this run, such as VNC without `-vnc`, cost nothing).
static PROGRAMS: [OnceLock<Result<Programs, String>>; 7] = [const { OnceLock::new() }; 7];

/// The mode the programs are compiled for, set by [`prepare`].
static MODE: OnceLock<Mode> = OnceLock::new();

/// Calls answered with an error (EACCES) rather than stopping rvmm, in kinds without them.
const REFUSED: &[&str] = &["openat"];

fn backend(kind: ThreadKind) -> impl Fn(seccompiler::BackendError) -> SandboxError {
    move |e| SandboxError::Compile {
        kind: kind.name(),
        source: seccompiler::Error::Backend(e),
    }
}

/// The rules of `kind`: syscall number -> conditions (empty: any arguments).
fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut map = BTreeMap::new();
    let names = kind.syscalls();
    let refuses = !names.contains(&"openat");
    for name in names.iter().chain(if refuses { REFUSED } else { &[] }) {
        let nr = syscalls::number(name).ok_or_else(|| SandboxError::Compile {
            kind: kind.name(),
            source: seccompiler::Error::Backend(seccompiler::BackendError::InvalidArgumentNumber),
        })?;
        let conditions = match *name {
            "ioctl" => ioctl_rules(kind)?,
            "tgkill" => {
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() } as u64;
                let c = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, pid)
                    .map_err(backend(kind))?;
                vec![SeccompRule::new(vec![c]).map_err(backend(kind))?]
            }
            _ => Vec::new(),
        };
        map.insert(nr, conditions);
    }
    Ok(map)
}

/// One rule per allowed request (argument 1, compared as 32 bits as the kernel does), plus any
/// request of type 0xAE (KVM) where the kind allows every KVM ioctl.
fn ioctl_rules(kind: ThreadKind) -> Result<Vec<SeccompRule>, SandboxError> {
    let (requests, any_kvm) = lists::ioctls(kind);
    let mut rules = Vec::new();
    for (_, request) in requests {
        let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
            .map_err(backend(kind))?;
        rules.push(SeccompRule::new(vec![c]).map_err(backend(kind))?);
    }
    if any_kvm {
        let c = SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xff00),
            0xAE00,
        )
        .map_err(backend(kind))?;
        rules.push(SeccompRule::new(vec![c]).map_err(backend(kind))?);
    }
    Ok(rules)
}

fn compile(kind: ThreadKind, mode: Mode) -> Result<Programs, SandboxError> {
    let mismatch = match mode {
        Mode::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let rules = rules(kind)?;
    let refuses = !kind.syscalls().contains(&"openat");
    let allow: BpfProgram =
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
            .map_err(backend(kind))?
            .try_into()
            .map_err(backend(kind))?;
    let refuse = if refuses {
        let mut map = BTreeMap::new();
        for name in REFUSED {
            if let Some(nr) = syscalls::number(name) {
                map.insert(nr, Vec::new());
            }
        }
        let p: BpfProgram = SeccompFilter::new(
            map,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            TargetArch::x86_64,
        )
        .map_err(backend(kind))?
        .try_into()
        .map_err(backend(kind))?;
        Some(p)
    } else {
        None
    };
    Ok(Programs { allow, refuse })
}

/// Record the mode; each kind compiles on first use.
pub(crate) fn prepare(mode: Mode) {
    let _ = MODE.set(mode);
}

/// Install `kind`'s filter(s) on the calling thread.
pub(crate) fn install(kind: ThreadKind) -> Result<(), SandboxError> {
    let install_err = |source| SandboxError::Install {
        kind: kind.name(),
        source,
    };
    let mode = *MODE
        .get()
        .ok_or(install_err(seccompiler::Error::EmptyFilter))?;
    let programs = PROGRAMS[kind.index()]
        .get_or_init(|| compile(kind, mode).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| SandboxError::Filter {
            kind: kind.name(),
            message: message.clone(),
        })?;
    if let Some(refuse) = &programs.refuse {
        seccompiler::apply_filter(refuse).map_err(install_err)?;
    }
    seccompiler::apply_filter(&programs.allow).map_err(install_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_syscall_and_every_kind_compiles() {
        for kind in ThreadKind::ALL {
            for name in kind.syscalls() {
                assert!(syscalls::number(name).is_some(), "{kind:?}: {name}");
            }
            compile(kind, Mode::Kill).unwrap();
            compile(kind, Mode::Log).unwrap();
        }
    }

    #[test]
    fn the_spawner_allows_what_its_threads_do() {
        let spawner = ThreadKind::Spawner.syscalls();
        for kind in [ThreadKind::Worker, ThreadKind::Vnc] {
            for name in kind.syscalls() {
                assert!(spawner.contains(&name), "{kind:?} needs {name}");
            }
            for (name, _) in lists::ioctls(kind).0 {
                assert!(
                    lists::ioctls(ThreadKind::Spawner)
                        .0
                        .iter()
                        .any(|(n, _)| n == name),
                    "{kind:?} needs ioctl {name}"
                );
            }
        }
    }

    #[test]
    fn kvm_run_is_the_well_known_number() {
        assert_eq!(lists::VCPU_IOCTLS[0].1, 0xAE80);
        // KVM_GET_REGS = _IOR(0xAE, 0x81, struct kvm_regs) = 0x8090ae81.
        assert_eq!(lists::VCPU_IOCTLS[1].1, 0x8090_ae81);
        assert_eq!(lists::ioctl_name(0xAE80), Some("KVM_RUN"));
    }
}
