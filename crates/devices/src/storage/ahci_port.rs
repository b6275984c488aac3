//! One AHCI port (AHCI 1.3.1 section 3.3): its registers and the command engine that runs the
//! command list in guest memory against the port's [`AtaDrive`].
//!
//! Commands run synchronously when the guest writes PxCI: the command header (5.5), the H2D
//! register FIS and ATAPI command in the command table (4.2.3), the PRDT scatter/gather list,
//! then a PIO Setup FIS (for PIO data phases, E_Status carrying the final status as Linux
//! expects) and a D2H register FIS posted to the received-FIS area (4.2.1) when FRE is set.
//! Every guest address is checked by vm-memory; a table outside RAM fails the command with a
//! task-file error instead of touching anything.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ata::{AtaDrive, Direction, Event, ERROR_ABRT, STATUS_DRDY, STATUS_ERR};

// PxIS bits.
pub(super) const IS_DHRS: u32 = 1 << 0;
pub(super) const IS_PSS: u32 = 1 << 1;
pub(super) const IS_TFES: u32 = 1 << 30;
/// The interrupt status bits that exist (everything but reserved 8-21 and 25, 29 kept simple).
const IS_MASK: u32 = 0xfdc0_00ff;
/// PxIE writable bits.
const IE_MASK: u32 = 0xfdc0_00ff;

// PxCMD bits.
const CMD_ST: u32 = 1 << 0;
const CMD_SUD: u32 = 1 << 1;
const CMD_POD: u32 = 1 << 2;
const CMD_CLO: u32 = 1 << 3;
const CMD_FRE: u32 = 1 << 4;
const CMD_FR: u32 = 1 << 14;
const CMD_CR: u32 = 1 << 15;
/// Read-only bits of PxCMD (QEMU's `PORT_CMD_RO_MASK`).
const CMD_RO_MASK: u32 = 0x007d_ffe0;

/// SStatus with a device: DET 3 (present, PHY up), SPD 1 (Gen1), IPM 1 (active).
const SSTS_PRESENT: u32 = 0x113;
/// PxTFD / PxSIG with no device.
const TFD_NO_DEVICE: u32 = 0x7f;
const SIG_NO_DEVICE: u32 = 0xffff_ffff;

// Received-FIS area offsets (4.2.1).
const RFIS_PIO_SETUP: u64 = 0x20;
const RFIS_D2H: u64 = 0x40;
const FIS_H2D: u8 = 0x27;
const FIS_D2H: u8 = 0x34;
const FIS_PIO_SETUP: u8 = 0x5f;
/// Device control byte: software reset.
const CONTROL_SRST: u8 = 0x04;

/// The command table: CFIS at 0, ACMD at 0x40, PRDT at 0x80 (16-byte entries).
const CT_ACMD: u64 = 0x40;
const CT_PRDT: u64 = 0x80;

/// A port's registers and drive.
pub(super) struct Port {
    pub clb: u64,
    pub fb: u64,
    pub is: u32,
    pub ie: u32,
    pub cmd: u32,
    pub tfd: u32,
    pub sig: u32,
    pub ssts: u32,
    pub sctl: u32,
    pub serr: u32,
    pub sact: u32,
    pub ci: u32,
    pub drive: Option<AtaDrive>,
    /// The signature FIS after a reset waits for FIS receive to be enabled.
    pub init_d2h_pending: bool,
    /// A software reset (SRST in a control FIS) is asserted.
    pub srst: bool,
}

/// Why a DMA between the PRDT and a drive block failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DmaError {
    /// The PRDT describes fewer bytes than the command moves.
    Overflow,
    /// A PRD entry or buffer is outside guest RAM.
    Memory,
}

/// Walks a PRDT, one entry at a time.
struct PrdCursor {
    table: u64,
    entries: u16,
    next: u16,
    /// The current entry's address and bytes left in it.
    addr: u64,
    left: u64,
    /// Bytes moved so far (PRDBC).
    done: u64,
}

impl PrdCursor {
    fn new(table: u64, entries: u16) -> Self {
        Self {
            table,
            entries,
            next: 0,
            addr: 0,
            left: 0,
            done: 0,
        }
    }

    /// The next guest range (at most `want` bytes) to move.
    fn chunk(&mut self, mem: &GuestMemoryMmap, want: usize) -> Result<(u64, usize), DmaError> {
        while self.left == 0 {
            if self.next >= self.entries {
                return Err(DmaError::Overflow);
            }
            let at = self
                .table
                .checked_add(u64::from(self.next) * 16)
                .ok_or(DmaError::Memory)?;
            let mut e = [0u8; 16];
            mem.read_slice(&mut e, GuestAddress(at))
                .map_err(|_| DmaError::Memory)?;
            let dword = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            self.addr = (u64::from(dword(4)) << 32 | u64::from(dword(0))) & !1;
            self.left = u64::from(dword(12) & 0x003f_ffff) + 1;
            self.next += 1;
        }
        let n = self.left.min(want as u64) as usize;
        Ok((self.addr, n))
    }

