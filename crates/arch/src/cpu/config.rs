//! The guest CPU as `-cpu` describes it: a model, feature bits turned on or off, and QEMU's
//! X86CPU properties that rvmm implements. Plain data; the CLI fills it in, [`super::guest_cpuid`]
//! applies it.

use super::features::Feature;
use super::models::{self, ModelDef};

/// Named CPU models. Under KVM `host` starts from every feature KVM supports, `max` from the
/// supported bits QEMU names; the others from their QEMU table ([`super::models`]), filtered by
/// what KVM supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuModel {
    #[default]
    Host,
    Max,
    /// A model of QEMU's table by the name it was given: unversioned ("EPYC", version 1), an
    /// alias of a version ("EPYC-IBPB") or versioned ("EPYC-v3").
    Named {
        name: &'static str,
        def: &'static ModelDef,
        version: u32,
        alias: bool,
    },
}

impl CpuModel {
    /// Every model, in `-cpu help` order.
    pub fn all() -> Vec<CpuModel> {
        let mut all = vec![CpuModel::Host, CpuModel::Max];
        for def in models::MODELS {
            let named = |name, version, alias| CpuModel::Named {
                name,
                def,
                version,
                alias,
            };
            all.push(named(def.name, 1, true));
            for v in def.versions {
                all.push(named(v.name, v.version, false));
                if let Some(alias) = v.alias {
                    all.push(named(alias, v.version, true));
                }
            }
        }
        all
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::all().into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuModel::Host => "host",
            CpuModel::Max => "max",
            CpuModel::Named { name, .. } => name,
        }
    }

    /// The model's QEMU table and version; `None` for `host` and `max`.
    pub fn definition(self) -> Option<(&'static ModelDef, u32)> {
        match self {
            CpuModel::Host | CpuModel::Max => None,
            CpuModel::Named { def, version, .. } => Some((def, version)),
        }
    }

    /// QEMU's QOM type name, used in its property error messages.
    pub fn type_name(self) -> String {
        format!("{}-x86_64-cpu", self.name())
    }

    /// QEMU 7.2's `-cpu help` description (`x86_cpu_list_entry`).
    pub fn description(self) -> String {
        match self {
            CpuModel::Host => "KVM processor with all supported host features".into(),
            CpuModel::Max => {
                "Enables all features supported by the accelerator in the current host".into()
            }
            // The unversioned name's version comes from the machine type (CPU_VERSION_AUTO).
            CpuModel::Named { name, def, .. } if name == def.name => {
                "(alias configured by machine type)".into()
            }
            CpuModel::Named {
                def,
                version,
                alias: true,
                ..
            } => format!("(alias of {}-v{version})", def.name),
            CpuModel::Named { def, version, .. } => {
                let note = def.versions.iter().find(|v| v.version == version);
                match note.and_then(|v| v.note) {
                    Some(note) => format!("{} [{note}]", def.model_id(version)),
                    None => def.model_id(version).into(),
                }
            }
        }
    }

    /// QEMU's `pmu` default: on only for `host` and `max` (`max_x86_cpu_initfn`).
    pub fn default_pmu(self) -> bool {
        self.definition().is_none()
    }
}

/// One feature property set by the user, in the order QEMU applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSetting {
    pub feature: Feature,
    pub on: bool,
}

/// Lowest and highest `phys-bits` QEMU accepts for a 64-bit CPU (TARGET_PHYS_ADDR_SPACE_BITS).
pub const PHYS_BITS_MIN: u32 = 32;
pub const PHYS_BITS_MAX: u32 = 52;

/// The guest CPU requested with `-cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuConfig {
    pub model: CpuModel,
    /// Feature bits in application order: `feat=on|off` in command-line order, then every
    /// `+feat`, then every `-feat` (QEMU's `x86_cpu_expand_features`). The last one wins.
    pub features: Vec<FeatureSetting>,
    /// `check`: warn about requested features the host lacks (QEMU's default: on).
    pub check: bool,
    /// `enforce`: a requested feature the host lacks is an error.
    pub enforce: bool,
    /// `migratable=on` drops invtsc unless requested; rvmm's default is off (see docs/CPU.md).
    pub migratable: bool,
    /// `pmu=off` hides the architectural PMU (leaf 0xA, PDCM).
    pub pmu: bool,
    /// `kvm=off` hides the KVM signature and paravirtual leaves (0x40000000...).
    pub kvm: bool,
    /// `l3-cache=off` hides the L3 cache from the cache leaves.
    pub l3_cache: bool,
    pub level: Option<u32>,
    pub xlevel: Option<u32>,
    /// Exactly 12 bytes.
    pub vendor: Option<String>,
    /// At most 48 bytes are used.
    pub model_id: Option<String>,
    pub family: Option<u32>,
    pub model_number: Option<u32>,
    pub stepping: Option<u32>,
    pub phys_bits: Option<u32>,
    pub host_phys_bits: bool,
    pub host_phys_bits_limit: Option<u32>,
    /// The Hyper-V enlightenments (`hv-*`).
    pub hyperv: super::hyperv::HypervConfig,
    /// Warnings from parsing the option (QEMU's "Ambiguous CPU model string"), printed with
    /// the CPUID warnings when the VM is built.
    pub warnings: Vec<String>,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            model: CpuModel::default(),
            features: Vec::new(),
            check: true,
            enforce: false,
            migratable: false,
            pmu: true,
            kvm: true,
            l3_cache: true,
            level: None,
            xlevel: None,
            vendor: None,
            model_id: None,
            family: None,
            model_number: None,
            stepping: None,
            phys_bits: None,
            host_phys_bits: false,
            host_phys_bits_limit: None,
            hyperv: Default::default(),
            warnings: Vec::new(),
        }
    }
}

/// A `-cpu` value that cannot describe a CPU; the messages are QEMU 7.2's realize errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuConfigError {
    // Two spaces, as QEMU's string concatenation prints them.
    #[error("phys-bits should be between {PHYS_BITS_MIN} and {PHYS_BITS_MAX}  (but is {0})")]
    PhysBits(u32),
    #[error(
        "host-phys-bits-limit should be between {PHYS_BITS_MIN} and {PHYS_BITS_MAX}  (but is {0})"
    )]
    PhysBitsLimit(u32),
}

impl CpuConfig {
    pub fn validate(&self) -> Result<(), CpuConfigError> {
        let range = PHYS_BITS_MIN..=PHYS_BITS_MAX;
        match (self.phys_bits, self.host_phys_bits_limit) {
            (Some(bits), _) if bits != 0 && !range.contains(&bits) => {
                Err(CpuConfigError::PhysBits(bits))
            }
            (_, Some(limit)) if limit != 0 && !range.contains(&limit) => {
                Err(CpuConfigError::PhysBitsLimit(limit))
            }
            _ => Ok(()),
        }
    }

    /// The last setting for any bit of `feature`, if the user set it.
    pub fn setting(&self, feature: Feature) -> Option<bool> {
        self.features
            .iter()
            .rev()
            .find(|s| s.feature.word == feature.word && s.feature.mask & feature.mask != 0)
            .map(|s| s.on)
    }
}
