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

/// Routes the front ends' input as QEMU's input core does: keys and relative motion to the PS/2
/// keyboard and mouse; the pointer to a virtio tablet while its driver runs it (QEMU moves an
/// activated virtio-input handler to the front of its list), else to the PS/2 mouse.
pub struct InputRouter {
    ps2: std::sync::Arc<dyn InputSink>,
    tablets: Vec<crate::virtio::input::TabletHandle>,
}

impl InputRouter {
    pub fn new(
        ps2: std::sync::Arc<dyn InputSink>,
        tablets: Vec<crate::virtio::input::TabletHandle>,
    ) -> Self {
        Self { ps2, tablets }
    }

    fn active_tablet(&self) -> Option<&crate::virtio::input::TabletHandle> {
        // The last one activated wins in QEMU; with one tablet (the usual case) it is that one.
        self.tablets.iter().rev().find(|t| t.is_active())
    }
}

impl InputSink for InputRouter {
    fn key(&self, code: u16, down: bool) {
        self.ps2.key(code, down);
    }

    fn pointer_rel(&self, dx: i32, dy: i32, wheel: i32, buttons: u8) {
        self.ps2.pointer_rel(dx, dy, wheel, buttons);
    }

    fn pointer_abs(&self, x: u32, y: u32, wheel: i32, buttons: u8) {
        if let Some(t) = self.active_tablet() {
            t.pointer_abs(x, y, wheel, buttons);
        }
    }

    fn pointer_is_absolute(&self) -> bool {
        self.active_tablet().is_some()
    }

    fn has_absolute(&self) -> bool {
        !self.tablets.is_empty()
    }
}
