use super::*;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvmm-block-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("disk.img")
}

#[test]
fn raw_read_write_bounds_and_probe() {
    let path = temp("raw");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let (mut disk, warning) = Disk::open(&DiskOptions {
        path: path.clone(),
        format: None,
        readonly: false,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .unwrap();
    assert!(warning.unwrap().contains("probing guessed raw"));
    assert_eq!(disk.size(), 8192);
    disk.write(&[0xab; 512], 512).unwrap();
    let mut buf = [0u8; 512];
    disk.read(&mut buf, 512).unwrap();
    assert_eq!(buf, [0xab; 512]);
    assert!(matches!(
        disk.read(&mut buf, 8192 - 511),
        Err(BlockError::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.write(&buf, u64::MAX - 10),
        Err(BlockError::OutOfRange { .. })
    ));
    disk.write_zeroes(512, 512, false).unwrap();
    disk.read(&mut buf, 512).unwrap();
    assert_eq!(buf, [0; 512]);
    disk.flush().unwrap();
    close(disk);
    let (disk, _) = Disk::open(&DiskOptions {
        path: path.clone(),
        format: Some(ImageFormat::Raw),
        readonly: true,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .unwrap();
    assert!(matches!(disk.write(&buf, 0), Err(BlockError::ReadOnly)));
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn missing_file_names_the_path() {
    let err = Disk::open(&DiskOptions {
        path: "/nonexistent/x.img".into(),
        format: Some(ImageFormat::Raw),
        readonly: false,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.img"), "{err}");
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rvmm-block-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn show(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Held while this test process forks a child and while a test closes a locked image. A child
/// holds every open file description of the process from fork to exec, OFD locks included, so a
/// test that closes an image and opens it again could find its own lock still held by another
/// test's child. `Command::spawn` returns once the child has exec'd.
pub(crate) static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `cmd` to completion; see [`SPAWN`].
fn output(cmd: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    let child = {
        let _forking = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?
    };
    child.wait_with_output()
}

/// Closes `disk` while no child is between fork and exec; see [`SPAWN`].
fn close(disk: Disk) {
    let _forking = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    drop(disk);
}

/// Runs a QEMU tool in `dir`; a missing tool fails the test (install qemu-utils).
fn tool(dir: &Path, program: &str, args: &[&str]) {
    let out = output(
        std::process::Command::new(program)
            .args(args)
            .current_dir(dir),
    )
    .unwrap_or_else(|e| panic!("cannot run {program} (install qemu-utils): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img create -f qcow2` in `dir`; `backing` is (name as written, format).
fn create_qcow2(dir: &Scratch, name: &str, backing: Option<(&str, &str)>, extra: &[&str]) {
    let mut args = vec!["create", "-f", "qcow2", "-q"];
    if let Some((b, f)) = backing {
        args.extend(["-u", "-b", b, "-F", f]);
    }
    args.extend(extra);
    args.extend([name, "1M"]);
    tool(&dir.0, "qemu-img", &args);
}

/// Points `name`'s backing file at `backing` without looking at it.
fn rebase(dir: &Scratch, name: &str, backing: &str) {
    tool(
        &dir.0,
        "qemu-img",
        &[
            "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, name,
        ],
    );
}

fn qemu_io(dir: &Scratch, name: &str, cmd: &str) {
    tool(&dir.0, "qemu-io", &["-f", "qcow2", "-c", cmd, name]);
}

fn open(path: &Path, format: Option<ImageFormat>, readonly: bool) -> Result<Disk, BlockError> {
    Disk::open(&DiskOptions {
        path: path.to_path_buf(),
        format,
        readonly,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .map(|(d, _)| d)
}

/// Opens `path` on another thread (a FIFO must not block the opener) and returns the error.
fn open_error(path: &Path, format: Option<ImageFormat>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(open(&p, format, false).map(|_| ()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(Ok(())) => panic!("{} opened", path.display()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("opening {} hangs", path.display()),
    }
}

fn read_byte(disk: &Disk, offset: u64) -> u8 {
    let mut b = [0u8; 512];
    disk.read(&mut b, offset).unwrap();
    b[0]
}

#[test]
fn a_backing_chain_is_read_through_relative_names() {
    let dir = Scratch::new("chain");
    std::fs::write(dir.path("base.raw"), vec![0x11u8; 1 << 20]).unwrap();
    create_qcow2(&dir, "mid.qcow2", Some(("base.raw", "raw")), &[]);
    create_qcow2(&dir, "top.qcow2", Some(("mid.qcow2", "qcow2")), &[]);
    qemu_io(&dir, "mid.qcow2", "write -P 0x22 65536 65536");
    // Opened from elsewhere: the names resolve in the image's directory.
    let mut disk = open(&dir.path("top.qcow2"), Some(ImageFormat::Qcow2), false).unwrap();
    assert_eq!(disk.path(), dir.path("top.qcow2"));
    assert_eq!((read_byte(&disk, 0), read_byte(&disk, 65536)), (0x11, 0x22));
    disk.write(&[0x33; 512], 0).unwrap();
    disk.write_zeroes(65536, 512, false).unwrap();
    disk.flush().unwrap();
    assert_eq!((read_byte(&disk, 0), read_byte(&disk, 65536)), (0x33, 0));
    close(disk);
    // The backing files were only read.
    assert_eq!(std::fs::read(dir.path("base.raw")).unwrap()[0], 0x11);
    let mid = open(&dir.path("mid.qcow2"), None, true).unwrap();
    assert_eq!(mid.format(), ImageFormat::Qcow2);
    assert_eq!(read_byte(&mid, 65536), 0x22);
    // An unknown backing format is named.
    create_qcow2(&dir, "vmdk.qcow2", Some(("base.raw", "vmdk")), &[]);
    let err = open_error(&dir.path("vmdk.qcow2"), Some(ImageFormat::Qcow2));
    assert!(err.contains("unknown backing file format 'vmdk'"), "{err}");
}

#[test]
fn backing_loops_name_the_image_that_closes_them() {
    let dir = Scratch::new("loops");
    let qcow2 = Some(ImageFormat::Qcow2);
    // An image that is its own backing file.
    create_qcow2(&dir, "self.qcow2", None, &[]);
    rebase(&dir, "self.qcow2", "self.qcow2");
    let err = open_error(&dir.path("self.qcow2"), qcow2);
    let s = dir.show("self.qcow2");
    assert!(
        err.contains(&format!("the backing chain loops: '{s}' names '{s}'")),
        "{err}"
    );
    assert!(
        err.starts_with(&format!("could not open disk image '{s}'")),
        "{err}"
    );
    // Two images naming each other, and three in a ring.
    for ring in [&["a", "b"][..], &["c", "d", "e"][..]] {
        for (i, name) in ring.iter().enumerate() {
            let next = ring[(i + 1) % ring.len()];
            create_qcow2(
                &dir,
                &format!("{name}.qcow2"),
                Some((&format!("{next}.qcow2"), "qcow2")),
                &[],
            );
        }
        let (first, last) = (
            format!("{}.qcow2", ring[0]),
            format!("{}.qcow2", ring[ring.len() - 1]),
        );
        let err = open_error(&dir.path(&first), qcow2);
        assert!(
            err.contains(&format!(
                "'{}' names '{}' as its backing file",
                dir.show(&last),
                dir.show(&first)
            )),
            "{err}"
        );
        // Probing finds the same.
        assert!(open_error(&dir.path(&first), None).contains("loops"));
    }
    // A loop through another name for the same file: a symlink, and a path with "..".
    create_qcow2(&dir, "f.qcow2", Some(("link.qcow2", "qcow2")), &[]);
    std::os::unix::fs::symlink("f.qcow2", dir.path("link.qcow2")).unwrap();
    let err = open_error(&dir.path("f.qcow2"), qcow2);
    assert!(
        err.contains(&format!(
            "names '{}' as its backing file, which is '{}', already",
            dir.show("link.qcow2"),
            dir.show("f.qcow2")
        )),
        "{err}"
    );
    std::fs::create_dir(dir.path("sub")).unwrap();
    create_qcow2(&dir, "g.qcow2", Some(("sub/../g.qcow2", "qcow2")), &[]);
    assert!(open_error(&dir.path("g.qcow2"), qcow2).contains("loops"));
    // A loop further down: the top is fine, its backing file names itself.
    create_qcow2(&dir, "h.qcow2", Some(("self.qcow2", "qcow2")), &[]);
    let err = open_error(&dir.path("h.qcow2"), qcow2);
    assert!(err.contains(&format!("'{s}' names '{s}'")), "{err}");
}

#[test]
fn the_chain_length_is_bounded() {
    let dir = Scratch::new("deep");
    // One template with a backing name of the right length, copied under new names.
    create_qcow2(
        &dir,
        "template",
        Some(("l999999.qcow2", "qcow2")),
        &["-o", "cluster_size=512"],
    );
    let template = std::fs::read(dir.path("template")).unwrap();
    let at = template
        .windows(7)
        .position(|w| w == b"l999999")
        .expect("backing name in the template");
    // l000000 -> l000001 -> ... -> l000256, which has no backing file.
    for i in 0..MAX_CHAIN_LEN {
        let mut image = template.clone();
        image[at..at + 7].copy_from_slice(format!("l{:06}", i + 1).as_bytes());
        std::fs::write(dir.path(&format!("l{i:06}.qcow2")), image).unwrap();
    }
    let bottom = format!("l{MAX_CHAIN_LEN:06}.qcow2");
    create_qcow2(&dir, &bottom, None, &["-o", "cluster_size=512"]);
    qemu_io(&dir, &bottom, "write -P 0x5a 0 512");
    // MAX_CHAIN_LEN images: opened, and the bottom one's data reads through them all.
    let disk = open(&dir.path("l000001.qcow2"), Some(ImageFormat::Qcow2), false).unwrap();
    assert_eq!(read_byte(&disk, 0), 0x5a);
    close(disk);
    // One more is too many.
    let err = open_error(&dir.path("l000000.qcow2"), Some(ImageFormat::Qcow2));
    let last = format!("l{:06}.qcow2", MAX_CHAIN_LEN - 1);
    assert!(
        err.contains(&format!(
            "the backing chain is longer than {MAX_CHAIN_LEN} images: '{}' names yet another backing file, '{}'",
            dir.show(&last),
            dir.show(&bottom)
        )),
        "{err}"
    );
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = Scratch::new("special");
    tool(&dir.0, "mkfifo", &["fifo"]);
    let _socket = std::os::unix::net::UnixListener::bind(dir.path("socket")).unwrap();
    for (name, kind) in [
        (dir.path("fifo"), "FIFO"),
        (dir.path("socket"), "socket"),
        (dir.0.clone(), "directory"),
        (PathBuf::from("/dev/null"), "character device"),
    ] {
        for format in [None, Some(ImageFormat::Raw), Some(ImageFormat::Qcow2)] {
            let err = open_error(&name, format);
            assert_eq!(
                err,
                format!(
                    "could not open disk image '{}': it is a {kind}, not a regular file or block device",
                    name.display()
                )
            );
        }
    }
    // imago opens an external data file through rvmm's gate: a FIFO there is refused too.
    create_qcow2(&dir, "ext.qcow2", None, &["-o", "data_file=ext.data"]);
    qemu_io(&dir, "ext.qcow2", "write -P 0x44 0 512");
    let disk = open(&dir.path("ext.qcow2"), Some(ImageFormat::Qcow2), false).unwrap();
    assert_eq!(read_byte(&disk, 0), 0x44);
    close(disk);
    std::fs::remove_file(dir.path("ext.data")).unwrap();
    tool(&dir.0, "mkfifo", &["ext.data"]);
    let err = open_error(&dir.path("ext.qcow2"), Some(ImageFormat::Qcow2));
    assert!(
        err.contains(&format!(
            "External data file {:?}: it is a FIFO",
            dir.path("ext.data")
        )),
        "{err}"
    );
    // ... also as a backing file.
    create_qcow2(&dir, "top.qcow2", Some(("fifo", "raw")), &[]);
    let err = open_error(&dir.path("top.qcow2"), Some(ImageFormat::Qcow2));
    assert!(
        err.contains(&format!(
            "backing file '{}' (named by '{}'): it is a FIFO",
            dir.show("fifo"),
            dir.show("top.qcow2")
        )),
        "{err}"
    );
}

#[test]
fn bad_headers_name_the_image() {
    let dir = Scratch::new("headers");
    create_qcow2(&dir, "good.qcow2", None, &[]);
    let good = std::fs::read(dir.path("good.qcow2")).unwrap();
    let cases: &[(&str, usize, &[u8], &str)] = &[
        ("version", 4, &[0, 0, 0, 4], "Unsupported qcow2 version 4"),
        ("aes", 32, &[0, 0, 0, 1], "AES-CBC encrypted qcow2 images"),
        (
            "luks",
            32,
            &[0, 0, 0, 2],
            "'encrypt.key-secret' is required",
        ),
        (
            "cluster",
            20,
            &[0, 0, 0, 30],
            "Unsupported cluster size: 2^30",
        ),
        (
            "feature",
            72,
            &[0, 0, 0, 0, 0, 0, 0, 0x20],
            "Unsupported qcow2 feature(s): Unknown incompatible feature: 20",
        ),
        (
            "l1",
            40,
            &[0, 0, 0, 0, 0, 3, 0, 1],
            "Active L1 table offset invalid",
        ),
    ];
    for (name, at, bytes, needle) in cases {
        let mut image = good.clone();
        image[*at..*at + bytes.len()].copy_from_slice(bytes);
        let file = format!("{name}.qcow2");
        std::fs::write(dir.path(&file), image).unwrap();
        let err = open_error(&dir.path(&file), Some(ImageFormat::Qcow2));
        assert!(
            err.starts_with(&format!(
                "could not open disk image '{}': ",
                dir.show(&file)
            )) && err.contains(needle),
            "{name}: {err}"
        );
    }
    // Truncated: the real size and the header's size are named.
    for (len, expected) in [(0, 72), (50, 72), (100, 104), (108, 112)] {
        std::fs::write(dir.path("short.qcow2"), &good[..len]).unwrap();
        let err = open_error(&dir.path("short.qcow2"), Some(ImageFormat::Qcow2));
        assert!(
            err.ends_with(&format!(
                "the file is {len} bytes long, shorter than its qcow2 header ({expected} bytes)"
            )),
            "{err}"
        );
    }
    // A bad backing file is named with the image that names it.
    create_qcow2(&dir, "over-aes.qcow2", Some(("aes.qcow2", "qcow2")), &[]);
    let err = open_error(&dir.path("over-aes.qcow2"), Some(ImageFormat::Qcow2));
    assert!(
        err.contains(&format!(
            "backing file '{}' (named by '{}'): Use of AES-CBC",
            dir.show("aes.qcow2"),
            dir.show("over-aes.qcow2")
        )),
        "{err}"
    );
}

fn be64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Log lines written while `f` runs.
fn captured_log(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn corruption_at_run_time_fails_the_request_and_is_logged_once() {
    let dir = Scratch::new("corrupt");
    create_qcow2(&dir, "l2.qcow2", None, &[]);
    qemu_io(&dir, "l2.qcow2", "write -P 0xab 0 4096");
    // L2 entry 0 made unaligned (an unaligned L1 entry is found at open).
    let mut image = std::fs::read(dir.path("l2.qcow2")).unwrap();
    let l1 = be64_at(&image, 40) as usize;
    let l2 = (be64_at(&image, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    image[l2 + 6] |= 0x02;
    std::fs::write(dir.path("l2.qcow2"), image).unwrap();
    let disk = open(&dir.path("l2.qcow2"), Some(ImageFormat::Qcow2), false).unwrap();
    let log = captured_log(|| {
        for offset in [0, 4096, 8192] {
            let mut b = [0u8; 512];
            let err = disk.read(&mut b, offset).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("read of 512 bytes at offset {offset}: ")),
                "{err}"
            );
        }
        assert!(disk.write(&[1; 512], 0).is_err());
    });
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "disk image '{}' is corrupt: read at guest offset 0 failed",
            dir.show("l2.qcow2")
        )),
        "{log}"
    );
    // A compressed cluster whose data does not inflate.
    std::fs::write(dir.path("plain.raw"), vec![0x77u8; 1 << 20]).unwrap();
    tool(
        &dir.0,
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "plain.raw",
            "zip.qcow2",
        ],
    );
    let mut image = std::fs::read(dir.path("zip.qcow2")).unwrap();
    let l1 = be64_at(&image, 40) as usize;
    let l2 = (be64_at(&image, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let entry = be64_at(&image, l2);
    assert!(
        entry & (1 << 62) != 0,
        "cluster 0 is not compressed: {entry:#x}"
    );
    // 64 KiB clusters: the host offset is the low 62 - (16 - 8) bits.
    let data = (entry & ((1 << 54) - 1)) as usize;
    image[data..data + 64].fill(0xff);
    std::fs::write(dir.path("zip.qcow2"), image).unwrap();
    let disk = open(&dir.path("zip.qcow2"), Some(ImageFormat::Qcow2), true).unwrap();
    let log = captured_log(|| {
        for _ in 0..3 {
            let mut b = [0u8; 512];
            assert!(disk.read(&mut b, 512).is_err());
        }
    });
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "disk image '{}' is corrupt: read at guest offset 512 failed",
            dir.show("zip.qcow2")
        )),
        "{log}"
    );
}

fn open_with(path: &Path, readonly: bool, locking: bool, snapshot: bool) -> Result<Disk, String> {
    Disk::open(&DiskOptions {
        path: path.to_path_buf(),
        format: None,
        readonly,
        direct: false,
        locking,
        snapshot,
        share_rw: false,
    })
    .map(|(d, _)| d)
    .map_err(|e| e.to_string())
}

#[test]
fn writers_exclude_everyone_readers_share() {
    let dir = Scratch::new("locks");
    let path = dir.path("disk.img");
    std::fs::write(&path, vec![0u8; 65536]).unwrap();
    let name = dir.show("disk.img");
    let busy = format!("Is another process using the image [{name}]?");

    let writer = open_with(&path, false, true, false).unwrap();
    let e = open_with(&path, false, true, false).unwrap_err();
    assert!(
        e.contains("Failed to get \"write\" lock. ") && e.contains(&busy),
        "{e}"
    );
    let e = open_with(&path, true, true, false).unwrap_err();
    assert!(
        e.contains("Failed to get shared \"write\" lock. ") && e.contains(&busy),
        "{e}"
    );
    // locking=off sees nothing.
    drop(open_with(&path, false, false, false).unwrap());
    close(writer);

    let r1 = open_with(&path, true, true, false).unwrap();
    let r2 = open_with(&path, true, true, false).unwrap();
    let e = open_with(&path, false, true, false).unwrap_err();
    assert!(e.contains("Failed to get \"write\" lock. "), "{e}");
    close(r1);
    close(r2);
    close(open_with(&path, false, true, false).unwrap());
}

#[test]
fn backing_files_are_locked_for_reading() {
    let dir = Scratch::new("lock-chain");
    create_qcow2(&dir, "base.qcow2", None, &[]);
    create_qcow2(&dir, "top.qcow2", Some(("base.qcow2", "qcow2")), &[]);
    let top = open_with(&dir.path("top.qcow2"), false, true, false).unwrap();
    let e = open_with(&dir.path("base.qcow2"), false, true, false).unwrap_err();
    let base = dir.show("base.qcow2");
    assert!(
        e.contains("Failed to get \"write\" lock. ")
            && e.contains(&format!("using the image [{base}]")),
        "{e}"
    );
    // Another reader of the base (a second overlay on it) is fine.
    drop(open_with(&dir.path("base.qcow2"), true, true, false).unwrap());
    drop(top);
}

/// QEMU's own tools see rvmm's locks: `qemu-img info` takes its shared lock, `-U` takes none.
#[test]
fn qemu_img_respects_the_locks() {
    let dir = Scratch::new("lock-qemu-img");
    create_qcow2(&dir, "a.qcow2", None, &[]);
    let disk = open_with(&dir.path("a.qcow2"), false, true, false).unwrap();
    let out = output(
        std::process::Command::new("qemu-img")
            .args(["info", "a.qcow2"])
            .current_dir(&dir.0),
    )
    .expect("qemu-img (install qemu-utils)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Failed to get shared \"write\" lock"),
        "{err}"
    );
    tool(&dir.0, "qemu-img", &["info", "-U", "a.qcow2"]);
    close(disk);
    tool(&dir.0, "qemu-img", &["info", "a.qcow2"]);
}

fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime, u64) {
    let meta = std::fs::metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        meta.modified().unwrap(),
        meta.len(),
    )
}

#[test]
fn a_snapshot_writes_to_a_temporary_overlay_only() {
    let dir = Scratch::new("snapshot");
    create_qcow2(&dir, "base.qcow2", None, &[]);
    qemu_io(&dir, "base.qcow2", "write -P 0x11 0 64k");
    create_qcow2(&dir, "top.qcow2", Some(("base.qcow2", "qcow2")), &[]);
    qemu_io(&dir, "top.qcow2", "write -P 0x22 64k 4k");
    let raw = dir.path("raw.img");
    std::fs::write(&raw, vec![0x33u8; 1 << 20]).unwrap();
    for path in [dir.path("top.qcow2"), raw] {
        let files = [&path, &dir.path("base.qcow2")];
        let before: Vec<_> = files.iter().map(|p| fingerprint(p)).collect();
        let mut disk = open_with(&path, false, true, true).unwrap();
        assert!(!disk.readonly());
        let first = read_byte(&disk, 0);
        disk.write(&[0x44; 4096], 512).unwrap();
        disk.write(&[0x55; 512], 70000).unwrap();
        disk.write_zeroes(128 << 10, 64 << 10, true).unwrap();
        disk.flush().unwrap();
        let mut b = [0u8; 1024];
        disk.read(&mut b, 0).unwrap();
        assert_eq!(b[0], first, "{}", path.display());
        assert!(b[512..].iter().all(|&x| x == 0x44));
        assert_eq!(read_byte(&disk, 70000), 0x55);
        assert_eq!(read_byte(&disk, 128 << 10), 0);
        // The image is only read: other readers may share it, no writer may take it.
        close(open_with(&path, true, true, false).unwrap());
        let e = open_with(&path, false, true, false).unwrap_err();
        assert!(e.contains("Failed to get \"write\" lock"), "{e}");
        close(disk);
        let after: Vec<_> = files.iter().map(|p| fingerprint(p)).collect();
        assert!(before == after, "{} changed", path.display());
    }
    // Nothing is left behind in the temporary directory by this process.
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("rvmm-snapshot-{}-", std::process::id()))
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// Found by fuzz/block_image: zeroing on a `-snapshot` of an image smaller than one cluster of
/// its overlay made imago compute its last cluster below 0 (a panic in debug builds).
#[test]
fn zeroing_an_image_smaller_than_a_cluster() {
    let dir = Scratch::new("tiny");
    let raw = dir.path("tiny.img");
    std::fs::write(&raw, vec![0x66u8; 4129]).unwrap();
    tool(
        &dir.0,
        "qemu-img",
        &["create", "-f", "qcow2", "-q", "tiny.qcow2", "4608"],
    );
    for path in [raw, dir.path("tiny.qcow2")] {
        for snapshot in [true, false] {
            let mut disk = open_with(&path, false, true, snapshot).unwrap();
            let size = disk.size();
            disk.write(&vec![0x77; size as usize], 0).unwrap();
            disk.write_zeroes(0, 512, false).unwrap();
            disk.write_zeroes(size - 100, 100, true).unwrap();
            let mut b = vec![0u8; size as usize];
            disk.read(&mut b, 0).unwrap();
            assert!(b[..512].iter().all(|&x| x == 0), "{}", path.display());
            assert!(b[512..size as usize - 100].iter().all(|&x| x == 0x77));
            assert!(b[size as usize - 100..].iter().all(|&x| x == 0));
            // The next pass opens the same image: no forked child may hold this one's lock.
            close(disk);
        }
    }
}

#[test]
fn requests_are_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = std::env::temp_dir().join(format!("rvmm-block-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("d.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let (disk, _) = Disk::open(&DiskOptions {
        path: path.clone(),
        format: Some(ImageFormat::Raw),
        readonly: false,
        direct: false,
        locking: true,
        snapshot: false,
        share_rw: false,
    })
    .unwrap();
    let stats = disk.stats();
    disk.write(&[1u8; 512], 4096).unwrap();
    let mut buf = [0u8; 1024];
    disk.read(&mut buf, 0).unwrap();
    disk.read(&mut buf, 1 << 20).unwrap_err();
    disk.flush().unwrap();
    assert_eq!(stats.write.operations.load(Relaxed), 1);
    assert_eq!(stats.write.bytes.load(Relaxed), 512);
    assert_eq!(stats.wr_highest_offset.load(Relaxed), 4096 + 512);
    assert_eq!(stats.read.operations.load(Relaxed), 1);
    assert_eq!(stats.read.bytes.load(Relaxed), 1024);
    assert_eq!(stats.read.failed.load(Relaxed), 1);
    assert_eq!(stats.flush.operations.load(Relaxed), 1);
    drop(disk);
    std::fs::remove_dir_all(&dir).unwrap();
}
