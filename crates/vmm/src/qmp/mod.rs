//! QMP server: QEMU's JSON control protocol on Unix or TCP sockets, served by the event loop.
//!
//! Each `-qmp` / `-mon mode=control` socket serves one client at a time (a QEMU chardev accepts
//! one connection at a time, so clients take turns): the event loop accepts when the listener is
//! readable and no client holds the socket, reads a client when it is readable, and runs each
//! command on the VMM thread with the VM state machine ([`crate::vm::Vmm`]), so a command's reply
//! is sent once the VM is where the command says. Events go to every client past capabilities
//! negotiation, through [`Events`]. Nothing here runs on a vCPU thread.

mod balloon;
mod commands;
mod hmp;
pub mod info;
mod input;
pub mod inventory;
pub mod kvm_stats;
mod migration;
mod none;
pub mod protocol;
mod schema;

pub use none::run_qmp_only;
mod queries;

pub use balloon::{balloon_changed, Balloon};

use crate::control::Cause;
use crate::vm::{VmEvent, VmEvents, Vmm};
use crate::VmmError;
use protocol::{Decoded, Decoder, QmpError};
use rvmm_cli::{QmpAddress, QmpConfig, SmpConfig};
use rvmm_devices::legacy::AcpiPm;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A client that does not read its socket for this long is dropped, so it cannot stall the VMM
/// thread that emits an event.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected client's socket.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(Some(t)),
            Stream::Tcp(s) => s.set_write_timeout(Some(t)),
        }
    }

    fn shutdown(&self) {
        // Already closed is fine: the point is that the reader sees EOF.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The write half of a client connection, shared by its QMP thread and event emitters.
type ClientWriter = Arc<Mutex<Stream>>;

/// Write one message; false if the client is gone or stopped reading.
fn send(writer: &ClientWriter, msg: &Value) -> bool {
    lock(writer).write_all(&protocol::encode(msg)).is_ok()
}

/// The clients that receive events (those past capabilities negotiation).
#[derive(Default)]
pub struct Events {
    clients: Mutex<Vec<ClientWriter>>,
}

impl Events {
    /// Send event `name` with optional `data` to every negotiated client.
    pub fn emit(&self, name: &str, data: Option<Value>) {
        tracing::debug!(event = name, ?data, "QMP event");
        let msg = protocol::event(name, data);
        lock(&self.clients).retain(|c| {
            let ok = send(c, &msg);
            if !ok {
                // Make the session's reader see EOF, so a stuck client is dropped for good.
                lock(c).shutdown();
            }
            ok
        });
    }

    /// SHUTDOWN or RESET with QEMU's `guest` and `reason` members.
    fn emit_cause(&self, name: &str, cause: Cause) {
        self.emit(
            name,
            Some(json!({"guest": cause.by_guest(), "reason": cause.as_str()})),
        );
    }

    fn add(&self, client: &ClientWriter) {
        lock(&self.clients).push(client.clone());
    }

    fn remove(&self, client: &ClientWriter) {
        lock(&self.clients).retain(|c| !Arc::ptr_eq(c, client));
    }
}

impl VmEvents for Events {
    fn emit(&self, event: VmEvent) {
        match event {
            VmEvent::Stop => Events::emit(self, "STOP", None),
            VmEvent::Resume => Events::emit(self, "RESUME", None),
            VmEvent::Reset(cause) => self.emit_cause("RESET", cause),
            VmEvent::Shutdown(cause) => self.emit_cause("SHUTDOWN", cause),
            VmEvent::Suspend => Events::emit(self, "SUSPEND", None),
            VmEvent::Wakeup => Events::emit(self, "WAKEUP", None),
            VmEvent::Migration(status) => {
                Events::emit(self, "MIGRATION", Some(json!({"status": status})))
            }
        }
    }

    /// As QEMU for a virtio-pci device: its virtio backend first, then the device.
    fn device_deleted(&self, event: crate::vm::DeviceDeleted) {
        let path = format!("/machine/peripheral/{}", event.0);
        let backend = json!({"path": format!("{path}/virtio-backend")});
        Events::emit(self, "DEVICE_DELETED", Some(backend));
        let device = json!({"device": event.0, "path": path});
        Events::emit(self, "DEVICE_DELETED", Some(device));
    }
}

/// Each disk's request counters by image path, filled as the disks are opened.
pub type BlockStatsRegistry = Arc<Mutex<Vec<(PathBuf, Arc<rvmm_block::DiskStats>)>>>;

/// A drive's I/O errors as QEMU's BLOCK_IO_ERROR event (qapi/block-core.json; rvmm's action is
/// always `report`: the guest gets the error).
pub struct BlockEvents {
    pub events: Arc<Events>,
    /// The drive's name (`-drive id=`, or QEMU's `virtioN`).
    pub device: String,
    /// Where the disk's request counters go, by image path (`query-blockstats`).
    pub stats: BlockStatsRegistry,
}

impl rvmm_block::DiskEvents for BlockEvents {
    fn stats(&self, path: &std::path::Path, stats: Arc<rvmm_block::DiskStats>) {
        lock(&self.stats).push((path.to_path_buf(), stats));
    }

    fn io_error(&self, e: &rvmm_block::DiskIoError) {
        self.events.emit(
            "BLOCK_IO_ERROR",
            Some(json!({
                "device": self.device,
                "node-name": self.device,
                "operation": if e.write { "write" } else { "read" },
                "action": "report",
                "nospace": e.nospace,
                "reason": e.reason,
            })),
        );
    }
}

/// What QMP commands can see besides the VM state machine.
pub struct Machine {
    pub events: Arc<Events>,
    pub acpi_pm: Arc<AcpiPm>,
    pub thread_ids: Arc<[AtomicI32]>,
    pub name: Option<String>,
    pub smp: SmpConfig,
    /// Set with `-exit-stats`: served by `x-query-exit-stats`.
    pub exit_stats: Option<Arc<crate::exit_stats::ExitStats>>,
    /// The VNC server (`query-vnc`, `change-vnc-password`).
    pub vnc: Option<Arc<rvmm_vnc::VncServer>>,
    /// Where `send-key` and `input-send-event` go: the PS/2 keyboard and mouse.
    pub input: Arc<dyn rvmm_devices::input::InputSink>,
    /// The mouse buttons `input-send-event` holds down.
    pub pointer_buttons: std::sync::Mutex<u8>,
    /// The absolute pointer's last position (QMP abs events move one axis at a time).
    pub pointer_position: std::sync::Mutex<(u32, u32)>,
    /// The first display device (`-vga std` / `-device VGA`): served by `screendump`.
    pub display: Option<Arc<dyn rvmm_devices::display::DisplaySource>>,
    /// Chardevs, block nodes, `-device` ids and the vCPU's properties, as libvirt queries them.
    pub inventory: inventory::Inventory,
    /// KVM's binary statistics of the VM and each vCPU (`query-stats`).
    pub kvm_stats: kvm_stats::KvmStats,
    /// Each disk's request counters, by image path (`query-blockstats`).
    pub block_stats: BlockStatsRegistry,
    /// The virtio-balloon (`balloon`, `query-balloon`, `qom-get guest-stats`).
    pub balloon: Option<Balloon>,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
        })
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Unix(l) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl Stream {
    fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Accepted sockets may inherit O_NONBLOCK from the listener; clients are read only when
    /// readable, and written with a timeout.
    fn set_blocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(false),
            Stream::Tcp(s) => s.set_nonblocking(false),
        }
    }
}

