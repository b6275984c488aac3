//! Builds the VM in one straight line, then runs the event loop on this thread until the VM
//! stops, and tears down: vCPU threads joined, disks flushed, sockets removed, reports written.

use crate::control::Control;
use crate::daemon::{self, Pidfile};
use crate::device_manager::display::DisplayFactory;
use crate::device_manager::pci::attach_pci;
use crate::device_manager::storage::{attach_storage, boot_paths, bootorder};
use crate::device_manager::FirmwareImage;
use crate::device_manager::{attach_chipset, attach_legacy, ChipsetConfig, DeviceManager};
use crate::event_loop::{block_signals, EventLoop, Sources};
use crate::exit_stats::{write_reports, ExitStats};
use crate::firmware::{attach_fw_cfg, FirmwareItems, FirmwareTables, FwCfgConfig, KernelFiles};
use crate::input::read_input;
use crate::qmp::{self, Events, QmpServer};
use crate::snapshot::socket::SocketAddr;
use crate::snapshot::{MachineIdentity, SnapshotContext, SnapshotState};
use crate::vcpu::{BootTarget, ExitCounters, VcpuBoot, VcpuContext, VcpuHandle, WakeEntry};
use crate::vm::{Incoming, MigrationTarget, Reloader, VmDevices, Vmm, VmmParts};
use crate::VmmError;
use rvmm_arch::{BootParams, KernelImage};
use rvmm_cli::{IncomingConfig, IrqchipMode, SerialConfig, VmConfig};
use rvmm_hypervisor::{hide_hypercall_features, install_kick_handler, vcpu_cpuid, Hypervisor, Vm};
use std::path::Path;
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
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
    cmdline: Vec<u8>,
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
        // Neither can be larger than the guest's RAM (a bzImage's payload is checked again
        // when it is unpacked).
        let (kernel_name, kernel) = match &config.kernel {
            Some(path) => (
                path.display().to_string(),
                read_input("kernel", path, config.memory_bytes, "of guest RAM")?,
            ),
            None => (
                BUILTIN_GUEST.to_string(),
                rvmm_guests::DEFAULT_GUEST.to_vec(),
            ),
        };
        let initrds = config
            .initrd
            .iter()
            .map(|p| {
                let bytes = read_input("initrd", p, config.memory_bytes, "of guest RAM")?;
                Ok((p.display().to_string(), bytes))
            })
            .collect::<Result<Vec<_>, VmmError>>()?;
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

/// How the VM boots: a kernel loaded by rvmm, or PC firmware.
enum Boot {
    Kernel {
        images: Images,
        entry: rvmm_arch::BootEntry,
    },
    Firmware {
        image: FirmwareImage,
        /// The ACPI tables, linked by the firmware (None with `acpi=off`).
        acpi: Option<rvmm_arch::acpi::FirmwareAcpi>,
    },
}

impl Boot {
    fn is_firmware(&self) -> bool {
        matches!(self, Boot::Firmware { .. })
    }

    fn target(&self) -> BootTarget {
        match self {
            Boot::Kernel { entry, .. } => BootTarget::Kernel(*entry),
            Boot::Firmware { .. } => BootTarget::Firmware,
        }
    }

    fn kernel_files(&self) -> Option<KernelFiles<'_>> {
        match self {
            Boot::Kernel { images, entry } => images.kernel_files(entry),
            Boot::Firmware { .. } => None,
        }
    }

    fn firmware_items<'a>(
        &'a self,
        boot: &'a rvmm_cli::BootConfig,
        boot_paths: Vec<(u32, String)>,
        smbios: Option<rvmm_arch::smbios::SmbiosBlobs>,
    ) -> Option<FirmwareItems<'a>> {
        match self {
            Boot::Kernel { .. } => None,
            Boot::Firmware { acpi, .. } => Some(FirmwareItems {
                acpi: acpi.clone(),
                boot,
                bootorder: bootorder(boot_paths, boot.strict),
                smbios,
            }),
        }
    }

    /// What a system reset reloads.
    fn into_reloader(
        self,
        mem: Arc<GuestMemoryMmap>,
        cmos: Arc<rvmm_devices::legacy::Cmos>,
        boot: &rvmm_cli::BootConfig,
    ) -> Box<dyn Reloader> {
        match self {
            Boot::Kernel { images, .. } => Box::new(ImageReloader { images, mem }),
            Boot::Firmware { image, .. } => Box::new(FirmwareReloader {
                image,
                mem,
                cmos,
                order: boot.order.clone(),
            }),
        }
    }
}

