//! The one event loop, on the VMM thread: everything that is not a vCPU or a virtio device worker
//! waits here on one epoll set.
//!
//! - requests from devices and vCPUs (reset, power-off, isa-debug-exit, fatal errors);
//! - SIGTERM/SIGINT/SIGHUP (a signalfd; the signals are blocked in every thread);
//! - stdin for `-serial stdio`;
//! - the QMP sockets and their clients;
//! - the user-space IOAPIC's input lines (split irqchip) and level-triggered lines' resamples;
//! - the CMOS RTC's interrupt timer (alarm, update and periodic interrupts; S3 wake-up).
//!
//! Handlers run to completion on this thread; the ones that change the VM's run state do it
//! through [`Vmm`], which waits for every vCPU's answer.

use crate::console::{Console, Input};
use crate::control::{Cause, Control};
use crate::interrupts::{IoapicLine, Resampler};
use crate::qmp::{Change, Machine, QmpServer};
use crate::vm::Vmm;
use crate::VmmError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// The terminating signals, turned into a clean stop (QEMU: "terminating on signal N", status 0).
const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// How often a console backlog is retried while COM1's receive FIFO is full.
const BACKLOG_RETRY_MS: i32 = 1;
/// How often a pty nobody has open is looked at again.
const HANGUP_RETRY_MS: i32 = 200;

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Io { what, source }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Block the terminating signals in the calling thread, and so in every thread created after it
/// (call it before any other thread exists); they are read from a signalfd in the event loop.
pub fn block_signals() -> Result<OwnedFd, VmmError> {
    let set = signal_set();
    // SAFETY: `set` is initialized; changes only this thread's mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io_err("pthread_sigmask")(
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    // SAFETY: `set` is initialized; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io_err("signalfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The signal number read from `fd`, if one is pending.
fn read_signal(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let len = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is valid for writes of `len` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            len,
        )
    };
    (n == len as isize).then_some(info.ssi_signo)
}

/// What each epoll token stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Requests,
    Signals,
    Stdin,
    Qmp(usize),
    IoapicLine(usize),
    Resample(usize),
    RtcTimer,
    /// A `unix:`/`tcp:` incoming migration's listener.
    Incoming,
    /// The balloon's driver changed `actual`: BALLOON_CHANGE.
    BalloonChange,
    /// The balloon's statistics poll timer.
    BalloonTimer,
}

/// Everything the loop serves besides the VM.
pub struct Sources {
    pub control: Arc<Control>,
    pub signals: OwnedFd,
    pub console: Option<Console>,
    pub qmp: QmpServer,
    pub machine: Arc<Machine>,
    pub ioapic_lines: Vec<IoapicLine>,
    pub resamplers: Vec<Resampler>,
    pub rtc: Arc<rvmm_devices::legacy::Cmos>,
}

pub struct EventLoop {
    epoll: Epoll,
    tokens: Vec<Source>,
    s: Sources,
    stdin: Stdin,
    /// stdin is a regular file or /dev/null, which epoll refuses: read it whenever the loop
    /// comes around instead.
    stdin_is_file: bool,
    /// The incoming migration listener being polled, if any.
    incoming: Option<RawFd>,
}

/// Where console input stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stdin {
    /// No console, or end of input seen (stdin would stay readable for ever).
    Off,
    /// Waiting for input.
    Reading,
    /// COM1's receive FIFO is full: retry on a short timer, not reading stdin meanwhile.
    Backlog,
    /// A pty with nobody on the other side: look again on a timer (epoll would report the
    /// hang-up without end).
    Hangup,
}

impl EventLoop {
    pub fn new(s: Sources) -> Result<Self, VmmError> {
        let mut l = Self {
            epoll: Epoll::new().map_err(io_err("epoll_create"))?,
            tokens: Vec::new(),
            s,
            stdin: Stdin::Off,
            stdin_is_file: false,
            incoming: None,
        };
        l.add(l.s.control.wake_fd().as_raw_fd(), Source::Requests)?;
        l.add(l.s.signals.as_raw_fd(), Source::Signals)?;
        if l.s.console.is_some() {
            let fd = l.console_fd();
            match l.add(fd, Source::Stdin) {
                Ok(()) => {}
                Err(VmmError::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                    l.stdin_is_file = true;
                }
                Err(e) => return Err(e),
            }
            l.stdin = Stdin::Reading;
        }
        for (i, fd) in l.s.qmp.poll_fds().into_iter().enumerate() {
            l.add(fd, Source::Qmp(i))?;
        }
        for i in 0..l.s.ioapic_lines.len() {
            l.add(l.s.ioapic_lines[i].fd(), Source::IoapicLine(i))?;
        }
        for i in 0..l.s.resamplers.len() {
            l.add(l.s.resamplers[i].fd(), Source::Resample(i))?;
        }
        let rtc = l.s.rtc.timer_fd().map_err(io_err("RTC timerfd"))?;
        l.add(rtc, Source::RtcTimer)?;
        if let Some(b) = &l.s.machine.balloon {
            let (changed, timer) = (b.shared.changed_fd().as_raw_fd(), b.shared.timer_fd());
            l.add(changed, Source::BalloonChange)?;
            l.add(timer, Source::BalloonTimer)?;
        }
        Ok(l)
    }

