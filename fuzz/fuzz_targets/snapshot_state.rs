//! Hostile snapshot state files: the parser must return an error, never panic or allocate
//! without bound (docs/SNAPSHOT.md). Run: `cargo +nightly fuzz run snapshot_state`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rvmm_vmm::snapshot::format::decode(data);
    // Headers that pass with a payload that is arbitrary JSON-ish bytes.
    let mut framed = Vec::with_capacity(data.len() + 32);
    framed.extend_from_slice(b"RVMMSNAP");
    framed.extend_from_slice(&1u32.to_le_bytes());
    framed.extend_from_slice(&0u32.to_le_bytes());
    framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
    framed.extend_from_slice(&rvmm_vmm::snapshot::format::fnv1a(data).to_le_bytes());
    framed.extend_from_slice(data);
    let _ = rvmm_vmm::snapshot::format::decode(&framed);
});
