//! The standard VGA and QMP `screendump`: SeaBIOS with its VGA BIOS boots guests/src/vgadisk.S,
//! which writes a text pattern to 0xb8000 and then draws bars in a Bochs VBE mode through the
//! linear framebuffer; each screen is dumped (PPM and PNG) and compared pixel for pixel with a
//! picture the test computes: text from the VGA BIOS's own 8x16 font (read from the ROM file)
//! and the standard text palette, bars from the guest's formula. The firmware's banner is read
//! back from the dump with the same font. The same guest runs on QEMU (`-vga std`) and the
//! dumps must be identical.

mod common;

use common::{binary, is_qemu, TempDir, VmCommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// SeaBIOS plus the VGA BIOS at emulated CPL0: a few seconds on this host, more under load.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const CELL_W: usize = 9;
const CELL_H: usize = 16;
/// What vgadisk.S writes on row 10 (attribute 0x1f) and how row 11 is made.
const TEXT: &str = "rvmm VGA text 0123456789";
const TEXT_ROW: usize = 10;
const COLOUR_ROW: usize = 11;
/// vgadisk.S's VBE mode and bar colours.
const VBE_W: usize = 320;
const VBE_H: usize = 200;
const BARS: [u32; 8] = [
    0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff, 0x804020,
];

/// The VGA BIOS's default text palette (6-bit DAC values of the 16 CGA colours).
const TEXT_DAC: [[u8; 3]; 16] = [
    [0x00, 0x00, 0x00],
    [0x00, 0x00, 0x2a],
    [0x00, 0x2a, 0x00],
    [0x00, 0x2a, 0x2a],
    [0x2a, 0x00, 0x00],
    [0x2a, 0x00, 0x2a],
    [0x2a, 0x15, 0x00],
    [0x2a, 0x2a, 0x2a],
    [0x15, 0x15, 0x15],
    [0x15, 0x15, 0x3f],
    [0x15, 0x3f, 0x15],
    [0x15, 0x3f, 0x3f],
    [0x3f, 0x15, 0x15],
    [0x3f, 0x15, 0x3f],
    [0x3f, 0x3f, 0x15],
    [0x3f, 0x3f, 0x3f],
];

/// A 6-bit DAC value as 8 bits, the way QEMU's VGA expands it.
fn dac8(v: u8) -> u32 {
    let v = u32::from(v);
    (v << 2) | ((v & 1) << 1) | (v & 1)
}

fn text_colour(i: u8) -> u32 {
    let [r, g, b] = TEXT_DAC[usize::from(i & 0xf)];
    (dac8(r) << 16) | (dac8(g) << 8) | dac8(b)
}

/// The VGA BIOS's 8x16 font: 256 glyphs of 16 bytes, found in the ROM by its first two glyphs
/// (an empty one and the IBM smiley, the same in every VGA font).
fn rom_font() -> Vec<u8> {
    let rom = ["/usr/share/seabios", "/usr/share/qemu"]
        .iter()
        .map(|d| Path::new(d).join("vgabios-stdvga.bin"))
        .find(|p| p.exists())
        .expect("vgabios-stdvga.bin (Debian's seabios package)");
    let rom = std::fs::read(&rom).unwrap();
    let mut head = vec![0u8; 16];
    head.extend_from_slice(&[
        0x00, 0x00, 0x7e, 0x81, 0xa5, 0x81, 0x81, 0xbd, 0x99, 0x81, 0x81, 0x7e, 0x00, 0x00, 0x00,
        0x00,
    ]);
    let at = rom
        .windows(head.len())
        .position(|w| w == head)
        .expect("an 8x16 font in the VGA BIOS");
    rom[at..at + 256 * 16].to_vec()
}

/// A screen dump: width, height, XRGB pixels.
struct Picture {
    width: usize,
    height: usize,
    pixels: Vec<u32>,
}

impl Picture {
    fn at(&self, x: usize, y: usize) -> u32 {
        self.pixels[y * self.width + x]
    }

    /// QEMU's P6 PPM.
    fn from_ppm(data: &[u8]) -> Picture {
        let mut fields = Vec::new();
        let mut pos = 0;
        while fields.len() < 4 {
            let end = pos
                + data[pos..]
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap();
            fields.push(std::str::from_utf8(&data[pos..end]).unwrap().to_string());
            pos = end + 1;
        }
        assert_eq!(fields[0], "P6");
        assert_eq!(fields[3], "255");
        let (width, height): (usize, usize) =
            (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        let rgb = &data[pos..];
        assert_eq!(rgb.len(), width * height * 3, "PPM size");
        let pixels = rgb
            .chunks_exact(3)
            .map(|p| (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2]))
            .collect();
        Picture {
            width,
            height,
            pixels,
        }
    }

    fn from_png(data: &[u8]) -> Picture {
        let decoder = png::Decoder::new(data);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let pixels = buf[..info.buffer_size()]
            .chunks_exact(3)
            .map(|p| (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2]))
            .collect();
        Picture {
            width: info.width as usize,
            height: info.height as usize,
            pixels,
        }
    }
}

