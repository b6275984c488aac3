//! Exit statistics: per vCPU and per exit kind, how many exits and how long the VMM spent handling
//! them (from `KVM_RUN` returning to the vCPU thread until it calls `KVM_RUN` again).
//!
//! The hot path allocates nothing and takes no lock. Each vCPU owns a table of slots (one per exit
//! kind and device, laid out once from the buses before the vCPUs start). Only that vCPU's thread
//! writes its table, with relaxed atomic loads and stores (plain `mov`s on x86, no locked
//! instructions), so any thread can take a [`ExitStats::snapshot`] at any time without stopping
//! the vCPUs; a snapshot taken while a vCPU runs may see one exit counted but not yet timed.
//!
//! Time is read with `rdtsc` (no system call, ~10 ns) and converted to nanoseconds at snapshot
//! time from the TSC and monotonic-clock readings at start and at the snapshot, so start-up needs
//! no calibration wait. Durations go into a log-scale histogram with 8 sub-buckets per power of
//! two (relative bucket width 12.5%); p50 and p99 are the midpoints of the buckets holding them.

use rvmm_cli::ExitStatsConfig;
use rvmm_devices::virtio::DeviceCounters;
use rvmm_devices::{AddressSpace, Bus, DeviceId, MmioBus, PioBus};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Errors writing the reports.
#[derive(Debug, thiserror::Error)]
pub enum ExitStatsError {
    #[error("-exit-stats: cannot write '{path}': {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Version tag of the JSON document (see docs/EXIT-STATS.md).
pub const SCHEMA: &str = "rvmm-exit-stats/1";

/// log2 of the sub-buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Durations of 2^MAX_EXP ticks or more (about 13 hours at 3 GHz) share the last bucket.
const MAX_EXP: u32 = 47;
/// Buckets 0..SUB hold the values 0..SUB exactly; then SUB per power of two below 2^MAX_EXP;
/// then one overflow bucket.
pub const BUCKETS: usize = SUB * (MAX_EXP - SUB_BITS + 1) as usize + 1;

/// Exits that do not involve a device, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Hlt,
    Shutdown,
    Interrupted,
    /// End of a level-triggered interrupt for the user-space IOAPIC (split irqchip).
    IoapicEoi,
    SystemEvent,
    /// An instruction KVM could not emulate and rvmm completed (int3, iret).
    EmulationFallback,
    InternalError,
    FailEntry,
    Unhandled,
}

const FIXED_KINDS: [ExitKind; 9] = [
    ExitKind::Hlt,
    ExitKind::Shutdown,
    ExitKind::Interrupted,
    ExitKind::IoapicEoi,
    ExitKind::SystemEvent,
    ExitKind::EmulationFallback,
    ExitKind::InternalError,
    ExitKind::FailEntry,
    ExitKind::Unhandled,
];

impl ExitKind {
    fn name(self) -> &'static str {
        match self {
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Interrupted => "interrupted",
            ExitKind::IoapicEoi => "ioapic-eoi",
            ExitKind::SystemEvent => "system-event",
            ExitKind::EmulationFallback => "emulation-fallback",
            ExitKind::InternalError => "internal-error",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::Unhandled => "unhandled",
        }
    }
}

/// Direction of a bus access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    PioOut = 0,
    PioIn = 1,
    MmioWrite = 2,
    MmioRead = 3,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::PioOut => "pio-out",
            Access::PioIn => "pio-in",
            Access::MmioWrite => "mmio-write",
            Access::MmioRead => "mmio-read",
        }
    }
}

/// Where each (kind, device) pair lives in a vCPU's slot table.
///
/// ```text
/// [fixed kinds][unclaimed: pio-out, pio-in, mmio-write, mmio-read][pio id 0: out, in]...[mmio id 0: write, read]...
/// ```
#[derive(Debug, Clone)]
struct Layout {
    pio_devices: usize,
    mmio_devices: usize,
}

const UNCLAIMED_BASE: usize = FIXED_KINDS.len();
const DEVICES_BASE: usize = UNCLAIMED_BASE + 4;

impl Layout {
    fn slots(&self) -> usize {
        DEVICES_BASE + 2 * (self.pio_devices + self.mmio_devices)
    }

