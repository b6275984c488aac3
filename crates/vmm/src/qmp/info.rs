//! QMP commands that describe rvmm itself rather than a running guest: what libvirt asks when it
//! probes an emulator (`-machine none`). Every answer is generated from what rvmm implements:
//! the device registry (`rvmm_cli::qdev`), the CPU models and features (`rvmm_arch::cpu`), the
//! command-line option table and the command table. They need no VM, so the same handlers serve
//! `-machine none` and a running guest.

use super::commands::{no_args, unexpected, Args};
use super::protocol::{ErrorClass, QmpError};
use rvmm_arch::cpu::{feature_values, guest_cpuid, CpuConfig, CpuModel, FEATURE_WORDS};
use rvmm_cli::qdev::{self, PropDefault, ABSTRACT_TYPES, DEVICE_TYPES};
use rvmm_cli::MachineKind;
use rvmm_hypervisor::CpuId;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

type Handler = fn(&Args) -> Result<Value, QmpError>;

/// The commands of this module, in `query-commands` order.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("query-target", query_target),
    ("query-machines", query_machines),
    ("qom-list-types", qom_list_types),
    ("device-list-properties", device_list_properties),
    ("qom-list-properties", qom_list_properties),
    ("query-cpu-definitions", query_cpu_definitions),
    ("query-cpu-model-expansion", query_cpu_model_expansion),
    ("query-command-line-options", query_command_line_options),
    ("query-qmp-schema", |args| {
        no_args(args)?;
        Ok(super::schema::schema())
    }),
    ("query-sev-capabilities", query_sev_capabilities),
    ("query-sgx-capabilities", query_sgx_capabilities),
    ("query-sgx", query_sgx_capabilities),
];

/// Run `name` if it is one of this module's commands.
pub fn dispatch(name: &str, args: &Args) -> Option<Result<Value, QmpError>> {
    COMMANDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, handler)| handler(args))
}

/// What KVM offers on this host, read once before any sandbox closes /dev/kvm.
pub struct HostCpu {
    /// KVM_GET_SUPPORTED_CPUID with the host-specific hiding applied (builder.rs).
    pub supported: CpuId,
}

static HOST: OnceLock<HostCpu> = OnceLock::new();

/// Record what KVM offers (once per process; later calls are ignored).
pub fn set_host(host: HostCpu) {
    let _ = HOST.set(host);
}

fn host() -> Result<&'static HostCpu, QmpError> {
    HOST.get()
        .ok_or_else(|| QmpError::generic("rvmm: KVM's CPUID was not read at start-up"))
}

fn string_arg<'a>(args: &'a Args, key: &str) -> Result<Option<&'a str>, QmpError> {
    match args.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(QmpError::generic(format!(
            "Invalid parameter type for '{key}', expected: string"
        ))),
    }
}

fn only(args: &Args, keys: &[&str]) -> Result<(), QmpError> {
    match args.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(unexpected(k)),
        None => Ok(()),
    }
}

fn required<'a>(args: &'a Args, key: &str) -> Result<&'a str, QmpError> {
    string_arg(args, key)?.ok_or_else(|| QmpError::generic(format!("Parameter '{key}' is missing")))
}

fn device_not_found(desc: String) -> QmpError {
    QmpError {
        class: ErrorClass::DeviceNotFound,
        desc,
    }
}

fn query_target(args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Ok(json!({"arch": "x86_64"}))
}

/// The machine types rvmm builds (QEMU 7.2's, which is what every versioned name gets) and
/// `none`. No CPU hotplug and no NUMA.
fn machines() -> Vec<Value> {
    let default_cpu = CpuModel::Host.type_name();
    let machine = |name: &str, alias: Option<&str>, kind: Option<MachineKind>| {
        let mut m = json!({
            "name": name,
            "cpu-max": kind.map_or(1, MachineKind::max_cpus),
            "hotpluggable-cpus": false,
            "numa-mem-supported": false,
            "deprecated": false,
            "default-cpu-type": default_cpu,
        });
        if let Some(alias) = alias {
            m["alias"] = json!(alias);
        }
        if kind == Some(MachineKind::Pc) {
            m["is-default"] = json!(true);
        }
        // -machine memory-backend= takes a memory-backend-ram of that id (QEMU's pc.ram).
        if matches!(kind, Some(MachineKind::Pc | MachineKind::Q35)) {
            m["default-ram-id"] = json!("pc.ram");
        }
        m
    };
    vec![
        machine("pc-i440fx-7.2", Some("pc"), Some(MachineKind::Pc)),
        machine("pc-q35-7.2", Some("q35"), Some(MachineKind::Q35)),
        machine("microvm", None, Some(MachineKind::Microvm)),
        machine("none", None, None),
    ]
}

