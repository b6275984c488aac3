//! The queries libvirt sends while it starts a domain and while the domain runs (its
//! `qemuProcessLaunch` and `qemuDomainGetStats` paths), with QEMU 7.2's reply shapes:
//! `query-chardev`, `query-hotpluggable-cpus`, `qom-list`/`qom-get` on the vCPU and on
//! `/machine/peripheral`, `query-iothreads`, `query-named-block-nodes`, `query-block`,
//! `query-blockstats`. The answers come from [`super::inventory::Inventory`].

use super::commands::{unexpected, Args};
use super::inventory::DriveInfo;
use super::protocol::QmpError;
use super::Machine;
use crate::vm::Vmm;
use serde_json::{json, Value};

type Handler = fn(&Machine, &mut Vmm, &Args) -> Result<Value, QmpError>;

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("query-chardev", query_chardev),
    ("query-hotpluggable-cpus", query_hotpluggable_cpus),
    ("qom-list", qom_list),
    ("qom-get", qom_get),
    ("query-iothreads", query_iothreads),
    ("query-named-block-nodes", query_named_block_nodes),
    ("query-block", query_block),
    ("query-blockstats", query_blockstats),
    ("query-stats", query_stats),
    ("query-stats-schemas", query_stats_schemas),
    ("query-dirty-rate", query_dirty_rate),
];

/// Only the keys in `allowed` may appear.
fn only(args: &Args, allowed: &[&str]) -> Result<(), QmpError> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unexpected(k)),
        None => Ok(()),
    }
}

fn string_arg<'a>(args: &'a Args, key: &str) -> Result<&'a str, QmpError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(QmpError::generic(format!(
            "Invalid parameter type for '{key}', expected: string"
        ))),
        None => Err(QmpError::generic(format!("Parameter '{key}' is missing"))),
    }
}

fn bool_arg(args: &Args, key: &str) -> Result<bool, QmpError> {
    match args.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(QmpError::generic(format!(
            "Invalid parameter type for '{key}', expected: boolean"
        ))),
    }
}

fn query_chardev(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &[])?;
    Ok(m.inventory
        .chardevs
        .iter()
        .map(|c| json!({"label": c.label, "filename": c.filename, "frontend-open": true}))
        .collect())
}

/// vCPU i's topology properties, as `query-cpus-fast` gives them.
fn cpu_props(m: &Machine, i: u32) -> Value {
    let smp = &m.smp;
    let mut props = json!({
        "socket-id": i / (smp.threads * smp.cores * smp.dies),
        "core-id": (i / smp.threads) % smp.cores,
        "thread-id": i % smp.threads,
    });
    if smp.dies > 1 {
        props["die-id"] = json!((i / (smp.threads * smp.cores)) % smp.dies);
    }
    props
}

/// Every possible vCPU (rvmm plugs no CPUs later: all are present from the start).
fn query_hotpluggable_cpus(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &[])?;
    let n = m.thread_ids.len() as u32;
    Ok((0..n)
        .rev()
        .map(|i| {
            json!({
                "type": m.inventory.cpu.type_name,
                "vcpus-count": 1,
                "props": cpu_props(m, i),
                "qom-path": format!("/machine/unattached/device[{i}]"),
            })
        })
        .collect())
}

/// The vCPU index a QOM path names, if it names one.
fn cpu_index(m: &Machine, path: &str) -> Option<usize> {
    let i: usize = path
        .strip_prefix("/machine/unattached/device[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    (i < m.thread_ids.len()).then_some(i)
}

fn not_found(path: &str) -> QmpError {
    QmpError::device_not_found(format!("Device '{path}' not found"))
}

/// The vCPU's own properties besides its feature bits.
const CPU_PROPS: &[(&str, &str)] = &[
    ("type", "string"),
    ("realized", "bool"),
    ("hotplugged", "bool"),
    ("hotpluggable", "bool"),
    ("start-powered-off", "bool"),
    ("unavailable-features", "strList"),
];

fn qom_list(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["path"])?;
    let path = string_arg(args, "path")?;
    if path == "/machine/peripheral" {
        let mut out = vec![json!({"name": "type", "type": "string"})];
        out.extend(
            m.inventory
                .peripherals
                .iter()
                .map(|(id, driver)| json!({"name": id, "type": format!("child<{driver}>")})),
        );
        return Ok(Value::Array(out));
    }
    if let Some(list) = super::balloon::qom_list_at(m, path) {
        return Ok(list);
    }
    if cpu_index(m, path).is_some() {
        let own = CPU_PROPS
            .iter()
            .map(|(name, ty)| json!({"name": name, "type": ty}));
        let features = m
            .inventory
            .cpu
            .features
            .iter()
            .map(|(name, _)| json!({"name": name, "type": "bool"}));
        return Ok(own.chain(features).collect());
    }
    Err(not_found(path))
}

