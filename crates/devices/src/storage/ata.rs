//! One ATA drive, independent of the transport (IDE registers or AHCI FISes): the task file,
//! the ATA command set (ACS-3) and a data-transfer state machine both transports drive.
//!
//! A transport copies the host's registers into [`AtaDrive::regs_mut`] and calls
//! [`AtaDrive::execute`]. The answer is an [`Event`]: the command is [`Event::Done`] (status and
//! error tell how), or a data phase started ([`Event::Block`]). While a transfer runs, the
//! current DRQ block is [`AtaDrive::block`] (data-in) or [`AtaDrive::block_mut`] (data-out); the
//! transport moves bytes and reports them with [`AtaDrive::advance`], which loads the next block
//! or completes the command. Blocks are bounded ([`DMA_BLOCK`] at most), so a 32 MiB READ DMA
//! EXT or a 4 GiB READ(12) never allocates more than one block. The `irq` flags say when a PIO
//! transport interrupts (ATA8-ACS / ATA8-APT protocols); AHCI posts FISes instead.
//!
//! Identity values follow QEMU (hw/ide/core.c `ide_identify`, `ide_atapi_identify`) so guests
//! see the same drive: "QEMU HARDDISK" / "QEMU DVD-ROM", serial "QM0000n", firmware "2.5+".

use std::sync::Arc;

use super::atapi::AtapiState;
use super::identify::{geometry, identify_disk, identify_packet};
use super::BlockBackend;

/// Bytes per ATA sector.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes per CD/DVD sector.
pub const CD_SECTOR_SIZE: u64 = 2048;

// Status register bits (ACS-3 6.2).
pub(crate) const STATUS_DRDY: u8 = 0x40;
pub(crate) const STATUS_DSC: u8 = 0x10;
pub(crate) const STATUS_DRQ: u8 = 0x08;
pub(crate) const STATUS_ERR: u8 = 0x01;
// Error register bits (ACS-3 6.3).
pub(crate) const ERROR_ABRT: u8 = 0x04;
pub(crate) const ERROR_IDNF: u8 = 0x10;
pub(crate) const ERROR_UNC: u8 = 0x40;

/// Device register: LBA addressing.
pub(crate) const DEVICE_LBA: u8 = 0x40;

/// ATAPI interrupt reason (sector count register): command/data and direction.
pub(crate) const REASON_COD: u8 = 0x01;
pub(crate) const REASON_IO: u8 = 0x02;

/// Largest READ/WRITE MULTIPLE block (IDENTIFY word 47, QEMU's MAX_MULT_SECTORS).
pub(super) const MAX_MULT_SECTORS: u8 = 16;
/// Largest block handed to a DMA engine at once (bytes).
pub(crate) const DMA_BLOCK: usize = 64 * 1024;
/// Largest ATAPI reply built in memory (READ DVD STRUCTURE's 2 KiB + header is the biggest).
pub(crate) const MAX_REPLY: usize = 4096;

/// The ATA task file as the host writes it; `hob_*` are the previous contents ("high order
/// bytes") of the 48-bit commands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskFile {
    pub feature: u8,
    pub hob_feature: u8,
    pub nsector: u8,
    pub hob_nsector: u8,
    pub lba_low: u8,
    pub hob_lba_low: u8,
    pub lba_mid: u8,
    pub hob_lba_mid: u8,
    pub lba_high: u8,
    pub hob_lba_high: u8,
    pub device: u8,
}

/// What a drive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveKind {
    /// An ATA disk (512-byte sectors).
    Disk,
    /// An ATAPI CD/DVD-ROM (2048-byte sectors, read-only, may be empty).
    Cdrom,
}

/// The strings IDENTIFY (and INQUIRY) report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveIdentity {
    /// Up to 20 characters (QEMU: "QM%05d" numbered from 1 in creation order).
    pub serial: String,
    /// Up to 40 characters; None for QEMU's "QEMU HARDDISK" / "QEMU DVD-ROM".
    pub model: Option<String>,
    /// Up to 8 characters (QEMU's `version`, "2.5+").
    pub firmware: String,
}

impl DriveIdentity {
    /// QEMU's defaults for the `n`th drive (1-based).
    pub fn qemu(n: u32) -> Self {
        Self {
            serial: format!("QM{n:05}"),
            model: None,
            firmware: "2.5+".to_string(),
        }
    }
}

/// Direction of a data phase, seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Device to host (reads).
    In,
    /// Host to device (writes, ATAPI command packets).
    Out,
}

