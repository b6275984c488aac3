//! Network back-ends on the command line: `-netdev tap|stream|user`, and the `-nic` and
//! `-net nic|user|...` shorthands that create a back-end and a NIC together (QEMU's
//! net/net.c, net/stream.c, net/slirp.c option sets).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};

/// Why a network option was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetdevError {
    #[error("{option}: {source}")]
    Opts {
        option: String,
        #[source]
        source: OptsError,
    },
    #[error("{option}: network backend '{kind}' is not supported (supported: user, stream, tap)")]
    Type { option: &'static str, kind: String },
    #[error("-netdev {0}: needs id=")]
    Id(String),
    #[error("-netdev tap,id={id}: {why}")]
    TapQueues { id: String, why: &'static str },
    #[error("-netdev tap,id={0}: needs ifname= or fd=")]
    TapTarget(String),
    #[error("-netdev tap,id={id}: {key}={value} is not supported (use {key}=no)")]
    TapScript {
        id: String,
        key: &'static str,
        value: String,
    },
    #[error("-netdev stream,id={id}: {what}")]
    Stream { id: String, what: String },
    #[error("{option}: hostfwd={spec}: {what}")]
    HostFwd {
        option: String,
        spec: String,
        what: String,
    },
    #[error("{option}: {key}={value}: {what}")]
    UserAddr {
        option: String,
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{option}: model={model} is not supported (supported: virtio, virtio-net-pci, virtio-net-device)")]
    Model { option: &'static str, model: String },
    #[error("{option}: invalid mac '{mac}' (expected xx:xx:xx:xx:xx:xx)")]
    Mac { option: &'static str, mac: String },
    #[error("-net {0}: no -net nic to connect it to (add -net nic, or use -nic {0})")]
    NoNic(String),
    #[error("-net nic: no -net backend to connect it to (add -net user, or use -nic user)")]
    NoBackend,
    #[error("-net: more than one {0} (rvmm connects one -net nic to one -net backend)")]
    HubTooBig(&'static str),
}

/// The host side of a tap back-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapConfig {
    /// Open (or create) the tap interface by name.
    Name(String),
    /// An already open tap fd inherited from the parent.
    Fd(i32),
}

/// Where a `-netdev stream` socket is (`addr.type=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAddr {
    Unix(PathBuf),
    Inet {
        host: String,
        port: u16,
    },
    /// An inherited, already connected (or, with server=on, listening) socket.
    Fd(i32),
}

/// `-netdev stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub addr: StreamAddr,
    /// `server=on`: listen for the peer instead of connecting to it.
    pub server: bool,
}

/// One `hostfwd=` rule: connections to the host's `host_addr:host_port` reach the guest's
/// `guest_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    pub udp: bool,
    /// None: every host address (QEMU's empty hostaddr means INADDR_ANY).
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_port: u16,
}

/// `-netdev user`: QEMU's user-mode network (slirp), served by a passt helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNetConfig {
    /// `net=`: the guest network (default 10.0.2.0/24).
    pub net: Ipv4Addr,
    pub prefix_len: u8,
    /// `host=`: the gateway, which is also how the guest reaches the host (default x.x.x.2).
    pub host: Ipv4Addr,
    /// `dns=`: the DNS forwarder (default x.x.x.3).
    pub dns: Ipv4Addr,
    /// `dhcpstart=`: the address the DHCP server hands out (default x.x.x.15).
    pub guest: Ipv4Addr,
    /// `restrict=on`: the guest reaches nothing outside; only hostfwd brings traffic in.
    pub restrict: bool,
    pub hostfwd: Vec<HostFwd>,
    /// The NIC QEMU adds when no network option is given, not one the user asked for: without
    /// passt, rvmm warns and leaves it out instead of refusing to start.
    pub implicit: bool,
}

impl Default for UserNetConfig {
    fn default() -> Self {
        Self {
            net: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            host: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            guest: Ipv4Addr::new(10, 0, 2, 15),
            restrict: false,
            hostfwd: Vec::new(),
            implicit: false,
        }
    }
}

