//! The PS/2 keyboard behind the i8042's first port: the commands Linux's atkbd and SeaBIOS send
//! (as QEMU's hw/input/ps2.c answers them) and scan codes in set 1 or 2 from the key table
//! (`input::keymap`). The controller translates set 2 to set 1 when its command byte says so
//! ([`translate`]).
//!
//! Typematic repeat comes from the front end: a VNC client repeats a held key by sending the press
//! again, which arrives here as another make code, the way a real keyboard's repeat would.
//! Set 3 can be selected and read back (Linux's atkbd asks for it only with `atkbd.set=3`),
//! but keys are sent with their set 2 codes then, as rvmm has no set 3 table.

use std::collections::VecDeque;

use crate::input::{keymap, keys};

// Keyboard commands and replies.
const CMD_SET_LEDS: u8 = 0xed;
const CMD_ECHO: u8 = 0xee;
const CMD_SCANCODE: u8 = 0xf0;
const CMD_GET_ID: u8 = 0xf2;
const CMD_SET_RATE: u8 = 0xf3;
const CMD_ENABLE: u8 = 0xf4;
const CMD_RESET_DISABLE: u8 = 0xf5;
const CMD_RESET_ENABLE: u8 = 0xf6;
/// 0xF7-0xFD: set 3 key-type commands; 0xFB-0xFD take a key parameter.
const CMD_SET_ALL_TYPEMATIC: u8 = 0xf7;
const CMD_SET_KEY_TYPE_FIRST: u8 = 0xfb;
const CMD_SET_KEY_TYPE_LAST: u8 = 0xfd;
const CMD_RESEND: u8 = 0xfe;
const CMD_RESET: u8 = 0xff;
pub(super) const REPLY_ACK: u8 = 0xfa;
pub(super) const REPLY_RESEND: u8 = 0xfe;
const REPLY_POR: u8 = 0xaa;
const REPLY_ID: u8 = 0xab;
/// Second ID byte of an MF2 keyboard, without and with translation.
const ID_MF2: u8 = 0x83;
const ID_MF2_XLATE: u8 = 0x41;
/// Scan code sets 1-3 as read back through translation.
const XLATED_SCANCODE_SET: [u8; 3] = [0x43, 0x41, 0x3f];
const DEFAULT_SCANCODE_SET: u8 = 2;
/// Typematic default: 10.9 characters/s, 500 ms delay.
const DEFAULT_TYPEMATIC: u8 = 0x2b;
/// Scan code bytes held for the guest; a key whose bytes do not fit is dropped whole. With the
/// byte in the output buffer that is 16, a PS/2 keyboard's buffer (QEMU's PS2_QUEUE_SIZE):
/// Linux's i8042 probe reads at most 16 stale bytes and takes more for a stuck controller.
pub(super) const SCANCODE_CAP: usize = 15;
const BREAK_SET2: u8 = 0xf0;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Keyboard {
    /// A command waiting for its parameter byte.
    pending: Option<u8>,
    pub(super) scancode_set: u8,
    scan_enabled: bool,
    /// LED state from 0xED: bit 0 Scroll Lock, 1 Num Lock, 2 Caps Lock.
    pub(super) leds: u8,
    pub(super) typematic: u8,
    /// Replies to commands, read before any queued scan code (as QEMU's command queue).
    replies: VecDeque<u8>,
    scancodes: VecDeque<u8>,
    /// The last byte sent, for 0xFE (resend).
    last_sent: u8,
}

impl Keyboard {
    pub(super) fn new() -> Self {
        Self {
            pending: None,
            scancode_set: DEFAULT_SCANCODE_SET,
            scan_enabled: true,
            leds: 0,
            typematic: DEFAULT_TYPEMATIC,
            replies: VecDeque::new(),
            scancodes: VecDeque::new(),
            last_sent: 0,
        }
    }

    /// QEMU's `ps2_reset_keyboard`: defaults, queue emptied.
    fn reset(&mut self) {
        self.scancode_set = DEFAULT_SCANCODE_SET;
        self.scan_enabled = true;
        self.leds = 0;
        self.typematic = DEFAULT_TYPEMATIC;
        self.scancodes.clear();
    }

    /// The next byte for the controller's output buffer.
    pub(super) fn pop(&mut self) -> Option<u8> {
        let b = self
            .replies
            .pop_front()
            .or_else(|| self.scancodes.pop_front())?;
        self.last_sent = b;
        Some(b)
    }

