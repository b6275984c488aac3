//! A vCPU: register access, `KVM_RUN` decoded into a neutral [`VcpuExit`], and the kick that makes
//! a thread leave `KVM_RUN` (a real-time signal whose handler sets `immediate_exit`).

use crate::{ioctl_err, HvError, Result};
use kvm_bindings::{
    kvm_fpu, kvm_mp_state, kvm_regs, kvm_run, kvm_sregs, kvm_vcpu_events, CpuId,
    KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO,
    KVM_EXIT_IOAPIC_EOI, KVM_EXIT_IO_IN, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT,
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuFd;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::ptr;

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// What KVM could not emulate (KVM_INTERNAL_ERROR_EMULATION), with the instruction bytes when the
/// kernel provides them (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulationFailure {
    pub insn: [u8; MAX_INSN_LEN],
    /// 0 when the kernel did not report the bytes.
    pub insn_len: u8,
}

impl EmulationFailure {
    pub fn bytes(&self) -> &[u8] {
        &self.insn[..usize::from(self.insn_len).min(MAX_INSN_LEN)]
    }
}

/// What the guest asked the machine to do (KVM_EXIT_SYSTEM_EVENT, api.rst "KVM_EXIT_SYSTEM_EVENT").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemEvent {
    /// Power off.
    Shutdown,
    /// Reset the machine.
    Reset,
    /// The guest reported a crash (e.g. through the Hyper-V crash control MSR).
    Crash,
    /// Any other event type, as KVM numbers it (wake-up, suspend, SEV termination, ...).
    Other(u32),
}

impl SystemEvent {
    /// Decode `kvm_run.system_event.type`.
    fn from_kvm(kind: u32) -> Self {
        match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => SystemEvent::Shutdown,
            KVM_SYSTEM_EVENT_RESET => SystemEvent::Reset,
            KVM_SYSTEM_EVENT_CRASH => SystemEvent::Crash,
            other => SystemEvent::Other(other),
        }
    }
}

/// Why `KVM_RUN` returned, in the VMM's vocabulary.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// `in`: fill `data` (`count` elements of `size` bytes, for string I/O) before running again.
    IoIn {
        port: u16,
        size: usize,
        data: &'a mut [u8],
    },
    /// `out` of `data` (`count` elements of `size` bytes).
    IoOut {
        port: u16,
        size: usize,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    Hlt,
    /// The guest's LAPIC EOI'd `vector`, which a level-triggered IOAPIC route uses (split irqchip).
    IoapicEoi {
        vector: u8,
    },
    /// Triple fault or other shutdown condition.
    Shutdown,
    /// A signal or `immediate_exit` made KVM_RUN return before or after running guest code.
    Interrupted,
    /// The in-kernel instruction emulator failed.
    EmulationFailure(EmulationFailure),
    /// Any other KVM_EXIT_INTERNAL_ERROR.
    InternalError {
        suberror: u32,
        data: [u64; 4],
    },
    /// KVM_EXIT_SYSTEM_EVENT: shutdown, reset or crash requested by the guest.
    SystemEvent(SystemEvent),
    /// VM entry failed (hardware reason code).
    FailEntry {
        reason: u64,
    },
    /// An exit reason rvmm does not handle.
    Unhandled {
        reason: u32,
    },
}

thread_local! {
    /// The kvm_run of the vCPU this thread runs, for the kick signal handler.
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn handle_kick(_: c_int, _: *mut libc::siginfo_t, _: *mut c_void) {
    // Only async-signal-safe work here: a const-initialized thread-local read and a volatile store.
    let run = KVM_RUN_PTR.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer was set by `Vcpu::bind_to_thread` on this thread and is cleared before
        // the vCPU's kvm_run mapping goes away; immediate_exit is a plain u8 in that mapping.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*run).immediate_exit), 1) };
    }
}

/// Install the kick handler once per process, before vCPU threads start.
pub fn install_kick_handler() -> Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), handle_kick)
        .map_err(ioctl_err("sigaction(kick signal)"))
}

