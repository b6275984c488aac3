//! i8042 PS/2 controller with a keyboard ([`keyboard`]) and a mouse ([`mouse`]).
//!
//! Ports: 0x60 data, 0x64 status (read) / command (write). Port 0x61 (system control port B)
//! belongs to the PIT/speaker, so the two ports are separate bus devices sharing one state:
//! map [`I8042::data_port`] at [`I8042_DATA_PORT`] and [`I8042::command_port`] at
//! [`I8042_COMMAND_PORT`], each one port long.
//!
//! Reset: command 0xFE (and any 0xF0-0xFF pulse with bit 0 clear), or command 0xD1 followed by an
//! output-port byte with bit 0 (system reset line, active low) clear, requests
//! [`VmRequest::Reset`], as QEMU's hw/input/pckbd.c does. Linux `reboot=k` writes 0xFE to 0x64.
//!
//! Controller commands answered (a reply appears in the output buffer, status bit 0 set):
//! 0x20-0x3F read controller RAM (0x20 = command byte), 0x60-0x7F write it, 0xAA self-test
//! (0x55), 0xAB/0xA9 keyboard/AUX interface tests (0x00), 0xA7/0xA8/0xAD/0xAE disable/enable
//! ports, 0xD0/0xD1 read/write output port, 0xD2/0xD3 write the keyboard/AUX output buffer
//! (loopback), 0xD4 write to the mouse.
//!
//! One output buffer byte at a time, filled from (in order) the controller's own replies, the
//! keyboard's queue unless its port is disabled, the mouse's queue unless the AUX port is
//! disabled; status bit 5 says the byte is the mouse's. Key presses ([`InputSink::key`]) become
//! scan codes in the keyboard's set, translated to set 1 when command byte bit 6 says so.
//!
//! Interrupts: IRQ 1 (keyboard byte) and IRQ 12 (mouse byte) are pulsed through
//! [`I8042::interrupt_evt`] / [`I8042::aux_interrupt_evt`] whenever a byte becomes readable while
//! the command byte enables that port's interrupt (QEMU raises its lines then); the VMM connects
//! them as edge-triggered ISA lines. Guests that poll see the same bytes.
//! Wider accesses act on the first byte; the other bytes read as 0xff.

mod keyboard;
mod mouse;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::input::InputSink;
use crate::{BusDevice, VmControl, VmRequest};
use keyboard::Keyboard;
use mouse::Mouse;

/// The keyboard's ISA interrupt line.
pub const I8042_KBD_IRQ: u32 = 1;
/// The mouse's ISA interrupt line.
pub const I8042_AUX_IRQ: u32 = 12;

/// The data port.
pub const I8042_DATA_PORT: u64 = 0x60;
/// The status/command port.
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// Each of the two ports is mapped on its own, one port long.
pub const I8042_PORT_LEN: u64 = 1;

// Status register bits.
const STS_OBF: u8 = 0x01;
const STS_SYS: u8 = 0x04;
const STS_CMD: u8 = 0x08;
const STS_UNLOCKED: u8 = 0x10;
const STS_AUXDATA: u8 = 0x20;

// Controller command byte (CTR) bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DIS: u8 = 0x10;
const CTR_AUX_DIS: u8 = 0x20;
/// Scan code translation (set 2 to set 1) by the controller.
const CTR_XLATE: u8 = 0x40;

// Output port bits.
const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;

// Commands.
const CMD_READ_RAM_FIRST: u8 = 0x20;
const CMD_READ_RAM_LAST: u8 = 0x3f;
const CMD_WRITE_RAM_FIRST: u8 = 0x60;
const CMD_WRITE_RAM_LAST: u8 = 0x7f;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OUTBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_FIRST: u8 = 0xf0;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// Controller replies queued beyond this are dropped, so a guest cannot grow the queue.
const OUT_BUF_CAP: usize = 16;

