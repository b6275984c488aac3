//! The SIGSYS handler: a call outside the thread's list (SECCOMP_RET_TRAP) ends rvmm with one
//! line on stderr naming the thread, its kind and the call. Async-signal-safe: it reads
//! thread-locals with constant initialisers, formats into a stack buffer and makes two system
//! calls every list allows (write, exit_group).

use crate::{lists, syscalls, SandboxError, ThreadKind};
use std::cell::Cell;

/// The exit status after a refused call (rvmm's status for its own errors).
pub const STATUS: i32 = 2;

thread_local! {
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Remember the calling thread's kind and name for the message.
pub(crate) fn set_thread(kind: ThreadKind) {
    let mut name = [0u8; 16];
    if let Some(n) = std::thread::current().name() {
        let n = n.as_bytes();
        let len = n.len().min(15);
        name[..len].copy_from_slice(&n[..len]);
    }
    KIND.with(|k| k.set(Some(kind)));
    NAME.with(|c| c.set(name));
}

pub(crate) fn install() -> Result<(), SandboxError> {
    // SAFETY: a zeroed sigaction is valid; the handler has the SA_SIGINFO signature.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handle_sigsys as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: installs a handler for SIGSYS with a valid sigaction.
    if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } < 0 {
        return Err(SandboxError::Io {
            what: "install the SIGSYS handler",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A fixed buffer the handler formats into.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn number(&mut self, mut v: u64, hex: bool) {
        let base = if hex { 16 } else { 10 };
        if hex {
            self.push(b"0x");
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v % base) as usize];
            v /= base;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn handle_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The kernel's siginfo for SIGSYS: si_syscall is the int at offset 24 (after signo, errno,
    // code, padding and si_call_addr).
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() } as i64;
    // SAFETY: and a valid ucontext_t; gregs holds the registers at the call.
    let (a0, a1) = unsafe {
        let uc = &*(ctx as *const libc::ucontext_t);
        (
            uc.uc_mcontext.gregs[libc::REG_RDI as usize] as u64,
            uc.uc_mcontext.gregs[libc::REG_RSI as usize] as u64,
        )
    };
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    line.push(b"rvmm: sandbox: thread '");
    let name = NAME.with(Cell::get);
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    line.push(&name[..len]);
    line.push(b"' (");
    line.push(
        KIND.with(Cell::get)
            .map_or("unknown", ThreadKind::name)
            .as_bytes(),
    );
    line.push(b" thread) made system call ");
    line.push(syscalls::name(nr).unwrap_or("?").as_bytes());
    line.push(b" (");
    line.number(nr as u64, false);
    line.push(b")");
    if nr == libc::SYS_ioctl {
        line.push(b" on fd ");
        line.number(a0, false);
        line.push(b" with request ");
        line.number(a1 & 0xffff_ffff, true);
        if let Some(req) = lists::ioctl_name(a1) {
            line.push(b" (");
            line.push(req.as_bytes());
            line.push(b")");
        }
    }
    line.push(b", which its seccomp filter does not allow; stopping (docs/SANDBOX.md; -sandbox off disables the filters)\n");
    // SAFETY: write(2) and exit_group(2) are async-signal-safe and allowed in every list.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::syscall(libc::SYS_exit_group, STATUS);
    }
}
