//! MSI-X (PCI Local Bus spec 3.0, 6.8.2): the capability's Message Control, the vector table and
//! the pending bit array, laid out as QEMU's `msix_init_exclusive_bar` does (one BAR of at least
//! 4 KiB, the table at 0, the PBA in the upper half).
//!
//! Each vector has a GSI and an eventfd the VMM registered as a KVM irqfd on it; the VMM keeps
//! the GSI's MSI route equal to the table entry ([`MsiRoutes`]), so delivering a vector is one
//! eventfd write from the device's worker thread. The route is brought up to date lazily, the
//! first time a vector fires after its entry changed, so guests that rewrite entries often pay
//! one routing update per change at most.
//!
//! A vector that is masked (its entry's mask bit or the function mask) is not delivered: its
//! pending bit is set, and unmasking delivers it then (6.8.3.4). Entries with an address outside
//! the LAPIC window (0xFEEx_xxxx) are garbage the guest wrote: they deliver nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use crate::MsiMessage;

/// The MSI-X capability ID.
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Message Control: MSI-X Enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message Control: Function Mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector Control: Mask Bit.
const ENTRY_MASKED: u32 = 1;
/// QEMU's bar size for up to 128 vectors (`msix_init_exclusive_bar`).
const MIN_BAR_SIZE: u64 = 4096;
/// The most vectors a function can have (table size field is 11 bits).
pub const MSIX_MAX_VECTORS: usize = 2048;
/// The LAPIC MSI window (Intel SDM vol. 3, 11.11.1).
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// Where the VMM keeps each vector's GSI routed.
pub trait MsiRoutes: Send + Sync {
    /// Route `gsi` to `msg` (an MSI route in KVM's table), or remove its route (`None`).
    fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()>;
}

/// One vector's delivery: the GSI its route lives on and the irqfd that fires it.
pub struct MsixVector {
    pub gsi: u32,
    pub irqfd: EventFd,
}

/// The BAR layout for `vectors` entries: (BAR size, PBA offset), as QEMU's
/// `msix_init_exclusive_bar`.
pub fn msix_bar_layout(vectors: usize) -> (u64, u64) {
    let table = vectors as u64 * MSIX_ENTRY_SIZE;
    let pba_size = (vectors as u64).div_ceil(64) * 8;
    let pba_offset = (MIN_BAR_SIZE / 2).max(table);
    let size = MIN_BAR_SIZE.max(pba_offset + pba_size).next_power_of_two();
    (size, pba_offset)
}

/// The capability body after the ID/next bytes (Message Control, Table Offset/BIR, PBA
/// Offset/BIR), and the write mask of its bytes (Enable and Function Mask only).
pub fn msix_capability(vectors: usize, bar: u8) -> ([u8; 10], [u8; 10]) {
    let (_, pba_offset) = msix_bar_layout(vectors);
    let mut body = [0u8; 10];
    let table_size = (vectors.clamp(1, MSIX_MAX_VECTORS) - 1) as u16;
    body[0..2].copy_from_slice(&table_size.to_le_bytes());
    body[2..6].copy_from_slice(&u32::from(bar).to_le_bytes());
    body[6..10].copy_from_slice(&(pba_offset as u32 | u32::from(bar)).to_le_bytes());
    let mut mask = [0u8; 10];
    mask[1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
    (body, mask)
}

#[derive(Clone, Copy)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

impl Entry {
    /// Power-on state: zero message, masked (6.8.2.9).
    const RESET: Self = Self {
        address: 0,
        data: 0,
        control: ENTRY_MASKED,
    };

    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: self.address,
            data: self.data,
        }
    }
}

struct State {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    function_mask: bool,
    /// What each vector's GSI is routed to now (None: no route).
    routed: Vec<Option<MsiMessage>>,
}

/// The MSI-X state of one function.
pub struct Msix {
    state: Mutex<State>,
    /// MSI-X Enable, readable without the lock (the INTx fallback asks on every interrupt).
    enabled: AtomicBool,
    vectors: Vec<MsixVector>,
    routes: Arc<dyn MsiRoutes>,
    pba_offset: u64,
}

