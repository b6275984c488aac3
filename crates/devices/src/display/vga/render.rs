//! Turning VGA registers and video memory into an XRGB8888 picture: text mode (fonts from plane
//! 2, attributes, cursor, 8/9/16-dot cells), planar 16-colour, CGA 4-colour, 256-colour (mode
//! 13h) and the VBE 4/8/15/16/24/32-bit modes, following the geometry QEMU's VGA derives
//! (hw/display/vga.c `vga_draw_text` / `vga_draw_graphic`), so that a `screendump` has QEMU's
//! size. The text cursor does not blink (a still picture compares reliably).
//!
//! The renderer keeps the device's shadow picture and the frame at which each row last changed
//! (see [`crate::display::Framebuffer::sync_rows`]). Text and legacy graphics modes are small
//! and redrawn whole; VBE modes only redraw rows whose video memory pages were written (the
//! device's own writes plus KVM's dirty log of the framebuffer BAR) unless a register changed.

use super::regs::*;
use crate::display::vram::{DirtyLog, Vram, PAGE_SIZE};
use crate::display::{Framebuffer, MAX_HEIGHT, MAX_WIDTH};

/// Size shown before the guest programs a mode, as QEMU's initial console.
const BLANK_SIZE: (u32, u32) = (640, 480);
/// Largest text screen drawn (QEMU's `CH_ATTR_SIZE`).
const MAX_TEXT_CELLS: u32 = 160 * 100;
/// Bytes per glyph slot in plane 2 (32 scanlines), times 4 for the plane interleave.
const GLYPH_STRIDE: usize = 32 * 4;
/// A font bank: 256 glyphs of 32 lines, interleaved with the other planes.
const FONT_BYTES: usize = 256 * GLYPH_STRIDE;

/// 6-bit DAC value to 8 bits (QEMU's `c6_to_8`).
fn c6_to_8(v: u8) -> u32 {
    let v = u32::from(v & 0x3f);
    (v << 2) | ((v & 1) << 1) | (v & 1)
}

fn rgb(r: u32, g: u32, b: u32) -> u32 {
    (r << 16) | (g << 8) | b
}

/// The 16 attribute-controller colours as XRGB.
fn palette16(r: &VgaRegs) -> [u32; 16] {
    let mut out = [0; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let v = r.ar[i];
        let v = if r.ar[AR_MODE] & 0x80 != 0 {
            ((r.ar[AR_COLOR_PAGE] & 0xf) << 4) | (v & 0xf)
        } else {
            ((r.ar[AR_COLOR_PAGE] & 0xc) << 4) | (v & 0x3f)
        };
        let p = &r.palette[usize::from(v) * 3..usize::from(v) * 3 + 3];
        *o = rgb(c6_to_8(p[0]), c6_to_8(p[1]), c6_to_8(p[2]));
    }
    out
}

/// The 256 DAC colours as XRGB.
fn palette256(r: &VgaRegs) -> [u32; 256] {
    let mut out = [0; 256];
    for (i, o) in out.iter_mut().enumerate() {
        let p = &r.palette[i * 3..i * 3 + 3];
        *o = if r.dac_8bit {
            rgb(p[0].into(), p[1].into(), p[2].into())
        } else {
            rgb(c6_to_8(p[0]), c6_to_8(p[1]), c6_to_8(p[2]))
        };
    }
    out
}

/// How each line of a graphics mode is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineFormat {
    /// CGA 4-colour (shift control 1), optionally pixel-doubled.
    Cga2 {
        double: bool,
    },
    /// Planar 16-colour, optionally pixel-doubled.
    Planar4 {
        double: bool,
    },
    /// 256-colour, each byte two pixels wide (mode 13h).
    Pal8Double,
    Pal8,
    Rgb15,
    Rgb16,
    Rgb24,
    Rgb32,
}

/// Geometry of a graphics mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Graphic {
    format: LineFormat,
    /// Source pixels per line and displayed width.
    width: u32,
    disp_width: u32,
    height: u32,
    line_offset: u32,
    start: u32,
    /// Each source line is shown `multi_scan + 1` times.
    multi_scan: u32,
    line_compare: u32,
    /// CRTC mode register (CGA address bits when bits 0/1 are clear).
    crtc_mode: u8,
    vbe: bool,
}

