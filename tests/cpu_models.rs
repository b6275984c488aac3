//! Named CPU models against QEMU 7.2 (rvmm issue 18): for each `-cpu` spelling, the CPUID
//! table rvmm hands to KVM_SET_CPUID2 (its `RVMM_LOG=debug` dump) is compared with the one QEMU
//! builds for the same spelling: QEMU runs paused (`-S`) and is asked over QMP for the realized
//! vCPU's `feature-words` (the CPUID feature registers after filtering by what KVM supports)
//! and its level, xlevel, vendor, family, model, stepping, model-id and phys-bits; its
//! "host doesn't support requested feature" warnings are compared with rvmm's.
//!
//! This host's KVM may hand the guest the host's CPUID whatever KVM_SET_CPUID2 says
//! (docs/EMULATED-KVM.md), so the tables handed to KVM are compared, not what a guest reads.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, guest, run_limited, skip_on_qemu, REFUSE_WITHIN};
use serde_json::{json, Value};

const QEMU: &str = "qemu-system-x86_64";

/// The feature words rvmm names (crates/arch/src/cpu/features.rs): (leaf, subleaf, register).
const RVMM_WORDS: &[(u32, u32, &str)] = &[
    (1, 0, "EDX"),
    (1, 0, "ECX"),
    (7, 0, "EBX"),
    (7, 0, "ECX"),
    (7, 0, "EDX"),
    (7, 1, "EAX"),
    (0x8000_0001, 0, "EDX"),
    (0x8000_0001, 0, "ECX"),
    (0x8000_0007, 0, "EDX"),
    (0x8000_0008, 0, "EBX"),
    (0xc000_0001, 0, "EDX"),
    (0x4000_0001, 0, "EAX"),
    (0x4000_0001, 0, "EDX"),
    (0x8000_000a, 0, "EDX"),
    (0xd, 1, "EAX"),
    (6, 0, "EAX"),
];

type Table = HashMap<(u32, u32), [u32; 4]>;

fn reg_index(reg: &str) -> usize {
    ["EAX", "EBX", "ECX", "EDX"]
        .iter()
        .position(|r| *r == reg)
        .expect("register name")
}

fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

/// KVM's paravirtual features that make hypercalls, which rvmm hides on a KVM that emulates
/// guest kernel code (crates/hypervisor/src/cpuid.rs KVM_HYPERCALL_FEATURES).
const KVM_HYPERCALL_FEATURES: u32 = (1 << 7) | (1 << 11) | (1 << 13) | (1 << 16);

