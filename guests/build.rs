//! Assembles the test guests in `src/*.S` with the system toolchain (GNU as
//! through `gcc -c`, `ld`, `objcopy`) into `$OUT_DIR`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Object format a guest is assembled and linked as.
#[derive(Clone, Copy)]
enum Class {
    /// ELF32 i386 (`gcc -m32`, `ld -m elf_i386`).
    Elf32,
    /// ELF64 x86-64; 32-bit code sections are still allowed (`.code32`).
    Elf64,
}

/// One guest image: which source, how it is built, what file it becomes.
struct Guest {
    /// File name in `$OUT_DIR`.
    out: &'static str,
    /// Source file under `src/`.
    src: &'static str,
    class: Class,
    /// Extra preprocessor definitions.
    defines: &'static [&'static str],
    /// Linker script under `ld/`.
    script: &'static str,
    /// Convert the linked ELF to a flat binary.
    flat: bool,
    /// Linker symbol definitions (`--defsym`), e.g. `LOAD_ADDR=0x8000` for `elf.ld`.
    symbols: &'static [&'static str],
}

const fn guest(out: &'static str, src: &'static str, class: Class, script: &'static str) -> Guest {
    Guest {
        out,
        src,
        class,
        defines: &[],
        script,
        flat: false,
        symbols: &[],
    }
}

