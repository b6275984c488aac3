//! The ATA/ATAPI drive model behind both storage controllers, driven the way a guest drives it:
//! PIIX IDE (task-file registers, device control, bus-master DMA with PRD tables in guest
//! memory) and ICH9 AHCI (HBA and port registers, command lists, FISes and PRDTs in guest
//! memory, the index/data pair), each with a disk and a CD-ROM, plus their PCI config space
//! (bus mastering, BARs).
//!
//! Input: a u16 length and that many bytes of guest memory, then accesses
//! ([`rvmm_fuzz::Access`]) on: 0-1 IDE primary command/control, 2-3 secondary, 4 BMDMA, 5 IDE
//! config space, 6 AHCI ABAR, 7 AHCI index/data, 8 AHCI config space.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::pci::{PciDevice, PciRegion};
use rvmm_devices::storage::*;
use rvmm_devices::BusDevice;
use rvmm_fuzz::{guest_memory, Access, MemDisk, Reader};
use std::sync::Arc;

const MEM_SIZE: usize = 0x1_0000;

fn drive(cdrom: bool, n: u32) -> AtaDrive {
    if cdrom {
        AtaDrive::cdrom(
            Some(Arc::new(MemDisk::new(16 * CD_SECTOR_SIZE as usize, true))),
            DriveIdentity::qemu(n),
        )
    } else {
        AtaDrive::disk(
            Arc::new(MemDisk::new(128 * SECTOR_SIZE as usize, false)),
            DriveIdentity::qemu(n),
        )
    }
}

/// A config-space access: dword register from the offset, byte lanes from its low bits.
fn config(dev: &dyn PciDevice, a: &Access) {
    let reg = (a.offset as usize >> 2) % 64;
    let lane = a.offset as usize & 3;
    if a.write {
        let len = a.len.min(4 - lane);
        let _ = dev.config_write(reg, lane, &a.data[..len]);
    } else {
        let _ = dev.config_read(reg);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let init_len = usize::from(r.u16());
    let mem = guest_memory(MEM_SIZE, r.take(init_len));
    let ide = PiixIde::new(mem.clone()).expect("PIIX IDE");
    ide.attach(0, 0, drive(false, 0)).unwrap();
    ide.attach(1, 0, drive(true, 2)).unwrap();
    let ahci = Ahci::new(mem).expect("AHCI");
    ahci.attach(0, drive(false, 0)).unwrap();
    ahci.attach(1, drive(true, 1)).unwrap();
    let ports: [(Arc<dyn BusDevice>, u64); 7] = [
        (ide.command_block(0).unwrap(), 8),
        (ide.control_block(0).unwrap(), 1),
        (ide.command_block(1).unwrap(), 8),
        (ide.control_block(1).unwrap(), 1),
        (
            ide.region_device(PciRegion::Bar(4)).unwrap(),
            IDE_BMDMA_SIZE,
        ),
        (
            ahci.region_device(PciRegion::Bar(5)).unwrap(),
            AHCI_ABAR_SIZE,
        ),
        (
            ahci.region_device(PciRegion::Bar(4)).unwrap(),
            AHCI_IDP_SIZE,
        ),
    ];
    let mut budget = 4096;
    while let Some(a) = Access::next(&mut r) {
        match a.device % 9 {
            5 => config(&ide, &a),
            8 => config(&ahci, &a),
            d => {
                let i = usize::from(if d > 5 { d - 1 } else { d });
                let (dev, len) = &ports[i];
                a.apply(dev.as_ref(), *len);
            }
        }
        budget -= 1;
        if budget == 0 {
            break;
        }
    }
});
