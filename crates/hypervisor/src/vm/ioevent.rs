//! ioeventfds (KVM_IOEVENTFD): guest writes to a port or MMIO address that KVM completes in the
//! kernel by signalling an eventfd, instead of exiting to the VMM.
//!
//! The ioctl is issued here rather than through kvm-ioctls: its `register_ioevent` derives `len`
//! from the size of the datamatch type, so "4 bytes, any value" cannot be expressed with it.

use super::Vm;
use crate::{HvError, Result};
use kvm_bindings::{
    kvm_ioeventfd, kvm_ioeventfd_flag_nr_datamatch, kvm_ioeventfd_flag_nr_deassign,
    kvm_ioeventfd_flag_nr_pio, KVMIO,
};
use kvm_ioctls::Cap;
use std::fmt;
use std::os::fd::AsRawFd;
use vmm_sys_util::eventfd::EventFd;

vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);

const FLAG_DATAMATCH: u32 = 1 << kvm_ioeventfd_flag_nr_datamatch;
const FLAG_PIO: u32 = 1 << kvm_ioeventfd_flag_nr_pio;
const FLAG_DEASSIGN: u32 = 1 << kvm_ioeventfd_flag_nr_deassign;

/// Where an ioeventfd listens: a port or a guest physical MMIO address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEventAddr {
    Pio(u16),
    Mmio(u64),
}

impl fmt::Display for IoEventAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pio(port) => write!(f, "port {port:#x}"),
            Self::Mmio(addr) => write!(f, "MMIO {addr:#x}"),
        }
    }
}

/// "datamatch 0x..." or "any value", for error messages.
pub(crate) fn datamatch_text(datamatch: Option<u64>) -> String {
    match datamatch {
        Some(value) => format!("datamatch {value:#x}"),
        None => "any value".to_string(),
    }
}

/// The checks KVM makes (virt/kvm/eventfd.c, `kvm_assign_ioeventfd`), plus one it does not: a
/// datamatch wider than `len` bytes, which KVM accepts but can never match.
fn check(addr: IoEventAddr, len: u32, datamatch: Option<u64>) -> Result<()> {
    let invalid = |reason| HvError::InvalidIoEvent {
        addr,
        len,
        datamatch,
        reason,
    };
    if !matches!(len, 0 | 1 | 2 | 4 | 8) {
        return Err(invalid(
            "the length must be 1, 2, 4 or 8 bytes, or 0 for any",
        ));
    }
    if let Some(value) = datamatch {
        if len == 0 {
            return Err(invalid("a datamatch needs a length"));
        }
        if len < 8 && value >> (8 * len) != 0 {
            return Err(invalid("the datamatch value does not fit in the length"));
        }
    }
    let fits = match addr {
        IoEventAddr::Pio(port) => u32::from(port) + len <= 0x1_0000,
        IoEventAddr::Mmio(base) => base.checked_add(u64::from(len)).is_some(),
    };
    if !fits {
        return Err(invalid("the range runs past the end of the address space"));
    }
    Ok(())
}

impl Vm {
    /// Signal `fd` instead of exiting when the guest writes `len` bytes (1, 2, 4 or 8; 0 for any
    /// length) to `addr`, and, with `datamatch`, only when it writes that value (KVM_IOEVENTFD).
    ///
    /// Length 0 needs KVM_CAP_IOEVENTFD_NO_LENGTH (Linux 3.16) and no datamatch. KVM accepts it for
    /// ports as well as MMIO (`ioeventfd_in_range` skips the length check for both); MMIO ones
    /// also go on KVM's fast-MMIO bus.
    pub fn register_ioevent_at(
        &self,
        fd: &EventFd,
        addr: IoEventAddr,
        len: u32,
        datamatch: Option<u64>,
    ) -> Result<()> {
        self.ioeventfd(fd, addr, len, datamatch, false)
    }

