//! System control port A at 0x92 (QEMU hw/i386/port92.c): bit 1 is the fast A20 gate, bit 0
//! fast reset. The byte reads back as written (A20 on at power-on, as the 0x02 QEMU's SeaBIOS
//! boots read, sb/x86.h `set_a20`); a 0-to-1 edge of bit 0 requests [`VmRequest::Reset`], after
//! which the bit reads 0 again (QEMU's `port92_reset`). KVM keeps A20 enabled whatever bit 1
//! says, as it does for the i8042's A20 line.

use std::sync::{Arc, Mutex, PoisonError};

use crate::{BusDevice, VmControl, VmRequest};

pub const PORT92_PORT: u64 = 0x92;
pub const PORT92_LEN: u64 = 1;

const FAST_RESET: u8 = 0x01;
const A20: u8 = 0x02;

/// The system control port A register.
pub struct Port92 {
    value: Mutex<u8>,
    control: Arc<dyn VmControl>,
}

impl Port92 {
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self {
            value: Mutex::new(A20),
            control,
        }
    }
}

impl BusDevice for Port92 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let v = *self.value.lock().unwrap_or_else(PoisonError::into_inner);
        data.fill(0xff);
        if let (0, Some(b)) = (offset, data.first_mut()) {
            *b = v;
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (0, Some(&v)) = (offset, data.first()) else {
            return;
        };
        let reset = {
            let mut value = self.value.lock().unwrap_or_else(PoisonError::into_inner);
            let reset = v & FAST_RESET != 0 && *value & FAST_RESET == 0;
            *value = if reset { v & !FAST_RESET } else { v };
            reset
        };
        if reset {
            self.control.request(VmRequest::Reset);
        }
    }
}

/// The A20 gate bit (bit 0, the reset bit, is write-only).
impl crate::Persist for Port92 {
    type State = u8;

    fn save(&self) -> u8 {
        *self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn restore(&self, value: u8) -> Result<(), crate::StateError> {
        *self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;

    #[test]
    fn a20_reads_back_and_bit_0_resets() {
        let ctl = Arc::new(RecordingVmControl::default());
        let p = Port92::new(ctl.clone());
        let inb = |p: &Port92| {
            let mut b = [0u8; 1];
            p.read(0, &mut b);
            b[0]
        };
        assert_eq!(inb(&p), 0x02);
        // SeaBIOS's set_a20 read-modify-write.
        p.write(0, &[0x00]);
        assert_eq!(inb(&p), 0x00);
        p.write(0, &[0x02]);
        assert_eq!(inb(&p), 0x02);
        assert!(ctl.requests().is_empty());
        p.write(0, &[0x03]);
        assert_eq!(ctl.requests(), vec![VmRequest::Reset]);
        assert_eq!(inb(&p), 0x02);
        let mut w = [0u8; 2];
        p.read(0, &mut w);
        assert_eq!(w, [0x02, 0xff]);
        p.read(1, &mut w);
        p.write(u64::MAX, &[1]);
        p.write(0, &[]);
        assert_eq!(ctl.requests(), vec![VmRequest::Reset]);
    }
}
