//! QEMU's generic PCIe root port, `pcie-root-port` (1b36:000c; hw/pci-bridge/gen_pcie_root_port.c
//! and pcie_root_port.c): a PCI-to-PCI bridge with a type 1 header, one MSI-X vector in an
//! exclusive 4 KiB BAR0, and the capabilities at QEMU's offsets: bridge subsystem ID (0x40),
//! MSI-X (0x48), PCI Express v2 as a root port with a hot-plug capable slot (0x54; PCIe base spec
//! 7.5.3), AER (0x100) and ACS (0x148). Link: 16 GT/s x32 as QEMU's defaults.
//!
//! The slot follows QEMU's `pcie_cap_slot_*`: presence detect and data link layer active when a
//! device sits behind the port, power controller (a powered-off slot keeps its device), power and
//! attention indicators, command completed after each Slot Control write, electromechanical
//! interlock toggled by its control bit. Hot-plug events (attention button, presence detect
//! changed, command completed) raise the port's MSI-X vector when Slot Control enables them.
//! The port raises no INTx (QEMU's would, with MSI-X off; Linux's pciehp uses MSI-X).

use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    msix_bar_layout, msix_capability, BarChange, BarKind, BarSpec, BridgeKind, Msix, PciConfig,
    PciConfigError, PciDevice, PciIdentity, PciRegion, PCI_CAP_ID_MSIX,
};

/// Red Hat's PCIe root port (QEMU's `PCI_DEVICE_ID_REDHAT_PCIE_RP`).
pub const PCI_DEVICE_ID_REDHAT_PCIE_RP: u16 = 0x000c;
const PCI_VENDOR_ID_REDHAT: u16 = 0x1b36;

/// Where QEMU's generic root port has its capabilities.
const SSVID_CAP: usize = 0x40;
const MSIX_CAP: usize = 0x48;
pub const PCIE_CAP: usize = 0x54;
const AER_CAP: usize = 0x100;
const ACS_CAP: usize = 0x148;

const PCI_CAP_ID_SSVID: u8 = 0x0d;
const PCI_CAP_ID_EXP: u8 = 0x10;
/// Bytes of a v2 PCI Express capability (`PCI_EXP_VER2_SIZEOF`).
const PCIE_CAP_SIZE: usize = 0x3c;
/// Bytes of the AER capability (`PCI_ERR_SIZEOF`) and of ACS.
const AER_SIZE: usize = 0x48;
const ACS_SIZE: usize = 8;

// Registers of the PCI Express capability, from its start (PCIe base spec 7.5.3).
const EXP_FLAGS: usize = 0x02;
const EXP_DEVCAP: usize = 0x04;
const EXP_DEVCTL: usize = 0x08;
const EXP_DEVSTA: usize = 0x0a;
const EXP_LNKCAP: usize = 0x0c;
const EXP_LNKSTA: usize = 0x12;
const EXP_SLTCAP: usize = 0x14;
const EXP_SLTCTL: usize = 0x18;
const EXP_SLTSTA: usize = 0x1a;
const EXP_RTCTL: usize = 0x1c;
const EXP_DEVCAP2: usize = 0x24;
const EXP_DEVCTL2: usize = 0x28;
const EXP_LNKCAP2: usize = 0x2c;
const EXP_LNKCTL2: usize = 0x30;

