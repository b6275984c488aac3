//! A stream-socket network back-end: QEMU's `-netdev stream` protocol (net/stream.c), which passt
//! also speaks. Every Ethernet frame goes as a 4-byte big-endian length and the frame itself, with
//! no virtio-net header (so no offloads).
//!
//! As QEMU 7.2: a client (`server=off`) uses the connection it was given; when the peer closes it
//! the link goes down for good. A server (`server=on`) listens, takes one peer at a time, and
//! listens again when that peer leaves; the link is up while a peer is connected. Frames the guest
//! sends without a peer are dropped.
//!
//! The device worker waits on [`StreamBackend::poll_fd`], an epoll fd of its own holding the
//! listening socket (while no peer is connected) and the connection.

use super::backend::NetBackend;
use super::tap::VNET_HDR_LEN;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Largest frame the protocol may carry here: QEMU's NET_BUFSIZE is 4096 + 65536; a 64 KiB IP
/// packet plus its Ethernet header is what a peer can mean.
pub const MAX_STREAM_FRAME: usize = 14 + 65535;
/// How long a half-sent frame may wait for the peer to take the rest before the connection is
/// given up (the stream would otherwise lose its framing).
const PARTIAL_WRITE_TIMEOUT_MS: i32 = 2000;
const LISTENER: u64 = 0;
const CONNECTION: u64 = 1;

/// Receive state of the current connection.
struct Conn {
    fd: Option<OwnedFd>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// A stream socket carrying length-prefixed frames.
pub struct StreamBackend {
    /// For messages: what the socket is (`-netdev stream,id=n`, `passt`).
    label: String,
    epoll: Epoll,
    listener: Option<OwnedFd>,
    conn: Mutex<Conn>,
    up: AtomicBool,
}

fn cvt(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

impl StreamBackend {
    fn new(label: String, listener: Option<OwnedFd>, conn: Option<OwnedFd>) -> io::Result<Self> {
        let b = Self {
            label,
            epoll: Epoll::new()?,
            listener,
            conn: Mutex::new(Conn {
                fd: None,
                buf: vec![0u8; 2 * (4 + MAX_STREAM_FRAME)].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
            up: AtomicBool::new(false),
        };
        if let Some(l) = &b.listener {
            b.epoll.ctl(
                ControlOperation::Add,
                l.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER),
            )?;
        }
        if let Some(fd) = conn {
            let mut st = b.lock();
            b.attach(&mut st, fd)?;
        }
        Ok(b)
    }

    /// Frames over an already connected stream socket (a client's connection, a socketpair to
    /// passt, an inherited `addr.type=fd`).
    pub fn connected(label: String, fd: OwnedFd) -> io::Result<Self> {
        Self::new(label, None, Some(fd))
    }

    /// Frames over whichever peer connects to listening socket `fd` (`server=on`).
    pub fn listening(label: String, fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_raw_fd())?;
        Self::new(label, Some(fd), None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attach(&self, st: &mut Conn, fd: OwnedFd) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, CONNECTION),
        )?;
        if let Some(l) = &self.listener {
            // One peer at a time (QEMU stops listening while connected).
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                l.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        st.fd = Some(fd);
        st.start = 0;
        st.end = 0;
        self.up.store(true, Ordering::Release);
        Ok(())
    }

    fn disconnect(&self, st: &mut Conn, why: &str) {
        let Some(fd) = st.fd.take() else { return };
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            fd.as_raw_fd(),
            EpollEvent::default(),
        );
        drop(fd);
        st.start = 0;
        st.end = 0;
        self.up.store(false, Ordering::Release);
        match &self.listener {
            Some(l) => {
                tracing::warn!("{}: {why}; link down until a peer connects", self.label);
                let _ = self.epoll.ctl(
                    ControlOperation::Add,
                    l.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, LISTENER),
                );
            }
            None => tracing::warn!("{}: {why}; link down", self.label),
        }
    }

