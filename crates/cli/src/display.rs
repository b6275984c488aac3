//! `-vnc`, `-display` and `-nographic`: where the guest's screen goes.
//!
//! rvmm's only display front end is its VNC server. As in QEMU, `-vnc` starts it whatever
//! `-display` says; without `-vnc`, `-display` or `-nographic`, rvmm does what a QEMU built
//! without a window system does: it serves VNC on localhost from port 5900 up (the next free one
//! to 5999, QEMU's `localhost:0,to=99`) and says where on stderr.

use std::path::PathBuf;

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};

/// The first VNC port; display N listens on 5900 + N.
pub const VNC_BASE_PORT: u16 = 5900;

/// A resolved VNC server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VncConfig {
    pub listen: VncListen,
    /// `password=on`: VNC Authentication; no client gets in until QMP `change-vnc-password`.
    pub password: bool,
    /// `to=L`: if the port is taken, try the next ones up to 5900 + L.
    pub last_port: Option<u16>,
    /// rvmm chose this server (no display was named): print where it listens.
    pub announce: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncListen {
    /// A host (name or address, IPv6 without brackets) and a port.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

/// Why a `-vnc` / `-display` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DisplayArgError {
    #[error(transparent)]
    Opts(#[from] OptsError),
    #[error("'{0}' is not a VNC display: give [HOST]:N, unix:PATH or none")]
    Address(String),
    #[error("display number '{0}' must be a number from 0 to {max}", max = u16::MAX - VNC_BASE_PORT)]
    DisplayNumber(String),
    #[error("to={0}: must be a display number from the display's own to {max}", max = u16::MAX - VNC_BASE_PORT)]
    To(String),
    #[error("unix: needs a path")]
    UnixPath,
    #[error("display type '{0}' is not supported (supported: none, vnc=...)")]
    Type(String),
}

/// What the display options say, before the default is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DisplayArgs {
    /// `-vnc` (or `-display vnc=`): Some(None) for `-vnc none`.
    vnc: Option<Option<VncConfig>>,
    /// `-display` or `-nographic` was given: no default VNC server.
    named: bool,
}

impl DisplayArgs {
    /// `-vnc ARG`.
    pub(crate) fn vnc(&mut self, arg: &str) -> Result<(), DisplayArgError> {
        self.vnc = Some(parse_vnc(arg)?);
        Ok(())
    }

    /// `-display TYPE[,...]`: `none`, or `vnc=ARG` (the rest is a `-vnc` argument).
    /// Returns true when the user asked for help.
    pub(crate) fn display(&mut self, arg: &str) -> Result<bool, DisplayArgError> {
        self.named = true;
        if let Some(vnc) = arg.strip_prefix("vnc=") {
            return self.vnc(vnc).map(|()| false);
        }
        let opts = QemuOpts::parse(arg, Some("type"))?;
        if opts.wants_help() {
            return Ok(true);
        }
        match opts.get("type").unwrap_or_default() {
            "none" => {
                opts.check_known(&["type"])?;
                Ok(false)
            }
            other => Err(DisplayArgError::Type(other.to_string())),
        }
    }

    /// `-nographic`.
    pub(crate) fn nographic(&mut self) {
        self.named = true;
    }

    /// The VNC server to run, if any.
    pub(crate) fn resolve(self) -> Option<VncConfig> {
        match self.vnc {
            Some(vnc) => vnc,
            None if self.named => None,
            None => Some(VncConfig {
                listen: VncListen::Tcp {
                    host: "127.0.0.1".into(),
                    port: VNC_BASE_PORT,
                },
                password: false,
                last_port: Some(VNC_BASE_PORT + 99),
                announce: true,
            }),
        }
    }
}

/// QEMU `-vnc` options rvmm does not implement.
const UNSUPPORTED: &[&str] = &[
    "reverse",
    "websocket",
    "tls-creds",
    "tls-authz",
    "sasl",
    "sasl-authz",
    "acl",
    "lossy",
    "non-adaptive",
    "share",
    "key-delay-ms",
    "audiodev",
    "power-control",
    "display",
    "head",
    "connections",
    "password-secret",
    "ipv4",
    "ipv6",
];

