//! `human-monitor-command`: the HMP commands rvmm answers through QMP, with QEMU's output format
//! (`monitor_puts` turns each "\n" into "\r\n").
//!
//! `info registers [-a]` prints the registers of CPU 0 (the monitor's default CPU, or
//! `cpu-index`) or of every CPU, in the layout of QEMU's `x86_cpu_dump_state`
//! (target/i386/cpu-dump.c): 64-bit names in long mode, 32-bit ones otherwise; general, segment,
//! descriptor-table and control registers and EFER (QEMU goes on with debug, FPU and SSE
//! registers, which rvmm does not print).

use crate::screendump::ImageFormat;
use crate::vcpu::VcpuState;
use kvm_bindings::kvm_segment;
use std::fmt::Write as _;

/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;

/// What `command_line` prints with `cpu` as the monitor's CPU; `states` gives every vCPU's
/// registers when asked, `screendump(filename, format)` writes the screen.
pub fn run(
    command_line: &str,
    cpu: usize,
    states: impl FnOnce() -> Result<Vec<VcpuState>, String>,
    screendump: impl FnOnce(&str, ImageFormat) -> Result<(), String>,
) -> String {
    let words: Vec<&str> = command_line.split_whitespace().collect();
    let out = match words.as_slice() {
        [] => String::new(),
        ["screendump", args @ ..] => match screendump_args(args) {
            Ok((file, format)) => match screendump(file, format) {
                Ok(()) => String::new(),
                Err(e) => format!("Error: {e}\n"),
            },
            Err(e) => format!("{e}\n"),
        },
        ["info", "registers"] | ["info", "registers", "-a"] => {
            let all = words.len() == 3;
            match states() {
                Ok(states) => registers(&states, all, cpu),
                Err(e) => format!("{e}\n"),
            }
        }
        ["info", ..] => format!(
            "info: unknown or unsupported command '{}' (rvmm answers: info registers [-a])\n",
            words.get(1).unwrap_or(&"")
        ),
        [cmd, ..] => format!("unknown command: '{cmd}'\n"),
    };
    out.replace('\n', "\r\n")
}

/// QEMU's `screendump [-f format] [-d device] [-p head] filename`.
fn screendump_args<'a>(args: &[&'a str]) -> Result<(&'a str, ImageFormat), String> {
    let mut format = ImageFormat::Ppm;
    let mut file = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "-f" => {
                format = match it.next() {
                    Some(&"ppm") => ImageFormat::Ppm,
                    Some(&"png") => ImageFormat::Png,
                    Some(other) => {
                        return Err(format!(
                            "Error: Parameter 'format' does not accept value '{other}'"
                        ))
                    }
                    None => return Err("screendump: -f needs a format".into()),
                }
            }
            // One display with one head.
            "-d" | "-p" => {
                it.next();
            }
            f if file.is_none() => file = Some(f),
            _ => return Err("screendump: too many arguments".into()),
        }
    }
    file.map(|f| (f, format))
        .ok_or_else(|| "Parameter 'filename' is missing".into())
}

fn registers(states: &[VcpuState], all: bool, cpu: usize) -> String {
    let mut out = String::new();
    for (index, state) in states.iter().enumerate() {
        if all || index == cpu {
            // QEMU 7.2 heads each CPU's dump with its index, with or without -a.
            let _ = writeln!(out, "\nCPU#{index}");
            dump(&mut out, state);
        }
    }
    out
}

/// QEMU's description after a segment's registers (`cpu_x86_dump_seg_cache`): privilege and
/// kind, in protected mode for present segments only.
fn seg_description(seg: &kvm_segment, protected: bool, long: bool) -> String {
    if !protected || seg.present == 0 {
        return String::new();
    }
    let t = seg.type_;
    let bit = |b: u8, c: char| if t & (1 << b) != 0 { c } else { '-' };
    let kind = if seg.s != 0 {
        let (name, first, second) = if t & 8 != 0 {
            let name = if seg.l != 0 {
                "CS64"
            } else if seg.db != 0 {
                "CS32"
            } else {
                "CS16"
            };
            (name, bit(2, 'C'), bit(1, 'R'))
        } else {
            let name = if seg.db != 0 || long { "DS  " } else { "DS16" };
            (name, bit(2, 'E'), bit(1, 'W'))
        };
        format!("{name} [{first}{second}{}]", bit(0, 'A'))
    } else {
        const LEGACY: [&str; 16] = [
            "Reserved",
            "TSS16-avl",
            "LDT",
            "TSS16-busy",
            "CallGate16",
            "TaskGate",
            "IntGate16",
            "TrapGate16",
            "Reserved",
            "TSS32-avl",
            "Reserved",
            "TSS32-busy",
            "CallGate32",
            "Reserved",
            "IntGate32",
            "TrapGate32",
        ];
        const LONG: [&str; 16] = [
            "<hiword>",
            "Reserved",
            "LDT",
            "Reserved",
            "Reserved",
            "Reserved",
            "Reserved",
            "Reserved",
            "Reserved",
            "TSS64-avl",
            "Reserved",
            "TSS64-busy",
            "CallGate64",
            "Reserved",
            "IntGate64",
            "TrapGate64",
        ];
        let names = if long { &LONG } else { &LEGACY };
        names[usize::from(t & 0xf)].to_string()
    };
    format!(" DPL={} {kind}", seg.dpl)
}