/// One virtual CPU. Owned and run by exactly one thread.
pub struct Vcpu {
    pub(crate) fd: VcpuFd,
    pub(crate) id: u32,
    bound: bool,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, id: u32) -> Self {
        Self {
            fd,
            id,
            bound: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The vCPU's binary statistics (KVM_GET_STATS_FD), readable from any thread.
    pub fn stats_fd(&self) -> Result<std::os::fd::OwnedFd> {
        crate::stats_fd(self.raw_fd())
    }

    /// The vCPU fd, for mapping its shared pages (the coalesced MMIO ring).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Make the kick signal, when delivered to the calling thread, stop this vCPU's KVM_RUN.
    /// Call on the thread that runs the vCPU, after moving it there.
    pub fn bind_to_thread(&mut self) {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN_PTR.with(|p| p.set(run));
        self.bound = true;
    }

    /// Clear a pending kick so the next KVM_RUN enters the guest.
    pub fn clear_immediate_exit(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Make the next KVM_RUN return before running guest code (after finishing a pending I/O or
    /// MMIO instruction, api.rst "KVM_RUN").
    pub fn set_immediate_exit(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
    }

    /// Whether `immediate_exit` is still set (a kick or [`set_immediate_exit`](Self::set_immediate_exit)).
    pub fn immediate_exit(&mut self) -> bool {
        self.fd.get_kvm_run().immediate_exit != 0
    }

    /// `KVM_RUN`, decoded.
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        let reason = match self.fd.run() {
            Ok(_) => self.fd.get_kvm_run().exit_reason,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VcpuExit::Interrupted)
            }
            Err(e) => {
                return Err(HvError::Ioctl {
                    op: "KVM_RUN",
                    source: e,
                })
            }
        };
        let run = self.fd.get_kvm_run();
        Ok(match reason {
            KVM_EXIT_IO => {
                // SAFETY: exit_reason KVM_EXIT_IO says `io` is the live union member.
                let io = unsafe { run.__bindgen_anon_1.io };
                let size = usize::from(io.size);
                let len = size * io.count as usize;
                let base: *mut u8 = (run as *mut kvm_run).cast();
                // SAFETY: the kernel places count * size bytes of I/O data at data_offset inside the
                // kvm_run mapping (api.rst, KVM_EXIT_IO); the slice lives no longer than `self`.
                let data = unsafe {
                    std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len)
                };
                if u32::from(io.direction) == KVM_EXIT_IO_IN {
                    VcpuExit::IoIn {
                        port: io.port,
                        size,
                        data,
                    }
                } else {
                    VcpuExit::IoOut {
                        port: io.port,
                        size,
                        data,
                    }
                }
            }
            KVM_EXIT_MMIO => {
                // SAFETY: exit_reason KVM_EXIT_MMIO says `mmio` is the live union member.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = (mmio.len as usize).min(mmio.data.len());
                if mmio.is_write != 0 {
                    VcpuExit::MmioWrite {
                        addr: mmio.phys_addr,
                        data: &mmio.data[..len],
                    }
                } else {
                    VcpuExit::MmioRead {
                        addr: mmio.phys_addr,
                        data: &mut mmio.data[..len],
                    }
                }
            }
            KVM_EXIT_HLT => VcpuExit::Hlt,
            KVM_EXIT_IOAPIC_EOI => {
                // SAFETY: exit_reason KVM_EXIT_IOAPIC_EOI says `eoi` is the live union member.
                let vector = unsafe { run.__bindgen_anon_1.eoi.vector };
                VcpuExit::IoapicEoi { vector }
            }
            KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            KVM_EXIT_INTR => VcpuExit::Interrupted,
            KVM_EXIT_INTERNAL_ERROR => {
                // SAFETY: exit_reason KVM_EXIT_INTERNAL_ERROR says `internal` is the live member.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
                    VcpuExit::EmulationFailure(decode_emulation_failure(
                        &internal.data,
                        internal.ndata,
                    ))
                } else {
                    let mut data = [0u64; 4];
                    let n = (internal.ndata as usize).min(data.len());
                    data[..n].copy_from_slice(&internal.data[..n]);
                    VcpuExit::InternalError {
                        suberror: internal.suberror,
                        data,
                    }
                }
            }
            KVM_EXIT_SYSTEM_EVENT => {
                // SAFETY: exit_reason KVM_EXIT_SYSTEM_EVENT says `system_event` is the live member.
                let kind = unsafe { run.__bindgen_anon_1.system_event.type_ };
                VcpuExit::SystemEvent(SystemEvent::from_kvm(kind))
            }
            KVM_EXIT_FAIL_ENTRY => {
                // SAFETY: exit_reason KVM_EXIT_FAIL_ENTRY says `fail_entry` is the live member.
                let reason = unsafe {
                    run.__bindgen_anon_1
                        .fail_entry
                        .hardware_entry_failure_reason
                };
                VcpuExit::FailEntry { reason }
            }
            reason => VcpuExit::Unhandled { reason },
        })
    }

    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(ioctl_err("KVM_GET_REGS"))
    }
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(ioctl_err("KVM_SET_REGS"))
    }
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))
    }
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd.set_sregs(sregs).map_err(ioctl_err("KVM_SET_SREGS"))
    }
    pub fn fpu(&self) -> Result<kvm_fpu> {
        self.fd.get_fpu().map_err(ioctl_err("KVM_GET_FPU"))
    }
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd.set_fpu(fpu).map_err(ioctl_err("KVM_SET_FPU"))
    }
    /// MXCSR, from the XSAVE area: KVM_GET_FPU does not report it.
    pub fn mxcsr(&self) -> Result<u32> {
        let xsave = self.fd.get_xsave().map_err(ioctl_err("KVM_GET_XSAVE"))?;
        Ok(xsave.region[XSAVE_MXCSR_WORD])
    }

    /// Sets MXCSR through the XSAVE area: KVM_SET_FPU ignores its `mxcsr` field.
    pub fn set_mxcsr(&self, value: u32) -> Result<()> {
        let mut xsave = self.fd.get_xsave().map_err(ioctl_err("KVM_GET_XSAVE"))?;
        xsave.region[XSAVE_MXCSR_WORD] = value;
        // XSTATE_BV bit 1 (SSE): KVM loads MXCSR and the XMM registers from the buffer
        // (SDM vol. 1, 13.4.2); the XMM registers are the ones just read.
        xsave.region[XSAVE_XSTATE_BV_WORD] |= 1 << 1;
        // SAFETY: the buffer is the fixed 4 KiB `kvm_xsave` KVM_GET_XSAVE filled; rvmm enables no
        // dynamic XSTATE features (arch_prctl), so KVM reads no more than 4 KiB.
        unsafe { self.fd.set_xsave(&xsave) }.map_err(ioctl_err("KVM_SET_XSAVE"))
    }

    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))
    }

    /// Translate a guest virtual address with the vCPU's current paging mode.
    pub fn translate(&self, gva: u64) -> Option<u64> {
        self.fd
            .translate_gva(gva)
            .ok()
            .filter(|t| t.valid != 0)
            .map(|t| t.physical_address)
    }

    /// Translate a guest virtual address: (physical address, whether the mapping is writable).
    pub fn translate_access(&self, gva: u64) -> Option<(u64, bool)> {
        self.fd
            .translate_gva(gva)
            .ok()
            .filter(|t| t.valid != 0)
            .map(|t| (t.physical_address, t.writeable != 0))
    }

    /// Inject a hardware exception (vector `nr`, no error code) to be delivered on the next KVM_RUN.
    pub fn inject_exception(&self, nr: u8) -> Result<()> {
        self.inject_exception_with_code(nr, None)
    }

    /// Inject a hardware exception with an optional error code (#GP, #PF, ...).
    pub fn inject_exception_with_code(&self, nr: u8, error_code: Option<u32>) -> Result<()> {
        let mut events: kvm_vcpu_events = self
            .fd
            .get_vcpu_events()
            .map_err(ioctl_err("KVM_GET_VCPU_EVENTS"))?;
        events.exception.injected = 1;
        events.exception.nr = nr;
        events.exception.has_error_code = u8::from(error_code.is_some());
        events.exception.error_code = error_code.unwrap_or(0);
        events.exception.pending = 0;
        events.exception_has_payload = 0;
        // Only the exception state changes; flags left 0 keep NMI/SIPI/SMI state as it is.
        events.flags = 0;
        self.fd
            .set_vcpu_events(&events)
            .map_err(ioctl_err("KVM_SET_VCPU_EVENTS"))
    }

    /// Write the LAPIC state back as it is (KVM_GET_LAPIC + KVM_SET_LAPIC), as QEMU does at
    /// every vCPU reset. Setting the state makes KVM rebuild its APIC ID map; without that, on
    /// the development host, INIT and SIPI sent to APIC ID 1 were dropped (tracefs shows
    /// kvm_apic_ipi with no kvm_apic_accept_irq) and secondary vCPUs never started.
    pub fn reload_lapic(&self) -> Result<()> {
        let lapic = self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?;
        self.fd
            .set_lapic(&lapic)
            .map_err(ioctl_err("KVM_SET_LAPIC"))
    }

    /// Put the local APIC in its power-on state (Intel SDM vol. 3, 11.4.7.1): every LVT entry
    /// masked, SVR 0xFF (software-disabled), DFR all ones, no pending or in-service vectors, the
    /// timer stopped; the APIC ID and version are kept. Call after the APIC base MSR has been
    /// set (through the sregs), since KVM reads the ID in the current mode. On the bootstrap
    /// processor LINT0 is ExtINT, so the 8259's interrupts reach it (KVM's `kvm_lapic_reset`
    /// and QEMU's `apic_reset_common` do the same).
    pub fn reset_lapic(&self, bsp: bool) -> Result<()> {
        let mut lapic = self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?;
        let mut set = |offset: usize, value: u32| {
            for (i, b) in value.to_le_bytes().into_iter().enumerate() {
                lapic.regs[offset + i] = b as std::os::raw::c_char;
            }
        };
        // TPR, APR, PPR, LDR, ICR, ISR/TMR/IRR (0x100-0x270), ESR, timer counts, divide.
        for offset in (0x80..0x400).step_by(0x10) {
            set(offset, 0);
        }
        const DFR: usize = 0xe0;
        const SVR: usize = 0xf0;
        const LVT_MASKED: u32 = 1 << 16;
        set(DFR, 0xffff_ffff);
        set(SVR, 0xff);
        // LVT CMCI, timer, thermal, performance, LINT0, LINT1, error.
        for offset in [0x2f0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370] {
            set(offset, LVT_MASKED);
        }
        if bsp {
            const LVT_LINT0: usize = 0x350;
            const DELIVERY_EXTINT: u32 = 0x700;
            set(LVT_LINT0, DELIVERY_EXTINT);
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(ioctl_err("KVM_SET_LAPIC"))
    }

    /// Drop any pending or injected exception, interrupt, NMI or SMI (as RESET does).
    pub fn clear_events(&self) -> Result<()> {
        let mut events: kvm_vcpu_events = self
            .fd
            .get_vcpu_events()
            .map_err(ioctl_err("KVM_GET_VCPU_EVENTS"))?;
        events.exception = Default::default();
        events.interrupt = Default::default();
        events.nmi = Default::default();
        events.smi = Default::default();
        events.exception_has_payload = 0;
        events.exception_payload = 0;
        self.fd
            .set_vcpu_events(&events)
            .map_err(ioctl_err("KVM_SET_VCPU_EVENTS"))
    }

    /// Put the vCPU in the wait-for-SIPI state (an application processor after reset) or make it
    /// runnable (the bootstrap processor).
    pub fn set_runnable(&self, runnable: bool) -> Result<()> {
        let mp_state = if runnable {
            KVM_MP_STATE_RUNNABLE
        } else {
            KVM_MP_STATE_UNINITIALIZED
        };
        self.fd
            .set_mp_state(kvm_mp_state { mp_state })
            .map_err(ioctl_err("KVM_SET_MP_STATE"))
    }
}

