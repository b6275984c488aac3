//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2): one register window per device.
//!
//! The driver's queue notifications normally never reach this code: the VMM registers each
//! queue's eventfd as a KVM ioeventfd on QueueNotify, so the vCPU does not even exit. A
//! QueueNotify write that does arrive here (no ioeventfd) signals the same eventfd.

use super::worker::PauseGate;
use super::{
    ActivateContext, ActiveQueue, DeviceCounters, GuestMemory, VirtioDevice, VirtioInterrupt,
    STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1,
};
use crate::BusDevice;
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// Bytes of register space per transport (QEMU microvm: 512).
pub const VIRTIO_MMIO_SIZE: u64 = 0x200;
/// "virt" (§4.2.2 MagicValue).
const MAGIC: u32 = 0x7472_6976;
/// Vendor ID QEMU reports ("QEMU"), so guests see the same value on both VMMs.
const VENDOR_ID: u32 = 0x554d_4551;

// Register offsets (§4.2.2).
const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
/// QueueNotify: the VMM puts an ioeventfd per queue here (datamatch = queue index).
pub const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const SHM_LEN_LOW: u64 = 0x0b0;
const SHM_LEN_HIGH: u64 = 0x0b4;
const SHM_BASE_LOW: u64 = 0x0b8;
const SHM_BASE_HIGH: u64 = 0x0bc;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

/// Where a transport sits in the guest: its window and interrupt line. The kernel command line
/// (`virtio_mmio.device=`) and the ACPI DSDT (LNRO0005) announce it from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub size: u64,
    /// IOAPIC input / GSI.
    pub irq: u32,
}

impl MmioSlot {
    /// Linux's `virtio_mmio.device=<size>@<base>:<irq>` (QEMU microvm spells it this way).
    pub fn cmdline_param(&self) -> String {
        format!(
            "virtio_mmio.device={}@{:#x}:{}",
            self.size, self.base, self.irq
        )
    }
}

/// Driver-side configuration of one queue, before activation hands it to the device.
#[derive(Debug, Default, Clone, Copy)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

struct State {
    device: Box<dyn VirtioDevice>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    active: bool,
}

/// One virtio-mmio transport with its device.
pub struct MmioTransport {
    state: Mutex<State>,
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    notify: Vec<EventFd>,
    /// Holds the device's workers while the VM is paused.
    pause: Arc<PauseGate>,
    /// The device's statistics, readable without the state lock.
    counters: Arc<DeviceCounters>,
    name: &'static str,
}

fn set_low(v: &mut u64, lo: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(lo);
}