fn describe(addr: &QmpAddress) -> String {
    match addr {
        QmpAddress::Unix(p) => format!("unix:{}", p.display()),
        QmpAddress::Tcp { host, port } => format!("tcp:{host}:{port}"),
        QmpAddress::Fd(fd) => format!("fd={fd}"),
    }
}

/// A listening socket passed open (`-chardev socket,fd=N,server=on`), checked as QEMU checks
/// it: a socket that listens, Unix or TCP.
fn inherited_listener(fd: i32) -> io::Result<Listener> {
    let get = |opt| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for getsockopt to fill with an int option.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if get(libc::SO_ACCEPTCONN)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the descriptor is a socket that does not listen",
        ));
    }
    let domain = get(libc::SO_DOMAIN)?;
    // SAFETY: FD_CLOEXEC on the inherited descriptor, which the listener now owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    use std::os::fd::FromRawFd;
    match domain {
        // SAFETY: `fd` is an open listening socket handed to rvmm; nothing else owns it.
        libc::AF_UNIX => Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) })),
        libc::AF_INET | libc::AF_INET6 => {
            // SAFETY: as above.
            Ok(Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) }))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the descriptor is neither a Unix nor a TCP socket",
        )),
    }
}

/// QEMU's chardev filename of a listening socket (`query-chardev`): `unix:PATH,server=on`.
fn listener_filename(l: &Listener) -> String {
    match l {
        Listener::Unix(l) => match l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        {
            Some(p) => format!("unix:{p},server=on"),
            None => "unix:,server=on".into(),
        },
        Listener::Tcp(l) => match l.local_addr() {
            Ok(a) => format!("tcp:{}:{},server=on", a.ip(), a.port()),
            Err(_) => "tcp:,server=on".into(),
        },
    }
}

