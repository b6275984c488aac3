//! QMP wire format (QEMU `docs/interop/qmp-spec.rst`): the greeting, requests, replies, errors
//! and events, as JSON objects each followed by "\r\n" like QEMU's monitor output.
//!
//! Input is a stream of JSON values, not necessarily one per line; [`Decoder`] splits it and
//! recovers from malformed input by dropping the rest of the offending line, so one bad request
//! costs one error reply and the connection stays usable (QEMU's JSON lexer also resynchronises).

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// rvmm answers `query-version` and the greeting as the QEMU release whose QMP behaviour it
/// follows (7.2, the version these tests compare against), so tools that gate features on the
/// QEMU version keep working; `package` names rvmm itself.
pub const QEMU_VERSION: (u32, u32, u32) = (7, 2, 0);

/// Largest request rvmm buffers before giving up on it (QEMU's limit is far larger; no QMP
/// command rvmm serves needs more than a few hundred bytes).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// QMP error classes (QAPI `QapiErrorClass`) that rvmm produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
    /// No balloon (`balloon`, `query-balloon`).
    DeviceNotActive,
    /// A type or object that does not exist (`device-list-properties`, `qom-list-properties`).
    DeviceNotFound,
}

/// A command failure: its class and human-readable description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    pub fn generic(desc: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    pub fn not_found(desc: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::CommandNotFound,
            desc: desc.into(),
        }
    }

    pub fn device_not_found(desc: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::DeviceNotFound,
            desc: desc.into(),
        }
    }
}

/// The `version` object of the greeting and of `query-version`.
pub fn version() -> Value {
    let (major, minor, micro) = QEMU_VERSION;
    json!({
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": format!("rvmm {}", env!("CARGO_PKG_VERSION")),
    })
}

/// The greeting sent when a client connects. No capabilities: rvmm has no out-of-band execution.
pub fn greeting() -> Value {
    json!({"QMP": {"version": version(), "capabilities": []}})
}

/// One well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: String,
    pub arguments: Map<String, Value>,
    pub id: Option<Value>,
}

/// Check a decoded JSON value against the request shape (QEMU `qmp_dispatch_check_obj`).
/// On error, returns the request's `id` (if it had one) with the error.
pub fn parse_request(value: Value) -> Result<Request, (Option<Value>, QmpError)> {
    let Value::Object(mut obj) = value else {
        return Err((None, QmpError::generic("QMP input must be a JSON object")));
    };
    let id = obj.remove("id");
    let fail = |desc: String| Err((id.clone(), QmpError::generic(desc)));
    let mut command = None;
    let mut arguments = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "execute" => match value {
                Value::String(s) => command = Some(s),
                _ => return fail("QMP input member 'execute' must be a string".into()),
            },
            "arguments" => match value {
                Value::Object(map) => arguments = map,
                _ => return fail("QMP input member 'arguments' must be an object".into()),
            },
            other => return fail(format!("QMP input member '{other}' is unexpected")),
        }
    }
    match command {
        Some(command) => Ok(Request {
            command,
            arguments,
            id,
        }),
        None => fail("QMP input lacks member 'execute'".into()),
    }
}

fn with_id(mut obj: Map<String, Value>, id: Option<Value>) -> Value {
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    Value::Object(obj)
}

/// A success reply.
pub fn reply(ret: Value, id: Option<Value>) -> Value {
    let mut obj = Map::new();
    obj.insert("return".into(), ret);
    with_id(obj, id)
}

/// An error reply.
pub fn error_reply(err: &QmpError, id: Option<Value>) -> Value {
    let class = match err.class {
        ErrorClass::GenericError => "GenericError",
        ErrorClass::CommandNotFound => "CommandNotFound",
        ErrorClass::DeviceNotActive => "DeviceNotActive",
        ErrorClass::DeviceNotFound => "DeviceNotFound",
    };
    let mut obj = Map::new();
    obj.insert("error".into(), json!({"class": class, "desc": err.desc}));
    with_id(obj, id)
}

/// An event with QEMU's wall-clock timestamp; `data` is omitted when `None`.
pub fn event(name: &str, data: Option<Value>) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut obj = Map::new();
    obj.insert("event".into(), name.into());
    if let Some(data) = data {
        obj.insert("data".into(), data);
    }
    obj.insert(
        "timestamp".into(),
        json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()}),
    );
    Value::Object(obj)
}

/// One QMP message on the wire.
pub fn encode(msg: &Value) -> Vec<u8> {
    let mut out = msg.to_string().into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}

/// What the decoder produced from the bytes received so far.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Value(Value),
    /// Malformed input; the description goes into a GenericError reply.
    Error(String),
}

