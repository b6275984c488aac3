//! The migration commands (QEMU 7.2 qapi/migration.json): `migrate` and `migrate-incoming`
//! with `file:` URIs, `query-migrate`, and the `events` capability.

use super::commands::{unexpected, Args};
use super::protocol::QmpError;
use super::Machine;
use crate::vm::{MigrationStatus, Vmm};
use serde_json::{json, Value};

/// Capabilities QEMU 7.2 knows; only `events` changes anything in rvmm, the others are refused
/// when turned on.
const CAPABILITIES: &[&str] = &[
    "xbzrle",
    "rdma-pin-all",
    "auto-converge",
    "zero-blocks",
    "compress",
    "events",
    "postcopy-ram",
    "x-colo",
    "release-ram",
    "block",
    "return-path",
    "pause-before-switchover",
    "multifd",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "x-ignore-shared",
    "validate-uuid",
    "background-snapshot",
    "zero-copy-send",
    "postcopy-preempt",
];

fn string_arg<'a>(args: &'a Args, key: &str) -> Result<&'a str, QmpError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(QmpError::generic(format!(
            "Invalid parameter type for '{key}', expected: string"
        ))),
        None => Err(QmpError::generic(format!("Parameter '{key}' is missing"))),
    }
}

/// `migrate {"uri": "file:PATH"}`; `blk`, `inc`, `detach`, `resume` as QEMU 7.2 takes them
/// (the block-migration flags are refused when set).
pub fn migrate(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    for (key, value) in args {
        match key.as_str() {
            "uri" | "detach" => {}
            "blk" | "inc" | "resume" => {
                if value.as_bool() == Some(true) {
                    return Err(QmpError::generic(format!(
                        "Parameter '{key}': rvmm does not migrate block devices or resume postcopy"
                    )));
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    let uri = string_arg(args, "uri")?;
    vmm.migrate(uri).map_err(QmpError::generic)?;
    Ok(json!({}))
}

/// `migrate-incoming {"uri": "file:PATH"}` after `-incoming defer`.
pub fn migrate_incoming(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().find(|k| *k != "uri") {
        return Err(unexpected(key));
    }
    let uri = string_arg(args, "uri")?;
    vmm.migrate_incoming(uri).map_err(QmpError::generic)?;
    Ok(json!({}))
}

/// `query-migrate`: `{}` before any migration, then its status and numbers.
pub fn query_migrate(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().next() {
        return Err(unexpected(key));
    }
    let info = vmm.migration_info();
    Ok(match info.status {
        MigrationStatus::None => json!({}),
        MigrationStatus::Failed => json!({
            "status": "failed",
            "error-desc": info.error.unwrap_or_default(),
        }),
        MigrationStatus::Setup | MigrationStatus::Active => {
            json!({"status": info.status.as_str()})
        }
        MigrationStatus::Completed => {
            let s = info.stats;
            json!({
                "status": "completed",
                "total-time": info.total_ms,
                "downtime": info.downtime_ms,
                "setup-time": 0,
                "ram": {
                    "transferred": s.ram_written + s.state_bytes,
                    "remaining": 0,
                    "total": s.ram_total,
                    "duplicate": (s.ram_total - s.ram_written.min(s.ram_total)) / 4096,
                    "normal": s.ram_written / 4096,
                    "normal-bytes": s.ram_written,
                    "page-size": 4096,
                    "dirty-sync-count": 1,
                },
            })
        }
    })
}

/// `migrate-set-capabilities {"capabilities": [{"capability": NAME, "state": BOOL}]}`.
pub fn set_capabilities(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().find(|k| *k != "capabilities") {
        return Err(unexpected(key));
    }
    let Some(Value::Array(caps)) = args.get("capabilities") else {
        return Err(QmpError::generic(
            "Parameter 'capabilities' is missing or not an array",
        ));
    };
    let mut events = vmm.migration_events();
    for cap in caps {
        let name = cap.get("capability").and_then(Value::as_str);
        let state = cap.get("state").and_then(Value::as_bool);
        let (Some(name), Some(state)) = (name, state) else {
            return Err(QmpError::generic(
                "Each capability needs 'capability' (string) and 'state' (bool)",
            ));
        };
        match name {
            "events" => events = state,
            _ if !CAPABILITIES.contains(&name) => {
                return Err(QmpError::generic(format!(
                    "Parameter 'capability' does not accept value '{name}'"
                )))
            }
            _ if state => {
                return Err(QmpError::generic(format!(
                    "Migration capability '{name}' is not supported by rvmm"
                )))
            }
            _ => {}
        }
    }
    vmm.set_migration_events(events);
    Ok(json!({}))
}

/// The capabilities rvmm can turn on: all `query-migrate-capabilities` lists, since a listed
/// capability tells libvirt it may use it (it derives `migrate-rdma` from `rdma-pin-all`).
pub(super) const SETTABLE: &[&str] = &["events"];

/// `query-migrate-capabilities`: the capabilities rvmm implements, `events` as set.
pub fn query_capabilities(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().next() {
        return Err(unexpected(key));
    }
    let events = vmm.migration_events();
    Ok(SETTABLE
        .iter()
        .map(|c| json!({"capability": c, "state": *c == "events" && events}))
        .collect())
}
