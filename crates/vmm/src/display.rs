//! The screen front end: starts the VNC server (`-vnc`, or rvmm's default) on what the guest
//! shows, with the PS/2 keyboard and mouse as its input.

use std::sync::Arc;

use rvmm_cli::{VncConfig, VncListen};
use rvmm_devices::display::{DisplaySource, Framebuffer, RenderResult};
use rvmm_devices::input::InputSink;
use rvmm_vnc::{Listen, VncError, VncOptions, VncServer};

/// Without a display device, clients see a black 640x480 screen (QEMU shows its text console
/// there) and can still type into the PS/2 keyboard.
pub struct BlankDisplay;

const BLANK_WIDTH: u32 = 640;
const BLANK_HEIGHT: u32 = 480;

impl DisplaySource for BlankDisplay {
    fn render(&self, out: &mut Framebuffer) -> RenderResult {
        if !out.resize(BLANK_WIDTH, BLANK_HEIGHT) {
            return RenderResult::default();
        }
        RenderResult {
            resized: true,
            dirty: vec![rvmm_devices::display::Rect {
                x: 0,
                y: 0,
                width: BLANK_WIDTH,
                height: BLANK_HEIGHT,
            }],
        }
    }
}

/// Starts the VNC server `config` asks for; with `to=`, the first free port in the range.
/// Prints where it listens when rvmm chose the server itself, as QEMU does.
pub fn start_vnc(
    config: &VncConfig,
    name: Option<&str>,
    display: Arc<dyn DisplaySource>,
    input: Arc<dyn InputSink>,
) -> Result<VncServer, VncError> {
    let options = |listen| VncOptions {
        listen,
        password: config.password,
        name: name.unwrap_or("rvmm").to_string(),
    };
    let server = match &config.listen {
        VncListen::Unix(path) => {
            VncServer::start(options(Listen::Unix(path.clone())), display, input)?
        }
        VncListen::Tcp { host, port } => {
            let last = config.last_port.unwrap_or(*port).max(*port);
            let mut port = *port;
            loop {
                let listen = Listen::Tcp {
                    host: host.clone(),
                    port,
                };
                match VncServer::start(options(listen), display.clone(), input.clone()) {
                    Ok(server) => break server,
                    Err(VncError::Listen { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse && port < last =>
                    {
                        port += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    if config.announce {
        eprintln!("VNC server running on {}", server.local_addr());
    }
    Ok(server)
}
