//! Editing a snapshot state file for the hostile-file tests: the payload is JSON behind a
//! 32-byte header with its length and FNV-1a checksum (docs/SNAPSHOT.md).

use serde_json::Value;

/// FNV-1a 64, the state file's checksum (docs/SNAPSHOT.md).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A state file with `edit` applied to its JSON and a valid checksum: hostile values that pass
/// the format checks.
pub fn reframed(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&bytes[32..]).unwrap();
    edit(&mut v);
    let payload = serde_json::to_vec(&v).unwrap();
    let mut out = bytes[..16].to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}