/// 32-bit word of `kvm_xsave.region` holding MXCSR (legacy region byte 24, SDM vol. 1, 10.5.1).
const XSAVE_MXCSR_WORD: usize = 24 / 4;
/// Low word of XSTATE_BV (XSAVE header at byte 512, SDM vol. 1, 13.4.2).
const XSAVE_XSTATE_BV_WORD: usize = 512 / 4;

impl Drop for Vcpu {
    fn drop(&mut self) {
        if self.bound {
            // The mapping is about to go away; never let the handler write to it again.
            KVM_RUN_PTR.with(|p| p.set(ptr::null_mut()));
        }
    }
}

/// `data` of a KVM_INTERNAL_ERROR_EMULATION exit: data[0] flags, then insn_size (one byte) and up to
/// 15 instruction bytes starting in data[1] (struct emulation_failure in linux/kvm.h).
fn decode_emulation_failure(data: &[u64; 16], ndata: u32) -> EmulationFailure {
    let mut out = EmulationFailure {
        insn: [0; MAX_INSN_LEN],
        insn_len: 0,
    };
    let has_bytes =
        ndata >= 2 && data[0] & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0;
    if has_bytes {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&data[1].to_le_bytes());
        raw[8..].copy_from_slice(&data[2].to_le_bytes());
        let len = usize::from(raw[0]).min(MAX_INSN_LEN);
        out.insn.copy_from_slice(&raw[1..16]);
        out.insn_len = len as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_instruction_bytes() {
        let mut data = [0u64; 16];
        data[0] = 1;
        // insn_size 1, byte 0xcc.
        data[1] = 0xcc01;
        let f = decode_emulation_failure(&data, 3);
        assert_eq!(f.bytes(), &[0xcc]);
        // Oversized length from a confused kernel is clamped, never out of bounds.
        data[1] = 0xff;
        assert_eq!(
            decode_emulation_failure(&data, 3).bytes().len(),
            MAX_INSN_LEN
        );
        // Without the flag there are no bytes.
        data[0] = 0;
        assert_eq!(decode_emulation_failure(&data, 3).bytes(), &[] as &[u8]);
    }

    #[test]
    fn decodes_system_events() {
        assert_eq!(SystemEvent::from_kvm(1), SystemEvent::Shutdown);
        assert_eq!(SystemEvent::from_kvm(2), SystemEvent::Reset);
        assert_eq!(SystemEvent::from_kvm(3), SystemEvent::Crash);
        // KVM_SYSTEM_EVENT_SUSPEND, and a number from a newer kernel.
        assert_eq!(SystemEvent::from_kvm(5), SystemEvent::Other(5));
        assert_eq!(SystemEvent::from_kvm(99), SystemEvent::Other(99));
    }
}