/// The host side of a virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackendConfig {
    Tap(TapConfig),
    Stream(StreamConfig),
    User(UserNetConfig),
}

fn opts_err(option: &str) -> impl FnOnce(OptsError) -> NetdevError + '_ {
    move |source| NetdevError::Opts {
        option: option.to_string(),
        source,
    }
}

/// The back-end of `type` from `opts`; `option` names the option in messages, `id` the
/// back-end, and `extra` the keys the caller handles itself.
pub(crate) fn parse_backend(
    option: &'static str,
    kind: &str,
    id: &str,
    opts: &QemuOpts,
    extra: &[&str],
) -> Result<NetBackendConfig, NetdevError> {
    let known = |own: &[&str]| -> Result<(), NetdevError> {
        let all: Vec<&str> = ["type", "id"]
            .iter()
            .chain(own)
            .chain(extra)
            .copied()
            .collect();
        opts.check_known(&all)
            .map_err(opts_err(&format!("{option} {kind}")))
    };
    match kind {
        "tap" => {
            // vhost=on/vhostfd=: rvmm's virtio-net is served in user space, as QEMU's is when
            // vhost-net cannot be used without vhostforce (docs/LIBVIRT.md).
            known(&[
                "ifname",
                "fd",
                "fds",
                "script",
                "downscript",
                "vhost",
                "vhostfd",
                "vhostfds",
                "vhostforce",
            ])?;
            if opts
                .get_bool("vhostforce")
                .map_err(opts_err("-netdev tap"))?
                == Some(true)
            {
                return Err(NetdevError::TapQueues {
                    id: id.into(),
                    why: "vhostforce=on: rvmm has no vhost-net back-end",
                });
            }
            for key in ["script", "downscript"] {
                if let Some(v) = opts.get(key) {
                    if v != "no" && !v.is_empty() {
                        return Err(NetdevError::TapScript {
                            id: id.into(),
                            key,
                            value: v.into(),
                        });
                    }
                }
            }
            let mut fd = opts.get_u32("fd").map_err(opts_err("-netdev tap"))?;
            // libvirt's fds=N[:M...]: one descriptor per queue pair; rvmm has one queue pair.
            if let Some(fds) = opts.get("fds") {
                let list: Vec<&str> = fds.split(':').collect();
                if list.len() != 1 || fd.is_some() {
                    return Err(NetdevError::TapQueues {
                        id: id.into(),
                        why: "one tap descriptor only (rvmm's virtio-net has one queue pair)",
                    });
                }
                fd = Some(list[0].parse().map_err(|_| NetdevError::TapQueues {
                    id: id.into(),
                    why: "fds= must be descriptor numbers",
                })?);
            }
            Ok(NetBackendConfig::Tap(match (opts.get("ifname"), fd) {
                (_, Some(fd)) => TapConfig::Fd(fd as i32),
                (Some(name), None) => TapConfig::Name(name.to_string()),
                (None, None) => return Err(NetdevError::TapTarget(id.into())),
            }))
        }
        "stream" => {
            known(&[
                "server",
                "addr.type",
                "addr.path",
                "addr.host",
                "addr.port",
                "addr.str",
                "addr.abstract",
                "addr.tight",
            ])?;
            parse_stream(id, opts).map(NetBackendConfig::Stream)
        }
        "user" => {
            known(&[
                "hostfwd",
                "restrict",
                "net",
                "host",
                "dns",
                "dhcpstart",
                "ipv4",
            ])?;
            parse_user(option, opts).map(NetBackendConfig::User)
        }
        other => Err(NetdevError::Type {
            option,
            kind: other.into(),
        }),
    }
}

