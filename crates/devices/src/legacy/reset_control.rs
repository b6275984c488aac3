//! Reset control register at port 0xCF9 (ICH9 RST_CNT, PIIX3 RCR), the ACPI reset register
//! rvmm's FADT names. Writing a value with RST_CPU (bit 2) set resets the machine, as QEMU's
//! `ich9_rst_cnt_write`; otherwise SYS_RST (bit 1) and FULL_RST (bit 3) are stored and read
//! back.

use std::sync::{Arc, Mutex, PoisonError};

use crate::{BusDevice, VmControl, VmRequest};

pub const RESET_CONTROL_PORT: u64 = 0xcf9;
/// One byte: 0xCF8-0xCFB around it belong to the PCI configuration address register, which
/// only takes 32-bit accesses at 0xCF8.
pub const RESET_CONTROL_LEN: u64 = 1;

const RST_CPU: u8 = 0x04;
const STORED_BITS: u8 = 0x0a;

/// The reset control register.
pub struct ResetControl {
    value: Mutex<u8>,
    control: Arc<dyn VmControl>,
}

impl ResetControl {
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self {
            value: Mutex::new(0),
            control,
        }
    }
}

impl BusDevice for ResetControl {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let v = *self.value.lock().unwrap_or_else(PoisonError::into_inner);
        data.fill(0);
        if let (0, Some(b)) = (offset, data.first_mut()) {
            *b = v;
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (0, Some(&v)) = (offset, data.first()) else {
            return;
        };
        if v & RST_CPU != 0 {
            *self.value.lock().unwrap_or_else(PoisonError::into_inner) = 0;
            self.control.request(VmRequest::Reset);
        } else {
            *self.value.lock().unwrap_or_else(PoisonError::into_inner) = v & STORED_BITS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;

    #[test]
    fn rst_cpu_resets_and_other_bits_are_stored() {
        let ctl = Arc::new(RecordingVmControl::default());
        let r = ResetControl::new(ctl.clone());
        r.write(0, &[0x02]);
        let mut b = [0xffu8];
        r.read(0, &mut b);
        assert_eq!(b, [0x02]);
        assert!(ctl.requests().is_empty());
        r.write(0, &[0x0f]);
        assert_eq!(ctl.requests(), vec![VmRequest::Reset]);
        r.write(0, &[0x06]);
        assert_eq!(ctl.requests(), vec![VmRequest::Reset, VmRequest::Reset]);
        r.read(0, &mut b);
        assert_eq!(b, [0]);
        r.write(0, &[]);
        r.write(5, &[0x04]);
        r.read(5, &mut b);
        assert_eq!(b, [0]);
        assert_eq!(ctl.requests().len(), 2);
    }
}
