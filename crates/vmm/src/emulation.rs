//! Recovering from instructions the host's in-kernel emulator refuses (KVM_INTERNAL_ERROR_EMULATION).
//!
//! On hosts whose KVM emulates guest kernel mode (see docs/EMULATED-KVM.md) `int3` cannot be
//! emulated; rvmm completes it in user space by advancing RIP and injecting #BP, which is what the
//! instruction would have done. Anything else stops the VM with a report.

use crate::vcpu::ExitCounters;
use rvmm_hypervisor::{EmulationFailure, Vcpu};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const INT3: u8 = 0xcc;
const BP_VECTOR: u8 = 3;

/// Handle one emulation failure, or return the report that stops the VM.
pub fn recover(
    vcpu: &Vcpu,
    mem: &GuestMemoryMmap,
    failure: EmulationFailure,
    counters: &ExitCounters,
) -> Result<(), String> {
    let regs = vcpu.regs().map_err(|e| e.to_string())?;
    let mut insn = [0u8; 15];
    let len = if failure.insn_len > 0 {
        let b = failure.bytes();
        insn[..b.len()].copy_from_slice(b);
        b.len()
    } else {
        read_insn(vcpu, mem, regs.rip, &mut insn)
    };
    let bytes = &insn[..len];
    if bytes.first() == Some(&INT3) {
        let mut regs = regs;
        regs.rip = regs.rip.wrapping_add(1);
        vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
        vcpu.inject_exception(BP_VECTOR)
            .map_err(|e| e.to_string())?;
        let n = counters.int3_recoveries.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            vcpu = vcpu.id(),
            rip = regs.rip - 1,
            count = n,
            "int3 not emulated by KVM: injected #BP"
        );
        return Ok(());
    }
    Err(format!(
        "KVM could not emulate the instruction at RIP {:#x} (bytes: {}); the VM is stopped\n{}",
        regs.rip,
        hex(bytes),
        dump_state(vcpu)
    ))
}

/// Read up to 15 bytes at CS:RIP through the guest's page tables.
fn read_insn(vcpu: &Vcpu, mem: &GuestMemoryMmap, rip: u64, out: &mut [u8; 15]) -> usize {
    let Ok(sregs) = vcpu.sregs() else { return 0 };
    let linear = sregs.cs.base.wrapping_add(rip);
    let Some(phys) = vcpu.translate(linear) else {
        return 0;
    };
    // Stop at the end of the page: the next one may map elsewhere.
    let n = (0x1000 - (phys & 0xfff)).min(15) as usize;
    mem.read_slice(&mut out[..n], GuestAddress(phys))
        .map(|_| n)
        .unwrap_or(0)
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
}
