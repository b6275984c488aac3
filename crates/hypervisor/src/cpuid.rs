//! Per-vCPU CPUID tables: KVM's supported leaves with each vCPU's APIC ID filled in.

use kvm_bindings::CpuId;

/// CPUID.1:ECX bit 31, "running under a hypervisor".
const ECX_HYPERVISOR: u32 = 1 << 31;

/// Copy `base` (from KVM_GET_SUPPORTED_CPUID) for the vCPU with `apic_id` in a VM of `count` vCPUs.
pub fn vcpu_cpuid(base: &CpuId, apic_id: u32, count: u32) -> CpuId {
    let mut cpuid = base.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                let logical = count.clamp(1, 255);
                entry.ebx = (entry.ebx & 0x0000_ffff) | ((apic_id & 0xff) << 24) | (logical << 16);
                entry.ecx |= ECX_HYPERVISOR;
            }
            // Extended topology leaves: EDX is the x2APIC ID on every sub-leaf.
            0xb | 0x1f => entry.edx = apic_id,
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn fills_apic_id_and_hypervisor_bit() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 0,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        let c = vcpu_cpuid(&base, 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].edx, 3);
    }
}
