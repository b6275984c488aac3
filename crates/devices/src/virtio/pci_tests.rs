//! virtio-pci transport tests, driven through config space and BAR4 like a driver, with rng.

use super::pci::{VirtioPciTransport, MODERN_BAR, NOTIFY_OFFSET};
use super::rng::RngDevice;
use super::testing::*;
use super::{
    STATUS_ACKNOWLEDGE, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK, VIRTIO_F_VERSION_1, VIRTIO_MSI_NO_VECTOR,
};
use crate::pci::{MsiRoutes, MsixVector, PciDevice, PciRegion, MSIX_ENTRY_SIZE};
use crate::MsiMessage;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const V1: u64 = 1 << VIRTIO_F_VERSION_1;

#[derive(Default)]
struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);

impl MsiRoutes for Routes {
    fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        self.0.lock().unwrap().push((gsi, msg));
        Ok(())
    }
}

fn rng_pci() -> (Arc<VirtioPciTransport>, super::GuestMemory) {
    let mem = memory();
    let vectors = (0..2)
        .map(|i| MsixVector {
            gsi: 24 + i,
            irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
        })
        .collect();
    let t = VirtioPciTransport::new(
        Box::new(RngDevice::new()),
        mem.clone(),
        vectors,
        Arc::new(Routes::default()),
        false,
    )
    .unwrap();
    (Arc::new(t), mem)
}

fn cfg8(t: &VirtioPciTransport, off: usize) -> u8 {
    (t.config_read(off / 4) >> (8 * (off % 4))) as u8
}

fn cfg16(t: &VirtioPciTransport, off: usize) -> u16 {
    u16::from(cfg8(t, off)) | u16::from(cfg8(t, off + 1)) << 8
}

fn cfg32(t: &VirtioPciTransport, off: usize) -> u32 {
    t.config_read(off / 4)
}

fn bar_w(t: &VirtioPciTransport, off: u64, data: &[u8]) {
    t.modern_write(off, data);
}

fn bar_r<const N: usize>(t: &VirtioPciTransport, off: u64) -> [u8; N] {
    let mut b = [0u8; N];
    t.modern_read(off, &mut b);
    b
}

fn status(t: &VirtioPciTransport) -> u32 {
    u32::from(bar_r::<1>(t, 0x14)[0])
}

fn set_status(t: &VirtioPciTransport, s: u32) {
    bar_w(t, 0x14, &[s as u8]);
}

/// Walk the capability list: (offset, id, cfg_type for vendor capabilities).
fn capabilities(t: &VirtioPciTransport) -> Vec<(usize, u8, u8)> {
    let mut out = Vec::new();
    let mut p = usize::from(cfg8(t, 0x34));
    while p != 0 && out.len() < 16 {
        out.push((p, cfg8(t, p), cfg8(t, p + 3)));
        p = usize::from(cfg8(t, p + 1));
    }
    out
}

