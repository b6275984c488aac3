use super::*;

fn write32(b: &HostBridge, offset: usize, value: u32) {
    b.config_write(offset / 4, 0, &value.to_le_bytes());
}

fn write8(b: &HostBridge, offset: usize, value: u8) {
    b.config_write(offset / 4, offset % 4, &[value]);
}

fn read8(b: &HostBridge, offset: usize) -> u8 {
    (b.config_read(offset / 4) >> (8 * (offset % 4))) as u8
}

#[test]
fn q35_power_on_values() {
    let b = HostBridge::new(HostBridgeKind::Q35);
    assert_eq!(b.config_read(0), 0x29c0_8086);
    assert_eq!(b.config_read(0x60 / 4), 0xb000_0000);
    assert_eq!(b.config_read(0x64 / 4), 0);
    assert_eq!(read8(&b, MCH_SMRAM), 0x02);
    assert_eq!(read8(&b, MCH_ESMRAMC), 0x38);
    assert_eq!(b.pam(), [0; 7]);
}

#[test]
fn q35_seabios_writes_read_back() {
    let b = HostBridge::new(HostBridgeKind::Q35);
    // sb/fw/pciinit.c mch_mem_addr_setup.
    write32(&b, 0x60, 0);
    write32(&b, 0x64, 0);
    write32(&b, 0x60, 0xb000_0001);
    assert_eq!(b.config_read(0x60 / 4), 0xb000_0001);
    assert!(!b.warned_ecam.load(Ordering::Relaxed));
    // sb/fw/shadow.c make_bios_writable, then make_bios_readonly.
    write32(&b, 0x90, 0x3333_3330);
    write32(&b, 0x94, 0x0033_3333);
    assert_eq!(b.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
    write32(&b, 0x90, 0x1111_1110);
    write32(&b, 0x94, 0x0033_1111);
    assert_eq!(b.pam(), [0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x33]);
    assert_eq!(b.config_read(0x94 / 4), 0x0033_1111);
}

#[test]
fn q35_other_ecam_window_is_stored_and_warned() {
    let b = HostBridge::new(HostBridgeKind::Q35);
    write32(&b, 0x60, 0xe000_0001);
    assert_eq!(b.config_read(0x60 / 4), 0xe000_0001);
    assert!(b.warned_ecam.load(Ordering::Relaxed));
    let b = HostBridge::new(HostBridgeKind::Q35);
    // 128 MiB at the right base is still not what rvmm decodes.
    write32(&b, 0x60, 0xb000_0003);
    assert!(b.warned_ecam.load(Ordering::Relaxed));
    let b = HostBridge::new(HostBridgeKind::Q35);
    // Disabled: nothing to warn about.
    write32(&b, 0x60, 0xe000_0000);
    assert!(!b.warned_ecam.load(Ordering::Relaxed));
}

#[test]
fn q35_smram_masks_and_lock() {
    let b = HostBridge::new(HostBridgeKind::Q35);
    write8(&b, MCH_SMRAM, 0xff);
    // C_BASE_SEG stays 010b, bit 7 is reserved.
    assert_eq!(read8(&b, MCH_SMRAM), 0x3a, "D_LCK clears D_OPEN");
    write8(&b, MCH_ESMRAMC, 0xff);
    // Locked: ESMRAMC is read-only.
    assert_eq!(read8(&b, MCH_ESMRAMC), 0x38);
    write8(&b, MCH_SMRAM, 0x00);
    assert_eq!(
        read8(&b, MCH_SMRAM),
        0x1a,
        "only D_CLS is writable once locked"
    );
    b.reset();
    assert_eq!(read8(&b, MCH_SMRAM), 0x02);
    write8(&b, MCH_SMRAM, SMRAM_D_OPEN | SMRAM_G_SMRAME);
    assert_eq!(read8(&b, MCH_SMRAM), 0x4a);
    write8(&b, MCH_ESMRAMC, 0xff);
    assert_eq!(read8(&b, MCH_ESMRAMC), 0x7f);
}

#[test]
fn q35_reset_restores_qemu_values_and_power_on_pam() {
    let b = HostBridge::new(HostBridgeKind::Q35);
    write32(&b, 0x60, 0xb000_0001);
    write32(&b, 0x90, 0x1111_1110);
    write8(&b, MCH_SMRAM, SMRAM_D_LCK);
    b.reset();
    assert_eq!(b.config_read(0x60 / 4), 0xb000_0000);
    assert_eq!(read8(&b, MCH_SMRAM), 0x02);
    assert_eq!(read8(&b, MCH_ESMRAMC), 0x38);
    // rvmm restores the BIOS below 1 MiB at reset, so PAM says ROM again (module docs).
    assert_eq!(b.pam(), [0; 7]);
    // Unlocked again.
    write8(&b, MCH_ESMRAMC, 0x01);
    assert_eq!(read8(&b, MCH_ESMRAMC), 0x39);
}

#[test]
fn i440fx_pam_and_smram() {
    let b = HostBridge::new(HostBridgeKind::I440fx);
    assert_eq!(b.config_read(0), 0x1237_8086);
    assert_eq!(read8(&b, I440FX_SMRAM), 0x02);
    assert_eq!(b.smram(), 0x02);
    // sb/fw/shadow.c: the dwords at 0x58 and 0x5c.
    write32(&b, 0x58, 0x3333_3000);
    write32(&b, 0x5c, 0x3333_3333);
    assert_eq!(b.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
    write32(&b, 0x58, 0x1111_1000);
    write32(&b, 0x5c, 0x3311_1111);
    assert_eq!(b.pam(), [0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x33]);
    write8(&b, I440FX_SMRAM, 0x4a);
    assert_eq!(b.smram(), 0x4a);
    b.reset();
    // QEMU resets only the generic header of the i440FX; rvmm also PAM (module docs).
    assert_eq!(b.smram(), 0x4a);
    assert_eq!(b.pam(), [0; 7]);
}

#[test]
fn header_stays_read_only() {
    for kind in [HostBridgeKind::Q35, HostBridgeKind::I440fx] {
        let b = HostBridge::new(kind);
        let id = b.config_read(0);
        write32(&b, 0, 0);
        write32(&b, 0x10, 0xffff_ffff);
        assert_eq!(b.config_read(0), id);
        assert_eq!(b.config_read(0x10 / 4), 0);
        // Odd offsets and lengths do not panic.
        b.config_write(63, 3, &[1, 2, 3, 4]);
        b.config_write(usize::MAX, 3, &[1]);
        assert_eq!(b.config_read(usize::MAX), 0);
    }
}
