//! User-space I/O APIC (Intel 82093AA, as QEMU models it with version 0x20 and its EOI register)
//! for the split irqchip, where KVM keeps only the LAPICs.
//!
//! Registers (82093AA datasheet section 3): IOREGSEL at +0x00 selects, IOWIN at +0x10 reads and
//! writes the selected 32-bit register: 0x00 ID, 0x01 version, 0x02 arbitration ID, 0x10 + 2n and
//! 0x11 + 2n the low and high halves of redirection entry n. +0x40 is the EOI register of
//! version 0x20 I/O APICs (written with a vector, like a LAPIC EOI broadcast).
//!
//! Delivery turns a redirection entry into an MSI (the entry's fields are the MSI address and
//! data fields: Intel SDM vol. 3, 11.11) and hands it to KVM. For level-triggered pins, the
//! remote IRR bit is set at delivery and cleared when the guest's LAPIC EOIs the vector, which
//! KVM reports as a KVM_EXIT_IOAPIC_EOI because the pin's MSI route is marked level-triggered.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::{MsiController, MsiMessage};
use crate::BusDevice;

/// Size of the MMIO window QEMU decodes (the machine's address map places it, at 0xfec00000).
pub const IOAPIC_LEN: u64 = 0x1000;
/// Redirection entries (pins) of the 82093AA.
pub const IOAPIC_PINS: usize = 24;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOEOI: u64 = 0x40;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIR_BASE: u32 = 0x10;
/// Version 0x20 (has the EOI register), max redirection entry in bits 23:16.
const VERSION: u32 = 0x20 | ((IOAPIC_PINS as u32 - 1) << 16);
const ID_MASK: u32 = 0x0f00_0000;

// Redirection entry fields (82093AA section 3.2.4).
const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_MODE_SHIFT: u64 = 8;
const RTE_DEST_MODE: u64 = 1 << 11;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u64 = 56;
/// Bits 55:49 carry the extended destination ID (KVM_FEATURE_MSI_EXT_DEST_ID), as in QEMU.
const RTE_EXT_DEST_SHIFT: u64 = 49;
const RTE_READ_ONLY: u64 = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;
/// Delivery mode 7: the interrupt comes from an 8259A; there is no PIC under the split irqchip.
const DELIVERY_EXTINT: u64 = 7;

const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

struct State {
    id: u32,
    regsel: u32,
    rte: [u64; IOAPIC_PINS],
    /// Input lines currently high (level) or with an edge not yet delivered.
    irr: u32,
    /// Level-triggered MSI routes last given to KVM, to skip needless route updates.
    routes: Vec<(u32, MsiMessage)>,
    /// Told when a level-triggered pin is acknowledged (the device re-raises if still pending).
    resample: [Option<EventFd>; IOAPIC_PINS],
}

/// The I/O APIC. MMIO accesses come from vCPU threads; pin changes from the interrupt thread.
pub struct Ioapic {
    state: Mutex<State>,
    msi: Arc<dyn MsiController>,
}

impl Ioapic {
    /// An I/O APIC in its reset state (every pin masked) delivering through `msi`.
    pub fn new(msi: Arc<dyn MsiController>) -> Self {
        Self {
            state: Mutex::new(State {
                id: 0,
                regsel: 0,
                rte: [RTE_MASKED; IOAPIC_PINS],
                irr: 0,
                routes: Vec::new(),
                resample: Default::default(),
            }),
            msi,
        }
    }

    /// Have `evt` written whenever the guest acknowledges level-triggered `pin` (see
    /// [`crate::interrupt::IrqLine`]). Pins out of range are ignored.
    pub fn set_resample(&self, pin: usize, evt: EventFd) {
        if let Some(slot) = self.lock().resample.get_mut(pin) {
            *slot = Some(evt);
        }
    }

