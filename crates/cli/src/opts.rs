//! QemuOpts: QEMU's `key=value,key=value` option-argument syntax.
//!
//! Rules (QEMU `util/qemu-option.c`, `opts_do_parse`):
//! - parameters are separated by `,`; `,,` is a literal comma inside a name or value;
//! - the first parameter may omit its key when the option has an implied key
//!   (`-smp 4` is `cpus=4`, `-machine q35` is `type=q35`);
//! - a later parameter without `=` is a boolean flag set to `on`
//!   (`help` and `?` ask for help);
//! - when a key repeats, the last value wins.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use thiserror::Error;

use crate::size::{parse_size, SizeError};

/// Why an option argument was rejected; the caller prefixes the option name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptsError {
    #[error("empty parameter name in '{0}'")]
    EmptyName(String),
    #[error("parameter '{0}' needs a value (key=value)")]
    MissingValue(String),
    #[error("unknown parameter '{0}'")]
    UnknownParameter(String),
    #[error("parameter '{key}' is not supported")]
    UnsupportedParameter { key: String },
    #[error("parameter '{key}' expects 'on' or 'off', got '{value}'")]
    InvalidBool { key: String, value: String },
    #[error("parameter '{key}': value '{value}' is not supported")]
    UnsupportedValue { key: String, value: String },
    #[error("parameter '{key}' expects a number, got '{value}'")]
    InvalidNumber { key: String, value: String },
    #[error("parameter '{key}' value '{value}' is out of range (maximum {max})")]
    OutOfRange {
        key: String,
        value: String,
        max: u64,
    },
    #[error("parameter '{key}': value '{value}' is not valid UTF-8 (only paths may be any bytes)")]
    NotText { key: String, value: String },
    #[error("parameter name '{0}' is not valid UTF-8")]
    NameNotText(String),
    #[error("parameter '{key}': {source}")]
    InvalidSize {
        key: String,
        #[source]
        source: SizeError,
    },
}

/// One parsed option argument: ordered `(key, value)` pairs. Values are bytes (Linux arguments
/// are); `get` sees them as text (invalid bytes replaced), [`QemuOpts::get_path`] as they are,
/// and [`QemuOpts::check_text`] refuses bytes where only a path may have them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuOpts {
    params: Vec<(String, String)>,
    /// The exact bytes of each value, parallel to `params`.
    raw: Vec<OsString>,
}

/// Splits one parameter off `input` at the first unescaped `delim`, unescaping `,,`.
/// Returns the unescaped bytes and the rest from the delimiter on (if one was found).
fn take_until(input: &[u8], delim: u8) -> (Vec<u8>, Option<&[u8]>) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b',' && input.get(i + 1) == Some(&b',') {
            out.push(b',');
            i += 2;
            continue;
        }
        if c == delim || c == b',' {
            return (out, Some(&input[i..]));
        }
        out.push(c);
        i += 1;
    }
    (out, None)
}

impl QemuOpts {
    /// Parses `input`; `implied_key` names the key of a leading bare value.
    pub fn parse(input: &str, implied_key: Option<&str>) -> Result<Self, OptsError> {
        Self::parse_os(OsStr::new(input), implied_key)
    }