/// The expected pixels of one text cell.
fn cell(font: &[u8], c: u8, attr: u8) -> [[u32; CELL_W]; CELL_H] {
    let (fg, bg) = (text_colour(attr & 0xf), text_colour(attr >> 4));
    let mut out = [[bg; CELL_W]; CELL_H];
    for (y, row) in out.iter_mut().enumerate() {
        let bits = font[usize::from(c) * 16 + y];
        for (x, px) in row.iter_mut().take(8).enumerate() {
            if bits & (0x80 >> x) != 0 {
                *px = fg;
            }
        }
        // Line-drawing characters extend into the ninth column.
        if (0xb0..=0xdf).contains(&c) && bits & 1 != 0 {
            row[8] = fg;
        }
    }
    out
}

/// The character in text cell (col, row) of `pic` (cells `cell_w` pixels wide), matched against
/// `font` (None: no glyph). The background is the cell's top-left pixel: the first line of every
/// printable glyph of a VGA 8x16 font is empty.
fn read_cell(pic: &Picture, font: &[u8], cell_w: usize, col: usize, row: usize) -> Option<u8> {
    let (x0, y0) = (col * cell_w, row * CELL_H);
    let bg = pic.at(x0, y0);
    let bits: Vec<u8> = (0..CELL_H)
        .map(|y| {
            (0..8).fold(0u8, |b, x| {
                b | (u8::from(pic.at(x0 + x, y0 + y) != bg) << (7 - x))
            })
        })
        .collect();
    (0x20..0x7f).find(|&c| font[usize::from(c) * 16..][..16] == bits[..])
}

fn read_row(pic: &Picture, font: &[u8], row: usize) -> String {
    read_row_cells(pic, font, CELL_W, row)
}

fn read_row_cells(pic: &Picture, font: &[u8], cell_w: usize, row: usize) -> String {
    (0..pic.width / cell_w)
        .map(|col| read_cell(pic, font, cell_w, col, row).map_or('?', char::from))
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// A QMP connection.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    panic!("QMP {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        qmp.line();
        qmp.execute("qmp_capabilities", json!({})).unwrap();
        qmp
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP: {e}: {line}"))
    }

    /// The command's `return`, or its error description.
    fn execute(&mut self, command: &str, args: Value) -> Result<Value, String> {
        let msg = json!({"execute": command, "arguments": args});
        // One write: rvmm acts on a complete JSON object before its newline arrives, and after
        // `quit` a separate newline write would find the socket closed.
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let reply = self.line();
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(e["desc"].as_str().unwrap_or_default().to_string());
            }
        }
    }

    /// Dump the screen as PPM and PNG; both must hold the same picture.
    fn screendump(&mut self, dir: &TempDir, name: &str) -> Picture {
        let ppm = dir.path().join(format!("{name}.ppm"));
        let png = dir.path().join(format!("{name}.png"));
        self.execute("screendump", json!({"filename": ppm}))
            .unwrap();
        self.execute("screendump", json!({"filename": png, "format": "png"}))
            .unwrap();
        let a = Picture::from_ppm(&std::fs::read(&ppm).unwrap());
        let b = Picture::from_png(&std::fs::read(&png).unwrap());
        assert_eq!(
            (a.width, a.height),
            (b.width, b.height),
            "PPM and PNG sizes"
        );
        assert!(a.pixels == b.pixels, "PPM and PNG differ");
        a
    }
}

