//! Virtio devices on the command line: `-drive`, `-hda`, `-netdev`, `-object rng-*`, and the
//! `-device virtio-{blk,net,rng}-device` front-ends that name them by `id`.

use std::ffi::OsStr;
use std::path::PathBuf;

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};

/// Why a virtio option was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VirtioArgError {
    #[error("{option}: {source}")]
    Opts {
        option: String,
        #[source]
        source: OptsError,
    },
    #[error("-drive: parameter 'file' is missing")]
    DriveFile,
    #[error("-drive {file}: format '{format}' is not supported (supported: raw, qcow2)")]
    DriveFormat { file: String, format: String },
    #[error("-drive {file}: if={interface} is not supported (supported: none, virtio)")]
    DriveInterface { file: String, interface: String },
    #[error("-drive {file}: cache={mode} is not supported (supported: none, writeback, writethrough, directsync, unsafe)")]
    DriveCache { file: String, mode: String },
    #[error("-drive {file}: if=none needs an id=")]
    DriveId { file: String },
    #[error("-netdev {0}: backend is not supported (supported: tap)")]
    NetdevType(String),
    #[error("-netdev tap: needs id=")]
    NetdevId,
    #[error("-netdev tap,id={0}: needs ifname= or fd=")]
    TapTarget(String),
    #[error("-netdev tap,id={id}: {key}={value} is not supported (use {key}=no)")]
    TapScript {
        id: String,
        key: &'static str,
        value: String,
    },
    #[error("-object {0}: object type is not supported (supported: rng-random, rng-builtin)")]
    ObjectType(String),
    #[error("-object {0}: needs id=")]
    ObjectId(String),
    #[error("-object rng-random,id={id}: filename '{filename}' is not supported (rvmm reads the host's getrandom; use /dev/urandom or /dev/random)")]
    RngFile { id: String, filename: String },
    #[error("-device {driver}: {what} '{id}' not found")]
    UnknownId {
        driver: &'static str,
        what: &'static str,
        id: String,
    },
    #[error("-device {driver}: parameter '{param}' is missing")]
    MissingParam {
        driver: &'static str,
        param: &'static str,
    },
    #[error("-device virtio-net-device: invalid mac '{0}' (expected xx:xx:xx:xx:xx:xx)")]
    Mac(String),
    #[error("{what} '{id}' is used by more than one device")]
    Shared { what: &'static str, id: String },
    #[error("duplicate id '{0}'")]
    DuplicateId(String),
}

/// An on-disk image behind a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    pub file: PathBuf,
    /// "raw" or "qcow2"; `None` means probe (QEMU warns).
    pub format: Option<String>,
    pub readonly: bool,
    /// `cache=none` or `directsync`: O_DIRECT.
    pub direct: bool,
    /// `serial=`: what VIRTIO_BLK_T_GET_ID returns.
    pub serial: Option<String>,
    /// `id=`: the drive's name in QMP events (BLOCK_IO_ERROR's `device`).
    pub id: Option<String>,
}

/// The host side of a virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapConfig {
    /// Open (or create) the tap interface by name.
    Name(String),
    /// An already open tap fd inherited from the parent.
    Fd(i32),
}

/// A virtio device over virtio-mmio, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioDeviceConfig {
    Block(DriveConfig),
    Net {
        tap: TapConfig,
        mac: Option<[u8; 6]>,
    },
    Rng,
}

/// Front-end (-device) or back-end, in command-line order, before ids are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Front {
    Block {
        drive: String,
    },
    BlockDirect(DriveConfig),
    Net {
        netdev: String,
        mac: Option<[u8; 6]>,
    },
    Rng,
}

/// Virtio options collected during parsing; [`VirtioArgs::resolve`] links ids.
#[derive(Debug, Default)]
pub(crate) struct VirtioArgs {
    drives: Vec<(String, DriveConfig)>,
    netdevs: Vec<(String, TapConfig)>,
    rngs: Vec<String>,
    fronts: Vec<Front>,
}

fn opts_err(option: &str) -> impl FnOnce(OptsError) -> VirtioArgError + '_ {
    move |source| VirtioArgError::Opts {
        option: option.to_string(),
        source,
    }
}