// Keep in sync with `ALL` in src/lib.rs (a unit test there checks every file exists).
const GUESTS: &[Guest] = &[
    guest("default.elf", "default.S", Class::Elf32, "pvh.ld"),
    Guest {
        flat: true,
        ..guest("bootdisk.bin", "bootdisk.S", Class::Elf32, "bootsector.ld")
    },
    Guest {
        flat: true,
        ..guest(
            "resetdisk.bin",
            "resetdisk.S",
            Class::Elf32,
            "bootsector.ld",
        )
    },
    Guest {
        flat: true,
        ..guest(
            "writedisk.bin",
            "writedisk.S",
            Class::Elf32,
            "bootsector.ld",
        )
    },
    Guest {
        flat: true,
        ..guest("vgadisk.bin", "vgadisk.S", Class::Elf32, "bootsector.ld")
    },
    Guest {
        flat: true,
        ..guest("vgabench.bin", "vgabench.S", Class::Elf32, "bootsector.ld")
    },
    Guest {
        flat: true,
        ..guest(
            "suspenddisk.bin",
            "suspenddisk.S",
            Class::Elf32,
            "bootsector.ld",
        )
    },
    Guest {
        flat: true,
        ..guest(
            "smbiosdisk.bin",
            "smbiosdisk.S",
            Class::Elf32,
            "bootsector.ld",
        )
    },
    guest("pvh32.elf", "pvh.S", Class::Elf32, "pvh.ld"),
    guest("pvh64.elf", "pvh.S", Class::Elf64, "pvh.ld"),
    guest("multiboot.elf", "multiboot.S", Class::Elf32, "elf.ld"),
    Guest {
        defines: &["MULTIBOOT_AOUT"],
        flat: true,
        ..guest("multiboot_aout.bin", "multiboot.S", Class::Elf32, "elf.ld")
    },
    Guest {
        flat: true,
        ..guest("bzimage.bin", "bzimage.S", Class::Elf64, "bzimage.ld")
    },
    // PVH images linked below 1 MiB, the same way.
    Guest {
        symbols: &["LOAD_ADDR=0x8000"],
        ..guest("pvh32_8000.elf", "pvh.S", Class::Elf32, "pvh.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x8000"],
        ..guest("pvh64_8000.elf", "pvh.S", Class::Elf64, "pvh.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x10000"],
        ..guest("pvh32_10000.elf", "pvh.S", Class::Elf32, "pvh.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x10000"],
        ..guest("pvh64_10000.elf", "pvh.S", Class::Elf64, "pvh.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x90000"],
        ..guest("pvh32_90000.elf", "pvh.S", Class::Elf32, "pvh.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x90000"],
        ..guest("pvh64_90000.elf", "pvh.S", Class::Elf64, "pvh.ld")
    },
    // Multiboot images linked below 1 MiB: rvmm moves its boot data out of their way.
    Guest {
        symbols: &["LOAD_ADDR=0x8000"],
        ..guest("multiboot_8000.elf", "multiboot.S", Class::Elf32, "elf.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x10000"],
        ..guest("multiboot_10000.elf", "multiboot.S", Class::Elf32, "elf.ld")
    },
    Guest {
        symbols: &["LOAD_ADDR=0x90000"],
        ..guest("multiboot_90000.elf", "multiboot.S", Class::Elf32, "elf.ld")
    },
    Guest {
        defines: &["MULTIBOOT_AOUT"],
        flat: true,
        symbols: &["LOAD_ADDR=0x8000"],
        ..guest(
            "multiboot_aout_8000.bin",
            "multiboot.S",
            Class::Elf32,
            "elf.ld",
        )
    },
    Guest {
        defines: &["MULTIBOOT_AOUT"],
        flat: true,
        symbols: &["LOAD_ADDR=0x10000"],
        ..guest(
            "multiboot_aout_10000.bin",
            "multiboot.S",
            Class::Elf32,
            "elf.ld",
        )
    },
    Guest {
        defines: &["MULTIBOOT_AOUT"],
        flat: true,
        symbols: &["LOAD_ADDR=0x90000"],
        ..guest(
            "multiboot_aout_90000.bin",
            "multiboot.S",
            Class::Elf32,
            "elf.ld",
        )
    },
    guest("vmlinux64.elf", "vmlinux64.S", Class::Elf64, "elf.ld"),
    guest("pio_mmio.elf", "pio_mmio.S", Class::Elf64, "pvh.ld"),
    guest("exitcode.elf", "exitcode.S", Class::Elf32, "pvh.ld"),
    guest("kvmcpuid.elf", "kvmcpuid.S", Class::Elf32, "pvh.ld"),
    guest("reset.elf", "reset.S", Class::Elf32, "pvh.ld"),
    guest("triplefault.elf", "triplefault.S", Class::Elf32, "pvh.ld"),
    guest("hlt.elf", "hlt.S", Class::Elf32, "pvh.ld"),
    guest("int3.elf", "int3.S", Class::Elf32, "pvh.ld"),
    guest("badinsn.elf", "badinsn.S", Class::Elf32, "pvh.ld"),
    guest("smp.elf", "smp.S", Class::Elf32, "pvh.ld"),
    guest("acpi.elf", "acpi.S", Class::Elf32, "pvh.ld"),
    guest("fwcfg.elf", "fwcfg.S", Class::Elf32, "pvh.ld"),
    guest("cmos.elf", "cmos.S", Class::Elf32, "pvh.ld"),
    guest("smp_ipi.elf", "smp_ipi.S", Class::Elf32, "pvh.ld"),
    guest("timer.elf", "timer.S", Class::Elf32, "pvh.ld"),
    guest("serial_irq.elf", "serial_irq.S", Class::Elf32, "pvh.ld"),
    guest("pci_scan.elf", "pci_scan.S", Class::Elf32, "pvh.ld"),
    guest("pci_tree.elf", "pci_tree.S", Class::Elf32, "pvh.ld"),
    guest("pci_unplug.elf", "pci_unplug.S", Class::Elf32, "pvh.ld"),
    guest("pci_bar.elf", "pci_bar.S", Class::Elf32, "pvh.ld"),
    guest("pio_bench.elf", "pio_bench.S", Class::Elf32, "pvh.ld"),
    guest("heartbeat.elf", "heartbeat.S", Class::Elf32, "pvh.ld"),
    guest("kbdecho.elf", "kbdecho.S", Class::Elf32, "pvh.ld"),
    guest("tablet.elf", "tablet.S", Class::Elf32, "pvh.ld"),
    guest("balloon.elf", "balloon.S", Class::Elf32, "pvh.ld"),
    guest("xhci.elf", "xhci.S", Class::Elf32, "pvh.ld"),
    guest("counter.elf", "counter.S", Class::Elf32, "pvh.ld"),
    Guest {
        defines: &["FAST"],
        ..guest("counter_fast.elf", "counter.S", Class::Elf32, "pvh.ld")
    },
    guest("powerbutton.elf", "powerbutton.S", Class::Elf32, "pvh.ld"),
    guest("suspend.elf", "suspend.S", Class::Elf32, "pvh.ld"),
    Guest {
        defines: &["RTC_WAKE"],
        ..guest("suspend_rtc.elf", "suspend.S", Class::Elf32, "pvh.ld")
    },
    Guest {
        defines: &["RTC_WAKE", "RTC_DELAY=15"],
        ..guest("suspend_rtc15.elf", "suspend.S", Class::Elf32, "pvh.ld")
    },
    guest(
        "powerbutton_irq.elf",
        "powerbutton_irq.S",
        Class::Elf32,
        "pvh.ld",
    ),
    guest("exits.elf", "exits.S", Class::Elf32, "pvh.ld"),
    guest("exits64.elf", "exits64.S", Class::Elf64, "pvh.ld"),
    guest("virtio.elf", "virtio.S", Class::Elf32, "pvh.ld"),
    guest("hostile.elf", "hostile.S", Class::Elf32, "pvh.ld"),
    guest("hostile_pci.elf", "hostile_pci.S", Class::Elf32, "pvh.ld"),
    guest(
        "hostile_legacy.elf",
        "hostile_legacy.S",
        Class::Elf32,
        "pvh.ld",
    ),
    guest("pit.elf", "pit.S", Class::Elf32, "pvh.ld"),
    guest("pit_ioapic.elf", "pit_ioapic.S", Class::Elf32, "pvh.ld"),
    guest("tsc_deadline.elf", "tsc_deadline.S", Class::Elf32, "pvh.ld"),
    guest("virtio_bench.elf", "virtio_bench.S", Class::Elf32, "pvh.ld"),
    guest(
        "virtio_net_bench.elf",
        "virtio_net_bench.S",
        Class::Elf32,
        "pvh.ld",
    ),
    Guest {
        defines: &["VIRTIO_PCI"],
        ..guest("snapdisk.elf", "snapdisk.S", Class::Elf32, "pvh.ld")
    },
    Guest {
        defines: &["VIRTIO_PCI"],
        ..guest(
            "virtio_net_bench_pci.elf",
            "virtio_net_bench.S",
            Class::Elf32,
            "pvh.ld",
        )
    },
    Guest {
        defines: &["VIRTIO_PCI"],
        ..guest(
            "virtio_bench_pci.elf",
            "virtio_bench.S",
            Class::Elf32,
            "pvh.ld",
        )
    },
    Guest {
        defines: &["TEST_POPCNT"],
        ..guest("emulate_popcnt.elf", "emulate.S", Class::Elf64, "pvh.ld")
    },
    Guest {
        defines: &["TEST_FWAIT"],
        ..guest("emulate_fwait.elf", "emulate.S", Class::Elf64, "pvh.ld")
    },
    Guest {
        defines: &["TEST_MXCSR"],
        ..guest("emulate_mxcsr.elf", "emulate.S", Class::Elf64, "pvh.ld")
    },
    Guest {
        defines: &["TEST_SMAP"],
        ..guest("emulate_smap.elf", "emulate.S", Class::Elf64, "pvh.ld")
    },
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("src");
    let scripts = manifest.join("ld");

    println!("cargo:rerun-if-changed=build.rs");
    for dir in [&src, &src.join("include"), &scripts] {
        rerun_if_changed_dir(dir);
    }

    for tool in ["gcc", "ld", "objcopy"] {
        require_tool(tool);
    }
    let ld_quiet = ld_supports("--no-warn-rwx-segments");

    for g in GUESTS {
        build_guest(g, &src, &scripts, &out_dir, ld_quiet);
    }
    build_packed_bzimage(&out_dir);
}