/// rvmm's table for `-cpu cpu` (from the debug dump), its warnings, and whether it hid the
/// hypercall features (docs/EMULATED-KVM.md).
fn rvmm_cpuid(cpu: &str) -> (Table, Vec<String>, bool) {
    let kernel = guest("default.elf");
    let run = |log: Option<&str>| {
        let mut cmd = Command::new(binary());
        cmd.arg("-kernel")
            .arg(&kernel)
            .args(["--enable-kvm", "-machine", "q35", "-cpu", cpu, "-smp", "1"])
            .args(["-m", "256", "-nodefaults"])
            .env_remove("RVMM_LOG");
        if let Some(log) = log {
            cmd.env("RVMM_LOG", log);
        }
        let out = cmd.output().expect("run rvmm");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut table = Table::new();
    let debug = run(Some("debug"));
    let hides_hypercalls = debug.contains("hiding the paravirtual features that use hypercalls");
    for line in debug.lines() {
        // "guest CPUID 0x00000001.0: eax=0x... ebx=0x... ecx=0x... edx=0x..."
        let Some(rest) = line.split("guest CPUID 0x").nth(1) else {
            continue;
        };
        let Some((key, regs)) = rest.split_once(": ") else {
            continue;
        };
        let Some((leaf, sub)) = key.split_once('.') else {
            continue;
        };
        let r: Vec<u32> = regs
            .split_whitespace()
            .map(|kv| hex(kv.split_once('=').expect("reg=value").1))
            .collect();
        table.insert(
            (hex(leaf), sub.parse().expect("subleaf")),
            [r[0], r[1], r[2], r[3]],
        );
    }
    assert!(!table.is_empty(), "no CPUID dump from rvmm for -cpu {cpu}");
    let warnings = run(None)
        .lines()
        .filter_map(|l| l.strip_prefix("rvmm: warning: "))
        .map(String::from)
        .collect();
    (table, warnings, hides_hypercalls)
}

struct Qmp {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
}

impl Qmp {
    fn start(cpu: &str) -> Qmp {
        let socket = std::env::temp_dir().join(format!(
            "rvmm-cpu-models-{}-{}.sock",
            std::process::id(),
            cpu.replace([',', '+', '='], "_")
        ));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(QEMU)
            .args([
                "-machine",
                "q35,accel=kvm",
                "-cpu",
                cpu,
                "-S",
                "-nodefaults",
            ])
            .args(["-display", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start QEMU");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&socket) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU's QMP socket for -cpu {cpu}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut qmp = Qmp {
            child,
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            socket,
        };
        qmp.line(); // greeting
        qmp.execute("qmp_capabilities", json!({}));
        qmp
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP reply");
        serde_json::from_str(&line).expect("QMP JSON")
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let cmd = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{cmd}").expect("QMP write");
        loop {
            let reply = self.line();
            if let Some(r) = reply.get("return") {
                return r.clone();
            }
            assert!(reply.get("error").is_none(), "{command}: {reply}");
        }
    }

    /// Quits QEMU; returns its warnings.
    fn quit(mut self) -> Vec<String> {
        let _ = writeln!(self.writer, "{}", json!({"execute": "quit"}));
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"))
            .wait_with_output()
            .expect("QEMU exit");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| l.strip_prefix("qemu-system-x86_64: warning: "))
            .map(String::from)
            .collect()
    }
}

/// What QEMU builds for `-cpu cpu`: feature words by (leaf, subleaf, register), properties.
struct QemuCpu {
    words: Vec<((u32, u32, String), u32)>,
    props: HashMap<&'static str, Value>,
    warnings: Vec<String>,
}

fn qemu_cpu(cpu: &str) -> QemuCpu {
    let mut qmp = Qmp::start(cpu);
    let cpus = qmp.execute("query-cpus-fast", json!({}));
    let path = cpus[0]["qom-path"].as_str().expect("qom-path").to_string();
    let mut get = |prop: &str| qmp.execute("qom-get", json!({"path": path, "property": prop}));
    let words = get("feature-words")
        .as_array()
        .expect("feature-words")
        .iter()
        .map(|w| {
            let leaf = w["cpuid-input-eax"].as_u64().expect("eax") as u32;
            let sub = w["cpuid-input-ecx"].as_u64().unwrap_or(0) as u32;
            let reg = w["cpuid-register"].as_str().expect("register").to_string();
            (
                (leaf, sub, reg),
                w["features"].as_u64().expect("features") as u32,
            )
        })
        .collect();
    let mut props = HashMap::new();
    for prop in [
        "level",
        "xlevel",
        "vendor",
        "family",
        "model",
        "stepping",
        "model-id",
        "phys-bits",
    ] {
        props.insert(prop, get(prop));
    }
    let warnings = qmp.quit();
    QemuCpu {
        words,
        props,
        warnings,
    }
}

/// rvmm's table in QEMU's property names.
fn rvmm_props(t: &Table) -> HashMap<&'static str, Value> {
    let leaf = |l: u32| t.get(&(l, 0)).copied().unwrap_or_default();
    let bytes = |regs: &[u32]| -> Vec<u8> { regs.iter().flat_map(|r| r.to_le_bytes()).collect() };
    let l0 = leaf(0);
    let eax1 = leaf(1)[0];
    let base_family = (eax1 >> 8) & 0xf;
    let family = base_family
        + if base_family == 0xf {
            (eax1 >> 20) & 0xff
        } else {
            0
        };
    let model = ((eax1 >> 4) & 0xf) | (((eax1 >> 16) & 0xf) << 4);
    let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
        .flat_map(|l| bytes(&leaf(l)))
        .take_while(|b| *b != 0)
        .collect();
    HashMap::from([
        ("level", json!(l0[0])),
        ("xlevel", json!(leaf(0x8000_0000)[0])),
        (
            "vendor",
            json!(String::from_utf8_lossy(&bytes(&[l0[1], l0[3], l0[2]]))),
        ),
        ("family", json!(family)),
        ("model", json!(model)),
        ("stepping", json!(eax1 & 0xf)),
        ("model-id", json!(String::from_utf8_lossy(&brand))),
        ("phys-bits", json!(leaf(0x8000_0008)[0] & 0xff)),
    ])
}

