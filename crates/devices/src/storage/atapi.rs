//! The CD/DVD-ROM side of [`AtaDrive`]: MMC-6 commands arriving in ATAPI packets, sense data
//! (SPC-4 fixed format) and media-change reporting.
//!
//! The command set, the unit-attention rules (only REQUEST SENSE, INQUIRY, GET CONFIGURATION
//! and GET EVENT STATUS NOTIFICATION run while a unit attention is pending; MMC-6 4.1.6.1) and
//! the not-ready rules (commands that need a medium report NOT READY / MEDIUM NOT PRESENT
//! without one) follow QEMU's hw/ide/atapi.c `atapi_cmd_table`, as do the reply contents, so
//! Linux's sr_mod and udev's cdrom_id see what they see on QEMU.

use super::ata::{
    AtaDrive, Event, CD_SECTOR_SIZE, MAX_REPLY, REASON_COD, REASON_IO, STATUS_DRDY, STATUS_DSC,
    STATUS_ERR,
};

// Sense keys (SPC-4 4.5.6).
pub(crate) const SENSE_NOT_READY: u8 = 0x02;
pub(crate) const SENSE_MEDIUM_ERROR: u8 = 0x03;
pub(crate) const SENSE_ILLEGAL_REQUEST: u8 = 0x05;
pub(crate) const SENSE_UNIT_ATTENTION: u8 = 0x06;
pub(crate) const SENSE_ABORTED_COMMAND: u8 = 0x0b;

// Additional sense codes.
pub(crate) const ASC_UNRECOVERED_READ: u8 = 0x11;
pub(crate) const ASC_INVALID_OPCODE: u8 = 0x20;
pub(crate) const ASC_LBA_OUT_OF_RANGE: u8 = 0x21;
pub(crate) const ASC_INVALID_FIELD: u8 = 0x24;
pub(crate) const ASC_MEDIUM_CHANGED: u8 = 0x28;
pub(crate) const ASC_INCOMPATIBLE_FORMAT: u8 = 0x30;
pub(crate) const ASC_SAVING_NOT_SUPPORTED: u8 = 0x39;
pub(crate) const ASC_MEDIUM_NOT_PRESENT: u8 = 0x3a;
pub(crate) const ASC_REMOVAL_PREVENTED: u8 = 0x53;

/// MMC profiles (MMC-6 5.3.1).
pub(crate) const PROFILE_CD_ROM: u16 = 0x0008;
pub(crate) const PROFILE_DVD_ROM: u16 = 0x0010;
/// A medium bigger than an 80-minute CD is a DVD (QEMU's `CD_MAX_SECTORS`, in bytes).
const CD_MAX_BYTES: u64 = 80 * 60 * 75 * 2048;

/// Runs while a unit attention is pending.
const ALLOW_UA: u8 = 1;
/// Needs a medium.
const CHECK_READY: u8 = 2;

fn flags(opcode: u8) -> u8 {
    match opcode {
        0x03 | 0x12 | 0x46 | 0x4a => ALLOW_UA,
        0x00 | 0x25 | 0x28 | 0x2b | 0x43 | 0x51 | 0xa8 | 0xad | 0xbe => CHECK_READY,
        _ => 0,
    }
}

/// Sense data of the last failed command.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// ATAPI state beside the task file.
#[derive(Debug, Default)]
pub(crate) struct AtapiState {
    /// The PACKET command asked for DMA (features bit 0).
    pub dma: bool,
    /// Byte count limit of PIO data blocks (LBA mid/high at PACKET time).
    pub limit: u16,
    pub sense: Sense,
    /// QEMU's `cdrom_changed`: after a change, report not-ready once, then the change.
    changed: u8,
    /// A new-media event for GET EVENT STATUS NOTIFICATION.
    new_media: bool,
    tray_open: bool,
    tray_locked: bool,
}

/// [`AtapiState`] in a snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AtapiSaved {
    dma: bool,
    limit: u16,
    sense: Sense,
    changed: u8,
    new_media: bool,
    tray_open: bool,
    tray_locked: bool,
}

impl AtapiState {
    pub fn save(&self) -> AtapiSaved {
        AtapiSaved {
            dma: self.dma,
            limit: self.limit,
            sense: self.sense,
            changed: self.changed,
            new_media: self.new_media,
            tray_open: self.tray_open,
            tray_locked: self.tray_locked,
        }
    }

    pub fn restore(&mut self, s: &AtapiSaved) {
        self.dma = s.dma;
        self.limit = s.limit;
        self.sense = s.sense;
        self.changed = s.changed;
        self.new_media = s.new_media;
        self.tray_open = s.tray_open;
        self.tray_locked = s.tray_locked;
    }

