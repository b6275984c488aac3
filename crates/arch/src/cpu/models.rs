//! Named CPU models: the entries of QEMU 7.2's `builtin_x86_defs` (target/i386/cpu.c) that rvmm
//! implements, written as QEMU feature names, and the properties QEMU changes for every model
//! under KVM (target/i386/kvm/kvm-cpu.c `kvm_default_props`).
//!
//! The vendor is not part of the table: under KVM QEMU's `x86_cpu_load_model` replaces the
//! model's vendor with the host's (`accel_uses_host_cpuid`), so rvmm keeps KVM's leaf 0.

use super::features::{Feature, FEATURE_WORDS};

/// One model of `builtin_x86_defs`, with its versions (`.versions`).
#[derive(Debug, PartialEq, Eq)]
pub struct ModelDef {
    pub name: &'static str,
    /// `.level`: highest basic leaf.
    pub level: u32,
    /// `.xlevel`: highest extended leaf.
    pub xlevel: u32,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// `.model_id`: the brand string.
    pub model_id: &'static str,
    /// Every bit of every `.features[FEAT_*]` word, by QEMU name.
    pub features: &'static [&'static str],
    /// `.versions`; version 1 has no props. The unversioned name is version 1 in QEMU 7.2's
    /// machine types (default_cpu_version 1).
    pub versions: &'static [ModelVersion],
}

/// One entry of a model's `.versions`: the props it sets on top of the earlier versions.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelVersion {
    /// "NAME-vN".
    pub name: &'static str,
    pub version: u32,
    /// `.alias`, another name for this version.
    pub alias: Option<&'static str>,
    /// `.note`, shown by `-cpu help`.
    pub note: Option<&'static str>,
    /// Feature props; VMX MSR props (`vmx-*`) are left out, rvmm does not model them.
    pub features: &'static [(&'static str, bool)],
    pub model_id: Option<&'static str>,
}

const fn v1(name: &'static str) -> ModelVersion {
    ModelVersion {
        name,
        version: 1,
        alias: None,
        note: None,
        features: &[],
        model_id: None,
    }
}

#[rustfmt::skip]
/// `builtin_x86_defs` "qemu64": QEMU's default model. family/model/stepping are 15/107/1 since
/// QEMU 6.1 (6/6/3 before, kept only by pc-*-6.0 and older machine types).
pub static QEMU64: ModelDef = ModelDef {
    name: "qemu64",
    level: 0xd,
    xlevel: 0x8000_000a,
    family: 15,
    model: 107,
    stepping: 1,
    // QEMU_HW_VERSION is "2.5+".
    model_id: "QEMU Virtual CPU version 2.5+",
    features: &[
        // FEAT_1_EDX: PPRO_FEATURES | MTRR | CLFLUSH | MCA | PSE36
        "fpu", "de", "pse", "tsc", "msr", "mce", "cx8", "pge", "cmov", "pat", "fxsr", "mmx",
        "sse", "sse2", "pae", "sep", "apic",
        "mtrr", "clflush", "mca", "pse36",
        // FEAT_1_ECX: SSE3 | CX16
        "pni", "cx16",
        // FEAT_8000_0001_EDX: LM | SYSCALL | NX
        "lm", "syscall", "nx",
        // FEAT_8000_0001_ECX: LAHF_LM | SVM
        "lahf-lm", "svm",
    ],
    versions: &[v1("qemu64-v1")],
};