/// `bzimage_gzip.bin`: bzimage.bin with vmlinux64.elf appended as a gzip payload, located by the
/// setup header's payload_offset/payload_length (boot.rst) and ending with the uncompressed size
/// (as the kernel build's `size_append`). rvmm unpacks it and enters vmlinux64 ("vmlinux64 ok");
/// the kernel's own path enters bzimage.bin's 64-bit entry instead ("bzimage ok").
fn build_packed_bzimage(out_dir: &Path) {
    const PM_START: usize = 0x400; // setup_sects = 1: boot sector + one setup sector
    let elf = fs::read(out_dir.join("vmlinux64.elf")).expect("vmlinux64.elf was just built");
    let mut bz = fs::read(out_dir.join("bzimage.bin")).expect("bzimage.bin was just built");
    require_tool("gzip");
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("gzip stdin");
        stdin.write_all(&elf).expect("feed gzip");
    }
    let out = child.wait_with_output().expect("gzip output");
    assert!(out.status.success(), "gzip failed: {}", out.status);
    let mut payload = out.stdout;
    payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
    let offset = bz.len() - PM_START;
    bz[0x248..0x24c].copy_from_slice(&(offset as u32).to_le_bytes());
    bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    bz.extend_from_slice(&payload);
    let dst = out_dir.join("bzimage_gzip.bin");
    fs::write(&dst, bz).unwrap_or_else(|e| panic!("cannot write {}: {e}", dst.display()));
}