/// Which port a byte in the output buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Source {
    Kbd,
    Aux,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct State {
    ctr: u8,
    outport: u8,
    /// Status bit 3: the last write went to the command port.
    last_was_cmd: bool,
    /// A command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    /// The output buffer.
    obf: Option<(u8, Source)>,
    /// Controller replies (and loopback bytes) waiting for the output buffer.
    replies: VecDeque<(u8, Source)>,
    /// What the data port returns when the output buffer is empty (the last byte read).
    last_read: u8,
    kbd: Keyboard,
    mouse: Mouse,
    /// A byte became readable since the interrupt was last pulsed.
    raise: Option<Source>,
}

impl State {
    fn reply(&mut self, byte: u8, source: Source) {
        if self.replies.len() < OUT_BUF_CAP {
            self.replies.push_back((byte, source));
        }
        self.fill();
    }

    /// Moves the next byte into an empty output buffer.
    fn fill(&mut self) {
        if self.obf.is_some() {
            return;
        }
        let next = self.replies.pop_front().or_else(|| {
            let kbd = (self.ctr & CTR_KBD_DIS == 0)
                .then(|| self.kbd.pop())
                .flatten()
                .map(|b| (b, Source::Kbd));
            kbd.or_else(|| {
                (self.ctr & CTR_AUX_DIS == 0)
                    .then(|| self.mouse.pop())
                    .flatten()
                    .map(|b| (b, Source::Aux))
            })
        });
        if let Some((b, src)) = next {
            self.obf = Some((b, src));
            self.raise = Some(src);
        }
    }

    fn status(&self) -> u8 {
        let mut s = STS_UNLOCKED;
        match self.obf {
            Some((_, Source::Aux)) => s |= STS_OBF | STS_AUXDATA,
            Some((_, Source::Kbd)) => s |= STS_OBF,
            None => {}
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STS_SYS;
        }
        if self.last_was_cmd {
            s |= STS_CMD;
        }
        s
    }

    fn translate(&self) -> bool {
        self.ctr & CTR_XLATE != 0
    }
}

/// The controller's, the keyboard's and the mouse's registers and queues, as they are.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct I8042State(State);

impl crate::Persist for I8042 {
    type State = I8042State;

    fn save(&self) -> I8042State {
        I8042State(self.lock().clone())
    }

    fn restore(&self, s: I8042State) -> Result<(), crate::StateError> {
        let st = s.0;
        // The queues never grow past their caps while a guest runs.
        if st.replies.len() > OUT_BUF_CAP || st.kbd.queued() > 4096 || st.mouse.queued() > 4096 {
            return Err(crate::StateError::Invalid(
                "i8042: queues longer than the device keeps".into(),
            ));
        }
        *self.lock() = st;
        Ok(())
    }
}

/// The shared controller state behind the two ports.
pub struct I8042 {
    state: Mutex<State>,
    control: Arc<dyn VmControl>,
    /// Pulsed for IRQ 1 and IRQ 12.
    irq: Option<EventFd>,
    aux_irq: Option<EventFd>,
}

