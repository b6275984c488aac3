//! The PS/2 mouse behind the i8042's AUX port, relative motion in 3-byte packets (4 bytes once
//! the guest unlocks the IntelliMouse wheel or the 5-button Explorer mode with the sample-rate
//! knocks 200,100,80 and 200,200,80). Commands as QEMU's hw/input/ps2.c answers them.

use std::collections::VecDeque;

use crate::input::{BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT};

const CMD_SET_SCALE11: u8 = 0xe6;
const CMD_SET_SCALE21: u8 = 0xe7;
const CMD_SET_RES: u8 = 0xe8;
const CMD_GET_STATUS: u8 = 0xe9;
const CMD_SET_STREAM: u8 = 0xea;
const CMD_READ_DATA: u8 = 0xeb;
const CMD_RESET_WRAP: u8 = 0xec;
const CMD_SET_WRAP: u8 = 0xee;
const CMD_SET_REMOTE: u8 = 0xf0;
const CMD_GET_TYPE: u8 = 0xf2;
const CMD_SET_RATE: u8 = 0xf3;
const CMD_ENABLE: u8 = 0xf4;
const CMD_DISABLE: u8 = 0xf5;
const CMD_DEFAULTS: u8 = 0xf6;
const CMD_RESET: u8 = 0xff;
const REPLY_ACK: u8 = 0xfa;
const REPLY_NAK: u8 = 0xfe;
const REPLY_BAT_OK: u8 = 0xaa;

// Status byte bits (0xE9).
const STATUS_REMOTE: u8 = 0x40;
const STATUS_ENABLED: u8 = 0x20;
const STATUS_SCALE21: u8 = 0x10;

const TYPE_STANDARD: u8 = 0;
const TYPE_IMPS2: u8 = 3;
const TYPE_IMEX: u8 = 4;
/// Bytes held for the guest, with the output buffer's a PS/2 buffer of 16 as QEMU's: no packet
/// is queued beyond this, the motion accumulates for the next event instead.
const QUEUE_CAP: usize = 15;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Mouse {
    pending: Option<u8>,
    status: u8,
    resolution: u8,
    sample_rate: u8,
    wrap: bool,
    kind: u8,
    /// Progress through the sample-rate knock that switches `kind`.
    knock: u8,
    dx: i32,
    dy: i32,
    dz: i32,
    buttons: u8,
    replies: VecDeque<u8>,
    packets: VecDeque<u8>,
}

impl Mouse {
    pub(super) fn new() -> Self {
        Self {
            pending: None,
            status: 0,
            resolution: 2,
            sample_rate: 100,
            wrap: false,
            kind: TYPE_STANDARD,
            knock: 0,
            dx: 0,
            dy: 0,
            dz: 0,
            buttons: 0,
            replies: VecDeque::new(),
            packets: VecDeque::new(),
        }
    }

    /// Defaults, motion and queued packets dropped (the caller replaces the replies).
    fn reset(&mut self) {
        *self = Self::new();
    }

    pub(super) fn pop(&mut self) -> Option<u8> {
        self.replies
            .pop_front()
            .or_else(|| self.packets.pop_front())
    }

    /// A byte from the host (controller command 0xD4 then the byte).
    pub(super) fn write(&mut self, byte: u8) {
        let reply = self.command(byte);
        self.replies.clear();
        self.replies.extend(reply);
    }

    fn command(&mut self, byte: u8) -> Vec<u8> {
        if self.wrap && byte != CMD_RESET_WRAP && byte != CMD_RESET {
            return vec![byte];
        }
        match self.pending.take() {
            Some(CMD_SET_RES) => {
                self.resolution = byte.min(3);
                return vec![REPLY_ACK];
            }
            Some(CMD_SET_RATE) => {
                self.sample_rate = byte;
                self.knock = match (self.knock, byte) {
                    (1, 100) => 2,
                    (1, 200) => 3,
                    (2, 80) => {
                        self.kind = TYPE_IMPS2;
                        0
                    }
                    (3, 80) => {
                        self.kind = TYPE_IMEX;
                        0
                    }
                    (_, 200) => 1,
                    _ => 0,
                };
                return vec![REPLY_ACK];
            }
            _ => {}
        }
        match byte {
            CMD_SET_SCALE11 => self.status &= !STATUS_SCALE21,
            CMD_SET_SCALE21 => self.status |= STATUS_SCALE21,
            CMD_SET_STREAM => self.status &= !STATUS_REMOTE,
            CMD_SET_WRAP => self.wrap = true,
            CMD_RESET_WRAP => self.wrap = false,
            CMD_SET_REMOTE => self.status |= STATUS_REMOTE,
            CMD_ENABLE => self.status |= STATUS_ENABLED,
            CMD_DISABLE => self.status &= !STATUS_ENABLED,
            CMD_SET_RES | CMD_SET_RATE => self.pending = Some(byte),
            CMD_GET_TYPE => return vec![REPLY_ACK, self.kind],
            CMD_GET_STATUS => {
                let buttons = self.buttons & (BUTTON_LEFT | BUTTON_MIDDLE | BUTTON_RIGHT);
                // Status byte: bit 2 left, 1 middle, 0 right.
                let b = u8::from(buttons & BUTTON_LEFT != 0) << 2
                    | u8::from(buttons & BUTTON_MIDDLE != 0) << 1
                    | u8::from(buttons & BUTTON_RIGHT != 0);
                return vec![
                    REPLY_ACK,
                    self.status | b,
                    self.resolution,
                    self.sample_rate,
                ];
            }
            CMD_READ_DATA => {
                let mut v = vec![REPLY_ACK];
                v.extend(self.packet());
                return v;
            }
            CMD_DEFAULTS => {
                self.reset();
            }
            CMD_RESET => {
                self.reset();
                return vec![REPLY_ACK, REPLY_BAT_OK, TYPE_STANDARD];
            }
            _ => return vec![REPLY_NAK],
        }
        vec![REPLY_ACK]
    }

