//! Hyper-V enlightenments (`-cpu ...,hv-relaxed,hv-vapic,hv-time,hv-spinlocks=N,...`): the
//! CPUID leaves 0x40000000-0x40000005 QEMU 7.2 builds for them (target/i386/kvm/kvm.c
//! `hyperv_fill_cpuids`, `kvm_hyperv_properties`, defaults from target/i386/cpu.c
//! `x86_cpu_hyperv_realize` and the `hv-*` properties), with KVM's own leaves moved to
//! 0x40000100 as QEMU moves them (`KVM_CPUID_SIGNATURE_NEXT`). KVM implements the
//! enlightenments' MSRs and hypercalls; the VMM only advertises them.

use kvm_bindings::kvm_cpuid_entry2;

/// QEMU's `HYPERV_SPINLOCK_NEVER_NOTIFY`, the `hv-spinlocks` default.
pub const SPINLOCK_NEVER_NOTIFY: u32 = 0xffff_ffff;
/// Where KVM's leaves go when the Hyper-V ones take 0x40000000.
pub const KVM_LEAVES_WITH_HYPERV: u32 = 0x4000_0100;

const HV_VENDOR_AND_MAX: u32 = 0x4000_0000;
const HV_INTERFACE: u32 = 0x4000_0001;
const HV_VERSION: u32 = 0x4000_0002;
const HV_FEATURES: u32 = 0x4000_0003;
const HV_ENLIGHTENMENT_INFO: u32 = 0x4000_0004;
const HV_IMPLEMENT_LIMITS: u32 = 0x4000_0005;

// CPUID 0x40000003 EAX (hyperv-proto.h).
const HV_VP_RUNTIME_AVAILABLE: u32 = 1 << 0;
const HV_TIME_REF_COUNT_AVAILABLE: u32 = 1 << 1;
const HV_APIC_ACCESS_AVAILABLE: u32 = 1 << 4;
const HV_HYPERCALL_AVAILABLE: u32 = 1 << 5;
const HV_VP_INDEX_AVAILABLE: u32 = 1 << 6;
const HV_RESET_AVAILABLE: u32 = 1 << 7;
const HV_REFERENCE_TSC_AVAILABLE: u32 = 1 << 9;
const HV_ACCESS_FREQUENCY_MSRS: u32 = 1 << 11;
// CPUID 0x40000003 EDX.
const HV_CPU_DYNAMIC_PARTITIONING_AVAILABLE: u32 = 1 << 3;
const HV_FREQUENCY_MSRS_AVAILABLE: u32 = 1 << 8;
const HV_GUEST_CRASH_MSR_AVAILABLE: u32 = 1 << 10;
// CPUID 0x40000004 EAX.
const HV_REMOTE_TLB_FLUSH_RECOMMENDED: u32 = 1 << 2;
const HV_APIC_ACCESS_RECOMMENDED: u32 = 1 << 3;
const HV_RELAXED_TIMING_RECOMMENDED: u32 = 1 << 5;
const HV_CLUSTER_IPI_RECOMMENDED: u32 = 1 << 10;
const HV_EX_PROCESSOR_MASKS_RECOMMENDED: u32 = 1 << 11;

// The MSRs whose presence in KVM_GET_MSR_INDEX_LIST tells that KVM implements a feature
// (QEMU's `has_msr_hv_*`, used when KVM_GET_SUPPORTED_HV_CPUID is not asked).
pub const HV_X64_MSR_VP_INDEX: u32 = 0x4000_0002;
pub const HV_X64_MSR_RESET: u32 = 0x4000_0003;
pub const HV_X64_MSR_VP_RUNTIME: u32 = 0x4000_0010;
pub const HV_X64_MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
pub const HV_X64_MSR_CRASH_CTL: u32 = 0x4000_0105;

/// The enlightenments rvmm offers, named as QEMU's `hv-*` properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HypervFeature {
    Relaxed,
    Vapic,
    Time,
    Crash,
    Reset,
    Vpindex,
    Runtime,
    Frequencies,
    Tlbflush,
    Ipi,
}

/// What the host's KVM implements (KVM_CAP_HYPERV* and the Hyper-V MSRs it lists).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HypervSupport {
    /// KVM_CAP_HYPERV: hypercalls, relaxed timing and the virtual APIC MSRs.
    pub hyperv: bool,
    /// KVM_CAP_HYPERV_TIME: the reference counter and TSC page.
    pub time: bool,
    /// KVM_CAP_HYPERV_TLBFLUSH.
    pub tlbflush: bool,
    /// KVM_CAP_HYPERV_SEND_IPI.
    pub send_ipi: bool,
    pub msr_vp_index: bool,
    pub msr_reset: bool,
    pub msr_vp_runtime: bool,
    pub msr_frequencies: bool,
    pub msr_crash: bool,
}

