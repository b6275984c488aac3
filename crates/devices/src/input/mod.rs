//! Input devices and the interface front ends (VNC, QMP) feed them through.

pub mod keymap;

pub use keymap::keys;

/// Pointer buttons, RFB's PointerEvent mask layout.
pub const BUTTON_LEFT: u8 = 0x01;
pub const BUTTON_MIDDLE: u8 = 0x02;
pub const BUTTON_RIGHT: u8 = 0x04;

/// Where key presses and pointer motion go (the PS/2 keyboard and mouse); implemented by input
/// devices, called from front-end threads.
pub trait InputSink: Send + Sync {
    /// A key (Linux input code, [`keys`]) went down or up.
    fn key(&self, code: u16, down: bool);
    /// Relative pointer motion (x right, y down), wheel clicks (positive = towards the user)
    /// and the buttons now held ([`BUTTON_LEFT`] ...).
    fn pointer_rel(&self, dx: i32, dy: i32, wheel: i32, buttons: u8);
    /// The pointer is at (`x`, `y`), each axis scaled to 0..=[`ABS_MAX`], after `wheel` clicks
    /// (as in `pointer_rel`) with `buttons` held. Only an absolute device takes it; the default drops it.
    fn pointer_abs(&self, _x: u32, _y: u32, _wheel: i32, _buttons: u8) {}
    /// Whether pointer events should be absolute now (a tablet's driver runs): front ends then
    /// call [`InputSink::pointer_abs`] instead of [`InputSink::pointer_rel`].
    fn pointer_is_absolute(&self) -> bool {
        false
    }
    /// Whether an absolute device exists at all (QMP refuses absolute events without one).
    fn has_absolute(&self) -> bool {
        false
    }
}

pub use crate::virtio::input::{scale_axis, ABS_MAX};

/// Routes the front ends' input as QEMU's input core does: each kind of event goes to the
/// virtio-input device taking it whose driver runs it (QEMU moves an activated virtio-input
/// handler to the front of its list; the last one activated wins), else to the PS/2 keyboard or
/// mouse. Keys: a virtio keyboard. Relative motion: a virtio mouse. The pointer's buttons and
/// wheel: a tablet, else a virtio mouse. Absolute positions: a tablet.
pub struct InputRouter {
    ps2: std::sync::Arc<dyn InputSink>,
    devices: Vec<crate::virtio::input::InputHandle>,
}

impl InputRouter {
    pub fn new(
        ps2: std::sync::Arc<dyn InputSink>,
        devices: Vec<crate::virtio::input::InputHandle>,
    ) -> Self {
        Self { ps2, devices }
    }

    fn active(
        &self,
        kind: crate::virtio::input::InputKind,
    ) -> Option<&crate::virtio::input::InputHandle> {
        self.devices
            .iter()
            .rev()
            .find(|d| d.kind() == kind && d.is_active())
    }
}

impl InputSink for InputRouter {
    fn key(&self, code: u16, down: bool) {
        match self.active(crate::virtio::input::InputKind::Keyboard) {
            Some(k) => k.key(code, down),
            None => self.ps2.key(code, down),
        }
    }

    fn pointer_rel(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        match self.active(crate::virtio::input::InputKind::Mouse) {
            Some(m) => m.pointer_rel(dx, dy, wheel, buttons),
            None => self.ps2.pointer_rel(dx, dy, wheel, buttons),
        }
    }

    fn pointer_abs(&self, x: u32, y: u32, wheel: i32, buttons: u8) {
        if let Some(t) = self.active(crate::virtio::input::InputKind::Tablet) {
            t.pointer_abs(x, y, wheel, buttons);
        }
    }

    fn pointer_is_absolute(&self) -> bool {
        self.active(crate::virtio::input::InputKind::Tablet)
            .is_some()
    }

    fn has_absolute(&self) -> bool {
        self.devices
            .iter()
            .any(|d| d.kind() == crate::virtio::input::InputKind::Tablet)
    }
}
