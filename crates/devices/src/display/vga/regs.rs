//! VGA register file (ports 0x3b0-0x3df), the Bochs VBE "DISPI" registers (ports 0x1ce/0x1cf)
//! and the legacy memory window 0xa0000-0xbffff with its planar semantics.
//!
//! Video memory layout (as QEMU's): VGA address `a` of plane `p` is byte `4 * a + p`, so a
//! latched access reads the dword at `4 * a`; chain-4 (mode 13h, VBE) addresses bytes
//! linearly; odd/even (text) puts even addresses in planes 0/2 and odd ones in 1/3.
//! Every guest value is untrusted: indices are masked, VBE geometry is clamped to video memory,
//! accesses past it are dropped.

use crate::display::vram::Vram;

/// Sequencer register write masks (QEMU's `sr_mask`).
const SR_MASK: [u8; 8] = [0x03, 0x3d, 0x0f, 0x3f, 0x0e, 0x00, 0x00, 0xff];
/// Graphics controller write masks (`gr_mask`).
const GR_MASK: [u8; 16] = [
    0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0,
];

pub const SR_CLOCK_MODE: usize = 1;
pub const SR_PLANE_WRITE: usize = 2;
pub const SR_CHAR_MAP: usize = 3;
pub const SR_MEMORY_MODE: usize = 4;
const SR04_CHAIN4: u8 = 0x08;

const GR_SR_VALUE: usize = 0;
const GR_SR_ENABLE: usize = 1;
const GR_COMPARE_VALUE: usize = 2;
const GR_DATA_ROTATE: usize = 3;
const GR_PLANE_READ: usize = 4;
pub const GR_MODE: usize = 5;
pub const GR_MISC: usize = 6;
const GR_COMPARE_MASK: usize = 7;
const GR_BIT_MASK: usize = 8;

pub const AR_MODE: usize = 0x10;
pub const AR_PLANE_ENABLE: usize = 0x12;
pub const AR_COLOR_PAGE: usize = 0x14;
const AR_COUNT: usize = 0x15;

pub const CR_H_DISP: usize = 0x01;
pub const CR_OVERFLOW: usize = 0x07;
pub const CR_MAX_SCAN: usize = 0x09;
pub const CR_CURSOR_START: usize = 0x0a;
pub const CR_CURSOR_END: usize = 0x0b;
pub const CR_START_HI: usize = 0x0c;
pub const CR_START_LO: usize = 0x0d;
pub const CR_CURSOR_HI: usize = 0x0e;
pub const CR_CURSOR_LO: usize = 0x0f;
const CR_V_SYNC_END: usize = 0x11;
pub const CR_V_DISP_END: usize = 0x12;
pub const CR_OFFSET: usize = 0x13;
pub const CR_MODE: usize = 0x17;
const CR_LINE_COMPARE: usize = 0x18;

/// Misc output: I/O address select (colour: CRTC at 0x3d4).
const MSR_COLOR: u8 = 0x01;
/// Input status 1: display enable and vertical retrace, toggled on each read.
const ST01_TOGGLE: u8 = 0x09;

/// Bochs DISPI register indices.
pub const VBE_ID: usize = 0;
pub const VBE_XRES: usize = 1;
pub const VBE_YRES: usize = 2;
pub const VBE_BPP: usize = 3;
pub const VBE_ENABLE: usize = 4;
pub const VBE_BANK: usize = 5;
pub const VBE_VIRT_WIDTH: usize = 6;
pub const VBE_VIRT_HEIGHT: usize = 7;
pub const VBE_X_OFFSET: usize = 8;
pub const VBE_Y_OFFSET: usize = 9;
const VBE_VIDEO_MEMORY_64K: usize = 10;
const VBE_REGS: usize = 10;

const VBE_ID0: u16 = 0xb0c0;
/// The newest interface id QEMU implements.
const VBE_ID5: u16 = 0xb0c5;
pub const VBE_ENABLED: u16 = 0x01;
const VBE_GETCAPS: u16 = 0x02;
pub const VBE_8BIT_DAC: u16 = 0x20;
const VBE_NOCLEARMEM: u16 = 0x80;
/// What GETCAPS reports. QEMU says 16000x12000; video memory bounds the real modes and the
/// display surface is bounded by [`crate::display::MAX_WIDTH`] anyway.
pub const VBE_MAX_XRES: u16 = 4096;
pub const VBE_MAX_YRES: u16 = 4096;
const VBE_MAX_BPP: u16 = 32;