    /// Motion (x right, y down), wheel and the buttons now held; queued as packets while the
    /// mouse streams, accumulated otherwise (remote mode reads it with 0xEB).
    pub(super) fn event(&mut self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        self.dx = self.dx.saturating_add(dx);
        self.dy = self.dy.saturating_add(dy);
        self.dz = self.dz.saturating_add(wheel);
        let changed = self.buttons != buttons;
        self.buttons = buttons;
        if self.status & STATUS_ENABLED == 0 || self.status & STATUS_REMOTE != 0 {
            return;
        }
        // Nothing moved and no button changed: no packet (as QEMU).
        if !changed && self.dx == 0 && self.dy == 0 && self.dz == 0 {
            return;
        }
        // At least one packet (a button change), then until the motion is sent.
        loop {
            if self.packets.len() + 4 > QUEUE_CAP {
                return;
            }
            let p = self.packet();
            self.packets.extend(p);
            if self.dx == 0 && self.dy == 0 && self.dz == 0 {
                return;
            }
        }
    }

    /// One movement packet from the accumulated motion (at most 127 per axis, the rest stays).
    fn packet(&mut self) -> Vec<u8> {
        let dx = self.dx.clamp(-127, 127);
        // PS/2 y grows upwards.
        let dy = self.dy.saturating_neg().clamp(-127, 127);
        let dz = self.dz.clamp(-7, 7);
        self.dx -= dx;
        self.dy += dy;
        self.dz -= dz;
        let b = self.buttons;
        let mut p = vec![
            0x08 | u8::from(b & BUTTON_LEFT != 0)
                | u8::from(b & BUTTON_RIGHT != 0) << 1
                | u8::from(b & BUTTON_MIDDLE != 0) << 2
                | u8::from(dx < 0) << 4
                | u8::from(dy < 0) << 5,
            dx as u8,
            dy as u8,
        ];
        match self.kind {
            TYPE_IMPS2 => p.push(dz as u8),
            TYPE_IMEX => p.push((dz as u8) & 0x0f),
            _ => self.dz = 0,
        }
        p
    }
}

impl Mouse {
    /// Bytes queued for the guest (for checking a restored state).
    pub(super) fn queued(&self) -> usize {
        self.replies.len() + self.packets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &mut Mouse) -> Vec<u8> {
        std::iter::from_fn(|| m.pop()).collect()
    }

    fn cmd(m: &mut Mouse, b: u8) -> Vec<u8> {
        m.write(b);
        drain(m)
    }

    #[test]
    fn linux_psmouse_probe_and_packets() {
        let mut m = Mouse::new();
        assert_eq!(cmd(&mut m, CMD_RESET), [REPLY_ACK, REPLY_BAT_OK, 0]);
        assert_eq!(cmd(&mut m, CMD_GET_TYPE), [REPLY_ACK, 0]);
        // Disabled: no packets.
        m.event(5, 5, 0, 0);
        assert!(drain(&mut m).is_empty());
        // IntelliMouse knock.
        for rate in [200, 100, 80] {
            assert_eq!(cmd(&mut m, CMD_SET_RATE), [REPLY_ACK]);
            assert_eq!(cmd(&mut m, rate), [REPLY_ACK]);
        }
        assert_eq!(cmd(&mut m, CMD_GET_TYPE), [REPLY_ACK, TYPE_IMPS2]);
        assert_eq!(cmd(&mut m, CMD_ENABLE), [REPLY_ACK]);
        m.event(-3, 10, -1, BUTTON_LEFT);
        // Accumulated (5,5) from before plus this motion: (2, 15) -> y up is negative.
        assert_eq!(drain(&mut m), [0x08 | 0x01 | 0x20, 2, (-15i8) as u8, 0xff]);
        // No motion, same buttons: nothing to report.
        m.event(0, 0, 0, BUTTON_LEFT);
        assert!(drain(&mut m).is_empty());
        // Large motion splits into packets of at most 127.
        m.event(300, 0, 0, 0);
        assert_eq!(
            drain(&mut m),
            [0x08, 127, 0, 0, 0x08, 127, 0, 0, 0x08, 46, 0, 0]
        );
        assert_eq!(
            cmd(&mut m, CMD_GET_STATUS),
            [REPLY_ACK, STATUS_ENABLED, 2, 80]
        );
        assert_eq!(cmd(&mut m, CMD_SET_WRAP), [REPLY_ACK]);
        assert_eq!(cmd(&mut m, 0x42), [0x42]);
        assert_eq!(cmd(&mut m, CMD_RESET_WRAP), [REPLY_ACK]);
        assert_eq!(cmd(&mut m, 0x01), [REPLY_NAK]);
        // A flood while the guest reads nothing stays bounded; extreme motion saturates.
        for _ in 0..10_000 {
            m.event(1000, 1000, 0, 0);
        }
        assert!(drain(&mut m).len() <= QUEUE_CAP);
        for v in [i32::MIN, i32::MAX, i32::MIN] {
            m.event(v, v, v, 0);
        }
        assert!(drain(&mut m).len() <= QUEUE_CAP);
    }
}
