//! virtio-input (virtio 1.2 §5.8) as QEMU's `virtio-tablet`, `virtio-keyboard` and
//! `virtio-mouse`. The tablet is the one that matters most: an absolute pointer, so that a VNC
//! client's pointer and the guest's line up without acceleration games.
//!
//! The config space answers the driver's (select, subsel) queries from a fixed table with QEMU
//! 7.2's values (hw/input/virtio-input-hid.c: `virtio_tablet_config_v2`, `virtio_mouse_config_v2`,
//! `virtio_keyboard_config` and the button map), so a guest sees the same device on both; the
//! keyboard's key bitmap lists the keys rvmm's keymap knows. Events are 8-byte `virtio_input_event`s, one per eventq
//! buffer, grouped into reports that end with `EV_SYN`/`SYN_REPORT`; as in QEMU a report goes to
//! the guest only once enough buffers are available for all of it, and events reach the device
//! only while the driver has it running (DRIVER_OK), which is also when front ends route the
//! pointer to it instead of the PS/2 mouse (QEMU's input handler activation). The statusq (LED
//! events for keyboards) is consumed and ignored.

use super::worker::{self, Flow, Worker, WorkerEvent};
use super::{
    process_queue, queue_fault, read_config_bytes, ActivateContext, DescChain, DeviceCounters,
    Drained, QueueFault, VirtioDevice, VirtioError, VirtioInterrupt, COMMON_FEATURES, TYPE_INPUT,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

const QUEUE_SIZE: u16 = 64;
const EVENTQ: usize = 0;
const STATUSQ: usize = 1;
/// The worker's third "queue": front ends signal it when a report is waiting.
const WAKE: usize = 2;

/// Config space selectors (§5.8.4).
const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;
/// select, subsel, size and five reserved bytes come before the payload.
const CFG_HEADER: usize = 8;
/// Largest payload (the union is 128 bytes).
const CFG_PAYLOAD_MAX: usize = 128;

/// Linux input event types and codes (include/uapi/linux/input-event-codes.h).
pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_REL: u16 = 0x02;
pub const EV_ABS: u16 = 0x03;
const EV_LED: u16 = 0x11;
const EV_REP: u16 = 0x14;
pub const REL_X: u16 = 0x00;
pub const REL_Y: u16 = 0x01;
const LED_NUML: u8 = 0;
const LED_CAPSL: u8 = 1;
const LED_SCROLLL: u8 = 2;
pub const SYN_REPORT: u16 = 0;
pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;
pub const REL_WHEEL: u16 = 0x08;
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
const BTN_SIDE: u16 = 0x113;
const BTN_EXTRA: u16 = 0x114;
const BTN_GEAR_DOWN: u16 = 0x150;
const BTN_GEAR_UP: u16 = 0x151;
const BUS_VIRTUAL: u16 = 0x06;

/// The tablet's axes run from 0 to this (QEMU's INPUT_EVENT_ABS_MAX).
pub const ABS_MAX: u32 = 0x7fff;
/// Reports kept while the driver has no buffers; later ones are dropped, as QEMU drops a report
/// that finds the ring full.
const MAX_PENDING_REPORTS: usize = 128;

/// The buttons a tablet reports: QEMU's keymap_button (the EV_KEY bitmap lists them all).
const TABLET_BUTTONS: [u16; 7] = [
    BTN_LEFT,
    BTN_RIGHT,
    BTN_MIDDLE,
    BTN_GEAR_UP,
    BTN_GEAR_DOWN,
    BTN_SIDE,
    BTN_EXTRA,
];

/// Which of QEMU's virtio-input HID devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `virtio-tablet`: absolute X/Y, buttons, wheel.
    Tablet,
    /// `virtio-keyboard`: keys and LEDs.
    Keyboard,
    /// `virtio-mouse`: relative X/Y, buttons, wheel.
    Mouse,
}

impl InputKind {
    fn name(self) -> &'static str {
        match self {
            InputKind::Tablet => "virtio-tablet",
            InputKind::Keyboard => "virtio-keyboard",
            InputKind::Mouse => "virtio-mouse",
        }
    }
}

/// One (select, subsel) answer of the config space.
struct ConfigEntry {
    select: u8,
    subsel: u8,
    payload: Vec<u8>,
}

/// One `virtio_input_event` (§5.8.6): le16 type, le16 code, le32 value.
pub type InputEvent = [u8; 8];

