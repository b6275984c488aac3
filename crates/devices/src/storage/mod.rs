//! Storage controllers of QEMU's pc and q35 machines: the ICH9 AHCI HBA (q35, 00:1f.2) and the
//! PIIX3 IDE function (pc, 00:01.1), both driving one transport-independent ATA/ATAPI drive
//! model ([`AtaDrive`]: a disk, or a CD-ROM speaking MMC through PACKET).
//!
//! The drive sees its medium through [`BlockBackend`], implemented for rvmm's [`Disk`] (and a
//! `Mutex<Disk>`) so that unit tests can use memory instead.
//!
//! References: ATA/ATAPI-8 ACS (command set, IDENTIFY words), MMC-6 (CD/DVD commands), SPC-4
//! (sense data), Serial ATA AHCI 1.3.1, Intel PIIX3 and ICH9 datasheets; QEMU's hw/ide
//! (core.c, atapi.c, ahci.c, piix.c) for the values guests see on QEMU.

mod ahci;
mod ahci_port;
mod ata;
mod atapi;
mod ide;
mod identify;

pub use ahci::{Ahci, AhciError, MsiSender, AHCI_ABAR_SIZE, AHCI_IDP_SIZE, AHCI_PORTS};
pub use ata::{
    AtaDrive, AtaDriveState, Direction, DriveIdentity, DriveKind, Event, TaskFile, CD_SECTOR_SIZE,
    SECTOR_SIZE,
};
pub use ide::{
    IdeChannel, IdeError, PiixIde, IDE_BMDMA_SIZE, IDE_PRIMARY_CMD, IDE_PRIMARY_CTL,
    IDE_PRIMARY_IRQ, IDE_SECONDARY_CMD, IDE_SECONDARY_CTL, IDE_SECONDARY_IRQ,
};

use rvmm_block::{BlockError, Disk};
use std::sync::Mutex;

/// A drive's medium: a byte-addressed image of fixed size.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn readonly(&self) -> bool;
    /// Fill `buf` from byte `offset`; fails (never short-reads) past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Make earlier writes durable.
    fn flush(&self) -> Result<(), BlockError>;
}

impl BlockBackend for Disk {
    fn size(&self) -> u64 {
        Disk::size(self)
    }

    fn readonly(&self) -> bool {
        Disk::readonly(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.read(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.write(buf, offset)
    }

    fn flush(&self) -> Result<(), BlockError> {
        Disk::flush(self)
    }
}

/// The same disk shared with other users (virtio-blk keeps its `Disk` in a mutex too).
impl BlockBackend for Mutex<Disk> {
    fn size(&self) -> u64 {
        self.lock().unwrap_or_else(|e| e.into_inner()).size()
    }

    fn readonly(&self) -> bool {
        self.lock().unwrap_or_else(|e| e.into_inner()).readonly()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf, offset)
    }

    fn flush(&self) -> Result<(), BlockError> {
        self.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

#[cfg(test)]
pub(crate) mod testing;