/// §3.1.1 through common cfg, with `vectors` (config, queue 0) and the ring.
fn init(t: &VirtioPciTransport, features: u64, ring: &Ring, vectors: (u16, u16)) -> u32 {
    set_status(t, 0);
    set_status(t, STATUS_ACKNOWLEDGE);
    set_status(t, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    bar_w(t, 0x08, &0u32.to_le_bytes());
    bar_w(t, 0x0c, &(features as u32).to_le_bytes());
    bar_w(t, 0x08, &1u32.to_le_bytes());
    bar_w(t, 0x0c, &((features >> 32) as u32).to_le_bytes());
    let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    set_status(t, s);
    if status(t) & STATUS_FEATURES_OK == 0 {
        return status(t);
    }
    bar_w(t, 0x10, &vectors.0.to_le_bytes());
    bar_w(t, 0x16, &0u16.to_le_bytes());
    bar_w(t, 0x18, &ring.size.to_le_bytes());
    bar_w(t, 0x1a, &vectors.1.to_le_bytes());
    // 64-bit addresses as two halves (Linux's vp_iowrite64_twopart) and as one access.
    bar_w(t, 0x20, &(ring.desc as u32).to_le_bytes());
    bar_w(t, 0x24, &((ring.desc >> 32) as u32).to_le_bytes());
    bar_w(t, 0x28, &ring.avail.to_le_bytes());
    bar_w(t, 0x30, &ring.used.to_le_bytes());
    bar_w(t, 0x1c, &1u16.to_le_bytes());
    set_status(t, s | STATUS_DRIVER_OK);
    status(t)
}

fn enable_msix(t: &VirtioPciTransport, cap: usize) {
    t.config_write((cap + 2) / 4, (cap + 2) % 4, &0x8000u16.to_le_bytes());
}

fn program_vector(t: &VirtioPciTransport, v: u64, data: u32) {
    let msix = t.msix();
    msix.write(v * MSIX_ENTRY_SIZE, &0xfee0_0000u64.to_le_bytes());
    msix.write(v * MSIX_ENTRY_SIZE + 8, &data.to_le_bytes());
    msix.write(v * MSIX_ENTRY_SIZE + 12, &0u32.to_le_bytes());
}

#[test]
fn identity_and_capabilities_as_qemu() {
    let (t, _) = rng_pci();
    assert_eq!(cfg16(&t, 0), 0x1af4);
    assert_eq!(cfg16(&t, 2), 0x1044, "modern virtio-rng");
    assert_eq!(cfg8(&t, 8), 1, "revision 1");
    assert_eq!(cfg16(&t, 0x2c), 0x1af4);
    assert_eq!(cfg16(&t, 0x2e), 0x1100);
    assert_eq!(cfg8(&t, 0x3d), 1, "INTA#");
    assert_eq!(
        capabilities(&t),
        vec![
            (0x98, 0x11, 0),
            (0x84, 0x09, 5),
            (0x70, 0x09, 2),
            (0x60, 0x09, 4),
            (0x50, 0x09, 3),
            (0x40, 0x09, 1),
        ]
    );
    // Notify: BAR4 at 0x3000, multiplier 4.
    assert_eq!(cfg8(&t, 0x70 + 4), MODERN_BAR);
    assert_eq!(cfg32(&t, 0x70 + 8), NOTIFY_OFFSET as u32);
    assert_eq!(cfg32(&t, 0x70 + 16), 4);
    // MSI-X: 2 vectors, table in BAR1 at 0, PBA at 0x800.
    assert_eq!(cfg16(&t, 0x98 + 2), 1);
    assert_eq!(cfg32(&t, 0x98 + 4), 1);
    assert_eq!(cfg32(&t, 0x98 + 8), 0x801);
    let regions: Vec<_> = t.regions().into_iter().map(|(r, _, s)| (r, s)).collect();
    assert_eq!(
        regions,
        vec![(PciRegion::Bar(1), 0x1000), (PciRegion::Bar(4), 0x4000)]
    );
    // num_queues and the queue's maximum size.
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x12)), 1);
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x18)), 256);
}

#[test]
fn request_with_msix_vector_and_intx_fallback() {
    let (t, mem) = rng_pci();
    let mut ring = Ring::new(0, 16);
    let s = init(&t, V1, &ring, (0, 1));
    assert_eq!(s & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    // Without MSI-X Enable the vectors read back but INTx is used.
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x1a)), 1);
    ring.set_desc(&mem, 0, 0x40000, 64, F_WRITE, 0);
    ring.push(&mem, 0);
    bar_w(&t, NOTIFY_OFFSET, &0u16.to_le_bytes());
    assert!(ring.wait_used(&mem, 1));
    assert_eq!(t.interrupt().eventfd().read().unwrap(), 1, "INTx raised");
    assert_eq!(bar_r::<1>(&t, 0x1000)[0], 1, "ISR: used ring");
    assert_eq!(bar_r::<1>(&t, 0x1000)[0], 0, "reading the ISR cleared it");

    // MSI-X on: queue 0's vector (1) fires, not INTx.
    enable_msix(&t, 0x98);
    program_vector(&t, 1, 0x31);
    ring.set_desc(&mem, 1, 0x40000, 64, F_WRITE, 0);
    ring.push(&mem, 1);
    bar_w(&t, NOTIFY_OFFSET, &0u16.to_le_bytes());
    assert!(ring.wait_used(&mem, 2));
    assert_eq!(t.msix().vectors()[1].irqfd.read().unwrap(), 1);
    assert!(t.interrupt().eventfd().read().is_err(), "no INTx");
    assert_eq!(bar_r::<1>(&t, 0x1000)[0], 0);
}

