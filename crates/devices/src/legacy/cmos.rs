//! CMOS RTC and NVRAM (Motorola MC146818A, as QEMU's `mc146818rtc`) at ports 0x70 (index,
//! bit 7 = NMI disable) and 0x71 (data).
//!
//! - Time of day runs from the host's wall clock in UTC (QEMU's default `-rtc base=utc`) plus
//!   an offset the guest changes by writing the time; register B selects BCD or binary
//!   (DM, bit 2) and 12- or 24-hour mode (bit 1), and SET (bit 7) freezes updates while the
//!   guest writes a new time, which takes effect when SET is cleared.
//! - Register A's update-in-progress bit reads 1 during the last 244 us of each second, the
//!   window in which a real RTC may be copying its counters (datasheet "UIP"), so guests that
//!   wait for it behave as on hardware.
//! - Register D's VRT (valid RAM and time) bit is always set.
//! - Interrupts (datasheet "Interrupts", QEMU `rtc_update_timer`/`rtc_periodic_timer`): register
//!   C's flags are set as the clock runs, UF at every second boundary, AF when the time matches
//!   the alarm registers 0x01/0x03/0x05 (a value with its two high bits set, 0xC0-0xFF, matches
//!   any), PF at the periodic rate register A's RS bits select; IRQF and IRQ 8 (edge) follow when
//!   a flag is set whose enable (UIE, AIE, PIE in register B) is on. Reading C returns and clears
//!   the flags. Setting SET stops UF and AF; dividers held in reset (A bits 5-6 set) stop all.
//!   The flags are brought up to date at each read of C, and by a timer the VMM's event loop
//!   serves ([`Cmos::timer_fd`], [`Cmos::timer_fired`]), armed only while an interrupt is enabled.
//! - An alarm with AIE set asks the VMM to wake a suspended VM ([`VmRequest::RtcWake`], QEMU's
//!   `qemu_system_wakeup_request(QEMU_WAKEUP_REASON_RTC)`); the VMM honours it if the guest set
//!   PM1_EN.RTC_EN.
//! - System reset clears PIE, AIE and SQWE and the flags (QEMU `rtc_reset`); the shutdown status
//!   byte 0x0F is kept, so firmware reads 0xFE there after an S3 wake-up ([`Cmos::suspend`]).
//! - The memory-size bytes are filled as QEMU's `pc_cmos_init` (hw/i386/pc.c) does, and the
//!   century byte (0x32) follows the clock.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::{BusDevice, InterruptError, IrqLine, VmControl, VmRequest};

/// Index port; the data port follows it.
pub const CMOS_PORT_BASE: u64 = 0x70;
pub const CMOS_PORT_LEN: u64 = 2;
/// The RTC's ISA interrupt.
pub const RTC_IRQ: u32 = 8;

const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS_ALARM: u8 = 0x05;
/// An alarm register with both high bits set matches every value.
const ALARM_ANY: u8 = 0xc0;
/// The shutdown status byte; 0xFE asks firmware for an S3 resume (SeaBIOS `handle_resume`).
pub const REG_SHUTDOWN_STATUS: u8 = 0x0f;
pub const SHUTDOWN_S3_RESUME: u8 = 0xfe;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Century, BCD or binary like the other time registers (ACPI FADT CENTURY field).
pub const REG_CENTURY: u8 = 0x32;

const REG_A_UIP: u8 = 0x80;
/// 32.768 kHz time base (DV = 010) and a 1024 Hz periodic rate (RS = 0110), the reset value.
const REG_A_DEFAULT: u8 = 0x26;
/// Register A: both divider-control bits set hold the dividers in reset.
const REG_A_DIVIDER_RESET: u8 = 0x60;
const REG_A_RS: u8 = 0x0f;
const REG_B_SET: u8 = 0x80;
const REG_B_PIE: u8 = 0x40;
const REG_B_AIE: u8 = 0x20;
const REG_B_UIE: u8 = 0x10;
const REG_B_SQWE: u8 = 0x08;
const REG_C_IRQF: u8 = 0x80;
const REG_C_PF: u8 = 0x40;
const REG_C_AF: u8 = 0x20;
const REG_C_UF: u8 = 0x10;
/// The RTC's time base, which the periodic rate divides.
const RTC_BASE_HZ: u128 = 32_768;
const REG_B_DM_BINARY: u8 = 0x04;
const REG_B_24H: u8 = 0x02;
const REG_D_VRT: u8 = 0x80;
/// Hours bit 7 in 12-hour mode: PM.
const HOUR_PM: u8 = 0x80;
/// Port 0x70 bit 7: NMI disabled.
const NMI_DISABLE: u8 = 0x80;
/// Length of the UIP window before each second boundary (datasheet: 244 us).
const UIP_WINDOW: Duration = Duration::from_micros(244);

