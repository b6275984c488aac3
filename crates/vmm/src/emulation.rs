//! Recovering from instructions the host's in-kernel emulator refuses (KVM_INTERNAL_ERROR_EMULATION).
//!
//! On hosts whose KVM emulates guest kernel mode (see docs/EMULATED-KVM.md) `int3` cannot be
//! emulated; rvmm completes it in user space by advancing RIP and injecting #BP, which is what the
//! instruction would have done. KVM's emulator also handles `iret` only in real mode, so a
//! same-privilege protected-mode or long-mode `iret` (the return from that #BP handler, among others)
//! is completed here too. Anything else stops the VM with a report.

use crate::vcpu::ExitCounters;
use rvmm_hypervisor::{kvm_regs, kvm_sregs, EmulationFailure, Vcpu};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const INT3: u8 = 0xcc;
const IRET: u8 = 0xcf;
const REX_W: u8 = 0x48;
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
    let iret_width = match bytes {
        [IRET, ..] => Some(4),
        [REX_W, IRET, ..] => Some(8),
        _ => None,
    };
    if let Some(width) = iret_width {
        match emulate_iret(vcpu, mem, regs, width) {
            Ok(()) => {
                let n = counters.iret_recoveries.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(vcpu = vcpu.id(), count = n, "iret not emulated by KVM: completed in user space");
                return Ok(());
            }
            Err(why) => {
                return Err(format!(
                    "KVM could not emulate the iret at RIP {:#x} and rvmm cannot either ({why}); the VM is stopped\n{}",
                    regs.rip,
                    dump_state(vcpu)
                ))
            }
        }
    }
    Err(format!(
        "KVM could not emulate the instruction at RIP {:#x} (bytes: {}); the VM is stopped\n{}",
        regs.rip,
        hex(bytes),
        dump_state(vcpu)
    ))
}

/// Read `out.len()` bytes at a guest linear address, page by page through the guest's page tables.
fn read_linear(
    vcpu: &Vcpu,
    mem: &GuestMemoryMmap,
    linear: u64,
    out: &mut [u8],
) -> Result<(), String> {
    let mut done = 0;
    while done < out.len() {
        let addr = linear.wrapping_add(done as u64);
        let phys = vcpu
            .translate(addr)
            .ok_or_else(|| format!("linear address {addr:#x} is not mapped"))?;
        let n = ((0x1000 - (phys & 0xfff)) as usize).min(out.len() - done);
        mem.read_slice(&mut out[done..done + n], GuestAddress(phys))
            .map_err(|_| format!("guest physical address {phys:#x} is not RAM"))?;
        done += n;
    }
    Ok(())
}

/// Complete an `iret` (operand `width` 4) or `iretq` (width 8) that returns to the same privilege
/// level, as the SDM's IRET pseudo-code does for that case (vol. 2A, "IRET/IRETD/IRETQ"):
/// pop RIP, CS, RFLAGS (and in 64-bit mode RSP, SS). Returns to another ring, to virtual-8086 mode
/// and task returns (NT set) are refused.
fn emulate_iret(
    vcpu: &Vcpu,
    mem: &GuestMemoryMmap,
    mut regs: kvm_regs,
    width: usize,
) -> Result<(), String> {
    const NT: u64 = 1 << 14;
    const VM: u64 = 1 << 17;
    let mut sregs: kvm_sregs = vcpu.sregs().map_err(|e| e.to_string())?;
    if sregs.cr0 & 1 == 0 {
        return Err("real mode iret should have been emulated by KVM".into());
    }
    if regs.rflags & NT != 0 {
        return Err("task return (EFLAGS.NT set)".into());
    }
    let long = sregs.cs.l == 1;
    let frame_len = if long { 5 * width } else { 3 * width };
    let sp = if long || sregs.ss.db == 1 {
        regs.rsp
    } else {
        regs.rsp & 0xffff
    };
    let sp = if long { sp } else { sp & 0xffff_ffff };
    let mut frame = [0u8; 40];
    read_linear(
        vcpu,
        mem,
        sregs.ss.base.wrapping_add(sp),
        &mut frame[..frame_len],
    )?;
    let word = |i: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(&frame[i * width..(i + 1) * width]);
        u64::from_le_bytes(b)
    };
    let (rip, cs, flags) = (word(0), word(1) as u16, word(2));
    let cpl = sregs.cs.selector & 3;
    if cs & 3 != cpl {
        return Err(format!("return to ring {} from ring {cpl}", cs & 3));
    }
    if flags & VM != 0 {
        return Err("return to virtual-8086 mode".into());
    }
    if cs != sregs.cs.selector {
        sregs.cs = load_code_segment(vcpu, mem, &sregs, cs)?;
    }
    // At CPL 0 every flag a return may restore is restored; bit 1 always reads as 1 (SDM vol. 1, 3.4.3).
    const RESTORABLE: u64 = 0x003f_7fd5;
    let restorable = if cpl == 0 {
        RESTORABLE
    } else {
        RESTORABLE & !(3 << 12)
    };
    regs.rflags = (regs.rflags & !restorable) | (flags & restorable) | 0x2;
    regs.rip = rip;
    if long {
        regs.rsp = word(3);
        let ss = word(4) as u16;
        sregs.ss.selector = ss;
    } else {
        let new_sp = sp.wrapping_add(frame_len as u64);
        regs.rsp = if sregs.ss.db == 1 {
            new_sp & 0xffff_ffff
        } else {
            (regs.rsp & !0xffff) | (new_sp & 0xffff)
        };
    }
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    vcpu.set_regs(&regs).map_err(|e| e.to_string())
}

/// Load a code segment descriptor for `selector` from the GDT (LDT selectors are refused).
fn load_code_segment(
    vcpu: &Vcpu,
    mem: &GuestMemoryMmap,
    sregs: &kvm_sregs,
    selector: u16,
) -> Result<kvm_bindings::kvm_segment, String> {
    if selector & 4 != 0 {
        return Err(format!("CS {selector:#x} is an LDT selector"));
    }
    let index = u64::from(selector & !7);
    if selector & !3 == 0 || index + 7 > u64::from(sregs.gdt.limit) {
        return Err(format!("CS {selector:#x} is outside the GDT"));
    }
    let mut raw = [0u8; 8];
    read_linear(vcpu, mem, sregs.gdt.base.wrapping_add(index), &mut raw)?;
    let d = u64::from_le_bytes(raw);
    let access = ((d >> 40) & 0xff) as u8;
    let flags = ((d >> 52) & 0xf) as u8;
    let present = access >> 7;
    let is_code = access & 0x18 == 0x18;
    if present == 0 || !is_code {
        return Err(format!("CS {selector:#x} is not a present code segment"));
    }
    let limit_raw = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = (flags >> 3) & 1;
    Ok(kvm_bindings::kvm_segment {
        base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (limit_raw << 12) | 0xfff
        } else {
            limit_raw
        },
        selector,
        type_: access & 0xf,
        present,
        dpl: (access >> 5) & 3,
        db: (flags >> 2) & 1,
        s: 1,
        l: (flags >> 1) & 1,
        g,
        avl: flags & 1,
        unusable: 0,
        padding: 0,
    })
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