fn set_high(v: &mut u64, hi: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(hi) << 32);
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory) -> std::io::Result<Self> {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|&max_size| QueueConfig {
                max_size,
                size: max_size,
                ..Default::default()
            })
            .collect();
        let notify = queues
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let (counters, name) = (device.counters(), device.name());
        Ok(Self {
            state: Mutex::new(State {
                device,
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                queues,
                active: false,
            }),
            mem,
            interrupt: Arc::new(VirtioInterrupt::new()?),
            notify,
            pause: Arc::new(PauseGate::default()),
            counters,
            name,
        })
    }

    /// The device's statistics (bytes and requests served).
    pub fn counters(&self) -> &Arc<DeviceCounters> {
        &self.counters
    }

    /// The device's short name (`virtio-rng`, `virtio-blk`, `virtio-net`).
    pub fn device_name(&self) -> &'static str {
        self.name
    }

    /// The interrupt line (register its eventfd as an irqfd).
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// Each queue's notification eventfd (register as ioeventfds at base + [`QUEUE_NOTIFY`]).
    pub fn queue_notify_fds(&self) -> &[EventFd] {
        &self.notify
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flush the device's cached data (clean shutdown).
    pub fn flush(&self) {
        self.lock().device.flush();
    }

    /// VM paused: the device's workers finish the request in hand and take no new one (queue
    /// notifications stay pending) until [`MmioTransport::resume`].
    pub fn pause(&self) {
        self.pause.pause();
    }

    /// VM resumed: the workers process what the driver made available meanwhile.
    pub fn resume(&self) {
        self.pause.resume();
    }

    /// Stop the device's worker (VM teardown).
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.device.flush();
        st.device.reset();
        st.active = false;
    }

    fn read_reg(&self, st: &State, offset: u64) -> u32 {
        let q = st.queues.get(st.queue_sel as usize);
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION => 2,
            DEVICE_ID => st.device.device_type(),
            VENDOR => VENDOR_ID,
            DEVICE_FEATURES => match st.device_features_sel {
                0 => st.device.features() as u32,
                1 => (st.device.features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => {
                let nr = if self.interrupt.needs_reset() {
                    STATUS_DEVICE_NEEDS_RESET
                } else {
                    0
                };
                st.status | nr
            }
            CONFIG_GENERATION => self.interrupt.config_generation(),
            // No shared memory regions: length all-ones means "absent" (§4.2.2).
            SHM_LEN_LOW | SHM_LEN_HIGH | SHM_BASE_LOW | SHM_BASE_HIGH => u32::MAX,
            _ => {
                tracing::debug!(
                    offset,
                    "virtio-mmio: read of write-only or unknown register"
                );
                0
            }
        }
    }

    fn write_reg(&self, st: &mut State, offset: u64, v: u32) {
        let configuring = st.status & STATUS_DRIVER_OK == 0;
        let features_open = st.status & STATUS_FEATURES_OK == 0;
        let sel = st.queue_sel as usize;
        match offset {
            DEVICE_FEATURES_SEL => st.device_features_sel = v,
            DRIVER_FEATURES_SEL => st.driver_features_sel = v,
            DRIVER_FEATURES if features_open && st.status & STATUS_DRIVER != 0 => {
                match st.driver_features_sel {
                    0 => set_low(&mut st.driver_features, v),
                    1 => set_high(&mut st.driver_features, v),
                    _ => {}
                }
            }
            QUEUE_SEL => st.queue_sel = v,
            QUEUE_NOTIFY => {
                if let Some(evt) = self.notify.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            INTERRUPT_ACK => self.interrupt.ack(v),
            STATUS => self.write_status(st, v),
            _ if !configuring => {
                tracing::debug!(
                    offset,
                    v,
                    "virtio-mmio: queue register write after DRIVER_OK ignored"
                );
            }
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW
            | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                let Some(q) = st.queues.get_mut(sel) else {
                    return;
                };
                match offset {
                    // Checked at activation: a power of two no larger than the maximum.
                    QUEUE_NUM => q.size = v as u16,
                    QUEUE_READY => q.ready = v == 1,
                    QUEUE_DESC_LOW => set_low(&mut q.desc, v),
                    QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
                    QUEUE_DRIVER_LOW => set_low(&mut q.driver, v),
                    QUEUE_DRIVER_HIGH => set_high(&mut q.driver, v),
                    QUEUE_DEVICE_LOW => set_low(&mut q.device, v),
                    _ => set_high(&mut q.device, v),
                }
            }
            _ => tracing::debug!(
                offset,
                v,
                "virtio-mmio: write to read-only or unknown register"
            ),
        }
    }

    fn reset(&self, st: &mut State) {
        if st.active {
            st.device.reset();
            st.active = false;
        }
        st.status = 0;
        st.driver_features = 0;
        st.device_features_sel = 0;
        st.driver_features_sel = 0;
        st.queue_sel = 0;
        for q in &mut st.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                size: q.max_size,
                ..Default::default()
            };
        }
        for evt in &self.notify {
            let _ = evt.read();
        }
        self.interrupt.reset();
    }

    /// §3.1.1 driver initialization, as seen by the device.
    fn write_status(&self, st: &mut State, v: u32) {
        if v == 0 {
            return self.reset(st);
        }
        // The driver only ever adds bits (§2.1.2); anything else is a driver bug.
        if v & st.status != st.status {
            tracing::debug!(
                old = st.status,
                new = v,
                "virtio-mmio: status bits cleared without reset"
            );
            return;
        }
        let new = v & !st.status;
        if new & STATUS_FEATURES_OK != 0 {
            let offered = st.device.features();
            let acked = st.driver_features;
            // A modern-only device (§6.1): the driver must accept VERSION_1 and nothing unknown.
            if acked & !offered != 0 || acked & (1 << VIRTIO_F_VERSION_1) == 0 {
                tracing::warn!(
                    "{}: driver accepted features {acked:#x} (offered {offered:#x}); FEATURES_OK refused",
                    st.device.name()
                );
                st.status = v & !STATUS_FEATURES_OK;
                return;
            }
        }
        if new & STATUS_FAILED != 0 {
            tracing::debug!("{}: driver set FAILED", st.device.name());
        }
        st.status = v;
        if new & STATUS_DRIVER_OK != 0 {
            if v & STATUS_FEATURES_OK == 0 {
                // DRIVER_OK without negotiated features: the device cannot run (§3.1.1).
                tracing::warn!("{}: DRIVER_OK before FEATURES_OK", st.device.name());
                return self.interrupt.set_needs_reset();
            }
            self.activate(st);
        }
    }

    fn activate(&self, st: &mut State) {
        self.activate_at(st, false)
    }

    /// Activate; `restored`: each queue goes on from the used index in guest memory (a
    /// snapshot is taken with the workers drained, so every descriptor the device consumed is
    /// in the used ring: next_avail == next_used == used->idx).
    fn activate_at(&self, st: &mut State, restored: bool) {
        if st.active {
            return;
        }
        let name = st.device.name();
        let event_idx = st.driver_features & (1 << VIRTIO_F_RING_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(st.queues.len());
        for (i, c) in st.queues.iter().enumerate() {
            match self.build_queue(c, event_idx) {
                Ok(Some(mut queue)) => {
                    if restored {
                        use vm_memory::{Address, Bytes};
                        let used_idx = vm_memory::GuestAddress(c.device)
                            .checked_add(2)
                            .and_then(|a| self.mem.read_obj::<u16>(a).ok());
                        let Some(idx) = used_idx else {
                            tracing::warn!(
                                "{name}: queue {i}: used ring unreadable; device needs reset"
                            );
                            return self.interrupt.set_needs_reset();
                        };
                        queue.set_next_avail(idx);
                        queue.set_next_used(idx);
                    }
                    let notify = match self.notify[i].try_clone() {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!("{name}: cannot clone queue eventfd: {e}");
                            return self.interrupt.set_needs_reset();
                        }
                    };
                    queues.push(ActiveQueue { queue, notify });
                }
                Ok(None) => {
                    // An unused queue; devices see an empty, never-ready queue.
                    let mut queue = match Queue::new(c.max_size) {
                        Ok(q) => q,
                        Err(_) => return self.interrupt.set_needs_reset(),
                    };
                    queue.set_ready(false);
                    let notify = match self.notify[i].try_clone() {
                        Ok(e) => e,
                        Err(_) => return self.interrupt.set_needs_reset(),
                    };
                    queues.push(ActiveQueue { queue, notify });
                }
                Err(what) => {
                    tracing::warn!("{name}: queue {i}: {what}; device needs reset");
                    return self.interrupt.set_needs_reset();
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            acked_features: st.driver_features,
            pause: self.pause.clone(),
        };
        match st.device.activate(ctx) {
            Ok(()) => st.active = true,
            Err(e) => {
                tracing::error!("{name}: activation failed: {e}");
                self.interrupt.set_needs_reset();
            }
        }
    }

    /// A ready queue from the driver's settings, or `None` for a queue the driver left off.
    fn build_queue(&self, c: &QueueConfig, event_idx: bool) -> Result<Option<Queue>, &'static str> {
        if !c.ready {
            return Ok(None);
        }
        let mut q = Queue::new(c.max_size).map_err(|_| "bad maximum size")?;
        q.try_set_size(c.size)
            .map_err(|_| "size is not a power of two up to the maximum")?;
        q.try_set_desc_table_address(vm_memory::GuestAddress(c.desc))
            .map_err(|_| "descriptor table misaligned")?;
        q.try_set_avail_ring_address(vm_memory::GuestAddress(c.driver))
            .map_err(|_| "driver area misaligned")?;
        q.try_set_used_ring_address(vm_memory::GuestAddress(c.device))
            .map_err(|_| "device area misaligned")?;
        q.set_event_idx(event_idx);
        q.set_ready(true);
        if !q.is_valid(self.mem.as_ref()) {
            return Err("rings lie outside guest memory");
        }
        Ok(Some(q))
    }
}