    fn consume(&mut self, n: usize) {
        self.addr = self.addr.wrapping_add(n as u64);
        self.left -= n as u64;
        self.done += n as u64;
    }

    /// Copy `data` to guest memory.
    fn write(&mut self, mem: &GuestMemoryMmap, mut data: &[u8]) -> Result<(), DmaError> {
        while !data.is_empty() {
            let (addr, n) = self.chunk(mem, data.len())?;
            mem.write_slice(&data[..n], GuestAddress(addr))
                .map_err(|_| DmaError::Memory)?;
            self.consume(n);
            data = &data[n..];
        }
        Ok(())
    }

    /// Fill `data` from guest memory.
    fn read(&mut self, mem: &GuestMemoryMmap, mut data: &mut [u8]) -> Result<(), DmaError> {
        while !data.is_empty() {
            let (addr, n) = self.chunk(mem, data.len())?;
            let (head, tail) = data.split_at_mut(n);
            mem.read_slice(head, GuestAddress(addr))
                .map_err(|_| DmaError::Memory)?;
            self.consume(n);
            data = tail;
        }
        Ok(())
    }
}

fn dword(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Port {
    pub fn new(drive: Option<AtaDrive>) -> Self {
        let mut p = Self {
            clb: 0,
            fb: 0,
            is: 0,
            ie: 0,
            cmd: CMD_SUD | CMD_POD,
            tfd: TFD_NO_DEVICE,
            sig: SIG_NO_DEVICE,
            ssts: 0,
            sctl: 0,
            serr: 0,
            sact: 0,
            ci: 0,
            drive,
            init_d2h_pending: false,
            srst: false,
        };
        p.reset_port();
        p
    }

    /// HBA reset (GHC.HR, PCI reset): registers to their reset values, then a port reset.
    pub fn reset_hba(&mut self) {
        self.is = 0;
        self.ie = 0;
        self.sctl = 0;
        self.cmd = CMD_SUD | CMD_POD;
        self.reset_port();
    }

    /// COMRESET (QEMU's `ahci_reset_port`): the drive resets and signals its signature.
    pub fn reset_port(&mut self) {
        self.serr = 0;
        self.sact = 0;
        self.ci = 0;
        self.srst = false;
        match self.drive.as_mut() {
            Some(d) => {
                d.reset();
                self.ssts = SSTS_PRESENT;
                self.sig = d.signature();
                self.tfd = (u32::from(d.error()) << 8) | u32::from(d.status());
                self.init_d2h_pending = true;
            }
            None => {
                self.ssts = 0;
                self.sig = SIG_NO_DEVICE;
                self.tfd = TFD_NO_DEVICE;
                self.init_d2h_pending = false;
            }
        }
    }

    /// Post the signature FIS once FIS receive runs (QEMU's `ahci_init_d2h`).
    pub fn post_init_d2h(&mut self, mem: &GuestMemoryMmap) {
        if self.init_d2h_pending && self.cmd & CMD_FRE != 0 {
            self.init_d2h_pending = false;
            self.post_d2h(mem);
        }
    }

    /// Interrupt pending for the HBA's IS.
    pub fn pending(&self) -> bool {
        self.is & self.ie != 0
    }

    pub fn read(&self, reg: u64) -> u32 {
        match reg {
            0x00 => self.clb as u32,
            0x04 => (self.clb >> 32) as u32,
            0x08 => self.fb as u32,
            0x0c => (self.fb >> 32) as u32,
            0x10 => self.is,
            0x14 => self.ie,
            0x18 => self.cmd,
            0x20 => self.tfd,
            0x24 => self.sig,
            0x28 => self.ssts,
            0x2c => self.sctl,
            0x30 => self.serr,
            0x34 => self.sact,
            0x38 => self.ci,
            _ => 0,
        }
    }

    /// A register write; commands issued through PxCI run here.
    pub fn write(&mut self, mem: &GuestMemoryMmap, reg: u64, val: u32) {
        match reg {
            // The command list is 1 KiB aligned, the FIS area 256 bytes (4.2.1, 4.2.2).
            0x00 => self.clb = (self.clb & !0xffff_ffff) | u64::from(val & !0x3ff),
            0x04 => self.clb = (self.clb & 0xffff_ffff) | u64::from(val) << 32,
            0x08 => self.fb = (self.fb & !0xffff_ffff) | u64::from(val & !0xff),
            0x0c => self.fb = (self.fb & 0xffff_ffff) | u64::from(val) << 32,
            0x10 => self.is &= !val,
            0x14 => self.ie = val & IE_MASK,
            0x18 => self.write_cmd(mem, val),
            0x2c => {
                // DET 1 -> 0 ends a COMRESET.
                if self.sctl & 0xf == 1 && val & 0xf == 0 {
                    self.reset_port();
                    self.post_init_d2h(mem);
                }
                self.sctl = val;
            }
            0x30 => self.serr &= !val,
            0x34 => self.sact |= val,
            0x38 if self.cmd & CMD_ST != 0 => {
                self.ci |= val;
                self.run_commands(mem);
            }
            _ => {}
        }
    }

    fn write_cmd(&mut self, mem: &GuestMemoryMmap, val: u32) {
        self.cmd = (self.cmd & CMD_RO_MASK) | (val & !CMD_RO_MASK);
        if self.cmd & CMD_CLO != 0 {
            // Command list override: clear BSY and DRQ so a new command can be issued.
            self.tfd &= !0x88;
            self.cmd &= !CMD_CLO;
        }
        if self.cmd & CMD_ST != 0 {
            self.cmd |= CMD_CR;
        } else {
            // Stopping the engine drops every outstanding command (3.3.7).
            self.cmd &= !CMD_CR;
            self.ci = 0;
            self.sact = 0;
        }
        if self.cmd & CMD_FRE != 0 {
            self.cmd |= CMD_FR;
            self.post_init_d2h(mem);
        } else {
            self.cmd &= !CMD_FR;
        }
    }

    /// Run every issued slot, lowest first.
    fn run_commands(&mut self, mem: &GuestMemoryMmap) {
        for slot in 0..32 {
            if self.ci & (1 << slot) == 0 {
                continue;
            }
            self.run_slot(mem, slot);
            self.ci &= !(1 << slot);
            // SeaBIOS sets PxSACT for its non-queued commands too; nothing is outstanding now.
            self.sact &= !(1 << slot);
        }
    }

    /// A failed fetch of the command itself: report a task-file error.
    fn fetch_failed(&mut self) {
        self.tfd = (u32::from(ERROR_ABRT) << 8) | u32::from(STATUS_DRDY | STATUS_ERR);
        self.is |= IS_TFES;
    }

    fn run_slot(&mut self, mem: &GuestMemoryMmap, slot: u64) {
        let Some(header_at) = self.clb.checked_add(slot * 32) else {
            return self.fetch_failed();
        };
        let mut header = [0u8; 32];
        if mem
            .read_slice(&mut header, GuestAddress(header_at))
            .is_err()
        {
            return self.fetch_failed();
        }
        let opts = dword(&header, 0);
        let prdtl = (opts >> 16) as u16;
        let ctba = (u64::from(dword(&header, 12)) << 32 | u64::from(dword(&header, 8))) & !0x7f;
        let mut cfis = [0u8; 20];
        let mut acmd = [0u8; 12];
        if mem.read_slice(&mut cfis, GuestAddress(ctba)).is_err()
            || mem
                .read_slice(&mut acmd, GuestAddress(ctba.wrapping_add(CT_ACMD)))
                .is_err()
        {
            return self.fetch_failed();
        }
        if cfis[0] != FIS_H2D {
            tracing::debug!("AHCI: command FIS type {:#04x} ignored", cfis[0]);
            return;
        }
        if self.drive.is_none() {
            return;
        }
        if cfis[1] & 0x80 == 0 {
            return self.control_fis(mem, cfis[15]);
        }
        let mut prds = PrdCursor::new(ctba.wrapping_add(CT_PRDT), prdtl);
        let pio = self.execute(mem, &cfis, &acmd, &mut prds);
        // PRDBC: bytes moved (5.5.1, DW1).
        let _ = mem.write_slice(
            &(prds.done as u32).to_le_bytes(),
            GuestAddress(header_at.wrapping_add(4)),
        );
        if let Some(dir) = pio {
            self.post_pio_setup(mem, dir, prds.done);
        }
        self.post_d2h(mem);
    }

    /// Run the FIS's command on the drive and move its data; returns the direction of a PIO
    /// data phase if there was one (for the PIO Setup FIS).
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        cfis: &[u8; 20],
        acmd: &[u8; 12],
        prds: &mut PrdCursor,
    ) -> Option<Direction> {
        let d = self.drive.as_mut()?;
        let t = d.regs_mut();
        t.feature = cfis[3];
        t.lba_low = cfis[4];
        t.lba_mid = cfis[5];
        t.lba_high = cfis[6];
        t.device = cfis[7];
        t.hob_lba_low = cfis[8];
        t.hob_lba_mid = cfis[9];
        t.hob_lba_high = cfis[10];
        t.hob_feature = cfis[11];
        t.nsector = cfis[12];
        t.hob_nsector = cfis[13];
        let mut ev = d.execute(cfis[2]);
        if ev != (Event::Done { irq: true }) && ev != (Event::Done { irq: false }) {
            // The PACKET command's CDB comes from the command table, not through the PRDT.
            if d.transfer()
                .is_some_and(|t| t.atapi && t.dir == Direction::Out && t.left == 0)
                && d.block_mut().len() == 12
            {
                d.block_mut().copy_from_slice(acmd);
                ev = d.advance(12).unwrap_or(Event::Done { irq: false });
            }
        }
        let mut pio = None;
        while let Event::Block { .. } = ev {
            let Some(info) = d.transfer() else { break };
            if !info.dma {
                pio = Some(info.dir);
            }
            let n = info.block_left;
            let moved = match info.dir {
                Direction::In => prds.write(mem, d.block()),
                Direction::Out => prds.read(mem, d.block_mut()),
            };
            ev = match moved {
                Ok(()) => d.advance(n).unwrap_or(Event::Done { irq: false }),
                Err(e) => {
                    tracing::debug!("AHCI: DMA failed: {e:?}");
                    d.fail_transfer()
                }
            };
        }
        self.tfd = (u32::from(d.error()) << 8) | u32::from(d.status());
        pio
    }

    /// A control FIS (C bit clear): SRST asserts a software reset, its release ends it with the
    /// signature (ATA8-AST 11.4).
    fn control_fis(&mut self, mem: &GuestMemoryMmap, control: u8) {
        if control & CONTROL_SRST != 0 {
            self.srst = true;
            return;
        }
        if std::mem::take(&mut self.srst) {
            if let Some(d) = self.drive.as_mut() {
                d.reset();
                self.sig = d.signature();
                self.tfd = (u32::from(d.error()) << 8) | u32::from(d.status());
            }
            self.post_d2h(mem);
        }
    }

    /// The task-file fields both FIS types carry, from the drive's registers.
    fn fis_regs(&self, fis: &mut [u8; 20]) {
        if let Some(d) = &self.drive {
            let t = d.regs();
            fis[4] = t.lba_low;
            fis[5] = t.lba_mid;
            fis[6] = t.lba_high;
            fis[7] = t.device;
            fis[8] = t.hob_lba_low;
            fis[9] = t.hob_lba_mid;
            fis[10] = t.hob_lba_high;
            fis[12] = t.nsector;
            fis[13] = t.hob_nsector;
        }
    }

    fn post_d2h(&mut self, mem: &GuestMemoryMmap) {
        let mut fis = [0u8; 20];
        fis[0] = FIS_D2H;
        fis[1] = 0x40;
        fis[2] = self.tfd as u8;
        fis[3] = (self.tfd >> 8) as u8;
        self.fis_regs(&mut fis);
        self.post(mem, RFIS_D2H, &fis);
        self.is |= IS_DHRS;
        if self.tfd & u32::from(STATUS_ERR) != 0 {
            self.is |= IS_TFES;
        }
        self.is &= IS_MASK;
    }

    /// PIO Setup FIS: status with DRQ, E_Status the final status, the transfer count.
    fn post_pio_setup(&mut self, mem: &GuestMemoryMmap, dir: Direction, bytes: u64) {
        let status = self.tfd as u8;
        let mut fis = [0u8; 20];
        fis[0] = FIS_PIO_SETUP;
        // Interrupt; D for device-to-host data.
        fis[1] = 0x40 | if dir == Direction::In { 0x20 } else { 0 };
        fis[2] = if status & STATUS_ERR != 0 {
            status
        } else {
            status | 0x08
        };
        fis[3] = (self.tfd >> 8) as u8;
        self.fis_regs(&mut fis);
        fis[15] = status;
        fis[16..18].copy_from_slice(&(bytes.min(0xffff) as u16).to_le_bytes());
        self.post(mem, RFIS_PIO_SETUP, &fis);
        self.is |= IS_PSS;
    }

    fn post(&self, mem: &GuestMemoryMmap, offset: u64, fis: &[u8]) {
        if self.cmd & CMD_FRE == 0 {
            return;
        }
        if mem
            .write_slice(fis, GuestAddress(self.fb.wrapping_add(offset)))
            .is_err()
        {
            tracing::debug!("AHCI: received-FIS area {:#x} is outside RAM", self.fb);
        }
    }
}
