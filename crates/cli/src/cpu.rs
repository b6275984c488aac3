//! `-cpu MODEL[,+feat][,-feat][,feat=on|off][,prop=value]...` (QEMU 7.2 target/i386/cpu.c
//! `x86_cpu_parse_featurestr` and `x86_cpu_expand_features`).
//!
//! QEMU splits the features at every ',' (no ',,' escape) and skips empty ones. `+feat` and
//! `-feat` are collected aside; `name[=value]` (value "on" when absent, '_' folded to '-') is a
//! global property applied in order when the CPU object is created. Then every `+feat` is set,
//! then every `-feat` is cleared: `-feat` beats `+feat` and both beat `feat=on|off`, whatever
//! the order. `+feat`/`-feat` are looked up exactly (the listed aliases like `lahf_lm` exist).

use rvmm_arch::cpu::features::canonical_names;
use rvmm_arch::cpu::{CpuConfig, CpuConfigError, CpuModel, Feature, FeatureSetting, HypervFeature};
use thiserror::Error;

/// What `-cpu` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CpuArg {
    Help,
    Config(Box<CpuConfig>),
}

/// A property error, as QEMU's QOM reports it; wrapped by [`CpuArgError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PropError {
    #[error("Property '{ty}.{name}' not found")]
    NotFound { ty: String, name: String },
    #[error("Parameter '{0}' expects 'on' or 'off'")]
    Bool(String),
    #[error("Parameter '{0}' expects a number")]
    Number(String),
    #[error("Property .{name} doesn't take value {value} (minimum: {min}, maximum: {max})")]
    OutOfRange {
        name: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("Property '.{name}' doesn't take value '{value}'")]
    BadValue { name: String, value: String },
    #[error("Hyper-V enlightenment '{0}' is not supported by rvmm")]
    HyperV(String),
    #[error("property '{0}' is not supported by rvmm (see docs/CPU.md)")]
    Unsupported(String),
}

/// A `-cpu` error; `CliError` prefixes "-cpu: ".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CpuArgError {
    /// QEMU 7.2's `parse_cpu_option` error.
    #[error("unable to find CPU model '{0}'")]
    Model(String),
    /// QEMU `object_apply_global_props`: "can't apply global %s.%s=%s: ".
    #[error("can't apply global {ty}.{name}={value}: {source}")]
    Global {
        ty: String,
        name: String,
        value: String,
        #[source]
        source: Box<PropError>,
    },
    /// `+feat`/`-feat`: QEMU reports the property error itself.
    #[error(transparent)]
    Flag(PropError),
    #[error(transparent)]
    Config(#[from] CpuConfigError),
}

/// QEMU X86CPU properties rvmm knows but does not implement.
const UNSUPPORTED: &[&str] = &[
    "tsc-frequency",
    "min-level",
    "min-xlevel",
    "xlevel2",
    "min-xlevel2",
    "level-func7",
    "full-cpuid-auto-level",
    "legacy-cache",
    "host-cache-info",
    "ucode-rev",
    "cpuid-0xb",
    "fill-mtrr-mask",
    "vmware-cpuid-freq",
    "x-force-features",
    "kvm-pv-enforce-cpuid",
    "lmce",
    "lbr-fmt",
    "apic-id",
    "intel-pt-auto-level",
    // Feature bits QEMU keeps in MSRs, not CPUID (MSR_IA32_ARCH_CAPABILITIES & co.).
    "rdctl-no",
    "ibrs-all",
    "rsba",
    "skip-l1dfl-vmentry",
    "ssb-no",
    "mds-no",
    "pschange-mc-no",
    "tsx-ctrl",
    "taa-no",
    "split-lock-detect",
    "full-width-write",
];