fn event(kind: u16, code: u16, value: i32) -> InputEvent {
    let mut e = [0u8; 8];
    e[0..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&code.to_le_bytes());
    e[4..8].copy_from_slice(&value.to_le_bytes());
    e
}

/// What the device and the front ends share.
struct Shared {
    /// Complete reports (each ends with SYN_REPORT) not yet given to the guest.
    pending: Mutex<VecDeque<Vec<InputEvent>>>,
    /// Written when a report is queued; the worker's third queue eventfd.
    wake: EventFd,
    /// The driver has the device running: events are accepted.
    active: AtomicBool,
    /// Buttons held in the last report (RFB's mask layout, crate::input::BUTTON_*).
    buttons: Mutex<u8>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, VecDeque<Vec<InputEvent>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The front ends' side of a virtio-input device: where keys or the pointer go.
#[derive(Clone)]
pub struct InputHandle {
    kind: InputKind,
    shared: Arc<Shared>,
}

impl InputHandle {
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// Whether the guest's driver runs the device: then its events belong to it (QEMU moves an
    /// activated virtio-input handler to the front of its list; for a tablet VNC turns
    /// absolute).
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    /// A key (Linux input code) went down or up: EV_KEY then SYN_REPORT.
    pub fn key(&self, code: u16, down: bool) {
        if self.is_active() {
            self.queue(vec![
                event(EV_KEY, code, i32::from(down)),
                event(EV_SYN, SYN_REPORT, 0),
            ]);
        }
    }

    /// Changed buttons (left, middle, right) and the wheel, as QEMU's button events come.
    fn buttons_and_wheel(&self, report: &mut Vec<InputEvent>, wheel: i32, buttons: u8) {
        use crate::input::{BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT};
        let mut held = self
            .shared
            .buttons
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (bit, code) in [
            (BUTTON_LEFT, BTN_LEFT),
            (BUTTON_MIDDLE, BTN_MIDDLE),
            (BUTTON_RIGHT, BTN_RIGHT),
        ] {
            if (*held ^ buttons) & bit != 0 {
                report.push(event(EV_KEY, code, i32::from(buttons & bit != 0)));
            }
        }
        *held = buttons;
        if wheel != 0 {
            // The front ends count towards the user; REL_WHEEL counts up.
            report.push(event(EV_REL, REL_WHEEL, -wheel.signum()));
        }
    }

    /// Relative motion (a virtio mouse): changed buttons, the wheel, REL_X, REL_Y (each only
    /// when non-zero, as QEMU's VNC sends them), SYN_REPORT.
    pub fn pointer_rel(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        if !self.is_active() {
            return;
        }
        let mut report = Vec::with_capacity(6);
        self.buttons_and_wheel(&mut report, wheel, buttons);
        report.push(event(EV_REL, REL_X, dx));
        report.push(event(EV_REL, REL_Y, dy));
        report.push(event(EV_SYN, SYN_REPORT, 0));
        self.queue(report);
    }

    /// The pointer is at (`x`, `y`), each scaled to 0..=[`ABS_MAX`], with `buttons` held
    /// (crate::input::BUTTON_*) after `wheel` clicks (positive = towards the user, as in
    /// [`crate::input::InputSink`]; REL_WHEEL counts the other way). The report is the one QEMU
    /// sends for a VNC pointer event: changed buttons (left, middle, right), the wheel, X, Y,
    /// then SYN_REPORT. Nothing is queued while the driver does not run the device.
    pub fn pointer_abs(&self, x: u32, y: u32, wheel: i32, buttons: u8) {
        if !self.is_active() {
            return;
        }
        let mut report = Vec::with_capacity(8);
        self.buttons_and_wheel(&mut report, wheel, buttons);
        report.push(event(EV_ABS, ABS_X, x.min(ABS_MAX) as i32));
        report.push(event(EV_ABS, ABS_Y, y.min(ABS_MAX) as i32));
        report.push(event(EV_SYN, SYN_REPORT, 0));
        self.queue(report);
    }

