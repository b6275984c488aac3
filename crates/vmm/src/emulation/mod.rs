//! Completing instructions the host's in-kernel emulator refuses (KVM_INTERNAL_ERROR_EMULATION).
//!
//! On hosts whose KVM emulates guest kernel mode (docs/EMULATED-KVM.md) some instructions cannot be
//! emulated by the host kernel. rvmm decodes the failing instruction with iced-x86 and, for the
//! ones a Linux boot needs, does what the CPU would have done (SDM vol. 2 for each instruction):
//! register and memory operands through the guest's own page tables, flags, faults injected
//! instead of completing. Each one is counted and logged at debug level. Anything else stops the
//! VM with a report naming the instruction.

mod guest;
mod insns;
mod iret;

use guest::{Fault, Guest};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic};
use rvmm_hypervisor::{EmulationFailure, HvError, Vcpu};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The instructions rvmm completes, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    Int3,
    Iret,
    Popcnt,
    Fwait,
    Ldmxcsr,
    Stmxcsr,
    Clac,
    Stac,
}

impl Emulated {
    pub const ALL: [Emulated; 8] = [
        Emulated::Int3,
        Emulated::Iret,
        Emulated::Popcnt,
        Emulated::Fwait,
        Emulated::Ldmxcsr,
        Emulated::Stmxcsr,
        Emulated::Clac,
        Emulated::Stac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Emulated::Int3 => "int3",
            Emulated::Iret => "iret",
            Emulated::Popcnt => "popcnt",
            Emulated::Fwait => "fwait",
            Emulated::Ldmxcsr => "ldmxcsr",
            Emulated::Stmxcsr => "stmxcsr",
            Emulated::Clac => "clac",
            Emulated::Stac => "stac",
        }
    }

    fn of(mnemonic: Mnemonic) -> Option<Self> {
        Some(match mnemonic {
            Mnemonic::Int3 => Emulated::Int3,
            Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => Emulated::Iret,
            Mnemonic::Popcnt => Emulated::Popcnt,
            Mnemonic::Wait => Emulated::Fwait,
            Mnemonic::Ldmxcsr => Emulated::Ldmxcsr,
            Mnemonic::Stmxcsr => Emulated::Stmxcsr,
            Mnemonic::Clac => Emulated::Clac,
            Mnemonic::Stac => Emulated::Stac,
            _ => return None,
        })
    }
}

/// How many times each instruction was completed in user space, and how many of those raised
/// a fault in the guest instead.
#[derive(Default)]
pub struct EmulationCounters {
    done: [AtomicU64; Emulated::ALL.len()],
    faults: AtomicU64,
}

impl EmulationCounters {
    fn bump(&self, what: Emulated) -> u64 {
        self.done[what as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn get(&self, what: Emulated) -> u64 {
        self.done[what as usize].load(Ordering::Relaxed)
    }

    /// "popcnt=840 fwait=35 ..." for the instructions seen at least once.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for what in Emulated::ALL {
            let n = self.get(what);
            if n > 0 {
                let _ = write!(
                    s,
                    "{}{}={n}",
                    if s.is_empty() { "" } else { " " },
                    what.name()
                );
            }
        }
        let faults = self.faults.load(Ordering::Relaxed);
        if faults > 0 {
            let _ = write!(s, " faults={faults}");
        }
        s
    }
}

/// Why an instruction KVM could not emulate stops the VM. The reports that name the instruction
/// end with the vCPU's registers (as [`dump_state`] prints them).
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error("cannot read the vCPU's registers after KVM failed to emulate an instruction: {0}")]
    ReadState(#[source] HvError),
    #[error(
        "KVM could not emulate the instruction at RIP {rip:#x} ({insn}; bytes: {}) and rvmm \
         does not either; the VM is stopped\n{registers}",
        hex(bytes)
    )]
    NotHandled {
        rip: u64,
        /// The instruction in Intel syntax.
        insn: String,
        bytes: Vec<u8>,
        registers: String,
    },
    #[error(
        "KVM could not emulate the instruction at RIP {rip:#x} ({insn}; bytes: {}) and rvmm \
         cannot either ({why}); the VM is stopped\n{registers}",
        hex(bytes)
    )]
    Unsupported {
        rip: u64,
        insn: String,
        bytes: Vec<u8>,
        why: String,
        registers: String,
    },
    #[error("completing {insn} at RIP {rip:#x}: {source}")]
    Vcpu {
        rip: u64,
        insn: String,
        #[source]
        source: HvError,
    },
}

