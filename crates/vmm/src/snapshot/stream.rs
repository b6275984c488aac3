//! The snapshot as one byte stream, for `exec:CMD` (QEMU 7.2's way to a file:
//! `migrate exec:cat > PATH`, `-incoming "exec:cat PATH"`): the state file's bytes, then RAM
//! as records `(guest address u64 LE, length u64 LE, bytes)` for every run of pages that may
//! hold data, ended by a record with address `u64::MAX` and length 0. Restoring from a stream
//! copies RAM (cost grows with what the guest wrote); `file:` maps it instead.

use super::format::{self, FormatError, HEADER_LEN, MAX_PAYLOAD};
use super::{memory, SnapshotContext, SnapshotError, SnapshotState};
use std::io::{Read, Write};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const END: u64 = u64::MAX;
/// RAM is copied in pieces of at most this much (a record's length is untrusted).
const CHUNK: usize = 1 << 20;

fn io_err(what: &str) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: what.into(),
        source,
    }
}

/// Write `state_bytes` (a whole state file) and RAM to `out`; returns the RAM bytes written.
pub fn write(
    ctx: &SnapshotContext,
    state_bytes: &[u8],
    out: &mut dyn Write,
    what: &str,
) -> Result<u64, SnapshotError> {
    out.write_all(state_bytes).map_err(io_err(what))?;
    let gpas: Vec<u64> = ctx
        .mem
        .iter()
        .map(|r| vm_memory::GuestMemoryRegion::start_addr(r).0)
        .collect();
    let mut written = 0u64;
    memory::for_each_run(&ctx.mem, !ctx.file_backed, |index, offset, data| {
        let gpa = gpas.get(index).copied().unwrap_or(0) + offset;
        out.write_all(&gpa.to_le_bytes())?;
        out.write_all(&(data.len() as u64).to_le_bytes())?;
        written += data.len() as u64;
        out.write_all(data)
    })
    .map_err(io_err(what))?;
    out.write_all(&END.to_le_bytes())
        .and_then(|()| out.write_all(&0u64.to_le_bytes()))
        .and_then(|()| out.flush())
        .map_err(io_err(what))?;
    Ok(written)
}

fn read_u64(input: &mut impl Read, what: &str) -> Result<u64, SnapshotError> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b).map_err(io_err(what))?;
    Ok(u64::from_le_bytes(b))
}

/// Read the state part of a stream (header, then the length it claims, bounded).
pub fn read_state(input: &mut impl Read, what: &str) -> Result<SnapshotState, SnapshotError> {
    let fmt = |source| SnapshotError::Format {
        path: what.into(),
        source,
    };
    let mut bytes = vec![0u8; HEADER_LEN];
    input.read_exact(&mut bytes).map_err(io_err(what))?;
    // format::decode checks the header again; this only bounds what is read.
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let claimed = u64::from_le_bytes(len);
    if &bytes[..8] != format::MAGIC {
        return Err(fmt(FormatError::Magic));
    }
    if claimed > MAX_PAYLOAD {
        return Err(fmt(FormatError::TooLarge { claimed }));
    }
    let mut payload = Vec::new();
    input
        .take(claimed)
        .read_to_end(&mut payload)
        .map_err(io_err(what))?;
    bytes.extend_from_slice(&payload);
    format::decode(&bytes).map_err(fmt)
}

/// Copy the RAM records of a stream into guest RAM (which must read as zero where the stream
/// has no record: a VM built for `-incoming`). Every record must lie inside RAM.
pub fn read_memory(
    ctx: &SnapshotContext,
    input: &mut impl Read,
    what: &str,
) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let gpa = read_u64(input, what)?;
        let len = read_u64(input, what)?;
        if gpa == END && len == 0 {
            return Ok(());
        }
        let bad = || SnapshotError::RamRecord {
            what: what.into(),
            gpa,
            len,
        };
        let end = gpa.checked_add(len).ok_or_else(bad)?;
        let inside = ctx.mem.iter().any(|r| {
            let start = vm_memory::GuestMemoryRegion::start_addr(r).0;
            gpa >= start && end <= start + vm_memory::GuestMemoryRegion::len(r)
        });
        if !inside {
            return Err(bad());
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            input.read_exact(&mut buf[..n]).map_err(io_err(what))?;
            ctx.mem
                .write_slice(&buf[..n], GuestAddress(gpa + done))
                .map_err(|_| bad())?;
            done += n as u64;
        }
    }
}