/// Emits `rerun-if-changed` for every file in `dir` (not recursive).
fn rerun_if_changed_dir(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list guest sources in {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list guest sources in {}: {e}", dir.display()))
            .path();
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Fails the build with an actionable message when `tool` cannot be run.
fn require_tool(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "rvmm-guests: `{tool} --version` failed ({}); the test guests need gcc, ld and \
             objcopy (Debian/Ubuntu: apt-get install gcc binutils)",
            out.status
        ),
        Err(e) => panic!(
            "rvmm-guests: cannot run `{tool}` ({e}); the test guests need gcc, ld and objcopy \
             (Debian/Ubuntu: apt-get install gcc binutils)"
        ),
    }
}

/// Whether `ld` knows `flag` (binutils 2.39 added the RWX segment warnings).
fn ld_supports(flag: &str) -> bool {
    Command::new("ld")
        .arg("--help")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
        .unwrap_or(false)
}

fn build_guest(g: &Guest, src: &Path, scripts: &Path, out_dir: &Path, ld_quiet: bool) {
    let stem = g.out.replace('.', "_");
    let obj = out_dir.join(format!("{stem}.o"));
    let (gcc_mode, ld_mode) = match g.class {
        Class::Elf32 => ("-m32", "elf_i386"),
        Class::Elf64 => ("-m64", "elf_x86_64"),
    };

    let mut gcc = Command::new("gcc");
    gcc.args([
        gcc_mode,
        "-c",
        "-nostdlib",
        "-ffreestanding",
        "-Wa,--fatal-warnings",
    ])
    .arg("-I")
    .arg(src);
    for d in g.defines {
        gcc.arg(format!("-D{d}"));
    }
    gcc.arg(src.join(g.src)).arg("-o").arg(&obj);
    run(gcc, g.out);

    let linked = if g.flat {
        out_dir.join(format!("{stem}.linked.elf"))
    } else {
        out_dir.join(g.out)
    };
    let mut ld = Command::new("ld");
    ld.args([
        "-m",
        ld_mode,
        "-z",
        "max-page-size=4096",
        "-z",
        "noexecstack",
    ]);
    if ld_quiet {
        ld.arg("--no-warn-rwx-segments");
    }
    for s in g.symbols {
        ld.arg(format!("--defsym={s}"));
    }
    ld.arg("-T")
        .arg(scripts.join(g.script))
        .arg(&obj)
        .arg("-o")
        .arg(&linked);
    run(ld, g.out);

    if g.flat {
        let mut objcopy = Command::new("objcopy");
        objcopy
            .args(["-O", "binary"])
            .arg(&linked)
            .arg(out_dir.join(g.out));
        run(objcopy, g.out);
    }
}

/// Runs one toolchain step, failing the build with its command line and output.
fn run(mut cmd: Command, guest: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("rvmm-guests: building {guest}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "rvmm-guests: building {guest}: {cmd:?} failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
