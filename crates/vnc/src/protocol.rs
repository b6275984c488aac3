//! The RFB wire protocol (RFC 6143): the handshake and the client-to-server messages.
//!
//! Every length comes from the client and is untrusted: SetEncodings keeps the first
//! [`MAX_ENCODINGS`] entries, ClientCutText is discarded (up to [`MAX_CUT_TEXT`] bytes; more is a
//! protocol error), an unknown message type ends the connection.

use std::io::{self, Read, Write};

use crate::auth;
use crate::encode::PixelFormat;
use crate::Rect;

/// Encodings kept from one SetEncodings (the rest are read and dropped).
pub const MAX_ENCODINGS: usize = 64;
/// The largest ClientCutText accepted (discarded unread); QEMU caps it at 1 MiB too.
pub const MAX_CUT_TEXT: u32 = 1 << 20;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an RFB client (version string {0:?})")]
    Version(String),
    #[error("client chose security type {0}, which was not offered")]
    SecurityType(u8),
    #[error("authentication failed")]
    AuthFailed,
    #[error("unknown message type {0}")]
    MessageType(u8),
    #[error("unknown QEMU client message subtype {0}")]
    QemuSubtype(u8),
    #[error("ClientCutText of {0} bytes (at most {MAX_CUT_TEXT})")]
    CutTextTooLong(u32),
    #[error("pixel format not supported (colour maps, or a depth rvmm cannot produce)")]
    PixelFormat,
}

/// RFB protocol minor version spoken on a connection (3.3, 3.7 or 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

const SEC_NONE: u8 = 1;
const SEC_VNC: u8 = 2;