    /// Slot of a bus access that went to device `id`, or to no device. Ids beyond the layout
    /// (a device registered after the stats were set up) count as unclaimed rather than panic.
    #[inline]
    fn access(&self, access: Access, id: Option<DeviceId>) -> usize {
        id.and_then(|id| self.access_index(access, id.index()))
            .unwrap_or(UNCLAIMED_BASE + access as usize)
    }

    /// Slot of device index `index` for `access`, if the layout has it.
    fn access_index(&self, access: Access, index: usize) -> Option<usize> {
        let (devices, first, dir) = match access {
            Access::PioOut => (self.pio_devices, DEVICES_BASE, 0),
            Access::PioIn => (self.pio_devices, DEVICES_BASE, 1),
            Access::MmioWrite => (self.mmio_devices, DEVICES_BASE + 2 * self.pio_devices, 0),
            Access::MmioRead => (self.mmio_devices, DEVICES_BASE + 2 * self.pio_devices, 1),
        };
        (index < devices).then_some(first + 2 * index + dir)
    }
}

/// What a slot is, for reports.
#[derive(Debug, Clone)]
struct SlotLabel {
    kind: &'static str,
    device: Option<String>,
    /// Address range of the device ("0xe0-0xeb").
    range: Option<String>,
}

/// The labels of one bus's devices: their names and where they are mapped now (a PCI BAR may
/// have moved, or be unmapped, since the statistics were set up).
fn device_labels<S: AddressSpace>(
    bus: &Bus<S>,
    layout: &Layout,
    accesses: [Access; 2],
    out: &mut [SlotLabel],
) {
    let ranges = bus.ranges();
    for (index, name) in bus.names().into_iter().enumerate() {
        let here: Vec<String> = ranges
            .iter()
            .filter(|r| r.id.index() == index)
            .map(|r| format!("{:#x}-{:#x}", r.base, r.base + (r.len - 1)))
            .collect();
        let name = if name.is_empty() {
            here.first().cloned().unwrap_or_default()
        } else {
            name
        };
        for a in accesses {
            let slot = layout.access_index(a, index);
            if let Some(label) = slot.and_then(|i| out.get_mut(i)) {
                *label = SlotLabel {
                    kind: a.name(),
                    device: Some(name.clone()),
                    range: (!here.is_empty()).then(|| here.join(",")),
                };
            }
        }
    }
}

fn labels(pio: &PioBus, mmio: &MmioBus, layout: &Layout) -> Vec<SlotLabel> {
    let mut out: Vec<SlotLabel> = FIXED_KINDS
        .iter()
        .map(|k| SlotLabel {
            kind: k.name(),
            device: None,
            range: None,
        })
        .collect();
    for a in [
        Access::PioOut,
        Access::PioIn,
        Access::MmioWrite,
        Access::MmioRead,
    ] {
        out.push(SlotLabel {
            kind: a.name(),
            device: Some("unclaimed".into()),
            range: None,
        });
    }
    out.resize(layout.slots(), out[0].clone());
    device_labels(pio, layout, [Access::PioOut, Access::PioIn], &mut out);
    device_labels(
        mmio,
        layout,
        [Access::MmioWrite, Access::MmioRead],
        &mut out,
    );
    out
}