impl Msix {
    /// MSI-X with one table entry per element of `vectors`.
    pub fn new(vectors: Vec<MsixVector>, routes: Arc<dyn MsiRoutes>) -> Self {
        let n = vectors.len().min(MSIX_MAX_VECTORS);
        Self {
            state: Mutex::new(State {
                entries: vec![Entry::RESET; n],
                pending: vec![false; n],
                function_mask: false,
                routed: vec![None; n],
            }),
            enabled: AtomicBool::new(false),
            pba_offset: msix_bar_layout(n).1,
            vectors,
            routes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of vectors (table entries).
    pub fn len(&self) -> usize {
        self.vectors.len().min(MSIX_MAX_VECTORS)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vectors' GSIs and irqfds, for the VMM to register.
    pub fn vectors(&self) -> &[MsixVector] {
        &self.vectors
    }

    /// Whether MSI-X Enable is set (else the function uses INTx).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The guest wrote Message Control (from config space): Enable and Function Mask.
    pub fn set_control(&self, control: u16) {
        let mut st = self.lock();
        let enable = control & CONTROL_ENABLE != 0;
        st.function_mask = control & CONTROL_FUNCTION_MASK != 0;
        self.enabled.store(enable, Ordering::Release);
        self.deliver_unmasked_pending(&mut st);
    }

    fn masked(st: &State, v: usize) -> bool {
        st.function_mask || st.entries[v].control & ENTRY_MASKED != 0
    }

    /// Fire vector `vector`: delivered if enabled and unmasked, else its pending bit is set.
    /// Returns false when MSI-X is disabled (the caller uses INTx instead). A vector past the
    /// table (the driver's garbage) is dropped.
    pub fn notify(&self, vector: u16) -> bool {
        if !self.enabled() {
            return false;
        }
        let v = usize::from(vector);
        let mut st = self.lock();
        if v >= st.entries.len() {
            return true;
        }
        if Self::masked(&st, v) {
            st.pending[v] = true;
        } else {
            self.deliver(&mut st, v);
        }
        true
    }

    fn deliver(&self, st: &mut State, v: usize) {
        let msg = st.entries[v].message();
        if msg.address & MSI_ADDRESS_MASK != MSI_ADDRESS_BASE {
            tracing::debug!(vector = v, ?msg, "MSI-X: entry is not an MSI; dropped");
            return;
        }
        let gsi = self.vectors[v].gsi;
        if st.routed[v] != Some(msg) {
            if let Err(e) = self.routes.set_msi_route(gsi, Some(msg)) {
                tracing::warn!("MSI-X: routing GSI {gsi} to {msg:?} failed: {e}");
                return;
            }
            st.routed[v] = Some(msg);
        }
        let _ = self.vectors[v].irqfd.write(1);
    }

    fn deliver_unmasked_pending(&self, st: &mut State) {
        if !self.enabled() {
            return;
        }
        for v in 0..st.entries.len() {
            if st.pending[v] && !Self::masked(st, v) {
                st.pending[v] = false;
                self.deliver(st, v);
            }
        }
    }

    /// A guest read of the MSI-X BAR at `offset`: table entries (dword or qword) and the PBA.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(4) {
            return;
        }
        let st = self.lock();
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let off = offset + 4 * i as u64;
            let v = if off >= self.pba_offset {
                Self::pba_dword(&st, off - self.pba_offset)
            } else {
                Self::entry_dword(&st, off)
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn entry_dword(st: &State, off: u64) -> u32 {
        let Some(e) = st.entries.get((off / MSIX_ENTRY_SIZE) as usize) else {
            return 0;
        };
        match off % MSIX_ENTRY_SIZE {
            0 => e.address as u32,
            4 => (e.address >> 32) as u32,
            8 => e.data,
            _ => e.control,
        }
    }

    fn pba_dword(st: &State, off: u64) -> u32 {
        let first = (off * 8) as usize;
        (0..32)
            .filter(|b| st.pending.get(first + b).copied().unwrap_or(false))
            .fold(0, |acc, b| acc | 1 << b)
    }

    /// A guest write to the MSI-X BAR at `offset`; the PBA is read-only.
    pub fn write(&self, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(4) || offset >= self.pba_offset {
            return;
        }
        let mut st = self.lock();
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let Some(e) = st.entries.get_mut((off / MSIX_ENTRY_SIZE) as usize) else {
                continue;
            };
            match off % MSIX_ENTRY_SIZE {
                0 => e.address = (e.address & !0xffff_ffff) | u64::from(value),
                4 => e.address = (e.address & 0xffff_ffff) | (u64::from(value) << 32),
                8 => e.data = value,
                // Bits other than Mask are reserved (read as zero).
                _ => e.control = value & ENTRY_MASKED,
            }
        }
        self.deliver_unmasked_pending(&mut st);
    }

    /// Function reset: entries masked and zeroed, nothing pending, routes removed.
    pub fn reset(&self) {
        let mut st = self.lock();
        self.enabled.store(false, Ordering::Release);
        st.function_mask = false;
        st.entries.fill(Entry::RESET);
        st.pending.fill(false);
        for (v, routed) in st.routed.iter_mut().enumerate() {
            if routed.take().is_some() {
                let _ = self.routes.set_msi_route(self.vectors[v].gsi, None);
            }
        }
        for vector in &self.vectors {
            let _ = vector.irqfd.read();
        }
    }
}

/// One table entry in a snapshot.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct MsixEntryState {
    pub address: u64,
    pub data: u32,
    pub control: u32,
}

/// The vector table and pending bits in a snapshot (Enable and Function Mask are config space,
/// saved with it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MsixState {
    pub entries: Vec<MsixEntryState>,
    pub pending: Vec<bool>,
}

