//! An ATA/ATAPI drive in a snapshot: the task file, status and error, the settings SET FEATURES
//! and SET MULTIPLE changed, the ATAPI sense and tray state, and a data phase in progress with
//! its current block. Commands run to completion on the vCPU's access (PIO blocks, a bus-master
//! or AHCI DMA run), so no request is in flight in the host when the vCPUs are paused: what is
//! left is the drive waiting for the host's next PIO access, and that is what is saved. The
//! medium comes from the command line; its presence must match.

use super::{
    AtaDrive, Direction, DriveKind, Source, TaskFile, Transfer, DMA_BLOCK, MAX_MULT_SECTORS,
    MAX_REPLY,
};
use crate::storage::atapi::AtapiSaved;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SourceState {
    Reply { data: Vec<u8>, off: usize },
    Read { offset: u64 },
    Write { offset: u64 },
    Packet,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferState {
    /// Device to host.
    data_in: bool,
    source: SourceState,
    dma: bool,
    atapi: bool,
    left: u64,
    block_max: usize,
    buf: Vec<u8>,
    pos: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AtaDriveState {
    cdrom: bool,
    medium: bool,
    tf: TaskFile,
    status: u8,
    error: u8,
    mult_sectors: u8,
    write_cache: bool,
    dma_mode: (u8, u8),
    standby: bool,
    atapi: AtapiSaved,
    xfer: Option<TransferState>,
}

impl AtaDrive {
    pub fn save_state(&self) -> AtaDriveState {
        AtaDriveState {
            cdrom: self.kind == DriveKind::Cdrom,
            medium: self.media.is_some(),
            tf: self.tf,
            status: self.status,
            error: self.error,
            mult_sectors: self.mult_sectors,
            write_cache: self.write_cache,
            dma_mode: self.dma_mode,
            standby: self.standby,
            atapi: self.atapi.save(),
            xfer: self.xfer.as_ref().map(|x| TransferState {
                data_in: x.dir == Direction::In,
                source: match &x.source {
                    Source::Reply { data, off } => SourceState::Reply {
                        data: data.clone(),
                        off: *off,
                    },
                    Source::Read { offset } => SourceState::Read { offset: *offset },
                    Source::Write { offset } => SourceState::Write { offset: *offset },
                    Source::Packet => SourceState::Packet,
                },
                dma: x.dma,
                atapi: x.atapi,
                left: x.left,
                block_max: x.block_max,
                buf: x.buf.clone(),
                pos: x.pos,
            }),
        }
    }

    /// Become the saved drive. Sizes that index buffers are checked (the block, its position,
    /// a reply); medium offsets are checked by the medium on each access, as the guest's own.
    pub fn restore_state(&mut self, s: &AtaDriveState) -> Result<(), String> {
        let ours = self.kind == DriveKind::Cdrom;
        if s.cdrom != ours || s.medium != self.media.is_some() {
            return Err(format!(
                "a {} {} medium in the snapshot, a {} {} medium here",
                if s.cdrom { "CD-ROM" } else { "disk" },
                if s.medium { "with a" } else { "without a" },
                if ours { "CD-ROM" } else { "disk" },
                if self.media.is_some() {
                    "with a"
                } else {
                    "without a"
                },
            ));
        }
        if s.mult_sectors > MAX_MULT_SECTORS {
            return Err(format!("{} sectors per block", s.mult_sectors));
        }
        let xfer = match &s.xfer {
            None => None,
            Some(x) => {
                let fits = (2..=DMA_BLOCK).contains(&x.block_max)
                    && x.buf.len() <= x.block_max
                    && x.pos <= x.buf.len();
                let source = match &x.source {
                    SourceState::Reply { data, off } => {
                        if data.len() > MAX_REPLY || *off > data.len() {
                            return Err(format!("a {}-byte reply at {off}", data.len()));
                        }
                        Source::Reply {
                            data: data.clone(),
                            off: *off,
                        }
                    }
                    SourceState::Read { offset } => Source::Read { offset: *offset },
                    SourceState::Write { offset } => Source::Write { offset: *offset },
                    SourceState::Packet => Source::Packet,
                };
                if !fits {
                    return Err(format!(
                        "a transfer block of {} bytes at {} (at most {})",
                        x.buf.len(),
                        x.pos,
                        x.block_max
                    ));
                }
                Some(Transfer {
                    dir: if x.data_in {
                        Direction::In
                    } else {
                        Direction::Out
                    },
                    source,
                    dma: x.dma,
                    atapi: x.atapi,
                    left: x.left,
                    block_max: x.block_max,
                    buf: x.buf.clone(),
                    pos: x.pos,
                })
            }
        };
        self.tf = s.tf;
        self.status = s.status;
        self.error = s.error;
        self.mult_sectors = s.mult_sectors;
        self.write_cache = s.write_cache;
        self.dma_mode = s.dma_mode;
        self.standby = s.standby;
        self.atapi.restore(&s.atapi);
        self.xfer = xfer;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;
    use crate::storage::testing::MemBackend;
    use crate::storage::{DriveIdentity, Event, SECTOR_SIZE};
    use std::sync::Arc;

    /// A PIO read saved after its first block goes on, in another drive, with the same bytes.
    #[test]
    fn a_transfer_in_progress_goes_on_after_restore() {
        let b = Arc::new(MemBackend::patterned(64 * SECTOR_SIZE as usize));
        let mut d = AtaDrive::disk(b.clone(), DriveIdentity::qemu(1));
        {
            let t = d.regs_mut();
            t.nsector = 4;
            t.device = 0x40; // LBA 0, 4 sectors
        }
        let mut reference = AtaDrive::disk(b.clone(), DriveIdentity::qemu(1));
        *reference.regs_mut() = *d.regs_mut();
        let (_, expected) = run(&mut reference, 0x20, &[]); // READ SECTORS
        assert_eq!(expected.len(), 4 * SECTOR_SIZE as usize);
        let ev = d.execute(0x20);
        assert!(matches!(ev, Event::Block { .. }));
        let mut got = d.block().to_vec();
        let n = got.len();
        d.advance(n).unwrap();
        let saved = d.save_state();
        let json = serde_json::to_string(&saved).unwrap();
        let mut e = AtaDrive::disk(b.clone(), DriveIdentity::qemu(1));
        e.restore_state(&serde_json::from_str(&json).unwrap())
            .unwrap();
        while e.transfer().is_some() {
            got.extend_from_slice(e.block());
            let n = e.block().len();
            e.advance(n).unwrap();
        }
        assert_eq!(got, expected);

        let mut cd = AtaDrive::cdrom(None, DriveIdentity::qemu(2));
        assert!(cd.restore_state(&saved).unwrap_err().contains("CD-ROM"));
        let mut bad = saved.clone();
        if let Some(x) = bad.xfer.as_mut() {
            x.pos = x.buf.len() + 1;
        }
        assert!(e
            .restore_state(&bad)
            .unwrap_err()
            .contains("transfer block"));
        let mut bad = saved;
        bad.mult_sectors = 200;
        assert!(e.restore_state(&bad).is_err());
    }
}