/// Compares rvmm with QEMU for one spelling; returns the differences that count.
fn compare(cpu: &str) -> Vec<String> {
    let (table, rvmm_warnings, hides_hypercalls) = rvmm_cpuid(cpu);
    let qemu = qemu_cpu(cpu);
    let mut diffs = Vec::new();
    for ((leaf, sub, reg), value) in &qemu.words {
        let mut ours = table.get(&(*leaf, *sub)).map_or(0, |r| r[reg_index(reg)]);
        let mut value = *value;
        if hides_hypercalls && (*leaf, reg.as_str()) == (0x4000_0001, "EAX") {
            let hidden = value & KVM_HYPERCALL_FEATURES;
            if hidden != 0 {
                eprintln!("  {cpu}: rvmm hides hypercall features {hidden:#x} on this host's KVM (docs/EMULATED-KVM.md), not compared");
            }
            ours &= !KVM_HYPERCALL_FEATURES;
            value &= !KVM_HYPERCALL_FEATURES;
        }
        if ours == value {
            continue;
        }
        let line = format!("CPUID {leaf:#x}.{sub} {reg}: QEMU {value:#010x}, rvmm {ours:#010x}");
        if RVMM_WORDS.contains(&(*leaf, *sub, reg.as_str())) {
            diffs.push(line);
        } else {
            eprintln!("  {cpu}: not a word rvmm names, not compared: {line}");
        }
    }
    let ours = rvmm_props(&table);
    for (name, value) in &qemu.props {
        if ours[name] != *value {
            diffs.push(format!("{name}: QEMU {value}, rvmm {}", ours[name]));
        }
    }
    // QEMU also checks XSAVE components (CPUID.0DH:EAX bits without a name); rvmm does not.
    let qemu_warnings: Vec<&String> = qemu
        .warnings
        .iter()
        .filter(|w| !w.contains("CPUID.0DH:EAX [bit"))
        .collect();
    for w in qemu
        .warnings
        .iter()
        .filter(|w| w.contains("CPUID.0DH:EAX [bit"))
    {
        eprintln!("  {cpu}: QEMU warning rvmm does not give (XSAVE components): {w}");
    }
    if qemu_warnings != rvmm_warnings.iter().collect::<Vec<_>>() {
        diffs.push(format!(
            "warnings: QEMU {qemu_warnings:#?}, rvmm {rvmm_warnings:#?}"
        ));
    }
    diffs
}

