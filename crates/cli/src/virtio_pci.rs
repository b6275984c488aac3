//! The virtio-pci side of `-device virtio-{blk,net,rng}-pci` and `-drive if=virtio`: where the
//! function sits (`addr=`), `bootindex=`, and which interfaces it has (`disable-legacy=`,
//! `disable-modern=`). The device back-ends are resolved as for virtio-mmio (`virtio.rs`).

use crate::opts::QemuOpts;
use crate::virtio::{opts_err, VirtioArgError, VirtioDeviceConfig};

/// Where a virtio-pci device sits and how firmware boots from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtioPciOptions {
    /// `bus=`: a root port's id; None: the root bus.
    pub bus: Option<String>,
    /// `addr=`: slot and function; None: the first free slot.
    pub addr: Option<(u8, u8)>,
    /// `bootindex=` (virtio-blk-pci, virtio-net-pci).
    pub bootindex: Option<u32>,
    /// `disable-legacy=`: None for `auto` (QEMU on pc/q35's root bus: a transitional device).
    pub disable_legacy: Option<bool>,
    /// `id=`: the device's name under `/machine/peripheral` (and what QMP `device_del` takes).
    pub id: Option<String>,
}

/// A virtio device over virtio-pci (pc and q35), in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioPciDeviceConfig {
    pub device: VirtioDeviceConfig,
    pub pci: VirtioPciOptions,
}

/// The transport a front-end asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `virtio-*-device`: virtio-mmio.
    Mmio,
    /// `virtio-*-pci`.
    Pci(VirtioPciOptions),
    /// `-drive if=virtio`: virtio-blk-pci on pc and q35, virtio-mmio on microvm (as QEMU).
    MachineDefault,
}

/// The PCI options of `-device virtio-*-pci` (`addr=`, `bootindex=`, the interface choice).
pub(crate) fn pci_options(
    driver: &str,
    opts: &QemuOpts,
) -> Result<VirtioPciOptions, VirtioArgError> {
    let option = format!("-device {driver}");
    let addr = opts
        .get("addr")
        .map(|a| {
            crate::parse_pci_addr(a).ok_or_else(|| VirtioArgError::PciAddr {
                driver: driver.into(),
                value: a.into(),
            })
        })
        .transpose()?;
    let bootindex = opts.get_u32("bootindex").map_err(opts_err(&option))?;
    let refuse = |key, value: &str, why| VirtioArgError::VirtioPciInterface {
        driver: driver.into(),
        key,
        value: value.into(),
        why,
    };
    let disable_legacy = match opts.get("disable-legacy") {
        None | Some("auto") => None,
        Some("on" | "true") => Some(true),
        Some("off" | "false") => Some(false),
        Some(v) => return Err(refuse("disable-legacy", v, "expected on, off or auto")),
    };
    match opts.get("disable-modern") {
        None | Some("off" | "false") => {}
        Some(v) => {
            return Err(refuse(
                "disable-modern",
                v,
                "rvmm's virtio-pci devices always have the modern interface",
            ))
        }
    }
    Ok(VirtioPciOptions {
        bus: opts.get("bus").map(str::to_string),
        addr,
        bootindex,
        disable_legacy,
        id: opts.get("id").map(str::to_string),
    })
}
