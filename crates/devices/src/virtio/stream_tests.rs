//! virtio-net on a stream back-end (QEMU's `-netdev stream` framing) over a socketpair: frames
//! cross with a 4-byte big-endian length and no virtio-net header, a frame larger than one RX
//! buffer spreads over mergeable buffers, and the peer closing the socket takes the link down
//! with a config-change interrupt.

use super::mmio::MmioTransport;
use super::net::NetDevice;
use super::stream::StreamBackend;
use super::testing::*;
use super::{INT_CONFIG, VIRTIO_F_VERSION_1};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;

fn link_status(t: &MmioTransport) -> u16 {
    let mut b = [0u8; 2];
    crate::BusDevice::read(t, 0x100 + 6, &mut b);
    u16::from_le_bytes(b)
}

fn setup() -> (MmioTransport, UnixStream, super::GuestMemory) {
    let (ours, peer) = UnixStream::pair().unwrap();
    let backend = StreamBackend::connected("test stream".into(), OwnedFd::from(ours)).unwrap();
    let mem = memory();
    let t = MmioTransport::new(
        Box::new(NetDevice::new(Arc::new(backend), MAC)),
        mem.clone(),
    )
    .unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (t, peer, mem)
}

#[test]
fn stream_frames_both_ways_and_link_down_on_close() {
    let (t, mut peer, mem) = setup();
    // No offloads without a virtio-net header on the wire; mergeable buffers and status offered.
    let offered = u64::from(rd(&t, 0x10));
    assert_eq!(offered & 1, 0, "no VIRTIO_NET_F_CSUM on a stream");
    assert_ne!(offered & F_MRG_RXBUF, 0);
    let mut rxr = Ring::new(0, 16);
    let mut txr = Ring::new(1, 16);
    let s = init_device(
        &t,
        (1 << VIRTIO_F_VERSION_1) | F_MRG_RXBUF | F_STATUS,
        &[Ring::new(0, 16), Ring::new(1, 16)],
    );
    assert_eq!(s & 0x80, 0, "device failed: {s:#x}");
    assert_eq!(link_status(&t) & 1, 1, "link up while connected");

    // TX: the header is stripped, the frame goes with its length.
    let tx: Vec<u8> = (0..100u8).collect();
    mem.write_slice(&[0u8; 12], GuestAddress(0x40000)).unwrap();
    mem.write_slice(&tx, GuestAddress(0x4000c)).unwrap();
    txr.set_desc(&mem, 0, 0x40000, 12 + tx.len() as u32, 0, 0);
    txr.push(&mem, 0);
    notify(&t, 1);
    assert!(txr.wait_used(&mem, 1));
    let mut got = [0u8; 104];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got[..4], &100u32.to_be_bytes());
    assert_eq!(&got[4..], &tx[..]);

    // RX: a 3000-byte frame, sent in two pieces, over 2 KiB buffers: two used entries,
    // num_buffers = 2 in the first.
    for i in 0..4u16 {
        rxr.set_desc(&mem, i, 0x50000 + u64::from(i) * 0x1000, 2048, F_WRITE, 0);
        rxr.push(&mem, i);
    }
    notify(&t, 0);
    let rx: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = (rx.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&rx);
    peer.write_all(&wire[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rxr.used_idx(&mem), 0, "half a frame is not delivered");
    peer.write_all(&wire[1000..]).unwrap();
    assert!(rxr.wait_used(&mem, 2), "frame spread over two buffers");
    let (id0, len0) = rxr.used(&mem, 0);
    let (id1, len1) = rxr.used(&mem, 1);
    assert_eq!((id0, len0, id1), (0, 2048, 1));
    assert_eq!(len1 as usize, 12 + rx.len() - 2048);
    let mut buf = vec![0u8; 4096];
    mem.read_slice(&mut buf[..2048], GuestAddress(0x50000))
        .unwrap();
    mem.read_slice(&mut buf[2048..], GuestAddress(0x51000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 2, "num_buffers");
    assert_eq!(&buf[12..12 + rx.len()], &rx[..]);

    // A frame bigger than all posted buffers waits for more, then arrives.
    let big: Vec<u8> = vec![0xab; 5000];
    let mut wire = (big.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&big);
    peer.write_all(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rxr.used_idx(&mem), 2, "5012 bytes do not fit in 4 KiB");
    for i in 4..6u16 {
        rxr.set_desc(&mem, i, 0x50000 + u64::from(i) * 0x1000, 2048, F_WRITE, 0);
        rxr.push(&mem, i);
    }
    notify(&t, 0);
    assert!(rxr.wait_used(&mem, 5), "big frame over three buffers");

    // The peer goes away: link down and a config interrupt.
    let before = t.interrupt().config_generation();
    drop(peer);
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_status(&t) & 1 != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(link_status(&t) & 1, 0, "link down after the peer closed");
    while t.interrupt().status() & INT_CONFIG == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_ne!(
        t.interrupt().status() & INT_CONFIG,
        0,
        "config change raised"
    );
    assert!(t.interrupt().config_generation() > before);
    // Frames sent without a peer are completed and counted as errors, never a panic.
    txr.set_desc(&mem, 1, 0x40000, 12 + tx.len() as u32, 0, 0);
    txr.push(&mem, 1);
    notify(&t, 1);
    assert!(txr.wait_used(&mem, 2));
    t.shutdown();
}

#[test]
fn stream_peer_sending_an_oversized_length_is_cut_off() {
    let (t, mut peer, _mem) = setup();
    init_device(
        &t,
        (1 << VIRTIO_F_VERSION_1) | F_MRG_RXBUF | F_STATUS,
        &[Ring::new(0, 16), Ring::new(1, 16)],
    );
    peer.write_all(&0xffff_fff0u32.to_be_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_status(&t) & 1 != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(link_status(&t) & 1, 0, "hostile length drops the peer");
    t.shutdown();
}

#[test]
fn stream_server_takes_a_peer_then_another() {
    let dir = std::env::temp_dir().join(format!("rvmm-stream-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let backend = StreamBackend::listening("test server".into(), OwnedFd::from(l)).unwrap();
    let mem = memory();
    let t = MmioTransport::new(
        Box::new(NetDevice::new(Arc::new(backend), MAC)),
        mem.clone(),
    )
    .unwrap();
    let mut txr = Ring::new(1, 16);
    init_device(
        &t,
        (1 << VIRTIO_F_VERSION_1) | F_STATUS,
        &[Ring::new(0, 16), Ring::new(1, 16)],
    );
    assert_eq!(link_status(&t) & 1, 0, "no peer yet");
    for round in 0..2u16 {
        let mut peer = UnixStream::connect(&path).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while link_status(&t) & 1 == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(link_status(&t) & 1, 1, "peer {round} connected");
        mem.write_slice(&[0u8; 16], GuestAddress(0x40000)).unwrap();
        txr.set_desc(&mem, round, 0x40000, 16, 0, 0);
        txr.push(&mem, round);
        notify(&t, 1);
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &4u32.to_be_bytes());
        drop(peer);
        while link_status(&t) & 1 == 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(link_status(&t) & 1, 0, "peer {round} left");
    }
    t.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