    /// Set input `pin` to `level` (true = asserted). Out-of-range pins are ignored.
    pub fn set_irq(&self, pin: usize, level: bool) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let mut st = self.lock();
        let bit = 1u32 << pin;
        let rte = st.rte[pin];
        if rte & RTE_LEVEL != 0 {
            if level {
                st.irr |= bit;
                self.service(&mut st);
            } else {
                st.irr &= !bit;
            }
        } else if level && rte & RTE_MASKED == 0 {
            // 82093AA 3.2.4: edges arriving while the pin is masked are discarded.
            st.irr |= bit;
            self.service(&mut st);
        }
    }

    /// An edge (or, on a level-triggered pin, a pulse): what one write to an irqfd means.
    pub fn pulse(&self, pin: usize) {
        self.set_irq(pin, true);
        self.set_irq(pin, false);
    }

    /// The guest acknowledged `vector` (LAPIC EOI reported by KVM, or the EOI register).
    pub fn end_of_interrupt(&self, vector: u8) {
        let mut st = self.lock();
        let mut acked = false;
        for pin in 0..IOAPIC_PINS {
            let rte = st.rte[pin];
            if rte & RTE_VECTOR == u64::from(vector)
                && rte & RTE_LEVEL != 0
                && rte & RTE_REMOTE_IRR != 0
            {
                st.rte[pin] &= !RTE_REMOTE_IRR;
                acked = true;
                if let Some(evt) = &st.resample[pin] {
                    // A failed write only loses the resample; the device keeps its own state.
                    let _ = evt.write(1);
                    // The line counts as low until the device raises it again.
                    st.irr &= !(1 << pin);
                }
            }
        }
        if acked {
            self.service(&mut st);
        }
    }

    /// The current value of redirection entry `pin` (for tests and debugging).
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.lock().rte.get(pin).copied()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliver every pending, unmasked input that is not waiting for an EOI.
    fn service(&self, st: &mut State) {
        for pin in 0..IOAPIC_PINS {
            let bit = 1u32 << pin;
            if st.irr & bit == 0 {
                continue;
            }
            let rte = st.rte[pin];
            if rte & RTE_MASKED != 0 {
                continue;
            }
            if rte & RTE_LEVEL != 0 {
                if rte & RTE_REMOTE_IRR != 0 {
                    continue;
                }
                st.rte[pin] |= RTE_REMOTE_IRR;
            } else {
                st.irr &= !bit;
            }
            if (rte >> RTE_DELIVERY_MODE_SHIFT) & 7 == DELIVERY_EXTINT {
                // No 8259A behind the split irqchip to supply a vector: drop it.
                continue;
            }
            // A failed ioctl cannot be reported to the guest; the interrupt is lost.
            let _ = self.msi.signal_msi(msi_message(rte));
        }
    }

    fn read_register(&self, st: &State) -> u32 {
        match st.regsel {
            REG_ID | REG_ARBITRATION => st.id,
            REG_VERSION => VERSION,
            r => match redirection_index(r) {
                Some((pin, high)) => {
                    let rte = st.rte[pin];
                    if high {
                        (rte >> 32) as u32
                    } else {
                        rte as u32
                    }
                }
                // Unimplemented registers read as zero (QEMU does the same).
                None => 0,
            },
        }
    }

    fn write_register(&self, st: &mut State, value: u32) {
        match st.regsel {
            REG_ID => st.id = value & ID_MASK,
            r => {
                let Some((pin, high)) = redirection_index(r) else {
                    return;
                };
                let old = st.rte[pin];
                let mut new = if high {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (old & !0xffff_ffff) | u64::from(value)
                };
                new = (new & !RTE_READ_ONLY) | (old & RTE_READ_ONLY);
                // Remote IRR is undefined for edge-triggered entries; keep it clear (as QEMU).
                if new & RTE_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                st.rte[pin] = new;
                self.update_routes(st);
                self.service(st);
            }
        }
    }

    /// Give KVM one MSI route per unmasked level-triggered pin, so the in-kernel LAPICs exit on
    /// the EOI of those vectors (and only those: other EOIs stay in the kernel).
    fn update_routes(&self, st: &mut State) {
        let routes: Vec<(u32, MsiMessage)> = st
            .rte
            .iter()
            .enumerate()
            .filter(|(_, &rte)| rte & RTE_LEVEL != 0 && rte & RTE_MASKED == 0)
            .map(|(pin, &rte)| (pin as u32, msi_message(rte)))
            .collect();
        if routes != st.routes {
            // On failure the EOI of that vector is not seen and the pin stays blocked by remote
            // IRR; the guest gets no error path for it either way.
            if self.msi.set_msi_routes(&routes).is_ok() {
                st.routes = routes;
            }
        }
    }
}

/// The I/O APIC's registers and input lines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoapicState {
    pub id: u32,
    pub regsel: u32,
    pub rte: Vec<u64>,
    pub irr: u32,
}

impl crate::Persist for Ioapic {
    type State = IoapicState;

    fn save(&self) -> IoapicState {
        let st = self.lock();
        IoapicState {
            id: st.id,
            regsel: st.regsel,
            rte: st.rte.to_vec(),
            irr: st.irr,
        }
    }

