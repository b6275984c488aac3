//! Display surfaces: what a display device (VGA) renders and what front ends (VNC, QMP
//! `screendump`) read.
//!
//! The contract between the two halves:
//!
//! - A display device implements [`DisplaySource`]. Front ends hold an `Arc<dyn DisplaySource>`
//!   and call [`DisplaySource::render`] whenever they want a fresh picture (a VNC server polls it
//!   on a timer, ~30 Hz like QEMU's GUI refresh; `screendump` calls it once).
//! - Each front end owns its own [`Framebuffer`]. `render` brings that buffer up to date with
//!   the guest's screen and says what changed *in that buffer* since the previous `render` into
//!   it: several front ends (two VNC clients and a screendump) each see every change once, no
//!   matter who asked first.
//! - Pixels are 32-bit XRGB8888 (`0x00RRGGBB` in a `u32`, i.e. bytes B, G, R, X in memory on
//!   little-endian hosts), rows top to bottom, stride = width, no padding.
//! - When the guest changes the mode (size), `render` resizes the buffer, sets
//!   [`RenderResult::resized`] and reports the whole screen dirty. A buffer that has never been
//!   rendered into is 0x0 and gets `resized` on its first render.
//! - A device with nothing to show (VGA disabled, or before the BIOS set a mode) renders a small
//!   black screen (e.g. 640x480) rather than 0x0, so clients always have a valid size.
//!
//! - The VMM's builder creates the display device (`-vga std`, `-device VGA`) and hands its
//!   `Arc<dyn DisplaySource>` to the front ends: `rvmm_vmm::builder` keeps it as
//!   `Option<Arc<dyn DisplaySource>>` (None under `-vga none` / `-nodefaults`).
//!
//! [`Framebuffer::sync_rows`] is the helper devices use to implement `render`: they keep one
//! device-side shadow picture plus a per-row "changed at frame N" stamp, and copy only rows newer
//! than what the consumer's buffer has seen, comparing pixels to report tight rectangles.

/// Largest surface any display device produces; keeps host memory bounded whatever the guest
/// programs (16 MiB of 32-bit pixels is 4 Mi pixels; 4096x4096 bounds each dimension).
pub const MAX_WIDTH: u32 = 4096;
/// See [`MAX_WIDTH`].
pub const MAX_HEIGHT: u32 = 4096;

/// A rectangle of pixels, in surface coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// What changed in a [`Framebuffer`] during one [`DisplaySource::render`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderResult {
    /// The surface changed size (or this was the buffer's first render): the whole buffer is new
    /// and `dirty` covers all of it. A VNC server sends a DesktopSize update.
    pub resized: bool,
    /// Disjoint rectangles whose pixels changed, top to bottom. Empty if nothing changed.
    pub dirty: Vec<Rect>,
}

/// A host-side XRGB8888 picture owned by one consumer of a display.
#[derive(Debug, Clone, Default)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
    /// Which source rendered into this buffer last (0: none), and at which of its frames.
    source: u64,
    frame: u64,
}

impl Framebuffer {
    /// An empty (0x0) buffer; its first render resizes it.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// All pixels, `width * height` of them, row-major.
    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    /// Row `y` (`width` pixels); empty if `y` is out of range.
    pub fn row(&self, y: u32) -> &[u32] {
        if y >= self.height {
            return &[];
        }
        let w = self.width as usize;
        &self.pixels[y as usize * w..(y as usize + 1) * w]
    }

    /// Pixel at (x, y), or None outside the surface.
    pub fn pixel(&self, x: u32, y: u32) -> Option<u32> {
        self.row(y).get(x as usize).copied()
    }

    /// Resize to `width` x `height` (clamped to [`MAX_WIDTH`] x [`MAX_HEIGHT`]), black; returns
    /// whether the size changed. Forgets which frame the buffer was synced to.
    pub fn resize(&mut self, width: u32, height: u32) -> bool {
        let (w, h) = (width.min(MAX_WIDTH), height.min(MAX_HEIGHT));
        let changed = (w, h) != (self.width, self.height);
        self.width = w;
        self.height = h;
        self.pixels.clear();
        self.pixels.resize(w as usize * h as usize, 0);
        self.source = 0;
        self.frame = 0;
        changed
    }