    /// [`QemuOpts::parse`] of an argument that may hold any bytes; names must be text.
    pub fn parse_os(input: &OsStr, implied_key: Option<&str>) -> Result<Self, OptsError> {
        let whole = || input.to_string_lossy().into_owned();
        let text = |name: Vec<u8>| {
            String::from_utf8(name)
                .map_err(|e| OptsError::NameNotText(String::from_utf8_lossy(e.as_bytes()).into()))
        };
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut rest = Some(input.as_bytes());
        let mut first = true;
        while let Some(part) = rest {
            let (name, after) = take_until(part, b'=');
            match after {
                Some(tail) if tail.starts_with(b"=") => {
                    let (value, after_value) = take_until(&tail[1..], b',');
                    if name.is_empty() {
                        return Err(OptsError::EmptyName(whole()));
                    }
                    pairs.push((text(name)?, value));
                    rest = after_value.map(|t| &t[1..]);
                }
                _ => {
                    // A bare parameter: the implied key's value, or a flag set to on.
                    match implied_key {
                        Some(key) if first => pairs.push((key.to_string(), name)),
                        _ if name.is_empty() => return Err(OptsError::EmptyName(whole())),
                        _ if name == b"help" || name == b"?" => {
                            pairs.push(("help".to_string(), b"on".to_vec()))
                        }
                        _ => pairs.push((text(name)?, b"on".to_vec())),
                    }
                    rest = after.map(|t| &t[1..]);
                }
            }
            first = false;
        }
        let params = pairs
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let raw = pairs
            .into_iter()
            .map(|(_, v)| OsString::from_vec(v))
            .collect();
        Ok(QemuOpts { params, raw })
    }

    /// Refuses a value that is not text, unless its key is in `paths`.
    pub fn check_text(&self, paths: &[&str]) -> Result<(), OptsError> {
        for ((key, value), raw) in self.params.iter().zip(&self.raw) {
            if raw.to_str().is_none() && !paths.contains(&key.as_str()) {
                return Err(OptsError::NotText {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    /// The last value given for `key`, as the exact bytes of a path.
    pub fn get_path(&self, key: &str) -> Option<PathBuf> {
        let i = self.params.iter().rposition(|(k, _)| k == key)?;
        Some(PathBuf::from(&self.raw[i]))
    }

    /// All parameters in command-line order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` appears at all.
    pub fn contains(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// True when the user asked for help (`help`, `?`, or a bare `help` implied value).
    pub fn wants_help(&self) -> bool {
        self.contains("help")
            || self
                .params
                .first()
                .is_some_and(|(_, v)| v == "help" || v == "?")
    }

    /// Fails on the first key not in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), OptsError> {
        match self
            .params
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(OptsError::UnknownParameter(k.clone())),
            None => Ok(()),
        }
    }

    /// Fails on the first key in `unsupported` that is present: QEMU knows it, rvmm does not.
    pub fn check_unsupported(&self, unsupported: &[&str]) -> Result<(), OptsError> {
        match self
            .params
            .iter()
            .find(|(k, _)| unsupported.contains(&k.as_str()))
        {
            Some((k, _)) => Err(OptsError::UnsupportedParameter { key: k.clone() }),
            None => Ok(()),
        }
    }

    /// A boolean parameter: on/off, yes/no, true/false, y/n.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, OptsError> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    /// An unsigned number parameter (decimal, `0x` hex, or `0` octal like C `strtoull` base 0).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, OptsError> {
        self.get(key).map(|v| parse_number(key, v)).transpose()
    }

    /// An unsigned number parameter no larger than `max`.
    pub fn get_number_max(&self, key: &str, max: u64) -> Result<Option<u64>, OptsError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = parse_number(key, v)?;
                if n > max {
                    return Err(OptsError::OutOfRange {
                        key: key.to_string(),
                        value: v.to_string(),
                        max,
                    });
                }
                Ok(Some(n))
            }
        }
    }

    /// A `u32` parameter.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, OptsError> {
        Ok(self
            .get_number_max(key, u64::from(u32::MAX))?
            .and_then(|n| u32::try_from(n).ok()))
    }

    /// A `u16` parameter.
    pub fn get_u16(&self, key: &str) -> Result<Option<u16>, OptsError> {
        Ok(self
            .get_number_max(key, u64::from(u16::MAX))?
            .and_then(|n| u16::try_from(n).ok()))
    }

    /// A size parameter; a bare number is multiplied by `default_unit`.
    pub fn get_size(&self, key: &str, default_unit: u64) -> Result<Option<u64>, OptsError> {
        self.get(key)
            .map(|v| {
                parse_size(v, default_unit).map_err(|source| OptsError::InvalidSize {
                    key: key.to_string(),
                    source,
                })
            })
            .transpose()
    }
}