    /// The PIO block size: the host's byte count limit, even, 0xfffe when it gave 0 or 0xffff.
    pub fn byte_limit(&self) -> usize {
        match self.limit {
            0 | 0xffff => 0xfffe,
            n => usize::from(n & !1).max(2),
        }
    }
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fn be32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// `lba` as minutes, seconds, frames, with the 2-second lead-in (MMC-6 6.26.2.4).
fn msf(lba: u64) -> [u8; 3] {
    let f = lba + 150;
    [((f / 75) / 60) as u8, ((f / 75) % 60) as u8, (f % 75) as u8]
}

impl AtaDrive {
    fn media_present(&self) -> bool {
        !self.atapi.tray_open && self.media_size() >= CD_SECTOR_SIZE
    }

    /// 2048-byte blocks of the medium.
    fn cd_blocks(&self) -> u64 {
        self.media_size() / CD_SECTOR_SIZE
    }

    fn current_profile(&self) -> u16 {
        match self.media_present() {
            false => 0,
            true if self.media_size() > CD_MAX_BYTES => PROFILE_DVD_ROM,
            true => PROFILE_CD_ROM,
        }
    }

    /// The medium was swapped (QEMU's `ide_cd_change_cb`).
    pub(super) fn media_changed(&mut self) {
        self.atapi.tray_open = false;
        self.atapi.changed = 1;
        self.atapi.new_media = true;
        self.atapi.sense = Sense {
            key: SENSE_UNIT_ATTENTION,
            asc: ASC_MEDIUM_CHANGED,
            ascq: 0,
        };
    }

    /// Good status: DRDY, IO|CoD (status phase); sense other than a unit attention is cleared.
    pub(super) fn atapi_ok(&mut self) -> Event {
        self.status = STATUS_DRDY | STATUS_DSC;
        self.error = 0;
        self.tf.nsector = (self.tf.nsector & !0x07) | REASON_IO | REASON_COD;
        if self.atapi.sense.key != SENSE_UNIT_ATTENTION {
            self.atapi.sense = Sense::default();
        }
        Event::Done { irq: true }
    }

    /// CHECK CONDITION: ERR, the sense key in the error register's high nibble.
    pub(super) fn atapi_error(&mut self, key: u8, asc: u8, ascq: u8) -> Event {
        self.status = STATUS_DRDY | STATUS_ERR;
        self.error = key << 4;
        self.tf.nsector = (self.tf.nsector & !0x07) | REASON_IO | REASON_COD;
        self.atapi.sense = Sense { key, asc, ascq };
        Event::Done { irq: true }
    }

    pub(super) fn atapi_read_error(&mut self) -> Event {
        if self.media_present() {
            self.atapi_error(SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ, 0)
        } else {
            self.atapi_error(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT, 0)
        }
    }

    fn invalid_field(&mut self) -> Event {
        self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD, 0)
    }

    /// Send `data` (at most `alloc` bytes of it) to the host.
    fn reply(&mut self, mut data: Vec<u8>, alloc: usize) -> Event {
        data.truncate(alloc.min(MAX_REPLY));
        if data.is_empty() {
            return self.atapi_ok();
        }
        self.reply_in(data, true)
    }