/// At reset: the firmware's tail back below 1 MiB, and the boot order after `-boot once=`.
struct FirmwareReloader {
    image: FirmwareImage,
    mem: Arc<GuestMemoryMmap>,
    cmos: Arc<rvmm_devices::legacy::Cmos>,
    order: String,
}

impl Reloader for FirmwareReloader {
    fn reload(&self) -> Result<(), VmmError> {
        crate::device_manager::set_cmos_boot_order(&self.cmos, &self.order);
        Ok(self.image.restore_isa_alias(&self.mem)?)
    }

    /// The firmware's shadow below 1 MiB is kept, so SeaBIOS takes its resume path.
    fn wake_entry(&self) -> Option<WakeEntry> {
        Some(WakeEntry::Firmware)
    }
}

/// Guest RAM as KVM memory slots. `hole` is a range left to MMIO (the VGA window at
/// 0xa0000-0xbffff when a standard VGA decodes it); the RAM behind it stays allocated but
/// unreachable by the guest, as on QEMU, where the VGA window covers it. With `snapshot`
/// (`-incoming file:`) the snapshot's memory file is mapped over RAM before the slots exist.
fn create_memory(
    vm: &Vm,
    size: u64,
    low_limit: u64,
    hole: Option<(u64, u64)>,
    snapshot: Option<(&Path, &SnapshotState)>,
) -> Result<GuestMemoryMmap, VmmError> {
    let regions = rvmm_arch::layout::guest_memory_regions_below(size, low_limit);
    let mem = GuestMemoryMmap::from_ranges(&regions)
        .map_err(|source| VmmError::Memory { size, source })?;
    if let Some((path, state)) = snapshot {
        crate::snapshot::memory::map(
            &mem,
            &state.header.memory,
            &crate::snapshot::memory::mem_path(path),
        )
        .map_err(|e| VmmError::Incoming(e.into()))?;
    }
    let mut slot = 0u32;
    for region in mem.iter() {
        let (start, len) = (region.start_addr().raw_value(), region.len());
        let mut pieces = vec![(start, len)];
        if let Some((h0, h1)) = hole.filter(|&(h0, h1)| h0 >= start && h1 <= start + len) {
            pieces = vec![(start, h0 - start), (h1, start + len - h1)];
        }
        for (gpa, n) in pieces.into_iter().filter(|&(_, n)| n > 0) {
            // SAFETY: the mapping is owned by `mem`, which the VMM keeps alive (in an Arc shared
            // with the vCPU threads) until every vCPU thread has been joined, i.e. for as long as
            // the VM runs; `gpa - start` stays inside the region.
            unsafe { vm.set_memory_region(slot, gpa, n, region.as_ptr() as u64 + (gpa - start)) }?;
            slot += 1;
        }
    }
    Ok(mem)
}

/// Queue the guest's writes to the VGA window in KVM's coalesced MMIO ring (as QEMU does)
/// instead of exiting for each: vCPUs replay the ring before every exit they handle, the
/// display before every render. None without a standard VGA or without the KVM capability.
fn coalesced_vga_window(
    vm: &Vm,
    vcpus: &[rvmm_hypervisor::Vcpu],
    displays: &DisplayFactory,
    mmio: &Arc<rvmm_devices::MmioBus>,
) -> Result<Option<Arc<rvmm_hypervisor::CoalescedRing>>, VmmError> {
    use rvmm_devices::display::vga::{VGA_WINDOW_BASE, VGA_WINDOW_SIZE};
    let (Some(first), true) = (vcpus.first(), displays.has_vga_window()) else {
        return Ok(None);
    };
    let Some(ring) = vm.coalesced_ring(first)? else {
        return Ok(None);
    };
    vm.register_coalesced_mmio(VGA_WINDOW_BASE, VGA_WINDOW_SIZE as u32)?;
    let ring = Arc::new(ring);
    for vga in displays.devices() {
        let (ring, mmio) = (ring.clone(), mmio.clone());
        vga.set_flush_hook(Arc::new(move || {
            if ring.pending() {
                let map = mmio.snapshot();
                ring.drain(|addr, data| {
                    map.write(addr, data);
                });
            }
        }));
    }
    Ok(Some(ring))
}