/// Parses the `-cpu` argument.
pub(crate) fn parse_cpu(arg: &str) -> Result<CpuArg, CpuArgError> {
    let (model, features) = arg.split_once(',').unwrap_or((arg, ""));
    if model == "help" || model == "?" {
        return Ok(CpuArg::Help);
    }
    let model = CpuModel::from_name(model).ok_or_else(|| CpuArgError::Model(model.into()))?;
    let ty = model.type_name();
    let mut config = CpuConfig {
        model,
        pmu: model.default_pmu(),
        ..CpuConfig::default()
    };
    let (mut plus, mut minus, mut globals) = (Vec::new(), Vec::new(), Vec::new());
    let mut ambiguous = false;
    for item in features.split(',').filter(|s| !s.is_empty()) {
        if let Some(name) = item.strip_prefix('+') {
            plus.push(name);
            continue;
        }
        if let Some(name) = item.strip_prefix('-') {
            minus.push(name);
            continue;
        }
        let (name, value) = item.split_once('=').unwrap_or((item, "on"));
        let name = name.replace('_', "-");
        for (sign, list) in [('+', &plus), ('-', &minus)] {
            if list.contains(&name.as_str()) {
                config.warnings.push(format!(
                    "Ambiguous CPU model string. Don't mix both \"{sign}{name}\" and \"{name}={value}\""
                ));
                ambiguous = true;
            }
        }
        // QEMU's special case: tsc-freq is tsc-frequency.
        let name = if name == "tsc-freq" {
            "tsc-frequency".to_string()
        } else {
            name
        };
        globals.push((name, value));
    }
    if ambiguous {
        config.warnings.push(
            "Compatibility of ambiguous CPU model strings won't be kept on future QEMU versions"
                .into(),
        );
    }
    for (name, value) in globals {
        set_property(&mut config, &ty, &name, value).map_err(|source| CpuArgError::Global {
            ty: ty.clone(),
            name: name.clone(),
            value: value.to_string(),
            source: Box::new(source),
        })?;
    }
    for (names, value) in [(plus, "on"), (minus, "off")] {
        for name in names {
            set_property(&mut config, &ty, name, value).map_err(CpuArgError::Flag)?;
        }
    }
    config.validate()?;
    Ok(CpuArg::Config(Box::new(config)))
}

/// QEMU's `qapi_bool_parse`.
fn parse_bool(name: &str, value: &str) -> Result<bool, PropError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(PropError::Bool(name.into())),
    }
}

/// An integer as QEMU's string input visitor reads it (`qemu_strtoi64`, base 0).
fn parse_int(name: &str, value: &str) -> Result<i64, PropError> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let parsed = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse()
    };
    let n = parsed.map_err(|_| PropError::Number(name.into()))?;
    Ok(if negative { -n } else { n })
}

fn ranged(name: &str, value: &str, min: i64, max: i64) -> Result<u32, PropError> {
    let v = parse_int(name, value)?;
    if v < min || v > max {
        return Err(PropError::OutOfRange {
            name: name.into(),
            value: v,
            min,
            max,
        });
    }
    Ok(v as u32)
}

/// A `uint32` property: out-of-range is a parse error, as in QEMU.
fn uint32(name: &str, value: &str) -> Result<u32, PropError> {
    let v = parse_int(name, value)?;
    u32::try_from(v).map_err(|_| PropError::Number(name.into()))
}

/// Sets one X86CPU property on `config` (QEMU property names).
fn set_property(
    config: &mut CpuConfig,
    ty: &str,
    name: &str,
    value: &str,
) -> Result<(), PropError> {
    let flag = match name {
        "check" => Some(&mut config.check),
        "enforce" => Some(&mut config.enforce),
        "migratable" => Some(&mut config.migratable),
        "pmu" => Some(&mut config.pmu),
        "kvm" => Some(&mut config.kvm),
        "l3-cache" => Some(&mut config.l3_cache),
        "host-phys-bits" => Some(&mut config.host_phys_bits),
        _ => None,
    };
    if let Some(field) = flag {
        *field = parse_bool(name, value)?;
        return Ok(());
    }
    if let Some(feature) = Feature::find(name) {
        let on = parse_bool(name, value)?;
        config.features.push(FeatureSetting { feature, on });
        return Ok(());
    }
    match name {
        "level" => config.level = Some(uint32(name, value)?),
        "xlevel" => config.xlevel = Some(uint32(name, value)?),
        "phys-bits" => config.phys_bits = Some(uint32(name, value)?),
        "host-phys-bits-limit" => config.host_phys_bits_limit = Some(ranged(name, value, 0, 255)?),
        // QEMU 7.2 x86_cpuid_version_set_*: family up to 0xff + 0xf.
        "family" => config.family = Some(ranged(name, value, 0, 0xff + 0xf)?),
        "model" => config.model_number = Some(ranged(name, value, 0, 0xff)?),
        "stepping" => config.stepping = Some(ranged(name, value, 0, 0xf)?),
        "vendor" if value.len() == 12 => config.vendor = Some(value.into()),
        "vendor" => {
            return Err(PropError::BadValue {
                name: name.into(),
                value: value.into(),
            })
        }
        "model-id" => config.model_id = Some(value.into()),
        "hv-spinlocks" => config.hyperv.spinlocks = uint32(name, value)?,
        "hv-vendor-id" => config.hyperv.vendor_id = Some(value.into()),
        "hv-version-id-build" => config.hyperv.version.build = uint32(name, value)?,
        "hv-version-id-major" => {
            config.hyperv.version.major = ranged(name, value, 0, 0xffff)? as u16
        }
        "hv-version-id-minor" => {
            config.hyperv.version.minor = ranged(name, value, 0, 0xffff)? as u16
        }
        "hv-version-id-spack" => config.hyperv.version.service_pack = uint32(name, value)?,
        "hv-version-id-sbranch" => {
            config.hyperv.version.service_branch = ranged(name, value, 0, 0xff)? as u8
        }
        "hv-version-id-snumber" => config.hyperv.version.service_number = uint32(name, value)?,
        _ if name.starts_with("hv-") => match HypervFeature::from_name(&name[3..]) {
            Some(feature) => config.hyperv.set(feature, parse_bool(name, value)?),
            None => return Err(PropError::HyperV(name.into())),
        },
        _ if name.starts_with("vmx-") || UNSUPPORTED.contains(&name) => {
            return Err(PropError::Unsupported(name.into()))
        }
        _ => {
            return Err(PropError::NotFound {
                ty: ty.into(),
                name: name.into(),
            })
        }
    }
    Ok(())
}

