//! Snapshots: the VM's whole state in a state file plus guest RAM in `PATH.mem`, written by QMP
//! `migrate` and read by `-incoming` (docs/SNAPSHOT.md).
//!
//! The state is one serde struct, [`SnapshotState`]: a header that says which machine it is
//! for (checked field by field against the VM being restored, so a mismatch names what
//! differs), the KVM state of the VM and of each vCPU, each device's state by name, and where
//! RAM sits in the memory file. Devices join through [`DeviceStates`]: a device on a bus with
//! no registered state makes a snapshot fail, naming it.

pub mod format;
pub mod memory;
pub mod pci;
pub mod socket;
pub mod stream;

use memory::{MemoryFileError, MemoryRecord};
use rvmm_devices::{DeviceState, MmioBus, PioBus, StateError};
use rvmm_hypervisor::{VcpuSnapshot, VmSnapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use vm_memory::GuestMemoryMmap;

/// Errors saving or restoring a snapshot. Each names the file or what differs.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("State blocked by non-migratable device '{0}'")]
    NotMigratable(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: String,
        #[source]
        source: format::FormatError,
    },
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    #[error("{path}: made by rvmm {found}, this is rvmm {ours}")]
    RvmmVersion {
        path: String,
        found: String,
        ours: String,
    },
    #[error("{path}: the snapshot is of another machine: {what} is {saved} there, {ours} here")]
    Mismatch {
        path: String,
        what: &'static str,
        saved: String,
        ours: String,
    },
    #[error("{path}: {count} vCPU states for {ours} vCPUs")]
    VcpuCount {
        path: String,
        count: usize,
        ours: usize,
    },
    #[error("{path}: no state for device '{device}'")]
    MissingDevice { path: String, device: String },
    #[error("{path}: state for device '{device}', which this VM does not have")]
    ExtraDevice { path: String, device: String },
    #[error("device '{device}': {source}")]
    Device {
        device: String,
        #[source]
        source: StateError,
    },
    #[error("{0}")]
    Vcpu(String),
    #[error("exec:{cmd}: {problem}")]
    Exec { cmd: String, problem: String },
    #[error("{what}: RAM record at {gpa:#x}, {len:#x} bytes, lies outside guest RAM")]
    RamRecord { what: String, gpa: u64, len: u64 },
    #[error("{what}: {source}")]
    Hypervisor {
        what: String,
        #[source]
        source: rvmm_hypervisor::HvError,
    },
}

/// What must be the same on the command line of the VM that saves and the VM that restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineIdentity {
    /// `-M` (microvm, pc, q35).
    pub machine: String,
    pub memory_bytes: u64,
    /// `-smp` with its topology.
    pub smp: String,
    /// `-cpu` as parsed (the guest's CPUID comes from it).
    pub cpu: String,
    /// `kernel-irqchip=` and `pit=`.
    pub irqchip: String,
    /// Every device on the buses, by name, sorted.
    pub devices: Vec<String>,
}

impl MachineIdentity {
    /// FNV-1a of the identity, for the header (a quick equality check; the fields say what
    /// differs).
    pub fn digest(&self) -> u64 {
        format::fnv1a(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// The first field that differs from `ours`: (name, saved, ours).
    fn difference(&self, ours: &Self) -> Option<(&'static str, String, String)> {
        let fields = [
            ("the machine type (-M)", &self.machine, &ours.machine),
            ("the vCPU topology (-smp)", &self.smp, &ours.smp),
            ("the CPU model (-cpu)", &self.cpu, &ours.cpu),
            ("the interrupt controller", &self.irqchip, &ours.irqchip),
        ];
        for (what, saved, here) in fields {
            if saved != here {
                return Some((what, saved.clone(), here.clone()));
            }
        }
        if self.memory_bytes != ours.memory_bytes {
            return Some((
                "the RAM size (-m)",
                format!("{} MiB", self.memory_bytes >> 20),
                format!("{} MiB", ours.memory_bytes >> 20),
            ));
        }
        if self.devices != ours.devices {
            return Some((
                "the device list",
                self.devices.join(", "),
                ours.devices.join(", "),
            ));
        }
        None
    }
}

/// The header of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub rvmm_version: String,
    pub machine: MachineIdentity,
    /// [`MachineIdentity::digest`] of `machine`.
    pub digest: u64,
    pub memory: MemoryRecord,
}

/// Everything in the state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotState {
    pub header: SnapshotHeader,
    pub vm: VmSnapshot,
    pub vcpus: Vec<VcpuSnapshot>,
    /// Each registered device's state, by its bus name.
    pub devices: BTreeMap<String, serde_json::Value>,
    /// The guest was in ACPI S3 (QEMU's `suspended` run state): it stays there once restored,
    /// until a wake-up event.
    #[serde(default)]
    pub suspended: bool,
}