/// Reloads the images at reset, into the VM's memory.
struct ImageReloader {
    images: Images,
    mem: Arc<GuestMemoryMmap>,
}

impl Reloader for ImageReloader {
    fn reload(&self) -> Result<(), VmmError> {
        self.images.load(&self.mem).map(|_| ())
    }

    /// What firmware would do: the FACS waking vector the guest left, in real mode (ACPI 6.5
    /// section 5.2.10: X_Firmware_Waking_Vector first if set, real mode unless 64BIT_WAKE_F).
    fn wake_entry(&self) -> Option<WakeEntry> {
        use rvmm_arch::acpi::{
            FACS_64BIT_WAKE, FACS_OSPM_FLAGS, FACS_WAKING_VECTOR, FACS_X_WAKING_VECTOR,
        };
        use vm_memory::{Bytes, GuestAddress};
        let facs = self.images.firmware.facs_addr()?;
        let read32 = |off| self.mem.read_obj::<u32>(GuestAddress(facs + off)).ok();
        let x_vector = self
            .mem
            .read_obj::<u64>(GuestAddress(facs + FACS_X_WAKING_VECTOR))
            .ok()?;
        let vector = if x_vector != 0 {
            if read32(FACS_OSPM_FLAGS)? & FACS_64BIT_WAKE != 0 {
                tracing::warn!("S3 resume in 64-bit mode (FACS 64BIT_WAKE_F) is not supported: the guest boots again");
                return None;
            }
            x_vector
        } else {
            u64::from(read32(FACS_WAKING_VECTOR)?)
        };
        match vector {
            1..=0xf_ffff => Some(WakeEntry::RealMode(vector as u32)),
            0 => {
                tracing::debug!("no FACS waking vector: the guest boots again");
                None
            }
            _ => {
                tracing::warn!(
                    "FACS waking vector {vector:#x} is above 1 MiB: the guest boots again"
                );
                None
            }
        }
    }
}

