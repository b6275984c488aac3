//! Helpers of the tests that boot the Linux test kernel (scripts/build-test-kernel.sh,
//! docs/LINUX-TEST-KERNEL.md): the kernel itself, host tools, and ext4 images to mount as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The test kernel: `RVMM_TEST_KERNEL`, or what scripts/build-test-kernel.sh builds (minutes on
/// a fresh tree, seconds when cached).
pub fn test_kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("RVMM_TEST_KERNEL") {
        return PathBuf::from(k);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-kernel.sh");
    PathBuf::from(tool(script, &[]).trim())
}

/// Runs a host tool and returns its stdout, failing the test if it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 16 MiB ext4 file system labelled `rvmmroot`, made from the directory `tree` and converted
/// to the qcow2 image `qcow2`.
pub fn ext4_qcow2_from(tree: &Path, qcow2: &Path) {
    let raw = qcow2.with_extension("raw");
    let (r, q, t) = (
        raw.to_str().unwrap(),
        qcow2.to_str().unwrap(),
        tree.to_str().unwrap(),
    );
    tool(
        "mkfs.ext4",
        &["-q", "-F", "-L", "rvmmroot", "-d", t, r, "16M"],
    );
    tool("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", r, q]);
    let _ = std::fs::remove_file(&raw);
}

/// `dumpe2fs -h` of the file system in a qcow2 image.
pub fn superblock(qcow2: &Path) -> String {
    let raw = qcow2.with_extension("check.raw");
    let (q, r) = (qcow2.to_str().unwrap(), raw.to_str().unwrap());
    tool("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", q, r]);
    let sb = tool("dumpe2fs", &["-h", r]);
    let _ = std::fs::remove_file(&raw);
    sb
}

/// One field of [`superblock`]'s output, e.g. `"Mount count:"`.
pub fn sb_field<'a>(sb: &'a str, name: &str) -> &'a str {
    sb.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("dumpe2fs shows no {name:?}\n{sb}"))
}
