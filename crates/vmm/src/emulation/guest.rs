//! The guest state an emulated instruction works on: registers (read once, written back once),
//! operands, and memory reached through the guest's page tables.

use iced_x86::{Instruction, OpKind, Register};
use rvmm_hypervisor::{kvm_regs, kvm_sregs, Vcpu};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// SDM vol. 3A, 6.15: vector numbers.
pub const UD: u8 = 6;
pub const NM: u8 = 7;
pub const GP: u8 = 13;
pub const PF: u8 = 14;
pub const MF: u8 = 16;

const EFER_LMA: u64 = 1 << 10;

/// Why an instruction did not complete.
#[derive(Debug)]
pub enum Fault {
    /// The instruction raises this exception in the guest (RIP stays on it).
    Exception { vector: u8, error_code: Option<u32> },
    /// rvmm cannot complete it: the VM stops with this reason.
    Unsupported(String),
    /// A vCPU ioctl the instruction needs failed: the VM stops.
    Vcpu(rvmm_hypervisor::HvError),
}

impl Fault {
    pub fn exception(vector: u8) -> Self {
        Fault::Exception {
            vector,
            error_code: None,
        }
    }

    pub fn gp0() -> Self {
        Fault::Exception {
            vector: GP,
            error_code: Some(0),
        }
    }
}

pub type Result<T> = std::result::Result<T, Fault>;

/// One vCPU's registers while an instruction is completed; `commit` writes what changed.
pub struct Guest<'a> {
    pub vcpu: &'a Vcpu,
    pub mem: &'a GuestMemoryMmap,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    regs_dirty: bool,
    sregs_dirty: bool,
}

impl<'a> Guest<'a> {
    pub fn new(vcpu: &'a Vcpu, mem: &'a GuestMemoryMmap) -> rvmm_hypervisor::Result<Self> {
        Ok(Guest {
            vcpu,
            mem,
            regs: vcpu.regs()?,
            sregs: vcpu.sregs()?,
            regs_dirty: false,
            sregs_dirty: false,
        })
    }

    /// 16, 32 or 64: the code size of the current CS.
    pub fn bitness(&self) -> u32 {
        if self.sregs.efer & EFER_LMA != 0 && self.sregs.cs.l == 1 {
            64
        } else if self.sregs.cs.db == 1 {
            32
        } else {
            16
        }
    }

    pub fn cpl(&self) -> u8 {
        // CS.DPL is the CPL outside real mode (SDM vol. 3A, 5.5); real mode is CPL 0.
        if self.sregs.cr0 & 1 == 0 {
            0
        } else {
            self.sregs.cs.dpl
        }
    }

    pub fn regs_mut(&mut self) -> &mut kvm_regs {
        self.regs_dirty = true;
        &mut self.regs
    }

    pub fn sregs_mut(&mut self) -> &mut kvm_sregs {
        self.sregs_dirty = true;
        &mut self.sregs
    }

    /// Move RIP past `insn`, wrapping as the code size does; RF is cleared (SDM vol. 3A, 17.3.1.1).
    pub fn advance(&mut self, insn: &Instruction) {
        let next = insn.next_ip();
        let bits = self.bitness();
        let regs = self.regs_mut();
        regs.rip = match bits {
            64 => next,
            32 => next & 0xffff_ffff,
            _ => next & 0xffff,
        };
        regs.rflags &= !(1 << 16);
    }

    /// Write back the registers that changed.
    pub fn commit(&mut self) -> rvmm_hypervisor::Result<()> {
        if self.sregs_dirty {
            self.vcpu.set_sregs(&self.sregs)?;
            self.sregs_dirty = false;
        }
        if self.regs_dirty {
            self.vcpu.set_regs(&self.regs)?;
            self.regs_dirty = false;
        }
        Ok(())
    }

