//! The server end to end over TCP with a scripted client.

use super::*;
use crate::{encode, Rect, RenderResult};
use rvmm_devices::input::keys;
use std::io::{Read, Write};

struct Pattern {
    size: Mutex<(u32, u32)>,
}

impl DisplaySource for Pattern {
    fn render(&self, s: &mut Framebuffer) -> RenderResult {
        let (w, h) = *lock(&self.size);
        if (s.width(), s.height()) == (w, h) {
            return RenderResult::default();
        }
        s.resize(w, h);
        for (i, p) in (0u32..).zip(s.pixels_mut()) {
            *p = ((i % w) << 16) | (i / w);
        }
        RenderResult {
            resized: true,
            dirty: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Keys(Mutex<Vec<(u16, bool)>>);

impl InputSink for Keys {
    fn key(&self, code: u16, down: bool) {
        lock(&self.0).push((code, down));
    }
    fn pointer_rel(&self, _: i32, _: i32, _: i32, _: u8) {}
}

fn connect(addr: &str) -> (TcpStream, u16, u16) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut v = [0u8; 12];
    s.read_exact(&mut v).unwrap();
    assert_eq!(&v, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut sec = [0u8; 2];
    s.read_exact(&mut sec).unwrap();
    assert_eq!(sec, [1, 1]);
    s.write_all(&[1]).unwrap();
    let mut res = [0u8; 4];
    s.read_exact(&mut res).unwrap();
    assert_eq!(res, [0; 4]);
    s.write_all(&[1]).unwrap();
    let mut init = [0u8; 24];
    s.read_exact(&mut init).unwrap();
    let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap());
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name).unwrap();
    assert_eq!(name, b"test");
    let w = u16::from_be_bytes([init[0], init[1]]);
    let h = u16::from_be_bytes([init[2], init[3]]);
    (s, w, h)
}

fn read_update(s: &mut TcpStream) -> Vec<(Rect, i32, Vec<u8>)> {
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(hdr[0], 0);
    let n = u16::from_be_bytes([hdr[2], hdr[3]]);
    (0..n)
        .map(|_| {
            let mut r = [0u8; 12];
            s.read_exact(&mut r).unwrap();
            let f = |i: usize| u32::from(u16::from_be_bytes([r[i], r[i + 1]]));
            let rect = Rect {
                x: f(0),
                y: f(2),
                w: f(4),
                h: f(6),
            };
            let enc = i32::from_be_bytes(r[8..12].try_into().unwrap());
            let len = if enc == 0 { rect.w * rect.h * 4 } else { 0 };
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data).unwrap();
            (rect, enc, data)
        })
        .collect()
}

