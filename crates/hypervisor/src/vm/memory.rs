//! Guest memory slots (KVM_SET_USER_MEMORY_REGION): which slot numbers are in use and what each
//! maps, so that slots can be added, moved and removed as PCI BARs are programmed.

use super::Vm;
use crate::{HvError, Result};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::Cap;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{MutexGuard, PoisonError};

/// KVM maps memory in whole host pages; it rejects unaligned addresses and sizes with EINVAL.
const PAGE_SIZE: u64 = 4096;

/// The slot count KVM guaranteed before KVM_CAP_NR_MEMSLOTS existed (api.rst, 4.35).
const LEGACY_SLOT_COUNT: u32 = 32;

/// How the guest may use a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryFlags {
    /// Guest writes exit as KVM_EXIT_MMIO instead of reaching the memory (KVM_MEM_READONLY).
    pub readonly: bool,
    /// KVM records written pages for KVM_GET_DIRTY_LOG (KVM_MEM_LOG_DIRTY_PAGES).
    pub log_dirty: bool,
}

impl MemoryFlags {
    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.readonly {
            bits |= KVM_MEM_READONLY;
        }
        if self.log_dirty {
            bits |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        bits
    }
}

impl fmt::Display for MemoryFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.readonly {
            "read-only"
        } else {
            "read-write"
        })?;
        if self.log_dirty {
            f.write_str(", dirty-logged")?;
        }
        Ok(())
    }
}

/// One mapped slot, as recorded by the [`Vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySlot {
    pub slot: u32,
    pub guest_addr: u64,
    pub size: u64,
    pub host_addr: u64,
    pub flags: MemoryFlags,
}

impl MemorySlot {
    fn overlaps(&self, guest_addr: u64, size: u64) -> bool {
        // Saturating: a range that wraps is rejected (by KVM or `check_range`) anyway.
        guest_addr < self.guest_addr.saturating_add(self.size)
            && self.guest_addr < guest_addr.saturating_add(size)
    }
}

/// The slots this VM has mapped, by number.
#[derive(Debug)]
pub(super) struct SlotTable {
    slots: BTreeMap<u32, MemorySlot>,
    /// Slot numbers run from 0 to `limit - 1` (KVM_CAP_NR_MEMSLOTS).
    limit: u32,
}

impl SlotTable {
    pub(super) fn new(limit: i32) -> Self {
        Self {
            slots: BTreeMap::new(),
            limit: u32::try_from(limit)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(LEGACY_SLOT_COUNT),
        }
    }

    /// The lowest slot number not in use.
    fn free_slot(&self) -> Option<u32> {
        let mut candidate = 0;
        for &used in self.slots.keys() {
            if used != candidate {
                break;
            }
            candidate += 1;
        }
        (candidate < self.limit).then_some(candidate)
    }

    /// A slot other than `slot` that shares guest addresses with `guest_addr..+size`.
    fn overlap(&self, slot: u32, guest_addr: u64, size: u64) -> Option<&MemorySlot> {
        self.slots
            .values()
            .find(|s| s.slot != slot && s.overlaps(guest_addr, size))
    }

    fn check_overlap(&self, slot: u32, guest_addr: u64, size: u64) -> Result<()> {
        match self.overlap(slot, guest_addr, size) {
            Some(other) => Err(HvError::SlotOverlap {
                slot,
                guest_addr,
                size,
                other: other.slot,
                other_addr: other.guest_addr,
                other_size: other.size,
            }),
            None => Ok(()),
        }
    }
}

/// Addresses and size KVM accepts for a new mapping: page-aligned, non-empty, not wrapping.
fn check_range(guest_addr: u64, size: u64, host_addr: u64) -> Result<()> {
    let invalid = |reason| HvError::InvalidMemorySlot {
        guest_addr,
        size,
        host_addr,
        reason,
    };
    if size == 0 {
        return Err(invalid("the size is 0"));
    }
    if !(guest_addr | size | host_addr).is_multiple_of(PAGE_SIZE) {
        return Err(invalid("addresses and size must be multiples of 4 KiB"));
    }
    if guest_addr.checked_add(size).is_none() || host_addr.checked_add(size).is_none() {
        return Err(invalid("the range runs past the end of the address space"));
    }
    Ok(())
}

