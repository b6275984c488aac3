//! QMP `migrate` to a file and `-incoming` from one (docs/SNAPSHOT.md): the VM state machine's
//! part of a snapshot. The work is in [`crate::snapshot`]; here is when the vCPUs stop, what is
//! reported (`query-migrate`, the MIGRATION events when the `events` capability is on) and
//! what state the VM is left in (QEMU 7.2: the source stays paused in `postmigrate`; the
//! destination runs unless `-S`).

use super::{VmEvent, VmState, Vmm};
use crate::snapshot::socket::{self, Listener, SocketAddr};
use crate::snapshot::{self, SaveStats, SaveTarget, SnapshotContext, SnapshotError};
use crate::vcpu::{VcpuError, VcpuRequest, VcpuResponse};
use crate::VmmError;
use rvmm_hypervisor::VcpuSnapshot;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// QEMU's MigrationStatus values rvmm goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationStatus {
    #[default]
    None,
    Setup,
    Active,
    Completed,
    Failed,
}

impl MigrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Setup => "setup",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// Where an incoming migration stands.
pub enum Incoming {
    /// `-incoming defer`: waiting for `migrate-incoming`.
    Deferred,
    /// Restoring from this file (or stream).
    From(MigrationTarget),
    /// `unix:`/`tcp:`: listening for the saving side's connection (the event loop polls
    /// [`Vmm::incoming_fd`]).
    Listening,
    /// `-incoming file:PATH` whose state was read and whose RAM was mapped while the VM was
    /// built (before KVM's memory slots existed: remapping RAM behind a slot costs KVM a walk
    /// over every page of it).
    Mapped(PathBuf, Box<crate::snapshot::SnapshotState>),
}

/// Where a snapshot goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationTarget {
    /// `file:PATH`: the state file PATH and RAM in PATH.mem.
    File(PathBuf),
    /// `exec:CMD`: one stream to CMD's stdin (save) or from its stdout (restore), `sh -c CMD`.
    Exec(String),
    /// `unix:PATH` / `tcp:HOST:PORT`: the stream over a socket (the restoring side listens).
    Socket(SocketAddr),
}

/// `file:PATH`, `exec:CMD`, `unix:PATH` or `tcp:HOST:PORT`; the QMP error text for any other
/// URI.
pub fn parse_uri(uri: &str) -> Result<MigrationTarget, String> {
    match uri.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(MigrationTarget::File(path.into())),
        Some(("exec", cmd)) if !cmd.trim().is_empty() => Ok(MigrationTarget::Exec(cmd.into())),
        Some(("unix", path)) if !path.is_empty() => {
            Ok(MigrationTarget::Socket(SocketAddr::Unix(path.into())))
        }
        Some(("tcp", addr)) if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => {
            Ok(MigrationTarget::Socket(SocketAddr::Tcp(addr.into())))
        }
        Some(("fd" | "rdma", _)) => Err(format!(
            "Migration URI '{uri}': rvmm saves and restores only 'file:PATH' (the guest's RAM goes to PATH.mem next to it), 'exec:CMD', 'unix:PATH' and 'tcp:HOST:PORT'"
        )),
        _ => Err(format!("unknown migration protocol: {uri}")),
    }
}

impl std::fmt::Display for MigrationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Exec(c) => write!(f, "exec:{c}"),
            Self::Socket(a) => a.fmt(f),
        }
    }
}

/// A running `exec:` command and rvmm's end of its stdin (save) or stdout (restore).
struct ExecCommand {
    stream: Option<std::fs::File>,
    child: ExecChild,
}

enum ExecChild {
    /// Started here (`-sandbox off`).
    Direct(std::process::Child),
    /// Started by the sandbox's launcher (a child of a filtered thread would inherit its
    /// filter, docs/SANDBOX.md).
    Launched(rvmm_sandbox::launcher::Waiter),
}

