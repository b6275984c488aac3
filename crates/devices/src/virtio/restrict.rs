//! `-netdev user,restrict=on`: the guest is isolated (QEMU: "will not be able to contact the host
//! and no guest IP packets will be routed over the host to the outside"); only `hostfwd=` brings
//! connections in. passt has no such switch, so rvmm filters what the guest sends before passt
//! sees it: ARP, the guest's DHCP requests, and TCP/UDP from a forwarded guest port (the guest's
//! side of a hostfwd connection) pass; every other frame is dropped.

use super::backend::NetBackend;
use super::tap::VNET_HDR_LEN;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DHCP_CLIENT: u16 = 68;
const DHCP_SERVER: u16 = 67;

/// A back-end that drops guest frames `restrict=on` forbids.
pub struct Restricted {
    inner: Arc<dyn NetBackend>,
    tcp_ports: Vec<u16>,
    udp_ports: Vec<u16>,
}

impl Restricted {
    /// `tcp_ports`/`udp_ports`: the guest ports hostfwd rules forward to.
    pub fn new(inner: Arc<dyn NetBackend>, tcp_ports: Vec<u16>, udp_ports: Vec<u16>) -> Self {
        Self {
            inner,
            tcp_ports,
            udp_ports,
        }
    }

    /// Whether the Ethernet frame `f` (guest to network) may leave.
    pub fn allowed(&self, f: &[u8]) -> bool {
        let Some(ethertype) = f.get(12..14) else {
            return false;
        };
        match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
            ETH_P_ARP => true,
            ETH_P_IP => self.ipv4_allowed(&f[14..]),
            _ => false,
        }
    }

    fn ipv4_allowed(&self, ip: &[u8]) -> bool {
        let Some(&vihl) = ip.first() else {
            return false;
        };
        let ihl = usize::from(vihl & 0xf) * 4;
        if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl + 4 {
            return false;
        }
        // Fragments after the first carry no ports: refuse them (no hostfwd reply needs them at
        // passt's 65520-byte MTU).
        let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        if frag != 0 {
            return false;
        }
        let sport = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
        let dport = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
        match ip[9] {
            IPPROTO_UDP => {
                (sport == DHCP_CLIENT && dport == DHCP_SERVER) || self.udp_ports.contains(&sport)
            }
            IPPROTO_TCP => self.tcp_ports.contains(&sport),
            _ => false,
        }
    }
}

impl NetBackend for Restricted {
    fn poll_fd(&self) -> RawFd {
        self.inner.poll_fd()
    }

    fn offloads(&self) -> bool {
        self.inner.offloads()
    }

    fn set_offload(&self, flags: u32) -> io::Result<()> {
        self.inner.set_offload(flags)
    }

    fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_frame(buf)
    }

    fn write_frame(&self, buf: &[u8]) -> io::Result<()> {
        if !self.allowed(buf.get(VNET_HDR_LEN..).unwrap_or_default()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "restrict=on: frame dropped",
            ));
        }
        self.inner.write_frame(buf)
    }

    fn link_up(&self) -> bool {
        self.inner.link_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Null;
    impl NetBackend for Null {
        fn poll_fd(&self) -> RawFd {
            -1
        }
        fn offloads(&self) -> bool {
            false
        }
        fn set_offload(&self, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn read_frame(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_frame(&self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    fn ipv4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&[10, 0, 2, 15, 1, 1, 1, 1]);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.resize(40, 0);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn only_dhcp_arp_and_forwarded_ports_leave() {
        let r = Restricted::new(Arc::new(Null), vec![22], vec![7]);
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        arp.resize(42, 0);
        assert!(r.allowed(&arp));
        assert!(r.allowed(&ipv4(IPPROTO_UDP, 68, 67)), "DHCP");
        assert!(
            r.allowed(&ipv4(IPPROTO_TCP, 22, 40000)),
            "hostfwd tcp reply"
        );
        assert!(r.allowed(&ipv4(IPPROTO_UDP, 7, 40000)), "hostfwd udp reply");
        assert!(!r.allowed(&ipv4(IPPROTO_TCP, 40000, 80)), "outbound TCP");
        assert!(!r.allowed(&ipv4(IPPROTO_UDP, 40000, 53)), "DNS");
        assert!(!r.allowed(&ipv4(1, 0, 0)), "ICMP");
        let mut v6 = vec![0xff; 12];
        v6.extend_from_slice(&0x86ddu16.to_be_bytes());
        v6.resize(80, 0);
        assert!(!r.allowed(&v6));
        assert!(!r.allowed(&[0u8; 5]), "runt");
        let mut frag = ipv4(IPPROTO_UDP, 7, 1);
        frag[14 + 7] = 1;
        assert!(!r.allowed(&frag), "non-first fragment");
        let mut with_hdr = vec![0u8; VNET_HDR_LEN];
        with_hdr.extend_from_slice(&ipv4(IPPROTO_TCP, 40000, 80));
        assert!(r.write_frame(&with_hdr).is_err());
    }
}