fn query_machines(args: &Args) -> Result<Value, QmpError> {
    only(args, &["compat-props"])?;
    Ok(Value::Array(machines()))
}

/// Every concrete QOM type: devices, machines, CPU models, the accelerator, backends.
fn concrete_types() -> Vec<(String, &'static str)> {
    let mut types: Vec<(String, &'static str)> = DEVICE_TYPES
        .iter()
        .map(|d| (d.name.to_string(), d.parent))
        .collect();
    types.push(("pc-i440fx-7.2-machine".into(), "generic-pc-machine"));
    types.push(("pc-q35-7.2-machine".into(), "generic-pc-machine"));
    types.push(("microvm-machine".into(), "x86-machine"));
    types.push(("none-machine".into(), "machine"));
    types.extend(
        CpuModel::all()
            .into_iter()
            .map(|m| (m.type_name(), "x86_64-cpu")),
    );
    types.push(("kvm-accel".into(), "accel"));
    types.push(("rng-random".into(), "rng-backend"));
    // -object memory-backend-ram (guest RAM, -machine memory-backend=) and secret (process.rs).
    types.push(("memory-backend-ram".into(), "memory-backend"));
    types.push(("secret".into(), "secret_common"));
    types
}

fn parent_of(name: &str) -> Option<String> {
    if let Some((_, parent)) = ABSTRACT_TYPES.iter().find(|(n, _)| *n == name) {
        return parent.map(str::to_string);
    }
    concrete_types()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.to_string())
}

fn implements(name: &str, ancestor: &str) -> bool {
    let mut current = Some(name.to_string());
    while let Some(n) = current {
        if n == ancestor {
            return true;
        }
        current = parent_of(&n);
    }
    false
}

/// `qom-list-types {"implements"?: STR, "abstract"?: BOOL}`.
fn qom_list_types(args: &Args) -> Result<Value, QmpError> {
    only(args, &["implements", "abstract"])?;
    let filter = string_arg(args, "implements")?;
    let with_abstract = match args.get("abstract") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(QmpError::generic(
                "Invalid parameter type for 'abstract', expected: boolean",
            ))
        }
    };
    let mut out = Vec::new();
    for (name, parent) in concrete_types() {
        if filter.is_none_or(|f| implements(&name, f)) {
            out.push(json!({"name": name, "parent": parent}));
        }
    }
    if with_abstract {
        for (name, parent) in ABSTRACT_TYPES {
            if filter.is_none_or(|f| implements(name, f)) {
                let mut t = json!({"name": name, "abstract": true});
                if let Some(p) = parent {
                    t["parent"] = json!(p);
                }
                out.push(t);
            }
        }
    }
    Ok(Value::Array(out))
}

fn default_value(d: PropDefault) -> Value {
    match d {
        PropDefault::Int(i) => json!(i),
        PropDefault::Bool(b) => json!(b),
        PropDefault::Str(s) => json!(s),
    }
}

/// `device-list-properties {"typename": STR}`: the registry's properties; QEMU's
/// `DeviceNotFound` for a type rvmm lacks.
fn device_list_properties(args: &Args) -> Result<Value, QmpError> {
    only(args, &["typename"])?;
    let name = required(args, "typename")?;
    let Some(device) = qdev::find(name) else {
        if ABSTRACT_TYPES.iter().any(|(n, _)| *n == name)
            || concrete_types().iter().any(|(n, _)| n == name)
        {
            return Err(QmpError::generic(
                "Parameter 'typename' expects a non-abstract device type",
            ));
        }
        return Err(device_not_found(format!("Device '{name}' not found")));
    };
    Ok(device
        .props
        .iter()
        .map(|p| {
            let mut v = json!({"name": p.name, "type": p.ty.qom_name()});
            if let Some(d) = p.description {
                v["description"] = json!(d);
            }
            if let Some(d) = p.default {
                v["default-value"] = default_value(d);
            }
            v
        })
        .collect())
}