impl Vm {
    /// Map `size` bytes of host memory at `host_addr` into the guest at `guest_addr` as `slot`,
    /// read-write, and record the slot so that [`add_memory_slot`](Self::add_memory_slot) never
    /// hands out its number. A `size` of 0 removes the slot.
    ///
    /// # Safety
    /// `host_addr..host_addr + size` must stay a valid mapping for as long as the VM exists.
    pub unsafe fn set_memory_region(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        let mut table = self.slot_table();
        if size != 0 {
            table.check_overlap(slot, guest_addr, size)?;
        }
        let region = MemorySlot {
            slot,
            guest_addr,
            size,
            host_addr,
            flags: MemoryFlags::default(),
        };
        // SAFETY: the caller guarantees the host range outlives the VM, hence the slot.
        unsafe { self.commit_slot(&mut table, "KVM_SET_USER_MEMORY_REGION", region) }
    }

    /// Map `size` bytes of host memory at `host_addr` into the guest at `guest_addr` as a new slot
    /// and return its number (the lowest free one). Addresses and size must be page-aligned.
    ///
    /// # Safety
    /// `host_addr..host_addr + size` must stay a valid mapping for as long as the slot exists.
    pub unsafe fn add_memory_slot(
        &self,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
        flags: MemoryFlags,
    ) -> Result<u32> {
        check_range(guest_addr, size, host_addr)?;
        if flags.readonly && !self.fd.check_extension(Cap::ReadonlyMem) {
            return Err(HvError::MissingCapability(
                "read-only memory slots (KVM_CAP_READONLY_MEM)",
            ));
        }
        let mut table = self.slot_table();
        let slot = table
            .free_slot()
            .ok_or(HvError::NoFreeSlot { limit: table.limit })?;
        table.check_overlap(slot, guest_addr, size)?;
        let region = MemorySlot {
            slot,
            guest_addr,
            size,
            host_addr,
            flags,
        };
        // SAFETY: the caller guarantees the host range outlives the slot.
        unsafe { self.commit_slot(&mut table, "KVM_SET_USER_MEMORY_REGION", region) }?;
        Ok(slot)
    }

    /// Unmap `slot` (KVM_SET_USER_MEMORY_REGION with size 0) and free its number. Guest accesses
    /// to its old range then exit as KVM_EXIT_MMIO.
    pub fn remove_memory_slot(&self, slot: u32) -> Result<()> {
        let mut table = self.slot_table();
        let old = *table
            .slots
            .get(&slot)
            .ok_or(HvError::UnknownSlot { slot })?;
        let region = MemorySlot {
            size: 0,
            flags: MemoryFlags::default(),
            ..old
        };
        // SAFETY: deleting a slot only makes KVM drop its use of the host range.
        unsafe { self.commit_slot(&mut table, "KVM_SET_USER_MEMORY_REGION(delete)", region) }
    }

    /// Map `slot`'s host memory at `new_guest_addr` instead, keeping its number, size and flags.
    ///
    /// One KVM_SET_USER_MEMORY_REGION with the slot's new base (KVM_MR_MOVE: api.rst allows an
    /// existing slot to be moved, not resized): vCPUs touching the slot meanwhile wait for the move
    /// rather than exiting as MMIO in a gap between a remove and an add.
    ///
    /// # Safety
    /// The slot's host range must stay a valid mapping for as long as the slot exists, as promised
    /// when it was added.
    pub unsafe fn move_memory_slot(&self, slot: u32, new_guest_addr: u64) -> Result<()> {
        let mut table = self.slot_table();
        let old = *table
            .slots
            .get(&slot)
            .ok_or(HvError::UnknownSlot { slot })?;
        if new_guest_addr == old.guest_addr {
            return Ok(());
        }
        check_range(new_guest_addr, old.size, old.host_addr)?;
        table.check_overlap(slot, new_guest_addr, old.size)?;
        let region = MemorySlot {
            guest_addr: new_guest_addr,
            ..old
        };
        // SAFETY: same host range as before; the caller keeps it valid while the slot exists.
        unsafe { self.commit_slot(&mut table, "KVM_SET_USER_MEMORY_REGION(move)", region) }
    }

    /// The pages of `slot` written since the previous call (KVM_GET_DIRTY_LOG), one bit per
    /// 4 KiB page; the slot must have been added with `log_dirty`.
    pub fn dirty_log(&self, slot: u32) -> Result<Vec<u64>> {
        let size = self
            .memory_slot(slot)
            .ok_or(HvError::UnknownSlot { slot })?
            .size;
        let size = usize::try_from(size).map_err(|_| HvError::UnknownSlot { slot })?;
        self.fd
            .get_dirty_log(slot, size)
            .map_err(crate::ioctl_err("KVM_GET_DIRTY_LOG"))
    }