/// One CPUID bit group a feature sets: (leaf, register is EDX (else EAX), bits).
type Flag = (u32, bool, u32);

impl HypervFeature {
    pub const ALL: [HypervFeature; 10] = [
        Self::Relaxed,
        Self::Vapic,
        Self::Time,
        Self::Crash,
        Self::Reset,
        Self::Vpindex,
        Self::Runtime,
        Self::Frequencies,
        Self::Tlbflush,
        Self::Ipi,
    ];

    /// The property name without its `hv-` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relaxed => "relaxed",
            Self::Vapic => "vapic",
            Self::Time => "time",
            Self::Crash => "crash",
            Self::Reset => "reset",
            Self::Vpindex => "vpindex",
            Self::Runtime => "runtime",
            Self::Frequencies => "frequencies",
            Self::Tlbflush => "tlbflush",
            Self::Ipi => "ipi",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// QEMU's description, used in its error messages.
    pub fn description(self) -> &'static str {
        match self {
            Self::Relaxed => "relaxed timing (hv-relaxed)",
            Self::Vapic => "virtual APIC (hv-vapic)",
            Self::Time => "clocksources (hv-time)",
            Self::Crash => "crash MSRs (hv-crash)",
            Self::Reset => "reset MSR (hv-reset)",
            Self::Vpindex => "VP_INDEX MSR (hv-vpindex)",
            Self::Runtime => "VP_RUNTIME MSR (hv-runtime)",
            Self::Frequencies => "frequency MSRs (hv-frequencies)",
            Self::Tlbflush => "paravirtualized TLB flush (hv-tlbflush)",
            Self::Ipi => "paravirtualized IPI (hv-ipi)",
        }
    }

    /// The CPUID bits the feature sets (QEMU's `kvm_hyperv_properties[].flags`).
    fn flags(self) -> &'static [Flag] {
        match self {
            Self::Relaxed => &[(HV_ENLIGHTENMENT_INFO, false, HV_RELAXED_TIMING_RECOMMENDED)],
            Self::Vapic => &[(HV_FEATURES, false, HV_APIC_ACCESS_AVAILABLE)],
            Self::Time => &[(
                HV_FEATURES,
                false,
                HV_TIME_REF_COUNT_AVAILABLE | HV_REFERENCE_TSC_AVAILABLE,
            )],
            Self::Crash => &[(HV_FEATURES, true, HV_GUEST_CRASH_MSR_AVAILABLE)],
            Self::Reset => &[(HV_FEATURES, false, HV_RESET_AVAILABLE)],
            Self::Vpindex => &[(HV_FEATURES, false, HV_VP_INDEX_AVAILABLE)],
            Self::Runtime => &[(HV_FEATURES, false, HV_VP_RUNTIME_AVAILABLE)],
            Self::Frequencies => &[
                (HV_FEATURES, false, HV_ACCESS_FREQUENCY_MSRS),
                (HV_FEATURES, true, HV_FREQUENCY_MSRS_AVAILABLE),
            ],
            Self::Tlbflush => &[(
                HV_ENLIGHTENMENT_INFO,
                false,
                HV_REMOTE_TLB_FLUSH_RECOMMENDED | HV_EX_PROCESSOR_MASKS_RECOMMENDED,
            )],
            Self::Ipi => &[(
                HV_ENLIGHTENMENT_INFO,
                false,
                HV_CLUSTER_IPI_RECOMMENDED | HV_EX_PROCESSOR_MASKS_RECOMMENDED,
            )],
        }
    }

    /// The features this one needs (QEMU's `.dependencies`).
    fn dependencies(self) -> &'static [HypervFeature] {
        match self {
            Self::Tlbflush | Self::Ipi => &[Self::Vpindex],
            _ => &[],
        }
    }

    fn supported(self, host: &HypervSupport) -> bool {
        host.hyperv
            && match self {
                Self::Relaxed | Self::Vapic => true,
                Self::Time => host.time,
                Self::Crash => host.msr_crash,
                Self::Reset => host.msr_reset,
                Self::Vpindex => host.msr_vp_index,
                Self::Runtime => host.msr_vp_runtime,
                Self::Frequencies => host.msr_frequencies,
                Self::Tlbflush => host.tlbflush,
                Self::Ipi => host.send_ipi,
            }
    }
}

