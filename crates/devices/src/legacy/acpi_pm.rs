//! ACPI power-management I/O registers of the ICH9 LPC bridge, at the PMBASE QEMU's q35
//! firmware and ACPI tables use (hw/isa/lpc_ich9.c, hw/acpi/ich9.c, hw/acpi/core.c).
//!
//! Layout (ACPI 6.5 section 4.8.3, ICH9 datasheet 13.8.3):
//! - `PM_BASE + 0x0` PM1a_STS (u16, write 1 to clear), `+ 0x2` PM1a_EN (u16),
//! - `PM_BASE + 0x4` PM1a_CNT (u16), `+ 0x8` PM_TMR (u32 read-only, 24-bit counter at
//!   3.579545 MHz from the host's CLOCK_MONOTONIC, which `std::time::Instant` reads on Linux);
//! - `PM_BASE + 0x20` GPE0_STS (8 bytes, write 1 to clear), `+ 0x28` GPE0_EN (8 bytes), the
//!   GPE0_BLK the FADT declares (ICH9: 16 bytes, half status, half enable; ACPI 6.5 4.8.4.1);
//! - `PM_BASE + 0x30` SMI_EN (u32, read/write), which powers on with APMC_EN (bit 5) set as
//!   QEMU's `ich9_pm_reset` does without SMM: SeaBIOS reads it to decide that SMM is already set
//!   up (sb/fw/smm.c `ich9_lpc_apmc_smm_setup`) instead of raising an SMI it would wait on for
//!   ever. The PIIX4 block of `pc` has nothing there that anyone reads;
//! - the rest of the 128-byte block (SMI_STS, TCO) reads 0 and ignores writes.
//!
//! SCI (ACPI 6.5 section 4.8.2.1, QEMU `acpi_update_sci`): the FADT's SCI_INT (IRQ 9, level,
//! active high per the MADT override) is asserted while SCI_EN is set and an enabled event is
//! pending: `PM1a_STS & PM1a_EN` (PWRBTN, RTC) or `GPE0_STS & GPE0_EN`. The line is an [`IrqLine`] with
//! irqfd semantics: a raise asserts it until the guest's EOI, then the interrupt controller lowers
//! it and signals the resample eventfd, and [`AcpiPm::resample`] asserts it again while the event
//! is still pending. So a handler that clears the status before its EOI sees one interrupt, and
//! one that does not is interrupted again. TMR_STS/TMR_EN raise no SCI (nothing watches bit 23
//! toggling between accesses; Linux does not enable TMR_EN).
//!
//! Sleep: a PM1a_CNT write with SLP_EN (bit 13) and SLP_TYP (bits 10-12) = 0 requests
//! [`VmRequest::PowerOff`] and SLP_TYP = 1 requests [`VmRequest::Suspend`], as QEMU's
//! `acpi_pm1_cnt_write` does ("soft power off" and S3; the DSDT's \_S5 and \_S3 carry these
//! values). Other sleep types (QEMU's S4, type 2, which it only offers with `disable_s4=0`) are
//! ignored and the guest keeps running. SLP_EN always reads back as 0.
//!
//! Wake (ACPI 6.5 section 4.8.3.1.1, QEMU `acpi_notify_wakeup`): the VMM resets the machine on
//! wake-up and then calls [`AcpiPm::woke`], which sets WAK_STS with the reason's status bit:
//! RTC_STS for the RTC alarm, PWRBTN_STS for anything else (QMP `system_wakeup`). The RTC alarm
//! wakes the machine only while the guest has RTC_EN set ([`AcpiPm::rtc_wake_enabled`]).
//!
//! There is no SMM, so like QEMU's "acpi_only" mode PM1a_CNT starts with SCI_EN set: the
//! machine is already in ACPI mode and the guest never needs an SMI_CMD handshake.
//!
//! Any access width works: each byte goes to the register byte it covers, and a partial write
//! of a 16-bit register is merged with its other byte before the register semantics apply
//! (QEMU does the same for PM1a_CNT since 8.1).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{BusDevice, InterruptError, IrqLine, VmControl, VmRequest};

