//! Connect device interrupt lines to the interrupt controller of the chosen irqchip mode.
//!
//! `kernel-irqchip=on`: each line's eventfd is an irqfd on its GSI (the in-kernel PIC/IOAPIC).
//! Split (microvm's default): the user-space IOAPIC is on the MMIO bus, an "irq" thread waits on every
//! line's eventfd and sets the IOAPIC pin, which delivers MSIs with KVM_SIGNAL_MSI; EOIs of
//! level-triggered vectors come back as KVM_EXIT_IOAPIC_EOI on the vCPU threads.

use crate::device_manager::DeviceManagerError;
use crate::VmmError;
use rvmm_devices::legacy::{Ioapic, IOAPIC_PINS};
use rvmm_devices::{IrqLine, MsiController, MsiMessage};
use rvmm_hypervisor::Vm;
use std::sync::Arc;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

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
            .set_msi_routes(&routes)
            .map_err(std::io::Error::other)
    }
}

/// Make `lines` reach the guest: irqfds with the in-kernel irqchip (`ioapic` is None), or the
/// user-space `ioapic` through a thread of its own.
pub fn connect_lines(
    vm: &Vm,
    ioapic: Option<&Arc<Ioapic>>,
    lines: Vec<IrqLine>,
) -> Result<(), VmmError> {
    let Some(ioapic) = ioapic else {
        for line in &lines {
            match &line.resample {
                Some(resample) => {
                    vm.register_irqfd_with_resample(&line.trigger, resample, line.gsi)?
                }
                None => vm.register_irqfd(&line.trigger, line.gsi)?,
            }
        }
        return Ok(());
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
    if lines.is_empty() {
        return Ok(());
    }
    let epoll = Epoll::new().map_err(io_err("epoll_create"))?;
    for (i, line) in lines.iter().enumerate() {
        use std::os::fd::AsRawFd;
        epoll
            .ctl(
                ControlOperation::Add,
                line.trigger.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )
            .map_err(io_err("epoll_ctl(interrupt line)"))?;
    }
    let ioapic = ioapic.clone();
    std::thread::Builder::new()
        .name("irq".into())
        .stack_size(64 * 1024)
        .spawn(move || irq_thread(&epoll, &lines, &ioapic))
        .map_err(io_err("spawn irq thread"))?;
    Ok(())
}

/// Turn eventfd writes into IOAPIC pin changes, for the life of the process.
fn irq_thread(epoll: &Epoll, lines: &[IrqLine], ioapic: &Ioapic) {
    let mut events = vec![EpollEvent::default(); lines.len()];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("rvmm: interrupt thread: epoll_wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let Some(line) = lines.get(ev.data() as usize) else {
                continue;
            };
            // Non-blocking: a spurious wake-up reads EAGAIN and changes nothing.
            if line.trigger.read().is_err() {
                continue;
            }
            let pin = line.gsi as usize;
            if line.resample.is_some() {
                ioapic.set_irq(pin, true);
            } else {
                ioapic.pulse(pin);
            }
        }
    }
}
