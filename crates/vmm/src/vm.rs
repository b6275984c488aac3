//! The VM's state machine, driven by the VMM thread (the event loop): every pause, resume, reset
//! and stop of the vCPUs goes through here, whoever asked for it (the guest through a device,
//! QMP, a signal, the console).
//!
//! ```text
//!   Created --start--> Running <--pause/resume--> Paused (prelaunch with -S)
//!                         |  ^ \--suspend (ACPI S3)--> Suspended
//!                         |  +------wakeup: reset devices, vCPUs at the resume entry--/
//!                         |  reset: pause vCPUs, reset devices, reload, vCPUs reload registers
//!                         v
//!                      Stopping --finish--> Stopped (vCPU threads joined, disks flushed)
//! ```
//!
//! Suspended is QEMU's `suspended` run state: the vCPUs are held, while devices, timers and
//! kvmclock run on (QEMU pauses only the vCPUs too); a wake-up resets the machine except RAM and
//! the firmware's shadow below 1 MiB, as QEMU's `pc_machine_wakeup`.
//!
//! Each vCPU thread answers every request (`vcpu::VcpuHandle`), so when a method here returns,
//! the vCPUs are where it says.

mod hotplug;
mod migration;

pub use hotplug::DeviceDelError;
pub use migration::{Incoming, Migration, MigrationStatus, MigrationTarget};

use crate::control::{Cause, Control, Request, FATAL_STATUS};
use crate::device_manager::pci::PciRoot;
use crate::vcpu::{VcpuError, VcpuHandle, VcpuRequest, VcpuResponse, VcpuState, WakeEntry};
use crate::virtio::VirtioDevices;
use crate::VmmError;
use rvmm_devices::legacy::{AcpiPm, Cmos, WakeReason};
use rvmm_hypervisor::Vm;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where the VM is in its life (QMP's `query-status` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Built; no vCPU has run.
    Created,
    Running,
    /// Every vCPU is out of guest code; `prelaunch` for `-S` before the first `cont`.
    Paused {
        prelaunch: bool,
    },
    /// In ACPI S3: the vCPUs are held until a wake-up.
    Suspended,
    /// The VM is ending with this process exit status.
    Stopping {
        status: i32,
    },
    /// vCPU threads joined.
    Stopped {
        status: i32,
    },
}

/// What the state machine reports as it goes (QMP turns these into its events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEvent {
    Stop,
    Resume,
    Reset(Cause),
    Shutdown(Cause),
    Suspend,
    Wakeup,
    /// MIGRATION with this status (only with the `events` migration capability).
    Migration(&'static str),
}

/// DEVICE_DELETED: a device the guest gave up (hot-unplug) is gone; its `id=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDeleted(pub String);

/// Where [`VmEvent`]s go.
pub trait VmEvents: Send + Sync {
    fn emit(&self, event: VmEvent);
    /// QEMU's DEVICE_DELETED events for a device removed by hot-unplug.
    fn device_deleted(&self, _event: DeviceDeleted) {}
}

/// What a reset does besides the vCPUs: reload the guest's images (QEMU reloads -kernel too).
pub trait Reloader {
    fn reload(&self) -> Result<(), VmmError>;
    /// Where the boot CPU resumes after S3 (nothing is reloaded then); None if the guest left
    /// no way to resume, and the machine boots again instead.
    fn wake_entry(&self) -> Option<WakeEntry>;
}

/// Why a wake-up was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WakeupError {
    /// QEMU's message.
    #[error("Unable to wake up: guest is not in suspended state")]
    NotSuspended,
}

/// The devices the state machine drives itself.
pub struct VmDevices {
    pub virtio: VirtioDevices,
    /// The onboard IDE/AHCI controller's images.
    pub storage: crate::device_manager::storage::Storage,
    pub acpi_pm: Arc<AcpiPm>,
    pub cmos: Arc<Cmos>,
    pub pci: Option<PciRoot>,
}

/// The VM as the VMM thread sees it.
pub struct Vmm {
    state: VmState,
    vcpus: Vec<VcpuHandle>,
    control: Arc<Control>,
    vm: Arc<Vm>,
    devices: VmDevices,
    reloader: Box<dyn Reloader>,
    events: Arc<dyn VmEvents>,
    no_reboot: bool,
    /// `-no-shutdown`: a guest power-off pauses the VM instead of ending it.
    no_shutdown: bool,
    /// Paused by a power-off under `-no-shutdown` (QEMU's `shutdown` run state): `cont` needs a
    /// `system_reset` first.
    powered_off: bool,
    /// kvmclock saved at pause, restored at resume (QEMU's kvmclock_vm_state_change).
    clock: Option<u64>,
    /// The first fatal error, returned by [`Vmm::finish`].
    error: Option<VmmError>,
    migration: Migration,
}

