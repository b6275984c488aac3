//! The ICH9 AHCI controller as QEMU's `ich9-ahci` (hw/ide/ich.c, hw/ide/ahci.c): PCI 8086:2922
//! revision 2, class 01/06/01 (SATA, AHCI 1.0), BAR5 the 4 KiB ABAR (HBA registers, AHCI 1.3.1
//! section 3), BAR4 the 32-byte index/data pair (IDP) onto the same registers, INTA and an MSI
//! capability (one vector, 64-bit), and a SATA capability pointing at the IDP.
//!
//! Six ports (PI = 0x3f), 32 command slots, 64-bit addressing, AHCI only (CAP.SAM), Gen1. CAP
//! leaves out NCQ (QEMU sets it) so Linux never issues FPDMA commands; everything else is
//! what QEMU's `ahci_reg_init` reports.
//!
//! Interrupts: HBA IS bit n is set while port n has `PxIS & PxIE`; with GHC.IE the controller
//! then sends its MSI (when the guest enabled it) through [`MsiSender`], or asserts INTA
//! through a level [`IrqLine`] that the VMM re-samples at EOI ([`Ahci::resample`]).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ahci_port::Port;
use super::{AtaDrive, BlockBackend};
use crate::interrupt::{InterruptError, IrqLine, MsiMessage};
use crate::pci::{
    BarChange, BarKind, BarSpec, PciConfig, PciConfigError, PciDevice, PciIdentity, PciRegion,
    PciSpace, PCI_COMMAND_INTX_DISABLE, PCI_SUBDEVICE_ID_QEMU, PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
};
use crate::BusDevice;

/// Ports QEMU's ich9-ahci has.
pub const AHCI_PORTS: usize = 6;
/// BAR5 size.
pub const AHCI_ABAR_SIZE: u64 = 0x1000;
/// BAR4 size (QEMU's "ahci-idp").
pub const AHCI_IDP_SIZE: u64 = 32;

const PCI_DEVICE_ID_ICH9_AHCI: u16 = 0x2922;
const PCI_VENDOR_ID_INTEL: u16 = 0x8086;
const ABAR: u8 = 5;
const IDP_BAR: u8 = 4;
/// IDP index register offset (QEMU's `ICH9_IDP_INDEX`); data follows it.
const IDP_INDEX: u64 = 0x10;
const PCI_CAP_ID_MSI: u8 = 0x05;
const PCI_CAP_ID_SATA: u8 = 0x12;

// CAP: 64-bit (S64A), AHCI only (SAM), Gen1 (ISS = 1), 32 slots (NCS = 31), ports - 1.
const CAP: u32 = (1 << 31) | (1 << 18) | (1 << 20) | (31 << 8) | (AHCI_PORTS as u32 - 1);
const GHC_HR: u32 = 1 << 0;
const GHC_IE: u32 = 1 << 1;
const GHC_AE: u32 = 1 << 31;
const VS_1_0: u32 = 0x0001_0000;
const PORTS_BASE: u64 = 0x100;
const PORT_SIZE: u64 = 0x80;

/// Delivers the controller's MSI; implemented by the VMM (KVM_SIGNAL_MSI).
pub trait MsiSender: Send + Sync {
    fn send(&self, msi: MsiMessage);
}

