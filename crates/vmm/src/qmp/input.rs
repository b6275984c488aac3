//! QMP display and input commands, QEMU 7.2's shapes (qapi/ui.json): `query-vnc`,
//! `change-vnc-password`, `send-key`, `input-send-event`.

use rvmm_devices::input::{keymap, ABS_MAX, BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT};
use serde_json::{json, Map, Value};

use super::commands::unexpected;
use super::protocol::QmpError;
use super::Machine;
use crate::vm::Vmm;

type Args = Map<String, Value>;

/// QEMU's family names for an address.
fn family(host: &str) -> &'static str {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => "ipv6",
        Ok(std::net::IpAddr::V4(_)) => "ipv4",
        Err(_) => "unix",
    }
}

/// `query-vnc`: VncInfo.
pub fn query_vnc(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    if let Some(key) = args.keys().next() {
        return Err(unexpected(key));
    }
    let Some(vnc) = &m.vnc else {
        return Ok(json!({"enabled": false}));
    };
    let (host, service) = match &vnc.options().listen {
        rvmm_vnc::Listen::Unix(path) => (path.display().to_string(), String::new()),
        rvmm_vnc::Listen::Tcp { .. } => {
            let local = vnc.local_addr();
            match local.rsplit_once(':') {
                Some((h, p)) => (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    p.to_string(),
                ),
                None => (local.to_string(), String::new()),
            }
        }
    };
    let clients: Vec<Value> = vnc
        .clients()
        .into_iter()
        .map(|c| {
            json!({
                "host": c.host,
                "service": c.service,
                "family": family(&c.host),
                "websocket": false,
            })
        })
        .collect();
    Ok(json!({
        "enabled": true,
        "host": host,
        "service": service,
        "family": family(&host),
        "auth": if vnc.options().password { "vnc" } else { "none" },
        "clients": clients,
    }))
}

/// `change-vnc-password {"password": STR}`.
pub fn change_vnc_password(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut password = None;
    for (key, value) in args {
        match key.as_str() {
            "password" => {
                password = Some(value.as_str().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'password', expected: string")
                })?)
            }
            other => return Err(unexpected(other)),
        }
    }
    let password = password.ok_or_else(|| QmpError::generic("Parameter 'password' is missing"))?;
    match &m.vnc {
        Some(vnc) if vnc.options().password => {
            vnc.set_password(password);
            Ok(json!({}))
        }
        // QEMU refuses too: without password=on there is no password to change.
        _ => Err(QmpError::generic("Could not set password")),
    }
}

/// A KeyValue: `{"type": "qcode", "data": NAME}` or `{"type": "number", "data": QNUM}`.
fn key_value(v: &Value) -> Result<u16, QmpError> {
    let bad = || QmpError::generic(format!("Invalid key value {v}"));
    let ty = v.get("type").and_then(Value::as_str).ok_or_else(bad)?;
    let data = v.get("data").ok_or_else(bad)?;
    let key = match ty {
        "qcode" => {
            let name = data.as_str().ok_or_else(bad)?;
            keymap::by_qcode(name).ok_or_else(|| {
                QmpError::generic(format!("Parameter 'data' does not accept value '{name}'"))
            })?
        }
        "number" => {
            let n = data.as_u64().ok_or_else(bad)?;
            u32::try_from(n)
                .ok()
                .and_then(keymap::by_qnum)
                .ok_or_else(|| QmpError::generic(format!("Unknown key number {n}")))?
        }
        _ => return Err(bad()),
    };
    Ok(key.code)
}

/// `send-key {"keys": [KeyValue...], "hold-time"?: INT}`: presses the keys in order, then
/// releases them in reverse. The PS/2 keyboard queues both at once: `hold-time` is accepted,
/// but a guest reading its queue sees the releases right after the presses.
pub fn send_key(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut keys = None;
    for (key, value) in args {
        match key.as_str() {
            "keys" => {
                let list = value.as_array().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'keys', expected: array")
                })?;
                keys = Some(list.iter().map(key_value).collect::<Result<Vec<_>, _>>()?);
            }
            "hold-time" => {
                value.as_u64().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'hold-time', expected: integer")
                })?;
            }
            other => return Err(unexpected(other)),
        }
    }
    let keys = keys.ok_or_else(|| QmpError::generic("Parameter 'keys' is missing"))?;
    if keys.is_empty() {
        return Err(QmpError::generic(
            "Parameter 'keys' expects a non-empty list",
        ));
    }
    for &k in &keys {
        m.input.key(k, true);
    }
    for &k in keys.iter().rev() {
        m.input.key(k, false);
    }
    Ok(json!({}))
}