    fn restore(&self, s: IoapicState) -> Result<(), crate::StateError> {
        let rte: [u64; IOAPIC_PINS] = s.rte.try_into().map_err(|v: Vec<u64>| {
            crate::StateError::Invalid(format!(
                "IOAPIC: {} redirection entries, this one has {IOAPIC_PINS}",
                v.len()
            ))
        })?;
        let mut st = self.lock();
        st.id = s.id & ID_MASK;
        st.regsel = s.regsel;
        st.rte = rte;
        st.irr = s.irr;
        // KVM's EOI routes for the level-triggered pins, as the guest had them.
        st.routes.clear();
        self.update_routes(&mut st);
        Ok(())
    }
}

/// The pin and half (high = true) of redirection register `reg`, if it is one.
fn redirection_index(reg: u32) -> Option<(usize, bool)> {
    let n = reg.checked_sub(REG_REDIR_BASE)? as usize;
    let pin = n / 2;
    (pin < IOAPIC_PINS).then_some((pin, n % 2 == 1))
}

/// The MSI the LAPICs receive for redirection entry `rte`.
fn msi_message(rte: u64) -> MsiMessage {
    let dest = (rte >> RTE_DEST_SHIFT) & 0xff;
    let ext_dest = (rte >> RTE_EXT_DEST_SHIFT) & 0x7f;
    let mut address = MSI_ADDRESS_BASE | (dest << 12) | (ext_dest << 5);
    if rte & RTE_DEST_MODE != 0 {
        address |= 1 << 2;
    }
    let data = (rte & RTE_VECTOR)
        | (((rte >> RTE_DELIVERY_MODE_SHIFT) & 7) << 8)
        | if rte & RTE_LEVEL != 0 { 1 << 15 } else { 0 };
    MsiMessage {
        address,
        data: data as u32,
    }
}

