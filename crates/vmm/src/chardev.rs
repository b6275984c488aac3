//! COM1's host side: stdio, a file (truncated or appended), or a new pseudo-terminal
//! (`-chardev pty`, QEMU's `char-pty.c`: a raw-mode master that drops output while nobody has
//! the slave open, and says "char device redirected to /dev/pts/N (label ID)").

use rvmm_cli::SerialConfig;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};

/// COM1's output and what QMP `query-chardev` calls it.
pub struct SerialBackend {
    pub output: Box<dyn Write + Send>,
    /// QEMU's chardev filename: `pty:/dev/pts/N`, `file:PATH`, `stdio`.
    pub filename: String,
    /// A pty master's second descriptor, for COM1's input.
    pub input: Option<File>,
}

/// Writes to a pty master without ever blocking a vCPU: output nobody reads is dropped, as
/// QEMU drops it while the pty is disconnected.
struct PtyWriter(File);

impl Write for PtyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EIO) =>
            {
                Ok(buf.len())
            }
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A new pty master in raw mode and non-blocking, with its slave's path.
fn open_pty() -> io::Result<(File, String)> {
    // SAFETY: posix_openpt returns a new descriptor or -1; no memory is passed.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let master = unsafe { File::from_raw_fd(fd) };
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: grantpt/unlockpt only act on the descriptor.
    check(unsafe { libc::grantpt(fd) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(fd) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the length given.
    check(unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) })?;
    // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: termios is plain data that tcgetattr fills; its result is checked.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios for the pty's settings.
    check(unsafe { libc::tcgetattr(fd, &mut t) })?;
    // SAFETY: `t` holds the current settings.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `t` is a valid termios.
    check(unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) })?;
    let fd = master.as_raw_fd();
    // SAFETY: F_GETFL on our own descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on our own descriptor.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok((master, path))
}

/// Open COM1's backend; `label` is its chardev id (for the pty message). None: no COM1.
pub fn open_serial(
    serial: &SerialConfig,
    label: Option<&str>,
) -> io::Result<Option<SerialBackend>> {
    Ok(Some(match serial {
        SerialConfig::None => return Ok(None),
        SerialConfig::Stdio => SerialBackend {
            output: Box::new(io::stdout()),
            filename: "stdio".into(),
            input: None,
        },
        SerialConfig::File(path) => SerialBackend {
            output: Box::new(File::create(path)?),
            filename: format!("file:{}", path.display()),
            input: None,
        },
        SerialConfig::Append(path) => SerialBackend {
            output: Box::new(OpenOptions::new().append(true).create(true).open(path)?),
            filename: format!("file:{}", path.display()),
            input: None,
        },
        SerialConfig::Pty => {
            let (master, path) = open_pty()?;
            // QEMU's message, which tools read from the log.
            eprintln!(
                "char device redirected to {path} (label {})",
                label.unwrap_or("serial0")
            );
            SerialBackend {
                input: Some(master.try_clone()?),
                output: Box::new(PtyWriter(master)),
                filename: format!("pty:{path}"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pty_output_reaches_the_slave_and_never_blocks() {
        let b = open_serial(&SerialConfig::Pty, Some("s")).unwrap().unwrap();
        let path = b.filename.strip_prefix("pty:").unwrap().to_string();
        let mut out = b.output;
        // Nobody reads: far more than a pty buffer is dropped without blocking.
        for _ in 0..1000 {
            out.write_all(&[b'x'; 1024]).unwrap();
        }
        let mut slave = File::open(&path).unwrap();
        // Drain what was buffered, then the next line arrives.
        let mut buf = vec![0u8; 1 << 20];
        // SAFETY: F_SETFL O_NONBLOCK on our own descriptor.
        unsafe { libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        while slave.read(&mut buf).is_ok_and(|n| n > 0) {}
        out.write_all(b"hello\n").unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !got.ends_with(b"hello\n") && std::time::Instant::now() < deadline {
            if let Ok(n) = slave.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert!(got.ends_with(b"hello\n"), "{got:?}");
    }
}