/// One InputEvent: key, btn, rel or abs.
enum Event {
    Key(u16, bool),
    Button(u8, bool),
    Wheel(i32),
    Rel(i32, i32),
    /// An absolute axis (x: false, y: true) at a value in 0..=ABS_MAX.
    Abs(bool, u32),
}

fn event(v: &Value) -> Result<Event, QmpError> {
    let bad = || QmpError::generic(format!("Invalid input event {v}"));
    let ty = v.get("type").and_then(Value::as_str).ok_or_else(bad)?;
    let data = v.get("data").ok_or_else(bad)?;
    let down = || data.get("down").and_then(Value::as_bool).ok_or_else(bad);
    Ok(match ty {
        "key" => Event::Key(key_value(data.get("key").ok_or_else(bad)?)?, down()?),
        "btn" => match data.get("button").and_then(Value::as_str).ok_or_else(bad)? {
            "left" => Event::Button(BUTTON_LEFT, down()?),
            "middle" => Event::Button(BUTTON_MIDDLE, down()?),
            "right" => Event::Button(BUTTON_RIGHT, down()?),
            "wheel-up" => Event::Wheel(if down()? { -1 } else { 0 }),
            "wheel-down" => Event::Wheel(i32::from(down()?)),
            other => {
                return Err(QmpError::generic(format!(
                    "Parameter 'button' does not accept value '{other}'"
                )))
            }
        },
        "rel" | "abs" => {
            let value = data
                .get("value")
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(bad)?;
            let y = match data.get("axis").and_then(Value::as_str).ok_or_else(bad)? {
                "x" => false,
                "y" => true,
                _ => return Err(bad()),
            };
            match (ty, y) {
                ("rel", false) => Event::Rel(value, 0),
                ("rel", true) => Event::Rel(0, value),
                // QEMU passes the value on unscaled: the input range is 0..=0x7fff.
                _ => Event::Abs(y, value.clamp(0, ABS_MAX as i32) as u32),
            }
        }
        _ => return Err(bad()),
    })
}

/// `input-send-event {"events": [InputEvent...], "device"?: STR, "head"?: INT}`.
pub fn input_send_event(m: &Machine, _: &mut Vmm, args: &Args) -> Result<Value, QmpError> {
    let mut events = None;
    for (key, value) in args {
        match key.as_str() {
            "events" => {
                let list = value.as_array().ok_or_else(|| {
                    QmpError::generic("Invalid parameter type for 'events', expected: array")
                })?;
                // All parsed before any is sent, as QEMU checks the whole list first.
                events = Some(list.iter().map(event).collect::<Result<Vec<_>, _>>()?);
            }
            "device" | "head" => {}
            other => return Err(unexpected(other)),
        }
    }
    let events = events.ok_or_else(|| QmpError::generic("Parameter 'events' is missing"))?;
    // QEMU looks for a handler of every event's kind before it sends any.
    if events.iter().any(|e| matches!(e, Event::Abs(..))) && !m.input.has_absolute() {
        return Err(QmpError::generic(
            "Input handler not found for event type abs",
        ));
    }
    let mut buttons = m
        .pointer_buttons
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pos = m
        .pointer_position
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Buttons and the wheel go to a tablet while its driver runs it (QEMU's handler order);
    // relative motion always goes to the PS/2 mouse. A tablet gets one report at the end, as
    // QEMU syncs once after the list.
    let absolute = m.input.pointer_is_absolute();
    let (mut abs_report, mut wheel) = (false, 0);
    for e in events {
        match e {
            Event::Key(code, down) => m.input.key(code, down),
            Event::Button(b, down) => {
                *buttons = if down { *buttons | b } else { *buttons & !b };
                if absolute {
                    abs_report = true;
                } else {
                    m.input.pointer_rel(0, 0, 0, *buttons);
                }
            }
            Event::Wheel(0) => {}
            Event::Wheel(w) if absolute => {
                wheel += w;
                abs_report = true;
            }
            Event::Wheel(w) => m.input.pointer_rel(0, 0, w, *buttons),
            Event::Rel(dx, dy) => m.input.pointer_rel(dx, dy, 0, *buttons),
            Event::Abs(y, v) => {
                if y {
                    pos.1 = v;
                } else {
                    pos.0 = v;
                }
                abs_report = true;
            }
        }
    }
    if abs_report {
        m.input.pointer_abs(pos.0, pos.1, wheel, *buttons);
    }
    Ok(json!({}))
}
