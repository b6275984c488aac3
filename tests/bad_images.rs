//! Bad disk images through the real binary: backing-chain loops and chains too long, encrypted
//! images, broken qcow2 headers, truncated files, special files. Each is refused within seconds
//! with exit status 2, one "rvmm: ..." line naming the image, and no panic. The images are made
//! at test time with qemu-img (a missing qemu-img fails the tests) and patched byte by byte;
//! where QEMU refuses an image too, `qemu-io` is asked, so rvmm is no stricter than QEMU there.
//! Corrupt metadata met while the guest runs fails the guest's request and is logged once.

mod common;

use common::{expect_error, skip_on_qemu, TempDir, VmCommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// rvmm's longest backing chain (`rvmm_block::MAX_CHAIN_LEN`).
const MAX_CHAIN_LEN: usize = 256;

fn run(program: &Path, args: &[&str]) -> (Option<i32>, String, Duration) {
    common::run_limited(program, args, common::REFUSE_WITHIN)
}

/// Opens `image` as a disk; the message must name it and contain `needle`.
fn expect_refused(image: &Path, format: Option<&str>, needle: &str) -> String {
    let drive = match format {
        Some(f) => format!("file={},format={f}", image.display()),
        None => format!("file={}", image.display()),
    };
    let stderr = expect_error(&["-drive", &drive], needle);
    let named = format!("could not open disk image '{}'", image.display());
    assert!(
        stderr.contains(&named),
        "{drive}: message lacks {named:?}:\n{stderr}"
    );
    stderr
}

/// A scratch directory and the path of `name` in it.
struct Dir {
    _tmp: TempDir,
    path: PathBuf,
}

impl Dir {
    fn new(test: &str) -> Self {
        let tmp = TempDir::new(test);
        let path = tmp.file(".keep", b"").parent().unwrap().to_path_buf();
        Dir { _tmp: tmp, path }
    }

    fn at(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Runs a QEMU tool in `dir`; a missing tool fails the test.
fn tool(dir: &Dir, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(&dir.path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install qemu-utils): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img create -f qcow2 ... name 1M`, with `backing` (name, format) written unchecked.
fn qcow2(dir: &Dir, name: &str, backing: Option<(&str, &str)>, extra: &[&str]) -> PathBuf {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some((b, f)) = backing {
        args.extend(["-u", "-b", b, "-F", f]);
    }
    args.extend(extra);
    args.extend([name, "1M"]);
    tool(dir, "qemu-img", &args);
    dir.at(name)
}

/// Whether QEMU (qemu-io, read-only) refuses to read `image` too.
fn qemu_refuses(image: &Path) -> bool {
    let (code, _, _) = run(
        Path::new("qemu-io"),
        &[
            "-r",
            "-f",
            "qcow2",
            "-c",
            "read 0 512",
            image.to_str().unwrap(),
        ],
    );
    code != Some(0)
}

#[test]
fn backing_chain_loops_are_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-loops");
    // An image that names itself.
    let a = qcow2(&dir, "self.qcow2", None, &[]);
    tool(
        &dir,
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "self.qcow2",
            "self.qcow2",
        ],
    );
    let s = a.display().to_string();
    for format in [Some("qcow2"), None] {
        expect_refused(
            &a,
            format,
            &format!("the backing chain loops: '{s}' names '{s}' as its backing file"),
        );
    }
    // Two and three images in a ring; the last one closes it.
    for ring in [&["a", "b"][..], &["c", "d", "e"][..]] {
        let name = |i: usize| format!("{}.qcow2", ring[i % ring.len()]);
        for i in 0..ring.len() {
            qcow2(&dir, &name(i), Some((&name(i + 1), "qcow2")), &[]);
        }
        let (first, last) = (dir.at(&name(0)), dir.at(&name(ring.len() - 1)));
        expect_refused(
            &first,
            Some("qcow2"),
            &format!(
                "'{}' names '{}' as its backing file",
                last.display(),
                first.display()
            ),
        );
    }
    // Through a symlink, and further down a chain.
    let f = qcow2(&dir, "f.qcow2", Some(("link.qcow2", "qcow2")), &[]);
    std::os::unix::fs::symlink("f.qcow2", dir.at("link.qcow2")).unwrap();
    expect_refused(
        &f,
        Some("qcow2"),
        &format!("which is '{}', already in the chain", f.display()),
    );
    let top = qcow2(&dir, "top.qcow2", Some(("a.qcow2", "qcow2")), &[]);
    expect_refused(&top, Some("qcow2"), "the backing chain loops");
}

#[test]
fn a_backing_chain_longer_than_the_limit_is_refused() {
    if skip_on_qemu("rvmm's own limit") {
        return;
    }
    let dir = Dir::new("bad-images-deep");
    let template = qcow2(
        &dir,
        "template",
        Some(("l999999.qcow2", "qcow2")),
        &["-o", "cluster_size=512"],
    );
    let template = std::fs::read(template).unwrap();
    let at = template
        .windows(7)
        .position(|w| w == b"l999999")
        .expect("backing name in the template");
    // l000000 -> ... -> l000256, which has no backing file: one image over the limit.
    for i in 0..MAX_CHAIN_LEN {
        let mut image = template.clone();
        image[at..at + 7].copy_from_slice(format!("l{:06}", i + 1).as_bytes());
        std::fs::write(dir.at(&format!("l{i:06}.qcow2")), image).unwrap();
    }
    let bottom = format!("l{MAX_CHAIN_LEN:06}.qcow2");
    qcow2(&dir, &bottom, None, &["-o", "cluster_size=512"]);
    let last = dir.at(&format!("l{:06}.qcow2", MAX_CHAIN_LEN - 1));
    expect_refused(
        &dir.at("l000000.qcow2"),
        Some("qcow2"),
        &format!(
            "the backing chain is longer than {MAX_CHAIN_LEN} images: '{}' names yet another \
             backing file, '{}'",
            last.display(),
            dir.at(&bottom).display()
        ),
    );
}

#[test]
fn encrypted_images_are_refused() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-crypt");
    let secret = ["--object", "secret,id=sec0,data=rvmm-test"];
    let aes = qcow2(
        &dir,
        "aes.qcow2",
        None,
        &[
            secret[0],
            secret[1],
            "-o",
            "encrypt.format=aes,encrypt.key-secret=sec0",
        ],
    );
    expect_refused(
        &aes,
        Some("qcow2"),
        "Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators",
    );
    // LUKS as qemu-img writes it: crypt_method 2 and a crypto header extension pointing at
    // the LUKS header. (qemu-img's own LUKS images take seconds of PBKDF benchmark to make and
    // fail now and then with "Unable to get accurate CPU usage".)
    let mut image = std::fs::read(qcow2(&dir, "luks.qcow2", None, &[])).unwrap();
    image[32..36].copy_from_slice(&2u32.to_be_bytes());
    let mut end = 112;
    while u32::from_be_bytes(image[end..end + 4].try_into().unwrap()) != 0 {
        let len = u32::from_be_bytes(image[end + 4..end + 8].try_into().unwrap()) as usize;
        end += 8 + len.next_multiple_of(8);
    }
    image[end..end + 8].copy_from_slice(&[0x05, 0x37, 0xbe, 0x77, 0, 0, 0, 16]);
    image[end + 8..end + 16].copy_from_slice(&0x40000u64.to_be_bytes());
    image[end + 16..end + 24].copy_from_slice(&0x1000u64.to_be_bytes());
    image[end + 24..end + 32].fill(0);
    let luks = dir.at("luks.qcow2");
    std::fs::write(&luks, image).unwrap();
    assert!(qemu_refuses(&luks), "QEMU reads {}", luks.display());
    // The crypt_method field alone (header offset 32).
    let plain = std::fs::read(qcow2(&dir, "plain.qcow2", None, &[])).unwrap();
    for (method, needle) in [
        (1u32, "AES-CBC"),
        (2, "encrypt.key-secret"),
        (3, "Unsupported encryption method 3"),
    ] {
        let mut image = plain.clone();
        image[32..36].copy_from_slice(&method.to_be_bytes());
        let path = dir.at(&format!("crypt{method}.qcow2"));
        std::fs::write(&path, image).unwrap();
        expect_refused(&path, Some("qcow2"), needle);
        assert!(qemu_refuses(&path), "QEMU reads crypt_method {method}");
    }
}

/// One header field set to a bad value: where, the big-endian bytes, rvmm's message, and
/// whether QEMU refuses the image too.
struct Patch {
    name: &'static str,
    at: usize,
    bytes: Vec<u8>,
    needle: &'static str,
    qemu_refuses: bool,
}

fn patch(name: &'static str, at: usize, bytes: &[u8], needle: &'static str) -> Patch {
    Patch {
        name,
        at,
        bytes: bytes.to_vec(),
        needle,
        qemu_refuses: true,
    }
}

#[test]
fn broken_qcow2_headers_are_refused_as_qemu_does() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-headers");
    // 64 KiB clusters, 1 MiB: refcount table at 0x10000, L1 table (1 entry) at 0x30000.
    let good = std::fs::read(qcow2(&dir, "good.qcow2", None, &[])).unwrap();
    let u32b = |v: u32| v.to_be_bytes().to_vec();
    let u64b = |v: u64| v.to_be_bytes().to_vec();
    let mut patches = vec![
        patch("magic", 0, b"QFI\0", "Image is not in qcow2 format"),
        patch("version1", 4, &u32b(1), "Unsupported qcow2 version 1"),
        patch("version4", 4, &u32b(4), "Unsupported qcow2 version 4"),
        patch("cluster8", 20, &u32b(8), "Unsupported cluster size: 2^8"),
        patch("cluster22", 20, &u32b(22), "Unsupported cluster size: 2^22"),
        patch("hdrlen0", 100, &u32b(0), "qcow2 header too short"),
        patch(
            "hdrlen-big",
            100,
            &u32b(0x20000),
            "qcow2 header exceeds cluster size",
        ),
        patch(
            "backing-off",
            8,
            &u64b(0x10008),
            "Invalid backing file offset",
        ),
        patch(
            "incompat",
            72,
            &u64b(1 << 20),
            "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000",
        ),
        patch(
            "refcount-order",
            96,
            &u32b(7),
            "Reference count entry width too large",
        ),
        patch(
            "no-reftable",
            56,
            &u32b(0),
            "Image does not contain a reference count table",
        ),
        patch(
            "reftable-big",
            56,
            &u32b(129),
            "Reference count table too large",
        ),
        patch(
            "reftable-off",
            48,
            &u64b(0x10200),
            "Reference count table offset invalid",
        ),
        patch("snapshots", 60, &u32b(65537), "Snapshot table too large"),
        patch(
            "snapshot-off",
            64,
            &u64b(0x123),
            "Snapshot table offset invalid",
        ),
        patch(
            "l1-big",
            36,
            &u32b(4 << 20 | 1),
            "Active L1 table too large",
        ),
        patch(
            "l1-off",
            40,
            &u64b(0x30200),
            "Active L1 table offset invalid",
        ),
        patch("l1-small", 36, &u32b(0), "L1 table is too small"),
        patch("size", 24, &u64b(1 << 62), "Image is too big"),
    ];
    // A backing file name of 1024 bytes at offset 0x200.
    let mut name = u64b(0x200);
    name.extend(u32b(1024));
    patches.push(patch(
        "backing-name",
        8,
        &name,
        "Backing file name too long",
    ));
    // What QEMU reads and rvmm does not open: a dirty image (QEMU repairs it when writable)
    // and a corrupt one (QEMU opens it read-only).
    patches.push(Patch {
        qemu_refuses: false,
        ..patch("dirty", 72, &u64b(1), "Image is dirty")
    });
    patches.push(Patch {
        qemu_refuses: false,
        ..patch("corrupt", 72, &u64b(2), "Image is corrupt")
    });
    for p in &patches {
        let mut image = good.clone();
        image[p.at..p.at + p.bytes.len()].copy_from_slice(&p.bytes);
        let path = dir.at(&format!("{}.qcow2", p.name));
        std::fs::write(&path, image).unwrap();
        expect_refused(&path, Some("qcow2"), p.needle);
        assert_eq!(
            qemu_refuses(&path),
            p.qemu_refuses,
            "{}: QEMU disagrees on {}",
            p.name,
            path.display()
        );
    }
    // Features QEMU has and rvmm's qcow2 (imago) lacks, made by qemu-img itself.
    for (name, opt, needle) in [
        ("zstd", "compression_type=zstd", "compression type"),
        ("extl2", "extended_l2=on", "extended L2 entries"),
    ] {
        let path = qcow2(&dir, &format!("{name}.qcow2"), None, &["-o", opt]);
        expect_refused(
            &path,
            Some("qcow2"),
            &format!("Unsupported qcow2 feature(s): {needle}"),
        );
    }
}

#[test]
fn truncated_images_say_how_long_they_are() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-short");
    let good = std::fs::read(qcow2(&dir, "good.qcow2", None, &[])).unwrap();
    let v2 = std::fs::read(qcow2(&dir, "v2.qcow2", None, &["-o", "compat=0.10"])).unwrap();
    for (image, len, expected) in [
        (&good, 0, 72),
        (&good, 4, 72),
        (&good, 71, 72),
        (&good, 100, 104),
        (&v2, 60, 72),
    ] {
        let path = dir.at(&format!("short{len}.qcow2"));
        std::fs::write(&path, &image[..len]).unwrap();
        expect_refused(
            &path,
            Some("qcow2"),
            &format!(
                "the file is {len} bytes long, shorter than its qcow2 header ({expected} bytes)"
            ),
        );
    }
    // The header is whole, the backing file name after it is cut off.
    let top = std::fs::read(qcow2(&dir, "top.qcow2", Some(("base.qcow2", "qcow2")), &[])).unwrap();
    let offset = u64::from_be_bytes(top[8..16].try_into().unwrap()) as usize;
    let path = dir.at("cut.qcow2");
    std::fs::write(&path, &top[..offset + 4]).unwrap();
    expect_refused(
        &path,
        Some("qcow2"),
        &format!(
            "the file is {} bytes long, shorter than its qcow2 header ({} bytes)",
            offset + 4,
            offset + "base.qcow2".len()
        ),
    );
}

#[test]
fn special_files_and_missing_backing_files_are_named() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-special");
    tool(&dir, "mkfifo", &["fifo"]);
    let _socket = std::os::unix::net::UnixListener::bind(dir.at("socket")).unwrap();
    for (path, kind) in [
        (dir.at("fifo"), "FIFO"),
        (dir.at("socket"), "socket"),
        (dir.path.clone(), "directory"),
        (PathBuf::from("/dev/null"), "character device"),
    ] {
        for format in [Some("raw"), Some("qcow2"), None] {
            expect_refused(
                &path,
                format,
                &format!("it is a {kind}, not a regular file or block device"),
            );
        }
    }
    let top = qcow2(&dir, "top.qcow2", Some(("fifo", "raw")), &[]);
    expect_refused(
        &top,
        Some("qcow2"),
        &format!(
            "backing file '{}' (named by '{}'): it is a FIFO",
            dir.at("fifo").display(),
            top.display()
        ),
    );
    let top = qcow2(&dir, "orphan.qcow2", Some(("gone.qcow2", "qcow2")), &[]);
    expect_refused(
        &top,
        Some("qcow2"),
        &format!(
            "backing file '{}' (named by '{}'): No such file or directory",
            dir.at("gone.qcow2").display(),
            top.display()
        ),
    );
}

/// A qcow2 whose first L2 entry is unaligned: the guest's read of sector 0 fails, and rvmm says
/// so once, naming the image and the offset, and goes on running.
#[test]
fn corruption_found_while_the_guest_runs_is_logged_once() {
    if skip_on_qemu("rvmm's own messages") {
        return;
    }
    let dir = Dir::new("bad-images-runtime");
    let path = qcow2(&dir, "disk.qcow2", None, &[]);
    tool(
        &dir,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x41 0 4096", "disk.qcow2"],
    );
    let mut image = std::fs::read(&path).unwrap();
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let l1 = be64(&image, 40) as usize;
    let l2 = (be64(&image, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    image[l2 + 6] |= 0x02;
    std::fs::write(&path, image).unwrap();
    let out = VmCommand::guest("virtio.elf")
        .arg("-M")
        .arg("microvm,kernel-irqchip=split")
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,if=none,id=d0",
            path.display()
        ))
        .arg("-device")
        .arg("virtio-blk-device,drive=d0")
        .append("blk irqbase=16 level")
        .run();
    out.assert_stdout_contains("virtio-blk: request status 1\n");
    let line = format!(
        "rvmm: disk image '{}' is corrupt: read at guest offset 0 failed: ",
        path.display()
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("disk image"))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with(&line), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
}