/// What a restore hands the VM: the vCPU states for the vCPU threads, the kvmclock, and whether
/// the guest was suspended.
pub struct Restored {
    pub vcpus: Vec<VcpuSnapshot>,
    pub clock: u64,
    pub suspended: bool,
}

enum Entry {
    Saved(Arc<dyn DeviceState>),
    /// Nothing to save: the device keeps no state between accesses.
    Stateless,
    /// Cannot be saved yet, though not on a bus under this name (virtio transports).
    Blocked,
}

/// The devices' state handlers, by bus name; filled by the attach functions.
pub struct DeviceStates {
    entries: Mutex<BTreeMap<String, Entry>>,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
}

impl DeviceStates {
    pub fn new(pio: Arc<PioBus>, mmio: Arc<MmioBus>) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            pio,
            mmio,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Save and restore `state` as device `name` (the name it has on its bus).
    pub fn register(&self, name: &str, state: Arc<dyn DeviceState>) {
        self.lock().insert(name.into(), Entry::Saved(state));
    }

    /// Device `name` keeps no state worth saving.
    pub fn register_stateless(&self, name: &str) {
        self.lock().insert(name.into(), Entry::Stateless);
    }

    /// Device `name` cannot be saved: a snapshot fails naming it.
    pub fn block(&self, name: &str) {
        self.lock().insert(name.into(), Entry::Blocked);
    }

    /// The names of every device registered on the buses, sorted, without repeats: mapped or
    /// not (a BAR the firmware has not programmed yet in the restoring VM is the device the
    /// snapshot's firmware programmed).
    pub fn bus_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pio
            .names()
            .into_iter()
            .chain(self.mmio.names())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The first device that cannot be saved, if any.
    pub fn blocker(&self) -> Option<String> {
        let entries = self.lock();
        if let Some((name, _)) = entries.iter().find(|(_, e)| matches!(e, Entry::Blocked)) {
            return Some(name.clone());
        }
        self.bus_names()
            .into_iter()
            .find(|n| !entries.contains_key(n))
    }

    fn save(&self) -> Result<BTreeMap<String, serde_json::Value>, SnapshotError> {
        let mut out = BTreeMap::new();
        for (name, entry) in self.lock().iter() {
            match entry {
                Entry::Saved(s) => {
                    let v = s.save_value().map_err(|source| SnapshotError::Device {
                        device: name.clone(),
                        source,
                    })?;
                    out.insert(name.clone(), v);
                }
                Entry::Stateless => {}
                Entry::Blocked => return Err(SnapshotError::NotMigratable(name.clone())),
            }
        }
        Ok(out)
    }

    fn restore(
        &self,
        path: &str,
        mut saved: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), SnapshotError> {
        let entries = self.lock();
        for (name, entry) in entries.iter() {
            if let Entry::Saved(s) = entry {
                let v = saved
                    .remove(name)
                    .ok_or_else(|| SnapshotError::MissingDevice {
                        path: path.into(),
                        device: name.clone(),
                    })?;
                s.restore_value(v).map_err(|source| SnapshotError::Device {
                    device: name.clone(),
                    source,
                })?;
            }
        }
        match saved.into_keys().next() {
            Some(device) => Err(SnapshotError::ExtraDevice {
                path: path.into(),
                device,
            }),
            None => Ok(()),
        }
    }
}

