//! Unit tests of the PIIX IDE channels through their ports.

use super::*;
use crate::storage::testing::{MemBackend, Rng};
use crate::storage::DriveIdentity;
use vm_memory::{Bytes, GuestAddress};

const MEM: usize = 1 << 20;

struct Rig {
    ide: PiixIde,
    mem: GuestMemoryMmap,
    cmd: [Arc<dyn BusDevice>; 2],
    ctl: [Arc<dyn BusDevice>; 2],
    bm: Arc<dyn BusDevice>,
    irq: [IrqLine; 2],
    disk: Arc<MemBackend>,
}

impl Rig {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let ide = PiixIde::new(mem.clone()).unwrap();
        let disk = Arc::new(MemBackend::patterned(512 * 1024));
        ide.attach(0, 0, AtaDrive::disk(disk.clone(), DriveIdentity::qemu(1)))
            .unwrap();
        let cd: Arc<dyn BlockBackend> = Arc::new(MemBackend::patterned(2048 * 16));
        ide.attach(1, 0, AtaDrive::cdrom(Some(cd), DriveIdentity::qemu(2)))
            .unwrap();
        let irq = [ide.irq_line(0, 14).unwrap(), ide.irq_line(1, 15).unwrap()];
        Self {
            cmd: [ide.command_block(0).unwrap(), ide.command_block(1).unwrap()],
            ctl: [ide.control_block(0).unwrap(), ide.control_block(1).unwrap()],
            bm: ide.region_device(PciRegion::Bar(4)).unwrap(),
            ide,
            mem,
            irq,
            disk,
        }
    }

    fn outb(&self, ch: usize, reg: u64, v: u8) {
        self.cmd[ch].write(reg, &[v]);
    }

    fn inb(&self, ch: usize, reg: u64) -> u8 {
        let mut b = [0u8; 1];
        self.cmd[ch].read(reg, &mut b);
        b[0]
    }

    fn inw(&self, ch: usize) -> u16 {
        let mut b = [0u8; 2];
        self.cmd[ch].read(0, &mut b);
        u16::from_le_bytes(b)
    }

    fn alt(&self, ch: usize) -> u8 {
        let mut b = [0u8; 1];
        self.ctl[ch].read(0, &mut b);
        b[0]
    }

    /// Interrupts delivered on `ch` since the last call.
    fn irqs(&self, ch: usize) -> u64 {
        self.irq[ch].trigger.read().unwrap_or(0)
    }

    fn lba28(&self, ch: usize, lba: u32, count: u8) {
        self.outb(ch, 2, count);
        self.outb(ch, 3, lba as u8);
        self.outb(ch, 4, (lba >> 8) as u8);
        self.outb(ch, 5, (lba >> 16) as u8);
        self.outb(ch, 6, 0xe0 | ((lba >> 24) as u8 & 0xf));
    }

    fn read_pio(&self, ch: usize, bytes: usize) -> Vec<u8> {
        (0..bytes / 2)
            .flat_map(|_| self.inw(ch).to_le_bytes())
            .collect()
    }
}

#[test]
fn pci_function() {
    let rig = Rig::new();
    let ide = &rig.ide;
    assert_eq!(ide.config_read(0), 0x7010_8086);
    assert_eq!(ide.config_read(2), 0x0101_8000);
    assert_eq!(ide.config_read(1) >> 16, 0x0280);
    assert_eq!(ide.regions(), vec![(PciRegion::Bar(4), PciSpace::Io, 16)]);
    for bar in 4..8 {
        assert_eq!(ide.config_read(bar), 0, "BAR0-3 absent");
    }
    ide.config_write(0x40 / 4, 0, &[0x00, 0x80, 0x00, 0x80]);
    assert_eq!(ide.config_read(0x40 / 4), 0x8000_8000, "IDETIM writable");
}

#[test]
fn signatures_and_absent_devices() {
    let rig = Rig::new();
    assert_eq!(rig.inb(0, 7), 0x50);
    assert_eq!(
        (rig.inb(0, 2), rig.inb(0, 3), rig.inb(0, 4), rig.inb(0, 5)),
        (1, 1, 0, 0)
    );
    assert_eq!(
        (rig.inb(1, 4), rig.inb(1, 5)),
        (0x14, 0xeb),
        "ATAPI signature"
    );
    // The slave is absent: status 0, task-file latches read back.
    rig.outb(0, 6, 0xb0);
    assert_eq!(rig.inb(0, 7), 0);
    rig.outb(0, 2, 0x55);
    assert_eq!(rig.inb(0, 2), 0x55);
    // Commands to an absent device do nothing.
    rig.outb(0, 7, 0xec);
    assert_eq!(rig.irqs(0), 0);
    // Software reset re-selects the master and restores the signature.
    rig.outb(0, 6, 0xa0);
    rig.outb(0, 4, 0x12);
    rig.ctl[0].write(0, &[0x04]);
    rig.ctl[0].write(0, &[0x00]);
    assert_eq!((rig.inb(0, 4), rig.inb(0, 7)), (0, 0x50));
    assert_eq!(rig.inb(0, 1), 0x01, "diagnostic code: passed");
    rig.outb(0, 6, 0xb0);
    assert_eq!(
        (rig.inb(0, 4), rig.inb(0, 5), rig.inb(0, 7)),
        (0xff, 0xff, 0)
    );
}