/// Errors building the controller.
#[derive(Debug, thiserror::Error)]
pub enum AhciError {
    #[error("AHCI port {port} does not exist (0-{max})", max = AHCI_PORTS - 1)]
    NoSuchPort { port: usize },
    #[error("AHCI PCI configuration space")]
    Config(#[from] PciConfigError),
}

struct Hba {
    ghc: u32,
    ports: Vec<Port>,
    /// IDP index register.
    idp_index: u32,
}

/// What the register windows and the PCI function share.
struct Inner {
    config: Mutex<PciConfig>,
    msi_cap: usize,
    hba: Mutex<Hba>,
    mem: GuestMemoryMmap,
    intx: OnceLock<EventFd>,
    msi: OnceLock<Arc<dyn MsiSender>>,
}

/// The ICH9 AHCI function.
pub struct Ahci {
    inner: Arc<Inner>,
    abar: Arc<AbarRegion>,
    idp: Arc<IdpRegion>,
}

impl Ahci {
    /// A controller with no drives; `mem` is what its DMA reaches.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self, AhciError> {
        let mut config = PciConfig::new(&PciIdentity {
            vendor: PCI_VENDOR_ID_INTEL,
            device: PCI_DEVICE_ID_ICH9_AHCI,
            class: 0x01,
            subclass: 0x06,
            prog_if: 0x01,
            revision: 0x02,
            subsystem_vendor: PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
            subsystem: PCI_SUBDEVICE_ID_QEMU,
        });
        let mem_bar = BarSpec {
            size: AHCI_ABAR_SIZE,
            kind: BarKind::Mem32,
            prefetchable: false,
        };
        let io_bar = BarSpec {
            size: AHCI_IDP_SIZE,
            kind: BarKind::Io,
            prefetchable: false,
        };
        config.add_bar(ABAR, mem_bar)?;
        config.add_bar(IDP_BAR, io_bar)?;
        config.set_interrupt_pin(1);
        // QEMU's pci_init_wmask: device-specific bytes are read/write unless a capability
        // claims them.
        config.set_write_mask(0x40, &[0xff; 0xc0])?;
        // MAP register (0x90): AHCI mode, as QEMU's ich9 init.
        config.write(0x90 / 4, 0, &[0x40]);
        // SATA capability: revision 1.0, IDP in BAR4 at offset 0x10 (QEMU's
        // `(ICH9_IDP_BAR + 0x4) | (ICH9_IDP_INDEX_LOG2 << 4)`).
        config.add_capability(PCI_CAP_ID_SATA, &[0x10, 0x00, 0x48, 0, 0, 0])?;
        // MSI, 64-bit, one vector: control (enable, MME), address, upper address, data.
        // Message control: 64-bit capable.
        let mut body = [0u8; 12];
        body[0] = 0x80;
        let mut wmask = [0u8; 12];
        wmask[0] = 0x71;
        wmask[2..10].fill(0xff);
        wmask[2] = 0xfc;
        wmask[10..12].fill(0xff);
        let msi_cap =
            usize::from(config.add_capability_with_mask(PCI_CAP_ID_MSI, &body, &wmask)?);
        let hba = Hba {
            ghc: GHC_AE,
            ports: (0..AHCI_PORTS).map(|_| Port::new(None)).collect(),
            idp_index: 0,
        };
        let inner = Arc::new(Inner {
            config: Mutex::new(config),
            msi_cap,
            hba: Mutex::new(hba),
            mem,
            intx: OnceLock::new(),
            msi: OnceLock::new(),
        });
        Ok(Self {
            abar: Arc::new(AbarRegion(inner.clone())),
            idp: Arc::new(IdpRegion(inner.clone())),
            inner,
        })
    }

    /// Put `drive` on `port` (QEMU: `-hda` on port 0, `-cdrom` on port 2 of q35's AHCI).
    pub fn attach(&self, port: usize, drive: AtaDrive) -> Result<(), AhciError> {
        let mut hba = self.inner.hba();
        let p = hba
            .ports
            .get_mut(port)
            .ok_or(AhciError::NoSuchPort { port })?;
        *p = Port::new(Some(drive));
        Ok(())
    }

    /// Change the medium of the CD-ROM on `port` (None ejects it).
    pub fn change_media(
        &self,
        port: usize,
        medium: Option<Arc<dyn BlockBackend>>,
    ) -> Result<(), AhciError> {
        let mut hba = self.inner.hba();
        let p = hba
            .ports
            .get_mut(port)
            .ok_or(AhciError::NoSuchPort { port })?;
        if let Some(d) = p.drive.as_mut() {
            d.change_media(medium);
        }
        Ok(())
    }

