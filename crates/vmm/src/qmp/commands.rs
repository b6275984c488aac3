//! The QMP commands rvmm serves, with QEMU 7.2's reply shapes (qapi/*.json).

use super::protocol::{self, QmpError};
use super::Machine;
use crate::control::Cause;
use crate::vm::{VmState, Vmm};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

pub(super) type Args = Map<String, Value>;
type Handler = fn(&Machine, &mut Vmm, &Args) -> Result<Value, QmpError>;

/// Every command after negotiation, in `query-commands` order. `qmp_capabilities` is handled by
/// the session (it changes the session's mode) but listed, as QEMU lists it.
const COMMANDS: &[(&str, Handler)] = &[
    ("qmp_capabilities", |_, _, _| Ok(json!({}))),
    ("query-version", query_version),
    ("query-commands", query_commands),
    ("query-status", query_status),
    ("query-name", query_name),
    ("query-kvm", query_kvm),
    ("query-cpus-fast", query_cpus_fast),
    ("stop", stop),
    ("cont", cont),
    ("system_reset", system_reset),
    ("system_powerdown", system_powerdown),
    ("system_wakeup", system_wakeup),
    ("x-query-exit-stats", x_query_exit_stats),
    ("query-vnc", super::input::query_vnc),
    ("change-vnc-password", super::input::change_vnc_password),
    ("send-key", super::input::send_key),
    ("input-send-event", super::input::input_send_event),
    ("human-monitor-command", human_monitor_command),
    ("screendump", screendump),
    ("balloon", super::balloon::balloon),
    ("query-balloon", super::balloon::query_balloon),
    ("qom-set", super::balloon::qom_set),
    ("migrate", super::migration::migrate),
    ("migrate-incoming", super::migration::migrate_incoming),
    ("query-migrate", super::migration::query_migrate),
    (
        "migrate-set-capabilities",
        super::migration::set_capabilities,
    ),
    (
        "query-migrate-capabilities",
        super::migration::query_capabilities,
    ),
    ("device_del", device_del),
    // The session shuts the VM down after sending the reply.
    ("quit", |_, _, _| Ok(json!({}))),
];

/// QEMU's error for an argument a command does not take.
pub fn unexpected(key: &str) -> QmpError {
    QmpError::generic(format!("Parameter '{key}' is unexpected"))
}

pub(super) fn no_args(args: &Args) -> Result<(), QmpError> {
    match args.keys().next() {
        Some(key) => Err(unexpected(key)),
        None => Ok(()),
    }
}

/// Run command `name`; `quit` only replies here (the caller shuts down after the reply).
pub fn dispatch(
    machine: &Machine,
    vmm: &mut Vmm,
    name: &str,
    args: &Args,
) -> Result<Value, QmpError> {
    let found = COMMANDS
        .iter()
        .chain(super::queries::COMMANDS)
        .find(|(n, _)| *n == name);
    let Some((_, handler)) = found else {
        // Commands that describe rvmm, not the guest (info.rs).
        return super::info::dispatch(name, args).unwrap_or_else(|| Err(not_found(name)));
    };
    handler(machine, vmm, args)
}

/// QEMU's reply to a command it lacks.
pub(super) fn not_found(name: &str) -> QmpError {
    QmpError::not_found(format!("The command {name} has not been found"))
}

/// Every command served, in `query-commands` order: the VM's, then info.rs's.
pub(super) fn command_names() -> Vec<&'static str> {
    COMMANDS
        .iter()
        .map(|(n, _)| *n)
        .chain(super::queries::COMMANDS.iter().map(|(n, _)| *n))
        .chain(super::info::COMMANDS.iter().map(|(n, _)| *n))
        .collect()
}

