//! QMP monitor options: `-qmp`, `-chardev socket,...` with `-mon chardev=...,mode=control`.
//!
//! Syntax follows QEMU's chardev parser (`chardev/char.c`, `qemu_chr_parse_compat`):
//! `unix:PATH[,server=on|off][,wait=on|off]` and `tcp:HOST:PORT[,...]`, where the legacy flags
//! `server` and `nowait` mean `server=on` and `wait=off`. As in QEMU, a server waits for its
//! first client before the guest starts unless `wait=off` is given.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};

/// Where a QMP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpAddress {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    /// `-chardev socket,fd=N,server=on`: a listening socket the parent (libvirt) bound and
    /// passed open.
    Fd(i32),
}

/// One QMP monitor: a listening socket, one client at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpConfig {
    pub address: QmpAddress,
    /// Block start-up until the first client connects (QEMU's default for servers).
    pub wait: bool,
    /// The chardev's `id=` (QMP `query-chardev`'s label); None for `-qmp`.
    pub label: Option<String>,
}

/// Why a monitor option was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MonitorError {
    #[error("{0}")]
    Opts(#[from] OptsError),
    #[error(
        "backend '{0}' is not supported (supported: unix:PATH, tcp:HOST:PORT, with server=on)"
    )]
    Backend(String),
    #[error("chardev backend '{0}' is not supported (supported: socket, pty, file, null, stdio)")]
    ChardevBackend(String),
    #[error("file: needs path=")]
    FilePath,
    #[error("fd={0}: expected a descriptor number")]
    Fd(String),
    #[error("chardev '{0}' is not a socket (a -mon needs one)")]
    NotSocket(String),
    #[error(
        "chardev '{0}' cannot be a serial port's backend (socket chardevs are QMP monitors only)"
    )]
    NotSerial(String),
    #[error("'{0}': expected HOST:PORT")]
    TcpAddress(String),
    #[error("'{0}': port must be a number from 0 to 65535")]
    Port(String),
    #[error("client mode (server=off) is not supported; rvmm only listens")]
    ClientMode,
    #[error("socket needs path= or host= and port=")]
    SocketAddress,
    #[error("parameter 'id' is missing")]
    MissingId,
    #[error("duplicate chardev id '{0}'")]
    DuplicateId(String),
    #[error("parameter 'chardev' is missing")]
    MissingChardev,
    #[error("chardev '{0}' not found")]
    UnknownChardev(String),
    #[error("mode '{0}' is not supported (supported: control)")]
    Mode(String),
    #[error("pretty-printed QMP is not supported")]
    Pretty,
    #[error("chardev '{0}' is not used by any -mon or serial port")]
    UnusedChardev(String),
    #[error("chardev '{0}' is used more than once")]
    ChardevInUse(String),
}

fn bool_param(opts: &QemuOpts, key: &str) -> Result<Option<bool>, MonitorError> {
    match opts.get(key) {
        None => Ok(None),
        Some("on" | "yes" | "true") => Ok(Some(true)),
        Some("off" | "no" | "false") => Ok(Some(false)),
        Some(v) => Err(OptsError::InvalidBool {
            key: key.into(),
            value: v.into(),
        }
        .into()),
    }
}

/// `server`/`wait` in either spelling; only server mode is accepted.
fn server_wait(opts: &QemuOpts) -> Result<bool, MonitorError> {
    if bool_param(opts, "server")? != Some(true) {
        return Err(MonitorError::ClientMode);
    }
    let nowait = bool_param(opts, "nowait")?.unwrap_or(false);
    Ok(bool_param(opts, "wait")?.unwrap_or(!nowait))
}

fn parse_port(text: &str) -> Result<u16, MonitorError> {
    text.parse().map_err(|_| MonitorError::Port(text.into()))
}

