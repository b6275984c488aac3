//! i8042 PS/2 controller, enough for reboot and for guests that probe it.
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
//! (0x55), 0xAB keyboard interface test (0x00), 0xA7/0xA8/0xAD/0xAE disable/enable ports,
//! 0xD0/0xD1 read/write output port, 0xD2 write keyboard output buffer.
//! A keyboard that never sends a key answers the commands firmware and kernels send it, as
//! QEMU's hw/input/ps2.c `ps2_write_keyboard` (SeaBIOS sb/hw/ps2port.c would otherwise wait for
//! its reset to time out): 0xFF reset (ACK 0xFA, BAT 0xAA), 0xF2 get ID (FA AB, then 0x41 with
//! scan code translation on in the command byte, else 0x83), 0xF0 scan code set (0 reads it
//! back), 0xED LEDs, 0xF3 typematic rate, 0xFC make/break (each ACKed, then their parameter
//! byte ACKed), 0xF4/0xF5/0xF6 enable/disable/defaults, 0xFA, 0xEE echo, 0x00; anything else
//! gets RESEND (0xFE). Writing to the keyboard re-enables its port, as QEMU does.
//! No mouse is attached: the AUX interface test (0xA9) reports a stuck clock line (0x02) and the
//! AUX loopback (0xD3) echoes on the keyboard channel, which Linux reads as "no AUX port"
//! without timing out; bytes for the mouse are dropped.
//!
//! Interrupt: IRQ 1 is pulsed through [`I8042::interrupt_evt`] whenever a byte becomes readable
//! while the command byte enables the keyboard interrupt (QEMU raises its IRQ 1 line then);
//! the VMM connects it as an edge-triggered ISA line. Guests that poll see the same bytes.
//! Wider accesses act on the first byte; the other bytes read as 0xff.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{BusDevice, VmControl, VmRequest};

/// The keyboard's ISA interrupt line.
pub const I8042_KBD_IRQ: u32 = 1;

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
const KBD_TEST_OK: u8 = 0x00;
/// "Clock line stuck high": nothing attached to the AUX port.
const AUX_TEST_ABSENT: u8 = 0x02;
/// Replies queued beyond this are dropped, so a guest cannot grow the queue without bound.
const OUT_BUF_CAP: usize = 16;

// Keyboard commands and replies (QEMU hw/input/ps2.c).
const KBD_CMD_SET_LEDS: u8 = 0xed;
const KBD_CMD_ECHO: u8 = 0xee;
const KBD_CMD_SCANCODE: u8 = 0xf0;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_CMD_SET_RATE: u8 = 0xf3;
const KBD_CMD_ENABLE: u8 = 0xf4;
const KBD_CMD_RESET_DISABLE: u8 = 0xf5;
const KBD_CMD_RESET_ENABLE: u8 = 0xf6;
const KBD_CMD_SET_TYPEMATIC: u8 = 0xfa;
const KBD_CMD_SET_MAKE_BREAK: u8 = 0xfc;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_REPLY_ACK: u8 = 0xfa;
const KBD_REPLY_RESEND: u8 = 0xfe;
const KBD_REPLY_POR: u8 = 0xaa;
const KBD_REPLY_ID: u8 = 0xab;
/// Second ID byte of an MF2 keyboard, without and with translation.
const KBD_ID_MF2: u8 = 0x83;
const KBD_ID_MF2_XLATE: u8 = 0x41;
/// Scan code sets 1-3 as seen through translation (QEMU's `translate_table` entries).
const XLATED_SCANCODE_SET: [u8; 3] = [0x43, 0x41, 0x3f];
const DEFAULT_SCANCODE_SET: u8 = 2;

/// The keyboard behind the controller.
struct Keyboard {
    /// A command waiting for its parameter byte.
    pending: Option<u8>,
    scancode_set: u8,
    scan_enabled: bool,
}

impl Keyboard {
    fn new() -> Self {
        Self {
            pending: None,
            scancode_set: DEFAULT_SCANCODE_SET,
            scan_enabled: true,
        }
    }

    /// QEMU's `ps2_reset_keyboard`.
    fn reset(&mut self) {
        self.scancode_set = DEFAULT_SCANCODE_SET;
        self.scan_enabled = true;
    }