/// Bound QMP sockets, before the guest starts.
pub struct QmpServer {
    monitors: Vec<Monitor>,
    /// Each monitor's chardev label and filename (`query-chardev`).
    chardevs: Vec<(String, String)>,
    /// Unix socket paths to remove at exit, as QEMU does.
    paths: Vec<PathBuf>,
}

/// One monitor socket and the client it serves, if any.
struct Monitor {
    listener: Listener,
    client: Option<Client>,
}

/// What the event loop should do with a monitor's descriptors after an event.
pub enum Change {
    None,
    /// A client connected: poll its socket instead of the listener.
    Connected {
        client: RawFd,
        listener: RawFd,
    },
    /// The client left: poll the listener again.
    Disconnected {
        client: RawFd,
        listener: RawFd,
    },
}

impl QmpServer {
    /// Bind every monitor socket. Monitors with `wait=on` block here until their first client
    /// connects, as QEMU does before starting the guest.
    pub fn bind(configs: &[QmpConfig]) -> Result<Self, VmmError> {
        let mut server = QmpServer {
            monitors: Vec::new(),
            chardevs: Vec::new(),
            paths: Vec::new(),
        };
        for cfg in configs {
            let what = describe(&cfg.address);
            let err = |source| VmmError::Qmp {
                what: what.clone(),
                source,
            };
            let listener = match &cfg.address {
                QmpAddress::Unix(path) => {
                    // A stale socket from an earlier run would make bind fail (QEMU unlinks too).
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(err(e)),
                    }
                    let l = UnixListener::bind(path).map_err(err)?;
                    server.paths.push(std::path::absolute(path).map_err(err)?);
                    Listener::Unix(l)
                }
                QmpAddress::Tcp { host, port } => {
                    Listener::Tcp(TcpListener::bind((host.as_str(), *port)).map_err(err)?)
                }
                QmpAddress::Fd(fd) => inherited_listener(*fd).map_err(err)?,
            };
            // QEMU's label for -qmp monitors is compat_monitorN.
            let label = match &cfg.label {
                Some(l) => l.clone(),
                None => format!("compat_monitor{}", server.monitors.len()),
            };
            server.chardevs.push((label, listener_filename(&listener)));
            let first = if cfg.wait {
                tracing::info!(target: crate::NOTICE_TARGET, "waiting for connection on: {what},server=on");
                Some(listener.accept().map_err(err)?)
            } else {
                None
            };
            listener.set_nonblocking().map_err(err)?;
            server.monitors.push(Monitor {
                listener,
                client: None,
            });
            if let Some(stream) = first {
                let m = server.monitors.len() - 1;
                server.monitors[m].client = Client::new(stream);
            }
        }
        Ok(server)
    }

    /// Each monitor's chardev label and filename, for `query-chardev`.
    pub fn chardevs(&self) -> &[(String, String)] {
        &self.chardevs
    }

    /// The Unix socket paths to remove at exit.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The descriptor to poll for each monitor: its client's socket, or its listener.
    pub fn poll_fds(&self) -> Vec<RawFd> {
        self.monitors
            .iter()
            .map(|m| match &m.client {
                Some(c) => c.reader.raw_fd(),
                None => m.listener.raw_fd(),
            })
            .collect()
    }

    /// Send the greeting to clients that connected before the VM was ready (`wait=on`).
    pub fn greet_waiting(&self) {
        for c in self.monitors.iter().filter_map(|m| m.client.as_ref()) {
            c.greet();
        }
    }

    /// Monitor `index`'s descriptor is readable: accept a client or serve one.
    pub fn ready(&mut self, index: usize, machine: &Machine, vmm: &mut Vmm) -> Change {
        let Some(m) = self.monitors.get_mut(index) else {
            return Change::None;
        };
        let listener = m.listener.raw_fd();
        match &mut m.client {
            None => match m.listener.accept() {
                Ok(stream) => match Client::new(stream) {
                    Some(c) => {
                        c.greet();
                        let client = c.reader.raw_fd();
                        m.client = Some(c);
                        Change::Connected { client, listener }
                    }
                    None => Change::None,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Change::None,
                Err(e) => {
                    tracing::warn!("QMP accept failed: {e}");
                    Change::None
                }
            },
            Some(c) => {
                if c.serve(machine, vmm) {
                    return Change::None;
                }
                let client = c.reader.raw_fd();
                machine.events.remove(&c.session.writer);
                tracing::debug!("QMP client disconnected");
                m.client = None;
                Change::Disconnected { client, listener }
            }
        }
    }
}