fn spawn_exec(cmd: &str, save: bool) -> Result<ExecCommand, SnapshotError> {
    use std::process::{Command, Stdio};
    let io = |source| SnapshotError::Io {
        path: format!("exec:{cmd}"),
        source,
    };
    if rvmm_sandbox::mode() != rvmm_sandbox::Mode::Off {
        use rvmm_sandbox::launcher::{launch, Stream};
        let (read, write) = pipe().map_err(io)?;
        let (ours, theirs, stream) = if save {
            (write, read, Stream::Stdin)
        } else {
            (read, write, Stream::Stdout)
        };
        let (launched, waiter) = launch(cmd, stream, theirs).map_err(io)?;
        tracing::debug!("exec:{cmd}: pid {} (launcher)", launched.pid);
        return Ok(ExecCommand {
            stream: Some(std::fs::File::from(ours)),
            child: ExecChild::Launched(waiter),
        });
    }
    let (stdin, stdout) = if save {
        (Stdio::piped(), Stdio::inherit())
    } else {
        (Stdio::null(), Stdio::piped())
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(stdin)
        .stdout(stdout)
        .spawn()
        .map_err(io)?;
    let stream = if save {
        child
            .stdin
            .take()
            .map(|s| std::fs::File::from(std::os::fd::OwnedFd::from(s)))
    } else {
        child
            .stdout
            .take()
            .map(|s| std::fs::File::from(std::os::fd::OwnedFd::from(s)))
    };
    Ok(ExecCommand {
        stream,
        child: ExecChild::Direct(child),
    })
}

fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new fds nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

fn exec_status(cmd: &str, exec: ExecCommand) -> Result<(), SnapshotError> {
    drop(exec.stream);
    let status = match exec.child {
        ExecChild::Direct(mut child) => child.wait(),
        ExecChild::Launched(waiter) => waiter.wait(),
    }
    .map_err(|source| SnapshotError::Io {
        path: format!("exec:{cmd}"),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(SnapshotError::Exec {
        cmd: cmd.into(),
        problem: status.to_string(),
    })
}

/// The migration side of the VM.
pub struct Migration {
    ctx: SnapshotContext,
    status: MigrationStatus,
    /// `migrate-set-capabilities` `events`: MIGRATION events are sent.
    events: bool,
    /// The VM stopped for a completed migration (query-status `postmigrate`).
    postmigrate: bool,
    pending: Option<MigrationTarget>,
    incoming: Option<Incoming>,
    /// The listener of a `unix:`/`tcp:` incoming migration, until its connection comes.
    listener: Option<Listener>,
    /// That connection, for the restore to read.
    accepted: Option<Box<dyn Read>>,
    /// Run after the incoming migration (no `-S`, or `cont` while in `inmigrate`).
    autostart: bool,
    error: Option<String>,
    stats: SaveStats,
    total_ms: u64,
    downtime_ms: u64,
}

impl Migration {
    pub fn new(ctx: SnapshotContext) -> Self {
        Self {
            ctx,
            status: MigrationStatus::None,
            events: false,
            postmigrate: false,
            pending: None,
            incoming: None,
            listener: None,
            accepted: None,
            autostart: true,
            error: None,
            stats: SaveStats::default(),
            total_ms: 0,
            downtime_ms: 0,
        }
    }
}

/// What `query-migrate` reports.
pub struct MigrationInfo {
    pub status: MigrationStatus,
    pub error: Option<String>,
    pub stats: SaveStats,
    pub total_ms: u64,
    pub downtime_ms: u64,
}

fn vcpu_err(e: VcpuError) -> SnapshotError {
    SnapshotError::Vcpu(e.to_string())
}

impl Vmm {
    fn set_migration_status(&mut self, status: MigrationStatus) {
        self.migration.status = status;
        if self.migration.events {
            self.events.emit(VmEvent::Migration(status.as_str()));
        }
    }

    /// `migrate-set-capabilities` `events`.
    pub fn set_migration_events(&mut self, on: bool) {
        self.migration.events = on;
    }

    pub fn migration_events(&self) -> bool {
        self.migration.events
    }

    pub fn migration_info(&self) -> MigrationInfo {
        let m = &self.migration;
        MigrationInfo {
            status: m.status,
            error: m.error.clone(),
            stats: m.stats,
            total_ms: m.total_ms,
            downtime_ms: m.downtime_ms,
        }
    }

    /// QEMU's `inmigrate` run state: waiting for or doing an incoming migration.
    pub fn in_incoming(&self) -> bool {
        self.migration.incoming.is_some()
    }

    pub fn postmigrate(&self) -> bool {
        self.migration.postmigrate
    }

    /// `cont` / `stop` while in `inmigrate`: whether the guest runs once restored.
    pub fn set_autostart(&mut self, on: bool) {
        self.migration.autostart = on;
    }

    /// QMP `migrate`: check what can be checked now and queue the save, which
    /// [`run_pending`](Self::run_pending) does once the reply is sent (QEMU replies first too).
    pub fn migrate(&mut self, uri: &str) -> Result<(), String> {
        let target = parse_uri(uri)?;
        if self.in_incoming() {
            return Err("Guest is waiting for an incoming migration".into());
        }
        if matches!(
            self.migration.status,
            MigrationStatus::Setup | MigrationStatus::Active
        ) || self.migration.pending.is_some()
        {
            return Err("There's a migration process in progress".into());
        }
        match self.state {
            VmState::Running | VmState::Paused { .. } | VmState::Suspended => {}
            VmState::Created | VmState::Stopping { .. } | VmState::Stopped { .. } => {
                return Err("The VM is not running".into())
            }
        }
        self.migration
            .ctx
            .check_migratable()
            .map_err(|e| e.to_string())?;
        self.migration.error = None;
        self.migration.pending = Some(target);
        self.set_migration_status(MigrationStatus::Setup);
        Ok(())
    }

    /// Carry out a queued `migrate` or `migrate-incoming` (called after the command's reply).
    pub fn run_pending(&mut self) {
        self.run_pending_incoming();
        let Some(target) = self.migration.pending.take() else {
            return;
        };
        let start = Instant::now();
        self.set_migration_status(MigrationStatus::Active);
        let was_running = self.state == VmState::Running;
        // STOP comes with the pause, as in QEMU's completion phase.
        if was_running && !self.pause() {
            return self.migration_failed("the VM could not be paused".into(), false);
        }
        let stopped = Instant::now();
        match self.save_snapshot(&target) {
            Ok(stats) => {
                // Disks too: what the guest wrote is on them before `completed`.
                self.devices.virtio.flush();
                self.devices.storage.flush();
                self.migration.stats = stats;
                self.migration.total_ms = start.elapsed().as_millis() as u64;
                self.migration.downtime_ms = stopped.elapsed().as_millis() as u64;
                self.migration.postmigrate = true;
                tracing::debug!(?target, ?stats, "snapshot saved");
                self.set_migration_status(MigrationStatus::Completed);
            }
            Err(e) => self.migration_failed(e.to_string(), was_running),
        }
    }

    fn migration_failed(&mut self, error: String, resume: bool) {
        tracing::warn!("migration failed: {error}");
        self.migration.error = Some(error);
        self.set_migration_status(MigrationStatus::Failed);
        if resume {
            // QEMU lets the source run on after a failed migration.
            self.resume();
        }
    }

    /// Leaving `postmigrate` (`cont` after a completed migration runs the source again).
    pub(super) fn leave_postmigrate(&mut self) {
        self.migration.postmigrate = false;
    }

    fn save_snapshot(&mut self, target: &MigrationTarget) -> Result<SaveStats, SnapshotError> {
        let suspended = self.state == VmState::Suspended;
        let vcpus = self.vcpu_snapshots()?;
        let clock = match self.clock {
            Some(c) => c,
            None => self
                .vm
                .clock()
                .map_err(|source| SnapshotError::Hypervisor {
                    what: "kvmclock".into(),
                    source,
                })?,
        };
        let ctx = &self.migration.ctx;
        match target {
            MigrationTarget::File(path) => {
                snapshot::save(ctx, SaveTarget::File(path), clock, vcpus, suspended)
            }
            MigrationTarget::Exec(cmd) => {
                let mut child = spawn_exec(cmd, true)?;
                let what = format!("exec:{cmd}");
                let saved = match child.stream.take() {
                    Some(mut stdin) => snapshot::save(
                        ctx,
                        SaveTarget::Stream(&mut stdin, &what),
                        clock,
                        vcpus,
                        suspended,
                    ),
                    None => Err(SnapshotError::Exec {
                        cmd: cmd.clone(),
                        problem: "no stdin".into(),
                    }),
                };
                // stdin is closed here: the command sees the end of the stream.
                let status = exec_status(cmd, child);
                let stats = saved?;
                status.map(|()| stats)
            }
            MigrationTarget::Socket(addr) => {
                let what = addr.to_string();
                let mut out = socket::connect(addr)?;
                // The stream ends (the socket closes) when `out` goes.
                snapshot::save(
                    ctx,
                    SaveTarget::Stream(&mut out, &what),
                    clock,
                    vcpus,
                    suspended,
                )
            }
        }
    }

    fn vcpu_snapshots(&mut self) -> Result<Vec<VcpuSnapshot>, SnapshotError> {
        let answers = self
            .broadcast(|| VcpuRequest::Snapshot, "snapshot")
            .map_err(vcpu_err)?;
        answers
            .into_iter()
            .zip(0u32..)
            .map(|(a, vcpu)| match a {
                VcpuResponse::Snapshot(s) => s.map(|s| *s).map_err(vcpu_err),
                _ => Err(vcpu_err(VcpuError::Gone { vcpu })),
            })
            .collect()
    }

    /// Wait in `inmigrate` for an incoming migration: `-incoming defer` waits for
    /// `migrate-incoming`, `-incoming file:PATH` restores at once. `autostart`: no `-S`.
    pub fn start_incoming(&mut self, incoming: Incoming, autostart: bool) -> Result<(), VmmError> {
        self.migration.autostart = autostart;
        match incoming {
            Incoming::Deferred => {
                self.migration.incoming = Some(Incoming::Deferred);
                Ok(())
            }
            Incoming::From(MigrationTarget::Socket(addr)) => {
                self.listen(&addr).map_err(VmmError::Incoming)
            }
            Incoming::From(target) => {
                self.migration.incoming = Some(Incoming::From(target.clone()));
                self.incoming(&target, None)
            }
            Incoming::Listening => Ok(()),
            Incoming::Mapped(path, state) => {
                let target = MigrationTarget::File(path);
                self.migration.incoming = Some(Incoming::From(target.clone()));
                self.incoming(&target, Some(*state))
            }
        }
    }

    /// QMP `migrate-incoming`: only while `-incoming defer` waits.
    pub fn migrate_incoming(&mut self, uri: &str) -> Result<(), String> {
        if !matches!(self.migration.incoming, Some(Incoming::Deferred)) {
            return Err("The incoming migration has already been started".into());
        }
        let target = parse_uri(uri)?;
        if let MigrationTarget::Socket(addr) = &target {
            return self.listen(addr).map_err(|e| e.to_string());
        }
        self.migration.incoming = Some(Incoming::From(target));
        Ok(())
    }

    /// Listen for a `unix:`/`tcp:` incoming migration; the event loop takes it from here.
    fn listen(&mut self, addr: &SocketAddr) -> Result<(), SnapshotError> {
        self.migration.listener = Some(Listener::bind(addr)?);
        self.migration.incoming = Some(Incoming::Listening);
        Ok(())
    }

    /// The listener the event loop polls while a `unix:`/`tcp:` incoming migration waits.
    pub fn incoming_fd(&self) -> Option<std::os::fd::RawFd> {
        self.migration.listener.as_ref().map(Listener::fd)
    }

    /// The listener is readable: take the connection and restore from it (a failure stops
    /// rvmm, as a failed incoming migration ends QEMU).
    pub fn accept_incoming(&mut self) {
        let Some(listener) = self.migration.listener.as_ref() else {
            return;
        };
        let addr = listener.addr().clone();
        let stream = match listener.accept() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                self.migration.listener = None;
                let e = VmmError::Incoming(e);
                tracing::error!("{e}");
                return self.fail(e);
            }
        };
        // One connection: the listener (and a unix: socket file) goes.
        self.migration.listener = None;
        self.migration.accepted = Some(stream);
        let target = MigrationTarget::Socket(addr);
        self.migration.incoming = Some(Incoming::From(target.clone()));
        if let Err(e) = self.incoming(&target, None) {
            tracing::error!("{e}");
            self.fail(e);
        }
    }

    /// A `migrate-incoming` after its reply: a failure stops rvmm, as QEMU exits when an
    /// incoming migration fails.
    fn run_pending_incoming(&mut self) {
        let Some(Incoming::From(target)) = &self.migration.incoming else {
            return;
        };
        let target = target.clone();
        if self.state != VmState::Created {
            return;
        }
        if let Err(e) = self.incoming(&target, None) {
            tracing::error!("{e}");
            self.fail(e);
        }
    }

    /// Restore from `path` into this freshly built VM, then run it (or hold it under `-S`).
    fn incoming(
        &mut self,
        target: &MigrationTarget,
        mapped: Option<crate::snapshot::SnapshotState>,
    ) -> Result<(), VmmError> {
        let start = Instant::now();
        self.set_migration_status(MigrationStatus::Active);
        let suspended = match self.restore_snapshot(target, mapped) {
            Ok(suspended) => suspended,
            Err(e) => {
                self.migration.error = Some(e.to_string());
                self.set_migration_status(MigrationStatus::Failed);
                return Err(VmmError::Incoming(e));
            }
        };
        self.migration.incoming = None;
        // RAM is now a private file mapping (file:), whose untouched pages are not zero; a
        // stream was copied into anonymous RAM.
        self.migration.ctx.file_backed = matches!(target, MigrationTarget::File(_));
        self.migration.total_ms = start.elapsed().as_millis() as u64;
        self.set_migration_status(MigrationStatus::Completed);
        tracing::debug!(
            ?target,
            us = start.elapsed().as_micros() as u64,
            "snapshot restored"
        );
        if suspended {
            // A guest saved in S3 sleeps on, with or without -S, until a wake-up event (QEMU
            // 7.2 would run it; later QEMUs keep it suspended too).
            self.start(true);
            self.state = VmState::Suspended;
        } else if self.migration.autostart {
            // QEMU's incoming side reports RESUME as the guest starts.
            self.events.emit(VmEvent::Resume);
            self.start(false);
        } else {
            // -S: `paused` (not `prelaunch`), as QEMU after an incoming migration.
            self.start(true);
            self.state = VmState::Paused { prelaunch: false };
        }
        Ok(())
    }

    /// Returns whether the guest was saved suspended (S3).
    fn restore_snapshot(
        &mut self,
        target: &MigrationTarget,
        mapped: Option<crate::snapshot::SnapshotState>,
    ) -> Result<bool, SnapshotError> {
        let ctx = &self.migration.ctx;
        let restored = match target {
            MigrationTarget::File(path) => {
                let is_mapped = mapped.is_some();
                let state = match mapped {
                    Some(s) => s,
                    None => snapshot::read_state(path)?,
                };
                snapshot::check(ctx, path, &state)?;
                snapshot::restore_machine(ctx, path, state, self.vcpus.len(), is_mapped)?
            }
            MigrationTarget::Exec(cmd) => {
                let what = format!("exec:{cmd}");
                let mut child = spawn_exec(cmd, false)?;
                let result = match child.stream.take() {
                    Some(mut out) => {
                        snapshot::restore_stream(ctx, &mut out, &what, self.vcpus.len())
                    }
                    None => Err(SnapshotError::Exec {
                        cmd: cmd.clone(),
                        problem: "no stdout".into(),
                    }),
                };
                let status = exec_status(cmd, child);
                let restored = result?;
                status?;
                restored
            }
            MigrationTarget::Socket(addr) => {
                let what = addr.to_string();
                let mut input =
                    self.migration
                        .accepted
                        .take()
                        .ok_or_else(|| SnapshotError::Io {
                            path: what.clone(),
                            source: std::io::Error::other("no connection"),
                        })?;
                snapshot::restore_stream(ctx, &mut input, &what, self.vcpus.len())?
            }
        };
        for (v, s) in self.vcpus.iter().zip(restored.vcpus) {
            v.send(VcpuRequest::Restore(Box::new(s)))
                .map_err(vcpu_err)?;
        }
        for v in &self.vcpus {
            match v.response("restore").map_err(vcpu_err)? {
                VcpuResponse::ResetDone(r) => r.map_err(vcpu_err)?,
                _ => return Err(vcpu_err(VcpuError::Gone { vcpu: 0 })),
            }
        }
        // Time stands still across the snapshot, as across a pause.
        self.vm
            .set_clock(restored.clock)
            .map_err(|source| SnapshotError::Hypervisor {
                what: "kvmclock".into(),
                source,
            })?;
        Ok(restored.suspended)
    }
}