    /// The bytes the keyboard answers to `byte`.
    fn write(&mut self, byte: u8, translate: bool) -> Vec<u8> {
        match self.pending.take() {
            Some(KBD_CMD_SCANCODE) => match byte {
                0 if translate => {
                    let set = usize::from(self.scancode_set.clamp(1, 3) - 1);
                    vec![KBD_REPLY_ACK, XLATED_SCANCODE_SET[set]]
                }
                0 => vec![KBD_REPLY_ACK, self.scancode_set],
                1..=3 => {
                    self.scancode_set = byte;
                    vec![KBD_REPLY_ACK]
                }
                _ => vec![KBD_REPLY_RESEND],
            },
            // LED state, rate and make/break modes: accepted, nothing to show.
            Some(_) => vec![KBD_REPLY_ACK],
            None => match byte {
                0x00 => vec![KBD_REPLY_ACK],
                KBD_CMD_GET_ID => {
                    let id = if translate {
                        KBD_ID_MF2_XLATE
                    } else {
                        KBD_ID_MF2
                    };
                    vec![KBD_REPLY_ACK, KBD_REPLY_ID, id]
                }
                KBD_CMD_ECHO => vec![KBD_CMD_ECHO],
                KBD_CMD_ENABLE => {
                    self.scan_enabled = true;
                    vec![KBD_REPLY_ACK]
                }
                KBD_CMD_SCANCODE | KBD_CMD_SET_LEDS | KBD_CMD_SET_RATE | KBD_CMD_SET_MAKE_BREAK => {
                    self.pending = Some(byte);
                    vec![KBD_REPLY_ACK]
                }
                KBD_CMD_RESET_DISABLE | KBD_CMD_RESET_ENABLE => {
                    self.reset();
                    self.scan_enabled = byte == KBD_CMD_RESET_ENABLE;
                    vec![KBD_REPLY_ACK]
                }
                KBD_CMD_RESET => {
                    self.reset();
                    vec![KBD_REPLY_ACK, KBD_REPLY_POR]
                }
                KBD_CMD_SET_TYPEMATIC => vec![KBD_REPLY_ACK],
                _ => vec![KBD_REPLY_RESEND],
            },
        }
    }
}

struct State {
    ctr: u8,
    outport: u8,
    /// Status bit 3: the last write went to the command port.
    last_was_cmd: bool,
    /// A command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    out_buf: VecDeque<u8>,
    /// What the data port returns when the output buffer is empty (the last byte read).
    last_read: u8,
    kbd: Keyboard,
    /// A byte became readable since the interrupt was last pulsed.
    raise: bool,
}

impl State {
    fn push(&mut self, byte: u8) {
        if self.out_buf.len() < OUT_BUF_CAP {
            self.raise |= self.out_buf.is_empty();
            self.out_buf.push_back(byte);
        }
    }

    fn status(&self) -> u8 {
        let mut s = STS_UNLOCKED;
        if !self.out_buf.is_empty() {
            s |= STS_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STS_SYS;
        }
        if self.last_was_cmd {
            s |= STS_CMD;
        }
        s
    }
}

/// The controller's and the keyboard's registers and output buffer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    ctr: u8,
    outport: u8,
    last_was_cmd: bool,
    pending: Option<u8>,
    out_buf: Vec<u8>,
    last_read: u8,
    raise: bool,
    kbd_pending: Option<u8>,
    kbd_scancode_set: u8,
    kbd_scan_enabled: bool,
}

impl crate::Persist for I8042 {
    type State = I8042State;

    fn save(&self) -> I8042State {
        let st = self.lock();
        I8042State {
            ctr: st.ctr,
            outport: st.outport,
            last_was_cmd: st.last_was_cmd,
            pending: st.pending,
            out_buf: st.out_buf.iter().copied().collect(),
            last_read: st.last_read,
            raise: st.raise,
            kbd_pending: st.kbd.pending,
            kbd_scancode_set: st.kbd.scancode_set,
            kbd_scan_enabled: st.kbd.scan_enabled,
        }
    }

    fn restore(&self, s: I8042State) -> Result<(), crate::StateError> {
        if s.out_buf.len() > OUT_BUF_CAP || !(1..=3).contains(&s.kbd_scancode_set) {
            return Err(crate::StateError::Invalid(format!(
                "i8042: output buffer of {} bytes or scan code set {}",
                s.out_buf.len(),
                s.kbd_scancode_set
            )));
        }
        let mut st = self.lock();
        st.ctr = s.ctr;
        st.outport = s.outport;
        st.last_was_cmd = s.last_was_cmd;
        st.pending = s.pending;
        st.out_buf = s.out_buf.into();
        st.last_read = s.last_read;
        st.raise = s.raise;
        st.kbd.pending = s.kbd_pending;
        st.kbd.scancode_set = s.kbd_scancode_set;
        st.kbd.scan_enabled = s.kbd_scan_enabled;
        Ok(())
    }
}