impl Msix {
    pub fn save(&self) -> MsixState {
        let st = self.lock();
        MsixState {
            entries: st
                .entries
                .iter()
                .map(|e| MsixEntryState {
                    address: e.address,
                    data: e.data,
                    control: e.control,
                })
                .collect(),
            pending: st.pending.clone(),
        }
    }

    /// Become the saved table. Every entry that holds an MSI gets its GSI routed now (a fresh
    /// process has irqfds on GSIs without routes), so the first interrupt after the restore
    /// goes out with no routing update in the worker's path.
    pub fn restore(&self, s: &MsixState) -> Result<(), String> {
        let mut st = self.lock();
        let n = st.entries.len();
        if s.entries.len() != n || s.pending.len() != n {
            return Err(format!(
                "MSI-X table of {} entries and {} pending bits in the snapshot, {n} vectors here",
                s.entries.len(),
                s.pending.len()
            ));
        }
        for (v, e) in s.entries.iter().enumerate() {
            st.entries[v] = Entry {
                address: e.address,
                data: e.data,
                control: e.control & ENTRY_MASKED,
            };
            st.pending[v] = s.pending[v];
            let msg = st.entries[v].message();
            let route = (msg.address & MSI_ADDRESS_MASK == MSI_ADDRESS_BASE).then_some(msg);
            if st.routed[v] != route {
                self.routes
                    .set_msi_route(self.vectors[v].gsi, route)
                    .map_err(|e| format!("routing GSI {}: {e}", self.vectors[v].gsi))?;
                st.routed[v] = route;
            }
        }
        self.deliver_unmasked_pending(&mut st);
        Ok(())
    }
}

/// The MSI-X BAR as a bus device.
pub struct MsixBar(pub Arc<Msix>);

