//! Opening a virtio-net device's back-end: a tap, a `-netdev stream` socket, or a passt helper
//! for `-netdev user` ([`crate::passt`]).

use rvmm_cli::{NetBackendConfig, StreamAddr, StreamConfig, TapConfig};
use rvmm_devices::virtio::backend::NetBackend;
use rvmm_devices::virtio::restrict::Restricted;
use rvmm_devices::virtio::stream::StreamBackend;
use rvmm_devices::virtio::tap::Tap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

/// Why a network back-end could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("virtio-net: {}: {source}", describe_tap(tap))]
    Tap {
        tap: TapConfig,
        #[source]
        source: std::io::Error,
    },
    #[error("-netdev stream: {addr}: {source}")]
    Stream {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    User(#[from] crate::passt::PasstError),
}

/// `tap 'tap0'` or `tap fd 5`, as the user gave it.
fn describe_tap(tap: &TapConfig) -> String {
    match tap {
        TapConfig::Name(name) => format!("tap '{name}'"),
        TapConfig::Fd(fd) => format!("tap fd {fd}"),
    }
}

/// Open the back-end `cfg` of NIC number `nic`. A user network's passt is still starting when
/// this returns: its start-up goes to `starting`, for [`crate::passt::watch_start`].
pub fn open_backend(
    cfg: &NetBackendConfig,
    nic: u8,
    starting: &mut Vec<crate::passt::Starting>,
) -> Result<Arc<dyn NetBackend>, NetdevError> {
    Ok(match cfg {
        NetBackendConfig::Tap(tap) => {
            let opened = match tap {
                TapConfig::Name(name) => Tap::open(name),
                TapConfig::Fd(fd) => open_inherited_tap(*fd),
            };
            Arc::new(opened.map_err(|source| NetdevError::Tap {
                tap: tap.clone(),
                source,
            })?)
        }
        NetBackendConfig::Stream(s) => Arc::new(open_stream(s)?),
        NetBackendConfig::User(u) => {
            let label = format!("user network of NIC {nic}");
            let passt = crate::passt::start(u, &label)?;
            tracing::debug!("{label}: passt pid {}", passt.pid);
            starting.push(passt.starting);
            let backend = StreamBackend::connected(label, passt.socket).map_err(|source| {
                NetdevError::Stream {
                    addr: "passt socketpair".into(),
                    source,
                }
            })?;
            if u.restrict {
                let ports = |udp: bool| -> Vec<u16> {
                    u.hostfwd
                        .iter()
                        .filter(|f| f.udp == udp)
                        .map(|f| f.guest_port)
                        .collect()
                };
                Arc::new(Restricted::new(
                    Arc::new(backend),
                    ports(false),
                    ports(true),
                ))
            } else {
                Arc::new(backend)
            }
        }
    })
}

/// Take over the tap descriptor of `-netdev tap,fd=N`, refusing one that is not open (owning it
/// would close a descriptor that does not exist).
fn open_inherited_tap(fd: i32) -> std::io::Result<Tap> {
    check_open(fd)?;
    // SAFETY: `fd=` hands rvmm an inherited descriptor, open as just checked, that nothing else in
    // this process uses (QEMU's contract for -netdev tap,fd=).
    unsafe { Tap::from_raw_fd(fd) }
}

fn check_open(fd: i32) -> std::io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any value of `fd` is safe to ask about.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Connect (or, with server=on, listen) as QEMU 7.2's `-netdev stream` does.
fn open_stream(s: &StreamConfig) -> Result<StreamBackend, NetdevError> {
    let (desc, res) = match &s.addr {
        StreamAddr::Unix(path) => {
            let desc = format!("unix socket '{}'", path.display());
            let fd = if s.server {
                // QEMU removes a stale socket file before binding.
                let _ = std::fs::remove_file(path);
                std::os::unix::net::UnixListener::bind(path).map(OwnedFd::from)
            } else {
                std::os::unix::net::UnixStream::connect(path).map(OwnedFd::from)
            };
            (desc, fd)
        }
        StreamAddr::Inet { host, port } => {
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let desc = format!("{host}:{port}");
            let fd = if s.server {
                std::net::TcpListener::bind((host, *port)).map(OwnedFd::from)
            } else {
                std::net::TcpStream::connect((host, *port)).and_then(|t| {
                    t.set_nodelay(true)?;
                    Ok(OwnedFd::from(t))
                })
            };
            (desc, fd)
        }
        StreamAddr::Fd(fd) => {
            let desc = format!("fd {fd}");
            let res = check_open(*fd).map(|()| {
                // SAFETY: addr.type=fd hands rvmm an inherited descriptor, open as just checked,
                // that nothing else in this process uses.
                unsafe { OwnedFd::from_raw_fd(*fd) }
            });
            (desc, res)
        }
    };
    let label = format!("-netdev stream ({desc})");
    let fd = res.map_err(|source| NetdevError::Stream {
        addr: desc.clone(),
        source,
    })?;
    let backend = if s.server {
        StreamBackend::listening(label, fd)
    } else {
        StreamBackend::connected(label, fd)
    };
    backend.map_err(|source| NetdevError::Stream { addr: desc, source })
}