#[test]
fn bad_vectors_read_back_as_no_vector() {
    let (t, _) = rng_pci();
    set_status(&t, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    bar_w(&t, 0x10, &2u16.to_le_bytes());
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x10)), VIRTIO_MSI_NO_VECTOR);
    bar_w(&t, 0x1a, &7u16.to_le_bytes());
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x1a)), VIRTIO_MSI_NO_VECTOR);
    // A queue that does not exist: selecting it reads size 0, writes go nowhere.
    bar_w(&t, 0x16, &5u16.to_le_bytes());
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x18)), 0);
    bar_w(&t, 0x1a, &0u16.to_le_bytes());
    bar_w(&t, 0x1c, &1u16.to_le_bytes());
    // Garbage offsets and sizes anywhere in BAR4 are ignored.
    for off in [
        0x3u64,
        0x13,
        0x3c,
        0xfff,
        0x1001,
        0x2fff,
        0x3ffe,
        0x4000,
        u64::MAX,
    ] {
        bar_w(&t, off, &[0xff; 3]);
        let _ = bar_r::<8>(&t, off);
    }
}

#[test]
fn queue_outside_ram_needs_reset() {
    let (t, _) = rng_pci();
    let mut ring = Ring::new(0, 16);
    ring.desc = MEM_SIZE + 0x1000;
    let s = init(&t, V1, &ring, (VIRTIO_MSI_NO_VECTOR, VIRTIO_MSI_NO_VECTOR));
    assert_ne!(s & STATUS_DEVICE_NEEDS_RESET, 0);
    // INTx carries the config interrupt (no vector assigned).
    assert_eq!(bar_r::<1>(&t, 0x1000)[0], 2);
    // And a reset clears it.
    set_status(&t, 0);
    assert_eq!(status(&t), 0);
}

#[test]
fn pci_cfg_capability_reaches_bar4() {
    let (t, _) = rng_pci();
    let cap = 0x84;
    t.config_write((cap + 4) / 4, 0, &[MODERN_BAR]);
    t.config_write((cap + 8) / 4, 0, &0x12u32.to_le_bytes());
    t.config_write((cap + 12) / 4, 0, &2u32.to_le_bytes());
    assert_eq!(t.config_read((cap + 16) / 4) & 0xffff, 1, "num_queues");
    // Write device_status through the window.
    t.config_write((cap + 8) / 4, 0, &0x14u32.to_le_bytes());
    t.config_write((cap + 12) / 4, 0, &1u32.to_le_bytes());
    t.config_write((cap + 16) / 4, 0, &[STATUS_ACKNOWLEDGE as u8]);
    assert_eq!(status(&t), STATUS_ACKNOWLEDGE);
    // A bad window (wrong BAR, length 3, unaligned) reads 0 and writes nothing.
    t.config_write((cap + 12) / 4, 0, &3u32.to_le_bytes());
    assert_eq!(t.config_read((cap + 16) / 4), 0);
    t.config_write((cap + 4) / 4, 0, &[2]);
    t.config_write((cap + 12) / 4, 0, &1u32.to_le_bytes());
    t.config_write((cap + 16) / 4, 0, &[0]);
    assert_eq!(status(&t), STATUS_ACKNOWLEDGE);
    // Reset puts the window back.
    let _ = t.reset();
    assert_eq!(cfg8(&t, cap + 4), 0);
    // A snapshot neither reads nor replays the window's data (its accesses act on BAR4).
    assert!(t.is_window((cap + 16) / 4));
    assert!(!t.is_window((cap + 12) / 4) && !t.is_window(1));
}

