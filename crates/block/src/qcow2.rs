//! The qcow2 header, read and checked before imago opens an image: the checks of QEMU's
//! `qcow2_do_open` (block/qcow2.c), in its order and with its wording where it has one, plus the
//! features imago cannot handle. Layout: QEMU docs/interop/qcow2.txt ("Header").

use std::io;

/// qcow2 files start with "QFI\xfb".
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";
/// The version 2 header, and the version 3 header up to and including `header_length`.
const V2_HEADER_LEN: u64 = 72;
const V3_HEADER_LEN: u64 = 104;
/// Cluster sizes QEMU accepts: 512 bytes to 2 MiB.
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limits (block/qcow2.h): QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOTS.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_SNAPSHOTS: u64 = 65536;
/// sizeof(QCowSnapshotHeader): the fixed part of a snapshot table entry.
const SNAPSHOT_ENTRY_LEN: u64 = 40;
/// QEMU keeps backing file names in a 1024-byte C string.
const MAX_BACKING_NAME: u64 = 1023;

/// Header extension types (qcow2.txt "Header extensions").
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// One feature name table entry: type (1 byte), bit (1 byte), name (46 bytes).
const FEATURE_ENTRY_LEN: usize = 48;

/// Incompatible feature bits (qcow2.txt, header bytes 72-79).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// The names QEMU writes into its feature name table.
const INCOMPAT_NAMES: [&str; 5] = [
    "dirty bit",
    "corrupt bit",
    "external data file",
    "compression type",
    "extended L2 entries",
];

/// crypt_method values.
const CRYPT_AES: u32 = 1;
const CRYPT_LUKS: u32 = 2;