impl I8042 {
    pub fn new(control: Arc<dyn VmControl>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                // Firmware has finished POST: system flag set, both port interrupts enabled.
                ctr: CTR_KBD_INT | CTR_AUX_INT | CTR_SYS,
                outport: OUT_RESET | OUT_A20,
                last_was_cmd: true,
                pending: None,
                obf: None,
                replies: VecDeque::new(),
                last_read: 0,
                kbd: Keyboard::new(),
                mouse: Mouse::new(),
                raise: None,
            }),
            control,
            // Without an eventfd (descriptor exhaustion) the controller still works polled.
            irq: EventFd::new(EFD_NONBLOCK).ok(),
            aux_irq: EventFd::new(EFD_NONBLOCK).ok(),
        })
    }

    /// The eventfd pulsed for IRQ 1 (register it as an edge-triggered irqfd on
    /// [`I8042_KBD_IRQ`]); None if it could not be created.
    pub fn interrupt_evt(&self) -> Option<&EventFd> {
        self.irq.as_ref()
    }

    /// The eventfd pulsed for IRQ 12 ([`I8042_AUX_IRQ`]).
    pub fn aux_interrupt_evt(&self) -> Option<&EventFd> {
        self.aux_irq.as_ref()
    }

    /// Pulse IRQ 1 or 12 if a byte became readable and the command byte enables its interrupt.
    fn update_irq(&self, s: &mut State) {
        let (enable, evt) = match s.raise.take() {
            Some(Source::Kbd) => (CTR_KBD_INT, &self.irq),
            Some(Source::Aux) => (CTR_AUX_INT, &self.aux_irq),
            None => return,
        };
        if s.ctr & enable != 0 {
            if let Some(evt) = evt {
                // A full counter (impossible at one per byte) only merges pulses.
                let _ = evt.write(1);
            }
        }
    }

    /// The bus device for port 0x60.
    pub fn data_port(self: &Arc<Self>) -> Arc<I8042DataPort> {
        Arc::new(I8042DataPort(self.clone()))
    }

    /// The bus device for port 0x64.
    pub fn command_port(self: &Arc<Self>) -> Arc<I8042CommandPort> {
        Arc::new(I8042CommandPort(self.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keyboard LEDs the guest last set (bit 0 Scroll, 1 Num, 2 Caps Lock).
    pub fn leds(&self) -> u8 {
        self.lock().kbd.leds
    }

    fn read_status(&self) -> u8 {
        self.lock().status()
    }

    fn read_data(&self) -> u8 {
        let mut s = self.lock();
        if let Some((b, _)) = s.obf.take() {
            s.last_read = b;
            s.fill();
            self.update_irq(&mut s);
        }
        s.last_read
    }

    fn write_command(&self, cmd: u8) {
        let reset = {
            let mut s = self.lock();
            s.last_was_cmd = true;
            s.pending = None;
            match cmd {
                CMD_READ_RAM_FIRST => {
                    let ctr = s.ctr;
                    s.reply(ctr, Source::Kbd);
                }
                // The rest of controller RAM is not modelled.
                c if c > CMD_READ_RAM_FIRST && c <= CMD_READ_RAM_LAST => s.reply(0, Source::Kbd),
                CMD_WRITE_RAM_FIRST..=CMD_WRITE_RAM_LAST
                | CMD_WRITE_OUTPORT
                | CMD_WRITE_KBD_OUTBUF
                | CMD_WRITE_AUX_OUTBUF
                | CMD_WRITE_AUX => s.pending = Some(cmd),
                CMD_AUX_DISABLE => s.ctr |= CTR_AUX_DIS,
                CMD_AUX_ENABLE => {
                    s.ctr &= !CTR_AUX_DIS;
                    s.fill();
                }
                CMD_AUX_TEST | CMD_KBD_TEST => s.reply(PORT_TEST_OK, Source::Kbd),
                CMD_SELF_TEST => {
                    s.ctr |= CTR_SYS;
                    s.reply(SELF_TEST_OK, Source::Kbd);
                }
                CMD_KBD_DISABLE => s.ctr |= CTR_KBD_DIS,
                CMD_KBD_ENABLE => {
                    s.ctr &= !CTR_KBD_DIS;
                    s.fill();
                }
                CMD_READ_OUTPORT => {
                    let out = s.outport;
                    s.reply(out, Source::Kbd);
                }
                _ => {}
            }
            self.update_irq(&mut s);
            // 0xF0-0xFF pulse the output lines whose bit is clear; bit 0 is the reset line.
            cmd >= CMD_PULSE_FIRST && cmd & OUT_RESET == 0
        };
        if reset {
            self.control.request(VmRequest::Reset);
        }
    }

    fn write_data(&self, byte: u8) {
        let reset = {
            let mut s = self.lock();
            s.last_was_cmd = false;
            let reset = match s.pending.take() {
                Some(CMD_WRITE_RAM_FIRST) => {
                    s.ctr = byte;
                    s.fill();
                    false
                }
                Some(CMD_WRITE_OUTPORT) => {
                    // A20 is always enabled under KVM; only the reset line matters.
                    s.outport = byte;
                    byte & OUT_RESET == 0
                }
                Some(CMD_WRITE_KBD_OUTBUF) => {
                    s.reply(byte, Source::Kbd);
                    false
                }
                Some(CMD_WRITE_AUX_OUTBUF) => {
                    s.reply(byte, Source::Aux);
                    false
                }
                Some(CMD_WRITE_AUX) => {
                    s.mouse.write(byte);
                    s.fill();
                    false
                }
                // The rest of controller RAM.
                Some(_) => false,
                None => {
                    // Sending to the keyboard re-enables its port (QEMU's `kbd_write_data`).
                    s.ctr &= !CTR_KBD_DIS;
                    let translate = s.translate();
                    s.kbd.write(byte, translate);
                    s.fill();
                    false
                }
            };
            self.update_irq(&mut s);
            reset
        };
        if reset {
            self.control.request(VmRequest::Reset);
        }
    }
}

impl InputSink for I8042 {
    fn key(&self, code: u16, down: bool) {
        let mut s = self.lock();
        let translate = s.translate();
        s.kbd.key(code, down, translate);
        s.fill();
        self.update_irq(&mut s);
    }

    fn pointer_rel(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        let mut s = self.lock();
        s.mouse.event(dx, dy, wheel, buttons);
        s.fill();
        self.update_irq(&mut s);
    }
}

/// Port 0x60 of an [`I8042`].
pub struct I8042DataPort(Arc<I8042>);

/// Port 0x64 of an [`I8042`].
pub struct I8042CommandPort(Arc<I8042>);

impl BusDevice for I8042DataPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = self.0.read_data();
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (0, Some(&byte)) = (offset, data.first()) {
            self.0.write_data(byte);
        }
    }
}

