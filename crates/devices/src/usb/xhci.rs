//! `qemu-xhci` (1b36:000d) as QEMU 7.2's hw/usb/hcd-xhci-pci.c: an xHCI 1.0 USB controller on
//! PCI, with no USB device behind it yet. BAR 0 (64-bit, 16 KiB) holds the registers of
//! [`XhciRegs`] and the MSI-X table (0x3000) and PBA (0x3800) of its 16 interrupters; without
//! MSI-X, interrupter 0 raises INTA#. qemu-xhci has no MSI (QEMU's `msi=off` for it).

use super::xhci_regs::{XhciIrq, XhciRegs, INTERRUPTERS};
use crate::pci::{
    BarChange, BarKind, BarSpec, MsiRoutes, Msix, MsixState, MsixVector, PciConfig, PciConfigError,
    PciDevice, PciIdentity, PciRegion, PciSpace, PCI_CAP_ID_MSIX, PCI_COMMAND_INTX_DISABLE,
    PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::{BusDevice, InterruptError, IrqLine, Persist, StateError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const PCI_VENDOR_ID_REDHAT: u16 = 0x1b36;
pub const PCI_DEVICE_ID_REDHAT_XHCI: u16 = 0x000d;
/// BAR 0's size and where the MSI-X structures sit in it (QEMU's OFF_MSIX_TABLE/PBA).
pub const XHCI_BAR_SIZE: u64 = 0x4000;
const OFF_MSIX_TABLE: u64 = 0x3000;
const OFF_MSIX_PBA: u64 = 0x3800;
const BAR: u8 = 0;

/// The controller as a PCI function.
pub struct Xhci {
    config: Mutex<PciConfig>,
    msix_cap: usize,
    regs: Mutex<XhciRegs>,
    /// When USBCMD.RS last went to 1: MFINDEX counts 125 us microframes from there.
    started: Mutex<Instant>,
    msix: Arc<Msix>,
    mem: Arc<GuestMemoryMmap>,
    intx: OnceLock<EventFd>,
}

/// Delivery for [`XhciRegs`]: MSI-X when enabled, else INTx for interrupter 0.
struct Irq<'a> {
    msix: &'a Msix,
    intx: Option<&'a EventFd>,
    intx_disabled: bool,
}

impl XhciIrq for Irq<'_> {
    fn raise(&self, v: usize, level: bool) -> bool {
        if self.msix.enabled() {
            if level {
                self.msix.notify(v as u16);
                return true;
            }
            return false;
        }
        if v == 0 && level && !self.intx_disabled {
            if let Some(evt) = self.intx {
                // A full counter still means "raised".
                let _ = evt.write(1);
            }
        }
        false
    }
}

impl Xhci {
    /// A controller with `usb2` and `usb3` root ports, whose MSI-X `vectors` (one per
    /// interrupter) `routes` keeps routed.
    pub fn new(
        usb2: u8,
        usb3: u8,
        mem: Arc<GuestMemoryMmap>,
        vectors: Vec<MsixVector>,
        routes: Arc<dyn MsiRoutes>,
    ) -> Result<Self, PciConfigError> {
        let mut config = PciConfig::new(&PciIdentity {
            vendor: PCI_VENDOR_ID_REDHAT,
            device: PCI_DEVICE_ID_REDHAT_XHCI,
            class: 0x0c,    // serial bus
            subclass: 0x03, // USB
            prog_if: 0x30,  // xHCI
            revision: 0x01,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        config.add_bar(
            BAR,
            BarSpec {
                size: XHCI_BAR_SIZE,
                kind: BarKind::Mem64,
                prefetchable: false,
            },
        )?;
        config.set_interrupt_pin(1);
        // SBRN: USB 3.0 (xHCI 1.2 5.2.3).
        config.set_device_bytes(0x60, &[0x30])?;
        let n = vectors.len();
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&((n.max(1) - 1) as u16).to_le_bytes());
        body[2..6].copy_from_slice(&(OFF_MSIX_TABLE as u32 | u32::from(BAR)).to_le_bytes());
        body[6..10].copy_from_slice(&(OFF_MSIX_PBA as u32 | u32::from(BAR)).to_le_bytes());
        let mut mask = [0u8; 10];
        mask[1] = 0xc0; // Enable and Function Mask
        let msix_cap =
            usize::from(config.add_capability_with_mask(PCI_CAP_ID_MSIX, &body, &mask)?);
        Ok(Self {
            config: Mutex::new(config),
            msix_cap,
            regs: Mutex::new(XhciRegs::new(usb2, usb3)),
            started: Mutex::new(Instant::now()),
            msix: Arc::new(Msix::new(vectors, routes)),
            mem,
            intx: OnceLock::new(),
        })
    }

    fn regs(&self) -> MutexGuard<'_, XhciRegs> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The MSI-X state (its vectors' irqfds to register).
    pub fn msix(&self) -> &Arc<Msix> {
        &self.msix
    }

