//! `-serial stdio` input: the terminal in raw mode (restored on every exit path), stdin fed to
//! COM1's receive FIFO by the event loop, and QEMU's Ctrl-A escapes (`C-a x` quits, `C-a h` help,
//! `C-a C-a` sends C-a).
//!
//! The raw mode is QEMU's (`qemu_chr_set_echo_stdio`): no echo, no line editing, no CR/LF or
//! flow-control translation, output post-processing kept, and ISIG kept so Ctrl-C still stops
//! the VM as it does with QEMU's default `signal=on`.

use rvmm_devices::legacy::SerialDevice;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

/// QEMU's escape character, Ctrl-A.
const ESCAPE: u8 = 0x01;
const HELP: &str =
    "\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a C-a  sends C-a\r\n";

/// The terminal settings to put back, while raw mode is on.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Put the saved terminal settings back (idempotent; safe to call from any thread or hook).
pub fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        // SAFETY: `t` is a termios obtained from tcgetattr on fd 0; TCSANOW applies it at once.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

/// Restores the terminal when dropped (normal return or error return of the VMM).
pub struct RawTerminal(());

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Switch stdin to raw mode if it is a terminal, with a panic hook that undoes it.
fn enter_raw_mode() -> RawTerminal {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return RawTerminal(());
    }
    // SAFETY: termios is plain data; tcgetattr fills it and we check its result.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to fill.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
        return RawTerminal(());
    }
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    t.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    t.c_oflag |= libc::OPOST;
    t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
    t.c_cflag &= !(libc::CSIZE | libc::PARENB);
    t.c_cflag |= libc::CS8;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    // SAFETY: `t` is a valid termios derived from the current settings.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    RawTerminal(())
}

/// What the escape state machine makes of one input byte.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// Forward this byte to the guest.
    Byte(u8),
    /// Part of an escape sequence, or an unknown escape: nothing to do.
    None,
    Quit,
    Help,
}

#[derive(Default)]
struct Escapes {
    pending: bool,
}

impl Escapes {
    fn feed(&mut self, b: u8) -> Key {
        if !self.pending {
            if b == ESCAPE {
                self.pending = true;
                return Key::None;
            }
            return Key::Byte(b);
        }
        self.pending = false;
        match b {
            b'x' | b'X' => Key::Quit,
            b'h' | b'H' | b'?' => Key::Help,
            ESCAPE => Key::Byte(ESCAPE),
            _ => Key::None,
        }
    }
}

/// `-serial stdio` input, served by the event loop: raw mode while it lives, escapes, and what
/// COM1's receive FIFO could not take yet.
pub struct Console {
    serial: Arc<SerialDevice>,
    /// Where input comes from: stdin, or a pty master (`-chardev pty`, no escapes there).
    input: ConsoleInput,
    escapes: Escapes,
    /// Input waiting for room in the FIFO (the event loop stops reading stdin meanwhile).
    backlog: VecDeque<u8>,
    _raw: RawTerminal,
}

/// A console's input descriptor.
enum ConsoleInput {
    Stdin,
    Pty(std::fs::File),
}

/// What the event loop should do after stdin was readable.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Keep reading stdin.
    More,
    /// Stop reading until the backlog drains (call [`Console::drain`] on a short timer).
    Backlog,
    /// End of input or an error: no more input, the guest keeps running (as QEMU).
    Closed,
    /// A pty nobody has open: look again later (QEMU's pty polls for a connection).
    Hangup,
    /// `C-a x`: the VM stops with status 0.
    Quit,
}

impl Console {
    /// Raw mode on, if stdin is a terminal.
    pub fn new(serial: Arc<SerialDevice>) -> Self {
        Self {
            serial,
            input: ConsoleInput::Stdin,
            escapes: Escapes::default(),
            backlog: VecDeque::new(),
            _raw: enter_raw_mode(),
        }
    }

    /// COM1's input from a pty master (`-chardev pty`): no raw mode on stdin, no escapes.
    pub fn pty(serial: Arc<SerialDevice>, master: std::fs::File) -> Self {
        Self {
            serial,
            input: ConsoleInput::Pty(master),
            escapes: Escapes::default(),
            backlog: VecDeque::new(),
            _raw: RawTerminal(()),
        }
    }

    /// The descriptor the event loop polls.
    pub fn fd(&self) -> std::os::fd::RawFd {
        match &self.input {
            ConsoleInput::Stdin => libc::STDIN_FILENO,
            ConsoleInput::Pty(f) => std::os::fd::AsRawFd::as_raw_fd(f),
        }
    }

    /// The input is readable: read once and queue the bytes for the guest.
    pub fn readable(&mut self) -> Input {
        let mut buf = [0u8; 256];
        let pty = matches!(self.input, ConsoleInput::Pty(_));
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return match std::io::Error::last_os_error().kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => Input::More,
                // EIO: no slave open; keep looking for one.
                _ if pty => Input::Hangup,
                _ => Input::Closed,
            };
        }
        if n == 0 {
            return if pty { Input::Hangup } else { Input::Closed };
        }
        if pty {
            self.backlog.extend(&buf[..n as usize]);
            return self.drain();
        }
        for &b in &buf[..n as usize] {
            match self.escapes.feed(b) {
                Key::Byte(b) => self.backlog.push_back(b),
                Key::None => {}
                Key::Help => write_stdout(HELP.as_bytes()),
                Key::Quit => {
                    write_stdout(b"rvmm: Terminated\r\n");
                    return Input::Quit;
                }
            }
        }
        self.drain()
    }

    /// Move what fits into COM1's receive FIFO.
    pub fn drain(&mut self) -> Input {
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            let n = self.serial.enqueue_input(front);
            if n == 0 {
                return Input::Backlog;
            }
            self.backlog.drain(..n);
        }
        Input::More
    }
}

fn write_stdout(bytes: &[u8]) {
    let mut so = std::io::stdout();
    // The terminal going away is not the VM's problem.
    let _ = so.write_all(bytes);
    let _ = so.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_qemu() {
        let mut e = Escapes::default();
        let keys: Vec<Key> = b"a\x01\x01b\x01h\x01zc\x01x"
            .iter()
            .map(|&b| e.feed(b))
            .collect();
        assert_eq!(
            keys,
            vec![
                Key::Byte(b'a'),
                Key::None,
                Key::Byte(ESCAPE),
                Key::Byte(b'b'),
                Key::None,
                Key::Help,
                Key::None,
                Key::None,
                Key::Byte(b'c'),
                Key::None,
                Key::Quit
            ]
        );
    }
}