    /// Run one command packet.
    pub(super) fn packet_command(&mut self, cdb: &[u8; 12]) -> Event {
        let op = cdb[0];
        let f = flags(op);
        if self.atapi.sense.key == SENSE_UNIT_ATTENTION && f & ALLOW_UA == 0 {
            let s = self.atapi.sense;
            return self.atapi_error(s.key, s.asc, s.ascq);
        }
        if f & ALLOW_UA == 0 && self.media_present() && self.atapi.changed != 0 {
            // Guests that do not poll events see the tray open, then the new medium.
            if self.atapi.changed == 1 {
                self.atapi.changed = 2;
                return self.atapi_error(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT, 0);
            }
            self.atapi.changed = 0;
            return self.atapi_error(SENSE_UNIT_ATTENTION, ASC_MEDIUM_CHANGED, 0);
        }
        if f & CHECK_READY != 0 && !self.media_present() {
            return self.atapi_error(SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT, 0);
        }
        match op {
            0x00 => self.atapi_ok(),
            0x03 => self.request_sense(cdb),
            0x12 => self.inquiry(cdb),
            0x1b => self.start_stop(cdb),
            0x1e => {
                self.atapi.tray_locked = cdb[4] & 1 != 0;
                self.atapi_ok()
            }
            0x25 => {
                let last = self.cd_blocks().saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut r = last.to_be_bytes().to_vec();
                r.extend_from_slice(&(CD_SECTOR_SIZE as u32).to_be_bytes());
                self.reply(r, 8)
            }
            0x28 => self.cd_read(be32(cdb, 2), be16(cdb, 7) as u64),
            0xa8 => self.cd_read(be32(cdb, 2), be32(cdb, 6)),
            0xbe => self.read_cd(cdb),
            0x2b => {
                if be32(cdb, 2) >= self.cd_blocks() {
                    return self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, 0);
                }
                self.atapi_ok()
            }
            0x43 => self.read_toc(cdb),
            0x46 => self.get_configuration(cdb),
            0x4a => self.event_status(cdb),
            0x51 => self.disc_information(cdb),
            0x5a => self.mode_sense(cdb),
            0xad => self.dvd_structure(cdb),
            0xbb => self.atapi_ok(),
            0xbd => {
                let mut r = vec![0u8; 8];
                r[1] = u8::from(self.atapi.tray_open) << 4;
                r[5] = 1;
                self.reply(r, be16(cdb, 8))
            }
            _ => {
                tracing::debug!("ATAPI: unsupported packet command {op:#04x}");
                self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE, 0)
            }
        }
    }

    /// REQUEST SENSE: fixed-format sense (SPC-4 4.5.3); reporting it clears it.
    fn request_sense(&mut self, cdb: &[u8; 12]) -> Event {
        let s = self.atapi.sense;
        let mut r = vec![0u8; 18];
        r[0] = 0x70 | 0x80;
        r[2] = s.key;
        r[7] = 10;
        r[12] = s.asc;
        r[13] = s.ascq;
        self.atapi.sense = Sense::default();
        let alloc = usize::from(cdb[4]);
        r.truncate(alloc);
        if r.is_empty() {
            return self.atapi_ok();
        }
        self.reply_in(r, true)
    }

    /// INQUIRY: standard data as QEMU (hw/ide/atapi.c `cmd_inquiry`): "QEMU" / "QEMU DVD-ROM".
    fn inquiry(&mut self, cdb: &[u8; 12]) -> Event {
        if cdb[1] & 1 != 0 {
            // No vital product data pages.
            return self.invalid_field();
        }
        let mut r = vec![b' '; 36];
        r[0] = 0x05;
        r[1] = 0x80;
        r[2] = 0x00;
        r[3] = 0x21;
        r[4] = 31;
        r[5..8].fill(0);
        let mut put = |at: usize, len: usize, s: &str| {
            for (dst, src) in r[at..at + len].iter_mut().zip(s.bytes()) {
                *dst = src;
            }
        };
        put(8, 8, "QEMU");
        put(16, 16, "QEMU DVD-ROM");
        let fw = self.identity().firmware.clone();
        put(32, 4, &fw);
        self.reply(r, usize::from(cdb[4]))
    }

    fn start_stop(&mut self, cdb: &[u8; 12]) -> Event {
        let (start, loej) = (cdb[4] & 1 != 0, cdb[4] & 2 != 0);
        if cdb[4] & 0xf0 != 0 || !loej {
            // Power conditions and plain start/stop change nothing here.
            return self.atapi_ok();
        }
        if !start && !self.atapi.tray_open && self.atapi.tray_locked {
            let key = if self.media.is_some() {
                SENSE_NOT_READY
            } else {
                SENSE_ILLEGAL_REQUEST
            };
            return self.atapi_error(key, ASC_REMOVAL_PREVENTED, 2);
        }
        if self.atapi.tray_open == start {
            self.atapi.tray_open = !start;
            if start && self.media.is_some() {
                self.atapi.new_media = true;
            }
        }
        self.atapi_ok()
    }

    fn cd_read(&mut self, lba: u64, count: u64) -> Event {
        if count == 0 {
            return self.atapi_ok();
        }
        match lba.checked_add(count) {
            Some(end) if end <= self.cd_blocks() => {
                self.start_read(lba * CD_SECTOR_SIZE, count * CD_SECTOR_SIZE)
            }
            _ => self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, 0),
        }
    }

    /// READ CD: user data only (no raw 2352-byte sectors).
    fn read_cd(&mut self, cdb: &[u8; 12]) -> Event {
        let count = u64::from(u32::from_be_bytes([0, cdb[6], cdb[7], cdb[8]]));
        match cdb[9] & 0xf8 {
            0x00 => self.atapi_ok(),
            0x10 => self.cd_read(be32(cdb, 2), count),
            _ => self.invalid_field(),
        }
    }

    /// READ TOC/PMA/ATIP formats 0 (TOC) and 1 (session info), one data track.
    fn read_toc(&mut self, cdb: &[u8; 12]) -> Event {
        let alloc = be16(cdb, 7);
        let msf_form = cdb[1] & 0x02 != 0;
        // MMC's format field, or the older one in the control byte (SFF-8020).
        let format = match cdb[2] & 0x0f {
            0 => cdb[9] >> 6,
            f => f,
        };
        let address = |lba: u64| -> [u8; 4] {
            if msf_form {
                let m = msf(lba);
                [0, m[0], m[1], m[2]]
            } else {
                (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
            }
        };
        let mut r = vec![0u8; 4];
        match format {
            0 => {
                let start = cdb[6];
                if start > 1 && start != 0xaa {
                    return self.invalid_field();
                }
                r[2] = 1;
                r[3] = 1;
                if start <= 1 {
                    r.extend_from_slice(&[0, 0x14, 1, 0]);
                    r.extend_from_slice(&address(0));
                }
                r.extend_from_slice(&[0, 0x16, 0xaa, 0]);
                r.extend_from_slice(&address(self.cd_blocks()));
            }
            1 => {
                r[2] = 1;
                r[3] = 1;
                r.extend_from_slice(&[0, 0x14, 1, 0]);
                r.extend_from_slice(&address(0));
            }
            _ => return self.invalid_field(),
        }
        let len = (r.len() - 2) as u16;
        r[0..2].copy_from_slice(&len.to_be_bytes());
        self.reply(r, alloc)
    }

    /// GET CONFIGURATION: features 0 (profile list), 1 (core), 2 (morphing), 3 (removable
    /// medium); RT 0 (all from the start), 1 (current from the start), 2 (exactly that one).
    fn get_configuration(&mut self, cdb: &[u8; 12]) -> Event {
        let rt = cdb[1] & 0x03;
        let start = be16(cdb, 2);
        let alloc = be16(cdb, 7);
        if rt == 3 {
            return self.invalid_field();
        }
        let profile = self.current_profile();
        let mut r = vec![0u8; 8];
        r[6..8].copy_from_slice(&profile.to_be_bytes());
        let mut features: Vec<(usize, Vec<u8>)> = Vec::new();
        let current = |p: u16| u8::from(profile == p);
        // Profile list: version 0, persistent, current.
        features.push((
            0,
            vec![
                0,
                0,
                0x03,
                8,
                (PROFILE_DVD_ROM >> 8) as u8,
                PROFILE_DVD_ROM as u8,
                current(PROFILE_DVD_ROM),
                0,
                (PROFILE_CD_ROM >> 8) as u8,
                PROFILE_CD_ROM as u8,
                current(PROFILE_CD_ROM),
                0,
            ],
        ));
        // Core: version 2, physical interface ATAPI (2).
        features.push((1, vec![0, 1, 0x0b, 8, 0, 0, 0, 2, 0, 0, 0, 0]));
        // Morphing: version 1, OCEvent (operational change events through GESN).
        features.push((2, vec![0, 2, 0x07, 4, 0x02, 0, 0, 0]));
        // Removable medium: tray loading, eject, lock.
        features.push((3, vec![0, 3, 0x0b, 4, 0x29, 0, 0, 0]));
        for (code, body) in features {
            let wanted = match rt {
                2 => code == start,
                _ => code >= start,
            };
            if wanted {
                r.extend_from_slice(&body);
            }
        }
        let len = (r.len() - 4) as u32;
        r[0..4].copy_from_slice(&len.to_be_bytes());
        self.reply(r, alloc)
    }

    /// GET EVENT STATUS NOTIFICATION, polled only, media class only (as QEMU).
    fn event_status(&mut self, cdb: &[u8; 12]) -> Event {
        if cdb[1] & 0x01 == 0 {
            return self.invalid_field();
        }
        let alloc = be16(cdb, 7);
        const MEDIA_CLASS: u8 = 4;
        let mut r = vec![0u8; 4];
        r[3] = 1 << MEDIA_CLASS;
        if cdb[4] & (1 << MEDIA_CLASS) != 0 {
            r[2] = MEDIA_CLASS;
            let status = if self.atapi.tray_open {
                0x01
            } else if self.media.is_some() {
                0x02
            } else {
                0
            };
            let mut code = 0;
            if !self.atapi.tray_open && self.atapi.new_media {
                code = 2;
                self.atapi.new_media = false;
            }
            r.extend_from_slice(&[code, status, 0, 0]);
        } else {
            // No event available.
            r[2] = 0x80;
        }
        let len = (r.len() - 4) as u16;
        r[0..2].copy_from_slice(&len.to_be_bytes());
        self.reply(r, alloc)
    }

    /// READ DISC INFORMATION: a finalized single-session disc (as QEMU).
    fn disc_information(&mut self, cdb: &[u8; 12]) -> Event {
        if cdb[1] & 0x07 != 0 {
            return self.invalid_field();
        }
        let mut r = vec![0u8; 34];
        r[1] = 32;
        r[2] = 0x0e;
        r[3] = 1;
        r[4] = 1;
        r[5] = 1;
        r[6] = 1;
        r[7] = 0x20;
        self.reply(r, be16(cdb, 7))
    }

    /// MODE SENSE(10): pages 01h, 0Eh, 2Ah, or 3Fh for all of them; current values only.
    fn mode_sense(&mut self, cdb: &[u8; 12]) -> Event {
        let alloc = be16(cdb, 7);
        let (control, code) = (cdb[2] >> 6, cdb[2] & 0x3f);
        match control {
            0 => {}
            3 => return self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED, 0),
            _ => return self.invalid_field(),
        }
        let mut r = vec![0, 0, 0x70, 0, 0, 0, 0, 0];
        let error_recovery = [0x01, 0x06, 0x00, 0x05, 0, 0, 0, 0];
        let audio = {
            let mut p = [0u8; 16];
            p[0] = 0x0e;
            p[1] = 14;
            p
        };
        let capabilities = {
            let mut p = [0u8; 22];
            p[0] = 0x2a;
            p[1] = 20;
            // Reads CD-R/RW, DVD-ROM/R/RAM; audio play, composite, digital ports, multisession.
            p[2] = 0x3b;
            p[4] = 0x71;
            p[5] = 3 << 5;
            // Lock supported, eject, tray loading; the lock state.
            p[6] = (1 << 0) | (1 << 3) | (1 << 5) | (u8::from(self.atapi.tray_locked) << 1);
            p[8..10].copy_from_slice(&704u16.to_be_bytes());
            p[11] = 2;
            p[12..14].copy_from_slice(&512u16.to_be_bytes());
            p[14..16].copy_from_slice(&704u16.to_be_bytes());
            p
        };
        match code {
            0x01 => r.extend_from_slice(&error_recovery),
            0x0e => r.extend_from_slice(&audio),
            0x2a => r.extend_from_slice(&capabilities),
            0x3f => {
                r.extend_from_slice(&error_recovery);
                r.extend_from_slice(&audio);
                r.extend_from_slice(&capabilities);
            }
            _ => return self.invalid_field(),
        }
        let len = (r.len() - 2) as u16;
        r[0..2].copy_from_slice(&len.to_be_bytes());
        self.reply(r, alloc)
    }

    /// READ DVD STRUCTURE: physical format (0), copyright (1) and the list (FFh) of a DVD.
    fn dvd_structure(&mut self, cdb: &[u8; 12]) -> Event {
        let alloc = be16(cdb, 8);
        let (media, format) = (cdb[1], cdb[7]);
        if format != 0xff && self.current_profile() != PROFILE_DVD_ROM {
            return self.atapi_error(SENSE_ILLEGAL_REQUEST, ASC_INCOMPATIBLE_FORMAT, 2);
        }
        if media != 0 {
            return self.invalid_field();
        }
        let r = match format {
            0x00 => {
                if cdb[6] != 0 {
                    return self.invalid_field();
                }
                let last = (self.cd_blocks().saturating_sub(1)).min(u64::from(u32::MAX)) as u32;
                let mut r = vec![0u8; 2048 + 4];
                r[0..2].copy_from_slice(&(2048u16 + 2).to_be_bytes());
                r[4] = 1;
                r[5] = 0x0f;
                r[6] = 1;
                r[12..16].copy_from_slice(&last.to_be_bytes());
                r[16..20].copy_from_slice(&last.to_be_bytes());
                r
            }
            0x01 => vec![0, 6, 0, 0, 0, 0, 0, 0],
            0xff => {
                let mut r = vec![0u8; 12];
                r[0..2].copy_from_slice(&10u16.to_be_bytes());
                r[4] = 0x00;
                r[5] = 0x40;
                r[6..8].copy_from_slice(&(2048u16 + 4).to_be_bytes());
                r[8] = 0x01;
                r[9] = 0x40;
                r[10..12].copy_from_slice(&8u16.to_be_bytes());
                r
            }
            _ => return self.invalid_field(),
        };
        self.reply(r, alloc)
    }
}

#[cfg(test)]
#[path = "atapi_tests.rs"]
mod tests;