/// One queue as the driver configured it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueState {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// The transport's registers and queue configuration. Queue positions are not saved: they are
/// in the used rings in guest RAM (see [`MmioTransport::activate_at`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MmioTransportState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueState>,
    pub interrupt_status: u32,
    pub needs_reset: bool,
    pub config_generation: u32,
}

impl crate::Persist for MmioTransport {
    type State = MmioTransportState;

    /// Call with the VM paused and the workers held ([`MmioTransport::pause`]).
    fn save(&self) -> MmioTransportState {
        let st = self.lock();
        let (interrupt_status, needs_reset, config_generation) = self.interrupt.saved();
        MmioTransportState {
            device_type: st.device.device_type(),
            status: st.status,
            device_features_sel: st.device_features_sel,
            driver_features_sel: st.driver_features_sel,
            driver_features: st.driver_features,
            queue_sel: st.queue_sel,
            queues: st
                .queues
                .iter()
                .map(|q| QueueState {
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    driver: q.driver,
                    device: q.device,
                })
                .collect(),
            interrupt_status,
            needs_reset,
            config_generation,
        }
    }

    fn restore(&self, s: MmioTransportState) -> Result<(), crate::StateError> {
        let mut st = self.lock();
        let name = st.device.name();
        if s.device_type != st.device.device_type() || s.queues.len() != st.queues.len() {
            return Err(crate::StateError::Invalid(format!(
                "{name}: the snapshot has device type {} with {} queues here",
                s.device_type,
                s.queues.len()
            )));
        }
        self.reset(&mut st);
        st.device_features_sel = s.device_features_sel;
        st.driver_features_sel = s.driver_features_sel;
        st.driver_features = s.driver_features;
        st.queue_sel = s.queue_sel;
        for (c, q) in st.queues.iter_mut().zip(&s.queues) {
            c.size = q.size;
            c.ready = q.ready;
            c.desc = q.desc;
            c.driver = q.driver;
            c.device = q.device;
        }
        st.status = s.status;
        if s.status & STATUS_DRIVER_OK != 0 && !s.needs_reset {
            // Queue checks (sizes, alignment, rings inside RAM) run as on a driver's DRIVER_OK.
            self.activate_at(&mut st, true);
            // Work the driver queued before the snapshot (notifications are not saved).
            for evt in &self.notify {
                let _ = evt.write(1);
            }
        }
        self.interrupt
            .restore(s.interrupt_status, s.needs_reset, s.config_generation);
        Ok(())
    }
}

impl BusDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let st = self.lock();
        if offset >= CONFIG {
            return st.device.read_config(offset - CONFIG, data);
        }
        // Registers are 32-bit wide and 32-bit aligned (§4.2.2); other accesses read as zero.
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(&st, offset).to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut st = self.lock();
        if offset >= CONFIG {
            return st.device.write_config(offset - CONFIG, data);
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(&mut st, offset, u32::from_le_bytes(bytes));
    }
}
