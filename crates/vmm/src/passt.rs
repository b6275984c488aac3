//! `-netdev user`: QEMU's user-mode network served by passt (Debian package `passt`), run as a
//! separate process on one end of a socketpair (`passt --fd`), speaking QEMU's stream protocol
//! (4-byte big-endian length, then the frame) to the virtio-net device's stream back-end.
//!
//! passt is given QEMU slirp's layout: the guest's address from DHCP (10.0.2.15), the gateway
//! (10.0.2.2), which passt maps to the host's loopback as slirp does, and a DNS forwarder
//! (10.0.2.3) that passt relays to the host's resolver. `hostfwd=` rules become passt's `-t`/`-u`
//! port forwards. See docs/NETWORKING.md.
//!
//! Start-up: rvmm does not wait for passt (it takes 30-60 ms to bind its ports, most of a restored
//! VM's start): the guest may run at once, its first frames wait in the socketpair, and a thread
//! waits for passt's pid. If passt fails to start (a `hostfwd=` port in use, say), that thread
//! reports it as set-up would have and stops the VM with a failure status ([`watch_start`]).
//!
//! Lifetime: passt gets PR_SET_PDEATHSIG(SIGKILL), so it dies with rvmm however rvmm ends (even
//! SIGKILL); it also exits by itself when its socket closes (`--fd` implies `--one-off`). A
//! thread reaps it and reports on stderr if it ends while the VM runs; the device then sees the
//! socket close and takes the guest's link down.

use rvmm_cli::{HostFwd, UserNetConfig};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The program, found on PATH.
const PASST: &str = "passt";
/// The MAC of QEMU slirp's virtual host (52:55: then the IPv4 address 10.0.2.2).
pub const GATEWAY_MAC: &str = "52:55:0a:00:02:02";
/// How long passt may take to bind its ports and start serving.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// passt's stderr lines that say nothing to a user (it has no syslog here, and rvmm runs it as
/// root in CI, where it changes to nobody by itself).
const NOISE: &[&str] = &[
    "Failed to send",
    "Don't run as root",
    "Couldn't get any nameserver",
];

/// Why the user network could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error("-netdev user: cannot run '{program}' (rvmm's user networking needs passt: install the Debian package 'passt'): {source}")]
    Missing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("-netdev user: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("-netdev user: passt failed to start ({status}){}", describe_output(.output))]
    Start { status: String, output: String },
    #[error("-netdev user: passt did not start within {0:?}")]
    Timeout(Duration),
}

/// A line of passt's stderr that says something to a user (not blank, not [`NOISE`]).
fn worth_showing(line: &str) -> bool {
    !line.trim().is_empty() && !NOISE.iter().any(|n| line.starts_with(n))
}