    /// The slot numbered `slot`, if mapped.
    pub fn memory_slot(&self, slot: u32) -> Option<MemorySlot> {
        self.slot_table().slots.get(&slot).copied()
    }

    /// Every mapped slot, by number.
    pub fn memory_slots(&self) -> Vec<MemorySlot> {
        self.slot_table().slots.values().copied().collect()
    }

    /// The slot table; a panic elsewhere cannot leave it half-updated (it changes only after the
    /// ioctl succeeded), so a poisoned lock is still usable.
    fn slot_table(&self) -> MutexGuard<'_, SlotTable> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand `region` to KVM, then record it (or forget the slot when its size is 0).
    ///
    /// # Safety
    /// A non-empty `region`'s host range must stay valid for as long as the slot exists.
    unsafe fn commit_slot(
        &self,
        table: &mut SlotTable,
        op: &'static str,
        region: MemorySlot,
    ) -> Result<()> {
        let raw = kvm_userspace_memory_region {
            slot: region.slot,
            flags: region.flags.bits(),
            guest_phys_addr: region.guest_addr,
            memory_size: region.size,
            userspace_addr: region.host_addr,
        };
        // SAFETY: the caller guarantees the host range's lifetime (nothing to guarantee for a
        // deletion).
        unsafe { self.fd.set_user_memory_region(raw) }.map_err(|source| HvError::MemorySlot {
            op,
            slot: region.slot,
            guest_addr: region.guest_addr,
            size: region.size,
            host_addr: region.host_addr,
            flags: region.flags,
            source,
        })?;
        if region.size == 0 {
            table.slots.remove(&region.slot);
        } else {
            table.slots.insert(region.slot, region);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(slot: u32, guest_addr: u64, size: u64) -> MemorySlot {
        MemorySlot {
            slot,
            guest_addr,
            size,
            host_addr: 0x7f00_0000_0000,
            flags: MemoryFlags::default(),
        }
    }

    #[test]
    fn lowest_free_slot_fills_gaps_and_respects_the_limit() {
        let mut table = SlotTable::new(3);
        assert_eq!(table.free_slot(), Some(0));
        table.slots.insert(0, slot(0, 0, 0x1000));
        table.slots.insert(2, slot(2, 0x2000, 0x1000));
        assert_eq!(table.free_slot(), Some(1));
        table.slots.insert(1, slot(1, 0x1000, 0x1000));
        assert_eq!(table.free_slot(), None);
        // A kernel without KVM_CAP_NR_MEMSLOTS answers 0.
        assert_eq!(SlotTable::new(0).limit, LEGACY_SLOT_COUNT);
    }

    #[test]
    fn overlap_ignores_the_slot_itself_and_touching_ranges() {
        let mut table = SlotTable::new(32);
        table.slots.insert(0, slot(0, 0x10_0000, 0x2000));
        assert!(table.overlap(1, 0x10_1000, 0x1000).is_some());
        assert!(table.overlap(1, 0x0f_f000, 0x2000).is_some());
        assert!(table.overlap(1, 0x10_2000, 0x1000).is_none());
        assert!(table.overlap(1, 0x0f_f000, 0x1000).is_none());
        assert!(table.overlap(0, 0x10_1000, 0x2000).is_none());
        let err = table.check_overlap(1, 0x10_1000, 0x1000).unwrap_err();
        assert!(err.to_string().contains("overlaps slot 0"), "{err}");
    }

    #[test]
    fn ranges_must_be_page_aligned_and_not_wrap() {
        assert!(check_range(0x1000, 0x1000, 0x7f00_0000_0000).is_ok());
        for (guest, size, host) in [
            (0x1000, 0, 0x1000),
            (0x1800, 0x1000, 0x1000),
            (0x1000, 0x800, 0x1000),
            (0x1000, 0x1000, 0x1800),
            (u64::MAX - 0xfff, 0x2000, 0x1000),
        ] {
            let err = check_range(guest, size, host).unwrap_err();
            assert!(matches!(err, HvError::InvalidMemorySlot { .. }), "{err}");
        }
    }

    #[test]
    fn flags_map_to_kvm_bits() {
        assert_eq!(MemoryFlags::default().bits(), 0);
        let ro = MemoryFlags {
            readonly: true,
            log_dirty: false,
        };
        assert_eq!(ro.bits(), KVM_MEM_READONLY);
        assert_eq!(ro.to_string(), "read-only");
        let logged = MemoryFlags {
            readonly: false,
            log_dirty: true,
        };
        assert_eq!(logged.bits(), KVM_MEM_LOG_DIRTY_PAGES);
    }
}
