//! One client connection: the handshake, a reader feeding input, a writer sending updates from
//! the client's own dirty tiles.

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rvmm_devices::input::{keymap, keys};

use crate::encode::{self, Frame, PixelFormat, Zrle};
use crate::protocol::{self, ClientMessage, ProtocolError, Security};
use crate::server::{lock, Shared, Stream};
use crate::{keysym, Rect};

/// A handshake that takes longer than this is dropped (a silent client cannot hold a slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Dirty-tracking granularity: small enough that a blinking cursor or a typed character costs
/// little more than its own pixels (ZRLE then cuts each rectangle into its 64x64 tiles).
const TILE: u32 = 16;

/// Which tiles of the screen a client has not seen yet.
#[derive(Default)]
pub(crate) struct Tiles {
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) dirty: Vec<bool>,
}

impl Tiles {
    pub(crate) fn new(width: u32, height: u32) -> Tiles {
        let (cols, rows) = (width.div_ceil(TILE), height.div_ceil(TILE));
        Tiles {
            cols,
            rows,
            width,
            height,
            dirty: vec![false; (cols * rows) as usize],
        }
    }

    pub(crate) fn mark(&mut self, r: Rect) {
        let r = r.clip(self.width, self.height);
        if r.is_empty() {
            return;
        }
        for ty in r.y / TILE..=(r.y + r.h - 1) / TILE {
            for tx in r.x / TILE..=(r.x + r.w - 1) / TILE {
                if let Some(d) = self.dirty.get_mut((ty * self.cols + tx) as usize) {
                    *d = true;
                }
            }
        }
    }

    pub(crate) fn mark_all(&mut self) {
        self.dirty.fill(true);
    }

    pub(crate) fn any(&self) -> bool {
        self.dirty.contains(&true)
    }

    /// The dirty tiles as rectangles, clearing them: runs along each tile row, merged with the
    /// run of the same columns in the row above.
    pub(crate) fn take(&mut self) -> Vec<Rect> {
        let mut done = Vec::new();
        // Rectangles that reach the previous tile row and may grow downwards.
        let mut open: Vec<Rect> = Vec::new();
        for ty in 0..self.rows {
            let mut next_open = Vec::new();
            let mut tx = 0;
            while tx < self.cols {
                let start = tx;
                while tx < self.cols && self.dirty[(ty * self.cols + tx) as usize] {
                    self.dirty[(ty * self.cols + tx) as usize] = false;
                    tx += 1;
                }
                if tx == start {
                    tx += 1;
                    continue;
                }
                let (x, w) = (start * TILE, (tx - start) * TILE);
                let run = match open.iter().position(|r| r.x == x && r.w == w) {
                    Some(i) => {
                        let mut r = open.swap_remove(i);
                        r.h += TILE;
                        r
                    }
                    None => Rect {
                        x,
                        y: ty * TILE,
                        w,
                        h: TILE,
                    },
                };
                next_open.push(run);
            }
            done.append(&mut open);
            open = next_open;
        }
        done.append(&mut open);
        done.into_iter()
            .map(|r| r.clip(self.width, self.height))
            .collect()
    }
}

/// One client's state, shared by its reader, its writer and the poller.
pub(crate) struct ClientState {
    pub(crate) pf: PixelFormat,
    pub(crate) encoding: i32,
    pub(crate) desktop_size: bool,
    pub(crate) ext_key_ack: bool,
    /// The client takes QEMU's pointer type change pseudo-encoding.
    pub(crate) pointer_type: bool,
    /// The pointer mode (absolute?) the client was last told; None: not told yet.
    pub(crate) told_absolute: Option<bool>,
    /// An update request is outstanding (requests coalesce: a flood costs nothing).
    pub(crate) requested: bool,
    /// The display was rendered since the last request (an answer shows the screen as it is
    /// now, not as it was at the previous poll: QEMU renders before it answers too).
    pub(crate) rendered: bool,
    pub(crate) tiles: Tiles,
    /// The size the client was last told.
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) closed: bool,
}

