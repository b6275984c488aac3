//! `-exit-stats`: the counts in the JSON report match exactly what the `exits.elf` guest does,
//! per vCPU and per device; and the benchmark guest itself runs on 1 and 2 vCPUs (also on QEMU).

mod common;

use common::{skip_on_qemu, TempDir, VmCommand};
use serde_json::Value;

const EXIT_OK: i32 = (0x10 << 1) | 1;

fn exits_guest(cpus: u32, cmdline: &str) -> VmCommand {
    VmCommand::guest("exits.elf")
        .arg("-device")
        .arg("pc-testdev")
        .arg("-smp")
        .arg(cpus.to_string())
        .append(cmdline)
}

/// The count of `kind` exits to `device` in a list of exit reports (0 if absent).
fn count(exits: &Value, kind: &str, device: &str) -> u64 {
    exits
        .as_array()
        .expect("exits is an array")
        .iter()
        .filter(|e| e["kind"] == kind && e["device"] == device)
        .map(|e| e["count"].as_u64().expect("count is a number"))
        .sum()
}

fn run_with_json(cpus: u32, cmdline: &str, test: &str) -> Value {
    let dir = TempDir::new(test);
    let json = dir.file("stats.json", b"");
    let out = exits_guest(cpus, cmdline)
        .arg("-exit-stats")
        .arg(format!("json={}", json.display()))
        .run();
    out.assert_status(EXIT_OK);
    out.assert_stdout_contains("end\n");
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
}

#[test]
fn exit_stats_json_counts_exactly_what_the_guest_did() {
    if skip_on_qemu("-exit-stats is an rvmm option") {
        return;
    }
    let v = run_with_json(1, "pout=1000 pin=500 mw=300 mr=200", "counts1");
    assert_eq!(v["schema"], "rvmm-exit-stats/1");
    let total = &v["total"];
    assert_eq!(count(total, "pio-out", "pc-testdev"), 1000, "{v:#}");
    assert_eq!(count(total, "pio-in", "pc-testdev"), 500);
    assert_eq!(count(total, "mmio-write", "pc-testdev iomem"), 300);
    assert_eq!(count(total, "mmio-read", "pc-testdev iomem"), 200);
    assert_eq!(count(total, "pio-out", "isa-debug-exit"), 1);
    // "exits: cpus 1\nP1\nP2\nP3\nP4\nend\n", one exit per byte.
    assert_eq!(count(total, "pio-out", "COM1"), 30);
    assert_eq!(count(total, "pio-out", "unclaimed"), 0);
    let one = &v["total"].as_array().unwrap()[0];
    for key in ["total_ns", "mean_ns", "p50_ns", "p99_ns"] {
        assert!(one[key].as_u64().is_some(), "{key} missing in {one}");
    }
    let hist: u64 = one["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist, one["count"].as_u64().unwrap());
}

#[test]
fn exit_stats_json_counts_per_vcpu() {
    if skip_on_qemu("-exit-stats is an rvmm option") {
        return;
    }
    let v = run_with_json(2, "pout=700 pin=300 mw=20 mr=10 cpus=2", "counts2");
    let vcpus = v["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 2);
    for vcpu in vcpus {
        let exits = &vcpu["exits"];
        assert_eq!(count(exits, "pio-out", "pc-testdev"), 700, "{vcpu:#}");
        assert_eq!(count(exits, "pio-in", "pc-testdev"), 300);
        assert_eq!(count(exits, "mmio-write", "pc-testdev iomem"), 20);
        assert_eq!(count(exits, "mmio-read", "pc-testdev iomem"), 10);
    }
    assert_eq!(count(&v["total"], "pio-out", "pc-testdev"), 1400);
}

#[test]
fn exit_stats_table_goes_to_stderr() {
    if skip_on_qemu("-exit-stats is an rvmm option") {
        return;
    }
    let out = exits_guest(1, "pout=5").arg("-exit-stats").run();
    out.assert_status(EXIT_OK);
    let row = out
        .stderr
        .lines()
        .find(|l| l.contains("pio-out") && l.contains("pc-testdev"))
        .unwrap_or_else(|| panic!("no pc-testdev row in stderr:\n{}", out.stderr));
    assert_eq!(row.split_whitespace().nth(3), Some("5"), "{row}");
}

#[test]
fn exits_guest_starts_the_second_vcpu_with_init_sipi() {
    let out = exits_guest(2, "pout=10 pin=10 mw=10 mr=10 cpus=2").run();
    out.assert_stdout_contains("exits: cpus 2\nP1\nP2\nP3\nP4\nend\n");
    out.assert_status(EXIT_OK);
}

#[test]
fn exit_stats_counts_64bit_paged_ring3_exits() {
    if skip_on_qemu("-exit-stats is an rvmm option") {
        return;
    }
    let dir = TempDir::new("counts64");
    let json = dir.file("stats.json", b"");
    let out = VmCommand::guest("exits64.elf")
        .arg("-device")
        .arg("pc-testdev")
        .append("pout=100 pin=50 mw=30 mr=20")
        .arg("-exit-stats")
        .arg(format!("json={}", json.display()))
        .run();
    out.assert_stdout_contains("exits: cpus 1\nP1\nP2\nP3\nP4\nend\n");
    out.assert_status(EXIT_OK);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let total = &v["total"];
    assert_eq!(count(total, "pio-out", "pc-testdev"), 100, "{v:#}");
    assert_eq!(count(total, "pio-in", "pc-testdev"), 50);
    assert_eq!(count(total, "mmio-write", "pc-testdev iomem"), 30);
    assert_eq!(count(total, "mmio-read", "pc-testdev iomem"), 20);
}