    /// Mutable pixels, for the device's own shadow buffer.
    pub fn pixels_mut(&mut self) -> &mut [u32] {
        &mut self.pixels
    }

    /// Mutable row `y`; empty if out of range.
    pub fn row_mut(&mut self, y: u32) -> &mut [u32] {
        if y >= self.height {
            return &mut [];
        }
        let w = self.width as usize;
        &mut self.pixels[y as usize * w..(y as usize + 1) * w]
    }

    /// Bring `self` (a consumer's buffer) up to date with `shadow`, the device's current picture.
    ///
    /// `source` identifies the device (non-zero, unique per device instance), `frame` is the
    /// device's current frame number and `row_frames[y]` the frame at which row `y` of `shadow`
    /// last changed. Rows newer than what `self` last saw are compared and copied; the changed
    /// pixels are reported as rectangles (one per run of adjacent changed rows, spanning the
    /// changed columns).
    pub fn sync_rows(
        &mut self,
        shadow: &Framebuffer,
        source: u64,
        frame: u64,
        row_frames: &[u64],
    ) -> RenderResult {
        let resized = self.width != shadow.width
            || self.height != shadow.height
            || self.source != source
            || self.pixels.len() != shadow.pixels.len();
        if resized {
            self.width = shadow.width;
            self.height = shadow.height;
            self.pixels.clear();
            self.pixels.extend_from_slice(&shadow.pixels);
            self.source = source;
            self.frame = frame;
            let dirty = if self.width == 0 || self.height == 0 {
                Vec::new()
            } else {
                vec![Rect {
                    x: 0,
                    y: 0,
                    width: self.width,
                    height: self.height,
                }]
            };
            return RenderResult {
                resized: true,
                dirty,
            };
        }
        let seen = self.frame;
        self.frame = frame;
        let w = self.width as usize;
        let mut dirty: Vec<Rect> = Vec::new();
        // The open run of changed rows: first row, column range.
        let mut run: Option<(u32, usize, usize)> = None;
        for y in 0..self.height {
            let newer = row_frames.get(y as usize).is_none_or(|&f| f > seen);
            let span = if newer {
                let (a, b) = (
                    &mut self.pixels[y as usize * w..(y as usize + 1) * w],
                    &shadow.pixels[y as usize * w..(y as usize + 1) * w],
                );
                let first = a.iter().zip(b).position(|(p, q)| p != q);
                first.map(|first| {
                    let last = w
                        - 1
                        - a.iter()
                            .rev()
                            .zip(b.iter().rev())
                            .position(|(p, q)| p != q)
                            .unwrap_or(0);
                    a[first..=last].copy_from_slice(&b[first..=last]);
                    (first, last + 1)
                })
            } else {
                None
            };
            match (span, run.as_mut()) {
                (Some((a, b)), Some((_, lo, hi))) => {
                    *lo = (*lo).min(a);
                    *hi = (*hi).max(b);
                }
                (Some((a, b)), None) => run = Some((y, a, b)),
                (None, Some(_)) => {
                    let (y0, lo, hi) = run.take().unwrap_or_default();
                    dirty.push(band(y0, y, lo, hi));
                }
                (None, None) => {}
            }
        }
        if let Some((y0, lo, hi)) = run {
            dirty.push(band(y0, self.height, lo, hi));
        }
        RenderResult {
            resized: false,
            dirty,
        }
    }
}

fn band(y0: u32, y1: u32, lo: usize, hi: usize) -> Rect {
    Rect {
        x: lo as u32,
        y: y0,
        width: (hi - lo) as u32,
        height: y1 - y0,
    }
}

/// A display device as front ends see it.
pub trait DisplaySource: Send + Sync {
    /// Bring `out` up to date with the guest's screen; see the module documentation.
    fn render(&self, out: &mut Framebuffer) -> RenderResult;
}

/// A unique non-zero id for a display source instance (for [`Framebuffer::sync_rows`]).
pub fn next_source_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub mod vga;
pub mod vram;

pub use vga::{StdVga, VgaState};
pub use vram::{DirtyLog, Vram, VramRun};

#[cfg(test)]
mod tests;