    /// A byte from the host; queues the keyboard's answer.
    pub(super) fn write(&mut self, byte: u8, translate: bool) {
        let reply = self.command(byte, translate);
        // At most three bytes per command: bounded without a cap.
        self.replies.clear();
        self.replies.extend(reply);
    }

    fn command(&mut self, byte: u8, translate: bool) -> Vec<u8> {
        match self.pending.take() {
            Some(CMD_SCANCODE) => match byte {
                0 if translate => {
                    let set = usize::from(self.scancode_set.clamp(1, 3) - 1);
                    vec![REPLY_ACK, XLATED_SCANCODE_SET[set]]
                }
                0 => vec![REPLY_ACK, self.scancode_set],
                1..=3 => {
                    self.scancode_set = byte;
                    self.scancodes.clear();
                    vec![REPLY_ACK]
                }
                _ => vec![REPLY_RESEND],
            },
            Some(CMD_SET_LEDS) if byte & 0xf8 == 0 => {
                self.leds = byte;
                vec![REPLY_ACK]
            }
            Some(CMD_SET_RATE) if byte & 0x80 == 0 => {
                self.typematic = byte;
                vec![REPLY_ACK]
            }
            // A command byte where a parameter was expected: treat it as a new command
            // (what a keyboard does when the host gives up on a parameter).
            Some(CMD_SET_LEDS | CMD_SET_RATE) => self.command(byte, translate),
            Some(_) => vec![REPLY_ACK],
            None => match byte {
                0x00 => vec![REPLY_ACK],
                CMD_GET_ID => {
                    let id = if translate { ID_MF2_XLATE } else { ID_MF2 };
                    vec![REPLY_ACK, REPLY_ID, id]
                }
                CMD_ECHO => vec![CMD_ECHO],
                CMD_ENABLE => {
                    self.scan_enabled = true;
                    vec![REPLY_ACK]
                }
                CMD_SCANCODE | CMD_SET_LEDS | CMD_SET_RATE => {
                    self.pending = Some(byte);
                    vec![REPLY_ACK]
                }
                CMD_SET_KEY_TYPE_FIRST..=CMD_SET_KEY_TYPE_LAST => {
                    self.pending = Some(byte);
                    vec![REPLY_ACK]
                }
                CMD_RESET_DISABLE | CMD_RESET_ENABLE => {
                    self.reset();
                    self.scan_enabled = byte == CMD_RESET_ENABLE;
                    vec![REPLY_ACK]
                }
                CMD_SET_ALL_TYPEMATIC..CMD_SET_KEY_TYPE_FIRST => vec![REPLY_ACK],
                CMD_RESEND => vec![self.last_sent],
                CMD_RESET => {
                    self.reset();
                    vec![REPLY_ACK, REPLY_POR]
                }
                _ => vec![REPLY_RESEND],
            },
        }
    }

    /// A key went down or up: queue its scan codes in the current set (translated to set 1
    /// when the controller translates). Keys are dropped while scanning is disabled.
    pub(super) fn key(&mut self, code: u16, down: bool, translate: bool) {
        if !self.scan_enabled {
            return;
        }
        let Some(key) = keymap::by_code(code) else {
            return;
        };
        let mut bytes = match self.scancode_set {
            1 => set1_bytes(key, down),
            _ => set2_bytes(key, down),
        };
        if translate {
            bytes = translate_bytes(&bytes);
        }
        if self.scancodes.len() + bytes.len() <= SCANCODE_CAP {
            self.scancodes.extend(bytes);
        }
    }
}

fn set1_bytes(key: &keymap::Key, down: bool) -> Vec<u8> {
    if key.code == keys::KEY_PAUSE {
        // Pause has no break code; its make code is a Ctrl+NumLock press and release.
        return match down {
            true => vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
            false => vec![],
        };
    }
    let code = (key.set1 & 0x7f) as u8 | if down { 0 } else { 0x80 };
    match key.set1 >> 8 {
        0 => vec![code],
        prefix => vec![prefix as u8, code],
    }
}

fn set2_bytes(key: &keymap::Key, down: bool) -> Vec<u8> {
    if key.code == keys::KEY_PAUSE {
        return match down {
            true => vec![0xe1, 0x14, 0x77, 0xe1, BREAK_SET2, 0x14, BREAK_SET2, 0x77],
            false => vec![],
        };
    }
    let code = (key.set2 & 0xff) as u8;
    let mut v = Vec::with_capacity(3);
    if key.set2 >> 8 != 0 {
        v.push((key.set2 >> 8) as u8);
    }
    if !down {
        v.push(BREAK_SET2);
    }
    v.push(code);
    v
}

