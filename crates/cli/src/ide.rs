//! IDE drives as QEMU places them (blockdev.c `drive_new`, hw/ide/qdev.c): `-hda`..`-hdd`,
//! `-cdrom`, `-drive if=ide|<default>,index=,media=`, and `-device ide-hd|ide-cd,drive=,bus=,
//! unit=,bootindex=`. On pc the IDE buses are PIIX's two channels of two units each; on q35
//! each AHCI port is a bus of one unit (QEMU's `units_per_default_bus = 1`), so `index=N` is
//! port N there and `-cdrom` (index 2) lands on port 2, as in QEMU.

use crate::virtio::DriveConfig;
use crate::MachineKind;
use thiserror::Error;

/// One IDE/AHCI drive after placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdeDriveConfig {
    /// pc: channel (0 primary, 1 secondary); q35: AHCI port.
    pub bus: u32,
    /// pc: 0 master, 1 slave; q35: always 0.
    pub unit: u32,
    /// The image; None for a CD-ROM drive without a medium.
    pub drive: Option<DriveConfig>,
    pub cdrom: bool,
    /// `bootindex=` of `-device ide-hd|ide-cd`.
    pub bootindex: Option<u32>,
}

/// Where a drive asked to go, before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdeFront {
    /// `-hda`, `-cdrom`, `-drive if=ide` or `-drive` without `if=` on pc/q35.
    Drive {
        index: Option<u32>,
        drive: Option<DriveConfig>,
        cdrom: bool,
    },
    /// `-device ide-hd|ide-cd,drive=ID`.
    Device {
        drive: String,
        cdrom: bool,
        bus: Option<u32>,
        unit: Option<u32>,
        bootindex: Option<u32>,
        /// `share-rw=on`: the image's write lock is shared (see [`DriveConfig::share_rw`]).
        share_rw: bool,
    },
}

