//! What every virtio transport does the same way (virtio 1.2 §2.1, §3.1, §4.1, §4.2): feature
//! selection and negotiation, device status, the driver's queue settings, activation and reset.
//! The transports (`mmio.rs`, `pci/`) only decode their registers onto a [`TransportCore`].

use super::worker::PauseGate;
use super::{
    ActivateContext, ActiveQueue, GuestMemory, VirtioDevice, VirtioInterrupt,
    STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1,
};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// Driver-side configuration of one queue, before activation hands it to the device.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueConfig {
    fn power_on(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }
}

/// Replace the low 32 bits of `v`.
pub(crate) fn set_low(v: &mut u64, lo: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(lo);
}

/// Replace the high 32 bits of `v`.
pub(crate) fn set_high(v: &mut u64, hi: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(hi) << 32);
}

/// The runtime resources a transport hands its device at activation.
pub(crate) struct TransportResources {
    pub mem: GuestMemory,
    pub interrupt: Arc<VirtioInterrupt>,
    /// One notification eventfd per queue.
    pub notify: Vec<EventFd>,
    pub pause: Arc<PauseGate>,
}

impl TransportResources {
    pub fn new(
        mem: GuestMemory,
        interrupt: VirtioInterrupt,
        queues: usize,
    ) -> std::io::Result<Self> {
        Ok(Self {
            mem,
            interrupt: Arc::new(interrupt),
            notify: (0..queues)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK))
                .collect::<Result<Vec<_>, _>>()?,
            pause: Arc::new(PauseGate::default()),
        })
    }
}

/// A device with the transport-independent half of its transport state.
pub(crate) struct TransportCore {
    pub device: Box<dyn VirtioDevice>,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueConfig>,
    /// The driver uses the legacy interface (virtio-pci's I/O BAR0, §4.1.5.1.1.1 ff. "legacy
    /// interface"): no FEATURES_OK step, 32 feature bits, queues placed by PFN.
    pub legacy: bool,
    active: bool,
}