/// The boot disk: vgadisk.bin padded to 1 MiB.
fn vga_disk(dir: &TempDir) -> PathBuf {
    let mut disk = std::fs::read(common::guest("vgadisk.bin")).expect("vgadisk.bin");
    disk.resize(1 << 20, 0);
    dir.file("vgadisk.img", &disk)
}

/// Boot vgadisk on `program` (rvmm or QEMU) and dump the text and VBE screens.
fn run_vgadisk(program: &Path, machine: &str, tag: &str) -> (Picture, Picture, Picture) {
    let dir = TempDir::new(&format!("display-{tag}-{machine}"));
    let disk = vga_disk(&dir);
    let sock = dir.path().join("qmp.sock");
    let mut cmd = VmCommand::without_kernel()
        .program(program)
        .set_option("-M", machine)
        .arg("-vga")
        .arg("std")
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", disk.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin_pipe()
        .timeout(BOOT_TIMEOUT);
    if program.to_string_lossy().contains("qemu") {
        // This host's `-cpu host` can abort QEMU (MSR 0x10a).
        cmd = cmd.set_option("-cpu", "host,-arch-capabilities");
    }
    let mut vm = cmd.spawn();
    let mut qmp = Qmp::connect(&sock);
    assert!(
        vm.wait_for_stdout("vgadisk: text ready", BOOT_TIMEOUT),
        "no text phase\n{}",
        vm.stdout()
    );
    let text = qmp.screendump(&dir, "text");
    vm.write_stdin(b"\n");
    assert!(
        vm.wait_for_stdout("vgadisk: vbe ready", BOOT_TIMEOUT),
        "no VBE phase\n{}",
        vm.stdout()
    );
    let vbe = qmp.screendump(&dir, "vbe");
    vm.write_stdin(b"\n");
    assert!(
        vm.wait_for_stdout("vgadisk: vbe changed", BOOT_TIMEOUT),
        "no VBE change\n{}",
        vm.stdout()
    );
    let changed = qmp.screendump(&dir, "changed");
    let _ = qmp.execute("quit", json!({}));
    vm.wait(BOOT_TIMEOUT);
    (text, vbe, changed)
}

fn check_text(pic: &Picture, font: &[u8]) {
    assert_eq!((pic.width, pic.height), (80 * CELL_W, 25 * CELL_H));
    let banner = read_row(pic, font, 0);
    assert!(
        banner.starts_with("SeaBIOS (version "),
        "row 0 reads {banner:?}"
    );
    let mut cells: Vec<(u8, u8)> = TEXT.bytes().map(|c| (c, 0x1f)).collect();
    cells.resize(80, (b' ', 0x07));
    let mut colours: Vec<(u8, u8)> = (0..16u8).map(|i| (b'X', (i << 4) | (15 - i))).collect();
    colours.resize(80, (b' ', 0x07));
    for (row, cells) in [(TEXT_ROW, cells), (COLOUR_ROW, colours)] {
        for (col, &(c, attr)) in cells.iter().enumerate() {
            let want = cell(font, c, attr);
            for (y, line) in want.iter().enumerate() {
                for (x, &px) in line.iter().enumerate() {
                    let (px_x, px_y) = (col * CELL_W + x, row * CELL_H + y);
                    assert_eq!(
                        pic.at(px_x, px_y),
                        px,
                        "pixel ({px_x}, {px_y}) of cell ({col}, {row}) '{}' attr {attr:#04x}",
                        char::from(c)
                    );
                }
            }
        }
    }
    assert_eq!(read_row(pic, font, TEXT_ROW), TEXT);
}