/// Capability version 2, device/port type 4 (root port), slot implemented.
const FLAGS_ROOT_PORT_SLOT: u16 = 0x0002 | 4 << 4 | 0x0100;
/// Role-based error reporting.
const DEVCAP_RBER: u32 = 1 << 15;
/// Correctable, non-fatal, fatal, unsupported request reporting enables / detected bits.
const DEVCTL_ERR_ENABLES: u16 = 0x000f;
/// ASPM L0s, 16 GT/s, x32, data link layer link active reporting, link bandwidth notification
/// (QEMU's `x-speed=16`, `x-width=32` defaults).
const LNKCAP_BASE: u32 = 0x0400 | 4 | 32 << 4 | 1 << 20 | 1 << 21;
/// Link status: 16 GT/s, x32; data link layer link active.
const LNKSTA_BASE: u16 = 4 | 32 << 4;
const LNKSTA_DLLLA: u16 = 1 << 13;
const LNKSTA_SPEED: u16 = 0x000f;
const LNKSTA_WIDTH: u16 = 0x03f0;
const LNKSTA_SPEED_WIDTH: u16 = LNKSTA_SPEED | LNKSTA_WIDTH;
/// Slot capabilities: attention button, power controller, attention and power indicators,
/// hot-plug surprise, hot-plug capable, electromechanical interlock; the physical slot number
/// goes in bits 19-31.
const SLTCAP_BASE: u32 = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40 | 1 << 17;
const SLTCAP_PSN_SHIFT: u32 = 19;
// Slot control.
const SLTCTL_ABPE: u16 = 0x0001;
const SLTCTL_PDCE: u16 = 0x0008;
const SLTCTL_CCIE: u16 = 0x0010;
const SLTCTL_HPIE: u16 = 0x0020;
const SLTCTL_AIC: u16 = 0x00c0;
const SLTCTL_AIC_OFF: u16 = 0x00c0;
const SLTCTL_PIC: u16 = 0x0300;
const SLTCTL_PIC_ON: u16 = 0x0100;
const SLTCTL_PIC_BLINK: u16 = 0x0200;
const SLTCTL_PIC_OFF: u16 = 0x0300;
/// Power controller control: 1 = power off.
const SLTCTL_PCC: u16 = 0x0400;
const SLTCTL_EIC: u16 = 0x0800;
const SLTCTL_WRITABLE: u16 = SLTCTL_ABPE
    | SLTCTL_PDCE
    | SLTCTL_CCIE
    | SLTCTL_HPIE
    | SLTCTL_AIC
    | SLTCTL_PIC
    | SLTCTL_PCC
    | SLTCTL_EIC;
// Slot status.
const SLTSTA_ABP: u16 = 0x0001;
const SLTSTA_PFD: u16 = 0x0002;
const SLTSTA_MRLSC: u16 = 0x0004;
const SLTSTA_PDC: u16 = 0x0008;
const SLTSTA_CC: u16 = 0x0010;
const SLTSTA_PDS: u16 = 0x0040;
const SLTSTA_EIS: u16 = 0x0080;
/// The events QEMU's slots report (`PCI_EXP_HP_EV_SUPPORTED`): write-1-to-clear.
const SLTSTA_EVENTS: u16 = SLTSTA_ABP | SLTSTA_PDC | SLTSTA_CC;
/// What a guest's status write may not lose (QEMU's `PCIE_SLOT_EVENTS`).
const SLTSTA_KEPT: u16 = SLTSTA_ABP | SLTSTA_PFD | SLTSTA_MRLSC | SLTSTA_PDC | SLTSTA_CC;
/// Root control: system error on correctable/non-fatal/fatal error enables.
const RTCTL_WRITABLE: u16 = 0x0007;
/// ARI forwarding supported; 10-bit... extended fmt field and end-end TLP prefix supported.
const DEVCAP2_BASE: u32 = 0x20 | 1 << 20 | 1 << 21;
/// ARI forwarding enable, end-end TLP prefix blocking.
const DEVCTL2_WRITABLE: u16 = 0x0020 | 0x8000;
/// Supported link speeds 2.5-16 GT/s; target link speed 16 GT/s.
const LNKCAP2_SPEEDS: u32 = 0x1e;
const LNKCTL2_TARGET_16GT: u16 = 4;

// AER (PCIe base spec 7.8.4), from the capability's start.
const AER_UNCOR_STATUS: usize = 0x04;
const AER_UNCOR_SEVER: usize = 0x0c;
const AER_COR_STATUS: usize = 0x10;
const AER_COR_MASK: usize = 0x14;
const AER_CAP_CTL: usize = 0x18;
const AER_ROOT_COMMAND: usize = 0x2c;
const AER_ROOT_STATUS: usize = 0x30;
/// QEMU's `PCI_ERR_UNC_SUPPORTED`, `PCI_ERR_UNC_SEVERITY_DEFAULT`, `PCI_ERR_COR_SUPPORTED`,
/// `PCI_ERR_COR_MASK_DEFAULT`.
const AER_UNC_SUPPORTED: u32 = 0x03ff_f030;
const AER_UNC_SEVERITY_DEFAULT: u32 = 0x0046_2030;
const AER_COR_SUPPORTED: u32 = 0xf1c1;
const AER_COR_MASK_DEFAULT: u32 = 0xe000;
/// ECRC generation and check capable, multiple header recording capable; their enables.
const AER_CAP_BITS: u32 = 0x20 | 0x80 | 0x200;
const AER_CAP_WRITABLE: u32 = 0x40 | 0x100 | 0x400;
const AER_ROOT_COMMAND_WRITABLE: u32 = 0x7;
const AER_ROOT_STATUS_W1C: u32 = 0x7f;
/// Extended capability IDs and versions.
const EXT_CAP_ID_AER: u32 = 0x01;
const EXT_CAP_ID_ACS: u32 = 0x0d;
/// ACS: source validation, translation blocking, P2P request/completion redirect, upstream
/// forwarding, direct translated P2P.
const ACS_CAP_BITS: u16 = 0x005f;