pub struct VmmParts {
    pub vcpus: Vec<VcpuHandle>,
    pub control: Arc<Control>,
    pub vm: Arc<Vm>,
    pub devices: VmDevices,
    pub reloader: Box<dyn Reloader>,
    pub events: Arc<dyn VmEvents>,
    pub no_reboot: bool,
    pub no_shutdown: bool,
    pub snapshot: crate::snapshot::SnapshotContext,
}

impl Vmm {
    pub fn new(p: VmmParts) -> Self {
        Self {
            state: VmState::Created,
            vcpus: p.vcpus,
            control: p.control,
            vm: p.vm,
            devices: p.devices,
            reloader: p.reloader,
            events: p.events,
            no_reboot: p.no_reboot,
            no_shutdown: p.no_shutdown,
            powered_off: false,
            clock: None,
            error: None,
            migration: Migration::new(p.snapshot),
        }
    }

    pub fn state(&self) -> VmState {
        self.state
    }

    /// Paused by a guest power-off under `-no-shutdown` (QMP status `shutdown`).
    pub fn powered_off(&self) -> bool {
        self.powered_off
    }

    /// Whether the event loop should end.
    pub fn stopping(&self) -> bool {
        matches!(
            self.state,
            VmState::Stopping { .. } | VmState::Stopped { .. }
        )
    }

    /// Let the vCPUs run, or (`-S`) hold them in prelaunch until `cont`.
    pub fn start(&mut self, paused: bool) {
        if paused {
            // No STOP event: QEMU's -S starts in prelaunch without one.
            self.clock = self.vm.clock().map_err(|e| tracing::warn!("{e}")).ok();
            self.devices.virtio.pause();
            self.state = VmState::Paused { prelaunch: true };
            return;
        }
        self.state = VmState::Paused { prelaunch: false };
        if let Err(e) = self.release() {
            self.fail(e);
        }
        self.state = VmState::Running;
    }

    /// Send `req` to every vCPU, then collect every answer. A vCPU that cannot answer is fatal.
    fn broadcast(
        &mut self,
        req: impl Fn() -> VcpuRequest,
        what: &'static str,
    ) -> Result<Vec<VcpuResponse>, VcpuError> {
        for v in &self.vcpus {
            v.send(req())?;
        }
        self.vcpus.iter().map(|v| v.response(what)).collect()
    }

    /// Take every vCPU out of guest code.
    fn hold(&mut self) -> Result<(), VcpuError> {
        self.control.attention().store(true, Ordering::Release);
        self.broadcast(|| VcpuRequest::Pause, "pause").map(|_| ())
    }

    /// Let every vCPU run again.
    fn release(&mut self) -> Result<(), VcpuError> {
        self.control.attention().store(false, Ordering::Release);
        self.broadcast(|| VcpuRequest::Resume, "resume").map(|_| ())
    }

    /// QMP `stop`: pause a running VM (STOP before returning, as QEMU). Returns false if it was
    /// not running.
    pub fn pause(&mut self) -> bool {
        if self.in_incoming() {
            // QEMU: `stop` in `inmigrate` keeps the guest paused once restored.
            self.set_autostart(false);
            return false;
        }
        if self.state != VmState::Running {
            return false;
        }
        if let Err(e) = self.hold() {
            self.fail(e);
            return false;
        }
        // vCPUs parked: no new notification can come; hold the device workers.
        self.devices.virtio.pause();
        self.clock = self
            .vm
            .clock()
            .map_err(|e| tracing::warn!("pause: {e}"))
            .ok();
        self.state = VmState::Paused { prelaunch: false };
        self.events.emit(VmEvent::Stop);
        tracing::debug!(clock = ?self.clock, "VM paused");
        true
    }

