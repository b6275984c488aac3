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
}
