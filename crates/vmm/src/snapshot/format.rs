//! The snapshot's state file: a fixed header, then the state as JSON (docs/SNAPSHOT.md).
//!
//! ```text
//! 0   8  magic "RVMMSNAP"
//! 8   4  format version (LE), FORMAT_VERSION
//! 12  4  0
//! 16  8  payload length (LE)
//! 24  8  FNV-1a 64 of the payload (LE)
//! 32  -  payload: SnapshotState as JSON (serde, self-describing)
//! ```
//!
//! Everything here is parsing of untrusted bytes: every size is checked before it is used and
//! every failure is an error naming what is wrong, never a panic (fuzz/ runs [`decode`]).

use super::SnapshotState;

pub const MAGIC: &[u8; 8] = b"RVMMSNAP";
/// Bumped whenever [`SnapshotState`] changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
/// A state file is a few KiB per vCPU; anything claiming more is not one of ours.
pub const MAX_PAYLOAD: u64 = 64 << 20;

/// What is wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not an rvmm snapshot (no RVMMSNAP magic)")]
    Magic,
    #[error("truncated: {len} bytes, the header alone is {HEADER_LEN}")]
    ShortHeader { len: usize },
    #[error("snapshot format version {found}, this rvmm reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("the header claims a {claimed}-byte state, more than the {MAX_PAYLOAD}-byte limit")]
    TooLarge { claimed: u64 },
    #[error("truncated: the header claims a {claimed}-byte state, the file has {found} bytes after the header")]
    Truncated { claimed: u64, found: u64 },
    #[error("corrupted: the state's checksum does not match (FNV-1a {found:#018x}, header says {expected:#018x})")]
    Checksum { expected: u64, found: u64 },
    #[error("corrupted: {0}")]
    Json(#[source] serde_json::Error),
}

/// FNV-1a, 64 bits: catches truncation and flipped bits, not tampering.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The state file's bytes.
pub fn encode(state: &SnapshotState) -> Result<Vec<u8>, FormatError> {
    let payload = serde_json::to_vec(state).map_err(FormatError::Json)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The header's claims, checked against `bytes`: the payload's range.
pub fn check_header(bytes: &[u8]) -> Result<&[u8], FormatError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::Magic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::ShortHeader { len: bytes.len() });
    }
    let version = le_u32(&bytes[8..12]);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let claimed = le_u64(&bytes[16..24]);
    if claimed > MAX_PAYLOAD {
        return Err(FormatError::TooLarge { claimed });
    }
    let found = (bytes.len() - HEADER_LEN) as u64;
    if found < claimed {
        return Err(FormatError::Truncated { claimed, found });
    }
    // `claimed` <= MAX_PAYLOAD fits usize.
    let payload = &bytes[HEADER_LEN..HEADER_LEN + claimed as usize];
    let expected = le_u64(&bytes[24..32]);
    let sum = fnv1a(payload);
    if sum != expected {
        return Err(FormatError::Checksum {
            expected,
            found: sum,
        });
    }
    Ok(payload)
}

/// Parse a state file. Its values still need checking against the VM ([`super::restore`]).
pub fn decode(bytes: &[u8]) -> Result<SnapshotState, FormatError> {
    let payload = check_header(bytes)?;
    serde_json::from_slice(payload).map_err(FormatError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::memory::MemoryRecord;
    use crate::snapshot::{MachineIdentity, SnapshotHeader};
    use rvmm_hypervisor::{VcpuSnapshot, VmSnapshot};

    fn sample() -> Vec<u8> {
        let machine = MachineIdentity {
            machine: "Microvm".into(),
            memory_bytes: 128 << 20,
            smp: "1".into(),
            cpu: "host".into(),
            irqchip: "Split".into(),
            devices: vec!["COM1".into()],
        };
        let state = SnapshotState {
            header: SnapshotHeader {
                rvmm_version: "0".into(),
                digest: machine.digest(),
                machine,
                memory: MemoryRecord {
                    id: 7,
                    regions: Vec::new(),
                },
            },
            vm: VmSnapshot {
                irqchip: Vec::new(),
                pit: None,
                clock: 5,
            },
            vcpus: vec![VcpuSnapshot {
                id: 0,
                mp_state: Default::default(),
                regs: Default::default(),
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Default::default(),
                debugregs: Default::default(),
                lapic: Default::default(),
                msrs: vec![Default::default()],
                events: Default::default(),
                tsc_khz: Some(1),
            }],
            devices: [("COM1".to_string(), serde_json::json!({"x": 1}))].into(),
            suspended: false,
        };
        encode(&state).unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let state = decode(&bytes).unwrap();
        assert_eq!(state.vm.clock, 5);
        assert_eq!(state.vcpus[0].tsc_khz, Some(1));
        assert_eq!(state.header.memory.id, 7);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        // A flipped bit anywhere: header fields or payload (checksum).
        for i in (0..bytes.len()).step_by(97).chain(0..HEADER_LEN) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            // Bytes 12..16 are reserved and unchecked.
            if !(12..16).contains(&i) {
                assert!(decode(&b).is_err(), "flip at {i}");
            }
        }
        assert!(matches!(
            decode(b"RVMMSNAP"),
            Err(FormatError::ShortHeader { len: 8 })
        ));
    }
}