/// Splits a byte stream into JSON values.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// After a syntax error, input is dropped up to and including the next newline.
    skipping: bool,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value or error, or `None` when more input is needed.
    pub fn next_item(&mut self) -> Option<Decoded> {
        if self.skipping {
            let nl = self.buf.iter().position(|&b| b == b'\n');
            match nl {
                Some(nl) => {
                    self.buf.drain(..=nl);
                    self.skipping = false;
                }
                None => {
                    self.buf.clear();
                    return None;
                }
            }
        }
        let Some(start) = self.buf.iter().position(|b| !b.is_ascii_whitespace()) else {
            self.buf.clear();
            return None;
        };
        self.buf.drain(..start);
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match stream.next()? {
            Ok(value) => {
                let used = stream.byte_offset();
                self.buf.drain(..used);
                Some(Decoded::Value(value))
            }
            Err(e) if e.is_eof() => {
                if self.buf.len() <= MAX_REQUEST_BYTES {
                    return None;
                }
                self.buf.clear();
                self.skipping = true;
                Some(Decoded::Error(format!(
                    "JSON parse error, request exceeds {MAX_REQUEST_BYTES} bytes"
                )))
            }
            Err(e) => {
                self.skipping = true;
                Some(Decoded::Error(format!("JSON parse error, {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Decoded> {
        let mut d = Decoder::default();
        d.push(input);
        std::iter::from_fn(|| d.next_item()).collect()
    }

    #[test]
    fn decoder_splits_stream_and_recovers() {
        let got = decode_all(b"{\"a\": 1}{\"b\":\n2}\n{\"execute\": bad}\n  {\"c\": 3}\r\n");
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], Decoded::Value(json!({"a": 1})));
        assert_eq!(got[1], Decoded::Value(json!({"b": 2})));
        assert!(matches!(&got[2], Decoded::Error(e) if e.starts_with("JSON parse error")));
        assert_eq!(got[3], Decoded::Value(json!({"c": 3})));
    }

    #[test]
    fn decoder_waits_for_the_rest_of_a_value() {
        let mut d = Decoder::default();
        d.push(b"{\"execute\": \"qu");
        assert_eq!(d.next_item(), None);
        d.push(b"it\"}");
        assert_eq!(
            d.next_item(),
            Some(Decoded::Value(json!({"execute": "quit"})))
        );
        assert_eq!(d.next_item(), None);
        // Garbage without a newline is dropped, and so is the rest of its line when it comes.
        d.push(b"}}} garbage");
        assert!(matches!(d.next_item(), Some(Decoded::Error(_))));
        assert_eq!(d.next_item(), None);
        d.push(b" more\n[1]");
        assert_eq!(d.next_item(), Some(Decoded::Value(json!([1]))));
    }

    #[test]
    fn oversized_and_deeply_nested_input_is_an_error() {
        let mut d = Decoder::default();
        d.push(b"\"");
        d.push(&vec![b'a'; MAX_REQUEST_BYTES + 1]);
        assert!(matches!(d.next_item(), Some(Decoded::Error(e)) if e.contains("exceeds")));
        let deep = "[".repeat(10_000);
        let got = decode_all(format!("{deep}\n{{}}").as_bytes());
        assert!(matches!(&got[0], Decoded::Error(_)));
        assert_eq!(got[1], Decoded::Value(json!({})));
    }

    #[test]
    fn request_shape_errors_match_qemu() {
        let err = |v: Value| parse_request(v).unwrap_err();
        assert_eq!(err(json!([1])).1.desc, "QMP input must be a JSON object");
        assert_eq!(
            err(json!({"execute": 1, "id": 7})),
            (
                Some(json!(7)),
                QmpError::generic("QMP input member 'execute' must be a string")
            )
        );
        assert_eq!(
            err(json!({"execute": "stop", "arguments": []})).1.desc,
            "QMP input member 'arguments' must be an object"
        );
        assert_eq!(
            err(json!({"exec": "stop"})).1.desc,
            "QMP input member 'exec' is unexpected"
        );
        assert_eq!(
            err(json!({"id": "x"})).1.desc,
            "QMP input lacks member 'execute'"
        );
        let ok = parse_request(json!({"execute": "stop", "id": {"a": [1]}})).unwrap();
        assert_eq!(ok.command, "stop");
        assert_eq!(ok.id, Some(json!({"a": [1]})));
        assert!(ok.arguments.is_empty());
    }

    #[test]
    fn messages_have_qemu_shape() {
        assert_eq!(
            encode(&reply(json!({}), Some(json!(1)))),
            b"{\"id\":1,\"return\":{}}\r\n"
        );
        let e = error_reply(&QmpError::not_found("x"), None);
        assert_eq!(
            e,
            json!({"error": {"class": "CommandNotFound", "desc": "x"}})
        );
        let ev = event("STOP", None);
        assert!(ev["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
        assert!(ev["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        assert!(ev.get("data").is_none());
        let g = greeting();
        assert_eq!(g["QMP"]["version"]["qemu"]["major"], 7);
        assert_eq!(g["QMP"]["capabilities"], json!([]));
    }
}