    fn queue(&self, report: Vec<InputEvent>) {
        {
            let mut pending = self.shared.pending();
            if pending.len() >= MAX_PENDING_REPORTS {
                tracing::debug!("{}: guest not reading; report dropped", self.kind.name());
                return;
            }
            pending.push_back(report);
        }
        let _ = self.shared.wake.write(1);
    }
}

/// Scale `value` in 0..`size` to 0..=[`ABS_MAX`] as QEMU's qemu_input_scale_axis does (so a
/// pointer at the last pixel is just below the maximum).
pub fn scale_axis(value: u32, size: u32) -> u32 {
    if size == 0 {
        return ABS_MAX / 2;
    }
    (u64::from(value.min(size)) * u64::from(ABS_MAX) / u64::from(size)) as u32
}

/// The longest report a snapshot may hold (a report has a few events).
const MAX_REPORT_EVENTS: usize = 16;

/// A virtio-input device's own state in a snapshot: the config-space query, the buttons held
/// and the reports not yet given to the guest (a lost release would leave a button or key
/// stuck).
#[derive(serde::Serialize, serde::Deserialize)]
struct InputState {
    select: u8,
    subsel: u8,
    buttons: u8,
    pending: Vec<Vec<InputEvent>>,
}

/// A virtio-input device.
pub struct InputDevice {
    kind: InputKind,
    entries: Vec<ConfigEntry>,
    select: u8,
    subsel: u8,
    config_size: usize,
    shared: Arc<Shared>,
    worker: Option<Worker>,
    counters: Arc<DeviceCounters>,
}

impl InputDevice {
    /// QEMU's `virtio-tablet`, `virtio-keyboard` or `virtio-mouse` with `wheel-axis=on` (its
    /// default): `serial` is the ID_SERIAL string (QEMU's `serial=` property), at most 128
    /// bytes.
    pub fn new(kind: InputKind, serial: Option<&str>) -> std::io::Result<Self> {
        let mut entries = Vec::new();
        let add = |entries: &mut Vec<ConfigEntry>, select, subsel: u16, payload| {
            entries.push(ConfigEntry {
                select,
                subsel: subsel as u8,
                payload,
            })
        };
        let (name, product, version): (&[u8], u16, u16) = match kind {
            InputKind::Tablet => (b"QEMU Virtio Tablet", 0x0003, 0x0002),
            InputKind::Keyboard => (b"QEMU Virtio Keyboard", 0x0001, 0x0001),
            InputKind::Mouse => (b"QEMU Virtio Mouse", 0x0002, 0x0002),
        };
        // QEMU's sizeof() of the string literal: the NUL counts.
        let mut name = name.to_vec();
        name.push(0);
        add(&mut entries, CFG_ID_NAME, 0, name);
        if let Some(serial) = serial {
            let mut s = serial.as_bytes().to_vec();
            s.truncate(CFG_PAYLOAD_MAX - 1);
            add(&mut entries, CFG_ID_SERIAL, 0, s);
        }
        let mut ids = Vec::with_capacity(8);
        for v in [BUS_VIRTUAL, 0x0627, product, version] {
            ids.extend_from_slice(&v.to_le_bytes());
        }
        add(&mut entries, CFG_ID_DEVIDS, 0, ids);
        let keys: Vec<u16> = match kind {
            InputKind::Tablet => {
                add(
                    &mut entries,
                    CFG_EV_BITS,
                    EV_ABS,
                    vec![(1 << ABS_X) | (1 << ABS_Y)],
                );
                add(
                    &mut entries,
                    CFG_EV_BITS,
                    EV_REL,
                    vec![0, 1 << (REL_WHEEL - 8)],
                );
                for axis in [ABS_X, ABS_Y] {
                    // min, max, fuzz, flat, res.
                    let mut info = Vec::with_capacity(20);
                    for v in [0, ABS_MAX, 0, 0, 0] {
                        info.extend_from_slice(&v.to_le_bytes());
                    }
                    add(&mut entries, CFG_ABS_INFO, axis, info);
                }
                TABLET_BUTTONS.to_vec()
            }
            InputKind::Mouse => {
                add(
                    &mut entries,
                    CFG_EV_BITS,
                    EV_REL,
                    vec![(1 << REL_X) | (1 << REL_Y), 1 << (REL_WHEEL - 8)],
                );
                TABLET_BUTTONS.to_vec()
            }
            InputKind::Keyboard => {
                add(&mut entries, CFG_EV_BITS, EV_REP, vec![0]);
                add(
                    &mut entries,
                    CFG_EV_BITS,
                    EV_LED,
                    vec![(1 << LED_NUML) | (1 << LED_CAPSL) | (1 << LED_SCROLLL)],
                );
                crate::input::keymap::KEYS.iter().map(|k| k.code).collect()
            }
        };
        let top = keys.iter().copied().max().unwrap_or(0) as usize;
        let mut bitmap = vec![0u8; top / 8 + 1];
        for b in keys {
            bitmap[b as usize / 8] |= 1 << (b % 8);
        }
        add(&mut entries, CFG_EV_BITS, EV_KEY, bitmap);
        // QEMU sizes the config space after the largest answer.
        let config_size = CFG_HEADER + entries.iter().map(|e| e.payload.len()).max().unwrap_or(0);
        Ok(Self {
            kind,
            entries,
            select: 0,
            subsel: 0,
            config_size,
            shared: Arc::new(Shared {
                pending: Mutex::new(VecDeque::new()),
                wake: EventFd::new(libc::EFD_NONBLOCK)?,
                active: AtomicBool::new(false),
                buttons: Mutex::new(0),
            }),
            worker: None,
            counters: Arc::default(),
        })
    }