/// `[HOST]:N[,password=on][,to=L]`, `unix:PATH[,...]` or `none`.
fn parse_vnc(arg: &str) -> Result<Option<VncConfig>, DisplayArgError> {
    let opts = QemuOpts::parse(arg, Some("vnc"))?;
    opts.check_unsupported(UNSUPPORTED)?;
    opts.check_known(&["vnc", "password", "to"])?;
    let addr = opts.get("vnc").unwrap_or_default();
    if addr == "none" {
        return Ok(None);
    }
    let password = opts.get_bool("password")?.unwrap_or(false);
    if let Some(path) = addr.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(DisplayArgError::UnixPath);
        }
        return Ok(Some(VncConfig {
            listen: VncListen::Unix(PathBuf::from(path)),
            password,
            last_port: None,
            announce: false,
        }));
    }
    let (host, display) = addr
        .rsplit_once(':')
        .ok_or_else(|| DisplayArgError::Address(addr.to_string()))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(':') && !addr.starts_with('[') {
        return Err(DisplayArgError::Address(addr.to_string()));
    }
    let max = u16::MAX - VNC_BASE_PORT;
    let number = |s: &str, err: fn(String) -> DisplayArgError| {
        s.parse::<u16>()
            .ok()
            .filter(|&n| n <= max && !s.starts_with('+'))
            .ok_or_else(|| err(s.to_string()))
    };
    let n = number(display, DisplayArgError::DisplayNumber)?;
    let last_port = match opts.get("to") {
        Some(to) => {
            let l = number(to, DisplayArgError::To)?;
            if l < n {
                return Err(DisplayArgError::To(to.to_string()));
            }
            Some(VNC_BASE_PORT + l)
        }
        None => None,
    };
    Ok(Some(VncConfig {
        listen: VncListen::Tcp {
            // No host: loopback only (QEMU would listen on every interface; rvmm asks for it
            // to be named, e.g. 0.0.0.0:0).
            host: if host.is_empty() {
                "127.0.0.1".into()
            } else {
                host.into()
            },
            port: VNC_BASE_PORT + n,
        },
        password,
        last_port,
        announce: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnc(arg: &str) -> Result<Option<VncConfig>, String> {
        parse_vnc(arg).map_err(|e| e.to_string())
    }

    fn tcp(host: &str, port: u16) -> VncListen {
        VncListen::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn vnc_addresses() {
        let c = vnc(":0").unwrap().unwrap();
        assert_eq!(c.listen, tcp("127.0.0.1", 5900));
        assert!(!c.password);
        let c = vnc("0.0.0.0:3,password=on,to=10").unwrap().unwrap();
        assert_eq!(c.listen, tcp("0.0.0.0", 5903));
        assert!(c.password);
        assert_eq!(c.last_port, Some(5910));
        assert_eq!(vnc("[::1]:1").unwrap().unwrap().listen, tcp("::1", 5901));
        assert_eq!(
            vnc("localhost:59635").unwrap().unwrap().listen,
            tcp("localhost", 65535)
        );
        assert_eq!(
            vnc("unix:/tmp/v.sock").unwrap().unwrap().listen,
            VncListen::Unix("/tmp/v.sock".into())
        );
        assert_eq!(vnc("none").unwrap(), None);
        for (bad, msg) in [
            ("", "is not a VNC display"),
            ("localhost", "is not a VNC display"),
            ("::1:0", "is not a VNC display"),
            (":x", "display number 'x'"),
            (":59636", "display number '59636'"),
            (":-1", "display number '-1'"),
            (":5,to=4", "to=4"),
            ("unix:", "needs a path"),
            (":0,password=maybe", "password"),
            (":0,websocket=on", "websocket"),
            (":0,foo=1", "foo"),
        ] {
            let e = vnc(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn default_and_display_options() {
        let d = DisplayArgs::default().resolve().unwrap();
        assert!(d.announce);
        assert_eq!(d.listen, tcp("127.0.0.1", 5900));
        assert_eq!(d.last_port, Some(5999));
        let mut a = DisplayArgs::default();
        a.nographic();
        assert_eq!(a.clone().resolve(), None);
        // -vnc still starts with -nographic or -display none, as in QEMU.
        a.vnc(":2").unwrap();
        assert_eq!(a.resolve().unwrap().listen, tcp("127.0.0.1", 5902));
        let mut a = DisplayArgs::default();
        assert_eq!(a.display("none"), Ok(false));
        assert_eq!(a.clone().resolve(), None);
        assert_eq!(a.display("vnc=:1,password=on"), Ok(false));
        assert!(a.resolve().unwrap().password);
        assert!(DisplayArgs::default().display("help").unwrap());
        assert_eq!(
            DisplayArgs::default()
                .display("gtk")
                .unwrap_err()
                .to_string(),
            "display type 'gtk' is not supported (supported: none, vnc=...)"
        );
        let mut a = DisplayArgs::default();
        a.vnc("none").unwrap();
        assert_eq!(a.resolve(), None);
    }
}
