//! CPUID building against a synthetic KVM_GET_SUPPORTED_CPUID table.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use super::*;

const SSE41: u32 = 1 << 19;
const SSE42: u32 = 1 << 20;
const VMX: u32 = 1 << 5;
const INVTSC: u32 = 1 << 8;

fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    }
}

/// An AMD-like host without VMX: 48 physical address bits, invtsc, an L3 cache.
fn supported() -> CpuId {
    CpuId::from_entries(&[
        leaf(0, 0, [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        leaf(
            1,
            0,
            [0x00a0_0f11, 0x0800, SSE41 | SSE42 | (1 << 15), 0x178b_fbff],
        ),
        leaf(4, 0, [0x121, 0, 0, 0]),
        leaf(4, 1, [0x163, 1, 2, 3]),
        leaf(7, 0, [0, 1 << 5, 0, 0]),
        leaf(0xa, 0, [0x0403_0802, 0, 0, 0]),
        leaf(0xd, 1, [0xf, 0, 0, 0]),
        leaf(
            0x4000_0000,
            0,
            [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
        ),
        leaf(0x4000_0001, 0, [0x0100_7efb, 0, 0, 0]),
        leaf(
            0x8000_0000,
            0,
            [0x8000_0008, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
        ),
        leaf(0x8000_0001, 0, [0x00a0_0f11, 0, 1 | (1 << 2), 1 << 29]),
        leaf(0x8000_0006, 0, [0, 0, 0x0200_6140, 0x0100_9140]),
        leaf(0x8000_0007, 0, [0, 0, 0, INVTSC]),
        leaf(0x8000_0008, 0, [0x3030, 0, 0, 0]),
    ])
    .unwrap()
}

fn get(c: &CpuId, function: u32, index: u32) -> Option<kvm_cpuid_entry2> {
    c.as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .copied()
}

fn with(features: &[(&str, bool)]) -> CpuConfig {
    CpuConfig {
        features: features
            .iter()
            .map(|(name, on)| FeatureSetting {
                feature: Feature::find(name).unwrap(),
                on: *on,
            })
            .collect(),
        ..CpuConfig::default()
    }
}

#[test]
fn default_passes_the_host_through_with_the_hypervisor_bit() {
    let g = guest_cpuid(&CpuConfig::default(), &supported()).unwrap();
    assert!(g.warnings.is_empty() && g.unavailable.is_empty());
    let l1 = get(&g.cpuid, 1, 0).unwrap();
    assert_eq!(l1.ecx, SSE41 | SSE42 | (1 << 15) | (1 << 31));
    for e in supported().as_slice().iter().filter(|e| e.function != 1) {
        assert_eq!(get(&g.cpuid, e.function, e.index), Some(*e));
    }
    assert_eq!(feature_control(&g.cpuid), None);
}

#[test]
fn clearing_features_and_aliases() {
    let g = guest_cpuid(&with(&[("sse4.2", false), ("sse4_1", false)]), &supported()).unwrap();
    let ecx = get(&g.cpuid, 1, 0).unwrap().ecx;
    assert_eq!(ecx & (SSE41 | SSE42), 0);
    assert!(g.warnings.is_empty());
    // The last setting of a bit wins.
    let g = guest_cpuid(&with(&[("sse4.2", false), ("sse4.2", true)]), &supported()).unwrap();
    assert_ne!(get(&g.cpuid, 1, 0).unwrap().ecx & SSE42, 0);
    let g = guest_cpuid(&with(&[("hypervisor", false)]), &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 1, 0).unwrap().ecx >> 31, 0);
}

#[test]
fn a_feature_the_host_lacks_is_filtered_with_qemus_warning() {
    let g = guest_cpuid(&with(&[("vmx", true), ("avx512f", true)]), &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 1, 0).unwrap().ecx & VMX, 0);
    assert_eq!(get(&g.cpuid, 7, 0).unwrap().ebx, 1 << 5);
    assert_eq!(
        g.warnings,
        [
            "host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]",
            "host doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]",
        ]
    );
    assert_eq!(g.check_enforce(), Ok(()));
    assert_eq!(feature_control(&g.cpuid), None);
    // check=off: filtered silently; enforce: an error after the warnings.
    let quiet = CpuConfig {
        check: false,
        ..with(&[("vmx", true)])
    };
    let g = guest_cpuid(&quiet, &supported()).unwrap();
    assert!(g.warnings.is_empty());
    assert_eq!(g.unavailable.len(), 1);
    let strict = CpuConfig {
        check: false,
        enforce: true,
        ..with(&[("vmx", true)])
    };
    let g = guest_cpuid(&strict, &supported()).unwrap();
    assert_eq!(g.warnings.len(), 1);
    assert_eq!(g.check_enforce(), Err(CpuidError::Enforce));
    assert_eq!(
        CpuidError::Enforce.to_string(),
        "-cpu: Host doesn't support requested features"
    );
}

#[test]
fn vmx_on_a_vmx_host_and_its_feature_control_value() {
    let mut host = supported();
    host.as_mut_slice()[1].ecx |= VMX;
    let g = guest_cpuid(&with(&[("vmx", true)]), &host).unwrap();
    assert!(g.warnings.is_empty());
    assert_ne!(get(&g.cpuid, 1, 0).unwrap().ecx & VMX, 0);
    assert_eq!(feature_control(&g.cpuid), Some(0b101));
    let g = guest_cpuid(&with(&[("vmx", false)]), &host).unwrap();
    assert_eq!(feature_control(&g.cpuid), None);
    // SGX (7.0:EBX bit 2) and SGX launch control (7.0:ECX bit 30).
    let sgx = CpuId::from_entries(&[leaf(7, 0, [0, 1 << 2, 1 << 30, 0])]).unwrap();
    assert_eq!(feature_control(&sgx), Some(1 | (1 << 17) | (1 << 18)));
}

#[test]
fn kvm_off_hides_the_kvm_leaves_and_their_features() {
    let config = CpuConfig {
        kvm: false,
        ..with(&[("kvm-pv-eoi", true)])
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert!(g.warnings.is_empty());
    assert!(!g
        .cpuid
        .as_slice()
        .iter()
        .any(|e| (0x4000_0000..0x5000_0000).contains(&e.function)));
    let g = guest_cpuid(&with(&[("kvm-pv-eoi", false)]), &supported()).unwrap();
    assert_eq!(
        get(&g.cpuid, 0x4000_0001, 0).unwrap().eax,
        0x0100_7efb & !(1 << 6)
    );
    let g = guest_cpuid(&with(&[("kvmclock", false)]), &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x4000_0001, 0).unwrap().eax & 0b1001, 0);
}

#[test]
fn migratable_drops_invtsc_unless_asked_for() {
    let config = CpuConfig {
        migratable: true,
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0007, 0).unwrap().edx, 0);
    let config = CpuConfig {
        migratable: true,
        ..with(&[("invtsc", true)])
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0007, 0).unwrap().edx, INVTSC);
}