    /// QMP `cont`: RESUME, then the guest runs again exactly where it stopped. Returns false if
    /// it was not paused.
    pub fn resume(&mut self) -> bool {
        if self.in_incoming() {
            // QEMU: `cont` in `inmigrate` starts the guest once restored.
            self.set_autostart(true);
            return false;
        }
        if !matches!(self.state, VmState::Paused { .. }) || self.powered_off {
            return false;
        }
        self.leave_postmigrate();
        // RESUME before any guest code runs again (QEMU's vm_prepare_start).
        self.events.emit(VmEvent::Resume);
        if let Some(ns) = self.clock.take() {
            if let Err(e) = self.vm.set_clock(ns) {
                tracing::warn!("resume: {e}");
            }
        }
        // Devices first, so they catch up before the guest runs again.
        self.devices.virtio.resume();
        if let Err(e) = self.release() {
            self.fail(e);
            return false;
        }
        self.state = VmState::Running;
        tracing::debug!("VM resumed");
        true
    }

    /// Every vCPU's registers, taken while the vCPUs are out of guest code: a running VM is held
    /// for the moment it takes, without STOP/RESUME (as QEMU's `info registers`).
    pub fn registers(&mut self) -> Result<Vec<VcpuState>, VmmError> {
        match self.state {
            VmState::Running => {
                self.hold()?;
                let states = self.save_state();
                let released = self.release();
                let states = states?;
                released?;
                Ok(states)
            }
            VmState::Paused { .. } | VmState::Suspended | VmState::Created => {
                Ok(self.save_state()?)
            }
            VmState::Stopping { .. } | VmState::Stopped { .. } => Err(VmmError::ShuttingDown),
        }
    }

    /// Every vCPU's registers (the vCPUs must be out of guest code).
    fn save_state(&mut self) -> Result<Vec<VcpuState>, VcpuError> {
        let answers = self.broadcast(|| VcpuRequest::SaveState, "save-state")?;
        answers
            .into_iter()
            .zip(0u32..)
            .map(|(a, vcpu)| match a {
                VcpuResponse::State(state) => state.map(|s| *s),
                _ => Err(VcpuError::Gone { vcpu }),
            })
            .collect()
    }

    /// System reset: devices to their power-on state, images reloaded, vCPUs at the entry again;
    /// or a shutdown under `-no-reboot`, as QEMU does (keeping the cause).
    pub fn reset(&mut self, cause: Cause) {
        if self.no_reboot {
            return self.shutdown(cause);
        }
        if self.stopping() {
            return;
        }
        let was = self.state;
        let result = self.hold().map_err(VmmError::from).and_then(|()| {
            tracing::debug!("system reset");
            self.reset_devices()?;
            self.reloader.reload()?;
            self.reset_vcpus(|| VcpuRequest::Reset)
        });
        if let Err(e) = result {
            return self.fail(e);
        }
        self.events.emit(VmEvent::Reset(cause));
        // QEMU: a reset out of the `shutdown` state leaves the VM in prelaunch, for `cont`.
        if std::mem::take(&mut self.powered_off) {
            self.state = VmState::Paused { prelaunch: true };
            return;
        }
        // A paused VM stays paused (QEMU's system_reset keeps the run state); a suspended one
        // runs, as a reset button wakes a sleeping PC.
        if matches!(was, VmState::Running | VmState::Suspended) {
            self.state = VmState::Running;
            if let Err(e) = self.release() {
                self.fail(e);
            }
        }
    }

    /// The devices' part of a system reset (RAM and images untouched).
    fn reset_devices(&mut self) -> Result<(), VmmError> {
        self.devices.acpi_pm.reset();
        self.devices.cmos.reset();
        self.devices.virtio.reset();
        if let Some(pci) = &self.devices.pci {
            pci.reset()?;
        }
        Ok(())
    }

    /// Every vCPU loads the registers `req` asks for (the vCPUs are held).
    fn reset_vcpus(&mut self, req: impl Fn() -> VcpuRequest) -> Result<(), VmmError> {
        for answer in self.broadcast(req, "reset")? {
            if let VcpuResponse::ResetDone(r) = answer {
                r?;
            }
        }
        Ok(())
    }

    /// The guest entered ACPI S3: hold the vCPUs, tell firmware to resume at the next start
    /// (CMOS shutdown status 0xFE), report SUSPEND (QEMU's `qemu_system_suspend`).
    pub fn suspend(&mut self) {
        if self.state != VmState::Running {
            return;
        }
        if let Err(e) = self.hold() {
            return self.fail(e);
        }
        self.devices.cmos.suspend();
        self.state = VmState::Suspended;
        tracing::debug!("VM suspended");
        self.events.emit(VmEvent::Suspend);
    }

