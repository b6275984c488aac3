//! The keys rvmm can type, one table: Linux input key codes (include/uapi/linux/input-event-codes.h,
//! also virtio-input's codes), PS/2 scan code sets 1 and 2 (the IBM PC AT keyboard tables, as in
//! the "Keyboard Scan Code Specification"), and QEMU's QKeyCode names (qapi/ui.json) for QMP.
//! The i8042 translation table is derived from sets 1 and 2 here rather than written out.

/// Linux input key codes (include/uapi/linux/input-event-codes.h).
pub mod keys {
    pub const KEY_ESC: u16 = 1;
    pub const KEY_1: u16 = 2;
    pub const KEY_2: u16 = 3;
    pub const KEY_3: u16 = 4;
    pub const KEY_4: u16 = 5;
    pub const KEY_5: u16 = 6;
    pub const KEY_6: u16 = 7;
    pub const KEY_7: u16 = 8;
    pub const KEY_8: u16 = 9;
    pub const KEY_9: u16 = 10;
    pub const KEY_0: u16 = 11;
    pub const KEY_MINUS: u16 = 12;
    pub const KEY_EQUAL: u16 = 13;
    pub const KEY_BACKSPACE: u16 = 14;
    pub const KEY_TAB: u16 = 15;
    pub const KEY_Q: u16 = 16;
    pub const KEY_W: u16 = 17;
    pub const KEY_E: u16 = 18;
    pub const KEY_R: u16 = 19;
    pub const KEY_T: u16 = 20;
    pub const KEY_Y: u16 = 21;
    pub const KEY_U: u16 = 22;
    pub const KEY_I: u16 = 23;
    pub const KEY_O: u16 = 24;
    pub const KEY_P: u16 = 25;
    pub const KEY_LEFTBRACE: u16 = 26;
    pub const KEY_RIGHTBRACE: u16 = 27;
    pub const KEY_ENTER: u16 = 28;
    pub const KEY_LEFTCTRL: u16 = 29;
    pub const KEY_A: u16 = 30;
    pub const KEY_S: u16 = 31;
    pub const KEY_D: u16 = 32;
    pub const KEY_F: u16 = 33;
    pub const KEY_G: u16 = 34;
    pub const KEY_H: u16 = 35;
    pub const KEY_J: u16 = 36;
    pub const KEY_K: u16 = 37;
    pub const KEY_L: u16 = 38;
    pub const KEY_SEMICOLON: u16 = 39;
    pub const KEY_APOSTROPHE: u16 = 40;
    pub const KEY_GRAVE: u16 = 41;
    pub const KEY_LEFTSHIFT: u16 = 42;
    pub const KEY_BACKSLASH: u16 = 43;
    pub const KEY_Z: u16 = 44;
    pub const KEY_X: u16 = 45;
    pub const KEY_C: u16 = 46;
    pub const KEY_V: u16 = 47;
    pub const KEY_B: u16 = 48;
    pub const KEY_N: u16 = 49;
    pub const KEY_M: u16 = 50;
    pub const KEY_COMMA: u16 = 51;
    pub const KEY_DOT: u16 = 52;
    pub const KEY_SLASH: u16 = 53;
    pub const KEY_RIGHTSHIFT: u16 = 54;
    pub const KEY_KPASTERISK: u16 = 55;
    pub const KEY_LEFTALT: u16 = 56;
    pub const KEY_SPACE: u16 = 57;
    pub const KEY_CAPSLOCK: u16 = 58;
    pub const KEY_F1: u16 = 59;
    pub const KEY_F2: u16 = 60;
    pub const KEY_F3: u16 = 61;
    pub const KEY_F4: u16 = 62;
    pub const KEY_F5: u16 = 63;
    pub const KEY_F6: u16 = 64;
    pub const KEY_F7: u16 = 65;
    pub const KEY_F8: u16 = 66;
    pub const KEY_F9: u16 = 67;
    pub const KEY_F10: u16 = 68;
    pub const KEY_NUMLOCK: u16 = 69;
    pub const KEY_SCROLLLOCK: u16 = 70;
    pub const KEY_KP7: u16 = 71;
    pub const KEY_KP8: u16 = 72;
    pub const KEY_KP9: u16 = 73;
    pub const KEY_KPMINUS: u16 = 74;
    pub const KEY_KP4: u16 = 75;
    pub const KEY_KP5: u16 = 76;
    pub const KEY_KP6: u16 = 77;
    pub const KEY_KPPLUS: u16 = 78;
    pub const KEY_KP1: u16 = 79;
    pub const KEY_KP2: u16 = 80;
    pub const KEY_KP3: u16 = 81;
    pub const KEY_KP0: u16 = 82;
    pub const KEY_KPDOT: u16 = 83;
    pub const KEY_102ND: u16 = 86;
    pub const KEY_F11: u16 = 87;
    pub const KEY_F12: u16 = 88;
    pub const KEY_KPENTER: u16 = 96;
    pub const KEY_RIGHTCTRL: u16 = 97;
    pub const KEY_KPSLASH: u16 = 98;
    pub const KEY_SYSRQ: u16 = 99;
    pub const KEY_RIGHTALT: u16 = 100;
    pub const KEY_HOME: u16 = 102;
    pub const KEY_UP: u16 = 103;
    pub const KEY_PAGEUP: u16 = 104;
    pub const KEY_LEFT: u16 = 105;
    pub const KEY_RIGHT: u16 = 106;
    pub const KEY_END: u16 = 107;
    pub const KEY_DOWN: u16 = 108;
    pub const KEY_PAGEDOWN: u16 = 109;
    pub const KEY_INSERT: u16 = 110;
    pub const KEY_DELETE: u16 = 111;
    pub const KEY_KPEQUAL: u16 = 117;
    pub const KEY_PAUSE: u16 = 119;
    pub const KEY_KPCOMMA: u16 = 121;
    pub const KEY_LEFTMETA: u16 = 125;
    pub const KEY_RIGHTMETA: u16 = 126;
    pub const KEY_COMPOSE: u16 = 127;
}