#[test]
fn pmu_off_and_l3_cache_off() {
    let config = CpuConfig {
        pmu: false,
        l3_cache: false,
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0xa, 0).unwrap().eax, 0);
    assert_eq!(get(&g.cpuid, 1, 0).unwrap().ecx & (1 << 15), 0);
    assert_eq!(get(&g.cpuid, 4, 0).unwrap().eax, 0x121);
    let l3 = get(&g.cpuid, 4, 1).unwrap();
    assert_eq!((l3.eax, l3.ebx, l3.ecx, l3.edx), (0, 0, 0, 0));
    assert_eq!(get(&g.cpuid, 0x8000_0006, 0).unwrap().edx, 0);
    assert_eq!(get(&g.cpuid, 0x8000_0006, 0).unwrap().ecx, 0x0200_6140);
}

#[test]
fn levels_vendor_version_and_model_id() {
    let config = CpuConfig {
        level: Some(7),
        xlevel: Some(0x8000_0006),
        vendor: Some("GenuineIntel".into()),
        family: Some(6),
        model_number: Some(0x55),
        stepping: Some(4),
        model_id: Some("rvmm virtual CPU".into()),
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    let l0 = get(&g.cpuid, 0, 0).unwrap();
    assert_eq!(
        (l0.eax, l0.ebx, l0.edx, l0.ecx),
        (7, 0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    );
    assert!(get(&g.cpuid, 0xa, 0).is_none() && get(&g.cpuid, 0xd, 1).is_none());
    assert!(get(&g.cpuid, 7, 0).is_some());
    assert_eq!(get(&g.cpuid, 0x8000_0000, 0).unwrap().eax, 0x8000_0006);
    assert_eq!(get(&g.cpuid, 0x8000_0000, 0).unwrap().ebx, 0x756e_6547);
    assert!(get(&g.cpuid, 0x8000_0007, 0).is_none());
    assert!(get(&g.cpuid, 0x8000_0006, 0).is_some());
    assert!(get(&g.cpuid, 0x4000_0001, 0).is_some());
    // Family 6, model 0x55, stepping 4: 0x00050654 (a Skylake-SP signature).
    assert_eq!(get(&g.cpuid, 1, 0).unwrap().eax, 0x0005_0654);
    assert_eq!(get(&g.cpuid, 0x8000_0001, 0).unwrap().eax, 0x0005_0654);
    let brand = get(&g.cpuid, 0x8000_0002, 0).unwrap();
    assert_eq!(brand.eax.to_le_bytes(), *b"rvmm");
    assert_eq!(brand.edx.to_le_bytes(), *b" CPU");
    assert_eq!(get(&g.cpuid, 0x8000_0003, 0).unwrap().eax, 0);
    assert_eq!(get(&g.cpuid, 0x8000_0004, 0).unwrap().edx, 0);
    // Family above 0xf uses the extended family field.
    let g = guest_cpuid(
        &CpuConfig {
            family: Some(0x1a),
            ..CpuConfig::default()
        },
        &supported(),
    )
    .unwrap();
    assert_eq!(get(&g.cpuid, 1, 0).unwrap().eax, 0x00b0_0f11);
}

#[test]
fn phys_bits() {
    let config = CpuConfig {
        phys_bits: Some(40),
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0008, 0).unwrap().eax, 0x3028);
    assert_eq!(
        g.warnings,
        ["Host physical bits (48) does not match phys-bits property (40)"]
    );
    let config = CpuConfig {
        phys_bits: Some(40),
        host_phys_bits: true,
        host_phys_bits_limit: Some(39),
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0008, 0).unwrap().eax, 0x3027);
    assert!(g.warnings.is_empty());
    assert_eq!(
        CpuConfig {
            phys_bits: Some(60),
            ..CpuConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string(),
        "phys-bits should be between 32 and 52  (but is 60)"
    );
    assert_eq!(CpuConfig::default().validate(), Ok(()));
}

#[test]
fn qemu64_starts_from_its_table_and_warns_for_missing_bits() {
    let config = CpuConfig {
        model: CpuModel::from_name("qemu64").unwrap(),
        pmu: false,
        ..with(&[("sse4.1", true)])
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    let l0 = get(&g.cpuid, 0, 0).unwrap();
    assert_eq!(
        (l0.eax, l0.ebx),
        (0xd, 0x6874_7541),
        "level 0xd, host vendor"
    );
    let l1 = get(&g.cpuid, 1, 0).unwrap();
    // family 15, model 107 (0x6b), stepping 1.
    assert_eq!(l1.eax & 0x0fff_3fff, 0x0006_0fb1);
    // The table's pni, cx16 and KVM's default x2apic are missing on this host; sse4.1 was
    // asked for; sse4.2 and PDCM are not in qemu64.
    assert_eq!(l1.ecx, SSE41 | (1 << 31));
    assert_eq!(l1.edx & 0b11, 1, "fpu, no vme");
    for name in ["pni [bit 0]", "cx16 [bit 13]", "x2apic [bit 21]"] {
        assert!(
            g.warnings.iter().any(|w| w
                .starts_with("host doesn't support requested feature: CPUID.01H:ECX.")
                && w.ends_with(name)),
            "{name}: {:?}",
            g.warnings
        );
    }
    let ext1 = get(&g.cpuid, 0x8000_0001, 0).unwrap();
    // lahf-lm kept, svm off (kvm_default_props), lm plus the AMD aliases of 01H:EDX.
    assert_eq!(ext1.ecx, 1);
    assert_eq!(ext1.edx, (1 << 29) | (l1.edx & 0x0183_f3ff));
    assert_eq!(get(&g.cpuid, 0x8000_0000, 0).unwrap().eax, 0x8000_000a);
    assert_eq!(get(&g.cpuid, 0x8000_0008, 0).unwrap().eax & 0xff, 40);
    let brand = get(&g.cpuid, 0x8000_0002, 0).unwrap();
    assert_eq!(&brand.eax.to_le_bytes(), b"QEMU");
    assert_eq!(get(&g.cpuid, 0xa, 0).unwrap().eax, 0, "pmu=off");
    let kvm = get(&g.cpuid, 0x4000_0001, 0).unwrap();
    // kvmclock (0, 3), nopiodelay, asyncpf, steal-time, pv-eoi, stable bit; not pv-unhalt.
    assert_eq!(kvm.eax, 0x0100_007b);
    assert!(!g.warnings.iter().any(|w| w.contains("phys-bits")));
}

#[test]
fn minus_feature_beats_a_model_bit() {
    let config = CpuConfig {
        model: CpuModel::from_name("qemu64").unwrap(),
        ..with(&[("lahf-lm", false)])
    };
    let g = guest_cpuid(&config, &supported()).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0001, 0).unwrap().ecx, 0);
}