/// A clock returning the time since the Unix epoch (replaced in tests).
pub type WallClock = Box<dyn Fn() -> Duration + Send + Sync>;

/// Guest RAM sizes the memory registers describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosMemory {
    /// RAM below 4 GiB, in bytes.
    pub below_4g: u64,
    /// RAM above 4 GiB, in bytes.
    pub above_4g: u64,
    /// Boot CPU count (QEMU puts `cpus - 1` at 0x5f).
    pub cpus: u32,
}

/// A broken-down UTC date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-compatible
/// low-level date algorithms").
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl DateTime {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10 % 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xf)
}

struct CmosState {
    index: u8,
    nmi_disabled: bool,
    nvram: [u8; 128],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The time the guest is writing while SET is on (registers as written, in guest format).
    set_time: Option<DateTime>,
    /// Register C: IRQF and the UF/AF/PF flags.
    flags: u8,
    /// The guest second up to which UF and AF are accounted for.
    last_second: i64,
    /// The periodic tick (host nanoseconds / period) up to which PF is accounted for.
    last_tick: u128,
    /// The interrupt timer, once the VMM asked for it.
    timer: Option<TimerFd>,
}

/// The CMOS RTC device.
pub struct Cmos {
    state: Mutex<CmosState>,
    clock: WallClock,
    /// IRQ 8's trigger eventfd, once [`Cmos::irq_line`] connected it.
    irq: OnceLock<EventFd>,
    /// Where alarm wake-ups go, once connected.
    control: OnceLock<Arc<dyn VmControl>>,
}

/// The RTC's registers and NVRAM. The guest's clock stays an offset from the host's, so a
/// restored guest sees the time it is (as QEMU's default `-rtc base=utc`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CmosSnapshot {
    index: u8,
    nmi_disabled: bool,
    nvram: Vec<u8>,
    offset: i64,
    set_time: Option<DateTime>,
    flags: u8,
    last_second: i64,
    last_tick: u128,
}

impl crate::Persist for Cmos {
    type State = CmosSnapshot;

    fn save(&self) -> CmosSnapshot {
        let st = self.lock();
        CmosSnapshot {
            index: st.index,
            nmi_disabled: st.nmi_disabled,
            nvram: st.nvram.to_vec(),
            offset: st.offset,
            set_time: st.set_time,
            flags: st.flags,
            last_second: st.last_second,
            last_tick: st.last_tick,
        }
    }

    fn restore(&self, s: CmosSnapshot) -> Result<(), crate::StateError> {
        let nvram: [u8; 128] = s.nvram.try_into().map_err(|v: Vec<u8>| {
            crate::StateError::Invalid(format!("CMOS: {} bytes of NVRAM, not 128", v.len()))
        })?;
        // Seconds within +-3000 years keep the clock arithmetic far from overflowing.
        const SPAN: i64 = 100_000_000_000;
        if !(-SPAN..=SPAN).contains(&s.offset) || !(-SPAN..=SPAN).contains(&s.last_second) {
            return Err(crate::StateError::Invalid(format!(
                "CMOS: clock offset {} s or last second {} out of range",
                s.offset, s.last_second
            )));
        }
        let mut st = self.lock();
        st.index = s.index & 0x7f;
        st.nmi_disabled = s.nmi_disabled;
        st.nvram = nvram;
        st.offset = s.offset;
        st.set_time = s.set_time;
        st.flags = s.flags;
        st.last_second = s.last_second;
        st.last_tick = s.last_tick;
        self.rearm(&mut st);
        Ok(())
    }
}

