//! Applies a [`CpuConfig`] to the CPUID table KVM supports, the way QEMU 7.2 expands and filters
//! an X86CPU (target/i386/cpu.c `x86_cpu_expand_features`, `x86_cpu_filter_features`,
//! `cpu_x86_cpuid`).

use std::fmt;

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use super::config::{CpuConfig, CpuModel};
use super::features::{word_index, Feature, Reg, FEATURE_WORDS};
use super::hyperv::{HypervConfig, KVM_LEAVES_WITH_HYPERV};
use super::models::{ModelDef, DEFAULT_PHYS_BITS};

/// CPUID.1:ECX bit 31; QEMU sets it in every model and treats it as always supported.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bit 15, perfmon and debug capability (IA32_PERF_CAPABILITIES).
const ECX_PDCM: u32 = 1 << 15;
/// KVM's leaves (0x40000000 signature, 0x40000001 features, ...).
const KVM_LEAVES: std::ops::Range<u32> = 0x4000_0000..0x5000_0000;

/// A requested feature bit the host's KVM does not offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnavailableFeature {
    pub word: usize,
    pub bit: u32,
}

impl UnavailableFeature {
    /// QEMU 7.2 `mark_unavailable_features`: "%s: %s%s%s [bit %d]".
    fn message(&self, prefix: &str) -> String {
        let word = &FEATURE_WORDS[self.word];
        let name = word.names[self.bit as usize];
        format!(
            "{prefix}: {}{}{name} [bit {}]",
            word.description(),
            if name.is_empty() { "" } else { "." },
            self.bit
        )
    }

    /// The warning for a feature whose prerequisite is off (QEMU's `x86_cpu_expand_features`).
    pub fn depends_message(&self) -> String {
        self.message("This feature depends on other features that were not requested")
    }
}

impl fmt::Display for UnavailableFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("host doesn't support requested feature"))
    }
}

/// QEMU 7.2 `feature_dependencies` between the CPUID words rvmm names: (feature, the word that
/// needs it). The VMX MSR and intel-pt leaf dependencies are not modelled. (7.2 has none from
/// `xsave`: `-xsave,+xsaveopt` keeps xsaveopt in the word, and leaf 0xD is zeroed.)
const FEATURE_DEPENDENCIES: &[(&str, &str)] = &[("svm", "npt")];

/// Errors while building the guest CPUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuidError {
    /// QEMU 7.2's realize error under `enforce` (after one warning per missing bit).
    #[error("-cpu: Host doesn't support requested features")]
    Enforce,
    #[error("-cpu: the CPUID table is full (KVM_MAX_CPUID_ENTRIES)")]
    TableFull,
}

/// The guest CPUID before per-vCPU topology is filled in, and what to tell the user.
#[derive(Debug, Clone)]
pub struct GuestCpuid {
    pub cpuid: CpuId,
    /// Requested bits the host lacks; they are left off.
    pub unavailable: Vec<UnavailableFeature>,
    /// Lines to print as warnings, in QEMU's words (the unavailable bits under `check`, ...).
    pub warnings: Vec<String>,
    enforce: bool,
}

impl GuestCpuid {
    /// Fails under `enforce` when a requested feature is unavailable; print
    /// [`GuestCpuid::warnings`] first, as QEMU does.
    pub fn check_enforce(&self) -> Result<(), CpuidError> {
        if self.enforce && !self.unavailable.is_empty() {
            return Err(CpuidError::Enforce);
        }
        Ok(())
    }
}

fn reg_mut(e: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

fn entry_mut(cpuid: &mut CpuId, leaf: u32, subleaf: u32) -> Option<&mut kvm_cpuid_entry2> {
    cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == leaf && e.index == subleaf)
}

fn entry(cpuid: &CpuId, leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == leaf && e.index == subleaf)
}

/// The value of feature word `w` in `cpuid` (0 when the leaf is absent).
fn word_value(cpuid: &CpuId, w: usize) -> u32 {
    let word = &FEATURE_WORDS[w];
    entry(cpuid, word.leaf, word.subleaf.unwrap_or(0)).map_or(0, |e| {
        let mut e = *e;
        *reg_mut(&mut e, word.reg)
    })
}

