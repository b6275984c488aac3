//! Pixel formats and rectangle encodings: Raw (RFC 6143 7.7.1) and ZRLE (7.7.6).
//!
//! The source is always XRGB8888 (`0x00RRGGBB` in a `u32`); each client chooses its own
//! true-colour format with SetPixelFormat.

use flate2::{Compress, Compression, FlushCompress};

use crate::Rect;

/// Encoding numbers (RFC 6143 7.7, 7.8).
pub const ENC_RAW: i32 = 0;
pub const ENC_ZRLE: i32 = 16;
pub const ENC_DESKTOP_SIZE: i32 = -223;
/// QEMU's extended key event pseudo-encoding: the client sends scan codes along with keysyms.
pub const ENC_QEMU_EXT_KEY: i32 = -258;
/// QEMU's pointer type change pseudo-encoding: the rectangle's x says whether the pointer is
/// absolute (1) or relative (0); a relative client then sends motion around 0x7fff.
pub const ENC_QEMU_POINTER_TYPE: i32 = -257;

/// A client's pixel format (RFC 6143 7.4): true colour only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The server's native format, sent in ServerInit: 32 bpp, depth 24, 0x00RRGGBB little endian.
    pub const XRGB8888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// The 16-byte wire form.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = 1; // true colour
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Parses a client's SetPixelFormat body; None for formats rvmm cannot produce (colour
    /// maps, bits per pixel other than 8/16/32, shifts past the pixel).
    pub fn from_bytes(b: &[u8; 16]) -> Option<PixelFormat> {
        let pf = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        let true_colour = b[3] != 0;
        let bpp = u32::from(pf.bits_per_pixel);
        let fits = |max: u16, shift: u8| {
            u32::from(shift) < bpp && (u64::from(max) << shift) < (1u64 << bpp)
        };
        (true_colour
            && matches!(bpp, 8 | 16 | 32)
            && fits(pf.red_max, pf.red_shift)
            && fits(pf.green_max, pf.green_shift)
            && fits(pf.blue_max, pf.blue_shift))
        .then_some(pf)
    }

    pub fn bytes_per_pixel(self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    fn is_native(self) -> bool {
        self == Self::XRGB8888
            || (self.bits_per_pixel == 32
                && !self.big_endian
                && (self.red_max, self.green_max, self.blue_max) == (255, 255, 255)
                && (self.red_shift, self.green_shift, self.blue_shift) == (16, 8, 0))
    }

    /// The pixel value of an XRGB8888 pixel in this format.
    fn convert(self, p: u32) -> u32 {
        let scale = |c: u32, max: u16| (c * u32::from(max) + 127) / 255;
        (scale((p >> 16) & 0xff, self.red_max) << self.red_shift)
            | (scale((p >> 8) & 0xff, self.green_max) << self.green_shift)
            | (scale(p & 0xff, self.blue_max) << self.blue_shift)
    }

    /// Appends one pixel (`value` already converted) in wire byte order.
    fn put(self, value: u32, out: &mut Vec<u8>) {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(value as u8),
            (16, false) => out.extend_from_slice(&(value as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(value as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&value.to_le_bytes()),
            (_, true) => out.extend_from_slice(&value.to_be_bytes()),
        }
    }

    /// ZRLE's compressed pixel (RFC 6143 7.7.6): 3 bytes when a 32 bpp depth <= 24 format uses
    /// only the low or only the high three bytes; otherwise a whole pixel.
    fn put_cpixel(self, value: u32, out: &mut Vec<u8>) {
        let mask = |max: u16, shift: u8| u64::from(max) << shift;
        let used = mask(self.red_max, self.red_shift)
            | mask(self.green_max, self.green_shift)
            | mask(self.blue_max, self.blue_shift);
        if self.bits_per_pixel == 32 && self.depth <= 24 {
            let v = if used & 0xff00_0000 == 0 {
                Some(value)
            } else if used & 0xff == 0 {
                Some(value >> 8)
            } else {
                None
            };
            if let Some(v) = v {
                let b = v.to_le_bytes();
                if self.big_endian {
                    out.extend_from_slice(&[b[2], b[1], b[0]]);
                } else {
                    out.extend_from_slice(&b[..3]);
                }
                return;
            }
        }
        self.put(value, out);
    }
}

/// The pixels of one source frame.
pub struct Frame<'a> {
    pub width: u32,
    pub pixels: &'a [u32],
}