/// The flags column QEMU keeps per segment: the descriptor's high dword attribute bits.
fn seg_flags(s: &kvm_segment) -> u32 {
    u32::from(s.type_) << 8
        | u32::from(s.s) << 12
        | u32::from(s.dpl) << 13
        | u32::from(s.present) << 15
        | u32::from(s.avl) << 20
        | u32::from(s.l) << 21
        | u32::from(s.db) << 22
        | u32::from(s.g) << 23
}

/// EFLAGS as QEMU shows them: D O S Z A P C, or '-'.
fn eflags_letters(f: u64) -> String {
    [
        (10, 'D'),
        (11, 'O'),
        (7, 'S'),
        (6, 'Z'),
        (4, 'A'),
        (2, 'P'),
        (0, 'C'),
    ]
    .iter()
    .map(|&(bit, c)| if f & (1 << bit) != 0 { c } else { '-' })
    .collect()
}

fn dump(out: &mut String, st: &VcpuState) {
    let r = &st.regs;
    let s = &st.sregs;
    let long = s.efer & EFER_LMA != 0;
    let cpl = s.cs.dpl;
    if long {
        let gprs = [
            ("RAX", r.rax),
            ("RBX", r.rbx),
            ("RCX", r.rcx),
            ("RDX", r.rdx),
            ("RSI", r.rsi),
            ("RDI", r.rdi),
            ("RBP", r.rbp),
            ("RSP", r.rsp),
            ("R8 ", r.r8),
            ("R9 ", r.r9),
            ("R10", r.r10),
            ("R11", r.r11),
            ("R12", r.r12),
            ("R13", r.r13),
            ("R14", r.r14),
            ("R15", r.r15),
        ];
        for line in gprs.chunks(4) {
            let cells: Vec<String> = line.iter().map(|(n, v)| format!("{n}={v:016x}")).collect();
            let _ = writeln!(out, "{}", cells.join(" "));
        }
        let _ = writeln!(
            out,
            "RIP={:016x} RFL={:08x} [{}] CPL={cpl} II=0 A20=1 SMM=0 HLT=0",
            r.rip,
            r.rflags as u32,
            eflags_letters(r.rflags)
        );
    } else {
        let gprs = [
            ("EAX", r.rax),
            ("EBX", r.rbx),
            ("ECX", r.rcx),
            ("EDX", r.rdx),
            ("ESI", r.rsi),
            ("EDI", r.rdi),
            ("EBP", r.rbp),
            ("ESP", r.rsp),
        ];
        for line in gprs.chunks(4) {
            let cells: Vec<String> = line
                .iter()
                .map(|(n, v)| format!("{n}={:08x}", *v as u32))
                .collect();
            let _ = writeln!(out, "{}", cells.join(" "));
        }
        let _ = writeln!(
            out,
            "EIP={:08x} EFL={:08x} [{}] CPL={cpl} II=0 A20=1 SMM=0 HLT=0",
            r.rip as u32,
            r.rflags as u32,
            eflags_letters(r.rflags)
        );
    }
    let segs = [
        ("ES ", &s.es),
        ("CS ", &s.cs),
        ("SS ", &s.ss),
        ("DS ", &s.ds),
        ("FS ", &s.fs),
        ("GS ", &s.gs),
        ("LDT", &s.ldt),
        ("TR ", &s.tr),
    ];
    let protected = s.cr0 & 1 != 0;
    for (name, seg) in segs {
        let base = if long {
            format!("{:016x}", seg.base)
        } else {
            format!("{:08x}", seg.base as u32)
        };
        let _ = writeln!(
            out,
            "{name}={:04x} {base} {:08x} {:08x}{}",
            seg.selector,
            seg.limit,
            seg_flags(seg),
            seg_description(seg, protected, long)
        );
    }
    let _ = if long {
        writeln!(out, "GDT=     {:016x} {:08x}", s.gdt.base, s.gdt.limit)
            .and_then(|()| writeln!(out, "IDT=     {:016x} {:08x}", s.idt.base, s.idt.limit))
            .and_then(|()| {
                writeln!(
                    out,
                    "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x}",
                    s.cr0 as u32, s.cr2, s.cr3, s.cr4 as u32
                )
            })
    } else {
        writeln!(
            out,
            "GDT=     {:08x} {:08x}",
            s.gdt.base as u32, s.gdt.limit
        )
        .and_then(|()| {
            writeln!(
                out,
                "IDT=     {:08x} {:08x}",
                s.idt.base as u32, s.idt.limit
            )
        })
        .and_then(|()| {
            writeln!(
                out,
                "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}",
                s.cr0 as u32, s.cr2 as u32, s.cr3 as u32, s.cr4 as u32
            )
        })
    };
    let _ = writeln!(out, "EFER={:016x}", s.efer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run3(
        line: &str,
        cpu: usize,
        states: impl FnOnce() -> Result<Vec<VcpuState>, String>,
    ) -> String {
        run(line, cpu, states, |_, _| panic!("no screendump asked"))
    }

    #[test]
    fn screendump_takes_qemus_arguments() {
        let never = || -> Result<Vec<VcpuState>, String> { panic!("not asked") };
        let mut got = None;
        let out = run("screendump -f png /tmp/x.png", 0, never, |f, fmt| {
            got = Some((f.to_string(), fmt));
            Ok(())
        });
        assert_eq!(out, "");
        assert_eq!(got, Some(("/tmp/x.png".into(), ImageFormat::Png)));
        let out = run("screendump /tmp/x.ppm", 0, never, |_, fmt| {
            assert_eq!(fmt, ImageFormat::Ppm);
            Err("There is no console to take a screendump from.".into())
        });
        assert_eq!(
            out,
            "Error: There is no console to take a screendump from.\r\n"
        );
        let out = run("screendump", 0, never, |_, _| panic!("not asked"));
        assert_eq!(out, "Parameter 'filename' is missing\r\n");
    }
    use rvmm_hypervisor::{kvm_regs, kvm_sregs};

    fn state(long: bool) -> VcpuState {
        let sregs = kvm_sregs {
            cs: kvm_segment {
                selector: 0x10,
                limit: 0xffff_ffff,
                type_: 0xb,
                present: 1,
                s: 1,
                l: u8::from(long),
                db: u8::from(!long),
                g: 1,
                ..Default::default()
            },
            efer: if long { 0x500 } else { 0 },
            cr0: 0x8000_0011,
            ..Default::default()
        };
        VcpuState {
            regs: kvm_regs {
                rax: 0x1234,
                rip: 0x10_0000,
                rflags: 0x46,
                r15: 0xffff_ffff_ffff_ffff,
                ..Default::default()
            },
            sregs,
        }
    }

    #[test]
    fn info_registers_in_qemus_layout() {
        let out = run3("info registers", 0, || Ok(vec![state(true), state(false)]));
        let lines: Vec<&str> = out.split("\r\n").skip(2).collect();
        assert!(out.starts_with("\r\nCPU#0\r\n"), "{out}");
        assert_eq!(
            lines[0],
            "RAX=0000000000001234 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000"
        );
        assert!(lines[3].ends_with("R15=ffffffffffffffff"), "{out}");
        assert_eq!(
            lines[4],
            "RIP=0000000000100000 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0"
        );
        assert_eq!(
            lines[6],
            "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]"
        );
        assert!(out.contains("EFER=0000000000000500\r\n"));
        assert!(!out.contains("CPU#1"), "one CPU without -a");
        let second = run3("info registers", 1, || Ok(vec![state(true), state(false)]));
        assert!(second.starts_with("\r\nCPU#1\r\nEAX=00001234"), "{second}");
        assert!(
            second.contains("CS =0010 00000000 ffffffff 00c09b00 DPL=0 CS32 [-RA]\r\n"),
            "{second}"
        );

        let all = run3("info registers -a", 0, || {
            Ok(vec![state(true), state(false)])
        });
        assert!(all.starts_with("\r\nCPU#0\r\nRAX="), "{all}");
        assert!(
            all.contains("\r\nCPU#1\r\nEAX=00001234 EBX=00000000"),
            "{all}"
        );
        assert!(all.contains("EIP=00100000 EFL=00000046"), "{all}");
    }

    #[test]
    fn other_commands_answer_like_hmp() {
        let never = || -> Result<Vec<VcpuState>, String> { panic!("not asked") };
        assert_eq!(run3("frob x", 0, never), "unknown command: 'frob'\r\n");
        assert!(run3("info mtree", 0, never)
            .starts_with("info: unknown or unsupported command 'mtree'"));
        assert_eq!(run3("  ", 0, never), "");
        assert_eq!(
            run3(
                "info registers",
                0,
                || Err("The VM is shutting down".into())
            ),
            "The VM is shutting down\r\n"
        );
    }
}
