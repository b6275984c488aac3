//! The server's threads: acceptor, display poller, and a reader and a writer per client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rvmm_devices::input::InputSink;

use crate::client::{serve, Client, Tiles};

use crate::{
    DisplaySource, Framebuffer, Listen, Rect, VncError, VncOptions, MAX_CLIENTS, REFRESH_HZ,
};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self) {
        // Already closed by the peer: nothing to wake.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    fn accept(&self) -> io::Result<(Stream, String, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nonblocking(false)?;
                // Small updates should not wait for Nagle.
                s.set_nodelay(true)?;
                Ok((
                    Stream::Tcp(s),
                    addr.ip().to_string(),
                    addr.port().to_string(),
                ))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Stream::Unix(s), path.display().to_string(), String::new()))
            }
        }
    }
}

/// A connected client, for QMP `query-vnc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub host: String,
    pub service: String,
}

pub(crate) struct Shared {
    pub(crate) options: VncOptions,
    pub(crate) display: Arc<dyn DisplaySource>,
    pub(crate) input: Arc<dyn InputSink>,
    pub(crate) surface: RwLock<Framebuffer>,
    pub(crate) clients: Mutex<Vec<Arc<Client>>>,
    pub(crate) password: Mutex<Option<Vec<u8>>>,
    pub(crate) stop: AtomicBool,
    /// Bytes sent to all clients, for benchmarks and tests.
    pub(crate) bytes_sent: AtomicU64,
}

/// A running VNC server; dropping it stops and joins every thread.
pub struct VncServer {
    shared: Arc<Shared>,
    local: String,
    threads: Vec<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn spawn(
    kind: rvmm_sandbox::ThreadKind,
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, VncError> {
    rvmm_sandbox::spawn(kind, name.into(), f).map_err(|source| VncError::Thread {
        what: "vnc",
        source,
    })
}

impl VncServer {
    /// Binds the listener and starts the acceptor and poller threads.
    pub fn start(
        options: VncOptions,
        display: Arc<dyn DisplaySource>,
        input: Arc<dyn InputSink>,
    ) -> Result<VncServer, VncError> {
        let (listener, local) = bind(&options.listen)?;
        let mut surface = Framebuffer::new();
        display.render(&mut surface);
        let shared = Arc::new(Shared {
            options,
            display,
            input,
            surface: RwLock::new(surface),
            clients: Mutex::new(Vec::new()),
            password: Mutex::new(None),
            stop: AtomicBool::new(false),
            bytes_sent: AtomicU64::new(0),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (shared.clone(), connections.clone());
        let acceptor = spawn(rvmm_sandbox::ThreadKind::Vnc, "vnc-accept", move || {
            accept_loop(&s, &listener, &c)
        })?;
        let s = shared.clone();
        let poller = match spawn(
            rvmm_sandbox::ThreadKind::VncDisplay,
            "vnc-display",
            move || poll_loop(&s),
        ) {
            Ok(p) => p,
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                let _ = acceptor.join();
                return Err(e);
            }
        };
        Ok(VncServer {
            shared,
            local,
            threads: vec![acceptor, poller],
            connections,
        })
    }

    /// The address the server listens on, as QEMU prints it (`127.0.0.1:5900`, a socket path).
    pub fn local_addr(&self) -> &str {
        &self.local
    }

    /// Sets the VNC Authentication password (QMP `change-vnc-password`); only the first 8 bytes
    /// count, as in every VNC implementation.
    pub fn set_password(&self, password: &str) {
        *lock(&self.shared.password) = Some(password.as_bytes().to_vec());
    }

    pub fn options(&self) -> &VncOptions {
        &self.shared.options
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        lock(&self.shared.clients)
            .iter()
            .map(|c| ClientInfo {
                host: c.host.clone(),
                service: c.service.clone(),
            })
            .collect()
    }

    /// Bytes sent to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }
}

impl Drop for VncServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in lock(&self.shared.clients).iter() {
            c.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The acceptor has stopped: no new connection threads appear.
        for c in lock(&self.shared.clients).iter() {
            c.close();
        }
        for t in lock(&self.connections).drain(..) {
            let _ = t.join();
        }
        if let Listen::Unix(path) = &self.shared.options.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind(listen: &Listen) -> Result<(Listener, String), VncError> {
    match listen {
        Listen::Tcp { host, port } => {
            let addr = format!("{host}:{port}");
            let err = |source| VncError::Listen {
                addr: addr.clone(),
                source,
            };
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(err)?
                .collect();
            let l = TcpListener::bind(&addrs[..]).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            let local = l.local_addr().map_err(err)?.to_string();
            Ok((Listener::Tcp(l), local))
        }
        Listen::Unix(path) => {
            let err = |source| VncError::Listen {
                addr: path.display().to_string(),
                source,
            };
            // A stale socket from an earlier run would make bind fail, as QEMU unlinks it.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok((Listener::Unix(l, path.clone()), path.display().to_string()))
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener, conns: &Mutex<Vec<JoinHandle<()>>>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let (stream, host, service) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::warn!("vnc: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Reap finished connection threads so the list stays bounded.
        let mut list = lock(conns);
        let (done, running): (Vec<_>, Vec<_>) = list.drain(..).partition(|t| t.is_finished());
        *list = running;
        for t in done {
            let _ = t.join();
        }
        if list.len() >= MAX_CLIENTS {
            tracing::warn!("vnc: refusing {host}: {MAX_CLIENTS} clients already");
            stream.shutdown();
            continue;
        }
        let s = shared.clone();
        let spawned = rvmm_sandbox::spawn(
            rvmm_sandbox::ThreadKind::Vnc,
            "vnc-client".into(),
            move || {
                if let Err(e) = serve(&s, stream, host.clone(), service) {
                    tracing::info!("vnc: client {host}: {e}");
                }
            },
        );
        match spawned {
            Ok(t) => list.push(t),
            Err(e) => tracing::warn!("vnc: no thread for a client: {e}"),
        }
    }
}

fn poll_loop(shared: &Shared) {
    let period = Duration::from_millis(1000 / REFRESH_HZ);
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(period);
        let clients: Vec<Arc<Client>> = lock(&shared.clients).clone();
        if !clients.iter().any(|c| lock(&c.state).requested) {
            continue;
        }
        let (result, width, height) = {
            let mut surface = shared
                .surface
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let r = shared.display.render(&mut surface);
            (r, surface.width(), surface.height())
        };
        for c in clients {
            let mut st = lock(&c.state);
            st.rendered = true;
            if result.resized {
                if (st.tiles.width, st.tiles.height) != (width, height) {
                    st.tiles = Tiles::new(width, height);
                }
                st.tiles.mark_all();
            } else {
                for r in &result.dirty {
                    st.tiles.mark(Rect::from_display(*r));
                }
            }
            drop(st);
            c.wake.notify_all();
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