    /// Undo [`register_ioevent_at`](Self::register_ioevent_at) made with the same arguments
    /// (KVM_IOEVENTFD_FLAG_DEASSIGN; KVM matches on all of them).
    pub fn unregister_ioevent_at(
        &self,
        fd: &EventFd,
        addr: IoEventAddr,
        len: u32,
        datamatch: Option<u64>,
    ) -> Result<()> {
        self.ioeventfd(fd, addr, len, datamatch, true)
    }

    /// Signal `fd` instead of exiting when the guest writes the 32-bit value `value` to MMIO
    /// address `addr` (virtio-mmio QueueNotify).
    pub fn register_ioevent(&self, fd: &EventFd, addr: u64, value: u32) -> Result<()> {
        self.register_ioevent_at(fd, IoEventAddr::Mmio(addr), 4, Some(u64::from(value)))
    }

    fn ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddr,
        len: u32,
        datamatch: Option<u64>,
        deassign: bool,
    ) -> Result<()> {
        check(addr, len, datamatch)?;
        if len == 0 && !self.fd.check_extension(Cap::IoeventfdNoLength) {
            return Err(HvError::MissingCapability(
                "ioeventfds of any length (KVM_CAP_IOEVENTFD_NO_LENGTH)",
            ));
        }
        let mut flags = 0;
        if datamatch.is_some() {
            flags |= FLAG_DATAMATCH;
        }
        let raw_addr = match addr {
            IoEventAddr::Pio(port) => {
                flags |= FLAG_PIO;
                u64::from(port)
            }
            IoEventAddr::Mmio(base) => base,
        };
        if deassign {
            flags |= FLAG_DEASSIGN;
        }
        let request = kvm_ioeventfd {
            datamatch: datamatch.unwrap_or(0),
            addr: raw_addr,
            len,
            fd: fd.as_raw_fd(),
            flags,
            ..Default::default()
        };
        // SAFETY: `self.fd` is a VM fd and `request` a fully initialised kvm_ioeventfd that
        // KVM_IOEVENTFD only reads; the eventfd stays owned by the caller (KVM takes its own
        // reference to it).
        let ret =
            unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_IOEVENTFD(), &request) };
        if ret < 0 {
            return Err(HvError::IoEvent {
                op: if deassign {
                    "KVM_IOEVENTFD(DEASSIGN)"
                } else {
                    "KVM_IOEVENTFD"
                },
                addr,
                len,
                datamatch,
                source: vmm_sys_util::errno::Error::last(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_linux() {
        // _IOW(KVMIO, 0x79, struct kvm_ioeventfd), struct of 64 bytes (linux/kvm.h).
        assert_eq!(std::mem::size_of::<kvm_ioeventfd>(), 64);
        assert_eq!(KVM_IOEVENTFD(), 0x4040_ae79);
    }

    #[test]
    fn rejects_what_kvm_would_and_unmatchable_datamatch() {
        let port = IoEventAddr::Pio(0x500);
        let mmio = IoEventAddr::Mmio(0xc000_0000);
        assert!(check(port, 1, Some(0xff)).is_ok());
        assert!(check(mmio, 4, None).is_ok());
        assert!(check(mmio, 0, None).is_ok());
        assert!(check(mmio, 8, Some(u64::MAX)).is_ok());
        for (addr, len, datamatch) in [
            (mmio, 3, None),
            (mmio, 16, None),
            (mmio, 0, Some(1)),
            (port, 1, Some(0x100)),
            (port, 2, Some(0x1_0000)),
            (IoEventAddr::Pio(0xffff), 2, None),
            (IoEventAddr::Mmio(u64::MAX - 3), 8, None),
        ] {
            let err = check(addr, len, datamatch).unwrap_err();
            assert!(matches!(err, HvError::InvalidIoEvent { .. }), "{err}");
        }
    }

    #[test]
    fn errors_name_the_address_and_match() {
        let err = check(IoEventAddr::Pio(0x500), 1, Some(0x100)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("port 0x500"), "{msg}");
        assert!(msg.contains("datamatch 0x100"), "{msg}");
    }
}
