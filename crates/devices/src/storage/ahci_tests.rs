//! Unit tests of the AHCI controller with guest memory and in-memory drives.

use super::*;
use crate::storage::testing::{MemBackend, Rng};
use crate::storage::DriveIdentity;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress};

const MEM: usize = 4 << 20;
const FRE_ST: u32 = (1 << 4) | 1;
const DATA: u64 = 0x20_0000;

struct Rig {
    ahci: Ahci,
    mem: GuestMemoryMmap,
    abar: Arc<dyn BusDevice>,
    disk: Arc<MemBackend>,
}

impl Rig {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let ahci = Ahci::new(mem.clone()).unwrap();
        let disk = Arc::new(MemBackend::patterned(1 << 20));
        ahci.attach(0, AtaDrive::disk(disk.clone(), DriveIdentity::qemu(1)))
            .unwrap();
        let cd: Arc<dyn BlockBackend> = Arc::new(MemBackend::patterned(2048 * 64));
        ahci.attach(2, AtaDrive::cdrom(Some(cd), DriveIdentity::qemu(2)))
            .unwrap();
        ahci.attach(3, AtaDrive::cdrom(None, DriveIdentity::qemu(3)))
            .unwrap();
        let abar = ahci.region_device(PciRegion::Bar(5)).unwrap();
        let rig = Self {
            ahci,
            mem,
            abar,
            disk,
        };
        for port in 0..4 {
            rig.start(port);
        }
        rig
    }

    fn r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.abar.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(&self, off: u64, val: u32) {
        self.abar.write(off, &val.to_le_bytes());
    }

    fn preg(port: u64, reg: u64) -> u64 {
        0x100 + port * 0x80 + reg
    }

    fn clb(port: u64) -> u64 {
        0x1000 + port * 0x400
    }

    fn fb(port: u64) -> u64 {
        0x8000 + port * 0x100
    }

    fn start(&self, port: u64) {
        self.w32(Self::preg(port, 0x00), Self::clb(port) as u32);
        self.w32(Self::preg(port, 0x08), Self::fb(port) as u32);
        self.w32(Self::preg(port, 0x18), FRE_ST);
        self.w32(Self::preg(port, 0x10), u32::MAX);
    }

    /// Issue one command in slot 0 with the given FIS and PRDs; returns PRDBC.
    fn issue(&self, port: u64, fis: [u8; 20], acmd: &[u8], prds: &[(u64, u32)]) -> u32 {
        let table = 0x10_0000 + port * 0x1000;
        let header_opts = 5u32 | (u32::from(!acmd.is_empty()) << 5) | ((prds.len() as u32) << 16);
        let mut header = [0u8; 32];
        header[0..4].copy_from_slice(&header_opts.to_le_bytes());
        header[8..12].copy_from_slice(&(table as u32).to_le_bytes());
        self.mem
            .write_slice(&header, GuestAddress(Self::clb(port)))
            .unwrap();
        self.mem.write_slice(&fis, GuestAddress(table)).unwrap();
        let mut cdb = [0u8; 16];
        cdb[..acmd.len()].copy_from_slice(acmd);
        self.mem
            .write_slice(&cdb, GuestAddress(table + 0x40))
            .unwrap();
        for (i, (addr, len)) in prds.iter().enumerate() {
            let mut e = [0u8; 16];
            e[0..8].copy_from_slice(&addr.to_le_bytes());
            e[12..16].copy_from_slice(&(len - 1).to_le_bytes());
            self.mem
                .write_slice(&e, GuestAddress(table + 0x80 + 16 * i as u64))
                .unwrap();
        }
        self.w32(Self::preg(port, 0x38), 1);
        assert_eq!(
            self.r32(Self::preg(port, 0x38)),
            0,
            "CI clears on completion"
        );
        self.mem
            .read_obj::<u32>(GuestAddress(Self::clb(port) + 4))
            .unwrap()
    }

    fn tfd(&self, port: u64) -> u32 {
        self.r32(Self::preg(port, 0x20))
    }

    fn is(&self, port: u64) -> u32 {
        let v = self.r32(Self::preg(port, 0x10));
        self.w32(Self::preg(port, 0x10), v);
        v
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn h2d(cmd: u8, lba: u64, count: u16, feature: u8) -> [u8; 20] {
    let b = lba.to_le_bytes();
    let mut f = [0u8; 20];
    f[0] = 0x27;
    f[1] = 0x80;
    f[2] = cmd;
    f[3] = feature;
    (f[4], f[5], f[6], f[7]) = (b[0], b[1], b[2], 0x40);
    (f[8], f[9], f[10]) = (b[3], b[4], b[5]);
    f[12] = count as u8;
    f[13] = (count >> 8) as u8;
    f
}

#[test]
fn pci_identity_and_capabilities() {
    let rig = Rig::new();
    let a = &rig.ahci;
    assert_eq!(a.config_read(0), 0x2922_8086);
    assert_eq!(a.config_read(2), 0x0106_0102);
    assert_eq!(a.config_read(11), 0x1100_1af4);
    assert_eq!(a.config_read(15) >> 8 & 0xff, 1, "INTA");
    assert_eq!(a.config_read(0x90 / 4) & 0xff, 0x40);
    let regions = a.regions();
    assert!(regions.contains(&(PciRegion::Bar(5), PciSpace::Memory, 0x1000)));
    assert!(regions.contains(&(PciRegion::Bar(4), PciSpace::Io, 32)));
    // Walk the capability list: MSI (64-bit) and SATA.
    let mut ids = Vec::new();
    let mut at = (a.config_read(0x34 / 4) & 0xff) as usize;
    while at != 0 {
        let d = a.config_read(at / 4);
        ids.push(d as u8);
        if d as u8 == 0x05 {
            assert_eq!(d >> 16 & 0x80, 0x80);
        }
        at = (d >> 8 & 0xff) as usize;
    }
    assert_eq!(ids, [0x05, 0x12]);
}

#[test]
fn hba_and_port_registers() {
    let rig = Rig::new();
    let cap = rig.r32(0x00);
    assert_eq!(cap & 0x1f, 5, "six ports");
    assert_eq!(cap >> 8 & 0x1f, 31, "32 slots");
    assert_eq!(cap & (1 << 30), 0, "no NCQ");
    assert_ne!(cap & (1 << 31), 0, "64-bit");
    assert_eq!(rig.r32(0x04), 1 << 31, "AE");
    assert_eq!(rig.r32(0x0c), 0x3f);
    assert_eq!(rig.r32(0x10), 0x0001_0000);
    assert_eq!(rig.r32(Rig::preg(0, 0x28)), 0x113);
    assert_eq!(rig.r32(Rig::preg(1, 0x28)), 0);
    assert_eq!(rig.r32(Rig::preg(0, 0x24)), 0x0000_0101);
    assert_eq!(rig.r32(Rig::preg(2, 0x24)), 0xeb14_0101);
    assert_eq!(rig.r32(Rig::preg(1, 0x24)), 0xffff_ffff);
    let cmd = rig.r32(Rig::preg(0, 0x18));
    assert_eq!(cmd & 0xc011, 0xc011, "ST FRE and CR FR running");
    // The signature FIS reached the received-FIS area once FRE was set.
    assert_eq!(rig.bytes(Rig::fb(0) + 0x40, 1), [0x34]);
    // Byte reads of a register.
    let mut b = [0u8; 1];
    rig.abar.read(0x12, &mut b);
    assert_eq!(b, [1]);
    // Stopping the engine clears CR.
    rig.w32(Rig::preg(0, 0x18), 1 << 4);
    assert_eq!(rig.r32(Rig::preg(0, 0x18)) & (1 << 15), 0);
    // IDP: index 0x10 then data reads VS.
    let idp = rig.ahci.region_device(PciRegion::Bar(4)).unwrap();
    idp.write(0x10, &0x10u32.to_le_bytes());
    let mut v = [0u8; 4];
    idp.read(0x14, &mut v);
    assert_eq!(u32::from_le_bytes(v), 0x0001_0000);
}

#[test]
fn identify_through_pio_setup_fis() {
    let rig = Rig::new();
    let n = rig.issue(0, h2d(0xec, 0, 0, 0), &[], &[(DATA, 512)]);
    assert_eq!(n, 512);
    assert_eq!(rig.tfd(0), 0x50);
    let is = rig.is(0);
    assert_eq!(is & 3, 3, "PIO setup and D2H FIS");
    let ps = rig.bytes(Rig::fb(0) + 0x20, 20);
    assert_eq!(ps[0], 0x5f);
    assert_eq!(ps[2] & 0x48, 0x48, "DRDY and DRQ");
    assert_eq!(ps[15], 0x50, "E_Status");
    let id = rig.bytes(DATA, 512);
    assert_eq!(&id[54..58], b"EQUM");
}

#[test]
fn dma_round_trip_with_scatter_gather() {
    let rig = Rig::new();
    // 200 sectors (100 KiB, more than one drive block) over three PRDs.
    let prds = [
        (DATA, 4096),
        (DATA + 0x10000, 50 * 1024),
        (DATA + 0x40000, 50 * 1024),
    ];
    let payload: Vec<u8> = (0..200 * 512).map(|i| (i * 13 % 256) as u8).collect();
    rig.mem
        .write_slice(&payload[..4096], GuestAddress(DATA))
        .unwrap();
    rig.mem
        .write_slice(&payload[4096..4096 + 51200], GuestAddress(DATA + 0x10000))
        .unwrap();
    rig.mem
        .write_slice(&payload[4096 + 51200..], GuestAddress(DATA + 0x40000))
        .unwrap();
    // WRITE DMA EXT at sector 100, 200 sectors: the three PRDs hold exactly 100 KiB.
    let n = rig.issue(0, h2d(0x35, 100, 200, 0), &[], &prds);
    assert_eq!(n, 200 * 512);
    assert_eq!(rig.tfd(0), 0x50);
    assert_eq!(
        rig.disk.data.lock().unwrap()[100 * 512..300 * 512],
        payload[..]
    );
    // Read it back into one buffer with READ DMA (28-bit).
    let n = rig.issue(0, h2d(0xc8, 100, 200, 0), &[], &[(0x30_0000, 200 * 512)]);
    assert_eq!(n, 200 * 512);
    assert_eq!(rig.bytes(0x30_0000, 200 * 512), payload);
    let is = rig.is(0);
    assert_eq!(is & 3, 1, "DMA: a D2H FIS only");
    // FLUSH CACHE EXT reaches the backend.
    rig.issue(0, h2d(0xea, 0, 0, 0), &[], &[]);
    assert_eq!(rig.disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn atapi_packet_commands() {
    let rig = Rig::new();
    // READ(10) of 2 sectors from LBA 5 by DMA.
    let cdb = [0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0, 0, 0];
    let n = rig.issue(2, h2d(0xa0, 0, 0, 1), &cdb, &[(DATA, 4096)]);
    assert_eq!(n, 4096);
    assert_eq!(rig.tfd(2) & 0xff, 0x50);
    assert_eq!(rig.bytes(DATA, 1), [((5 * 2048) % 251) as u8]);
    // INQUIRY by PIO (byte count limit 0xfffe).
    let n = rig.issue(
        2,
        h2d(0xa0, 0xfffe00, 0, 0),
        &[0x12, 0, 0, 0, 36],
        &[(DATA, 36)],
    );
    assert_eq!(n, 36);
    assert_eq!(&rig.bytes(DATA + 16, 12), b"QEMU DVD-ROM");
    assert_eq!(rig.is(2) & 2, 2, "PIO setup for the PIO data phase");
    // Empty drive: TEST UNIT READY fails with NOT READY in the error register.
    rig.is(3);
    rig.issue(3, h2d(0xa0, 0, 0, 0), &[0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(rig.tfd(3), (0x20 << 8) | 0x41);
    assert_ne!(rig.is(3) & (1 << 30), 0, "task file error");
    // The disk aborts IDENTIFY PACKET; the CD aborts IDENTIFY with its signature.
    rig.issue(0, h2d(0xa1, 0, 0, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0), (0x04 << 8) | 0x41);
    rig.issue(2, h2d(0xec, 0, 0, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(2) >> 8 & 0xff, 0x04);
    let d2h = rig.bytes(Rig::fb(2) + 0x40, 20);
    assert_eq!((d2h[5], d2h[6]), (0x14, 0xeb));
}

#[test]
fn bad_guest_addresses_fail_commands() {
    let rig = Rig::new();
    // A PRD outside RAM.
    rig.is(0);
    rig.issue(0, h2d(0xc8, 0, 1, 0), &[], &[(MEM as u64 + 0x1000, 512)]);
    assert_eq!(rig.tfd(0) & 1, 1);
    assert_ne!(rig.is(0) & (1 << 30), 0);
    // A PRDT shorter than the transfer.
    rig.issue(0, h2d(0xc8, 0, 2, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0) & 1, 1);
    // A write whose data is outside RAM does not reach the disk.
    let before = rig.disk.data.lock().unwrap()[..512].to_vec();
    rig.issue(0, h2d(0xca, 0, 1, 0), &[], &[(u64::MAX - 100, 512)]);
    assert_eq!(rig.tfd(0) & 1, 1);
    assert_eq!(rig.disk.data.lock().unwrap()[..512], before[..]);
    // A command list outside RAM.
    rig.w32(Rig::preg(0, 0x04), 0xffff_ffff);
    rig.w32(Rig::preg(0, 0x38), 1);
    assert_eq!(rig.r32(Rig::preg(0, 0x38)), 0);
    assert_eq!(rig.tfd(0) & 1, 1);
    // Good commands work again afterwards.
    rig.w32(Rig::preg(0, 0x04), 0);
    rig.issue(0, h2d(0xc8, 0, 1, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0), 0x50);
}

/// Issue the command in slot 0 of `port` with a hand-made header: `opts` (DW0) and the command
/// table address `ctba`; returns whether CI cleared.
fn issue_raw(rig: &Rig, port: u64, opts: u32, ctba: u64) -> bool {
    let mut header = [0u8; 32];
    header[0..4].copy_from_slice(&opts.to_le_bytes());
    header[8..16].copy_from_slice(&ctba.to_le_bytes());
    rig.mem
        .write_slice(&header, GuestAddress(Rig::clb(port)))
        .unwrap();
    rig.w32(Rig::preg(port, 0x38), 1);
    rig.r32(Rig::preg(port, 0x38)) == 0
}

#[test]
fn command_tables_outside_ram_fail_commands() {
    let rig = Rig::new();
    // A good READ DMA first, to know the table layout is right.
    rig.issue(0, h2d(0xc8, 0, 1, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0), 0x50);
    let read_opts = 5u32 | (1 << 16);
    // The command table outside RAM, straddling RAM's end, and at the top of the 64-bit space.
    for ctba in [MEM as u64 + 0x1000, MEM as u64 - 0x40, u64::MAX - 0x7f] {
        assert!(
            issue_raw(&rig, 0, read_opts, ctba),
            "CI cleared at {ctba:#x}"
        );
        assert_eq!(rig.tfd(0) & 1, 1, "error status for table {ctba:#x}");
    }
    // A table whose PRDT claims 65535 entries running past RAM's end: the FIS and the first
    // PRDs are in RAM, the rest is not.
    let table = MEM as u64 - 0x100;
    rig.mem
        .write_slice(&h2d(0xc8, 0, 1, 0), GuestAddress(table))
        .unwrap();
    assert!(issue_raw(&rig, 0, 5 | (0xffff << 16), table));
    // The received-FIS area outside RAM: the D2H FIS is dropped, the command still completes.
    rig.w32(Rig::preg(0, 0x08), 0xffff_f000);
    rig.w32(Rig::preg(0, 0x0c), 0xffff_ffff);
    rig.issue(0, h2d(0xc8, 0, 1, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0), 0x50);
    // The same port serves good commands afterwards.
    rig.w32(Rig::preg(0, 0x08), Rig::fb(0) as u32);
    rig.w32(Rig::preg(0, 0x0c), 0);
    rig.issue(0, h2d(0xc8, 0, 1, 0), &[], &[(DATA, 512)]);
    assert_eq!(rig.tfd(0), 0x50);
}

#[test]
fn intx_follows_is_and_ie() {
    let rig = Rig::new();
    let line = rig.ahci.intx_line(16).unwrap();
    assert!(line.resample.is_some());
    rig.w32(Rig::preg(0, 0x14), 1);
    rig.issue(0, h2d(0xe7, 0, 0, 0), &[], &[]);
    assert!(line.trigger.read().is_err(), "GHC.IE is off");
    rig.w32(0x04, 1 << 1);
    assert_eq!(
        line.trigger.read().unwrap(),
        1,
        "enabling IE raises the pending line"
    );
    assert_eq!(rig.r32(0x08), 1);
    rig.ahci.resample();
    assert_eq!(line.trigger.read().unwrap(), 1, "still pending at EOI");
    rig.w32(Rig::preg(0, 0x10), u32::MAX);
    assert_eq!(rig.r32(0x08), 0);
    rig.ahci.resample();
    assert!(line.trigger.read().is_err(), "cleared: stays low");
    assert!(!rig.ahci.irq_pending());
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<MsiMessage>>);

impl MsiSender for Recorder {
    fn send(&self, msi: MsiMessage) {
        self.0.lock().unwrap().push(msi);
    }
}

#[test]
fn msi_replaces_intx_when_enabled() {
    let rig = Rig::new();
    let line = rig.ahci.intx_line(16).unwrap();
    let rec = Arc::new(Recorder::default());
    rig.ahci.set_msi_sender(rec.clone());
    // Find the MSI capability and program it.
    let mut at = (rig.ahci.config_read(0x34 / 4) & 0xff) as usize;
    while rig.ahci.config_read(at / 4) as u8 != 0x05 {
        at = (rig.ahci.config_read(at / 4) >> 8 & 0xff) as usize;
    }
    rig.ahci
        .config_write(at / 4 + 1, 0, &0xfee0_1000u32.to_le_bytes());
    rig.ahci
        .config_write(at / 4 + 3, 0, &0x4041u16.to_le_bytes());
    rig.ahci.config_write(at / 4, 2, &[1]);
    rig.w32(0x04, 1 << 1);
    rig.w32(Rig::preg(0, 0x14), 1);
    rig.issue(0, h2d(0xe7, 0, 0, 0), &[], &[]);
    let sent = rec.0.lock().unwrap().clone();
    assert_eq!(
        sent.last(),
        Some(&MsiMessage {
            address: 0xfee0_1000,
            data: 0x4041
        })
    );
    assert!(line.trigger.read().is_err(), "no INTx with MSI on");
}

#[test]
fn resets() {
    let rig = Rig::new();
    // COMRESET: DET 1 then 0 re-posts the signature FIS.
    rig.is(2);
    rig.mem
        .write_slice(&[0u8; 20], GuestAddress(Rig::fb(2) + 0x40))
        .unwrap();
    rig.w32(Rig::preg(2, 0x2c), 1);
    rig.w32(Rig::preg(2, 0x2c), 0);
    assert_eq!(rig.r32(Rig::preg(2, 0x24)), 0xeb14_0101);
    assert_eq!(rig.is(2) & 1, 1);
    let d2h = rig.bytes(Rig::fb(2) + 0x40, 8);
    assert_eq!((d2h[0], d2h[5], d2h[6]), (0x34, 0x14, 0xeb));
    // Software reset through a control FIS.
    let mut srst = [0u8; 20];
    srst[0] = 0x27;
    srst[15] = 0x04;
    rig.issue(0, srst, &[], &[]);
    srst[15] = 0;
    rig.issue(0, srst, &[], &[]);
    assert_eq!(rig.r32(Rig::preg(0, 0x24)), 0x101);
    // GHC.HR: self-clearing, IE and port registers back to reset values.
    rig.w32(0x04, 1 << 1);
    rig.w32(Rig::preg(0, 0x14), 0xff);
    rig.w32(0x04, 1);
    assert_eq!(rig.r32(0x04), 1 << 31);
    assert_eq!(rig.r32(Rig::preg(0, 0x14)), 0);
    // PCI reset too.
    rig.w32(Rig::preg(0, 0x14), 0xff);
    rig.ahci.reset();
    assert_eq!(rig.r32(Rig::preg(0, 0x14)), 0);
}

#[test]
fn random_register_writes_never_panic() {
    let rig = Rig::new();
    let mut rng = Rng(7);
    // Fill guest memory with noise so command lists and tables are garbage.
    let noise: Vec<u8> = (0..0x40000).map(|_| rng.byte()).collect();
    rig.mem.write_slice(&noise, GuestAddress(0)).unwrap();
    let idp = rig.ahci.region_device(PciRegion::Bar(4)).unwrap();
    for i in 0..20_000 {
        let off = match rng.next() % 4 {
            0 => rng.next() % 0x1000,
            _ => 0x100 + (rng.next() % 6) * 0x80 + (rng.next() % 0x40),
        };
        let mut val = rng.next() as u32;
        // Keep the lists in RAM most of the time so commands actually run.
        if off % 0x80 == 0 || off % 0x80 == 8 {
            val &= 0x3_ffff;
        }
        let len = [1usize, 2, 4, 8][(rng.next() % 4) as usize];
        rig.abar.write(off, &u64::from(val).to_le_bytes()[..len]);
        let mut b = [0u8; 8];
        rig.abar.read(rng.next() % 0x1100, &mut b[..len]);
        if i % 7 == 0 {
            idp.write(rng.next() % 32, &val.to_le_bytes());
            idp.read(rng.next() % 32, &mut b[..4]);
        }
        if i % 500 == 0 {
            let noise: Vec<u8> = (0..0x1000).map(|_| rng.byte()).collect();
            rig.mem
                .write_slice(&noise, GuestAddress(rng.next() % 0x3f000))
                .unwrap();
        }
    }
}