/// PMBASE on QEMU q35 (ICH9), as programmed by SeaBIOS/OVMF and described in QEMU's FADT.
pub const PM_BASE: u64 = 0x600;
/// ICH9 PMIO block size.
pub const PM_LEN: u64 = 0x80;
/// PM1a event block (STS + EN) offset.
pub const PM1A_EVT_OFFSET: u64 = 0x0;
/// PM1a control block offset.
pub const PM1A_CNT_OFFSET: u64 = 0x4;
/// PM timer offset.
pub const PM_TMR_OFFSET: u64 = 0x8;
/// ACPI PM timer frequency (ACPI 6.5 section 4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;

const PM1A_STS: u64 = 0x0;
const PM1A_EN: u64 = 0x2;
const PM1A_CNT: u64 = 0x4;

/// PM1_STS.TMR_STS: bit 23 of the timer changed.
const TMR_STS: u16 = 1 << 0;
/// PM1_STS.PWRBTN_STS and PM1_EN.PWRBTN_EN (ACPI 6.5 tables 4.11 and 4.12).
pub const PWRBTN: u16 = 1 << 8;
/// PM1_STS.RTC_STS and PM1_EN.RTC_EN.
pub const RTC: u16 = 1 << 10;
/// PM1_STS.WAK_STS: set when the machine woke from a sleeping state.
pub const WAK_STS: u16 = 1 << 15;
/// PM1_CNT.SCI_EN.
const SCI_EN: u16 = 1 << 0;
/// PM1_CNT.SLP_EN.
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7;
/// SLP_TYP value of \_S5 (soft off) in QEMU's and our DSDT.
const SLP_TYP_SOFT_OFF: u16 = 0;
/// SLP_TYP value of \_S3 (suspend to RAM) in QEMU's and our DSDT.
pub const SLP_TYP_S3: u16 = 1;
const TIMER_MASK: u64 = 0xff_ffff;
/// GPE0_STS offset in the PM block (QEMU `ICH9_PMIO_GPE0_STS`).
const GPE0_STS: u64 = 0x20;
/// GPE0_EN offset: the second half of the 16-byte GPE0 block.
const GPE0_EN: u64 = 0x28;
const GPE0_HALF: usize = 8;
/// SMI_EN offset (QEMU `ICH9_PMIO_SMI_EN`) and its APMC_EN bit.
const SMI_EN: u64 = 0x30;
const SMI_EN_LEN: u64 = 4;
pub const SMI_EN_APMC_EN: u32 = 1 << 5;

struct Regs {
    sts: u16,
    en: u16,
    cnt: u16,
    /// `ticks >> 23` when TMR_STS was last cleared; TMR_STS is set while it differs.
    tmr_epoch: u64,
    gpe_sts: [u8; GPE0_HALF],
    gpe_en: [u8; GPE0_HALF],
    smi_en: u32,
}

impl Regs {
    /// The registers at power-on and after a system reset: nothing pending or enabled, and
    /// SCI_EN set (ACPI mode from the start: there is no firmware to switch it over).
    fn power_on() -> Self {
        Self {
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            tmr_epoch: 0,
            gpe_sts: [0; GPE0_HALF],
            gpe_en: [0; GPE0_HALF],
            smi_en: SMI_EN_APMC_EN,
        }
    }

    /// ACPI 6.5 4.8.2.1: SCI while SCI_EN and an enabled status bit is set.
    fn sci_pending(&self) -> bool {
        let gpe = self
            .gpe_sts
            .iter()
            .zip(&self.gpe_en)
            .any(|(s, e)| s & e != 0);
        self.cnt & SCI_EN != 0 && (self.sts & self.en & (PWRBTN | RTC) != 0 || gpe)
    }
}

/// The PM registers and the timer's count: a restored timer goes on from where it stood.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AcpiPmState {
    sts: u16,
    en: u16,
    cnt: u16,
    tmr_epoch: u64,
    gpe_sts: Vec<u8>,
    gpe_en: Vec<u8>,
    smi_en: u32,
    ticks: u64,
}

impl crate::Persist for AcpiPm {
    type State = AcpiPmState;