/// `-qmp unix:PATH,server=on,wait=off` or `-qmp tcp:HOST:PORT,server,nowait`; a unix PATH may
/// be any bytes.
pub fn parse_qmp(arg: impl AsRef<OsStr>) -> Result<QmpConfig, MonitorError> {
    let arg = arg.as_ref().as_bytes();
    let (backend, rest) = match arg.iter().position(|&b| b == b':') {
        Some(i) => (&arg[..i], &arg[i + 1..]),
        None => (arg, &b""[..]),
    };
    let backend = String::from_utf8_lossy(backend);
    let opts = QemuOpts::parse_os(OsStr::from_bytes(rest), Some("addr"))?;
    let address = match backend.as_ref() {
        "unix" => {
            opts.check_known(&["addr", "server", "wait", "nowait"])?;
            opts.check_text(&["addr"])?;
            let path = opts.get_path("addr").unwrap_or_default();
            if path.as_os_str().is_empty() {
                return Err(MonitorError::SocketAddress);
            }
            QmpAddress::Unix(path)
        }
        "tcp" => {
            opts.check_known(&["addr", "server", "wait", "nowait"])?;
            opts.check_text(&[])?;
            let addr = opts.get("addr").unwrap_or_default();
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| MonitorError::TcpAddress(addr.into()))?;
            QmpAddress::Tcp {
                // QEMU listens on all addresses for an empty host ("tcp::4444").
                host: if host.is_empty() { "0.0.0.0" } else { host }.into(),
                port: parse_port(port)?,
            }
        }
        other => return Err(MonitorError::Backend(other.into())),
    };
    Ok(QmpConfig {
        address,
        wait: server_wait(&opts)?,
        label: None,
    })
}

/// What a `-chardev` is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chardev {
    /// `socket`: usable by `-mon` as a QMP monitor.
    Socket(QmpConfig),
    /// `pty`, `file`, `null`, `stdio`: usable by a serial port (`-serial chardev:ID`,
    /// `-device isa-serial,chardev=ID`).
    Serial(crate::SerialConfig),
}

/// `-chardev socket|pty|file|null|stdio,id=X,...`: returns the id and backend; a path may be
/// any bytes.
pub fn parse_chardev(arg: impl AsRef<OsStr>) -> Result<(String, Chardev), MonitorError> {
    let opts = QemuOpts::parse_os(arg.as_ref(), Some("backend"))?;
    opts.check_text(&["path"])?;
    let backend = opts.get("backend").unwrap_or_default();
    let id = || opts.get("id").ok_or(MonitorError::MissingId);
    let serial = match backend {
        "socket" => None,
        // QEMU's logfile= and friends are refused by name through check_known.
        "pty" | "null" | "stdio" => {
            opts.check_known(&["backend", "id"])?;
            Some(match backend {
                "pty" => crate::SerialConfig::Pty,
                "null" => crate::SerialConfig::File("/dev/null".into()),
                _ => crate::SerialConfig::Stdio,
            })
        }
        "file" => {
            opts.check_known(&["backend", "id", "path", "append"])?;
            let path = opts
                .get_path("path")
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or(MonitorError::FilePath)?;
            if bool_param(&opts, "append")? == Some(true) {
                Some(crate::SerialConfig::Append(path))
            } else {
                Some(crate::SerialConfig::File(path))
            }
        }
        other => return Err(MonitorError::ChardevBackend(other.into())),
    };
    if let Some(serial) = serial {
        return Ok((id()?.to_string(), Chardev::Serial(serial)));
    }
    opts.check_known(&[
        "backend", "id", "path", "host", "port", "server", "wait", "nowait", "fd",
    ])?;
    let id = id()?;
    let address = match (opts.get_path("path"), opts.get("port"), opts.get("fd")) {
        (None, None, Some(fd)) => {
            QmpAddress::Fd(fd.parse().map_err(|_| MonitorError::Fd(fd.into()))?)
        }
        (Some(path), None, None) if !path.as_os_str().is_empty() => QmpAddress::Unix(path),
        (None, Some(port), None) => QmpAddress::Tcp {
            host: match opts.get("host") {
                Some(h) if !h.is_empty() => h.into(),
                _ => "0.0.0.0".into(),
            },
            port: parse_port(port)?,
        },
        _ => return Err(MonitorError::SocketAddress),
    };
    Ok((
        id.to_string(),
        Chardev::Socket(QmpConfig {
            address,
            wait: server_wait(&opts)?,
            label: Some(id.to_string()),
        }),
    ))
}

/// `-mon [chardev=]X,mode=control`: returns the chardev id.
pub fn parse_mon(arg: &str) -> Result<String, MonitorError> {
    let opts = QemuOpts::parse(arg, Some("chardev"))?;
    opts.check_known(&["chardev", "mode", "pretty", "id"])?;
    // QEMU's -mon default mode is readline (HMP), which rvmm does not have.
    match opts.get("mode").unwrap_or("readline") {
        "control" => {}
        other => return Err(MonitorError::Mode(other.into())),
    }
    if bool_param(&opts, "pretty")? == Some(true) {
        return Err(MonitorError::Pretty);
    }
    opts.get("chardev")
        .map(str::to_string)
        .ok_or(MonitorError::MissingChardev)
}