pub(crate) struct Client {
    pub(crate) host: String,
    pub(crate) service: String,
    pub(crate) state: Mutex<ClientState>,
    pub(crate) wake: Condvar,
    pub(crate) stream: Stream,
}

impl Client {
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
        self.stream.shutdown();
    }
}

/// One connection: handshake, then this thread reads while a writer thread sends updates.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    stream: Stream,
    host: String,
    service: String,
) -> Result<(), ProtocolError> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let password = lock(&shared.password).clone();
    let security = match shared.options.password {
        false => Security::None,
        true => Security::Password(password.as_deref()),
    };
    {
        let mut both = Duplex(&mut reader, &mut writer);
        protocol::handshake(&mut both, security)?;
    }
    let (width, height) = {
        let s = shared
            .surface
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (s.width(), s.height())
    };
    stream.set_read_timeout(None)?;
    let client = Arc::new(Client {
        host,
        service,
        state: Mutex::new(ClientState {
            pf: PixelFormat::XRGB8888,
            encoding: encode::ENC_RAW,
            desktop_size: false,
            ext_key_ack: false,
            pointer_type: false,
            told_absolute: None,
            requested: false,
            rendered: false,
            tiles: Tiles::new(width, height),
            width,
            height,
            closed: false,
        }),
        wake: Condvar::new(),
        stream,
    });
    // Listed before it hears ServerInit, so a client that has it is in query-vnc.
    lock(&shared.clients).push(client.clone());
    if let Err(e) = protocol::server_init(&mut writer, width, height, &shared.options.name) {
        lock(&shared.clients).retain(|c| !Arc::ptr_eq(c, &client));
        return Err(e.into());
    }
    let (s, c) = (shared.clone(), client.clone());
    let writer_thread = rvmm_sandbox::spawn(
        rvmm_sandbox::ThreadKind::Vnc,
        "vnc-writer".into(),
        move || {
            if let Err(e) = write_loop(&s, &c, writer) {
                tracing::debug!("vnc: writer: {e}");
            }
            c.close();
        },
    );
    let result = match writer_thread {
        Ok(w) => {
            let r = read_loop(shared, &client, &mut reader);
            client.close();
            let _ = w.join();
            r
        }
        Err(e) => Err(e.into()),
    };
    client.close();
    lock(&shared.clients).retain(|c| !Arc::ptr_eq(c, &client));
    result
}

/// A reader and a writer seen as one stream (for the handshake).
struct Duplex<'a, R, W>(&'a mut R, &'a mut W);

impl<R: Read, W> Read for Duplex<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R, W: Write> Write for Duplex<'_, R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.1.flush()
    }
}

/// Per-connection input state.
#[derive(Default)]
struct InputState {
    shift_held: u8,
    last_pointer: Option<(u16, u16)>,
    buttons: u8,
}