pub fn build_and_run(config: &VmConfig) -> Result<i32, VmmError> {
    // Before the sandbox: saves find the pages a guest never touched through it.
    crate::snapshot::memory::open_pagemap();
    // Before anything else: KVM VMs and threads do not survive fork.
    let daemon = config.daemonize.then(daemon::daemonize).transpose()?;
    let _pidfile = config.pidfile.as_deref().map(Pidfile::create).transpose()?;
    let sandbox = crate::sandbox::mode(&config.sandbox);
    if sandbox != rvmm_sandbox::Mode::Off && config.sandbox.spawn {
        // A fork of this process while it is single-threaded and unfiltered.
        rvmm_sandbox::launcher::start()?;
    }
    if let Some(cfg) = &config.exit_stats {
        crate::exit_stats::check_report_path(cfg)?;
    }
    // Before any thread exists, so every thread inherits the mask.
    let signals = block_signals()?;
    // Filters compiled, SIGSYS handler and spawner ready; each thread installs its own filter.
    rvmm_sandbox::init(sandbox)?;
    crate::sandbox::landlock(config, sandbox)?;
    let hv = Hypervisor::open()?;
    let cpus = config.smp.cpus;
    if cpus as usize > hv.max_vcpus() {
        return Err(VmmError::TooManyCpus {
            requested: cpus,
            max: hv.max_vcpus(),
        });
    }
    let base_cpuid = guest_cpuid(&hv, config)?;
    let vm = Arc::new(hv.create_vm()?);
    tracing::debug!("KVM_CREATE_VM done");
    let low_limit = crate::platform::low_ram_limit(config);
    // -incoming file: the state is read and RAM mapped before KVM's memory slots exist.
    let incoming = match &config.incoming {
        Some(IncomingConfig::File(path)) => {
            let state = crate::snapshot::read_state(path).map_err(VmmError::Incoming)?;
            crate::snapshot::check_config(path, &state, &machine_identity(config))
                .map_err(VmmError::Incoming)?;
            Some((path.clone(), state))
        }
        _ => None,
    };
    let vga_window = config.has_vga_window().then_some((
        rvmm_devices::display::vga::VGA_WINDOW_BASE,
        rvmm_devices::display::vga::VGA_WINDOW_BASE + rvmm_devices::display::vga::VGA_WINDOW_SIZE,
    ));
    let mem = Arc::new(create_memory(
        &vm,
        config.memory_bytes,
        low_limit,
        vga_window,
        incoming.as_ref().map(|(p, s)| (p.as_path(), s)),
    )?);
    tracing::debug!("guest memory registered");
    crate::host::apply_memory_options(&mem, &config.process)?;
    // What the VM build writes into RAM (kernel, boot tables, power-on page tables) goes to a
    // throw-away copy when RAM comes from a snapshot (a stream fills only the pages it has).
    let scratch = match &config.incoming {
        Some(_) => Some(
            GuestMemoryMmap::from_ranges(&rvmm_arch::layout::guest_memory_regions_below(
                config.memory_bytes,
                low_limit,
            ))
            .map_err(|source| VmmError::Memory {
                size: config.memory_bytes,
                source,
            })?,
        ),
        None => None,
    };
    let boot_mem: &GuestMemoryMmap = scratch.as_ref().unwrap_or(&mem);
    let mut preloaded = incoming;
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
    // Before the devices, which report disk errors as QMP events.
    let events = Arc::new(Events::default());
    let block_stats = Arc::new(std::sync::Mutex::new(Vec::new()));
    let disk_events = |device: String| -> Arc<dyn rvmm_block::DiskEvents> {
        Arc::new(qmp::BlockEvents {
            events: events.clone(),
            device,
            stats: block_stats.clone(),
        })
    };
    let mut virtio =
        crate::virtio::attach_virtio(&dm, &config.virtio, config.acpi, &mem, &disk_events)?;
    let tables = FirmwareTables::new(config, virtio.acpi_devices());
    // pc and q35 boot through PC firmware unless given a kernel.
    let boot = if crate::platform::firmware_boot(config) {
        let path = crate::bios::find_bios(&config.firmware)?;
        let bytes = crate::bios::read_bios(&path)?;
        let image = dm.attach_firmware("BIOS", &bytes)?;
        image.restore_isa_alias(boot_mem)?;
        tracing::debug!(bios = %path.display(), base = image.base(), "firmware mapped");
        Boot::Firmware {
            image,
            acpi: tables.firmware_acpi()?,
        }
    } else {
        let mut images = Images::read(config, tables)?;
        tracing::debug!("images read");
        images
            .cmdline
            .extend_from_slice(virtio.cmdline_suffix().as_bytes());
        images.cmdline = images.cmdline.trim_ascii_start().to_vec();
        let entry = images.load(boot_mem)?;
        tracing::debug!(kernel = images.kernel_name, ?entry, "kernel loaded");
        Boot::Kernel { images, entry }
    };

    let control = Arc::new(Control::new().map_err(|source| VmmError::Io {
        what: "control eventfd",
        source,
    })?);
    let ctl: Arc<dyn rvmm_devices::VmControl> = control.clone();
    let chipset = attach_chipset(
        &dm,
        &ChipsetConfig {
            machine: config.machine,
            memory_bytes: config.memory_bytes,
            low_ram_limit: low_limit,
            cpus: config.smp.cpus,
            boot_order: boot
                .is_firmware()
                .then(|| config.firmware.boot.first_order().to_string()),
        },
        &ctl,
    )?;
    let acpi_pm = chipset.acpi_pm;
    let serial_backend = (&config.serial, config.serial_label.as_deref());
    let mut legacy = attach_legacy(&dm, serial_backend, &config.devices, &ctl)?;
    let serial = legacy.serial;
    let kernel_files = boot.kernel_files();
    let smbios = boot
        .is_firmware()
        .then(|| crate::firmware::smbios_blobs(config, cpuid_leaf1(&base_cpuid)))
        .transpose()?;
    if smbios.is_none() && config.smbios != Default::default() {
        tracing::warn!("-smbios/-uuid: only PC firmware (pc or q35 without -kernel) publishes SMBIOS tables; ignored");
    }
    let displays = DisplayFactory::new(&config.firmware.data_dirs, config.default_vga);
    let pci = attach_pci(
        &dm,
        config.machine,
        &config.devices,
        &ctl,
        boot.is_firmware(),
        &displays,
    )?;
    let display = displays.sources().into_iter().next();
    // The built-in boot disk when the firmware has nothing else to boot.
    let is_disk =
        |d: &rvmm_cli::VirtioDeviceConfig| matches!(d, rvmm_cli::VirtioDeviceConfig::Block(_));
    let builtin = (boot.is_firmware()
        && config.ide.is_empty()
        && !config.virtio.iter().any(is_disk)
        && !config.virtio_pci.iter().any(|d| is_disk(&d.device)))
    .then_some(rvmm_guests::BOOT_DISK);
    let mut storage = attach_storage(
        &dm,
        config.machine,
        &config.ide,
        builtin,
        &mem,
        &disk_events,
    )?;
    // QEMU's default NIC needs passt here; without it the VM starts without one (a NIC the
    // user asked for still fails with the reason).
    let implicit_nic = |d: &rvmm_cli::VirtioPciDeviceConfig| {
        matches!(
            &d.device,
            rvmm_cli::VirtioDeviceConfig::Net {
                backend: rvmm_cli::NetBackendConfig::User(u),
                ..
            } if u.implicit
        )
    };
    let pci_devices: Vec<_> = if config.virtio_pci.iter().any(implicit_nic)
        && !crate::passt::available()
    {
        tracing::warn!(
            "no passt on PATH: the default NIC (virtio-net-pci on user networking) is left out; install the Debian package 'passt' for it, or give -nic none to silence this"
        );
        config
            .virtio_pci
            .iter()
            .filter(|d| !implicit_nic(d))
            .cloned()
            .collect()
    } else {
        config.virtio_pci.clone()
    };
    let mut virtio_pci = crate::virtio_pci::attach_virtio_pci(
        &dm,
        &pci_devices,
        &mem,
        &mut virtio.counts,
        &disk_events,
    )?;
    virtio.add_pci(&virtio_pci.functions);
    // Its MSI-X GSIs come after the root ports' and the virtio-pci functions' (their routes come
    // later, so free_gsi alone would hand them out again): DeviceManager::allocate_msi_gsi.
    let xhci_configs: Vec<rvmm_cli::XhciConfig> = config
        .devices
        .iter()
        .filter_map(|d| match d {
            rvmm_cli::DeviceConfig::Xhci(x) => Some(x.clone()),
            _ => None,
        })
        .collect();
    let mut usb = crate::device_manager::usb::attach_xhci(&dm, &xhci_configs, &mem)?;
    let mut boot_order = boot_paths(config.machine, &config.ide);
    boot_order.extend(virtio_pci.boot_paths());
    let fw_cfg = FwCfgConfig {
        memory_bytes: config.memory_bytes,
        low_ram_limit: low_limit,
        cpus: config.smp.cpus,
        max_cpus: config.smp.maxcpus,
        files: &config.fw_cfg,
        feature_control: rvmm_arch::cpu::feature_control(&base_cpuid),
        firmware: boot.firmware_items(&config.firmware.boot, boot_order, smbios),
    };
    attach_fw_cfg(&dm, &fw_cfg, &mem, kernel_files.as_ref())?;
    if let (Some(pci), false) = (&pci, boot.is_firmware()) {
        // No firmware runs under direct kernel boot: rvmm programs the BARs, as firmware would.
        pci.program_bars()?;
    }
    let (mut device_lines, mut resamplers) = virtio.irq_lines()?;
    device_lines.append(&mut virtio_pci.lines);
    resamplers.append(&mut virtio_pci.resamplers);
    device_lines.extend(std::mem::take(&mut legacy.i8042_irqs));
    let storage_lines = std::mem::take(&mut storage.lines);
    device_lines.extend(storage_lines);
    resamplers.extend(std::mem::take(&mut storage.resamplers));
    device_lines.append(&mut usb.lines);
    resamplers.append(&mut usb.resamplers);
    let cmos = chipset.cmos;
    cmos.connect_wake(ctl.clone());
    device_lines.push(cmos.irq_line().map_err(|source| {
        crate::device_manager::DeviceManagerError::Interrupt {
            name: "RTC interrupt".into(),
            source,
        }
    })?);
    if let Some((line, resampler)) = crate::platform::sci_line(config, &acpi_pm)? {
        device_lines.push(line);
        resamplers.extend(resampler);
    }
    let (ioapic, ioapic_lines) =
        crate::platform::attach_irqchip(&dm, config.irqchip, serial.as_deref(), device_lines)?;
    let vcpu_boot = Arc::new(VcpuBoot {
        target: boot.target(),
    });

    let topo = crate::platform::topology(config);
    let mut vcpus = Vec::with_capacity(cpus as usize);
    for index in 0..cpus {
        // The KVM vCPU ID is the APIC ID, as in QEMU.
        let apic_id = topo.apic_id(index);
        let vcpu = vm.create_vcpu(apic_id)?;
        vcpu.set_cpuid(&vcpu_cpuid(&base_cpuid, apic_id, &topo))?;
        vcpu_boot.reset_vcpu(&vcpu, boot_mem)?;
        vcpus.push(vcpu);
    }
    // Once every vCPU exists, so that KVM's APIC ID map includes them all (see reload_lapic).
    for vcpu in &vcpus {
        vcpu.reload_lapic()?;
    }
    tracing::debug!("vCPUs created");
    // The screen and its keyboard: the display device, or a blank screen without one.
    let input: Arc<dyn rvmm_devices::input::InputSink> =
        Arc::new(rvmm_devices::input::InputRouter::new(
            legacy.i8042.clone(),
            std::mem::take(&mut virtio.counts.inputs),
        ));
    // passt starts while the VM runs: a failure ends it as a set-up error would have.
    for starting in std::mem::take(&mut virtio.counts.passt) {
        let control = control.clone();
        crate::passt::watch_start(starting, move |e| {
            eprintln!("rvmm: {e}");
            control.request(crate::control::Request::Exit(crate::control::FATAL_STATUS));
        });
    }
    let vnc = match &config.vnc {
        Some(vnc) => Some(Arc::new(crate::display::start_vnc(
            vnc,
            config.name.as_deref(),
            display
                .clone()
                .unwrap_or_else(|| Arc::new(crate::display::BlankDisplay)),
            input.clone(),
        )?)),
        None => None,
    };
    // After every check that can fail, so an error stays a one-line message.
    crate::host::announce();
    if boot.is_firmware() {
        if vnc.is_none() || display.is_none() {
            // SeaBIOS's serial console carries the firmware's and bootloaders' text.
            tracing::info!(
                "no screen is shown: firmware and bootloader text goes to the serial console (keys typed here reach the guest); graphical boot menus need a VGA and a VNC client"
            );
        }
        if builtin.is_some() {
            tracing::info!("no disk given: the firmware boots rvmm's built-in disk");
        }
    }
    let qmp_server = QmpServer::bind(&config.qmp)?;
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
    let counters = Arc::new(ExitCounters::default());
    let ctx = VcpuContext {
        control: control.clone(),
        pio: dm.pio_bus().clone(),
        mmio: dm.mmio_bus().clone(),
        mem: mem.clone(),
        counters: counters.clone(),
        boot: vcpu_boot,
        ioapic,
        thread_ids: thread_ids.clone(),
        stats: stats.clone(),
        msr_indices: vm.msr_indices().into(),
        debug_threads: config.process.debug_threads,
        coalesced: coalesced_vga_window(&vm, &vcpus, &displays, dm.mmio_bus())?,
    };
    let stats_sources = virtio.stats_sources();
    let machine = Arc::new(qmp::Machine {
        events: events.clone(),
        acpi_pm: acpi_pm.clone(),
        thread_ids,
        name: config.name.clone(),
        smp: config.smp,
        exit_stats: stats.clone(),
        vnc,
        input,
        pointer_buttons: Default::default(),
        pointer_position: Default::default(),
        display: display.clone(),
        inventory: qmp::inventory::Inventory::new(
            config,
            qmp_server.chardevs(),
            legacy.serial_filename.as_deref(),
            &base_cpuid,
        ),
        kvm_stats: qmp::kvm_stats::KvmStats::open(&vm, &vcpus),
        block_stats: block_stats.clone(),
        balloon: virtio.counts.balloon.take(),
    });
    // From here on the vCPU threads exist: every path goes through Vmm::finish.
    let mut handles = Vec::with_capacity(vcpus.len());
    let mut spawn_error = None;
    for (index, vcpu) in (0u32..).zip(vcpus) {
        match VcpuHandle::spawn(vcpu, index, ctx.clone()) {
            Ok(h) => handles.push(h),
            Err(source) => {
                spawn_error = Some(VmmError::Io {
                    what: "spawn vCPU thread",
                    source,
                });
                break;
            }
        }
    }
    // QMP's thread ids (query-cpus-fast, which libvirt reads once at start-up) exist before
    // QMP is served, as QEMU waits for each vCPU thread to be created.
    crate::vcpu::wait_for_thread_ids(&machine.thread_ids[..handles.len()]);
    tracing::debug!("vCPU threads started");
    let snapshot = SnapshotContext {
        mem: mem.clone(),
        devices: dm.states().clone(),
        vm: vm.clone(),
        identity: machine_identity(config),
        file_backed: false,
    };
    let mut vmm = Vmm::new(VmmParts {
        vcpus: handles,
        control: control.clone(),
        vm,
        snapshot,
        devices: VmDevices {
            virtio,
            storage,
            acpi_pm,
            cmos: cmos.clone(),
            pci,
        },
        reloader: boot.into_reloader(mem.clone(), cmos.clone(), &config.firmware.boot),
        events,
        no_reboot: config.no_reboot,
        no_shutdown: config.process.no_shutdown,
    });
    let console = match (&config.serial, &serial, legacy.serial_input.take()) {
        (SerialConfig::Stdio, Some(serial), _) => {
            Some(crate::console::Console::new(serial.clone()))
        }
        (SerialConfig::Pty, Some(serial), Some(pty)) => {
            Some(crate::console::Console::pty(serial.clone(), pty))
        }
        _ => None,
    };
    let paths = qmp_server.paths().to_vec();
    let ran = spawn_error.map_or(Ok(()), Err).and_then(|()| {
        let mut event_loop = EventLoop::new(Sources {
            control,
            signals,
            console,
            qmp: qmp_server,
            machine,
            ioapic_lines,
            resamplers,
            rtc: cmos,
        })?;
        event_loop.qmp_server().greet_waiting();
        daemon.map(daemon::Daemon::ready).transpose()?;
        // The VMM thread's own filter, last: the threads made above do not inherit it.
        rvmm_sandbox::enter(rvmm_sandbox::ThreadKind::Main)?;
        match &config.incoming {
            None => vmm.start(config.start_paused),
            Some(incoming) => {
                let incoming = match (incoming, preloaded.take()) {
                    (_, Some((path, state))) => Incoming::Mapped(path, Box::new(state)),
                    (IncomingConfig::File(path), None) => {
                        Incoming::From(MigrationTarget::File(path.clone()))
                    }
                    (IncomingConfig::Exec(cmd), None) => {
                        Incoming::From(MigrationTarget::Exec(cmd.clone()))
                    }
                    (IncomingConfig::Unix(path), None) => {
                        Incoming::From(MigrationTarget::Socket(SocketAddr::Unix(path.clone())))
                    }
                    (IncomingConfig::Tcp(addr), None) => {
                        Incoming::From(MigrationTarget::Socket(SocketAddr::Tcp(addr.clone())))
                    }
                    (IncomingConfig::Defer, None) => Incoming::Deferred,
                };
                vmm.start_incoming(incoming, !config.start_paused)?;
            }
        }
        event_loop.run(&mut vmm)
        // The console leaves raw mode when the loop is dropped here.
    });
    if let Err(e) = ran {
        vmm.exit(crate::FATAL_STATUS);
        let _ = vmm.finish();
        remove_sockets(&paths);
        return Err(e);
    }
    let status = vmm.finish();
    tracing::debug!(?status, "VM stopped");
    remove_sockets(&paths);
    // vm-superio flushes the writer after every byte, so nothing is left to flush here.
    drop(serial);
    if let (Some(cfg), Some(stats)) = (&config.exit_stats, &stats) {
        write_reports(cfg, &stats.snapshot())?;
    }
    for d in stats_sources {
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
    tracing::debug!(
        unclaimed_pio = counters.unclaimed_pio.load(std::sync::atomic::Ordering::Relaxed),
        unclaimed_mmio = counters.unclaimed_mmio.load(std::sync::atomic::Ordering::Relaxed),
        emulated = %counters.emulated.summary(),
        "VM stopped"
    );
    status
}

/// The CPUID every vCPU starts from: `-cpu` applied to what KVM supports (docs/CPU.md), with
/// QEMU's warnings for requested features the host lacks.
/// CPUID leaf 1 EAX (version) and EDX (features), for SMBIOS type 4.
fn cpuid_leaf1(cpuid: &rvmm_hypervisor::CpuId) -> Option<(u32, u32)> {
    let l1 = cpuid.as_slice().iter().find(|e| e.function == 1)?;
    Some((l1.eax, l1.edx))
}

/// What KVM offers guests on this host, less what this host cannot run (docs/CPU.md).
pub(crate) fn supported_cpuid(hv: &Hypervisor) -> Result<rvmm_hypervisor::CpuId, VmmError> {
    let mut supported = hv.supported_cpuid()?;
    if crate::host::kvm_emulates_kernel_mode() {
        // An emulated vmcall never completes there (docs/EMULATED-KVM.md).
        hide_hypercall_features(&mut supported);
        tracing::debug!("hiding the paravirtual features that use hypercalls");
    }
    Ok(supported)
}

fn guest_cpuid(hv: &Hypervisor, config: &VmConfig) -> Result<rvmm_hypervisor::CpuId, VmmError> {
    let supported = supported_cpuid(hv)?;
    // QMP's CPU model queries (qmp/info.rs) describe this host.
    crate::qmp::info::set_host(crate::qmp::info::HostCpu {
        supported: supported.clone(),
    });
    let guest = rvmm_arch::cpu::guest_cpuid(&config.cpu, &supported)?;
    // Logged before the Hyper-V check, so tests can compare the table with QEMU's where KVM
    // lacks Hyper-V and the check refuses it.
    log_cpuid(&guest.cpuid);
    if config.cpu.hyperv.enabled() {
        config.cpu.hyperv.check(&hyperv_support(hv)?)?;
    }
    for warning in &guest.warnings {
        tracing::warn!("{warning}");
    }
    guest.check_enforce()?;
    if let Some(l1) = guest.cpuid.as_slice().iter().find(|e| e.function == 1) {
        tracing::debug!(
            "guest CPUID leaf 1: ecx={:#010x} edx={:#010x}",
            l1.ecx,
            l1.edx
        );
    }
    Ok(guest.cpuid)
}

/// The whole table, for tests/cpu_models.rs (this host's KVM may not show it to the guest).
fn log_cpuid(cpuid: &rvmm_hypervisor::CpuId) {
    for e in cpuid.as_slice() {
        tracing::debug!(
            "guest CPUID {:#010x}.{}: eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}",
            e.function,
            e.index,
            e.eax,
            e.ebx,
            e.ecx,
            e.edx
        );
    }
}

/// Which Hyper-V enlightenments KVM implements, asked as QEMU 7.2 asks when it does not use
/// KVM_GET_SUPPORTED_HV_CPUID (`get_supported_hv_cpuid_legacy`): capabilities and MSRs.
fn hyperv_support(hv: &Hypervisor) -> Result<rvmm_arch::cpu::HypervSupport, VmmError> {
    use rvmm_arch::cpu::hyperv as h;
    let msrs = hv.msr_index_list()?;
    let has_msr = |msr: u32| msrs.contains(&msr);
    Ok(rvmm_arch::cpu::HypervSupport {
        hyperv: hv.has_capability(kvm_bindings::KVM_CAP_HYPERV),
        time: hv.has_capability(kvm_bindings::KVM_CAP_HYPERV_TIME),
        tlbflush: hv.has_capability(kvm_bindings::KVM_CAP_HYPERV_TLBFLUSH),
        send_ipi: hv.has_capability(kvm_bindings::KVM_CAP_HYPERV_SEND_IPI),
        msr_vp_index: has_msr(h::HV_X64_MSR_VP_INDEX),
        msr_reset: has_msr(h::HV_X64_MSR_RESET),
        msr_vp_runtime: has_msr(h::HV_X64_MSR_VP_RUNTIME),
        msr_frequencies: has_msr(h::HV_X64_MSR_TSC_FREQUENCY),
        msr_crash: has_msr(h::HV_X64_MSR_CRASH_CTL),
    })
}

/// What a snapshot's VM and the restoring VM must share (the device list comes from the buses).
fn machine_identity(config: &VmConfig) -> MachineIdentity {
    MachineIdentity {
        machine: format!("{:?}", config.machine),
        memory_bytes: config.memory_bytes,
        smp: format!("{:?}", config.smp),
        cpu: format!("{:?}", config.cpu),
        irqchip: format!("{:?}, pit={}", config.irqchip, config.pit),
        devices: Vec::new(),
    }
}

/// QEMU removes its listening sockets at exit too.
fn remove_sockets(paths: &[std::path::PathBuf]) {
    for path in paths {
        // Already gone is fine.
        let _ = std::fs::remove_file(path);
    }
}
