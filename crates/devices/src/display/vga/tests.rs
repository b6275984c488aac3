use super::regs::*;
use super::*;

/// Byte writes to consecutive accesses of one port (index, data pairs go to port and port + 1).
fn out(dev: &dyn BusDevice, offset: u64, data: &[u8]) {
    dev.write(offset, data);
}

/// Several byte writes to the same port.
fn outs(dev: &dyn BusDevice, offset: u64, data: &[u8]) {
    for b in data {
        dev.write(offset, std::slice::from_ref(b));
    }
}

/// Program an 80x25 9x16 text mode the way the VGA BIOS's mode 3 does (the registers rendering
/// reads), with a grey-on-blue palette entry.
fn text_mode(vga: &Arc<StdVga>) {
    let ports = vga.ports_device();
    let p = |port: u64| port - VGA_PORTS_BASE;
    out(&*ports, p(0x3c2), &[0x67]);
    for (i, v) in [(1u8, 0x00u8), (2, 0x03), (3, 0x00), (4, 0x02)] {
        out(&*ports, p(0x3c4), &[i, v]);
    }
    for (i, v) in [(5u8, 0x10u8), (6, 0x0e)] {
        out(&*ports, p(0x3ce), &[i, v]);
    }
    for (i, v) in [
        (1u8, 79u8),
        (7, 0x1f),
        (9, 0x4f),
        (0x0a, 0x0d),
        (0x0b, 0x0e),
        (0x12, 0x8f),
        (0x13, 40),
        (0x18, 0xff),
        (0x17, 0xa3),
    ] {
        out(&*ports, p(0x3d4), &[i, v]);
    }
    // Attribute palette: identity, then enable video (index bit 5).
    vga.port_read(0x3da, &mut [0]);
    for i in 0..16u8 {
        outs(&*ports, p(0x3c0), &[i, i]);
    }
    outs(&*ports, p(0x3c0), &[0x10, 0x0c]);
    out(&*ports, p(0x3c0), &[0x20]);
    // DAC 1 = blue, 7 = grey (6-bit values).
    out(&*ports, p(0x3c8), &[1]);
    outs(&*ports, p(0x3c9), &[0, 0, 0x2a]);
    out(&*ports, p(0x3c8), &[7]);
    outs(&*ports, p(0x3c9), &[0x2a, 0x2a, 0x2a]);
}

#[test]
fn text_mode_renders_glyphs_attributes_and_cursor() {
    let vga = StdVga::new(0).unwrap();
    text_mode(&vga);
    // Glyph 'A' in plane 2 of font map 0: a vertical bar in column 0 on every line.
    for line in 0..16 {
        vga.vram
            .write_u8((usize::from(b'A') * 32 + line) * 4 + 2, 0x80);
    }
    // Character (0, 0) = 'A', grey on blue.
    vga.vram.write_u8(0, b'A');
    vga.vram.write_u8(1, 0x17);
    // Cursor at cell 1, lines 13-14.
    let ports = vga.ports_device();
    out(&*ports, 0x3d4 - VGA_PORTS_BASE, &[0x0f, 1]);
    let mut fb = Framebuffer::new();
    let r = vga.render(&mut fb);
    assert!(r.resized);
    assert_eq!((fb.width(), fb.height()), (720, 400));
    // 6-bit 0x2a is 0xa8 in 8 bits (QEMU's c6_to_8).
    let (grey, blue) = (0xa8a8a8, 0x0000a8);
    assert_eq!(fb.pixel(0, 0), Some(grey));
    assert_eq!(fb.pixel(1, 0), Some(blue));
    assert_eq!(fb.pixel(8, 15), Some(blue));
    // The cursor takes the cell's foreground (attribute 0 there: black on black) - cell 1.
    assert_eq!(fb.pixel(9, 13), Some(0));
    // Change one character: only its text line is dirty.
    vga.vram.write_u8(80 * 4 * 2, b'A');
    vga.vram.write_u8(80 * 4 * 2 + 1, 0x71);
    let r = vga.render(&mut fb);
    assert!(!r.resized);
    assert_eq!(
        r.dirty,
        vec![crate::display::Rect {
            x: 0,
            y: 32,
            width: 9,
            height: 16
        }]
    );
    assert_eq!(fb.pixel(0, 32), Some(blue));
}