fn read_loop(
    shared: &Shared,
    client: &Client,
    reader: &mut impl Read,
) -> Result<(), ProtocolError> {
    let mut input = InputState::default();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let msg = match protocol::read_message(reader) {
            Ok(m) => m,
            Err(ProtocolError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match msg {
            ClientMessage::SetPixelFormat(pf) => {
                let mut st = lock(&client.state);
                st.pf = pf;
                st.tiles.mark_all();
            }
            ClientMessage::SetEncodings(list) => {
                let mut st = lock(&client.state);
                st.encoding = list
                    .iter()
                    .copied()
                    .find(|&e| e == encode::ENC_ZRLE || e == encode::ENC_RAW)
                    .unwrap_or(encode::ENC_RAW);
                st.desktop_size = list.contains(&encode::ENC_DESKTOP_SIZE);
                st.ext_key_ack = list.contains(&encode::ENC_QEMU_EXT_KEY);
                st.pointer_type = list.contains(&encode::ENC_QEMU_POINTER_TYPE);
                // Told at once (QEMU's check_pointer_type_change after SetEncodings).
                st.told_absolute = None;
                client.wake.notify_all();
            }
            ClientMessage::UpdateRequest { incremental, rect } => {
                let mut st = lock(&client.state);
                if !incremental {
                    st.tiles.mark(rect);
                }
                st.requested = true;
                st.rendered = false;
            }
            ClientMessage::Key { down, keysym } => key_event(shared, &mut input, down, keysym),
            ClientMessage::QemuKey { down, keysym, qnum } => match keymap::by_qnum(qnum) {
                Some(k) => shared.input.key(k.code, down),
                None => key_event(shared, &mut input, down, keysym),
            },
            ClientMessage::Pointer { buttons, x, y } if shared.input.pointer_is_absolute() => {
                // A tablet runs: the position itself, scaled to the screen as QEMU's VNC does.
                let (width, height) = {
                    let st = lock(&client.state);
                    (st.width, st.height)
                };
                input.last_pointer = Some((x, y));
                let pressed = buttons & !input.buttons;
                let wheel = i32::from(pressed & 0x10 != 0) - i32::from(pressed & 0x08 != 0);
                input.buttons = buttons;
                shared.input.pointer_abs(
                    rvmm_devices::input::scale_axis(u32::from(x), width),
                    rvmm_devices::input::scale_axis(u32::from(y), height),
                    wheel,
                    buttons & 0x07,
                );
            }
            ClientMessage::Pointer { buttons, x, y } => {
                // A client told the pointer is relative sends motion around 0x7fff (QEMU's
                // pointer type change); others send positions, whose differences are motion.
                let motion = match input.last_pointer {
                    _ if lock(&client.state).pointer_type => {
                        Some((i32::from(x) - 0x7fff, i32::from(y) - 0x7fff))
                    }
                    Some((lx, ly)) => {
                        Some((i32::from(x) - i32::from(lx), i32::from(y) - i32::from(ly)))
                    }
                    None => None,
                };
                input.last_pointer = Some((x, y));
                // Bits 3 and 4 are wheel up and down, sent as a press and a release.
                let pressed = buttons & !input.buttons;
                let wheel = i32::from(pressed & 0x10 != 0) - i32::from(pressed & 0x08 != 0);
                let changed = buttons != input.buttons;
                input.buttons = buttons;
                // The first position only sets the origin: with no button change nothing is
                // sent (QEMU queues no motion then, and a virtio mouse sees no report).
                if motion.is_some() || changed {
                    let (dx, dy) = motion.unwrap_or((0, 0));
                    shared.input.pointer_rel(dx, dy, wheel, buttons & 0x07);
                }
            }
            ClientMessage::CutText => {}
        }
    }
}

fn key_event(shared: &Shared, input: &mut InputState, down: bool, keysym: u32) {
    let Some((code, needs_shift)) = keysym::to_key(keysym) else {
        tracing::debug!("vnc: no key for keysym {keysym:#x}");
        return;
    };
    if code == keys::KEY_LEFTSHIFT || code == keys::KEY_RIGHTSHIFT {
        let bit = if code == keys::KEY_LEFTSHIFT { 1 } else { 2 };
        input.shift_held = if down {
            input.shift_held | bit
        } else {
            input.shift_held & !bit
        };
    }
    // A shifted symbol sent without Shift held: wrap the press in one (the release needs none).
    if down && needs_shift && input.shift_held == 0 {
        shared.input.key(keys::KEY_LEFTSHIFT, true);
        shared.input.key(code, true);
        shared.input.key(keys::KEY_LEFTSHIFT, false);
    } else {
        shared.input.key(code, down);
    }
}

fn write_loop(shared: &Shared, client: &Client, mut out: Stream) -> Result<(), ProtocolError> {
    let mut zrle = Zrle::default();
    let mut buf = Vec::new();
    loop {
        let (rects, pf, encoding, resize, ext_ack, pointer) = {
            let mut st = lock(&client.state);
            let mut pointer = None;
            loop {
                if st.closed || shared.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // A change of pointer mode (a tablet's driver started or stopped) goes out at
                // once, without waiting for an update request, as QEMU sends it.
                if st.pointer_type {
                    let now = shared.input.pointer_is_absolute();
                    if st.told_absolute != Some(now) {
                        st.told_absolute = Some(now);
                        pointer = Some(now);
                        break;
                    }
                }
                let resize =
                    st.desktop_size && (st.tiles.width, st.tiles.height) != (st.width, st.height);
                if st.requested && st.rendered && (st.tiles.any() || resize || st.ext_key_ack) {
                    break;
                }
                st = client
                    .wake
                    .wait_timeout(st, Duration::from_millis(500))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if pointer.is_some() && !(st.requested && st.rendered) {
                // Only the pointer mode: the update request stays outstanding.
                (Vec::new(), st.pf, st.encoding, false, false, pointer)
            } else {
                st.requested = false;
                let resize =
                    (st.tiles.width, st.tiles.height) != (st.width, st.height) && st.desktop_size;
                if resize {
                    (st.width, st.height) = (st.tiles.width, st.tiles.height);
                    st.tiles.mark_all();
                }
                let ext_ack = std::mem::take(&mut st.ext_key_ack);
                (
                    st.tiles.take(),
                    st.pf,
                    st.encoding,
                    resize,
                    ext_ack,
                    pointer,
                )
            }
        };
        buf.clear();
        let surface = shared
            .surface
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let frame = Frame {
            width: surface.width(),
            pixels: surface.pixels(),
        };
        let mut n = 0u16;
        buf.extend_from_slice(&[0, 0, 0, 0]);
        if ext_ack {
            encode::rect_header(Rect::default(), encode::ENC_QEMU_EXT_KEY, &mut buf);
            n += 1;
        }
        if let Some(absolute) = pointer {
            let r = Rect {
                x: u32::from(absolute),
                y: 0,
                w: surface.width(),
                h: surface.height(),
            };
            encode::rect_header(r, encode::ENC_QEMU_POINTER_TYPE, &mut buf);
            n += 1;
        }
        if resize {
            encode::desktop_size(surface.width(), surface.height(), &mut buf);
            n += 1;
        }
        let (cw, ch) = {
            let st = lock(&client.state);
            (st.width, st.height)
        };
        // A client that cannot resize keeps its size: send what fits.
        let consistent = surface.pixels().len() == (surface.width() * surface.height()) as usize;
        for r in rects {
            let r = r.clip(surface.width().min(cw), surface.height().min(ch));
            if r.is_empty() || !consistent || n == u16::MAX {
                continue;
            }
            match encoding {
                encode::ENC_ZRLE => zrle.encode(&frame, r, pf, &mut buf),
                _ => encode::raw(&frame, r, pf, &mut buf),
            }
            n += 1;
        }
        drop(surface);
        buf[2..4].copy_from_slice(&n.to_be_bytes());
        out.write_all(&buf)?;
        shared
            .bytes_sent
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_merge_runs_and_clip() {
        let rect = |x, y, w, h| Rect { x, y, w, h };
        let mut t = Tiles::new(200, 100);
        assert!(!t.any());
        // Tiles 0..=6 of rows 0..=1, and the bottom-right corner (clipped).
        t.mark(rect(10, 10, 100, 10));
        t.mark(rect(190, 90, 1000, 1000));
        t.mark(rect(5000, 0, 1, 1));
        t.mark(rect(0, 0, 0, 0));
        assert_eq!(t.take(), vec![rect(0, 0, 112, 32), rect(176, 80, 24, 20)]);
        assert!(!t.any());
        // Everything: one rectangle (13 columns of 16 cover 200, clipped).
        t.mark_all();
        assert_eq!(t.take(), vec![rect(0, 0, 200, 100)]);
        // Runs of different widths stay apart.
        t.mark(rect(0, 0, 16, 16));
        t.mark(rect(0, 16, 32, 16));
        assert_eq!(t.take(), vec![rect(0, 0, 16, 16), rect(0, 16, 32, 16)]);
    }
}