/// The properties `-cpu MODEL,prop=value` takes, with their QOM types (`qom-list-properties`
/// on a CPU type): [`set_property`]'s names, every feature and its aliases, the Hyper-V ones.
pub fn cpu_properties() -> Vec<(String, &'static str)> {
    let mut props: Vec<(String, &'static str)> = [
        "check",
        "enforce",
        "migratable",
        "pmu",
        "kvm",
        "l3-cache",
        "host-phys-bits",
    ]
    .iter()
    .map(|n| (n.to_string(), "bool"))
    .collect();
    for (name, ty) in [
        ("level", "uint32"),
        ("xlevel", "uint32"),
        ("phys-bits", "uint32"),
        ("host-phys-bits-limit", "uint8"),
        ("family", "int"),
        ("model", "int"),
        ("stepping", "int"),
        ("vendor", "string"),
        ("model-id", "string"),
        ("hv-spinlocks", "uint32"),
        ("hv-vendor-id", "str"),
        ("hv-version-id-build", "uint32"),
        ("hv-version-id-major", "uint16"),
        ("hv-version-id-minor", "uint16"),
        ("hv-version-id-spack", "uint32"),
        ("hv-version-id-sbranch", "uint8"),
        ("hv-version-id-snumber", "uint32"),
    ] {
        props.push((name.into(), ty));
    }
    props.extend(
        canonical_names()
            .into_iter()
            .map(|n| (n.to_string(), "bool")),
    );
    props.extend(
        rvmm_arch::cpu::features::ALIASES
            .iter()
            .map(|(alias, _)| (alias.to_string(), "bool")),
    );
    props.extend(
        HypervFeature::ALL
            .iter()
            .map(|f| (format!("hv-{}", f.name()), "bool")),
    );
    props
}