fn vbe(vga: &Arc<StdVga>, regs: &[(usize, u16)]) {
    let dev = vga.vbe_device();
    for &(i, v) in regs {
        dev.write(0, &(i as u16).to_le_bytes());
        dev.write(1, &v.to_le_bytes());
    }
}

#[test]
fn vbe_modes_render_and_report_changed_rows() {
    let vga = StdVga::new(0).unwrap();
    // The VGA BIOS turns the attribute controller's palette source on; without it: blank.
    vga.port_write(0x3c0, &[0x20]);
    vbe(
        &vga,
        &[
            (VBE_XRES, 64),
            (VBE_YRES, 48),
            (VBE_BPP, 32),
            (VBE_ENABLE, 0x41),
        ],
    );
    let fbdev = vga.framebuffer_device();
    // Pixel (3, 2) red.
    fbdev.write((2 * 64 + 3) * 4, &[0, 0, 0xff, 0]);
    let mut fb = Framebuffer::new();
    assert!(vga.render(&mut fb).resized);
    assert_eq!((fb.width(), fb.height()), (64, 48));
    assert_eq!(fb.pixel(3, 2), Some(0xff0000));
    fbdev.write((40 * 64 + 10) * 4, &[0xff, 0, 0, 0]);
    let r = vga.render(&mut fb);
    assert_eq!(
        r.dirty,
        vec![crate::display::Rect {
            x: 10,
            y: 40,
            width: 1,
            height: 1
        }]
    );
    // 16 bpp through the MMIO BAR's DISPI mirror, 8 bpp through the palette.
    let mmio = vga.mmio_device();
    mmio.write(MMIO_BOCHS + 2 * VBE_ENABLE as u64, &0u16.to_le_bytes());
    mmio.write(MMIO_BOCHS + 2 * VBE_BPP as u64, &16u16.to_le_bytes());
    mmio.write(MMIO_BOCHS + 2 * VBE_ENABLE as u64, &0x41u16.to_le_bytes());
    fbdev.write(0, &0xf800u16.to_le_bytes());
    assert!(!vga.render(&mut fb).dirty.is_empty());
    assert_eq!(fb.pixel(0, 0), Some(0xf80000));
    let mut b = [0u8; 2];
    mmio.read(MMIO_BOCHS + 2 * VBE_BPP as u64, &mut b);
    assert_eq!(u16::from_le_bytes(b), 16);
    mmio.read(MMIO_QEXT, &mut b);
    assert_eq!(b, [8, 0]);
}

#[test]
fn mode_13h_is_shown_640x400() {
    let vga = StdVga::new(0).unwrap();
    let ports = vga.ports_device();
    let p = |port: u64| port - VGA_PORTS_BASE;
    out(&*ports, p(0x3c2), &[0x63]);
    out(&*ports, p(0x3c4), &[4, 0x0e]);
    out(&*ports, p(0x3c4), &[2, 0x0f]);
    out(&*ports, p(0x3ce), &[5, 0x40]);
    out(&*ports, p(0x3ce), &[6, 0x05]);
    for (i, v) in [
        (1u8, 79u8),
        (7, 0x1f),
        (9, 0x41),
        (0x12, 0x8f),
        (0x13, 40),
        (0x17, 0xa3),
        (0x18, 0xff),
    ] {
        out(&*ports, p(0x3d4), &[i, v]);
    }
    vga.port_read(0x3da, &mut [0]);
    out(&*ports, p(0x3c0), &[0x20]);
    out(&*ports, p(0x3c8), &[4]);
    outs(&*ports, p(0x3c9), &[0x3f, 0, 0]);
    vga.window_device().write(320 * 10 + 5, &[4]);
    let mut fb = Framebuffer::new();
    vga.render(&mut fb);
    assert_eq!((fb.width(), fb.height()), (640, 400));
    for (x, y) in [(10, 20), (11, 20), (10, 21), (11, 21)] {
        assert_eq!(fb.pixel(x, y), Some(0xff0000), "({x}, {y})");
    }
    assert_eq!(fb.pixel(12, 20), Some(0));
}

