//! The launcher: a process forked before any filter or thread exists, which runs the shell
//! commands of QMP `migrate exec:` / `-incoming exec:` for rvmm. A child of a filtered thread
//! would inherit the filter (and `sh` would die on its first call outside rvmm's list), so the
//! commands start from this unfiltered, single-threaded process instead: QEMU's `spawn=allow`,
//! rvmm's default. `-sandbox on,spawn=deny` starts no launcher and refuses `exec:`.
//!
//! Protocol on a Unix socket pair, one request at a time: rvmm sends the command, a byte saying
//! which of the command's stdin (0) or stdout (1) the passed fd becomes, and three fds
//! (SCM_RIGHTS): that one, and rvmm's stdout and stderr of the moment (a daemon's are
//! /dev/null; the launcher itself keeps none of rvmm's, so it holds no pipe of a caller that
//! waits for rvmm's output to end); the launcher answers with the child's pid (or a negative errno), then, when
//! the command ends, its wait status.

use crate::SandboxError;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

static LAUNCHER: OnceLock<Mutex<UnixStream>> = OnceLock::new();

/// Which standard stream of the command the passed fd becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command reads what rvmm writes (a save).
    Stdin,
    /// rvmm reads what the command writes (a restore).
    Stdout,
}

/// Whether a launcher runs (the sandbox is on with `spawn=allow`).
pub fn available() -> bool {
    LAUNCHER.get().is_some()
}

/// Fork the launcher. Call on the main thread before any other thread exists.
pub fn start() -> Result<(), SandboxError> {
    if available() {
        return Ok(());
    }
    let (ours, theirs) = UnixStream::pair().map_err(|source| SandboxError::Io {
        what: "socketpair for the launcher",
        source,
    })?;
    // SAFETY: rvmm is single-threaded here, so the child may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(SandboxError::Io {
            what: "fork the launcher",
            source: std::io::Error::last_os_error(),
        }),
        0 => {
            drop(ours);
            serve(theirs)
        }
        _ => {
            drop(theirs);
            let _ = LAUNCHER.set(Mutex::new(ours));
            Ok(())
        }
    }
}

/// The launcher's life: requests until rvmm closes the socket or dies.
fn serve(sock: UnixStream) -> ! {
    let fd = sock.as_raw_fd();
    // SAFETY: plain syscalls on this single-threaded child: die with rvmm, keep only the
    // standard streams and the socket, and leave terminal signals to rvmm (commands get a
    // clean mask from Command).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, c"rvmm-launcher".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for std in 0..3 {
                libc::dup2(null, std);
            }
            libc::close(null);
        }
    }
    let mut sock = sock;
    loop {
        let Some((cmd, stream, [child_fd, stdout, stderr])) = receive(&sock) else {
            // SAFETY: ends the launcher without running rvmm's exit handlers.
            unsafe { libc::_exit(0) };
        };
        let stdio = Stdio::from(child_fd);
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(&cmd).stderr(Stdio::from(stderr));
        match stream {
            Stream::Stdin => command.stdin(stdio).stdout(Stdio::from(stdout)),
            Stream::Stdout => command.stdin(Stdio::null()).stdout(stdio),
        };
        let (pid, status) = match command.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                let _ = sock.write_all(&pid.to_le_bytes());
                drop(command);
                let status = child.wait().map(|s| s.into_raw()).unwrap_or(-1);
                (pid, status)
            }
            Err(e) => (-e.raw_os_error().unwrap_or(libc::EIO), 0),
        };
        if pid < 0 {
            let _ = sock.write_all(&pid.to_le_bytes());
            continue;
        }
        let _ = sock.write_all(&status.to_le_bytes());
    }
}

/// A request: the command, the stream and the fds (the stream's, stdout, stderr).
fn receive(sock: &UnixStream) -> Option<(String, Stream, [OwnedFd; 3])> {
    let mut data = vec![0u8; 64 * 1024];
    // SAFETY: a zeroed cmsg buffer of room for one fd.
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg into the buffers described by msg.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 1 {
        return None;
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA on the msghdr recvmsg filled; the header's length says
    // how many fds it carries, each now ours.
    let fds = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
        let data = libc::CMSG_DATA(c).cast::<RawFd>();
        (0..count)
            .map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned()))
            .collect::<Vec<_>>()
    };
    let fds: [OwnedFd; 3] = fds.try_into().ok()?;
    let n = n as usize;
    let stream = if data[0] == 0 {
        Stream::Stdin
    } else {
        Stream::Stdout
    };
    let cmd = String::from_utf8_lossy(&data[1..n]).into_owned();
    Some((cmd, stream, fds))
}

/// A command the launcher started.
pub struct Launched {
    pub pid: i32,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("launcher: {what}: {e}"))
}

/// Start `sh -c cmd` with `fd` as its stdin or stdout; `wait` collects its status.
pub fn launch(cmd: &str, stream: Stream, fd: OwnedFd) -> std::io::Result<(Launched, Waiter)> {
    let lock = LAUNCHER.get().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "-sandbox on,spawn=deny: rvmm may not start commands",
        )
    })?;
    let guard = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cmd.len() + 1 > 64 * 1024 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "command longer than 64 KiB",
        ));
    }
    let mut data = Vec::with_capacity(cmd.len() + 1);
    data.push(u8::from(stream == Stream::Stdout));
    data.extend_from_slice(cmd.as_bytes());
    send_with_fds(&guard, &data, [fd.as_raw_fd(), 1, 2]).map_err(io("send"))?;
    drop(fd);
    let mut pid = [0u8; 4];
    (&*guard).read_exact(&mut pid).map_err(io("read pid"))?;
    let pid = i32::from_le_bytes(pid);
    if pid < 0 {
        return Err(std::io::Error::from_raw_os_error(-pid));
    }
    Ok((Launched { pid }, Waiter { guard }))
}

/// Holds the launcher until the command's status arrives.
pub struct Waiter {
    guard: std::sync::MutexGuard<'static, UnixStream>,
}

impl Waiter {
    /// Wait for the command to end.
    pub fn wait(self) -> std::io::Result<ExitStatus> {
        let mut status = [0u8; 4];
        (&*self.guard)
            .read_exact(&mut status)
            .map_err(io("read status"))?;
        Ok(ExitStatus::from_raw(i32::from_le_bytes(status)))
    }
}

fn send_with_fds(sock: &UnixStream, data: &[u8], fds: [RawFd; 3]) -> std::io::Result<()> {
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) } as usize;
    // SAFETY: the control buffer (64 bytes) has room for one SCM_RIGHTS header and three fds.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
        let data = libc::CMSG_DATA(c).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(*fd);
        }
    }
    // SAFETY: sendmsg of the buffers described by msg.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(std::io::Error::other("short send"));
    }
    Ok(())
}
