//! The virtio-pci transport (virtio 1.2 §4.1), laid out as QEMU 7.2's virtio-pci with its
//! defaults (`page-per-vq=off`): modern only (`disable-legacy=on`), or transitional, with the
//! legacy registers in an I/O BAR0 as well ([`legacy`]).
//!
//! | where | what |
//! |---|---|
//! | BAR0 (I/O, transitional only) | legacy registers and device config |
//! | BAR1 (32-bit memory, 4 KiB) | MSI-X table at 0, PBA at 0x800 (`msix_init_exclusive_bar`) |
//! | BAR4 (64-bit prefetchable memory, 16 KiB) | common cfg 0x0, ISR 0x1000, device cfg 0x2000, notify 0x3000 (4 bytes per queue) |
//! | config 0x40, 0x50, 0x60, 0x70, 0x84 | vendor capabilities: common, ISR, device, notify, PCI cfg access |
//! | config 0x98 | MSI-X capability |
//!
//! Queue notifications are KVM ioeventfds on BAR4 + 0x3000 + 4 n (any length, no datamatch, as
//! QEMU registers them), moved with the BAR by the VMM; a notification that reaches this code
//! signals the same eventfd. Interrupts: the vector the driver assigned to the queue (or to config
//! changes) while MSI-X is enabled, else INTA# as a level line that follows the ISR (§4.1.4.5).