    fn save(&self) -> AcpiPmState {
        let r = self.lock();
        AcpiPmState {
            sts: r.sts,
            en: r.en,
            cnt: r.cnt,
            tmr_epoch: r.tmr_epoch,
            gpe_sts: r.gpe_sts.to_vec(),
            gpe_en: r.gpe_en.to_vec(),
            smi_en: r.smi_en,
            ticks: self.ticks(),
        }
    }

    fn restore(&self, s: AcpiPmState) -> Result<(), crate::StateError> {
        let bad = || crate::StateError::Invalid("ACPI PM: GPE0 block of the wrong size".into());
        let gpe_sts: [u8; GPE0_HALF] = s.gpe_sts.try_into().map_err(|_| bad())?;
        let gpe_en: [u8; GPE0_HALF] = s.gpe_en.try_into().map_err(|_| bad())?;
        let mut r = self.lock();
        r.sts = s.sts;
        r.en = s.en;
        r.cnt = s.cnt;
        r.tmr_epoch = s.tmr_epoch;
        r.gpe_sts = gpe_sts;
        r.gpe_en = gpe_en;
        r.smi_en = s.smi_en;
        let now = self.ticks();
        let base = self.tick_base.load(std::sync::atomic::Ordering::Relaxed);
        // ticks() = elapsed + base: make it s.ticks now.
        self.tick_base.store(
            s.ticks.wrapping_sub(now.wrapping_sub(base)),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.update_sci(&r);
        Ok(())
    }
}

/// What woke a suspended machine (QEMU's `WakeupReason`), for the status bits it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// The RTC alarm (with RTC_EN set).
    Rtc,
    /// QMP `system_wakeup`: QEMU reports it as the power button.
    Other,
    /// The ACPI power button pressed while the guest sleeps.
    PowerButton,
}

/// A sleep state the guest entered through PM1a_CNT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sleep {
    SoftOff,
    Suspend,
}

/// The PM1a event/control registers and the PM timer.
pub struct AcpiPm {
    regs: Mutex<Regs>,
    start: Instant,
    /// Ticks a restored snapshot's timer had reached when `start` was taken.
    tick_base: std::sync::atomic::AtomicU64,
    control: Arc<dyn VmControl>,
    /// The SCI's trigger eventfd, once [`AcpiPm::sci_line`] connected it.
    sci: OnceLock<EventFd>,
}