fn describe_output(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// passt's command line for `cfg`, serving the socket on fd `fd` and writing its pid (once it
/// is ready) to `pid_path`.
pub fn passt_args(cfg: &UserNetConfig, fd: RawFd, pid_path: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--quiet",
        "--ipv4-only",
        "--mtu",
        "65520",
        "--fd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(fd.to_string());
    a.extend(["--pid".into(), pid_path.into()]);
    a.extend(["--address".into(), cfg.guest.to_string()]);
    a.extend(["--netmask".into(), cfg.prefix_len.to_string()]);
    a.extend(["--gateway".into(), cfg.host.to_string()]);
    a.extend(["--dns".into(), cfg.dns.to_string()]);
    a.extend(["--dns-forward".into(), cfg.dns.to_string()]);
    // slirp's MAC for its side (host and DNS), so a guest may hard-code it as under QEMU.
    a.extend(["--mac-addr".into(), GATEWAY_MAC.into()]);
    for fwd in &cfg.hostfwd {
        a.push(if fwd.udp { "-u" } else { "-t" }.into());
        a.push(forward_spec(fwd));
    }
    a
}

/// passt's port spec: `[addr/]hostport:guestport`.
fn forward_spec(f: &HostFwd) -> String {
    match f.host_addr {
        Some(addr) => format!("{addr}/{}:{}", f.host_port, f.guest_port),
        None => format!("{}:{}", f.host_port, f.guest_port),
    }
}

/// A running passt and rvmm's end of its socket.
pub struct Passt {
    pub socket: OwnedFd,
    pub pid: u32,
    /// passt's start-up, still under way: hand it to [`watch_start`].
    pub starting: Starting,
}

/// A passt that has been spawned and has not yet said it is ready.
pub struct Starting {
    child: Child,
    stderr: Option<std::process::ChildStderr>,
    pid_r: OwnedFd,
    label: Arc<str>,
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> PasstError {
    move |source| PasstError::Io { what, source }
}

/// Start passt for `cfg`; `label` names the network in messages. Returns once passt serves the
/// socket (its ports are bound), or with passt's own complaint if it exits instead.
/// Whether passt is on PATH (an executable file named `passt`).
pub fn available() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(PASST))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

pub fn start(cfg: &UserNetConfig, label: &str) -> Result<Passt, PasstError> {
    start_program(PASST, cfg, label)
}

fn start_program(program: &str, cfg: &UserNetConfig, label: &str) -> Result<Passt, PasstError> {
    let (ours, theirs) = UnixStream::pair().map_err(io_err("socketpair"))?;
    // The pid file is a pipe: passt writes its pid there once set up, and the write end closing
    // without a pid means passt exited. It opens /proc/self/fd/N after dropping privileges
    // (root -> nobody), so the pipe must be writable by anyone who holds it.
    let (pid_r, pid_w) = pipe().map_err(io_err("pipe"))?;
    // SAFETY: fchmod on a pipe fd we own.
    if unsafe { libc::fchmod(pid_w.as_raw_fd(), 0o666) } < 0 {
        return Err(io_err("fchmod pid pipe")(std::io::Error::last_os_error()));
    }
    let child_fds = [theirs.as_raw_fd(), pid_w.as_raw_fd()];
    let args = passt_args(
        cfg,
        child_fds[0],
        &format!("/proc/self/fd/{}", child_fds[1]),
    );
    tracing::debug!("{label}: {program} {}", args.join(" "));
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid, fcntl, kill).
    unsafe {
        cmd.pre_exec(move || {
            // Die with rvmm, however it ends. PDEATHSIG follows the forking thread: rvmm starts
            // passt from its main thread, which lives until the process exits.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // Keep the socket and the pid pipe across exec.
            for fd in child_fds {
                let fl = libc::fcntl(fd, libc::F_GETFD);
                if fl < 0 || libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PasstError::Missing {
                program: program.to_string(),
                source,
            }
        } else {
            PasstError::Io {
                what: "spawn passt",
                source,
            }
        }
    })?;
    drop(theirs);
    drop(pid_w);
    let stderr = child.stderr.take();
    let pid = child.id();
    Ok(Passt {
        socket: OwnedFd::from(ours),
        pid,
        starting: Starting {
            child,
            stderr,
            pid_r,
            label: Arc::from(label),
        },
    })
}

/// Wait for `starting` to be ready on a thread of its own, then watch it ([`watch`]); if it fails
/// to start, it is killed and `failed` gets the reason (with passt's own words).
pub fn watch_start(starting: Starting, failed: impl FnOnce(PasstError) + Send + 'static) {
    let _ = rvmm_sandbox::spawn(
        rvmm_sandbox::ThreadKind::Passt,
        "passt-start".into(),
        move || {
            let Starting {
                mut child,
                stderr,
                pid_r,
                label,
            } = starting;
            match wait_ready(pid_r) {
                Ok(()) => {
                    tracing::debug!("{label}: passt (pid {}) ready", child.id());
                    watch(child, stderr, label);
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    let mut output = String::new();
                    if let Some(mut s) = stderr {
                        let _ = s.read_to_string(&mut output);
                    }
                    let output = output
                        .lines()
                        .filter(|l| worth_showing(l))
                        .collect::<Vec<_>>()
                        .join("; ");
                    failed(match e {
                        Ready::Exited => PasstError::Start { status, output },
                        Ready::Timeout => PasstError::Timeout(START_TIMEOUT),
                    });
                }
            }
        },
    );
}

enum Ready {
    Exited,
    Timeout,
}

/// Wait for passt's pid on the pipe (ready) or the pipe's EOF (passt exited).
fn wait_ready(pid_r: OwnedFd) -> Result<(), Ready> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Ready::Timeout);
        }
        let mut pfd = libc::pollfd {
            fd: pid_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if rc <= 0 {
            continue;
        }
        let mut buf = [0u8; 32];
        // SAFETY: read into a live buffer of its length.
        let n = unsafe { libc::read(pid_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return if got.ends_with(b"\n") {
                Ok(())
            } else {
                Err(Ready::Exited)
            };
        }
        got.extend_from_slice(&buf[..n as usize]);
        if got.ends_with(b"\n") {
            return Ok(());
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new fds nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forward passt's complaints to rvmm's stderr and reap it; an exit while rvmm runs is reported.
fn watch(mut child: Child, stderr: Option<std::process::ChildStderr>, label: Arc<str>) {
    if let Some(s) = stderr {
        let label = label.clone();
        let _ = rvmm_sandbox::spawn(
            rvmm_sandbox::ThreadKind::Passt,
            "passt-stderr".into(),
            move || {
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { break };
                    if worth_showing(&line) {
                        eprintln!("rvmm: {label}: passt: {line}");
                    }
                }
            },
        );
    }
    let _ = rvmm_sandbox::spawn(
        rvmm_sandbox::ThreadKind::Passt,
        "passt-reaper".into(),
        move || {
            let pid = child.id();
            match child.wait() {
                // passt quits by itself once rvmm closes the socket (teardown).
                Ok(status) if status.success() => {
                    tracing::debug!("{label}: passt (pid {pid}) exited")
                }
                Ok(status) => eprintln!(
                    "rvmm: {label}: passt (pid {pid}) exited ({status}); the guest's link is down"
                ),
                Err(e) => eprintln!("rvmm: {label}: waiting for passt (pid {pid}) failed: {e}"),
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn qemu_layout_and_forwards() {
        let cfg = UserNetConfig {
            hostfwd: vec![
                HostFwd {
                    udp: false,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22,
                },
                HostFwd {
                    udp: true,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5555,
                    guest_port: 7,
                },
            ],
            ..UserNetConfig::default()
        };
        let a = passt_args(&cfg, 7, "/proc/self/fd/8").join(" ");
        for want in [
            "--fd 7",
            "--mtu 65520",
            "--address 10.0.2.15",
            "--netmask 24",
            "--gateway 10.0.2.2",
            "--dns 10.0.2.3",
            "--dns-forward 10.0.2.3",
            "-t 2222:22",
            "-u 127.0.0.1/5555:7",
        ] {
            assert!(a.contains(want), "{want} missing from: {a}");
        }
    }

    #[test]
    fn missing_passt_names_the_package() {
        let e = start_program("/nonexistent/passt", &UserNetConfig::default(), "test")
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("Debian package 'passt'"), "{msg}");
    }
}