impl BusDevice for I8042CommandPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = self.0.read_status();
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (0, Some(&cmd)) = (offset, data.first()) {
            self.0.write_command(cmd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::keys;
    use crate::test_utils::RecordingVmControl;

    // Keyboard commands (keyboard.rs).
    const KBD_CMD_SET_LEDS: u8 = 0xed;
    const KBD_CMD_ECHO: u8 = 0xee;
    const KBD_CMD_SCANCODE: u8 = 0xf0;
    const KBD_CMD_GET_ID: u8 = 0xf2;
    const KBD_CMD_SET_RATE: u8 = 0xf3;
    const KBD_CMD_ENABLE: u8 = 0xf4;
    const KBD_CMD_RESET_DISABLE: u8 = 0xf5;
    const KBD_CMD_RESET: u8 = 0xff;

    struct Ports {
        ctl: Arc<RecordingVmControl>,
        data: Arc<I8042DataPort>,
        cmd: Arc<I8042CommandPort>,
    }

    fn setup() -> Ports {
        let ctl = Arc::new(RecordingVmControl::default());
        let dev = I8042::new(ctl.clone());
        Ports {
            ctl,
            data: dev.data_port(),
            cmd: dev.command_port(),
        }
    }

    fn inb(dev: &dyn BusDevice) -> u8 {
        let mut b = [0u8; 1];
        dev.read(0, &mut b);
        b[0]
    }

    #[test]
    fn fe_requests_reset() {
        let p = setup();
        // A polling guest sees the input buffer empty and no data.
        assert_eq!(inb(p.cmd.as_ref()) & (STS_OBF | 0x02), 0);
        p.cmd.write(0, &[0xfe]);
        assert_eq!(p.ctl.requests(), vec![VmRequest::Reset]);
        // Pulses with bit 0 set do not reset.
        p.cmd.write(0, &[0xff]);
        p.cmd.write(0, &[0xf1]);
        assert_eq!(p.ctl.requests(), vec![VmRequest::Reset]);
        p.cmd.write(0, &[0xf0]);
        assert_eq!(p.ctl.requests(), vec![VmRequest::Reset, VmRequest::Reset]);
    }

    #[test]
    fn output_port_write_with_reset_bit_clear_resets() {
        let p = setup();
        p.cmd.write(0, &[CMD_WRITE_OUTPORT]);
        p.data.write(0, &[OUT_RESET | OUT_A20]);
        assert!(p.ctl.requests().is_empty());
        p.cmd.write(0, &[CMD_READ_OUTPORT]);
        assert_eq!(inb(p.data.as_ref()), OUT_RESET | OUT_A20);
        p.cmd.write(0, &[CMD_WRITE_OUTPORT]);
        p.data.write(0, &[OUT_A20]);
        assert_eq!(p.ctl.requests(), vec![VmRequest::Reset]);
    }

    #[test]
    fn command_byte_round_trips() {
        let p = setup();
        p.cmd.write(0, &[0x20]);
        assert_eq!(inb(p.cmd.as_ref()) & STS_OBF, STS_OBF);
        assert_eq!(inb(p.data.as_ref()), CTR_KBD_INT | CTR_AUX_INT | CTR_SYS);
        assert_eq!(inb(p.cmd.as_ref()) & STS_OBF, 0);
        p.cmd.write(0, &[0x60]);
        p.data.write(0, &[0x61]);
        assert_eq!(
            inb(p.cmd.as_ref()) & (STS_CMD | STS_SYS),
            0,
            "data write, SYS cleared"
        );
        p.cmd.write(0, &[0x20]);
        assert_eq!(inb(p.data.as_ref()), 0x61);
        // Empty buffer: the last byte again, no OBF.
        assert_eq!(inb(p.data.as_ref()), 0x61);
        p.cmd.write(0, &[CMD_KBD_DISABLE]);
        p.cmd.write(0, &[CMD_AUX_DISABLE]);
        p.cmd.write(0, &[0x20]);
        assert_eq!(inb(p.data.as_ref()), 0x61 | CTR_KBD_DIS | CTR_AUX_DIS);
        assert!(p.ctl.requests().is_empty());
    }

    #[test]
    fn probe_answers() {
        let p = setup();
        p.cmd.write(0, &[CMD_SELF_TEST]);
        assert_eq!(inb(p.data.as_ref()), SELF_TEST_OK);
        p.cmd.write(0, &[CMD_KBD_TEST]);
        assert_eq!(inb(p.data.as_ref()), PORT_TEST_OK);
        p.cmd.write(0, &[CMD_AUX_TEST]);
        assert_eq!(inb(p.data.as_ref()), PORT_TEST_OK);
        // AUX loopback (Linux's i8042_check_aux): the byte comes back as mouse data.
        p.cmd.write(0, &[CMD_WRITE_AUX_OUTBUF]);
        p.data.write(0, &[0x5a]);
        assert_eq!(
            inb(p.cmd.as_ref()) & (STS_OBF | STS_AUXDATA),
            STS_OBF | STS_AUXDATA,
            "AUX channel"
        );
        assert_eq!(inb(p.data.as_ref()), 0x5a);
        // The keyboard answers its ID, and so does the mouse.
        p.data.write(0, &[0xf2]);
        assert_eq!(read_all(&p), vec![0xfa, 0xab, 0x83]);
        p.cmd.write(0, &[CMD_WRITE_AUX]);
        p.data.write(0, &[0xf2]);
        assert_eq!(inb(p.cmd.as_ref()) & STS_AUXDATA, STS_AUXDATA);
        assert_eq!(read_all(&p), vec![0xfa, 0x00]);
    }

    fn read_all(p: &Ports) -> Vec<u8> {
        let mut out = Vec::new();
        while inb(p.cmd.as_ref()) & STS_OBF != 0 {
            out.push(inb(p.data.as_ref()));
        }
        out
    }

    #[test]
    fn keyboard_answers_seabios_ps2_setup() {
        let p = setup();
        // sb/hw/ps2port.c ps2_keyboard_setup.
        p.cmd.write(0, &[CMD_KBD_DISABLE]);
        p.cmd.write(0, &[CMD_AUX_DISABLE]);
        p.cmd.write(0, &[CMD_SELF_TEST]);
        assert_eq!(read_all(&p), vec![0x55]);
        p.cmd.write(0, &[CMD_KBD_TEST]);
        assert_eq!(read_all(&p), vec![0x00]);
        p.data.write(0, &[KBD_CMD_RESET]);
        assert_eq!(read_all(&p), vec![0xfa, 0xaa]);
        p.data.write(0, &[KBD_CMD_RESET_DISABLE]);
        assert_eq!(read_all(&p), vec![0xfa]);
        p.data.write(0, &[KBD_CMD_SCANCODE]);
        assert_eq!(read_all(&p), vec![0xfa]);
        p.data.write(0, &[0x02]);
        assert_eq!(read_all(&p), vec![0xfa]);
        p.data.write(0, &[KBD_CMD_ENABLE]);
        assert_eq!(read_all(&p), vec![0xfa]);
        // Writing to the keyboard re-enabled its port.
        p.cmd.write(0, &[0x20]);
        assert_eq!(read_all(&p)[0] & CTR_KBD_DIS, 0);
        // LEDs and typematic rate take a parameter, each byte ACKed.
        for cmd in [KBD_CMD_SET_LEDS, KBD_CMD_SET_RATE] {
            p.data.write(0, &[cmd]);
            p.data.write(0, &[0x07]);
            assert_eq!(read_all(&p), vec![0xfa, 0xfa]);
        }
        // Scan code set query, without and with translation (Linux's atkbd).
        p.data.write(0, &[KBD_CMD_SCANCODE]);
        p.data.write(0, &[0]);
        assert_eq!(read_all(&p), vec![0xfa, 0xfa, 0x02]);
        p.cmd.write(0, &[0x60]);
        p.data.write(0, &[CTR_XLATE | CTR_SYS]);
        p.data.write(0, &[KBD_CMD_GET_ID]);
        assert_eq!(read_all(&p), vec![0xfa, 0xab, 0x41]);
        p.data.write(0, &[KBD_CMD_SCANCODE]);
        p.data.write(0, &[0]);
        assert_eq!(read_all(&p), vec![0xfa, 0xfa, 0x41]);
        p.data.write(0, &[KBD_CMD_SCANCODE]);
        p.data.write(0, &[9]);
        assert_eq!(read_all(&p), vec![0xfa, 0xfe]);
        p.data.write(0, &[KBD_CMD_ECHO]);
        assert_eq!(read_all(&p), vec![0xee]);
        p.data.write(0, &[0x12]);
        assert_eq!(read_all(&p), vec![0xfe], "unknown command: resend");
        assert!(p.ctl.requests().is_empty());
    }

    #[test]
    fn irq1_pulses_per_readable_byte_when_enabled() {
        let p = setup();
        let dev = I8042::new(p.ctl.clone());
        let (data, cmd) = (dev.data_port(), dev.command_port());
        let evt = dev.interrupt_evt().unwrap();
        let count = || evt.read().unwrap_or(0);
        data.write(0, &[KBD_CMD_GET_ID]);
        assert_eq!(count(), 1, "first byte readable");
        inb(data.as_ref());
        assert_eq!(count(), 1, "second byte readable");
        inb(data.as_ref());
        inb(data.as_ref());
        assert_eq!(count(), 1, "third; nothing after the last");
        assert_eq!(count(), 0);
        // Interrupt disabled in the command byte: no pulses, bytes still readable.
        cmd.write(0, &[0x60]);
        data.write(0, &[CTR_SYS]);
        data.write(0, &[KBD_CMD_RESET]);
        assert_eq!(count(), 0);
        assert_eq!(inb(data.as_ref()), 0xfa);
        assert_eq!(inb(data.as_ref()), 0xaa);
    }

    #[test]
    fn output_buffer_is_bounded_and_odd_accesses_are_safe() {
        let p = setup();
        for _ in 0..1000 {
            p.cmd.write(0, &[0x20]);
        }
        let mut n = 0;
        while inb(p.cmd.as_ref()) & STS_OBF != 0 {
            inb(p.data.as_ref());
            n += 1;
        }
        assert_eq!(n, OUT_BUF_CAP + 1, "the queue and the output buffer");
        let mut w = [0u8; 4];
        p.cmd.read(0, &mut w);
        assert_eq!(w[1..], [0xff; 3]);
        for off in [1, 3, u64::MAX] {
            p.cmd.read(off, &mut w);
            assert_eq!(w, [0xff; 4]);
            p.cmd.write(off, &[0xfe]);
            p.data.write(off, &[0]);
        }
        p.cmd.write(0, &[]);
        p.data.read(0, &mut []);
        assert!(p.ctl.requests().is_empty());
    }

    #[test]
    fn keys_reach_the_guest_translated_with_irq1_and_mouse_with_irq12() {
        let ctl = Arc::new(RecordingVmControl::default());
        let dev = I8042::new(ctl);
        let (data, cmd) = (dev.data_port(), dev.command_port());
        let irq1 = || dev.interrupt_evt().unwrap().read().unwrap_or(0);
        let irq12 = || dev.aux_interrupt_evt().unwrap().read().unwrap_or(0);
        let p = Ports {
            ctl: Arc::new(RecordingVmControl::default()),
            data: data.clone(),
            cmd: cmd.clone(),
        };
        // Linux's default: translation on.
        cmd.write(0, &[0x60]);
        data.write(0, &[CTR_XLATE | CTR_SYS | CTR_KBD_INT | CTR_AUX_INT]);
        dev.key(keys::KEY_A, true);
        dev.key(keys::KEY_A, false);
        assert_eq!(irq1(), 1);
        assert_eq!(read_all(&p), vec![0x1e, 0x9e]);
        // Untranslated: set 2.
        cmd.write(0, &[0x60]);
        data.write(0, &[CTR_SYS | CTR_KBD_INT | CTR_AUX_INT]);
        dev.key(keys::KEY_A, true);
        dev.key(keys::KEY_A, false);
        assert_eq!(read_all(&p), vec![0x1c, 0xf0, 0x1c]);
        // Keyboard port disabled: keys wait; enabling delivers them.
        cmd.write(0, &[CMD_KBD_DISABLE]);
        dev.key(keys::KEY_B, true);
        assert_eq!(inb(cmd.as_ref()) & STS_OBF, 0);
        cmd.write(0, &[CMD_KBD_ENABLE]);
        assert_eq!(read_all(&p), vec![0x32]);
        // The mouse, enabled through 0xD4, reports motion on IRQ 12 with the AUX status bit.
        irq12();
        cmd.write(0, &[CMD_WRITE_AUX]);
        data.write(0, &[0xf4]);
        assert_eq!(read_all(&p), vec![0xfa]);
        irq12();
        dev.pointer_rel(4, -2, 0, crate::input::BUTTON_RIGHT);
        assert_eq!(irq12(), 1);
        assert_eq!(inb(cmd.as_ref()) & STS_AUXDATA, STS_AUXDATA);
        assert_eq!(read_all(&p), vec![0x0a, 4, 2]);
        assert_eq!(irq12(), 2, "one pulse per byte");
        // AUX interrupt disabled: no pulse, bytes still readable.
        cmd.write(0, &[0x60]);
        data.write(0, &[CTR_SYS | CTR_KBD_INT]);
        dev.pointer_rel(1, 0, 0, 0);
        assert_eq!(irq12(), 0);
        assert_eq!(read_all(&p), vec![0x08, 1, 0]);
        dev.key(keys::KEY_LEFTMETA, true);
        assert_eq!(read_all(&p), vec![0xe0, 0x1f]);
        assert_eq!(dev.leds(), 0);
    }

    #[test]
    fn at_most_sixteen_stale_bytes_for_linux_flush() {
        // Keys typed before the guest's driver starts: Linux's i8042_flush reads at most 16
        // bytes and calls a controller with more "stuck".
        let p = setup();
        let dev = I8042::new(p.ctl.clone());
        let p = Ports {
            ctl: p.ctl,
            data: dev.data_port(),
            cmd: dev.command_port(),
        };
        for _ in 0..40 {
            dev.key(keys::KEY_A, true);
            dev.key(keys::KEY_A, false);
        }
        assert_eq!(read_all(&p).len(), 16);
    }
}