/// The state a command (or a block of it) left the drive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A DRQ block is ready to be read or filled; `irq` when a PIO host is interrupted for it.
    Block { irq: bool },
    /// The command completed; status and error say how.
    Done { irq: bool },
}

/// Where a transfer's bytes come from or go to.
#[derive(Debug)]
enum Source {
    /// A reply built in memory; `off` is where the next block starts.
    Reply { data: Vec<u8>, off: usize },
    /// Medium bytes from `offset` on.
    Read { offset: u64 },
    /// Medium bytes written from `offset` on.
    Write { offset: u64 },
    /// The 12-byte ATAPI command packet.
    Packet,
}

/// A data phase in progress.
#[derive(Debug)]
struct Transfer {
    dir: Direction,
    source: Source,
    dma: bool,
    atapi: bool,
    /// Bytes still to move after the current block.
    left: u64,
    /// Largest block (a DRQ block for PIO, a DMA chunk otherwise).
    block_max: usize,
    /// The current block and how much of it the host has moved.
    buf: Vec<u8>,
    pos: usize,
}

/// Public view of the running transfer, for transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferInfo {
    pub dir: Direction,
    /// The host moves the data with its DMA engine (IDE bus master, AHCI DMA protocol).
    pub dma: bool,
    /// An ATAPI data phase (or packet).
    pub atapi: bool,
    /// Bytes of the current block still to move.
    pub block_left: usize,
    /// Bytes after the current block.
    pub left: u64,
}

/// An ATA or ATAPI drive.
pub struct AtaDrive {
    kind: DriveKind,
    pub(super) media: Option<Arc<dyn BlockBackend>>,
    identity: DriveIdentity,
    pub(super) tf: TaskFile,
    pub(super) status: u8,
    pub(super) error: u8,
    xfer: Option<Transfer>,
    pub(super) mult_sectors: u8,
    pub(super) write_cache: bool,
    /// SET FEATURES transfer mode: (0x20 MWDMA / 0x40 UDMA, mode).
    pub(super) dma_mode: (u8, u8),
    standby: bool,
    pub(super) atapi: AtapiState,
}

impl std::fmt::Debug for AtaDrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtaDrive")
            .field("kind", &self.kind)
            .field("size", &self.media.as_ref().map(|m| m.size()))
            .field("status", &self.status)
            .field("error", &self.error)
            .finish()
    }
}

impl AtaDrive {
    /// A disk on `backend`.
    pub fn disk(backend: Arc<dyn BlockBackend>, identity: DriveIdentity) -> Self {
        Self::new(DriveKind::Disk, Some(backend), identity)
    }

    /// A CD/DVD-ROM, with a medium or empty.
    pub fn cdrom(medium: Option<Arc<dyn BlockBackend>>, identity: DriveIdentity) -> Self {
        Self::new(DriveKind::Cdrom, medium, identity)
    }

    fn new(kind: DriveKind, media: Option<Arc<dyn BlockBackend>>, identity: DriveIdentity) -> Self {
        let mut d = Self {
            kind,
            media,
            identity,
            tf: TaskFile::default(),
            status: 0,
            error: 0,
            xfer: None,
            mult_sectors: MAX_MULT_SECTORS,
            write_cache: true,
            dma_mode: (0x40, 5),
            standby: false,
            atapi: AtapiState::default(),
        };
        d.reset();
        d
    }

    pub fn kind(&self) -> DriveKind {
        self.kind
    }

    pub fn is_atapi(&self) -> bool {
        self.kind == DriveKind::Cdrom
    }

    /// The task file registers (what the host last wrote and the device's outputs).
    pub fn regs(&self) -> &TaskFile {
        &self.tf
    }

