//! The APM control (0xb2, APMC) and status (0xb3, APMS) ports, as QEMU's hw/isa/apm.c: both read
//! back what was last written to them. A write to APMC with the FADT's ACPI_ENABLE or
//! ACPI_DISABLE value sets or clears SCI_EN (QEMU's `acpi_pm1_cnt_update`; ICH9 2/3, PIIX4
//! 0xf1/0xf0); any other value would raise an SMI, and rvmm has no SMM, so it does nothing.
//! Like QEMU's, the two bytes survive a system reset.
//!
//! SeaBIOS writes APMS and APMC and then waits for APMS to read 0 only when it believes SMM
//! is not set up yet (sb/fw/smm.c `smm_relocate_and_restore`), which the chipset prevents (see
//! [`super`]); an absent port reading 0xff would make that loop spin for ever.

use std::sync::{Arc, Mutex, PoisonError};

use crate::legacy::AcpiPm;
use crate::BusDevice;

/// APMC at 0xb2, APMS at 0xb3.
pub const APM_PORT_BASE: u64 = 0xb2;
pub const APM_PORT_LEN: u64 = 2;

/// Whose ACPI enable/disable commands APMC understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApmKind {
    /// ICH9 LPC (QEMU `ICH9_APM_ACPI_ENABLE` 2, `ICH9_APM_ACPI_DISABLE` 3).
    Ich9,
    /// PIIX4 PM (QEMU `ACPI_ENABLE` 0xf1, `ACPI_DISABLE` 0xf0).
    Piix4,
}

impl ApmKind {
    fn commands(self) -> (u8, u8) {
        match self {
            ApmKind::Ich9 => (0x02, 0x03),
            ApmKind::Piix4 => (0xf1, 0xf0),
        }
    }
}

/// The two APM registers.
pub struct Apm {
    kind: ApmKind,
    /// [APMC, APMS].
    regs: Mutex<[u8; 2]>,
    pm: Option<Arc<AcpiPm>>,
}

impl Apm {
    /// `pm` is the PM block whose SCI_EN the ACPI enable/disable commands switch.
    pub fn new(kind: ApmKind, pm: Option<Arc<AcpiPm>>) -> Self {
        Self {
            kind,
            regs: Mutex::new([0; 2]),
            pm,
        }
    }
}

impl BusDevice for Apm {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let regs = *self.regs.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|a| regs.get(usize::try_from(a).ok()?).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut command = None;
        {
            let mut regs = self.regs.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, &b) in data.iter().enumerate() {
                match offset.checked_add(i as u64) {
                    Some(0) => {
                        regs[0] = b;
                        command = Some(b);
                    }
                    Some(1) => regs[1] = b,
                    _ => {}
                }
            }
        }
        let (Some(cmd), Some(pm)) = (command, &self.pm) else {
            return;
        };
        let (enable, disable) = self.kind.commands();
        if cmd == enable {
            pm.set_sci_enabled(true);
        } else if cmd == disable {
            pm.set_sci_enabled(false);
        }
    }
}

/// APMC and APMS.
impl crate::Persist for Apm {
    type State = [u8; 2];

    fn save(&self) -> [u8; 2] {
        *self.regs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn restore(&self, regs: [u8; 2]) -> Result<(), crate::StateError> {
        *self.regs.lock().unwrap_or_else(PoisonError::into_inner) = regs;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;

    #[test]
    fn ports_read_back_and_acpi_commands_switch_sci_en() {
        let pm = Arc::new(AcpiPm::new(Arc::new(RecordingVmControl::default())));
        let apm = Apm::new(ApmKind::Ich9, Some(pm.clone()));
        let mut b = [0u8; 2];
        apm.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        // sb/fw/smm.c: APMS 1, APMC 0 (an SMI request: nothing happens), then APMS polled.
        apm.write(1, &[0x01]);
        apm.write(0, &[0x00]);
        apm.read(0, &mut b);
        assert_eq!(b, [0x00, 0x01]);
        apm.write(1, &[0x00]);
        let mut s = [0u8; 1];
        apm.read(1, &mut s);
        assert_eq!(s, [0]);
        let cnt = |pm: &AcpiPm| {
            let mut c = [0u8; 2];
            pm.read(crate::legacy::PM1A_CNT_OFFSET, &mut c);
            u16::from_le_bytes(c)
        };
        assert_eq!(cnt(&pm) & 1, 1);
        apm.write(0, &[0x03]);
        assert_eq!(cnt(&pm) & 1, 0);
        apm.write(0, &[0x02]);
        assert_eq!(cnt(&pm) & 1, 1);
        // PIIX4 numbers.
        let apm = Apm::new(ApmKind::Piix4, Some(pm.clone()));
        apm.write(0, &[0xf0]);
        assert_eq!(cnt(&pm) & 1, 0);
        apm.write(0, &[0x02, 0x07]);
        assert_eq!(cnt(&pm) & 1, 0);
        apm.write(0, &[0xf1]);
        assert_eq!(cnt(&pm) & 1, 1);
        let mut w = [0u8; 4];
        apm.read(0, &mut w);
        assert_eq!(w, [0xf1, 0x07, 0xff, 0xff]);
        apm.read(u64::MAX, &mut w);
        apm.write(u64::MAX, &[1, 2]);
    }
}