/// `device_del {"id": ID}`: hot-unplug of a device behind a `pcie-root-port` (the guest
/// finishes it; DEVICE_DELETED follows).
fn device_del(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut id = None;
    for (key, value) in args {
        match key.as_str() {
            "id" => {
                id = Some(value.as_str().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'id', expected: string")
                })?)
            }
            other => return Err(unexpected(other)),
        }
    }
    let id = id.ok_or_else(|| QmpError::generic("Parameter 'id' is missing"))?;
    vmm.device_del(id).map_err(|e| match e {
        crate::vm::DeviceDelError::NotFound(_) => QmpError {
            class: protocol::ErrorClass::DeviceNotFound,
            desc: e.to_string(),
        },
        other => QmpError::generic(other.to_string()),
    })?;
    Ok(json!({}))
}

pub(super) fn query_version(_: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Ok(protocol::version())
}

fn query_commands(_: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Ok(command_names()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect())
}

fn query_status(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    let status = match vmm.state() {
        _ if vmm.in_incoming() => "inmigrate",
        VmState::Paused { prelaunch: false } if vmm.postmigrate() => "postmigrate",
        VmState::Stopping { .. } | VmState::Stopped { .. } => "shutdown",
        VmState::Paused { .. } if vmm.powered_off() => "shutdown",
        VmState::Paused { prelaunch: true } | VmState::Created => "prelaunch",
        VmState::Paused { prelaunch: false } => "paused",
        VmState::Suspended => "suspended",
        VmState::Running => "running",
    };
    Ok(json!({"status": status, "running": status == "running", "singlestep": false}))
}

fn query_name(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Ok(match &m.name {
        Some(name) => json!({"name": name}),
        None => json!({}),
    })
}

/// rvmm extension: the `-exit-stats` JSON document (docs/EXIT-STATS.md), live.
fn x_query_exit_stats(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    match &m.exit_stats {
        Some(stats) => Ok(stats.snapshot().to_json()),
        None => Err(QmpError::generic(
            "Exit statistics are off; start rvmm with -exit-stats",
        )),
    }
}

fn query_kvm(_: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    Ok(json!({"enabled": true, "present": true}))
}

/// One entry per vCPU; topology ids as QEMU's `x86_topo_ids_from_idx` derives them.
fn query_cpus_fast(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    let smp = &m.smp;
    let cpus = m.thread_ids.iter().enumerate().map(|(i, tid)| {
        let i = i as u32;
        let mut props = json!({
            "socket-id": i / (smp.threads * smp.cores * smp.dies),
            "core-id": (i / smp.threads) % smp.cores,
            "thread-id": i % smp.threads,
        });
        if smp.dies > 1 {
            props["die-id"] = json!((i / (smp.threads * smp.cores)) % smp.dies);
        }
        json!({
            "cpu-index": i,
            "qom-path": format!("/machine/unattached/device[{i}]"),
            "thread-id": tid.load(Ordering::Relaxed),
            "target": "x86_64",
            "props": props,
        })
    });
    Ok(cpus.collect())
}

fn shutting_down(vmm: &Vmm) -> Result<(), QmpError> {
    match vmm.stopping() {
        true => Err(QmpError::generic("The VM is shutting down")),
        false => Ok(()),
    }
}

fn stop(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    // STOP is emitted once every vCPU is out of guest code (not when already paused).
    vmm.pause();
    shutting_down(vmm)?;
    Ok(json!({}))
}

fn cont(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    shutting_down(vmm)?;
    if vmm.powered_off() {
        return Err(QmpError::generic(
            "Resetting the Virtual Machine is required",
        ));
    }
    // RESUME is emitted before the vCPUs run again (not when already running).
    vmm.resume();
    Ok(json!({}))
}

fn system_reset(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    // RESET (or SHUTDOWN under -no-reboot) is emitted as the reset is carried out.
    vmm.reset(Cause::HostQmpSystemReset);
    Ok(json!({}))
}