    /// Wake a suspended VM (QEMU's `qemu_system_wakeup_request` and `pc_machine_wakeup`): an
    /// RTC alarm counts only if the guest set RTC_EN. The machine is reset but for RAM, the
    /// PM1 status says why it woke, the boot CPU starts at the resume entry, then WAKEUP.
    pub fn wakeup(&mut self, reason: WakeReason) -> Result<(), WakeupError> {
        if self.state != VmState::Suspended {
            return Err(WakeupError::NotSuspended);
        }
        if reason == WakeReason::Rtc && !self.devices.acpi_pm.rtc_wake_enabled() {
            return Ok(());
        }
        tracing::debug!(?reason, "VM wakes up");
        let Some(entry) = self.reloader.wake_entry() else {
            // Nowhere to resume: the machine boots again, as SeaBIOS does without a waking
            // vector.
            self.events.emit(VmEvent::Wakeup);
            self.reset(Cause::GuestReset);
            return Ok(());
        };
        let result = self
            .reset_devices()
            .and_then(|()| self.reset_vcpus(|| VcpuRequest::Wake(entry)));
        if let Err(e) = result {
            self.fail(e);
            return Ok(());
        }
        self.devices.acpi_pm.woke(reason);
        self.state = VmState::Running;
        if let Err(e) = self.release() {
            self.fail(e);
            return Ok(());
        }
        self.events.emit(VmEvent::Wakeup);
        Ok(())
    }

    /// End the VM with status 0 and a SHUTDOWN event for `cause`.
    /// Under `-no-shutdown` a shutdown the guest or an error caused pauses instead (SHUTDOWN,
    /// then STOP, as QEMU's `shutdown_action=pause`); QMP `quit` and signals always end it.
    pub fn shutdown(&mut self, cause: Cause) {
        if self.stopping() {
            return;
        }
        self.events.emit(VmEvent::Shutdown(cause));
        let ends = matches!(cause, Cause::HostQmpQuit | Cause::HostSignal);
        if self.no_shutdown && !ends {
            if self.state == VmState::Running && self.pause() {
                self.powered_off = true;
                return;
            }
            if matches!(self.state, VmState::Paused { .. }) {
                self.powered_off = true;
                return;
            }
        }
        self.state = VmState::Stopping { status: 0 };
    }

    /// End the VM with `status` and no event (isa-debug-exit, rvmm errors; QEMU emits none).
    pub fn exit(&mut self, status: i32) {
        if !self.stopping() {
            self.state = VmState::Stopping { status };
        }
    }

    /// Stop on an error; the first one is what [`finish`](Self::finish) returns.
    fn fail(&mut self, e: impl Into<VmmError>) {
        let e = e.into();
        tracing::debug!("VM failed: {e}");
        self.error.get_or_insert(e);
        self.exit(FATAL_STATUS);
    }

    /// Carry out what devices and vCPUs asked for.
    pub fn handle_requests(&mut self) {
        for req in self.control.take() {
            match req {
                Request::Exit(status) => self.exit(status),
                Request::Shutdown(cause) => self.shutdown(cause),
                Request::Reset(cause) => self.reset(cause),
                Request::Suspend => self.suspend(),
                // An alarm while running or already woken changes nothing.
                Request::Wakeup(reason) => {
                    let _ = self.wakeup(reason);
                }
                Request::Fatal(e) => self.fail(e),
                Request::PciEject(bus) => self.pci_eject(bus),
            }
        }
        // A request that needed nothing (e.g. a reset while already stopping) must not leave the
        // vCPUs waiting on the attention flag.
        if self.state == VmState::Running && self.control.attention().load(Ordering::Acquire) {
            let settle = self.hold().and_then(|()| self.release());
            if let Err(e) = settle {
                self.fail(e);
            }
        }
    }

    /// Stop and join every vCPU thread, flush the disks; the exit status, or the error that
    /// stopped the VM.
    pub fn finish(&mut self) -> Result<i32, VmmError> {
        let status = match self.state {
            VmState::Stopping { status } | VmState::Stopped { status } => status,
            _ => 0,
        };
        self.control.attention().store(true, Ordering::Release);
        for v in &self.vcpus {
            // A thread that is gone needs no stop.
            let _ = v.send(VcpuRequest::Stop);
        }
        for v in &mut self.vcpus {
            v.join();
        }
        tracing::debug!("vCPU threads joined");
        // Every clean stop (power-off, -no-reboot reset, signals, QMP quit) ends here.
        self.devices.virtio.shutdown();
        self.devices.storage.flush();
        self.state = VmState::Stopped { status };
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(status),
        }
    }
}