use keys::*;

/// Every key rvmm can type: its Linux code, PS/2 scan codes (set 1 and 2; 0xE0xx = E0 prefix)
/// and QEMU's QKeyCode name.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    Key { code: KEY_ESC, set1: 0x0001, set2: 0x0076, qcode: "esc" },
    Key { code: KEY_1, set1: 0x0002, set2: 0x0016, qcode: "1" },
    Key { code: KEY_2, set1: 0x0003, set2: 0x001e, qcode: "2" },
    Key { code: KEY_3, set1: 0x0004, set2: 0x0026, qcode: "3" },
    Key { code: KEY_4, set1: 0x0005, set2: 0x0025, qcode: "4" },
    Key { code: KEY_5, set1: 0x0006, set2: 0x002e, qcode: "5" },
    Key { code: KEY_6, set1: 0x0007, set2: 0x0036, qcode: "6" },
    Key { code: KEY_7, set1: 0x0008, set2: 0x003d, qcode: "7" },
    Key { code: KEY_8, set1: 0x0009, set2: 0x003e, qcode: "8" },
    Key { code: KEY_9, set1: 0x000a, set2: 0x0046, qcode: "9" },
    Key { code: KEY_0, set1: 0x000b, set2: 0x0045, qcode: "0" },
    Key { code: KEY_MINUS, set1: 0x000c, set2: 0x004e, qcode: "minus" },
    Key { code: KEY_EQUAL, set1: 0x000d, set2: 0x0055, qcode: "equal" },
    Key { code: KEY_BACKSPACE, set1: 0x000e, set2: 0x0066, qcode: "backspace" },
    Key { code: KEY_TAB, set1: 0x000f, set2: 0x000d, qcode: "tab" },
    Key { code: KEY_Q, set1: 0x0010, set2: 0x0015, qcode: "q" },
    Key { code: KEY_W, set1: 0x0011, set2: 0x001d, qcode: "w" },
    Key { code: KEY_E, set1: 0x0012, set2: 0x0024, qcode: "e" },
    Key { code: KEY_R, set1: 0x0013, set2: 0x002d, qcode: "r" },
    Key { code: KEY_T, set1: 0x0014, set2: 0x002c, qcode: "t" },
    Key { code: KEY_Y, set1: 0x0015, set2: 0x0035, qcode: "y" },
    Key { code: KEY_U, set1: 0x0016, set2: 0x003c, qcode: "u" },
    Key { code: KEY_I, set1: 0x0017, set2: 0x0043, qcode: "i" },
    Key { code: KEY_O, set1: 0x0018, set2: 0x0044, qcode: "o" },
    Key { code: KEY_P, set1: 0x0019, set2: 0x004d, qcode: "p" },
    Key { code: KEY_LEFTBRACE, set1: 0x001a, set2: 0x0054, qcode: "bracket_left" },
    Key { code: KEY_RIGHTBRACE, set1: 0x001b, set2: 0x005b, qcode: "bracket_right" },
    Key { code: KEY_ENTER, set1: 0x001c, set2: 0x005a, qcode: "ret" },
    Key { code: KEY_LEFTCTRL, set1: 0x001d, set2: 0x0014, qcode: "ctrl" },
    Key { code: KEY_A, set1: 0x001e, set2: 0x001c, qcode: "a" },
    Key { code: KEY_S, set1: 0x001f, set2: 0x001b, qcode: "s" },
    Key { code: KEY_D, set1: 0x0020, set2: 0x0023, qcode: "d" },
    Key { code: KEY_F, set1: 0x0021, set2: 0x002b, qcode: "f" },
    Key { code: KEY_G, set1: 0x0022, set2: 0x0034, qcode: "g" },
    Key { code: KEY_H, set1: 0x0023, set2: 0x0033, qcode: "h" },
    Key { code: KEY_J, set1: 0x0024, set2: 0x003b, qcode: "j" },
    Key { code: KEY_K, set1: 0x0025, set2: 0x0042, qcode: "k" },
    Key { code: KEY_L, set1: 0x0026, set2: 0x004b, qcode: "l" },
    Key { code: KEY_SEMICOLON, set1: 0x0027, set2: 0x004c, qcode: "semicolon" },
    Key { code: KEY_APOSTROPHE, set1: 0x0028, set2: 0x0052, qcode: "apostrophe" },
    Key { code: KEY_GRAVE, set1: 0x0029, set2: 0x000e, qcode: "grave_accent" },
    Key { code: KEY_LEFTSHIFT, set1: 0x002a, set2: 0x0012, qcode: "shift" },
    Key { code: KEY_BACKSLASH, set1: 0x002b, set2: 0x005d, qcode: "backslash" },
    Key { code: KEY_Z, set1: 0x002c, set2: 0x001a, qcode: "z" },
    Key { code: KEY_X, set1: 0x002d, set2: 0x0022, qcode: "x" },
    Key { code: KEY_C, set1: 0x002e, set2: 0x0021, qcode: "c" },
    Key { code: KEY_V, set1: 0x002f, set2: 0x002a, qcode: "v" },
    Key { code: KEY_B, set1: 0x0030, set2: 0x0032, qcode: "b" },
    Key { code: KEY_N, set1: 0x0031, set2: 0x0031, qcode: "n" },
    Key { code: KEY_M, set1: 0x0032, set2: 0x003a, qcode: "m" },
    Key { code: KEY_COMMA, set1: 0x0033, set2: 0x0041, qcode: "comma" },
    Key { code: KEY_DOT, set1: 0x0034, set2: 0x0049, qcode: "dot" },
    Key { code: KEY_SLASH, set1: 0x0035, set2: 0x004a, qcode: "slash" },
    Key { code: KEY_RIGHTSHIFT, set1: 0x0036, set2: 0x0059, qcode: "shift_r" },
    Key { code: KEY_KPASTERISK, set1: 0x0037, set2: 0x007c, qcode: "kp_multiply" },
    Key { code: KEY_LEFTALT, set1: 0x0038, set2: 0x0011, qcode: "alt" },
    Key { code: KEY_SPACE, set1: 0x0039, set2: 0x0029, qcode: "spc" },
    Key { code: KEY_CAPSLOCK, set1: 0x003a, set2: 0x0058, qcode: "caps_lock" },
    Key { code: KEY_F1, set1: 0x003b, set2: 0x0005, qcode: "f1" },
    Key { code: KEY_F2, set1: 0x003c, set2: 0x0006, qcode: "f2" },
    Key { code: KEY_F3, set1: 0x003d, set2: 0x0004, qcode: "f3" },
    Key { code: KEY_F4, set1: 0x003e, set2: 0x000c, qcode: "f4" },
    Key { code: KEY_F5, set1: 0x003f, set2: 0x0003, qcode: "f5" },
    Key { code: KEY_F6, set1: 0x0040, set2: 0x000b, qcode: "f6" },
    Key { code: KEY_F7, set1: 0x0041, set2: 0x0083, qcode: "f7" },
    Key { code: KEY_F8, set1: 0x0042, set2: 0x000a, qcode: "f8" },
    Key { code: KEY_F9, set1: 0x0043, set2: 0x0001, qcode: "f9" },
    Key { code: KEY_F10, set1: 0x0044, set2: 0x0009, qcode: "f10" },
    Key { code: KEY_NUMLOCK, set1: 0x0045, set2: 0x0077, qcode: "num_lock" },
    Key { code: KEY_SCROLLLOCK, set1: 0x0046, set2: 0x007e, qcode: "scroll_lock" },
    Key { code: KEY_KP7, set1: 0x0047, set2: 0x006c, qcode: "kp_7" },
    Key { code: KEY_KP8, set1: 0x0048, set2: 0x0075, qcode: "kp_8" },
    Key { code: KEY_KP9, set1: 0x0049, set2: 0x007d, qcode: "kp_9" },
    Key { code: KEY_KPMINUS, set1: 0x004a, set2: 0x007b, qcode: "kp_subtract" },
    Key { code: KEY_KP4, set1: 0x004b, set2: 0x006b, qcode: "kp_4" },
    Key { code: KEY_KP5, set1: 0x004c, set2: 0x0073, qcode: "kp_5" },
    Key { code: KEY_KP6, set1: 0x004d, set2: 0x0074, qcode: "kp_6" },
    Key { code: KEY_KPPLUS, set1: 0x004e, set2: 0x0079, qcode: "kp_add" },
    Key { code: KEY_KP1, set1: 0x004f, set2: 0x0069, qcode: "kp_1" },
    Key { code: KEY_KP2, set1: 0x0050, set2: 0x0072, qcode: "kp_2" },
    Key { code: KEY_KP3, set1: 0x0051, set2: 0x007a, qcode: "kp_3" },
    Key { code: KEY_KP0, set1: 0x0052, set2: 0x0070, qcode: "kp_0" },
    Key { code: KEY_KPDOT, set1: 0x0053, set2: 0x0071, qcode: "kp_decimal" },
    Key { code: KEY_102ND, set1: 0x0056, set2: 0x0061, qcode: "less" },
    Key { code: KEY_F11, set1: 0x0057, set2: 0x0078, qcode: "f11" },
    Key { code: KEY_F12, set1: 0x0058, set2: 0x0007, qcode: "f12" },
    Key { code: KEY_KPENTER, set1: 0xe01c, set2: 0xe05a, qcode: "kp_enter" },
    Key { code: KEY_RIGHTCTRL, set1: 0xe01d, set2: 0xe014, qcode: "ctrl_r" },
    Key { code: KEY_KPSLASH, set1: 0xe035, set2: 0xe04a, qcode: "kp_divide" },
    Key { code: KEY_SYSRQ, set1: 0xe037, set2: 0xe07c, qcode: "print" },
    Key { code: KEY_RIGHTALT, set1: 0xe038, set2: 0xe011, qcode: "alt_r" },
    Key { code: KEY_HOME, set1: 0xe047, set2: 0xe06c, qcode: "home" },
    Key { code: KEY_UP, set1: 0xe048, set2: 0xe075, qcode: "up" },
    Key { code: KEY_PAGEUP, set1: 0xe049, set2: 0xe07d, qcode: "pgup" },
    Key { code: KEY_LEFT, set1: 0xe04b, set2: 0xe06b, qcode: "left" },
    Key { code: KEY_RIGHT, set1: 0xe04d, set2: 0xe074, qcode: "right" },
    Key { code: KEY_END, set1: 0xe04f, set2: 0xe069, qcode: "end" },
    Key { code: KEY_DOWN, set1: 0xe050, set2: 0xe072, qcode: "down" },
    Key { code: KEY_PAGEDOWN, set1: 0xe051, set2: 0xe07a, qcode: "pgdn" },
    Key { code: KEY_INSERT, set1: 0xe052, set2: 0xe070, qcode: "insert" },
    Key { code: KEY_DELETE, set1: 0xe053, set2: 0xe071, qcode: "delete" },
    Key { code: KEY_KPEQUAL, set1: 0x0059, set2: 0x000f, qcode: "kp_equals" },
    Key { code: KEY_PAUSE, set1: 0xe046, set2: 0xe177, qcode: "pause" },
    Key { code: KEY_KPCOMMA, set1: 0x007e, set2: 0x006d, qcode: "kp_comma" },
    Key { code: KEY_LEFTMETA, set1: 0xe05b, set2: 0xe01f, qcode: "meta_l" },
    Key { code: KEY_RIGHTMETA, set1: 0xe05c, set2: 0xe027, qcode: "meta_r" },
    Key { code: KEY_COMPOSE, set1: 0xe05d, set2: 0xe02f, qcode: "menu" },
];

