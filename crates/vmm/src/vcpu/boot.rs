//! The power-on state of each vCPU for one boot: the bootstrap processor at the kernel's entry
//! or at the firmware's reset vector, the others waiting for INIT/SIPI.

use crate::VmmError;
use rvmm_arch::BootEntry;
use rvmm_hypervisor::Vcpu;
use vm_memory::GuestMemoryMmap;

/// Where the bootstrap processor starts.
#[derive(Debug, Clone, Copy)]
pub enum BootTarget {
    /// Direct kernel boot: the loaded image's entry, in the mode its protocol asks for.
    Kernel(BootEntry),
    /// PC firmware: the architectural RESET state, first instruction at 0xFFFFFFF0.
    Firmware,
}

/// Where the bootstrap processor restarts on wake-up from S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeEntry {
    /// PC firmware: the reset vector; the firmware finds the shutdown status byte 0xFE and jumps
    /// to the FACS waking vector itself (SeaBIOS `handle_resume` and `s3_resume`).
    Firmware,
    /// Without firmware: the FACS firmware waking vector, entered in real mode with
    /// CS = vector >> 4 and IP = vector & 0xF (ACPI 6.5 section 5.2.10).
    RealMode(u32),
}

/// IA32_APIC_BASE after RESET: the default base with the global enable bit (SDM vol. 3,
/// 11.4.4), and BSP (bit 8) on the bootstrap processor.
const APIC_BASE_ENABLED: u64 = 0xfee0_0000 | (1 << 11);
const APIC_BASE_BSP: u64 = 1 << 8;

/// How each vCPU (re)starts: the bootstrap processor at the boot target, the others waiting for
/// INIT/SIPI.
pub struct VcpuBoot {
    pub target: BootTarget,
}

impl VcpuBoot {
    /// Put `vcpu` in its power-on state for this boot.
    pub fn reset_vcpu(&self, vcpu: &Vcpu, mem: &GuestMemoryMmap) -> Result<(), VmmError> {
        match &self.target {
            BootTarget::Kernel(entry) => Self::kernel_entry(vcpu, mem, entry),
            BootTarget::Firmware => Self::power_on(vcpu),
        }
    }

    /// Put `vcpu` in its state for a wake-up from S3: as at power-on, the bootstrap processor at
    /// `entry`, the others waiting for INIT/SIPI.
    pub fn wake_vcpu(&self, vcpu: &Vcpu, entry: WakeEntry) -> Result<(), VmmError> {
        Self::power_on(vcpu)?;
        match entry {
            WakeEntry::RealMode(vector) if vcpu.id() == 0 => {
                let mut sregs = vcpu.sregs()?;
                let segment = vector >> 4;
                sregs.cs.selector = segment as u16;
                sregs.cs.base = u64::from(segment) << 4;
                vcpu.set_sregs(&sregs)?;
                let regs = rvmm_hypervisor::kvm_regs {
                    rip: u64::from(vector & 0xf),
                    rflags: 0x2,
                    ..Default::default()
                };
                Ok(vcpu.set_regs(&regs)?)
            }
            _ => Ok(()),
        }
    }

    fn kernel_entry(vcpu: &Vcpu, mem: &GuestMemoryMmap, e: &BootEntry) -> Result<(), VmmError> {
        if vcpu.id() != 0 {
            // Application processors wait for INIT/SIPI from the guest (the in-kernel LAPIC does it).
            return Ok(vcpu.set_runnable(false)?);
        }
        let mut sregs = vcpu.sregs()?;
        rvmm_arch::setup_cpu_mode(mem, e.mode, &e.data, &mut sregs)?;
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
        Self::reset_fpu(vcpu)?;
        Ok(vcpu.set_runnable(true)?)
    }

    /// The state RESET leaves (SDM vol. 3, 10.1): every vCPU in real mode at the reset vector,
    /// with a reset local APIC; the application processors then wait for INIT/SIPI, whose
    /// vector the in-kernel LAPIC loads into CS.
    fn power_on(vcpu: &Vcpu) -> Result<(), VmmError> {
        let bsp = vcpu.id() == 0;
        let mut sregs = vcpu.sregs()?;
        rvmm_arch::set_reset_state(&mut sregs);
        sregs.apic_base = APIC_BASE_ENABLED | if bsp { APIC_BASE_BSP } else { 0 };
        vcpu.set_sregs(&sregs)?;
        let regs = rvmm_hypervisor::kvm_regs {
            rip: rvmm_arch::RESET_IP,
            rflags: 0x2,
            ..Default::default()
        };
        vcpu.set_regs(&regs)?;
        Self::reset_fpu(vcpu)?;
        vcpu.reset_lapic(bsp)?;
        vcpu.clear_events()?;
        Ok(vcpu.set_runnable(bsp)?)
    }

    /// x87 and SSE control words as after FNINIT and at reset (SDM vol. 1, 8.1.5 and 10.2.3).
    fn reset_fpu(vcpu: &Vcpu) -> Result<(), VmmError> {
        let fpu = rvmm_hypervisor::kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu)?;
        // KVM_SET_FPU ignores `mxcsr`; the XSAVE area carries it.
        vcpu.set_mxcsr(0x1f80)?;
        Ok(())
    }
}