impl AcpiPm {
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self {
            regs: Mutex::new(Regs::power_on()),
            start: Instant::now(),
            tick_base: std::sync::atomic::AtomicU64::new(0),
            control,
            sci: OnceLock::new(),
        }
    }

    /// The SCI as a level-triggered interrupt line on `gsi` (the FADT's SCI_INT), for the
    /// platform's interrupt controller. Its resample eventfd is blocking, for a thread that
    /// waits on it and calls [`AcpiPm::resample`]. Only the first call connects the device.
    pub fn sci_line(&self, gsi: u32) -> Result<IrqLine, InterruptError> {
        let trigger = EventFd::new(EFD_NONBLOCK)
            .map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let resample =
            EventFd::new(0).map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let own = trigger
            .try_clone()
            .map_err(|source| InterruptError::CloneEventFd { gsi, source })?;
        let _ = self.sci.set(own);
        // An event may already be pending (e.g. a button pressed before the line existed).
        self.update_sci(&self.lock());
        Ok(IrqLine {
            gsi,
            trigger,
            resample: Some(resample),
        })
    }

    /// The guest acknowledged the SCI and the line went low: assert it again if an enabled event
    /// is still pending (level semantics over irqfd, as VFIO INTx and QEMU's irqfd resampler).
    pub fn resample(&self) {
        self.update_sci(&self.lock());
    }

    /// Whether the SCI condition holds now (for tests and the QMP side).
    pub fn sci_pending(&self) -> bool {
        self.lock().sci_pending()
    }

    /// Assert the SCI if its condition holds. Asserting an already asserted line is harmless (the
    /// IOAPIC delivers nothing while the pin's remote IRR is set); it can only be lowered by the
    /// EOI, so a guest clearing the status takes effect at its EOI.
    fn update_sci(&self, regs: &Regs) {
        if let (true, Some(evt)) = (regs.sci_pending(), self.sci.get()) {
            // A failed write (counter overflow, impossible at one per event) loses one raise.
            let _ = evt.write(1);
        }
    }

    /// Timer ticks since the device was created, not truncated to 24 bits.
    fn ticks(&self) -> u64 {
        let ns = self.start.elapsed().as_nanos();
        let base = self.tick_base.load(std::sync::atomic::Ordering::Relaxed);
        ((ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64).wrapping_add(base)
    }

    /// The current 24-bit PM_TMR value.
    pub fn timer(&self) -> u32 {
        (self.ticks() & TIMER_MASK) as u32
    }

    /// A press of the power button (QMP `system_powerdown`): as QEMU's `acpi_pm1_evt_power_down`,
    /// PWRBTN_STS is set only if the guest enabled the event with PWRBTN_EN. Returns whether it
    /// was; the SCI then fires if SCI_EN is set (guests may also poll PM1a_STS).
    pub fn press_power_button(&self) -> bool {
        let mut regs = self.lock();
        if regs.en & PWRBTN == 0 {
            return false;
        }
        regs.sts |= PWRBTN;
        self.update_sci(&regs);
        true
    }

    /// Whether an RTC alarm may wake the machine (PM1_EN.RTC_EN, QEMU's wake-up reason mask).
    pub fn rtc_wake_enabled(&self) -> bool {
        self.lock().en & RTC != 0
    }

    /// After the reset of a wake-up: WAK_STS and the reason's status bit, as QEMU's
    /// `acpi_notify_wakeup` sets them (the SCI follows if the guest enables the event).
    pub fn woke(&self, reason: WakeReason) {
        let mut regs = self.lock();
        regs.sts |= WAK_STS
            | match reason {
                WakeReason::Rtc => RTC,
                WakeReason::Other | WakeReason::PowerButton => PWRBTN,
            };
        self.update_sci(&regs);
    }

    /// System reset: the registers return to their power-on values (a level SCI then stays
    /// low at its next resample, since nothing is pending).
    pub fn reset(&self) {
        let mut regs = self.lock();
        *regs = Regs::power_on();
        regs.tmr_epoch = self.ticks() >> 23;
    }

    /// Set or clear PM1a_CNT.SCI_EN, as the APM ACPI enable/disable commands do (QEMU's
    /// `acpi_pm1_cnt_update`); enabling may expose a pending event.
    pub fn set_sci_enabled(&self, enabled: bool) {
        let mut regs = self.lock();
        if enabled {
            regs.cnt |= SCI_EN;
        } else {
            regs.cnt &= !SCI_EN;
        }
        self.update_sci(&regs);
    }

    fn lock(&self) -> MutexGuard<'_, Regs> {
        self.regs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sts(&self, regs: &Regs) -> u16 {
        let overflowed = self.ticks() >> 23 != regs.tmr_epoch;
        regs.sts | if overflowed { TMR_STS } else { 0 }
    }

    /// Apply a write of `value` to the bytes of the 16-bit register at `reg` selected by `mask`.
    /// Returns the sleep state the guest asked for, if any.
    fn write_reg(&self, regs: &mut Regs, reg: u64, value: u16, mask: u16) -> Option<Sleep> {
        let value = value & mask;
        match reg {
            PM1A_STS => {
                regs.sts &= !value;
                if value & TMR_STS != 0 {
                    regs.tmr_epoch = self.ticks() >> 23;
                }
                None
            }
            PM1A_EN => {
                regs.en = (regs.en & !mask) | value;
                None
            }
            PM1A_CNT => {
                let cnt = (regs.cnt & !mask) | value;
                regs.cnt = cnt & !SLP_EN;
                if cnt & SLP_EN == 0 {
                    return None;
                }
                match (cnt >> SLP_TYP_SHIFT) & SLP_TYP_MASK {
                    SLP_TYP_SOFT_OFF => Some(Sleep::SoftOff),
                    SLP_TYP_S3 => Some(Sleep::Suspend),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Index of `addr` in the 8-byte GPE0 half at `base`, if it is in it.
fn gpe_index(addr: u64, base: u64) -> Option<usize> {
    let i = usize::try_from(addr.checked_sub(base)?).ok()?;
    (i < GPE0_HALF).then_some(i)
}

impl AcpiPm {
    fn gpe_byte(&self, addr: u64) -> u8 {
        let regs = self.lock();
        if let Some(i) = addr.checked_sub(SMI_EN).filter(|i| *i < SMI_EN_LEN) {
            (regs.smi_en >> (8 * i)) as u8
        } else if let Some(i) = gpe_index(addr, GPE0_STS) {
            regs.gpe_sts[i]
        } else if let Some(i) = gpe_index(addr, GPE0_EN) {
            regs.gpe_en[i]
        } else {
            0
        }
    }

    /// Set GPE0 status bit `bit` (0-63), as a hot-plug or other general-purpose event would.
    pub fn set_gpe(&self, bit: u8) {
        let mut regs = self.lock();
        if let Some(b) = regs.gpe_sts.get_mut(usize::from(bit / 8)) {
            *b |= 1 << (bit % 8);
        }
        self.update_sci(&regs);
    }
}

impl BusDevice for AcpiPm {
    fn read(&self, offset: u64, data: &mut [u8]) {
        // PM_TMR is polled often (acpi_pm clocksource): reads at or past it take no lock.
        let (sts, en, cnt) = if offset < PM_TMR_OFFSET {
            let regs = self.lock();
            (self.sts(&regs), regs.en, regs.cnt)
        } else {
            (0, 0, 0)
        };
        let tmr = self.timer();
        for (i, byte) in data.iter_mut().enumerate() {
            let Some(addr) = offset.checked_add(i as u64) else {
                *byte = 0;
                continue;
            };
            let shift = 8 * (addr & 1);
            *byte = match addr {
                0..=1 => (sts >> shift) as u8,
                2..=3 => (en >> shift) as u8,
                4..=5 => (cnt >> shift) as u8,
                8..=11 => (tmr >> (8 * (addr - PM_TMR_OFFSET))) as u8,
                0x20..=0x33 => self.gpe_byte(addr),
                _ => 0,
            };
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let sleep = {
            let mut regs = self.lock();
            let mut sleep = None;
            for (i, &b) in data.iter().enumerate() {
                let Some(addr) = offset.checked_add(i as u64) else {
                    continue;
                };
                if let Some(j) = addr.checked_sub(SMI_EN).filter(|j| *j < SMI_EN_LEN) {
                    let shift = 8 * j;
                    regs.smi_en = (regs.smi_en & !(0xff << shift)) | (u32::from(b) << shift);
                } else if let Some(j) = gpe_index(addr, GPE0_STS) {
                    regs.gpe_sts[j] &= !b;
                } else if let Some(j) = gpe_index(addr, GPE0_EN) {
                    regs.gpe_en[j] = b;
                }
            }
            for reg in [PM1A_STS, PM1A_EN, PM1A_CNT] {
                let (mut value, mut mask) = (0u16, 0u16);
                for (i, &b) in data.iter().enumerate() {
                    match offset
                        .checked_add(i as u64)
                        .and_then(|a| a.checked_sub(reg))
                    {
                        Some(0) => (value, mask) = (value | u16::from(b), mask | 0x00ff),
                        Some(1) => (value, mask) = (value | (u16::from(b) << 8), mask | 0xff00),
                        _ => {}
                    }
                }
                if mask != 0 {
                    sleep = self.write_reg(&mut regs, reg, value, mask).or(sleep);
                }
            }
            // An enable or SCI_EN write may expose a pending event.
            self.update_sci(&regs);
            sleep
        };
        match sleep {
            Some(Sleep::SoftOff) => self.control.request(VmRequest::PowerOff),
            Some(Sleep::Suspend) => self.control.request(VmRequest::Suspend),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::RecordingVmControl;
    use std::time::Duration;

    fn setup() -> (Arc<RecordingVmControl>, AcpiPm) {
        let ctl = Arc::new(RecordingVmControl::default());
        let pm = AcpiPm::new(ctl.clone());
        (ctl, pm)
    }

    fn inw(pm: &AcpiPm, off: u64) -> u16 {
        let mut d = [0u8; 2];
        pm.read(off, &mut d);
        u16::from_le_bytes(d)
    }

    fn inl(pm: &AcpiPm, off: u64) -> u32 {
        let mut d = [0u8; 4];
        pm.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn smi_en_reads_apmc_en_until_written_and_after_reset() {
        let (_, pm) = setup();
        // sb/fw/smm.c: inl(PMBASE + 0x30) & APMC_EN means "SMM already set up".
        assert_eq!(inl(&pm, SMI_EN), SMI_EN_APMC_EN);
        let mut b = [0u8; 1];
        pm.read(SMI_EN, &mut b);
        assert_eq!(b, [0x20]);
        pm.write(SMI_EN, &0x2001u32.to_le_bytes());
        assert_eq!(inl(&pm, SMI_EN), 0x2001);
        pm.write(SMI_EN + 1, &[0x00]);
        assert_eq!(inl(&pm, SMI_EN), 0x0001);
        // SMI_STS next to it still reads 0; GPE0 is unaffected.
        assert_eq!(inl(&pm, SMI_EN + 4), 0);
        assert_eq!(inl(&pm, GPE0_EN), 0);
        pm.reset();
        assert_eq!(inl(&pm, SMI_EN), SMI_EN_APMC_EN);
    }

    #[test]
    fn outw_0x2000_to_cnt_powers_off() {
        let (ctl, pm) = setup();
        pm.write(PM1A_CNT_OFFSET, &0x2000u16.to_le_bytes());
        assert_eq!(ctl.requests(), vec![VmRequest::PowerOff]);
        assert_eq!(inw(&pm, PM1A_CNT_OFFSET) & SLP_EN, 0, "SLP_EN reads back 0");
    }

    #[test]
    fn s3_suspends_and_other_sleep_types_are_ignored() {
        let (ctl, pm) = setup();
        // S4 (type 2) and type 5 with SLP_EN; type 0 without SLP_EN.
        pm.write(PM1A_CNT_OFFSET, &(SLP_EN | (2 << 10)).to_le_bytes());
        pm.write(PM1A_CNT_OFFSET, &(SLP_EN | (5 << 10)).to_le_bytes());
        pm.write(PM1A_CNT_OFFSET, &SCI_EN.to_le_bytes());
        assert!(ctl.requests().is_empty());
        assert_eq!(inw(&pm, PM1A_CNT_OFFSET), SCI_EN);
        // S3 (type 1), as Linux writes it: the type first, then SLP_EN with it.
        pm.write(PM1A_CNT_OFFSET, &(SCI_EN | (1 << 10)).to_le_bytes());
        assert!(ctl.requests().is_empty());
        pm.write(
            PM1A_CNT_OFFSET,
            &(SCI_EN | SLP_EN | (1 << 10)).to_le_bytes(),
        );
        assert_eq!(ctl.requests(), vec![VmRequest::Suspend]);
        assert_eq!(inw(&pm, PM1A_CNT_OFFSET), SCI_EN | (1 << 10));
    }

    #[test]
    fn wake_status_bits_and_rtc_enable() {
        let (_, pm) = setup();
        let line = pm.sci_line(9).unwrap();
        assert!(!pm.rtc_wake_enabled());
        pm.write(PM1A_EN, &RTC.to_le_bytes());
        assert!(pm.rtc_wake_enabled());
        // The VMM resets the machine, then reports the reason.
        pm.reset();
        assert!(!pm.rtc_wake_enabled(), "reset clears RTC_EN");
        pm.woke(WakeReason::Rtc);
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, WAK_STS | RTC);
        assert_eq!(raises(&line), 0, "RTC_EN clear: no SCI");
        pm.write(PM1A_EN, &RTC.to_le_bytes());
        assert_eq!(raises(&line), 1, "RTC_STS & RTC_EN raise the SCI");
        pm.write(PM1A_STS, &(WAK_STS | RTC).to_le_bytes());
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, 0);
        pm.reset();
        pm.woke(WakeReason::Other);
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, WAK_STS | PWRBTN);
    }

    #[test]
    fn byte_write_to_cnt_high_byte_merges() {
        let (ctl, pm) = setup();
        assert_eq!(
            inw(&pm, PM1A_CNT_OFFSET),
            SCI_EN,
            "ACPI mode from the start"
        );
        // Firmware style: the high byte alone, SLP_TYP=0, SLP_EN=1.
        pm.write(PM1A_CNT_OFFSET + 1, &[0x20]);
        assert_eq!(ctl.requests(), vec![VmRequest::PowerOff]);
        assert_eq!(inw(&pm, PM1A_CNT_OFFSET), SCI_EN, "low byte kept");
        // A 32-bit write at PM1a_EVT reaches STS and EN; at CNT it powers off too.
        pm.write(PM1A_EVT_OFFSET, &0x0100_0000u32.to_le_bytes());
        assert_eq!(inw(&pm, PM1A_EN), 0x0100);
        pm.write(PM1A_CNT_OFFSET, &0x0000_2001u32.to_le_bytes());
        assert_eq!(
            ctl.requests(),
            vec![VmRequest::PowerOff, VmRequest::PowerOff]
        );
    }

    #[test]
    fn timer_counts_at_3_58_mhz_and_is_24_bit() {
        let (_, pm) = setup();
        let a = inl(&pm, PM_TMR_OFFSET);
        std::thread::sleep(Duration::from_millis(20));
        let b = inl(&pm, PM_TMR_OFFSET);
        assert!(b <= 0xff_ffff);
        let delta = b.wrapping_sub(a) & 0xff_ffff;
        // 20 ms is 71,591 ticks; allow a slow scheduler.
        assert!((71_000..3_579_545).contains(&delta), "delta {delta}");
        // Writes to the timer are ignored; byte reads see the same counter.
        pm.write(PM_TMR_OFFSET, &[0xff; 4]);
        let mut hi = [0xffu8; 1];
        pm.read(PM_TMR_OFFSET + 3, &mut hi);
        assert_eq!(hi, [0]);
    }

    #[test]
    fn status_is_write_one_to_clear() {
        let (_, pm) = setup();
        pm.lock().sts = 0x8100;
        pm.write(PM1A_STS, &0x0100u16.to_le_bytes());
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, 0x8000);
        pm.write(PM1A_STS + 1, &[0x80]);
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, 0);
    }

    #[test]
    fn system_reset_restores_the_power_on_registers() {
        let (_, pm) = setup();
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        assert!(pm.press_power_button());
        pm.write(PM1A_CNT_OFFSET, &0u16.to_le_bytes());
        pm.reset();
        assert_eq!(inw(&pm, PM1A_STS) & !TMR_STS, 0, "status cleared");
        assert_eq!(inw(&pm, PM1A_EN), 0, "enables cleared");
        assert_eq!(inw(&pm, PM1A_CNT_OFFSET), SCI_EN, "ACPI mode again");
        assert!(!pm.press_power_button(), "PWRBTN_EN off after the reset");
    }

    #[test]
    fn power_button_needs_pwrbtn_en_and_clears_by_writing_one() {
        let (ctl, pm) = setup();
        assert!(!pm.press_power_button(), "PWRBTN_EN is off at reset");
        assert_eq!(inw(&pm, PM1A_STS) & PWRBTN, 0);
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        assert!(pm.press_power_button());
        assert_eq!(inw(&pm, PM1A_STS) & PWRBTN, PWRBTN);
        pm.write(PM1A_STS, &PWRBTN.to_le_bytes());
        assert_eq!(inw(&pm, PM1A_STS) & PWRBTN, 0);
        assert!(
            ctl.requests().is_empty(),
            "pressing does not power off by itself"
        );
    }

    #[test]
    fn tmr_sts_follows_bit_23() {
        let (_, pm) = setup();
        assert_eq!(inw(&pm, PM1A_STS) & TMR_STS, 0);
        // Pretend the timer's bit 23 toggled since the last clear.
        pm.lock().tmr_epoch = u64::MAX;
        assert_eq!(inw(&pm, PM1A_STS) & TMR_STS, TMR_STS);
        pm.write(PM1A_STS, &TMR_STS.to_le_bytes());
        assert_eq!(inw(&pm, PM1A_STS) & TMR_STS, 0);
    }

    #[test]
    fn enable_register_and_unmodelled_space() {
        let (ctl, pm) = setup();
        pm.write(PM1A_EN, &0x0121u16.to_le_bytes());
        assert_eq!(inw(&pm, PM1A_EN), 0x0121);
        pm.write(PM1A_EN + 1, &[0x03]);
        assert_eq!(inw(&pm, PM1A_EN), 0x0321);
        for off in [0xc, 0x20, 0x7f, PM_LEN, u64::MAX - 1, u64::MAX] {
            pm.write(off, &[0xff; 8]);
            let mut d = [0xaau8; 3];
            pm.read(off, &mut d);
            assert_eq!(d, [0; 3]);
        }
        pm.read(0, &mut []);
        pm.write(0, &[]);
        assert_eq!(inw(&pm, PM1A_EN), 0x0321);
        assert!(ctl.requests().is_empty());
    }

    /// Raises counted on the trigger eventfd since the last call.
    fn raises(line: &IrqLine) -> u64 {
        line.trigger.read().unwrap_or(0)
    }

    #[test]
    fn sci_follows_pwrbtn_and_resamples_while_pending() {
        let (_, pm) = setup();
        let line = pm.sci_line(9).unwrap();
        assert_eq!(line.gsi, 9);
        assert!(line.resample.is_some(), "level-triggered");
        // Not enabled: no status, no SCI.
        assert!(!pm.press_power_button());
        assert_eq!(raises(&line), 0);
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        assert_eq!(raises(&line), 0, "enabling alone raises nothing");
        assert!(pm.press_power_button());
        assert_eq!(raises(&line), 1);
        assert!(pm.sci_pending());
        // EOI without clearing the status: asserted again.
        pm.resample();
        assert_eq!(raises(&line), 1);
        // Write 1 to clear, then EOI: stays low.
        pm.write(PM1A_STS, &PWRBTN.to_le_bytes());
        assert!(!pm.sci_pending());
        pm.resample();
        assert_eq!(raises(&line), 0);
    }

    #[test]
    fn sci_needs_sci_en_and_enable_exposes_pending_status() {
        let (_, pm) = setup();
        let line = pm.sci_line(9).unwrap();
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        pm.write(PM1A_CNT_OFFSET, &0u16.to_le_bytes());
        assert!(pm.press_power_button());
        assert_eq!(raises(&line), 0, "SCI_EN clear: legacy mode, no SCI");
        pm.write(PM1A_CNT_OFFSET, &SCI_EN.to_le_bytes());
        assert_eq!(raises(&line), 1, "setting SCI_EN raises the pending event");
        pm.write(PM1A_STS, &PWRBTN.to_le_bytes());
        // Status set while disabled, then enabled.
        pm.write(PM1A_EN, &0u16.to_le_bytes());
        pm.lock().sts |= PWRBTN;
        pm.resample();
        assert_eq!(raises(&line), 0);
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        assert_eq!(raises(&line), 1);
    }

    #[test]
    fn gpe0_status_and_enable_drive_the_sci() {
        let (_, pm) = setup();
        let line = pm.sci_line(9).unwrap();
        pm.set_gpe(10);
        assert_eq!(raises(&line), 0, "GPE0_EN clear");
        assert_eq!(inw(&pm, GPE0_STS), 0x0400);
        pm.write(GPE0_EN + 1, &[0x04]);
        assert_eq!(raises(&line), 1);
        assert_eq!(inw(&pm, GPE0_EN), 0x0400);
        // Write 1 to clear the status byte; other bits stay.
        pm.set_gpe(63);
        assert_eq!(
            raises(&line),
            1,
            "bit 63 is not enabled, bit 10 is still pending"
        );
        pm.write(GPE0_STS, &0x0400u16.to_le_bytes());
        assert_eq!(inl(&pm, GPE0_STS + 4), 0x8000_0000);
        assert!(!pm.sci_pending());
        pm.set_gpe(64);
        assert_eq!(inl(&pm, GPE0_STS), 0, "bits past the block are ignored");
    }

    #[test]
    fn press_before_the_line_exists_raises_on_connect() {
        let (_, pm) = setup();
        pm.write(PM1A_EN, &PWRBTN.to_le_bytes());
        assert!(pm.press_power_button());
        let line = pm.sci_line(9).unwrap();
        assert_eq!(raises(&line), 1);
    }
}