    fn gpr_slot(&mut self, full: Register) -> Option<&mut u64> {
        let r = &mut self.regs;
        Some(match full {
            Register::RAX => &mut r.rax,
            Register::RCX => &mut r.rcx,
            Register::RDX => &mut r.rdx,
            Register::RBX => &mut r.rbx,
            Register::RSP => &mut r.rsp,
            Register::RBP => &mut r.rbp,
            Register::RSI => &mut r.rsi,
            Register::RDI => &mut r.rdi,
            Register::R8 => &mut r.r8,
            Register::R9 => &mut r.r9,
            Register::R10 => &mut r.r10,
            Register::R11 => &mut r.r11,
            Register::R12 => &mut r.r12,
            Register::R13 => &mut r.r13,
            Register::R14 => &mut r.r14,
            Register::R15 => &mut r.r15,
            Register::RIP => &mut r.rip,
            _ => return None,
        })
    }

    /// The value of a general-purpose register of any size (AH..BH included).
    pub fn gpr(&mut self, reg: Register) -> Result<u64> {
        let high = matches!(
            reg,
            Register::AH | Register::CH | Register::DH | Register::BH
        );
        let size = reg.size();
        let full = *self
            .gpr_slot(reg.full_register())
            .ok_or_else(|| Fault::Unsupported(format!("register {reg:?} is not a GPR")))?;
        Ok(if high {
            (full >> 8) & 0xff
        } else {
            full & mask(size)
        })
    }

    /// Writes a general-purpose register as the CPU does: 32-bit writes zero-extend, 8- and 16-bit
    /// writes keep the other bits (SDM vol. 1, 3.4.1.1).
    pub fn set_gpr(&mut self, reg: Register, value: u64) -> Result<()> {
        let high = matches!(
            reg,
            Register::AH | Register::CH | Register::DH | Register::BH
        );
        let size = reg.size();
        self.regs_dirty = true;
        let slot = self
            .gpr_slot(reg.full_register())
            .ok_or_else(|| Fault::Unsupported(format!("register {reg:?} is not a GPR")))?;
        *slot = match (size, high) {
            (1, true) => (*slot & !0xff00) | ((value & 0xff) << 8),
            (1, false) | (2, _) => (*slot & !mask(size)) | (value & mask(size)),
            _ => value & mask(size),
        };
        Ok(())
    }

    /// Linear address of the memory operand of `insn` (SDM vol. 1, 3.7.5): base + index * scale +
    /// displacement, truncated to the address size, plus the segment base.
    pub fn linear_address(&mut self, insn: &Instruction) -> Result<u64> {
        let (base, index) = (insn.memory_base(), insn.memory_index());
        let ea = if insn.is_ip_rel_memory_operand() {
            insn.ip_rel_memory_address()
        } else {
            let b = if base == Register::None {
                0
            } else {
                self.gpr(base)?
            };
            let i = if index == Register::None {
                0
            } else {
                self.gpr(index)?
                    .wrapping_mul(u64::from(insn.memory_index_scale()))
            };
            b.wrapping_add(i).wrapping_add(insn.memory_displacement64())
        };
        let addr_size = [base, index]
            .into_iter()
            .find(|r| *r != Register::None)
            .map(|r| r.size())
            .unwrap_or(match insn.memory_displ_size() {
                2 => 2,
                4 => 4,
                _ => (self.bitness() / 8) as usize,
            });
        let ea = ea & mask(addr_size);
        let seg = match insn.memory_segment() {
            Register::ES => &self.sregs.es,
            Register::CS => &self.sregs.cs,
            Register::SS => &self.sregs.ss,
            Register::DS => &self.sregs.ds,
            Register::FS => &self.sregs.fs,
            Register::GS => &self.sregs.gs,
            other => return Err(Fault::Unsupported(format!("segment {other:?}"))),
        };
        // In 64-bit mode only FS and GS have a base (SDM vol. 1, 3.3.7.1).
        let seg_base = if self.bitness() == 64
            && !matches!(insn.memory_segment(), Register::FS | Register::GS)
        {
            0
        } else {
            seg.base
        };
        let linear = seg_base.wrapping_add(ea);
        Ok(if self.bitness() == 64 {
            linear
        } else {
            linear & 0xffff_ffff
        })
    }

