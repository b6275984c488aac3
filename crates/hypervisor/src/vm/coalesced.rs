//! Coalesced MMIO (KVM_REGISTER_COALESCED_MMIO, api.rst 4.116): guest writes to a registered
//! range do not exit to user space; KVM appends them to a ring page shared with the VMM, which
//! replays them in order before it handles any other exit (so a read or a register write never
//! overtakes an earlier write) and before it looks at the device's state from outside (a
//! display refresh). QEMU does this for the VGA window; here too, since a VGA BIOS clearing the
//! text screen is tens of thousands of byte writes.

use super::Vm;
use crate::{HvError, Result, Vcpu};
use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring};
use kvm_ioctls::{Cap, IoEventAddress};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The ring KVM fills, mapped from a vCPU fd (every vCPU maps the same page).
pub struct CoalescedRing {
    base: *mut u8,
    page_size: usize,
    /// Replays are serialised: vCPU threads and the display both drain.
    lock: Mutex<()>,
}

// SAFETY: the mapping is shared memory owned by this object for its lifetime; the head index
// is only advanced under `lock`, the kernel only advances the tail.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above: all access to the ring goes through atomics or under `lock`.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Entries the ring holds (KVM_COALESCED_MMIO_MAX).
    fn capacity(&self) -> u32 {
        ((self.page_size - std::mem::size_of::<kvm_coalesced_mmio_ring>())
            / std::mem::size_of::<kvm_coalesced_mmio>()) as u32
    }

    fn first(&self) -> &AtomicU32 {
        // SAFETY: `first` is the ring header's first u32, inside the mapped page, 4-byte
        // aligned (the page is); the kernel and this object access it as a plain u32.
        unsafe { &*(self.base as *const AtomicU32) }
    }

    fn last(&self) -> &AtomicU32 {
        // SAFETY: `last` follows `first` in the header (offset 4), inside the page.
        unsafe { &*(self.base.add(4) as *const AtomicU32) }
    }

    /// Whether writes are waiting (one atomic load pair, no lock).
    #[inline]
    pub fn pending(&self) -> bool {
        self.first().load(Ordering::Relaxed) != self.last().load(Ordering::Acquire)
    }

    /// Replay every queued write, oldest first, through `write(addr, data)`.
    pub fn drain(&self, mut write: impl FnMut(u64, &[u8])) {
        if !self.pending() {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.capacity();
        loop {
            let first = self.first().load(Ordering::Relaxed);
            if first == self.last().load(Ordering::Acquire) {
                break;
            }
            if first >= cap {
                // Never written by a sane kernel; start over rather than read past the page.
                self.first().store(0, Ordering::Release);
                continue;
            }
            let header = std::mem::size_of::<kvm_coalesced_mmio_ring>();
            // SAFETY: `first < cap`, so the entry lies inside the mapped page; the kernel wrote
            // it before publishing `last` (read with Acquire above).
            let entry: kvm_coalesced_mmio = unsafe {
                std::ptr::read_volatile(
                    self.base
                        .add(header + first as usize * std::mem::size_of::<kvm_coalesced_mmio>())
                        as *const kvm_coalesced_mmio,
                )
            };
            let len = (entry.len as usize).min(entry.data.len());
            write(entry.phys_addr, &entry.data[..len]);
            self.first().store((first + 1) % cap, Ordering::Release);
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the page was mapped by `Vm::coalesced_ring` and nothing else refers to it.
        unsafe {
            libc::munmap(self.base.cast(), self.page_size);
        }
    }
}

impl Vm {
    /// Queue guest writes to `[addr, addr + size)` in the coalesced ring instead of exiting.
    pub fn register_coalesced_mmio(&self, addr: u64, size: u32) -> Result<()> {
        self.fd
            .register_coalesced_mmio(IoEventAddress::Mmio(addr), size)
            .map_err(crate::ioctl_err("KVM_REGISTER_COALESCED_MMIO"))
    }

    /// Map the coalesced MMIO ring through `vcpu`'s fd; None if KVM has no coalesced MMIO.
    pub fn coalesced_ring(&self, vcpu: &Vcpu) -> Result<Option<CoalescedRing>> {
        let page_offset = self.fd.check_extension_int(Cap::CoalescedMmio);
        if page_offset <= 0 {
            return Ok(None);
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        // SAFETY: a fresh shared mapping of the page KVM exposes at this offset of a vCPU fd
        // (KVM_CAP_COALESCED_MMIO returned the offset); the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.raw_fd(),
                page_offset as libc::off_t * page_size as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(HvError::Ioctl {
                op: "mmap(coalesced MMIO ring)",
                source: vmm_sys_util::errno::Error::last(),
            });
        }
        Ok(Some(CoalescedRing {
            base: base.cast(),
            page_size,
            lock: Mutex::new(()),
        }))
    }
}
