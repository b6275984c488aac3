//! The KVM state of a vCPU and of the VM, as a snapshot saves and restores it
//! (docs/SNAPSHOT.md). The structs serialize through kvm-bindings' `serde` feature.
//!
//! Restore order follows what KVM needs (api.rst and QEMU's `kvm_arch_put_registers`): CPUID
//! is set when the vCPU is created, before any of this; MP state; general registers; special
//! registers (CR0/CR4/EFER and the APIC base decide what the rest means); XSAVE and XCR0; debug
//! registers; the LAPIC; then the MSRs (TSC_DEADLINE only means something once the LAPIC timer
//! mode is set); the pending events last, so nothing above clears an injected exception.

use crate::{ioctl_err, HvError, Result, Vcpu, Vm};
use kvm_bindings::{
    kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use serde::{Deserialize, Serialize};

/// KVM_GET_MSRS / KVM_SET_MSRS take at most this many entries per call (KVM_MAX_MSR_ENTRIES).
const MSR_CHUNK: usize = 256;

/// One vCPU's KVM state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuSnapshot {
    /// The KVM vCPU ID (APIC ID).
    pub id: u32,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// The 4 KiB KVM_GET_XSAVE area: rvmm enables no dynamic XSTATE feature (AMX), so the
    /// guest's state fits it (KVM_CAP_XSAVE2 sizes only matter with those).
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    /// Every MSR of KVM_GET_MSR_INDEX_LIST that reads on this vCPU.
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    /// KVM_GET_TSC_KHZ, if the host reports it.
    pub tsc_khz: Option<u32>,
}

