//! QEMU's names for CPUID feature bits: the CPUID words of QEMU 7.2's `feature_word_info`
//! (target/i386/cpu.c) and the alias properties `x86_cpu_initfn` registers.

use std::fmt;

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reg::Eax => "EAX",
            Reg::Ebx => "EBX",
            Reg::Ecx => "ECX",
            Reg::Edx => "EDX",
        })
    }
}

/// One 32-bit CPUID register holding feature bits, with QEMU's name for each bit ("" = none).
#[derive(Debug)]
pub struct FeatureWord {
    pub leaf: u32,
    /// The subleaf (ECX input) for leaves that have them.
    pub subleaf: Option<u32>,
    pub reg: Reg,
    pub names: [&'static str; 32],
}

impl FeatureWord {
    /// QEMU's `feature_word_description`: "CPUID.07H:EBX" (the subleaf is not shown).
    pub fn description(&self) -> String {
        format!("CPUID.{:02X}H:{}", self.leaf, self.reg)
    }
}

/// KVM's paravirtual feature leaf (Documentation/virt/kvm/x86/cpuid.rst).
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// In the order of QEMU 7.2's `FeatureWord` enum (target/i386/cpu.h), which is the order of
/// its "host doesn't support requested feature" warnings.
#[rustfmt::skip]
pub static FEATURE_WORDS: &[FeatureWord] = &[
    FeatureWord { leaf: 1, subleaf: None, reg: Reg::Edx, names: [
        "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce",
        "cx8", "apic", "", "sep", "mtrr", "pge", "mca", "cmov",
        "pat", "pse36", "pn", "clflush", "", "ds", "acpi", "mmx",
        "fxsr", "sse", "sse2", "ss", "ht", "tm", "ia64", "pbe",
    ] },
    FeatureWord { leaf: 1, subleaf: None, reg: Reg::Ecx, names: [
        "pni", "pclmulqdq", "dtes64", "monitor", "ds-cpl", "vmx", "smx", "est",
        "tm2", "ssse3", "cid", "", "fma", "cx16", "xtpr", "pdcm",
        "", "pcid", "dca", "sse4.1", "sse4.2", "x2apic", "movbe", "popcnt",
        "tsc-deadline", "aes", "xsave", "", "avx", "f16c", "rdrand", "hypervisor",
    ] },
    FeatureWord { leaf: 7, subleaf: Some(0), reg: Reg::Ebx, names: [
        "fsgsbase", "tsc-adjust", "sgx", "bmi1", "hle", "avx2", "fdp-excptn-only", "smep",
        "bmi2", "erms", "invpcid", "rtm", "", "zero-fcs-fds", "mpx", "",
        "avx512f", "avx512dq", "rdseed", "adx", "smap", "avx512ifma", "pcommit", "clflushopt",
        "clwb", "intel-pt", "avx512pf", "avx512er", "avx512cd", "sha-ni", "avx512bw", "avx512vl",
    ] },
    FeatureWord { leaf: 7, subleaf: Some(0), reg: Reg::Ecx, names: [
        "", "avx512vbmi", "umip", "pku", "", "waitpkg", "avx512vbmi2", "",
        "gfni", "vaes", "vpclmulqdq", "avx512vnni", "avx512bitalg", "", "avx512-vpopcntdq", "",
        "la57", "", "", "", "", "", "rdpid", "",
        "bus-lock-detect", "cldemote", "", "movdiri", "movdir64b", "", "sgxlc", "pks",
    ] },
    FeatureWord { leaf: 7, subleaf: Some(0), reg: Reg::Edx, names: [
        "", "", "avx512-4vnniw", "avx512-4fmaps", "fsrm", "", "", "",
        "avx512-vp2intersect", "", "md-clear", "", "", "", "serialize", "",
        "tsx-ldtrk", "", "", "arch-lbr", "", "", "amx-bf16", "avx512-fp16",
        "amx-tile", "amx-int8", "spec-ctrl", "stibp", "", "arch-capabilities", "core-capability", "ssbd",
    ] },
    FeatureWord { leaf: 7, subleaf: Some(1), reg: Reg::Eax, names: [
        "", "", "", "", "avx-vnni", "avx512-bf16", "", "",
        "", "", "fzrm", "fsrs", "fsrc", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 0x8000_0001, subleaf: None, reg: Reg::Edx, names: [
        "", "", "", "", "", "", "", "",
        "", "", "", "syscall", "", "", "", "",
        "", "", "", "", "nx", "", "mmxext", "",
        "", "fxsr-opt", "pdpe1gb", "rdtscp", "", "lm", "3dnowext", "3dnow",
    ] },
    FeatureWord { leaf: 0x8000_0001, subleaf: None, reg: Reg::Ecx, names: [
        "lahf-lm", "cmp-legacy", "svm", "extapic", "cr8legacy", "abm", "sse4a", "misalignsse",
        "3dnowprefetch", "osvw", "ibs", "xop", "skinit", "wdt", "", "lwp",
        "fma4", "tce", "", "nodeid-msr", "", "tbm", "topoext", "perfctr-core",
        "perfctr-nb", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 0x8000_0007, subleaf: None, reg: Reg::Edx, names: [
        "", "", "", "", "", "", "", "",
        "invtsc", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 0x8000_0008, subleaf: None, reg: Reg::Ebx, names: [
        "clzero", "", "xsaveerptr", "", "", "", "", "",
        "", "wbnoinvd", "", "", "ibpb", "", "ibrs", "amd-stibp",
        "", "", "", "", "", "", "", "",
        "amd-ssbd", "virt-ssbd", "amd-no-ssb", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 0xC000_0001, subleaf: None, reg: Reg::Edx, names: [
        "", "", "xstore", "xstore-en", "", "", "xcrypt", "xcrypt-en",
        "ace2", "ace2-en", "phe", "phe-en", "pmm", "pmm-en", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
    // "kvmclock" names two bits (KVM_FEATURE_CLOCKSOURCE and CLOCKSOURCE2), as in QEMU.
    FeatureWord { leaf: KVM_CPUID_FEATURES, subleaf: None, reg: Reg::Eax, names: [
        "kvmclock", "kvm-nopiodelay", "kvm-mmu", "kvmclock",
        "kvm-asyncpf", "kvm-steal-time", "kvm-pv-eoi", "kvm-pv-unhalt",
        "", "kvm-pv-tlb-flush", "", "kvm-pv-ipi",
        "kvm-poll-control", "kvm-pv-sched-yield", "kvm-asyncpf-int", "kvm-msi-ext-dest-id",
        "", "", "", "", "", "", "", "",
        "kvmclock-stable-bit", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: KVM_CPUID_FEATURES, subleaf: None, reg: Reg::Edx, names: [
        "kvm-hint-dedicated", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 0x8000_000A, subleaf: None, reg: Reg::Edx, names: [
        "npt", "lbrv", "svm-lock", "nrip-save", "tsc-scale", "vmcb-clean", "flushbyasid", "decodeassists",
        "", "", "pause-filter", "", "pfthreshold", "avic", "", "v-vmsave-vmload",
        "vgif", "", "", "", "", "", "", "",
        "", "", "", "", "svme-addr-chk", "", "", "",
    ] },
    FeatureWord { leaf: 0xD, subleaf: Some(1), reg: Reg::Eax, names: [
        "xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
    FeatureWord { leaf: 6, subleaf: None, reg: Reg::Eax, names: [
        "", "", "arat", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
        "", "", "", "", "", "", "", "",
    ] },
];

/// Alias properties of QEMU 7.2's `x86_cpu_initfn`: (alias, canonical name).
pub static ALIASES: &[(&str, &str)] = &[
    ("sse3", "pni"),
    ("pclmuldq", "pclmulqdq"),
    ("sse4-1", "sse4.1"),
    ("sse4-2", "sse4.2"),
    ("xd", "nx"),
    ("ffxsr", "fxsr-opt"),
    ("i64", "lm"),
    ("ds_cpl", "ds-cpl"),
    ("tsc_adjust", "tsc-adjust"),
    ("fxsr_opt", "fxsr-opt"),
    ("lahf_lm", "lahf-lm"),
    ("cmp_legacy", "cmp-legacy"),
    ("nodeid_msr", "nodeid-msr"),
    ("perfctr_core", "perfctr-core"),
    ("perfctr_nb", "perfctr-nb"),
    ("kvm_nopiodelay", "kvm-nopiodelay"),
    ("kvm_mmu", "kvm-mmu"),
    ("kvm_asyncpf", "kvm-asyncpf"),
    ("kvm_asyncpf_int", "kvm-asyncpf-int"),
    ("kvm_steal_time", "kvm-steal-time"),
    ("kvm_pv_eoi", "kvm-pv-eoi"),
    ("kvm_pv_unhalt", "kvm-pv-unhalt"),
    ("kvm_poll_control", "kvm-poll-control"),
    ("svm_lock", "svm-lock"),
    ("nrip_save", "nrip-save"),
    ("tsc_scale", "tsc-scale"),
    ("vmcb_clean", "vmcb-clean"),
    ("pause_filter", "pause-filter"),
    ("sse4_1", "sse4.1"),
    ("sse4_2", "sse4.2"),
];

/// The bits one feature property sets: a mask within one feature word (more than one bit only
/// for `kvmclock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Feature {
    /// Index into [`FEATURE_WORDS`].
    pub word: usize,
    pub mask: u32,
}

impl Feature {
    pub fn word(&self) -> &'static FeatureWord {
        &FEATURE_WORDS[self.word]
    }

    /// The canonical (QEMU property) name.
    pub fn name(&self) -> &'static str {
        self.word().names[self.mask.trailing_zeros() as usize]
    }

    /// The feature property spelled exactly `name`, a canonical name or an alias (QEMU's
    /// `object_property_find`: no `_`/`-` folding here; `feat=on` folds before looking up).
    pub fn find(name: &str) -> Option<Feature> {
        let name = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, canonical)| canonical);
        if name.is_empty() {
            return None;
        }
        FEATURE_WORDS.iter().enumerate().find_map(|(word, w)| {
            let mask = w
                .names
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == name)
                .fold(0u32, |m, (bit, _)| m | (1 << bit));
            (mask != 0).then_some(Feature { word, mask })
        })
    }

    /// The single-bit feature at `bit` of `word` (for tests and messages).
    pub fn at(word: usize, bit: u32) -> Feature {
        Feature {
            word,
            mask: 1 << bit,
        }
    }
}

/// The canonical feature names, sorted (QEMU's "Recognized CPUID flags"; aliases not listed).
pub fn canonical_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = FEATURE_WORDS
        .iter()
        .flat_map(|w| w.names.iter().copied())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Index of the word at (`leaf`, `subleaf`, `reg`); panics on a word the table lacks (only
/// for constants in this crate).
pub(crate) fn word_index(leaf: u32, subleaf: Option<u32>, reg: Reg) -> usize {
    FEATURE_WORDS
        .iter()
        .position(|w| w.leaf == leaf && w.subleaf == subleaf && w.reg == reg)
        .expect("feature word in table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_except_kvmclock_and_use_no_underscores() {
        let mut seen = std::collections::HashMap::new();
        for (wi, w) in FEATURE_WORDS.iter().enumerate() {
            for name in w.names.iter().filter(|n| !n.is_empty()) {
                assert!(!name.contains('_'), "{name}");
                if let Some(prev) = seen.insert(*name, wi) {
                    assert_eq!((*name, prev), ("kvmclock", wi));
                }
            }
        }
        for (alias, canonical) in ALIASES {
            assert!(Feature::find(canonical).is_some(), "{canonical}");
            assert!(!seen.contains_key(alias), "{alias} is also canonical");
        }
    }

    #[test]
    fn finds_canonical_names_and_aliases() {
        let vmx = Feature::find("vmx").unwrap();
        assert_eq!(
            (vmx.word().leaf, vmx.word().reg, vmx.mask),
            (1, Reg::Ecx, 1 << 5)
        );
        assert_eq!(vmx.name(), "vmx");
        for (alias, canonical) in [
            ("sse4_1", "sse4.1"),
            ("sse4-1", "sse4.1"),
            ("pclmuldq", "pclmulqdq"),
            ("lahf_lm", "lahf-lm"),
            ("sse3", "pni"),
            ("i64", "lm"),
        ] {
            assert_eq!(Feature::find(alias), Feature::find(canonical), "{alias}");
        }
        let clock = Feature::find("kvmclock").unwrap();
        assert_eq!(clock.mask, 0b1001);
        assert_eq!(clock.word().leaf, KVM_CPUID_FEATURES);
        // No folding: only listed aliases have underscores.
        assert_eq!(Feature::find("tsc_deadline"), None);
        assert_eq!(Feature::find("foo"), None);
        assert_eq!(Feature::find(""), None);
        let xsaveopt = Feature::find("xsaveopt").unwrap();
        assert_eq!(
            (xsaveopt.word().leaf, xsaveopt.word().subleaf),
            (0xd, Some(1))
        );
    }

    #[test]
    fn descriptions_match_qemu() {
        assert_eq!(
            Feature::find("vmx").unwrap().word().description(),
            "CPUID.01H:ECX"
        );
        assert_eq!(
            Feature::find("svm").unwrap().word().description(),
            "CPUID.80000001H:ECX"
        );
        assert_eq!(
            Feature::find("avx512f").unwrap().word().description(),
            "CPUID.07H:EBX"
        );
        assert_eq!(
            Feature::find("kvm-pv-eoi").unwrap().word().description(),
            "CPUID.40000001H:EAX"
        );
    }

    #[test]
    fn canonical_names_are_sorted_without_aliases() {
        let names = canonical_names();
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert!(!names.contains(&"sse4_1") && names.contains(&"vmx"));
    }
}