/// The `hv-*` part of a `-cpu` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervConfig {
    /// Enabled features, in no particular order, without duplicates.
    pub features: Vec<HypervFeature>,
    /// `hv-spinlocks`: retries before a guest notifies the hypervisor of a spinning lock.
    pub spinlocks: u32,
    /// `hv-vendor-id`, at most 12 bytes are used.
    pub vendor_id: Option<String>,
    /// `hv-version-id-build`, `-major`, `-minor`, `-spack`, `-sbranch`, `-snumber`.
    pub version: HypervVersion,
}

/// The Hyper-V version the guest is told (QEMU 7.2's defaults identify Windows Server 2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervVersion {
    pub build: u32,
    pub major: u16,
    pub minor: u16,
    pub service_pack: u32,
    pub service_branch: u8,
    pub service_number: u32,
}

impl Default for HypervVersion {
    fn default() -> Self {
        HypervVersion {
            build: 0x3839,
            major: 0x000a,
            minor: 0,
            service_pack: 0,
            service_branch: 0,
            service_number: 0,
        }
    }
}

impl Default for HypervConfig {
    fn default() -> Self {
        HypervConfig {
            features: Vec::new(),
            spinlocks: SPINLOCK_NEVER_NOTIFY,
            vendor_id: None,
            version: HypervVersion::default(),
        }
    }
}

/// A Hyper-V configuration the host or the feature set cannot give (QEMU 7.2's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervError {
    #[error("Hyper-V {} is not supported by kernel", .0.description())]
    NotSupported(HypervFeature),
    #[error("Hyper-V {} requires Hyper-V {}", .0.description(), .1.description())]
    Requires(HypervFeature, HypervFeature),
    /// QEMU 7.2 silently drops the leaves and then aborts setting the Hyper-V MSRs.
    #[error("Hyper-V enlightenments (hv-spinlocks) need KVM's Hyper-V support (KVM_CAP_HYPERV), which this host's KVM lacks")]
    NoHyperv,
}

impl HypervConfig {
    /// QEMU's `hyperv_enabled`, less its KVM capability check.
    pub fn enabled(&self) -> bool {
        self.spinlocks != SPINLOCK_NEVER_NOTIFY || !self.features.is_empty()
    }

    /// Turn `feature` on or off.
    pub fn set(&mut self, feature: HypervFeature, on: bool) {
        self.features.retain(|f| *f != feature);
        if on {
            self.features.push(feature);
            self.features.sort();
        }
    }

    pub fn has(&self, feature: HypervFeature) -> bool {
        self.features.contains(&feature)
    }

    /// QEMU's `kvm_hyperv_expand_features` without `hv-passthrough`: every feature asked for is
    /// implemented by KVM and has its dependencies, checked in QEMU's order.
    pub fn check(&self, host: &HypervSupport) -> Result<(), HypervError> {
        if !self.enabled() {
            return Ok(());
        }
        for feature in HypervFeature::ALL {
            if !self.has(feature) {
                continue;
            }
            if !feature.supported(host) {
                return Err(HypervError::NotSupported(feature));
            }
            if let Some(dep) = feature.dependencies().iter().find(|d| !self.has(**d)) {
                return Err(HypervError::Requires(feature, *dep));
            }
        }
        if !host.hyperv {
            return Err(HypervError::NoHyperv);
        }
        Ok(())
    }

    fn leaf_bits(&self, leaf: u32, edx: bool) -> u32 {
        self.features
            .iter()
            .flat_map(|f| f.flags())
            .filter(|(l, e, _)| *l == leaf && *e == edx)
            .fold(0, |acc, (_, _, bits)| acc | bits)
    }