#[test]
fn identify_by_pio_with_interrupts() {
    let rig = Rig::new();
    rig.outb(0, 6, 0xa0);
    rig.outb(0, 7, 0xec);
    assert_eq!(rig.irqs(0), 1);
    assert_eq!(rig.alt(0), 0x58, "DRDY DSC DRQ");
    assert_eq!(rig.inb(0, 7), 0x58);
    let id = rig.read_pio(0, 512);
    assert_eq!(&id[54..58], b"EQUM");
    assert_eq!(rig.alt(0), 0x50);
    assert_eq!(rig.irqs(0), 0, "no interrupt at the end of PIO-in");
    // Writing the command register deasserts INTRQ (ATA8-APT), so the next command interrupts.
    rig.outb(0, 7, 0xec);
    assert_eq!(rig.irqs(0), 1);
    rig.read_pio(0, 512);
    rig.inb(0, 7);
    // nIEN masks the interrupt.
    rig.ctl[0].write(0, &[0x02]);
    rig.outb(0, 7, 0xec);
    assert_eq!(rig.irqs(0), 0);
    rig.read_pio(0, 512);
}

#[test]
fn lba48_registers_and_hob_readback() {
    let rig = Rig::new();
    // Sector 0x100 (in the second byte of LBA), 2 sectors, written as HOB then low bytes.
    for (reg, hob, low) in [(2u64, 0u8, 2u8), (3, 0, 0), (4, 0, 1), (5, 0, 0)] {
        rig.outb(0, reg, hob);
        rig.outb(0, reg, low);
    }
    rig.outb(0, 6, 0x40);
    rig.outb(0, 2, 2);
    rig.outb(0, 2, 2);
    rig.ctl[0].write(0, &[0x80]);
    assert_eq!(rig.inb(0, 2), 2, "HOB byte of the count");
    rig.ctl[0].write(0, &[0x00]);
    rig.outb(0, 7, 0x24);
    assert_eq!(rig.irqs(0), 1);
    // The interrupt handler's status read acknowledges INTRQ, so the next block raises it.
    assert_eq!(rig.inb(0, 7), 0x58);
    let data = rig.read_pio(0, 512);
    assert_eq!(rig.irqs(0), 1, "second block");
    let more = rig.read_pio(0, 512);
    let disk = rig.disk.data.lock().unwrap();
    assert_eq!(data, disk[0x100 * 512..0x101 * 512]);
    assert_eq!(more, disk[0x101 * 512..0x102 * 512]);
}

#[test]
fn write_sectors_with_32_bit_port_io() {
    let rig = Rig::new();
    rig.lba28(0, 7, 1);
    rig.outb(0, 7, 0x30);
    assert_eq!(rig.irqs(0), 0, "data-out waits without an interrupt");
    for i in 0..128u32 {
        rig.cmd[0].write(0, &(i * 0x0101_0101).to_le_bytes());
    }
    assert_eq!(rig.irqs(0), 1, "completion interrupt");
    assert_eq!(rig.inb(0, 7), 0x50);
    let disk = rig.disk.data.lock().unwrap();
    assert_eq!(disk[7 * 512..7 * 512 + 8], [0, 0, 0, 0, 1, 1, 1, 1]);
}

#[test]
fn atapi_pio_packet() {
    let rig = Rig::new();
    rig.outb(1, 6, 0xa0);
    rig.outb(1, 1, 0);
    rig.outb(1, 4, 0x00);
    rig.outb(1, 5, 0x08);
    rig.outb(1, 7, 0xa0);
    assert_eq!(rig.inb(1, 2) & 3, 1, "CoD: waiting for the packet");
    let cdb = [0x28u8, 0, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0];
    for w in cdb.chunks(2) {
        rig.cmd[1].write(0, w);
    }
    assert_eq!(rig.irqs(1), 1);
    assert_eq!(rig.inb(1, 7), 0x58);
    assert_eq!(rig.inb(1, 2) & 3, 2, "IO: data to the host");
    assert_eq!(
        (rig.inb(1, 4), rig.inb(1, 5)),
        (0x00, 0x08),
        "byte count 2048"
    );
    let data = rig.read_pio(1, 2048);
    assert_eq!(data[0], ((2 * 2048) % 251) as u8);
    assert_eq!(rig.irqs(1), 1, "status phase interrupt");
    assert_eq!(rig.inb(1, 2) & 3, 3);
    assert_eq!(rig.inb(1, 7), 0x50);
    // An ATAPI DMA command that fails before any data still latches the BM interrupt bit.
    rig.outb(1, 1, 1);
    rig.outb(1, 7, 0xa0);
    for w in [0x1au16, 0, 0, 0, 0, 0] {
        rig.cmd[1].write(0, &w.to_le_bytes());
    }
    assert_eq!(rig.irqs(1), 1);
    let mut st = [0u8; 1];
    rig.bm.read(10, &mut st);
    assert_eq!(st[0] & 4, 4);
    assert_eq!(rig.inb(1, 7) & 1, 1);
}