#[test]
fn max_keeps_named_bits_only_and_no_topoext() {
    let mut host = supported();
    for e in host.as_mut_slice() {
        match e.function {
            0x8000_0001 => e.ecx |= 1 << 22, // topoext
            7 => e.edx |= 1 << 1,            // no QEMU name
            _ => {}
        }
    }
    let max = CpuConfig {
        model: CpuModel::Max,
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&max, &host).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_0001, 0).unwrap().ecx, 1 | (1 << 2));
    assert_eq!(get(&g.cpuid, 7, 0).unwrap().edx, 0);
    let max_topoext = CpuConfig {
        model: CpuModel::Max,
        ..with(&[("topoext", true)])
    };
    let g = guest_cpuid(&max_topoext, &host).unwrap();
    assert_eq!(
        get(&g.cpuid, 0x8000_0001, 0).unwrap().ecx & (1 << 22),
        1 << 22
    );
    let g = guest_cpuid(&CpuConfig::default(), &host).unwrap();
    assert_eq!(
        get(&g.cpuid, 7, 0).unwrap().edx,
        1 << 1,
        "host passes it through"
    );
}

#[test]
fn a_word_whose_feature_is_off_is_cleared_and_explicit_bits_warn() {
    let mut host = supported();
    host.push(leaf(0x8000_000a, 0, [1, 0x40, 0, 0b1001]))
        .unwrap();
    // svm is on in this host (80000001H:ECX bit 2); -svm clears npt and nrip-save.
    let g = guest_cpuid(&with(&[("svm", false)]), &host).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_000a, 0).unwrap().edx, 0);
    assert!(g.warnings.is_empty());
    let g = guest_cpuid(&with(&[("npt", true), ("svm", false)]), &host).unwrap();
    assert_eq!(
        g.warnings,
        ["This feature depends on other features that were not requested: CPUID.8000000AH:EDX.npt [bit 0]"]
    );
    assert_eq!(g.unavailable.len(), 1);
    // qemu64 has svm=off under KVM: no SVM word at all.
    let q = CpuConfig {
        model: CpuModel::from_name("qemu64").unwrap(),
        ..CpuConfig::default()
    };
    let g = guest_cpuid(&q, &host).unwrap();
    assert_eq!(get(&g.cpuid, 0x8000_000a, 0).map_or(0, |e| e.edx), 0);
}
