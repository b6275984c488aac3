//! `-serial stdio` input: the terminal in raw mode (restored on every exit path), a thread that
//! feeds stdin to COM1's receive FIFO, and QEMU's Ctrl-A escapes (`C-a x` quits, `C-a h` help,
//! `C-a C-a` sends C-a).
//!
//! The raw mode is QEMU's (`qemu_chr_set_echo_stdio`): no echo, no line editing, no CR/LF or
//! flow-control translation, output post-processing kept, and ISIG kept so Ctrl-C still stops
//! the VM as it does with QEMU's default `signal=on`.

use crate::control::Control;
use rvmm_devices::legacy::SerialDevice;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

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

/// Raw mode (when stdin is a tty) and the stdin thread. Keep the returned guard alive until the
/// VM has stopped.
pub fn start(serial: Arc<SerialDevice>, control: Arc<Control>) -> RawTerminal {
    let guard = enter_raw_mode();
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(64 * 1024)
        .spawn(move || stdin_loop(&serial, &control));
    if let Err(e) = spawned {
        // The guest still runs and prints; it only gets no input.
        eprintln!("rvmm: cannot start the stdin thread: {e}");
    }
    guard
}

fn stdin_loop(serial: &SerialDevice, control: &Control) {
    let mut esc = Escapes::default();
    let mut buf = [0u8; 256];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            // EOF or error: no more input, the guest keeps running (as QEMU).
            return;
        }
        out.clear();
        for &b in &buf[..n as usize] {
            match esc.feed(b) {
                Key::Byte(b) => out.push(b),
                Key::None => {}
                Key::Help => {
                    let mut so = std::io::stdout();
                    let _ = so.write_all(HELP.as_bytes());
                    let _ = so.flush();
                }
                Key::Quit => {
                    let mut so = std::io::stdout();
                    let _ = so.write_all(b"rvmm: Terminated\r\n");
                    let _ = so.flush();
                    control.stop(0);
                    return;
                }
            }
        }
        feed(serial, control, &out);
    }
}

/// Queue `bytes` for the guest, waiting while its receive FIFO is full.
fn feed(serial: &SerialDevice, control: &Control, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = serial.enqueue_input(bytes);
        bytes = &bytes[n..];
        if n == 0 {
            if control.pending() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
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