/// A serial port's chardev: its label and backend.
pub(crate) type SerialChardev = (String, crate::SerialConfig);

/// Chardevs and `-mon` references, resolved once the whole command line is read.
#[derive(Debug, Default)]
pub(crate) struct Monitors {
    chardevs: HashMap<String, Chardev>,
    order: Vec<String>,
    mons: Vec<String>,
    /// A serial port's chardev (`-serial chardev:ID`, `-device isa-serial,chardev=ID`).
    serial: Option<String>,
}

impl Monitors {
    pub fn add_chardev(&mut self, arg: impl AsRef<OsStr>) -> Result<(), MonitorError> {
        let (id, qmp) = parse_chardev(arg)?;
        if self.order.contains(&id) {
            return Err(MonitorError::DuplicateId(id));
        }
        self.chardevs.insert(id.clone(), qmp);
        self.order.push(id);
        Ok(())
    }

    pub fn add_mon(&mut self, arg: &str) -> Result<(), MonitorError> {
        self.mons.push(parse_mon(arg)?);
        Ok(())
    }

    /// Connect COM1 to chardev `id` (checked at resolve time).
    pub fn set_serial(&mut self, id: &str) {
        self.serial = Some(id.to_string());
    }

    /// The monitors in `-mon` order and the serial port's backend with its label; every
    /// chardev must be used exactly once.
    pub fn resolve(mut self) -> Result<(Vec<QmpConfig>, Option<SerialChardev>), MonitorError> {
        let mut take = |id: &String| match self.chardevs.remove(id) {
            Some(c) => Ok(c),
            None if self.order.contains(id) => Err(MonitorError::ChardevInUse(id.clone())),
            None => Err(MonitorError::UnknownChardev(id.clone())),
        };
        let mut out = Vec::new();
        for id in &self.mons {
            match take(id)? {
                Chardev::Socket(qmp) => out.push(qmp),
                Chardev::Serial(_) => return Err(MonitorError::NotSocket(id.clone())),
            }
        }
        let serial = match &self.serial {
            Some(id) => match take(id)? {
                Chardev::Serial(s) => Some((id.clone(), s)),
                Chardev::Socket(_) => return Err(MonitorError::NotSerial(id.clone())),
            },
            None => None,
        };
        if let Some(id) = self.order.iter().find(|id| self.chardevs.contains_key(*id)) {
            return Err(MonitorError::UnusedChardev(id.clone()));
        }
        Ok((out, serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(p: &str, wait: bool) -> QmpConfig {
        QmpConfig {
            address: QmpAddress::Unix(p.into()),
            wait,
            label: None,
        }
    }

    #[test]
    fn qmp_forms() {
        assert_eq!(
            parse_qmp("unix:/tmp/q.sock,server=on,wait=off"),
            Ok(unix("/tmp/q.sock", false))
        );
        assert_eq!(
            parse_qmp("unix:/tmp/q.sock,server,nowait"),
            Ok(unix("/tmp/q.sock", false))
        );
        assert_eq!(
            parse_qmp("unix:/tmp/a,,b,server"),
            Ok(unix("/tmp/a,b", true))
        );
        assert_eq!(
            parse_qmp("tcp:127.0.0.1:4444,server=on,wait=off"),
            Ok(QmpConfig {
                address: QmpAddress::Tcp {
                    host: "127.0.0.1".into(),
                    port: 4444
                },
                wait: false,
                label: None,
            })
        );
        assert_eq!(
            parse_qmp("tcp::4444,server,nowait").unwrap().address,
            QmpAddress::Tcp {
                host: "0.0.0.0".into(),
                port: 4444
            }
        );
        assert_eq!(parse_qmp("unix:/x"), Err(MonitorError::ClientMode));
        assert_eq!(
            parse_qmp("stdio"),
            Err(MonitorError::Backend("stdio".into()))
        );
        assert_eq!(
            parse_qmp("tcp:4444,server"),
            Err(MonitorError::TcpAddress("4444".into()))
        );
        assert_eq!(
            parse_qmp("tcp:h:99999,server"),
            Err(MonitorError::Port("99999".into()))
        );
        assert_eq!(parse_qmp("unix:,server"), Err(MonitorError::SocketAddress));
        assert!(matches!(
            parse_qmp("unix:/x,server,wait=maybe"),
            Err(MonitorError::Opts(OptsError::InvalidBool { .. }))
        ));
        assert!(matches!(
            parse_qmp("unix:/x,server,telnet=on"),
            Err(MonitorError::Opts(OptsError::UnknownParameter(_)))
        ));
    }

    #[test]
    fn chardev_and_mon() {
        let mut m = Monitors::default();
        m.add_chardev("socket,id=m0,path=/tmp/m0,server=on,wait=off")
            .unwrap();
        m.add_chardev("socket,id=m1,host=127.0.0.1,port=5555,server,nowait")
            .unwrap();
        assert_eq!(
            m.add_chardev("socket,id=m0,path=/y,server"),
            Err(MonitorError::DuplicateId("m0".into()))
        );
        m.add_mon("chardev=m1,mode=control").unwrap();
        m.add_mon("m0,mode=control").unwrap();
        let got = m.resolve().unwrap().0;
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].address,
            QmpAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 5555
            }
        );
        assert_eq!(
            got[1],
            QmpConfig {
                label: Some("m0".into()),
                ..unix("/tmp/m0", false)
            }
        );
    }