/// True for `-device` drivers this module handles.
pub(crate) fn is_virtio_driver(driver: &str) -> bool {
    matches!(
        driver,
        "virtio-blk-device" | "virtio-net-device" | "virtio-rng-device"
    )
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl VirtioArgs {
    /// `-drive`, `-hda`, `-netdev`, `-object`.
    /// `-hda FILE`: a disk of the probed format (the path may be any bytes).
    pub(crate) fn hda(&mut self, file: PathBuf) {
        self.fronts.push(Front::BlockDirect(DriveConfig {
            file,
            format: None,
            readonly: false,
            direct: false,
            serial: None,
            id: None,
        }));
    }

    pub(crate) fn option(&mut self, name: &str, arg: &str) -> Result<(), VirtioArgError> {
        match name {
            "drive" => self.drive(OsStr::new(arg)),
            "netdev" => self.netdev(arg),
            "object" => self.object(arg),
            _ => Err(VirtioArgError::ObjectType(name.to_string())),
        }
    }

    /// `-drive`: the `file=` path may be any bytes, the rest is text.
    pub(crate) fn drive(&mut self, arg: &OsStr) -> Result<(), VirtioArgError> {
        let opts = QemuOpts::parse_os(arg, None).map_err(opts_err("-drive"))?;
        opts.check_known(&[
            "file", "format", "if", "id", "readonly", "cache", "media", "serial", "index",
        ])
        .and_then(|()| opts.check_text(&["file"]))
        .map_err(opts_err("-drive"))?;
        let path = opts.get_path("file").ok_or(VirtioArgError::DriveFile)?;
        // For messages (lossy where the path is not text).
        let file = path.display().to_string();
        let format = match opts.get("format") {
            None => None,
            Some(f @ ("raw" | "qcow2")) => Some(f.to_string()),
            Some(other) => {
                return Err(VirtioArgError::DriveFormat {
                    file,
                    format: other.into(),
                })
            }
        };
        let direct = match opts.get("cache").unwrap_or("writeback") {
            "none" | "directsync" => true,
            "writeback" | "writethrough" | "unsafe" => false,
            other => {
                return Err(VirtioArgError::DriveCache {
                    file,
                    mode: other.into(),
                })
            }
        };
        let readonly = opts
            .get_bool("readonly")
            .map_err(opts_err("-drive"))?
            .unwrap_or(false);
        let drive = DriveConfig {
            file: path,
            format,
            readonly,
            direct,
            serial: opts.get("serial").map(str::to_string),
            id: opts.get("id").map(str::to_string),
        };
        // rvmm has no IDE/SCSI: a -drive without if= becomes virtio-blk (see --help).
        match opts.get("if").unwrap_or("virtio") {
            "virtio" => self.fronts.push(Front::BlockDirect(drive)),
            "none" => {
                let id = opts
                    .get("id")
                    .ok_or(VirtioArgError::DriveId { file })?
                    .to_string();
                self.check_new_id(&id)?;
                self.drives.push((id, drive));
            }
            other => {
                return Err(VirtioArgError::DriveInterface {
                    file,
                    interface: other.into(),
                })
            }
        }
        Ok(())
    }

    fn check_new_id(&self, id: &str) -> Result<(), VirtioArgError> {
        let taken = self.drives.iter().any(|(i, _)| i == id)
            || self.netdevs.iter().any(|(i, _)| i == id)
            || self.rngs.iter().any(|i| i == id);
        if taken {
            return Err(VirtioArgError::DuplicateId(id.to_string()));
        }
        Ok(())
    }

    fn netdev(&mut self, arg: &str) -> Result<(), VirtioArgError> {
        let opts = QemuOpts::parse(arg, Some("type")).map_err(opts_err("-netdev"))?;
        let kind = opts.get("type").unwrap_or_default();
        if kind != "tap" {
            return Err(VirtioArgError::NetdevType(kind.to_string()));
        }
        opts.check_known(&[
            "type",
            "id",
            "ifname",
            "fd",
            "script",
            "downscript",
            "vhost",
        ])
        .map_err(opts_err("-netdev tap"))?;
        let id = opts.get("id").ok_or(VirtioArgError::NetdevId)?.to_string();
        for key in ["script", "downscript"] {
            if let Some(v) = opts.get(key) {
                if v != "no" && !v.is_empty() {
                    return Err(VirtioArgError::TapScript {
                        id,
                        key,
                        value: v.into(),
                    });
                }
            }
        }
        let tap = match (
            opts.get("ifname"),
            opts.get_u32("fd").map_err(opts_err("-netdev tap"))?,
        ) {
            (_, Some(fd)) => TapConfig::Fd(fd as i32),
            (Some(name), None) => TapConfig::Name(name.to_string()),
            (None, None) => return Err(VirtioArgError::TapTarget(id)),
        };
        self.check_new_id(&id)?;
        self.netdevs.push((id, tap));
        Ok(())
    }

    fn object(&mut self, arg: &str) -> Result<(), VirtioArgError> {
        let opts = QemuOpts::parse(arg, Some("qom-type")).map_err(opts_err("-object"))?;
        let kind = opts.get("qom-type").unwrap_or_default().to_string();
        if kind != "rng-random" && kind != "rng-builtin" {
            return Err(VirtioArgError::ObjectType(kind));
        }
        opts.check_known(&["qom-type", "id", "filename"])
            .map_err(opts_err("-object"))?;
        let id = opts
            .get("id")
            .ok_or_else(|| VirtioArgError::ObjectId(kind.clone()))?
            .to_string();
        if let Some(f) = opts.get("filename") {
            if f != "/dev/urandom" && f != "/dev/random" {
                return Err(VirtioArgError::RngFile {
                    id,
                    filename: f.into(),
                });
            }
        }
        self.check_new_id(&id)?;
        self.rngs.push(id);
        Ok(())
    }

    /// `-device virtio-*-device,...`.
    pub(crate) fn device(&mut self, opts: &QemuOpts) -> Result<(), VirtioArgError> {
        let driver = opts.get("driver").unwrap_or_default();
        let option = format!("-device {driver}");
        let front = match driver {
            "virtio-blk-device" => {
                opts.check_known(&["driver", "id", "drive"])
                    .map_err(opts_err(&option))?;
                let drive = opts.get("drive").ok_or(VirtioArgError::MissingParam {
                    driver: "virtio-blk-device",
                    param: "drive",
                })?;
                Front::Block {
                    drive: drive.into(),
                }
            }
            "virtio-net-device" => {
                opts.check_known(&["driver", "id", "netdev", "mac"])
                    .map_err(opts_err(&option))?;
                let netdev = opts.get("netdev").ok_or(VirtioArgError::MissingParam {
                    driver: "virtio-net-device",
                    param: "netdev",
                })?;
                let mac = match opts.get("mac") {
                    Some(m) => Some(parse_mac(m).ok_or_else(|| VirtioArgError::Mac(m.into()))?),
                    None => None,
                };
                Front::Net {
                    netdev: netdev.into(),
                    mac,
                }
            }
            _ => {
                opts.check_known(&["driver", "id", "rng"])
                    .map_err(opts_err(&option))?;
                if let Some(rng) = opts.get("rng") {
                    if !self.rngs.iter().any(|r| r == rng) {
                        return Err(VirtioArgError::UnknownId {
                            driver: "virtio-rng-device",
                            what: "rng object",
                            id: rng.into(),
                        });
                    }
                }
                Front::Rng
            }
        };
        self.fronts.push(front);
        Ok(())
    }

    /// Link front-ends to their back-ends by id, in command-line order.
    pub(crate) fn resolve(mut self) -> Result<Vec<VirtioDeviceConfig>, VirtioArgError> {
        let mut out = Vec::with_capacity(self.fronts.len());
        for front in std::mem::take(&mut self.fronts) {
            out.push(match front {
                Front::BlockDirect(d) => VirtioDeviceConfig::Block(d),
                Front::Rng => VirtioDeviceConfig::Rng,
                Front::Block { drive } => {
                    let i = self.drives.iter().position(|(id, _)| *id == drive);
                    match i {
                        Some(i) => VirtioDeviceConfig::Block(self.drives.remove(i).1),
                        None => {
                            return Err(VirtioArgError::UnknownId {
                                driver: "virtio-blk-device",
                                what: "drive",
                                id: drive,
                            })
                        }
                    }
                }
                Front::Net { netdev, mac } => {
                    let i = self.netdevs.iter().position(|(id, _)| *id == netdev);
                    match i {
                        Some(i) => VirtioDeviceConfig::Net {
                            tap: self.netdevs.remove(i).1,
                            mac,
                        },
                        None => {
                            return Err(VirtioArgError::UnknownId {
                                driver: "virtio-net-device",
                                what: "netdev",
                                id: netdev,
                            })
                        }
                    }
                }
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        args: &[(&str, &str)],
        devices: &[&str],
    ) -> Result<Vec<VirtioDeviceConfig>, VirtioArgError> {
        let mut v = VirtioArgs::default();
        for (n, a) in args {
            match *n {
                "hda" => v.hda(PathBuf::from(a)),
                _ => v.option(n, a)?,
            }
        }
        for d in devices {
            v.device(&QemuOpts::parse(d, Some("driver")).unwrap())?;
        }
        v.resolve()
    }

    #[test]
    fn drives() {
        let r = parse(
            &[(
                "drive",
                "file=a.qcow2,format=qcow2,if=none,id=d0,readonly=on,cache=none",
            )],
            &["virtio-blk-device,drive=d0"],
        )
        .unwrap();
        assert_eq!(
            r,
            vec![VirtioDeviceConfig::Block(DriveConfig {
                file: "a.qcow2".into(),
                format: Some("qcow2".into()),
                readonly: true,
                direct: true,
                serial: None,
                id: Some("d0".into()),
            })]
        );
        let r = parse(&[("drive", "file=b.img,if=virtio"), ("hda", "c.img")], &[]).unwrap();
        assert_eq!(r.len(), 2);
        assert!(
            matches!(&r[1], VirtioDeviceConfig::Block(d) if d.file == std::path::Path::new("c.img") && d.format.is_none())
        );
        assert_eq!(
            parse(&[("drive", "file=a,format=vmdk")], &[])
                .unwrap_err()
                .to_string(),
            "-drive a: format 'vmdk' is not supported (supported: raw, qcow2)"
        );
        assert_eq!(
            parse(&[("drive", "file=a,if=ide")], &[])
                .unwrap_err()
                .to_string(),
            "-drive a: if=ide is not supported (supported: none, virtio)"
        );
        assert!(parse(&[("drive", "file=a,if=none")], &[]).is_err());
        assert_eq!(
            parse(&[], &["virtio-blk-device,drive=x"])
                .unwrap_err()
                .to_string(),
            "-device virtio-blk-device: drive 'x' not found"
        );
        assert!(parse(&[], &["virtio-blk-device"]).is_err());
        // One drive cannot back two devices.
        assert!(parse(
            &[("drive", "file=a,if=none,id=d")],
            &["virtio-blk-device,drive=d", "virtio-blk-device,drive=d"]
        )
        .is_err());
    }

    #[test]
    fn netdevs_and_rng() {
        let r = parse(
            &[
                ("netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"),
                ("netdev", "tap,id=n1,fd=5"),
                ("object", "rng-random,id=r0,filename=/dev/urandom"),
            ],
            &[
                "virtio-net-device,netdev=n0,mac=52:54:00:aa:bb:cc",
                "virtio-net-device,netdev=n1",
                "virtio-rng-device,rng=r0",
                "virtio-rng-device",
            ],
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                VirtioDeviceConfig::Net {
                    tap: TapConfig::Name("tap0".into()),
                    mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
                },
                VirtioDeviceConfig::Net {
                    tap: TapConfig::Fd(5),
                    mac: None
                },
                VirtioDeviceConfig::Rng,
                VirtioDeviceConfig::Rng,
            ]
        );
        assert!(parse(&[("netdev", "user,id=n0")], &[]).is_err());
        assert!(parse(
            &[("netdev", "tap,id=n0,ifname=t,script=/etc/qemu-ifup")],
            &[]
        )
        .is_err());
        assert!(parse(&[("netdev", "tap,id=n0")], &[]).is_err());
        assert!(parse(&[("object", "rng-random,id=r,filename=/tmp/x")], &[]).is_err());
        assert!(parse(&[("object", "memory-backend-ram,id=m")], &[]).is_err());
        assert!(parse(&[], &["virtio-rng-device,rng=nope"]).is_err());
        assert!(parse(
            &[("netdev", "tap,id=n0,ifname=t")],
            &["virtio-net-device,netdev=n0,mac=52:54:00:aa:bb"]
        )
        .is_err());
        assert!(parse(
            &[
                ("netdev", "tap,id=x,ifname=t"),
                ("object", "rng-random,id=x")
            ],
            &[]
        )
        .is_err());
    }
}