/// QEMU's boolean spellings (`qapi_bool_parse`).
pub fn parse_bool(key: &str, value: &str) -> Result<bool, OptsError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(OptsError::InvalidBool {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// An unsigned integer with C `strtoull(…, 0)` prefixes: `0x` hex, leading `0` octal.
pub fn parse_number(key: &str, value: &str) -> Result<u64, OptsError> {
    let (digits, radix) = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        (hex, 16)
    } else if value.len() > 1 && value.starts_with('0') {
        (&value[1..], 8)
    } else {
        (value, 10)
    };
    // from_str_radix accepts a leading '+', QEMU does not.
    let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    let parsed = if valid {
        u64::from_str_radix(digits, radix).ok()
    } else {
        None
    };
    parsed.ok_or_else(|| {
        if valid {
            OptsError::OutOfRange {
                key: key.to_string(),
                value: value.to_string(),
                max: u64::MAX,
            }
        } else {
            OptsError::InvalidNumber {
                key: key.to_string(),
                value: value.to_string(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(opts: &QemuOpts) -> Vec<(&str, &str)> {
        opts.params()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn key_value_pairs() {
        let o = QemuOpts::parse("cpus=4,sockets=2,cores=2", None).unwrap();
        assert_eq!(pairs(&o), [("cpus", "4"), ("sockets", "2"), ("cores", "2")]);
        assert_eq!(o.get("sockets"), Some("2"));
        assert_eq!(o.get("threads"), None);
    }

    #[test]
    fn implied_first_key() {
        let o = QemuOpts::parse("4", Some("cpus")).unwrap();
        assert_eq!(pairs(&o), [("cpus", "4")]);
        let o = QemuOpts::parse("q35,accel=kvm", Some("type")).unwrap();
        assert_eq!(pairs(&o), [("type", "q35"), ("accel", "kvm")]);
        // An explicit key in first position is used as is.
        let o = QemuOpts::parse("type=pc", Some("type")).unwrap();
        assert_eq!(pairs(&o), [("type", "pc")]);
        // Only the first parameter gets the implied key.
        let o = QemuOpts::parse("4,cores=2,foo", Some("cpus")).unwrap();
        assert_eq!(pairs(&o), [("cpus", "4"), ("cores", "2"), ("foo", "on")]);
        // Empty implied value is kept for the caller to judge.
        let o = QemuOpts::parse("", Some("size")).unwrap();
        assert_eq!(pairs(&o), [("size", "")]);
    }

    #[test]
    fn double_comma_escapes() {
        let o = QemuOpts::parse("guest=a,,b,process=x", None).unwrap();
        assert_eq!(pairs(&o), [("guest", "a,b"), ("process", "x")]);
        let o = QemuOpts::parse("a,,b", Some("guest")).unwrap();
        assert_eq!(pairs(&o), [("guest", "a,b")]);
        let o = QemuOpts::parse("path=x,,,,y,,", None).unwrap();
        assert_eq!(pairs(&o), [("path", "x,,y,")]);
        let o = QemuOpts::parse("x=,,", None).unwrap();
        assert_eq!(pairs(&o), [("x", ",")]);
    }

    #[test]
    fn equals_inside_value_is_literal() {
        let o = QemuOpts::parse("k=a=b,j=c", None).unwrap();
        assert_eq!(pairs(&o), [("k", "a=b"), ("j", "c")]);
    }

    #[test]
    fn empty_values_and_names() {
        let o = QemuOpts::parse("k=", None).unwrap();
        assert_eq!(pairs(&o), [("k", "")]);
        assert_eq!(
            QemuOpts::parse("=v", None),
            Err(OptsError::EmptyName("=v".into()))
        );
        assert_eq!(
            QemuOpts::parse("a=1,", None),
            Err(OptsError::EmptyName("a=1,".into()))
        );
        assert_eq!(
            QemuOpts::parse("4,,", Some("cpus")).unwrap().get("cpus"),
            Some("4,")
        );
        assert_eq!(
            QemuOpts::parse("", None),
            Err(OptsError::EmptyName(String::new()))
        );
    }

    #[test]
    fn flags_and_help() {
        let o = QemuOpts::parse("a=1,verbose", None).unwrap();
        assert_eq!(o.get_bool("verbose"), Ok(Some(true)));
        assert!(QemuOpts::parse("help", Some("driver"))
            .unwrap()
            .wants_help());
        assert!(QemuOpts::parse("?", Some("driver")).unwrap().wants_help());
        assert!(QemuOpts::parse("isa-debug-exit,help", Some("driver"))
            .unwrap()
            .wants_help());
        assert!(QemuOpts::parse("help", None).unwrap().wants_help());
        assert!(!QemuOpts::parse("pc", Some("type")).unwrap().wants_help());
    }

    #[test]
    fn last_value_wins() {
        let o = QemuOpts::parse("cpus=2,cpus=8", None).unwrap();
        assert_eq!(o.get("cpus"), Some("8"));
    }

    #[test]
    fn bools() {
        for (s, b) in [
            ("on", true),
            ("yes", true),
            ("true", true),
            ("y", true),
            ("off", false),
            ("no", false),
            ("false", false),
            ("n", false),
        ] {
            assert_eq!(parse_bool("k", s), Ok(b), "{s}");
        }
        let err = parse_bool("k", "maybe").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter 'k' expects 'on' or 'off', got 'maybe'"
        );
        let o = QemuOpts::parse("a=off", None).unwrap();
        assert_eq!(o.get_bool("a"), Ok(Some(false)));
        assert_eq!(o.get_bool("b"), Ok(None));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("k", "0"), Ok(0));
        assert_eq!(parse_number("k", "42"), Ok(42));
        assert_eq!(parse_number("k", "0xf4"), Ok(0xf4));
        assert_eq!(parse_number("k", "0XF4"), Ok(0xf4));
        assert_eq!(parse_number("k", "010"), Ok(8));
        assert_eq!(parse_number("k", "18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "+1", "-1", "0x", "08", "1.5", "4k", " 4", "x"] {
            assert_eq!(
                parse_number("k", bad),
                Err(OptsError::InvalidNumber {
                    key: "k".into(),
                    value: bad.into()
                }),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_number("k", "18446744073709551616"),
            Err(OptsError::OutOfRange { .. })
        ));
    }

    #[test]
    fn bounded_numbers() {
        let o = QemuOpts::parse("a=65535,b=65536,c=4294967296", None).unwrap();
        assert_eq!(o.get_u16("a"), Ok(Some(65535)));
        assert_eq!(
            o.get_u16("b").unwrap_err().to_string(),
            "parameter 'b' value '65536' is out of range (maximum 65535)"
        );
        assert!(o.get_u32("b").is_ok());
        assert!(o.get_u32("c").is_err());
        assert_eq!(o.get_u64("c"), Ok(Some(1 << 32)));
        assert_eq!(o.get_u32("missing"), Ok(None));
    }

    #[test]
    fn sizes() {
        let o = QemuOpts::parse("size=2G,bad=12Q", None).unwrap();
        assert_eq!(o.get_size("size", 1 << 20), Ok(Some(2 << 30)));
        let err = o.get_size("bad", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("invalid size '12Q'"), "{err}");
    }

    #[test]
    fn known_and_unsupported_keys() {
        let o = QemuOpts::parse("cpus=1,foo=2", None).unwrap();
        assert_eq!(
            o.check_known(&["cpus"]),
            Err(OptsError::UnknownParameter("foo".into()))
        );
        assert_eq!(o.check_known(&["cpus", "foo"]), Ok(()));
        assert_eq!(
            o.check_unsupported(&["foo"]).unwrap_err().to_string(),
            "parameter 'foo' is not supported"
        );
        assert_eq!(o.check_unsupported(&["bar"]), Ok(()));
    }

    #[test]
    fn non_ascii_is_preserved() {
        let o = QemuOpts::parse("guest=häst,,ö", None).unwrap();
        assert_eq!(o.get("guest"), Some("häst,ö"));
    }
}
