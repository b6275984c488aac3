//! The EDID block BAR2 offers at offset 0 (QEMU's `edid=on`, the default since QEMU 5.0): a
//! 128-byte EDID 1.4 base block for a virtual monitor whose preferred mode is 1280x800 (QEMU's
//! default), so Linux `bochs-drm` lists real modes. VESA E-EDID 1.4 section 3.

/// Preferred mode, as QEMU's default (`xres`/`yres` properties unset).
pub const PREFERRED: (u32, u32) = (1280, 800);

/// A detailed timing descriptor (E-EDID 3.10.2) for `w`x`h` at 60 Hz with CVT-like blanking.
fn detailed_timing(w: u32, h: u32) -> [u8; 18] {
    let (hblank, vblank) = (160u32, 30u32);
    let (hfront, hsync, vfront, vsync) = (48u32, 32u32, 3u32, 6u32);
    let clock_10khz = (w + hblank) * (h + vblank) * 60 / 10_000;
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&(clock_10khz as u16).to_le_bytes());
    d[2] = w as u8;
    d[3] = hblank as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((hblank >> 8) & 0xf)) as u8;
    d[5] = h as u8;
    d[6] = vblank as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((vblank >> 8) & 0xf)) as u8;
    d[8] = hfront as u8;
    d[9] = hsync as u8;
    d[10] = ((vfront & 0xf) << 4 | (vsync & 0xf)) as u8;
    d[11] = 0;
    // Image size in mm (about 100 dpi), no border, digital separate sync.
    let (wmm, hmm) = (w * 254 / 1000, h * 254 / 1000);
    d[12] = wmm as u8;
    d[13] = hmm as u8;
    d[14] = (((wmm >> 8) & 0xf) << 4 | ((hmm >> 8) & 0xf)) as u8;
    d[17] = 0x18;
    d
}

/// A display descriptor (tag 0xfc name, 0xfd range limits...) with `text` padded as the spec
/// says (newline, then spaces).
fn text_descriptor(tag: u8, text: &str) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    let mut body = [b' '; 13];
    let n = text.len().min(13);
    body[..n].copy_from_slice(&text.as_bytes()[..n]);
    if n < 13 {
        body[n] = b'\n';
    }
    d[5..].copy_from_slice(&body);
    d
}

/// The 128-byte base block.
pub fn edid() -> [u8; 128] {
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "RHT" (5-bit letters), product 0x1234, serial 0, week 0, year 2014.
    let id =
        (u16::from(b'R' - b'@') << 10) | (u16::from(b'H' - b'@') << 5) | u16::from(b'T' - b'@');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
    e[17] = (2014 - 1990) as u8;
    e[18] = 1;
    e[19] = 4;
    // Digital, 8 bits per colour, DisplayPort; size unknown; gamma 2.2; sRGB, preferred
    // timing in the first descriptor, continuous frequency.
    e[20] = 0xa5;
    e[23] = 120;
    e[24] = 0x07;
    // sRGB chromaticity (E-EDID 3.7).
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // Established timings: 640x480, 800x600, 1024x768 at 60 Hz.
    e[35] = 0x21;
    e[36] = 0x08;
    // No standard timings.
    for i in 0..8 {
        e[38 + 2 * i] = 0x01;
        e[39 + 2 * i] = 0x01;
    }
    e[54..72].copy_from_slice(&detailed_timing(PREFERRED.0, PREFERRED.1));
    // Range limits: 50-125 Hz vertical, 30-160 kHz horizontal, 340 MHz, no timing formula.
    let mut range = [0u8; 18];
    range[3] = 0xfd;
    range[5..10].copy_from_slice(&[50, 125, 30, 160, 34]);
    range[10] = 0x01;
    range[11..].copy_from_slice(&[0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20]);
    e[72..90].copy_from_slice(&range);
    e[90..108].copy_from_slice(&text_descriptor(0xfc, "QEMU Monitor"));
    // Dummy descriptor (tag 0x10, all zero).
    e[111] = 0x10;
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_block_is_valid_and_prefers_1280x800() {
        let e = edid();
        assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(e.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        assert_eq!((e[18], e[19]), (1, 4));
        let d = &e[54..72];
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        assert_eq!((w, h), PREFERRED);
        assert!(u16::from_le_bytes([d[0], d[1]]) > 0);
        assert_eq!(&e[95..107], b"QEMU Monitor");
    }
}
