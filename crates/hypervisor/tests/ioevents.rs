//! KVM_IOEVENTFD through `Vm::register_ioevent_at` / `unregister_ioevent_at`, proven with tiny
//! guests: a write the ioeventfd matches completes in the kernel and signals the eventfd; any other
//! write exits to user space; after unregistering, the matching write exits too.

mod common;

use common::{nonblocking_eventfd, signals, Code, Exit, TestVm};
use rvmm_hypervisor::{HvError, IoEventAddr};

const PORT: u16 = 0x500;
/// Below 4 GiB, outside RAM and any slot, as a 32-bit BAR would be.
const MMIO: u32 = 0xc000_0000;

#[test]
fn pio_ioevent_with_datamatch_fires_only_on_matching_out_until_unregistered() {
    let once = Code::default()
        .mov_dx(PORT)
        .mov_al(0x42)
        .out_dx_al()
        .mov_al(0x43)
        .out_dx_al()
        .hlt();
    let mut code = once.0.clone();
    code.extend_from_slice(&once.0);
    let mut t = TestVm::new(Code(code));
    let fd = nonblocking_eventfd();
    let addr = IoEventAddr::Pio(PORT);
    t.vm.register_ioevent_at(&fd, addr, 1, Some(0x42)).unwrap();

    // `out 0x42` completed in the kernel; `out 0x43` is the first exit.
    assert_eq!(
        t.run(),
        Exit::Out {
            port: PORT,
            data: vec![0x43]
        }
    );
    assert_eq!(signals(&fd), 1);
    assert_eq!(t.run(), Exit::Hlt);

    t.vm.unregister_ioevent_at(&fd, addr, 1, Some(0x42))
        .unwrap();
    assert_eq!(
        t.run(),
        Exit::Out {
            port: PORT,
            data: vec![0x42]
        }
    );
    assert_eq!(
        t.run(),
        Exit::Out {
            port: PORT,
            data: vec![0x43]
        }
    );
    assert_eq!(t.run(), Exit::Hlt);
    assert_eq!(signals(&fd), 0);
}

#[test]
fn mmio_ioevent_with_datamatch_fires_only_on_matching_write_until_unregistered() {
    let once = Code::default()
        .mov_eax(0x1234_5678)
        .store_eax(MMIO)
        .mov_eax(0x9abc_def0)
        .store_eax(MMIO)
        .hlt();
    let mut code = once.0.clone();
    code.extend_from_slice(&once.0);
    let mut t = TestVm::new(Code(code));
    let fd = nonblocking_eventfd();
    // The virtio-mmio entry point: 4 bytes, datamatch on the value.
    t.vm.register_ioevent(&fd, u64::from(MMIO), 0x1234_5678)
        .unwrap();

    assert_eq!(
        t.run(),
        Exit::MmioWrite {
            addr: u64::from(MMIO),
            data: 0x9abc_def0u32.to_le_bytes().to_vec()
        }
    );
    assert_eq!(signals(&fd), 1);
    assert_eq!(t.run(), Exit::Hlt);

    // What register_ioevent registered, unregistered through the general call.
    t.vm.unregister_ioevent_at(
        &fd,
        IoEventAddr::Mmio(u64::from(MMIO)),
        4,
        Some(0x1234_5678),
    )
    .unwrap();
    assert_eq!(
        t.run(),
        Exit::MmioWrite {
            addr: u64::from(MMIO),
            data: 0x1234_5678u32.to_le_bytes().to_vec()
        }
    );
    assert_eq!(
        t.run(),
        Exit::MmioWrite {
            addr: u64::from(MMIO),
            data: 0x9abc_def0u32.to_le_bytes().to_vec()
        }
    );
    assert_eq!(t.run(), Exit::Hlt);
    assert_eq!(signals(&fd), 0);
}

/// "4 bytes, any value": what kvm-ioctls' `register_ioevent` cannot express.
#[test]
fn mmio_ioevent_without_datamatch_matches_any_value_of_its_length() {
    let code = Code::default()
        .mov_eax(0x1111_1111)
        .store_eax(MMIO)
        .mov_eax(0x2222_2222)
        .store_eax(MMIO)
        .store_ax(MMIO)
        .hlt();
    let mut t = TestVm::new(code);
    let fd = nonblocking_eventfd();
    t.vm.register_ioevent_at(&fd, IoEventAddr::Mmio(u64::from(MMIO)), 4, None)
        .unwrap();
    // Both 4-byte writes signalled; the 2-byte write has the wrong length and exits.
    assert_eq!(
        t.run(),
        Exit::MmioWrite {
            addr: u64::from(MMIO),
            data: vec![0x22, 0x22]
        }
    );
    assert_eq!(signals(&fd), 2);
    assert_eq!(t.run(), Exit::Hlt);
}

#[test]
fn any_length_mmio_ioevent_matches_every_write_size() {
    let code = Code::default()
        .mov_eax(0x3333_3333)
        .store_al(MMIO)
        .store_ax(MMIO)
        .store_eax(MMIO)
        .hlt();
    let mut t = TestVm::new(code);
    let fd = nonblocking_eventfd();
    let addr = IoEventAddr::Mmio(u64::from(MMIO));
    t.vm.register_ioevent_at(&fd, addr, 0, None).unwrap();
    assert_eq!(t.run(), Exit::Hlt);
    assert_eq!(signals(&fd), 3);
    t.vm.unregister_ioevent_at(&fd, addr, 0, None).unwrap();
}

/// KVM takes length 0 for ports too, although only MMIO ones get the fast-MMIO bus.
#[test]
fn any_length_pio_ioevent_matches_every_out_size() {
    let code = Code::default()
        .mov_dx(PORT)
        .mov_eax(0x4444_4444)
        .out_dx_al()
        .out_dx_eax()
        .hlt();
    let mut t = TestVm::new(code);
    let fd = nonblocking_eventfd();
    t.vm.register_ioevent_at(&fd, IoEventAddr::Pio(PORT), 0, None)
        .unwrap();
    assert_eq!(t.run(), Exit::Hlt);
    assert_eq!(signals(&fd), 2);
}

#[test]
fn unregistering_what_was_not_registered_names_the_ioctl_and_input() {
    let t = TestVm::new(Code::default().hlt());
    let fd = nonblocking_eventfd();
    let addr = IoEventAddr::Pio(PORT);
    t.vm.register_ioevent_at(&fd, addr, 2, Some(7)).unwrap();
    // KVM matches on length and value too: a different datamatch is a different ioeventfd.
    let err =
        t.vm.unregister_ioevent_at(&fd, addr, 2, Some(8))
            .unwrap_err();
    assert!(matches!(err, HvError::IoEvent { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("KVM_IOEVENTFD(DEASSIGN)")
            && msg.contains("port 0x500")
            && msg.contains("datamatch 0x8"),
        "{msg}"
    );
    t.vm.unregister_ioevent_at(&fd, addr, 2, Some(7)).unwrap();
}
