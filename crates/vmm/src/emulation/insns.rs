//! The instructions a stock Linux boot needs completed in user space, each as its SDM vol. 2 page
//! describes it (operation, flags, and the faults checked, in the order the CPU checks them).

use super::guest::{Fault, Guest, Result, MF, NM, UD};
use iced_x86::Instruction;

const BP: u8 = 3;

const CF: u64 = 1 << 0;
const PF_FLAG: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const AC: u64 = 1 << 18;

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;

/// x87 status word: exception summary (SDM vol. 1, 8.1.3).
const FSW_ES: u16 = 1 << 7;
/// MXCSR bits that may be set: every CPU with DAZ (all x86_64 CPUs KVM runs on) reports 0xffff as
/// MXCSR_MASK (SDM vol. 1, 11.6.6).
const MXCSR_MASK: u32 = 0xffff;

/// `int3`: a trap, so RIP moves past it before #BP is delivered (SDM vol. 2A, "INT n/INTO/INT3").
pub fn int3(g: &mut Guest, insn: &Instruction) -> Result<()> {
    g.advance(insn);
    g.vcpu.inject_exception(BP).map_err(Fault::Vcpu)
}

/// `popcnt r, r/m`: the number of set bits; ZF = (source == 0), OF SF AF CF PF cleared.
pub fn popcnt(g: &mut Guest, insn: &Instruction) -> Result<()> {
    let dst = insn.op0_register();
    let size = dst.size();
    let src = g.read_operand(insn, 1, size)?;
    g.set_gpr(dst, u64::from(src.count_ones()))?;
    let regs = g.regs_mut();
    regs.rflags &= !(OF | SF | ZF | AF | CF | PF_FLAG);
    if src == 0 {
        regs.rflags |= ZF;
    }
    g.advance(insn);
    Ok(())
}

/// `fwait`: #NM when CR0.MP and CR0.TS are both set; #MF when an unmasked x87 exception is
/// pending and CR0.NE selects native reporting; otherwise nothing.
pub fn fwait(g: &mut Guest, insn: &Instruction) -> Result<()> {
    let cr0 = g.sregs.cr0;
    if cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
        return Err(Fault::exception(NM));
    }
    let fpu = g.vcpu.fpu().map_err(Fault::Vcpu)?;
    if fpu.fsw & FSW_ES != 0 && cr0 & CR0_NE != 0 {
        return Err(Fault::exception(MF));
    }
    g.advance(insn);
    Ok(())
}

/// The checks `ldmxcsr` and `stmxcsr` share: #UD without SSE enabled, #NM with CR0.TS.
fn sse_usable(g: &Guest) -> Result<()> {
    if g.sregs.cr0 & CR0_EM != 0 || g.sregs.cr4 & CR4_OSFXSR == 0 {
        return Err(Fault::exception(UD));
    }
    if g.sregs.cr0 & CR0_TS != 0 {
        return Err(Fault::exception(NM));
    }
    Ok(())
}

/// `ldmxcsr m32`: loads MXCSR (through the XSAVE area); #GP(0) for reserved bits.
pub fn ldmxcsr(g: &mut Guest, insn: &Instruction) -> Result<()> {
    sse_usable(g)?;
    let linear = g.linear_address(insn)?;
    let mut b = [0u8; 4];
    g.read_linear(linear, &mut b)?;
    let value = u32::from_le_bytes(b);
    if value & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    g.vcpu.set_mxcsr(value).map_err(Fault::Vcpu)?;
    g.advance(insn);
    Ok(())
}

/// `stmxcsr m32`: stores MXCSR.
pub fn stmxcsr(g: &mut Guest, insn: &Instruction) -> Result<()> {
    sse_usable(g)?;
    let linear = g.linear_address(insn)?;
    let mxcsr = g.vcpu.mxcsr().map_err(Fault::Vcpu)?;
    g.write_linear(linear, &mxcsr.to_le_bytes())?;
    g.advance(insn);
    Ok(())
}

/// `clac` / `stac`: clear or set EFLAGS.AC; #UD above CPL 0.
pub fn set_ac(g: &mut Guest, insn: &Instruction, set: bool) -> Result<()> {
    if g.cpl() != 0 {
        return Err(Fault::exception(UD));
    }
    let regs = g.regs_mut();
    if set {
        regs.rflags |= AC;
    } else {
        regs.rflags &= !AC;
    }
    g.advance(insn);
    Ok(())
}
