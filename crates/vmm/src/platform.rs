//! The PC platform pieces the builder attaches after the legacy devices: the interrupt
//! controller and the device interrupt lines.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::interrupts::{connect_lines, IoapicLine, KvmMsi, Resampler};
use crate::VmmError;
use rvmm_cli::{IrqchipMode, VmConfig};
use rvmm_devices::legacy::{self, AcpiPm, Ioapic, SerialDevice};
use rvmm_devices::IrqLine;
use std::sync::Arc;

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
/// Whether PC firmware boots the VM: on pc and q35 without `-kernel`, as in QEMU (microvm
/// without `-kernel` boots rvmm's built-in guest directly).
pub fn firmware_boot(config: &VmConfig) -> bool {
    config.machine != rvmm_cli::MachineKind::Microvm && config.kernel.is_none()
}

/// Where the RAM below 4 GiB ends at the latest. Under firmware, q35 follows QEMU (its ECAM
/// window at 0xb0000000, which SeaBIOS programs, must not be RAM); direct kernel boot keeps
/// rvmm's 3 GiB split, which its boot protocols describe to the kernel.
pub fn low_ram_limit(config: &VmConfig) -> u64 {
    if config.machine == rvmm_cli::MachineKind::Q35 && firmware_boot(config) {
        rvmm_arch::layout::q35_low_ram_limit(config.memory_bytes)
    } else {
        rvmm_arch::layout::MMIO_GAP_START
    }
}

pub fn needs_x2apic_api(config: &VmConfig) -> bool {
    let topo = topology(config);
    config.smp.cpus > 0 && topo.apic_id(config.smp.cpus - 1) > 254
}

fn device_err(what: &'static str) -> impl FnOnce(rvmm_devices::InterruptError) -> VmmError {
    move |source| {
        VmmError::Devices(DeviceManagerError::Interrupt {
            name: what.into(),
            source,
        })
    }
}

/// Put the user-space IOAPIC on the MMIO bus (`irqchip` split) and connect the device interrupt
/// lines (COM1 on IRQ 4, then `device_lines`, e.g. virtio's) to whichever IOAPIC the mode has.
/// Returns the user-space IOAPIC and the lines the event loop serves for it.
pub fn attach_irqchip(
    dm: &DeviceManager,
    irqchip: IrqchipMode,
    serial: Option<&SerialDevice>,
    device_lines: Vec<IrqLine>,
) -> Result<(Option<Arc<Ioapic>>, Vec<IoapicLine>), VmmError> {
    let ioapic = match irqchip {
        IrqchipMode::Kernel => None,
        IrqchipMode::Split => {
            let ioapic = Arc::new(Ioapic::new(Arc::new(KvmMsi(dm.vm().clone()))));
            let range = dm.fixed_mmio().ioapic;
            dm.add_fixed_mmio(range, ioapic.clone())?;
            dm.states().register(range.name, ioapic.clone());
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
    let served = connect_lines(dm.vm(), ioapic.as_ref(), lines)?;
    Ok((ioapic, served))
}

/// The ACPI SCI (the FADT's SCI_INT, IRQ 9, level-triggered) of `acpi_pm`, and what turns each
/// resample (the guest's EOI) into [`AcpiPm::resample`] (served by the event loop). None without
/// ACPI, where IRQ 9 may belong to a virtio-mmio device (`virtio_mmio.device=` lines start at
/// IRQ 5).
pub fn sci_line(
    config: &VmConfig,
    acpi_pm: &Arc<AcpiPm>,
) -> Result<Option<(IrqLine, Option<Resampler>)>, VmmError> {
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
    let resampler = resample.map(|evt| {
        let pm = acpi_pm.clone();
        Resampler::new(evt, Box::new(move || pm.resample()))
    });
    Ok(Some((line, resampler)))
}