/// The histogram bucket of a duration of `ticks`.
#[inline]
fn bucket(ticks: u64) -> usize {
    if ticks < SUB as u64 {
        return ticks as usize;
    }
    let exp = (63 - ticks.leading_zeros()).min(MAX_EXP);
    if exp == MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((ticks >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    SUB * (exp - SUB_BITS + 1) as usize + sub
}

/// The lowest duration in ticks that falls in `bucket` (and, for `bucket + 1`, one past the
/// highest).
fn bucket_low(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let exp = (bucket / SUB) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUB) as u64;
    (SUB as u64 + sub) << (exp - SUB_BITS)
}

struct Slot {
    count: AtomicU64,
    ticks: AtomicU64,
    hist: [AtomicU64; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Add to a counter that only the calling thread writes: a load and a store, no locked
/// read-modify-write, still a well-defined read for other threads.
#[inline(always)]
fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// The time-stamp counter.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: rdtsc has no memory effects; every x86_64 CPU has it and rvmm never sets CR4.TSD
    // for itself (user space reading the TSC is what vDSO clock_gettime does too).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One vCPU's table. Written only by that vCPU's thread.
pub struct VcpuExitStats {
    layout: Layout,
    slots: Box<[Slot]>,
}

impl VcpuExitStats {
    fn new(layout: &Layout) -> Self {
        Self {
            layout: layout.clone(),
            slots: (0..layout.slots()).map(|_| Slot::new()).collect(),
        }
    }

    #[inline]
    fn record_slot(&self, slot: usize, ticks: u64) {
        if let Some(s) = self.slots.get(slot) {
            bump(&s.count, 1);
            bump(&s.ticks, ticks);
            bump(&s.hist[bucket(ticks)], 1);
        }
    }

    /// Count one exit of `kind` that took `ticks` to handle.
    #[inline]
    pub fn record(&self, kind: ExitKind, ticks: u64) {
        self.record_slot(kind as usize, ticks);
    }

    /// Count one bus access exit; `id` is the bus entry that handled it, None if unclaimed.
    #[inline]
    pub fn record_access(&self, access: Access, id: Option<DeviceId>, ticks: u64) {
        self.record_slot(self.layout.access(access, id), ticks);
    }
}

/// The statistics of every vCPU of a VM.
pub struct ExitStats {
    layout: Layout,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    vcpus: Vec<Arc<VcpuExitStats>>,
    start_tsc: u64,
    start: Instant,
    devices: Vec<DeviceSource>,
}

/// A device whose counters the report includes (virtio devices: bytes and requests served).
pub struct DeviceSource {
    /// The device's name, e.g. `virtio-rng`.
    pub device: &'static str,
    /// Where the guest finds it, e.g. `virtio-mmio@0xfeb00000`.
    pub at: String,
    /// The device's live counters (shared with its worker).
    pub counters: Arc<DeviceCounters>,
}

impl ExitStats {
    /// Lay out the tables from the devices registered on the buses so far (one slot pair per
    /// `DeviceId`; ranges may move later); `devices` are reported with their own counters.
    pub fn new(
        pio: Arc<PioBus>,
        mmio: Arc<MmioBus>,
        vcpus: u32,
        devices: Vec<DeviceSource>,
    ) -> Self {
        let layout = Layout {
            pio_devices: pio.device_count(),
            mmio_devices: mmio.device_count(),
        };
        Self {
            pio,
            mmio,
            vcpus: (0..vcpus)
                .map(|_| Arc::new(VcpuExitStats::new(&layout)))
                .collect(),
            start_tsc: now(),
            start: Instant::now(),
            devices,
            layout,
        }
    }

    /// The table of vCPU `id`, for its thread.
    pub fn vcpu(&self, id: u32) -> Option<Arc<VcpuExitStats>> {
        self.vcpus.get(id as usize).cloned()
    }

    /// The numbers so far, merged per vCPU and over all vCPUs. Lock-free; callable any time.
    pub fn snapshot(&self) -> ExitStatsReport {
        let elapsed_ns = self.start.elapsed().as_nanos() as u64;
        let ticks = now().wrapping_sub(self.start_tsc);
        // ns per TSC tick over the whole run so far; 1.0 if no time has passed (nothing to scale).
        let tick_ns = if ticks > 0 && elapsed_ns > 0 {
            elapsed_ns as f64 / ticks as f64
        } else {
            1.0
        };
        let labels = labels(&self.pio, &self.mmio, &self.layout);
        let nslots = labels.len();
        let mut total = vec![RawSlot::default(); nslots];
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for (id, v) in self.vcpus.iter().enumerate() {
            let mut exits = Vec::new();
            for (i, s) in v.slots.iter().enumerate() {
                let raw = RawSlot::read(s);
                if raw.count == 0 {
                    continue;
                }
                total[i].add(&raw);
                exits.push(raw.report(&labels[i], tick_ns));
            }
            vcpus.push(VcpuReport {
                vcpu: id as u32,
                exits,
            });
        }
        let total = total
            .iter()
            .zip(&labels)
            .filter(|(r, _)| r.count > 0)
            .map(|(r, l)| r.report(l, tick_ns))
            .collect();
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let c = d.counters.snapshot();
                DeviceReport {
                    device: d.device,
                    at: d.at.clone(),
                    requests: c.requests,
                    errors: c.errors,
                    bytes_to_guest: c.bytes_to_guest,
                    bytes_from_guest: c.bytes_from_guest,
                }
            })
            .collect();
        ExitStatsReport {
            schema: SCHEMA,
            elapsed_ns,
            tick_ns,
            devices,
            vcpus,
            total,
        }
    }
}

/// A slot's numbers read out of the atomics (not on the hot path).
#[derive(Clone)]
struct RawSlot {
    count: u64,
    ticks: u64,
    hist: Vec<u64>,
}

impl Default for RawSlot {
    fn default() -> Self {
        Self {
            count: 0,
            ticks: 0,
            hist: vec![0; BUCKETS],
        }
    }
}

impl RawSlot {
    fn read(s: &Slot) -> Self {
        Self {
            count: s.count.load(Ordering::Relaxed),
            ticks: s.ticks.load(Ordering::Relaxed),
            hist: s.hist.iter().map(|h| h.load(Ordering::Relaxed)).collect(),
        }
    }

    fn add(&mut self, o: &RawSlot) {
        self.count += o.count;
        self.ticks += o.ticks;
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }

    /// Midpoint (in ticks) of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> f64 {
        let n: u64 = self.hist.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, &c) in self.hist.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = bucket_low(b) as f64;
                let hi = if b + 1 < BUCKETS {
                    bucket_low(b + 1) as f64
                } else {
                    lo
                };
                return (lo + hi) / 2.0;
            }
        }
        0.0
    }

    fn report(&self, label: &SlotLabel, tick_ns: f64) -> ExitReport {
        let ns = |t: f64| (t * tick_ns).round() as u64;
        let histogram = self
            .hist
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(b, &count)| {
                let hi = if b + 1 < BUCKETS {
                    bucket_low(b + 1)
                } else {
                    u64::MAX
                };
                HistogramBucket {
                    lo_ns: ns(bucket_low(b) as f64),
                    hi_ns: if hi == u64::MAX {
                        u64::MAX
                    } else {
                        ns(hi as f64)
                    },
                    count,
                }
            })
            .collect();
        ExitReport {
            kind: label.kind,
            device: label.device.clone(),
            range: label.range.clone(),
            count: self.count,
            total_ns: ns(self.ticks as f64),
            mean_ns: ns(self.ticks as f64 / self.count.max(1) as f64),
            p50_ns: ns(self.quantile(0.50)),
            p99_ns: ns(self.quantile(0.99)),
            histogram,
        }
    }
}