fn prd(rig: &Rig, table: u64, entries: &[(u32, u16, bool)]) {
    for (i, (addr, len, last)) in entries.iter().enumerate() {
        let mut e = [0u8; 8];
        e[0..4].copy_from_slice(&addr.to_le_bytes());
        e[4..6].copy_from_slice(&len.to_le_bytes());
        e[7] = if *last { 0x80 } else { 0 };
        rig.mem
            .write_slice(&e, GuestAddress(table + 8 * i as u64))
            .unwrap();
    }
    rig.bm.write(4, &(table as u32).to_le_bytes());
}

#[test]
fn bus_master_dma_read_and_write() {
    let rig = Rig::new();
    prd(&rig, 0x1000, &[(0x10000, 1024, false), (0x20000, 0, true)]);
    // READ DMA of 3 sectors: command first, then start the engine (Linux's order).
    rig.lba28(0, 4, 3);
    rig.outb(0, 7, 0xc8);
    assert_eq!(rig.irqs(0), 0);
    rig.bm.write(0, &[0x09]);
    assert_eq!(rig.irqs(0), 1);
    let mut st = [0u8; 1];
    rig.bm.read(2, &mut st);
    assert_eq!(st[0] & 7, 0x04, "interrupt, not active, no error");
    assert_eq!(rig.inb(0, 7), 0x50);
    let mut got = vec![0u8; 1536];
    rig.mem
        .read_slice(&mut got[..1024], GuestAddress(0x10000))
        .unwrap();
    rig.mem
        .read_slice(&mut got[1024..], GuestAddress(0x20000))
        .unwrap();
    assert_eq!(got, rig.disk.data.lock().unwrap()[4 * 512..7 * 512]);
    rig.bm.write(2, &[0x04]);
    rig.bm.write(0, &[0x00]);
    // WRITE DMA with the engine started first.
    prd(&rig, 0x1000, &[(0x30000, 512, true)]);
    rig.mem
        .write_slice(&[0xab; 512], GuestAddress(0x30000))
        .unwrap();
    rig.bm.write(0, &[0x01]);
    rig.lba28(0, 9, 1);
    rig.outb(0, 7, 0xca);
    assert_eq!(rig.irqs(0), 1);
    assert_eq!(
        rig.disk.data.lock().unwrap()[9 * 512..10 * 512],
        [0xab; 512]
    );
}

#[test]
fn bus_master_errors() {
    let rig = Rig::new();
    prd(&rig, 0x1000, &[(MEM as u32 + 0x1000, 512, true)]);
    rig.lba28(0, 0, 1);
    rig.outb(0, 7, 0xc8);
    rig.bm.write(0, &[0x09]);
    let mut st = [0u8; 1];
    rig.bm.read(2, &mut st);
    assert_eq!(st[0] & 2, 2, "BM error");
    assert_eq!(rig.inb(0, 7) & 1, 1, "drive error");
    // A PRD table shorter than the transfer.
    rig.bm.write(2, &[0x06]);
    rig.bm.write(0, &[0x00]);
    prd(&rig, 0x1000, &[(0x10000, 512, true)]);
    rig.lba28(0, 0, 2);
    rig.outb(0, 7, 0xc8);
    rig.bm.write(0, &[0x09]);
    rig.bm.read(2, &mut st);
    assert_eq!(st[0] & 2, 2);
}

#[test]
fn random_port_io_never_panics() {
    let rig = Rig::new();
    let mut rng = Rng(99);
    let noise: Vec<u8> = (0..0x40000).map(|_| rng.byte()).collect();
    rig.mem.write_slice(&noise, GuestAddress(0)).unwrap();
    for _ in 0..50_000 {
        let ch = (rng.next() % 2) as usize;
        let len = [1usize, 2, 4][(rng.next() % 3) as usize];
        let v = rng.next().to_le_bytes();
        let mut buf = [0u8; 4];
        match rng.next() % 8 {
            0 => rig.ctl[ch].write(0, &v[..1]),
            1 => rig.ctl[ch].read(0, &mut buf[..1]),
            2 => rig.bm.write(rng.next() % 16, &v[..len]),
            3 => rig.bm.read(rng.next() % 16, &mut buf[..len]),
            4 | 5 => rig.cmd[ch].write(rng.next() % 8, &v[..len]),
            _ => rig.cmd[ch].read(rng.next() % 8, &mut buf[..len]),
        }
    }
    rig.ide.reset();
    assert_eq!(rig.inb(0, 7), 0x50);
}