/// What the VM lends a snapshot.
pub struct SnapshotContext {
    pub mem: Arc<GuestMemoryMmap>,
    pub devices: Arc<DeviceStates>,
    pub vm: Arc<rvmm_hypervisor::Vm>,
    /// Without the device list, which comes from the buses when needed.
    pub identity: MachineIdentity,
    /// RAM is a private mapping of a memory file (after a restore), not anonymous memory.
    pub file_backed: bool,
}

impl SnapshotContext {
    fn identity(&self) -> MachineIdentity {
        MachineIdentity {
            devices: self.devices.bus_names(),
            ..self.identity.clone()
        }
    }

    /// Fail now, before the VM is stopped, if some device cannot be saved.
    pub fn check_migratable(&self) -> Result<(), SnapshotError> {
        match self.devices.blocker() {
            Some(name) => Err(SnapshotError::NotMigratable(name)),
            None => Ok(()),
        }
    }
}

/// Numbers for `query-migrate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveStats {
    pub ram_total: u64,
    pub ram_written: u64,
    pub state_bytes: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A per-snapshot id tying the state file to its memory file.
fn snapshot_id() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    format::fnv1a(
        &[
            t.tv_sec.to_le_bytes(),
            t.tv_nsec.to_le_bytes(),
            i64::from(std::process::id()).to_le_bytes(),
        ]
        .concat(),
    )
}

/// Where a snapshot goes.
pub enum SaveTarget<'a> {
    /// `PATH` and `PATH.mem`.
    File(&'a Path),
    /// One stream (`exec:`), named `what` in messages.
    Stream(&'a mut dyn std::io::Write, &'a str),
}

/// Write the snapshot of a paused (or suspended) VM: RAM to `path.mem`, then the state to
/// `path`; or both to a stream. `clock` is the kvmclock value at the pause.
pub fn save(
    ctx: &SnapshotContext,
    target: SaveTarget<'_>,
    clock: u64,
    vcpus: Vec<VcpuSnapshot>,
    suspended: bool,
) -> Result<SaveStats, SnapshotError> {
    let devices = ctx.devices.save()?;
    let vm = ctx
        .vm
        .save_state(clock)
        .map_err(|source| SnapshotError::Hypervisor {
            what: "VM state".into(),
            source,
        })?;
    let machine = ctx.identity();
    let memory = MemoryRecord::layout(&ctx.mem, snapshot_id());
    let ram_written = match &target {
        SaveTarget::File(path) => {
            memory::save(&ctx.mem, &memory, &memory::mem_path(path), !ctx.file_backed)?
        }
        SaveTarget::Stream(..) => 0,
    };
    let state = SnapshotState {
        header: SnapshotHeader {
            rvmm_version: env!("CARGO_PKG_VERSION").into(),
            digest: machine.digest(),
            machine,
            memory,
        },
        vm,
        vcpus,
        devices,
        suspended,
    };
    let what = match &target {
        SaveTarget::File(path) => path.display().to_string(),
        SaveTarget::Stream(_, what) => what.to_string(),
    };
    let bytes = format::encode(&state).map_err(|source| SnapshotError::Format {
        path: what.clone(),
        source,
    })?;
    let ram_written = match target {
        SaveTarget::File(path) => {
            let tmp = memory::tmp_path(path);
            std::fs::write(&tmp, &bytes).map_err(io_err(&tmp))?;
            // RAM first: between the renames the new memory file's id does not match the old
            // state file's, which a restore reports.
            let mem_path = memory::mem_path(path);
            memory::commit(&mem_path).map_err(io_err(&mem_path))?;
            memory::commit(path).map_err(io_err(path))?;
            ram_written
        }
        SaveTarget::Stream(out, what) => stream::write(ctx, &bytes, out, what)?,
    };
    Ok(SaveStats {
        ram_total: state.header.memory.regions.iter().map(|r| r.len).sum(),
        ram_written,
        state_bytes: bytes.len() as u64,
    })
}