/// The bars; with `block`, the white 16x4 block the guest paints at (100, 60) afterwards.
fn check_vbe(pic: &Picture, block: bool) {
    assert_eq!((pic.width, pic.height), (VBE_W, VBE_H));
    for y in 0..VBE_H {
        for x in 0..VBE_W {
            let in_block = (100..116).contains(&x) && (60..64).contains(&y);
            let want = if block && in_block {
                0xffffff
            } else {
                BARS[(x / 40 + y / 25) & 7]
            };
            assert_eq!(pic.at(x, y), want, "pixel ({x}, {y})");
        }
    }
}

#[test]
fn text_mode_vbe_and_the_firmware_banner_appear_in_screendump() {
    let font = rom_font();
    let (text, vbe, changed) = run_vgadisk(&binary(), "pc", "self");
    check_text(&text, &font);
    check_vbe(&vbe, false);
    // Only KVM's dirty log of the framebuffer BAR tells the device these pixels changed.
    check_vbe(&changed, true);
}

#[test]
fn screendumps_match_qemu() {
    if is_qemu() {
        eprintln!("skipped: the binary under test is QEMU already");
        return;
    }
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    if !qemu.exists() {
        eprintln!("skipped: no {}", qemu.display());
        return;
    }
    let (text, vbe, changed) = run_vgadisk(&binary(), "q35", "rvmm");
    let (qtext, qvbe, qchanged) = run_vgadisk(qemu, "q35", "qemu");
    for (name, a, b) in [
        ("text", &text, &qtext),
        ("vbe", &vbe, &qvbe),
        ("changed", &changed, &qchanged),
    ] {
        assert_eq!((a.width, a.height), (b.width, b.height), "{name} size");
        let diff = a.pixels.iter().zip(&b.pixels).position(|(p, q)| p != q);
        assert!(
            diff.is_none(),
            "{name}: first differing pixel at {:?}",
            diff.map(|i| (i % a.width, i / a.width))
        );
    }
}

#[test]
fn screendump_errors() {
    if common::skip_on_qemu("rvmm's own error paths") {
        return;
    }
    let dir = TempDir::new("display-errors");
    let sock = dir.path().join("qmp.sock");
    let vm = VmCommand::without_kernel()
        .set_option("-M", "pc")
        .arg("-S")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn();
    let mut qmp = Qmp::connect(&sock);
    let e = qmp
        .execute("screendump", json!({"filename": dir.path().join("x.ppm")}))
        .unwrap_err();
    assert_eq!(e, "There is no console to take a screendump from.");
    let _ = qmp.execute("quit", json!({}));
    vm.wait(Duration::from_secs(30));

    // With a VGA (not yet initialised by firmware: -S).
    let sock = dir.path().join("qmp2.sock");
    let vm = VmCommand::without_kernel()
        .set_option("-M", "q35")
        .arg("-vga")
        .arg("std")
        .arg("-S")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .spawn();
    let mut qmp = Qmp::connect(&sock);
    let missing = qmp.execute("screendump", json!({})).unwrap_err();
    assert!(missing.contains("'filename' is missing"), "{missing}");
    let bad = qmp
        .execute(
            "screendump",
            json!({"filename": "/x.ppm", "format": "jpeg"}),
        )
        .unwrap_err();
    assert!(bad.contains("'format'"), "{bad}");
    let unwritable = dir.path().join("no-such-dir").join("x.ppm");
    let e = qmp
        .execute("screendump", json!({"filename": unwritable}))
        .unwrap_err();
    assert!(e.starts_with("failed to open file"), "{e}");
    let blank = qmp.screendump(&dir, "blank");
    assert!(blank.pixels.iter().all(|&p| p == 0), "a blank screen");
    let _ = qmp.execute("quit", json!({}));
    vm.wait(Duration::from_secs(30));
}

