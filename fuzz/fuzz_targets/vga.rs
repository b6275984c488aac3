//! The standard VGA (and bochs-display) as the guest programs it: the VGA ports (sequencer,
//! graphics, attribute and CRT controllers, DAC), the VBE/DISPI registers through their ports
//! and BAR2, the legacy 0xA0000 window and the linear framebuffer, PCI config space; then the
//! picture rendered from whatever mode the registers describe, as a screendump or VNC frame
//! does.
//!
//! Input: flags (bit 0: bochs-display), then accesses ([`rvmm_fuzz::Access`]) on: 0 VGA ports,
//! 1 VBE ports, 2 the legacy window, 3 BAR2 (MMIO registers), 4 the framebuffer, 5 PCI config,
//! 6 render now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvmm_devices::display::vga::{
    VBE_PORTS_LEN, VGA_MMIO_SIZE, VGA_PORTS_LEN, VGA_VRAM_SIZE, VGA_WINDOW_SIZE,
};
use rvmm_devices::display::{DisplaySource, Framebuffer, StdVga};
use rvmm_devices::pci::PciDevice;
use rvmm_fuzz::{Access, Reader};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let bochs = r.u8() & 1 != 0;
    let vga = if bochs {
        StdVga::new_bochs_display(0)
    } else {
        StdVga::new(0x10000)
    }
    .expect("VGA");
    let devices = [
        (vga.ports_device(), VGA_PORTS_LEN),
        (vga.vbe_device(), VBE_PORTS_LEN),
        (vga.window_device(), VGA_WINDOW_SIZE),
        (vga.mmio_device(), VGA_MMIO_SIZE),
        (vga.framebuffer_device(), VGA_VRAM_SIZE),
    ];
    let mut fb = Framebuffer::new();
    let mut renders = 0;
    let mut budget = 4096;
    while let Some(a) = Access::next(&mut r) {
        match a.device % 7 {
            5 => {
                let reg = (a.offset as usize >> 2) % 64;
                let lane = a.offset as usize & 3;
                if a.write {
                    let len = a.len.min(4 - lane);
                    let _ = vga.config_write(reg, lane, &a.data[..len]);
                } else {
                    let _ = vga.config_read(reg);
                }
            }
            6 if renders < 4 => {
                renders += 1;
                let _ = vga.render(&mut fb);
            }
            6 => {}
            d => {
                let (dev, len) = &devices[usize::from(d)];
                a.apply(dev.as_ref(), *len);
            }
        }
        budget -= 1;
        if budget == 0 {
            break;
        }
    }
    let _ = vga.render(&mut fb);
});
