//! IDENTIFY DEVICE and IDENTIFY PACKET DEVICE data (ACS-3 7.12.7, 7.13.6), with the values
//! QEMU's hw/ide/core.c (`ide_identify`, `ide_atapi_identify`) gives.

use super::ata::{AtaDrive, MAX_MULT_SECTORS};

/// QEMU's guess for an LBA disk (hw/block/hd-geometry.c): 16 heads, 63 sectors per track,
/// cylinders capped at 16383.
pub(super) fn geometry(sectors: u64) -> (u64, u64, u64) {
    let cyls = (sectors / (16 * 63)).clamp(1, 16383);
    (cyls, 16, 63)
}

/// An ATA string: space padded, the two characters of each word swapped (ACS-3 3.4.9).
fn put_string(words: &mut [u8], first_word: usize, len_words: usize, s: &str) {
    let bytes = s.as_bytes();
    for i in 0..len_words * 2 {
        let c = bytes.get(i).copied().unwrap_or(b' ');
        if let Some(b) = words.get_mut(first_word * 2 + (i ^ 1)) {
            *b = c;
        }
    }
}

fn put_word(words: &mut [u8], index: usize, value: u16) {
    if let Some(w) = words.get_mut(index * 2..index * 2 + 2) {
        w.copy_from_slice(&value.to_le_bytes());
    }
}

/// IDENTIFY DEVICE (ACS-3 7.12.7) as QEMU's `ide_identify`.
pub(super) fn identify_disk(d: &AtaDrive) -> Vec<u8> {
    let mut w = vec![0u8; 512];
    let sectors = d.sectors();
    let (cyls, heads, spt) = geometry(sectors);
    let id = d.identity();
    put_word(&mut w, 0, 0x0040);
    put_word(&mut w, 1, cyls as u16);
    put_word(&mut w, 3, heads as u16);
    put_word(&mut w, 4, (512 * spt) as u16);
    put_word(&mut w, 5, 512);
    put_word(&mut w, 6, spt as u16);
    put_string(&mut w, 10, 10, &id.serial);
    put_word(&mut w, 20, 3);
    put_word(&mut w, 21, 512);
    put_word(&mut w, 22, 4);
    put_string(&mut w, 23, 4, &id.firmware);
    put_string(
        &mut w,
        27,
        20,
        id.model.as_deref().unwrap_or("QEMU HARDDISK"),
    );
    put_word(&mut w, 47, 0x8000 | u16::from(MAX_MULT_SECTORS));
    put_word(&mut w, 48, 1);
    // DMA, LBA, IORDY.
    put_word(&mut w, 49, (1 << 11) | (1 << 9) | (1 << 8));
    put_word(&mut w, 50, 0x4000);
    put_word(&mut w, 51, 0x200);
    put_word(&mut w, 52, 0x200);
    // Words 54-58, 64-70 and 88 are valid.
    put_word(&mut w, 53, 0x7);
    put_word(&mut w, 54, cyls as u16);
    put_word(&mut w, 55, heads as u16);
    put_word(&mut w, 56, spt as u16);
    let chs = (cyls * heads * spt) as u32;
    put_word(&mut w, 57, chs as u16);
    put_word(&mut w, 58, (chs >> 16) as u16);
    if d.mult_sectors != 0 {
        put_word(&mut w, 59, 0x100 | u16::from(d.mult_sectors));
    }
    let lba28 = sectors.min(0x0fff_ffff) as u32;
    put_word(&mut w, 60, lba28 as u16);
    put_word(&mut w, 61, (lba28 >> 16) as u16);
    let selected = |class: u8| {
        if d.dma_mode.0 == class {
            1u16 << (8 + d.dma_mode.1)
        } else {
            0
        }
    };
    put_word(&mut w, 62, 0x07);
    put_word(&mut w, 63, 0x07 | selected(0x20));
    put_word(&mut w, 64, 0x03);
    for i in 65..=68 {
        put_word(&mut w, i, 120);
    }
    // ATA/ATAPI-4 to 7; ACS conformance minor version (ATA/ATAPI-5 T13 1321D rev 3).
    put_word(&mut w, 80, 0xf0);
    put_word(&mut w, 81, 0x16);
    // 82: NOP, write cache. 83: valid, FLUSH CACHE EXT, FLUSH CACHE, 48-bit.
    put_word(&mut w, 82, (1 << 14) | (1 << 5));
    put_word(&mut w, 83, (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10));
    put_word(&mut w, 84, 1 << 14);
    put_word(&mut w, 85, (1 << 14) | (u16::from(d.write_cache) << 5));
    put_word(&mut w, 86, (1 << 13) | (1 << 12) | (1 << 10));
    put_word(&mut w, 87, 1 << 14);
    put_word(&mut w, 88, 0x3f | selected(0x40));
    put_word(&mut w, 93, 1 | (1 << 14) | 0x2000);
    for (i, word) in (100..=103).enumerate() {
        put_word(&mut w, word, (sectors >> (16 * i)) as u16);
    }
    w
}

/// IDENTIFY PACKET DEVICE (ACS-3 7.13) as QEMU's `ide_atapi_identify` with DMA.
pub(super) fn identify_packet(d: &AtaDrive) -> Vec<u8> {
    let mut w = vec![0u8; 512];
    let id = d.identity();
    // ATAPI, CD-ROM, removable, DRQ within 50 us, 12-byte packets.
    put_word(&mut w, 0, (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5));
    put_string(&mut w, 10, 10, &id.serial);
    put_word(&mut w, 20, 3);
    put_word(&mut w, 21, 512);
    put_word(&mut w, 22, 4);
    put_string(&mut w, 23, 4, &id.firmware);
    put_string(
        &mut w,
        27,
        20,
        id.model.as_deref().unwrap_or("QEMU DVD-ROM"),
    );
    put_word(&mut w, 48, 1);
    put_word(&mut w, 49, (1 << 9) | (1 << 8));
    put_word(&mut w, 53, 7);
    put_word(&mut w, 62, 7);
    let selected = |class: u8| {
        if d.dma_mode.0 == class {
            1u16 << (8 + d.dma_mode.1)
        } else {
            0
        }
    };
    put_word(&mut w, 63, 7 | selected(0x20));
    put_word(&mut w, 64, 0x3f);
    put_word(&mut w, 65, 0xb4);
    put_word(&mut w, 66, 0xb4);
    put_word(&mut w, 67, 0x12c);
    put_word(&mut w, 68, 0xb4);
    put_word(&mut w, 71, 30);
    put_word(&mut w, 72, 30);
    put_word(&mut w, 80, 0x1e);
    put_word(&mut w, 88, 0x3f | selected(0x40));
    w
}
