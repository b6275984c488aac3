//! rvmm's VNC server: RFB 3.8 (and 3.3/3.7 clients) on RFC 6143, written for rvmm rather than
//! taken from a crate (docs/DISPLAY.md says why).
//!
//! Threads, none of them a vCPU: an acceptor, a display poller that asks the [`DisplaySource`]
//! for what changed at most [`REFRESH_HZ`] times a second while some client waits for an update,
//! and two per client (a reader parsing messages and feeding the
//! [`InputSink`](rvmm_devices::input::InputSink), a writer
//! encoding updates). Each client keeps its own dirty tiles, so a slow client never holds back a
//! fast one and memory per client is bounded by the screen size. Security: None or VNC
//! Authentication; encodings Raw and ZRLE, the DesktopSize pseudo-encoding for mode switches and
//! QEMU's extended key event.

pub mod auth;
mod client;
mod encode;
pub mod keysym;
mod protocol;
mod server;

pub use encode::PixelFormat;
pub use protocol::{ClientMessage, ProtocolError, MAX_CUT_TEXT};
pub use rvmm_devices::display::{DisplaySource, Framebuffer, RenderResult};
pub use server::{ClientInfo, VncServer};

use std::path::PathBuf;

/// How often the display is polled at most while clients wait (QEMU's default refresh is 30 ms).
pub const REFRESH_HZ: u64 = 30;
/// Connections beyond this many are closed at once.
pub const MAX_CLIENTS: usize = 16;

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    /// A display device's rectangle.
    pub fn from_display(r: rvmm_devices::display::Rect) -> Rect {
        Rect {
            x: r.x,
            y: r.y,
            w: r.width,
            h: r.height,
        }
    }

    /// The part of `self` inside a `width` x `height` screen (possibly empty).
    pub fn clip(self, width: u32, height: u32) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Rect {
            x,
            y,
            w: self.w.min(width - x),
            h: self.h.min(height - y),
        }
    }

    pub fn is_empty(self) -> bool {
        self.w == 0 || self.h == 0
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (`host` as given: a name, an IPv4 address or an IPv6 one without brackets).
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

/// The server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VncOptions {
    pub listen: Listen,
    /// VNC Authentication; no client gets in until a password is set.
    pub password: bool,
    /// The desktop name clients show.
    pub name: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum VncError {
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the VNC {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}