/// One key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: u16,
    /// Set 1 make code; 0xE0xx for E0-prefixed keys.
    pub set1: u16,
    /// Set 2 make code; 0xE0xx for E0-prefixed keys (Pause's E1 sequence is 0xE177).
    pub set2: u16,
    pub qcode: &'static str,
}

/// The key with this Linux code.
pub fn by_code(code: u16) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.code == code)
}

/// The key with this QKeyCode name (QMP `send-key`, `input-send-event`).
pub fn by_qcode(name: &str) -> Option<&'static Key> {
    let name = if name == "sysrq" { "print" } else { name };
    KEYS.iter().find(|k| k.qcode == name)
}

/// The key with this QEMU key number ("qnum": the set 1 code, 0x80 | code for E0-prefixed keys;
/// QMP `{"type": "number"}` and VNC's QEMU extended key event).
pub fn by_qnum(qnum: u32) -> Option<&'static Key> {
    KEYS.iter().find(|k| qnum_of(k) == qnum)
}

/// A key's QEMU key number.
pub fn qnum_of(k: &Key) -> u32 {
    match k.set1 {
        c if c > 0xff => 0x80 | u32::from(c & 0x7f),
        c => u32::from(c),
    }
}

/// The i8042's set 2 to set 1 translation of one code byte (prefixes and the break flag are
/// handled by the caller), derived from the table: the set 1 byte of the key with this set 2
/// byte, a key without prefix first (the controller translates E0-prefixed bytes alike).
/// Bytes no key uses pass unchanged.
pub fn translate_set2(byte: u8) -> u8 {
    let low = |c: u16| (c & 0xff) as u8;
    KEYS.iter()
        .filter(|k| low(k.set2) == byte)
        .min_by_key(|k| k.set2 >> 8)
        .map(|k| low(k.set1))
        .unwrap_or(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.code, b.code, "{}", a.qcode);
                assert_ne!(a.set1, b.set1, "{} {}", a.qcode, b.qcode);
                assert_ne!(a.set2, b.set2, "{} {}", a.qcode, b.qcode);
                assert_ne!(a.qcode, b.qcode);
            }
            // Translating a key's set 2 code gives its set 1 code (Pause has its own sequence).
            assert!(
                a.code == keys::KEY_PAUSE
                    || translate_set2((a.set2 & 0xff) as u8) == (a.set1 & 0xff) as u8,
                "{}",
                a.qcode
            );
            assert_eq!(by_qnum(qnum_of(a)), Some(a));
        }
        assert_eq!(by_qcode("a").map(|k| k.set1), Some(0x1e));
        assert_eq!(by_qcode("sysrq").map(|k| k.code), Some(keys::KEY_SYSRQ));
        assert_eq!(by_qnum(0xc8).map(|k| k.code), Some(keys::KEY_UP));
        assert_eq!(translate_set2(0x83), 0x41);
    }
}
