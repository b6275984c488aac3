//! virtio-net on a real tap inside a network namespace made by the test (needs root, as in CI):
//! frames the device transmits arrive on the tap interface, and frames sent to the interface land
//! in the RX queue. Malformed chains in both directions are refused.

use super::mmio::MmioTransport;
use super::net::NetDevice;
use super::tap::Tap;
use super::testing::*;
use super::VIRTIO_F_VERSION_1;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

const IFNAME: &str = "rvmmtap0";
const ETHERTYPE: u16 = 0x88b5; // IEEE local experimental
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Bring `IFNAME` up and open an AF_PACKET socket on it.
fn packet_socket() -> (libc::c_int, libc::c_int) {
    // SAFETY: plain socket/ioctl/bind calls on fds this function owns, with initialized structs.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        check(s, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in IFNAME.bytes().enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        check(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req), "SIOCGIFFLAGS");
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(s, libc::SIOCSIFFLAGS, &req), "SIOCSIFFLAGS");
        check(libc::ioctl(s, libc::SIOCGIFINDEX, &mut req), "SIOCGIFINDEX");
        let ifindex = req.ifr_ifru.ifru_ifindex;
        libc::close(s);
        let p = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        check(p, "AF_PACKET socket");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        check(
            libc::bind(
                p,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ),
            "bind",
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        check(
            libc::setsockopt(
                p,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ),
            "SO_RCVTIMEO",
        );
        (p, ifindex)
    }
}

fn frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn body() {
    let tap = Tap::open(IFNAME).expect("create tap (needs /dev/net/tun)");
    let (psock, _) = packet_socket();
    let mem = memory();
    let t = MmioTransport::new(
        Box::new(NetDevice::new(std::sync::Arc::new(tap), MAC)),
        mem.clone(),
    )
    .unwrap();
    let mut rxr = Ring::new(0, 16);
    let mut txr = Ring::new(1, 16);
    let s = init_device(
        &t,
        1 << VIRTIO_F_VERSION_1,
        &[Ring::new(0, 16), Ring::new(1, 16)],
    );
    assert_eq!(s & 0x40, 0);
    let mut cfg = [0u8; 8];
    rvmm_read(&t, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]) & 1, 1, "link up");

    // TX: header + frame in two readable buffers.
    let tx = frame(MAC, b"rvmm-tx-test");
    mem.write_slice(&[0u8; 12], GuestAddress(0x40000)).unwrap();
    mem.write_slice(&tx, GuestAddress(0x41000)).unwrap();
    txr.set_desc(&mem, 0, 0x40000, 12, F_NEXT, 1);
    txr.set_desc(&mem, 1, 0x41000, tx.len() as u32, 0, 0);
    txr.push(&mem, 0);
    // A malformed TX chain (device-writable buffer) is completed but never sent.
    let bad = frame(MAC, b"rvmm-tx-bad!");
    mem.write_slice(&[0u8; 12], GuestAddress(0x42000)).unwrap();
    mem.write_slice(&bad, GuestAddress(0x4200c)).unwrap();
    txr.set_desc(&mem, 2, 0x42000, 12 + bad.len() as u32, F_WRITE, 0);
    txr.push(&mem, 2);
    notify(&t, 1);
    assert!(txr.wait_used(&mem, 2));
    let mut seen_good = false;
    let mut seen_bad = false;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(psock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let f = &buf[..n as usize];
        seen_good |= f == tx.as_slice();
        seen_bad |= f.windows(12).any(|w| w == b"rvmm-tx-bad!");
    }
    assert!(seen_good, "transmitted frame arrived on the tap");
    assert!(!seen_bad, "malformed TX chain was not sent");
    let c = t.counters().snapshot();
    assert_eq!(
        (c.requests, c.errors, c.bytes_from_guest),
        (2, 1, tx.len() as u64),
        "one frame sent (Ethernet bytes, no virtio header), one malformed chain"
    );

    // RX: a readable (wrong-direction) buffer first, then good 4 KiB buffers.
    rxr.set_desc(&mem, 0, 0x50000, 4096, 0, 0);
    rxr.push(&mem, 0);
    for i in 1..8u16 {
        rxr.set_desc(&mem, i, 0x50000 + u64::from(i) * 0x1000, 4096, F_WRITE, 0);
        rxr.push(&mem, i);
    }
    notify(&t, 0);
    let rx = frame([0x02, 0, 0, 0, 0, 1], b"rvmm-rx-test");
    // SAFETY: `rx` is valid for reads of its length; the socket is bound to the tap.
    let n = unsafe { libc::send(psock, rx.as_ptr().cast(), rx.len(), 0) };
    assert_eq!(
        n,
        rx.len() as isize,
        "send: {}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = false;
    while !found && Instant::now() < deadline {
        let used = rxr.used_idx(&mem);
        for k in 0..used {
            let (id, len) = rxr.used(&mem, k);
            if id == 0 {
                assert_eq!(len, 0, "wrong-direction RX buffer returned empty");
                continue;
            }
            let mut got = vec![0u8; len as usize];
            mem.read_slice(&mut got, GuestAddress(0x50000 + u64::from(id) * 0x1000))
                .unwrap();
            if got.len() == 12 + rx.len() && got[12..] == rx[..] {
                assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
                found = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(found, "frame sent to the tap arrived in the RX queue");
    // The host's own frames (IPv6 router solicitations...) may arrive too: at least ours.
    let c = t.counters().snapshot();
    assert!(
        c.bytes_to_guest >= rx.len() as u64 && c.errors >= 2,
        "RX counted: {c:?}"
    );
    t.shutdown();
    // SAFETY: closing the socket this test opened.
    unsafe { libc::close(psock) };
}

fn rvmm_read(t: &MmioTransport, buf: &mut [u8]) {
    crate::BusDevice::read(t, 0x100, buf);
}

#[test]
fn tap_in_network_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED tap_in_network_namespace: needs root (CI runs as root)");
        return;
    }
    // The namespace belongs to this thread (and the device worker it spawns) only.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only the calling thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        check(rc, "unshare(CLONE_NEWNET)");
        body();
    })
    .join()
    .unwrap();
}
