use super::*;

fn regs() -> (VgaRegs, Vram) {
    (VgaRegs::new(1 << 20, false), Vram::new(1 << 20).unwrap())
}

fn set(r: &mut VgaRegs, index_port: u16, index: u8, val: u8) {
    r.port_write(index_port, index);
    r.port_write(index_port + 1, val);
}

#[test]
fn planar_write_mode0_set_reset_and_bit_mask() {
    let (mut r, v) = regs();
    set(&mut r, 0x3c4, SR_PLANE_WRITE as u8, 0x0f);
    // Set/reset: planes 0 and 2 from value 0b0101, bit mask 0xf0.
    set(&mut r, 0x3ce, GR_SR_VALUE as u8, 0x05);
    set(&mut r, 0x3ce, GR_SR_ENABLE as u8, 0x0f);
    set(&mut r, 0x3ce, GR_BIT_MASK as u8, 0xf0);
    r.mem_write(3, 0x00, &v);
    assert_eq!(v.read_u32(12), 0x00f0_00f0);
    // Read mode 0 picks the plane in GR04 and loads the latches.
    set(&mut r, 0x3ce, GR_PLANE_READ as u8, 2);
    assert_eq!(r.mem_read(3, &v), 0xf0);
    // Write mode 1 copies the latches.
    set(&mut r, 0x3ce, GR_MODE as u8, 1);
    r.mem_write(4, 0, &v);
    assert_eq!(v.read_u32(16), 0x00f0_00f0);
    // Read mode 1: colour compare (planes 0 and 2 set where 0xf0).
    set(&mut r, 0x3ce, GR_MODE as u8, 0x08);
    set(&mut r, 0x3ce, GR_COMPARE_VALUE as u8, 0x05);
    set(&mut r, 0x3ce, GR_COMPARE_MASK as u8, 0x0f);
    assert_eq!(r.mem_read(3, &v), 0xf0);
}

#[test]
fn odd_even_and_chain4_addressing() {
    let (mut r, v) = regs();
    set(&mut r, 0x3c4, SR_PLANE_WRITE as u8, 0x03);
    set(&mut r, 0x3ce, GR_MODE as u8, 0x10);
    // Memory map 3: 0xb8000.
    set(&mut r, 0x3ce, GR_MISC as u8, 0x0c);
    r.mem_write(0x18000, b'A', &v);
    r.mem_write(0x18001, 0x1f, &v);
    r.mem_write(0x18002, b'B', &v);
    assert_eq!(
        (v.read_u8(0), v.read_u8(1), v.read_u8(4)),
        (b'A', 0x1f, b'B')
    );
    assert_eq!(r.mem_read(0x18001, &v), 0x1f);
    // Outside the selected window: dropped, reads all-ones.
    r.mem_write(0x100, 1, &v);
    assert_eq!(r.mem_read(0x100, &v), 0xff);
    set(&mut r, 0x3c4, SR_MEMORY_MODE as u8, 0x08);
    set(&mut r, 0x3c4, SR_PLANE_WRITE as u8, 0x0f);
    set(&mut r, 0x3ce, GR_MISC as u8, 0x04);
    r.mem_write(0x1234, 7, &v);
    assert_eq!(v.read_u8(0x1234), 7);
}

#[test]
fn absurd_vbe_modes_are_clamped_to_video_memory() {
    let (mut r, v) = regs();
    let w = |r: &mut VgaRegs, i: usize, val: u16| {
        r.vbe_write(false, i as u16, &v);
        r.vbe_write(true, val, &v);
    };
    w(&mut r, VBE_XRES, 0xffff);
    w(&mut r, VBE_YRES, 0xffff);
    w(&mut r, VBE_BPP, 0x1234);
    w(&mut r, VBE_ENABLE, VBE_ENABLED);
    assert_eq!(r.vbe[VBE_BPP], 8);
    assert_eq!(r.vbe[VBE_XRES], VBE_MAX_XRES);
    // 1 MiB of video memory: 256 lines of 4096 bytes.
    assert_eq!(r.vbe[VBE_YRES], 256);
    w(&mut r, VBE_Y_OFFSET, 0xffff);
    w(&mut r, VBE_X_OFFSET, 0xffff);
    let visible = u32::from(r.vbe[VBE_YRES]) * r.vbe_line_offset;
    assert!(r.vbe_start + visible <= 1 << 20);
    // Banks wrap inside video memory; window accesses stay inside it.
    w(&mut r, VBE_BANK, 0xffff);
    assert_eq!(r.vbe[VBE_BANK], 15);
    r.mem_write(0xffff, 9, &v);
    assert_eq!(v.read_u8(0xf_ffff), 9);
    // Unknown indices read 0 and ignore writes; the memory size reads in 64 KiB units.
    w(&mut r, 0x7fff, 1);
    r.vbe_write(false, 10, &v);
    assert_eq!(r.vbe_read(true), 16);
    // The caps bit reports maxima.
    w(&mut r, VBE_ENABLE, 0x02);
    r.vbe_write(false, VBE_XRES as u16, &v);
    assert_eq!(r.vbe_read(true), VBE_MAX_XRES);
}

#[test]
fn dac_and_attribute_flip_flop() {
    let (mut r, _) = regs();
    r.port_write(0x3c8, 5);
    for b in [1, 2, 3, 4] {
        r.port_write(0x3c9, b);
    }
    assert_eq!(&r.palette[15..19], &[1, 2, 3, 0]);
    r.port_write(0x3c7, 5);
    assert_eq!((r.port_read(0x3c9), r.port_read(0x3c9)), (1, 2));
    // Reading input status 1 resets the flip-flop to index.
    r.msr = 1;
    r.port_write(0x3c0, 0x20);
    r.port_read(0x3da);
    r.port_write(0x3c0, 0x31);
    assert_eq!(r.ar_index, 0x31);
    r.port_write(0x3c0, 0xff);
    assert_eq!(r.ar[0x11], 0xff);
    // Monochrome ports do not decode in colour mode.
    assert_eq!(r.port_read(0x3b5), 0xff);
}
