//! QMP `screendump`: the display's current picture as a file, PPM (P6, QEMU's default format,
//! written as QEMU's `ppm_save` does: `P6\n<w> <h>\n255\n` then RGB triples) or PNG
//! (`format=png`, 8-bit RGB like QEMU's `png_save`).

use std::io::Write;
use std::path::Path;

use rvmm_devices::display::{DisplaySource, Framebuffer};

/// Output file format (QAPI `ImageFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Ppm,
    Png,
}

/// Why a screendump failed; the message is QMP's error description.
#[derive(Debug, thiserror::Error)]
pub enum ScreendumpError {
    #[error("failed to open file '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write to file '{path}': {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// The pixels as packed RGB bytes.
fn rgb_bytes(fb: &Framebuffer) -> Vec<u8> {
    let mut out = Vec::with_capacity(fb.pixels().len() * 3);
    for &p in fb.pixels() {
        out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
    }
    out
}

/// Encode `fb` in `format`.
pub fn encode(fb: &Framebuffer, format: ImageFormat) -> Result<Vec<u8>, ScreendumpError> {
    let rgb = rgb_bytes(fb);
    match format {
        ImageFormat::Ppm => {
            let mut out = format!("P6\n{} {}\n255\n", fb.width(), fb.height()).into_bytes();
            out.extend_from_slice(&rgb);
            Ok(out)
        }
        ImageFormat::Png => {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, fb.width(), fb.height());
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&rgb)?;
            w.finish()?;
            Ok(out)
        }
    }
}

/// Render `display` and write the picture to `path`.
pub fn screendump(
    display: &dyn DisplaySource,
    path: &Path,
    format: ImageFormat,
) -> Result<(), ScreendumpError> {
    let mut fb = Framebuffer::new();
    display.render(&mut fb);
    let data = encode(&fb, format)?;
    let name = path.display().to_string();
    let mut f = std::fs::File::create(path).map_err(|source| ScreendumpError::Open {
        path: name.clone(),
        source,
    })?;
    f.write_all(&data)
        .map_err(|source| ScreendumpError::Write { path: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_is_qemus_p6() {
        let mut fb = Framebuffer::new();
        fb.resize(2, 1);
        fb.pixels_mut().copy_from_slice(&[0x112233, 0xaabbcc]);
        let ppm = encode(&fb, ImageFormat::Ppm).unwrap();
        assert_eq!(ppm, b"P6\n2 1\n255\n\x11\x22\x33\xaa\xbb\xcc");
        let png = encode(&fb, ImageFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