impl Graphic {
    /// Bytes of video memory one line reads.
    fn line_bytes(&self) -> usize {
        let bits = match self.format {
            LineFormat::Cga2 { .. } | LineFormat::Planar4 { .. } | LineFormat::Pal8Double => 4,
            LineFormat::Pal8 => 8,
            LineFormat::Rgb15 | LineFormat::Rgb16 => 16,
            LineFormat::Rgb24 => 24,
            LineFormat::Rgb32 => 32,
        };
        (self.width as usize * bits).div_ceil(8)
    }
}

/// Text mode geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Text {
    cols: u32,
    rows: u32,
    cell_width: u32,
    cell_height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Blank,
    Text(Text),
    Graphic(Graphic),
}

fn vertical_display_end(r: &VgaRegs) -> u32 {
    u32::from(r.cr[CR_V_DISP_END])
        | ((u32::from(r.cr[CR_OVERFLOW]) & 0x02) << 7)
        | ((u32::from(r.cr[CR_OVERFLOW]) & 0x40) << 3)
}

fn mode_of(r: &VgaRegs) -> Mode {
    if r.bochs && !r.vbe_enabled() {
        return Mode::Blank;
    }
    if !r.bochs && r.ar_index & 0x20 == 0 {
        return Mode::Blank;
    }
    if !r.bochs && r.gr[GR_MISC] & 1 == 0 {
        let cell_height = u32::from(r.cr[CR_MAX_SCAN] & 0x1f) + 1;
        let cell_width = if r.sr[SR_CLOCK_MODE] & 0x08 != 0 {
            16
        } else if r.sr[SR_CLOCK_MODE] & 0x01 != 0 {
            8
        } else {
            9
        };
        let cols = u32::from(r.cr[CR_H_DISP]) + 1;
        let rows = (vertical_display_end(r) + 1) / cell_height;
        if cols * rows <= 1 || cols * rows > MAX_TEXT_CELLS {
            return Mode::Blank;
        }
        return Mode::Text(Text {
            cols,
            rows,
            cell_width,
            cell_height,
        });
    }
    let shift_control = (r.gr[GR_MODE] >> 5) & 3;
    let double_scan = u32::from(r.cr[CR_MAX_SCAN] >> 7);
    let multi_scan = if shift_control == 1 {
        double_scan
    } else {
        ((u32::from(r.cr[CR_MAX_SCAN] & 0x1f) + 1) << double_scan) - 1
    };
    let vbe = r.vbe_enabled();
    let (width, height, line_offset, start, line_compare) = if vbe {
        (
            u32::from(r.vbe[VBE_XRES]),
            u32::from(r.vbe[VBE_YRES]),
            r.vbe_line_offset,
            r.vbe_start,
            u32::MAX,
        )
    } else {
        let start = (u32::from(r.cr[CR_START_HI]) << 8) | u32::from(r.cr[CR_START_LO]);
        let line_compare = u32::from(r.cr[0x18])
            | ((u32::from(r.cr[CR_OVERFLOW]) & 0x10) << 4)
            | ((u32::from(r.cr[CR_MAX_SCAN]) & 0x40) << 3);
        (
            (u32::from(r.cr[CR_H_DISP]) + 1) * 8,
            vertical_display_end(r) + 1,
            u32::from(r.cr[CR_OFFSET]) << 3,
            start * 4,
            line_compare,
        )
    };
    let doubled = r.sr[SR_CLOCK_MODE] & 8 != 0;
    let format = match shift_control {
        0 => LineFormat::Planar4 { double: doubled },
        1 => LineFormat::Cga2 { double: doubled },
        _ if !vbe => LineFormat::Pal8Double,
        _ => match r.vbe[VBE_BPP] {
            15 => LineFormat::Rgb15,
            16 => LineFormat::Rgb16,
            24 => LineFormat::Rgb24,
            32 => LineFormat::Rgb32,
            _ => LineFormat::Pal8,
        },
    };
    let disp_width = match format {
        LineFormat::Planar4 { double: true } | LineFormat::Cga2 { double: true } => width * 2,
        _ => width,
    };
    if disp_width == 0 || height == 0 || disp_width > MAX_WIDTH || height > MAX_HEIGHT {
        return Mode::Blank;
    }
    Mode::Graphic(Graphic {
        format,
        width,
        disp_width,
        height,
        line_offset,
        start,
        multi_scan,
        line_compare,
        crtc_mode: r.cr[CR_MODE],
        vbe,
    })
}

