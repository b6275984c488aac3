//! The legacy interface of a transitional virtio-pci function (virtio 1.2 §4.1.4.10 and
//! "Legacy Interfaces: A Note on PCI Device Layout"): I/O BAR0 with the virtio 0.9.5 registers,
//! as QEMU 7.2's `virtio_ioport_read`/`virtio_ioport_write`.
//!
//! | offset | size | register |
//! |---|---|---|
//! | 0x00 | 4 | host features (bits 0-31) |
//! | 0x04 | 4 | guest features |
//! | 0x08 | 4 | queue PFN (the ring's guest page; 0 resets the device) |
//! | 0x0c | 2 | queue size (read-only: the maximum) |
//! | 0x0e | 2 | queue select |
//! | 0x10 | 2 | queue notify (an ioeventfd per queue, datamatch = index) |
//! | 0x12 | 1 | device status |
//! | 0x13 | 1 | ISR (reading clears it) |
//! | 0x14 | 2 | config vector (while MSI-X is enabled) |
//! | 0x16 | 2 | queue vector (while MSI-X is enabled) |
//! | 0x14 or 0x18 | .. | device config (0x18 while MSI-X is enabled) |
//!
//! The driver's first access here puts the transport core in legacy mode until the next reset.
//! Rings sit where the legacy layout puts them: descriptors at PFN * 4096, the available ring
//! right after them, the used ring at the next 4096-byte boundary (§2.7 legacy note).

use super::{TransportCore, VirtioPciTransport};

pub(super) const HOST_FEATURES: u64 = 0x00;
const GUEST_FEATURES: u64 = 0x04;
const QUEUE_PFN: u64 = 0x08;
const QUEUE_NUM: u64 = 0x0c;
const QUEUE_SEL: u64 = 0x0e;
/// Queue notify register: the VMM puts an ioeventfd per queue here.
pub const LEGACY_QUEUE_NOTIFY: u64 = 0x10;
const STATUS: u64 = 0x12;
const ISR: u64 = 0x13;
const CONFIG_VECTOR: u64 = 0x14;
const QUEUE_VECTOR: u64 = 0x16;
/// Device config offset without and with MSI-X enabled.
const CONFIG_OFF: u64 = 0x14;
const CONFIG_OFF_MSIX: u64 = 0x18;
/// The register block's size with MSI-X present, before the device config.
pub const LEGACY_REGS_SIZE: u64 = CONFIG_OFF_MSIX;
/// `VIRTIO_PCI_QUEUE_ADDR_SHIFT` and `VIRTIO_PCI_VRING_ALIGN`.
const PAGE_SHIFT: u32 = 12;
const VRING_ALIGN: u64 = 4096;

/// Where the legacy layout puts a queue of `size` entries at guest page `pfn`: (descriptors,
/// available ring, used ring).
fn legacy_rings(pfn: u32, size: u16) -> (u64, u64, u64) {
    let desc = u64::from(pfn) << PAGE_SHIFT;
    let avail = desc + 16 * u64::from(size);
    let used = (avail + 4 + 2 * u64::from(size) + 2).next_multiple_of(VRING_ALIGN);
    (desc, avail, used)
}

impl VirtioPciTransport {
    fn config_offset(&self) -> u64 {
        if self.msix.enabled() {
            CONFIG_OFF_MSIX
        } else {
            CONFIG_OFF
        }
    }

    /// A read of BAR0 at `offset`.
    pub fn legacy_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config_offset();
        let mut st = self.core();
        if offset >= config {
            return st.device.read_config(offset - config, data);
        }
        st.legacy = true;
        let sel = st.queue_sel as usize;
        let vectors = self.res.interrupt.vectors();
        let value: u32 = match (offset, data.len()) {
            (HOST_FEATURES, 4) => st.device.features() as u32,
            (GUEST_FEATURES, 4) => st.driver_features as u32,
            (QUEUE_PFN, 4) => st.selected().map_or(0, |q| (q.desc >> PAGE_SHIFT) as u32),
            (QUEUE_NUM, 2) => st.selected().map_or(0, |q| u32::from(q.max_size)),
            (QUEUE_SEL, 2) => st.queue_sel,
            (STATUS, 1) => st.read_status(&self.res),
            (ISR, 1) => {
                drop(st);
                self.res.interrupt.take_status()
            }
            (CONFIG_VECTOR, 2) if config == CONFIG_OFF_MSIX => {
                vectors.map_or(0xffff, |v| u32::from(v.config_vector()))
            }
            (QUEUE_VECTOR, 2) if config == CONFIG_OFF_MSIX => {
                vectors.map_or(0xffff, |v| u32::from(v.queue_vector(sel)))
            }
            _ => return,
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
    }

    /// A write to BAR0 at `offset`.
    pub fn legacy_write(&self, offset: u64, data: &[u8]) {
        let config = self.config_offset();
        let mut st = self.core();
        if offset >= config {
            return st.device.write_config(offset - config, data);
        }
        st.legacy = true;
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(bytes);
        match (offset, data.len()) {
            (GUEST_FEATURES, 4) => {
                // Legacy drivers set features once, before DRIVER_OK.
                if st.status & super::super::STATUS_DRIVER_OK == 0 {
                    st.driver_features = u64::from(v);
                }
            }
            (QUEUE_PFN, 4) if v == 0 => st.reset(&self.res),
            (QUEUE_PFN, 4) => {
                if let Some(q) = st.selected_mut() {
                    let (desc, avail, used) = legacy_rings(v, q.max_size);
                    q.size = q.max_size;
                    (q.desc, q.driver, q.device) = (desc, avail, used);
                    q.ready = true;
                }
            }
            (QUEUE_SEL, 2) => st.queue_sel = v,
            (LEGACY_QUEUE_NOTIFY, 2) => {
                if let Some(evt) = self.res.notify.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            (STATUS, 1) => Self::legacy_status(&mut st, self, v),
            (CONFIG_VECTOR, 2) if config == CONFIG_OFF_MSIX => {
                let vector = self.checked_vector(v as u16);
                if let Some(vs) = self.res.interrupt.vectors() {
                    vs.set_config_vector(vector);
                }
            }
            (QUEUE_VECTOR, 2) if config == CONFIG_OFF_MSIX => {
                let sel = st.queue_sel as usize;
                if sel < st.queues.len() {
                    let vector = self.checked_vector(v as u16);
                    if let Some(vs) = self.res.interrupt.vectors() {
                        vs.set_queue_vector(sel, vector);
                    }
                }
            }
            _ => tracing::debug!(
                offset,
                len = data.len(),
                "{}: write to read-only or unknown legacy register",
                self.name
            ),
        }
    }

    fn legacy_status(st: &mut TransportCore, t: &VirtioPciTransport, v: u32) {
        st.write_status(&t.res, v & 0xff);
        // write_status(0) resets, which leaves legacy mode; the driver is still legacy.
        st.legacy = true;
    }
}

#[cfg(test)]
mod tests {
    use super::legacy_rings;

    #[test]
    fn legacy_ring_layout() {
        // 256 entries at page 0x40: avail at +4 KiB, used at the next page after avail's end.
        assert_eq!(legacy_rings(0x40, 256), (0x40000, 0x41000, 0x42000));
        assert_eq!(legacy_rings(1, 16), (0x1000, 0x1100, 0x2000));
    }
}
