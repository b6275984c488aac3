//! 16550A UART (COM1) on top of vm-superio's `Serial`.
//!
//! Wide accesses: QEMU's serial region is implemented byte-wide (`impl.max_access_size = 1`), so
//! its memory core splits an N-byte access into N byte accesses at consecutive registers
//! (`outw 0x3f8` writes THR and then IER). We do the same; bytes that fall past the 8 registers
//! are dropped on write and read as 0xff, like unassigned ISA ports.
//!
//! Output: vm-superio writes and flushes the writer after every THR byte, so output appears at
//! once and nothing is buffered in the device. A failing writer loses that byte only (the THR
//! empty interrupt is still raised so the guest driver never stalls).

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::BusDevice;

/// First port of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of UART registers (ports) the device decodes.
pub const SERIAL_PORT_LEN: u64 = 8;
/// ISA interrupt line of COM1; the VMM registers [`SerialDevice::interrupt_evt`] as its irqfd.
pub const COM1_IRQ: u32 = 4;

/// Errors creating a serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("failed to create the serial interrupt eventfd")]
    CreateEventFd(#[source] io::Error),
    #[error("failed to clone the serial interrupt eventfd")]
    CloneEventFd(#[source] io::Error),
}

/// vm-superio `Trigger` that signals an eventfd (later an irqfd for IRQ 4).
struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

type Uart = Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>;

/// A 16550A UART whose transmitter writes to a host `Write` and whose interrupt is an eventfd.
pub struct SerialDevice {
    uart: Mutex<Uart>,
    /// A clone of the trigger's eventfd, reachable without taking the UART lock.
    interrupt_evt: EventFd,
}

impl SerialDevice {
    /// A UART writing guest output to `out`, with a fresh non-blocking interrupt eventfd.
    pub fn new(out: Box<dyn Write + Send>) -> Result<Self, SerialError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(SerialError::CreateEventFd)?;
        Self::with_interrupt_evt(evt, out)
    }

    /// A UART that signals `interrupt_evt` when it raises its interrupt line.
    pub fn with_interrupt_evt(
        interrupt_evt: EventFd,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, SerialError> {
        let trigger = interrupt_evt
            .try_clone()
            .map_err(SerialError::CloneEventFd)?;
        Ok(Self {
            uart: Mutex::new(Serial::new(EventFdTrigger(trigger), out)),
            interrupt_evt,
        })
    }

    /// The eventfd signalled on every interrupt (register it as the irqfd for [`COM1_IRQ`]).
    pub fn interrupt_evt(&self) -> &EventFd {
        &self.interrupt_evt
    }

    /// An owned duplicate of the interrupt eventfd.
    pub fn try_clone_interrupt_evt(&self) -> Result<EventFd, SerialError> {
        self.interrupt_evt
            .try_clone()
            .map_err(SerialError::CloneEventFd)
    }

    /// Queue host input (stdin) for the guest to read from RBR. Returns how many bytes fit in
    /// the receive FIFO; the caller keeps the rest and retries later (0 when the FIFO is full or
    /// the UART is in loopback mode).
    pub fn enqueue_input(&self, bytes: &[u8]) -> usize {
        self.lock().enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn input_capacity(&self) -> usize {
        self.lock().fifo_capacity()
    }

    fn lock(&self) -> MutexGuard<'_, Uart> {
        // A poisoned lock still holds consistent register state; keep serving the guest.
        self.uart.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The UART's registers and receive FIFO (vm-superio's `SerialState`, which has no serde).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

/// The 16550A's receive FIFO depth: a longer saved buffer is not from a UART.
const FIFO_SIZE: usize = 64;

impl crate::Persist for SerialDevice {
    type State = SerialSnapshot;

    fn save(&self) -> SerialSnapshot {
        let s = self.lock().state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    fn restore(&self, s: SerialSnapshot) -> Result<(), crate::StateError> {
        if s.in_buffer.len() > FIFO_SIZE {
            return Err(crate::StateError::Invalid(format!(
                "COM1 receive FIFO of {} bytes (at most {FIFO_SIZE})",
                s.in_buffer.len()
            )));
        }
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        };
        let trigger = || {
            self.interrupt_evt
                .try_clone()
                .map(EventFdTrigger)
                .map_err(|e| crate::StateError::Invalid(format!("COM1 interrupt eventfd: {e}")))
        };
        let mut uart = self.lock();
        // The writer moves from the old UART to the restored one.
        let sink: Box<dyn Write + Send> = Box::new(io::sink());
        let old = std::mem::replace(&mut *uart, Serial::new(trigger()?, sink));
        let out = old.into_writer();
        *uart = Serial::from_state(&state, trigger()?, NoEvents, out)
            .map_err(|e| crate::StateError::Invalid(format!("COM1: {e:?}")))?;
        Ok(())
    }
}

/// The UART register for the `i`-th byte of an access at `offset`, if it is one of ours.
fn register(offset: u64, i: usize) -> Option<u8> {
    let reg = offset.checked_add(i as u64)?;
    (reg < SERIAL_PORT_LEN).then_some(reg as u8)
}

impl BusDevice for SerialDevice {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut uart = self.lock();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match register(offset, i) {
                Some(reg) => uart.read(reg),
                None => 0xff,
            };
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut uart = self.lock();
        for (i, &byte) in data.iter().enumerate() {
            if let Some(reg) = register(offset, i) {
                // Errors are a lost output byte or a failed eventfd write; the guest can do
                // nothing about either, and vm-superio has already updated the registers.
                let _ = uart.write(reg, byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    /// A writer the test can inspect, counting flushes.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    struct FailingWriter;
    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("broken pipe"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("broken pipe"))
        }
    }

    fn read1(dev: &SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8; 1];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn thr_writes_reach_the_writer_flushed() {
        let buf = SharedBuf::default();
        let dev = SerialDevice::new(Box::new(buf.clone())).unwrap();
        for &b in b"hi\n" {
            dev.write(THR, &[b]);
        }
        let (out, flushes) = buf.0.lock().unwrap().clone();
        assert_eq!(out, b"hi\n");
        assert_eq!(flushes, 3);
        // THR empty and transmitter idle: a polling driver never waits.
        assert_eq!(read1(&dev, LSR) & 0x60, 0x60);
    }

    #[test]
    fn thr_empty_interrupt_signals_eventfd() {
        let dev = SerialDevice::new(Box::new(io::sink())).unwrap();
        let evt = dev.try_clone_interrupt_evt().unwrap();
        assert!(evt.read().is_err(), "no interrupt before IER is set");
        dev.write(IER, &[0x02]);
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(read1(&dev, IIR) & 0x0f, 0x02);
    }

    #[test]
    fn input_is_readable_and_raises_rx_interrupt() {
        let dev = SerialDevice::new(Box::new(io::sink())).unwrap();
        dev.write(IER, &[0x01]);
        assert_eq!(dev.enqueue_input(b"ab"), 2);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
        assert_eq!(read1(&dev, LSR) & 1, 1);
        assert_eq!(read1(&dev, THR), b'a');
        assert_eq!(read1(&dev, THR), b'b');
        assert_eq!(read1(&dev, LSR) & 1, 0);
        // The FIFO is bounded; the rest is reported back to the caller.
        let cap = dev.input_capacity();
        assert_eq!(dev.enqueue_input(&vec![0u8; cap + 10]), cap);
        assert_eq!(dev.enqueue_input(b"x"), 0);
        assert_eq!(dev.enqueue_input(b""), 0);
    }

    #[test]
    fn wide_accesses_hit_consecutive_registers() {
        let buf = SharedBuf::default();
        let dev = SerialDevice::new(Box::new(buf.clone())).unwrap();
        // outw at SCR-1: MSR ignores writes in vm-superio, SCR takes the high byte.
        dev.write(SCR - 1, &[0x00, 0x5a]);
        assert_eq!(read1(&dev, SCR), 0x5a);
        let mut w = [0u8; 2];
        dev.read(LCR, &mut w);
        assert_eq!(w[0], 0x03, "8N1 default LCR");
        // Bytes past the last register read as floating ISA lines and are dropped on write.
        let mut q = [0u8; 4];
        dev.read(SCR, &mut q);
        assert_eq!(q, [0x5a, 0xff, 0xff, 0xff]);
        dev.write(SCR, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read1(&dev, SCR), 1);
        assert!(buf.0.lock().unwrap().0.is_empty());
    }

    #[test]
    fn any_offset_and_size_is_safe() {
        let dev = SerialDevice::new(Box::new(FailingWriter)).unwrap();
        for offset in [0, 1, 5, 7, 8, 0xffff, u64::MAX] {
            for len in [0usize, 1, 2, 3, 4, 8, 9] {
                let mut d = vec![0xa5; len];
                dev.read(offset, &mut d);
                dev.write(offset, &d);
            }
        }
        // A broken writer loses output but the UART keeps answering.
        dev.write(THR, b"x");
        assert_eq!(read1(&dev, LSR) & 0x60, 0x60);
    }

    #[test]
    fn state_survives_save_and_restore() {
        use crate::Persist;
        let out = SharedBuf::default();
        let a = SerialDevice::new(Box::new(out.clone())).unwrap();
        a.write(LCR, &[0x03]);
        a.write(SCR, &[0x5a]);
        a.write(IER, &[0x01]);
        a.enqueue_input(b"hi");
        let saved = a.save();
        let b = SerialDevice::new(Box::new(SharedBuf::default())).unwrap();
        b.restore(saved.clone()).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(read1(&b, SCR), 0x5a);
        assert_eq!(read1(&b, THR), b'h');
        // The restored UART still writes where it wrote before.
        a.restore(saved.clone()).unwrap();
        a.write(THR, b"z");
        assert!(out.0.lock().unwrap().0.ends_with(b"z"));
        // A FIFO no 16550A has is refused.
        let mut bad = saved;
        bad.in_buffer = vec![0; 65];
        assert!(b.restore(bad).is_err());
    }
}