/// `-device bochs-display` (no legacy VGA): its VGA BIOS reads the EDID in BAR2, sets the
/// preferred 1280x800x32 mode through the DISPI registers in BAR2 and draws text into the
/// framebuffer itself (8-pixel cells): the firmware banner must be readable in the dump.
#[test]
fn bochs_display_shows_the_banner_in_its_edid_mode() {
    if common::skip_on_qemu("QEMU's EDID prefers another mode") {
        return;
    }
    let font = rom_font();
    let dir = TempDir::new("display-bochs");
    let disk = vga_disk(&dir);
    let sock = dir.path().join("qmp.sock");
    let mut vm = VmCommand::without_kernel()
        .arg("-device")
        .arg("bochs-display")
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", disk.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .timeout(BOOT_TIMEOUT)
        .spawn();
    let mut qmp = Qmp::connect(&sock);
    assert!(
        vm.wait_for_stdout("vgadisk: text ready", BOOT_TIMEOUT),
        "no boot\n{}",
        vm.stdout()
    );
    let pic = qmp.screendump(&dir, "bochs");
    assert_eq!((pic.width, pic.height), (1280, 800));
    let banner = read_row_cells(&pic, &font, 8, 0);
    assert!(
        banner.starts_with("SeaBIOS (version "),
        "row 0 reads {banner:?}"
    );
    let _ = qmp.execute("quit", json!({}));
    vm.wait(BOOT_TIMEOUT);
}

/// The foreground pixels of `text` in GRUB's font file `font` (PFF2: sections of a 4-byte name
/// and a big-endian length; CHIX indexes the glyphs), relative to a pen starting at x 0 on the
/// baseline, placed as GRUB places them: x + x_offset, and the glyph's bottom row y_offset
/// above the baseline; the pen moves by the device width.
fn pff2_text(font: &[u8], text: &str) -> Vec<(i64, i64)> {
    let be16 = |d: &[u8], at: usize| i64::from(i16::from_be_bytes([d[at], d[at + 1]]));
    let be32 = |d: &[u8], at: usize| u32::from_be_bytes(d[at..at + 4].try_into().unwrap());
    let mut chix = None;
    let mut at = 0;
    while at + 8 <= font.len() {
        let (name, len) = (&font[at..at + 4], be32(font, at + 4) as usize);
        if name == b"CHIX" {
            chix = Some(&font[at + 8..at + 8 + len]);
        }
        if name == b"DATA" {
            break;
        }
        at += 8 + len;
    }
    let chix = chix.expect("PFF2 CHIX section");
    let mut pixels = Vec::new();
    let mut pen = 0i64;
    for ch in text.chars() {
        let entry = chix
            .chunks_exact(9)
            .find(|e| be32(e, 0) == u32::from(ch))
            .unwrap_or_else(|| panic!("no glyph for {ch:?}"));
        let off = be32(entry, 5) as usize;
        let (w, h) = (be16(font, off), be16(font, off + 2));
        let (xo, yo, dw) = (
            be16(font, off + 4),
            be16(font, off + 6),
            be16(font, off + 8),
        );
        let bits = &font[off + 10..];
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize;
                if bits[i / 8] & (0x80 >> (i % 8)) != 0 {
                    pixels.push((pen + xo + x, -(h + yo) + y));
                }
            }
        }
        pen += dw;
    }
    pixels
}