/// Builds the guest CPUID for `config` from `supported` (KVM_GET_SUPPORTED_CPUID, with any
/// host-specific hiding already applied). Host and max start from everything supported; a named
/// model from its table (QEMU's `x86_cpu_load_model`), whose bits count as requested: one the
/// host lacks is left off with a warning, as QEMU's `x86_cpu_filter_features`.
pub fn guest_cpuid(config: &CpuConfig, supported: &CpuId) -> Result<GuestCpuid, CpuidError> {
    let model = config.model.definition();
    let model_words = model.map(|(def, version)| def.feature_words(version));
    // QEMU's default phys-bits for a named model, without the "does not match" warning.
    let default_phys_bits =
        model.is_some() && !config.host_phys_bits && config.phys_bits.unwrap_or(0) == 0;
    let filled;
    let config = match model {
        Some((def, version)) => {
            filled = with_model_defaults(config, def, version);
            &filled
        }
        None => config,
    };
    let mut cpuid = supported.clone();
    let mut warnings = config.warnings.clone();
    let n = FEATURE_WORDS.len();
    let (mut on, mut off) = (vec![0u32; n], vec![0u32; n]);
    for s in &config.features {
        let (set, clear) = if s.on {
            (&mut on, &mut off)
        } else {
            (&mut off, &mut on)
        };
        set[s.feature.word] |= s.feature.mask;
        clear[s.feature.word] &= !s.feature.mask;
    }
    let hypervisor = word_index(1, None, Reg::Ecx);
    if config.setting(Feature::at(hypervisor, 31)) != Some(false) {
        on[hypervisor] |= ECX_HYPERVISOR;
    }
    let invtsc = Feature::find("invtsc").expect("invtsc in table");
    if config.migratable && config.setting(invtsc) != Some(true) {
        off[invtsc.word] |= invtsc.mask;
    }
    let host_word = |w: usize| {
        let host = word_value(supported, w);
        if w == hypervisor {
            host | ECX_HYPERVISOR
        } else {
            host
        }
    };
    let mut requested: Vec<u32> = (0..n)
        .map(|w| {
            let host = host_word(w);
            let base = match &model_words {
                Some(m) => m[w],
                // QEMU's max: only bits it names, less its no_autoenable_flags.
                None if config.model == CpuModel::Max => host & named_mask(w) & !no_autoenable(w),
                None => host,
            };
            (base | on[w]) & !off[w]
        })
        .collect();
    // QEMU's feature_dependencies: without the first feature the second word is cleared; a bit
    // of it the user asked for is unavailable ("depends on other features").
    let mut unavailable = Vec::new();
    for (from, to) in FEATURE_DEPENDENCIES {
        let from = Feature::find(from).expect("dependency in table");
        let to = Feature::find(to).expect("dependency in table").word;
        // host passes KVM's table through unless the user turned the feature off.
        let applies = config.model != CpuModel::Host || off[from.word] & from.mask != 0;
        if applies && requested[from.word] & from.mask == 0 {
            let explicit = requested[to] & on[to];
            let missing: Vec<_> = (0..32)
                .filter(|bit| explicit & (1 << bit) != 0)
                .map(|bit| UnavailableFeature { word: to, bit })
                .collect();
            if config.check || config.enforce {
                warnings.extend(missing.iter().map(|u| u.depends_message()));
            }
            unavailable.extend(missing);
            requested[to] = 0;
        }
    }
    let dependent = unavailable.len();
    for (w, word) in FEATURE_WORDS.iter().enumerate() {
        // kvm=off drops these leaves below; QEMU clears the word before filtering.
        if !config.kvm && KVM_LEAVES.contains(&word.leaf) {
            continue;
        }
        let host = host_word(w);
        let requested = requested[w];
        let missing = requested & !host;
        unavailable.extend(
            (0..32)
                .filter(|bit| missing & (1 << bit) != 0)
                .map(|bit| UnavailableFeature { word: w, bit }),
        );
        let value = requested & host;
        if value == word_value(&cpuid, w) {
            continue;
        }
        match entry_mut(&mut cpuid, word.leaf, word.subleaf.unwrap_or(0)) {
            Some(e) => *reg_mut(e, word.reg) = value,
            None => push(
                &mut cpuid,
                with_reg(word.leaf, word.subleaf.unwrap_or(0), word.reg, value),
            )?,
        }
    }
    if config.check || config.enforce {
        warnings.extend(unavailable[dependent..].iter().map(ToString::to_string));
    }
    if !config.kvm {
        cpuid.retain(|e| !KVM_LEAVES.contains(&e.function));
    }
    if !config.pmu {
        if let Some(e) = entry_mut(&mut cpuid, 0xa, 0) {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        }
        if let Some(e) = entry_mut(&mut cpuid, 1, 0) {
            e.ecx &= !ECX_PDCM;
        }
    }
    if !config.l3_cache {
        hide_l3(&mut cpuid);
    }
    if config.model == CpuModel::Max && config.model_id.is_none() {
        // QEMU's max under KVM takes the host's brand string (host_cpu_max_instance_init).
        let mut c = config.clone();
        c.model_id = host_brand_string();
        apply_identity(&c, &mut cpuid)?;
    } else {
        apply_identity(config, &mut cpuid)?;
    }
    apply_levels(config, &mut cpuid);
    if let Some(w) = apply_phys_bits(config, &mut cpuid) {
        if !default_phys_bits {
            warnings.push(w);
        }
    }
    hide_xsave_leaf(
        model.is_some() || config.model == CpuModel::Max,
        supported,
        &mut cpuid,
    );
    if model.is_some() || config.model == CpuModel::Max {
        // host keeps KVM's 80000001H:EDX, which has them on AMD hosts.
        copy_amd_aliases(&mut cpuid);
    }
    if config.hyperv.enabled() {
        add_hyperv_leaves(&config.hyperv, &mut cpuid)?;
    }
    Ok(GuestCpuid {
        cpuid,
        unavailable,
        warnings,
        enforce: config.enforce,
    })
}

