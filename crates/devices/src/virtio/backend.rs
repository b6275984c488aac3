//! What a virtio-net device sends its frames through: a tap ([`super::tap::Tap`]) or a stream
//! socket ([`super::stream::StreamBackend`], QEMU's `-netdev stream` and the passt helper of
//! `-netdev user`). The device model does not know which.

use super::tap::Tap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// A network back-end. Frames cross this interface with a 12-byte virtio-net header in front
/// (struct virtio_net_hdr_v1), whether or not the back-end itself carries one.
pub trait NetBackend: Send + Sync {
    /// The fd the device worker waits on (edge-triggered) for frames or link changes.
    fn poll_fd(&self) -> RawFd;
    /// Whether the back-end understands the header's offload fields (checksum, GSO): only then
    /// does the device offer checksum and TSO offloads to the driver.
    fn offloads(&self) -> bool;
    /// Tell the back-end which offloads the driver accepts on received frames (TUN_F_*).
    fn set_offload(&self, flags: u32) -> io::Result<()>;
    /// Read one frame (header included) into `buf`; `WouldBlock` when none is waiting.
    fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one frame (header included).
    fn write_frame(&self, buf: &[u8]) -> io::Result<()>;
    /// Whether the link is up (VIRTIO_NET_S_LINK_UP); a back-end whose peer went away says no.
    fn link_up(&self) -> bool {
        true
    }
}

impl NetBackend for Tap {
    fn poll_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn offloads(&self) -> bool {
        true
    }

    fn set_offload(&self, flags: u32) -> io::Result<()> {
        Tap::set_offload(self, flags)
    }

    fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read_frame(self, buf)
    }

    fn write_frame(&self, buf: &[u8]) -> io::Result<()> {
        Tap::write_frame(self, buf).map(|_| ())
    }
}