/// Handle one emulation failure, or return the report that stops the VM.
pub fn recover(
    vcpu: &Vcpu,
    mem: &GuestMemoryMmap,
    failure: EmulationFailure,
    counters: &EmulationCounters,
) -> Result<(), EmulationError> {
    let mut g = Guest::new(vcpu, mem).map_err(EmulationError::ReadState)?;
    let mut raw = [0u8; 15];
    let len = if failure.insn_len > 0 {
        let b = failure.bytes();
        raw[..b.len()].copy_from_slice(b);
        b.len()
    } else {
        read_insn(&g, &mut raw)
    };
    let bytes = &raw[..len];
    let mut decoder = Decoder::with_ip(g.bitness(), bytes, g.regs.rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    let what = if insn.is_invalid() {
        None
    } else {
        Emulated::of(insn.mnemonic())
    };
    let rip = g.regs.rip;
    let Some(what) = what else {
        return Err(EmulationError::NotHandled {
            rip,
            insn: describe(&insn),
            bytes: bytes.to_vec(),
            registers: dump_state(vcpu),
        });
    };
    let outcome = match what {
        Emulated::Int3 => insns::int3(&mut g, &insn),
        Emulated::Iret => iret::iret(&mut g, &insn),
        Emulated::Popcnt => insns::popcnt(&mut g, &insn),
        Emulated::Fwait => insns::fwait(&mut g, &insn),
        Emulated::Ldmxcsr => insns::ldmxcsr(&mut g, &insn),
        Emulated::Stmxcsr => insns::stmxcsr(&mut g, &insn),
        Emulated::Clac => insns::set_ac(&mut g, &insn, false),
        Emulated::Stac => insns::set_ac(&mut g, &insn, true),
    };
    let vcpu_err = |source| EmulationError::Vcpu {
        rip,
        insn: describe(&insn),
        source,
    };
    let n = counters.bump(what);
    match outcome {
        Ok(()) => {
            g.commit().map_err(vcpu_err)?;
            tracing::debug!(
                vcpu = vcpu.id(),
                rip,
                insn = %describe(&insn),
                count = n,
                "not emulated by KVM: completed in user space"
            );
            Ok(())
        }
        Err(Fault::Exception { vector, error_code }) => {
            counters.faults.fetch_add(1, Ordering::Relaxed);
            g.commit().map_err(vcpu_err)?;
            vcpu.inject_exception_with_code(vector, error_code)
                .map_err(vcpu_err)?;
            tracing::debug!(
                vcpu = vcpu.id(),
                rip,
                insn = %describe(&insn),
                vector,
                ?error_code,
                "not emulated by KVM: faults, exception injected"
            );
            Ok(())
        }
        Err(Fault::Vcpu(source)) => Err(vcpu_err(source)),
        Err(Fault::Unsupported(why)) => Err(EmulationError::Unsupported {
            rip,
            insn: describe(&insn),
            bytes: bytes.to_vec(),
            why,
            registers: dump_state(vcpu),
        }),
    }
}

/// Read up to 15 bytes at CS:RIP through the guest's page tables, stopping at an unmapped page.
fn read_insn(g: &Guest, out: &mut [u8; 15]) -> usize {
    let linear = g.sregs.cs.base.wrapping_add(g.regs.rip);
    let mut n = 0;
    while n < out.len() {
        let Some(phys) = g.vcpu.translate(linear.wrapping_add(n as u64)) else {
            break;
        };
        let chunk = ((0x1000 - (phys & 0xfff)) as usize).min(out.len() - n);
        if g.mem
            .read_slice(&mut out[n..n + chunk], GuestAddress(phys))
            .is_err()
        {
            break;
        }
        n += chunk;
    }
    n
}

/// The instruction in Intel syntax, for logs and reports.
fn describe(insn: &Instruction) -> String {
    if insn.is_invalid() {
        return "not a valid instruction".into();
    }
    let mut s = String::new();
    IntelFormatter::new().format(insn, &mut s);
    s
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "unavailable".into();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A register dump for fatal reports.
pub fn dump_state(vcpu: &Vcpu) -> String {
    let mut s = String::new();
    match vcpu.regs() {
        Ok(r) => {
            let _ = writeln!(
                s,
                "RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\nRSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}\nR8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\nR12={:016x} R13={:016x} R14={:016x} R15={:016x}\nRIP={:016x} RFLAGS={:08x}",
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
                r.r14, r.r15, r.rip, r.rflags
            );
        }
        Err(e) => {
            let _ = writeln!(s, "(registers unavailable: {e})");
        }
    }
    if let Ok(sr) = vcpu.sregs() {
        let _ = write!(
            s,
            "CS={:04x} base={:x} l={} db={} dpl={}  SS={:04x}  CR0={:x} CR2={:x} CR3={:x} CR4={:x} EFER={:x}",
            sr.cs.selector, sr.cs.base, sr.cs.l, sr.cs.db, sr.cs.dpl, sr.ss.selector, sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_formats_bytes() {
        assert_eq!(hex(&[0x0f, 0xae, 0x20]), "0f ae 20");
        assert_eq!(hex(&[]), "unavailable");
    }

    fn decode(bitness: u32, bytes: &[u8]) -> Instruction {
        Decoder::with_ip(bitness, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn recognises_the_handled_instructions() {
        let cases: [(u32, &[u8], Option<Emulated>); 11] = [
            (64, &[0xcc], Some(Emulated::Int3)),
            (32, &[0xcf], Some(Emulated::Iret)),
            (64, &[0x48, 0xcf], Some(Emulated::Iret)),
            (64, &[0xf3, 0x48, 0x0f, 0xb8, 0xc7], Some(Emulated::Popcnt)),
            (64, &[0x9b], Some(Emulated::Fwait)),
            (64, &[0x0f, 0xae, 0x17], Some(Emulated::Ldmxcsr)),
            (32, &[0x0f, 0xae, 0x1f], Some(Emulated::Stmxcsr)),
            (64, &[0x0f, 0x01, 0xca], Some(Emulated::Clac)),
            (64, &[0x0f, 0x01, 0xcb], Some(Emulated::Stac)),
            // xsave (%rdi): not handled.
            (64, &[0x0f, 0xae, 0x27], None),
            // vldmxcsr is a different instruction (VEX): not handled.
            (64, &[0xc5, 0xf8, 0xae, 0x17], None),
        ];
        for (bitness, bytes, want) in cases {
            let insn = decode(bitness, bytes);
            assert_eq!(Emulated::of(insn.mnemonic()), want, "{bytes:02x?}");
            assert_eq!(insn.len(), bytes.len(), "{bytes:02x?}");
        }
        assert_eq!(
            describe(&decode(64, &[0xf3, 0x48, 0x0f, 0xb8, 0xc7])),
            "popcnt rax,rdi"
        );
    }

    #[test]
    fn reports_name_the_instruction_and_end_with_the_registers() {
        let e = EmulationError::Unsupported {
            rip: 0x1000,
            insn: "iretd".into(),
            bytes: vec![0xcf],
            why: "task return (EFLAGS.NT set)".into(),
            registers: "RAX=0".into(),
        };
        assert_eq!(
            e.to_string(),
            "KVM could not emulate the instruction at RIP 0x1000 (iretd; bytes: cf) and rvmm cannot \
             either (task return (EFLAGS.NT set)); the VM is stopped\nRAX=0"
        );
        let e = EmulationError::NotHandled {
            rip: 0x2000,
            insn: describe(&decode(64, &[0x0f, 0xae, 0x27])),
            bytes: vec![],
            registers: String::new(),
        };
        assert!(
            e.to_string()
                .contains("(xsave [rdi]; bytes: unavailable) and rvmm does not either"),
            "{e}"
        );
    }

    #[test]
    fn counters_summarise() {
        let c = EmulationCounters::default();
        assert_eq!(c.summary(), "");
        c.bump(Emulated::Popcnt);
        c.bump(Emulated::Popcnt);
        c.bump(Emulated::Fwait);
        assert_eq!(c.summary(), "popcnt=2 fwait=1");
        assert_eq!(c.get(Emulated::Popcnt), 2);
    }
}
