//! VNC Authentication (RFC 6143 7.2.2): DES-ECB over a 16-byte challenge, keyed by the password's
//! first 8 bytes (zero-padded) with the bits of each byte reversed, as every VNC implementation
//! does.

use std::io::Read;

use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;

/// The challenge sent to a client.
pub const CHALLENGE_LEN: usize = 16;

/// A fresh random challenge; falls back to time-derived bytes if /dev/urandom cannot be read.
pub fn challenge() -> [u8; CHALLENGE_LEN] {
    let mut c = [0u8; CHALLENGE_LEN];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut c));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        c.copy_from_slice(&t.to_le_bytes());
    }
    c
}

/// The response a client holding `password` sends to `challenge`.
pub fn response(password: &[u8], challenge: &[u8; CHALLENGE_LEN]) -> [u8; CHALLENGE_LEN] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&key.into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(block.into());
    }
    out
}

/// Whether `answer` is the right response; compares every byte (no early exit).
pub fn check(password: &[u8], challenge: &[u8; CHALLENGE_LEN], answer: &[u8]) -> bool {
    let expected = response(password, challenge);
    answer.len() == CHALLENGE_LEN
        && expected
            .iter()
            .zip(answer)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // vncdotool's answer (rfb.py des_encrypt(_vnc_des("password"), bytes(range(16)))).
        let mut seq = [0u8; 16];
        for (i, b) in seq.iter_mut().enumerate() {
            *b = i as u8;
        }
        let want = [
            0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5,
            0x38, 0xe2,
        ];
        assert_eq!(response(b"password", &seq), want);
        let ch = [0u8; 16];
        let r = response(b"password", &ch);
        assert_eq!(r[..8], r[8..], "ECB: equal blocks encrypt equally");
        assert!(check(b"password", &ch, &r));
        assert!(!check(b"passwore", &ch, &r));
        assert!(!check(b"password", &ch, &r[..15]));
        // Only 8 bytes count.
        assert!(check(b"password-and-more", &ch, &r));
        let c = challenge();
        assert_ne!(response(b"", &c), c);
    }
}