    /// QEMU's `virtio-tablet`.
    pub fn tablet(serial: Option<&str>) -> std::io::Result<Self> {
        Self::new(InputKind::Tablet, serial)
    }

    /// Where front ends send keys or the pointer.
    pub fn handle(&self) -> InputHandle {
        InputHandle {
            kind: self.kind,
            shared: self.shared.clone(),
        }
    }

    /// The config space as the driver sees it now: the first `config_size` bytes of the result
    /// (on the stack: config reads are vCPU exits).
    fn config_bytes(&self) -> [u8; CFG_HEADER + CFG_PAYLOAD_MAX] {
        let mut c = [0u8; CFG_HEADER + CFG_PAYLOAD_MAX];
        c[0] = self.select;
        c[1] = self.subsel;
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.select == self.select && e.subsel == self.subsel)
        {
            c[2] = e.payload.len() as u8;
            c[CFG_HEADER..CFG_HEADER + e.payload.len()].copy_from_slice(&e.payload);
        }
        c
    }
}

/// The eventq side of the worker: reports wait here for buffers.
struct EventQueue {
    name: &'static str,
    shared: Arc<Shared>,
    counters: Arc<DeviceCounters>,
}

impl EventQueue {
    /// Give the guest every pending report that fits in the available buffers.
    fn deliver(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &VirtioInterrupt,
    ) -> Result<(), QueueFault> {
        if !queue.ready() {
            return Ok(());
        }
        let mut used_any = false;
        loop {
            let Some(report) = self.shared.pending().front().cloned() else {
                break;
            };
            // Take a buffer per event; if the ring runs out, put them all back (unusable ones
            // too, so nothing is used twice) and wait for more.
            let start = queue.next_avail();
            let mut chains = Vec::with_capacity(report.len());
            let mut bad = Vec::new();
            while chains.len() < report.len() {
                let chain = match queue.iter(mem) {
                    Ok(mut it) => it.next(),
                    Err(e) => return Err(QueueFault::Avail(e)),
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                match DescChain::parse(chain, mem) {
                    Ok(c) if c.readable().is_empty() && c.writable_len() >= 8 => chains.push(c),
                    Ok(c) => {
                        tracing::debug!("{}: chain {} unusable for an event", self.name, c.head);
                        bad.push(head);
                    }
                    Err(e) => {
                        tracing::debug!("{}: {e}", self.name);
                        bad.push(head);
                    }
                }
                if bad.len() > usize::from(queue.size()) {
                    // More chains than the ring holds: the driver's rings overlap.
                    return Err(QueueFault::NoProgress);
                }
            }
            if chains.len() < report.len() {
                queue.set_next_avail(start);
                break;
            }
            for head in bad {
                // Unusable (too small, or device-readable): returned empty.
                self.counters.failed();
                queue.add_used(mem, head, 0).map_err(QueueFault::Used)?;
            }
            self.shared.pending().pop_front();
            for (c, ev) in chains.iter().zip(&report) {
                let len = match c.write_at(mem, 0, ev) {
                    Ok(()) => {
                        self.counters.completed(8, 0);
                        8
                    }
                    Err(e) => {
                        tracing::debug!("{}: {e}", self.name);
                        self.counters.failed();
                        0
                    }
                };
                queue.add_used(mem, c.head, len).map_err(QueueFault::Used)?;
            }
            used_any = true;
        }
        if used_any && queue.needs_notification(mem).map_err(QueueFault::Used)? {
            interrupt.signal_used_queue(EVENTQ);
        }
        Ok(())
    }
}

impl VirtioDevice for InputDevice {
    fn device_type(&self) -> u32 {
        TYPE_INPUT
    }

    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes()[..self.config_size], offset, data);
    }

    fn config_size(&self) -> usize {
        self.config_size
    }

    fn pci_class(&self) -> Option<(u8, u8)> {
        // QEMU 7.2's virtio-input-pci: PCI_CLASS_INPUT_KEYBOARD, _MOUSE, _OTHER (the tablet).
        Some(match self.kind {
            InputKind::Keyboard => (0x09, 0x00),
            InputKind::Mouse => (0x09, 0x02),
            InputKind::Tablet => (0x09, 0x80),
        })
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only select (byte 0) and subsel (byte 1) are writable.
        for (i, b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = *b,
                Some(1) => self.subsel = *b,
                _ => {}
            }
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), VirtioError> {
        let ActivateContext {
            mem,
            queues,
            interrupt,
            pause,
            ..
        } = ctx;
        let name = self.kind.name();
        if queues.len() != 2 {
            return Err(VirtioError::QueueCount {
                device: name,
                expected: 2,
                got: queues.len(),
            });
        }
        let io = |what, source| VirtioError::Io {
            device: name,
            what,
            source,
        };
        let wake = self
            .shared
            .wake
            .try_clone()
            .map_err(|e| io("clone the wake eventfd", e))?;
        let status_again = queues[STATUSQ]
            .notify
            .try_clone()
            .map_err(|e| io("clone the statusq eventfd", e))?;
        let mut notify = Vec::with_capacity(3);
        let mut qs = Vec::with_capacity(2);
        for q in queues {
            notify.push(q.notify);
            qs.push(q.queue);
        }
        notify.push(wake);
        let mut events = EventQueue {
            name,
            shared: self.shared.clone(),
            counters: self.counters.clone(),
        };
        let w = worker::spawn(name.into(), notify, Vec::new(), &pause, move |ev| {
            let res = match ev {
                WorkerEvent::Queue(STATUSQ) if qs[STATUSQ].ready() => {
                    // LED events (a keyboard's) and others: taken and ignored; rvmm keeps no
                    // host-side LED state.
                    process_queue(&mut qs[STATUSQ], STATUSQ, &mem, &interrupt, |_| 0)
                        .map(|d| {
                            if d == Drained::Budget {
                                let _ = status_again.write(1);
                            }
                        })
                        .map_err(|e| (STATUSQ, e))
                }
                WorkerEvent::Queue(EVENTQ) | WorkerEvent::Queue(WAKE) => events
                    .deliver(&mut qs[EVENTQ], &mem, &interrupt)
                    .map_err(|e| (EVENTQ, e)),
                _ => Ok(()),
            };
            match res {
                Ok(()) => Flow::Continue,
                Err((q, e)) => {
                    queue_fault(name, q, e, &interrupt);
                    Flow::Stop
                }
            }
        })
        .map_err(|e| io("spawn worker", e))?;
        self.worker = Some(w);
        *self
            .shared
            .buttons
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = 0;
        self.shared.active.store(true, Ordering::Release);
        Ok(())
    }

    fn save_state(&self) -> serde_json::Value {
        let state = InputState {
            select: self.select,
            subsel: self.subsel,
            buttons: *self
                .shared
                .buttons
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            pending: self.shared.pending().iter().cloned().collect(),
        };
        serde_json::to_value(state).unwrap_or_default()
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        let s: InputState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        if s.pending.len() > MAX_PENDING_REPORTS
            || s.pending.iter().any(|r| r.len() > MAX_REPORT_EVENTS)
        {
            return Err(format!(
                "{} queued reports (at most {MAX_PENDING_REPORTS} of {MAX_REPORT_EVENTS} events)",
                s.pending.len()
            ));
        }
        self.select = s.select;
        self.subsel = s.subsel;
        *self
            .shared
            .buttons
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = s.buttons;
        *self.shared.pending() = s.pending.into();
        if !self.shared.pending().is_empty() {
            let _ = self.shared.wake.write(1);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.shared.active.store(false, Ordering::Release);
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        self.shared.pending().clear();
        let _ = self.shared.wake.read();
    }

    fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }
}

impl Drop for InputDevice {
    fn drop(&mut self) {
        self.shared.active.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
