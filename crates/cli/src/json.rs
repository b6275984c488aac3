//! QEMU's JSON option syntax (`-device '{"driver":"virtio-blk-pci",...}'`), which libvirt writes
//! for `-device`, `-object`, `-blockdev`, `-netdev` and `-audiodev`. QEMU reads these with its
//! QObject input visitor; rvmm turns the object into the equivalent `key=value,...` argument
//! (nested objects as dotted keys, arrays as `key.N`, booleans as on/off) and parses that, so
//! both spellings reach the same option code and the same error messages.

use serde_json::{Map, Value};
use thiserror::Error;

/// The options that take JSON arguments in QEMU 7.2.
pub(crate) const JSON_OPTIONS: &[&str] = &["device", "object", "blockdev", "netdev", "audiodev"];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonArgError {
    #[error("-{option}: JSON argument is not valid: {reason}")]
    Syntax {
        option: &'static str,
        reason: String,
    },
    #[error("-{option}: JSON argument must be an object")]
    NotObject { option: &'static str },
}

/// Whether `arg` uses the JSON syntax (QEMU: the argument starts with '{').
pub(crate) fn is_json(arg: &[u8]) -> bool {
    arg.first() == Some(&b'{')
}

/// Escape a value for QemuOpts (`,` is written `,,`).
fn escape(s: &str) -> String {
    s.replace(',', ",,")
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&join(prefix, k), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(prefix, &i.to_string()), v, out);
            }
        }
        Value::String(s) => out.push(format!("{}={}", escape(prefix), escape(s))),
        Value::Bool(b) => out.push(format!(
            "{}={}",
            escape(prefix),
            if *b { "on" } else { "off" }
        )),
        Value::Number(n) => out.push(format!("{}={n}", escape(prefix))),
        // `"backing": null` (blockdev): the key with an empty value, read as "none".
        Value::Null => out.push(format!("{}=", escape(prefix))),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The `key=value,...` form of a JSON object argument of `-option`.
pub(crate) fn to_opts(option: &'static str, arg: &str) -> Result<String, JsonArgError> {
    let value: Value = serde_json::from_str(arg).map_err(|e| JsonArgError::Syntax {
        option,
        reason: e.to_string(),
    })?;
    let Value::Object(map) = value else {
        return Err(JsonArgError::NotObject { option });
    };
    Ok(object_to_opts(&map))
}

fn object_to_opts(map: &Map<String, Value>) -> String {
    let mut out = Vec::new();
    for (k, v) in map {
        flatten(k, v, &mut out);
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_arguments() {
        assert_eq!(
            to_opts(
                "device",
                r#"{"driver":"virtio-blk-pci","bus":"pcie.0","addr":"0x3","drive":"libvirt-1-format","id":"virtio-disk0","bootindex":1}"#
            )
            .unwrap(),
            // serde_json's map is sorted; QemuOpts keys have no order that matters.
            "addr=0x3,bootindex=1,bus=pcie.0,drive=libvirt-1-format,driver=virtio-blk-pci,id=virtio-disk0"
        );
        assert_eq!(
            to_opts(
                "blockdev",
                r#"{"node-name":"f","read-only":false,"driver":"qcow2","file":"s","backing":null}"#
            )
            .unwrap(),
            "backing=,driver=qcow2,file=s,node-name=f,read-only=off"
        );
        assert_eq!(
            to_opts(
                "netdev",
                r#"{"type":"stream","addr":{"type":"unix","path":"/a,b"}}"#
            )
            .unwrap(),
            "addr.path=/a,,b,addr.type=unix,type=stream"
        );
        assert_eq!(
            to_opts("netdev", r#"{"fds":["3","4"]}"#).unwrap(),
            "fds.0=3,fds.1=4"
        );
    }

    #[test]
    fn bad_json_is_named() {
        assert!(matches!(
            to_opts("device", "{driver"),
            Err(JsonArgError::Syntax {
                option: "device",
                ..
            })
        ));
        assert!(is_json(b"{}"));
        assert!(!is_json(b"virtio-blk-pci"));
    }
}