/// What a `-device pcie-root-port` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPortSpec {
    /// `port=`: the link's port number (Link Capabilities bits 24-31).
    pub port: u8,
    /// `slot=`: the physical slot number (Slot Capabilities bits 19-31).
    pub slot: u16,
    /// `multifunction=on`.
    pub multifunction: bool,
}

struct PortState {
    config: PciConfig,
    /// A device sits behind the port (presence detect).
    populated: bool,
    /// The port has told the guest about pending events (QEMU's `hpev_notified`).
    notified: bool,
}

/// Called when the guest powers off the slot of a device it was asked to give up: the VMM
/// removes what sits behind the port (from a vCPU thread, inside a config write).
pub type SlotEjector = Arc<dyn Fn() + Send + Sync>;

/// What a hot-unplug request did (QEMU's `pcie_cap_slot_unplug_request_cb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnplugRequest {
    /// The attention button was pressed: the guest powers the slot off when it is ready.
    ButtonPressed,
    /// The slot was already powered off: the device is gone now, no round trip to the guest.
    Removed,
}

/// Why a hot-unplug request is refused (QEMU's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotplugError {
    #[error("Hot-unplug failed: guest is busy (power indicator blinking)")]
    Busy,
    #[error("slot is electromechanically locked")]
    Locked,
    #[error("the slot is empty")]
    Empty,
}

/// One `pcie-root-port`.
pub struct PcieRootPort {
    state: Mutex<PortState>,
    msix: Arc<Msix>,
    ejector: Mutex<Option<SlotEjector>>,
}

/// The MSI-X BAR's index.
pub const ROOT_PORT_MSIX_BAR: u8 = 0;

fn word(c: &PciConfig, offset: usize) -> u16 {
    u16::from_le_bytes(c.bytes_at::<2>(offset))
}

impl PcieRootPort {
    /// A root port whose one MSI-X vector is `msix`'s first.
    pub fn new(spec: RootPortSpec, msix: Arc<Msix>) -> Result<Self, PciConfigError> {
        let id = PciIdentity {
            vendor: PCI_VENDOR_ID_REDHAT,
            device: PCI_DEVICE_ID_REDHAT_PCIE_RP,
            class: 0x06,
            subclass: 0x04,
            prog_if: 0,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        };
        let mut c = PciConfig::new_bridge(&id, BridgeKind::Express);
        // QEMU: the device-specific area is writable but for the capabilities.
        c.set_write_mask(0x40, &[0xff; 0x100 - 0x40])?;
        c.set_write_mask(0x100, &vec![0xff; 0xf00])?;
        c.add_bar(
            ROOT_PORT_MSIX_BAR,
            BarSpec {
                size: msix_bar_layout(1).0,
                kind: BarKind::Mem32,
                prefetchable: false,
            },
        )?;
        c.set_interrupt_pin(1);
        if spec.multifunction {
            c.set_multifunction();
        }
        let mut ssvid = [0u8; 6];
        ssvid[2..4].copy_from_slice(&PCI_VENDOR_ID_REDHAT.to_le_bytes());
        let at = c.add_capability(PCI_CAP_ID_SSVID, &ssvid)?;
        debug_assert_eq!(usize::from(at), SSVID_CAP);
        let (body, mask) = msix_capability(1, ROOT_PORT_MSIX_BAR);
        c.add_capability_with_mask(PCI_CAP_ID_MSIX, &body, &mask)?;
        let (body, mask) = express_capability(spec);
        let at = c.add_capability_with_mask(PCI_CAP_ID_EXP, &body, &mask)?;
        debug_assert_eq!(usize::from(at), PCIE_CAP);
        let w1c = |c: &mut PciConfig, offset: usize, bits: &[u8]| c.set_w1c_mask(offset, bits);
        w1c(
            &mut c,
            PCIE_CAP + EXP_DEVSTA,
            &DEVCTL_ERR_ENABLES.to_le_bytes(),
        )?;
        w1c(&mut c, PCIE_CAP + EXP_SLTSTA, &SLTSTA_EVENTS.to_le_bytes())?;
        extended_capabilities(&mut c)?;
        let port = Self {
            state: Mutex::new(PortState {
                config: c,
                populated: false,
                notified: false,
            }),
            msix,
            ejector: Mutex::new(None),
        };
        port.reset();
        Ok(port)
    }