    /// INTA#: a level line through the machine's PCI routing, re-raised at each EOI while
    /// interrupter 0 asks.
    pub fn intx_line(&self, gsi: u32) -> Result<IrqLine, InterruptError> {
        let trigger = EventFd::new(EFD_NONBLOCK)
            .map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let resample = EventFd::new(EFD_NONBLOCK)
            .map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let own = trigger
            .try_clone()
            .map_err(|source| InterruptError::CloneEventFd { gsi, source })?;
        let _ = self.intx.set(own);
        Ok(IrqLine {
            gsi,
            trigger,
            resample: Some(resample),
        })
    }

    /// The guest EOI'd INTA: raise it again while interrupter 0 still asks.
    pub fn resample(&self) {
        if self.regs().intx_level() && !self.msix.enabled() && !self.intx_disabled() {
            if let Some(evt) = self.intx.get() {
                let _ = evt.write(1);
            }
        }
    }

    fn intx_disabled(&self) -> bool {
        self.config().read(1) as u16 & PCI_COMMAND_INTX_DISABLE != 0
    }

    /// The regions the function decodes (BAR 0).
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.config().regions()
    }

    /// The device serving `region`.
    pub fn region_device(self: &Arc<Self>, region: PciRegion) -> Option<Arc<dyn BusDevice>> {
        match region {
            PciRegion::Bar(BAR) => Some(Arc::new(XhciBar(self.clone()))),
            _ => None,
        }
    }

    fn mfindex(&self) -> u32 {
        let start = *self.started.lock().unwrap_or_else(|e| e.into_inner());
        (start.elapsed().as_nanos() / 125_000) as u32
    }

    fn read_dword(&self, offset: u64) -> u32 {
        let v = self.regs().read(offset, self.mfindex());
        tracing::trace!("qemu-xhci: read {offset:#x} -> {v:#x}");
        v
    }

    fn write_dword(&self, offset: u64, val: u32) {
        tracing::trace!("qemu-xhci: write {offset:#x} <- {val:#x}");
        let intx_disabled = self.intx_disabled();
        let irq = Irq {
            msix: &self.msix,
            intx: self.intx.get(),
            intx_disabled,
        };
        let started = self.regs().write(offset, val, &self.mem, &irq);
        if started {
            *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// BAR 0 as a bus device: 32-bit register accesses (64-bit ones as two, low dword first, as
/// QEMU splits them); byte and word reads of the capability registers; the MSI-X table.
pub struct XhciBar(pub Arc<Xhci>);

impl BusDevice for XhciBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if (OFF_MSIX_TABLE..XHCI_BAR_SIZE).contains(&offset) {
            self.0.msix.read(offset - OFF_MSIX_TABLE, data);
            return;
        }
        match data.len() {
            4 | 8 if offset.is_multiple_of(4) => {
                for (i, chunk) in data.chunks_mut(4).enumerate() {
                    let v = self.0.read_dword(offset + 4 * i as u64);
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
            }
            1 | 2 if offset < super::xhci_regs::LEN_CAP => {
                let v = self.0.read_dword(offset & !3) >> ((offset & 3) * 8);
                let bytes = v.to_le_bytes();
                let n = data.len();
                data.copy_from_slice(&bytes[..n]);
            }
            _ => {}
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if (OFF_MSIX_TABLE..XHCI_BAR_SIZE).contains(&offset) {
            self.0.msix.write(offset - OFF_MSIX_TABLE, data);
            return;
        }
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(4) {
            return;
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.0.write_dword(offset + 4 * i as u64, v);
        }
    }
}

impl PciDevice for Xhci {
    fn config_read(&self, reg: usize) -> u32 {
        self.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let mut config = self.config();
        let changes = config.write(reg, offset, data);
        let control = self.msix_cap + 2;
        let (start, end) = (reg * 4 + offset, reg * 4 + offset + data.len());
        if start < control + 2 && end > control {
            let value = u16::from_le_bytes(config.bytes_at(control));
            drop(config);
            self.msix.set_control(value);
        }
        changes
    }

    /// RST#: registers, MSI-X and config space to power-on values.
    fn reset(&self) -> Vec<BarChange> {
        self.regs().reset();
        self.msix.reset();
        let mut config = self.config();
        let control = self.msix_cap + 2;
        let table_size = (INTERRUPTERS as u16 - 1).to_le_bytes();
        let _ = config.set_device_bytes(control, &table_size);
        config.reset()
    }
}

/// A snapshot of the controller: its registers and MSI-X table (config space is the bus's).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct XhciState {
    regs: XhciRegs,
    msix: MsixState,
}

impl Persist for Xhci {
    type State = XhciState;

    fn save(&self) -> XhciState {
        XhciState {
            regs: self.regs().clone(),
            msix: self.msix.save(),
        }
    }

    fn restore(&self, state: XhciState) -> Result<(), StateError> {
        self.regs()
            .check(&state.regs)
            .map_err(StateError::Invalid)?;
        self.msix
            .restore(&state.msix)
            .map_err(StateError::Invalid)?;
        *self.regs() = state.regs;
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MsiMessage;
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);

    impl MsiRoutes for Routes {
        fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
            self.0.lock().unwrap().push((gsi, msg));
            Ok(())
        }
    }

    const EVENTS: u64 = 0x2_1000;

    /// A controller with INTx, driven to Run with INTE and IMAN.IE and one No Op per call.
    fn controller() -> (Arc<Xhci>, XhciBar, IrqLine, Arc<Routes>) {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
        let vectors = (0..INTERRUPTERS as u32)
            .map(|gsi| MsixVector {
                gsi: 24 + gsi,
                irqfd: EventFd::new(EFD_NONBLOCK).unwrap(),
            })
            .collect();
        let routes = Arc::new(Routes::default());
        let x = Arc::new(Xhci::new(4, 4, mem.clone(), vectors, routes.clone()).unwrap());
        let line = x.intx_line(21).unwrap();
        let bar = XhciBar(x.clone());
        let w = |off: u64, v: u32| bar.write(off, &v.to_le_bytes());
        let seg: Vec<u8> = [EVENTS.to_le_bytes().to_vec(), vec![16, 0, 0, 0, 0, 0, 0, 0]].concat();
        mem.write_slice(&seg, GuestAddress(0x2_0000)).unwrap();
        w(0x58, 0x1_0001); // CRCR
        w(0x5c, 0);
        w(0x1028, 1); // ERSTSZ
        w(0x1038, EVENTS as u32); // ERDP
        w(0x1030, 0x2_0000); // ERSTBA
        w(0x1034, 0);
        w(0x1020, 2); // IMAN.IE
        w(0x40, 5); // RS | INTE
        for i in 0..4u64 {
            let mut t = [0u8; 16];
            t[12..16].copy_from_slice(&((23u32 << 10) | 1).to_le_bytes());
            mem.write_slice(&t, GuestAddress(0x1_0000 + 16 * i))
                .unwrap();
        }
        (x, bar, line, routes)
    }

    #[test]
    fn intx_follows_interrupter_0_and_is_raised_again_at_eoi() {
        let (x, bar, line, _) = controller();
        assert!(line.trigger.read().is_err(), "raised before any event");
        bar.write(0x2000, &0u32.to_le_bytes()); // doorbell: 4 No Ops
        assert!(line.trigger.read().is_ok(), "INTA# not raised");
        // EOI with IP still set: raised again.
        x.resample();
        assert!(line.trigger.read().is_ok());
        // The driver acknowledges IP: the line stays low.
        bar.write(0x1020, &3u32.to_le_bytes());
        x.resample();
        assert!(line.trigger.read().is_err());
        // INTx Disable in COMMAND keeps it low too.
        x.config_write(1, 0, &[0x06, 0x04]);
        bar.write(0x1038, &((EVENTS as u32 + 64) | 8).to_le_bytes());
        assert!(line.trigger.read().is_err());
    }

    #[test]
    fn msix_vector_0_gets_the_event() {
        let (x, bar, line, routes) = controller();
        // Table entry 0, then MSI-X Enable (Message Control's high byte, bit 7).
        let w = |off: u64, v: u32| bar.write(off, &v.to_le_bytes());
        w(0x3000, 0xfee0_0000);
        w(0x3004, 0);
        w(0x3008, 0x31);
        w(0x300c, 0);
        let mut r = [0u8; 4];
        bar.read(0x3008, &mut r);
        assert_eq!(u32::from_le_bytes(r), 0x31);
        x.config_write(x.msix_cap / 4, 3, &[0x80]);
        assert!(x.msix().enabled());
        w(0x2000, 0);
        assert!(
            x.msix().vectors()[0].irqfd.read().is_ok(),
            "vector 0 not fired"
        );
        assert!(line.trigger.read().is_err(), "INTA# with MSI-X on");
        assert_eq!(
            routes.0.lock().unwrap()[0],
            (
                24,
                Some(MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x31
                })
            )
        );
        // The capability reads back as QEMU's: 16 entries, table at 0x3000, PBA at 0x3800.
        let cap = x.config_read(x.msix_cap / 4);
        assert_eq!(cap >> 16, 0x800f);
        assert_eq!(x.config_read(x.msix_cap / 4 + 1), 0x3000);
        assert_eq!(x.config_read(x.msix_cap / 4 + 2), 0x3800);
        // RST# brings it all back.
        x.reset();
        assert!(!x.msix().enabled());
        assert_eq!(x.config_read(x.msix_cap / 4) >> 16, 0x000f);
        bar.read(0x44, &mut r);
        assert_eq!(u32::from_le_bytes(r), 1);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (x, bar, _, _) = controller();
        let mut b = [0u8; 1];
        bar.read(0, &mut b);
        assert_eq!(b[0], 0x40, "CAPLENGTH byte read");
        let mut w = [0u8; 2];
        bar.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0100, "HCIVERSION word read");
        bar.write(0x41, &[1, 2, 3, 4]);
        bar.write(0x40, &[1]);
        let mut d = [0u8; 4];
        bar.read(0x44, &mut d);
        assert_eq!(
            u32::from_le_bytes(d),
            0,
            "still running after garbage writes"
        );
        bar.read(0x3ffc, &mut d);
        bar.read(XHCI_BAR_SIZE + 4, &mut d);
        let saved = x.save();
        x.restore(saved).unwrap();
    }
}