#[test]
fn masked_config_vector_is_pending() {
    let (t, _) = rng_pci();
    let ring = Ring::new(0, 16);
    enable_msix(&t, 0x98);
    // Vector 0 stays masked (power-on state): NEEDS_RESET's config interrupt goes pending.
    let mut bad = ring;
    bad.used = MEM_SIZE;
    init(&t, V1, &bad, (0, 1));
    let mut pba = [0u8; 4];
    t.msix().read(0x800, &mut pba);
    assert_eq!(pba[0], 1);
    assert!(t.msix().vectors()[0].irqfd.read().is_err());
    program_vector(&t, 0, 0x30);
    assert_eq!(t.msix().vectors()[0].irqfd.read().unwrap(), 1);
}

fn transitional_rng() -> (Arc<VirtioPciTransport>, super::GuestMemory) {
    let mem = memory();
    let vectors = (0..2)
        .map(|i| MsixVector {
            gsi: 24 + i,
            irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
        })
        .collect();
    let t = VirtioPciTransport::new(
        Box::new(RngDevice::new()),
        mem.clone(),
        vectors,
        Arc::new(Routes::default()),
        true,
    )
    .unwrap();
    (Arc::new(t), mem)
}

#[test]
fn transitional_identity_and_legacy_bar() {
    let (t, _) = transitional_rng();
    assert_eq!(cfg16(&t, 2), 0x1005, "transitional virtio-rng");
    assert_eq!(cfg8(&t, 8), 0, "revision 0");
    assert_eq!(cfg16(&t, 0x2c), 0x1af4);
    assert_eq!(cfg16(&t, 0x2e), 4, "subsystem: the device type");
    assert_eq!(cfg32(&t, 0x10) & 1, 1, "BAR0 is I/O");
    let regions: Vec<_> = t.regions().into_iter().map(|(r, _, s)| (r, s)).collect();
    assert_eq!(
        regions,
        vec![
            (PciRegion::Bar(0), 0x20),
            (PciRegion::Bar(1), 0x1000),
            (PciRegion::Bar(4), 0x4000)
        ]
    );
    let ev = t.ioevents(PciRegion::Bar(0)).unwrap();
    assert_eq!(
        (ev[0].offset, ev[0].len, ev[0].datamatch),
        (0x10, 2, Some(0))
    );
    // The modern interface is there too.
    assert_eq!(capabilities(&t).len(), 6);
}

#[test]
fn legacy_driver_runs_a_request() {
    let (t, mem) = transitional_rng();
    let w = |off: u64, data: &[u8]| t.legacy_write(off, data);
    let r = |off: u64, len: usize| {
        let mut b = [0u8; 4];
        t.legacy_read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    };
    w(0x12, &[0]);
    w(0x12, &[STATUS_ACKNOWLEDGE as u8]);
    w(0x12, &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER) as u8]);
    let host = r(0x00, 4);
    assert_ne!(host & (1 << 28), 0, "INDIRECT_DESC offered");
    w(0x04, &0u32.to_le_bytes());
    w(0x0e, &0u16.to_le_bytes());
    assert_eq!(r(0x0c, 2), 256);
    // The legacy layout of a 256-entry queue at page 0x10 is Ring::new(0, 256)'s.
    let mut ring = Ring::new(0, 256);
    w(0x08, &0x10u32.to_le_bytes());
    assert_eq!(r(0x08, 4), 0x10);
    w(
        0x12,
        &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK) as u8],
    );
    assert_eq!(r(0x12, 1) & STATUS_DEVICE_NEEDS_RESET, 0);
    ring.set_desc(&mem, 0, 0x40000, 64, F_WRITE, 0);
    ring.push(&mem, 0);
    w(0x10, &0u16.to_le_bytes());
    assert!(ring.wait_used(&mem, 1));
    assert_eq!(ring.used(&mem, 0), (0, 64));
    assert_eq!(r(0x13, 1), 1, "ISR: used ring");
    assert_eq!(r(0x13, 1), 0, "read clears");
    // MSI-X off: device config at 0x14 (rng has none: zeros); vectors are not registers there.
    assert_eq!(r(0x14, 2), 0);
    // PFN 0 resets the device.
    w(0x08, &0u32.to_le_bytes());
    assert_eq!(r(0x12, 1), 0);
    // Garbage: unknown offsets and sizes, a queue that does not exist.
    w(0x0e, &9u16.to_le_bytes());
    w(0x08, &0x20u32.to_le_bytes());
    assert_eq!(r(0x0c, 2), 0);
    w(0x10, &9u16.to_le_bytes());
    w(0x01, &[1, 2, 3]);
    w(0x1f, &[0xff]);
}

