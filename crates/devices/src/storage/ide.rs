//! PIIX3 IDE (Intel 82371SB function 1; QEMU's `piix3-ide`, hw/ide/piix.c): two legacy ATA
//! channels at fixed ports in compatibility mode, each with a master and a slave
//! [`AtaDrive`], and bus-master DMA (SFF-8038i) through BAR4.
//!
//! Ports (ATA8-APT register map): primary command block 0x1f0-0x1f7 and control block 0x3f6
//! (alternate status / device control) on ISA IRQ 14; secondary 0x170-0x177 and 0x376 on IRQ 15.
//! The PCI function (00:01.1, 8086:7010, class 01/01 prog-if 0x80: both channels in
//! compatibility mode, bus master capable) has only BAR4, 16 bytes of I/O: per channel the BM
//! command (+0), status (+2) and PRD table address (+4).
//!
//! As on real hardware, writes to the task-file registers reach both devices of a channel and
//! the device register's DEV bit selects which one answers. A device interrupts (INTRQ) unless
//! nIEN is set; reading the status register acknowledges it. The ISA line is edge-triggered:
//! the eventfd is pulsed on each rising INTRQ.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::ata::{AtaDrive, Direction, Event, TaskFile};
use super::BlockBackend;
use crate::interrupt::{InterruptError, IrqLine};
use crate::pci::{
    BarChange, BarKind, BarSpec, PciConfig, PciConfigError, PciDevice, PciIdentity, PciRegion,
    PciSpace, PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::BusDevice;

/// Primary channel command block (8 ports).
pub const IDE_PRIMARY_CMD: u64 = 0x1f0;
/// Primary channel control block (1 port).
pub const IDE_PRIMARY_CTL: u64 = 0x3f6;
pub const IDE_PRIMARY_IRQ: u32 = 14;
pub const IDE_SECONDARY_CMD: u64 = 0x170;
pub const IDE_SECONDARY_CTL: u64 = 0x376;
pub const IDE_SECONDARY_IRQ: u32 = 15;
/// BAR4 size: two channels of 8 bus-master registers.
pub const IDE_BMDMA_SIZE: u64 = 16;

const PCI_VENDOR_ID_INTEL: u16 = 0x8086;
const PCI_DEVICE_ID_PIIX3_IDE: u16 = 0x7010;
const BMDMA_BAR: u8 = 4;

/// Device control register bits.
const CONTROL_NIEN: u8 = 0x02;
const CONTROL_SRST: u8 = 0x04;
const CONTROL_HOB: u8 = 0x80;
/// Device register: DEV (slave select); bits 7 and 5 read as one (obsolete, QEMU sets them).
const DEVICE_DEV: u8 = 0x10;
const DEVICE_OBSOLETE: u8 = 0xa0;

// Bus-master command and status bits (SFF-8038i).
const BM_CMD_START: u8 = 0x01;
const BM_CMD_WRITE_TO_MEMORY: u8 = 0x08;
const BM_STATUS_ACTIVE: u8 = 0x01;
const BM_STATUS_ERROR: u8 = 0x02;
const BM_STATUS_INT: u8 = 0x04;
/// Drive 0/1 DMA capable: software-settable status bits.
const BM_STATUS_CAPABLE: u8 = 0x60;
/// The PRD table must not run past a 4 KiB page (QEMU's fail-safe too).
const BM_PRD_TABLE_MAX: u64 = 4096;

/// Errors building the function or attaching drives.
#[derive(Debug, thiserror::Error)]
pub enum IdeError {
    #[error("IDE position {channel}.{unit} does not exist (channels 0-1, units 0-1)")]
    NoSuchPosition { channel: usize, unit: usize },
    #[error("PIIX IDE PCI configuration space")]
    Config(#[from] PciConfigError),
}

/// Bus-master registers of one channel.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct BusMaster {
    cmd: u8,
    status: u8,
    prd: u32,
}

struct ChannelState {
    drives: [Option<AtaDrive>; 2],
    /// The registers as the host last wrote them, for absent devices.
    latch: TaskFile,
    /// Selected unit (DEV bit).
    unit: usize,
    control: u8,
    /// INTRQ is asserted and not yet acknowledged by a status read.
    irq_level: bool,
    bm: BusMaster,
}

/// One legacy channel: the [`BusDevice`] of its command block (8 ports).
pub struct IdeChannel {
    state: Mutex<ChannelState>,
    mem: GuestMemoryMmap,
    irq: OnceLock<EventFd>,
}

/// A channel's control block (alternate status / device control, 1 port).
struct IdeControl(Arc<IdeChannel>);

/// BAR4: both channels' bus-master registers.
struct BmdmaRegion([Arc<IdeChannel>; 2]);

impl IdeChannel {
    fn new(mem: GuestMemoryMmap) -> Self {
        Self {
            state: Mutex::new(ChannelState {
                drives: [None, None],
                latch: TaskFile::default(),
                unit: 0,
                control: 0,
                irq_level: false,
                bm: BusMaster::default(),
            }),
            mem,
            irq: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raise INTRQ: pulse the edge line on the rising edge unless nIEN masks it. The bus master
    /// sees the line too and latches its interrupt bit (QEMU's `bmdma_irq`), which Linux's
    /// BMDMA interrupt handler checks even for commands that ended without data.
    fn raise(&self, st: &mut ChannelState) {
        if st.control & CONTROL_NIEN != 0 {
            return;
        }
        st.bm.status |= BM_STATUS_INT;
        if st.irq_level {
            return;
        }
        st.irq_level = true;
        if let Some(evt) = self.irq.get() {
            // A full counter still means "raised".
            let _ = evt.write(1);
        }
    }

    /// Act on a drive's event: interrupt, and run a DMA the bus master is ready for.
    fn handle(&self, st: &mut ChannelState, ev: Event) {
        match ev {
            Event::Done { irq } => {
                if irq {
                    self.raise(st);
                }
            }
            Event::Block { irq } => {
                if irq {
                    self.raise(st);
                }
                if st.bm.cmd & BM_CMD_START != 0 {
                    self.run_dma(st);
                }
            }
        }
    }

    fn read_reg(&self, reg: u64, data: &mut [u8]) {
        let mut st = self.lock();
        let unit = st.unit;
        if reg == 0 {
            let ev = st.drives[unit].as_mut().and_then(|d| d.pio_read(data));
            if st.drives[unit].is_none() {
                data.fill(0xff);
            }
            if let Some(ev) = ev {
                self.handle(&mut st, ev);
            }
            return;
        }
        let hob = st.control & CONTROL_HOB != 0;
        let (tf, status, error) = match &st.drives[unit] {
            Some(d) => (*d.regs(), d.status(), d.error()),
            None => (st.latch, 0, 0),
        };
        let value = match reg {
            1 => error,
            2 if hob => tf.hob_nsector,
            2 => tf.nsector,
            3 if hob => tf.hob_lba_low,
            3 => tf.lba_low,
            4 if hob => tf.hob_lba_mid,
            4 => tf.lba_mid,
            5 if hob => tf.hob_lba_high,
            5 => tf.lba_high,
            6 => tf.device | DEVICE_OBSOLETE,
            7 => {
                st.irq_level = false;
                // An absent device, or a channel without devices, reads status 0 as on QEMU
                // (hw/ide/core.c `ide_ioport_read`), so firmware does not wait out BSY.
                status
            }
            _ => 0xff,
        };
        data.fill(0);
        data[0] = value;
    }

    fn write_reg(&self, reg: u64, data: &[u8]) {
        let mut st = self.lock();
        let Some(&value) = data.first() else { return };
        if reg == 0 {
            let unit = st.unit;
            if let Some(ev) = st.drives[unit].as_mut().and_then(|d| d.pio_write(data)) {
                self.handle(&mut st, ev);
            }
            return;
        }
        if reg == 7 {
            let unit = st.unit;
            st.irq_level = false;
            let Some(d) = st.drives[unit].as_mut() else {
                return;
            };
            let ev = d.execute(value);
            self.handle(&mut st, ev);
            return;
        }
        // The control register's HOB is cleared by any task-file write (ATA8-APT 6.2.2.3).
        st.control &= !CONTROL_HOB;
        let l = &mut st.latch;
        let shift = |cur: &mut u8, hob: &mut u8| {
            *hob = *cur;
            *cur = value;
        };
        match reg {
            1 => shift(&mut l.feature, &mut l.hob_feature),
            2 => shift(&mut l.nsector, &mut l.hob_nsector),
            3 => shift(&mut l.lba_low, &mut l.hob_lba_low),
            4 => shift(&mut l.lba_mid, &mut l.hob_lba_mid),
            5 => shift(&mut l.lba_high, &mut l.hob_lba_high),
            6 => {
                l.device = value & !DEVICE_OBSOLETE;
                st.unit = usize::from(value & DEVICE_DEV != 0);
            }
            _ => return,
        }
        let latch = st.latch;
        for d in st.drives.iter_mut().flatten() {
            let t = d.regs_mut();
            match reg {
                1 => (t.feature, t.hob_feature) = (latch.feature, latch.hob_feature),
                2 => (t.nsector, t.hob_nsector) = (latch.nsector, latch.hob_nsector),
                3 => (t.lba_low, t.hob_lba_low) = (latch.lba_low, latch.hob_lba_low),
                4 => (t.lba_mid, t.hob_lba_mid) = (latch.lba_mid, latch.hob_lba_mid),
                5 => (t.lba_high, t.hob_lba_high) = (latch.lba_high, latch.hob_lba_high),
                _ => t.device = latch.device,
            }
        }
    }

    /// Device control: nIEN, SRST (a 0 -> 1 -> 0 pulse resets both devices), HOB.
    fn write_control(&self, value: u8) {
        let mut st = self.lock();
        let was = st.control;
        st.control = value;
        if was & CONTROL_SRST != 0 && value & CONTROL_SRST == 0 {
            for d in st.drives.iter_mut().flatten() {
                d.reset();
            }
            st.unit = 0;
            // An absent device's registers read as QEMU's: count 1, LBA 1, cylinder 0xffff.
            st.latch = TaskFile {
                nsector: 1,
                lba_low: 1,
                lba_mid: 0xff,
                lba_high: 0xff,
                ..TaskFile::default()
            };
            st.irq_level = false;
        }
    }

    fn alt_status(&self) -> u8 {
        let st = self.lock();
        // QEMU's `ide_status_read`: 0 for an absent device or an empty channel.
        st.drives[st.unit].as_ref().map_or(0, |d| d.status())
    }

    fn bm_read(&self, reg: u64) -> u8 {
        let st = self.lock();
        match reg {
            0 => st.bm.cmd,
            2 => st.bm.status,
            4..=7 => st.bm.prd.to_le_bytes()[(reg - 4) as usize],
            _ => 0xff,
        }
    }

    fn bm_write(&self, reg: u64, value: u8) {
        let mut st = self.lock();
        match reg {
            0 => {
                let started = st.bm.cmd & BM_CMD_START == 0 && value & BM_CMD_START != 0;
                st.bm.cmd = value & (BM_CMD_START | BM_CMD_WRITE_TO_MEMORY);
                if value & BM_CMD_START == 0 {
                    st.bm.status &= !BM_STATUS_ACTIVE;
                } else if started {
                    st.bm.status |= BM_STATUS_ACTIVE;
                    self.run_dma(&mut st);
                }
            }
            2 => {
                let s = &mut st.bm.status;
                *s = (*s & !BM_STATUS_CAPABLE) | (value & BM_STATUS_CAPABLE);
                *s &= !(value & (BM_STATUS_ERROR | BM_STATUS_INT));
            }
            4..=7 => {
                let mut b = st.bm.prd.to_le_bytes();
                b[(reg - 4) as usize] = value;
                st.bm.prd = u32::from_le_bytes(b) & !3;
            }
            _ => {}
        }
    }

    /// Move the selected drive's DMA transfer through the PRD table, synchronously.
    fn run_dma(&self, st: &mut ChannelState) {
        let unit = st.unit;
        let table = u64::from(st.bm.prd);
        let Some(d) = st.drives[unit].as_mut() else {
            return;
        };
        if !d.transfer().is_some_and(|t| t.dma) {
            return;
        }
        let mut prd = BmPrd::new(table);
        let mut failed = false;
        let ev = loop {
            let Some(info) = d.transfer() else {
                break Event::Done { irq: false };
            };
            let n = info.block_left;
            let moved = match info.dir {
                Direction::In => prd.write(&self.mem, d.block()),
                Direction::Out => prd.read(&self.mem, d.block_mut()),
            };
            if moved.is_err() {
                failed = true;
                break d.fail_transfer();
            }
            match d.advance(n) {
                Some(Event::Block { .. }) => continue,
                Some(done) => break done,
                None => break Event::Done { irq: false },
            }
        };
        st.bm.status &= !BM_STATUS_ACTIVE;
        st.bm.status |= BM_STATUS_INT;
        if failed {
            st.bm.status |= BM_STATUS_ERROR;
        }
        if let Event::Done { irq: true } = ev {
            self.raise(st);
        }
    }
}

/// Walks a bus-master PRD table: 8-byte entries (address, byte count with 0 meaning 64 KiB,
/// end-of-table in bit 31), inside one 4 KiB window.
struct BmPrd {
    table: u64,
    next: u64,
    addr: u64,
    left: u64,
    last: bool,
}

impl BmPrd {
    fn new(table: u64) -> Self {
        Self {
            table,
            next: 0,
            addr: 0,
            left: 0,
            last: false,
        }
    }

    fn chunk(&mut self, mem: &GuestMemoryMmap, want: usize) -> Result<(u64, usize), ()> {
        while self.left == 0 {
            if self.last || self.next >= BM_PRD_TABLE_MAX {
                return Err(());
            }
            let mut e = [0u8; 8];
            mem.read_slice(&mut e, GuestAddress(self.table + self.next))
                .map_err(|_| ())?;
            self.next += 8;
            let addr = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let size = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            self.addr = u64::from(addr & !1);
            self.left = match size & 0xfffe {
                0 => 0x1_0000,
                n => u64::from(n),
            };
            self.last = size & 0x8000_0000 != 0;
        }
        Ok((self.addr, self.left.min(want as u64) as usize))
    }

    fn consume(&mut self, n: usize) {
        self.addr += n as u64;
        self.left -= n as u64;
    }

    fn write(&mut self, mem: &GuestMemoryMmap, mut data: &[u8]) -> Result<(), ()> {
        while !data.is_empty() {
            let (addr, n) = self.chunk(mem, data.len())?;
            mem.write_slice(&data[..n], GuestAddress(addr))
                .map_err(|_| ())?;
            self.consume(n);
            data = &data[n..];
        }
        Ok(())
    }

    fn read(&mut self, mem: &GuestMemoryMmap, mut data: &mut [u8]) -> Result<(), ()> {
        while !data.is_empty() {
            let (addr, n) = self.chunk(mem, data.len())?;
            let (head, tail) = data.split_at_mut(n);
            mem.read_slice(head, GuestAddress(addr)).map_err(|_| ())?;
            self.consume(n);
            data = tail;
        }
        Ok(())
    }
}

impl BusDevice for IdeChannel {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        if offset == 0 {
            self.read_reg(0, data);
            return;
        }
        // One register per byte; wider accesses read consecutive registers.
        for (i, b) in data.iter_mut().enumerate() {
            let mut one = [0u8; 1];
            self.read_reg(offset + i as u64, &mut one);
            *b = one[0];
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.write_reg(0, data);
            return;
        }
        for (i, b) in data.iter().enumerate() {
            self.write_reg(offset + i as u64, &[*b]);
        }
    }
}

impl BusDevice for IdeControl {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = self.0.alt_status();
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (0, Some(&v)) = (offset, data.first()) {
            self.0.write_control(v);
        }
    }
}

impl BusDevice for BmdmaRegion {
    fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = match self.0.get((at / 8) as usize) {
                Some(ch) => ch.bm_read(at % 8),
                None => 0xff,
            };
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let at = offset + i as u64;
            if let Some(ch) = self.0.get((at / 8) as usize) {
                ch.bm_write(at % 8, v);
            }
        }
    }
}