/// The device's picture and what each consumer needs to catch up with it.
pub struct Renderer {
    pub shadow: Framebuffer,
    /// Frame at which each row of `shadow` last changed.
    pub rows: Vec<u64>,
    pub frame: u64,
    last_mode: Option<Mode>,
    last_generation: u64,
    line: Vec<u8>,
    pixels: Vec<u32>,
    dirty: Vec<u64>,
}

impl Renderer {
    pub fn new(vram: &Vram) -> Self {
        Self {
            shadow: Framebuffer::new(),
            rows: Vec::new(),
            frame: 0,
            last_mode: None,
            last_generation: 0,
            line: Vec::new(),
            pixels: Vec::new(),
            dirty: vec![0; vram.bitmap_words()],
        }
    }

    /// Bring the shadow picture up to date.
    pub fn update(&mut self, r: &VgaRegs, vram: &Vram, log: Option<&dyn DirtyLog>) {
        self.frame += 1;
        self.dirty.fill(0);
        vram.take_dirty(&mut self.dirty);
        let logged = log.is_none_or(|l| l.take_dirty(&mut self.dirty));
        let mode = mode_of(r);
        if self.last_mode != Some(mode) {
            tracing::debug!(?mode, "VGA mode");
        }
        let (w, h) = match mode {
            Mode::Blank => match self.last_mode {
                Some(_) if self.shadow.width() > 0 => (self.shadow.width(), self.shadow.height()),
                _ => BLANK_SIZE,
            },
            Mode::Text(t) => (t.cols * t.cell_width, t.rows * t.cell_height),
            Mode::Graphic(g) => (g.disp_width, g.height),
        };
        let mut full = !logged
            || self.last_mode != Some(mode)
            || self.last_generation != r.generation
            || !matches!(mode, Mode::Graphic(Graphic { vbe: true, .. }));
        if (w.min(MAX_WIDTH), h.min(MAX_HEIGHT)) != (self.shadow.width(), self.shadow.height())
            || self.rows.len() != self.shadow.height() as usize
        {
            self.shadow.resize(w, h);
            self.rows = vec![self.frame; self.shadow.height() as usize];
            full = true;
        }
        self.last_mode = Some(mode);
        self.last_generation = r.generation;
        match mode {
            Mode::Blank => {
                let black = vec![0u32; self.shadow.width() as usize];
                for y in 0..self.shadow.height() {
                    self.put_row(y, &black);
                }
            }
            Mode::Text(t) => self.draw_text(r, vram, t),
            Mode::Graphic(g) => self.draw_graphic(r, vram, g, full),
        }
    }

    /// Store row `y` if it differs, stamping it with the current frame.
    fn put_row(&mut self, y: u32, px: &[u32]) {
        let row = self.shadow.row_mut(y);
        let n = row.len().min(px.len());
        if row[..n] != px[..n] {
            row[..n].copy_from_slice(&px[..n]);
            if let Some(f) = self.rows.get_mut(y as usize) {
                *f = self.frame;
            }
        }
    }