#[test]
fn legacy_queue_outside_ram_needs_reset() {
    let (t, _) = transitional_rng();
    t.legacy_write(0x12, &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER) as u8]);
    t.legacy_write(0x08, &u32::MAX.to_le_bytes());
    t.legacy_write(
        0x12,
        &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK) as u8],
    );
    let mut s = [0u8];
    t.legacy_read(0x12, &mut s);
    assert_ne!(u32::from(s[0]) & STATUS_DEVICE_NEEDS_RESET, 0);
}

/// A transitional virtio-net-pci on a stream back-end whose peer is the test.
fn transitional_net() -> (
    Arc<VirtioPciTransport>,
    super::GuestMemory,
    std::os::unix::net::UnixStream,
) {
    use std::os::fd::OwnedFd;
    let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let backend =
        super::stream::StreamBackend::connected("test stream".into(), OwnedFd::from(ours)).unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mem = memory();
    let vectors = (0..4)
        .map(|i| MsixVector {
            gsi: 24 + i,
            irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
        })
        .collect();
    let t = VirtioPciTransport::new(
        Box::new(super::net::NetDevice::new(
            Arc::new(backend),
            [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        )),
        mem.clone(),
        vectors,
        Arc::new(Routes::default()),
        true,
    )
    .unwrap();
    (Arc::new(t), mem, peer)
}

/// A legacy virtio-net driver (QEMU 7.2's transitional virtio-net-pci: device 0x1000, BAR0 of
/// 32 bytes): without MRG_RXBUF it uses the 10-byte header both ways; with it, the 12-byte one.
#[test]
fn legacy_net_driver_uses_the_short_header_without_mrg_rxbuf() {
    use std::io::{Read, Write};
    use vm_memory::{Bytes, GuestAddress};
    const F_MRG_RXBUF: u32 = 1 << 15;
    for mrg in [false, true] {
        let (t, mem, mut peer) = transitional_net();
        assert_eq!(cfg16(&t, 2), 0x1000, "transitional virtio-net");
        assert_eq!(cfg16(&t, 0x2e), 1, "subsystem: the device type");
        assert_eq!(cfg16(&t, 0x0a), 0x0200, "ethernet");
        let bar0 = t
            .regions()
            .into_iter()
            .find(|(r, ..)| *r == PciRegion::Bar(0));
        assert_eq!(bar0.map(|(_, _, s)| s), Some(0x20));
        let w = |off: u64, data: &[u8]| t.legacy_write(off, data);
        let r = |off: u64, len: usize| {
            let mut b = [0u8; 4];
            t.legacy_read(off, &mut b[..len]);
            u32::from_le_bytes(b)
        };
        w(0x12, &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER) as u8]);
        assert_ne!(r(0x00, 4) & F_MRG_RXBUF, 0, "MRG_RXBUF offered");
        // The MAC at 0x14 (MSI-X off).
        assert_eq!(r(0x14, 2), 0x5452);
        w(0x04, &(if mrg { F_MRG_RXBUF } else { 0 }).to_le_bytes());
        let mut rxr = Ring::new(0, 256);
        let mut txr = Ring::new(1, 256);
        for (q, pfn) in [(0u16, 0x10u32), (1, 0x14)] {
            w(0x0e, &q.to_le_bytes());
            w(0x08, &pfn.to_le_bytes());
        }
        w(
            0x12,
            &[(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK) as u8],
        );
        let hdr = if mrg { 12 } else { 10 };
        // TX: header, then the frame; the peer gets the frame alone.
        let tx: Vec<u8> = (0..60u8).collect();
        mem.write_slice(&vec![0u8; hdr], GuestAddress(0x40000))
            .unwrap();
        mem.write_slice(&tx, GuestAddress(0x40000 + hdr as u64))
            .unwrap();
        txr.set_desc(&mem, 0, 0x40000, (hdr + tx.len()) as u32, 0, 0);
        txr.push(&mem, 0);
        w(0x10, &1u16.to_le_bytes());
        assert!(txr.wait_used(&mem, 1));
        let mut got = [0u8; 64];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &60u32.to_be_bytes(), "mrg={mrg}");
        assert_eq!(&got[4..], &tx[..], "mrg={mrg}");
        r(0x13, 1); // clears the TX completion's ISR bit
                    // RX: the frame lands right after the guest's header. The driver polls: no interrupt
                    // while VRING_AVAIL_F_NO_INTERRUPT is set (§2.7.7.2).
        mem.write_obj(1u16, GuestAddress(rxr.avail)).unwrap();
        rxr.set_desc(&mem, 0, 0x50000, 2048, F_WRITE, 0);
        rxr.push(&mem, 0);
        w(0x10, &0u16.to_le_bytes());
        let rx: Vec<u8> = (0..80u8).map(|i| i ^ 0x5a).collect();
        let mut wire = (rx.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&rx);
        peer.write_all(&wire).unwrap();
        assert!(rxr.wait_used(&mem, 1));
        assert_eq!(rxr.used(&mem, 0), (0, (hdr + rx.len()) as u32));
        let mut buf = vec![0u8; hdr + rx.len()];
        mem.read_slice(&mut buf, GuestAddress(0x50000)).unwrap();
        assert_eq!(&buf[hdr..], &rx[..], "mrg={mrg}");
        if mrg {
            assert_eq!(&buf[10..12], &1u16.to_le_bytes(), "num_buffers");
        }
        // The interrupt would follow the used ring update at once: give it time to show.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(r(0x13, 1), 0, "RX interrupt despite NO_INTERRUPT");
    }
}