/// Everything `-exit-stats` reports, also the answer to QMP `x-query-exit-stats`
/// (`serde_json::to_value(stats.snapshot())`). Schema: docs/EXIT-STATS.md.
#[derive(Debug, Clone, Serialize)]
pub struct ExitStatsReport {
    pub schema: &'static str,
    /// Time since the statistics were set up (just before the vCPUs started).
    pub elapsed_ns: u64,
    /// Nanoseconds per TSC tick used for the conversion.
    pub tick_ns: f64,
    pub vcpus: Vec<VcpuReport>,
    /// Every vCPU merged.
    pub total: Vec<ExitReport>,
    /// What each virtio device served, in `-device` order.
    pub devices: Vec<DeviceReport>,
}

/// One device's counters (see `rvmm_devices::virtio::DeviceCounters`).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// `virtio-rng`, `virtio-blk` or `virtio-net`.
    pub device: &'static str,
    /// Its transport, e.g. `virtio-mmio@0xfeb00000`.
    pub at: String,
    /// Requests (rng, blk) or frames (net), failed ones included.
    pub requests: u64,
    /// Failed requests, malformed chains, and RX buffers returned unused.
    pub errors: u64,
    /// Payload written into guest memory: random bytes, sectors read, frames received.
    pub bytes_to_guest: u64,
    /// Payload taken from guest memory: sectors written, frames sent.
    pub bytes_from_guest: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VcpuReport {
    pub vcpu: u32,
    pub exits: Vec<ExitReport>,
}