    #[test]
    fn chardev_and_mon_errors() {
        assert_eq!(
            parse_chardev("spicevmc,id=c"),
            Err(MonitorError::ChardevBackend("spicevmc".into()))
        );
        assert_eq!(
            parse_chardev("socket,path=/x,server"),
            Err(MonitorError::MissingId)
        );
        assert_eq!(
            parse_chardev("socket,id=c,server"),
            Err(MonitorError::SocketAddress)
        );
        assert_eq!(
            parse_mon("chardev=c"),
            Err(MonitorError::Mode("readline".into()))
        );
        assert_eq!(
            parse_mon("chardev=c,mode=control,pretty=on"),
            Err(MonitorError::Pretty)
        );
        assert_eq!(parse_mon("mode=control"), Err(MonitorError::MissingChardev));

        let mut m = Monitors::default();
        m.add_mon("chardev=nope,mode=control").unwrap();
        assert_eq!(
            m.resolve().unwrap_err(),
            MonitorError::UnknownChardev("nope".into())
        );
        let mut m = Monitors::default();
        m.add_chardev("socket,id=c,path=/x,server").unwrap();
        assert_eq!(
            m.resolve().unwrap_err(),
            MonitorError::UnusedChardev("c".into())
        );
        let mut m = Monitors::default();
        m.add_chardev("socket,id=c,path=/x,server").unwrap();
        m.add_mon("c,mode=control").unwrap();
        m.add_mon("c,mode=control").unwrap();
        assert_eq!(
            m.resolve().unwrap_err(),
            MonitorError::ChardevInUse("c".into())
        );
    }

    #[test]
    fn libvirt_chardevs() {
        let mut m = Monitors::default();
        m.add_chardev("socket,id=charmonitor,fd=6,server=on,wait=off")
            .unwrap();
        m.add_chardev("pty,id=charserial0").unwrap();
        m.add_mon("chardev=charmonitor,id=monitor,mode=control")
            .unwrap();
        m.set_serial("charserial0");
        let (mons, serial) = m.resolve().unwrap();
        assert_eq!(mons[0].address, QmpAddress::Fd(6));
        assert_eq!(mons[0].label.as_deref(), Some("charmonitor"));
        assert!(!mons[0].wait);
        assert_eq!(
            serial,
            Some(("charserial0".into(), crate::SerialConfig::Pty))
        );
        assert_eq!(
            parse_chardev("file,id=f,path=/tmp/x,append=on").unwrap().1,
            Chardev::Serial(crate::SerialConfig::Append("/tmp/x".into()))
        );
        assert_eq!(parse_chardev("file,id=f"), Err(MonitorError::FilePath));
        assert!(matches!(
            parse_chardev("pty,id=p,logfile=/x"),
            Err(MonitorError::Opts(OptsError::UnknownParameter(_)))
        ));
        let mut m = Monitors::default();
        m.add_chardev("pty,id=p").unwrap();
        m.add_mon("chardev=p,mode=control").unwrap();
        assert_eq!(
            m.resolve().unwrap_err(),
            MonitorError::NotSocket("p".into())
        );
    }
}