/// Hyper-V's leaves take 0x40000000 and KVM's move up to 0x40000100 (QEMU's
/// `KVM_CPUID_SIGNATURE_NEXT`), where Linux also looks for them.
fn add_hyperv_leaves(hyperv: &HypervConfig, cpuid: &mut CpuId) -> Result<(), CpuidError> {
    for e in cpuid.as_mut_slice() {
        if KVM_LEAVES.contains(&e.function) {
            e.function += KVM_LEAVES_WITH_HYPERV - KVM_LEAVES.start;
            if e.function == KVM_LEAVES_WITH_HYPERV {
                // The signature leaf's EAX is the highest KVM leaf (KVM_CPUID_FEATURES).
                e.eax += KVM_LEAVES_WITH_HYPERV - KVM_LEAVES.start;
            }
        }
    }
    for leaf in hyperv.leaves() {
        push(cpuid, leaf)?;
    }
    Ok(())
}

/// The bits of feature word `w` that have a name.
fn named_mask(w: usize) -> u32 {
    FEATURE_WORDS[w]
        .names
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .fold(0, |m, (bit, _)| m | (1 << bit))
}

/// Every named feature of `cpuid` and whether it is on, by canonical name (`kvmclock`, two
/// bits, is on if either is): the props of QEMU's `query-cpu-model-expansion`.
pub fn feature_values(cpuid: &CpuId) -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for (w, word) in FEATURE_WORDS.iter().enumerate() {
        let value = word_value(cpuid, w);
        for (bit, name) in word.names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let on = value & (1 << bit) != 0;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 |= on,
                None => out.push((name, on)),
            }
        }
    }
    out
}

/// QEMU 7.2 `feature_word_info[].no_autoenable_flags`: bits `max` leaves off unless asked
/// (topoext in 80000001H:ECX, kvm-hint-dedicated in 40000001H:EDX).
fn no_autoenable(w: usize) -> u32 {
    let word = &FEATURE_WORDS[w];
    match (word.leaf, word.reg) {
        (0x8000_0001, Reg::Ecx) => 1 << 22,
        (0x4000_0001, Reg::Edx) => 1,
        _ => 0,
    }
}

/// The host's brand string (CPUID 80000002H-80000004H) up to its first NUL.
fn host_brand_string() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        if __cpuid(0x8000_0000).eax < 0x8000_0004 {
            return None;
        }
        let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004)
            .flat_map(|leaf| {
                let r = __cpuid(leaf);
                [r.eax, r.ebx, r.ecx, r.edx]
            })
            .flat_map(u32::to_le_bytes)
            .take_while(|b| *b != 0)
            .collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `config` with the model's level, xlevel, family, model, stepping, model-id and phys-bits
