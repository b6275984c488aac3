//! The ISA devices every machine type has at fixed ports: COM1, the i8042, the POST port, and
//! the `-device` ISA extras (isa-debug-exit, pc-testdev).

use super::{DeviceManager, DeviceManagerError};
use rvmm_cli::{DeviceConfig, SerialConfig};
use rvmm_devices::legacy::{self, DebugExit, PcTestdev, Port80Sink, SerialDevice, I8042};
use rvmm_devices::{IrqLine, VmControl};
use std::sync::Arc;

/// What the rest of the VMM keeps a handle on.
pub struct LegacyDevices {
    /// COM1, unless `-serial none` / `-nodefaults`.
    pub serial: Option<Arc<SerialDevice>>,
    /// The i8042's IRQ 1 and IRQ 12 (edge), for the interrupt controller.
    pub i8042_irqs: Vec<IrqLine>,
    /// The PS/2 keyboard and mouse, for the front ends (VNC, QMP `send-key`).
    pub i8042: Arc<I8042>,
    /// COM1's chardev filename for QMP `query-chardev` (`pty:/dev/pts/N`, ...).
    pub serial_filename: Option<String>,
    /// COM1's pty master, for its input.
    pub serial_input: Option<std::fs::File>,
}

/// Attach COM1 (as `serial` says), the i8042, port 0x80 and the ISA `-device`s.
pub fn attach_legacy(
    dm: &DeviceManager,
    serial: (&SerialConfig, Option<&str>),
    devices: &[DeviceConfig],
    control: &Arc<dyn VmControl>,
) -> Result<LegacyDevices, DeviceManagerError> {
    let backend = crate::chardev::open_serial(serial.0, serial.1).map_err(|source| {
        DeviceManagerError::Io {
            name: match serial.0 {
                SerialConfig::File(p) | SerialConfig::Append(p) => {
                    format!("-serial file:{}", p.display())
                }
                _ => format!("serial chardev {}", serial.1.unwrap_or("serial0")),
            },
            source,
        }
    })?;
    let serial_filename = backend.as_ref().map(|b| b.filename.clone());
    let (serial_input, output) = match backend {
        Some(b) => (b.input, Some(b.output)),
        None => (None, None),
    };
    let serial = match output {
        Some(out) => {
            let dev = Arc::new(SerialDevice::new(out).map_err(DeviceManagerError::Serial)?);
            dm.add_pio(
                "COM1",
                legacy::COM1_BASE,
                legacy::SERIAL_PORT_LEN,
                dev.clone(),
            )?;
            dm.states().register("COM1", dev.clone());
            Some(dev)
        }
        None => None,
    };
    let i8042 = I8042::new(control.clone());
    dm.add_pio(
        "i8042 data",
        legacy::I8042_DATA_PORT,
        legacy::I8042_PORT_LEN,
        i8042.data_port(),
    )?;
    dm.add_pio(
        "i8042 command",
        legacy::I8042_COMMAND_PORT,
        legacy::I8042_PORT_LEN,
        i8042.command_port(),
    )?;
    dm.states().register("i8042 data", i8042.clone());
    dm.states().register_stateless("i8042 command");
    dm.states().register_stateless("POST port");
    dm.add_pio(
        "POST port",
        legacy::PORT80_BASE,
        legacy::PORT80_LEN,
        Arc::new(Port80Sink::new()),
    )?;
    for dev in devices {
        match dev {
            DeviceConfig::IsaDebugExit { iobase, iosize } => {
                let d = Arc::new(DebugExit::with_iosize(control.clone(), u64::from(*iosize)));
                dm.add_pio("isa-debug-exit", u64::from(*iobase), d.iosize(), d)?;
                dm.states().register_stateless("isa-debug-exit");
            }
            DeviceConfig::PcTestdev => {
                let t = PcTestdev::new();
                dm.add_pio(
                    "pc-testdev",
                    legacy::PC_TESTDEV_PORT_BASE,
                    legacy::PC_TESTDEV_PORT_LEN,
                    t.ports,
                )?;
                dm.add_pio(
                    "pc-testdev irq",
                    legacy::PC_TESTDEV_IRQ_BASE,
                    legacy::PC_TESTDEV_IRQ_LEN,
                    t.irq,
                )?;
                dm.add_fixed_mmio(dm.fixed_mmio().pc_testdev_iomem, t.iomem)?;
            }
            // On the PCI bus (device_manager::pci).
            DeviceConfig::PciTestdev { .. }
            | DeviceConfig::Display(_)
            | DeviceConfig::Xhci(_)
            | DeviceConfig::PcieRootPort(_) => {}
        }
    }
    let mut i8042_irqs = Vec::new();
    for (gsi, evt) in [
        (legacy::I8042_KBD_IRQ, i8042.interrupt_evt()),
        (legacy::I8042_AUX_IRQ, i8042.aux_interrupt_evt()),
    ] {
        if let Some(evt) = evt {
            let line = IrqLine::from_eventfd(gsi, evt).map_err(|source| {
                DeviceManagerError::Interrupt {
                    name: format!("i8042 IRQ {gsi}"),
                    source,
                }
            })?;
            i8042_irqs.push(line);
        }
    }
    Ok(LegacyDevices {
        serial,
        i8042_irqs,
        i8042,
        serial_filename,
        serial_input,
    })
}