    /// INTA as a level-triggered line on `gsi`. The VMM registers the trigger and resample
    /// eventfds (irqfd) and calls [`Ahci::resample`] on each resample. Only the first call
    /// connects the controller.
    pub fn intx_line(&self, gsi: u32) -> Result<IrqLine, InterruptError> {
        let trigger = EventFd::new(EFD_NONBLOCK)
            .map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let resample = EventFd::new(EFD_NONBLOCK)
            .map_err(|source| InterruptError::CreateEventFd { gsi, source })?;
        let own = trigger
            .try_clone()
            .map_err(|source| InterruptError::CloneEventFd { gsi, source })?;
        let _ = self.inner.intx.set(own);
        Ok(IrqLine {
            gsi,
            trigger,
            resample: Some(resample),
        })
    }

    /// Where MSIs go once the guest enables them. Only the first call counts.
    pub fn set_msi_sender(&self, sender: Arc<dyn MsiSender>) {
        let _ = self.inner.msi.set(sender);
    }

    /// The guest EOI'd INTA: assert it again while an interrupt is still pending.
    pub fn resample(&self) {
        let hba = self.inner.hba();
        self.inner.update_irq(&hba);
    }

    /// The regions the function decodes (BAR4 I/O, BAR5 memory).
    pub fn regions(&self) -> Vec<(PciRegion, PciSpace, u64)> {
        self.inner.config().regions()
    }

    /// The device serving `region` (offsets relative to the BAR base).
    pub fn region_device(&self, region: PciRegion) -> Option<Arc<dyn BusDevice>> {
        match region {
            PciRegion::Bar(ABAR) => Some(self.abar.clone()),
            PciRegion::Bar(IDP_BAR) => Some(self.idp.clone()),
            _ => None,
        }
    }

    /// Whether the HBA is asking for an interrupt (HBA IS non-zero and GHC.IE).
    pub fn irq_pending(&self) -> bool {
        self.inner.hba().irq_pending()
    }
}

impl Hba {
    fn is(&self) -> u32 {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.pending())
            .fold(0, |acc, (i, _)| acc | 1 << i)
    }

    fn irq_pending(&self) -> bool {
        self.ghc & GHC_IE != 0 && self.is() != 0
    }

    fn reset(&mut self) {
        self.ghc = GHC_AE;
        for p in &mut self.ports {
            p.reset_hba();
        }
    }
}

impl Inner {
    fn hba(&self) -> MutexGuard<'_, Hba> {
        self.hba.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The MSI message if the guest enabled MSI.
    fn msi_message(&self) -> Option<MsiMessage> {
        let c = self.config();
        let reg = self.msi_cap / 4;
        let control = (c.read(reg) >> 16) as u16;
        if control & 1 == 0 {
            return None;
        }
        let low = u64::from(c.read(reg + 1));
        let high = u64::from(c.read(reg + 2));
        let data = c.read(reg + 3) & 0xffff;
        Some(MsiMessage {
            address: high << 32 | low,
            data,
        })
    }

    /// Signal the guest if an interrupt is pending (QEMU's `ahci_check_irq`).
    fn update_irq(&self, hba: &Hba) {
        if !hba.irq_pending() {
            return;
        }
        if let Some(msg) = self.msi_message() {
            if let Some(sender) = self.msi.get() {
                sender.send(msg);
            }
            return;
        }
        let intx_disabled = self.config().read(1) as u16 & PCI_COMMAND_INTX_DISABLE != 0;
        if let (false, Some(evt)) = (intx_disabled, self.intx.get()) {
            // A full counter still means "raised".
            let _ = evt.write(1);
        }
    }