/// The i8042's set 2 to set 1 translation of a byte sequence: 0xF0 sets bit 7 of the next code,
/// prefixes (0xE0, 0xE1) and bytes from 0x80 up pass unchanged (except 0x83, F7).
pub(super) fn translate_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut brk = false;
    for &b in bytes {
        match b {
            BREAK_SET2 => brk = true,
            b if b < 0x80 || b == 0x83 => {
                out.push(keymap::translate_set2(b) | if brk { 0x80 } else { 0 });
                brk = false;
            }
            b => out.push(b),
        }
    }
    out
}

impl Keyboard {
    /// Bytes queued for the guest (for checking a restored state).
    pub(super) fn queued(&self) -> usize {
        self.replies.len() + self.scancodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(k: &mut Keyboard) -> Vec<u8> {
        std::iter::from_fn(|| k.pop()).collect()
    }

    #[test]
    fn scan_codes_in_each_set_and_translated() {
        let mut k = Keyboard::new();
        k.key(keys::KEY_A, true, false);
        k.key(keys::KEY_A, false, false);
        k.key(keys::KEY_UP, true, false);
        k.key(keys::KEY_UP, false, false);
        assert_eq!(
            drain(&mut k),
            [0x1c, 0xf0, 0x1c, 0xe0, 0x75, 0xe0, 0xf0, 0x75]
        );
        // Translated: set 1 codes.
        k.key(keys::KEY_A, true, true);
        k.key(keys::KEY_A, false, true);
        k.key(keys::KEY_UP, true, true);
        k.key(keys::KEY_UP, false, true);
        k.key(keys::KEY_F7, true, true);
        assert_eq!(drain(&mut k), [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8, 0x41]);
        k.key(keys::KEY_PAUSE, true, true);
        assert_eq!(drain(&mut k), [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]);
        // Set 1 untranslated.
        k.write(CMD_SCANCODE, false);
        k.write(1, false);
        assert_eq!(drain(&mut k), [REPLY_ACK]);
        k.key(keys::KEY_ENTER, true, false);
        k.key(keys::KEY_RIGHTCTRL, false, false);
        assert_eq!(drain(&mut k), [0x1c, 0xe0, 0x9d]);
        // Disabled: keys dropped; a full queue drops whole keys.
        k.write(CMD_RESET_DISABLE, false);
        k.key(keys::KEY_A, true, false);
        assert_eq!(drain(&mut k), [REPLY_ACK]);
        k.write(CMD_ENABLE, false);
        drain(&mut k);
        for _ in 0..100 {
            k.key(keys::KEY_UP, false, false);
        }
        // Each Up release is 3 bytes: five fit.
        assert_eq!(drain(&mut k).len(), 15);
    }

    #[test]
    fn replies_go_before_queued_keys_and_leds_stick() {
        let mut k = Keyboard::new();
        k.key(keys::KEY_B, true, false);
        k.write(CMD_SET_LEDS, false);
        assert_eq!(k.pop(), Some(REPLY_ACK));
        k.write(0x07, false);
        assert_eq!(drain(&mut k), [REPLY_ACK, 0x32]);
        assert_eq!(k.leds, 7);
        k.write(CMD_SET_RATE, false);
        assert_eq!(k.pop(), Some(REPLY_ACK));
        k.write(0x20, false);
        assert_eq!(k.pop(), Some(REPLY_ACK));
        assert_eq!(k.typematic, 0x20);
        k.write(CMD_RESEND, false);
        assert_eq!(drain(&mut k), [REPLY_ACK]);
        // A command where the LED parameter was expected is run as a command.
        k.write(CMD_SET_LEDS, false);
        assert_eq!(k.pop(), Some(REPLY_ACK));
        k.write(CMD_GET_ID, false);
        assert_eq!(drain(&mut k), [REPLY_ACK, REPLY_ID, ID_MF2]);
        k.write(CMD_RESET, false);
        assert_eq!(drain(&mut k), [REPLY_ACK, REPLY_POR]);
        assert_eq!((k.leds, k.typematic), (0, DEFAULT_TYPEMATIC));
    }
}