/// virtio-balloon-pci as QEMU 7.2 builds it: transitional, and no MSI-X at all (`nvectors` 0):
/// no BAR1, no MSI-X capability, vector assignments read back as NO_VECTOR, INTx only.
#[test]
fn balloon_pci_has_no_msix() {
    use super::balloon::{BalloonDevice, BalloonOptions};
    let mem = memory();
    let dev = BalloonDevice::new(BalloonOptions::default(), MEM_SIZE).unwrap();
    let vectors = super::pci::default_vectors(5, 3);
    assert_eq!(vectors, 0);
    let t = VirtioPciTransport::new(
        Box::new(dev),
        mem,
        Vec::new(),
        Arc::new(Routes::default()),
        true,
    )
    .unwrap();
    assert_eq!(cfg32(&t, 0), 0x1002_1af4);
    assert_eq!(cfg16(&t, 0x2e), 5, "subsystem: the device type");
    assert_eq!(cfg16(&t, 0x0a), 0x00ff, "PCI_CLASS_OTHERS");
    assert_eq!(
        capabilities(&t),
        vec![
            (0x84, 0x09, 5),
            (0x70, 0x09, 2),
            (0x60, 0x09, 4),
            (0x50, 0x09, 3),
            (0x40, 0x09, 1),
        ]
    );
    let regions: Vec<_> = t.regions().into_iter().map(|(r, _, s)| (r, s)).collect();
    assert_eq!(
        regions,
        // 20 legacy bytes (no MSI-X) + 16 of config (page-poison on) -> 64, as QEMU's query-pci.
        vec![(PciRegion::Bar(0), 0x40), (PciRegion::Bar(4), 0x4000)]
    );
    set_status(&t, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    bar_w(&t, 0x10, &0u16.to_le_bytes());
    assert_eq!(u16::from_le_bytes(bar_r(&t, 0x10)), VIRTIO_MSI_NO_VECTOR);
    // A reset with no MSI-X capability to restore.
    let _ = t.reset();
    assert_eq!(status(&t), 0);
}