/// Errors placing IDE drives.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdeError {
    #[error("{what}: machine type '{machine}' has no IDE controller (use if=virtio)")]
    NoIde { what: String, machine: &'static str },
    #[error("{what}: index={index} is too big: machine type '{machine}' has {max} IDE units (index 0-{last})", last = max - 1)]
    IndexTooBig {
        what: String,
        index: u32,
        machine: &'static str,
        max: u32,
    },
    // QEMU's wording (blockdev.c drive_new).
    #[error("drive with bus={bus}, unit={unit} (index={index}) exists")]
    Taken { bus: u32, unit: u32, index: u32 },
    #[error("{what}: no free IDE unit left on machine type '{machine}'")]
    Full { what: String, machine: &'static str },
    #[error("-device {driver}: bus 'ide.{bus}' not found (this machine has ide.0-ide.{last})", last = buses - 1)]
    NoBus {
        driver: &'static str,
        bus: u32,
        buses: u32,
    },
    #[error("-device {driver}: unit={unit} is not available on bus ide.{bus} (units 0-{last})", last = units - 1)]
    NoUnit {
        driver: &'static str,
        bus: u32,
        unit: u32,
        units: u32,
    },
    #[error("-device {driver}: drive '{drive}' not found")]
    UnknownDrive { driver: &'static str, drive: String },
    #[error("-device {driver}: drive '{drive}' has no medium; only ide-cd may be empty")]
    EmptyDisk { driver: &'static str, drive: String },
}

/// The IDE geometry of a machine: (buses, units per bus).
pub fn ide_layout(machine: MachineKind) -> Option<(u32, u32)> {
    match machine {
        MachineKind::Pc => Some((2, 2)),
        // ICH9's AHCI: six ports.
        MachineKind::Q35 => Some((6, 1)),
        MachineKind::Microvm => None,
    }
}

fn driver_name(cdrom: bool) -> &'static str {
    if cdrom {
        "ide-cd"
    } else {
        "ide-hd"
    }
}

fn describe(drive: &Option<DriveConfig>, index: Option<u32>) -> String {
    match (drive, index) {
        (Some(d), _) => format!("-drive {}", d.file.display()),
        (None, Some(i)) => format!("-drive index={i}"),
        (None, None) => "-drive".to_string(),
    }
}

/// Places every IDE front-end on `machine`, taking `-device`s' drives from `drives` (the
/// `if=none` drives, by id).
pub(crate) fn place(
    machine: MachineKind,
    fronts: Vec<IdeFront>,
    drives: &mut Vec<(String, DriveConfig)>,
) -> Result<Vec<IdeDriveConfig>, IdeError> {
    if fronts.is_empty() {
        return Ok(Vec::new());
    }
    let name = machine.name();
    let Some((buses, units)) = ide_layout(machine) else {
        let what = match &fronts[0] {
            IdeFront::Drive { drive, index, .. } => describe(drive, *index),
            IdeFront::Device { cdrom, .. } => format!("-device {}", driver_name(*cdrom)),
        };
        return Err(IdeError::NoIde {
            what,
            machine: name,
        });
    };
    let max = buses * units;
    let mut placed: Vec<IdeDriveConfig> = Vec::new();
    let taken = |placed: &[IdeDriveConfig], bus, unit| {
        placed.iter().any(|d| d.bus == bus && d.unit == unit)
    };
    let first_free = |placed: &[IdeDriveConfig], only_bus: Option<u32>| {
        (0..max)
            .map(|i| (i / units, i % units))
            .filter(|(b, _)| only_bus.is_none_or(|o| o == *b))
            .find(|(b, u)| !taken(placed, *b, *u))
    };
    // Drives first, in command-line order, then the devices that name if=none drives.
    let (direct, devices): (Vec<_>, Vec<_>) = fronts
        .into_iter()
        .partition(|f| matches!(f, IdeFront::Drive { .. }));
    for front in direct {
        let IdeFront::Drive {
            index,
            drive,
            cdrom,
        } = front
        else {
            continue;
        };
        let what = describe(&drive, index);
        let (bus, unit) = match index {
            Some(index) if index >= max => {
                return Err(IdeError::IndexTooBig {
                    what,
                    index,
                    machine: name,
                    max,
                })
            }
            Some(index) => {
                let (bus, unit) = (index / units, index % units);
                if taken(&placed, bus, unit) {
                    return Err(IdeError::Taken { bus, unit, index });
                }
                (bus, unit)
            }
            None => first_free(&placed, None).ok_or(IdeError::Full {
                what,
                machine: name,
            })?,
        };
        placed.push(IdeDriveConfig {
            bus,
            unit,
            drive,
            cdrom,
            bootindex: None,
        });
    }
    for front in devices {
        let IdeFront::Device {
            drive: id,
            cdrom,
            bus,
            unit,
            bootindex,
            share_rw,
        } = front
        else {
            continue;
        };
        let driver = driver_name(cdrom);
        let i =
            drives
                .iter()
                .position(|(d, _)| *d == id)
                .ok_or_else(|| IdeError::UnknownDrive {
                    driver,
                    drive: id.clone(),
                })?;
        if let Some(b) = bus.filter(|b| *b >= buses) {
            return Err(IdeError::NoBus {
                driver,
                bus: b,
                buses,
            });
        }
        let (bus, unit) = match (bus, unit) {
            (Some(bus), Some(unit)) => {
                if unit >= units {
                    return Err(IdeError::NoUnit {
                        driver,
                        bus,
                        unit,
                        units,
                    });
                }
                if taken(&placed, bus, unit) {
                    return Err(IdeError::Taken {
                        bus,
                        unit,
                        index: bus * units + unit,
                    });
                }
                (bus, unit)
            }
            (bus, _) => first_free(&placed, bus).ok_or_else(|| IdeError::Full {
                what: format!("-device {driver}"),
                machine: name,
            })?,
        };
        let drive = DriveConfig {
            share_rw,
            ..drives.remove(i).1
        };
        placed.push(IdeDriveConfig {
            bus,
            unit,
            drive: Some(drive),
            cdrom,
            bootindex,
        });
    }
    placed.sort_by_key(|d| (d.bus, d.unit));
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn disk(name: &str) -> DriveConfig {
        DriveConfig {
            file: PathBuf::from(name),
            format: None,
            readonly: false,
            direct: false,
            locking: true,
            snapshot: false,
            share_rw: false,
            serial: None,
            id: None,
            node_name: None,
            file_node_name: None,
        }
    }

    fn drive(index: Option<u32>, name: &str, cdrom: bool) -> IdeFront {
        IdeFront::Drive {
            index,
            drive: Some(disk(name)),
            cdrom,
        }
    }

    #[test]
    fn hda_and_cdrom_go_where_qemu_puts_them() {
        let fronts = || {
            vec![
                drive(Some(0), "a.qcow2", false),
                drive(Some(2), "b.iso", true),
            ]
        };
        let pc = place(MachineKind::Pc, fronts(), &mut Vec::new()).unwrap();
        assert_eq!((pc[0].bus, pc[0].unit), (0, 0));
        assert_eq!((pc[1].bus, pc[1].unit, pc[1].cdrom), (1, 0, true));
        let q35 = place(MachineKind::Q35, fronts(), &mut Vec::new()).unwrap();
        assert_eq!((q35[0].bus, q35[1].bus), (0, 2));
    }

    #[test]
    fn drives_without_index_take_the_first_free_unit() {
        let f = vec![drive(Some(0), "a", false), drive(None, "b", false)];
        let pc = place(MachineKind::Pc, f, &mut Vec::new()).unwrap();
        assert_eq!((pc[1].bus, pc[1].unit), (0, 1));
    }

    #[test]
    fn errors_name_the_drive() {
        let e = place(
            MachineKind::Pc,
            vec![drive(Some(0), "a", false), drive(Some(0), "b", false)],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "drive with bus=0, unit=0 (index=0) exists");
        let e = place(
            MachineKind::Pc,
            vec![drive(Some(4), "a", false)],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("-drive a: index=4 is too big"),
            "{e}"
        );
        let e = place(
            MachineKind::Microvm,
            vec![drive(Some(2), "x.iso", true)],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("has no IDE controller"), "{e}");
    }

    #[test]
    fn devices_take_if_none_drives() {
        let mut drives = vec![
            ("d".to_string(), disk("d.img")),
            ("c".to_string(), disk("c.iso")),
        ];
        let f = vec![
            IdeFront::Device {
                drive: "c".into(),
                cdrom: true,
                bus: Some(3),
                unit: None,
                bootindex: Some(1),
                share_rw: false,
            },
            IdeFront::Device {
                drive: "d".into(),
                cdrom: false,
                bus: None,
                unit: None,
                bootindex: Some(2),
                share_rw: false,
            },
        ];
        let q35 = place(MachineKind::Q35, f.clone(), &mut drives.clone()).unwrap();
        assert_eq!((q35[0].bus, q35[0].bootindex), (0, Some(2)));
        assert_eq!((q35[1].bus, q35[1].cdrom), (3, true));
        let e = place(MachineKind::Pc, f, &mut drives).unwrap_err();
        assert!(e.to_string().contains("bus 'ide.3' not found"), "{e}");
    }
}