/// One exit kind (on one device), for one vCPU or all.
#[derive(Debug, Clone, Serialize)]
pub struct ExitReport {
    /// pio-out, pio-in, mmio-write, mmio-read, hlt, shutdown, interrupted, system-event,
    /// emulation-fallback, internal-error, fail-entry, unhandled.
    pub kind: &'static str,
    /// Bus entry name, "unclaimed", or absent for kinds without a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    pub count: u64,
    /// Time in the VMM handling these exits.
    pub total_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Non-empty buckets, in increasing order.
    pub histogram: Vec<HistogramBucket>,
}

/// Exits that took `lo_ns <= t < hi_ns`.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

impl ExitStatsReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A human-readable table (what `-exit-stats` prints at exit).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rvmm exit statistics: {} vCPU(s), {:.3} s; times are rvmm's share of an exit (KVM_RUN return to dispatch done)",
            self.vcpus.len(),
            self.elapsed_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "{:<5} {:<18} {:<22} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "vcpu", "exit", "device", "count", "total us", "mean ns", "p50 ns", "p99 ns"
        );
        let mut rows = |who: &str, exits: &[ExitReport]| {
            for e in exits {
                let _ = writeln!(
                    out,
                    "{:<5} {:<18} {:<22} {:>12} {:>12.1} {:>10} {:>10} {:>10}",
                    who,
                    e.kind,
                    e.device.as_deref().unwrap_or("-"),
                    e.count,
                    e.total_ns as f64 / 1e3,
                    e.mean_ns,
                    e.p50_ns,
                    e.p99_ns
                );
            }
        };
        for v in &self.vcpus {
            rows(&v.vcpu.to_string(), &v.exits);
        }
        if self.vcpus.len() > 1 {
            rows("all", &self.total);
        }
        if !self.devices.is_empty() {
            let _ = writeln!(
                out,
                "{:<12} {:<24} {:>10} {:>8} {:>16} {:>16}",
                "device", "at", "requests", "errors", "bytes to guest", "bytes from guest"
            );
            for d in &self.devices {
                let _ = writeln!(
                    out,
                    "{:<12} {:<24} {:>10} {:>8} {:>16} {:>16}",
                    d.device, d.at, d.requests, d.errors, d.bytes_to_guest, d.bytes_from_guest
                );
            }
        }
        out
    }
}