use super::transport::{set_high, set_low, TransportCore, TransportResources};
use super::{
    DeviceCounters, GuestMemory, VirtioDevice, VirtioInterrupt, VirtioVectors, TYPE_BLOCK,
    TYPE_INPUT, TYPE_NET, VIRTIO_MSI_NO_VECTOR,
};
use crate::pci::{
    msix_bar_layout, msix_capability, BarChange, BarKind, BarSpec, IoEvent, MsiRoutes, Msix,
    MsixBar, MsixVector, PciConfig, PciConfigError, PciDevice, PciIdentity, PciRegion, PciSpace,
    PCI_CAP_ID_MSIX, PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::BusDevice;
use std::sync::{Arc, Mutex, MutexGuard};

mod legacy;
mod state;
pub use legacy::LEGACY_QUEUE_NOTIFY;
pub use state::VirtioPciState;

/// `PCI_VENDOR_ID_REDHAT_QUMRANET`.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device type (§4.1.2).
pub const VIRTIO_PCI_MODERN_BASE: u16 = 0x1040;
/// Transitional device IDs (§4.1.2.3): 0x1000 net, 0x1001 blk, 0x1005 rng.
pub const VIRTIO_PCI_TRANSITIONAL_BASE: u16 = 0x1000;
/// The legacy I/O BAR.
pub const LEGACY_BAR: u8 = 0;
/// The MSI-X BAR (QEMU's `msix_bar_idx`).
pub const MSIX_BAR: u8 = 1;
/// The modern memory BAR (QEMU's `modern_mem_bar_idx`).
pub const MODERN_BAR: u8 = 4;
/// Size of each modern region (QEMU's `QEMU_VIRTIO_PCI_QUEUE_MEM_MULT`-sized layout).
const REGION_SIZE: u64 = 0x1000;
const COMMON_OFFSET: u64 = 0;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
/// Where the notify region starts in BAR4.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// `notify_off_multiplier`: queue n's notify address is NOTIFY_OFFSET + 4 n.
pub const NOTIFY_MULTIPLIER: u64 = 4;
const MODERN_BAR_SIZE: u64 = 4 * REGION_SIZE;

/// Vendor-specific capability ID and the virtio cfg_type values (§4.1.4).
const PCI_CAP_ID_VNDR: u8 = 0x09;
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// Offsets inside `struct virtio_pci_cfg_cap` (from the capability's start).
const PCI_CFG_BAR: usize = 4;
const PCI_CFG_OFFSET: usize = 8;
const PCI_CFG_LENGTH: usize = 12;
const PCI_CFG_DATA: usize = 16;

// Common configuration fields (§4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const COMMON_CFG_LEN: usize = 0x3c;

/// Errors building a virtio-pci function.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("{device}: config space: {source}")]
    Config {
        device: &'static str,
        #[source]
        source: PciConfigError,
    },
    #[error("{device}: {source}")]
    Io {
        device: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The PCI identity QEMU 7.2 gives a modern-only virtio device of `device_type`: class by
/// type (`virtio_*_pci_class_init`), revision 1, the default subsystem IDs.
pub fn modern_identity(device_type: u32) -> PciIdentity {
    let (class, subclass) = match device_type {
        TYPE_BLOCK => (0x01, 0x00), // PCI_CLASS_STORAGE_SCSI
        TYPE_NET => (0x02, 0x00),   // PCI_CLASS_NETWORK_ETHERNET
        TYPE_INPUT => (0x09, 0x80), // PCI_CLASS_INPUT_OTHER (the device may say more)
        _ => (0x00, 0xff),          // PCI_CLASS_OTHERS
    };
    PciIdentity {
        vendor: VIRTIO_PCI_VENDOR,
        device: VIRTIO_PCI_MODERN_BASE + device_type as u16,
        class,
        subclass,
        prog_if: 0,
        revision: 1,
        subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
        subsystem: PCI_SUBDEVICE_ID_QEMU,
    }
}

/// The PCI identity QEMU 7.2 gives a transitional virtio device (`disable-legacy=off`):
/// device 0x1000 + legacy ID, revision 0, subsystem 1af4:<device type>; None for a type without
/// a transitional ID.
pub fn transitional_identity(device_type: u32) -> Option<PciIdentity> {
    let legacy_id = match device_type {
        TYPE_NET => 0,
        TYPE_BLOCK => 1,
        super::balloon::TYPE_BALLOON => 2,
        super::TYPE_RNG => 5,
        _ => return None,
    };
    Some(PciIdentity {
        device: VIRTIO_PCI_TRANSITIONAL_BASE + legacy_id,
        revision: 0,
        subsystem_vendor: VIRTIO_PCI_VENDOR,
        subsystem: device_type as u16,
        ..modern_identity(device_type)
    })
}

/// QEMU's vector count for a device with `queues` queues: one per queue and one for config
/// changes (virtio-net-pci: 2 per queue pair + 2; virtio-input-pci: 2; virtio-balloon-pci: none,
/// it never sets `vectors`, so it has no MSI-X at all).
pub fn default_vectors(device_type: u32, queues: usize) -> usize {
    match device_type {
        TYPE_NET => queues + 2,
        TYPE_INPUT => 2,
        super::balloon::TYPE_BALLOON => 0,
        _ => queues + 1,
    }
}

struct PciState {
    config: PciConfig,
    /// The MSI-X capability's offset (None: the function has no MSI-X).
    msix_cap: Option<usize>,
    pci_cfg_cap: usize,
}

/// One virtio device behind the virtio-pci transport.
pub struct VirtioPciTransport {
    pci: Mutex<PciState>,
    core: Mutex<TransportCore>,
    res: TransportResources,
    msix: Arc<Msix>,
    counters: Arc<DeviceCounters>,
    name: &'static str,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // struct virtio_pci_cap without cap_vndr/cap_next: cap_len, cfg_type, bar, id, padding[2],
    // offset, length; then what the capability adds.
    let cap_len = (16 + extra.len()) as u8;
    let mut body = vec![cap_len, cfg_type, MODERN_BAR, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

/// QEMU's `pcie_endpoint_cap_init` (with `pcie_cap_deverr_init`, `pcie_cap_lnkctl_init` and
/// `pcie_cap_flr_init`) and the power management capability of `virtio_pci_realize`.
fn express_endpoint_capabilities(config: &mut PciConfig) -> Result<(), PciConfigError> {
    const PCI_CAP_ID_EXP: u8 = 0x10;
    const PCI_CAP_ID_PM: u8 = 0x01;
    // Body offsets (the capability's register offset - 2).
    let mut body = [0u8; 0x3a];
    let mut mask = [0u8; 0x3a];
    // Version 2, endpoint.
    body[0..2].copy_from_slice(&0x0002u16.to_le_bytes());
    // Device capabilities: role-based error reporting, function level reset.
    body[2..6].copy_from_slice(&(1u32 << 15 | 1 << 28).to_le_bytes());
    // Device control: the error reporting enables.
    mask[6..8].copy_from_slice(&0x000fu16.to_le_bytes());
    // Link capabilities: ASPM L0s, x1, 2.5 GT/s; link status the same.
    body[0x0a..0x0e].copy_from_slice(&0x0000_0411u32.to_le_bytes());
    body[0x10..0x12].copy_from_slice(&0x0011u16.to_le_bytes());
    // Link control: common clock configuration, extended synch.
    mask[0x0e..0x10].copy_from_slice(&0x00c0u16.to_le_bytes());
    // Device capabilities 2: extended fmt field, end-end TLP prefix; control 2: prefix blocking.
    body[0x22..0x26].copy_from_slice(&(1u32 << 20 | 1 << 21).to_le_bytes());
    mask[0x26..0x28].copy_from_slice(&0x8000u16.to_le_bytes());
    let exp = usize::from(config.add_capability_with_mask(PCI_CAP_ID_EXP, &body, &mask)?);
    config.set_w1c_mask(exp + 0x0a, &0x000fu16.to_le_bytes())?;
    // Power management 1.2, D0; the power state is writable.
    let pm_body = [0x03, 0x00, 0, 0, 0, 0];
    let pm_mask = [0, 0, 0x03, 0, 0, 0];
    // Right after the 0x3c-byte PCI Express capability: 0x7c, as QEMU.
    config.add_capability_with_mask(PCI_CAP_ID_PM, &pm_body, &pm_mask)?;
    Ok(())
}

impl VirtioPciTransport {
    /// `device` behind a modern virtio-pci function with one MSI-X vector per element of
    /// `vectors` (whose GSIs `routes` keeps routed); `transitional` adds the legacy interface
    /// (for a device type that has one).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        vectors: Vec<MsixVector>,
        routes: Arc<dyn MsiRoutes>,
        transitional: bool,
    ) -> Result<Self, VirtioPciError> {
        Self::with_bus(device, mem, vectors, routes, transitional, false)
    }

    /// As [`new`](Self::new); with `express` the function is a PCIe endpoint, as QEMU makes a
    /// virtio-pci device behind a PCIe port: 4 KiB of config space, the PCI Express capability
    /// (v2, endpoint, x1 at 2.5 GT/s, FLR capable) at 0x40 and power management at 0x7c, before
    /// the virtio capabilities.
    pub fn with_bus(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        vectors: Vec<MsixVector>,
        routes: Arc<dyn MsiRoutes>,
        transitional: bool,
        express: bool,
    ) -> Result<Self, VirtioPciError> {
        let name = device.name();
        let cfg_err = |source| VirtioPciError::Config {
            device: name,
            source,
        };
        let queues = device.queue_max_sizes().len();
        let identity = transitional
            .then(|| transitional_identity(device.device_type()))
            .flatten();
        let mut modern = modern_identity(device.device_type());
        if let Some((class, subclass)) = device.pci_class() {
            (modern.class, modern.subclass) = (class, subclass);
        }
        let mut config = if express {
            PciConfig::new_express(&identity.unwrap_or(modern))
        } else {
            PciConfig::new(&identity.unwrap_or(modern))
        };
        config.set_interrupt_pin(1);
        if express {
            express_endpoint_capabilities(&mut config).map_err(cfg_err)?;
        }
        if identity.is_some() {
            let size = (legacy::LEGACY_REGS_SIZE + device.config_size() as u64).next_power_of_two();
            config
                .add_bar(
                    LEGACY_BAR,
                    BarSpec {
                        size,
                        kind: BarKind::Io,
                        prefetchable: false,
                    },
                )
                .map_err(cfg_err)?;
        }
        // No vectors (virtio-balloon-pci, whose QEMU 7.2 function has `nvectors` 0): no MSI-X
        // BAR and no capability, INTx only.
        let has_msix = !vectors.is_empty();
        if has_msix {
            config
                .add_bar(
                    MSIX_BAR,
                    BarSpec {
                        size: msix_bar_layout(vectors.len()).0,
                        kind: BarKind::Mem32,
                        prefetchable: false,
                    },
                )
                .map_err(cfg_err)?;
        }
        config
            .add_bar(
                MODERN_BAR,
                BarSpec {
                    size: MODERN_BAR_SIZE,
                    kind: BarKind::Mem64,
                    prefetchable: true,
                },
            )
            .map_err(cfg_err)?;
        // QEMU's order (virtio_pci_device_plugged): common, ISR, device, notify, PCI cfg, MSI-X.
        let caps = [
            (CAP_COMMON_CFG, COMMON_OFFSET, REGION_SIZE, Vec::new()),
            (CAP_ISR_CFG, ISR_OFFSET, REGION_SIZE, Vec::new()),
            (CAP_DEVICE_CFG, DEVICE_OFFSET, REGION_SIZE, Vec::new()),
            (
                CAP_NOTIFY_CFG,
                NOTIFY_OFFSET,
                REGION_SIZE,
                (NOTIFY_MULTIPLIER as u32).to_le_bytes().to_vec(),
            ),
        ];
        for (cfg_type, offset, length, extra) in caps {
            config
                .add_capability(
                    PCI_CAP_ID_VNDR,
                    &vendor_cap(cfg_type, offset, length, &extra),
                )
                .map_err(cfg_err)?;
        }
        // The PCI cfg access capability: bar, offset and length are the driver's to write.
        let mut body = vendor_cap(CAP_PCI_CFG, 0, 0, &[0; 4]);
        body[PCI_CFG_BAR - 2] = 0;
        let mut mask = vec![0u8; body.len()];
        mask[PCI_CFG_BAR - 2] = 0xff;
        mask[PCI_CFG_OFFSET - 2..PCI_CFG_OFFSET + 2].fill(0xff);
        mask[PCI_CFG_LENGTH - 2..PCI_CFG_LENGTH + 2].fill(0xff);
        let pci_cfg_cap = config
            .add_capability_with_mask(PCI_CAP_ID_VNDR, &body, &mask)
            .map_err(cfg_err)?;
        let msix_cap = if has_msix {
            let (body, mask) = msix_capability(vectors.len(), MSIX_BAR);
            let cap = config
                .add_capability_with_mask(PCI_CAP_ID_MSIX, &body, &mask)
                .map_err(cfg_err)?;
            Some(usize::from(cap))
        } else {
            None
        };
        let msix = Arc::new(Msix::new(vectors, routes));
        let interrupt = VirtioInterrupt::with_vectors(VirtioVectors::new(msix.clone(), queues))
            .map_err(|source| VirtioPciError::Io {
                device: name,
                source,
            })?;
        let counters = device.counters();
        Ok(Self {
            pci: Mutex::new(PciState {
                config,
                msix_cap,
                pci_cfg_cap: usize::from(pci_cfg_cap),
            }),
            core: Mutex::new(TransportCore::new(device)),
            res: TransportResources::new(mem, interrupt, queues).map_err(|source| {
                VirtioPciError::Io {
                    device: name,
                    source,
                }
            })?,
            msix,
            counters,
            name,
        })
    }

    fn core(&self) -> MutexGuard<'_, TransportCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pci(&self) -> MutexGuard<'_, PciState> {
        self.pci.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device's short name (`virtio-blk`, ...).
    pub fn device_name(&self) -> &'static str {
        self.name
    }

    /// The device's statistics.
    pub fn counters(&self) -> &Arc<DeviceCounters> {
        &self.counters
    }

    /// The INTx side of the interrupt (its eventfd is INTA#'s level line).
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.res.interrupt
    }

    /// The function's MSI-X state (its vectors' irqfds to register).
    pub fn msix(&self) -> &Arc<Msix> {
        &self.msix
    }

    /// The function's regions: (region, space, size).
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.pci().config.regions()
    }

    /// The queue notification ioeventfds of `region`: BAR4's notify addresses (any length, as
    /// QEMU), or BAR0's legacy notify register (16 bits, datamatch = queue index).
    pub fn ioevents(&self, region: PciRegion) -> std::io::Result<Vec<IoEvent>> {
        let at = |q: usize| match region {
            PciRegion::Bar(MODERN_BAR) => {
                Some((NOTIFY_OFFSET + NOTIFY_MULTIPLIER * q as u64, 0, None))
            }
            PciRegion::Bar(LEGACY_BAR) => Some((LEGACY_QUEUE_NOTIFY, 2, Some(q as u64))),
            _ => None,
        };
        let mut out = Vec::new();
        for (q, evt) in self.res.notify.iter().enumerate() {
            if let Some((offset, len, datamatch)) = at(q) {
                out.push(IoEvent {
                    offset,
                    len,
                    datamatch,
                    fd: Arc::new(evt.try_clone()?),
                });
            }
        }
        Ok(out)
    }

    /// Flush the device's cached data (clean shutdown).
    pub fn flush(&self) {
        self.core().device.flush();
    }

    /// VM paused: the workers take no new request until [`Self::resume`].
    pub fn pause(&self) {
        self.res.pause.pause();
    }

    pub fn resume(&self) {
        self.res.pause.resume();
    }

    /// Stop the device's worker (VM teardown).
    pub fn shutdown(&self) {
        self.core().shutdown();
    }

    /// A read of BAR4 at `offset`.
    pub fn modern_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < ISR_OFFSET => self.common_read(o, data),
            // Reading the ISR acknowledges it and lowers INTx (§4.1.4.5.1).
            ISR_OFFSET => data[0] = self.res.interrupt.take_status() as u8,
            o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                self.core().device.read_config(o - DEVICE_OFFSET, data)
            }
            _ => {}
        }
    }

    /// A write to BAR4 at `offset`.
    pub fn modern_write(&self, offset: u64, data: &[u8]) {
        match offset {
            o if o < ISR_OFFSET => self.common_write(o, data),
            o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                self.core().device.write_config(o - DEVICE_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..MODERN_BAR_SIZE).contains(&o) => {
                let q = (o - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER;
                if let Some(evt) = usize::try_from(q).ok().and_then(|q| self.res.notify.get(q)) {
                    let _ = evt.write(1);
                }
            }
            _ => {}
        }
    }

    fn vectors(&self) -> Option<&VirtioVectors> {
        self.res.interrupt.vectors()
    }

    fn common_read(&self, offset: u64, data: &mut [u8]) {
        let st = self.core();
        let mut img = [0u8; COMMON_CFG_LEN];
        let mut put = |at: u64, bytes: &[u8]| {
            let at = at as usize;
            img[at..at + bytes.len()].copy_from_slice(bytes);
        };
        let sel = st.queue_sel as usize;
        let q = st.selected();
        let vectors = self.vectors();
        put(DEVICE_FEATURE_SELECT, &st.device_features_sel.to_le_bytes());
        put(DEVICE_FEATURE, &st.device_features_word().to_le_bytes());
        put(DRIVER_FEATURE_SELECT, &st.driver_features_sel.to_le_bytes());
        put(DRIVER_FEATURE, &st.driver_features_word().to_le_bytes());
        let config_vector = vectors.map_or(VIRTIO_MSI_NO_VECTOR, |v| v.config_vector());
        put(CONFIG_MSIX_VECTOR, &config_vector.to_le_bytes());
        put(NUM_QUEUES, &(st.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[st.read_status(&self.res) as u8]);
        put(
            CONFIG_GENERATION,
            &[self.res.interrupt.config_generation() as u8],
        );
        put(QUEUE_SELECT, &(st.queue_sel as u16).to_le_bytes());
        if let Some(q) = q {
            // QueueSize reads the maximum until the driver writes a smaller one (§4.1.4.3).
            put(QUEUE_SIZE, &q.size.to_le_bytes());
            let v = vectors.map_or(VIRTIO_MSI_NO_VECTOR, |v| v.queue_vector(sel));
            put(QUEUE_MSIX_VECTOR, &v.to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(q.ready).to_le_bytes());
            put(QUEUE_NOTIFY_OFF, &(sel as u16).to_le_bytes());
            put(QUEUE_DESC, &q.desc.to_le_bytes());
            put(QUEUE_DRIVER, &q.driver.to_le_bytes());
            put(QUEUE_DEVICE, &q.device.to_le_bytes());
        }
        drop(st);
        super::read_config_bytes(&img, offset, data);
    }

    /// A vector the driver asked for, or NO_VECTOR if there is no such entry (§4.1.5.1.2: the
    /// driver reads it back to see the assignment failed).
    fn checked_vector(&self, v: u16) -> u16 {
        if usize::from(v) < self.msix.len() {
            v
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    fn common_write(&self, offset: u64, data: &[u8]) {
        let mut value = [0u8; 8];
        let len = data.len().min(8);
        value[..len].copy_from_slice(&data[..len]);
        let v = u64::from_le_bytes(value);
        let mut st = self.core();
        let sel = st.queue_sel as usize;
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => st.device_features_sel = v as u32,
            (DRIVER_FEATURE_SELECT, 4) => st.driver_features_sel = v as u32,
            (DRIVER_FEATURE, 4) => st.write_driver_features(v as u32),
            (CONFIG_MSIX_VECTOR, 2) => {
                let vector = self.checked_vector(v as u16);
                if let Some(vs) = self.vectors() {
                    vs.set_config_vector(vector);
                }
            }
            (DEVICE_STATUS, 1) => st.write_status(&self.res, v as u32),
            (QUEUE_SELECT, 2) => st.queue_sel = v as u32,
            (QUEUE_MSIX_VECTOR, 2) => {
                if sel < st.queues.len() {
                    let vector = self.checked_vector(v as u16);
                    if let Some(vs) = self.vectors() {
                        vs.set_queue_vector(sel, vector);
                    }
                }
            }
            (QUEUE_SIZE | QUEUE_ENABLE, 2) | (QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE, 8) => {
                self.queue_write(&mut st, offset, data.len(), v)
            }
            // The 64-bit addresses as two 32-bit halves (Linux's vp_iowrite64_twopart).
            (0x20..=0x34, 4) if offset.is_multiple_of(4) => self.queue_write(&mut st, offset, 4, v),
            _ => tracing::debug!(
                offset,
                len = data.len(),
                "{}: write to read-only or unknown common cfg field",
                self.name
            ),
        }
    }

    /// A write to one of the selected queue's settings (ignored after DRIVER_OK).
    fn queue_write(&self, st: &mut TransportCore, offset: u64, len: usize, v: u64) {
        let Some(q) = st.selected_mut() else { return };
        match (offset, len) {
            // Checked at activation: a power of two no larger than the maximum.
            (QUEUE_SIZE, _) => q.size = v as u16,
            // The driver enables a queue; it never writes 0 (§4.1.4.3.2).
            (QUEUE_ENABLE, _) => q.ready |= v == 1,
            (QUEUE_DESC, 8) => q.desc = v,
            (QUEUE_DRIVER, 8) => q.driver = v,
            (QUEUE_DEVICE, 8) => q.device = v,
            (o, _) => {
                let field = match o & !7 {
                    QUEUE_DESC => &mut q.desc,
                    QUEUE_DRIVER => &mut q.driver,
                    _ => &mut q.device,
                };
                if o % 8 == 0 {
                    set_low(field, v as u32)
                } else {
                    set_high(field, v as u32)
                }
            }
        }
    }

    /// The BAR access the PCI cfg capability's window stands for (§4.1.4.9): (offset, length)
    /// in BAR4, or None when the driver set up something else.
    fn pci_cfg_window(st: &PciState) -> Option<(u64, usize)> {
        let cap = st.pci_cfg_cap;
        let bar = st.config.byte(cap + PCI_CFG_BAR);
        let offset = u32::from_le_bytes(st.config.bytes_at(cap + PCI_CFG_OFFSET));
        let length = u32::from_le_bytes(st.config.bytes_at(cap + PCI_CFG_LENGTH));
        let ok = bar == MODERN_BAR
            && matches!(length, 1 | 2 | 4)
            && offset.is_multiple_of(length)
            && u64::from(offset) < MODERN_BAR_SIZE;
        ok.then_some((u64::from(offset), length as usize))
    }
}

impl PciDevice for VirtioPciTransport {
    fn config_read(&self, reg: usize) -> u32 {
        let st = self.pci();
        if reg * 4 == st.pci_cfg_cap + PCI_CFG_DATA {
            let Some((offset, len)) = Self::pci_cfg_window(&st) else {
                return 0;
            };
            drop(st);
            let mut b = [0u8; 4];
            self.modern_read(offset, &mut b[..len]);
            return u32::from_le_bytes(b);
        }
        st.config.read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let mut st = self.pci();
        if reg * 4 == st.pci_cfg_cap + PCI_CFG_DATA {
            let Some((bar_offset, len)) = Self::pci_cfg_window(&st) else {
                return Vec::new();
            };
            drop(st);
            // The window's bytes are the low `len` bytes of the data dword.
            let mut dword = [0u8; 4];
            for (lane, b) in (offset..4).zip(data) {
                dword[lane] = *b;
            }
            self.modern_write(bar_offset, &dword[..len]);
            return Vec::new();
        }
        let changes = st.config.write(reg, offset, data);
        if let Some(cap) = st.msix_cap {
            let control = cap + 2;
            let (start, end) = (reg * 4 + offset, reg * 4 + offset + data.len());
            if start < control + 2 && end > control {
                let value = u16::from_le_bytes(st.config.bytes_at(control));
                self.msix.set_control(value);
            }
        }
        changes
    }

    fn is_window(&self, reg: usize) -> bool {
        reg * 4 == self.pci().pci_cfg_cap + PCI_CFG_DATA
    }

    fn reset(&self) -> Vec<BarChange> {
        self.core().reset(&self.res);
        self.msix.reset();
        let mut st = self.pci();
        let cap = st.pci_cfg_cap;
        // Capability bytes the guest can write go back to power-on values too.
        let _ = st.config.set_device_bytes(cap + PCI_CFG_BAR, &[0]);
        let _ = st.config.set_device_bytes(cap + PCI_CFG_OFFSET, &[0; 12]);
        if let Some(msix_cap) = st.msix_cap {
            let control = msix_cap + 2;
            let table_size = u16::from_le_bytes(st.config.bytes_at(control)) & 0x7ff;
            let _ = st
                .config
                .set_device_bytes(control, &table_size.to_le_bytes());
        }
        st.config.reset()
    }
}

/// BAR4 of a transport, as a bus device.
pub struct ModernBar(pub Arc<VirtioPciTransport>);

impl BusDevice for ModernBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.modern_read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.0.modern_write(offset, data);
    }
}

/// BAR0 (legacy registers) of a transitional transport, as a bus device.
pub struct LegacyBar(pub Arc<VirtioPciTransport>);

impl BusDevice for LegacyBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.legacy_read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.0.legacy_write(offset, data);
    }
}

impl VirtioPciTransport {
    /// The bus device serving `region`.
    pub fn region_device(self: &Arc<Self>, region: PciRegion) -> Option<Arc<dyn BusDevice>> {
        match region {
            PciRegion::Bar(MSIX_BAR) => Some(Arc::new(MsixBar(self.msix.clone()))),
            PciRegion::Bar(MODERN_BAR) => Some(Arc::new(ModernBar(self.clone()))),
            PciRegion::Bar(LEGACY_BAR) => Some(Arc::new(LegacyBar(self.clone()))),
            _ => None,
        }
    }
}
