//! A Linux tap device with a virtio-net header on every frame (IFF_VNET_HDR).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// Offload flags for TUNSETOFFLOAD (linux/if_tun.h).
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
/// struct virtio_net_hdr_v1 (§5.1.6): what precedes every frame, both ways.
pub const VNET_HDR_LEN: usize = 12;

/// An open tap.
pub struct Tap {
    file: File,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl_ptr<T>(fd: RawFd, req: libc::c_ulong, arg: *const T) -> io::Result<()> {
    // SAFETY: every caller passes a request whose argument type matches `arg`, which points at a
    // live value for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Open (or create) tap interface `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name '{name}' must have 1 to 15 characters"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        ioctl_ptr(file.as_raw_fd(), TUNSETIFF, &req)?;
        let tap = Self { file };
        tap.setup()?;
        Ok(tap)
    }

    /// Take over an inherited tap fd (`-netdev tap,fd=N`); it must have IFF_VNET_HDR set.
    ///
    /// # Safety
    /// `fd` must be an open file descriptor that nothing else owns.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Self> {
        // SAFETY: the caller hands over ownership of an open fd.
        let file = unsafe { File::from_raw_fd(fd) };
        let tap = Self { file };
        tap.setup()?;
        Ok(tap)
    }

    fn setup(&self) -> io::Result<()> {
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        ioctl_ptr(self.file.as_raw_fd(), TUNSETVNETHDRSZ, &size)?;
        let fd = self.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an fd we own.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Tell the kernel which offloads the guest accepts on received frames.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // TUNSETOFFLOAD takes the flags by value.
        // SAFETY: TUNSETOFFLOAD with an integer argument on our tap fd.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read one frame (vnet header included); `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Send one frame (vnet header included).
    pub fn write_frame(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(self.file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