    fn read_reg(&self, hba: &Hba, offset: u64) -> u32 {
        match offset {
            0x00 => CAP,
            0x04 => hba.ghc,
            0x08 => hba.is(),
            0x0c => (1 << AHCI_PORTS) - 1,
            0x10 => VS_1_0,
            o if o >= PORTS_BASE => {
                let port = ((o - PORTS_BASE) / PORT_SIZE) as usize;
                hba.ports
                    .get(port)
                    .map_or(0, |p| p.read((o - PORTS_BASE) % PORT_SIZE))
            }
            _ => 0,
        }
    }

    fn write_reg(&self, hba: &mut Hba, offset: u64, val: u32) {
        match offset {
            0x04 => {
                if val & GHC_HR != 0 {
                    hba.reset();
                    for p in &mut hba.ports {
                        p.post_init_d2h(&self.mem);
                    }
                } else {
                    hba.ghc = GHC_AE | (val & GHC_IE);
                }
            }
            o if o >= PORTS_BASE => {
                let port = ((o - PORTS_BASE) / PORT_SIZE) as usize;
                if let Some(p) = hba.ports.get_mut(port) {
                    p.write(&self.mem, (o - PORTS_BASE) % PORT_SIZE, val);
                }
            }
            // IS is the ports' summary: clearing PxIS clears it (QEMU recomputes it too).
            _ => {}
        }
        self.update_irq(hba);
    }

    /// A bus access of 1-8 bytes at `offset`, split into the dwords it touches.
    fn access(&self, offset: u64, data: &mut [u8], write: bool) {
        if data.is_empty() || data.len() > 8 || offset >= AHCI_ABAR_SIZE {
            return;
        }
        let mut hba = self.hba();
        let first = offset & !3;
        let mut at = 0usize;
        let mut reg = first;
        while at < data.len() && reg < AHCI_ABAR_SIZE {
            let shift = if reg == first {
                (offset - first) as usize
            } else {
                0
            };
            let n = (4 - shift).min(data.len() - at);
            if write {
                // Bytes the write does not cover keep their value, except in write-1-to-clear
                // and command-issue registers where a 0 means "leave alone".
                let w1c = reg == 0x08
                    || (reg >= PORTS_BASE && matches!(reg % PORT_SIZE, 0x10 | 0x30 | 0x34 | 0x38));
                let mut bytes = if w1c || n == 4 {
                    [0; 4]
                } else {
                    self.read_reg(&hba, reg).to_le_bytes()
                };
                bytes[shift..shift + n].copy_from_slice(&data[at..at + n]);
                self.write_reg(&mut hba, reg, u32::from_le_bytes(bytes));
            } else {
                let bytes = self.read_reg(&hba, reg).to_le_bytes();
                data[at..at + n].copy_from_slice(&bytes[shift..shift + n]);
            }
            at += n;
            reg += 4;
        }
    }
}

/// BAR5: the HBA registers.
/// One port's registers and drive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AhciPortState {
    clb: u64,
    fb: u64,
    is: u32,
    ie: u32,
    cmd: u32,
    tfd: u32,
    sig: u32,
    ssts: u32,
    sctl: u32,
    serr: u32,
    sact: u32,
    ci: u32,
    #[serde(default)]
    init_d2h_pending: bool,
    #[serde(default)]
    srst: bool,
    #[serde(default)]
    drive: Option<super::AtaDriveState>,
}

/// The HBA's registers and drives; its PCI config space (MSI included) is saved with the bus.
/// A command runs to its end on the guest's PxCI write, so none is in flight.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AhciState {
    ghc: u32,
    idp_index: u32,
    ports: Vec<AhciPortState>,
}

impl crate::Persist for Ahci {
    type State = AhciState;