    fn draw_text(&mut self, r: &VgaRegs, vram: &Vram, t: Text) {
        let pal = palette16(r);
        // Character maps A and B (SR03), in plane 2.
        let v = usize::from(r.sr[SR_CHAR_MAP]);
        let map_b = (((v >> 4) & 1) | ((v << 1) & 6)) * 8192 * 4 + 2;
        let map_a = (((v >> 5) & 1) | ((v >> 1) & 6)) * 8192 * 4 + 2;
        let mut fonts = [vec![0u8; FONT_BYTES], vec![0u8; FONT_BYTES]];
        vram.read(map_b, &mut fonts[0]);
        vram.read(map_a, &mut fonts[1]);
        let start = (usize::from(r.cr[CR_START_HI]) << 8) | usize::from(r.cr[CR_START_LO]);
        let cursor = (usize::from(r.cr[CR_CURSOR_HI]) << 8) | usize::from(r.cr[CR_CURSOR_LO]);
        let line_offset = usize::from(r.cr[CR_OFFSET]) << 3;
        let line_compare = u32::from(r.cr[0x18])
            | ((u32::from(r.cr[CR_OVERFLOW]) & 0x10) << 4)
            | ((u32::from(r.cr[CR_MAX_SCAN]) & 0x40) << 3);
        let cursor_on = r.cr[CR_CURSOR_START] & 0x20 == 0;
        let cursor_first = u32::from(r.cr[CR_CURSOR_START] & 0x1f);
        let cursor_last = u32::from(r.cr[CR_CURSOR_END] & 0x1f).min(t.cell_height - 1);
        let line_graphics = r.ar[AR_MODE] & 0x04 != 0;
        let (cw, ch) = (t.cell_width as usize, t.cell_height);
        let width = t.cols as usize * cw;
        let mut cells = vec![0u8; t.cols as usize * 4];
        let mut band = vec![0u32; width * ch as usize];
        let mut offset = start * 4;
        let mut line = 0;
        for cy in 0..t.rows {
            vram.read(offset, &mut cells);
            for cx in 0..t.cols as usize {
                let (c, attr) = (cells[cx * 4], cells[cx * 4 + 1]);
                let font = &fonts[usize::from(attr >> 3) & 1];
                let glyph = &font[usize::from(c) * GLYPH_STRIDE..][..GLYPH_STRIDE];
                let (fg, bg) = (pal[usize::from(attr & 0xf)], pal[usize::from(attr >> 4)]);
                let dup9 = cw == 9 && line_graphics && (0xb0..=0xdf).contains(&c);
                let is_cursor = cursor_on && offset + cx * 4 == cursor * 4;
                for y in 0..ch {
                    let mut bits = glyph[y as usize * 4];
                    if is_cursor && y >= cursor_first && y <= cursor_last {
                        bits = 0xff;
                    }
                    let out = &mut band[y as usize * width + cx * cw..][..cw];
                    match cw {
                        16 => {
                            for (i, px) in out.iter_mut().enumerate() {
                                *px = if bits & (0x80 >> (i / 2)) != 0 {
                                    fg
                                } else {
                                    bg
                                };
                            }
                        }
                        _ => {
                            for (i, px) in out.iter_mut().take(8).enumerate() {
                                *px = if bits & (0x80 >> i) != 0 { fg } else { bg };
                            }
                            if cw == 9 {
                                let ninth = (dup9
                                    || (is_cursor
                                        && bits == 0xff
                                        && y >= cursor_first
                                        && y <= cursor_last))
                                    && bits & 1 != 0;
                                out[8] = if ninth { fg } else { bg };
                            }
                        }
                    }
                }
            }
            for y in 0..ch {
                let row = band[y as usize * width..][..width].to_vec();
                self.put_row(cy * ch + y, &row);
            }
            let next = line + ch;
            offset += line_offset;
            if line < line_compare && next >= line_compare {
                offset = 0;
            }
            line = next;
        }
    }