/// The security rvmm asks for.
pub enum Security<'a> {
    None,
    /// VNC Authentication; `None` while no password is set (every attempt fails, as QEMU).
    Password(Option<&'a [u8]>),
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn fail_reason(w: &mut impl Write, reason: &str) -> io::Result<()> {
    w.write_all(&(reason.len() as u32).to_be_bytes())?;
    w.write_all(reason.as_bytes())
}

/// Version exchange and security (RFC 6143 7.1); returns the version spoken and the client's
/// shared flag (ClientInit). ServerInit is the caller's.
pub fn handshake(
    s: &mut (impl Read + Write),
    security: Security,
) -> Result<(Version, bool), ProtocolError> {
    s.write_all(b"RFB 003.008\n")?;
    let mut v = [0u8; 12];
    s.read_exact(&mut v)?;
    let text = String::from_utf8_lossy(&v).into_owned();
    let minor = (v.starts_with(b"RFB 003.") && v[11] == b'\n')
        .then(|| std::str::from_utf8(&v[8..11]).ok()?.parse::<u32>().ok())
        .flatten()
        .ok_or(ProtocolError::Version(text))?;
    // 3.5 was never published and is 3.3; anything past 3.8 (Apple's 3.889) speaks 3.8.
    let version = match minor {
        0..=6 => Version::V3_3,
        7 => Version::V3_7,
        _ => Version::V3_8,
    };
    let ty = match security {
        Security::None => SEC_NONE,
        Security::Password(_) => SEC_VNC,
    };
    if version == Version::V3_3 {
        s.write_all(&u32::from(ty).to_be_bytes())?;
    } else {
        s.write_all(&[1, ty])?;
        let chosen = read_u8(s)?;
        if chosen != ty {
            if version == Version::V3_8 {
                s.write_all(&1u32.to_be_bytes())?;
                fail_reason(s, "security type not offered")?;
            }
            return Err(ProtocolError::SecurityType(chosen));
        }
    }
    if let Security::Password(password) = security {
        let challenge = auth::challenge();
        s.write_all(&challenge)?;
        let mut answer = [0u8; auth::CHALLENGE_LEN];
        s.read_exact(&mut answer)?;
        let ok = password.is_some_and(|p| !p.is_empty() && auth::check(p, &challenge, &answer));
        s.write_all(&u32::from(!ok).to_be_bytes())?;
        if !ok {
            if version == Version::V3_8 {
                fail_reason(s, "Authentication failed")?;
            }
            return Err(ProtocolError::AuthFailed);
        }
    } else if version == Version::V3_8 {
        // 3.8 sends SecurityResult for None too; 3.3 and 3.7 do not.
        s.write_all(&0u32.to_be_bytes())?;
    }
    let shared = read_u8(s)? != 0;
    Ok((version, shared))
}

/// ServerInit (RFC 6143 7.3.2).
pub fn server_init(w: &mut impl Write, width: u32, height: u32, name: &str) -> io::Result<()> {
    let mut m = Vec::with_capacity(24 + name.len());
    m.extend_from_slice(&(width.min(0xffff) as u16).to_be_bytes());
    m.extend_from_slice(&(height.min(0xffff) as u16).to_be_bytes());
    m.extend_from_slice(&PixelFormat::XRGB8888.to_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    w.write_all(&m)
}

/// A client-to-server message (RFC 6143 7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    /// The client's encodings in its order of preference (at most [`MAX_ENCODINGS`]).
    SetEncodings(Vec<i32>),
    UpdateRequest {
        incremental: bool,
        rect: Rect,
    },
    Key {
        down: bool,
        keysym: u32,
    },
    Pointer {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Cut text, already discarded.
    CutText,
    /// QEMU extended key event: a keysym with the key's QEMU number (XT scan code).
    QemuKey {
        down: bool,
        keysym: u32,
        qnum: u32,
    },
}

/// Reads one client message.
pub fn read_message(r: &mut impl Read) -> Result<ClientMessage, ProtocolError> {
    let ty = read_u8(r)?;
    Ok(match ty {
        0 => {
            let mut b = [0u8; 19];
            r.read_exact(&mut b)?;
            let mut pf = [0u8; 16];
            pf.copy_from_slice(&b[3..]);
            ClientMessage::SetPixelFormat(
                PixelFormat::from_bytes(&pf).ok_or(ProtocolError::PixelFormat)?,
            )
        }
        2 => {
            read_u8(r)?;
            let n = read_u16(r)?;
            let mut encodings = Vec::with_capacity(usize::from(n).min(MAX_ENCODINGS));
            for _ in 0..n {
                let e = read_u32(r)? as i32;
                if encodings.len() < MAX_ENCODINGS {
                    encodings.push(e);
                }
            }
            ClientMessage::SetEncodings(encodings)
        }
        3 => {
            let incremental = read_u8(r)? != 0;
            let (x, y, w, h) = (read_u16(r)?, read_u16(r)?, read_u16(r)?, read_u16(r)?);
            ClientMessage::UpdateRequest {
                incremental,
                rect: Rect {
                    x: x.into(),
                    y: y.into(),
                    w: w.into(),
                    h: h.into(),
                },
            }
        }
        4 => {
            let down = read_u8(r)? != 0;
            read_u16(r)?;
            ClientMessage::Key {
                down,
                keysym: read_u32(r)?,
            }
        }
        5 => ClientMessage::Pointer {
            buttons: read_u8(r)?,
            x: read_u16(r)?,
            y: read_u16(r)?,
        },
        6 => {
            let mut pad = [0u8; 3];
            r.read_exact(&mut pad)?;
            let len = read_u32(r)?;
            if len > MAX_CUT_TEXT {
                return Err(ProtocolError::CutTextTooLong(len));
            }
            let copied = io::copy(&mut r.take(u64::from(len)), &mut io::sink())?;
            if copied != u64::from(len) {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            ClientMessage::CutText
        }
        255 => {
            let sub = read_u8(r)?;
            if sub != 0 {
                return Err(ProtocolError::QemuSubtype(sub));
            }
            let down = read_u16(r)? != 0;
            ClientMessage::QemuKey {
                down,
                keysym: read_u32(r)?,
                qnum: read_u32(r)?,
            }
        }
        other => return Err(ProtocolError::MessageType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A scripted peer: reads come from `input`, writes are collected.
    struct Peer {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn peer(input: &[u8]) -> Peer {
        Peer {
            input: Cursor::new(input.to_vec()),
            output: Vec::new(),
        }
    }

    #[test]
    fn handshakes_each_version() {
        let mut p = peer(b"RFB 003.008\n\x01\x01");
        assert_eq!(
            handshake(&mut p, Security::None).unwrap(),
            (Version::V3_8, true)
        );
        assert_eq!(p.output, b"RFB 003.008\n\x01\x01\0\0\0\0");
        let mut p = peer(b"RFB 003.007\n\x01\x00");
        assert_eq!(
            handshake(&mut p, Security::None).unwrap(),
            (Version::V3_7, false)
        );
        assert_eq!(&p.output[12..], b"\x01\x01");
        let mut p = peer(b"RFB 003.003\n\x01");
        assert_eq!(handshake(&mut p, Security::None).unwrap().0, Version::V3_3);
        assert_eq!(&p.output[12..], b"\0\0\0\x01");
        let mut p = peer(b"RFB 003.889\n\x01\x01");
        assert_eq!(handshake(&mut p, Security::None).unwrap().0, Version::V3_8);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"RFB 003.0x8\n",
            b"RFB 003.008",
            b"",
        ] {
            assert!(handshake(&mut peer(bad), Security::None).is_err());
        }
        // A type that was not offered.
        let mut p = peer(b"RFB 003.008\n\x02");
        assert!(matches!(
            handshake(&mut p, Security::None),
            Err(ProtocolError::SecurityType(2))
        ));
    }

    #[test]
    fn vnc_authentication() {
        // The challenge is random: answer it from a thread-free peer by precomputing is
        // impossible, so check the failure paths and the success path with a wrapper.
        let mut p = peer(&[b"RFB 003.008\n\x02".as_slice(), &[0u8; 16], b"\x01"].concat());
        assert!(matches!(
            handshake(&mut p, Security::Password(Some(b"secret"))),
            Err(ProtocolError::AuthFailed)
        ));
        assert_eq!(&p.output[14 + 16..14 + 20], &[0, 0, 0, 1]);
        assert!(String::from_utf8_lossy(&p.output).ends_with("Authentication failed"));
        // No password set: always refused.
        let mut p = peer(&[b"RFB 003.003\n".as_slice(), &[0u8; 16]].concat());
        assert!(handshake(&mut p, Security::Password(None)).is_err());
        assert_eq!(&p.output[12..16], &[0, 0, 0, 2]);

        /// Answers the challenge as a client that knows the password.
        struct Answering(Peer, Vec<u8>);
        impl Read for Answering {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if buf.len() == 16 {
                    let ch: [u8; 16] = self.0.output[14..30].try_into().unwrap();
                    buf.copy_from_slice(&auth::response(&self.1, &ch));
                    return Ok(16);
                }
                self.0.read(buf)
            }
        }
        impl Write for Answering {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut a = Answering(peer(b"RFB 003.008\n\x02\x01"), b"secret".to_vec());
        assert!(handshake(&mut a, Security::Password(Some(b"secret"))).is_ok());
        assert_eq!(&a.0.output[30..], &[0, 0, 0, 0]);
    }

    #[test]
    fn parses_messages_and_rejects_malformed_ones() {
        let msg = |b: &[u8]| read_message(&mut Cursor::new(b.to_vec()));
        assert_eq!(
            msg(b"\x03\x01\x00\x01\x00\x02\x00\x03\x00\x04").unwrap(),
            ClientMessage::UpdateRequest {
                incremental: true,
                rect: Rect {
                    x: 1,
                    y: 2,
                    w: 3,
                    h: 4
                }
            }
        );
        assert_eq!(
            msg(b"\x04\x01\x00\x00\x00\x00\xff\x0d").unwrap(),
            ClientMessage::Key {
                down: true,
                keysym: 0xff0d
            }
        );
        assert_eq!(
            msg(b"\x05\x01\x00\x0a\x00\x14").unwrap(),
            ClientMessage::Pointer {
                buttons: 1,
                x: 10,
                y: 20
            }
        );
        assert_eq!(
            msg(b"\x02\x00\x00\x02\x00\x00\x00\x10\xff\xff\xff\x21").unwrap(),
            ClientMessage::SetEncodings(vec![16, -223])
        );
        // Many encodings: all read, 64 kept.
        let mut many = b"\x02\x00\xff\xff".to_vec();
        many.extend(std::iter::repeat_n(0u8, 4 * 0xffff));
        let ClientMessage::SetEncodings(e) = msg(&many).unwrap() else {
            panic!()
        };
        assert_eq!(e.len(), MAX_ENCODINGS);
        assert_eq!(
            msg(b"\xff\x00\x00\x01\x00\x00\x00\x61\x00\x00\x00\x1e").unwrap(),
            ClientMessage::QemuKey {
                down: true,
                keysym: 0x61,
                qnum: 0x1e
            }
        );
        assert_eq!(
            msg(b"\x06\0\0\0\0\0\0\x03abc").unwrap(),
            ClientMessage::CutText
        );
        assert!(matches!(
            msg(b"\x06\0\0\0\xff\xff\xff\xff"),
            Err(ProtocolError::CutTextTooLong(_))
        ));
        assert!(matches!(
            msg(b"\x06\0\0\0\0\0\0\x09ab"),
            Err(ProtocolError::Io(_))
        ));
        assert!(matches!(msg(b"\x07"), Err(ProtocolError::MessageType(7))));
        assert!(matches!(
            msg(b"\xff\x01"),
            Err(ProtocolError::QemuSubtype(1))
        ));
        // Colour-map pixel format.
        let mut pf = vec![0u8, 0, 0, 0];
        pf.extend_from_slice(&[8, 8, 0, 0, 0, 7, 0, 7, 0, 3, 0, 3, 6, 0, 0, 0]);
        assert!(matches!(msg(&pf), Err(ProtocolError::PixelFormat)));
        // Every truncation of a valid message is an error, never a panic.
        for m in [
            &b"\x03\x01\x00\x01\x00\x02\x00\x03\x00\x04"[..],
            b"\x02\x00\x00\x02\x00\x00\x00\x10\xff\xff\xff\x21",
            b"\x05\x01\x00\x0a\x00\x14",
            b"\xff\x00\x00\x01\x00\x00\x00\x61\x00\x00\x00\x1e",
        ] {
            for n in 0..m.len() {
                assert!(msg(&m[..n]).is_err());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A deterministic generator (xorshift): the same inputs every run.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly valid message types, so the bodies get parsed too.
            if let Some(first) = data.first_mut() {
                *first = [0, 2, 3, 4, 5, 6, 255, *first][(next() % 8) as usize];
            }
            let mut r = Cursor::new(data.clone());
            while read_message(&mut r).is_ok() {}
            let mut p = peer(&[b"RFB 003.008\n".as_slice(), &data].concat());
            let _ = handshake(&mut p, Security::Password(Some(b"pw")));
            let _ = handshake(&mut peer(&data), Security::None);
        }
    }
}
