//! Memory slots through `Vm::add_memory_slot`, `move_memory_slot` and `remove_memory_slot`,
//! proven with tiny guests that read and write the slots and report what they read.

mod common;

use common::{Code, Exit, HostPages, TestVm, MMIO_READ_FILL, REPORT_PORT};
use rvmm_hypervisor::{HvError, MemoryFlags};

/// Guest addresses above RAM, where a PCI BAR (a ROM, a shared-memory region) could be mapped.
const BAR_A: u32 = 0x10_0000;
const BAR_B: u32 = 0x20_0000;
const PAGE: usize = 4096;

const READ_ONLY: MemoryFlags = MemoryFlags {
    readonly: true,
    log_dirty: false,
};

fn fill() -> u32 {
    u32::from_le_bytes([MMIO_READ_FILL; 4])
}

#[test]
fn read_only_slot_reads_host_data_and_writes_exit_as_mmio() {
    let code = Code::default()
        .load_eax(BAR_A)
        .out_eax(REPORT_PORT)
        .mov_eax(0xdead_beef)
        .store_eax(BAR_A)
        .load_eax(BAR_A)
        .out_eax(REPORT_PORT)
        .hlt();
    let rom = HostPages::new(PAGE);
    rom.write(0, &0x1122_3344u32.to_le_bytes());
    let mut t = TestVm::new(code);
    // SAFETY: `rom` is declared before `t`, so it outlives the VM and its slots.
    let slot = unsafe {
        t.vm.add_memory_slot(u64::from(BAR_A), PAGE as u64, rom.host_addr(), READ_ONLY)
    }
    .unwrap();
    assert_eq!(slot, 1, "slot 0 is the RAM set_memory_region mapped");

    assert_eq!(t.run(), Exit::report(0x1122_3344));
    assert_eq!(
        t.run(),
        Exit::MmioWrite {
            addr: u64::from(BAR_A),
            data: 0xdead_beefu32.to_le_bytes().to_vec()
        }
    );
    assert_eq!(t.run(), Exit::report(0x1122_3344));
    assert_eq!(t.run(), Exit::Hlt);
    assert_eq!(rom.read_u32(0), 0x1122_3344);
}

#[test]
fn moved_slot_is_read_at_its_new_address_and_its_old_one_exits_as_mmio() {
    let code = Code::default()
        // Phase 1: the slot at BAR_A.
        .load_eax(BAR_A)
        .out_eax(REPORT_PORT)
        .hlt()
        // Phase 2: moved to BAR_B.
        .load_eax(BAR_B)
        .out_eax(REPORT_PORT)
        .load_eax(BAR_A)
        .out_eax(REPORT_PORT)
        .hlt()
        // Phase 3: removed.
        .load_eax(BAR_B)
        .out_eax(REPORT_PORT)
        .hlt();
    let bar = HostPages::new(2 * PAGE);
    bar.write(0, &0x5566_7788u32.to_le_bytes());
    let mut t = TestVm::new(code);
    let flags = MemoryFlags::default();
    // SAFETY: `bar` is declared before `t`, so it outlives the VM and its slots.
    let slot = unsafe {
        t.vm.add_memory_slot(u64::from(BAR_A), bar.len() as u64, bar.host_addr(), flags)
    }
    .unwrap();

    assert_eq!(t.run(), Exit::report(0x5566_7788));
    assert_eq!(t.run(), Exit::Hlt);

    // SAFETY: same host memory, still alive (above).
    unsafe { t.vm.move_memory_slot(slot, u64::from(BAR_B)) }.unwrap();
    let moved = t.vm.memory_slot(slot).unwrap();
    assert_eq!(
        (moved.guest_addr, moved.size, moved.host_addr),
        (u64::from(BAR_B), bar.len() as u64, bar.host_addr())
    );
    assert_eq!(t.run(), Exit::report(0x5566_7788));
    assert_eq!(
        t.run(),
        Exit::MmioRead {
            addr: u64::from(BAR_A),
            len: 4
        }
    );
    assert_eq!(t.run(), Exit::report(fill()));
    assert_eq!(t.run(), Exit::Hlt);

    t.vm.remove_memory_slot(slot).unwrap();
    assert_eq!(t.vm.memory_slot(slot), None);
    assert_eq!(
        t.run(),
        Exit::MmioRead {
            addr: u64::from(BAR_B),
            len: 4
        }
    );
    assert_eq!(t.run(), Exit::report(fill()));
    assert_eq!(t.run(), Exit::Hlt);
}

#[test]
fn slot_numbers_are_the_lowest_free_and_never_the_builders() {
    let t = TestVm::new(Code::default().hlt());
    let pages = HostPages::new(4 * PAGE);
    let flags = MemoryFlags::default();
    let add = |i: usize, guest: u64| {
        // SAFETY: `pages` is declared before `t`, so it outlives the VM and its slots.
        unsafe {
            t.vm.add_memory_slot(
                guest,
                PAGE as u64,
                pages.host_addr() + (i * PAGE) as u64,
                flags,
            )
        }
    };
    assert_eq!(add(0, u64::from(BAR_A)).unwrap(), 1);
    assert_eq!(add(1, u64::from(BAR_B)).unwrap(), 2);
    t.vm.remove_memory_slot(1).unwrap();
    assert_eq!(add(2, 0x30_0000).unwrap(), 1);
    assert_eq!(
        t.vm.memory_slots()
            .iter()
            .map(|s| s.slot)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // Overlapping RAM (slot 0) or another slot is refused before KVM is asked.
    let err = add(3, 0x8000).unwrap_err();
    assert!(
        matches!(err, HvError::SlotOverlap { other: 0, .. }),
        "{err}"
    );
    // SAFETY: a refused move changes nothing.
    let err = unsafe { t.vm.move_memory_slot(2, 0x30_0000) }.unwrap_err();
    assert!(
        matches!(err, HvError::SlotOverlap { other: 1, .. }),
        "{err}"
    );
    let err = add(3, 0x40_0800).unwrap_err();
    assert!(matches!(err, HvError::InvalidMemorySlot { .. }), "{err}");
    let err = t.vm.remove_memory_slot(7).unwrap_err();
    assert!(matches!(err, HvError::UnknownSlot { slot: 7 }), "{err}");
}