/// where the user set none.
fn with_model_defaults(config: &CpuConfig, def: &ModelDef, version: u32) -> CpuConfig {
    let mut c = config.clone();
    c.level.get_or_insert(def.level);
    c.xlevel.get_or_insert(def.xlevel);
    c.family.get_or_insert(def.family);
    c.model_number.get_or_insert(def.model);
    c.stepping.get_or_insert(def.stepping);
    c.model_id
        .get_or_insert_with(|| def.model_id(version).into());
    if c.phys_bits.unwrap_or(0) == 0 {
        c.phys_bits = Some(DEFAULT_PHYS_BITS);
    }
    c
}

/// Without XSAVE, leaf 0xD is all zeros (QEMU's `cpu_x86_cpuid`, case 0xD). `host` keeps
/// KVM's leaf when KVM itself reports no XSAVE (`always` is false only for it).
fn hide_xsave_leaf(always: bool, supported: &CpuId, cpuid: &mut CpuId) {
    let xsave = Feature::find("xsave").expect("xsave in table");
    let has = |c: &CpuId| word_value(c, xsave.word) & xsave.mask != 0;
    if (always || has(supported)) && !has(cpuid) {
        for e in cpuid
            .as_mut_slice()
            .iter_mut()
            .filter(|e| e.function == 0xd)
        {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        }
    }
}

/// CPUID.01H:EDX bits that AMD CPUs repeat in CPUID.80000001H:EDX (QEMU's
/// CPUID_EXT2_AMD_ALIASES).
const AMD_ALIASES: u32 = 0x0183_f3ff;

/// On an AMD vendor the aliased bits of 80000001H:EDX are those of 01H:EDX (QEMU's
/// `x86_cpu_realizefn`, IS_AMD_CPU).
fn copy_amd_aliases(cpuid: &mut CpuId) {
    let amd = entry(cpuid, 0, 0).is_some_and(|e| {
        (e.ebx, e.edx, e.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163) // "AuthenticAMD"
    });
    let Some(edx1) = entry(cpuid, 1, 0).map(|e| e.edx) else {
        return;
    };
    if let Some(e) = entry_mut(cpuid, 0x8000_0001, 0).filter(|_| amd) {
        e.edx = (e.edx & !AMD_ALIASES) | (edx1 & AMD_ALIASES);
    }
}

fn with_reg(function: u32, index: u32, reg: Reg, value: u32) -> kvm_cpuid_entry2 {
    let mut e = kvm_cpuid_entry2 {
        function,
        index,
        ..Default::default()
    };
    *reg_mut(&mut e, reg) = value;
    e
}

fn push(cpuid: &mut CpuId, entry: kvm_cpuid_entry2) -> Result<(), CpuidError> {
    cpuid.push(entry).map_err(|_| CpuidError::TableFull)
}

/// `l3-cache=off`: no L3 in leaf 4 / 0x8000001D (cache level in EAX[7:5]) nor 0x80000006 EDX.
fn hide_l3(cpuid: &mut CpuId) {
    for e in cpuid.as_mut_slice() {
        let level = (e.eax >> 5) & 7;
        if (e.function == 4 || e.function == 0x8000_001d) && level == 3 {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        }
        if e.function == 0x8000_0006 {
            e.edx = 0;
        }
    }
}

/// `vendor=`, `family=`, `model=`, `stepping=`, `model-id=` (QEMU's `x86_cpuid_set_*`).
fn apply_identity(config: &CpuConfig, cpuid: &mut CpuId) -> Result<(), CpuidError> {
    if let Some(vendor) = &config.vendor {
        let b = vendor.as_bytes();
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        for leaf in [0, 0x8000_0000] {
            if let Some(e) = entry_mut(cpuid, leaf, 0) {
                (e.ebx, e.edx, e.ecx) = (word(0), word(4), word(8));
            }
        }
    }
    for leaf in [1, 0x8000_0001] {
        if let Some(e) = entry_mut(cpuid, leaf, 0) {
            e.eax = version(e.eax, config);
        }
    }
    if let Some(id) = &config.model_id {
        // NUL-padded, cut at 48 bytes, as QEMU's x86_cpuid_set_model_id.
        let mut bytes = [0u8; 48];
        let len = id.len().min(48);
        bytes[..len].copy_from_slice(&id.as_bytes()[..len]);
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let r = |j: usize| u32::from_le_bytes(chunk[j..j + 4].try_into().expect("4 bytes"));
            let leaf = 0x8000_0002 + i as u32;
            if entry_mut(cpuid, leaf, 0).is_none() {
                push(cpuid, with_reg(leaf, 0, Reg::Eax, 0))?;
            }
            if let Some(e) = entry_mut(cpuid, leaf, 0) {
                (e.eax, e.ebx, e.ecx, e.edx) = (r(0), r(4), r(8), r(12));
            }
        }
    }
    Ok(())
}