/// Read the state file at `path` and check its format (not yet against this VM).
pub fn read_state(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let bytes = read_limited(path)?;
    format::decode(&bytes).map_err(|source| SnapshotError::Format {
        path: path.display().to_string(),
        source,
    })
}

/// Check `state` against this VM: the rvmm version and the machine identity.
pub fn check(
    ctx: &SnapshotContext,
    path: &Path,
    state: &SnapshotState,
) -> Result<(), SnapshotError> {
    check_identity(path, state, &ctx.identity())
}

/// [`check`] before the devices exist: everything but the device list (the later [`check`]
/// compares that too).
pub fn check_config(
    path: &Path,
    state: &SnapshotState,
    ours: &MachineIdentity,
) -> Result<(), SnapshotError> {
    let ours = MachineIdentity {
        devices: state.header.machine.devices.clone(),
        ..ours.clone()
    };
    check_identity(path, state, &ours)
}

fn check_identity(
    path: &Path,
    state: &SnapshotState,
    ours: &MachineIdentity,
) -> Result<(), SnapshotError> {
    let shown = path.display().to_string();
    let h = &state.header;
    let version = env!("CARGO_PKG_VERSION");
    if h.rvmm_version != version {
        return Err(SnapshotError::RvmmVersion {
            path: shown,
            found: h.rvmm_version.clone(),
            ours: version.into(),
        });
    }
    if let Some((what, saved, here)) = h.machine.difference(ours) {
        return Err(SnapshotError::Mismatch {
            path: shown,
            what,
            saved,
            ours: here,
        });
    }
    Ok(())
}

/// The state file, refusing one larger than any snapshot (a hostile size is not read).
fn read_limited(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(format::MAX_PAYLOAD + format::HEADER_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok(bytes)
}

/// Put the checked `state`'s RAM (unless `mapped` already, at start-up), VM state and device
/// state into this VM; returns the vCPU states for the vCPU threads to load and kvmclock.
pub fn restore_machine(
    ctx: &SnapshotContext,
    path: &Path,
    state: SnapshotState,
    vcpu_count: usize,
    mapped: bool,
) -> Result<Restored, SnapshotError> {
    let shown = path.display().to_string();
    if state.vcpus.len() != vcpu_count {
        return Err(SnapshotError::VcpuCount {
            path: shown,
            count: state.vcpus.len(),
            ours: vcpu_count,
        });
    }
    if !mapped {
        memory::map(&ctx.mem, &state.header.memory, &memory::mem_path(path))?;
    }
    restore_rest(ctx, &shown, state)
}

/// Restore from a stream (`exec:`): the state, checked, then RAM copied in, then the rest.
pub fn restore_stream(
    ctx: &SnapshotContext,
    input: &mut impl std::io::Read,
    what: &str,
    vcpu_count: usize,
) -> Result<Restored, SnapshotError> {
    let state = stream::read_state(input, what)?;
    check_identity(Path::new(what), &state, &ctx.identity())?;
    if state.vcpus.len() != vcpu_count {
        return Err(SnapshotError::VcpuCount {
            path: what.into(),
            count: state.vcpus.len(),
            ours: vcpu_count,
        });
    }
    stream::read_memory(ctx, input, what)?;
    restore_rest(ctx, what, state)
}

/// After RAM is in place: the VM state and the devices; returns the vCPU states and kvmclock.
pub fn restore_rest(
    ctx: &SnapshotContext,
    shown: &str,
    state: SnapshotState,
) -> Result<Restored, SnapshotError> {
    ctx.vm
        .restore_state(&state.vm)
        .map_err(|source| SnapshotError::Hypervisor {
            what: format!("{shown}: VM state"),
            source,
        })?;
    ctx.devices.restore(shown, state.devices)?;
    Ok(Restored {
        vcpus: state.vcpus,
        clock: state.vm.clock,
        suspended: state.suspended,
    })
}