/// What is wrong with a qcow2 header. The messages are QEMU's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("could not read the qcow2 header: {0}")]
    Read(#[source] io::Error),
    #[error("Image is not in qcow2 format")]
    NotQcow2,
    #[error("the file is {size} bytes long, shorter than its qcow2 header ({expected} bytes)")]
    Truncated { size: u64, expected: u64 },
    #[error("Unsupported qcow2 version {0}")]
    Version(u32),
    #[error("Unsupported cluster size: 2^{0}")]
    ClusterBits(u32),
    #[error("qcow2 header too short ({0} bytes; version 3 needs at least {V3_HEADER_LEN})")]
    HeaderTooShort(u32),
    #[error("qcow2 header exceeds cluster size ({len} > {cluster_size} bytes)")]
    HeaderTooLong { len: u32, cluster_size: u64 },
    #[error("Invalid backing file offset {0:#x}")]
    BackingOffset(u64),
    #[error("qcow2: unknown compression type: {0}")]
    CompressionType(u8),
    #[error("qcow2: Compression type incompatible feature bit must {} set", if *.0 { "be" } else { "not be" })]
    CompressionBit(bool),
    #[error("Unsupported qcow2 feature(s): {0}")]
    Features(String),
    #[error("qcow2: Image is corrupt; cannot be opened (repair it with 'qemu-img check -r all')")]
    Corrupt,
    #[error(
        "qcow2: Image is dirty (its refcounts were not written back); rvmm does not repair \
         images: run 'qemu-img check -r all' on it"
    )]
    Dirty,
    #[error("Reference count entry width too large; may not exceed 64 bits")]
    RefcountOrder,
    #[error(
        "Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators \
         (convert it with 'qemu-img convert')"
    )]
    Aes,
    #[error(
        "Parameter 'encrypt.key-secret' is required for cipher: the image is LUKS encrypted \
         and rvmm does not support encrypted images"
    )]
    Luks,
    #[error("Unsupported encryption method {0}")]
    CryptMethod(u32),
    #[error("Image does not contain a reference count table")]
    NoRefcountTable,
    #[error("{0} too large")]
    TableTooLarge(&'static str),
    #[error("{name} offset invalid ({offset:#x})")]
    TableOffset { name: &'static str, offset: u64 },
    #[error("Image is too big")]
    TooBig,
    #[error("L1 table is too small ({have} entries; {need} are needed for a {size}-byte disk)")]
    L1TooSmall { have: u32, need: u64, size: u64 },
    #[error("Header extension too large (at offset {0:#x})")]
    Extension(u64),
    #[error("Backing file name too long ({0} bytes)")]
    BackingNameTooLong(u32),
    #[error("the backing file name is not valid UTF-8")]
    BackingNameUtf8,
    #[error("the backing file format name is not valid UTF-8")]
    BackingFormatUtf8,
}

/// What the rest of rvmm needs from a checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// The backing file name as written in the header (`None`: no backing file).
    pub backing_file: Option<String>,
    /// The backing format extension (`None`: probe it).
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// QEMU's `qcow2_validate_table`: at most `max_bytes` of entries, at a cluster-aligned offset
/// whose end fits a signed 64-bit file offset.
fn validate_table(
    name: &'static str,
    offset: u64,
    entries: u64,
    entry_len: u64,
    max_bytes: u64,
    cluster_size: u64,
) -> Result<(), HeaderError> {
    if entries > max_bytes / entry_len {
        return Err(HeaderError::TableTooLarge(name));
    }
    if (i64::MAX as u64) - entries * entry_len < offset || !offset.is_multiple_of(cluster_size) {
        return Err(HeaderError::TableOffset { name, offset });
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many there were before end of file.
pub(crate) trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Header extensions rvmm uses: the backing format and the feature names.
#[derive(Default)]
struct Extensions {
    backing_format: Option<Vec<u8>>,
    /// (bit, name) of incompatible features.
    incompat_names: Vec<(u8, String)>,
}

/// Walks the extensions from `start` to `end` (QEMU's `qcow2_read_extensions`).
fn read_extensions(
    file: &(impl ReadAt + ?Sized),
    start: u64,
    end: u64,
) -> Result<Extensions, HeaderError> {
    let mut ext = Extensions::default();
    let mut offset = start;
    while offset < end {
        let mut head = [0u8; 8];
        let n = file.read_at(&mut head, offset).map_err(HeaderError::Read)?;
        if n < head.len() {
            // Past the end of the file reads as zeroes: the end of the list.
            break;
        }
        let (kind, len) = (be32(&head, 0), u64::from(be32(&head, 4)));
        offset += 8;
        if offset > end || len > end - offset {
            return Err(HeaderError::Extension(offset - 8));
        }
        if kind == EXT_END {
            break;
        }
        if kind == EXT_BACKING_FORMAT || kind == EXT_FEATURE_TABLE {
            // `len` is below one cluster (2 MiB at most): checked against `end` above.
            let mut data = vec![0u8; len as usize];
            let n = file.read_at(&mut data, offset).map_err(HeaderError::Read)?;
            data.truncate(n);
            if kind == EXT_BACKING_FORMAT {
                ext.backing_format = Some(data);
            } else {
                for entry in data.chunks_exact(FEATURE_ENTRY_LEN) {
                    if entry[0] == 0 {
                        let name = &entry[2..];
                        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(46)];
                        let name = String::from_utf8_lossy(name).into_owned();
                        ext.incompat_names.push((entry[1], name));
                    }
                }
            }
        }
        offset += len.next_multiple_of(8);
    }
    Ok(ext)
}

/// The names of the incompatible features in `mask`, as QEMU's `report_unsupported_feature`
/// lists them: the image's own feature name table first, then the names QEMU gives the bits it
/// knows, then the rest as a hex mask.
fn feature_names(mut mask: u64, table: &[(u8, String)]) -> String {
    let mut names = Vec::new();
    for (bit, name) in table {
        if *bit < 64 && mask & (1 << bit) != 0 {
            names.push(name.clone());
            mask &= !(1 << bit);
        }
    }
    for (bit, name) in INCOMPAT_NAMES.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            names.push((*name).to_string());
            mask &= !(1 << bit);
        }
    }
    if mask != 0 {
        names.push(format!("Unknown incompatible feature: {mask:x}"));
    }
    names.join(", ")
}