/// The `-machine` properties rvmm takes (lib.rs `machine`), QOM-typed.
fn machine_properties(x86: bool) -> Vec<Value> {
    let mut props = vec![
        json!({"name": "type", "type": "string"}),
        json!({"name": "kernel", "type": "string", "description": "Linux kernel image file"}),
        json!({"name": "initrd", "type": "string", "description": "Linux initial ramdisk file"}),
        json!({"name": "append", "type": "string", "description": "Linux kernel command line"}),
        json!({"name": "graphics", "type": "bool", "description": "Set on/off to enable/disable graphics emulation"}),
    ];
    if x86 {
        props.push(json!({"name": "acpi", "type": "OnOffAuto", "description": "Enable ACPI"}));
        props.push(json!({"name": "pit", "type": "OnOffAuto", "description": "Enable i8254 PIT"}));
        props.push(json!({"name": "kernel-irqchip", "type": "OnOffSplit"}));
    }
    props
}

/// `qom-list-properties {"typename": STR}`: devices, machines and CPU models.
fn qom_list_properties(args: &Args) -> Result<Value, QmpError> {
    only(args, &["typename"])?;
    let name = required(args, "typename")?;
    if qdev::find(name).is_some() {
        let mut props = device_list_properties(args)?;
        if let Value::Array(list) = &mut props {
            list.insert(0, json!({"name": "type", "type": "string"}));
        }
        return Ok(props);
    }
    if let Some(m) = name.strip_suffix("-machine") {
        if machines().iter().any(|v| v["name"] == m) {
            return Ok(Value::Array(machine_properties(m != "none")));
        }
    }
    if CpuModel::all().iter().any(|m| m.type_name() == name) {
        let mut props = vec![json!({"name": "type", "type": "string"})];
        props.extend(
            rvmm_cli::cpu_properties()
                .into_iter()
                .map(|(n, ty)| json!({"name": n, "type": ty})),
        );
        // Read with qom-get on a vCPU (queries.rs).
        props.push(json!({"name": "unavailable-features", "type": "strList"}));
        return Ok(Value::Array(props));
    }
    match name {
        "memory-backend-ram" => Ok(json!([
            {"name": "type", "type": "string"},
            {"name": "size", "type": "int"},
            {"name": "share", "type": "bool"},
            {"name": "prealloc", "type": "bool"},
        ])),
        "rng-random" => Ok(json!([
            {"name": "type", "type": "string"},
            {"name": "filename", "type": "string"},
        ])),
        "kvm-accel" => Ok(json!([
            {"name": "type", "type": "string"},
            {"name": "kernel-irqchip", "type": "on|off|split"},
        ])),
        // rvmm has no memory-backend-file, and qom-list-types does not list it; but libvirt 9.0
        // asks for its properties unconditionally and dereferences the missing list when the
        // class is not found (qemu_capabilities.c virQEMUCapsProbeQMPObjectProperties), which
        // kills libvirtd. No properties claims nothing libvirt does not already assume.
        "memory-backend-file" => Ok(json!([])),
        _ => Err(device_not_found(format!("Class '{name}' not found"))),
    }
}

fn feature_name(word: usize, bit: u32) -> Option<&'static str> {
    let name = FEATURE_WORDS.get(word)?.names.get(bit as usize)?;
    (!name.is_empty()).then_some(*name)
}

/// The guest CPUID of `config` on this host, and the requested features KVM lacks.
fn expand(config: &CpuConfig) -> Result<(CpuId, Vec<&'static str>), QmpError> {
    let guest =
        guest_cpuid(config, &host()?.supported).map_err(|e| QmpError::generic(e.to_string()))?;
    let mut missing: Vec<&str> = guest
        .unavailable
        .iter()
        .filter_map(|u| feature_name(u.word, u.bit))
        .collect();
    missing.dedup();
    Ok((guest.cpuid, missing))
}

/// `query-cpu-definitions`: every model, with the features this host's KVM lacks for it.
fn query_cpu_definitions(args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    let mut out = Vec::new();
    for model in CpuModel::all() {
        let config = CpuConfig {
            model,
            ..CpuConfig::default()
        };
        let (_, missing) = expand(&config)?;
        let mut def = json!({
            "name": model.name(),
            "typename": model.type_name(),
            "unavailable-features": missing,
            "static": false,
            "migration-safe": model.definition().is_some(),
            "deprecated": false,
        });
        if let CpuModel::Named {
            def: table,
            version,
            alias: true,
            ..
        } = model
        {
            def["alias-of"] = json!(format!("{}-v{version}", table.name));
        }
        out.push(def);
    }
    Ok(Value::Array(out))
}