fn parse_stream(id: &str, opts: &QemuOpts) -> Result<StreamConfig, NetdevError> {
    let err = |what: String| NetdevError::Stream {
        id: id.into(),
        what,
    };
    let server = opts
        .get_bool("server")
        .map_err(opts_err("-netdev stream"))?
        .unwrap_or(false);
    if opts.get_bool("addr.abstract").ok().flatten() == Some(true) {
        return Err(err("addr.abstract=on is not supported".into()));
    }
    let addr = match opts.get("addr.type") {
        Some("unix") => StreamAddr::Unix(
            opts.get_path("addr.path")
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| err("addr.type=unix needs addr.path=".into()))?,
        ),
        Some("inet") => {
            let host = opts.get("addr.host").unwrap_or("").to_string();
            let port = opts.get("addr.port").unwrap_or("");
            let port = port
                .parse::<u16>()
                .map_err(|_| err(format!("addr.port '{port}' is not a port number")))?;
            StreamAddr::Inet { host, port }
        }
        Some("fd") => {
            let s = opts.get("addr.str").unwrap_or("");
            let fd =
                s.parse::<i32>().ok().filter(|fd| *fd >= 0).ok_or_else(|| {
                    err(format!("addr.str '{s}' is not a file descriptor number"))
                })?;
            StreamAddr::Fd(fd)
        }
        Some(other) => {
            return Err(err(format!(
                "addr.type={other} is not supported (supported: unix, inet, fd)"
            )))
        }
        None => return Err(err("needs addr.type= (unix, inet or fd)".into())),
    };
    Ok(StreamConfig { addr, server })
}

