//! Builds the VM in one straight line, then runs the VMM loop: wait for a request from a device or
//! vCPU (stop, reset) or a terminating signal, act on it, and join every vCPU thread at the end.

use crate::control::{Cause, Command, Control};
use crate::daemon::{self, Pidfile};
use crate::device_manager::pci::attach_pci;
use crate::device_manager::{attach_chipset, attach_legacy, ChipsetConfig, DeviceManager};
use crate::exit_stats::{write_reports, ExitStats};
use crate::firmware::{attach_fw_cfg, FirmwareTables, KernelFiles};
use crate::qmp::{self, Events, QmpServer};
use crate::vcpu::{run_vcpu, ExitCounters, VcpuContext};
use crate::{VcpuBoot, VmmError};
use rvmm_arch::{BootParams, KernelImage};
use rvmm_cli::{IrqchipMode, SerialConfig, VmConfig};
use rvmm_devices::legacy::AcpiPm;
use rvmm_hypervisor::{
    hide_hypercall_features, install_kick_handler, kick_signal, vcpu_cpuid, Hypervisor, Vm,
};
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
use std::thread::JoinHandle;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// IOAPIC inputs routed through KVM under a split irqchip (one IOAPIC, as on a PC).
const IOAPIC_PINS: u32 = 24;

/// Name used in messages for the guest built into the binary.
const BUILTIN_GUEST: &str = "<built-in guest>";

/// The guest's kernel and initrds, kept for reloading at reset (QEMU reloads them too).
struct Images {
    kernel_name: String,
    kernel: Vec<u8>,
    initrds: Vec<(String, Vec<u8>)>,
    cmdline: String,
    mem_size: u64,
    /// Rewritten with the kernel at every boot.
    firmware: FirmwareTables,
    /// Whether the kernel came from -kernel (fw_cfg kernel items) or is the built-in guest.
    from_cli: bool,
    decompress: rvmm_arch::BzImageDecompress,
}