/// One channel's registers and its two positions' drives (None: no drive there).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IdeChannelState {
    latch: TaskFile,
    unit: usize,
    control: u8,
    irq_level: bool,
    bm: BusMaster,
    #[serde(default)]
    drives: Vec<Option<super::AtaDriveState>>,
}

/// The two channels' registers and drives; the PCI config space is saved with the bus. A
/// bus-master transfer runs to its end on the guest's start write, so none is in flight.
impl crate::Persist for PiixIde {
    type State = Vec<IdeChannelState>;

    fn save(&self) -> Self::State {
        self.channels
            .iter()
            .map(|c| {
                let st = c.lock();
                IdeChannelState {
                    latch: st.latch,
                    unit: st.unit,
                    control: st.control,
                    irq_level: st.irq_level,
                    bm: st.bm,
                    drives: st
                        .drives
                        .iter()
                        .map(|d| d.as_ref().map(AtaDrive::save_state))
                        .collect(),
                }
            })
            .collect()
    }

    fn restore(&self, saved: Self::State) -> Result<(), crate::StateError> {
        let invalid = |e: String| crate::StateError::Invalid(format!("piix3-ide: {e}"));
        if saved.len() != self.channels.len() {
            return Err(invalid("the snapshot's channels do not match".into()));
        }
        for (n, (c, s)) in self.channels.iter().zip(&saved).enumerate() {
            let st = c.lock();
            let ours: Vec<bool> = st.drives.iter().map(Option::is_some).collect();
            let theirs: Vec<bool> = s.drives.iter().map(Option::is_some).collect();
            if ours != theirs {
                return Err(invalid(format!(
                    "channel {n}: drives at units {theirs:?} in the snapshot, {ours:?} here"
                )));
            }
        }
        for (n, (c, s)) in self.channels.iter().zip(saved).enumerate() {
            let mut st = c.lock();
            for (unit, (d, saved)) in st.drives.iter_mut().zip(&s.drives).enumerate() {
                if let (Some(d), Some(saved)) = (d, saved) {
                    d.restore_state(saved)
                        .map_err(|e| invalid(format!("drive {n}.{unit}: {e}")))?;
                }
            }
            st.latch = s.latch;
            st.unit = s.unit & 1;
            st.control = s.control;
            st.irq_level = s.irq_level;
            st.bm = s.bm;
        }
        Ok(())
    }
}

