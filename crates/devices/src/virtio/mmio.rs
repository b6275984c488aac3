//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2): one register window per device.
//!
//! The driver's queue notifications normally never reach this code: the VMM registers each
//! queue's eventfd as a KVM ioeventfd on QueueNotify, so the vCPU does not even exit. A
//! QueueNotify write that does arrive here (no ioeventfd) signals the same eventfd.

use super::transport::{set_high, set_low, TransportCore, TransportResources};
use super::{DeviceCounters, GuestMemory, VirtioDevice, VirtioInterrupt};
use crate::BusDevice;
use std::sync::{Arc, Mutex, MutexGuard};
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

/// One virtio-mmio transport with its device.
pub struct MmioTransport {
    core: Mutex<TransportCore>,
    res: TransportResources,
    /// The device's statistics, readable without the state lock.
    counters: Arc<DeviceCounters>,
    name: &'static str,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory) -> std::io::Result<Self> {
        let (counters, name) = (device.counters(), device.name());
        let queues = device.queue_max_sizes().len();
        Ok(Self {
            core: Mutex::new(TransportCore::new(device)),
            res: TransportResources::new(mem, VirtioInterrupt::new()?, queues)?,
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
        &self.res.interrupt
    }

    /// Each queue's notification eventfd (register as ioeventfds at base + [`QUEUE_NOTIFY`]).
    pub fn queue_notify_fds(&self) -> &[EventFd] {
        &self.res.notify
    }

    fn lock(&self) -> MutexGuard<'_, TransportCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flush the device's cached data (clean shutdown).
    pub fn flush(&self) {
        self.lock().device.flush();
    }

    /// VM paused: the device's workers finish the request in hand and take no new one (queue
    /// notifications stay pending) until [`MmioTransport::resume`].
    pub fn pause(&self) {
        self.res.pause.pause();
    }

    /// VM resumed: the workers process what the driver made available meanwhile.
    pub fn resume(&self) {
        self.res.pause.resume();
    }

    /// Stop the device's worker (VM teardown).
    pub fn shutdown(&self) {
        self.lock().shutdown();
    }

    fn read_reg(&self, st: &TransportCore, offset: u64) -> u32 {
        let q = st.selected();
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION => 2,
            DEVICE_ID => st.device.device_type(),
            VENDOR => VENDOR_ID,
            DEVICE_FEATURES => st.device_features_word(),
            QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            INTERRUPT_STATUS => self.res.interrupt.status(),
            STATUS => st.read_status(&self.res),
            CONFIG_GENERATION => self.res.interrupt.config_generation(),
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

    fn write_reg(&self, st: &mut TransportCore, offset: u64, v: u32) {
        match offset {
            DEVICE_FEATURES_SEL => st.device_features_sel = v,
            DRIVER_FEATURES_SEL => st.driver_features_sel = v,
            DRIVER_FEATURES => st.write_driver_features(v),
            QUEUE_SEL => st.queue_sel = v,
            QUEUE_NOTIFY => {
                if let Some(evt) = self.res.notify.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            INTERRUPT_ACK => self.res.interrupt.ack(v),
            STATUS => st.write_status(&self.res, v),
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW
            | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                let Some(q) = st.selected_mut() else {
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