/// Print the table to stderr and/or write the JSON file, as `-exit-stats` asked.
/// Find a `json=` path that cannot be written at start-up, not when the guest ends: open it
/// for writing (creating it, not truncating it yet).
pub fn check_report_path(cfg: &ExitStatsConfig) -> Result<(), ExitStatsError> {
    if let Some(path) = &cfg.json {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| ExitStatsError::Write {
                path: path.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

pub fn write_reports(
    cfg: &ExitStatsConfig,
    report: &ExitStatsReport,
) -> Result<(), ExitStatsError> {
    if cfg.table {
        eprint!("{}", report.table());
    }
    if let Some(path) = &cfg.json {
        let err = |source| ExitStatsError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut text = serde_json::to_string_pretty(report).map_err(|e| err(e.into()))?;
        text.push('\n');
        std::fs::write(path, text).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvmm_devices::BusDevice;

    struct Nop;
    impl BusDevice for Nop {
        fn read(&self, _: u64, _: &mut [u8]) {}
        fn write(&self, _: u64, _: &[u8]) {}
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, 1 << 46, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS);
            assert!(b >= last, "bucket({v}) = {b} < {last}");
            last = b;
            assert!(bucket_low(b) <= v, "bucket_low({b}) > {v}");
            if b + 1 < BUCKETS {
                assert!(v < bucket_low(b + 1), "{v} not below bucket {}", b + 1);
            }
        }
        // Relative width of a bucket is at most 1/SUB.
        let b = bucket(1_000_000);
        let (lo, hi) = (bucket_low(b), bucket_low(b + 1));
        assert!((hi - lo) as f64 / lo as f64 <= 1.0 / SUB as f64);
    }

    #[test]
    fn counts_per_device_and_quantiles() {
        let pio = Arc::new(PioBus::new());
        let mmio = Arc::new(MmioBus::new());
        pio.add("COM1", 0x3f8, 8, Arc::new(Nop)).unwrap();
        let testdev = pio.add("pc-testdev", 0xe0, 12, Arc::new(Nop)).unwrap();
        let iomem = mmio
            .add("pc-testdev iomem", 0xff00_0000, 0x1_0000, Arc::new(Nop))
            .unwrap();
        // Registered while the guest has not mapped it: counted, labelled without a range.
        let bar = mmio.register("pci-testdev BAR0", Arc::new(Nop));
        let counters = Arc::new(DeviceCounters::default());
        counters.completed(64, 0);
        counters.failed();
        let device = DeviceSource {
            device: "virtio-rng",
            at: "virtio-mmio@0xfeb00000".into(),
            counters,
        };
        let stats = ExitStats::new(pio.clone(), mmio.clone(), 2, vec![device]);
        let v0 = stats.vcpu(0).unwrap();
        let v1 = stats.vcpu(1).unwrap();
        assert!(stats.vcpu(2).is_none());
        for i in 0..1000 {
            v0.record_access(Access::PioOut, Some(testdev), 100 + (i % 2));
        }
        for _ in 0..99 {
            v1.record_access(Access::PioIn, Some(testdev), 1000);
        }
        v1.record_access(Access::PioIn, Some(testdev), 1_000_000);
        v1.record_access(Access::MmioRead, Some(iomem), 50);
        v1.record_access(Access::PioOut, None, 10);
        // A device registered after the layout counts as unclaimed instead of panicking.
        let late = pio.register("late", Arc::new(Nop));
        v1.record_access(Access::PioOut, Some(late), 10);
        v0.record_access(Access::MmioWrite, Some(bar), 10);
        mmio.insert(bar, 0xc000_0000, 0x1000).unwrap();
        v0.record_access(Access::MmioWrite, Some(bar), 10);
        v0.record(ExitKind::Hlt, 7);
        let r = stats.snapshot();
        let find = |exits: &[ExitReport], kind: &str, dev: Option<&str>| {
            exits
                .iter()
                .find(|e| e.kind == kind && e.device.as_deref() == dev)
                .cloned()
                .unwrap_or_else(|| panic!("{kind} {dev:?} missing"))
        };
        let out = find(&r.total, "pio-out", Some("pc-testdev"));
        assert_eq!(out.count, 1000);
        assert_eq!(out.range.as_deref(), Some("0xe0-0xeb"));
        let inn = find(&r.vcpus[1].exits, "pio-in", Some("pc-testdev"));
        assert_eq!(inn.count, 100);
        assert_eq!(find(&r.total, "pio-out", Some("unclaimed")).count, 2);
        assert_eq!(
            find(&r.total, "mmio-read", Some("pc-testdev iomem")).count,
            1
        );
        assert_eq!(find(&r.vcpus[0].exits, "hlt", None).count, 1);
        let bar = find(&r.total, "mmio-write", Some("pci-testdev BAR0"));
        assert_eq!(bar.count, 2);
        assert_eq!(bar.range.as_deref(), Some("0xc0000000-0xc0000fff"));
        assert_eq!(r.vcpus[0].exits.len(), 3);
        // p50 of 99 x 1000 ticks and one outlier sits at 1000, p99 too; quantiles are bucket
        // midpoints within 1/SUB of the value.
        let p50 = inn.p50_ns as f64 / r.tick_ns;
        assert!((p50 - 1000.0).abs() / 1000.0 < 0.07, "p50 {p50}");
        let hist_total: u64 = inn.histogram.iter().map(|b| b.count).sum();
        assert_eq!(hist_total, 100);
        let json = r.to_json();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["total"].as_array().unwrap().len(), 6);
        assert_eq!(json["devices"][0]["device"], "virtio-rng");
        assert_eq!(json["devices"][0]["requests"], 2);
        assert_eq!(json["devices"][0]["errors"], 1);
        assert_eq!(json["devices"][0]["bytes_to_guest"], 64);
        let table = r.table();
        assert!(table.contains("pc-testdev"), "{table}");
        assert!(table.contains("all"), "{table}");
        assert!(table.contains("virtio-mmio@0xfeb00000"), "{table}");
    }
}
