//! Unpacking a bzImage's compressed payload (the vmlinux ELF) in rvmm instead of in the guest.
//!
//! The setup header (boot protocol 2.08+) locates the payload: `payload_offset` bytes after the
//! start of the protected-mode kernel, `payload_length` bytes long. The kernel build appends the
//! uncompressed size as a little-endian u32 to every format (scripts/Makefile.lib, `size_append`),
//! and the format is recognised by its magic, as lib/decompress.c does.

use std::io::Read;

/// A compression format the kernel build can use for the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4,
    Zstd,
}

impl Compression {
    /// The format of `payload`, by its magic (lib/decompress.c, `compressed_formats`).
    pub fn detect(payload: &[u8]) -> Option<Self> {
        const MAGICS: [(&[u8], Compression); 7] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x1f, 0x9e], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x89, b'L', b'Z', b'O', 0x00], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
        ];
        if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Some(Compression::Zstd);
        }
        MAGICS
            .iter()
            .find(|(magic, _)| payload.starts_with(magic))
            .map(|&(_, c)| c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Why a payload could not be unpacked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("setup header needs protocol 2.08 for payload_offset/payload_length, the kernel has {major}.{minor:02}", major = .0 >> 8, minor = .0 & 0xff)]
    OldProtocol(u16),
    #[error(
        "payload at {offset:#x} + {length:#x} lies outside the {len}-byte protected-mode kernel"
    )]
    OutOfBounds {
        offset: usize,
        length: usize,
        len: usize,
    },
    #[error("payload format not recognised (first bytes {0:02x?})")]
    UnknownFormat(Vec<u8>),
    #[error("{} payload: rvmm has no decompressor for it", .0.name())]
    Unsupported(Compression),
    #[error("payload says it unpacks to {size} bytes, more than the {limit} bytes of guest RAM")]
    TooLarge { size: u64, limit: u64 },
    #[error("{} payload is corrupt: {msg}", format.name())]
    Corrupt { format: Compression, msg: String },
    #[error("{} payload unpacked to {got} bytes, but its trailer says {want}", format.name())]
    SizeMismatch {
        format: Compression,
        got: u64,
        want: u64,
    },
}

/// The compressed payload inside `kernel` (the protected-mode part of a bzImage, after the
/// setup sectors), located through the setup header fields.
pub fn locate(
    kernel: &[u8],
    version: u16,
    offset: u32,
    length: u32,
) -> Result<&[u8], PayloadError> {
    if version < 0x0208 {
        return Err(PayloadError::OldProtocol(version));
    }
    let (offset, length) = (offset as usize, length as usize);
    offset
        .checked_add(length)
        .and_then(|end| kernel.get(offset..end))
        .ok_or(PayloadError::OutOfBounds {
            offset,
            length,
            len: kernel.len(),
        })
}

/// The memory liblzma may take for an xz/lzma stream that unpacks to `want` bytes. The header
/// names the dictionary size and liblzma allocates it up front (found by fuzz/kernel_loader: a
/// 13-byte header asked for 3 GiB); a dictionary larger than the output buys nothing, and
/// kernels are packed with at most 64 MiB (xz/lzma -9).
fn dict_limit(want: u64) -> u64 {
    want.max(64 << 20) + (1 << 20)
}

/// Unpacks `payload` to the vmlinux ELF, refusing more than `limit` bytes of output.
pub fn unpack(payload: &[u8], limit: u64) -> Result<(Compression, Vec<u8>), PayloadError> {
    let format = Compression::detect(payload)
        .ok_or_else(|| PayloadError::UnknownFormat(payload.iter().take(8).copied().collect()))?;
    if format == Compression::Lzo {
        return Err(PayloadError::Unsupported(format));
    }
    let corrupt = |msg: String| PayloadError::Corrupt { format, msg };
    let (stream, trailer) = payload
        .len()
        .checked_sub(4)
        .map(|n| payload.split_at(n))
        .ok_or_else(|| corrupt("shorter than its 4-byte size trailer".into()))?;
    let want = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    if want > limit {
        return Err(PayloadError::TooLarge { size: want, limit });
    }
    let mut out = Vec::with_capacity(want as usize);
    // One byte more than announced, to notice a stream that is longer than its trailer says.
    let cap = want + 1;
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| {
        r.take(cap)
            .read_to_end(out)
            .map(|_| ())
            .map_err(|e| corrupt(e.to_string()))
    };
    match format {
        Compression::Gzip => read(&mut flate2::read::GzDecoder::new(stream), &mut out)?,
        Compression::Bzip2 => read(&mut bzip2::read::BzDecoder::new(stream), &mut out)?,
        Compression::Xz => {
            let dec = xz2::stream::Stream::new_stream_decoder(dict_limit(want), 0)
                .map_err(|e| corrupt(e.to_string()))?;
            read(&mut xz2::read::XzDecoder::new_stream(stream, dec), &mut out)?
        }
        Compression::Lzma => {
            let dec = xz2::stream::Stream::new_lzma_decoder(dict_limit(want))
                .map_err(|e| corrupt(e.to_string()))?;
            read(&mut xz2::read::XzDecoder::new_stream(stream, dec), &mut out)?
        }
        Compression::Zstd => {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(stream)
                .map_err(|e| corrupt(e.to_string()))?;
            read(&mut dec, &mut out)?
        }
        Compression::Lz4 => unpack_lz4_legacy(stream, cap as usize, &mut out).map_err(corrupt)?,
        Compression::Lzo => return Err(PayloadError::Unsupported(format)),
    }
    if out.len() as u64 != want {
        return Err(PayloadError::SizeMismatch {
            format,
            got: out.len() as u64,
            want,
        });
    }
    Ok((format, out))
}

