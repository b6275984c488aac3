//! `-device qemu-xhci` on pc and q35: the xHCI controller (crates/devices/src/usb) at its
//! `addr=` or the first free slot, its 16 MSI-X vectors as irqfds on GSIs of their own (after
//! the virtio-pci functions' ones), INTA# as a level line through the machine's PCI routing.

use std::sync::Arc;

use rvmm_cli::XhciConfig;
use rvmm_devices::pci::{MsiRoutes, MsixVector};
use rvmm_devices::usb::xhci_regs::INTERRUPTERS;
use rvmm_devices::usb::Xhci;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::pci::{PciFunctionParts, RegionParts};
use super::{DeviceManager, DeviceManagerError};
use crate::interrupts::Resampler;

/// The controllers' interrupt lines and their resamplers.
#[derive(Default)]
pub struct Usb {
    pub lines: Vec<rvmm_devices::IrqLine>,
    pub resamplers: Vec<Resampler>,
}

/// Attach every `qemu-xhci`; MSI-X vectors take GSIs from `first_gsi`.
pub fn attach_xhci(
    dm: &DeviceManager,
    configs: &[XhciConfig],
    mem: &Arc<GuestMemoryMmap>,
) -> Result<Usb, DeviceManagerError> {
    let mut out = Usb::default();
    let name = "qemu-xhci";
    let io = |what: &'static str| {
        move |source| DeviceManagerError::Io {
            name: format!("{name}: {what}"),
            source,
        }
    };
    let routes: Arc<dyn MsiRoutes> = Arc::new(crate::virtio_pci::KvmMsiRoutes(dm.vm().clone()));
    for (n, cfg) in configs.iter().enumerate() {
        let mut vectors = Vec::with_capacity(INTERRUPTERS);
        for _ in 0..INTERRUPTERS {
            // After every GSI handed out so far (root ports, virtio-pci), whose routes come later.
            let next_gsi = dm
                .allocate_msi_gsi()
                .ok_or_else(|| DeviceManagerError::Io {
                    name: name.into(),
                    source: std::io::Error::other("no free GSI for an MSI-X vector"),
                })?;
            let irqfd = EventFd::new(EFD_NONBLOCK).map_err(io("MSI-X eventfd"))?;
            dm.vm().register_irqfd(&irqfd, next_gsi).map_err(|source| {
                DeviceManagerError::Hypervisor {
                    name: format!("{name}: MSI-X irqfd on GSI {next_gsi}"),
                    source,
                }
            })?;
            vectors.push(MsixVector {
                gsi: next_gsi,
                irqfd,
            });
        }
        let xhci = Arc::new(
            Xhci::new(cfg.p2, cfg.p3, mem.clone(), vectors, routes.clone()).map_err(|source| {
                DeviceManagerError::PciConfig {
                    name: name.into(),
                    source,
                }
            })?,
        );
        let regions = xhci
            .regions()
            .into_iter()
            .filter_map(|(region, space, size)| {
                Some(RegionParts {
                    region,
                    space,
                    size,
                    device: xhci.region_device(region)?,
                    ioevents: Vec::new(),
                    memory: None,
                })
            })
            .collect();
        // Functions of one type share their names in the state registry: number them.
        let label = if n == 0 {
            name.to_string()
        } else {
            format!("{name}#{n}")
        };
        for (region, _, _) in xhci.regions() {
            dm.states()
                .register_stateless(&format!("{label} {region:?}"));
        }
        let ids = dm.add_pci_on(
            cfg.bus.as_deref(),
            cfg.addr,
            PciFunctionParts {
                name: label.clone(),
                config: xhci.clone(),
                regions,
            },
        )?;
        dm.states().register(&label, xhci.clone());
        let gsi = dm
            .pci_intx_gsi(ids.loc, 1)
            .ok_or_else(|| DeviceManagerError::NoPciBus { name: name.into() })?;
        let line = xhci
            .intx_line(gsi)
            .map_err(|source| DeviceManagerError::Interrupt {
                name: name.into(),
                source,
            })?;
        if let Some(evt) = line.resample.as_ref() {
            let x = xhci.clone();
            out.resamplers.push(Resampler::new(
                evt.try_clone().map_err(io("INTx resample eventfd"))?,
                Box::new(move || x.resample()),
            ));
        }
        out.lines.push(line);
        tracing::debug!(loc = ?ids.loc, intx = gsi, "qemu-xhci");
    }
    Ok(out)
}