impl crate::BusDevice for MsixBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.0.write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);

    impl MsiRoutes for Routes {
        fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
            self.0.lock().unwrap().push((gsi, msg));
            Ok(())
        }
    }

    fn msix(n: usize) -> (Msix, Arc<Routes>) {
        let routes = Arc::new(Routes::default());
        let vectors = (0..n)
            .map(|i| MsixVector {
                gsi: 24 + i as u32,
                irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
            })
            .collect();
        (Msix::new(vectors, routes.clone()), routes)
    }

    fn fired(m: &Msix, v: usize) -> bool {
        m.vectors()[v].irqfd.read().is_ok()
    }

    fn program(m: &Msix, v: u64, address: u64, data: u32, masked: bool) {
        let base = v * MSIX_ENTRY_SIZE;
        m.write(base, &address.to_le_bytes());
        m.write(base + 8, &data.to_le_bytes());
        m.write(base + 12, &u32::from(masked).to_le_bytes());
    }

    fn rd32(m: &Msix, off: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn layout_matches_qemu() {
        assert_eq!(msix_bar_layout(2), (4096, 2048));
        assert_eq!(msix_bar_layout(128), (4096, 2048));
        assert_eq!(msix_bar_layout(129), (4096, 2064));
        assert_eq!(msix_bar_layout(300), (8192, 4800));
        let (body, mask) = msix_capability(3, 1);
        assert_eq!(&body[..2], &2u16.to_le_bytes());
        assert_eq!(&body[2..6], &1u32.to_le_bytes());
        assert_eq!(&body[6..10], &0x801u32.to_le_bytes());
        assert_eq!(mask[1], 0xc0);
    }

    #[test]
    fn disabled_msix_falls_back() {
        let (m, _) = msix(2);
        program(&m, 0, 0xfee0_0000, 0x30, false);
        assert!(!m.notify(0), "disabled: the caller uses INTx");
        assert!(!fired(&m, 0));
    }

    #[test]
    fn masked_vector_sets_pending_and_unmask_delivers() {
        let (m, routes) = msix(2);
        m.set_control(CONTROL_ENABLE);
        program(&m, 1, 0xfee0_0000, 0x41, true);
        assert!(m.notify(1));
        assert!(!fired(&m, 1), "masked vectors are not delivered");
        assert_eq!(rd32(&m, 2048), 0b10, "pending bit set");
        // Unmask: the pending interrupt goes out with the entry's message.
        m.write(16 + 12, &0u32.to_le_bytes());
        assert!(fired(&m, 1));
        assert_eq!(rd32(&m, 2048), 0);
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x41,
        };
        assert_eq!(routes.0.lock().unwrap().as_slice(), &[(25, Some(msg))]);
        // Delivered again without a second route update.
        assert!(m.notify(1));
        assert!(fired(&m, 1));
        assert_eq!(routes.0.lock().unwrap().len(), 1);
        // The function mask holds every vector back, and releases them.
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert!(m.notify(1));
        assert!(!fired(&m, 1));
        assert_eq!(rd32(&m, 2048), 0b10);
        m.set_control(CONTROL_ENABLE);
        assert!(fired(&m, 1));
    }

    #[test]
    fn changed_entry_is_rerouted() {
        let (m, routes) = msix(1);
        m.set_control(CONTROL_ENABLE);
        program(&m, 0, 0xfee0_0000, 0x41, false);
        assert!(m.notify(0));
        program(&m, 0, 0xfee0_1000, 0x42, false);
        assert!(m.notify(0));
        let r = routes.0.lock().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1.unwrap().data, 0x42);
    }

    #[test]
    fn garbage_is_harmless() {
        let (m, routes) = msix(2);
        m.set_control(CONTROL_ENABLE);
        // Not an MSI address: nothing delivered, nothing routed.
        program(&m, 0, 0xdead_0000, 1, false);
        assert!(m.notify(0));
        assert!(!fired(&m, 0));
        assert!(routes.0.lock().unwrap().is_empty());
        // Vectors past the table, odd sizes and offsets, PBA and out-of-range writes.
        assert!(m.notify(2));
        assert!(m.notify(0xffff));
        m.write(3, &[1, 2, 3, 4]);
        m.write(0, &[1, 2]);
        m.write(2048, &u32::MAX.to_le_bytes());
        m.write(4000, &u32::MAX.to_le_bytes());
        m.write(u64::MAX - 3, &u32::MAX.to_le_bytes());
        let mut b = [0u8; 3];
        m.read(u64::MAX - 3, &mut b);
        assert_eq!(rd32(&m, 2048), 0);
        assert_eq!(rd32(&m, 16 * 5), 0, "past the table reads zero");
        // Reserved vector control bits read as zero.
        m.write(12, &u32::MAX.to_le_bytes());
        assert_eq!(rd32(&m, 12), 1);
    }

    #[test]
    fn reset_masks_and_unroutes() {
        let (m, routes) = msix(1);
        m.set_control(CONTROL_ENABLE);
        program(&m, 0, 0xfee0_0000, 0x41, false);
        assert!(m.notify(0));
        m.reset();
        assert!(!m.enabled());
        assert_eq!(rd32(&m, 12), 1, "masked after reset");
        assert_eq!(routes.0.lock().unwrap().last(), Some(&(24, None)));
    }

    #[test]
    fn restore_routes_entries_and_keeps_pending() {
        let (m, _) = msix(2);
        m.set_control(CONTROL_ENABLE);
        program(&m, 0, 0xfee0_0000, 0x41, false);
        program(&m, 1, 0xfee0_1000, 0x42, true);
        assert!(m.notify(1));
        let saved = m.save();
        let (n, routes) = msix(2);
        n.set_control(CONTROL_ENABLE);
        n.restore(&saved).unwrap();
        assert_eq!(rd32(&n, 2048), 0b10, "pending bit restored");
        assert_eq!(
            routes.0.lock().unwrap().len(),
            2,
            "both MSIs routed at once"
        );
        assert!(n.notify(0));
        assert!(fired(&n, 0));
        assert_eq!(
            routes.0.lock().unwrap().len(),
            2,
            "no routing update on delivery"
        );
        n.write(16 + 12, &0u32.to_le_bytes());
        assert!(
            fired(&n, 1),
            "unmasking delivers the restored pending vector"
        );
        let (short, _) = msix(3);
        assert!(short
            .restore(&saved)
            .unwrap_err()
            .contains("3 vectors here"));
    }
}
