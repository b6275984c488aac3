//! bzImage payload unpacked by rvmm (the default) or by the kernel's own code
//! (`-machine bzimage-decompress=guest`), on the same image: bzimage_gzip.bin is bzimage.bin with
//! vmlinux64.elf as its gzip payload (guests/build.rs).

mod common;

use common::{skip_on_qemu, VmCommand};

const EXIT_OK: i32 = (0x10 << 1) | 1;

#[test]
fn rvmm_unpacks_the_payload_and_enters_vmlinux() {
    if skip_on_qemu("QEMU never unpacks a bzImage itself") {
        return;
    }
    let out = VmCommand::guest("bzimage_gzip.bin")
        .append("unpacked")
        .run();
    out.assert_stdout_contains("vmlinux64 ok\n");
    out.assert_stdout_contains("cmdline: unpacked\n");
    out.assert_stdout_lacks("bzimage ok");
    out.assert_status(EXIT_OK);
}

#[test]
fn guest_decompression_enters_the_bzimage_itself() {
    if skip_on_qemu("QEMU enters a bzImage through its real-mode setup code, not the 64-bit entry")
    {
        return;
    }
    let out = VmCommand::guest("bzimage_gzip.bin")
        .arg("-machine")
        .arg("bzimage-decompress=guest")
        .append("classic")
        .run();
    out.assert_stdout_contains("bzimage ok\n");
    out.assert_stdout_contains("cmdline: classic\n");
    out.assert_stdout_lacks("vmlinux64 ok");
    out.assert_status(EXIT_OK);
}

#[test]
fn bzimage_without_payload_falls_back_to_its_own_entry() {
    if skip_on_qemu("QEMU enters a bzImage through its real-mode setup code, not the 64-bit entry")
    {
        return;
    }
    // bzimage.bin has no payload (payload_length 0): nothing for rvmm to unpack.
    let out = VmCommand::guest("bzimage.bin").run();
    out.assert_stdout_contains("bzimage ok\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn bad_decompress_value_is_rejected() {
    if skip_on_qemu("bzimage-decompress is an rvmm option") {
        return;
    }
    let out = VmCommand::guest("bzimage_gzip.bin")
        .arg("-machine")
        .arg("bzimage-decompress=maybe")
        .run();
    assert_eq!(out.status, Some(2), "{out}");
    assert!(
        out.stderr.contains("bzimage-decompress") && out.stderr.contains("maybe"),
        "{out}"
    );
}