    fn save(&self) -> AhciState {
        let hba = self.inner.hba();
        AhciState {
            ghc: hba.ghc,
            idp_index: hba.idp_index,
            ports: hba
                .ports
                .iter()
                .map(|p| AhciPortState {
                    clb: p.clb,
                    fb: p.fb,
                    is: p.is,
                    ie: p.ie,
                    cmd: p.cmd,
                    tfd: p.tfd,
                    sig: p.sig,
                    ssts: p.ssts,
                    sctl: p.sctl,
                    serr: p.serr,
                    sact: p.sact,
                    ci: p.ci,
                    init_d2h_pending: p.init_d2h_pending,
                    srst: p.srst,
                    drive: p.drive.as_ref().map(super::AtaDrive::save_state),
                })
                .collect(),
        }
    }

    fn restore(&self, s: AhciState) -> Result<(), crate::StateError> {
        let mut hba = self.inner.hba();
        let invalid = |e: String| crate::StateError::Invalid(format!("ich9-ahci: {e}"));
        let ours: Vec<bool> = hba.ports.iter().map(|p| p.drive.is_some()).collect();
        let theirs: Vec<bool> = s.ports.iter().map(|p| p.drive.is_some()).collect();
        if ours != theirs {
            return Err(invalid(format!(
                "drives on ports {theirs:?} in the snapshot, {ours:?} here"
            )));
        }
        for (n, (p, q)) in hba.ports.iter_mut().zip(&s.ports).enumerate() {
            if let (Some(d), Some(saved)) = (p.drive.as_mut(), q.drive.as_ref()) {
                d.restore_state(saved)
                    .map_err(|e| invalid(format!("port {n}: {e}")))?;
            }
        }
        hba.ghc = s.ghc;
        hba.idp_index = s.idp_index;
        for (p, q) in hba.ports.iter_mut().zip(s.ports) {
            p.clb = q.clb;
            p.fb = q.fb;
            p.is = q.is;
            p.ie = q.ie;
            p.cmd = q.cmd;
            p.tfd = q.tfd;
            p.sig = q.sig;
            p.ssts = q.ssts;
            p.sctl = q.sctl;
            p.serr = q.serr;
            p.sact = q.sact;
            p.ci = q.ci;
            p.init_d2h_pending = q.init_d2h_pending;
            p.srst = q.srst;
        }
        self.inner.update_irq(&hba);
        Ok(())
    }
}

struct AbarRegion(Arc<Inner>);

impl BusDevice for AbarRegion {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        self.0.access(offset, data, false);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut buf = [0u8; 8];
        let n = data.len().min(8);
        buf[..n].copy_from_slice(&data[..n]);
        self.0.access(offset, &mut buf[..n], true);
    }
}

/// BAR4: index at 0x10, data at 0x14 onto the ABAR registers (QEMU's `ahci_idp_read/write`).
struct IdpRegion(Arc<Inner>);

impl BusDevice for IdpRegion {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            IDP_INDEX => self.0.hba().idp_index,
            o if o == IDP_INDEX + 4 => {
                let index = u64::from(self.0.hba().idp_index);
                let mut b = [0u8; 4];
                self.0.access(index, &mut b, false);
                u32::from_le_bytes(b)
            }
            _ => return,
        };
        let b = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&b[..n]);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(b);
        match offset {
            IDP_INDEX => self.0.hba().idp_index = value & (AHCI_ABAR_SIZE as u32 - 4),
            o if o == IDP_INDEX + 4 => {
                let index = u64::from(self.0.hba().idp_index);
                self.0.access(index, &mut b, true);
            }
            _ => {}
        }
    }
}

impl PciDevice for Ahci {
    fn config_read(&self, reg: usize) -> u32 {
        self.inner.config().read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let changes = self.inner.config().write(reg, offset, data);
        // Enabling MSI or INTx may make a pending interrupt deliverable.
        let hba = self.inner.hba();
        self.inner.update_irq(&hba);
        changes
    }

    /// RST#: config space and HBA to power-on values.
    fn reset(&self) -> Vec<BarChange> {
        self.inner.hba().reset();
        self.inner.config().reset()
    }
}

#[cfg(test)]
#[path = "ahci_tests.rs"]
mod tests;