/// `query-cpu-model-expansion {"type": "static"|"full", "model": {"name", "props"?}}`. A static
/// expansion is the `base` model (no features) plus every feature as a prop; a full one keeps
/// the name. Features a named model lists but KVM lacks stay on, as QEMU expands the
/// definition without filtering it.
fn query_cpu_model_expansion(args: &Args) -> Result<Value, QmpError> {
    only(args, &["type", "model"])?;
    let ty = required(args, "type")?;
    if ty != "static" && ty != "full" {
        return Err(QmpError::generic(format!(
            "Parameter 'type' does not accept value '{ty}'"
        )));
    }
    let Some(Value::Object(model)) = args.get("model") else {
        return Err(QmpError::generic("Parameter 'model' is missing"));
    };
    let name = required(model, "name")?;
    let mut config = CpuConfig::default();
    // `base`: no features at all, only what props turn on.
    let base = name == "base";
    if !base {
        config.model = CpuModel::from_name(name)
            .ok_or_else(|| QmpError::generic(format!("The CPU definition '{name}' is unknown.")))?;
    }
    let props = match model.get("props") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(QmpError::generic(
                "Invalid parameter type for 'props', expected: object",
            ))
        }
    };
    let mut settings = Vec::new();
    for (key, value) in &props {
        let Some(on) = value.as_bool() else {
            return Err(QmpError::generic(format!(
                "Property '{key}': rvmm expands only boolean properties"
            )));
        };
        if key == "migratable" {
            config.migratable = on;
            continue;
        }
        let feature = rvmm_arch::cpu::Feature::find(key).ok_or_else(|| {
            QmpError::generic(format!(
                "Property '{}.{key}' not found",
                config.model.type_name()
            ))
        })?;
        settings.push((feature, on));
    }
    let (cpuid, missing) = expand(&config)?;
    let mut values: Vec<(&str, bool)> = feature_values(&cpuid);
    for (name, on) in &mut values {
        if missing.contains(name) {
            *on = true;
        }
        if base {
            *on = false;
        }
    }
    for (feature, on) in settings {
        let n = feature.name();
        if let Some(v) = values.iter_mut().find(|(name, _)| *name == n) {
            v.1 = on;
        }
    }
    let mut out = Map::new();
    for (name, on) in values {
        out.insert(name.to_string(), json!(on));
    }
    let expanded_name = if ty == "static" { "base" } else { name };
    if ty == "full" {
        out.insert("migratable".into(), json!(config.migratable));
        if !base {
            out.extend(identity(&cpuid));
        }
    }
    Ok(json!({"model": {"name": expanded_name, "props": out}}))
}

fn leaf(cpuid: &CpuId, function: u32) -> Option<[u32; 4]> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == 0)
        .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
}

fn ascii(regs: &[u32]) -> String {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

/// The X86CPU properties a full expansion reports beside the features, read back from the
/// CPUID as QEMU's getters do (`x86_cpuid_version_get_family`, ...).
fn identity(cpuid: &CpuId) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some([level, ebx, ecx, edx]) = leaf(cpuid, 0) {
        out.insert("level".into(), json!(level));
        out.insert("vendor".into(), json!(ascii(&[ebx, edx, ecx])));
    }
    if let Some([eax, ..]) = leaf(cpuid, 1) {
        let mut family = (eax >> 8) & 0xf;
        if family == 0xf {
            family += (eax >> 20) & 0xff;
        }
        out.insert("family".into(), json!(family));
        out.insert(
            "model".into(),
            json!(((eax >> 4) & 0xf) | ((eax >> 12) & 0xf0)),
        );
        out.insert("stepping".into(), json!(eax & 0xf));
    }
    if let Some([xlevel, ..]) = leaf(cpuid, 0x8000_0000) {
        out.insert("xlevel".into(), json!(xlevel));
    }
    let brand: Vec<u32> = (0x8000_0002..=0x8000_0004)
        .filter_map(|f| leaf(cpuid, f))
        .flatten()
        .collect();
    if brand.len() == 12 {
        out.insert("model-id".into(), json!(ascii(&brand)));
    }
    out
}

/// `query-command-line-options {"option"?: STR}`: rvmm's options; `-machine`'s parameters.
fn query_command_line_options(args: &Args) -> Result<Value, QmpError> {
    only(args, &["option"])?;
    let wanted = string_arg(args, "option")?;
    let mut out = Vec::new();
    for option in rvmm_cli::option_names() {
        if wanted.is_some_and(|w| w != option) {
            continue;
        }
        let parameters: Vec<Value> = match option {
            "machine" => machine_properties(true)
                .into_iter()
                .filter(|p| p["name"] != "kernel-irqchip")
                .map(|p| {
                    let ty = match p["type"].as_str() {
                        Some("bool" | "OnOffAuto") => "boolean",
                        _ => "string",
                    };
                    json!({"name": p["name"], "type": ty})
                })
                .chain([
                    json!({"name": "accel", "type": "string"}),
                    json!({"name": "kernel-irqchip", "type": "string"}),
                ])
                .collect(),
            "sandbox" => [
                "enable",
                "obsolete",
                "elevateprivileges",
                "spawn",
                "resourcecontrol",
            ]
            .iter()
            .map(|n| json!({"name": n, "type": if *n == "enable" { "boolean" } else { "string" }}))
            .collect(),
            _ => Vec::new(),
        };
        out.push(json!({"option": option, "parameters": parameters}));
    }
    if let (Some(w), true) = (wanted, out.is_empty()) {
        return Err(QmpError::generic(format!("invalid option name: {w}")));
    }
    Ok(Value::Array(out))
}

