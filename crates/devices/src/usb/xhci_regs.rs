//! The xHCI register model (xHCI 1.2 chapter 5) as QEMU 7.2's hw/usb/hcd-xhci.c lays it out,
//! for a controller with no USB device behind it: capability, operational, port, runtime and
//! doorbell registers, the command ring and one event ring segment per interrupter.
//!
//! Everything here is driven by guest register accesses on a vCPU thread; ring and context
//! addresses come from the guest and are untrusted: a DMA to an address that is not RAM sets
//! HCE (Host Controller Error), as QEMU's `xhci_die`, and never panics. Interrupts go out
//! through [`XhciIrq`].

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Largest port counts per protocol (QEMU's XHCI_MAXPORTS_2/3).
pub const MAX_PORTS_PER_PROTOCOL: u8 = 15;
/// Interrupters (QEMU's XHCI_MAXINTRS for qemu-xhci) and device slots (XHCI_MAXSLOTS).
pub const INTERRUPTERS: usize = 16;
pub const SLOTS: usize = 64;

/// Register blocks in BAR 0 (QEMU's OFF_* and LEN_*).
pub const LEN_CAP: u64 = 0x40;
pub const OFF_OPER: u64 = 0x40;
const LEN_OPER: u64 = 0x400;
const OFF_PORTS: u64 = OFF_OPER + LEN_OPER;
const PORT_REGS: u64 = 0x10;
pub const OFF_RUNTIME: u64 = 0x1000;
const LEN_RUNTIME: u64 = (INTERRUPTERS as u64 + 1) * 0x20;
pub const OFF_DOORBELL: u64 = 0x2000;
const LEN_DOORBELL: u64 = (SLOTS as u64 + 1) * 0x20;

const USBCMD_RS: u32 = 1 << 0;
const USBCMD_HCRST: u32 = 1 << 1;
const USBCMD_INTE: u32 = 1 << 2;
const USBCMD_CSS: u32 = 1 << 8;
const USBCMD_CRS: u32 = 1 << 9;
const USBSTS_HCH: u32 = 1 << 0;
const USBSTS_HSE: u32 = 1 << 2;
const USBSTS_EINT: u32 = 1 << 3;
const USBSTS_PCD: u32 = 1 << 4;
const USBSTS_SRE: u32 = 1 << 10;
const USBSTS_HCE: u32 = 1 << 12;

const PORTSC_PR: u32 = 1 << 4;
const PORTSC_PLS_SHIFT: u32 = 5;
const PORTSC_PLS_MASK: u32 = 0xf << PORTSC_PLS_SHIFT;
const PORTSC_PP: u32 = 1 << 9;
const PORTSC_LWS: u32 = 1 << 16;
const PORTSC_CSC: u32 = 1 << 17;
const PORTSC_PEC: u32 = 1 << 18;
const PORTSC_WRC: u32 = 1 << 19;
const PORTSC_OCC: u32 = 1 << 20;
const PORTSC_PRC: u32 = 1 << 21;
const PORTSC_PLC: u32 = 1 << 22;
const PORTSC_CEC: u32 = 1 << 23;
const PORTSC_WCE: u32 = 1 << 25;
const PORTSC_WDE: u32 = 1 << 26;
const PORTSC_WOE: u32 = 1 << 27;
const PORTSC_WPR: u32 = 1 << 31;
const PLS_U0: u32 = 0;
const PLS_U3: u32 = 3;
const PLS_RX_DETECT: u32 = 5;

const CRCR_CS: u32 = 1 << 1;
const CRCR_CA: u32 = 1 << 2;
const CRCR_CRR: u32 = 1 << 3;
const IMAN_IP: u32 = 1 << 0;
const IMAN_IE: u32 = 1 << 1;
const ERDP_EHB: u32 = 1 << 3;

const TRB_SIZE: u64 = 16;
const TRB_C: u32 = 1 << 0;
const TRB_LK_TC: u32 = 1 << 1;
/// Link TRBs followed in a row, and commands run per doorbell (QEMU's limits): a ring of links
/// pointing at each other, or an endless ring, cannot hold a vCPU.
const TRB_LINK_LIMIT: u32 = 32;
const COMMAND_LIMIT: u32 = 256;

/// TRB types (xHCI 1.2 table 6-91).
const TR_LINK: u32 = 6;
const CR_ENABLE_SLOT: u32 = 9;
const CR_DISABLE_SLOT: u32 = 10;
const CR_ADDRESS_DEVICE: u32 = 11;
const CR_CONFIGURE_ENDPOINT: u32 = 12;
const CR_EVALUATE_CONTEXT: u32 = 13;
const CR_RESET_ENDPOINT: u32 = 14;
const CR_STOP_ENDPOINT: u32 = 15;
const CR_SET_TR_DEQUEUE: u32 = 16;
const CR_RESET_DEVICE: u32 = 17;
const CR_GET_PORT_BANDWIDTH: u32 = 21;
const CR_NOOP: u32 = 23;
const ER_COMMAND_COMPLETE: u32 = 33;
const ER_HOST_CONTROLLER: u32 = 37;

/// Completion codes (xHCI 1.2 table 6-90).
const CC_SUCCESS: u32 = 1;
const CC_TRB_ERROR: u32 = 5;
const CC_NO_SLOTS_ERROR: u32 = 9;
const CC_SLOT_NOT_ENABLED_ERROR: u32 = 11;
const CC_EVENT_RING_FULL_ERROR: u32 = 21;
const CC_COMMAND_RING_STOPPED: u32 = 24;

/// Where the controller's interrupts go (the PCI function: MSI-X vectors, or INTx for
/// interrupter 0).
pub trait XhciIrq {
    /// Interrupter `v` asks for an interrupt (`level` false: INTx may go low). Returns true if
    /// it was delivered as a message (which clears IMAN.IP, as QEMU's `intr_raise`).
    fn raise(&self, v: usize, level: bool) -> bool;
}

/// One event to post (xHCI 1.2 6.4.2).
#[derive(Debug, Clone, Copy, Default)]
struct Event {
    kind: u32,
    ccode: u32,
    ptr: u64,
    slot: u32,
    length: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Interrupter {
    iman: u32,
    imod: u32,
    erstsz: u32,
    erstba_low: u32,
    erstba_high: u32,
    erdp_low: u32,
    erdp_high: u32,
    /// The event ring segment (QEMU caches the sole segment at the ERSTBA write).
    er_start: u64,
    er_size: u32,
    er_ep_idx: u32,
    er_pcs: bool,
}

/// The controller's registers and rings: what a snapshot saves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct XhciRegs {
    usb2_ports: u8,
    usb3_ports: u8,
    usbcmd: u32,
    usbsts: u32,
    dnctrl: u32,
    crcr_low: u32,
    crcr_high: u32,
    dcbaap_low: u32,
    dcbaap_high: u32,
    config: u32,
    cmd_dequeue: u64,
    cmd_ccs: bool,
    slots: Vec<bool>,
    /// PORTSC of ports 1..n: the USB 3 ports first, then the USB 2 ports (QEMU's
    /// XHCI_FLAG_SS_FIRST for qemu-xhci).
    portsc: Vec<u32>,
    intr: Vec<Interrupter>,
}

fn addr64(low: u32, high: u32) -> u64 {
    u64::from(low) | (u64::from(high) << 32)
}

impl XhciRegs {
    /// A controller with `usb2` USB 2 and `usb3` USB 3 root ports (each capped at 15), after
    /// its power-on reset.
    pub fn new(usb2: u8, usb3: u8) -> Self {
        let (usb2, usb3) = (
            usb2.min(MAX_PORTS_PER_PROTOCOL),
            usb3.min(MAX_PORTS_PER_PROTOCOL),
        );
        let mut r = Self {
            usb2_ports: usb2,
            usb3_ports: usb3,
            usbcmd: 0,
            usbsts: USBSTS_HCH,
            dnctrl: 0,
            crcr_low: 0,
            crcr_high: 0,
            dcbaap_low: 0,
            dcbaap_high: 0,
            config: 0,
            cmd_dequeue: 0,
            cmd_ccs: true,
            slots: vec![false; SLOTS],
            portsc: vec![0; usize::from(usb2) + usize::from(usb3)],
            intr: vec![Interrupter::default(); INTERRUPTERS],
        };
        r.reset();
        r
    }

    fn ports(&self) -> usize {
        self.portsc.len()
    }

    fn running(&self) -> bool {
        self.usbsts & USBSTS_HCH == 0
    }

    /// HCRST or RST#: QEMU's `xhci_reset`. Each empty port comes back powered, in RxDetect,
    /// with Connect Status Change set (QEMU's `xhci_port_update` on every port).
    pub fn reset(&mut self) {
        self.usbcmd = 0;
        self.usbsts = USBSTS_HCH;
        self.dnctrl = 0;
        self.crcr_low = 0;
        self.crcr_high = 0;
        self.dcbaap_low = 0;
        self.dcbaap_high = 0;
        self.config = 0;
        self.slots.fill(false);
        for p in &mut self.portsc {
            *p = PORTSC_PP | (PLS_RX_DETECT << PORTSC_PLS_SHIFT) | PORTSC_CSC;
        }
        for i in &mut self.intr {
            *i = Interrupter {
                er_pcs: true,
                ..Interrupter::default()
            };
        }
    }

    /// A 32-bit register read at `offset` in BAR 0 (the MSI-X table is not ours).
    pub fn read(&self, offset: u64, mfindex: u32) -> u32 {
        match offset {
            0..LEN_CAP => self.cap_read(offset),
            o if (OFF_PORTS..OFF_PORTS + PORT_REGS * self.ports() as u64).contains(&o) => {
                let port = ((o - OFF_PORTS) / PORT_REGS) as usize;
                match (o - OFF_PORTS) % PORT_REGS {
                    0 => self.portsc[port],
                    _ => 0,
                }
            }
            o if (OFF_OPER..OFF_OPER + LEN_OPER).contains(&o) => self.oper_read(o - OFF_OPER),
            o if (OFF_RUNTIME..OFF_RUNTIME + LEN_RUNTIME).contains(&o) => {
                self.runtime_read(o - OFF_RUNTIME, mfindex)
            }
            // Doorbells read as 0.
            _ => 0,
        }
    }

    fn cap_read(&self, reg: u64) -> u32 {
        let (p2, p3) = (u32::from(self.usb2_ports), u32::from(self.usb3_ports));
        match reg & !3 {
            0x00 => 0x0100_0000 | LEN_CAP as u32, // HCIVERSION 1.0, CAPLENGTH
            0x04 => ((p2 + p3) << 24) | ((INTERRUPTERS as u32) << 8) | SLOTS as u32,
            0x08 => 0x0000_000f, // HCSPARAMS2: IST
            0x0c => 0,
            // HCCPARAMS1: 64-bit addressing, MaxPSASize 7 (QEMU's streams=on), xECP at 0x20.
            0x10 => 0x0008_7001,
            0x14 => OFF_DOORBELL as u32,
            0x18 => OFF_RUNTIME as u32,
            // Supported Protocol capabilities (xHCI 1.2 7.2): USB 2.0 on the ports after the
            // USB 3 ones, USB 3.0 on the first ones.
            0x20 => 0x0200_0402,
            0x24 | 0x34 => 0x2042_5355, // "USB "
            0x28 => (p2 << 8) | (p3 + 1),
            0x30 => 0x0300_0002,
            0x38 => (p3 << 8) | 1,
            _ => 0,
        }
    }

    fn oper_read(&self, reg: u64) -> u32 {
        match reg {
            0x00 => self.usbcmd,
            0x04 => self.usbsts,
            0x08 => 1, // PAGESIZE: 4 KiB
            0x14 => self.dnctrl,
            0x18 => self.crcr_low & !0xe,
            0x1c => self.crcr_high,
            0x30 => self.dcbaap_low,
            0x34 => self.dcbaap_high,
            0x38 => self.config,
            _ => 0,
        }
    }

    fn runtime_read(&self, reg: u64, mfindex: u32) -> u32 {
        if reg < 0x20 {
            return if reg == 0 { mfindex & 0x3fff } else { 0 };
        }
        let Some(i) = self.intr.get(((reg - 0x20) / 0x20) as usize) else {
            return 0;
        };
        match reg & 0x1f {
            0x00 => i.iman,
            0x04 => i.imod,
            0x08 => i.erstsz,
            0x10 => i.erstba_low,
            0x14 => i.erstba_high,
            0x18 => i.erdp_low,
            0x1c => i.erdp_high,
            _ => 0,
        }
    }

    /// A 32-bit register write at `offset` in BAR 0. Returns true if USBCMD.RS went from 0 to 1
    /// (the caller restarts MFINDEX).
    pub fn write(
        &mut self,
        offset: u64,
        val: u32,
        mem: &GuestMemoryMmap,
        irq: &dyn XhciIrq,
    ) -> bool {
        match offset {
            0..LEN_CAP => false,
            o if (OFF_PORTS..OFF_PORTS + PORT_REGS * self.ports() as u64).contains(&o) => {
                if (o - OFF_PORTS).is_multiple_of(PORT_REGS) {
                    self.port_write(((o - OFF_PORTS) / PORT_REGS) as usize, val);
                }
                false
            }
            o if (OFF_OPER..OFF_OPER + LEN_OPER).contains(&o) => {
                self.oper_write(o - OFF_OPER, val, mem, irq)
            }
            o if (OFF_RUNTIME..OFF_RUNTIME + LEN_RUNTIME).contains(&o) => {
                self.runtime_write(o - OFF_RUNTIME, val, mem, irq);
                false
            }
            o if (OFF_DOORBELL..OFF_DOORBELL + LEN_DOORBELL).contains(&o) => {
                self.doorbell_write((o - OFF_DOORBELL) >> 2, val, mem, irq);
                false
            }
            _ => false,
        }
    }

    /// QEMU's `xhci_port_write` for a port with nothing behind it: a port reset does nothing.
    fn port_write(&mut self, port: usize, val: u32) {
        if val & (PORTSC_WPR | PORTSC_PR) != 0 {
            return;
        }
        let old = self.portsc[port];
        let mut portsc = old;
        portsc &= !(val
            & (PORTSC_CSC
                | PORTSC_PEC
                | PORTSC_WRC
                | PORTSC_OCC
                | PORTSC_PRC
                | PORTSC_PLC
                | PORTSC_CEC));
        if val & PORTSC_LWS != 0 {
            let old_pls = (old & PORTSC_PLS_MASK) >> PORTSC_PLS_SHIFT;
            let new_pls = (val & PORTSC_PLS_MASK) >> PORTSC_PLS_SHIFT;
            let set =
                (new_pls == PLS_U0 && old_pls != PLS_U0) || (new_pls == PLS_U3 && old_pls < PLS_U3);
            if set {
                portsc = (portsc & !PORTSC_PLS_MASK) | (new_pls << PORTSC_PLS_SHIFT);
            }
            // A move to U0 would notify PLC, which needs a device in the port: never here.
        }
        let rw = PORTSC_PP | PORTSC_WCE | PORTSC_WDE | PORTSC_WOE;
        portsc = (portsc & !rw) | (val & rw);
        self.portsc[port] = portsc;
    }

    fn oper_write(&mut self, reg: u64, val: u32, mem: &GuestMemoryMmap, irq: &dyn XhciIrq) -> bool {
        let mut started = false;
        match reg {
            0x00 => {
                if val & USBCMD_RS != 0 && self.usbcmd & USBCMD_RS == 0 {
                    self.usbsts &= !USBSTS_HCH;
                    started = true;
                } else if val & USBCMD_RS == 0 && self.usbcmd & USBCMD_RS != 0 {
                    self.usbsts |= USBSTS_HCH;
                    self.crcr_low &= !CRCR_CRR;
                }
                if val & USBCMD_CSS != 0 {
                    self.usbsts &= !USBSTS_SRE;
                }
                if val & USBCMD_CRS != 0 {
                    self.usbsts |= USBSTS_SRE;
                }
                self.usbcmd = val & 0xc0f;
                if val & USBCMD_HCRST != 0 {
                    self.reset();
                }
                self.intr_update(0, irq);
            }
            0x04 => {
                self.usbsts &= !(val & (USBSTS_HSE | USBSTS_EINT | USBSTS_PCD | USBSTS_SRE));
                self.intr_update(0, irq);
            }
            0x14 => self.dnctrl = val & 0xffff,
            0x18 => self.crcr_low = (val & 0xffff_ffcf) | (self.crcr_low & CRCR_CRR),
            0x1c => {
                self.crcr_high = val;
                if self.crcr_low & (CRCR_CA | CRCR_CS) != 0 && self.crcr_low & CRCR_CRR != 0 {
                    self.crcr_low &= !CRCR_CRR;
                    let ev = Event {
                        kind: ER_COMMAND_COMPLETE,
                        ccode: CC_COMMAND_RING_STOPPED,
                        ..Event::default()
                    };
                    self.event(ev, 0, mem, irq);
                } else {
                    self.cmd_dequeue = addr64(self.crcr_low & !0x3f, val);
                    self.cmd_ccs = true;
                }
                self.crcr_low &= !(CRCR_CA | CRCR_CS);
            }
            0x30 => self.dcbaap_low = val & 0xffff_ffc0,
            0x34 => self.dcbaap_high = val,
            0x38 => self.config = val & 0xff,
            _ => {}
        }
        started
    }

    fn runtime_write(&mut self, reg: u64, val: u32, mem: &GuestMemoryMmap, irq: &dyn XhciIrq) {
        if reg < 0x20 {
            return;
        }
        let v = ((reg - 0x20) / 0x20) as usize;
        if v >= self.intr.len() {
            return;
        }
        match reg & 0x1f {
            0x00 => {
                let i = &mut self.intr[v];
                if val & IMAN_IP != 0 {
                    i.iman &= !IMAN_IP;
                }
                i.iman = (i.iman & !IMAN_IE) | (val & IMAN_IE);
                self.intr_update(v, irq);
            }
            0x04 => self.intr[v].imod = val,
            0x08 => self.intr[v].erstsz = val & 0xffff,
            0x10 => self.intr[v].erstba_low = val & 0xffff_ffc0,
            0x14 => {
                self.intr[v].erstba_high = val;
                self.er_reset(v, mem);
            }
            0x18 => {
                let i = &mut self.intr[v];
                if val & ERDP_EHB != 0 {
                    i.erdp_low &= !ERDP_EHB;
                }
                i.erdp_low = (val & !ERDP_EHB) | (i.erdp_low & ERDP_EHB);
                if val & ERDP_EHB != 0 {
                    let erdp = addr64(i.erdp_low, i.erdp_high);
                    let end = i.er_start + TRB_SIZE * u64::from(i.er_size);
                    if erdp >= i.er_start
                        && erdp < end
                        && ((erdp - i.er_start) / TRB_SIZE) as u32 != i.er_ep_idx
                    {
                        self.intr_raise(v, irq);
                    }
                }
            }
            0x1c => self.intr[v].erdp_high = val,
            _ => {}
        }
    }

    /// QEMU's `xhci_er_reset`: cache the interrupter's sole event ring segment.
    fn er_reset(&mut self, v: usize, mem: &GuestMemoryMmap) {
        let i = &self.intr[v];
        let erstba = addr64(i.erstba_low, i.erstba_high);
        if i.erstsz == 0 || erstba == 0 {
            let i = &mut self.intr[v];
            i.er_start = 0;
            i.er_size = 0;
            return;
        }
        if i.erstsz != 1 {
            tracing::debug!(
                "qemu-xhci: ERSTSZ {} (only one segment is supported)",
                i.erstsz
            );
            self.die();
            return;
        }
        let mut seg = [0u8; 16];
        if mem.read_slice(&mut seg, GuestAddress(erstba)).is_err() {
            self.die();
            return;
        }
        let base = u64::from_le_bytes(seg[0..8].try_into().unwrap_or([0; 8]));
        let size = u32::from_le_bytes(seg[8..12].try_into().unwrap_or([0; 4]));
        if !(16..=4096).contains(&size) {
            tracing::debug!("qemu-xhci: event ring segment of {size} TRBs");
            self.die();
            return;
        }
        let i = &mut self.intr[v];
        i.er_start = base & !0x3f;
        i.er_size = size;
        i.er_ep_idx = 0;
        i.er_pcs = true;
    }

    /// Host Controller Error: the guest gave the controller something it cannot work with.
    fn die(&mut self) {
        self.usbsts |= USBSTS_HCE;
    }

    fn doorbell_write(&mut self, db: u64, val: u32, mem: &GuestMemoryMmap, irq: &dyn XhciIrq) {
        if !self.running() {
            return;
        }
        // Doorbell 0 with target 0 runs the command ring; a slot's doorbell has no endpoint to
        // kick without a device.
        if db == 0 && val == 0 {
            self.process_commands(mem, irq);
        }
    }

    /// Fetch the next TRB of the command ring, following Link TRBs (QEMU's `xhci_ring_fetch`):
    /// (type, parameter, control, address), or None when the ring is empty or broken.
    fn fetch_command(&mut self, mem: &GuestMemoryMmap) -> Option<(u32, u64, u32, u64)> {
        for _ in 0..=TRB_LINK_LIMIT {
            let mut trb = [0u8; 16];
            mem.read_slice(&mut trb, GuestAddress(self.cmd_dequeue))
                .ok()?;
            let param = u64::from_le_bytes(trb[0..8].try_into().ok()?);
            let control = u32::from_le_bytes(trb[12..16].try_into().ok()?);
            if (control & TRB_C != 0) != self.cmd_ccs {
                return None;
            }
            let kind = (control >> 10) & 0x3f;
            let addr = self.cmd_dequeue;
            if kind != TR_LINK {
                self.cmd_dequeue = self.cmd_dequeue.wrapping_add(TRB_SIZE);
                return Some((kind, param, control, addr));
            }
            self.cmd_dequeue = param & !0xf;
            if control & TRB_LK_TC != 0 {
                self.cmd_ccs = !self.cmd_ccs;
            }
        }
        tracing::debug!("qemu-xhci: more than {TRB_LINK_LIMIT} link TRBs in a row");
        None
    }

    /// QEMU's `xhci_process_commands` for a controller without devices.
    fn process_commands(&mut self, mem: &GuestMemoryMmap, irq: &dyn XhciIrq) {
        self.crcr_low |= CRCR_CRR;
        for _ in 0..=COMMAND_LIMIT {
            let Some((kind, param, control, addr)) = self.fetch_command(mem) else {
                return;
            };
            let mut ev = Event {
                kind: ER_COMMAND_COMPLETE,
                ccode: CC_SUCCESS,
                ptr: addr,
                ..Event::default()
            };
            let slot_of = |s: &Self, ev: &mut Event| -> Option<usize> {
                let id = ((control >> 24) & 0xff) as usize;
                if !(1..=SLOTS).contains(&id) {
                    ev.ccode = CC_TRB_ERROR;
                    None
                } else if !s.slots[id - 1] {
                    ev.ccode = CC_SLOT_NOT_ENABLED_ERROR;
                    None
                } else {
                    Some(id)
                }
            };
            match kind {
                CR_ENABLE_SLOT => match self.slots.iter().position(|e| !e) {
                    Some(i) => {
                        self.slots[i] = true;
                        ev.slot = i as u32 + 1;
                    }
                    None => ev.ccode = CC_NO_SLOTS_ERROR,
                },
                CR_DISABLE_SLOT => {
                    if let Some(id) = slot_of(self, &mut ev) {
                        self.slots[id - 1] = false;
                        ev.slot = id as u32;
                    }
                }
                // No device behind any port: QEMU's address_slot finds no port for the slot
                // context and answers TRB Error; the commands that follow an Address Device
                // never come.
                CR_ADDRESS_DEVICE
                | CR_CONFIGURE_ENDPOINT
                | CR_EVALUATE_CONTEXT
                | CR_RESET_ENDPOINT
                | CR_STOP_ENDPOINT
                | CR_SET_TR_DEQUEUE
                | CR_RESET_DEVICE => {
                    if let Some(id) = slot_of(self, &mut ev) {
                        ev.slot = id as u32;
                        ev.ccode = CC_TRB_ERROR;
                    }
                }
                CR_GET_PORT_BANDWIDTH => {
                    // QEMU's placeholder: 80% free on every port.
                    let mut bw = vec![80u8; self.ports() + 1];
                    bw[0] = 0;
                    if mem.write_slice(&bw, GuestAddress(param & !0xf)).is_err() {
                        ev.ccode = CC_TRB_ERROR;
                    }
                }
                CR_NOOP => {}
                _ => ev.ccode = CC_TRB_ERROR,
            }
            self.event(ev, 0, mem, irq);
        }
    }

    /// QEMU's `xhci_event`: post `ev` on interrupter `v`'s event ring (or a ring-full error),
    /// then raise the interrupter.
    fn event(&mut self, ev: Event, v: usize, mem: &GuestMemoryMmap, irq: &dyn XhciIrq) {
        let Some(i) = self.intr.get(v).copied() else {
            return;
        };
        let erdp = addr64(i.erdp_low, i.erdp_high);
        let end = i.er_start + TRB_SIZE * u64::from(i.er_size);
        if i.er_size == 0 || erdp < i.er_start || erdp >= end {
            tracing::debug!(
                "qemu-xhci: ERDP {erdp:#x} outside event ring {}",
                i.er_start
            );
            self.die();
            return;
        }
        let dp_idx = ((erdp - i.er_start) / TRB_SIZE) as u32;
        if (i.er_ep_idx + 2) % i.er_size == dp_idx {
            let full = Event {
                kind: ER_HOST_CONTROLLER,
                ccode: CC_EVENT_RING_FULL_ERROR,
                ..Event::default()
            };
            self.write_event(full, v, mem);
        } else if (i.er_ep_idx + 1) % i.er_size == dp_idx {
            tracing::debug!("qemu-xhci: event ring {v} full, event dropped");
        } else {
            self.write_event(ev, v, mem);
        }
        self.intr_raise(v, irq);
    }

    fn write_event(&mut self, ev: Event, v: usize, mem: &GuestMemoryMmap) {
        let i = &mut self.intr[v];
        let mut trb = [0u8; 16];
        trb[0..8].copy_from_slice(&ev.ptr.to_le_bytes());
        trb[8..12].copy_from_slice(&(ev.length | (ev.ccode << 24)).to_le_bytes());
        let control = (ev.slot << 24) | (ev.kind << 10) | u32::from(i.er_pcs);
        trb[12..16].copy_from_slice(&control.to_le_bytes());
        let addr = i.er_start + TRB_SIZE * u64::from(i.er_ep_idx);
        i.er_ep_idx += 1;
        if i.er_ep_idx >= i.er_size {
            i.er_ep_idx = 0;
            i.er_pcs = !i.er_pcs;
        }
        if mem.write_slice(&trb, GuestAddress(addr)).is_err() {
            self.die();
        }
    }

    /// QEMU's `xhci_intr_raise`.
    fn intr_raise(&mut self, v: usize, irq: &dyn XhciIrq) {
        let i = &mut self.intr[v];
        let pending = i.erdp_low & ERDP_EHB != 0;
        i.erdp_low |= ERDP_EHB;
        i.iman |= IMAN_IP;
        self.usbsts |= USBSTS_EINT;
        if pending || i.iman & IMAN_IE == 0 || self.usbcmd & USBCMD_INTE == 0 {
            return;
        }
        if irq.raise(v, true) {
            self.intr[v].iman &= !IMAN_IP;
        }
    }

    /// QEMU's `xhci_intr_update`: interrupter 0's INTx level follows IP && IE && INTE.
    fn intr_update(&mut self, v: usize, irq: &dyn XhciIrq) {
        if v != 0 {
            return;
        }
        let i = &self.intr[0];
        let level =
            i.iman & IMAN_IP != 0 && i.iman & IMAN_IE != 0 && self.usbcmd & USBCMD_INTE != 0;
        if irq.raise(0, level) {
            self.intr[0].iman &= !IMAN_IP;
        }
    }

    /// Interrupter 0's INTx level (for the resample at the guest's EOI).
    pub fn intx_level(&self) -> bool {
        let i = &self.intr[0];
        i.iman & IMAN_IP != 0 && i.iman & IMAN_IE != 0 && self.usbcmd & USBCMD_INTE != 0
    }

    pub fn is_running(&self) -> bool {
        self.running()
    }

    /// Checks a snapshot's registers against this controller's shape.
    pub fn check(&self, other: &XhciRegs) -> Result<(), String> {
        if other.usb2_ports != self.usb2_ports || other.usb3_ports != self.usb3_ports {
            return Err(format!(
                "{}+{} ports in the snapshot, {}+{} here",
                other.usb2_ports, other.usb3_ports, self.usb2_ports, self.usb3_ports
            ));
        }
        if other.portsc.len() != self.portsc.len()
            || other.slots.len() != SLOTS
            || other.intr.len() != INTERRUPTERS
            || other
                .intr
                .iter()
                .any(|i| i.er_size > 4096 || (i.er_size > 0 && i.er_ep_idx >= i.er_size))
        {
            return Err("malformed xHCI state".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "xhci_tests.rs"]
mod tests;
