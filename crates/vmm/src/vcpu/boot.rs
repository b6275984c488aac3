//! The power-on state of each vCPU for one boot: the bootstrap processor at the kernel's entry,
//! the others waiting for INIT/SIPI.

use crate::VmmError;
use rvmm_arch::BootEntry;
use rvmm_hypervisor::Vcpu;
use vm_memory::GuestMemoryMmap;

/// How each vCPU (re)starts: the bootstrap processor at the kernel's entry, the others waiting for
/// INIT/SIPI.
pub struct VcpuBoot {
    pub entry: BootEntry,
}

impl VcpuBoot {
    /// Put `vcpu` in its power-on state for this boot.
    pub fn reset_vcpu(&self, vcpu: &Vcpu, mem: &GuestMemoryMmap) -> Result<(), VmmError> {
        if vcpu.id() != 0 {
            // Application processors wait for INIT/SIPI from the guest (the in-kernel LAPIC does it).
            return Ok(vcpu.set_runnable(false)?);
        }
        let e = &self.entry;
        let mut sregs = vcpu.sregs()?;
        rvmm_arch::setup_cpu_mode(mem, e.mode, &mut sregs)?;
        vcpu.set_sregs(&sregs)?;
        let regs = rvmm_hypervisor::kvm_regs {
            rip: e.rip,
            rsp: e.rsp,
            rax: e.rax,
            rbx: e.rbx,
            rsi: e.rsi,
            // Bit 1 is reserved and always set; interrupts off.
            rflags: 0x2,
            ..Default::default()
        };
        vcpu.set_regs(&regs)?;
        // x87 and SSE control words as after FNINIT and at reset (SDM vol. 1, 8.1.5 and 10.2.3).
        let fpu = rvmm_hypervisor::kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu)?;
        // KVM_SET_FPU ignores `mxcsr`; the XSAVE area carries it.
        vcpu.set_mxcsr(0x1f80)?;
        Ok(vcpu.set_runnable(true)?)
    }
}