    fn draw_graphic(&mut self, r: &VgaRegs, vram: &Vram, g: Graphic, full: bool) {
        let pal16 = palette16(r);
        let pal256 = palette256(r);
        let plane_mask = {
            let m = r.ar[AR_PLANE_ENABLE] & 0xf;
            (0..4).fold(0u32, |acc, p| {
                if m & (1 << p) != 0 {
                    acc | (0xff << (8 * p))
                } else {
                    acc
                }
            })
        };
        let bytes = g.line_bytes();
        self.line.resize(bytes, 0);
        self.pixels.resize(g.disp_width as usize, 0);
        let mut addr1 = g.start as usize;
        let mut y1 = 0u32;
        let mut multi_run = g.multi_scan;
        for y in 0..g.height {
            let mut addr = addr1;
            if g.crtc_mode & 1 == 0 {
                let shift = 14 + ((g.crtc_mode >> 6) & 1);
                addr = (addr & !(1 << shift)) | (((y1 & 1) as usize) << shift);
            }
            if g.crtc_mode & 2 == 0 {
                addr = (addr & !0x8000) | (((y1 & 2) as usize) << 14);
            }
            if full || self.pages_dirty(addr, bytes) {
                vram.read(addr, &mut self.line);
                decode_line(g, &self.line, &mut self.pixels, &pal16, &pal256, plane_mask);
                let px = std::mem::take(&mut self.pixels);
                self.put_row(y, &px);
                self.pixels = px;
            }
            if multi_run == 0 {
                let mask = u32::from(g.crtc_mode & 3) ^ 3;
                if y1 & mask == mask {
                    addr1 = addr1.wrapping_add(g.line_offset as usize);
                }
                y1 += 1;
                multi_run = g.multi_scan;
            } else {
                multi_run -= 1;
            }
            if y == g.line_compare {
                addr1 = 0;
            }
        }
    }

    fn pages_dirty(&self, addr: usize, len: usize) -> bool {
        if len == 0 {
            return false;
        }
        let (first, last) = (addr / PAGE_SIZE, (addr + len - 1) / PAGE_SIZE);
        (first..=last).any(|p| {
            self.dirty
                .get(p / 64)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }
}

/// Decode one line of video memory into `out` (`disp_width` pixels).
fn decode_line(
    g: Graphic,
    src: &[u8],
    out: &mut [u32],
    pal16: &[u32; 16],
    pal256: &[u32; 256],
    plane_mask: u32,
) {
    let dword = |i: usize| -> u32 {
        src.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & plane_mask)
            .unwrap_or(0)
    };
    let plane = |d: u32, p: u32| (d >> (8 * p)) as u8;
    match g.format {
        LineFormat::Planar4 { double } => {
            let scale = if double { 2 } else { 1 };
            for (x, px) in out.iter_mut().enumerate() {
                let sx = x / scale;
                let d = dword(sx / 8);
                let bit = 7 - (sx % 8) as u32;
                let c = (0..4).fold(0usize, |c, p| {
                    c | ((((plane(d, p) >> bit) & 1) as usize) << p)
                });
                *px = pal16[c];
            }
        }
        LineFormat::Cga2 { double } => {
            let scale = if double { 2 } else { 1 };
            for (x, px) in out.iter_mut().enumerate() {
                let sx = x / scale;
                let d = dword(sx / 8);
                let k = (sx % 8) as u32;
                // Pixels 0-3 from planes 0 and 2, pixels 4-7 from planes 1 and 3.
                let (lo, hi) = if k < 4 { (0, 2) } else { (1, 3) };
                let shift = 6 - 2 * (k % 4);
                let c = ((plane(d, lo) >> shift) & 3) | (((plane(d, hi) >> shift) & 3) << 2);
                *px = pal16[usize::from(c)];
            }
        }
        LineFormat::Pal8Double => {
            for (x, px) in out.iter_mut().enumerate() {
                *px = pal256[usize::from(src.get(x / 2).copied().unwrap_or(0))];
            }
        }
        LineFormat::Pal8 => {
            for (px, &b) in out.iter_mut().zip(src) {
                *px = pal256[usize::from(b)];
            }
        }
        LineFormat::Rgb15 | LineFormat::Rgb16 => {
            for (px, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                *px = if g.format == LineFormat::Rgb15 {
                    rgb((v >> 7) & 0xf8, (v >> 2) & 0xf8, (v << 3) & 0xf8)
                } else {
                    rgb((v >> 8) & 0xf8, (v >> 3) & 0xfc, (v << 3) & 0xf8)
                };
            }
        }
        LineFormat::Rgb24 => {
            for (px, b) in out.iter_mut().zip(src.chunks_exact(3)) {
                *px = rgb(b[2].into(), b[1].into(), b[0].into());
            }
        }
        LineFormat::Rgb32 => {
            for (px, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *px = rgb(b[2].into(), b[1].into(), b[0].into());
            }
        }
    }
}
