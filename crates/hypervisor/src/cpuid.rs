//! Per-vCPU CPUID tables: KVM's supported leaves with each vCPU's APIC ID and the `-smp`
//! topology filled in, following QEMU's `cpu_x86_cpuid` (target/i386/cpu.c) for leaves 1, 4,
//! 0xB and 0x1F (Intel SDM vol. 2A, CPUID).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use rvmm_arch::topology::CpuTopology;

/// CPUID.1:EDX bit 28, more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;
// Level types of leaves 0xB and 0x1F (ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;
const LEVEL_DIE: u32 = 5;

/// KVM's paravirtual feature leaf (KVM_CPUID_FEATURES, Documentation/virt/kvm/x86/cpuid.rst).
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// The paravirtual features whose guest side makes hypercalls (`vmcall`/`vmmcall`):
/// PV_UNHALT (bit 7, KVM_HC_KICK_CPU), PV_SEND_IPI (11, KVM_HC_SEND_IPI), PV_SCHED_YIELD (13,
/// KVM_HC_SCHED_YIELD) and HC_MAP_GPA_RANGE (16).
pub const KVM_HYPERCALL_FEATURES: u32 = (1 << 7) | (1 << 11) | (1 << 13) | (1 << 16);

/// Stop offering the paravirtual features that need hypercalls. For hosts whose KVM emulates
/// guest kernel code, where an emulated `vmcall` never completes (docs/EMULATED-KVM.md); the
/// guest then uses the APIC for IPIs and plain spinning, as on hardware.
pub fn hide_hypercall_features(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == KVM_CPUID_FEATURES {
            entry.eax &= !KVM_HYPERCALL_FEATURES;
        }
    }
}