/// The LZ4 "legacy" frame `lz4 -l` writes and lib/decompress_unlz4.c reads: a magic, then
/// blocks of a little-endian u32 compressed size and an LZ4 block of at most 8 MiB output.
fn unpack_lz4_legacy(stream: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), String> {
    const MAGIC: u32 = 0x184c_2102;
    const CHUNK: usize = 8 << 20;
    let mut rest = &stream[4..];
    while rest.len() >= 4 {
        let size = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        // Concatenated archives repeat the magic (decompress_unlz4.c does the same).
        if size == MAGIC {
            continue;
        }
        let block = rest
            .get(..size as usize)
            .ok_or_else(|| format!("block of {size} bytes runs past the end"))?;
        rest = &rest[size as usize..];
        let start = out.len();
        let room = CHUNK.min(cap.saturating_sub(start));
        out.resize(start + room, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + n);
    }
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the last block", rest.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_trailer(mut stream: Vec<u8>, size: usize) -> Vec<u8> {
        stream.extend_from_slice(&(size as u32).to_le_bytes());
        stream
    }

    /// An ELF-looking, compressible test input.
    fn sample() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..200_000u32).map(|i| (i % 251) as u8 ^ (i / 4096) as u8));
        v
    }

    fn lz4_legacy(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = 0x184c_2102u32.to_le_bytes().to_vec();
        for c in data.chunks(chunk) {
            let b = lz4_flex::block::compress(c);
            s.extend_from_slice(&(b.len() as u32).to_le_bytes());
            s.extend_from_slice(&b);
        }
        s
    }

    #[test]
    fn unpacks_every_supported_format() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&data).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        bz.write_all(&data).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).unwrap();
        let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
        let mut lzma = xz2::write::XzEncoder::new_stream(
            Vec::new(),
            xz2::stream::Stream::new_lzma_encoder(&opts).unwrap(),
        );
        lzma.write_all(&data).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(
            data.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let cases = [
            (Compression::Gzip, gz.finish().unwrap()),
            (Compression::Bzip2, bz.finish().unwrap()),
            (Compression::Xz, xz.finish().unwrap()),
            (Compression::Lzma, lzma.finish().unwrap()),
            (Compression::Zstd, zst),
            (Compression::Lz4, lz4_legacy(&data, 8 << 20)),
            // Small blocks: several of them, as in a real kernel.
            (Compression::Lz4, lz4_legacy(&data, 65536)),
        ];
        for (format, stream) in cases {
            let payload = with_trailer(stream, data.len());
            assert_eq!(Compression::detect(&payload), Some(format));
            let (got_format, out) = unpack(&payload, 1 << 30).unwrap();
            assert_eq!(got_format, format);
            assert!(out == data, "{format:?} output differs");
        }
    }

    /// Found by fuzz/kernel_loader: an lzma header naming a 3 GiB dictionary made liblzma
    /// allocate it before reading a byte of the stream.
    #[test]
    fn a_huge_lzma_dictionary_is_refused_before_it_is_allocated() {
        let mut stream = vec![0x5d, 0, 0, 0, 0xc0];
        stream.extend_from_slice(&[0xff; 8]);
        stream.extend_from_slice(&[0; 32]);
        match unpack(&with_trailer(stream, 4096), 1 << 30) {
            Err(PayloadError::Corrupt { msg, .. }) => {
                assert!(msg.to_lowercase().contains("memory"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_payloads() {
        let data = sample();
        let lz = with_trailer(lz4_legacy(&data, 65536), data.len());
        // Trailer larger than the guest RAM.
        assert!(matches!(
            unpack(&lz, 1000),
            Err(PayloadError::TooLarge { size, limit: 1000 }) if size == data.len() as u64
        ));
        // Trailer disagrees with the stream.
        let short = with_trailer(lz4_legacy(&data, 65536), data.len() - 1);
        assert!(matches!(
            unpack(&short, 1 << 30),
            Err(PayloadError::SizeMismatch { .. }) | Err(PayloadError::Corrupt { .. })
        ));
        // Truncated block.
        let mut cut = lz4_legacy(&data, 65536);
        cut.truncate(cut.len() - 10);
        let cut = with_trailer(cut, data.len());
        assert!(matches!(
            unpack(&cut, 1 << 30),
            Err(PayloadError::Corrupt { .. })
        ));
        assert!(matches!(
            unpack(b"\x89LZO\0xxxxxxxx", 1 << 30),
            Err(PayloadError::Unsupported(Compression::Lzo))
        ));
        assert!(matches!(
            unpack(b"nonsense", 1 << 30),
            Err(PayloadError::UnknownFormat(_))
        ));
        assert!(matches!(
            locate(&[0; 100], 0x020f, 90, 20),
            Err(PayloadError::OutOfBounds { .. })
        ));
        assert!(matches!(
            locate(&[0; 100], 0x0207, 0, 20),
            Err(PayloadError::OldProtocol(0x0207))
        ));
        assert_eq!(locate(&[1; 100], 0x020f, 10, 20).unwrap().len(), 20);
    }
}