/// `-cpu help`, laid out as QEMU 7.2's `x86_cpu_list` (flags wrapped as its `listflags`).
pub fn cpu_help_text() -> String {
    let mut out = String::from("Available CPUs:\n");
    for model in CpuModel::all() {
        out.push_str(&format!(
            "x86 {:<20}  {}\n",
            model.name(),
            model.description()
        ));
    }
    out.push_str("\nRecognized CPUID flags:\n");
    let mut len = 0;
    for name in canonical_names() {
        if len + name.len() + 1 >= 75 {
            out.push('\n');
            len = 0;
        }
        out.push_str(if len == 0 { "  " } else { " " });
        out.push_str(name);
        len += name.len() + 1;
    }
    out.push_str("\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arg: &str) -> CpuConfig {
        match parse_cpu(arg) {
            Ok(CpuArg::Config(c)) => *c,
            other => panic!("{arg}: {other:?}"),
        }
    }

    fn err(arg: &str) -> String {
        parse_cpu(arg).unwrap_err().to_string()
    }

    /// What QMP says a CPU type has is what `-cpu` takes.
    #[test]
    fn listed_properties_are_accepted() {
        for (name, ty) in cpu_properties() {
            let value = match (name.as_str(), ty) {
                ("vendor", _) => "GenuineIntel",
                (_, "bool") => "on",
                (_, "string" | "str") => "x",
                ("phys-bits" | "host-phys-bits-limit", _) => "40",
                _ => "1",
            };
            let mut c = CpuConfig::default();
            set_property(&mut c, "host-x86_64-cpu", &name, value)
                .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
        }
    }

    /// The final on/off of each named feature after QEMU's precedence.
    fn state(c: &CpuConfig, name: &str) -> Option<bool> {
        c.setting(Feature::find(name).unwrap())
    }

    #[test]
    fn models_and_help() {
        assert_eq!(config("host"), CpuConfig::default());
        assert_eq!(config("max").model, CpuModel::Max);
        assert_eq!(parse_cpu("help"), Ok(CpuArg::Help));
        assert_eq!(parse_cpu("?"), Ok(CpuArg::Help));
        let q = config("qemu64,+x2apic");
        assert_eq!((q.model.name(), q.pmu), ("qemu64", false));
        assert_eq!(state(&q, "x2apic"), Some(true));
        assert_eq!(config("Skylake-Server").model.name(), "Skylake-Server");
        assert_eq!(
            config("Skylake-Server-IBRS")
                .model
                .definition()
                .map(|(_, v)| v),
            Some(2)
        );
        assert_eq!(config("EPYC-v3").model.description(), "AMD EPYC Processor");
        assert!(config("max").pmu);
        assert_eq!(err("qemu65"), "unable to find CPU model 'qemu65'");
        assert_eq!(err("Host"), "unable to find CPU model 'Host'");
        assert_eq!(
            err("qemu64,+frobnicate"),
            "Property 'qemu64-x86_64-cpu.frobnicate' not found"
        );
    }

    #[test]
    fn every_feature_spelling() {
        let c = config("host,+vmx,-sse4.2,sse4.1=off,lahf_lm=on,+lahf_lm,avx2,tsc_deadline=no");
        assert_eq!(state(&c, "vmx"), Some(true));
        assert_eq!(state(&c, "sse4.2"), Some(false));
        assert_eq!(state(&c, "sse4.1"), Some(false));
        assert_eq!(state(&c, "lahf-lm"), Some(true));
        assert_eq!(state(&c, "avx2"), Some(true));
        assert_eq!(state(&c, "tsc-deadline"), Some(false));
        assert_eq!(state(&c, "x2apic"), None);
        // Aliases, both ways: pclmuldq/pclmulqdq, sse4_1/sse4-1/sse4.1, sse3/pni.
        for spelling in ["+pclmuldq", "pclmuldq=on", "+pclmulqdq", "pclmulqdq=yes"] {
            let c = config(&format!("host,{spelling}"));
            assert_eq!(state(&c, "pclmulqdq"), Some(true), "{spelling}");
        }
        for spelling in [
            "-sse4_1",
            "-sse4-1",
            "-sse4.1",
            "sse4_1=off",
            "sse4-1=false",
        ] {
            let c = config(&format!("host,{spelling}"));
            assert_eq!(state(&c, "sse4.1"), Some(false), "{spelling}");
        }
        assert_eq!(state(&config("max,+sse3"), "pni"), Some(true));
        assert_eq!(
            state(&config("host,kvm_pv_eoi=off"), "kvm-pv-eoi"),
            Some(false)
        );
        // Empty items are skipped, as strtok does.
        assert_eq!(state(&config("host,,+vmx,"), "vmx"), Some(true));
    }

    #[test]
    fn minus_beats_plus_beats_key_value_whatever_the_order() {
        let c = config("host,-vmx,+vmx");
        assert_eq!(state(&c, "vmx"), Some(false));
        let c = config("host,+vmx,vmx=off");
        assert_eq!(state(&c, "vmx"), Some(true));
        assert_eq!(
            c.warnings,
            [
                "Ambiguous CPU model string. Don't mix both \"+vmx\" and \"vmx=off\"",
                "Compatibility of ambiguous CPU model strings won't be kept on future QEMU versions",
            ]
        );
        let c = config("host,vmx=on,-vmx");
        assert_eq!(state(&c, "vmx"), Some(false));
        // Not ambiguous in QEMU's check: the flag comes after the key=value.
        assert!(c.warnings.is_empty());
        let c = config("host,vmx=on,vmx=off");
        assert_eq!(state(&c, "vmx"), Some(false));
    }

    #[test]
    fn properties() {
        let c = config(
            "host,migratable=off,level=0xd,xlevel=2147483656,vendor=GenuineIntel,model-id=My CPU,\
             family=6,model=85,stepping=4,pmu=off,check=off,enforce,kvm=off,l3-cache=off,\
             phys-bits=40,host-phys-bits=on,host-phys-bits-limit=39",
        );
        assert_eq!(
            c,
            CpuConfig {
                migratable: false,
                level: Some(0xd),
                xlevel: Some(0x8000_0008),
                vendor: Some("GenuineIntel".into()),
                model_id: Some("My CPU".into()),
                family: Some(6),
                model_number: Some(85),
                stepping: Some(4),
                pmu: false,
                check: false,
                enforce: true,
                kvm: false,
                l3_cache: false,
                phys_bits: Some(40),
                host_phys_bits: true,
                host_phys_bits_limit: Some(39),
                ..CpuConfig::default()
            }
        );
        // Booleans as flags, also with +/-.
        assert!(config("host,+enforce").enforce);
        assert!(!config("host,-kvm").kvm);
        assert!(config("host,migratable=on").migratable);
        assert_eq!(config("host,level=010").level, Some(8));
    }

    #[test]
    fn errors_name_the_property_as_qemu() {
        assert_eq!(
            err("host,foo"),
            "can't apply global host-x86_64-cpu.foo=on: Property 'host-x86_64-cpu.foo' not found"
        );
        assert_eq!(
            err("max,foo_bar=off"),
            "can't apply global max-x86_64-cpu.foo-bar=off: Property 'max-x86_64-cpu.foo-bar' not found"
        );
        assert_eq!(err("host,+foo"), "Property 'host-x86_64-cpu.foo' not found");
        // +/- names are not folded: tsc_deadline has no alias.
        assert_eq!(
            err("host,-tsc_deadline"),
            "Property 'host-x86_64-cpu.tsc_deadline' not found"
        );
        assert_eq!(
            err("host,vmx=maybe"),
            "can't apply global host-x86_64-cpu.vmx=maybe: Parameter 'vmx' expects 'on' or 'off'"
        );
        assert_eq!(
            err("host,level=x"),
            "can't apply global host-x86_64-cpu.level=x: Parameter 'level' expects a number"
        );
        assert_eq!(
            err("host,family=300"),
            "can't apply global host-x86_64-cpu.family=300: Property .family doesn't take value 300 (minimum: 0, maximum: 270)"
        );
        assert_eq!(
            err("host,stepping=16"),
            "can't apply global host-x86_64-cpu.stepping=16: Property .stepping doesn't take value 16 (minimum: 0, maximum: 15)"
        );
        assert_eq!(
            err("host,vendor=Intel"),
            "can't apply global host-x86_64-cpu.vendor=Intel: Property '.vendor' doesn't take value 'Intel'"
        );
        assert_eq!(
            err("host,hv_synic"),
            "can't apply global host-x86_64-cpu.hv-synic=on: Hyper-V enlightenment 'hv-synic' is not supported by rvmm"
        );
        assert!(err("host,tsc-freq=1G").contains("property 'tsc-frequency' is not supported"));
        assert!(err("host,+vmx-ept").contains("property 'vmx-ept' is not supported"));
        assert_eq!(
            err("host,phys-bits=64"),
            "phys-bits should be between 32 and 52  (but is 64)"
        );
    }

    #[test]
    fn help_lists_models_and_flags_like_qemu() {
        let help = cpu_help_text();
        assert!(help.starts_with(
            "Available CPUs:\nx86 host                  KVM processor with all supported host features\n"
        ));
        assert!(help.contains("\nx86 qemu64-v1             QEMU Virtual CPU version 2.5+\n"));
        assert!(help.contains("\nx86 EPYC-IBPB             (alias of EPYC-v2)\n"));
        assert!(help.contains("\nx86 qemu64                (alias configured by machine type)\n"));
        assert!(help.contains("\nRecognized CPUID flags:\n  3dnow 3dnowext"));
        assert!(help.contains(" vmx ") && help.contains(" sse4.1 ") && !help.contains("sse4_1"));
        assert!(help.lines().all(|l| l.len() <= 78 || l.starts_with("x86 ")));
    }
}