/// One connected client: its socket, the decoder of what it sent, its session.
struct Client {
    reader: Stream,
    decoder: Decoder,
    session: Session,
}

impl Client {
    fn new(reader: Stream) -> Option<Self> {
        let prepared = reader.set_blocking().and_then(|()| reader.try_clone());
        let writer = match prepared {
            Ok(w) => Arc::new(Mutex::new(w)),
            Err(e) => {
                tracing::warn!("QMP: cannot set up the client socket: {e}");
                return None;
            }
        };
        if let Err(e) = lock(&writer).set_write_timeout(WRITE_TIMEOUT) {
            tracing::warn!("QMP: cannot set write timeout: {e}");
        }
        tracing::debug!("QMP client connected");
        Some(Self {
            reader,
            decoder: Decoder::default(),
            session: Session {
                negotiated: false,
                writer,
            },
        })
    }

    fn greet(&self) {
        send(&self.session.writer, &protocol::greeting());
    }

    /// Read what is there and run every complete request; false once the client is gone.
    ///
    /// A client that hangs up without reading replies (`socat` piping in qmp_capabilities and
    /// quit) still gets every request it sent executed (QEMU drops requests still queued when it
    /// notices the hang-up): replies that cannot be written are dropped, the session ends at EOF.
    fn serve(&mut self, machine: &Machine, vmm: &mut Vmm) -> bool {
        let mut buf = [0u8; 4096];
        // One read: the socket is readable, so this does not block.
        let n = match self.reader.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(_) => return false,
        };
        self.decoder.push(&buf[..n]);
        while let Some(item) = self.decoder.next_item() {
            self.session.handle(item, machine, vmm);
        }
        true
    }
}

struct Session {
    negotiated: bool,
    writer: ClientWriter,
}

impl Session {
    /// Handle one decoded input and send its reply.
    fn handle(&mut self, item: Decoded, machine: &Machine, vmm: &mut Vmm) {
        let value = match item {
            Decoded::Error(desc) => {
                send(
                    &self.writer,
                    &protocol::error_reply(&QmpError::generic(desc), None),
                );
                return;
            }
            Decoded::Value(v) => v,
        };
        let req = match protocol::parse_request(value) {
            Ok(req) => req,
            Err((id, err)) => {
                send(&self.writer, &protocol::error_reply(&err, id));
                return;
            }
        };
        let result = if req.command == "qmp_capabilities" {
            self.capabilities(&req.arguments, machine)
        } else if !self.negotiated {
            Err(QmpError::not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ))
        } else {
            commands::dispatch(machine, vmm, &req.command, &req.arguments)
        };
        let ok = result.is_ok();
        let msg = match result {
            Ok(ret) => protocol::reply(ret, req.id),
            Err(err) => protocol::error_reply(&err, req.id),
        };
        send(&self.writer, &msg);
        if ok && req.command == "quit" {
            // After the reply, as QEMU: the client sees {"return": {}} before the socket closes.
            vmm.shutdown(Cause::HostQmpQuit);
        }
        // A `migrate` or `migrate-incoming` runs after its reply, as in QEMU.
        vmm.run_pending();
    }

    /// `qmp_capabilities [enable: [...]]`: leave negotiation mode and start receiving events.
    fn capabilities(
        &mut self,
        args: &serde_json::Map<String, Value>,
        machine: &Machine,
    ) -> Result<Value, QmpError> {
        if self.negotiated {
            return Err(QmpError::not_found(
                "Capabilities negotiation is already complete, command ignored",
            ));
        }
        for (key, value) in args {
            if key != "enable" {
                return Err(commands::unexpected(key));
            }
            let Value::Array(caps) = value else {
                return Err(QmpError::generic(
                    "Invalid parameter type for 'enable', expected: array",
                ));
            };
            // rvmm offers no capabilities, so any entry is refused.
            if let Some(cap) = caps.first() {
                match cap.as_str() {
                    Some("oob") => return Err(QmpError::generic("Capability 'oob' not available")),
                    Some(other) => {
                        return Err(QmpError::generic(format!(
                            "Parameter 'enable' does not accept value '{other}'"
                        )))
                    }
                    None => {
                        return Err(QmpError::generic(
                            "Invalid parameter type for 'enable[0]', expected: string",
                        ))
                    }
                }
            }
        }
        self.negotiated = true;
        machine.events.add(&self.writer);
        Ok(json!({}))
    }
}
