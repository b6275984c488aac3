//! The PC platform pieces the builder attaches after the legacy devices: the interrupt
//! controller and device interrupt lines, and the PCI host bridge.

use crate::builder::insert;
use crate::control::Control;
use crate::interrupts::{connect_lines, KvmMsi};
use crate::VmmError;
use rvmm_cli::{IrqchipMode, MachineKind, VmConfig};
use rvmm_devices::legacy::{self, AcpiPm, Ioapic, SerialDevice};
use rvmm_devices::pci::{
    HostBridge, HostBridgeKind, PciBus, PciConfigIo, PciConfigMmio, PCI_CONFIG_IO_BASE,
    PCI_CONFIG_IO_LEN, Q35_ECAM_BASE, Q35_ECAM_LEN,
};
use rvmm_devices::{Bus, IrqLine, VmControl};
use rvmm_hypervisor::Vm;
use std::sync::{Arc, RwLock};

/// The `-smp` topology, for APIC IDs and CPUID.
pub fn topology(config: &VmConfig) -> rvmm_arch::topology::CpuTopology {
    let s = &config.smp;
    rvmm_arch::topology::CpuTopology {
        sockets: s.sockets,
        dies: s.dies,
        cores: s.cores,
        threads: s.threads,
    }
}

/// APIC IDs above 254 need x2APIC mode and 32-bit IDs in the in-kernel LAPICs (255 is the
/// xAPIC broadcast ID).
pub fn needs_x2apic_api(config: &VmConfig) -> bool {
    let topo = topology(config);
    config.smp.cpus > 0 && topo.apic_id(config.smp.cpus - 1) > 254
}

fn device_err(what: &'static str) -> impl FnOnce(rvmm_devices::InterruptError) -> VmmError {
    move |e| VmmError::Device {
        what,
        msg: e.to_string(),
    }
}

/// Put the user-space IOAPIC on the MMIO bus (split irqchip) and connect the device interrupt
/// lines (COM1 on IRQ 4, then `device_lines`, e.g. virtio's) to whichever IOAPIC the mode has.
/// Returns the user-space IOAPIC.
pub fn attach_interrupts(
    vm: &Arc<Vm>,
    config: &VmConfig,
    mmio: &mut Bus,
    serial: Option<&SerialDevice>,
    device_lines: Vec<IrqLine>,
) -> Result<Option<Arc<Ioapic>>, VmmError> {
    let ioapic = match config.irqchip {
        IrqchipMode::Kernel => None,
        IrqchipMode::Split => {
            let ioapic = Arc::new(Ioapic::new(Arc::new(KvmMsi(vm.clone()))));
            insert(
                mmio,
                "IOAPIC",
                legacy::IOAPIC_BASE,
                legacy::IOAPIC_LEN,
                ioapic.clone(),
            )?;
            Some(ioapic)
        }
    };
    let mut lines = Vec::new();
    if let Some(serial) = serial {
        lines.push(
            IrqLine::from_eventfd(legacy::COM1_IRQ, serial.interrupt_evt())
                .map_err(device_err("COM1 interrupt"))?,
        );
    }
    lines.extend(device_lines);
    connect_lines(vm, ioapic.as_ref(), lines)?;
    Ok(ioapic)
}

/// PCI bus 0 with its host bridge, reachable through ports 0xCF8/0xCFC (pc and q35) and ECAM
/// (q35). microvm has no PCI. Returns the bus for devices attached later.
pub fn attach_pci(
    config: &VmConfig,
    control: &Arc<Control>,
    pio: &mut Bus,
    mmio: &mut Bus,
) -> Result<Option<Arc<RwLock<PciBus>>>, VmmError> {
    let kind = match config.machine {
        MachineKind::Microvm => return Ok(None),
        MachineKind::Q35 => HostBridgeKind::Q35,
        MachineKind::Pc => HostBridgeKind::I440fx,
    };
    let mut bus = PciBus::new();
    bus.add_device(0, 0, Arc::new(HostBridge::new(kind)))
        .map_err(|e| VmmError::Device {
            what: "PCI host bridge",
            msg: e.to_string(),
        })?;
    let bus = Arc::new(RwLock::new(bus));
    let ctl: Arc<dyn VmControl> = control.clone();
    insert(
        pio,
        "PCI config ports",
        PCI_CONFIG_IO_BASE,
        PCI_CONFIG_IO_LEN,
        Arc::new(PciConfigIo::new(bus.clone(), ctl)),
    )?;
    if kind == HostBridgeKind::Q35 {
        insert(
            mmio,
            "PCI ECAM",
            Q35_ECAM_BASE,
            Q35_ECAM_LEN,
            Arc::new(PciConfigMmio::new(bus.clone())),
        )?;
    }
    Ok(Some(bus))
}

/// The ACPI SCI (the FADT's SCI_INT, IRQ 9, level-triggered) of `acpi_pm`, with a thread that
/// turns each resample (the guest's EOI) into [`AcpiPm::resample`]. None without ACPI, where IRQ 9
/// may belong to a virtio-mmio device (`virtio_mmio.device=` lines start at IRQ 5).
pub fn sci_line(config: &VmConfig, acpi_pm: &Arc<AcpiPm>) -> Result<Option<IrqLine>, VmmError> {
    if !config.acpi {
        return Ok(None);
    }
    let line = acpi_pm
        .sci_line(u32::from(rvmm_arch::acpi::SCI_IRQ))
        .map_err(device_err("ACPI SCI"))?;
    let resample = line
        .resample
        .as_ref()
        .map(|evt| evt.try_clone())
        .transpose()
        .map_err(|source| VmmError::Io {
            what: "dup SCI resample eventfd",
            source,
        })?;
    if let Some(resample) = resample {
        let pm = acpi_pm.clone();
        std::thread::Builder::new()
            .name("acpi-sci".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                // Blocking read: one wake-up per EOI (or several EOIs counted together).
                match resample.read() {
                    Ok(_) => pm.resample(),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("rvmm: ACPI SCI thread: {e}");
                        return;
                    }
                }
            })
            .map_err(|source| VmmError::Io {
                what: "spawn acpi-sci thread",
                source,
            })?;
    }
    Ok(Some(line))
}