fn qom_get(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["path", "property"])?;
    let path = string_arg(args, "path")?;
    let property = string_arg(args, "property")?;
    // The balloon's properties on its /machine/peripheral/ID path (docs/BALLOON.md).
    if let Some(value) = super::balloon::qom_get_at(m, path, property) {
        return value;
    }
    if path == "/machine/peripheral" && property == "type" {
        return Ok(json!("container"));
    }
    if cpu_index(m, path).is_none() {
        return Err(not_found(path));
    }
    let cpu = &m.inventory.cpu;
    Ok(match property {
        "type" => json!(cpu.type_name),
        "realized" | "hotpluggable" => json!(true),
        "hotplugged" => json!(false),
        // Only the boot CPU runs at power-on; the others wait for INIT/SIPI, not powered off.
        "start-powered-off" => json!(false),
        "unavailable-features" => json!(cpu.unavailable),
        name => match cpu.features.iter().find(|(n, _)| *n == name) {
            Some((_, on)) => json!(on),
            None => {
                return Err(QmpError::generic(format!(
                    "Property '{}.{name}' not found",
                    cpu.type_name
                )))
            }
        },
    })
}

fn query_iothreads(_: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &[])?;
    // rvmm has no -object iothread: each virtio device has its own worker thread instead.
    Ok(json!([]))
}

/// QEMU's BlockDeviceInfo for the top (format) node and its protocol child.
fn block_nodes(d: &DriveInfo) -> [Value; 2] {
    let cache = json!({"writeback": true, "direct": d.direct, "no-flush": false});
    let node = |name: &str, drv: &str, image: Value| {
        json!({
            "node-name": name,
            "drv": drv,
            "file": d.file,
            "ro": d.readonly,
            "encrypted": false,
            "detect_zeroes": "off",
            "backing_file_depth": 0,
            "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0,
            "write_threshold": 0,
            "cache": cache,
            "image": image,
        })
    };
    let mut top = json!({
        "filename": d.file,
        "format": d.format,
        "virtual-size": d.virtual_size,
        "actual-size": d.actual_size,
        "dirty-flag": false,
    });
    if d.format == "qcow2" {
        top["cluster-size"] = json!(65536);
    }
    let file = json!({
        "filename": d.file,
        "format": "file",
        "virtual-size": d.file_length,
        "actual-size": d.actual_size,
        "dirty-flag": false,
    });
    [
        node(&d.node_name, &d.format, top),
        node(&d.file_node_name, "file", file),
    ]
}

fn query_named_block_nodes(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["flat"])?;
    bool_arg(args, "flat")?;
    Ok(m.inventory.drives.iter().flat_map(block_nodes).collect())
}

fn query_block(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &[])?;
    Ok(m.inventory
        .drives
        .iter()
        .map(|d| {
            let [top, _] = block_nodes(d);
            json!({
                "device": d.device,
                "qdev": d.qdev,
                "locked": false,
                "removable": d.removable,
                "io-status": "ok",
                "type": "unknown",
                "inserted": top,
            })
        })
        .collect())
}

/// QEMU's `BlockDeviceStats` from a disk's counters (zero for a drive without a disk).
fn device_stats(stats: Option<&rvmm_block::DiskStats>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let get = |f: fn(&rvmm_block::DiskStats) -> &std::sync::atomic::AtomicU64| {
        stats.map_or(0, |s| f(s).load(Relaxed))
    };
    json!({
        "rd_bytes": get(|s| &s.read.bytes), "wr_bytes": get(|s| &s.write.bytes),
        "unmap_bytes": get(|s| &s.unmap.bytes),
        "rd_operations": get(|s| &s.read.operations),
        "wr_operations": get(|s| &s.write.operations),
        "flush_operations": get(|s| &s.flush.operations),
        "unmap_operations": get(|s| &s.unmap.operations),
        "rd_total_time_ns": get(|s| &s.read.total_time_ns),
        "wr_total_time_ns": get(|s| &s.write.total_time_ns),
        "flush_total_time_ns": get(|s| &s.flush.total_time_ns),
        "unmap_total_time_ns": get(|s| &s.unmap.total_time_ns),
        "wr_highest_offset": get(|s| &s.wr_highest_offset),
        // rvmm never merges requests.
        "rd_merged": 0, "wr_merged": 0, "unmap_merged": 0,
        "failed_rd_operations": get(|s| &s.read.failed),
        "failed_wr_operations": get(|s| &s.write.failed),
        "failed_flush_operations": get(|s| &s.flush.failed),
        "failed_unmap_operations": get(|s| &s.unmap.failed),
        "invalid_rd_operations": 0, "invalid_wr_operations": 0,
        "invalid_flush_operations": 0, "invalid_unmap_operations": 0,
        "account_invalid": true, "account_failed": true, "timed_stats": [],
    })
}