/// CPUID.1:EAX with `family`/`model`/`stepping` encoded as QEMU's `x86_cpuid_version_set_*`.
fn version(mut eax: u32, config: &CpuConfig) -> u32 {
    if let Some(family) = config.family {
        eax &= !0x0ff0_0f00;
        eax |= if family > 0x0f {
            0xf00 | ((family - 0x0f) << 20)
        } else {
            family << 8
        };
    }
    if let Some(model) = config.model_number {
        eax &= !0xf00f0;
        eax |= ((model & 0xf) << 4) | ((model >> 4) << 16);
    }
    if let Some(stepping) = config.stepping {
        eax = (eax & !0xf) | (stepping & 0xf);
    }
    eax
}

/// `level=` and `xlevel=`: the highest leaf in leaf 0 / 0x80000000 EAX; leaves above it go.
fn apply_levels(config: &CpuConfig, cpuid: &mut CpuId) {
    if let Some(level) = config.level {
        if let Some(e) = entry_mut(cpuid, 0, 0) {
            e.eax = level;
        }
        cpuid.retain(|e| !(e.function > level && e.function < 0x4000_0000));
    }
    if let Some(xlevel) = config.xlevel {
        if let Some(e) = entry_mut(cpuid, 0x8000_0000, 0) {
            e.eax = xlevel;
        }
        let first_gone = xlevel.max(0x8000_0000) + 1;
        cpuid.retain(|e| !(e.function >= first_gone && e.function < 0xc000_0000));
    }
}

/// `phys-bits=`, `host-phys-bits=`, `host-phys-bits-limit=` in CPUID.80000008H:EAX[7:0]; returns
/// QEMU's warning when phys-bits differs from the host (target/i386/host-cpu.c).
fn apply_phys_bits(config: &CpuConfig, cpuid: &mut CpuId) -> Option<String> {
    let e = entry_mut(cpuid, 0x8000_0008, 0)?;
    let host = e.eax & 0xff;
    let bits = if config.host_phys_bits {
        match config.host_phys_bits_limit {
            Some(limit) if limit != 0 => host.min(limit),
            _ => host,
        }
    } else {
        match config.phys_bits {
            Some(bits) if bits != 0 => bits,
            _ => return None,
        }
    };
    e.eax = (e.eax & !0xff) | bits;
    (!config.host_phys_bits && bits != host)
        .then(|| format!("Host physical bits ({host}) does not match phys-bits property ({bits})"))
}

// IA32_FEATURE_CONTROL (MSR 0x3a) bits (Intel SDM vol. 4, table 2-2).
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMXON_ENABLED_OUTSIDE_SMX: u64 = 1 << 2;
const FEATURE_CONTROL_SGX_LC: u64 = 1 << 17;
const FEATURE_CONTROL_SGX: u64 = 1 << 18;

/// The value of fw_cfg file `etc/msr_feature_control` for a guest with this CPUID, or `None`
/// when QEMU adds no such file (hw/i386/fw_cfg.c `fw_cfg_build_feature_control`). The firmware
/// (SeaBIOS) writes it to IA32_FEATURE_CONTROL so that the guest may use VMX/SGX. LMCE is never
/// set: rvmm has no `lmce` property.
pub fn feature_control(cpuid: &CpuId) -> Option<u64> {
    let reg = |leaf, reg| {
        let mut e = *entry(cpuid, leaf, 0)?;
        Some(*reg_mut(&mut e, reg))
    };
    let mut bits = 0;
    if reg(1, Reg::Ecx).unwrap_or(0) & (1 << 5) != 0 {
        bits |= FEATURE_CONTROL_VMXON_ENABLED_OUTSIDE_SMX;
    }
    if reg(7, Reg::Ebx).unwrap_or(0) & (1 << 2) != 0 {
        bits |= FEATURE_CONTROL_SGX;
    }
    if reg(7, Reg::Ecx).unwrap_or(0) & (1 << 30) != 0 {
        bits |= FEATURE_CONTROL_SGX_LC;
    }
    (bits != 0).then_some(bits | FEATURE_CONTROL_LOCKED)
}
