//! Address windows and what is placed in them: one [`AddressAllocator`] per window (PCI 32-bit
//! MMIO, PCI I/O, virtio-mmio), and [`AddressMap`], each machine type's windows and fixed
//! placements.
//!
//! Fixed platform devices (IOAPIC, q35's ECAM, pc-testdev's iomem) sit at the addresses
//! [`FixedMmio`] gives, outside every window; devices without one (virtio-mmio transports, PCI
//! BARs under direct kernel boot) are allocated in a window; BARs the guest programs are claimed
//! where it puts them.

use std::collections::BTreeMap;

use crate::acpi::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::layout::MMIO_GAP_START;

/// Errors placing a range.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("{window}: no room for {size:#x} bytes aligned to {align:#x}")]
    Full {
        window: &'static str,
        size: u64,
        align: u64,
    },
    #[error("{window}: {base:#x}+{size:#x} is outside {start:#x}-{end:#x}")]
    Outside {
        window: &'static str,
        base: u64,
        size: u64,
        start: u64,
        end: u64,
    },
    #[error("{window}: {base:#x}+{size:#x} overlaps {other:#x}+{other_size:#x}")]
    Taken {
        window: &'static str,
        base: u64,
        size: u64,
        other: u64,
        other_size: u64,
    },
    #[error("{window}: bad size {size:#x} or alignment {align:#x}")]
    BadRequest {
        window: &'static str,
        size: u64,
        align: u64,
    },
}

/// First-fit allocation in `[start, end]` (inclusive end, so a window may reach 2^64 - 1).
#[derive(Debug, Clone)]
pub struct AddressAllocator {
    name: &'static str,
    start: u64,
    /// Last address of the window.
    last: u64,
    /// base -> size of every claimed range.
    used: BTreeMap<u64, u64>,
}

impl AddressAllocator {
    /// The window `[start, start + size)` named `name` in messages.
    pub fn new(name: &'static str, start: u64, size: u64) -> Self {
        Self {
            name,
            start,
            last: start.saturating_add(size.saturating_sub(1)),
            used: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `[base, base + size)` lies inside the window.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        size > 0
            && base >= self.start
            && base
                .checked_add(size - 1)
                .is_some_and(|last| last <= self.last)
    }

    /// Claim `[base, base + size)` exactly.
    pub fn claim(&mut self, base: u64, size: u64) -> Result<(), AllocError> {
        if !self.contains(base, size) {
            return Err(AllocError::Outside {
                window: self.name,
                base,
                size,
                start: self.start,
                end: self.last,
            });
        }
        let last = base + (size - 1);
        // The closest range starting at or below `last` is the only one that can overlap, since
        // claimed ranges never overlap each other.
        if let Some((&b, &s)) = self.used.range(..=last).next_back() {
            if b + (s - 1) >= base {
                return Err(AllocError::Taken {
                    window: self.name,
                    base,
                    size,
                    other: b,
                    other_size: s,
                });
            }
        }
        self.used.insert(base, size);
        Ok(())
    }

    /// Allocate `size` bytes aligned to `align` (a power of two), lowest address first.
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<u64, AllocError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(AllocError::BadRequest {
                window: self.name,
                size,
                align,
            });
        }
        let full = AllocError::Full {
            window: self.name,
            size,
            align,
        };
        let mut candidate = align_up(self.start, align).ok_or(full.clone())?;
        for (&b, &s) in &self.used {
            let fits_before = candidate.checked_add(size - 1).is_some_and(|last| last < b);
            if fits_before {
                break;
            }
            if b + (s - 1) >= candidate {
                candidate = (b + (s - 1))
                    .checked_add(1)
                    .and_then(|next| align_up(next, align))
                    .ok_or(full.clone())?;
            }
        }
        self.claim(candidate, size).map_err(|_| full)?;
        Ok(candidate)
    }

    /// Give back the range claimed at `base`; returns its size.
    pub fn release(&mut self, base: u64) -> Option<u64> {
        self.used.remove(&base)
    }
}

fn align_up(addr: u64, align: u64) -> Option<u64> {
    addr.checked_add(align - 1).map(|a| a & !(align - 1))
}

/// The 32-bit PCI window ends at the IOAPIC (SeaBIOS's `BUILD_PCIMEM_END`).
pub const PCI_MMIO32_END: u64 = IOAPIC_ADDR as u64;
/// The PCI I/O window firmware and rvmm allocate I/O BARs from (SeaBIOS starts at 0xc000).
pub const PCI_IO_START: u64 = 0xc000;
pub const PCI_IO_END: u64 = 0x1_0000;
/// QEMU microvm's virtio-mmio area (`VIRTIO_MMIO_BASE`), 512 bytes per transport.
pub const MICROVM_VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// On pc and q35 the virtio-mmio transports sit above the LAPIC/MSI window, outside the 32-bit
/// PCI window firmware assigns BARs from (which would collide with microvm's address).
pub const PC_VIRTIO_MMIO_BASE: u64 = 0xfef0_0000;
/// Room for the virtio-mmio transports (QEMU microvm creates at most 8 with one IOAPIC).
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;

