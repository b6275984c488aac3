//! isa-debug-exit (QEMU hw/misc/debugexit.c): a guest write of `v` ends the VM with process
//! status `(v << 1) | 1`, so a test guest can report pass/fail through the exit code.

use std::sync::Arc;

use super::le_value;
use crate::{BusDevice, VmControl, VmRequest};

/// QEMU's default `iobase` property.
pub const DEBUG_EXIT_DEFAULT_IOBASE: u64 = 0x501;
/// QEMU's default `iosize` property.
pub const DEBUG_EXIT_DEFAULT_IOSIZE: u64 = 2;
/// QEMU accepts accesses of 1 to 4 bytes (`valid.max_access_size = 4`).
const MAX_ACCESS: u64 = 4;

/// The isa-debug-exit device. Map it at `iobase` with length [`DebugExit::iosize`].
pub struct DebugExit {
    control: Arc<dyn VmControl>,
    iosize: u64,
}

impl DebugExit {
    /// A device with QEMU's default `iosize` (2).
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self::with_iosize(control, DEBUG_EXIT_DEFAULT_IOSIZE)
    }

    /// A device decoding `iosize` ports (`-device isa-debug-exit,iosize=N`); 0 is taken as 1.
    pub fn with_iosize(control: Arc<dyn VmControl>, iosize: u64) -> Self {
        Self {
            control,
            iosize: iosize.max(1),
        }
    }

    /// Number of ports to map.
    pub fn iosize(&self) -> u64 {
        self.iosize
    }

    /// The status QEMU would exit with for a write of `value`: `exit((val << 1) | 1)` truncated
    /// to C `int` (the shell then sees the low 8 bits).
    pub fn exit_code(value: u64) -> i32 {
        ((value << 1) | 1) as i32
    }
}

impl BusDevice for DebugExit {
    /// QEMU's `debug_exit_read` returns 0.
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // QEMU's memory core clips the access to the bytes inside the region and to 4 bytes.
        let inside = self.iosize.saturating_sub(offset).min(MAX_ACCESS);
        let len = (data.len() as u64).min(inside) as usize;
        let Some(bytes) = data.get(..len).filter(|b| !b.is_empty()) else {
            return;
        };
        self.control
            .request(VmRequest::Exit(Self::exit_code(le_value(bytes))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;

    fn setup(iosize: u64) -> (Arc<RecordingVmControl>, DebugExit) {
        let ctl = Arc::new(RecordingVmControl::default());
        let dev = DebugExit::with_iosize(ctl.clone(), iosize);
        (ctl, dev)
    }

    #[test]
    fn write_requests_qemu_exit_status() {
        let (ctl, dev) = setup(4);
        dev.write(0, &[0x10]);
        dev.write(0, &0x11u16.to_le_bytes());
        dev.write(0, &0x7fu32.to_le_bytes());
        assert_eq!(
            ctl.requests(),
            vec![
                VmRequest::Exit(0x21),
                VmRequest::Exit(0x23),
                VmRequest::Exit(0xff)
            ]
        );
        // The shell sees status & 0xff: 0x80 -> (0x101 & 0xff) = 1, like QEMU.
        assert_eq!(DebugExit::exit_code(0x80) & 0xff, 1);
        assert_eq!(DebugExit::exit_code(0xffff_ffff), -1);
    }

    #[test]
    fn write_is_clipped_to_iosize() {
        let (ctl, dev) = setup(DEBUG_EXIT_DEFAULT_IOSIZE);
        dev.write(0, &0x0003_0001u32.to_le_bytes());
        // At offset 1 of a 2-port device only one byte is inside.
        dev.write(1, &[0x02, 0xff, 0xff, 0xff]);
        assert_eq!(ctl.requests(), vec![VmRequest::Exit(3), VmRequest::Exit(5)]);
    }

    #[test]
    fn reads_are_zero_and_odd_accesses_are_safe() {
        let (ctl, dev) = setup(0);
        assert_eq!(dev.iosize(), 1);
        let mut d = [0xaa; 8];
        dev.read(0, &mut d);
        assert_eq!(d, [0; 8]);
        dev.write(0, &[]);
        dev.write(5, &[1]);
        dev.write(u64::MAX, &[1, 2, 3]);
        assert!(ctl.requests().is_empty());
        dev.write(0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(ctl.requests(), vec![VmRequest::Exit(3)]);
    }
}