/// As QEMU 7.2 built without SEV answers (target/i386/sev-sysemu-stub.c).
fn query_sev_capabilities(args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Err(QmpError::generic("SEV is not available in this QEMU"))
}

/// As QEMU 7.2 built without SGX answers (hw/i386/sgx-stub.c).
fn query_sgx_capabilities(args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Err(QmpError::generic("SGX support is not compiled in"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Value) -> Result<Value, QmpError> {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        dispatch(name, &args).expect("an info command")
    }

    #[test]
    fn unknown_types_are_qemus_device_not_found() {
        let e = call(
            "device-list-properties",
            json!({"typename": "virtio-scsi-pci"}),
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::DeviceNotFound);
        assert_eq!(e.desc, "Device 'virtio-scsi-pci' not found");
        let e = call("qom-list-properties", json!({"typename": "sev-guest"})).unwrap_err();
        assert_eq!(
            (e.class, e.desc.as_str()),
            (ErrorClass::DeviceNotFound, "Class 'sev-guest' not found")
        );
        // A type that exists but is no device.
        let e = call("device-list-properties", json!({"typename": "kvm-accel"})).unwrap_err();
        assert_eq!(e.class, ErrorClass::GenericError);
        assert!(call("device-list-properties", json!({})).is_err());
    }

    #[test]
    fn types_come_from_the_registry() {
        let all = call("qom-list-types", json!({})).unwrap();
        let names: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        for d in DEVICE_TYPES {
            assert!(names.contains(&d.name), "{}", d.name);
        }
        assert!(names.contains(&"max-x86_64-cpu") && names.contains(&"kvm-accel"));
        assert!(!names.contains(&"tcg-accel") && !names.contains(&"device"));
        let pci = call("qom-list-types", json!({"implements": "pci-device"})).unwrap();
        let pci: Vec<&str> = pci
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(pci.contains(&"virtio-blk-pci") && pci.contains(&"VGA"));
        assert!(!pci.contains(&"virtio-blk-device") && !pci.contains(&"i8042"));
        let props = call(
            "device-list-properties",
            json!({"typename": "isa-debug-exit"}),
        )
        .unwrap();
        assert_eq!(
            props,
            json!([
                {"name": "iobase", "type": "uint16", "default-value": 0x501},
                {"name": "iosize", "type": "uint16", "default-value": 2},
            ])
        );
    }

    #[test]
    fn machines_and_cpu_models() {
        let machines = call("query-machines", json!({})).unwrap();
        let pc = machines
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["alias"] == "pc")
            .unwrap();
        assert_eq!(pc["name"], "pc-i440fx-7.2");
        assert_eq!(pc["is-default"], true);
        // The CPU queries need KVM's CPUID.
        let Ok(hv) = rvmm_hypervisor::Hypervisor::open() else {
            eprintln!("skipped the CPU model part: no /dev/kvm");
            return;
        };
        set_host(HostCpu {
            supported: hv.supported_cpuid().unwrap(),
        });
        let defs = call("query-cpu-definitions", json!({})).unwrap();
        let host = defs
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "host")
            .unwrap();
        assert_eq!(host["unavailable-features"], json!([]));
        assert_eq!(host["typename"], "host-x86_64-cpu");
        let expanded = call(
            "query-cpu-model-expansion",
            json!({"type": "static", "model": {"name": "host", "props": {"sse2": false}}}),
        )
        .unwrap();
        assert_eq!(expanded["model"]["name"], "base");
        assert_eq!(expanded["model"]["props"]["sse2"], false);
        assert_eq!(expanded["model"]["props"]["fpu"], true);
        let e = call(
            "query-cpu-model-expansion",
            json!({"type": "full", "model": {"name": "host", "props": {"hv-passthrough": true}}}),
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::GenericError);
    }
}