/// Expand the low 4 bits of `v` to one byte per plane (bit p set: plane p byte 0xff).
const fn mask16(v: u8) -> u32 {
    let mut m = 0u32;
    let mut p = 0;
    while p < 4 {
        if v & (1 << p) != 0 {
            m |= 0xff << (8 * p);
        }
        p += 1;
    }
    m
}

/// The whole register state; a copy is what rendering works from.
#[derive(Clone)]
pub struct VgaRegs {
    pub msr: u8,
    fcr: u8,
    st01: u8,
    sr_index: u8,
    pub sr: [u8; 8],
    gr_index: u8,
    pub gr: [u8; 16],
    /// Bit 5 (palette address source) clear blanks the screen.
    pub ar_index: u8,
    pub ar: [u8; AR_COUNT],
    ar_flip_flop: bool,
    cr_index: u8,
    pub cr: [u8; 256],
    dac_state: u8,
    dac_sub_index: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    dac_cache: [u8; 3],
    /// 256 RGB triples, 6 bits each unless the VBE 8-bit DAC is on.
    pub palette: [u8; 768],
    pub dac_8bit: bool,
    latch: u32,
    /// Bumped on every register write that can change the picture beyond video memory.
    pub generation: u64,
    vbe_index: u16,
    pub vbe: [u16; VBE_REGS],
    /// Bytes per VBE scanline and first displayed byte, from [`VgaRegs::vbe_fixup`].
    pub vbe_line_offset: u32,
    pub vbe_start: u32,
    bank_offset: u32,
    vram_size: u32,
    /// bochs-display: no legacy VGA; only VBE modes are shown.
    pub bochs: bool,
}

impl VgaRegs {
    pub fn new(vram_size: u32, bochs: bool) -> Self {
        let mut r = Self {
            msr: 0,
            fcr: 0,
            st01: 0,
            sr_index: 0,
            sr: [0; 8],
            gr_index: 0,
            gr: [0; 16],
            ar_index: 0,
            ar: [0; AR_COUNT],
            ar_flip_flop: false,
            cr_index: 0,
            cr: [0; 256],
            dac_state: 0,
            dac_sub_index: 0,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_cache: [0; 3],
            palette: [0; 768],
            dac_8bit: false,
            latch: 0,
            generation: 0,
            vbe_index: 0,
            vbe: [0; VBE_REGS],
            vbe_line_offset: 0,
            vbe_start: 0,
            bank_offset: 0,
            vram_size,
            bochs,
        };
        r.vbe[VBE_ID] = VBE_ID5;
        r
    }

    pub fn vbe_enabled(&self) -> bool {
        self.vbe[VBE_ENABLE] & VBE_ENABLED != 0
    }

    /// Colour or monochrome port decode: the other set of CRTC/status ports does not decode.
    fn port_decodes(&self, port: u16) -> bool {
        if self.msr & MSR_COLOR != 0 {
            !(0x3b0..=0x3bf).contains(&port)
        } else {
            !(0x3d0..=0x3df).contains(&port)
        }
    }