/// QEMU's ACPI power button: PWRBTN_STS if the guest enabled it; POWERDOWN either way. A guest
/// in S3 wakes up, as a real PC's does (ACPI 6.5 4.8.2.2.1); QEMU 7.2's does not.
fn system_powerdown(m: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    let seen = m.acpi_pm.press_power_button();
    tracing::debug!(seen, "power button pressed");
    m.events.emit("POWERDOWN", None);
    if vmm.state() == crate::vm::VmState::Suspended {
        vmm.wakeup(rvmm_devices::legacy::WakeReason::PowerButton)
            .map_err(|e| QmpError::generic(e.to_string()))?;
    }
    Ok(json!({}))
}

/// QEMU's `system_wakeup`: wake a guest in S3 (WAKEUP once it runs again); an error if it is
/// not suspended.
fn system_wakeup(_: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    no_args(args)?;
    vmm.wakeup(rvmm_devices::legacy::WakeReason::Other)
        .map_err(|e| QmpError::generic(e.to_string()))?;
    Ok(json!({}))
}

/// `screendump {"filename": STR, "device"?: STR, "head"?: INT, "format"?: "ppm"|"png"}`: the
/// display's picture as a file (PPM by default, as QEMU).
fn screendump(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    use crate::screendump::ImageFormat;
    let mut filename = None;
    let mut format = ImageFormat::Ppm;
    for (key, value) in args {
        match key.as_str() {
            "filename" => {
                filename = Some(value.as_str().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'filename', expected: string")
                })?)
            }
            "format" => {
                format = match value.as_str() {
                    Some("ppm") => ImageFormat::Ppm,
                    Some("png") => ImageFormat::Png,
                    Some(other) => {
                        return Err(QmpError::generic(format!(
                            "Parameter 'format' does not accept value '{other}'"
                        )))
                    }
                    None => {
                        return Err(QmpError::generic(
                            "Invalid parameter type for 'format', expected: string",
                        ))
                    }
                }
            }
            // One display with one head: the device name is not checked further.
            "device" if value.is_string() => {}
            "head" if value.as_u64() == Some(0) => {}
            "head" => {
                return Err(QmpError::generic(
                    "Parameter 'head' expects a head number of the display (0)",
                ))
            }
            other => return Err(unexpected(other)),
        }
    }
    let filename = filename.ok_or_else(|| QmpError::generic("Parameter 'filename' is missing"))?;
    let display = m
        .display
        .as_deref()
        .ok_or_else(|| QmpError::generic("There is no console to take a screendump from."))?;
    crate::screendump::screendump(display, std::path::Path::new(filename), format)
        .map_err(|e| QmpError::generic(e.to_string()))?;
    Ok(json!({}))
}

/// `human-monitor-command {"command-line": STR, "cpu-index"?: INT}`: HMP output as a string.
fn human_monitor_command(m: &Machine, vmm: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut command_line = None;
    let mut cpu = 0usize;
    for (key, value) in args {
        match key.as_str() {
            "command-line" => {
                command_line = Some(value.as_str().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'command-line', expected: string")
                })?)
            }
            "cpu-index" => {
                cpu = value
                    .as_u64()
                    .and_then(|c| usize::try_from(c).ok())
                    .filter(|&c| c < m.thread_ids.len())
                    .ok_or_else(|| {
                        QmpError::generic("Parameter 'cpu-index' expects a CPU number")
                    })?
            }
            other => return Err(unexpected(other)),
        }
    }
    let command_line =
        command_line.ok_or_else(|| QmpError::generic("Parameter 'command-line' is missing"))?;
    let out = super::hmp::run(
        command_line,
        cpu,
        || vmm.registers().map_err(|e| e.to_string()),
        |file, format| {
            let display = m
                .display
                .as_deref()
                .ok_or("There is no console to take a screendump from.")?;
            crate::screendump::screendump(display, std::path::Path::new(file), format)
                .map_err(|e| e.to_string())
        },
    );
    Ok(Value::String(out))
}
