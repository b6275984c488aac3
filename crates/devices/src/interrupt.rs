//! How devices raise interrupts, independent of where the interrupt controller lives.
//!
//! A device gets an [`IrqLine`]: an eventfd it writes to raise the line, and for a level-triggered
//! line a resample eventfd it is told on when the guest has acknowledged (EOI) the interrupt, so it
//! can raise the line again if its condition still holds. These are exactly KVM's irqfd semantics
//! (api.rst, KVM_IRQFD and KVM_IRQFD_FLAG_RESAMPLE), so the same line works in both irqchip modes:
//! with `kernel-irqchip=on` the VMM registers the eventfds as irqfds on the GSI; with the split
//! irqchip the user-space IOAPIC waits on them (see [`crate::legacy::ioapic`]).

use std::io;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Errors creating interrupt lines.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    #[error("failed to create the eventfd of interrupt line {gsi}")]
    CreateEventFd {
        gsi: u32,
        #[source]
        source: io::Error,
    },
    #[error("failed to duplicate the eventfd of interrupt line {gsi}")]
    CloneEventFd {
        gsi: u32,
        #[source]
        source: io::Error,
    },
}

/// One interrupt input (a GSI, i.e. an IOAPIC pin on a PC).
#[derive(Debug)]
pub struct IrqLine {
    pub gsi: u32,
    /// Written (any non-zero count) to raise the line.
    pub trigger: EventFd,
    /// For level-triggered lines: written by the interrupt controller when the guest has
    /// acknowledged the interrupt and the line is considered low again.
    pub resample: Option<EventFd>,
}

impl IrqLine {
    /// An edge-triggered line (a pulse per write), like an ISA device's.
    pub fn edge(gsi: u32) -> Result<Self, InterruptError> {
        Ok(Self {
            gsi,
            trigger: EventFd::new(EFD_NONBLOCK)
                .map_err(|source| InterruptError::CreateEventFd { gsi, source })?,
            resample: None,
        })
    }

    /// A line using an existing trigger eventfd (e.g. the one a device already signals).
    pub fn from_eventfd(gsi: u32, trigger: &EventFd) -> Result<Self, InterruptError> {
        Ok(Self {
            gsi,
            trigger: trigger
                .try_clone()
                .map_err(|source| InterruptError::CloneEventFd { gsi, source })?,
            resample: None,
        })
    }

    /// A level-triggered line: asserted by a trigger write until the guest's EOI, then resampled.
    pub fn level(gsi: u32) -> Result<Self, InterruptError> {
        let mut line = Self::edge(gsi)?;
        line.resample = Some(
            EventFd::new(EFD_NONBLOCK)
                .map_err(|source| InterruptError::CreateEventFd { gsi, source })?,
        );
        Ok(line)
    }

    /// Raise the line (for a level line: assert it until the next resample).
    pub fn raise(&self) -> io::Result<()> {
        self.trigger.write(1)
    }
}

/// An MSI as the LAPICs see it (Intel SDM vol. 3, 11.11: address 0xFEEx_xxxx and data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// What a user-space interrupt controller needs from the hypervisor: deliver an MSI now, and keep
/// the kernel's per-GSI MSI routes (which tell the in-kernel LAPICs which vectors need an EOI
/// exit) in step with the guest's programming.
pub trait MsiController: Send + Sync {
    fn signal_msi(&self, msi: MsiMessage) -> io::Result<()>;
    /// Replace the whole MSI route table with `routes` (GSI, message).
    fn set_msi_routes(&self, routes: &[(u32, MsiMessage)]) -> io::Result<()>;
}