    fn lock(&self) -> MutexGuard<'_, PortState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The MSI-X state, for the BAR's bus device.
    pub fn msix(&self) -> &Arc<Msix> {
        &self.msix
    }

    /// A device was attached behind the port before the guest started (QEMU's cold plug with
    /// native hot-plug): presence detect and link active, the slot powered, no event. The
    /// link runs at what both ends can do (QEMU's `pcie_sync_bridge_lnk`): `device_link`
    /// is the device's Link Status (speed and width), None for a conventional function.
    pub fn set_populated(&self, device_link: Option<u16>) {
        let mut st = self.lock();
        st.populated = true;
        let c = &mut st.config;
        let sta = word(c, PCIE_CAP + EXP_SLTSTA) | SLTSTA_PDS;
        let _ = c.set_device_bytes(PCIE_CAP + EXP_SLTSTA, &sta.to_le_bytes());
        let cap = u32::from_le_bytes(c.bytes_at::<4>(PCIE_CAP + EXP_LNKCAP)) as u16;
        let link = match device_link {
            None => cap & LNKSTA_SPEED_WIDTH,
            Some(l) => {
                let width = (l & LNKSTA_WIDTH).clamp(1 << 4, cap & LNKSTA_WIDTH);
                let speed = (l & LNKSTA_SPEED).clamp(1, cap & LNKSTA_SPEED);
                width | speed
            }
        };
        let lnk = (word(c, PCIE_CAP + EXP_LNKSTA) & !LNKSTA_SPEED_WIDTH) | link | LNKSTA_DLLLA;
        let _ = c.set_device_bytes(PCIE_CAP + EXP_LNKSTA, &lnk.to_le_bytes());
        let ctl = (word(c, PCIE_CAP + EXP_SLTCTL) & !(SLTCTL_PCC | SLTCTL_PIC)) | SLTCTL_PIC_ON;
        let _ = c.set_device_bytes(PCIE_CAP + EXP_SLTCTL, &ctl.to_le_bytes());
    }

    /// Whether a device sits behind the port.
    pub fn populated(&self) -> bool {
        self.lock().populated
    }

    /// What removes the device behind the port once the guest powers its slot off.
    pub fn set_ejector(&self, ejector: SlotEjector) {
        *self.ejector.lock().unwrap_or_else(|e| e.into_inner()) = Some(ejector);
    }

    /// QMP `device_del` of the device behind the port (QEMU's
    /// `pcie_cap_slot_unplug_request_cb`): a powered slot gets an attention button press (and
    /// its interrupt), a slot the guest already powered off loses its device at once.
    pub fn request_unplug(&self) -> Result<UnplugRequest, HotplugError> {
        let mut st = self.lock();
        if !st.populated {
            return Err(HotplugError::Empty);
        }
        let ctl = word(&st.config, PCIE_CAP + EXP_SLTCTL);
        let sta = word(&st.config, PCIE_CAP + EXP_SLTSTA);
        if sta & SLTSTA_EIS != 0 {
            return Err(HotplugError::Locked);
        }
        if ctl & SLTCTL_PIC == SLTCTL_PIC_BLINK {
            return Err(HotplugError::Busy);
        }
        if ctl & SLTCTL_PIC == SLTCTL_PIC_OFF && ctl & SLTCTL_PCC != 0 {
            self.remove_device(&mut st);
            self.notify(&mut st);
            let sta = word(&st.config, PCIE_CAP + EXP_SLTSTA) & !SLTSTA_ABP;
            let _ = st
                .config
                .set_device_bytes(PCIE_CAP + EXP_SLTSTA, &sta.to_le_bytes());
            return Ok(UnplugRequest::Removed);
        }
        self.slot_event(&mut st, SLTSTA_ABP);
        Ok(UnplugRequest::ButtonPressed)
    }

