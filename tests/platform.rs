//! PC platform firmware through the real binary (guests/README.md): the ACPI tables found from
//! a BIOS-area scan, ACPI power-off and reset, fw_cfg through both interfaces, the CMOS RTC.
//!
//! `RVMM_TEST_BIN=qemu-system-x86_64 cargo test --test platform` runs the same checks on QEMU
//! (q35 with SeaBIOS, which builds its own tables: the checks accept both RSDT and XSDT).

mod common;

use common::{is_qemu, skip_on_qemu, TempDir, VmCommand};
use std::time::{SystemTime, UNIX_EPOCH};

const EXIT_OK: i32 = (0x10 << 1) | 1;

#[test]
fn acpi_tables_are_found_from_the_rsdp_and_checksum() {
    let out = VmCommand::guest("acpi.elf").arg("-smp").arg("2").run();
    if is_qemu() {
        out.assert_stdout_contains("table RSDT ok\n");
    } else {
        out.assert_stdout_contains("rsdp: rev 2 xsdt\n");
        out.assert_stdout_contains("table XSDT ok\n");
    }
    for sig in ["FACP", "APIC", "DSDT"] {
        out.assert_stdout_contains(&format!("table {sig} ok\n"));
    }
    out.assert_stdout_lacks("bad checksum");
    out.assert_stdout_contains("s5: slp_typ 0\n");
    out.assert_stdout_contains("pm1a_cnt: 0x604\n");
    out.assert_stdout_contains("reset: space 1 port 0xcf9 value 0xf\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn acpi_poweroff_from_the_tables_exits_zero() {
    let out = VmCommand::guest("acpi.elf").append("poweroff").run();
    out.assert_stdout_contains("powering off\n");
    out.assert_stdout_lacks("still running");
    out.assert_status(0);
}

#[test]
fn acpi_reset_register_resets_and_exits_zero_under_no_reboot() {
    let out = VmCommand::guest("acpi.elf").append("reset").run();
    out.assert_stdout_contains("resetting\n");
    out.assert_stdout_lacks("still running");
    out.assert_status(0);
}

#[test]
fn acpi_off_leaves_only_the_mp_table() {
    if skip_on_qemu("SeaBIOS always has its own tables; acpi=off is checked on rvmm") {
        return;
    }
    let out = VmCommand::guest("acpi.elf")
        .arg("-M")
        .arg("q35,acpi=off")
        .run();
    out.assert_stdout_contains("rsdp: not found\n");
    out.assert_status((0x11 << 1) | 1);
}

#[test]
fn fw_cfg_reports_ram_cpus_and_a_user_file_through_both_interfaces() {
    let dir = TempDir::new("fwcfg");
    let file = dir.file("payload", b"payload from a file");
    let out = VmCommand::guest("fwcfg.elf")
        .arg("-smp")
        .arg("3")
        .arg("-fw_cfg")
        .arg(format!("name=opt/rvmm/test,file={}", file.display()))
        .run();
    out.assert_stdout_contains("fw_cfg: 3 vCPUs, 256 MiB RAM, id 0x3\n");
    out.assert_stdout_contains("dma: opt/rvmm/test size 19: payload from a file\n");
    out.assert_stdout_contains("pio: payload from a file\n");
    out.assert_status(EXIT_OK);

    let out = VmCommand::guest("fwcfg.elf")
        .arg("-fw_cfg")
        .arg("opt/rvmm/test,string=hi there")
        .run();
    out.assert_stdout_contains("dma: opt/rvmm/test size 8: hi there\n");
    out.assert_stdout_contains("pio: hi there\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn fw_cfg_without_the_user_file_fails_in_the_guest() {
    let out = VmCommand::guest("fwcfg.elf").run();
    out.assert_stdout_contains("opt/rvmm/test not found\n");
    out.assert_status((0x11 << 1) | 1);
}

/// Days since 1970-01-01 of a civil date (for comparing the RTC with the host clock).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

#[test]
fn cmos_time_follows_the_host_clock_and_memory_bytes_match_qemu() {
    let out = VmCommand::guest("cmos.elf").arg("-smp").arg("2").run();
    out.assert_status(EXIT_OK);
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("rtc: "))
        .unwrap_or_else(|| panic!("no rtc line\n{out}"));
    let n: Vec<i64> = line
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 6, "{line}");
    let guest = days_from_civil(n[0], n[1], n[2]) * 86_400 + n[3] * 3600 + n[4] * 60 + n[5];
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((host - guest).abs() < 120, "guest {line} vs host {host}");
    // 256 MiB: 640 KiB base, extended capped at 65535 KiB, 3840 x 64 KiB above 16 MiB.
    out.assert_stdout_contains(
        "cmos mem: base 640 ext 65535 ext2 65535 high16 3840 above4g 0 cpus 2\n",
    );
    out.assert_stdout_contains("regd 0x80\n");
}

#[test]
fn cmos_memory_above_4g() {
    // 3.5 GiB low on QEMU q35 would differ (its PCI hole starts at 2 GiB for >= 2.75 GiB); rvmm
    // keeps RAM up to 3 GiB low, so check rvmm's split against pc_cmos_init's formulas.
    if skip_on_qemu("QEMU q35 splits RAM at 2 GiB, rvmm at 3 GiB") {
        return;
    }
    let out = VmCommand::guest("cmos.elf").arg("-m").arg("5G").run();
    // (3 GiB - 16 MiB) / 64 KiB = 48896; 2 GiB / 64 KiB = 32768.
    out.assert_stdout_contains("high16 48896 above4g 32768 cpus 1\n");
    out.assert_status(EXIT_OK);
}