    /// The token of `source`, the same one each time (a monitor swaps listener and client).
    fn token(&mut self, source: Source) -> u64 {
        let index = match self.tokens.iter().position(|s| *s == source) {
            Some(i) => i,
            None => {
                self.tokens.push(source);
                self.tokens.len() - 1
            }
        };
        index as u64
    }

    fn add(&mut self, fd: RawFd, source: Source) -> Result<(), VmmError> {
        let token = self.token(source);
        self.epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(io_err("epoll_ctl"))
    }

    /// Stop polling `fd` (a closed stdin, a departed client).
    fn remove(&self, fd: RawFd) {
        // Gone already is fine.
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Serve events until the VM stops; `vmm` has been started.
    pub fn run(&mut self, vmm: &mut Vmm) -> Result<(), VmmError> {
        let mut events = vec![EpollEvent::default(); 32];
        while !vmm.stopping() {
            self.follow_incoming(vmm)?;
            let timeout = match self.stdin {
                Stdin::Backlog => BACKLOG_RETRY_MS,
                Stdin::Hangup => HANGUP_RETRY_MS,
                Stdin::Reading if self.stdin_is_file => 0,
                _ => -1,
            };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("epoll_wait")(e)),
            };
            match self.stdin {
                Stdin::Backlog => self.console_input(vmm, |c| c.drain()),
                Stdin::Hangup => self.console_input(vmm, |c| c.readable()),
                Stdin::Reading if self.stdin_is_file => self.console_input(vmm, |c| c.readable()),
                _ => {}
            }
            for ev in &events[..n] {
                let Some(&source) = self.tokens.get(ev.data() as usize) else {
                    continue;
                };
                match source {
                    Source::Requests => vmm.handle_requests(),
                    Source::Signals => {
                        if let Some(sig) = read_signal(&self.s.signals) {
                            tracing::info!(target: crate::NOTICE_TARGET, "terminating on signal {sig}");
                            vmm.shutdown(Cause::HostSignal);
                        }
                    }
                    Source::Stdin => self.console_input(vmm, |c| c.readable()),
                    Source::Qmp(i) => self.qmp(i, vmm)?,
                    Source::IoapicLine(i) => self.s.ioapic_lines[i].triggered(),
                    Source::Resample(i) => self.s.resamplers[i].fired(),
                    Source::RtcTimer => self.s.rtc.timer_fired(),
                    Source::Incoming => vmm.accept_incoming(),
                    Source::BalloonChange => crate::qmp::balloon_changed(&self.s.machine),
                    Source::BalloonTimer => {
                        if let Some(b) = &self.s.machine.balloon {
                            b.shared.timer_fired();
                        }
                    }
                }
                if vmm.stopping() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Poll the listener of a `unix:`/`tcp:` incoming migration while there is one (from
    /// `-incoming` or `migrate-incoming`; it goes once its connection came).
    fn follow_incoming(&mut self, vmm: &Vmm) -> Result<(), VmmError> {
        let fd = vmm.incoming_fd();
        if fd == self.incoming {
            return Ok(());
        }
        if let Some(old) = self.incoming.take() {
            self.remove(old);
        }
        if let Some(fd) = fd {
            self.add(fd, Source::Incoming)?;
            self.incoming = Some(fd);
        }
        Ok(())
    }

    /// Feed the console with `f` and poll stdin only while input is wanted.
    fn console_input(&mut self, vmm: &mut Vmm, f: impl FnOnce(&mut Console) -> Input) {
        let Some(console) = self.s.console.as_mut() else {
            return;
        };
        let next = match f(console) {
            Input::More => Stdin::Reading,
            Input::Backlog => Stdin::Backlog,
            Input::Closed => Stdin::Off,
            Input::Hangup => Stdin::Hangup,
            Input::Quit => {
                vmm.exit(0);
                Stdin::Off
            }
        };
        if next != self.stdin && !self.stdin_is_file {
            // Level-triggered: stdin leaves the set while it must not be read.
            if next == Stdin::Reading {
                // Re-adding only fails if it is already there.
                let _ = self.add(self.console_fd(), Source::Stdin);
            } else if self.stdin == Stdin::Reading {
                self.remove(self.console_fd());
            }
        }
        self.stdin = next;
    }

    fn qmp(&mut self, index: usize, vmm: &mut Vmm) -> Result<(), VmmError> {
        let machine = self.s.machine.clone();
        match self.s.qmp.ready(index, &machine, vmm) {
            Change::None => Ok(()),
            Change::Connected { client, listener } => {
                self.remove(listener);
                self.add(client, Source::Qmp(index))
            }
            Change::Disconnected { client, listener } => {
                self.remove(client);
                self.add(listener, Source::Qmp(index))
            }
        }
    }

    /// The console's input descriptor (stdin, or COM1's pty).
    fn console_fd(&self) -> RawFd {
        self.s
            .console
            .as_ref()
            .map_or(libc::STDIN_FILENO, Console::fd)
    }

    /// The loop's QMP server (socket paths to remove at exit).
    pub fn qmp_server(&self) -> &QmpServer {
        &self.s.qmp
    }
}
