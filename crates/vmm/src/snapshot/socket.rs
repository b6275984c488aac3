//! `unix:PATH` and `tcp:HOST:PORT` migration (QEMU's live-migration spelling): the `exec:`
//! stream (stream.rs) over a socket. The restoring side listens; its listener is non-blocking
//! and polled by the event loop, so QMP and the terminating signals are served while it waits.
//! The one connection it takes is read to the end on the VMM thread.

use super::SnapshotError;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Buffer of a socket stream (its records are small headers and page runs).
const STREAM_BUFFER: usize = 1 << 20;

/// Where a socket migration goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddr {
    Unix(PathBuf),
    /// `HOST:PORT` as QEMU spells it.
    Tcp(String),
}

impl std::fmt::Display for SocketAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `HOST:PORT` as QEMU reads it: an empty host is "localhost" to connect to and any address to
/// listen on (as is `0`).
fn tcp_addr(addr: &str, listen: bool) -> String {
    match addr.rsplit_once(':') {
        Some(("" | "0", port)) if listen => format!("0.0.0.0:{port}"),
        Some(("", port)) => format!("localhost:{port}"),
        _ => addr.into(),
    }
}

fn io_err(what: String) -> impl Fn(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io {
        path: what.clone(),
        source,
    }
}

/// Connect to the restoring side.
pub fn connect(addr: &SocketAddr) -> Result<Box<dyn Write>, SnapshotError> {
    let err = io_err(addr.to_string());
    let out: Box<dyn Write> = match addr {
        SocketAddr::Unix(path) => Box::new(UnixStream::connect(path).map_err(err)?),
        SocketAddr::Tcp(a) => {
            let s = TcpStream::connect(tcp_addr(a, false)).map_err(err)?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
    };
    Ok(Box::new(BufWriter::with_capacity(STREAM_BUFFER, out)))
}

/// The restoring side's listener, until it takes its connection.
pub struct Listener {
    addr: SocketAddr,
    socket: ListenSocket,
}

enum ListenSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// Listen at `addr` (non-blocking). A socket file left at a `unix:` path by an earlier run
    /// is replaced, as QEMU does; any other file is not.
    pub fn bind(addr: &SocketAddr) -> Result<Self, SnapshotError> {
        let err = io_err(addr.to_string());
        let socket = match addr {
            SocketAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(path);
                }
                let l = UnixListener::bind(path).map_err(&err)?;
                l.set_nonblocking(true).map_err(&err)?;
                ListenSocket::Unix(l)
            }
            SocketAddr::Tcp(a) => {
                let l = TcpListener::bind(tcp_addr(a, true)).map_err(&err)?;
                l.set_nonblocking(true).map_err(&err)?;
                ListenSocket::Tcp(l)
            }
        };
        tracing::info!("{addr}: waiting for the incoming migration");
        Ok(Self {
            addr: addr.clone(),
            socket,
        })
    }

    /// The descriptor the event loop polls.
    pub fn fd(&self) -> RawFd {
        match &self.socket {
            ListenSocket::Unix(l) => l.as_raw_fd(),
            ListenSocket::Tcp(l) => l.as_raw_fd(),
        }
    }

    /// The connection, if one is there (None: nothing yet), as a blocking buffered stream.
    pub fn accept(&self) -> Result<Option<Box<dyn Read>>, SnapshotError> {
        let err = io_err(self.addr.to_string());
        let accepted: std::io::Result<Box<dyn Read>> = match &self.socket {
            ListenSocket::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                Ok(Box::new(s) as Box<dyn Read>)
            }),
            ListenSocket::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(false)?;
                Ok(Box::new(s) as Box<dyn Read>)
            }),
        };
        match accepted {
            Ok(s) => Ok(Some(Box::new(BufReader::with_capacity(STREAM_BUFFER, s)))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    pub fn addr(&self) -> &SocketAddr {
        &self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let SocketAddr::Unix(path) = &self.addr {
            remove_socket(path);
        }
    }
}

fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}
