//! Firmware options: `-bios FILE`, `-L DIR` and `-boot` (QEMU softmmu/vl.c `qemu_boot_opts`,
//! `validate_bootdevices`; hw/i386/pc.c `set_boot_dev` for what a PC accepts).

use std::path::PathBuf;

use crate::opts::{OptsError, QemuOpts};

/// QEMU's default boot order on a PC (hw/i386/pc.c `pc_machine_class_init`: "cad").
pub const DEFAULT_BOOT_ORDER: &str = "cad";

/// How the firmware looks for boot devices (`-boot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Drive letters: `a`/`b` floppy, `c` first hard disk, `d` CD-ROM, `n`-`p` network.
    pub order: String,
    /// `once=`: the order for the first boot only; the next reset goes back to `order`.
    pub once: Option<String>,
    /// `menu=on`: the firmware offers its boot menu (fw_cfg BOOT_MENU).
    pub menu: bool,
    /// `splash-time=` in milliseconds: how long the menu prompt waits (`etc/boot-menu-wait`).
    pub splash_time: Option<u16>,
    /// `reboot-timeout=` in milliseconds after a failed boot; None: never retry
    /// (QEMU's default, `etc/boot-fail-wait` = -1).
    pub reboot_timeout: Option<u32>,
    /// `strict=on`: boot only from the devices `bootindex=` names (`etc/boot-fail-wait`'s
    /// companion `HALT` entry in `bootorder`).
    pub strict: bool,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            order: DEFAULT_BOOT_ORDER.to_string(),
            once: None,
            menu: false,
            splash_time: None,
            reboot_timeout: None,
            strict: false,
        }
    }
}

impl BootConfig {
    /// The order the firmware uses on the first boot.
    pub fn first_order(&self) -> &str {
        self.once.as_deref().unwrap_or(&self.order)
    }
}

/// Where the firmware comes from: `-bios` and `-L`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// `-bios FILE`: a path, or a name looked up in the data directories.
    pub bios: Option<PathBuf>,
    /// `-L DIR`, in command-line order, searched before the built-in directories.
    pub data_dirs: Vec<PathBuf>,
    pub boot: BootConfig,
}

/// Errors in `-boot`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    #[error("{0}")]
    Opts(#[from] OptsError),
    // QEMU's wording (softmmu/bootdevice.c validate_bootdevices, hw/i386/pc.c set_boot_dev).
    #[error("Invalid boot device '{0}'")]
    InvalidDevice(char),
    #[error("Boot device '{0}' was given twice")]
    Twice(char),
    #[error("Invalid boot device for PC: '{0}'")]
    NotPc(char),
    #[error("Too many boot devices for PC")]
    TooMany,
    #[error("splash-time is invalid, it should be a value between 0 and 65535")]
    SplashTime,
    #[error("reboot timeout is invalid, it should be a value between -1 and 65535")]
    RebootTimeout,
}

/// The CMOS nibble of a PC boot device (hw/i386/pc.c `boot_device2nibble`).
pub fn boot_nibble(device: char) -> Option<u8> {
    match device {
        'a' | 'b' => Some(1),
        'c' => Some(2),
        'd' => Some(3),
        'n' => Some(4),
        _ => None,
    }
}

/// Checks a drive-letter list as QEMU does for every machine, then what a PC can boot.
fn validate_order(order: &str) -> Result<(), BootError> {
    let mut seen = 0u32;
    for c in order.chars() {
        if !c.is_ascii_lowercase() || c > 'p' {
            return Err(BootError::InvalidDevice(c));
        }
        let bit = 1 << (c as u32 - 'a' as u32);
        if seen & bit != 0 {
            return Err(BootError::Twice(c));
        }
        seen |= bit;
    }
    for c in order.chars() {
        if boot_nibble(c).is_none() {
            return Err(BootError::NotPc(c));
        }
    }
    // The CMOS has room for three devices.
    if order.len() > 3 {
        return Err(BootError::TooMany);
    }
    Ok(())
}

/// `-boot [order=]drives][,once=drives][,menu=on|off][,splash=file][,splash-time=ms]
/// [,reboot-timeout=ms][,strict=on|off]`. Options given twice merge, later values win.
pub fn parse_boot(boot: &mut BootConfig, arg: &str) -> Result<(), BootError> {
    let opts = QemuOpts::parse(arg, Some("order"))?;
    opts.check_unsupported(&["splash"])?;
    opts.check_known(&[
        "order",
        "once",
        "menu",
        "splash-time",
        "reboot-timeout",
        "strict",
    ])?;
    if let Some(order) = opts.get("order") {
        validate_order(order)?;
        boot.order = order.to_string();
    }
    if let Some(once) = opts.get("once") {
        validate_order(once)?;
        boot.once = Some(once.to_string());
    }
    if let Some(menu) = opts.get_bool("menu")? {
        boot.menu = menu;
    }
    if let Some(t) = opts.get("splash-time") {
        let ms: i64 = t.parse().map_err(|_| BootError::SplashTime)?;
        boot.splash_time = Some(u16::try_from(ms).map_err(|_| BootError::SplashTime)?);
    }
    if let Some(t) = opts.get("reboot-timeout") {
        let ms: i64 = t.parse().map_err(|_| BootError::RebootTimeout)?;
        boot.reboot_timeout = match ms {
            -1 => None,
            0..=0xffff => Some(ms as u32),
            _ => return Err(BootError::RebootTimeout),
        };
    }
    if let Some(strict) = opts.get_bool("strict")? {
        boot.strict = strict;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arg: &str) -> Result<BootConfig, BootError> {
        let mut b = BootConfig::default();
        parse_boot(&mut b, arg).map(|()| b)
    }

    #[test]
    fn orders_as_qemu_accepts_them() {
        assert_eq!(parse("d").unwrap().order, "d");
        assert_eq!(parse("order=dc").unwrap().order, "dc");
        let b = parse("order=c,once=d,menu=on,splash-time=5000").unwrap();
        assert_eq!((b.first_order(), b.order.as_str()), ("d", "c"));
        assert!(b.menu);
        assert_eq!(b.splash_time, Some(5000));
        assert_eq!(parse("reboot-timeout=-1").unwrap().reboot_timeout, None);
        assert_eq!(
            parse("reboot-timeout=100").unwrap().reboot_timeout,
            Some(100)
        );
        assert_eq!(BootConfig::default().order, "cad");
    }

    #[test]
    fn bad_orders_name_the_device() {
        assert_eq!(parse("x"), Err(BootError::InvalidDevice('x')));
        assert_eq!(parse("cc"), Err(BootError::Twice('c')));
        assert_eq!(parse("e"), Err(BootError::NotPc('e')));
        assert_eq!(parse("acdn"), Err(BootError::TooMany));
        assert_eq!(parse("splash-time=70000"), Err(BootError::SplashTime));
        assert_eq!(parse("reboot-timeout=-2"), Err(BootError::RebootTimeout));
        assert!(matches!(parse("foo=1"), Err(BootError::Opts(_))));
        assert!(matches!(parse("menu=maybe"), Err(BootError::Opts(_))));
    }

    #[test]
    fn nibbles_follow_qemus_table() {
        let n: Vec<_> = "abcdn".chars().map(boot_nibble).collect();
        assert_eq!(n, [Some(1), Some(1), Some(2), Some(3), Some(4)]);
    }
}