/// A guest-physical range a device always occupies on a machine type; `name` is the device's name
/// on the MMIO bus (messages, `-exit-stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedRange {
    pub name: &'static str,
    pub base: u64,
    pub size: u64,
}

impl FixedRange {
    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &FixedRange) -> bool {
        self.base < other.base.saturating_add(other.size)
            && other.base < self.base.saturating_add(self.size)
    }
}

/// The IOAPIC's registers (MP spec and ACPI MADT default; QEMU decodes 4 KiB).
pub const IOAPIC_RANGE: FixedRange = FixedRange {
    name: "IOAPIC",
    base: IOAPIC_ADDR as u64,
    size: 0x1000,
};
/// The LAPIC and MSI window: decoded by KVM's in-kernel LAPIC, never on rvmm's bus (QEMU's
/// `APIC_SPACE_SIZE`).
pub const LAPIC_RANGE: FixedRange = FixedRange {
    name: "LAPIC/MSI",
    base: LAPIC_ADDR as u64,
    size: 0x10_0000,
};
/// q35's PCIe ECAM window (MCH PCIEXBAR default, `MCH_HOST_BRIDGE_PCIEXBAR_DEFAULT`): 256 buses.
pub const Q35_ECAM_RANGE: FixedRange = FixedRange {
    name: "PCI ECAM",
    base: 0xb000_0000,
    size: 0x1000_0000,
};
/// pc-testdev's 64 KiB iomem window (QEMU hw/misc/pc-testdev.c), on every machine type.
pub const PC_TESTDEV_IOMEM_RANGE: FixedRange = FixedRange {
    name: "pc-testdev iomem",
    base: 0xff00_0000,
    size: 0x1_0000,
};

/// The fixed MMIO placements of one machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedMmio {
    pub ioapic: FixedRange,
    /// Reserved for KVM: nothing rvmm places may overlap it.
    pub lapic: FixedRange,
    /// The PCIe ECAM; None without PCIe (pc, microvm).
    pub pci_ecam: Option<FixedRange>,
    /// Where `-device pc-testdev` puts its iomem window.
    pub pc_testdev_iomem: FixedRange,
}

impl FixedMmio {
    /// Every placement, in address order.
    pub fn ranges(&self) -> Vec<FixedRange> {
        let mut v: Vec<FixedRange> = [
            Some(self.ioapic),
            Some(self.lapic),
            self.pci_ecam,
            Some(self.pc_testdev_iomem),
        ]
        .into_iter()
        .flatten()
        .collect();
        v.sort_by_key(|r| r.base);
        v
    }
}

/// The windows and fixed placements of one machine type.
#[derive(Debug, Clone)]
pub struct AddressMap {
    /// 32-bit memory BARs; None without PCI (microvm).
    pub pci_mmio32: Option<AddressAllocator>,
    /// I/O BARs; None without PCI.
    pub pci_io: Option<AddressAllocator>,
    /// virtio-mmio transports.
    pub virtio_mmio: AddressAllocator,
    /// Devices at architectural addresses.
    pub fixed: FixedMmio,
}

impl AddressMap {
    /// QEMU microvm: no PCI; virtio-mmio at 0xfeb00000.
    pub fn microvm() -> Self {
        Self {
            pci_mmio32: None,
            pci_io: None,
            virtio_mmio: AddressAllocator::new(
                "virtio-mmio window",
                MICROVM_VIRTIO_MMIO_BASE,
                VIRTIO_MMIO_WINDOW,
            ),
            fixed: FixedMmio {
                ioapic: IOAPIC_RANGE,
                lapic: LAPIC_RANGE,
                pci_ecam: None,
                pc_testdev_iomem: PC_TESTDEV_IOMEM_RANGE,
            },
        }
    }

    /// pc (i440FX): the PCI window from the start of the MMIO gap to the IOAPIC (the DSDT's PCI0
    /// _CRS says the same), I/O BARs from 0xc000, virtio-mmio outside the PCI window; PCI
    /// configuration through ports only.
    pub fn pc() -> Self {
        Self {
            pci_mmio32: Some(AddressAllocator::new(
                "PCI 32-bit MMIO window",
                MMIO_GAP_START,
                PCI_MMIO32_END - MMIO_GAP_START,
            )),
            pci_io: Some(AddressAllocator::new(
                "PCI I/O window",
                PCI_IO_START,
                PCI_IO_END - PCI_IO_START,
            )),
            virtio_mmio: AddressAllocator::new(
                "virtio-mmio window",
                PC_VIRTIO_MMIO_BASE,
                VIRTIO_MMIO_WINDOW,
            ),
            fixed: FixedMmio {
                ioapic: IOAPIC_RANGE,
                lapic: LAPIC_RANGE,
                pci_ecam: None,
                pc_testdev_iomem: PC_TESTDEV_IOMEM_RANGE,
            },
        }
    }