impl Frame<'_> {
    fn row(&self, r: Rect, y: u32) -> &[u32] {
        let start = (y as usize) * (self.width as usize) + r.x as usize;
        self.pixels.get(start..start + r.w as usize).unwrap_or(&[])
    }
}

/// Appends a rectangle header (RFC 6143 7.6.1).
pub fn rect_header(r: Rect, encoding: i32, out: &mut Vec<u8>) {
    for v in [r.x, r.y, r.w, r.h] {
        out.extend_from_slice(&(v as u16).to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

/// Raw: every pixel of the rectangle, row by row.
pub fn raw(frame: &Frame, r: Rect, pf: PixelFormat, out: &mut Vec<u8>) {
    rect_header(r, ENC_RAW, out);
    out.reserve(r.w as usize * r.h as usize * pf.bytes_per_pixel());
    for y in r.y..r.y + r.h {
        let row = frame.row(r, y);
        if pf.is_native() {
            for p in row {
                out.extend_from_slice(&p.to_le_bytes());
            }
        } else {
            for &p in row {
                pf.put(pf.convert(p), out);
            }
        }
    }
}

/// ZRLE's tile size.
const TILE: u32 = 64;

/// One connection's ZRLE state: a single zlib stream lives as long as the connection.
pub struct Zrle {
    z: Compress,
    tile: Vec<u32>,
    plain: Vec<u8>,
}

impl Default for Zrle {
    fn default() -> Self {
        Self {
            z: Compress::new(Compression::new(6), true),
            tile: Vec::with_capacity((TILE * TILE) as usize),
            plain: Vec::new(),
        }
    }
}

impl Zrle {
    /// Encodes a rectangle: 64x64 tiles, each solid, packed palette, palette RLE, plain RLE
    /// or raw, whichever is smallest by a cheap estimate; then one zlib sync flush.
    pub fn encode(&mut self, frame: &Frame, r: Rect, pf: PixelFormat, out: &mut Vec<u8>) {
        rect_header(r, ENC_ZRLE, out);
        self.plain.clear();
        let mut ty = r.y;
        while ty < r.y + r.h {
            let th = TILE.min(r.y + r.h - ty);
            let mut tx = r.x;
            while tx < r.x + r.w {
                let tw = TILE.min(r.x + r.w - tx);
                let t = Rect {
                    x: tx,
                    y: ty,
                    w: tw,
                    h: th,
                };
                self.tile.clear();
                let native = pf.is_native();
                for y in ty..ty + th {
                    let row = frame.row(t, y);
                    if native {
                        // XRGB8888 is the client's format: the pixel values are the same.
                        self.tile.extend(row.iter().map(|&p| p & 0x00ff_ffff));
                    } else {
                        self.tile.extend(row.iter().map(|&p| pf.convert(p)));
                    }
                }
                encode_tile(&self.tile, tw as usize, pf, &mut self.plain);
                tx += tw;
            }
            ty += th;
        }
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.deflate(out);
        let len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn deflate(&mut self, out: &mut Vec<u8>) {
        let mut input = &self.plain[..];
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(input.len() / 2 + 4096);
            }
            let before = self.z.total_in();
            // Errors (none for in-memory buffers) end the rect.
            if self
                .z
                .compress_vec(input, out, FlushCompress::Sync)
                .is_err()
            {
                return;
            }
            input = &input[(self.z.total_in() - before) as usize..];
            // zlib finished the flush when it left output room unused.
            if input.is_empty() && out.len() < out.capacity() {
                return;
            }
        }
    }
}

/// A tile's palette if it has at most 127 colours.
fn palette(tile: &[u32]) -> Option<Vec<u32>> {
    let mut pal: Vec<u32> = Vec::new();
    let mut last = None;
    for &p in tile {
        if last == Some(p) {
            continue;
        }
        last = Some(p);
        if !pal.contains(&p) {
            if pal.len() == 127 {
                return None;
            }
            pal.push(p);
        }
    }
    Some(pal)
}

fn runs(tile: &[u32]) -> impl Iterator<Item = (u32, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let p = *tile.get(i)?;
        let n = tile[i..].iter().take_while(|&&q| q == p).count();
        i += n;
        Some((p, n))
    })
}

fn put_run_length(mut n: usize, out: &mut Vec<u8>) {
    // RFC 6143 7.7.6: length - 1 as a sum of 255s and a final byte below 255.
    n -= 1;
    while n >= 255 {
        out.push(255);
        n -= 255;
    }
    out.push(n as u8);
}