#[test]
fn pci_identity_and_bars() {
    let vga = StdVga::new(0x10000).unwrap();
    assert_eq!(vga.config_read(0), 0x1111_1234);
    assert_eq!(vga.config_read(2), 0x0300_0002);
    let regions = vga.regions();
    assert!(regions.contains(&(PciRegion::Bar(0), PciSpace::Memory, VGA_VRAM_SIZE)));
    assert!(regions.contains(&(PciRegion::Bar(2), PciSpace::Memory, VGA_MMIO_SIZE)));
    assert!(regions.contains(&(PciRegion::Rom, PciSpace::Memory, 0x10000)));
    // BAR0 is prefetchable 32-bit memory.
    assert_eq!(vga.config_read(4) & 0xf, 0x8);
}

/// A hostile guest: random register, DISPI, window and MMIO traffic, rendering in between.
/// Nothing may panic, and the picture stays within the display limits.
#[test]
fn random_guest_traffic_never_panics() {
    let vga = StdVga::new(0x10000).unwrap();
    let (ports, vbe, window, mmio, fbdev) = (
        vga.ports_device(),
        vga.vbe_device(),
        vga.window_device(),
        vga.mmio_device(),
        vga.framebuffer_device(),
    );
    // xorshift64: deterministic, no dependency.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut fb = Framebuffer::new();
    for round in 0..20_000 {
        let r = next();
        let v = (r >> 32) as u32;
        let len = 1 + (r >> 8) as usize % 4;
        let data = v.to_le_bytes();
        let mut buf = [0u8; 4];
        match r % 8 {
            0 => ports.write(r >> 16 & 0x2f, &data[..len]),
            1 => ports.read(r >> 16 & 0x2f, &mut buf[..len]),
            2 => vbe.write(r >> 16 & 3, &data[..2]),
            3 => window.write(r >> 16 & 0x1ffff, &data[..len]),
            4 => window.read(r >> 16 & 0x1ffff, &mut buf[..len]),
            5 => mmio.write(r >> 16 & 0xfff, &data[..len]),
            6 => fbdev.write(r >> 16, &data[..len]),
            _ => mmio.read(r >> 16 & 0xfff, &mut buf[..len]),
        }
        if round % 500 == 0 {
            vga.render(&mut fb);
            assert!(fb.width() <= crate::display::MAX_WIDTH);
            assert!(fb.height() <= crate::display::MAX_HEIGHT);
            assert_eq!(fb.pixels().len(), (fb.width() * fb.height()) as usize);
        }
    }
    // Extreme VBE values, then a render.
    for (i, v) in [
        (VBE_XRES, 0xffff),
        (VBE_YRES, 0xffff),
        (VBE_BPP, 32),
        (VBE_VIRT_WIDTH, 0xffff),
        (VBE_X_OFFSET, 0xffff),
        (VBE_Y_OFFSET, 0xffff),
        (VBE_ENABLE, 0x41),
        (VBE_BANK, 0xffff),
    ] {
        vbe.write(0, &(i as u16).to_le_bytes());
        vbe.write(1, &(v as u16).to_le_bytes());
    }
    vga.port_write(0x3c0, &[0x20]);
    vga.render(&mut fb);
    assert!(fb.width() <= crate::display::MAX_WIDTH && fb.height() <= crate::display::MAX_HEIGHT);
}