/// SeaBIOS boots a GRUB CD (grub-mkrescue with only the modules it needs, so GRUB reaches its
/// config in under a minute at emulated CPL0) whose grub.cfg switches to `gfxterm` in a 640x480
/// VBE mode with a blue background and prints a line: the screendump shows the background, and
/// the line drawn pixel for pixel with the glyphs of GRUB's own font file (ascii.pf2), found
/// where gfxterm put it.
#[test]
fn grub_gfxterm_appears_in_screendump() {
    if common::skip_on_qemu("QEMU's VBE BIOS offers other modes in another order") {
        return;
    }
    let font_file = Path::new("/usr/share/grub/ascii.pf2");
    let font = std::fs::read(font_file)
        .unwrap_or_else(|e| panic!("{}: {e} (Debian package grub-common)", font_file.display()));
    let dir = TempDir::new("display-gfxterm");
    let tree = dir.path().join("iso");
    std::fs::create_dir_all(tree.join("boot/grub/fonts")).unwrap();
    std::fs::copy(font_file, tree.join("boot/grub/fonts/ascii.pf2")).unwrap();
    const LINE: &str = "rvmm gfxterm 0123456789";
    std::fs::write(
        tree.join("boot/grub/grub.cfg"),
        format!(
            "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
             insmod all_video\ninsmod gfxterm_background\nset gfxmode=640x480x32\n\
             loadfont /boot/grub/fonts/ascii.pf2\nterminal_output --append gfxterm\n\
             background_color 0,0,128\nclear\necho {LINE}\necho rvmm: gfxterm drawn\nsleep 600\n"
        ),
    )
    .unwrap();
    let iso = dir.path().join("gfxterm.iso");
    let modules = "normal configfile echo sleep serial terminal iso9660 biosdisk part_msdos \
                   all_video vbe vga video video_fb video_bochs video_cirrus pci bitmap \
                   bitmap_scale font gfxterm gfxterm_background";
    let out = std::process::Command::new("grub-mkrescue")
        .arg(format!("--install-modules={modules}"))
        .args(["--fonts=", "--locales=", "--themes=", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .expect("cannot run grub-mkrescue (grub-common, grub-pc-bin, xorriso)");
    assert!(
        out.status.success(),
        "grub-mkrescue failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sock = dir.path().join("qmp.sock");
    let mut vm = VmCommand::without_kernel()
        .arg("-vga")
        .arg("std")
        .arg("-cdrom")
        .arg(&iso)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .timeout(Duration::from_secs(600))
        .spawn();
    let mut qmp = Qmp::connect(&sock);
    assert!(
        vm.wait_for_stdout("rvmm: gfxterm drawn", Duration::from_secs(540)),
        "GRUB never drew\n{}",
        vm.stdout()
    );
    let pic = qmp.screendump(&dir, "gfxterm");
    if let Ok(keep) = std::env::var("RVMM_KEEP_SCREEN") {
        let _ = std::fs::copy(dir.path().join("gfxterm.png"), keep);
    }
    let _ = qmp.execute("quit", json!({}));
    vm.wait(BOOT_TIMEOUT);
    assert_eq!((pic.width, pic.height), (640, 480), "gfxmode 640x480");
    // gfxterm paints background_color around its text window (the border), and the window in
    // its own colour.
    assert_eq!(pic.at(639, 479), 0x000080, "background_color 0,0,128");
    let background = pic.at(320, 240);
    // The first pixel that is neither is the text's top-left-most pixel; the glyphs say where
    // every other one must be.
    let first = (0..pic.height)
        .flat_map(|y| (0..pic.width).map(move |x| (x, y)))
        .find(|&(x, y)| ![background, 0x000080].contains(&pic.at(x, y)))
        .expect("nothing drawn");
    let fg = pic.at(first.0, first.1);
    let glyphs = pff2_text(&font, LINE);
    let top = glyphs.iter().map(|p| p.1).min().unwrap();
    let lead = glyphs
        .iter()
        .filter(|p| p.1 == top)
        .map(|p| p.0)
        .min()
        .unwrap();
    let (dx, dy) = (first.0 as i64 - lead, first.1 as i64 - top);
    let want: std::collections::HashSet<(i64, i64)> =
        glyphs.iter().map(|&(x, y)| (x + dx, y + dy)).collect();
    let (x0, x1) = (
        want.iter().map(|p| p.0).min().unwrap(),
        want.iter().map(|p| p.0).max().unwrap(),
    );
    let (y0, y1) = (
        want.iter().map(|p| p.1).min().unwrap(),
        want.iter().map(|p| p.1).max().unwrap(),
    );
    let mut wrong = 0;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let expect = if want.contains(&(x, y)) {
                fg
            } else {
                background
            };
            let at = usize::try_from(x)
                .ok()
                .zip(usize::try_from(y).ok())
                .filter(|&(x, y)| x < pic.width && y < pic.height);
            if at.map(|(x, y)| pic.at(x, y)) != Some(expect) {
                wrong += 1;
            }
        }
    }
    assert_eq!(
        wrong, 0,
        "{wrong} pixels of {LINE:?} differ from ascii.pf2's glyphs (text colour {fg:#08x} at {first:?})"
    );
    assert!(want.len() > 100, "the line has {} pixels", want.len());
}