/// The shared controller state behind the two ports.
pub struct I8042 {
    state: Mutex<State>,
    control: Arc<dyn VmControl>,
    /// Pulsed for IRQ 1.
    irq: Option<EventFd>,
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
                out_buf: VecDeque::new(),
                last_read: 0,
                kbd: Keyboard::new(),
                raise: false,
            }),
            control,
            // Without an eventfd (descriptor exhaustion) the controller still works polled.
            irq: EventFd::new(EFD_NONBLOCK).ok(),
        })
    }

    /// The eventfd pulsed for IRQ 1 (register it as an edge-triggered irqfd on
    /// [`I8042_KBD_IRQ`]); None if it could not be created.
    pub fn interrupt_evt(&self) -> Option<&EventFd> {
        self.irq.as_ref()
    }

    /// Pulse IRQ 1 if a byte became readable and the command byte enables the interrupt.
    fn update_irq(&self, s: &mut State) {
        if std::mem::take(&mut s.raise) && s.ctr & CTR_KBD_INT != 0 {
            if let Some(evt) = &self.irq {
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

    fn read_status(&self) -> u8 {
        self.lock().status()
    }

    fn read_data(&self) -> u8 {
        let mut s = self.lock();
        if let Some(b) = s.out_buf.pop_front() {
            s.last_read = b;
            // The next byte is readable now.
            s.raise = !s.out_buf.is_empty();
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
                    s.push(ctr);
                }
                // The rest of controller RAM is not modelled.
                c if c > CMD_READ_RAM_FIRST && c <= CMD_READ_RAM_LAST => s.push(0),
                CMD_WRITE_RAM_FIRST..=CMD_WRITE_RAM_LAST
                | CMD_WRITE_OUTPORT
                | CMD_WRITE_KBD_OUTBUF
                | CMD_WRITE_AUX_OUTBUF
                | CMD_WRITE_AUX => s.pending = Some(cmd),
                CMD_AUX_DISABLE => s.ctr |= CTR_AUX_DIS,
                CMD_AUX_ENABLE => s.ctr &= !CTR_AUX_DIS,
                CMD_AUX_TEST => s.push(AUX_TEST_ABSENT),
                CMD_SELF_TEST => {
                    s.ctr |= CTR_SYS;
                    s.push(SELF_TEST_OK);
                }
                CMD_KBD_TEST => s.push(KBD_TEST_OK),
                CMD_KBD_DISABLE => s.ctr |= CTR_KBD_DIS,
                CMD_KBD_ENABLE => s.ctr &= !CTR_KBD_DIS,
                CMD_READ_OUTPORT => {
                    let out = s.outport;
                    s.push(out);
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
                    false
                }
                Some(CMD_WRITE_OUTPORT) => {
                    // A20 is always enabled under KVM; only the reset line matters.
                    s.outport = byte;
                    byte & OUT_RESET == 0
                }
                // No AUX port: the loopback byte comes back on the keyboard channel.
                Some(CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF) => {
                    s.push(byte);
                    false
                }
                // Other controller RAM bytes or the (absent) mouse.
                Some(_) => false,
                None => {
                    // Sending to the keyboard re-enables its port (QEMU's `kbd_write_data`).
                    s.ctr &= !CTR_KBD_DIS;
                    let translate = s.ctr & CTR_XLATE != 0;
                    for b in s.kbd.write(byte, translate) {
                        s.push(b);
                    }
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
    use crate::test_utils::RecordingVmControl;

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
        assert_eq!(inb(p.data.as_ref()), KBD_TEST_OK);
        p.cmd.write(0, &[CMD_AUX_TEST]);
        assert_eq!(inb(p.data.as_ref()), AUX_TEST_ABSENT);
        p.cmd.write(0, &[CMD_WRITE_AUX_OUTBUF]);
        p.data.write(0, &[0x5a]);
        assert_eq!(
            inb(p.cmd.as_ref()) & (STS_OBF | 0x20),
            STS_OBF,
            "keyboard channel"
        );
        assert_eq!(inb(p.data.as_ref()), 0x5a);
        // The keyboard answers its ID; mouse bytes get no answer.
        p.data.write(0, &[0xf2]);
        assert_eq!(read_all(&p), vec![0xfa, 0xab, 0x83]);
        p.cmd.write(0, &[CMD_WRITE_AUX]);
        p.data.write(0, &[0xf2]);
        assert_eq!(inb(p.cmd.as_ref()) & STS_OBF, 0);
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
        assert_eq!(n, OUT_BUF_CAP);
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
}
