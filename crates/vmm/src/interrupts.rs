//! Connect device interrupt lines to the interrupt controller of the chosen irqchip mode.
//!
//! `kernel-irqchip=on`: each line's eventfd is an irqfd on its GSI (the in-kernel PIC/IOAPIC).
//! Split (microvm's default): the user-space IOAPIC is on the MMIO bus, the event loop waits on
//! every line's eventfd and sets the IOAPIC pin, which delivers MSIs with KVM_SIGNAL_MSI; EOIs of
//! level-triggered vectors come back as KVM_EXIT_IOAPIC_EOI on the vCPU threads.

use crate::device_manager::DeviceManagerError;
use crate::VmmError;
use rvmm_devices::legacy::{Ioapic, IOAPIC_PINS};
use rvmm_devices::{IrqLine, MsiController, MsiMessage};
use rvmm_hypervisor::Vm;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// KVM as the IOAPIC's MSI sink.
pub struct KvmMsi(pub Arc<Vm>);

impl MsiController for KvmMsi {
    fn signal_msi(&self, msi: MsiMessage) -> std::io::Result<()> {
        self.0
            .signal_msi(msi.address, msi.data)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }

    fn set_msi_routes(&self, routes: &[(u32, MsiMessage)]) -> std::io::Result<()> {
        let routes: Vec<(u32, u64, u32)> = routes
            .iter()
            .map(|(gsi, m)| (*gsi, m.address, m.data))
            .collect();
        tracing::debug!(?routes, "IOAPIC MSI routes");
        self.0
            .set_msi_routes(0..IOAPIC_PINS as u32, &routes)
            .map_err(std::io::Error::other)
    }
}

/// Make `lines` reach the guest: irqfds with the in-kernel irqchip (`ioapic` is None), or the
/// user-space `ioapic`, through the lines returned for the event loop to serve.
pub fn connect_lines(
    vm: &Vm,
    ioapic: Option<&Arc<Ioapic>>,
    lines: Vec<IrqLine>,
) -> Result<Vec<IoapicLine>, VmmError> {
    let Some(ioapic) = ioapic else {
        for line in &lines {
            match &line.resample {
                Some(resample) => {
                    vm.register_irqfd_with_resample(&line.trigger, resample, line.gsi)?
                }
                None => vm.register_irqfd(&line.trigger, line.gsi)?,
            }
        }
        return Ok(Vec::new());
    };
    let io_err = |what| move |source| VmmError::Io { what, source };
    for line in &lines {
        if line.gsi as usize >= IOAPIC_PINS {
            return Err(DeviceManagerError::IrqPastIoapic {
                gsi: line.gsi,
                pins: IOAPIC_PINS,
            }
            .into());
        }
        if let Some(resample) = &line.resample {
            let evt = resample
                .try_clone()
                .map_err(io_err("dup resample eventfd"))?;
            ioapic.set_resample(line.gsi as usize, evt);
        }
    }
    Ok(lines
        .into_iter()
        .map(|line| IoapicLine {
            line,
            ioapic: ioapic.clone(),
        })
        .collect())
}

/// A device's interrupt line into the user-space IOAPIC, served by the event loop: each write
/// to its eventfd sets (level) or pulses (edge) the pin.
pub struct IoapicLine {
    line: IrqLine,
    ioapic: Arc<Ioapic>,
}

impl IoapicLine {
    pub fn fd(&self) -> RawFd {
        self.line.trigger.as_raw_fd()
    }

    pub fn triggered(&self) {
        // Non-blocking: a spurious wake-up reads EAGAIN and changes nothing.
        if self.line.trigger.read().is_err() {
            return;
        }
        let pin = self.line.gsi as usize;
        if self.line.resample.is_some() {
            self.ioapic.set_irq(pin, true);
        } else {
            self.ioapic.pulse(pin);
        }
    }
}

/// A level-triggered line's end of interrupt, served by the event loop: KVM or the user-space
/// IOAPIC writes `evt` at the guest's EOI, and the device re-raises the line if it still has
/// something pending.
pub struct Resampler {
    evt: EventFd,
    on_eoi: Box<dyn Fn() + Send>,
}

impl Resampler {
    pub fn new(evt: EventFd, on_eoi: Box<dyn Fn() + Send>) -> Self {
        Self { evt, on_eoi }
    }

    pub fn fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }

    pub fn fired(&self) {
        // Non-blocking: a spurious wake-up reads EAGAIN.
        if self.evt.read().is_ok() {
            (self.on_eoi)();
        }
    }
}