/// `net=addr[/mask]`: the mask as a prefix length or dotted quad (QEMU's `net=10.0.2.0/24`).
fn parse_net(option: &str, value: &str) -> Result<(Ipv4Addr, u8), NetdevError> {
    let bad = |what| NetdevError::UserAddr {
        option: option.into(),
        key: "net",
        value: value.into(),
        what,
    };
    let (addr, mask) = value.split_once('/').unwrap_or((value, "24"));
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
    let prefix = match mask.parse::<u8>() {
        Ok(p) => p,
        Err(_) => {
            let m: Ipv4Addr = mask.parse().map_err(|_| bad("bad mask"))?;
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(bad("mask is not contiguous"));
            }
            bits.leading_ones() as u8
        }
    };
    if !(1..=30).contains(&prefix) {
        return Err(bad("prefix length must be 1 to 30"));
    }
    let mask = u32::MAX << (32 - prefix);
    Ok((Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

fn parse_user(option: &'static str, opts: &QemuOpts) -> Result<UserNetConfig, NetdevError> {
    let mut c = UserNetConfig::default();
    if let Some(v) = opts.get("ipv4") {
        if !crate::opts::parse_bool("ipv4", v).map_err(opts_err(option))? {
            return Err(NetdevError::UserAddr {
                option: option.into(),
                key: "ipv4",
                value: v.into(),
                what: "rvmm's user network needs IPv4",
            });
        }
    }
    if let Some(v) = opts.get("net") {
        (c.net, c.prefix_len) = parse_net(option, v)?;
    }
    let mask = u32::MAX << (32 - c.prefix_len);
    let base = u32::from(c.net);
    let in_net = |key: &'static str, default_host: u32| -> Result<Ipv4Addr, NetdevError> {
        let Some(v) = opts.get(key) else {
            return Ok(Ipv4Addr::from(base | default_host));
        };
        let bad = |what| NetdevError::UserAddr {
            option: option.into(),
            key,
            value: v.into(),
            what,
        };
        let a: Ipv4Addr = v.parse().map_err(|_| bad("not an IPv4 address"))?;
        if u32::from(a) & mask != base {
            return Err(bad("not inside net="));
        }
        if u32::from(a) == base || u32::from(a) == base | !mask {
            return Err(bad("is the network or broadcast address"));
        }
        Ok(a)
    };
    c.host = in_net("host", 2)?;
    c.dns = in_net("dns", 3)?;
    c.guest = in_net("dhcpstart", 15)?;
    if c.guest == c.host || c.guest == c.dns {
        return Err(NetdevError::UserAddr {
            option: option.into(),
            key: "dhcpstart",
            value: c.guest.to_string(),
            what: "is the host or DNS address",
        });
    }
    c.restrict = match opts.get("restrict") {
        None => false,
        Some(v) => crate::opts::parse_bool("restrict", v).map_err(opts_err(option))?,
    };
    for (k, v) in opts.params() {
        if k == "hostfwd" {
            c.hostfwd.push(parse_hostfwd(option, v, c.guest)?);
        }
    }
    Ok(c)
}

/// `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`.
fn parse_hostfwd(option: &str, spec: &str, guest: Ipv4Addr) -> Result<HostFwd, NetdevError> {
    let bad = |what: String| NetdevError::HostFwd {
        option: option.into(),
        spec: spec.into(),
        what,
    };
    let (proto, rest) = match spec.split_once(':') {
        Some((p, r)) if !p.contains('-') && r.contains(':') => (p, r),
        _ => ("tcp", spec),
    };
    let udp = match proto {
        "" | "tcp" => false,
        "udp" => true,
        p => return Err(bad(format!("protocol '{p}' is not tcp or udp"))),
    };
    let (host, guest_part) = rest
        .split_once('-')
        .ok_or_else(|| bad("expected hostaddr:hostport-guestaddr:guestport".into()))?;
    let (host_addr, host_port) = host
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("host part '{host}' needs [hostaddr]:hostport")))?;
    let (guest_addr, guest_port) = guest_part.rsplit_once(':').ok_or_else(|| {
        bad(format!(
            "guest part '{guest_part}' needs [guestaddr]:guestport"
        ))
    })?;
    let host_addr = match host_addr {
        "" => None,
        a => Some(
            a.parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("host address '{a}' is not an IPv4 address")))?,
        ),
    };
    let port = |which: &str, p: &str| -> Result<u16, NetdevError> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("{which} port '{p}' is not a port number (1-65535)")))
    };
    let host_port = port("host", host_port)?;
    let guest_port = port("guest", guest_port)?;
    if !guest_addr.is_empty() {
        let a: Ipv4Addr = guest_addr.parse().map_err(|_| {
            bad(format!(
                "guest address '{guest_addr}' is not an IPv4 address"
            ))
        })?;
        // passt forwards to the one address the guest got from DHCP.
        if a != guest {
            return Err(bad(format!(
                "guest address {a} is not the guest's DHCP address {guest} (the only one rvmm forwards to)"
            )));
        }
    }
    Ok(HostFwd {
        udp,
        host_addr,
        host_port,
        guest_port,
    })
}

/// A NIC front-end's `model=` on `-nic`/`-net nic`: rvmm has virtio-net only.
/// Its transport: virtio-net-pci on pc and q35 and virtio-mmio on microvm unless the model
/// names one.
pub(crate) fn nic_transport(
    option: &'static str,
    opts: &QemuOpts,
) -> Result<crate::virtio_pci::Transport, NetdevError> {
    use crate::virtio_pci::Transport;
    match opts.get("model") {
        None | Some("virtio") => Ok(Transport::MachineDefault),
        Some("virtio-net-device") => Ok(Transport::Mmio),
        Some("virtio-net-pci") => Ok(Transport::Pci(Default::default())),
        Some(m) => Err(NetdevError::Model {
            option,
            model: m.into(),
        }),
    }
}