    /// QEMU's `pcie_cap_slot_do_unplug`: presence and link gone, presence detect changed; the
    /// VMM removes the device.
    fn remove_device(&self, st: &mut PortState) {
        st.populated = false;
        let c = &mut st.config;
        let sta = (word(c, PCIE_CAP + EXP_SLTSTA) & !SLTSTA_PDS) | SLTSTA_PDC;
        let _ = c.set_device_bytes(PCIE_CAP + EXP_SLTSTA, &sta.to_le_bytes());
        let lnk = word(c, PCIE_CAP + EXP_LNKSTA) & !LNKSTA_DLLLA;
        let _ = c.set_device_bytes(PCIE_CAP + EXP_LNKSTA, &lnk.to_le_bytes());
        if let Some(eject) = self
            .ejector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            eject();
        }
    }

    /// Slot Control and Slot Status.
    pub fn slot_registers(&self) -> (u16, u16) {
        let st = self.lock();
        (
            word(&st.config, PCIE_CAP + EXP_SLTCTL),
            word(&st.config, PCIE_CAP + EXP_SLTSTA),
        )
    }

    /// QEMU's `hotplug_event_notify`: raise the vector when the set of enabled, pending events
    /// goes from empty to non-empty.
    fn notify(&self, st: &mut PortState) {
        let before = st.notified;
        st.notified = Self::events_pending(&st.config);
        if st.notified && !before {
            let vector = (word(&st.config, PCIE_CAP + EXP_FLAGS) >> 9) & 0x1f;
            self.msix.notify(vector);
        }
    }

    fn events_pending(c: &PciConfig) -> bool {
        let ctl = word(c, PCIE_CAP + EXP_SLTCTL);
        let sta = word(c, PCIE_CAP + EXP_SLTSTA);
        ctl & SLTCTL_HPIE != 0 && sta & ctl & SLTSTA_EVENTS != 0
    }

    /// Set `event` bits in Slot Status and notify if that is news.
    fn slot_event(&self, st: &mut PortState, event: u16) {
        let sta = word(&st.config, PCIE_CAP + EXP_SLTSTA);
        if sta & event == event {
            return;
        }
        let _ = st
            .config
            .set_device_bytes(PCIE_CAP + EXP_SLTSTA, &(sta | event).to_le_bytes());
        self.notify(st);
    }

    /// After a config write of `data` at byte `start`: QEMU's `pcie_cap_slot_write_config`.
    fn slot_write(
        &self,
        st: &mut PortState,
        (old_ctl, old_sta): (u16, u16),
        start: usize,
        data: &[u8],
    ) {
        let sta_at = PCIE_CAP + EXP_SLTSTA;
        let ctl_at = PCIE_CAP + EXP_SLTCTL;
        // The bits written to the 16-bit register at `reg`, if the write touched it.
        let written = |reg: usize| {
            let mut value = None::<u16>;
            for (i, b) in data.iter().enumerate() {
                let addr = start + i;
                if (reg..reg + 2).contains(&addr) {
                    let v = value.unwrap_or(0) | u16::from(*b) << (8 * (addr - reg));
                    value = Some(v);
                }
            }
            value
        };
        if let Some(val) = written(sta_at) {
            // Guests clear every bit at init; clearing bits that were not set would lose
            // events that arrived meanwhile, so such a write keeps the events.
            if val & !old_sta & SLTSTA_KEPT != 0 {
                let sta = word(&st.config, sta_at);
                let kept = (sta & !SLTSTA_KEPT) | (old_sta & SLTSTA_KEPT);
                let _ = st.config.set_device_bytes(sta_at, &kept.to_le_bytes());
            }
            st.notified = Self::events_pending(&st.config);
        }
        if written(ctl_at).is_none() {
            return;
        }
        let mut ctl = word(&st.config, ctl_at);
        if ctl & SLTCTL_EIC != 0 {
            ctl &= !SLTCTL_EIC;
            let _ = st.config.set_device_bytes(ctl_at, &ctl.to_le_bytes());
            let sta = word(&st.config, sta_at) ^ SLTSTA_EIS;
            let _ = st.config.set_device_bytes(sta_at, &sta.to_le_bytes());
        }
        // The guest turned a populated slot's power and power indicator off: the device goes
        // (not when they were off already: guests rewrite the control of powered-off slots).
        let off = |c: u16| c & SLTCTL_PCC != 0 && c & SLTCTL_PIC == SLTCTL_PIC_OFF;
        if st.populated && word(&st.config, sta_at) & SLTSTA_PDS != 0 && off(ctl) && !off(old_ctl) {
            self.remove_device(st);
        }
        self.notify(st);
        // PCIe base spec 6.7.3.2: every Slot Control write is a command, completed at once.
        self.slot_event(st, SLTSTA_CC);
    }
}