/// The PIIX3 IDE function with its two channels.
pub struct PiixIde {
    config: Mutex<PciConfig>,
    channels: [Arc<IdeChannel>; 2],
    bmdma: Arc<BmdmaRegion>,
}

impl PiixIde {
    /// The function with empty channels; `mem` is what bus-master DMA reaches.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self, IdeError> {
        let mut config = PciConfig::new(&PciIdentity {
            vendor: PCI_VENDOR_ID_INTEL,
            device: PCI_DEVICE_ID_PIIX3_IDE,
            class: 0x01,
            subclass: 0x01,
            prog_if: 0x80,
            revision: 0x00,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        config.add_bar(
            BMDMA_BAR,
            BarSpec {
                size: IDE_BMDMA_SIZE,
                kind: BarKind::Io,
                prefetchable: false,
            },
        )?;
        // DEVSEL medium, fast back-to-back (QEMU's piix_ide_reset).
        config.set_status(0x0280);
        // IDETIM (0x40, 0x42), SIDETIM (0x44) and the rest: plain read/write as in QEMU.
        config.set_write_mask(0x40, &[0xff; 0xc0])?;
        let channels = [
            Arc::new(IdeChannel::new(mem.clone())),
            Arc::new(IdeChannel::new(mem)),
        ];
        Ok(Self {
            config: Mutex::new(config),
            bmdma: Arc::new(BmdmaRegion(channels.clone())),
            channels,
        })
    }

    fn config(&self) -> MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn position(&self, channel: usize, unit: usize) -> Result<&Arc<IdeChannel>, IdeError> {
        self.channels
            .get(channel)
            .filter(|_| unit < 2)
            .ok_or(IdeError::NoSuchPosition { channel, unit })
    }

    /// Put `drive` at `channel` (0 primary, 1 secondary) `unit` (0 master, 1 slave). QEMU's
    /// `-hda` is 0.0, `-cdrom` 1.0.
    pub fn attach(&self, channel: usize, unit: usize, drive: AtaDrive) -> Result<(), IdeError> {
        let ch = self.position(channel, unit)?;
        ch.lock().drives[unit] = Some(drive);
        Ok(())
    }

    /// Change the medium of the CD-ROM at `channel`.`unit` (None ejects it).
    pub fn change_media(
        &self,
        channel: usize,
        unit: usize,
        medium: Option<Arc<dyn BlockBackend>>,
    ) -> Result<(), IdeError> {
        let ch = self.position(channel, unit)?;
        if let Some(d) = ch.lock().drives[unit].as_mut() {
            d.change_media(medium);
        }
        Ok(())
    }

    /// The command block device of `channel` (8 ports at [`IDE_PRIMARY_CMD`] or
    /// [`IDE_SECONDARY_CMD`]).
    pub fn command_block(&self, channel: usize) -> Option<Arc<dyn BusDevice>> {
        self.channels
            .get(channel)
            .map(|c| c.clone() as Arc<dyn BusDevice>)
    }

    /// The control block device of `channel` (1 port at [`IDE_PRIMARY_CTL`] or
    /// [`IDE_SECONDARY_CTL`]).
    pub fn control_block(&self, channel: usize) -> Option<Arc<dyn BusDevice>> {
        self.channels
            .get(channel)
            .map(|c| Arc::new(IdeControl(c.clone())) as Arc<dyn BusDevice>)
    }

    /// The channel's ISA interrupt as an edge-triggered line on `gsi` (14 or 15). Only the
    /// first call per channel connects it.
    pub fn irq_line(&self, channel: usize, gsi: u32) -> Result<IrqLine, InterruptError> {
        let line = IrqLine::edge(gsi)?;
        if let Some(ch) = self.channels.get(channel) {
            let own = line
                .trigger
                .try_clone()
                .map_err(|source| InterruptError::CloneEventFd { gsi, source })?;
            let _ = ch.irq.set(own);
        }
        Ok(line)
    }

    /// BAR4 and its size.
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.config().regions()
    }

    /// The bus-master registers (BAR4).
    pub fn region_device(&self, region: PciRegion) -> Option<Arc<dyn BusDevice>> {
        match region {
            PciRegion::Bar(BMDMA_BAR) => Some(self.bmdma.clone()),
            _ => None,
        }
    }

    /// Machine reset: both channels' devices reset, bus masters stopped.
    fn reset_channels(&self) {
        for ch in &self.channels {
            let mut st = ch.lock();
            for d in st.drives.iter_mut().flatten() {
                d.reset();
            }
            st.unit = 0;
            st.control = 0;
            st.irq_level = false;
            st.latch = TaskFile::default();
            st.bm = BusMaster::default();
        }
    }
}

impl PciDevice for PiixIde {
    fn config_read(&self, reg: usize) -> u32 {
        self.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        self.config().write(reg, offset, data)
    }

    fn reset(&self) -> Vec<BarChange> {
        self.reset_channels();
        self.config().reset()
    }
}

#[cfg(test)]
#[path = "ide_tests.rs"]
mod tests;