    /// Take a waiting peer, if any.
    fn accept(&self, st: &mut Conn) -> io::Result<()> {
        let Some(l) = &self.listener else {
            return Ok(());
        };
        // SAFETY: accept4 on our listening socket, without a peer address buffer.
        let fd = unsafe {
            libc::accept4(
                l.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: accept4 returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        tracing::info!("{}: peer connected", self.label);
        self.attach(st, fd)
    }

    /// A whole frame waiting in the receive buffer, copied behind a zeroed header into `out`.
    fn take_frame(&self, st: &mut Conn, out: &mut [u8]) -> Result<Option<usize>, String> {
        let avail = st.end - st.start;
        if avail < 4 {
            return Ok(None);
        }
        let len_bytes: [u8; 4] = st.buf[st.start..st.start + 4].try_into().unwrap_or([0; 4]);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_STREAM_FRAME || VNET_HDR_LEN + len > out.len() {
            return Err(format!(
                "peer sent a {len}-byte frame (at most {MAX_STREAM_FRAME})"
            ));
        }
        if avail < 4 + len {
            return Ok(None);
        }
        out[..VNET_HDR_LEN].fill(0);
        out[VNET_HDR_LEN..VNET_HDR_LEN + len]
            .copy_from_slice(&st.buf[st.start + 4..st.start + 4 + len]);
        st.start += 4 + len;
        if st.start == st.end {
            st.start = 0;
            st.end = 0;
        }
        Ok(Some(VNET_HDR_LEN + len))
    }

    /// Finish sending `iov` after a partial write, waiting for the peer a bounded time.
    fn finish_write(fd: RawFd, mut rest: Vec<u8>) -> io::Result<()> {
        while !rest.is_empty() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, PARTIAL_WRITE_TIMEOUT_MS) };
            if rc == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer stopped reading mid-frame",
                ));
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // SAFETY: send from a live buffer of its length.
            let n = cvt(unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            });
            match n {
                Ok(n) => {
                    rest.drain(..n);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl NetBackend for StreamBackend {
    fn poll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn offloads(&self) -> bool {
        false
    }

    fn set_offload(&self, _flags: u32) -> io::Result<()> {
        Ok(())
    }

    fn read_frame(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut st = self.lock();
        loop {
            match self.take_frame(&mut st, out) {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                Err(why) => {
                    self.disconnect(&mut st, &why);
                    continue;
                }
            }
            let Some(fd) = st.fd.as_ref().map(|f| f.as_raw_fd()) else {
                // No peer: take one if waiting, else nothing to read.
                match self.accept(&mut st) {
                    Ok(()) if st.fd.is_some() => continue,
                    Ok(()) => return Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                    Err(e) => {
                        tracing::warn!("{}: accept failed: {e}", self.label);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
            };
            if st.start > 0 {
                let (s, e) = (st.start, st.end);
                st.buf.copy_within(s..e, 0);
                st.end -= s;
                st.start = 0;
            }
            let end = st.end;
            let room = &mut st.buf[end..];
            // SAFETY: recv into the free tail of our receive buffer.
            let n = cvt(unsafe {
                libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT)
            });
            match n {
                Ok(0) => self.disconnect(&mut st, "peer closed the connection"),
                Ok(n) => st.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => self.disconnect(&mut st, &format!("receive failed: {e}")),
            }
        }
    }

    fn write_frame(&self, buf: &[u8]) -> io::Result<()> {
        let payload = buf.get(VNET_HDR_LEN..).unwrap_or_default();
        if payload.len() > MAX_STREAM_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too long for the stream",
            ));
        }
        let mut st = self.lock();
        let Some(fd) = st.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let len = (payload.len() as u32).to_be_bytes();
        let iov = [
            libc::iovec {
                iov_base: len.as_ptr() as *mut libc::c_void,
                iov_len: 4,
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        // SAFETY: an all-zero msghdr is valid; the iovecs point at live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 2;
        let total = 4 + payload.len();
        // SAFETY: sendmsg with a msghdr whose buffers outlive the call.
        let sent = cvt(unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) });
        let res = match sent {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => {
                let mut rest = Vec::with_capacity(total - n);
                rest.extend_from_slice(&len[n.min(4)..]);
                rest.extend_from_slice(&payload[n.saturating_sub(4)..]);
                Self::finish_write(fd, rest)
            }
            // The peer is slow: drop the frame, as a full tap queue does.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(e) => Err(e),
        };
        if let Err(e) = &res {
            self.disconnect(&mut st, &format!("send failed: {e}"));
        }
        res
    }

    fn link_up(&self) -> bool {
        if !self.up.load(Ordering::Acquire) {
            return false;
        }
        // A peer that went away while no worker reads (the driver has not started the device)
        // is seen here: the driver probing later finds the link down.
        let st = self.lock();
        let Some(fd) = &st.fd else { return false };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd, without waiting.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        !(rc > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
    }
}