/// `builtin_x86_defs` "Skylake-Server" (version 1, which `-cpu Skylake-Server` names in 7.2).
/// The FEAT_VMX_* words are MSRs, which rvmm does not model.
#[rustfmt::skip]
pub static SKYLAKE_SERVER: ModelDef = ModelDef {
    name: "Skylake-Server",
    level: 0xd,
    xlevel: 0x8000_0008,
    family: 6,
    model: 85,
    stepping: 4,
    model_id: "Intel Xeon Processor (Skylake)",
    features: &[
        // FEAT_1_EDX
        "vme", "sse2", "sse", "fxsr", "mmx", "clflush", "pse36", "pat", "cmov", "mca",
        "pge", "mtrr", "sep", "apic", "cx8", "mce", "pae", "msr", "tsc", "pse", "de", "fpu",
        // FEAT_1_ECX
        "avx", "xsave", "aes", "popcnt", "x2apic", "sse4.2", "sse4.1", "cx16", "ssse3",
        "pclmulqdq", "pni", "tsc-deadline", "fma", "movbe", "pcid", "f16c", "rdrand",
        // FEAT_8000_0001_EDX
        "lm", "pdpe1gb", "rdtscp", "nx", "syscall",
        // FEAT_8000_0001_ECX
        "abm", "lahf-lm", "3dnowprefetch",
        // FEAT_7_0_EBX
        "fsgsbase", "bmi1", "hle", "avx2", "smep", "bmi2", "erms", "invpcid", "rtm",
        "rdseed", "adx", "smap", "clwb", "avx512f", "avx512dq", "avx512bw", "avx512cd",
        "avx512vl", "clflushopt",
        // FEAT_7_0_ECX
        "pku",
        // FEAT_XSAVE (XSAVES comes with version 5)
        "xsaveopt", "xsavec", "xgetbv1",
        // FEAT_6_EAX
        "arat",
    ],
    versions: &[
        v1("Skylake-Server-v1"),
        ModelVersion {
            name: "Skylake-Server-v2",
            version: 2,
            alias: Some("Skylake-Server-IBRS"),
            note: None,
            features: &[("clflushopt", false), ("spec-ctrl", true)],
            model_id: Some("Intel Xeon Processor (Skylake, IBRS)"),
        },
        ModelVersion {
            name: "Skylake-Server-v3",
            version: 3,
            alias: Some("Skylake-Server-noTSX-IBRS"),
            note: None,
            features: &[("hle", false), ("rtm", false)],
            model_id: Some("Intel Xeon Processor (Skylake, IBRS, no TSX)"),
        },
        // vmx-eptp-switching only.
        ModelVersion {
            name: "Skylake-Server-v4",
            version: 4,
            alias: None,
            note: Some("IBRS, EPT switching, no TSX"),
            features: &[],
            model_id: None,
        },
        ModelVersion {
            name: "Skylake-Server-v5",
            version: 5,
            alias: None,
            note: Some("IBRS, XSAVES, EPT switching, no TSX"),
            features: &[("xsaves", true)],
            model_id: None,
        },
    ],
};

/// `builtin_x86_defs` "EPYC" (version 1). Its `.cache_info` (epyc_cache_info) is not modelled:
/// the cache leaves stay KVM's.
#[rustfmt::skip]
pub static EPYC: ModelDef = ModelDef {
    name: "EPYC",
    level: 0xd,
    xlevel: 0x8000_001e,
    family: 23,
    model: 1,
    stepping: 2,
    model_id: "AMD EPYC Processor",
    features: &[
        // FEAT_1_EDX
        "sse2", "sse", "fxsr", "mmx", "clflush", "pse36", "pat", "cmov", "mca", "pge",
        "mtrr", "sep", "apic", "cx8", "mce", "pae", "msr", "tsc", "pse", "de", "vme", "fpu",
        // FEAT_1_ECX
        "rdrand", "f16c", "avx", "xsave", "aes", "popcnt", "movbe", "sse4.2", "sse4.1",
        "cx16", "fma", "ssse3", "monitor", "pclmulqdq", "pni",
        // FEAT_8000_0001_EDX
        "lm", "rdtscp", "pdpe1gb", "fxsr-opt", "mmxext", "nx", "syscall",
        // FEAT_8000_0001_ECX
        "osvw", "3dnowprefetch", "misalignsse", "sse4a", "abm", "cr8legacy", "svm",
        "lahf-lm", "topoext",
        // FEAT_7_0_EBX
        "fsgsbase", "bmi1", "avx2", "smep", "bmi2", "rdseed", "adx", "smap", "clflushopt",
        "sha-ni",
        // FEAT_XSAVE
        "xsaveopt", "xsavec", "xgetbv1",
        // FEAT_6_EAX
        "arat",
        // FEAT_SVM
        "npt", "nrip-save",
    ],
    versions: &[
        v1("EPYC-v1"),
        ModelVersion {
            name: "EPYC-v2",
            version: 2,
            alias: Some("EPYC-IBPB"),
            note: None,
            features: &[("ibpb", true)],
            model_id: Some("AMD EPYC Processor (with IBPB)"),
        },
        ModelVersion {
            name: "EPYC-v3",
            version: 3,
            alias: None,
            note: None,
            features: &[
                ("ibpb", true),
                ("perfctr-core", true),
                ("clzero", true),
                ("xsaveerptr", true),
                ("xsaves", true),
            ],
            model_id: Some("AMD EPYC Processor"),
        },
    ],
};