#[test]
fn named_models_match_qemu() {
    if skip_on_qemu("compares rvmm with QEMU") {
        return;
    }
    if !qemu_available() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: {QEMU} or /dev/kvm is not available to compare with");
        return;
    }
    eprintln!(
        "compared the table handed to KVM_SET_CPUID2 (rvmm's RVMM_LOG=debug dump) with QEMU's \
         realized vCPU (QMP qom-get feature-words and CPUID properties); this host's KVM may \
         ignore it for the guest's cpuid"
    );
    let mut failures = Vec::new();
    for cpu in [
        "qemu64",
        "qemu64,+x2apic,+tsc-deadline",
        "qemu64,-x2apic",
        "qemu64,+sse4.1,-lahf-lm,level=7,model-id=Test CPU",
        "Skylake-Server",
        "Skylake-Server,-hle,-rtm,+invpcid",
        "Skylake-Server-IBRS",
        "Skylake-Server-noTSX-IBRS",
        "Skylake-Server-v4",
        "Skylake-Server-v5",
        "EPYC",
        "EPYC,-topoext,+ibpb",
        "EPYC-IBPB",
        "EPYC-v3",
        "EPYC,-svm,+npt",
        "qemu64-v1,-xsave,+xsaveopt,enforce=off",
        // QEMU 7.2 aborts on this host with max's arch-capabilities (MSR 0x10a); rvmm's max
        // defaults to migratable=off (docs/CPU.md), QEMU's to on.
        "max,-arch-capabilities,migratable=on",
    ] {
        let diffs = compare(cpu);
        eprintln!(
            "-cpu {cpu}: {}",
            if diffs.is_empty() {
                "same as QEMU"
            } else {
                "DIFFERENT"
            }
        );
        failures.extend(diffs.into_iter().map(|d| format!("-cpu {cpu}: {d}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An unknown model or flag fails with QEMU's words (rvmm adds "-cpu: " and exits with 2).
#[test]
fn unknown_names_fail_as_qemu() {
    if skip_on_qemu("compares rvmm with QEMU") {
        return;
    }
    if !qemu_available() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: {QEMU} or /dev/kvm is not available to compare with");
        return;
    }
    let kernel = guest("default.elf");
    for cpu in [
        "Foo",
        "qemu64,+foo",
        "qemu64,foo=on",
        "Skylake-Server,-frob",
        "EPYC,tsc_deadline=maybe",
    ] {
        let (code, qemu, _) = run_limited(
            Path::new(QEMU),
            &[
                "-machine",
                "q35,accel=kvm",
                "-cpu",
                cpu,
                "-S",
                "-nodefaults",
            ]
            .map(std::ffi::OsStr::new)
            .into_iter()
            .chain(["-display".as_ref(), "none".as_ref()])
            .collect::<Vec<_>>(),
            REFUSE_WITHIN,
        );
        assert_eq!(code, Some(1), "QEMU -cpu {cpu}: {qemu}");
        let qemu = qemu
            .trim()
            .strip_prefix("qemu-system-x86_64: ")
            .expect("QEMU error");
        let args = ["-kernel".as_ref(), kernel.as_os_str()]
            .into_iter()
            .chain(["--enable-kvm", "-cpu", cpu, "-nodefaults"].map(std::ffi::OsStr::new))
            .collect::<Vec<_>>();
        let (code, rvmm, _) = run_limited(&binary(), &args, REFUSE_WITHIN);
        assert_eq!(code, Some(2), "rvmm -cpu {cpu}: {rvmm}");
        assert_eq!(rvmm.trim(), format!("rvmm: -cpu: {qemu}"), "-cpu {cpu}");
        eprintln!("-cpu {cpu}: {qemu} (as QEMU)");
    }
}

/// QEMU 7.2's Hyper-V leaves for `-cpu qemu64,hv-relaxed,hv-vapic,hv-time,hv-spinlocks=0x1fff`
/// (target/i386/kvm/kvm.c `hyperv_fill_cpuids` with cpu.c's defaults), KVM's moved to 0x40000100.
const HYPERV_LEAVES: &[(u32, [u32; 4])] = &[
    (
        0x4000_0000,
        [0x4000_0005, 0x7263_694d, 0x666f_736f, 0x7648_2074],
    ),
    (0x4000_0001, [0x3123_7648, 0, 0, 0]),
    (0x4000_0002, [0x3839, 0x000a_0000, 0, 0]),
    (0x4000_0003, [0x232, 0, 0, 0x8]),
    (0x4000_0004, [0x28, 0x1fff, 0, 0]),
    (0x4000_0005, [0xffff_ffff, 64, 0, 0]),
];

/// QEMU's leaves 0x40000000-0x40000005 as it hands them to KVM_SET_CPUID2 (strace decodes the
/// ioctl), if it hands any: QEMU 7.2 leaves them out where KVM lacks KVM_CAP_HYPERV.
fn qemu_hyperv_leaves(cpu: &str) -> Option<Table> {
    let out = Command::new("strace")
        .args(["-f", "-v", "-s", "65536", "-e", "trace=ioctl", QEMU])
        .args(["-enable-kvm", "-M", "q35", "-cpu", cpu, "-nodefaults"])
        .args(["-display", "none", "-S", "-qmp", "stdio"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let call = text.lines().rfind(|l| l.contains("KVM_SET_CPUID2"))?;
    let mut table = Table::new();
    for entry in call.split("{function=").skip(1) {
        let field = |name: &str| {
            let v = entry.split(&format!("{name}=")).nth(1)?;
            Some(hex(v.split([',', '}']).next()?))
        };
        let function = hex(entry.split(',').next()?);
        if (0x4000_0000..=0x4000_0005).contains(&function) {
            let regs = [field("eax")?, field("ebx")?, field("ecx")?, field("edx")?];
            table.insert((function, 0), regs);
        }
    }
    table
        .get(&(0x4000_0000, 0))
        .is_some_and(|r| r[1] == 0x7263_694d)
        .then_some(table)
}

/// `hv-relaxed`, `hv-vapic`, `hv-time` and `hv-spinlocks=` put QEMU's Hyper-V leaves at
/// 0x40000000 and move KVM's to 0x40000100; a KVM without Hyper-V support refuses them by name
/// (QEMU 7.2 drops the leaves there and then aborts setting the Hyper-V MSRs).
#[test]
fn hyperv_enlightenments_give_qemus_leaves() {
    if skip_on_qemu("reads rvmm's CPUID dump") {
        return;
    }
    let cpu = "qemu64,hv-relaxed,hv-vapic,hv-time,hv-spinlocks=0x1fff";
    let (table, _, _) = rvmm_cpuid(cpu);
    for (leaf, regs) in HYPERV_LEAVES {
        assert_eq!(
            table.get(&(*leaf, 0)),
            Some(regs),
            "leaf {leaf:#x} for -cpu {cpu}"
        );
    }
    let kvm = table
        .get(&(0x4000_0100, 0))
        .expect("KVM signature leaf moved");
    assert_eq!(kvm[0], 0x4000_0101, "highest KVM leaf");
    assert!(table.contains_key(&(0x4000_0101, 0)), "KVM features leaf");
    let kernel = guest("default.elf");
    let args = [
        "-kernel".as_ref(),
        kernel.as_os_str(),
        "-M".as_ref(),
        "q35".as_ref(),
        "-cpu".as_ref(),
        cpu.as_ref(),
        "-nodefaults".as_ref(),
    ];
    let (code, stderr, _) = run_limited(&binary(), &args, REFUSE_WITHIN * 4);
    if stderr.contains("is not supported by kernel") {
        assert!(
            stderr.contains(
                "rvmm: -cpu: Hyper-V relaxed timing (hv-relaxed) is not supported by kernel"
            ),
            "{stderr}"
        );
        assert_eq!(code, Some(2), "{stderr}");
        println!("this host's KVM has no Hyper-V support: rvmm refuses the enlightenments by name");
    } else {
        assert_eq!(code, Some(0), "{stderr}");
    }
    match qemu_available().then(|| qemu_hyperv_leaves(cpu)).flatten() {
        Some(qemu) => {
            for (leaf, regs) in HYPERV_LEAVES {
                assert_eq!(qemu.get(&(*leaf, 0)), Some(regs), "QEMU's leaf {leaf:#x}");
            }
            println!("compared with the leaves QEMU hands to KVM_SET_CPUID2");
        }
        None => println!(
            "QEMU hands KVM no Hyper-V leaves here (its KVM lacks KVM_CAP_HYPERV, or no strace/QEMU): \
             compared with the values of QEMU 7.2's hyperv_fill_cpuids"
        ),
    }
}