/// Reads and checks the header of the qcow2 image in `file`, which is `file_size` bytes long.
pub(crate) fn read_header(
    file: &(impl ReadAt + ?Sized),
    file_size: u64,
) -> Result<Header, HeaderError> {
    let mut h = [0u8; V3_HEADER_LEN as usize + 1];
    let have = file.read_at(&mut h, 0).map_err(HeaderError::Read)? as u64;
    // A file that ends early reads as its real size, whatever the stat said.
    let file_size = file_size.max(have);
    let truncated = |expected| HeaderError::Truncated {
        size: file_size,
        expected,
    };
    if have >= 4 && h[..4] != MAGIC {
        return Err(HeaderError::NotQcow2);
    }
    if have < V2_HEADER_LEN {
        return Err(truncated(V2_HEADER_LEN));
    }
    let version = be32(&h, 4);
    let backing_offset = be64(&h, 8);
    let backing_len = be32(&h, 16);
    let cluster_bits = be32(&h, 20);
    let size = be64(&h, 24);
    let crypt_method = be32(&h, 32);
    let l1_size = be32(&h, 36);
    let l1_offset = be64(&h, 40);
    let reftable_offset = be64(&h, 48);
    let reftable_clusters = be32(&h, 56);
    let nb_snapshots = be32(&h, 60);
    let snapshots_offset = be64(&h, 64);

    if !(2..=3).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(HeaderError::ClusterBits(cluster_bits));
    }
    let cluster_size = 1u64 << cluster_bits;

    let (incompat, refcount_order, header_len) = if version == 2 {
        (0, 4, V2_HEADER_LEN as u32)
    } else {
        if have < V3_HEADER_LEN {
            return Err(truncated(V3_HEADER_LEN));
        }
        let header_len = be32(&h, 100);
        if u64::from(header_len) < V3_HEADER_LEN {
            return Err(HeaderError::HeaderTooShort(header_len));
        }
        (be64(&h, 72), be32(&h, 96), header_len)
    };
    if u64::from(header_len) > cluster_size {
        return Err(HeaderError::HeaderTooLong {
            len: header_len,
            cluster_size,
        });
    }
    if u64::from(header_len) > file_size {
        return Err(truncated(u64::from(header_len)));
    }
    if backing_offset > cluster_size {
        return Err(HeaderError::BackingOffset(backing_offset));
    }
    let ext_end = if backing_offset != 0 {
        backing_offset
    } else {
        cluster_size
    };

    // Compression type: byte 104, present when the header is long enough.
    let compression = if u64::from(header_len) > V3_HEADER_LEN {
        h[V3_HEADER_LEN as usize]
    } else {
        0
    };
    match compression {
        0 if incompat & INCOMPAT_COMPRESSION != 0 => {
            return Err(HeaderError::CompressionBit(false))
        }
        1 if incompat & INCOMPAT_COMPRESSION == 0 => return Err(HeaderError::CompressionBit(true)),
        0 | 1 => {}
        other => return Err(HeaderError::CompressionType(other)),
    }

    let ext = read_extensions(file, u64::from(header_len), ext_end)?;
    // imago handles an external data file and nothing else of this kind; a dirty or corrupt
    // image gets its own message below.
    let unsupported = incompat & !(INCOMPAT_DATA_FILE | INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    if unsupported != 0 {
        return Err(HeaderError::Features(feature_names(
            unsupported,
            &ext.incompat_names,
        )));
    }
    if incompat & INCOMPAT_CORRUPT != 0 {
        return Err(HeaderError::Corrupt);
    }
    if incompat & INCOMPAT_DIRTY != 0 {
        return Err(HeaderError::Dirty);
    }
    if refcount_order > 6 {
        return Err(HeaderError::RefcountOrder);
    }
    match crypt_method {
        0 => {}
        CRYPT_AES => return Err(HeaderError::Aes),
        CRYPT_LUKS => return Err(HeaderError::Luks),
        other => return Err(HeaderError::CryptMethod(other)),
    }
    if reftable_clusters == 0 {
        return Err(HeaderError::NoRefcountTable);
    }
    validate_table(
        "Reference count table",
        reftable_offset,
        u64::from(reftable_clusters),
        cluster_size,
        MAX_REFTABLE_BYTES,
        cluster_size,
    )?;
    validate_table(
        "Snapshot table",
        snapshots_offset,
        u64::from(nb_snapshots),
        SNAPSHOT_ENTRY_LEN,
        SNAPSHOT_ENTRY_LEN * MAX_SNAPSHOTS,
        cluster_size,
    )?;
    validate_table(
        "Active L1 table",
        l1_offset,
        u64::from(l1_size),
        8,
        MAX_L1_BYTES,
        cluster_size,
    )?;
    // One L1 entry maps one L2 table of cluster_size / 8 entries, each mapping a cluster.
    let l1_shift = 2 * cluster_bits - 3;
    let need = size.div_ceil(1 << l1_shift);
    if need > i32::MAX as u64 {
        return Err(HeaderError::TooBig);
    }
    if u64::from(l1_size) < need {
        return Err(HeaderError::L1TooSmall {
            have: l1_size,
            need,
            size,
        });
    }

    let backing_file = if backing_offset != 0 {
        if u64::from(backing_len) > MAX_BACKING_NAME.min(cluster_size - backing_offset) {
            return Err(HeaderError::BackingNameTooLong(backing_len));
        }
        let mut name = vec![0u8; backing_len as usize];
        let n = file
            .read_at(&mut name, backing_offset)
            .map_err(HeaderError::Read)?;
        if n < name.len() {
            return Err(truncated(backing_offset + u64::from(backing_len)));
        }
        Some(String::from_utf8(name).map_err(|_| HeaderError::BackingNameUtf8)?)
    } else {
        None
    };
    let backing_format = ext
        .backing_format
        .map(|f| String::from_utf8(f).map_err(|_| HeaderError::BackingFormatUtf8))
        .transpose()?;

    Ok(Header {
        version,
        cluster_bits,
        size,
        backing_file,
        backing_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 image as `qemu-img create -f qcow2` writes it for a 1 MiB disk: 64 KiB clusters,
    /// refcount table at cluster 1, L1 table at cluster 3, no extensions but the end marker.
    fn v3() -> Vec<u8> {
        let mut h = vec![0u8; 0x30000];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    fn check(h: &[u8]) -> Result<Header, HeaderError> {
        read_header(h, h.len() as u64)
    }

    fn patch32(mut h: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
        h[at..at + 4].copy_from_slice(&v.to_be_bytes());
        h
    }

    fn patch64(mut h: Vec<u8>, at: usize, v: u64) -> Vec<u8> {
        h[at..at + 8].copy_from_slice(&v.to_be_bytes());
        h
    }

    fn err(h: &[u8]) -> String {
        check(h).unwrap_err().to_string()
    }

    #[test]
    fn a_good_header_passes() {
        let h = check(&v3()).unwrap();
        assert_eq!((h.version, h.cluster_bits, h.size), (3, 16, 1 << 20));
        assert_eq!(h.backing_file, None);
    }

    #[test]
    fn version_cluster_size_and_header_length() {
        assert_eq!(err(&patch32(v3(), 4, 4)), "Unsupported qcow2 version 4");
        assert_eq!(err(&patch32(v3(), 4, 1)), "Unsupported qcow2 version 1");
        assert_eq!(err(&patch32(v3(), 20, 8)), "Unsupported cluster size: 2^8");
        assert_eq!(
            err(&patch32(v3(), 20, 22)),
            "Unsupported cluster size: 2^22"
        );
        assert!(err(&patch32(v3(), 100, 0)).contains("qcow2 header too short (0 bytes"));
        assert!(err(&patch32(v3(), 100, 0x20000)).contains("qcow2 header exceeds cluster size"));
        assert!(err(&b"QFI\xfbxx"[..]).contains("6 bytes long, shorter than its qcow2 header (72"));
        assert!(err(&v3()[..90]).contains("90 bytes long, shorter than its qcow2 header (104"));
        assert_eq!(
            err(b"QFI"),
            "the file is 3 bytes long, shorter than its qcow2 header (72 bytes)"
        );
        assert_eq!(err(b"XXXXXXXX"), "Image is not in qcow2 format");
    }

    #[test]
    fn features_are_named_by_bit() {
        assert_eq!(
            err(&patch64(v3(), 72, 1 << 4)),
            "Unsupported qcow2 feature(s): extended L2 entries"
        );
        assert_eq!(
            err(&patch64(v3(), 72, (1 << 4) | (1 << 40))),
            "Unsupported qcow2 feature(s): extended L2 entries, Unknown incompatible feature: \
             10000000000"
        );
        assert!(err(&patch64(v3(), 72, 2)).contains("Image is corrupt"));
        assert!(err(&patch64(v3(), 72, 1)).contains("Image is dirty"));
        // The external data file bit is left to imago.
        assert!(check(&patch64(v3(), 72, 4)).is_ok());
        // The image's own feature name table names unknown bits.
        let mut h = patch64(v3(), 72, 1 << 9);
        h[112..116].copy_from_slice(&EXT_FEATURE_TABLE.to_be_bytes());
        h[116..120].copy_from_slice(&48u32.to_be_bytes());
        h[120] = 0;
        h[121] = 9;
        h[122..131].copy_from_slice(b"time warp");
        assert_eq!(err(&h), "Unsupported qcow2 feature(s): time warp");
        // Zstd: byte 104 and incompatible bit 3 go together, and imago has no zstd.
        let mut h = patch64(v3(), 72, 1 << 3);
        assert!(err(&h).contains("bit must not be set"));
        h[104] = 1;
        assert_eq!(err(&h), "Unsupported qcow2 feature(s): compression type");
        h[104] = 7;
        assert_eq!(err(&h), "qcow2: unknown compression type: 7");
    }

    #[test]
    fn encryption_is_refused() {
        assert!(err(&patch32(v3(), 32, 1)).contains("AES-CBC encrypted qcow2 images"));
        assert!(err(&patch32(v3(), 32, 2)).contains("'encrypt.key-secret' is required"));
        assert_eq!(
            err(&patch32(v3(), 32, 3)),
            "Unsupported encryption method 3"
        );
    }

    #[test]
    fn tables_are_checked() {
        assert_eq!(
            err(&patch32(v3(), 96, 7)),
            "Reference count entry width too large; may not exceed 64 bits"
        );
        assert_eq!(
            err(&patch32(v3(), 56, 0)),
            "Image does not contain a reference count table"
        );
        assert_eq!(
            err(&patch32(v3(), 56, 129)),
            "Reference count table too large"
        );
        assert!(err(&patch64(v3(), 48, 0x10200)).contains("Reference count table offset invalid"));
        assert!(err(&patch64(v3(), 48, !0xffff)).contains("Reference count table offset invalid"));
        assert_eq!(err(&patch32(v3(), 60, 65537)), "Snapshot table too large");
        assert!(err(&patch64(v3(), 64, 0x123)).contains("Snapshot table offset invalid"));
        assert_eq!(
            err(&patch32(v3(), 36, (32 << 20) / 8 + 1)),
            "Active L1 table too large"
        );
        assert!(err(&patch64(v3(), 40, 0x30001)).contains("Active L1 table offset invalid"));
        assert!(err(&patch32(v3(), 36, 0)).contains("L1 table is too small (0 entries; 1 are"));
        assert_eq!(err(&patch64(v3(), 24, u64::MAX)), "Image is too big");
    }

    #[test]
    fn backing_file_name() {
        let mut h = patch64(v3(), 8, 0x200);
        h = patch32(h, 16, 5);
        h[0x200..0x205].copy_from_slice(b"b.img");
        let got = check(&h).unwrap();
        assert_eq!(got.backing_file.as_deref(), Some("b.img"));
        assert_eq!(got.backing_format, None);
        assert_eq!(
            err(&patch32(h.clone(), 16, 1024)),
            "Backing file name too long (1024 bytes)"
        );
        assert!(err(&patch64(h.clone(), 8, 0x10001)).contains("Invalid backing file offset"));
        // The name must end within the first cluster.
        let h2 = patch32(patch64(h.clone(), 8, 0xfffe), 16, 5);
        assert_eq!(err(&h2), "Backing file name too long (5 bytes)");
        h[0x201] = 0xff;
        assert_eq!(err(&h), "the backing file name is not valid UTF-8");
        // A name past the end of a short file.
        let short = patch64(patch32(v3(), 16, 5), 8, 0x200);
        assert!(err(&short[..0x202]).contains("shorter than its qcow2 header (517 bytes)"));
    }

    #[test]
    fn extensions_are_bounded() {
        let mut h = v3();
        h[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h[116..120].copy_from_slice(&5u32.to_be_bytes());
        h[120..125].copy_from_slice(b"qcow2");
        assert_eq!(check(&h).unwrap().backing_format.as_deref(), Some("qcow2"));
        h[116..120].copy_from_slice(&0x10000u32.to_be_bytes());
        assert_eq!(err(&h), "Header extension too large (at offset 0x70)");
    }
}
