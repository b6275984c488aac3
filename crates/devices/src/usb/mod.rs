//! USB host controllers. Only the controller for now: no USB device can be attached yet.

pub mod xhci;
pub mod xhci_regs;

pub use xhci::{Xhci, XhciBar, XHCI_BAR_SIZE};
pub use xhci_regs::XhciRegs;
