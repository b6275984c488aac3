//! Harness for integration tests that boot the test guests through a VMM
//! binary with a QEMU-style command line.
//!
//! The binary is rvmm (`CARGO_BIN_EXE_rvmm`) unless `RVMM_TEST_BIN` names
//! another one, e.g. `RVMM_TEST_BIN=qemu-system-x86_64` to check that the
//! guests and the expectations match QEMU.

#![allow(dead_code)]

pub mod linux;
pub mod qmp;
pub mod snapfile;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one guest run may take before the VMM is killed and the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How often the harness looks at a running VMM.
const POLL: Duration = Duration::from_millis(20);

/// The VMM binary under test.
pub fn binary() -> PathBuf {
    std::env::var_os("RVMM_TEST_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rvmm")))
}

/// Whether the binary under test is QEMU rather than rvmm.
pub fn is_qemu() -> bool {
    binary()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("qemu"))
}

/// Returns true, after printing why, when the running test does not apply to QEMU.
pub fn skip_on_qemu(reason: &str) -> bool {
    if is_qemu() {
        eprintln!("skipped on {}: {reason}", binary().display());
        return true;
    }
    false
}

/// Path of a built test guest.
pub fn guest(name: &str) -> PathBuf {
    rvmm_guests::path(name)
}

/// A VMM command line under construction: the common QEMU-style options
/// (q35, KVM, 256 MiB, serial on stdout, isa-debug-exit at 0xf4,
/// -no-reboot) plus whatever the test adds.
pub struct VmCommand {
    args: Vec<OsString>,
    timeout: Duration,
    /// Give the VMM a pipe as stdin (for [`RunningVm::write_stdin`]) instead of /dev/null.
    stdin_pipe: bool,
    /// Extra environment variables for the VMM.
    envs: Vec<(OsString, OsString)>,
    /// The program to run instead of [`binary`].
    program: Option<PathBuf>,
}

impl VmCommand {
    /// The common options and `-kernel <guest>` for the built guest `name`.
    pub fn guest(name: &str) -> Self {
        Self::without_kernel().arg("-kernel").arg(guest(name))
    }

    /// No options at all: the test gives the whole command line (e.g. libvirt's).
    pub fn bare() -> Self {
        VmCommand {
            args: Vec::new(),
            timeout: TIMEOUT,
            stdin_pipe: false,
            envs: Vec::new(),
            program: None,
        }
    }

    /// The common options without `-kernel`.
    pub fn without_kernel() -> Self {
        let args = [
            "-M",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ];
        // QEMU aborts on this host with plain `-cpu host` (MSR 0x10a, docs/EMULATED-KVM.md).
        let cpu = |a: &&str| match *a {
            "host" if is_qemu() => OsString::from("host,-arch-capabilities"),
            a => OsString::from(a),
        };
        VmCommand {
            args: args.iter().map(cpu).collect(),
            timeout: TIMEOUT,
            stdin_pipe: false,
            envs: Vec::new(),
            program: None,
        }
    }

    /// Runs `program` (e.g. QEMU for a cross-check) instead of the binary under test.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Puts `args` before the VMM's arguments (a wrapper [`program`](Self::program) such as
    /// strace, whose own arguments name the VMM binary).
    pub fn prepend_args(mut self, args: impl IntoIterator<Item = OsString>) -> Self {
        let mut all: Vec<OsString> = args.into_iter().collect();
        all.append(&mut self.args);
        self.args = all;
        self
    }

    /// Replaces the value after every `flag` (e.g. `-accel`), or adds `flag value`.
    pub fn set_option(mut self, flag: &str, value: &str) -> Self {
        let mut found = false;
        for i in 0..self.args.len().saturating_sub(1) {
            if self.args[i] == flag {
                self.args[i + 1] = value.into();
                found = true;
            }
        }
        if !found {
            self.args.push(flag.into());
            self.args.push(value.into());
        }
        self
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the VMM (e.g. `RVMM_LOG`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sets how long [`VmCommand::run`] waits before killing the VMM.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects the VMM's stdin to a pipe the test writes with [`RunningVm::write_stdin`].
    pub fn stdin_pipe(mut self) -> Self {
        self.stdin_pipe = true;
        self
    }

    /// Drops every occurrence of a flag without value, e.g. `-no-reboot`.
    pub fn without_flag(mut self, flag: &str) -> Self {
        self.args.retain(|a| a != flag);
        self
    }

    /// Sets `-append`.
    pub fn append(self, cmdline: &str) -> Self {
        self.arg("-append").arg(cmdline)
    }

    /// Sets `-initrd` to the comma-separated list of `files`.
    pub fn initrd(self, files: &[&Path]) -> Self {
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.arg("-initrd").arg(list.join(","))
    }

    /// Starts the VMM with stdout and stderr captured.
    pub fn spawn(self) -> RunningVm {
        let bin = self.program.clone().unwrap_or_else(binary);
        let mut child = Command::new(&bin)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take(), Arc::clone(&stdout)),
            collect(child.stderr.take(), Arc::clone(&stderr)),
        ];
        RunningVm {
            child,
            command: format!("{} {}", bin.display(), join_args(&self.args)),
            timeout: self.timeout,
            stdout,
            stderr,
            readers,
        }
    }

