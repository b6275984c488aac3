//! The VGA register file in a snapshot: every register and latch as the guest left it. Values
//! come from a file: indices are checked against the arrays they select, and the VBE geometry
//! is clamped again by [`VgaRegs::vbe_fixup`], so a crafted state cannot make a render reach
//! past video memory.

use super::{VgaRegs, AR_COUNT, VBE_REGS};
use crate::StateError;
use serde::{Deserialize, Serialize};

/// [`VgaRegs`] as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VgaRegsState {
    pub msr: u8,
    pub fcr: u8,
    pub st01: u8,
    pub sr_index: u8,
    pub sr: [u8; 8],
    pub gr_index: u8,
    pub gr: [u8; 16],
    pub ar_index: u8,
    pub ar: Vec<u8>,
    pub ar_flip_flop: bool,
    pub cr_index: u8,
    pub cr: Vec<u8>,
    pub dac_state: u8,
    pub dac_sub_index: u8,
    pub dac_read_index: u8,
    pub dac_write_index: u8,
    pub dac_cache: [u8; 3],
    pub palette: Vec<u8>,
    pub dac_8bit: bool,
    pub latch: u32,
    pub vbe_index: u16,
    pub vbe: [u16; VBE_REGS],
    pub bank_offset: u32,
    pub bochs: bool,
}

impl VgaRegs {
    pub fn save(&self) -> VgaRegsState {
        VgaRegsState {
            msr: self.msr,
            fcr: self.fcr,
            st01: self.st01,
            sr_index: self.sr_index,
            sr: self.sr,
            gr_index: self.gr_index,
            gr: self.gr,
            ar_index: self.ar_index,
            ar: self.ar.to_vec(),
            ar_flip_flop: self.ar_flip_flop,
            cr_index: self.cr_index,
            cr: self.cr.to_vec(),
            dac_state: self.dac_state,
            dac_sub_index: self.dac_sub_index,
            dac_read_index: self.dac_read_index,
            dac_write_index: self.dac_write_index,
            dac_cache: self.dac_cache,
            palette: self.palette.to_vec(),
            dac_8bit: self.dac_8bit,
            latch: self.latch,
            vbe_index: self.vbe_index,
            vbe: self.vbe,
            bank_offset: self.bank_offset,
            bochs: self.bochs,
        }
    }

    /// Become the saved registers; the generation moves on so the next render redraws.
    pub fn restore(&mut self, s: VgaRegsState) -> Result<(), StateError> {
        let bad = |what: String| Err(StateError::Invalid(format!("VGA: {what}")));
        if s.bochs != self.bochs {
            return bad(format!(
                "a {} in the snapshot, a {} here",
                kind(s.bochs),
                kind(self.bochs)
            ));
        }
        if !s.bank_offset.is_multiple_of(0x10000) || s.bank_offset >= self.vram_size {
            return bad(format!("bank offset {:#x}", s.bank_offset));
        }
        if s.sr_index >= 8 || s.gr_index >= 16 || s.dac_sub_index >= 3 {
            return bad(format!(
                "register index out of range (sequencer {}, graphics {}, DAC component {})",
                s.sr_index, s.gr_index, s.dac_sub_index
            ));
        }
        let (Ok(ar), Ok(cr), Ok(palette)) = (
            <[u8; AR_COUNT]>::try_from(s.ar.as_slice()),
            <[u8; 256]>::try_from(s.cr.as_slice()),
            <[u8; 768]>::try_from(s.palette.as_slice()),
        ) else {
            return bad(format!(
                "{} attribute, {} CRTC and {} palette bytes (expected {AR_COUNT}, 256, 768)",
                s.ar.len(),
                s.cr.len(),
                s.palette.len()
            ));
        };
        self.msr = s.msr;
        self.fcr = s.fcr;
        self.st01 = s.st01;
        self.sr_index = s.sr_index;
        self.sr = s.sr;
        self.gr_index = s.gr_index;
        self.gr = s.gr;
        self.ar_index = s.ar_index;
        self.ar = ar;
        self.ar_flip_flop = s.ar_flip_flop;
        self.cr_index = s.cr_index;
        self.cr = cr;
        self.dac_state = s.dac_state;
        self.dac_sub_index = s.dac_sub_index;
        self.dac_read_index = s.dac_read_index;
        self.dac_write_index = s.dac_write_index;
        self.dac_cache = s.dac_cache;
        self.palette = palette;
        self.dac_8bit = s.dac_8bit;
        self.latch = s.latch;
        self.vbe_index = s.vbe_index;
        self.vbe = s.vbe;
        self.bank_offset = s.bank_offset;
        // The geometry is recomputed (and clamped), as the guest's own writes compute it.
        self.vbe_line_offset = 0;
        self.vbe_start = 0;
        self.vbe_fixup();
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }
}

fn kind(bochs: bool) -> &'static str {
    if bochs {
        "bochs-display"
    } else {
        "standard VGA"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::vram::Vram;

    #[test]
    fn registers_round_trip_and_bad_values_are_refused() {
        let vram = Vram::new(1 << 20).unwrap();
        let mut r = VgaRegs::new(1 << 20, false);
        r.port_write(0x3c4, 2);
        r.port_write(0x3c5, 0x0f);
        r.port_write(0x3c8, 7);
        for c in [1, 2, 3] {
            r.port_write(0x3c9, c);
        }
        r.vbe_write(false, super::super::VBE_XRES as u16, &vram);
        r.vbe_write(true, 640, &vram);
        let saved = r.save();
        let mut n = VgaRegs::new(1 << 20, false);
        n.restore(saved.clone()).unwrap();
        assert_eq!(n.sr, r.sr);
        assert_eq!(n.palette, r.palette);
        assert_eq!(n.vbe, r.vbe);
        assert_eq!(n.port_read(0x3c4), 2);
        let before = n.save();
        for edit in [
            (|s: &mut VgaRegsState| s.sr_index = 8) as fn(&mut VgaRegsState),
            |s| s.dac_sub_index = 3,
            |s| s.palette.pop().map(drop).unwrap_or(()),
            |s| s.cr.push(0),
            |s| s.bank_offset = 1 << 20,
            |s| s.bochs = true,
        ] {
            let mut bad = saved.clone();
            edit(&mut bad);
            assert!(n.restore(bad).is_err());
        }
        assert_eq!(
            n.save().palette,
            before.palette,
            "refused states change nothing"
        );
    }
}