/// The models rvmm implements, in `-cpu help` order.
pub static MODELS: &[&ModelDef] = &[&QEMU64, &SKYLAKE_SERVER, &EPYC];

/// `kvm_default_props` (QEMU 7.2 target/i386/kvm/kvm-cpu.c), applied to every named model
/// under KVM before the user's `-cpu` options: (name, on).
pub static KVM_DEFAULT_PROPS: &[(&str, bool)] = &[
    ("kvmclock", true),
    ("kvm-nopiodelay", true),
    ("kvm-asyncpf", true),
    ("kvm-steal-time", true),
    ("kvm-pv-eoi", true),
    ("kvmclock-stable-bit", true),
    ("x2apic", true),
    ("kvm-msi-ext-dest-id", false),
    ("acpi", false),
    ("monitor", false),
    ("svm", false),
];

/// QEMU's TCG_PHYS_ADDR_BITS: the `phys-bits` of a named model unless set (x86_cpu_realizefn).
pub const DEFAULT_PHYS_BITS: u32 = 40;

impl ModelDef {
    /// The versions up to `version` (QEMU's `x86_cpu_apply_version_props` applies them all).
    fn versions_to(&self, version: u32) -> impl Iterator<Item = &ModelVersion> {
        self.versions.iter().filter(move |v| v.version <= version)
    }

    /// The brand string of `version`.
    pub fn model_id(&self, version: u32) -> &'static str {
        self.versions_to(version)
            .filter_map(|v| v.model_id)
            .last()
            .unwrap_or(self.model_id)
    }

    /// The feature words of `version` after `kvm_default_props`, indexed like
    /// [`FEATURE_WORDS`].
    pub fn feature_words(&self, version: u32) -> Vec<u32> {
        let mut words = vec![0u32; FEATURE_WORDS.len()];
        for name in self.features {
            let f = Feature::find(name).expect("model feature in the name table");
            words[f.word] |= f.mask;
        }
        let props = self.versions_to(version).flat_map(|v| v.features.iter());
        for (name, on) in props.chain(KVM_DEFAULT_PROPS) {
            let f = Feature::find(name).expect("KVM default in the name table");
            if *on {
                words[f.word] |= f.mask;
            } else {
                words[f.word] &= !f.mask;
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_use_known_names_once() {
        for def in MODELS {
            let mut seen = std::collections::HashSet::new();
            for name in def.features {
                assert!(Feature::find(name).is_some(), "{}: {name}", def.name);
                assert!(seen.insert(name), "{}: {name} twice", def.name);
            }
            for v in def.versions {
                for (name, _) in v.features {
                    assert!(Feature::find(name).is_some(), "{}: {name}", v.name);
                }
                def.feature_words(v.version);
            }
        }
        assert_eq!(QEMU64.features.len(), 28);
    }

    #[test]
    fn qemu64_under_kvm() {
        let w = QEMU64.feature_words(1);
        let on = |n: &str| {
            let f = Feature::find(n).unwrap();
            w[f.word] & f.mask == f.mask
        };
        assert!(on("x2apic") && on("kvmclock") && on("lahf-lm") && on("pni"));
        assert!(!on("svm") && !on("acpi") && !on("monitor") && !on("sse4.1"));
    }

    #[test]
    fn versions_accumulate() {
        let on = |w: &[u32], n: &str| {
            let f = Feature::find(n).unwrap();
            w[f.word] & f.mask != 0
        };
        let v3 = SKYLAKE_SERVER.feature_words(3);
        assert!(!on(&v3, "hle") && !on(&v3, "clflushopt") && on(&v3, "spec-ctrl"));
        assert!(!on(&v3, "xsaves") && on(&SKYLAKE_SERVER.feature_words(5), "xsaves"));
        assert_eq!(
            SKYLAKE_SERVER.model_id(5),
            "Intel Xeon Processor (Skylake, IBRS, no TSX)"
        );
        assert_eq!(EPYC.model_id(3), "AMD EPYC Processor");
        assert_eq!(EPYC.model_id(2), "AMD EPYC Processor (with IBPB)");
    }
}