impl Images {
    /// `firmware`: the tables written at every boot.
    fn read(config: &VmConfig, firmware: FirmwareTables) -> Result<Self, VmmError> {
        let (kernel_name, kernel) = match &config.kernel {
            Some(path) => {
                let name = path.display().to_string();
                let bytes = std::fs::read(path).map_err(|source| VmmError::KernelRead {
                    path: name.clone(),
                    source,
                })?;
                (name, bytes)
            }
            None => (
                BUILTIN_GUEST.to_string(),
                rvmm_guests::DEFAULT_GUEST.to_vec(),
            ),
        };
        let initrds = config
            .initrd
            .iter()
            .map(|p| {
                let name = p.display().to_string();
                std::fs::read(p)
                    .map(|b| (name.clone(), b))
                    .map_err(|source| VmmError::InitrdRead { path: name, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kernel_name,
            kernel,
            initrds,
            cmdline: config.append.clone().unwrap_or_default(),
            mem_size: config.memory_bytes,
            firmware,
            from_cli: config.kernel.is_some(),
            decompress: match config.bzimage_decompress {
                rvmm_cli::BzImageDecompress::Host => rvmm_arch::BzImageDecompress::Host,
                rvmm_cli::BzImageDecompress::Guest => rvmm_arch::BzImageDecompress::Guest,
            },
        })
    }

    fn load(&self, mem: &GuestMemoryMmap) -> Result<rvmm_arch::BootEntry, VmmError> {
        let initrds: Vec<KernelImage> = self
            .initrds
            .iter()
            .map(|(name, bytes)| KernelImage { name, bytes })
            .collect();
        let kernel = KernelImage {
            name: &self.kernel_name,
            bytes: &self.kernel,
        };
        let params = BootParams {
            initrds: &initrds,
            cmdline: &self.cmdline,
            mem_size: self.mem_size,
        };
        let entry = rvmm_arch::load_kernel_with(mem, &kernel, &params, self.decompress)?;
        self.firmware.write(mem, &entry)?;
        Ok(entry)
    }

    /// The -kernel files for fw_cfg, None for the built-in guest.
    fn kernel_files<'a>(&'a self, entry: &'a rvmm_arch::BootEntry) -> Option<KernelFiles<'a>> {
        self.from_cli.then(|| KernelFiles {
            kernel: &self.kernel,
            initrd: self.initrds.first().map(|(_, b)| b.as_slice()),
            cmdline: &self.cmdline,
            entry,
        })
    }
}

fn create_memory(vm: &Vm, size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let regions = rvmm_arch::guest_memory_regions(size);
    let mem = GuestMemoryMmap::from_ranges(&regions)
        .map_err(|source| VmmError::Memory { size, source })?;
    for (slot, region) in mem.iter().enumerate() {
        // SAFETY: the mapping is owned by `mem`, which the VMM keeps alive (in an Arc shared with the
        // vCPU threads) until every vCPU thread has been joined, i.e. for as long as the VM runs.
        unsafe {
            vm.set_memory_region(
                slot as u32,
                region.start_addr().raw_value(),
                region.len(),
                region.as_ptr() as u64,
            )
        }?;
    }
    Ok(mem)
}

/// Block the terminating signals in every thread and turn them into a clean stop, handled by a
/// thread of their own (QEMU: "terminating on signal N", status 0).
fn spawn_signal_thread(control: Arc<Control>) -> Result<(), VmmError> {
    let signals = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: `set` is initialized; blocking happens before any other thread exists, so every
    // thread created afterwards inherits the mask and only the signal thread receives them.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(VmmError::Io {
            what: "pthread_sigmask",
            source: std::io::Error::from_raw_os_error(rc),
        });
    }
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` and `sig` are valid for the call.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!("rvmm: terminating on signal {sig}");
                control.shutdown(Cause::HostSignal);
            }
        })
        .map_err(|source| VmmError::Io {
            what: "spawn signal thread",
            source,
        })?;
    Ok(())
}

pub fn build_and_run(config: &VmConfig) -> Result<i32, VmmError> {
    // Before anything else: KVM VMs and threads do not survive fork.
    let daemon = config.daemonize.then(daemon::daemonize).transpose()?;
    let _pidfile = config.pidfile.as_deref().map(Pidfile::create).transpose()?;
    let hv = Hypervisor::open()?;
    let cpus = config.smp.cpus;
    if cpus as usize > hv.max_vcpus() {
        return Err(VmmError::TooManyCpus {
            requested: cpus,
            max: hv.max_vcpus(),
        });
    }
    let vm = Arc::new(hv.create_vm()?);
    tracing::debug!("KVM_CREATE_VM done");
    let mem = Arc::new(create_memory(&vm, config.memory_bytes)?);
    tracing::debug!("guest memory registered");
    match config.irqchip {
        IrqchipMode::Split => vm.create_split_irqchip(IOAPIC_PINS)?,
        IrqchipMode::Kernel => {
            vm.create_irqchip()?;
            if config.pit {
                vm.create_pit()?;
            }
        }
    }
    if crate::platform::needs_x2apic_api(config) {
        vm.enable_x2apic_api()?;
    }
    tracing::debug!(mode = ?config.irqchip, "irqchip created");
    let dm = DeviceManager::new(vm.clone(), config.machine);
    let virtio = crate::virtio::attach(config, &dm, &mem)?;
    let mut images = Images::read(config, FirmwareTables::new(config, virtio.acpi_devices()))?;
    tracing::debug!("images read");
    images.cmdline = format!("{}{}", images.cmdline, virtio.cmdline_suffix())
        .trim_start()
        .to_string();
    let entry = images.load(&mem)?;
    tracing::debug!(kernel = images.kernel_name, ?entry, "kernel loaded");

    let control = Arc::new(Control::new(config.no_reboot, config.start_paused));
    // First, so every thread created after it (irq, stdin, vCPUs, QMP) has the signals blocked.
    spawn_signal_thread(control.clone())?;
    let ctl: Arc<dyn rvmm_devices::VmControl> = control.clone();
    let chipset = attach_chipset(
        &dm,
        &ChipsetConfig {
            machine: config.machine,
            memory_bytes: config.memory_bytes,
            cpus: config.smp.cpus,
        },
        &ctl,
    )?;
    let acpi_pm = chipset.acpi_pm;
    let serial = attach_legacy(&dm, &config.serial, &config.devices, &ctl)?.serial;
    let kernel_files = images.kernel_files(&entry);
    attach_fw_cfg(config, &mem, kernel_files.as_ref(), &dm)?;
    let mut device_lines = virtio.irq_lines()?;
    device_lines.extend(crate::platform::sci_line(config, &acpi_pm)?);
    let ioapic = crate::platform::attach_interrupts(&dm, config, serial.as_deref(), device_lines)?;
    let pci = attach_pci(&dm, config.machine, &config.devices, &ctl)?;
    // Raw terminal until this function returns, on success and on error.
    let _console = match (&config.serial, &serial) {
        (SerialConfig::Stdio, Some(serial)) => {
            Some(crate::console::start(serial.clone(), control.clone()))
        }
        _ => None,
    };
    let boot = Arc::new(VcpuBoot { entry });

    let mut base_cpuid = hv.supported_cpuid()?;
    if crate::host::kvm_emulates_kernel_mode() {
        // An emulated vmcall never completes there (docs/EMULATED-KVM.md).
        hide_hypercall_features(&mut base_cpuid);
        tracing::debug!("hiding the paravirtual features that use hypercalls");
    }
    let topo = crate::platform::topology(config);
    let mut vcpus = Vec::with_capacity(cpus as usize);
    for index in 0..cpus {
        // The KVM vCPU ID is the APIC ID, as in QEMU.
        let apic_id = topo.apic_id(index);
        let vcpu = vm.create_vcpu(apic_id)?;
        vcpu.set_cpuid(&vcpu_cpuid(&base_cpuid, apic_id, &topo))?;
        boot.reset_vcpu(&vcpu, &mem)?;
        vcpus.push(vcpu);
    }

    // Once every vCPU exists, so that KVM's APIC ID map includes them all (see reload_lapic).
    for vcpu in &vcpus {
        vcpu.reload_lapic()?;
    }
    tracing::debug!("vCPUs created");
    // After every check that can fail, so an error stays a one-line message.
    crate::host::announce();
    let qmp_server = QmpServer::bind(&config.qmp)?;
    let events = Arc::new(Events::default());
    let thread_ids: Arc<[AtomicI32]> = (0..cpus).map(|_| AtomicI32::new(0)).collect();
    install_kick_handler()?;
    let stats = config.exit_stats.as_ref().map(|_| {
        Arc::new(ExitStats::new(
            dm.pio_bus().clone(),
            dm.mmio_bus().clone(),
            cpus,
            virtio.stats_sources(),
        ))
    });
    let ctx = VcpuContext {
        control: control.clone(),
        pio: dm.pio_bus().clone(),
        mmio: dm.mmio_bus().clone(),
        mem: mem.clone(),
        counters: Arc::new(ExitCounters::default()),
        boot,
        ioapic,
        thread_ids: thread_ids.clone(),
        stats: stats.clone(),
    };
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in (0u32..).zip(vcpus) {
        let ctx = ctx.clone();
        let name = format!("vcpu{index}");
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || run_vcpu(vcpu, index, ctx))
            .map_err(|source| VmmError::Io {
                what: "spawn vCPU thread",
                source,
            });
        match handle {
            Ok(h) => threads.push(h),
            Err(e) => {
                control.stop(crate::FATAL_STATUS);
                finish(&control, threads);
                virtio.shutdown();
                return Err(e);
            }
        }
    }

    tracing::debug!("vCPU threads started");
    let acpi_pm_for_reset = acpi_pm.clone();
    let machine = qmp::Machine {
        control: control.clone(),
        events: events.clone(),
        acpi_pm,
        thread_ids,
        name: config.name.clone(),
        smp: config.smp,
        exit_stats: stats.clone(),
    };
    let started = qmp_server
        .start(Arc::new(machine))
        .and_then(|paths| Ok((paths, daemon.map(daemon::Daemon::ready).transpose()?)));
    let socket_paths = match started {
        Ok((paths, _)) => paths,
        Err(e) => {
            control.stop(crate::FATAL_STATUS);
            finish(&control, threads);
            virtio.shutdown();
            return Err(e);
        }
    };
    let devices = LoopDevices {
        virtio: &virtio,
        acpi_pm: &acpi_pm_for_reset,
        pci: pci.as_ref(),
    };
    let status = vmm_loop(&control, &threads, &images, &mem, &vm, &events, &devices);
    tracing::debug!(status, "VM stop requested");
    let cause = control.lock().shutdown_cause;
    if let Some(cause) = cause {
        events.emit_cause("SHUTDOWN", cause);
    }
    // Every command returns promptly once the VM is stopping; let its reply reach the client.
    events.wait_for_commands();
    finish(&control, threads);
    for path in socket_paths {
        // Already gone is fine; QEMU removes its listening sockets at exit too.
        let _ = std::fs::remove_file(path);
    }
    tracing::debug!("vCPU threads joined");
    // Every clean stop (power-off, -no-reboot reset, SIGTERM/SIGINT) ends here: flush the disks.
    virtio.shutdown();
    // vm-superio flushes the writer after every byte, so nothing is left to flush here.
    drop(serial);
    if let (Some(cfg), Some(stats)) = (&config.exit_stats, &stats) {
        write_reports(cfg, &stats.snapshot())?;
    }
    for d in virtio.stats_sources() {
        let c = d.counters.snapshot();
        tracing::debug!(
            device = d.device,
            at = %d.at,
            requests = c.requests,
            errors = c.errors,
            bytes_to_guest = c.bytes_to_guest,
            bytes_from_guest = c.bytes_from_guest,
            "device served"
        );
    }
    let c = &ctx.counters;
    tracing::debug!(
        unclaimed_pio = c.unclaimed_pio.load(std::sync::atomic::Ordering::Relaxed),
        unclaimed_mmio = c.unclaimed_mmio.load(std::sync::atomic::Ordering::Relaxed),
        emulated = %c.emulated.summary(),
        "VM stopped"
    );
    Ok(status)
}

fn kick_all(threads: &[JoinHandle<()>]) {
    use vmm_sys_util::signal::Killable;
    for t in threads {
        // A thread that already left its loop may be gone; nothing to kick then.
        let _ = t.kill(kick_signal());
    }
}

/// The devices the VMM loop itself drives: virtio (pause, resume, reset), the ACPI PM
/// registers and the PCI functions (reset).
struct LoopDevices<'a> {
    virtio: &'a crate::virtio::VirtioDevices,
    acpi_pm: &'a AcpiPm,
    pci: Option<&'a crate::device_manager::pci::PciRoot>,
}

/// Wait for requests and carry them out until the VM stops; returns the exit status.
fn vmm_loop(
    control: &Control,
    threads: &[JoinHandle<()>],
    images: &Images,
    mem: &GuestMemoryMmap,
    vm: &Vm,
    events: &Events,
    devices: &LoopDevices,
) -> i32 {
    let LoopDevices {
        virtio,
        acpi_pm,
        pci,
    } = *devices;
    // kvmclock value saved at pause, restored at resume (QEMU's kvmclock_vm_state_change).
    let mut clock = None;
    let mut st = control.lock();
    loop {
        match st.command {
            Command::Run if st.pause_requested && !st.paused => {
                drop(st);
                kick_all(threads);
                st = control.lock();
                while st.command == Command::Run && st.pause_requested && st.parked < threads.len()
                {
                    st = control.wait(st);
                }
                if st.command == Command::Run && st.pause_requested {
                    // vCPUs parked: no new notification can come; hold the device workers.
                    virtio.pause();
                    clock = vm.clock().map_err(|e| tracing::warn!("pause: {e}")).ok();
                    tracing::debug!(?clock, "vCPUs paused");
                    // STOP before `stop` returns, as QEMU; -S starts paused without one. The
                    // vCPUs stay parked meanwhile, and QMP commands are serialized, so no `cont`
                    // can slip in.
                    if !st.prelaunch {
                        drop(st);
                        events.emit("STOP", None);
                        st = control.lock();
                    }
                    st.paused = true;
                    control.notify();
                }
            }
            Command::Run if !st.pause_requested && st.paused => {
                // RESUME before any guest code runs again (QEMU's vm_prepare_start).
                drop(st);
                events.emit("RESUME", None);
                if let Some(ns) = clock.take() {
                    if let Err(e) = vm.set_clock(ns) {
                        tracing::warn!("resume: {e}");
                    }
                }
                // Devices first, so they catch up before the guest runs again.
                virtio.resume();
                st = control.lock();
                st.paused = false;
                control.update_pending(&st);
                control.notify();
                tracing::debug!("vCPUs resumed");
            }
            Command::Run => st = control.wait(st),
            Command::Stop(status) => return status,
            Command::Reset => {
                drop(st);
                kick_all(threads);
                st = control.lock();
                while st.command == Command::Reset && st.parked < threads.len() {
                    st = control.wait(st);
                }
                if st.command != Command::Reset {
                    continue;
                }
                tracing::debug!("system reset");
                acpi_pm.reset();
                virtio.reset();
                let pci_reset = pci.map_or(Ok(()), |pci| pci.reset());
                if let Err(e) = pci_reset
                    .map_err(VmmError::from)
                    .and_then(|()| images.load(mem))
                {
                    eprintln!("rvmm: reset: {e}");
                    st.command = Command::Stop(crate::FATAL_STATUS);
                    control.notify();
                    continue;
                }
                control.resume_after_reset(&mut st);
                let cause = st.reset_cause;
                drop(st);
                events.emit_cause("RESET", cause);
                st = control.lock();
            }
        }
    }
}

/// Make every vCPU thread leave KVM_RUN and join it.
fn finish(control: &Control, threads: Vec<JoinHandle<()>>) {
    debug_assert!(matches!(control.lock().command, Command::Stop(_)));
    kick_all(&threads);
    for t in threads {
        let _ = t.join();
    }
}