impl BusDevice for Ioapic {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let st = self.lock();
        let value = match offset & !3 {
            IOREGSEL => st.regsel,
            IOWIN => self.read_register(&st),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let start = (offset & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(start + i).copied().unwrap_or(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let value = crate::legacy::le_value(data) as u32;
        let mut st = self.lock();
        match offset {
            IOREGSEL => st.regsel = value & 0xff,
            // QEMU ignores IOWIN writes narrower than 32 bits.
            IOWIN if data.len() == 4 => self.write_register(&mut st, value),
            IOEOI => {
                drop(st);
                self.end_of_interrupt(value as u8);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct RecordingMsi {
        sent: Mutex<Vec<MsiMessage>>,
        routes: Mutex<Vec<Vec<(u32, MsiMessage)>>>,
    }

    impl MsiController for RecordingMsi {
        fn signal_msi(&self, msi: MsiMessage) -> std::io::Result<()> {
            self.sent.lock().unwrap().push(msi);
            Ok(())
        }
        fn set_msi_routes(&self, routes: &[(u32, MsiMessage)]) -> std::io::Result<()> {
            self.routes.lock().unwrap().push(routes.to_vec());
            Ok(())
        }
    }

    impl RecordingMsi {
        fn take(&self) -> Vec<MsiMessage> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
    }

    fn setup() -> (Arc<RecordingMsi>, Ioapic) {
        let msi = Arc::new(RecordingMsi::default());
        let io = Ioapic::new(msi.clone());
        (msi, io)
    }

    fn write_reg(io: &Ioapic, reg: u32, value: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &value.to_le_bytes());
    }

    fn read_reg(io: &Ioapic, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn id_version_and_reset_state() {
        let (_, io) = setup();
        assert_eq!(read_reg(&io, REG_VERSION), 0x0017_0020);
        write_reg(&io, REG_ID, 0xffff_ffff);
        assert_eq!(read_reg(&io, REG_ID), 0x0f00_0000);
        assert_eq!(read_reg(&io, REG_ARBITRATION), 0x0f00_0000);
        for pin in 0..IOAPIC_PINS as u32 {
            assert_eq!(read_reg(&io, 0x10 + 2 * pin), RTE_MASKED as u32);
            assert_eq!(read_reg(&io, 0x11 + 2 * pin), 0);
        }
        // Past the last entry and unknown registers read as zero.
        assert_eq!(read_reg(&io, 0x10 + 2 * 24), 0);
        assert_eq!(read_reg(&io, 0x03), 0);
        let mut sel = [0u8; 4];
        io.read(IOREGSEL, &mut sel);
        assert_eq!(sel, [3, 0, 0, 0]);
    }

    #[test]
    fn edge_pin_delivers_msi_only_when_unmasked() {
        let (msi, io) = setup();
        io.pulse(4);
        assert!(msi.take().is_empty(), "masked edge is dropped");
        write_reg(&io, 0x11 + 8, 3 << 24);
        write_reg(&io, 0x10 + 8, 0x31);
        assert!(msi.take().is_empty(), "the dropped edge stays dropped");
        io.pulse(4);
        io.pulse(4);
        let sent = msi.take();
        assert_eq!(
            sent,
            vec![
                MsiMessage {
                    address: 0xfee0_3000,
                    data: 0x31
                };
                2
            ]
        );
        // Edge-triggered pins need no EOI exits: no routes given to KVM.
        assert!(msi.routes.lock().unwrap().is_empty());
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let (msi, io) = setup();
        // Logical destination mode, lowest priority delivery, level, vector 0x40.
        write_reg(&io, 0x11 + 2 * 9, 0x0100_0000);
        write_reg(&io, 0x10 + 2 * 9, 0x40 | (1 << 8) | (1 << 11) | (1 << 15));
        let routes = msi.routes.lock().unwrap().clone();
        let want = MsiMessage {
            address: 0xfee0_1004,
            data: 0x8140,
        };
        assert_eq!(routes, vec![vec![(9, want)]]);
        io.set_irq(9, true);
        assert_eq!(msi.take(), vec![want]);
        assert_ne!(read_reg(&io, 0x10 + 18) & RTE_REMOTE_IRR as u32, 0);
        // Still asserted, but remote IRR blocks a second delivery until the EOI.
        io.set_irq(9, true);
        assert!(msi.take().is_empty());
        // The guest cannot clear remote IRR by writing it.
        write_reg(&io, 0x10 + 18, 0x40 | (1 << 8) | (1 << 11) | (1 << 15));
        assert_ne!(read_reg(&io, 0x10 + 18) & RTE_REMOTE_IRR as u32, 0);
        io.end_of_interrupt(0x41);
        assert!(
            msi.take().is_empty(),
            "another vector's EOI changes nothing"
        );
        // EOI while the line is still high: delivered again.
        io.end_of_interrupt(0x40);
        assert_eq!(msi.take(), vec![want]);
        io.set_irq(9, false);
        io.write(IOEOI, &[0x40, 0, 0, 0]);
        assert!(msi.take().is_empty());
        assert_eq!(read_reg(&io, 0x10 + 18) & RTE_REMOTE_IRR as u32, 0);
    }

    #[test]
    fn level_pin_with_resample_and_masking() {
        let (msi, io) = setup();
        let resample = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        io.set_resample(5, resample.try_clone().unwrap());
        write_reg(&io, 0x10 + 10, 0x50 | (1 << 15) | (1 << 16));
        io.set_irq(5, true);
        assert!(msi.take().is_empty(), "masked");
        // Unmasking delivers the still-asserted level.
        write_reg(&io, 0x10 + 10, 0x50 | (1 << 15));
        assert_eq!(msi.take().len(), 1);
        io.end_of_interrupt(0x50);
        assert_eq!(resample.read().unwrap(), 1);
        assert!(
            msi.take().is_empty(),
            "line is low until the device raises it again"
        );
        // Masking removes the route again.
        write_reg(&io, 0x10 + 10, 0x50 | (1 << 15) | (1 << 16));
        assert_eq!(msi.routes.lock().unwrap().last().unwrap(), &vec![]);
    }

    #[test]
    fn any_access_is_safe() {
        let (_, io) = setup();
        for offset in [0u64, 1, 3, 0x10, 0x13, 0x20, 0x40, 0xfff, u64::MAX] {
            for len in [0usize, 1, 2, 4, 8] {
                let mut d = vec![0xff; len];
                io.read(offset, &mut d);
                io.write(offset, &d);
            }
        }
        io.set_irq(24, true);
        io.set_irq(usize::MAX, true);
        io.end_of_interrupt(0xff);
        assert_eq!(io.redirection_entry(24), None);
        // Narrow IOWIN writes are ignored.
        io.write(IOREGSEL, &[0x10]);
        io.write(IOWIN, &[0]);
        assert_eq!(io.redirection_entry(0), Some(RTE_MASKED));
    }

    #[test]
    fn state_survives_save_and_restore() {
        use crate::Persist;
        let (_, a) = setup();
        write_reg(&a, 0x10 + 2 * 9, 0x39 | RTE_LEVEL as u32);
        write_reg(&a, REG_ID, 0x0300_0000);
        let saved = a.save();
        let (msi, b) = setup();
        b.restore(saved.clone()).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(read_reg(&b, 0x10 + 2 * 9) & 0xff, 0x39);
        // The level pin's EOI route goes back to KVM.
        assert_eq!(msi.routes.lock().unwrap().last().map(Vec::len), Some(1));
        let mut bad = saved;
        bad.rte.pop();
        assert!(b.restore(bad).is_err());
    }
}