impl TransportCore {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&m| QueueConfig::power_on(m))
            .collect();
        Self {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            legacy: false,
            active: false,
        }
    }

    /// The selected queue's settings, if it exists.
    pub fn selected(&self) -> Option<&QueueConfig> {
        self.queues.get(self.queue_sel as usize)
    }

    /// The selected queue's settings while the driver may still change them (before
    /// DRIVER_OK); None once the device runs or for a queue that does not exist.
    pub fn selected_mut(&mut self) -> Option<&mut QueueConfig> {
        if self.status & STATUS_DRIVER_OK != 0 {
            tracing::debug!(
                "{}: queue setting changed after DRIVER_OK ignored",
                self.device.name()
            );
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The 32 feature bits `device_features_sel` selects.
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device.features() as u32,
            1 => (self.device.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// The 32 accepted feature bits `driver_features_sel` selects.
    pub fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver accepts features (only between DRIVER and FEATURES_OK, §3.1.1).
    pub fn write_driver_features(&mut self, v: u32) {
        if self.status & STATUS_FEATURES_OK != 0 || self.status & STATUS_DRIVER == 0 {
            return;
        }
        match self.driver_features_sel {
            0 => set_low(&mut self.driver_features, v),
            1 => set_high(&mut self.driver_features, v),
            _ => {}
        }
    }

    /// The status register as the driver reads it (NEEDS_RESET comes from the interrupt side,
    /// where the workers set it).
    pub fn read_status(&self, res: &TransportResources) -> u32 {
        let nr = if res.interrupt.needs_reset() {
            STATUS_DEVICE_NEEDS_RESET
        } else {
            0
        };
        self.status | nr
    }

    /// Stop the device and return every register to its power-on value (§2.4).
    pub fn reset(&mut self, res: &TransportResources) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.legacy = false;
        for q in &mut self.queues {
            *q = QueueConfig::power_on(q.max_size);
        }
        for evt in &res.notify {
            let _ = evt.read();
        }
        res.interrupt.reset();
    }

    /// Stop the device's worker, then flush the device (VM teardown). In that order: a worker
    /// still serving chains the driver made available before the vCPUs stopped would otherwise
    /// write after the flush.
    pub fn shutdown(&mut self) {
        self.device.reset();
        self.device.flush();
        self.active = false;
    }

    /// §3.1.1 driver initialization, as seen by the device.
    pub fn write_status(&mut self, res: &TransportResources, v: u32) {
        if v == 0 {
            return self.reset(res);
        }
        let name = self.device.name();
        // The driver only ever adds bits (§2.1.2); anything else is a driver bug.
        if v & self.status != self.status {
            tracing::debug!(
                old = self.status,
                new = v,
                "{name}: status bits cleared without reset"
            );
            return;
        }
        let new = v & !self.status;
        if self.legacy {
            // A legacy driver negotiates by writing its features and goes on to DRIVER_OK.
            self.status = v;
            if new & STATUS_DRIVER_OK != 0 {
                if self.driver_features & !self.device.features() != 0 {
                    tracing::warn!("{name}: legacy driver accepted features it was not offered");
                    return res.interrupt.set_needs_reset();
                }
                self.activate(res);
            }
            return;
        }
        if new & STATUS_FEATURES_OK != 0 {
            let offered = self.device.features();
            let acked = self.driver_features;
            // A modern device (§6.1): the driver must accept VERSION_1 and nothing unknown.
            if acked & !offered != 0 || acked & (1 << VIRTIO_F_VERSION_1) == 0 {
                tracing::warn!(
                    "{name}: driver accepted features {acked:#x} (offered {offered:#x}); FEATURES_OK refused"
                );
                self.status = v & !STATUS_FEATURES_OK;
                return;
            }
        }
        if new & STATUS_FAILED != 0 {
            tracing::debug!("{name}: driver set FAILED");
        }
        self.status = v;
        if new & STATUS_DRIVER_OK != 0 {
            if v & STATUS_FEATURES_OK == 0 {
                // DRIVER_OK without negotiated features: the device cannot run (§3.1.1).
                tracing::warn!("{name}: DRIVER_OK before FEATURES_OK");
                return res.interrupt.set_needs_reset();
            }
            self.activate(res);
        }
    }

    fn activate(&mut self, res: &TransportResources) {
        self.activate_at(res, false)
    }

    /// Activate; `restored`: each ready queue goes on from the used index in guest memory (a
    /// snapshot is taken with the workers drained, so every descriptor the device consumed is
    /// in the used ring: next_avail == next_used == used->idx).
    fn activate_at(&mut self, res: &TransportResources, restored: bool) {
        if self.active {
            return;
        }
        let name = self.device.name();
        let event_idx = self.driver_features & (1 << VIRTIO_F_RING_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, c) in self.queues.iter().enumerate() {
            let mut queue = match build_queue(c, event_idx, &res.mem) {
                Ok(q) => q,
                Err(what) => {
                    tracing::warn!("{name}: queue {i}: {what}; device needs reset");
                    return res.interrupt.set_needs_reset();
                }
            };
            if restored && c.ready {
                use vm_memory::{Address, Bytes};
                let used_idx = vm_memory::GuestAddress(c.device)
                    .checked_add(2)
                    .and_then(|a| res.mem.read_obj::<u16>(a).ok());
                let Some(idx) = used_idx else {
                    tracing::warn!("{name}: queue {i}: used ring unreadable; device needs reset");
                    return res.interrupt.set_needs_reset();
                };
                queue.set_next_avail(idx);
                queue.set_next_used(idx);
            }
            let Some(notify) = res.notify.get(i).and_then(|e| e.try_clone().ok()) else {
                tracing::error!("{name}: cannot clone queue {i}'s eventfd");
                return res.interrupt.set_needs_reset();
            };
            queues.push(ActiveQueue { queue, notify });
        }
        let ctx = ActivateContext {
            mem: res.mem.clone(),
            queues,
            interrupt: res.interrupt.clone(),
            acked_features: self.driver_features,
            pause: res.pause.clone(),
        };
        match self.device.activate(ctx) {
            Ok(()) => self.active = true,
            Err(e) => {
                tracing::error!("{name}: activation failed: {e}");
                res.interrupt.set_needs_reset();
            }
        }
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

/// A transport's common registers and queue configuration, for snapshots. Queue positions are
/// not saved: they are in the used rings in guest RAM (see [`TransportCore::restore`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub legacy: bool,
    pub queues: Vec<QueueState>,
    pub interrupt_status: u32,
    pub needs_reset: bool,
    pub config_generation: u32,
    /// The device's own state ([`VirtioDevice::save_state`]).
    #[serde(default)]
    pub device: serde_json::Value,
}

impl TransportCore {
    /// The state now (the VM paused, the workers held).
    pub fn save(&self, res: &TransportResources) -> TransportState {
        let (interrupt_status, needs_reset, config_generation) = res.interrupt.saved();
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            legacy: self.legacy,
            queues: self
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
            device: self.device.save_state(),
        }
    }

    /// Become the saved transport: a driver-ready device is activated again with the same
    /// checks as on DRIVER_OK, its queues going on from the used rings, and every queue's
    /// notification is raised once (work queued before the snapshot lost its notification).
    pub fn restore(
        &mut self,
        res: &TransportResources,
        s: TransportState,
    ) -> Result<(), crate::StateError> {
        let name = self.device.name();
        if s.device_type != self.device.device_type() || s.queues.len() != self.queues.len() {
            return Err(crate::StateError::Invalid(format!(
                "{name}: the snapshot has device type {} with {} queues here",
                s.device_type,
                s.queues.len()
            )));
        }
        self.reset(res);
        self.device
            .restore_state(s.device)
            .map_err(|e| crate::StateError::Invalid(format!("{name}: {e}")))?;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.legacy = s.legacy;
        for (c, q) in self.queues.iter_mut().zip(&s.queues) {
            c.size = q.size;
            c.ready = q.ready;
            c.desc = q.desc;
            c.driver = q.driver;
            c.device = q.device;
        }
        self.status = s.status;
        if s.status & STATUS_DRIVER_OK != 0 && !s.needs_reset {
            self.activate_at(res, true);
            for evt in &res.notify {
                let _ = evt.write(1);
            }
        }
        res.interrupt
            .restore(s.interrupt_status, s.needs_reset, s.config_generation);
        Ok(())
    }
}

/// The queue the device gets from the driver's settings; a queue the driver left off is an
/// empty, never-ready queue.
fn build_queue(c: &QueueConfig, event_idx: bool, mem: &GuestMemory) -> Result<Queue, &'static str> {
    let mut q = Queue::new(c.max_size).map_err(|_| "bad maximum size")?;
    if !c.ready {
        q.set_ready(false);
        return Ok(q);
    }
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
    if !q.is_valid(mem.as_ref()) {
        return Err("rings lie outside guest memory");
    }
    Ok(q)
}