    /// q35: pc's windows, and the PCIe ECAM below the MMIO gap.
    pub fn q35() -> Self {
        let mut map = Self::pc();
        map.fixed.pci_ecam = Some(Q35_ECAM_RANGE);
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_fit_aligned() {
        let mut a = AddressAllocator::new("w", 0x1000, 0x10000);
        assert_eq!(a.allocate(0x100, 0x100), Ok(0x1000));
        assert_eq!(a.allocate(0x1000, 0x1000), Ok(0x2000));
        assert_eq!(a.allocate(0x100, 0x100), Ok(0x1100), "fills the gap");
        assert_eq!(a.release(0x1000), Some(0x100));
        assert_eq!(a.allocate(0x80, 0x10), Ok(0x1000));
        assert!(matches!(
            a.allocate(0x10000, 0x1000),
            Err(AllocError::Full { .. })
        ));
        assert!(a.allocate(0, 1).is_err());
        assert!(a.allocate(1, 3).is_err());
    }

    #[test]
    fn claims_exactly_and_refuses_overlaps() {
        let mut a = AddressAllocator::new("w", 0x1000, 0x3000);
        a.claim(0x2000, 0x100).unwrap();
        assert!(matches!(
            a.claim(0x20ff, 1),
            Err(AllocError::Taken { other: 0x2000, .. })
        ));
        assert!(matches!(
            a.claim(0x1f00, 0x101),
            Err(AllocError::Taken { .. })
        ));
        a.claim(0x1f00, 0x100).unwrap();
        a.claim(0x2100, 0x100).unwrap();
        assert!(matches!(a.claim(0xfff, 2), Err(AllocError::Outside { .. })));
        assert!(matches!(
            a.claim(0x3fff, 2),
            Err(AllocError::Outside { .. })
        ));
        a.claim(0x3fff, 1).unwrap();
        assert_eq!(a.allocate(0x100, 0x100), Ok(0x1000));
        assert_eq!(a.allocate(0x100, 0x100), Ok(0x1100));
        assert_eq!(a.allocate(0x100, 0x100), Ok(0x1200));
        assert_eq!(
            a.allocate(0xd00, 0x100),
            Ok(0x2200),
            "0x1300-0x1eff is too small"
        );
    }

    #[test]
    fn window_reaching_the_top_of_the_address_space() {
        let mut a = AddressAllocator::new("top", u64::MAX - 0xfff, 0x1000);
        assert_eq!(a.allocate(0x800, 0x800), Ok(u64::MAX - 0xfff));
        assert_eq!(a.allocate(0x800, 0x800), Ok(u64::MAX - 0x7ff));
        assert!(a.allocate(1, 1).is_err());
    }

    #[test]
    fn machine_windows_do_not_overlap_fixed_devices() {
        let pc = AddressMap::pc();
        let pci = pc.pci_mmio32.unwrap();
        assert!(!pci.contains(u64::from(IOAPIC_ADDR), 1));
        assert!(!pci.contains(PC_VIRTIO_MMIO_BASE, VIRTIO_MMIO_WINDOW));
        assert!(pci.contains(MMIO_GAP_START, 0x1000));
        assert!(AddressMap::microvm().pci_mmio32.is_none());
    }

    #[test]
    fn no_placement_overlaps_another_or_a_window_on_any_machine() {
        for (machine, map) in [
            ("microvm", AddressMap::microvm()),
            ("pc", AddressMap::pc()),
            ("q35", AddressMap::q35()),
        ] {
            let fixed = map.fixed.ranges();
            for (i, a) in fixed.iter().enumerate() {
                assert!(
                    a.size > 0 && a.base.checked_add(a.size).is_some(),
                    "{machine}: {a:?}"
                );
                for b in &fixed[i + 1..] {
                    assert!(!a.overlaps(b), "{machine}: {a:?} overlaps {b:?}");
                }
            }
            // The memory windows (PCI I/O is in the port space).
            let windows: Vec<FixedRange> = [map.pci_mmio32.as_ref(), Some(&map.virtio_mmio)]
                .into_iter()
                .flatten()
                .map(|w| FixedRange {
                    name: w.name,
                    base: w.start,
                    size: (w.last - w.start).saturating_add(1),
                })
                .collect();
            for (i, w) in windows.iter().enumerate() {
                for f in &fixed {
                    assert!(!w.overlaps(f), "{machine}: {f:?} lies in {w:?}");
                }
                for other in &windows[i + 1..] {
                    assert!(!w.overlaps(other), "{machine}: {w:?} overlaps {other:?}");
                }
            }
        }
        assert_eq!(AddressMap::q35().fixed.pci_ecam, Some(Q35_ECAM_RANGE));
        assert_eq!(AddressMap::pc().fixed.pci_ecam, None);
        assert_eq!(AddressMap::microvm().fixed.pci_ecam, None);
    }

    #[test]
    fn ranges_overlap_only_when_they_share_a_byte() {
        let r = |base, size| FixedRange {
            name: "r",
            base,
            size,
        };
        assert!(r(0x1000, 0x1000).overlaps(&r(0x1fff, 1)));
        assert!(!r(0x1000, 0x1000).overlaps(&r(0x2000, 1)));
        assert!(!r(0x2000, 1).overlaps(&r(0x1000, 0x1000)));
        assert!(r(0x1000, 0x1000).overlaps(&r(0, 0x10000)));
    }
}
