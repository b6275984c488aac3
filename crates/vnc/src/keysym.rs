//! X keysyms (RFB KeyEvent, RFC 6143 7.5.4) to Linux input key codes for a US keyboard layout.
//!
//! RFB sends symbols, not keys: 'A' and 'a' are two keysyms on one key, and the client sends
//! Shift as a key of its own. Each symbol maps to the key that types it on a US layout, with a
//! flag for symbols that need Shift there, so a client that sends '!' without Shift still types
//! '!' (the server wraps the key in a Shift press). Table made from the X11 keysymdef.h values
//! and the Linux input-event-codes.h key numbers.

use rvmm_devices::input::keys::*;

/// The key for a keysym and whether a US layout needs Shift to type it.
pub fn to_key(keysym: u32) -> Option<(u16, bool)> {
    let k = match keysym {
        0x20 => (KEY_SPACE, false),
        // Letters: lower case without Shift, upper case with.
        0x61..=0x7a => (letter(keysym - 0x61), false),
        0x41..=0x5a => (letter(keysym - 0x41), true),
        0x31..=0x39 => (KEY_1 + (keysym - 0x31) as u16, false),
        0x30 => (KEY_0, false),
        0x21 => (KEY_1, true),
        0x40 => (KEY_2, true),
        0x23 => (KEY_3, true),
        0x24 => (KEY_4, true),
        0x25 => (KEY_5, true),
        0x5e => (KEY_6, true),
        0x26 => (KEY_7, true),
        0x2a => (KEY_8, true),
        0x28 => (KEY_9, true),
        0x29 => (KEY_0, true),
        0x2d => (KEY_MINUS, false),
        0x5f => (KEY_MINUS, true),
        0x3d => (KEY_EQUAL, false),
        0x2b => (KEY_EQUAL, true),
        0x5b => (KEY_LEFTBRACE, false),
        0x7b => (KEY_LEFTBRACE, true),
        0x5d => (KEY_RIGHTBRACE, false),
        0x7d => (KEY_RIGHTBRACE, true),
        0x3b => (KEY_SEMICOLON, false),
        0x3a => (KEY_SEMICOLON, true),
        0x27 => (KEY_APOSTROPHE, false),
        0x22 => (KEY_APOSTROPHE, true),
        0x60 => (KEY_GRAVE, false),
        0x7e => (KEY_GRAVE, true),
        0x5c => (KEY_BACKSLASH, false),
        0x7c => (KEY_BACKSLASH, true),
        0x2c => (KEY_COMMA, false),
        0x3c => (KEY_COMMA, true),
        0x2e => (KEY_DOT, false),
        0x3e => (KEY_DOT, true),
        0x2f => (KEY_SLASH, false),
        0x3f => (KEY_SLASH, true),
        _ => (special(keysym)?, false),
    };
    Some(k)
}

fn letter(i: u32) -> u16 {
    const LETTERS: [u16; 26] = [
        KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F, KEY_G, KEY_H, KEY_I, KEY_J, KEY_K, KEY_L, KEY_M,
        KEY_N, KEY_O, KEY_P, KEY_Q, KEY_R, KEY_S, KEY_T, KEY_U, KEY_V, KEY_W, KEY_X, KEY_Y, KEY_Z,
    ];
    LETTERS[i as usize % 26]
}

/// Keysyms whose key does not depend on Shift (function, editing, keypad, modifiers).
fn special(keysym: u32) -> Option<u16> {
    Some(match keysym {
        0xff08 => KEY_BACKSPACE,
        0xff09 | 0xfe20 => KEY_TAB, // Tab, ISO_Left_Tab (Shift+Tab)
        0xff0d => KEY_ENTER,
        0xff13 => KEY_PAUSE,
        0xff14 => KEY_SCROLLLOCK,
        0xff15 | 0xff61 => KEY_SYSRQ, // Sys_Req, Print
        0xff1b => KEY_ESC,
        0xff50 => KEY_HOME,
        0xff51 => KEY_LEFT,
        0xff52 => KEY_UP,
        0xff53 => KEY_RIGHT,
        0xff54 => KEY_DOWN,
        0xff55 => KEY_PAGEUP,
        0xff56 => KEY_PAGEDOWN,
        0xff57 => KEY_END,
        0xff63 => KEY_INSERT,
        0xff67 => KEY_COMPOSE, // Menu
        0xff7f => KEY_NUMLOCK,
        0xff8d => KEY_KPENTER,
        0xff95 | 0xffb7 => KEY_KP7,
        0xff96 | 0xffb4 => KEY_KP4,
        0xff97 | 0xffb8 => KEY_KP8,
        0xff98 | 0xffb6 => KEY_KP6,
        0xff99 | 0xffb2 => KEY_KP2,
        0xff9a | 0xffb9 => KEY_KP9,
        0xff9b | 0xffb3 => KEY_KP3,
        0xff9c | 0xffb1 => KEY_KP1,
        0xff9d | 0xffb5 => KEY_KP5,
        0xff9e | 0xffb0 => KEY_KP0,
        0xff9f | 0xffae => KEY_KPDOT,
        0xffaa => KEY_KPASTERISK,
        0xffab => KEY_KPPLUS,
        0xffac => KEY_KPCOMMA,
        0xffad => KEY_KPMINUS,
        0xffaf => KEY_KPSLASH,
        0xffbd => KEY_KPEQUAL,
        0xffbe..=0xffc7 => KEY_F1 + (keysym - 0xffbe) as u16,
        0xffc8 => KEY_F11,
        0xffc9 => KEY_F12,
        0xffe1 => KEY_LEFTSHIFT,
        0xffe2 => KEY_RIGHTSHIFT,
        0xffe3 => KEY_LEFTCTRL,
        0xffe4 => KEY_RIGHTCTRL,
        0xffe5 => KEY_CAPSLOCK,
        0xffe7 | 0xffeb => KEY_LEFTMETA, // Meta_L, Super_L
        0xffe8 | 0xffec => KEY_RIGHTMETA,
        0xffe9 => KEY_LEFTALT,
        0xffea | 0xfe03 => KEY_RIGHTALT, // Alt_R, ISO_Level3_Shift (AltGr)
        0xffff => KEY_DELETE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_map_to_us_keys() {
        assert_eq!(to_key(u32::from(b'a')), Some((KEY_A, false)));
        assert_eq!(to_key(u32::from(b'Z')), Some((KEY_Z, true)));
        assert_eq!(to_key(u32::from(b'!')), Some((KEY_1, true)));
        assert_eq!(to_key(u32::from(b'0')), Some((KEY_0, false)));
        assert_eq!(to_key(u32::from(b'9')), Some((KEY_9, false)));
        assert_eq!(to_key(0xff0d), Some((KEY_ENTER, false)));
        assert_eq!(to_key(0xffc9), Some((KEY_F12, false)));
        assert_eq!(to_key(0xffc7), Some((KEY_F10, false)));
        assert_eq!(to_key(0x1234_5678), None);
        // Every printable ASCII character has a key.
        for c in 0x20..0x7f {
            assert!(to_key(c).is_some(), "{c:#x}");
        }
    }
}