/// The periodic interrupt's period for register A (QEMU `periodic_timer_update`: rates 1 and 2
/// are 256 and 128 Hz; rate n >= 3 is 32768 >> (n - 1) Hz; 0 is off).
fn periodic_period_ns(a: u8) -> Option<u128> {
    let rs = a & REG_A_RS;
    if rs == 0 {
        return None;
    }
    let rs = if rs <= 2 { rs + 7 } else { rs };
    Some((1u128 << (rs - 1)) * 1_000_000_000 / RTC_BASE_HZ)
}

fn dividers_running(a: u8) -> bool {
    a & REG_A_DIVIDER_RESET != REG_A_DIVIDER_RESET
}

fn host_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Cmos {
    /// An RTC running from the host clock with QEMU's memory-size registers for `mem`.
    pub fn new(mem: CmosMemory) -> Self {
        Self::with_clock(mem, Box::new(host_clock))
    }

    /// An RTC reading time from `clock`.
    pub fn with_clock(mem: CmosMemory, clock: WallClock) -> Self {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        let mut nvram = [0u8; 128];
        nvram[usize::from(REG_A)] = REG_A_DEFAULT;
        nvram[usize::from(REG_B)] = REG_B_24H;
        nvram[usize::from(REG_D)] = REG_D_VRT;
        let mut set16 = |reg: usize, v: u64| {
            nvram[reg] = v as u8;
            nvram[reg + 1] = (v >> 8) as u8;
        };
        // pc_cmos_init: base memory in KiB (at most 640).
        set16(0x15, (mem.below_4g / KIB).min(640));
        // Extended memory above 1 MiB in KiB, capped at 65535 (also at 0x30).
        let ext = (mem.below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        set16(0x17, ext);
        set16(0x30, ext);
        // Memory between 16 MiB and 4 GiB in 64 KiB units, capped at 65535.
        set16(
            0x34,
            (mem.below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff),
        );
        // Memory above 4 GiB in 64 KiB units, 24 bits.
        let high = mem.above_4g / (64 * KIB);
        nvram[0x5b] = high as u8;
        nvram[0x5c] = (high >> 8) as u8;
        nvram[0x5d] = (high >> 16) as u8;
        nvram[0x5f] = mem.cpus.saturating_sub(1) as u8;
        let now = clock();
        Self {
            state: Mutex::new(CmosState {
                index: 0,
                nmi_disabled: false,
                nvram,
                offset: 0,
                set_time: None,
                flags: 0,
                last_second: now.as_secs() as i64,
                last_tick: 0,
                timer: None,
            }),
            clock,
            irq: OnceLock::new(),
            control: OnceLock::new(),
        }
    }

    /// IRQ 8 as an edge-triggered line for the platform's interrupt controller. Only the first
    /// call connects the device.
    pub fn irq_line(&self) -> Result<IrqLine, InterruptError> {
        let line = IrqLine::edge(RTC_IRQ)?;
        let own = line
            .trigger
            .try_clone()
            .map_err(|source| InterruptError::CloneEventFd {
                gsi: RTC_IRQ,
                source,
            })?;
        let _ = self.irq.set(own);
        Ok(line)
    }

    /// Where an alarm with AIE set sends [`VmRequest::RtcWake`]. Only the first call counts.
    pub fn connect_wake(&self, control: Arc<dyn VmControl>) {
        let _ = self.control.set(control);
    }

    /// The interrupt timer's descriptor, for the VMM's event loop to poll (readable when it
    /// expires: call [`Cmos::timer_fired`]). Created on the first call; it lives as long as the
    /// device.
    pub fn timer_fd(&self) -> std::io::Result<RawFd> {
        let mut st = self.lock();
        if st.timer.is_none() {
            st.timer = Some(TimerFd::new()?);
        }
        self.rearm(&mut st);
        Ok(st.timer.as_ref().map_or(-1, |t| t.as_raw_fd()))
    }

    /// The timer expired: update the flags, raise IRQ 8 if due, ask for a wake-up on an enabled
    /// alarm, and arm the timer for the next event.
    pub fn timer_fired(&self) {
        let wake = {
            let mut st = self.lock();
            let wake = self.service(&mut st);
            self.rearm(&mut st);
            wake
        };
        if let (true, Some(control)) = (wake, self.control.get()) {
            control.request(VmRequest::RtcWake);
        }
    }

    /// The machine enters S3: the shutdown status byte tells firmware to resume (QEMU's RTC
    /// suspend notifier).
    pub fn suspend(&self) {
        self.lock().nvram[usize::from(REG_SHUTDOWN_STATUS)] = SHUTDOWN_S3_RESUME;
    }

    /// System reset (also on wake-up from S3), as QEMU's `rtc_reset`: the periodic and alarm
    /// interrupts and the square wave off, the flags cleared; time and NVRAM kept.
    pub fn reset(&self) {
        let mut st = self.lock();
        st.nvram[usize::from(REG_B)] &= !(REG_B_PIE | REG_B_AIE | REG_B_SQWE);
        st.flags = 0;
        self.rearm(&mut st);
    }

    /// Bring register C up to date with the clock; raise IRQ 8 when IRQF becomes set. Returns
    /// whether an alarm matched with AIE on.
    fn service(&self, st: &mut CmosState) -> bool {
        let host = (self.clock)();
        let (a, b) = (st.nvram[usize::from(REG_A)], st.nvram[usize::from(REG_B)]);
        let mut alarm = false;
        if dividers_running(a) && b & REG_B_SET == 0 {
            let now = host.as_secs() as i64 + st.offset;
            if now > st.last_second {
                st.flags |= REG_C_UF;
                // Every second since the last look, at most a day (the alarm repeats daily).
                let from = (st.last_second + 1).max(now - 86_399);
                alarm = (from..=now).any(|s| Self::alarm_matches(st, DateTime::from_unix(s)));
                if alarm {
                    st.flags |= REG_C_AF;
                }
            }
            st.last_second = now;
        }
        if let Some(period) = periodic_period_ns(a) {
            let tick = host.as_nanos() / period;
            if tick > st.last_tick && b & REG_B_PIE != 0 && dividers_running(a) {
                st.flags |= REG_C_PF;
            }
            st.last_tick = tick;
        }
        if st.flags & b & (REG_C_PF | REG_C_AF | REG_C_UF) != 0 && st.flags & REG_C_IRQF == 0 {
            st.flags |= REG_C_IRQF;
            if let Some(irq) = self.irq.get() {
                // Fails only if the counter would overflow: the line is pulsed anyway.
                let _ = irq.write(1);
            }
        }
        alarm && b & REG_B_AIE != 0
    }

    /// Whether the guest time `t` matches the alarm registers.
    fn alarm_matches(st: &CmosState, t: DateTime) -> bool {
        let b = st.nvram[usize::from(REG_B)];
        let reg = |r: u8| st.nvram[usize::from(r)];
        let any = |v: u8| v & ALARM_ANY == ALARM_ANY;
        let (s, m, h) = (
            reg(REG_SECONDS_ALARM),
            reg(REG_MINUTES_ALARM),
            reg(REG_HOURS_ALARM),
        );
        (any(s) || Self::decode(b, s) == t.second)
            && (any(m) || Self::decode(b, m) == t.minute)
            && (any(h) || Self::decode_hour(b, h) == t.hour)
    }

    /// Arm the timer for the next event an enabled interrupt waits for, or stop it.
    fn rearm(&self, st: &mut CmosState) {
        let host = (self.clock)();
        let (a, b) = (st.nvram[usize::from(REG_A)], st.nvram[usize::from(REG_B)]);
        let mut next: Option<u128> = None;
        if dividers_running(a) {
            if b & (REG_B_UIE | REG_B_AIE) != 0 && b & REG_B_SET == 0 {
                // The next second boundary (the guest's seconds tick with the host's).
                next = Some(1_000_000_000 - u128::from(host.subsec_nanos()));
            }
            if let (true, Some(period)) = (b & REG_B_PIE != 0, periodic_period_ns(a)) {
                let rest = period - host.as_nanos() % period;
                next = Some(next.map_or(rest, |n| n.min(rest)));
            }
        }
        let Some(timer) = st.timer.as_mut() else {
            return;
        };
        let result = match next {
            // A zero duration would disarm it.
            Some(ns) => timer.reset(Duration::from_nanos(ns.max(1) as u64), None),
            None => timer.clear(),
        };
        if let Err(e) = result {
            tracing::warn!("RTC timer: {e}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, CmosState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets a byte of the battery-backed RAM (index 0x0e-0x7f), as the board does for what
    /// firmware reads there (boot order, disk geometry). Clock registers are not touched.
    pub fn set_nvram(&self, index: u8, value: u8) {
        if (0x0e..0x80).contains(&index) {
            self.lock().nvram[usize::from(index)] = value;
        }
    }

    /// Whether the guest has masked NMIs through bit 7 of port 0x70.
    pub fn nmi_masked(&self) -> bool {
        self.lock().nmi_disabled
    }

    fn now(&self, st: &CmosState) -> (DateTime, Duration) {
        let host = (self.clock)();
        let secs = host.as_secs() as i64 + st.offset;
        let frac = Duration::from_nanos(u64::from(host.subsec_nanos()));
        (DateTime::from_unix(secs), frac)
    }

    fn encode(b: u8, v: u32) -> u8 {
        if b & REG_B_DM_BINARY != 0 {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(b: u8, v: u8) -> u32 {
        if b & REG_B_DM_BINARY != 0 {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(b: u8, hour: u32) -> u8 {
        if b & REG_B_24H != 0 {
            return Self::encode(b, hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        Self::encode(b, h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(b: u8, v: u8) -> u32 {
        if b & REG_B_24H != 0 {
            return Self::decode(b, v) % 24;
        }
        let h = Self::decode(b, v & !HOUR_PM) % 12;
        if v & HOUR_PM != 0 {
            h + 12
        } else {
            h
        }
    }

    fn read_reg(&self, st: &mut CmosState, reg: u8) -> u8 {
        let b = st.nvram[usize::from(REG_B)];
        let time = || st.set_time.unwrap_or_else(|| self.now(st).0);
        match reg {
            REG_SECONDS => Self::encode(b, time().second),
            REG_MINUTES => Self::encode(b, time().minute),
            REG_HOURS => Self::encode_hour(b, time().hour),
            REG_WEEKDAY => Self::encode(b, time().weekday + 1),
            REG_DAY => Self::encode(b, time().day),
            REG_MONTH => Self::encode(b, time().month),
            REG_YEAR => Self::encode(b, time().year.rem_euclid(100) as u32),
            REG_CENTURY => Self::encode(b, time().year.div_euclid(100).rem_euclid(100) as u32),
            REG_A => {
                let a = st.nvram[usize::from(REG_A)] & !REG_A_UIP;
                let (_, frac) = self.now(st);
                let updating = b & REG_B_SET == 0 && frac >= Duration::from_secs(1) - UIP_WINDOW;
                a | if updating { REG_A_UIP } else { 0 }
            }
            REG_C => {
                self.service(st);
                std::mem::take(&mut st.flags)
            }
            REG_D => REG_D_VRT,
            _ => st.nvram[usize::from(reg & 0x7f)],
        }
    }

    fn write_reg(&self, st: &mut CmosState, reg: u8, v: u8) {
        let b = st.nvram[usize::from(REG_B)];
        let is_time = matches!(
            reg,
            REG_SECONDS
                | REG_MINUTES
                | REG_HOURS
                | REG_WEEKDAY
                | REG_DAY
                | REG_MONTH
                | REG_YEAR
                | REG_CENTURY
        );
        if is_time {
            let mut t = st.set_time.unwrap_or_else(|| self.now(st).0);
            match reg {
                REG_SECONDS => t.second = Self::decode(b, v).min(59),
                REG_MINUTES => t.minute = Self::decode(b, v).min(59),
                REG_HOURS => t.hour = Self::decode_hour(b, v),
                REG_WEEKDAY => {} // derived from the date
                REG_DAY => t.day = Self::decode(b, v).clamp(1, 31),
                REG_MONTH => t.month = Self::decode(b, v).clamp(1, 12),
                REG_YEAR => {
                    t.year = t.year.div_euclid(100) * 100 + i64::from(Self::decode(b, v) % 100)
                }
                _ => t.year = i64::from(Self::decode(b, v) % 100) * 100 + t.year.rem_euclid(100),
            }
            if b & REG_B_SET != 0 {
                st.set_time = Some(t);
            } else {
                self.commit(st, t);
            }
            return;
        }
        match reg {
            REG_A => {
                // Flags due under the old rate first.
                self.service(st);
                st.nvram[usize::from(REG_A)] = v & !REG_A_UIP;
                self.rearm(st);
            }
            REG_B => {
                self.service(st);
                if v & REG_B_SET != 0 && b & REG_B_SET == 0 {
                    st.set_time = Some(self.now(st).0);
                } else if v & REG_B_SET == 0 {
                    if let Some(t) = st.set_time.take() {
                        self.commit(st, t);
                    }
                }
                st.nvram[usize::from(REG_B)] = v;
                // An interrupt enabled while its flag is already set raises IRQF now.
                self.service(st);
                self.rearm(st);
            }
            REG_C | REG_D => {} // read-only
            _ => st.nvram[usize::from(reg & 0x7f)] = v,
        }
    }

    /// Makes `t` the current guest time; UF and AF count from it.
    fn commit(&self, st: &mut CmosState, t: DateTime) {
        let host = (self.clock)().as_secs() as i64;
        st.offset = t.to_unix() - host;
        st.last_second = t.to_unix();
        self.rearm(st);
    }
}

impl BusDevice for Cmos {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut st = self.lock();
        let value = match offset {
            // The index register is write-only; QEMU reads 0xff there.
            0 => 0xff,
            1 => {
                let index = st.index;
                self.read_reg(&mut st, index)
            }
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = value;
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        let mut st = self.lock();
        match offset {
            0 => {
                st.index = v & 0x7f;
                st.nmi_disabled = v & NMI_DISABLE != 0;
            }
            1 => {
                let index = st.index;
                self.write_reg(&mut st, index, v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;
    /// 2024-02-29 13:45:30 UTC, a Thursday.
    const T0: u64 = 1_709_214_330;

    fn cmos_at(nanos: Arc<AtomicU64>, mem: CmosMemory) -> Cmos {
        Cmos::with_clock(
            mem,
            Box::new(move || Duration::from_nanos(nanos.load(Ordering::Relaxed))),
        )
    }

    fn mem(below: u64, above: u64) -> CmosMemory {
        CmosMemory {
            below_4g: below,
            above_4g: above,
            cpus: 4,
        }
    }

    fn rd(c: &Cmos, reg: u8) -> u8 {
        c.write(0, &[reg]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    fn wr(c: &Cmos, reg: u8, v: u8) {
        c.write(0, &[reg]);
        c.write(1, &[v]);
    }

    #[test]
    fn calendar_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-1000i64, 0, 11_016, 11_017, 19_782, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        let t = DateTime::from_unix(T0 as i64);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 2, 29, 13, 45, 30)
        );
        assert_eq!(t.weekday, 4);
        assert_eq!(t.to_unix(), T0 as i64);
    }

    #[test]
    fn bcd_24h_time_from_the_clock() {
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        assert_eq!(rd(&c, REG_B), REG_B_24H);
        assert_eq!(rd(&c, REG_SECONDS), 0x30);
        assert_eq!(rd(&c, REG_MINUTES), 0x45);
        assert_eq!(rd(&c, REG_HOURS), 0x13);
        assert_eq!(rd(&c, REG_WEEKDAY), 5);
        assert_eq!(rd(&c, REG_DAY), 0x29);
        assert_eq!(rd(&c, REG_MONTH), 0x02);
        assert_eq!(rd(&c, REG_YEAR), 0x24);
        assert_eq!(rd(&c, REG_CENTURY), 0x20);
        assert_eq!(rd(&c, REG_D), 0x80);
        assert_eq!(rd(&c, REG_C), 0);
        now.fetch_add(61_000_000_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_SECONDS), 0x31);
        assert_eq!(rd(&c, REG_MINUTES), 0x46);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        wr(&c, REG_B, REG_B_DM_BINARY);
        assert_eq!(rd(&c, REG_HOURS), 1 | HOUR_PM);
        assert_eq!(rd(&c, REG_SECONDS), 30);
        assert_eq!(rd(&c, REG_YEAR), 24);
        wr(&c, REG_B, 0);
        assert_eq!(rd(&c, REG_HOURS), 0x01 | HOUR_PM);
        // Midnight is 12 AM.
        now.store((T0 - 13 * 3600) * 1_000_000_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_HOURS), 0x12);
    }

    #[test]
    fn setting_the_time_moves_the_offset() {
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        wr(&c, REG_B, REG_B_24H | REG_B_SET);
        wr(&c, REG_HOURS, 0x08);
        wr(&c, REG_YEAR, 0x99);
        wr(&c, REG_CENTURY, 0x19);
        now.fetch_add(5_000_000_000, Ordering::Relaxed);
        // Frozen while SET is on.
        assert_eq!(rd(&c, REG_SECONDS), 0x30);
        assert_eq!(rd(&c, REG_A) & REG_A_UIP, 0);
        wr(&c, REG_B, REG_B_24H);
        assert_eq!(rd(&c, REG_HOURS), 0x08);
        assert_eq!(rd(&c, REG_YEAR), 0x99);
        assert_eq!(rd(&c, REG_CENTURY), 0x19);
        now.fetch_add(2_000_000_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_SECONDS), 0x32);
        // A direct write without SET takes effect at once.
        wr(&c, REG_MINUTES, 0x00);
        assert_eq!(rd(&c, REG_MINUTES), 0x00);
    }

    #[test]
    fn update_in_progress_near_the_second_boundary() {
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000 + 500_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        assert_eq!(rd(&c, REG_A), REG_A_DEFAULT);
        now.store(T0 * 1_000_000_000 + 999_900_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_A), REG_A_DEFAULT | REG_A_UIP);
        wr(&c, REG_A, 0xff);
        assert_eq!(rd(&c, REG_A), 0x7f | REG_A_UIP);
    }

    #[test]
    fn memory_registers_like_qemu() {
        let c = cmos_at(Arc::new(AtomicU64::new(0)), mem(256 * MIB, 0));
        assert_eq!((rd(&c, 0x15), rd(&c, 0x16)), (0x80, 0x02)); // 640
                                                                // (256 - 1) MiB in KiB = 261120 -> capped 65535.
        assert_eq!((rd(&c, 0x17), rd(&c, 0x18)), (0xff, 0xff));
        assert_eq!((rd(&c, 0x30), rd(&c, 0x31)), (0xff, 0xff));
        // (256 - 16) MiB / 64 KiB = 3840.
        assert_eq!((rd(&c, 0x34), rd(&c, 0x35)), (0x00, 0x0f));
        assert_eq!((rd(&c, 0x5b), rd(&c, 0x5c), rd(&c, 0x5d)), (0, 0, 0));
        assert_eq!(rd(&c, 0x5f), 3);
        let c = cmos_at(Arc::new(AtomicU64::new(0)), mem(3 << 30, 5 << 30));
        // (3 GiB - 16 MiB) / 64 KiB = 48896 = 0xbf00.
        assert_eq!((rd(&c, 0x34), rd(&c, 0x35)), (0x00, 0xbf));
        // 5 GiB / 64 KiB = 81920 = 0x014000.
        assert_eq!(
            (rd(&c, 0x5b), rd(&c, 0x5c), rd(&c, 0x5d)),
            (0x00, 0x40, 0x01)
        );
        let c = cmos_at(Arc::new(AtomicU64::new(0)), mem(2 * MIB, 0));
        // 1 MiB of extended memory = 1024 KiB.
        assert_eq!((rd(&c, 0x17), rd(&c, 0x18)), (0x00, 0x04));
        assert_eq!((rd(&c, 0x34), rd(&c, 0x35)), (0, 0));
    }

    #[test]
    fn nmi_mask_nvram_and_odd_accesses() {
        let c = cmos_at(Arc::new(AtomicU64::new(0)), mem(256 * MIB, 0));
        assert!(!c.nmi_masked());
        c.write(0, &[0x80 | 0x40]);
        assert!(c.nmi_masked());
        c.write(1, &[0x5a]);
        assert_eq!(rd(&c, 0x40), 0x5a);
        assert!(!c.nmi_masked(), "rd() wrote the index without bit 7");
        // Registers C and D are read-only.
        wr(&c, REG_D, 0);
        assert_eq!(rd(&c, REG_D), 0x80);
        let mut w = [0xaau8; 4];
        c.read(0, &mut w);
        assert_eq!(w, [0xff, 0, 0, 0]);
        c.read(7, &mut w[..1]);
        c.read(1, &mut []);
        c.write(1, &[]);
        c.write(u64::MAX, &[1]);
        assert_eq!(rd(&c, 0x40), 0x5a);
    }

    fn raises(line: &IrqLine) -> u64 {
        line.trigger.read().unwrap_or(0)
    }

    #[test]
    fn update_and_alarm_flags_raise_irq8_and_wake() {
        use crate::test_utils::RecordingVmControl;
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000 + 100_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        let line = c.irq_line().unwrap();
        assert_eq!(line.gsi, RTC_IRQ);
        let ctl = Arc::new(RecordingVmControl::default());
        c.connect_wake(ctl.clone());
        // Alarm at 13:45:32 (BCD), two seconds ahead.
        wr(&c, REG_SECONDS_ALARM, 0x32);
        wr(&c, REG_MINUTES_ALARM, 0x45);
        wr(&c, REG_HOURS_ALARM, 0x13);
        wr(&c, REG_B, REG_B_24H | REG_B_AIE);
        now.fetch_add(1_000_000_000, Ordering::Relaxed);
        c.timer_fired();
        assert_eq!(raises(&line), 0, "UF alone, UIE off");
        assert!(ctl.requests().is_empty());
        now.fetch_add(1_000_000_000, Ordering::Relaxed);
        c.timer_fired();
        assert_eq!(raises(&line), 1);
        assert_eq!(ctl.requests(), vec![VmRequest::RtcWake]);
        assert_eq!(rd(&c, REG_C), REG_C_IRQF | REG_C_AF | REG_C_UF);
        assert_eq!(rd(&c, REG_C), 0, "reading C clears it");
        // Don't-care values: every second matches; UIE raises on updates.
        wr(&c, REG_SECONDS_ALARM, 0xff);
        wr(&c, REG_B, REG_B_24H | REG_B_UIE);
        now.fetch_add(1_000_000_000, Ordering::Relaxed);
        c.timer_fired();
        assert_eq!(raises(&line), 1);
        assert_eq!(rd(&c, REG_C), REG_C_IRQF | REG_C_AF | REG_C_UF);
        assert_eq!(ctl.requests().len(), 1, "AIE off: no wake-up");
        // Reset clears AIE/PIE and the flags, keeps UIE (QEMU) and the S3 shutdown byte.
        wr(&c, REG_B, REG_B_24H | REG_B_AIE | REG_B_PIE | REG_B_UIE);
        now.fetch_add(1_000_000_000, Ordering::Relaxed);
        c.suspend();
        c.reset();
        assert_eq!(rd(&c, REG_B), REG_B_24H | REG_B_UIE);
        assert_eq!(rd(&c, REG_SHUTDOWN_STATUS), SHUTDOWN_S3_RESUME);
    }

    #[test]
    fn periodic_flag_follows_the_rate_and_pie() {
        let now = Arc::new(AtomicU64::new(T0 * 1_000_000_000));
        let c = cmos_at(now.clone(), mem(256 * MIB, 0));
        let line = c.irq_line().unwrap();
        assert_eq!(periodic_period_ns(REG_A_DEFAULT), Some(976_562));
        assert_eq!(periodic_period_ns(0x21), Some(3_906_250));
        assert_eq!(periodic_period_ns(0x2f), Some(500_000_000));
        assert_eq!(periodic_period_ns(0x20), None);
        now.fetch_add(5_000_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_C), 0, "PIE off: no PF");
        wr(&c, REG_B, REG_B_24H | REG_B_PIE);
        assert_eq!(raises(&line), 0, "enabling starts a fresh period");
        now.fetch_add(1_000_000, Ordering::Relaxed);
        c.timer_fired();
        assert_eq!(raises(&line), 1);
        assert_eq!(rd(&c, REG_C), REG_C_IRQF | REG_C_PF);
        // Dividers in reset: nothing.
        wr(&c, REG_A, 0x66);
        now.fetch_add(10_000_000, Ordering::Relaxed);
        assert_eq!(rd(&c, REG_C), 0);
    }

    #[test]
    fn timer_is_armed_only_while_an_interrupt_is_enabled() {
        let c = Cmos::new(mem(256 * MIB, 0));
        let _fd = c.timer_fd().unwrap();
        let armed = |c: &Cmos| c.lock().timer.as_ref().unwrap().is_armed().unwrap();
        assert!(!armed(&c));
        wr(&c, REG_B, REG_B_24H | REG_B_AIE);
        assert!(armed(&c));
        c.reset();
        assert!(!armed(&c));
    }
}