impl Vcpu {
    /// Read everything [`VcpuSnapshot`] holds (the vCPU must be out of KVM_RUN).
    pub fn save_state(&self, msr_indices: &[u32]) -> Result<VcpuSnapshot> {
        let fd = &self.fd;
        Ok(VcpuSnapshot {
            id: self.id,
            mp_state: fd.get_mp_state().map_err(ioctl_err("KVM_GET_MP_STATE"))?,
            regs: fd.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(ioctl_err("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(ioctl_err("KVM_GET_XCRS"))?,
            debugregs: fd
                .get_debug_regs()
                .map_err(ioctl_err("KVM_GET_DEBUGREGS"))?,
            lapic: fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?,
            msrs: self.read_msrs(msr_indices)?,
            events: fd
                .get_vcpu_events()
                .map_err(ioctl_err("KVM_GET_VCPU_EVENTS"))?,
            tsc_khz: fd.get_tsc_khz().ok(),
        })
    }

    /// The MSRs of `indices` that this vCPU can read. KVM_GET_MSRS stops at the first MSR it
    /// cannot read and returns how many it read: that one is dropped and the rest read on.
    fn read_msrs(&self, indices: &[u32]) -> Result<Vec<kvm_msr_entry>> {
        let mut out = Vec::with_capacity(indices.len());
        let mut rest = indices;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MSR_CHUNK)];
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs =
                Msrs::from_entries(&entries).map_err(|_| HvError::MissingCapability("MSRs"))?;
            let read = self
                .fd
                .get_msrs(&mut msrs)
                .map_err(ioctl_err("KVM_GET_MSRS"))?;
            out.extend_from_slice(&msrs.as_slice()[..read.min(chunk.len())]);
            // Skip the one that failed (if any).
            let consumed = if read < chunk.len() { read + 1 } else { read };
            rest = &rest[consumed..];
        }
        Ok(out)
    }

    /// Load `s` (the vCPU must be out of KVM_RUN and have its CPUID set).
    pub fn restore_state(&self, s: &VcpuSnapshot) -> Result<()> {
        let fd = &self.fd;
        fd.set_mp_state(s.mp_state)
            .map_err(ioctl_err("KVM_SET_MP_STATE"))?;
        fd.set_regs(&s.regs).map_err(ioctl_err("KVM_SET_REGS"))?;
        fd.set_sregs(&s.sregs).map_err(ioctl_err("KVM_SET_SREGS"))?;
        // SAFETY: `s.xsave` is a whole 4 KiB kvm_xsave; rvmm enables no dynamic XSTATE feature,
        // so KVM reads no more than that.
        unsafe { fd.set_xsave(&s.xsave) }.map_err(ioctl_err("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&s.xcrs).map_err(ioctl_err("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&s.debugregs)
            .map_err(ioctl_err("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&s.lapic).map_err(ioctl_err("KVM_SET_LAPIC"))?;
        if let Some(khz) = s.tsc_khz {
            if fd.get_tsc_khz().ok() != Some(khz) {
                // A host with another TSC rate: the guest keeps its own, if KVM can scale.
                fd.set_tsc_khz(khz).map_err(ioctl_err("KVM_SET_TSC_KHZ"))?;
            }
        }
        for chunk in s.msrs.chunks(MSR_CHUNK) {
            let msrs = Msrs::from_entries(chunk).map_err(|_| HvError::MissingCapability("MSRs"))?;
            let written = fd.set_msrs(&msrs).map_err(ioctl_err("KVM_SET_MSRS"))?;
            if written < chunk.len() {
                return Err(HvError::MsrRefused {
                    index: chunk[written].index,
                    value: chunk[written].data,
                });
            }
        }
        fd.set_vcpu_events(&s.events)
            .map_err(ioctl_err("KVM_SET_VCPU_EVENTS"))
    }
}

/// The VM-wide KVM state: the in-kernel PIC and IOAPIC, the PIT, kvmclock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSnapshot {
    /// PIC master, PIC slave, IOAPIC; empty under the split irqchip.
    pub irqchip: Vec<kvm_irqchip>,
    pub pit: Option<kvm_pit_state2>,
    /// kvmclock at the moment the VM stopped.
    pub clock: u64,
}

impl Vm {
    /// Read the VM's state; `clock` is the kvmclock value saved when the VM was paused.
    pub fn save_state(&self, clock: u64) -> Result<VmSnapshot> {
        let mut irqchip = Vec::new();
        if self.has_irqchip() {
            for chip_id in [
                KVM_IRQCHIP_PIC_MASTER,
                KVM_IRQCHIP_PIC_SLAVE,
                KVM_IRQCHIP_IOAPIC,
            ] {
                let mut chip = kvm_irqchip {
                    chip_id,
                    ..Default::default()
                };
                self.fd
                    .get_irqchip(&mut chip)
                    .map_err(ioctl_err("KVM_GET_IRQCHIP"))?;
                irqchip.push(chip);
            }
        }
        let pit = self
            .has_pit()
            .then(|| self.fd.get_pit2().map_err(ioctl_err("KVM_GET_PIT2")))
            .transpose()?;
        Ok(VmSnapshot {
            irqchip,
            pit,
            clock,
        })
    }

    /// Load `s` into a VM built with the same irqchip and PIT (before any vCPU runs). The
    /// kvmclock is set separately, when the guest is let run ([`Vm::set_clock`]).
    pub fn restore_state(&self, s: &VmSnapshot) -> Result<()> {
        if s.irqchip.is_empty() == self.has_irqchip() || s.pit.is_some() != self.has_pit() {
            return Err(HvError::StateMismatch(
                "the snapshot's in-kernel irqchip or PIT does not match this VM's (kernel-irqchip=, pit=)",
            ));
        }
        for chip in &s.irqchip {
            if ![
                KVM_IRQCHIP_PIC_MASTER,
                KVM_IRQCHIP_PIC_SLAVE,
                KVM_IRQCHIP_IOAPIC,
            ]
            .contains(&chip.chip_id)
            {
                return Err(HvError::StateMismatch("unknown irqchip id in the snapshot"));
            }
            self.fd
                .set_irqchip(chip)
                .map_err(ioctl_err("KVM_SET_IRQCHIP"))?;
        }
        if let Some(pit) = &s.pit {
            self.fd.set_pit2(pit).map_err(ioctl_err("KVM_SET_PIT2"))?;
        }
        Ok(())
    }
}