/// `mac=` (`-nic`) or `macaddr=` (`-net nic`).
pub(crate) fn nic_mac(
    option: &'static str,
    opts: &QemuOpts,
) -> Result<Option<[u8; 6]>, NetdevError> {
    match opts.get("mac").or_else(|| opts.get("macaddr")) {
        None => Ok(None),
        Some(m) => crate::virtio::parse_mac(m)
            .map(Some)
            .ok_or_else(|| NetdevError::Mac {
                option,
                mac: m.into(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(arg: &str) -> Result<UserNetConfig, NetdevError> {
        let opts = QemuOpts::parse(arg, Some("type")).unwrap();
        match parse_backend("-netdev", "user", "n", &opts, &[])? {
            NetBackendConfig::User(u) => Ok(u),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_defaults_and_hostfwd() {
        let u = user("user,id=n").unwrap();
        assert_eq!(u, UserNetConfig::default());
        let u = user(
            "user,id=n,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5555-10.0.2.15:7,hostfwd=::80-:8080,restrict=on",
        )
        .unwrap();
        assert!(u.restrict);
        assert_eq!(
            u.hostfwd,
            vec![
                HostFwd {
                    udp: false,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22
                },
                HostFwd {
                    udp: true,
                    host_addr: Some(Ipv4Addr::new(127, 0, 0, 1)),
                    host_port: 5555,
                    guest_port: 7
                },
                HostFwd {
                    udp: false,
                    host_addr: None,
                    host_port: 80,
                    guest_port: 8080
                },
            ]
        );
        let u = user("user,id=n,net=192.168.76.0/255.255.255.0,dns=192.168.76.9").unwrap();
        assert_eq!(u.host, Ipv4Addr::new(192, 168, 76, 2));
        assert_eq!(u.dns, Ipv4Addr::new(192, 168, 76, 9));
        assert_eq!(u.guest, Ipv4Addr::new(192, 168, 76, 15));
    }

    #[test]
    fn bad_user_options_name_the_part() {
        let e = |a: &str| user(a).unwrap_err().to_string();
        assert_eq!(
            e("user,id=n,hostfwd=sctp::1-:2"),
            "-netdev: hostfwd=sctp::1-:2: protocol 'sctp' is not tcp or udp"
        );
        assert_eq!(
            e("user,id=n,hostfwd=tcp::99999-:22"),
            "-netdev: hostfwd=tcp::99999-:22: host port '99999' is not a port number (1-65535)"
        );
        assert_eq!(
            e("user,id=n,hostfwd=tcp::22"),
            "-netdev: hostfwd=tcp::22: expected hostaddr:hostport-guestaddr:guestport"
        );
        assert_eq!(
            e("user,id=n,hostfwd=tcp:1.2.3:22-:22"),
            "-netdev: hostfwd=tcp:1.2.3:22-:22: host address '1.2.3' is not an IPv4 address"
        );
        assert!(
            e("user,id=n,hostfwd=tcp::22-10.0.2.16:22").contains("not the guest's DHCP address")
        );
        assert!(e("user,id=n,host=10.0.3.2").contains("host=10.0.3.2: not inside net="));
        assert!(e("user,id=n,net=10.0.2.0/31").contains("prefix length"));
        assert!(e("user,id=n,smb=/tmp").contains("unknown parameter 'smb'"));
        assert!(e("user,id=n,restrict=maybe").contains("restrict"));
    }

    #[test]
    fn stream_addresses() {
        let s = |a: &str| {
            let opts = QemuOpts::parse(a, Some("type")).unwrap();
            parse_backend("-netdev", "stream", "n", &opts, &[])
        };
        assert_eq!(
            s("stream,id=n,addr.type=unix,addr.path=/tmp/p.sock").unwrap(),
            NetBackendConfig::Stream(StreamConfig {
                addr: StreamAddr::Unix("/tmp/p.sock".into()),
                server: false
            })
        );
        assert_eq!(
            s("stream,id=n,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=1234").unwrap(),
            NetBackendConfig::Stream(StreamConfig {
                addr: StreamAddr::Inet {
                    host: "127.0.0.1".into(),
                    port: 1234
                },
                server: true
            })
        );
        assert!(s("stream,id=n,addr.type=unix").is_err());
        assert!(s("stream,id=n").is_err());
        assert!(s("stream,id=n,addr.type=vsock").is_err());
        assert!(s("stream,id=n,addr.type=fd,addr.str=x").is_err());
    }
}