    /// Runs the VMM to completion (killing it and failing after the timeout).
    pub fn run(self) -> Output {
        let timeout = self.timeout;
        self.spawn().wait(timeout)
    }
}

fn join_args(args: &[OsString]) -> String {
    let parts: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
    parts.join(" ")
}

/// Copies everything from `pipe` into `sink` on a thread.
fn collect<R: Read + Send + 'static>(pipe: Option<R>, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// A VMM process started by [`VmCommand::spawn`]; killed when dropped.
pub struct RunningVm {
    child: Child,
    command: String,
    timeout: Duration,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl RunningVm {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `bytes` to the VMM's stdin (needs [`VmCommand::stdin_pipe`]).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("VmCommand::stdin_pipe() was not set");
        stdin.write_all(bytes).expect("write to the VMM's stdin");
        stdin.flush().expect("flush the VMM's stdin");
    }

    /// Serial output so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until the serial output contains `needle`; false on timeout or
    /// if the VMM exits first.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                // One last look: the output may have landed just before the exit.
                thread::sleep(POLL);
                return self.stdout().contains(needle);
            }
            thread::sleep(POLL);
        }
    }

    /// Whether the VMM has exited (its status is collected by [`wait`](Self::wait)).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Like [`wait_for_stdout`](Self::wait_for_stdout) with the run timeout,
    /// failing the test with the captured output if `needle` never shows up.
    pub fn expect_stdout(&mut self, needle: &str) {
        if !self.wait_for_stdout(needle, self.timeout) {
            let out = self.stop();
            panic!("serial output never contained {needle:?}\n{out}");
        }
    }

    /// Number of threads of the VMM process (Linux /proc).
    pub fn thread_count(&self) -> usize {
        let dir = format!("/proc/{}/task", self.pid());
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .count()
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{name}: {e}"));
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the VMM to exit; kills it and fails the test after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.finish(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    let out = self.kill();
                    panic!("VMM still running after {timeout:?}, killed it\n{out}");
                }
                Err(e) => panic!("waiting for {}: {e}", self.command),
            }
        }
    }

    /// Kills the VMM (SIGKILL) and returns what it printed.
    pub fn kill(mut self) -> Output {
        self.stop()
    }

    fn stop(&mut self) -> Output {
        // Already exited is fine: the status below tells.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.command));
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Output {
        for reader in self.readers.drain(..) {
            // A reader only ends at EOF; a panicked reader loses output, nothing more.
            let _ = reader.join();
        }
        Output {
            command: self.command.clone(),
            status: status.code(),
            stdout: String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished VMM run produced.
pub struct Output {
    pub command: String,
    /// Exit status; None if a signal ended the process.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn assert_status(&self, expected: i32) {
        assert_eq!(
            self.status,
            Some(expected),
            "unexpected exit status\n{self}"
        );
    }

    /// The serial output has `needle`, as sent or once terminal escape sequences are taken out
    /// (SeaBIOS's serial console mirrors the screen and moves the cursor in the middle of a
    /// line when the guest writes elsewhere meanwhile).
    pub fn assert_stdout_contains(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle) || without_escapes(&self.stdout).contains(needle),
            "serial output lacks {needle:?}\n{self}"
        );
    }

    pub fn assert_stdout_lacks(&self, needle: &str) {
        assert!(
            !self.stdout.contains(needle),
            "serial output has {needle:?}\n{self}"
        );
    }

    /// The number after `prefix` on the first serial line starting with it.
    pub fn stdout_number(&self, prefix: &str) -> u64 {
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{self}"));
        let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after {prefix:?}\n{self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// A scratch directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rvmm-test-{}-{test}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How long a refusal may take: bad input is refused at start-up, never after a hang.
pub const REFUSE_WITHIN: Duration = Duration::from_secs(10);

/// Runs `program` with `args`, killing it after `limit` (and failing the test); returns its exit
/// code (`None` when killed by a signal), its stderr and how long it ran.
pub fn run_limited<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    limit: Duration,
) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            panic!("{} {shown:?} still runs after {limit:?}", program.display());
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap(), start.elapsed())
}

/// Runs the VMM with `args` and checks the bad-input contract: status 2 within
/// [`REFUSE_WITHIN`], one "rvmm: ..." line containing `needle`, no panic. Returns stderr.
pub fn expect_error<S: AsRef<std::ffi::OsStr>>(args: &[S], needle: &str) -> String {
    let (code, stderr, _) = run_limited(&binary(), args, REFUSE_WITHIN);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert_eq!(
        code,
        Some(2),
        "args {shown:?}: status {code:?}, stderr:\n{stderr}"
    );
    assert!(
        stderr.starts_with("rvmm: "),
        "args {shown:?}: message lacks the 'rvmm: ' prefix:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "args {shown:?}: message lacks {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "args {shown:?}: rvmm panicked:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "args {shown:?}: expected a one-line message:\n{stderr}"
    );
    stderr
}

/// `text` without ANSI escape sequences (ESC [ ... letter), as SeaBIOS's serial console and
/// bootloaders write them.
pub fn without_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}
