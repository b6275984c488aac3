//! The virtio transports' registers as a driver (or a hostile guest) reaches them: virtio-mmio's
//! register block, and virtio-pci's configuration space (vendor capabilities, the PCI-cfg
//! access window, MSI-X capability), BAR4 (common configuration, ISR, device configuration,
//! notify), BAR1 (the MSI-X table and PBA) and BAR0 (the legacy interface of a transitional
//! function). Feature negotiation, queue setup (sizes, addresses anywhere, enable/disable),
//! vector assignment, status changes, resets and activation are all the input's. The device
//! behind each transport is a stand-in with no worker thread: on activation it keeps its queues,
//! and a "kick" serves whatever the input's rings hold with virtio-rng's request handler, so
//! queues the transports accepted are walked as a worker would.
//!
//! Input: flags (bit 0: transitional PCI function; bits 1-2: MSI-X vectors 0-3; bits 3-4:
//! device type net, blk, rng, console), a u16 count of guest-memory bytes (at most 4096) and
//! those bytes, then accesses ([`rvmm_fuzz::Access`]) on: 0 virtio-mmio, 1 PCI config space
//! (1/2/4 bytes, aligned), 2 BAR4, 3 BAR1 (MSI-X), 4 BAR0 (legacy), 5 kick both devices' queues,
//! 6 a PCI function reset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::pci::{MsiRoutes, MsixVector, PciDevice, PciRegion};
use rvmm_devices::virtio::pci::{VirtioPciTransport, LEGACY_BAR, MODERN_BAR, MSIX_BAR};
use rvmm_devices::virtio::{
    process_queue, rng, ActivateContext, DeviceCounters, MmioTransport, VirtioDevice, VirtioError,
    VIRTIO_MMIO_SIZE,
};
use rvmm_devices::{BusDevice, MsiMessage};
use rvmm_fuzz::{guest_memory, Access, Reader};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 0x1_0000;

/// What the stand-in device kept from its activation.
type Active = Arc<Mutex<Option<ActivateContext>>>;

/// A virtio device with no worker: it offers the common features and two queues, has 16 bytes
/// of writable configuration, and hands its queues to the fuzz loop on activation.
struct Stub {
    device_type: u32,
    config: [u8; 16],
    active: Active,
    counters: Arc<DeviceCounters>,
}

impl VirtioDevice for Stub {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn name(&self) -> &'static str {
        "fuzz-stub"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[8, 256]
    }

    fn features(&self) -> u64 {
        // VERSION_1, RING_INDIRECT_DESC, RING_EVENT_IDX and a device bit.
        (1 << 32) | (1 << 28) | (1 << 29) | 1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn config_size(&self) -> usize {
        self.config.len()
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get_mut(o))
            {
                *c = *b;
            }
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        *self.active.lock().unwrap() = Some(ctx);
        Ok(())
    }

    fn reset(&mut self) {
        *self.active.lock().unwrap() = None;
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }
}

fn stub(device_type: u32) -> (Box<dyn VirtioDevice>, Active) {
    let active = Active::default();
    let dev = Stub {
        device_type,
        config: [0; 16],
        active: active.clone(),
        counters: Arc::default(),
    };
    (Box::new(dev), active)
}

/// MSI routes go nowhere.
struct NoRoutes;

impl MsiRoutes for NoRoutes {
    fn set_msi_route(&self, _gsi: u32, _msg: Option<MsiMessage>) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves every queue of an activated stand-in, as a worker woken by a notification would.
fn kick(active: &Active) {
    let mut guard = active.lock().unwrap();
    let Some(ctx) = guard.as_mut() else {
        return;
    };
    let counters = DeviceCounters::default();
    let mem = ctx.mem.clone();
    for (index, q) in ctx.queues.iter_mut().enumerate() {
        let _ = process_queue(&mut q.queue, index, &mem, &ctx.interrupt, |chain| {
            rng::handle_request(&mem, &counters, chain)
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let transitional = flags & 1 != 0;
    let nvectors = usize::from((flags >> 1) & 3);
    let device_type = [1, 2, 4, 3][usize::from((flags >> 3) & 3)];
    let init_len = usize::from(r.u16()).min(4096);
    let mem = Arc::new(guest_memory(MEM_SIZE, r.take(init_len)));

    let (mmio_dev, mmio_active) = stub(device_type);
    let Ok(mmio) = MmioTransport::new(mmio_dev, mem.clone()) else {
        return;
    };
    let (pci_dev, pci_active) = stub(device_type);
    let Ok(vectors) = (0..nvectors)
        .map(|i| {
            EventFd::new(EFD_NONBLOCK).map(|irqfd| MsixVector {
                gsi: 24 + i as u32,
                irqfd,
            })
        })
        .collect::<std::io::Result<Vec<_>>>()
    else {
        return;
    };
    let Ok(pci) = VirtioPciTransport::new(
        pci_dev,
        mem.clone(),
        vectors,
        Arc::new(NoRoutes),
        transitional,
    ) else {
        return;
    };
    let pci = Arc::new(pci);
    let size_of = |bar: u8| {
        pci.regions()
            .iter()
            .find(|(region, _, _)| *region == PciRegion::Bar(bar))
            .map(|(_, _, size)| *size)
    };
    let bars: Vec<(Arc<dyn BusDevice>, u64)> = [MODERN_BAR, MSIX_BAR, LEGACY_BAR]
        .iter()
        .filter_map(|&bar| Some((pci.region_device(PciRegion::Bar(bar))?, size_of(bar)?)))
        .collect();

    let mut n = 0;
    while let Some(a) = Access::next(&mut r) {
        // A bound on the work per input, so one input never runs for seconds.
        n += 1;
        if n > 512 {
            break;
        }
        match a.device % 7 {
            0 => a.apply(&mmio, VIRTIO_MMIO_SIZE),
            1 => {
                // What 0xCFC and ECAM hand a function: 1, 2 or 4 bytes inside one dword.
                let len = [1, 2, 4][a.len % 3];
                let offset = (a.offset % 4096) as usize & !(len - 1);
                let (reg, within) = (offset / 4, offset % 4);
                if a.write {
                    let _ = pci.config_write(reg, within, &a.data[..len]);
                } else {
                    let _ = pci.config_read(reg);
                }
            }
            d @ 2..=4 => {
                if let Some((dev, size)) = bars.get(usize::from(d - 2)) {
                    a.apply(dev.as_ref(), *size);
                }
            }
            5 => {
                kick(&mmio_active);
                kick(&pci_active);
            }
            _ => {
                let _ = pci.reset();
            }
        }
    }
    mmio.shutdown();
    pci.shutdown();
});
