//! PCI configuration space as the guest reaches it: the 0xCF8/0xCFC mechanism and the q35 ECAM
//! window over bus 0 with the host bridge, the chipset functions (PIIX3 and PIIX4 PM, or ICH9
//! LPC and SMBus), pci-testdev (with its BARs' registers) and a function with every kind of region
//! and capability (64-bit prefetchable BAR, I/O BAR, ROM, capabilities with write masks, PCIe
//! extended space), and on q35 two `pcie-root-port`s (nested: one behind the other) with a
//! function behind the inner one, so the guest's bus numbering routes config cycles. BAR moves
//! are applied to nothing; config writes and resets are the input.
//!
//! Input: flags (bit 0: q35 instead of pc), then accesses ([`rvmm_fuzz::Access`]) on: 0 the
//! config ports, 1 ECAM, 2 testdev BAR0, 3 testdev BAR1, 4 a bus reset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::chipset::{Ich9Lpc, Ich9Smbus, Piix3, Piix4Pm};
use rvmm_devices::pci::*;
use rvmm_fuzz::{Access, NoVmControl, Reader};
use std::sync::{Arc, Mutex, RwLock};

/// A function built from `PciConfig` directly, with every region and capability kind.
struct RawFunction(Mutex<PciConfig>);

impl RawFunction {
    fn new(express: bool) -> Self {
        let id = PciIdentity {
            vendor: 0x1af4,
            device: 0x1000,
            class: 0x02,
            subclass: 0,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 1,
        };
        let mut c = if express {
            PciConfig::new_express(&id)
        } else {
            PciConfig::new(&id)
        };
        let bar = |size, kind, prefetchable| BarSpec {
            size,
            kind,
            prefetchable,
        };
        c.add_bar(0, bar(0x40, BarKind::Io, false)).unwrap();
        c.add_bar(1, bar(0x1000, BarKind::Mem32, false)).unwrap();
        c.add_bar(2, bar(1 << 33, BarKind::Mem64, true)).unwrap();
        c.add_rom(0x10000).unwrap();
        c.add_capability(0x09, &[0xaa; 6]).unwrap();
        c.add_capability_with_mask(0x05, &[0; 12], &[0xff; 12])
            .unwrap();
        c.set_interrupt_pin(1);
        c.set_multifunction();
        Self(Mutex::new(c))
    }
}

impl PciDevice for RawFunction {
    fn config_read(&self, reg: usize) -> u32 {
        self.0.lock().unwrap().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        self.0.lock().unwrap().write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        self.0.lock().unwrap().reset()
    }
}

/// MSI routes that go nowhere.
struct NoRoutes;

impl MsiRoutes for NoRoutes {
    fn set_msi_route(
        &self,
        _gsi: u32,
        _msg: Option<rvmm_devices::MsiMessage>,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads back what moved, as the VMM's relocator does (it may read config space).
struct Relocator(Arc<RwLock<Vec<BarChange>>>);

impl BarRelocation for Relocator {
    fn relocate(&self, _loc: PciLoc, changes: &[BarChange]) {
        let mut log = self.0.write().unwrap();
        log.clear();
        log.extend_from_slice(changes);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let q35 = r.u8() & 1 != 0;
    let testdev = Arc::new(PciTestdev::with_membar(0x1000).unwrap());
    let _ = testdev.add_rom(0x800);
    let mut bus = PciBus::new();
    if q35 {
        bus.add_device(0, 0, Arc::new(HostBridge::new(HostBridgeKind::Q35)))
            .unwrap();
        bus.add_device(0x1f, 0, Arc::new(Ich9Lpc::new(None)))
            .unwrap();
        bus.add_device(0x1f, 3, Arc::new(Ich9Smbus::new())).unwrap();
        // Root ports whose slots' events raise an MSI-X vector nobody routes.
        let port = |n: u8| {
            let vector = MsixVector {
                gsi: 24 + u32::from(n),
                irqfd: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
            };
            let msix = Arc::new(Msix::new(vec![vector], Arc::new(NoRoutes)));
            let spec = RootPortSpec {
                port: n,
                slot: u16::from(n),
                multifunction: false,
            };
            Arc::new(PcieRootPort::new(spec, msix).unwrap())
        };
        let outer = bus.add_device_on(0, 5, 0, port(0)).unwrap();
        let below = bus.add_secondary_bus(outer).unwrap();
        let inner = bus.add_device_on(below, 0, 0, port(1)).unwrap();
        let below = bus.add_secondary_bus(inner).unwrap();
        bus.add_device_on(below, 0, 0, Arc::new(RawFunction::new(true)))
            .unwrap();
    } else {
        bus.add_device(0, 0, Arc::new(HostBridge::new(HostBridgeKind::I440fx)))
            .unwrap();
        bus.add_device(1, 0, Arc::new(Piix3::new())).unwrap();
        bus.add_device(1, 3, Arc::new(Piix4Pm::new(None))).unwrap();
    }
    bus.add_device(2, 0, testdev.clone()).unwrap();
    bus.add_device(3, 0, Arc::new(RawFunction::new(false)))
        .unwrap();
    bus.add_device(4, 0, Arc::new(RawFunction::new(true)))
        .unwrap();
    bus.set_relocation(Arc::new(Relocator(Arc::default())));
    let bus = Arc::new(RwLock::new(bus));
    let io = PciConfigIo::new(bus.clone(), Arc::new(NoVmControl));
    let ecam = PciConfigMmio::new(bus.clone());
    let bar0 = testdev.region_device(PciRegion::Bar(0)).unwrap();
    let bar1 = testdev.region_device(PciRegion::Bar(1)).unwrap();
    let mut budget = 4096;
    while let Some(access) = Access::next(&mut r) {
        match access.device % 5 {
            0 => access.apply(&io, PCI_CONFIG_IO_LEN),
            1 => access.apply(&ecam, Q35_ECAM_LEN),
            2 => access.apply(bar0.as_ref(), PCI_TESTDEV_MMIO_SIZE),
            3 => access.apply(bar1.as_ref(), PCI_TESTDEV_PORTIO_SIZE),
            _ => bus.read().unwrap().reset_devices(),
        }
        budget -= 1;
        if budget == 0 {
            break;
        }
    }
    let _ = testdev.regions();
});
