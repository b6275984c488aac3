//! The balloon's QMP side, as QEMU 7.2's (softmmu/balloon.c, hw/virtio/virtio-balloon.c):
//! `balloon`, `query-balloon`, the BALLOON_CHANGE event, and `qom-get`/`qom-set` of the
//! device's `guest-stats` and `guest-stats-polling-interval` (what libvirt reads and sets on
//! `/machine/peripheral/ID`).

use super::commands::{unexpected, Args};
use super::protocol::QmpError;
use super::Machine;
use crate::vm::Vmm;
use rvmm_devices::virtio::balloon::BalloonShared;
use serde_json::{json, Value};
use std::sync::Arc;

/// The VM's balloon device.
pub struct Balloon {
    /// `-device ...,id=`: its QOM path is /machine/peripheral/ID.
    pub id: Option<String>,
    /// `virtio-balloon-pci` or `virtio-balloon-device` (QOM `type`).
    pub type_name: &'static str,
    pub shared: Arc<BalloonShared>,
}

impl Balloon {
    /// True if `path` names this device (QEMU aliases both properties on the PCI proxy and
    /// its virtio-backend child).
    fn is_at(&self, path: &str) -> bool {
        let Some(id) = &self.id else { return false };
        let path = path.strip_suffix("/virtio-backend").unwrap_or(path);
        path == format!("/machine/peripheral/{id}")
    }
}

fn have_balloon(m: &Machine) -> Result<&Balloon, QmpError> {
    m.balloon.as_ref().ok_or_else(|| QmpError {
        class: super::protocol::ErrorClass::DeviceNotActive,
        desc: "No balloon device has been activated".into(),
    })
}

/// `balloon {"value": BYTES}`: the guest's new memory target.
pub(super) fn balloon(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut value = None;
    for (key, v) in args {
        match key.as_str() {
            "value" => {
                value = Some(v.as_i64().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'value', expected: integer")
                })?)
            }
            other => return Err(unexpected(other)),
        }
    }
    let value = value.ok_or_else(|| QmpError::generic("Parameter 'value' is missing"))?;
    let b = have_balloon(m)?;
    if value <= 0 {
        return Err(QmpError::generic("Parameter 'target' expects a size"));
    }
    b.shared.set_target(value as u64);
    Ok(json!({}))
}

/// `query-balloon`: `{"actual": BYTES}`, the memory the guest has.
pub(super) fn query_balloon(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().next() {
        return Err(unexpected(key));
    }
    let b = have_balloon(m)?;
    Ok(json!({"actual": b.shared.actual_bytes()}))
}

/// The driver changed `actual` (the event loop saw the device's eventfd): BALLOON_CHANGE.
/// Changes between two looks at the eventfd make one event with the latest value.
pub fn balloon_changed(m: &Machine) {
    if let Some(b) = &m.balloon {
        if b.shared.changed_fd().read().is_ok() {
            m.events.emit(
                "BALLOON_CHANGE",
                Some(json!({"actual": b.shared.actual_bytes()})),
            );
        }
    }
}

fn path_and_property(args: &Args, extra: &[&str]) -> Result<(String, String), QmpError> {
    let mut path = None;
    let mut property = None;
    for (key, v) in args {
        let s = || {
            v.as_str().map(str::to_string).ok_or_else(|| {
                QmpError::generic(format!(
                    "Invalid parameter type for '{key}', expected: string"
                ))
            })
        };
        match key.as_str() {
            "path" => path = Some(s()?),
            "property" => property = Some(s()?),
            k if extra.contains(&k) => {}
            other => return Err(unexpected(other)),
        }
    }
    let path = path.ok_or_else(|| QmpError::generic("Parameter 'path' is missing"))?;
    let property = property.ok_or_else(|| QmpError::generic("Parameter 'property' is missing"))?;
    Ok((path, property))
}

fn not_found(path: &str) -> QmpError {
    QmpError {
        class: super::protocol::ErrorClass::DeviceNotFound,
        desc: format!("Device '{path}' not found"),
    }
}

fn no_property(property: &str) -> QmpError {
    QmpError::generic(format!("Property '{property}' not found"))
}

/// `qom-get` of the balloon's properties, if `path` is the balloon's (queries.rs serves the
/// rest of the tree).
pub(super) fn qom_get_at(
    m: &Machine,
    path: &str,
    property: &str,
) -> Option<Result<Value, QmpError>> {
    let b = m.balloon.as_ref().filter(|b| b.is_at(path))?;
    Some(match property {
        "type" => Ok(json!(b.type_name)),
        "guest-stats" => Ok(b.shared.guest_stats()),
        "guest-stats-polling-interval" => Ok(json!(b.shared.poll_interval())),
        other => Err(no_property(other)),
    })
}

/// `qom-list` of the balloon's path: the properties [`qom_get_at`] serves.
pub(super) fn qom_list_at(m: &Machine, path: &str) -> Option<Value> {
    m.balloon.as_ref().filter(|b| b.is_at(path))?;
    Some(json!([
        {"name": "type", "type": "string"},
        {"name": "guest-stats", "type": "guest statistics"},
        {"name": "guest-stats-polling-interval", "type": "int"},
    ]))
}

/// `qom-set {"path", "property", "value"}`: `guest-stats-polling-interval` (seconds, 0 is off).
pub(super) fn qom_set(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let (path, property) = path_and_property(args, &["value"])?;
    let value = args
        .get("value")
        .ok_or_else(|| QmpError::generic("Parameter 'value' is missing"))?;
    let b = m
        .balloon
        .as_ref()
        .filter(|b| b.is_at(&path))
        .ok_or_else(|| not_found(&path))?;
    match property.as_str() {
        "guest-stats-polling-interval" => {
            let v = value.as_i64().ok_or_else(|| {
                QmpError::generic(format!(
                    "Invalid parameter type for '{property}', expected: integer"
                ))
            })?;
            if v < 0 {
                return Err(QmpError::generic("timer value must be greater than zero"));
            }
            let v = u32::try_from(v).map_err(|_| QmpError::generic("timer value is too big"))?;
            b.shared
                .set_poll_interval(v)
                .map_err(|e| QmpError::generic(format!("statistics timer: {e}")))?;
            Ok(json!({}))
        }
        "guest-stats" => Err(QmpError::generic(format!(
            "Property '{property}' is not writable"
        ))),
        other => Err(no_property(other)),
    }
}