    /// A byte read from VGA port `port` (0x3b0-0x3df).
    pub fn port_read(&mut self, port: u16) -> u8 {
        if !self.port_decodes(port) {
            return 0xff;
        }
        match port {
            0x3c0 => {
                if self.ar_flip_flop {
                    0
                } else {
                    self.ar_index
                }
            }
            0x3c1 => self
                .ar
                .get(usize::from(self.ar_index & 0x1f))
                .copied()
                .unwrap_or(0),
            0x3c2 => 0, // input status 0
            0x3c4 => self.sr_index,
            0x3c5 => self.sr[usize::from(self.sr_index)],
            0x3c7 => self.dac_state,
            0x3c8 => self.dac_write_index,
            0x3c9 => {
                let v = self.palette
                    [usize::from(self.dac_read_index) * 3 + usize::from(self.dac_sub_index)];
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    self.dac_sub_index = 0;
                    self.dac_read_index = self.dac_read_index.wrapping_add(1);
                }
                v
            }
            0x3ca => self.fcr,
            0x3cc => self.msr,
            0x3ce => self.gr_index,
            0x3cf => self.gr[usize::from(self.gr_index)],
            0x3b4 | 0x3d4 => self.cr_index,
            0x3b5 | 0x3d5 => self.cr[usize::from(self.cr_index)],
            0x3ba | 0x3da => {
                // No real retrace: toggle so that polling loops terminate (QEMU's "dumb" mode).
                self.st01 ^= ST01_TOGGLE;
                self.ar_flip_flop = false;
                self.st01
            }
            _ => 0,
        }
    }

    /// A byte written to VGA port `port`.
    pub fn port_write(&mut self, port: u16, val: u8) {
        if !self.port_decodes(port) {
            return;
        }
        self.generation += 1;
        match port {
            0x3c0 => {
                if !self.ar_flip_flop {
                    self.ar_index = val & 0x3f;
                } else {
                    let i = usize::from(self.ar_index & 0x1f);
                    let masked = match i {
                        0..=0x0f => Some(val & 0x3f),
                        AR_MODE => Some(val & !0x10),
                        0x11 => Some(val),
                        AR_PLANE_ENABLE => Some(val & !0xc0),
                        0x13 | AR_COLOR_PAGE => Some(val & !0xf0),
                        _ => None,
                    };
                    if let Some(v) = masked {
                        self.ar[i] = v;
                    }
                }
                self.ar_flip_flop = !self.ar_flip_flop;
            }
            0x3c2 => self.msr = val & !0x10,
            0x3c4 => self.sr_index = val & 7,
            0x3c5 => {
                let i = usize::from(self.sr_index);
                self.sr[i] = val & SR_MASK[i];
            }
            0x3c7 => {
                self.dac_read_index = val;
                self.dac_sub_index = 0;
                self.dac_state = 3;
            }
            0x3c8 => {
                self.dac_write_index = val;
                self.dac_sub_index = 0;
                self.dac_state = 0;
            }
            0x3c9 => {
                self.dac_cache[usize::from(self.dac_sub_index)] = val;
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    let at = usize::from(self.dac_write_index) * 3;
                    self.palette[at..at + 3].copy_from_slice(&self.dac_cache);
                    self.dac_sub_index = 0;
                    self.dac_write_index = self.dac_write_index.wrapping_add(1);
                }
            }
            0x3ce => self.gr_index = val & 0x0f,
            0x3cf => {
                let i = usize::from(self.gr_index);
                self.gr[i] = val & GR_MASK[i];
            }
            0x3b4 | 0x3d4 => self.cr_index = val,
            0x3b5 | 0x3d5 => {
                let i = usize::from(self.cr_index);
                // CR11 bit 7 protects CR0-CR7, except CR7's line compare bit 4.
                if self.cr[CR_V_SYNC_END] & 0x80 != 0 && i <= CR_OVERFLOW {
                    if i == CR_OVERFLOW {
                        self.cr[i] = (self.cr[i] & !0x10) | (val & 0x10);
                    }
                    return;
                }
                self.cr[i] = val;
            }
            0x3ba | 0x3da => self.fcr = val & 0x10,
            _ => {}
        }
    }

    /// Read the DISPI index (`data == false`) or data register.
    pub fn vbe_read(&self, data: bool) -> u16 {
        if !data {
            return self.vbe_index;
        }
        let i = usize::from(self.vbe_index);
        if i < VBE_REGS {
            if self.vbe[VBE_ENABLE] & VBE_GETCAPS != 0 {
                match i {
                    VBE_XRES => return VBE_MAX_XRES,
                    VBE_YRES => return VBE_MAX_YRES,
                    VBE_BPP => return VBE_MAX_BPP,
                    _ => {}
                }
            }
            self.vbe[i]
        } else if i == VBE_VIDEO_MEMORY_64K {
            (self.vram_size >> 16) as u16
        } else {
            0
        }
    }

    /// Write the DISPI index or data register. Enabling a mode may clear video memory.
    pub fn vbe_write(&mut self, data: bool, val: u16, vram: &Vram) {
        if !data {
            self.vbe_index = val;
            return;
        }
        self.generation += 1;
        let i = usize::from(self.vbe_index);
        tracing::debug!(index = i, val, "VBE DISPI write");
        match i {
            VBE_ID if (VBE_ID0..=VBE_ID5).contains(&val) => self.vbe[i] = val,
            VBE_XRES | VBE_YRES | VBE_BPP | VBE_VIRT_WIDTH | VBE_X_OFFSET | VBE_Y_OFFSET => {
                self.vbe[i] = val;
                self.vbe_fixup();
            }
            VBE_BANK => {
                let banks = (self.vram_size >> 16).max(1);
                let mask = if self.vbe[VBE_BPP] == 4 {
                    (banks >> 2).max(1) - 1
                } else {
                    banks - 1
                };
                let bank = u32::from(val) & mask;
                self.vbe[i] = bank as u16;
                self.bank_offset = bank << 16;
            }
            VBE_ENABLE => {
                if val & VBE_ENABLED != 0 && !self.vbe_enabled() {
                    self.vbe[VBE_VIRT_WIDTH] = 0;
                    self.vbe[VBE_X_OFFSET] = 0;
                    self.vbe[VBE_Y_OFFSET] = 0;
                    self.vbe[VBE_ENABLE] |= VBE_ENABLED;
                    self.vbe_fixup();
                    if val & VBE_NOCLEARMEM == 0 {
                        let len = u32::from(self.vbe[VBE_YRES]) * self.vbe_line_offset;
                        vram.clear(0, len as usize);
                    }
                    self.vbe_legacy_regs();
                } else if val & VBE_ENABLED == 0 {
                    self.bank_offset = 0;
                }
                self.dac_8bit = val & VBE_8BIT_DAC != 0;
                self.vbe[i] = val;
            }
            _ => {}
        }
    }

    /// Make the legacy registers describe a graphics mode, as the Bochs VBE does on enable.
    fn vbe_legacy_regs(&mut self) {
        // Graphics mode, memory map 1 (0xa0000, 64 KiB).
        self.gr[GR_MISC] = (self.gr[GR_MISC] & !0x0c) | 0x04 | 0x01;
        self.cr[CR_MODE] |= 3;
        self.cr[CR_OFFSET] = (self.vbe_line_offset >> 3) as u8;
        self.cr[CR_H_DISP] = ((self.vbe[VBE_XRES] >> 3).saturating_sub(1)) as u8;
        let h = self.vbe[VBE_YRES].saturating_sub(1);
        self.cr[CR_V_DISP_END] = h as u8;
        self.cr[CR_OVERFLOW] =
            (self.cr[CR_OVERFLOW] & !0x42) | ((h >> 7) as u8 & 0x02) | ((h >> 3) as u8 & 0x40);
        self.cr[CR_LINE_COMPARE] = 0xff;
        self.cr[CR_OVERFLOW] |= 0x10;
        self.cr[CR_MAX_SCAN] |= 0x40;
        let shift_control = if self.vbe[VBE_BPP] == 4 {
            self.sr[SR_CLOCK_MODE] &= !8;
            0
        } else {
            self.sr[SR_MEMORY_MODE] |= SR04_CHAIN4;
            self.sr[SR_PLANE_WRITE] |= 0x0f;
            2
        };
        self.gr[GR_MODE] = (self.gr[GR_MODE] & !0x60) | (shift_control << 5);
        self.cr[CR_MAX_SCAN] &= !0x9f;
    }

    /// Clamp the VBE geometry so the visible picture lies inside video memory (QEMU's
    /// `vbe_fixup_regs`, with this device's smaller maximum size).
    pub fn vbe_fixup(&mut self) {
        if !self.vbe_enabled() {
            return;
        }
        let r = &mut self.vbe;
        if !matches!(r[VBE_BPP], 4 | 8 | 15 | 16 | 24 | 32) {
            r[VBE_BPP] = 8;
        }
        let bits = match r[VBE_BPP] {
            15 => 16,
            b => u32::from(b),
        };
        r[VBE_XRES] = (r[VBE_XRES] & !7).clamp(8, VBE_MAX_XRES);
        r[VBE_VIRT_WIDTH] = (r[VBE_VIRT_WIDTH] & !7).clamp(r[VBE_XRES], VBE_MAX_XRES);
        let line = u32::from(r[VBE_VIRT_WIDTH]) * bits / 8;
        let maxy = (self.vram_size / line.max(1)).min(u32::from(u16::MAX));
        r[VBE_YRES] = r[VBE_YRES].clamp(1, VBE_MAX_YRES).min(maxy as u16);
        r[VBE_X_OFFSET] = r[VBE_X_OFFSET].min(VBE_MAX_XRES);
        r[VBE_Y_OFFSET] = r[VBE_Y_OFFSET].min(VBE_MAX_YRES);
        let visible = u32::from(r[VBE_YRES]) * line;
        let mut offset = u32::from(r[VBE_X_OFFSET]) * bits / 8 + u32::from(r[VBE_Y_OFFSET]) * line;
        if offset + visible > self.vram_size {
            r[VBE_Y_OFFSET] = 0;
            offset = u32::from(r[VBE_X_OFFSET]) * bits / 8;
            if offset + visible > self.vram_size {
                r[VBE_X_OFFSET] = 0;
                offset = 0;
            }
        }
        r[VBE_VIRT_HEIGHT] = maxy as u16;
        self.vbe_line_offset = line;
        // Dword-aligned, as the CRTC start address is.
        self.vbe_start = offset & !3;
    }

    /// Video memory address of window offset `addr` (0..0x20000), or None if the memory map
    /// mode does not decode it.
    fn window_address(&self, addr: u64) -> Option<usize> {
        let addr = (addr & 0x1ffff) as u32;
        let a = match (self.gr[GR_MISC] >> 2) & 3 {
            0 => addr,
            1 => (addr < 0x10000).then_some(addr + self.bank_offset)?,
            2 => addr.checked_sub(0x10000).filter(|&a| a < 0x8000)?,
            _ => addr.checked_sub(0x18000).filter(|&a| a < 0x8000)?,
        };
        Some(a as usize)
    }

    /// A byte read through the 0xa0000 window.
    pub fn mem_read(&mut self, addr: u64, vram: &Vram) -> u8 {
        let Some(a) = self.window_address(addr) else {
            return 0xff;
        };
        if self.sr[SR_MEMORY_MODE] & SR04_CHAIN4 != 0 {
            vram.read_u8(a)
        } else if self.gr[GR_MODE] & 0x10 != 0 {
            let plane = (self.gr[GR_PLANE_READ] as usize & 2) | (a & 1);
            vram.read_u8(((a & !1) << 1) | plane)
        } else {
            self.latch = vram.read_u32(a.saturating_mul(4));
            if self.gr[GR_MODE] & 0x08 == 0 {
                let plane = self.gr[GR_PLANE_READ] & 3;
                (self.latch >> (plane * 8)) as u8
            } else {
                let mut r = (self.latch ^ mask16(self.gr[GR_COMPARE_VALUE]))
                    & mask16(self.gr[GR_COMPARE_MASK]);
                r |= r >> 16;
                r |= r >> 8;
                !(r as u8)
            }
        }
    }

    /// A byte written through the 0xa0000 window.
    pub fn mem_write(&mut self, addr: u64, val: u8, vram: &Vram) {
        let Some(a) = self.window_address(addr) else {
            return;
        };
        if self.sr[SR_MEMORY_MODE] & SR04_CHAIN4 != 0 {
            if self.sr[SR_PLANE_WRITE] & (1 << (a & 3)) != 0 {
                vram.write_u8(a, val);
            }
            return;
        }
        if self.gr[GR_MODE] & 0x10 != 0 {
            let plane = (self.gr[GR_PLANE_READ] as usize & 2) | (a & 1);
            if self.sr[SR_PLANE_WRITE] & (1 << plane) != 0 {
                vram.write_u8(((a & !1) << 1) | plane, val);
            }
            return;
        }
        let rotate = |v: u8| v.rotate_right(u32::from(self.gr[GR_DATA_ROTATE] & 7));
        let (value, bit_mask) = match self.gr[GR_MODE] & 3 {
            0 => {
                let v = u32::from(rotate(val)) * 0x0101_0101;
                let set = mask16(self.gr[GR_SR_ENABLE]);
                (
                    (v & !set) | (mask16(self.gr[GR_SR_VALUE]) & set),
                    self.gr[GR_BIT_MASK],
                )
            }
            1 => (self.latch, 0xff),
            2 => (mask16(val & 0x0f), self.gr[GR_BIT_MASK]),
            _ => (
                mask16(self.gr[GR_SR_VALUE]),
                self.gr[GR_BIT_MASK] & rotate(val),
            ),
        };
        let value = if self.gr[GR_MODE] & 3 == 1 {
            value
        } else {
            let v = match self.gr[GR_DATA_ROTATE] >> 3 {
                1 => value & self.latch,
                2 => value | self.latch,
                3 => value ^ self.latch,
                _ => value,
            };
            let bits = u32::from(bit_mask) * 0x0101_0101;
            (v & bits) | (self.latch & !bits)
        };
        let write_mask = mask16(self.sr[SR_PLANE_WRITE]);
        let at = a.saturating_mul(4);
        let old = vram.read_u32(at);
        vram.write_u32(at, (old & !write_mask) | (value & write_mask));
    }
}

mod state;
pub use state::VgaRegsState;

#[cfg(test)]
mod tests;