    pub fn regs_mut(&mut self) -> &mut TaskFile {
        &mut self.tf
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn error(&self) -> u8 {
        self.error
    }

    /// The medium's size in bytes (0 when empty).
    pub fn media_size(&self) -> u64 {
        self.media.as_ref().map_or(0, |m| m.size())
    }

    /// 512-byte sectors of a disk.
    pub(super) fn sectors(&self) -> u64 {
        self.media_size() / SECTOR_SIZE
    }

    /// The signature in AHCI PxSIG layout: LBA high, mid, low, sector count.
    pub fn signature(&self) -> u32 {
        u32::from_be_bytes([
            self.tf.lba_high,
            self.tf.lba_mid,
            self.tf.lba_low,
            self.tf.nsector,
        ])
    }

    /// Hardware or software reset (SRST, COMRESET): drop any transfer, put the signature in the
    /// task file (ACS-3 9.12), status DRDY|DSC for a disk and 0 for a packet device.
    pub fn reset(&mut self) {
        self.xfer = None;
        self.set_signature();
        self.error = 0x01;
        self.status = if self.is_atapi() {
            0
        } else {
            STATUS_DRDY | STATUS_DSC
        };
        self.standby = false;
    }

    fn set_signature(&mut self) {
        self.tf.device &= 0xf0;
        self.tf.nsector = 1;
        self.tf.lba_low = 1;
        (self.tf.lba_mid, self.tf.lba_high) = if self.is_atapi() {
            (0x14, 0xeb)
        } else {
            (0, 0)
        };
    }

    /// Swap in a new medium (None: eject) for a CD; the guest sees a media change.
    pub fn change_media(&mut self, medium: Option<Arc<dyn BlockBackend>>) {
        if !self.is_atapi() {
            return;
        }
        self.media = medium;
        self.xfer = None;
        self.media_changed();
    }

    /// Info about the running transfer, if any.
    pub fn transfer(&self) -> Option<TransferInfo> {
        self.xfer.as_ref().map(|x| TransferInfo {
            dir: x.dir,
            dma: x.dma,
            atapi: x.atapi,
            block_left: x.buf.len().saturating_sub(x.pos),
            left: x.left,
        })
    }

    /// The rest of the current data-in block (empty when none).
    pub fn block(&self) -> &[u8] {
        match &self.xfer {
            Some(x) if x.dir == Direction::In => x.buf.get(x.pos..).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The rest of the current data-out block to fill (empty when none).
    pub fn block_mut(&mut self) -> &mut [u8] {
        match &mut self.xfer {
            Some(x) if x.dir == Direction::Out => x.buf.get_mut(x.pos..).unwrap_or(&mut []),
            _ => &mut [],
        }
    }

    /// The host moved `n` bytes of the current block. When the block is complete the next one
    /// is loaded (data-in), the finished one is consumed (data-out), or the command completes;
    /// that is returned. None while the block still has bytes left (or no transfer runs).
    pub fn advance(&mut self, n: usize) -> Option<Event> {
        let x = self.xfer.as_mut()?;
        x.pos = x.pos.saturating_add(n).min(x.buf.len());
        if x.pos < x.buf.len() {
            return None;
        }
        Some(self.block_finished())
    }

    /// PIO read through a data port: copies up to `out.len()` bytes.
    pub fn pio_read(&mut self, out: &mut [u8]) -> Option<Event> {
        let block = self.block();
        let n = block.len().min(out.len());
        out[..n].copy_from_slice(&block[..n]);
        out[n..].fill(0);
        if n == 0 {
            return None;
        }
        self.advance(n)
    }

    /// PIO write through a data port.
    pub fn pio_write(&mut self, data: &[u8]) -> Option<Event> {
        let block = self.block_mut();
        let n = block.len().min(data.len());
        block[..n].copy_from_slice(&data[..n]);
        if n == 0 {
            return None;
        }
        self.advance(n)
    }

    /// Abandon the transfer with an error (the host's DMA failed, e.g. a PRD outside RAM).
    pub fn fail_transfer(&mut self) -> Event {
        let atapi = self.xfer.as_ref().is_some_and(|x| x.atapi);
        self.xfer = None;
        if atapi {
            self.atapi_error(super::atapi::SENSE_ABORTED_COMMAND, 0, 0)
        } else {
            self.abort()
        }
    }

    /// Run ATA command `cmd` with the current task file.
    pub fn execute(&mut self, cmd: u8) -> Event {
        self.xfer = None;
        self.error = 0;
        if self.is_atapi() {
            return self.execute_atapi_side(cmd);
        }
        match cmd {
            0xec => self.reply_in(identify_disk(self), false),
            0xa1 | 0xa0 | 0x08 => self.abort(),
            0xef => self.set_features(),
            0xc6 => {
                let n = self.tf.nsector;
                if n > MAX_MULT_SECTORS || !(n == 0 || n.is_power_of_two()) {
                    return self.abort();
                }
                self.mult_sectors = n;
                self.ok()
            }
            0x91 | 0x00 => self.ok(),
            0x90 => self.diagnostic(),
            0xe0 | 0xe2 | 0xe6 => {
                self.standby = true;
                self.ok()
            }
            0xe1 | 0xe3 => {
                self.standby = false;
                self.ok()
            }
            0xe5 => {
                self.tf.nsector = if self.standby { 0x00 } else { 0xff };
                self.ok()
            }
            0xe7 | 0xea => self.flush(),
            0x40 | 0x41 => self.verify(false),
            0x42 => self.verify(true),
            // READ SECTORS (and no-retry), EXT, MULTIPLE, MULTIPLE EXT, DMA, DMA EXT.
            0x20 | 0x21 => self.rw(Direction::In, false, Mode::Sectors),
            0x24 => self.rw(Direction::In, true, Mode::Sectors),
            0xc4 => self.rw(Direction::In, false, Mode::Multiple),
            0x29 => self.rw(Direction::In, true, Mode::Multiple),
            0xc8 | 0xc9 => self.rw(Direction::In, false, Mode::Dma),
            0x25 => self.rw(Direction::In, true, Mode::Dma),
            0x30 | 0x31 => self.rw(Direction::Out, false, Mode::Sectors),
            0x34 => self.rw(Direction::Out, true, Mode::Sectors),
            0xc5 => self.rw(Direction::Out, false, Mode::Multiple),
            0x39 => self.rw(Direction::Out, true, Mode::Multiple),
            0xca | 0xcb => self.rw(Direction::Out, false, Mode::Dma),
            0x35 => self.rw(Direction::Out, true, Mode::Dma),
            _ => {
                tracing::debug!("ATA: unsupported command {cmd:#04x} aborted");
                self.abort()
            }
        }
    }

    /// ATA commands a packet device accepts (ACS-3 "PACKET feature set" devices).
    fn execute_atapi_side(&mut self, cmd: u8) -> Event {
        match cmd {
            0xa0 => self.packet(),
            0xa1 => self.reply_in(identify_packet(self), false),
            0x08 => {
                self.reset();
                Event::Done { irq: false }
            }
            0x90 => self.diagnostic(),
            0xef => self.set_features(),
            0x00 | 0xe0 | 0xe1 => self.ok(),
            0xe5 => {
                self.tf.nsector = 0xff;
                self.ok()
            }
            0xec => {
                // ACS-3 7.12.1: a packet device aborts IDENTIFY DEVICE with its signature.
                self.set_signature();
                self.abort()
            }
            _ => self.abort(),
        }
    }

    /// EXECUTE DEVICE DIAGNOSTIC: signature, error 01h "passed"; packet devices report status 0.
    fn diagnostic(&mut self) -> Event {
        self.set_signature();
        self.error = 0x01;
        self.status = if self.is_atapi() {
            0
        } else {
            STATUS_DRDY | STATUS_DSC
        };
        Event::Done { irq: true }
    }

    pub(super) fn ok(&mut self) -> Event {
        self.status = STATUS_DRDY | STATUS_DSC;
        self.error = 0;
        Event::Done { irq: true }
    }

    pub(super) fn abort(&mut self) -> Event {
        self.fail(ERROR_ABRT)
    }

    fn fail(&mut self, error: u8) -> Event {
        self.xfer = None;
        self.status = STATUS_DRDY | STATUS_ERR;
        self.error = error;
        Event::Done { irq: true }
    }

    fn set_features(&mut self) -> Event {
        match self.tf.feature {
            0x02 => self.write_cache = true,
            0x82 => self.write_cache = false,
            0x03 => {
                let (class, mode) = (self.tf.nsector & 0xf8, self.tf.nsector & 0x07);
                match class {
                    // PIO default / PIO flow control: any mode up to 4.
                    0x00 | 0x08 if mode <= 4 => {}
                    0x20 if mode <= 2 => self.dma_mode = (0x20, mode),
                    0x40 if mode <= 5 => self.dma_mode = (0x40, mode),
                    _ => return self.abort(),
                }
            }
            // Look-ahead, APM, revert to defaults, reporting of defects: accepted, no effect.
            0x05 | 0x85 | 0x55 | 0xaa | 0x66 | 0xcc | 0x42 | 0xc2 | 0x31 | 0x10 | 0x90 => {}
            _ => return self.abort(),
        }
        self.ok()
    }

    fn flush(&mut self) -> Event {
        let Some(media) = self.media.clone() else {
            return self.abort();
        };
        match media.flush() {
            Ok(()) => self.ok(),
            Err(e) => {
                tracing::debug!("ATA: flush failed: {e}");
                self.abort()
            }
        }
    }

    /// The starting sector of a read/write/verify, or None for an invalid CHS address.
    fn start_lba(&self, lba48: bool) -> Option<u64> {
        let t = &self.tf;
        if lba48 {
            return Some(u64::from_be_bytes([
                0,
                0,
                t.hob_lba_high,
                t.hob_lba_mid,
                t.hob_lba_low,
                t.lba_high,
                t.lba_mid,
                t.lba_low,
            ]));
        }
        if t.device & DEVICE_LBA != 0 {
            return Some(u64::from_be_bytes([
                0,
                0,
                0,
                0,
                t.device & 0x0f,
                t.lba_high,
                t.lba_mid,
                t.lba_low,
            ]));
        }
        let (_, heads, spt) = geometry(self.sectors());
        let cyl = u64::from(u16::from_be_bytes([t.lba_high, t.lba_mid]));
        let head = u64::from(t.device & 0x0f);
        let sector = u64::from(t.lba_low);
        if sector == 0 || sector > spt || head >= heads {
            return None;
        }
        Some((cyl * heads + head) * spt + sector - 1)
    }

    fn count(&self, lba48: bool) -> u64 {
        let n = if lba48 {
            u64::from(u16::from_be_bytes([self.tf.hob_nsector, self.tf.nsector]))
        } else {
            u64::from(self.tf.nsector)
        };
        match (n, lba48) {
            (0, true) => 65536,
            (0, false) => 256,
            (n, _) => n,
        }
    }

    /// The byte range of a sector command, or the error already reported.
    fn range(&mut self, lba48: bool) -> Result<(u64, u64), Event> {
        let Some(lba) = self.start_lba(lba48) else {
            return Err(self.fail(ERROR_IDNF));
        };
        let count = self.count(lba48);
        match lba.checked_add(count) {
            Some(end) if end <= self.sectors() => Ok((lba * SECTOR_SIZE, count * SECTOR_SIZE)),
            _ => Err(self.fail(ERROR_IDNF)),
        }
    }

    fn verify(&mut self, lba48: bool) -> Event {
        match self.range(lba48) {
            Ok(_) => self.ok(),
            Err(e) => e,
        }
    }

    fn rw(&mut self, dir: Direction, lba48: bool, mode: Mode) -> Event {
        let block_max = match mode {
            Mode::Sectors => SECTOR_SIZE as usize,
            Mode::Multiple if self.mult_sectors == 0 => return self.abort(),
            Mode::Multiple => usize::from(self.mult_sectors) * SECTOR_SIZE as usize,
            Mode::Dma => DMA_BLOCK,
        };
        if dir == Direction::Out && self.media.as_ref().is_some_and(|m| m.readonly()) {
            return self.abort();
        }
        let (offset, len) = match self.range(lba48) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let source = match dir {
            Direction::In => Source::Read { offset },
            Direction::Out => Source::Write { offset },
        };
        self.start(dir, source, len, block_max, mode == Mode::Dma, false)
    }

    /// IDENTIFY-style reply: a data-in transfer of a buffer built in memory.
    pub(super) fn reply_in(&mut self, data: Vec<u8>, atapi: bool) -> Event {
        let len = data.len() as u64;
        let (block_max, dma) = if atapi {
            (self.atapi.byte_limit(), self.atapi.dma)
        } else {
            (SECTOR_SIZE as usize, false)
        };
        self.start(
            Direction::In,
            Source::Reply { data, off: 0 },
            len,
            block_max,
            dma,
            atapi,
        )
    }

    /// Start a data phase of `len` bytes (len > 0) and load its first block.
    pub(super) fn start_read(&mut self, offset: u64, len: u64) -> Event {
        let (block_max, dma) = (self.atapi.byte_limit(), self.atapi.dma);
        let block_max = if dma { DMA_BLOCK } else { block_max };
        self.start(
            Direction::In,
            Source::Read { offset },
            len,
            block_max,
            dma,
            true,
        )
    }

    fn packet(&mut self) -> Event {
        self.atapi.dma = self.tf.feature & 0x01 != 0;
        self.atapi.limit = u16::from_be_bytes([self.tf.lba_high, self.tf.lba_mid]);
        self.start(Direction::Out, Source::Packet, 12, 12, false, true)
    }

    fn start(
        &mut self,
        dir: Direction,
        source: Source,
        len: u64,
        block_max: usize,
        dma: bool,
        atapi: bool,
    ) -> Event {
        let block_max = match source {
            Source::Reply { .. } | Source::Packet if !atapi || dma => DMA_BLOCK,
            _ => block_max,
        }
        .max(2);
        self.xfer = Some(Transfer {
            dir,
            source,
            dma,
            atapi,
            left: len,
            block_max,
            buf: Vec::new(),
            pos: 0,
        });
        if atapi && dir == Direction::Out {
            // The packet phase: CoD set, IO clear, no interrupt (ATA8-APT, PACKET protocol).
            self.tf.nsector = (self.tf.nsector & !0x07) | REASON_COD;
            self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
            // Sizing the packet buffer cannot fail.
            let _ = self.load_block();
            return Event::Block { irq: false };
        }
        if let Err(e) = self.load_block() {
            return e;
        }
        // ATA data-out waits for the host's first block without an interrupt; DMA runs when
        // the host's engine starts.
        let irq = !dma && (dir == Direction::In || atapi);
        Event::Block { irq }
    }

    /// Load the next block of the transfer: read it from the medium (data-in) or size the
    /// buffer for the host (data-out). ATAPI PIO blocks publish their byte count.
    fn load_block(&mut self) -> Result<(), Event> {
        let Some(x) = self.xfer.as_mut() else {
            return Ok(());
        };
        let n = x.left.min(x.block_max as u64) as usize;
        x.left -= n as u64;
        x.pos = 0;
        x.buf.clear();
        x.buf.resize(n, 0);
        let (atapi, dma, dir) = (x.atapi, x.dma, x.dir);
        let failed = match &mut x.source {
            Source::Reply { data, off } => {
                let end = off.saturating_add(n);
                if let Some(src) = data.get(*off..end) {
                    x.buf.copy_from_slice(src);
                }
                *off = end;
                None
            }
            Source::Read { offset } => {
                let res = self.media.as_ref().map(|m| m.read_at(*offset, &mut x.buf));
                *offset += n as u64;
                match res {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(e.to_string()),
                    None => Some("no medium".to_string()),
                }
            }
            Source::Write { .. } | Source::Packet => None,
        };
        if let Some(e) = failed {
            tracing::debug!("ATA: read failed: {e}");
            return Err(if atapi {
                self.atapi_read_error()
            } else {
                self.fail(ERROR_UNC)
            });
        }
        self.status = STATUS_DRDY | STATUS_DSC | STATUS_DRQ;
        if atapi && !dma && dir == Direction::In {
            let count = (n as u16).to_le_bytes();
            (self.tf.lba_mid, self.tf.lba_high) = (count[0], count[1]);
            self.tf.nsector = (self.tf.nsector & !0x07) | REASON_IO;
        }
        Ok(())
    }

    /// The current block is complete: consume it and go on.
    fn block_finished(&mut self) -> Event {
        let Some(x) = self.xfer.as_mut() else {
            return Event::Done { irq: false };
        };
        let (dir, atapi, dma, left) = (x.dir, x.atapi, x.dma, x.left);
        match &mut x.source {
            Source::Packet => {
                let mut cdb = [0u8; 12];
                let n = x.buf.len().min(12);
                cdb[..n].copy_from_slice(&x.buf[..n]);
                self.xfer = None;
                return self.packet_command(&cdb);
            }
            Source::Write { offset } => {
                let at = *offset;
                *offset += x.buf.len() as u64;
                let res = match &self.media {
                    Some(m) => m.write_at(at, &x.buf).and_then(|()| {
                        if left == 0 && !self.write_cache {
                            m.flush()
                        } else {
                            Ok(())
                        }
                    }),
                    None => Err(rvmm_block::BlockError::ReadOnly),
                };
                if let Err(e) = res {
                    tracing::debug!("ATA: write failed: {e}");
                    return self.abort();
                }
            }
            Source::Reply { .. } | Source::Read { .. } => {}
        }
        if left > 0 {
            if let Err(e) = self.load_block() {
                return e;
            }
            return Event::Block { irq: !dma };
        }
        self.xfer = None;
        if atapi {
            return self.atapi_ok();
        }
        self.status = STATUS_DRDY | STATUS_DSC;
        // PIO data-in ends without an interrupt: the last block's was the last one.
        Event::Done {
            irq: dma || dir == Direction::Out,
        }
    }

    pub(super) fn identity(&self) -> &DriveIdentity {
        &self.identity
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sectors,
    Multiple,
    Dma,
}

#[path = "ata_state.rs"]
mod state;
pub use state::AtaDriveState;

#[cfg(test)]
#[path = "ata_tests.rs"]
pub(crate) mod tests;
