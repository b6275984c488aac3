//! `iret` that returns to the same privilege level. KVM's emulator handles `iret` only in real
//! mode; the return from an injected #BP handler (and others) comes here.

use super::guest::{Fault, Guest, Result};
use iced_x86::{Instruction, Mnemonic};
use kvm_bindings::kvm_segment;

/// Complete an `iret` (`iretd`, `iretq`) as the SDM's IRET pseudo-code does for a return to the
/// same privilege level (vol. 2A, "IRET/IRETD/IRETQ"): pop RIP, CS, RFLAGS (and in 64-bit mode
/// RSP, SS). Returns to another ring, to virtual-8086 mode and task returns (NT set) are refused.
pub fn iret(g: &mut Guest, insn: &Instruction) -> Result<()> {
    const NT: u64 = 1 << 14;
    const VM: u64 = 1 << 17;
    let width = match insn.mnemonic() {
        Mnemonic::Iretq => 8,
        Mnemonic::Iretd => 4,
        _ => 2,
    };
    if g.sregs.cr0 & 1 == 0 {
        return Err(Fault::Unsupported(
            "real mode iret should have been emulated by KVM".into(),
        ));
    }
    if width == 2 {
        return Err(Fault::Unsupported("16-bit iret in protected mode".into()));
    }
    if g.regs.rflags & NT != 0 {
        return Err(Fault::Unsupported("task return (EFLAGS.NT set)".into()));
    }
    let long = g.bitness() == 64;
    let frame_len = if long { 5 * width } else { 3 * width };
    let sp = if long {
        g.regs.rsp
    } else if g.sregs.ss.db == 1 {
        g.regs.rsp & 0xffff_ffff
    } else {
        g.regs.rsp & 0xffff
    };
    let mut frame = [0u8; 40];
    let ss_base = if long { 0 } else { g.sregs.ss.base };
    g.read_linear(ss_base.wrapping_add(sp), &mut frame[..frame_len])?;
    let word = |i: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(&frame[i * width..(i + 1) * width]);
        u64::from_le_bytes(b)
    };
    let (rip, cs, flags) = (word(0), word(1) as u16, word(2));
    let cpl = g.sregs.cs.selector & 3;
    if cs & 3 != cpl {
        return Err(Fault::Unsupported(format!(
            "return to ring {} from ring {cpl}",
            cs & 3
        )));
    }
    if flags & VM != 0 {
        return Err(Fault::Unsupported("return to virtual-8086 mode".into()));
    }
    if cs != g.sregs.cs.selector {
        let seg = load_code_segment(g, cs)?;
        g.sregs_mut().cs = seg;
    }
    // At CPL 0 every flag a return may restore is restored; bit 1 always reads as 1 (SDM vol. 1, 3.4.3).
    const RESTORABLE: u64 = 0x003f_7fd5;
    let restorable = if cpl == 0 {
        RESTORABLE
    } else {
        RESTORABLE & !(3 << 12)
    };
    let ss_db = g.sregs.ss.db;
    let regs = g.regs_mut();
    regs.rflags = (regs.rflags & !restorable) | (flags & restorable) | 0x2;
    regs.rip = rip;
    if long {
        regs.rsp = word(3);
        let ss = word(4) as u16;
        g.sregs_mut().ss.selector = ss;
    } else {
        let new_sp = sp.wrapping_add(frame_len as u64);
        regs.rsp = if ss_db == 1 {
            new_sp & 0xffff_ffff
        } else {
            (regs.rsp & !0xffff) | (new_sp & 0xffff)
        };
    }
    Ok(())
}

/// Load a code segment descriptor for `selector` from the GDT (LDT selectors are refused).
fn load_code_segment(g: &mut Guest, selector: u16) -> Result<kvm_segment> {
    if selector & 4 != 0 {
        return Err(Fault::Unsupported(format!(
            "CS {selector:#x} is an LDT selector"
        )));
    }
    let index = u64::from(selector & !7);
    if selector & !3 == 0 || index + 7 > u64::from(g.sregs.gdt.limit) {
        return Err(Fault::Unsupported(format!(
            "CS {selector:#x} is outside the GDT"
        )));
    }
    let mut raw = [0u8; 8];
    g.read_linear(g.sregs.gdt.base.wrapping_add(index), &mut raw)?;
    let d = u64::from_le_bytes(raw);
    let access = ((d >> 40) & 0xff) as u8;
    let flags = ((d >> 52) & 0xf) as u8;
    let present = access >> 7;
    let is_code = access & 0x18 == 0x18;
    if present == 0 || !is_code {
        return Err(Fault::Unsupported(format!(
            "CS {selector:#x} is not a present code segment"
        )));
    }
    let limit_raw = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let gran = (flags >> 3) & 1;
    Ok(kvm_segment {
        base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
        limit: if gran == 1 {
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
        g: gran,
        avl: flags & 1,
        unusable: 0,
        padding: 0,
    })
}