    /// The #PF that an access to `linear` raises (SDM vol. 3A, 4.7: P, W/R and U/S bits).
    fn page_fault(&mut self, linear: u64, present: bool, write: bool) -> Fault {
        let code = u32::from(present) | (u32::from(write) << 1) | (u32::from(self.cpl() == 3) << 2);
        self.sregs_mut().cr2 = linear;
        Fault::Exception {
            vector: PF,
            error_code: Some(code),
        }
    }

    /// Reads guest memory at a linear address, page by page through the guest's page tables.
    pub fn read_linear(&mut self, linear: u64, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let addr = linear.wrapping_add(done as u64);
            let Some(phys) = self.vcpu.translate(addr) else {
                return Err(self.page_fault(addr, false, false));
            };
            let n = ((0x1000 - (phys & 0xfff)) as usize).min(out.len() - done);
            self.mem
                .read_slice(&mut out[done..done + n], GuestAddress(phys))
                .map_err(|_| {
                    Fault::Unsupported(format!("guest physical address {phys:#x} is not RAM"))
                })?;
            done += n;
        }
        Ok(())
    }

    /// Writes guest memory at a linear address; every page is checked before anything is written.
    pub fn write_linear(&mut self, linear: u64, data: &[u8]) -> Result<()> {
        let mut pages = [(0u64, 0usize, 0usize); 2];
        let mut count = 0;
        let mut done = 0;
        while done < data.len() {
            let addr = linear.wrapping_add(done as u64);
            let (phys, writable) = match self.vcpu.translate_access(addr) {
                Some(t) => t,
                None => return Err(self.page_fault(addr, false, true)),
            };
            // CR0.WP clear lets CPL0 write read-only pages (SDM vol. 3A, 4.6.1).
            let wp = self.sregs.cr0 & (1 << 16) != 0;
            if !writable && (wp || self.cpl() == 3) {
                return Err(self.page_fault(addr, true, true));
            }
            let n = ((0x1000 - (phys & 0xfff)) as usize).min(data.len() - done);
            if count == pages.len() {
                return Err(Fault::Unsupported(
                    "memory operand spans more than 2 pages".into(),
                ));
            }
            pages[count] = (phys, done, n);
            count += 1;
            done += n;
        }
        for &(phys, off, n) in &pages[..count] {
            self.mem
                .write_slice(&data[off..off + n], GuestAddress(phys))
                .map_err(|_| {
                    Fault::Unsupported(format!("guest physical address {phys:#x} is not RAM"))
                })?;
        }
        Ok(())
    }

    /// The value of source operand `op` of `insn`: a register or `size` bytes of memory.
    pub fn read_operand(&mut self, insn: &Instruction, op: u32, size: usize) -> Result<u64> {
        match insn.op_kind(op) {
            OpKind::Register => self.gpr(insn.op_register(op)),
            OpKind::Memory => {
                let linear = self.linear_address(insn)?;
                let mut b = [0u8; 8];
                self.read_linear(linear, &mut b[..size.min(8)])?;
                Ok(u64::from_le_bytes(b))
            }
            other => Err(Fault::Unsupported(format!("operand kind {other:?}"))),
        }
    }
}

/// All-ones in the low `size` bytes.
pub fn mask(size: usize) -> u64 {
    match size {
        0..=7 => (1u64 << (size * 8)) - 1,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks() {
        assert_eq!(mask(1), 0xff);
        assert_eq!(mask(2), 0xffff);
        assert_eq!(mask(4), 0xffff_ffff);
        assert_eq!(mask(8), u64::MAX);
    }
}