#[test]
fn serves_pixels_keys_resizes_and_survives_bad_clients() {
    let display = Arc::new(Pattern {
        size: Mutex::new((100, 50)),
    });
    let keys = Arc::new(Keys::default());
    let server = VncServer::start(
        VncOptions {
            listen: Listen::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            },
            password: false,
            name: "test".into(),
        },
        display.clone(),
        keys.clone(),
    )
    .unwrap();
    let addr = server.local_addr().to_string();

    // A malformed client and one sending huge cut text are dropped; the server goes on.
    let (mut bad, _, _) = connect(&addr);
    bad.write_all(&[42]).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(bad.read(&mut b).unwrap_or(0), 0, "disconnected");
    let (mut bad, _, _) = connect(&addr);
    bad.write_all(&[6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(bad.read(&mut b).unwrap_or(0), 0, "disconnected");

    let (mut s, w, h) = connect(&addr);
    assert_eq!((w, h), (100, 50));
    // Raw + DesktopSize; a flood of requests coalesces into few updates.
    s.write_all(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21])
        .unwrap();
    for _ in 0..1000 {
        s.write_all(&[3, 1, 0, 0, 0, 0, 0, 100, 0, 50]).unwrap();
    }
    s.write_all(&[3, 0, 0, 0, 0, 0, 0, 100, 0, 50]).unwrap();
    let mut got = vec![0u32; 100 * 50];
    let mut seen = 0;
    while seen < 100 * 50 {
        for (r, enc, data) in read_update(&mut s) {
            assert_eq!(enc, 0);
            for y in 0..r.h {
                for x in 0..r.w {
                    let i = ((y * r.w + x) * 4) as usize;
                    let p = u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
                    got[((r.y + y) * 100 + r.x + x) as usize] = p;
                    seen += 1;
                }
            }
        }
    }
    for (i, &p) in got.iter().enumerate() {
        assert_eq!(p, (((i as u32) % 100) << 16) | ((i as u32) / 100));
    }

    // Key 'A' without Shift: wrapped in a Shift press.
    s.write_all(&[4, 1, 0, 0, 0, 0, 0, 0x41]).unwrap();
    s.write_all(&[4, 0, 0, 0, 0, 0, 0, 0x41]).unwrap();
    // A mode switch: DesktopSize, then the whole new screen.
    *lock(&display.size) = (64, 32);
    s.write_all(&[3, 1, 0, 0, 0, 0, 0, 100, 0, 50]).unwrap();
    let up = read_update(&mut s);
    assert_eq!(up[0].1, encode::ENC_DESKTOP_SIZE);
    assert_eq!((up[0].0.w, up[0].0.h), (64, 32));
    assert_eq!(
        up[1].0,
        Rect {
            x: 0,
            y: 0,
            w: 64,
            h: 32
        }
    );
    assert_eq!(
        *lock(&keys.0),
        vec![
            (keys::KEY_LEFTSHIFT, true),
            (keys::KEY_A, true),
            (keys::KEY_LEFTSHIFT, false),
            (keys::KEY_A, false)
        ]
    );
    assert_eq!(server.clients().len(), 1);
    drop(s);
    drop(server);
}

/// An input sink whose pointer mode the test flips, recording pointer events.
#[derive(Default)]
struct Pointer {
    absolute: std::sync::atomic::AtomicBool,
    events: Mutex<Vec<(bool, i64, i64)>>,
}

impl InputSink for Pointer {
    fn key(&self, _: u16, _: bool) {}
    fn pointer_rel(&self, dx: i32, dy: i32, _: i32, _: u8) {
        lock(&self.events).push((false, dx.into(), dy.into()));
    }
    fn pointer_abs(&self, x: u32, y: u32, _: i32, _: u8) {
        lock(&self.events).push((true, x.into(), y.into()));
    }
    fn pointer_is_absolute(&self) -> bool {
        self.absolute.load(Ordering::SeqCst)
    }
}

fn wait_events(p: &Pointer, n: usize) -> Vec<(bool, i64, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock(&p.events).len() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    lock(&p.events).clone()
}

#[test]
fn pointer_type_change_follows_the_input_mode() {
    let display = Arc::new(Pattern {
        size: Mutex::new((100, 50)),
    });
    let pointer = Arc::new(Pointer::default());
    let server = VncServer::start(
        VncOptions {
            listen: Listen::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            },
            password: false,
            name: "test".into(),
        },
        display,
        pointer.clone(),
    )
    .unwrap();
    let (mut s, w, h) = connect(server.local_addr());
    // SetEncodings: Raw and QEMU's pointer type change (-257): told "relative" at once, unasked.
    s.write_all(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xff])
        .unwrap();
    let u = read_update(&mut s);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].1, encode::ENC_QEMU_POINTER_TYPE);
    assert_eq!((u[0].0.x, u[0].0.w, u[0].0.h), (0, w.into(), h.into()));
    // Relative: motion arrives around 0x7fff.
    s.write_all(&[5, 0, 0x80, 0x04, 0x7f, 0xfc]).unwrap();
    assert_eq!(wait_events(&pointer, 1), [(false, 5, -3)]);
    // A tablet's driver starts: the client hears "absolute", and positions are scaled.
    pointer.absolute.store(true, Ordering::SeqCst);
    let u = read_update(&mut s);
    assert_eq!((u[0].1, u[0].0.x), (encode::ENC_QEMU_POINTER_TYPE, 1));
    s.write_all(&[5, 0, 0, 50, 0, 25]).unwrap();
    assert_eq!(
        wait_events(&pointer, 2)[1],
        (true, 50 * 0x7fff / 100, 25 * 0x7fff / 50)
    );
    drop(server);
}