    /// The leaves 0x40000000-0x40000005 (QEMU's `hyperv_fill_cpuids` for these features).
    pub fn leaves(&self) -> Vec<kvm_cpuid_entry2> {
        let vendor = self.vendor_id.as_deref().unwrap_or("Microsoft Hv");
        let mut id = [0u8; 12];
        let n = vendor.len().min(12);
        id[..n].copy_from_slice(&vendor.as_bytes()[..n]);
        let word = |i: usize| u32::from_le_bytes([id[i], id[i + 1], id[i + 2], id[i + 3]]);
        let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        let v = &self.version;
        let mut recommendations = self.leaf_bits(HV_ENLIGHTENMENT_INFO, false);
        if self.has(HypervFeature::Vapic) {
            recommendations |= HV_APIC_ACCESS_RECOMMENDED;
        }
        vec![
            leaf(
                HV_VENDOR_AND_MAX,
                HV_IMPLEMENT_LIMITS,
                word(0),
                word(4),
                word(8),
            ),
            // "Hv#1"
            leaf(HV_INTERFACE, 0x3123_7648, 0, 0, 0),
            leaf(
                HV_VERSION,
                v.build,
                (u32::from(v.major) << 16) | u32::from(v.minor),
                v.service_pack,
                (u32::from(v.service_branch) << 24) | (v.service_number & 0xff_ffff),
            ),
            leaf(
                HV_FEATURES,
                self.leaf_bits(HV_FEATURES, false) | HV_HYPERCALL_AVAILABLE,
                0,
                0,
                self.leaf_bits(HV_FEATURES, true) | HV_CPU_DYNAMIC_PARTITIONING_AVAILABLE,
            ),
            leaf(HV_ENLIGHTENMENT_INFO, recommendations, self.spinlocks, 0, 0),
            // x-hv-max-vps defaults to -1 on current machine types; 64 logical processors.
            leaf(HV_IMPLEMENT_LIMITS, 0xffff_ffff, 64, 0, 0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_supported() -> HypervSupport {
        HypervSupport {
            hyperv: true,
            time: true,
            tlbflush: true,
            send_ipi: true,
            msr_vp_index: true,
            msr_reset: true,
            msr_vp_runtime: true,
            msr_frequencies: true,
            msr_crash: true,
        }
    }

    fn regs(e: &kvm_cpuid_entry2) -> [u32; 4] {
        [e.eax, e.ebx, e.ecx, e.edx]
    }

    #[test]
    fn the_four_common_enlightenments_give_qemus_leaves() {
        let mut config = HypervConfig::default();
        assert!(!config.enabled());
        for f in [
            HypervFeature::Relaxed,
            HypervFeature::Vapic,
            HypervFeature::Time,
        ] {
            config.set(f, true);
        }
        config.spinlocks = 0x1fff;
        config.check(&all_supported()).unwrap();
        let leaves = config.leaves();
        let functions: Vec<u32> = leaves.iter().map(|e| e.function).collect();
        assert_eq!(functions, (0x4000_0000..=0x4000_0005).collect::<Vec<_>>());
        // "Microsoft Hv"
        assert_eq!(
            regs(&leaves[0]),
            [0x4000_0005, 0x7263_694d, 0x666f_736f, 0x7648_2074]
        );
        assert_eq!(regs(&leaves[1]), [0x3123_7648, 0, 0, 0]);
        assert_eq!(regs(&leaves[2]), [0x3839, 0x000a_0000, 0, 0]);
        // hypercall, APIC access, time ref count, reference TSC; dynamic partitioning.
        assert_eq!(regs(&leaves[3]), [0x232, 0, 0, 0x8]);
        // relaxed timing + APIC access recommended; spinlock retries.
        assert_eq!(regs(&leaves[4]), [0x28, 0x1fff, 0, 0]);
        assert_eq!(regs(&leaves[5]), [0xffff_ffff, 64, 0, 0]);
    }

    #[test]
    fn spinlocks_alone_enable_the_leaves() {
        let config = HypervConfig {
            spinlocks: 0xfff,
            vendor_id: Some("abcdefghijklmnop".into()),
            ..Default::default()
        };
        assert!(config.enabled());
        let leaves = config.leaves();
        assert_eq!(
            regs(&leaves[0])[1..],
            [
                u32::from_le_bytes(*b"abcd"),
                u32::from_le_bytes(*b"efgh"),
                u32::from_le_bytes(*b"ijkl")
            ]
        );
        assert_eq!(regs(&leaves[3]), [0x20, 0, 0, 0x8]);
        assert_eq!(regs(&leaves[4]), [0, 0xfff, 0, 0]);
    }

    #[test]
    fn missing_support_and_dependencies_use_qemus_words() {
        let mut config = HypervConfig::default();
        config.set(HypervFeature::Relaxed, true);
        assert_eq!(
            config
                .check(&HypervSupport::default())
                .unwrap_err()
                .to_string(),
            "Hyper-V relaxed timing (hv-relaxed) is not supported by kernel"
        );
        config.set(HypervFeature::Ipi, true);
        assert_eq!(
            config.check(&all_supported()).unwrap_err().to_string(),
            "Hyper-V paravirtualized IPI (hv-ipi) requires Hyper-V VP_INDEX MSR (hv-vpindex)"
        );
        config.set(HypervFeature::Vpindex, true);
        config.check(&all_supported()).unwrap();
        let leaves = config.leaves();
        assert_eq!(leaves[3].eax, 0x20 | 0x40);
        assert_eq!(leaves[4].eax, 0x20 | 0x400 | 0x800);
        let spin_only = HypervConfig {
            spinlocks: 0x1000,
            ..Default::default()
        };
        assert_eq!(
            spin_only.check(&HypervSupport::default()),
            Err(HypervError::NoHyperv)
        );
    }
}