/// Each drive's counters; the protocol node below it reports the same requests (rvmm has no
/// cache between the two).
fn query_blockstats(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["query-nodes"])?;
    let nodes = bool_arg(args, "query-nodes")?;
    let registry = super::lock(&m.block_stats);
    Ok(m.inventory
        .drives
        .iter()
        .map(|d| {
            let stats = registry
                .iter()
                .find(|(p, _)| p.as_os_str() == std::ffi::OsStr::new(&d.file))
                .map(|(_, s)| s.as_ref());
            let stats = device_stats(stats);
            let parent = json!({"node-name": d.file_node_name, "stats": stats});
            let mut v = json!({"node-name": d.node_name, "stats": stats, "parent": parent});
            if !nodes {
                v["device"] = json!(d.device);
                if !d.qdev.is_empty() {
                    v["qdev"] = json!(d.qdev);
                }
            }
            v
        })
        .collect())
}

/// QEMU's enum check for `target`.
fn stats_target(args: &Args) -> Result<&str, QmpError> {
    match string_arg(args, "target")? {
        t @ ("vm" | "vcpu") => Ok(t),
        t => Err(QmpError::generic(format!(
            "Parameter 'target' does not accept value '{t}'"
        ))),
    }
}

/// The `names` of the `kvm` entry of `providers` (None: all); Err(()) when `providers` leaves
/// the kvm provider out.
fn kvm_names(args: &Args) -> Result<Result<Option<Vec<String>>, ()>, QmpError> {
    let Some(providers) = args.get("providers") else {
        return Ok(Ok(None));
    };
    let bad = || QmpError::generic("Invalid parameter type for 'providers', expected: array");
    let list = providers.as_array().ok_or_else(bad)?;
    for p in list {
        if p["provider"] != "kvm" {
            continue;
        }
        return Ok(Ok(match p.get("names") {
            None => None,
            Some(Value::Array(names)) => Some(
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect(),
            ),
            Some(_) => return Err(bad()),
        }));
    }
    Ok(Err(()))
}

fn stats_err(e: std::io::Error) -> QmpError {
    QmpError::generic(format!("KVM stats: failed to read data: {e}"))
}

fn query_stats(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["target", "providers", "vcpus"])?;
    let target = stats_target(args)?;
    let Ok(names) = kvm_names(args)? else {
        return Ok(json!([]));
    };
    let names = names.as_deref();
    let stats = &m.kvm_stats;
    let mut out = Vec::new();
    if target == "vm" {
        if let Some(vm) = &stats.vm {
            let values = vm.values(names).map_err(stats_err)?;
            if !values.is_empty() {
                out.push(json!({"provider": "kvm", "stats": values}));
            }
        }
        return Ok(Value::Array(out));
    }
    let wanted: Option<Vec<&str>> = match args.get("vcpus") {
        None => None,
        Some(Value::Array(v)) => Some(v.iter().filter_map(Value::as_str).collect()),
        Some(_) => {
            return Err(QmpError::generic(
                "Invalid parameter type for 'vcpus', expected: array",
            ))
        }
    };
    for (i, fd) in stats.vcpus.iter().enumerate() {
        let path = format!("/machine/unattached/device[{i}]");
        if wanted.as_ref().is_some_and(|w| !w.contains(&path.as_str())) {
            continue;
        }
        let Some(fd) = fd else { continue };
        let values = fd.values(names).map_err(stats_err)?;
        if !values.is_empty() {
            out.push(json!({"provider": "kvm", "qom-path": path, "stats": values}));
        }
    }
    Ok(Value::Array(out))
}

fn query_stats_schemas(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &["provider"])?;
    if args.get("provider").is_some_and(|p| p != "kvm") {
        return Ok(json!([]));
    }
    let stats = &m.kvm_stats;
    let mut out = Vec::new();
    if let Some(Some(cpu)) = stats.vcpus.first() {
        out.push(json!({"provider": "kvm", "target": "vcpu", "stats": cpu.schema()}));
    }
    if let Some(vm) = &stats.vm {
        out.push(json!({"provider": "kvm", "target": "vm", "stats": vm.schema()}));
    }
    Ok(Value::Array(out))
}

/// rvmm has no `calc-dirty-rate`, so no measurement was ever started: QEMU's answer before the
/// first one (migration/dirtyrate.c `query_dirty_rate_info`).
fn query_dirty_rate(_: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    only(args, &[])?;
    Ok(json!({
        "status": "unstarted",
        "start-time": 0,
        "calc-time": 0,
        "sample-pages": 0,
        "mode": "page-sampling",
    }))
}