/// The PCI Express capability's body (after ID and next) and write mask.
fn express_capability(spec: RootPortSpec) -> (Vec<u8>, Vec<u8>) {
    let mut body = vec![0u8; PCIE_CAP_SIZE];
    let mut mask = vec![0u8; PCIE_CAP_SIZE];
    let put = |buf: &mut Vec<u8>, offset: usize, bytes: &[u8]| {
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    // The body starts 2 bytes into the capability.
    let at = |reg: usize| reg - 2;
    put(
        &mut body,
        at(EXP_FLAGS),
        &FLAGS_ROOT_PORT_SLOT.to_le_bytes(),
    );
    put(&mut body, at(EXP_DEVCAP), &DEVCAP_RBER.to_le_bytes());
    put(&mut mask, at(EXP_DEVCTL), &DEVCTL_ERR_ENABLES.to_le_bytes());
    let lnkcap = LNKCAP_BASE | u32::from(spec.port) << 24;
    put(&mut body, at(EXP_LNKCAP), &lnkcap.to_le_bytes());
    put(&mut body, at(EXP_LNKSTA), &LNKSTA_BASE.to_le_bytes());
    let sltcap = SLTCAP_BASE | u32::from(spec.slot & 0x1fff) << SLTCAP_PSN_SHIFT;
    put(&mut body, at(EXP_SLTCAP), &sltcap.to_le_bytes());
    put(&mut mask, at(EXP_SLTCTL), &SLTCTL_WRITABLE.to_le_bytes());
    put(&mut mask, at(EXP_RTCTL), &RTCTL_WRITABLE.to_le_bytes());
    put(&mut body, at(EXP_DEVCAP2), &DEVCAP2_BASE.to_le_bytes());
    put(&mut mask, at(EXP_DEVCTL2), &DEVCTL2_WRITABLE.to_le_bytes());
    put(&mut body, at(EXP_LNKCAP2), &LNKCAP2_SPEEDS.to_le_bytes());
    put(
        &mut body,
        at(EXP_LNKCTL2),
        &LNKCTL2_TARGET_16GT.to_le_bytes(),
    );
    (body, mask)
}

/// AER at 0x100 and ACS at 0x148 (PCIe base spec 7.6.3 extended capability headers).
fn extended_capabilities(c: &mut PciConfig) -> Result<(), PciConfigError> {
    let header = |id: u32, version: u32, next: usize| id | version << 16 | (next as u32) << 20;
    let mut aer = vec![0u8; AER_SIZE];
    let mut aer_mask = vec![0u8; AER_SIZE];
    let mut aer_w1c = vec![0u8; AER_SIZE];
    let put = |buf: &mut Vec<u8>, offset: usize, v: u32| {
        buf[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut aer, 0, header(EXT_CAP_ID_AER, 2, ACS_CAP));
    put(&mut aer_w1c, AER_UNCOR_STATUS, AER_UNC_SUPPORTED);
    put(&mut aer, AER_UNCOR_SEVER, AER_UNC_SEVERITY_DEFAULT);
    put(&mut aer_mask, AER_UNCOR_SEVER, AER_UNC_SUPPORTED);
    put(&mut aer_w1c, AER_COR_STATUS, AER_COR_SUPPORTED);
    put(&mut aer, AER_COR_MASK, AER_COR_MASK_DEFAULT);
    put(&mut aer_mask, AER_COR_MASK, AER_COR_SUPPORTED);
    put(&mut aer, AER_CAP_CTL, AER_CAP_BITS);
    put(&mut aer_mask, AER_CAP_CTL, AER_CAP_WRITABLE);
    put(&mut aer_mask, AER_ROOT_COMMAND, AER_ROOT_COMMAND_WRITABLE);
    put(&mut aer_w1c, AER_ROOT_STATUS, AER_ROOT_STATUS_W1C);
    c.set_device_bytes(AER_CAP, &aer)?;
    c.set_write_mask(AER_CAP, &aer_mask)?;
    c.set_w1c_mask(AER_CAP, &aer_w1c)?;
    let mut acs = [0u8; ACS_SIZE];
    acs[..4].copy_from_slice(&header(EXT_CAP_ID_ACS, 1, 0).to_le_bytes());
    acs[4..6].copy_from_slice(&ACS_CAP_BITS.to_le_bytes());
    let mut acs_mask = [0u8; ACS_SIZE];
    acs_mask[6..8].copy_from_slice(&ACS_CAP_BITS.to_le_bytes());
    c.set_device_bytes(ACS_CAP, &acs)?;
    c.set_write_mask(ACS_CAP, &acs_mask)?;
    Ok(())
}

impl PciDevice for PcieRootPort {
    fn config_read(&self, reg: usize) -> u32 {
        self.lock().config.read(reg)
    }

    fn config_write(&self, reg: usize, offset: usize, data: &[u8]) -> Vec<BarChange> {
        let mut st = self.lock();
        let old_ctl = word(&st.config, PCIE_CAP + EXP_SLTCTL);
        let old_sta = word(&st.config, PCIE_CAP + EXP_SLTSTA);
        let changes = st.config.write(reg, offset, data);
        let start = reg.saturating_mul(4).saturating_add(offset);
        let data = &data[..data.len().min(4usize.saturating_sub(offset))];
        if start < MSIX_CAP + 4 && MSIX_CAP + 2 < start + data.len() {
            let control = word(&st.config, MSIX_CAP + 2);
            self.msix.set_control(control);
        }
        self.slot_write(&mut st, (old_ctl, old_sta), start, data);
        changes
    }

    /// QEMU's `rp_reset`: root control, device error enables, slot (powered when populated),
    /// ARI forwarding, ACS control, AER root command cleared; bus numbers 0, windows closed.
    fn reset(&self) -> Vec<BarChange> {
        let mut st = self.lock();
        let populated = st.populated;
        let c = &mut st.config;
        let changes = c.reset();
        c.reset_bridge(true);
        let clear = |c: &mut PciConfig, offset: usize, bits: u16| {
            let v = word(c, offset) & !bits;
            let _ = c.set_device_bytes(offset, &v.to_le_bytes());
        };
        clear(c, PCIE_CAP + EXP_RTCTL, 0xffff);
        clear(c, PCIE_CAP + EXP_DEVCTL, DEVCTL_ERR_ENABLES);
        clear(c, PCIE_CAP + EXP_DEVCTL2, 0x0020);
        clear(c, ACS_CAP + 6, 0xffff);
        let _ = c.set_device_bytes(AER_CAP + AER_ROOT_COMMAND, &[0; 4]);
        let mut ctl = word(c, PCIE_CAP + EXP_SLTCTL)
            & !(SLTCTL_EIC | SLTCTL_PIC | SLTCTL_AIC | SLTCTL_HPIE | SLTCTL_CCIE)
            & !(SLTCTL_PDCE | SLTCTL_ABPE | SLTCTL_PCC);
        ctl |= SLTCTL_AIC_OFF;
        ctl |= if populated {
            SLTCTL_PIC_ON
        } else {
            SLTCTL_PCC | SLTCTL_PIC_OFF
        };
        let _ = c.set_device_bytes(PCIE_CAP + EXP_SLTCTL, &ctl.to_le_bytes());
        clear(
            c,
            PCIE_CAP + EXP_SLTSTA,
            SLTSTA_EIS | SLTSTA_CC | SLTSTA_PDC | SLTSTA_ABP,
        );
        // MSI-X Enable and Function Mask (their config bits were cleared above).
        let mctl = word(c, MSIX_CAP + 2) & 0x3fff;
        let _ = c.set_device_bytes(MSIX_CAP + 2, &mctl.to_le_bytes());
        st.notified = false;
        drop(st);
        self.msix.reset();
        changes
    }

    fn bus_range(&self) -> Option<(u8, u8)> {
        Some(self.lock().config.bus_range())
    }
}

/// The port's region (its MSI-X BAR) for the device manager.
pub const ROOT_PORT_MSIX_REGION: PciRegion = PciRegion::Bar(ROOT_PORT_MSIX_BAR);

#[cfg(test)]
#[path = "root_port_tests.rs"]
mod tests;
