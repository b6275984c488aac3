//! Legacy PC devices: the ones a QEMU `pc`/`q35` guest expects at fixed port and MMIO addresses.
//!
//! Every device takes `&self` and locks only the state it changes. None of them trusts the
//! access: any offset inside its range and any size (1, 2, 4, 8 or odd) is handled without
//! panicking.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod pc_testdev;
pub mod port80;
pub mod port92;
pub mod reset_control;
pub mod serial;

pub use acpi_pm::{
    AcpiPm, WakeReason, PM1A_CNT_OFFSET, PM1A_EVT_OFFSET, PM_BASE, PM_LEN, PM_TMR_OFFSET,
    SMI_EN_APMC_EN,
};
pub use cmos::{Cmos, CmosMemory, CMOS_PORT_BASE, CMOS_PORT_LEN, RTC_IRQ};
pub use debug_exit::{DebugExit, DEBUG_EXIT_DEFAULT_IOBASE, DEBUG_EXIT_DEFAULT_IOSIZE};
pub use fw_cfg::{FwCfg, FwCfgError, FW_CFG_PORT_BASE, FW_CFG_PORT_LEN};
pub use i8042::{
    I8042CommandPort, I8042DataPort, I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT,
    I8042_KBD_IRQ, I8042_PORT_LEN,
};
pub use ioapic::{Ioapic, IOAPIC_LEN, IOAPIC_PINS};
pub use pc_testdev::{
    PcTestdev, PcTestdevIomem, PcTestdevIrq, PcTestdevPorts, PC_TESTDEV_IOMEM_BASE,
    PC_TESTDEV_IOMEM_LEN, PC_TESTDEV_IRQ_BASE, PC_TESTDEV_IRQ_LEN, PC_TESTDEV_PORT_BASE,
    PC_TESTDEV_PORT_LEN,
};
pub use port80::{Port80Sink, PORT80_BASE, PORT80_LEN};
pub use port92::{Port92, PORT92_LEN, PORT92_PORT};
pub use reset_control::{ResetControl, RESET_CONTROL_LEN, RESET_CONTROL_PORT};
pub use serial::{SerialDevice, SerialError, COM1_BASE, COM1_IRQ, SERIAL_PORT_LEN};

/// The little-endian value of the first (up to) 8 bytes of `data`; missing high bytes are zero.
pub(crate) fn le_value(data: &[u8]) -> u64 {
    data.iter()
        .take(8)
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;
    use crate::{MmioBus, PioBus, VmRequest};
    use std::sync::Arc;

    /// Every legacy device at its constant address, the way the VMM maps them.
    #[test]
    fn all_devices_fit_on_the_pc_buses() {
        let ctl = Arc::new(RecordingVmControl::default());
        let pio = PioBus::new();
        let mmio = MmioBus::new();
        let serial = Arc::new(SerialDevice::new(Box::new(std::io::sink())).unwrap());
        pio.add("dev", COM1_BASE, SERIAL_PORT_LEN, serial).unwrap();
        let exit = Arc::new(DebugExit::new(ctl.clone()));
        pio.add("dev", DEBUG_EXIT_DEFAULT_IOBASE, exit.iosize(), exit)
            .unwrap();
        let kbd = I8042::new(ctl.clone());
        pio.add("dev", I8042_DATA_PORT, I8042_PORT_LEN, kbd.data_port())
            .unwrap();
        pio.add(
            "dev",
            I8042_COMMAND_PORT,
            I8042_PORT_LEN,
            kbd.command_port(),
        )
        .unwrap();
        pio.add("dev", PORT80_BASE, PORT80_LEN, Arc::new(Port80Sink::new()))
            .unwrap();
        let testdev = PcTestdev::new();
        pio.add(
            "dev",
            PC_TESTDEV_PORT_BASE,
            PC_TESTDEV_PORT_LEN,
            testdev.ports,
        )
        .unwrap();
        pio.add("dev", PC_TESTDEV_IRQ_BASE, PC_TESTDEV_IRQ_LEN, testdev.irq)
            .unwrap();
        mmio.add(
            "dev",
            PC_TESTDEV_IOMEM_BASE,
            PC_TESTDEV_IOMEM_LEN,
            testdev.iomem,
        )
        .unwrap();
        pio.add(
            "dev",
            FW_CFG_PORT_BASE,
            FW_CFG_PORT_LEN,
            Arc::new(FwCfg::new()),
        )
        .unwrap();
        pio.add("dev", PM_BASE, PM_LEN, Arc::new(AcpiPm::new(ctl.clone())))
            .unwrap();

        assert!(pio
            .snapshot()
            .write(FW_CFG_PORT_BASE, &0u16.to_le_bytes())
            .is_some());
        let mut sig = [0u8; 4];
        for b in sig.iter_mut() {
            assert!(pio
                .snapshot()
                .read(FW_CFG_PORT_BASE + 1, std::slice::from_mut(b))
                .is_some());
        }
        assert_eq!(&sig, b"QEMU");
        assert!(pio
            .snapshot()
            .write(PC_TESTDEV_PORT_BASE, &[1, 2, 3, 4])
            .is_some());
        let mut d = [0u8; 4];
        assert!(pio
            .snapshot()
            .read(PC_TESTDEV_PORT_BASE + 8, &mut d)
            .is_some());
        assert_eq!(d, [1, 2, 3, 4]);
        assert!(mmio
            .snapshot()
            .write(PC_TESTDEV_IOMEM_BASE + 0x100, &[5, 6])
            .is_some());
        assert!(mmio
            .snapshot()
            .read(PC_TESTDEV_IOMEM_BASE + 0x100, &mut d[..2])
            .is_some());
        assert_eq!(d[..2], [5, 6]);
        assert!(pio.snapshot().write(I8042_COMMAND_PORT, &[0xfe]).is_some());
        assert!(pio
            .snapshot()
            .write(PM_BASE + PM1A_CNT_OFFSET, &0x2000u16.to_le_bytes())
            .is_some());
        assert!(pio
            .snapshot()
            .write(DEBUG_EXIT_DEFAULT_IOBASE, &[0x10])
            .is_some());
        assert_eq!(
            ctl.requests(),
            vec![VmRequest::Reset, VmRequest::PowerOff, VmRequest::Exit(0x21)]
        );
        // Port 0x61 (PIT/speaker) stays free between the i8042 ports.
        assert!(pio.snapshot().read(0x61, &mut d[..1]).is_none());
    }

    #[test]
    fn le_value_of_any_width() {
        assert_eq!(le_value(&[]), 0);
        assert_eq!(le_value(&[0x34, 0x12]), 0x1234);
        assert_eq!(le_value(&[1, 2, 3]), 0x030201);
        assert_eq!(le_value(&[0xff; 12]), u64::MAX);
    }
}