fn encode_tile(tile: &[u32], width: usize, pf: PixelFormat, out: &mut Vec<u8>) {
    let cp = if pf.bits_per_pixel == 32 && pf.depth <= 24 {
        3
    } else {
        pf.bytes_per_pixel()
    };
    let pal = palette(tile);
    if let Some(pal) = &pal {
        if pal.len() == 1 {
            out.push(1);
            pf.put_cpixel(pal[0], out);
            return;
        }
    }
    let nruns = runs(tile).count();
    let raw_size = tile.len() * cp;
    let plain_rle_size = nruns * (cp + 1);
    let (packed_size, pal_rle_size) = match &pal {
        Some(pal) => {
            let bits = match pal.len() {
                2 => 1,
                3..=4 => 2,
                5..=16 => 4,
                _ => 8,
            };
            let rows = tile.len() / width.max(1);
            let packed = if bits < 8 {
                pal.len() * cp + rows * (width * bits).div_ceil(8)
            } else {
                usize::MAX
            };
            (packed, pal.len() * cp + nruns * 2)
        }
        None => (usize::MAX, usize::MAX),
    };
    let best = raw_size
        .min(plain_rle_size)
        .min(packed_size)
        .min(pal_rle_size);
    let index = |pal: &[u32], p: u32| pal.iter().position(|&q| q == p).unwrap_or(0) as u8;
    if best == packed_size {
        let pal = pal.as_deref().unwrap_or(&[]);
        out.push(pal.len() as u8);
        for &p in pal {
            pf.put_cpixel(p, out);
        }
        let bits = match pal.len() {
            2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        for row in tile.chunks(width.max(1)) {
            let (mut byte, mut used) = (0u8, 0);
            for &p in row {
                byte = (byte << bits) | index(pal, p);
                used += bits;
                if used == 8 {
                    out.push(byte);
                    (byte, used) = (0, 0);
                }
            }
            if used > 0 {
                out.push(byte << (8 - used));
            }
        }
    } else if best == pal_rle_size {
        let pal = pal.as_deref().unwrap_or(&[]);
        out.push(128 + pal.len() as u8);
        for &p in pal {
            pf.put_cpixel(p, out);
        }
        for (p, n) in runs(tile) {
            let i = index(pal, p);
            if n == 1 {
                out.push(i);
            } else {
                out.push(i | 0x80);
                put_run_length(n, out);
            }
        }
    } else if best == plain_rle_size {
        out.push(128);
        for (p, n) in runs(tile) {
            pf.put_cpixel(p, out);
            put_run_length(n, out);
        }
    } else {
        out.push(0);
        for &p in tile {
            pf.put_cpixel(p, out);
        }
    }
}

/// Appends a DesktopSize pseudo-rectangle (RFC 6143 7.8.2).
pub fn desktop_size(width: u32, height: u32, out: &mut Vec<u8>) {
    let r = Rect {
        x: 0,
        y: 0,
        w: width,
        h: height,
    };
    rect_header(r, ENC_DESKTOP_SIZE, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32) -> u32) -> Vec<u32> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    /// A minimal ZRLE decoder for 3-byte CPIXELs, to check the encoder round-trips.
    fn decode_zrle(data: &[u8], r: Rect, z: &mut Decompress) -> Vec<u32> {
        let len = u32::from_be_bytes(data[12..16].try_into().unwrap()) as usize;
        assert_eq!(data.len(), 16 + len);
        let mut plain = Vec::with_capacity(1 << 20);
        z.decompress_vec(&data[16..], &mut plain, FlushDecompress::Sync)
            .unwrap();
        let mut out = vec![0u32; (r.w * r.h) as usize];
        let mut p = &plain[..];
        let mut take = |n: usize| {
            let (a, b) = p.split_at(n);
            p = b;
            a.to_vec()
        };
        let cpix = |b: &[u8]| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
        for ty in (0..r.h).step_by(64) {
            for tx in (0..r.w).step_by(64) {
                let (tw, th) = (64.min(r.w - tx), 64.min(r.h - ty));
                let mut px = Vec::new();
                let sub = take(1)[0];
                let n = (tw * th) as usize;
                match sub {
                    0 => px = (0..n).map(|_| cpix(&take(3))).collect(),
                    1 => px = vec![cpix(&take(3)); n],
                    2..=16 => {
                        let pal: Vec<u32> = (0..sub).map(|_| cpix(&take(3))).collect();
                        let bits = match sub {
                            2 => 1,
                            3 | 4 => 2,
                            _ => 4,
                        };
                        for _ in 0..th {
                            let bytes = take((tw as usize * bits).div_ceil(8));
                            for x in 0..tw as usize {
                                let bit = x * bits;
                                let v =
                                    (bytes[bit / 8] >> (8 - bits - bit % 8)) & ((1 << bits) - 1);
                                px.push(pal[v as usize]);
                            }
                        }
                    }
                    128 => {
                        while px.len() < n {
                            let c = cpix(&take(3));
                            let mut len = 1;
                            loop {
                                let b = take(1)[0];
                                len += usize::from(b);
                                if b != 255 {
                                    break;
                                }
                            }
                            px.extend(std::iter::repeat_n(c, len));
                        }
                    }
                    130..=255 => {
                        let pal: Vec<u32> = (0..sub - 128).map(|_| cpix(&take(3))).collect();
                        while px.len() < n {
                            let i = take(1)[0];
                            let mut len = 1;
                            if i & 0x80 != 0 {
                                loop {
                                    let b = take(1)[0];
                                    len += usize::from(b);
                                    if b != 255 {
                                        break;
                                    }
                                }
                            }
                            px.extend(std::iter::repeat_n(pal[usize::from(i & 0x7f)], len));
                        }
                    }
                    _ => panic!("subencoding {sub}"),
                }
                assert_eq!(px.len(), n);
                for y in 0..th {
                    for x in 0..tw {
                        out[((ty + y) * r.w + tx + x) as usize] = px[(y * tw + x) as usize];
                    }
                }
            }
        }
        assert!(p.is_empty());
        out
    }

    #[test]
    fn zrle_round_trips_every_tile_kind() {
        let (w, h) = (200u32, 150u32);
        let patterns: Vec<Box<dyn Fn(u32, u32) -> u32>> = vec![
            Box::new(|_, _| 0x123456),
            Box::new(|x, _| if x % 2 == 0 { 0xff0000 } else { 0x0000ff }),
            Box::new(|x, y| [0x10, 0x20, 0x30, 0x40, 0x50][((x / 3 + y) % 5) as usize]),
            Box::new(|x, y| (x * 7919 + y * 104729) & 0xffffff),
            Box::new(|x, y| if y < 70 { 0xabcdef } else { x * 3 + y }),
            Box::new(|x, _| (x / 10) * 0x010101),
        ];
        let mut zrle = Zrle::default();
        let mut dec = Decompress::new(true);
        for f in patterns {
            let px = frame(w, h, f);
            let fr = Frame {
                width: w,
                pixels: &px,
            };
            let r = Rect {
                x: 3,
                y: 5,
                w: 190,
                h: 140,
            };
            let mut out = Vec::new();
            zrle.encode(&fr, r, PixelFormat::XRGB8888, &mut out);
            let got = decode_zrle(&out, r, &mut dec);
            for y in 0..r.h {
                for x in 0..r.w {
                    assert_eq!(
                        got[(y * r.w + x) as usize],
                        px[((y + 5) * w + x + 3) as usize]
                    );
                }
            }
        }
    }

    #[test]
    fn raw_converts_formats() {
        let px = [0x00ff8000u32, 0x000000ff];
        let fr = Frame {
            width: 2,
            pixels: &px,
        };
        let r = Rect {
            x: 0,
            y: 0,
            w: 2,
            h: 1,
        };
        let mut out = Vec::new();
        raw(&fr, r, PixelFormat::XRGB8888, &mut out);
        assert_eq!(&out[12..], &[0x00, 0x80, 0xff, 0, 0xff, 0, 0, 0]);
        // RGB565 big endian.
        let mut b = PixelFormat::XRGB8888.to_bytes();
        b[0] = 16;
        b[1] = 16;
        b[2] = 1;
        b[4..10].copy_from_slice(&[0, 31, 0, 63, 0, 31]);
        b[10..13].copy_from_slice(&[11, 5, 0]);
        let pf = PixelFormat::from_bytes(&b).unwrap();
        out.clear();
        raw(&fr, r, pf, &mut out);
        assert_eq!(&out[12..], &[0xfc, 0x00, 0x00, 0x1f]);
        // Colour maps and impossible shifts are refused.
        b[3] = 0;
        assert!(PixelFormat::from_bytes(&b).is_none());
        b[3] = 1;
        b[10] = 16;
        assert!(PixelFormat::from_bytes(&b).is_none());
        b[10] = 11;
        b[0] = 24;
        assert!(PixelFormat::from_bytes(&b).is_none());
    }
}