/// Copy `base` (the guest CPUID from `rvmm_arch::cpu::guest_cpuid`) for the vCPU with `apic_id`
/// in `topo`. Leaf 0xB is added only up to the highest basic leaf (leaf 0 EAX, `-cpu level=`).
pub fn vcpu_cpuid(base: &CpuId, apic_id: u32, topo: &CpuTopology) -> CpuId {
    let mut cpuid = base.clone();
    let per_pkg = topo.threads * topo.cores * topo.dies;
    let has_1f = base.as_slice().iter().any(|e| e.function == 0x1f);
    let max_leaf = base
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(u32::MAX, |e| e.eax);
    cpuid.retain(|e| e.function != 0xb && e.function != 0x1f);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | ((apic_id & 0xff) << 24) | (per_pkg.min(255) << 16);
                if per_pkg > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            4 => {
                // Deterministic cache parameters: EAX[31:26] APIC IDs per package for cores - 1,
                // EAX[25:14] APIC IDs sharing this cache - 1 (threads of a core for L1/L2, the
                // package for L3).
                if entry.eax & 0x1f == 0 {
                    continue;
                }
                let cores_field = ((1u32 << (topo.pkg_offset() - topo.core_offset())) - 1).min(63);
                let level = (entry.eax >> 5) & 7;
                let sharing = if level >= 3 {
                    (1u32 << topo.pkg_offset()) - 1
                } else {
                    (1u32 << topo.smt_width()) - 1
                }
                .min(0xfff);
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | (cores_field << 26);
            }
            _ => {}
        }
    }
    let mut leaf = |function: u32, index: u32, shift: u32, count: u32, level: u32| {
        // Ignore a full table: the guest then sees fewer topology levels, never a wrong ID.
        let _ = cpuid.push(kvm_cpuid_entry2 {
            function,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax: shift,
            ebx: count & 0xffff,
            ecx: (level << 8) | index,
            edx: apic_id,
            ..Default::default()
        });
    };
    // Leaf 0xB has no die level: its core level reaches up to the package (as QEMU).
    if max_leaf >= 0xb {
        leaf(0xb, 0, topo.core_offset(), topo.threads, LEVEL_SMT);
        leaf(0xb, 1, topo.pkg_offset(), per_pkg, LEVEL_CORE);
        leaf(0xb, 2, 0, 0, 0);
    }
    if has_1f {
        leaf(0x1f, 0, topo.core_offset(), topo.threads, LEVEL_SMT);
        if topo.dies > 1 {
            leaf(
                0x1f,
                1,
                topo.die_offset(),
                topo.threads * topo.cores,
                LEVEL_CORE,
            );
            leaf(0x1f, 2, topo.pkg_offset(), per_pkg, LEVEL_DIE);
            leaf(0x1f, 3, 0, 0, 0);
        } else {
            leaf(0x1f, 1, topo.pkg_offset(), per_pkg, LEVEL_CORE);
            leaf(0x1f, 2, 0, 0, 0);
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
    }

    #[test]
    fn hides_only_the_hypercall_features() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0x4000_0000,
                eax: 0x4000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: 0x0100_7efb,
                ..Default::default()
            },
        ])
        .unwrap();
        hide_hypercall_features(&mut c);
        // kvm-clock (0, 3), async PF (4), steal time (5), PV EOI (6), PV TLB flush (9) stay.
        assert_eq!(find(&c, KVM_CPUID_FEATURES, 0).eax, 0x0100_7efb & !0x1_2880);
        assert_eq!(find(&c, 0x4000_0000, 0).eax, 0x4000_0001);
    }

    #[test]
    fn fills_apic_id_and_topology() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 4,
                index: 0,
                eax: 0x21, // L1 data cache
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 4,
                index: 3,
                eax: 0x63, // L3 unified
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x1f,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        // -smp 12,sockets=2,dies=1,cores=3,threads=2: thread bit 0, cores bits 1-2, package bit 3.
        let topo = CpuTopology {
            sockets: 2,
            dies: 1,
            cores: 3,
            threads: 2,
        };
        let c = vcpu_cpuid(&base, 9, &topo);
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 9);
        assert_eq!((l1.ebx >> 16) & 0xff, 6);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&c, 4, 0).eax, 0x21 | (1 << 14) | (3 << 26));
        assert_eq!(find(&c, 4, 3).eax, 0x63 | (7 << 14) | (3 << 26));
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 9));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 9));
        let end = find(&c, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 9));
        assert_eq!(find(&c, 0x1f, 1).eax, 3);
        assert_eq!(c.as_slice().iter().filter(|e| e.function == 0xb).count(), 3);
    }

    #[test]
    fn dies_get_their_own_0x1f_level() {
        let base = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: 0x1f,
            ..Default::default()
        }])
        .unwrap();
        let topo = CpuTopology {
            sockets: 1,
            dies: 2,
            cores: 2,
            threads: 1,
        };
        let c = vcpu_cpuid(&base, 3, &topo);
        let die = find(&c, 0x1f, 2);
        assert_eq!((die.eax, die.ebx, die.ecx), (2, 4, 0x502));
        assert_eq!(find(&c, 0x1f, 3).ecx, 3);
        // A single-CPU package has no HTT bit and one logical processor.
        let c = vcpu_cpuid(
            &CpuId::from_entries(&[kvm_cpuid_entry2 {
                function: 1,
                edx: EDX_HTT,
                ..Default::default()
            }])
            .unwrap(),
            0,
            &CpuTopology::default(),
        );
        assert_eq!(find(&c, 1, 0).edx & EDX_HTT, 0);
        assert!(!c.as_slice().iter().any(|e| e.function == 0x1f));
        // -cpu level=7: no leaf 0xB above the highest basic leaf.
        let c = vcpu_cpuid(
            &CpuId::from_entries(&[kvm_cpuid_entry2 {
                function: 0,
                eax: 7,
                ..Default::default()
            }])
            .unwrap(),
            0,
            &CpuTopology::default(),
        );
        assert!(!c.as_slice().iter().any(|e| e.function == 0xb));
    }
}
