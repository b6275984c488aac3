//! Virtio devices on the command line: `-drive`, `-hda`, `-netdev`, `-object rng-*`, and the
//! `-device virtio-{blk,net,rng}-device` front-ends that name them by `id`.

use std::ffi::OsStr;
use std::path::PathBuf;

use thiserror::Error;

use crate::netdev::{NetBackendConfig, NetdevError};
use crate::opts::{OptsError, QemuOpts};
use crate::virtio_pci::{pci_options, Transport};
pub use crate::virtio_pci::{VirtioPciDeviceConfig, VirtioPciOptions};

/// Why a virtio option was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VirtioArgError {
    #[error("{option}: {source}")]
    Opts {
        option: String,
        #[source]
        source: OptsError,
    },
    #[error("-device {0}: Only one balloon device is supported")]
    SecondBalloon(String),
    #[error("-drive: parameter 'file' is missing")]
    DriveFile,
    #[error("-drive {file}: format '{format}' is not supported (supported: raw, qcow2)")]
    DriveFormat { file: String, format: String },
    #[error("-drive {file}: if={interface} is not supported (supported: none, ide, virtio)")]
    DriveInterface { file: String, interface: String },
    #[error("-drive {file}: media={media} is not supported (supported: disk, cdrom)")]
    DriveMedia { file: String, media: String },
    #[error("-drive: index={0} is not a number")]
    DriveIndex(String),
    #[error("-device {driver}: bus '{bus}' is not an IDE bus (ide.N)")]
    IdeBusName { driver: &'static str, bus: String },
    #[error(transparent)]
    Ide(#[from] crate::ide::IdeError),
    #[error("-drive {file}: cache={mode} is not supported (supported: none, writeback, writethrough, directsync, unsafe)")]
    DriveCache { file: String, mode: String },
    #[error("-drive {file}: {key}={value} is not supported (supported: on, off, auto)")]
    DriveLocking {
        file: String,
        key: &'static str,
        value: String,
    },
    #[error("-drive {file}: if=none needs an id=")]
    DriveId { file: String },
    #[error(transparent)]
    Netdev(#[from] crate::netdev::NetdevError),
    #[error("-object {0}: object type is not supported (supported: rng-random, rng-builtin, secret, memory-backend-ram, memory-backend-memfd)")]
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
    #[error("-device {driver}: No 'PCI' bus found for device '{driver}'")]
    NoPciBus { driver: String },
    #[error("-device {driver}: Property 'addr' doesn't take value '{value}' (expected SLOT[.FUNCTION], hex, slot < 0x20, function < 8)")]
    PciAddr { driver: String, value: String },
    #[error("-device {driver}: {key}={value} is not supported ({why})")]
    VirtioPciInterface {
        driver: String,
        key: &'static str,
        value: String,
        why: &'static str,
    },
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
    /// `file.locking=` (or `locking=`) on or auto, the default: QEMU's image locks.
    pub locking: bool,
    /// `snapshot=on`, or `-snapshot` without `snapshot=off`: writes go to a temporary overlay.
    pub snapshot: bool,
    /// The device's `share-rw=on` (virtio-blk-pci, virtio-blk-device, ide-hd): other writers
    /// may share the image (QEMU: only a raw image's file is shared; a format with metadata
    /// never lets another writer in).
    pub share_rw: bool,
    /// `serial=`: what VIRTIO_BLK_T_GET_ID returns.
    pub serial: Option<String>,
    /// `id=`: the drive's name in QMP events (BLOCK_IO_ERROR's `device`).
    pub id: Option<String>,
    /// `-blockdev node-name=`: the node a device took with `drive=` (QMP `query-block`).
    pub node_name: Option<String>,
    /// The `-blockdev` protocol node under it (`driver=file`).
    pub file_node_name: Option<String>,
}

/// A virtio device over virtio-mmio, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioDeviceConfig {
    Block(DriveConfig),
    Net {
        backend: NetBackendConfig,
        mac: Option<[u8; 6]>,
    },
    Rng,
    /// `virtio-tablet`, `virtio-keyboard`, `virtio-mouse` (virtio-input); `serial=` is its
    /// ID_SERIAL.
    Input {
        kind: InputKind,
        serial: Option<String>,
    },
    /// `virtio-balloon`: memory the host takes back from the guest (QMP `balloon`).
    Balloon(BalloonConfig),
}

/// `-device virtio-balloon-pci|virtio-balloon-device[,id=][,deflate-on-oom=][,free-page-reporting=]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalloonConfig {
    /// `id=`: its QOM path is /machine/peripheral/ID (QMP `qom-get`).
    pub id: Option<String>,
    pub deflate_on_oom: bool,
    pub free_page_reporting: bool,
    /// `page-poison=`, on by default as in QEMU 7.2.
    pub page_poison: bool,
}

/// Which virtio-input HID device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Tablet,
    Keyboard,
    Mouse,
}

/// Front-end (-device) or back-end, in command-line order, before ids are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Front {
    Block {
        drive: String,
        share_rw: bool,
    },
    BlockDirect(DriveConfig),
    Net {
        netdev: String,
        mac: Option<[u8; 6]>,
    },
    /// `-net nic`: on the hub's back-end unless it names a `netdev=`.
    HubNic {
        netdev: Option<String>,
        mac: Option<[u8; 6]>,
    },
    Rng,
    Input {
        kind: InputKind,
        serial: Option<String>,
    },
    Balloon(BalloonConfig),
}

/// Block, network and entropy options collected during parsing; [`VirtioArgs::resolve`] links
/// ids and places drives once the machine type is known.
#[derive(Debug, Default)]
pub(crate) struct VirtioArgs {
    drives: Vec<(String, DriveConfig)>,
    netdevs: Vec<(String, NetBackendConfig)>,
    /// `-net` back-ends, paired with `-net nic` ([`Front::HubNic`]) at resolve time.
    net_backends: Vec<(String, NetBackendConfig)>,
    /// Any -net, -netdev or -nic: no default NIC (QEMU's `default_net = 0`).
    net_given: bool,
    /// `-nic` shorthands so far, for their generated back-end ids.
    nic_count: usize,
    rngs: Vec<String>,
    fronts: Vec<(Front, Transport)>,
    /// Drives for the machine's default interface (`-hda`, `-cdrom`, `-drive` without `if=`),
    /// at their command-line position among `fronts` (IDE on pc/q35, virtio-blk on microvm).
    defaults: Vec<(usize, crate::ide::IdeFront)>,
    /// `if=ide` drives and `-device ide-hd|ide-cd`.
    ide: Vec<crate::ide::IdeFront>,
    /// `-snapshot` anywhere on the command line: `snapshot=on` for drives that do not say.
    pub(crate) snapshot: bool,
}

/// What the block, network and entropy options resolve to.
#[derive(Debug, Default)]
pub(crate) struct ResolvedDevices {
    pub virtio: Vec<VirtioDeviceConfig>,
    pub virtio_pci: Vec<VirtioPciDeviceConfig>,
    pub ide: Vec<crate::ide::IdeDriveConfig>,
}

pub(crate) fn opts_err(option: &str) -> impl FnOnce(OptsError) -> VirtioArgError + '_ {
    move |source| VirtioArgError::Opts {
        option: option.to_string(),
        source,
    }
}

/// True for `-device` drivers this module handles.
pub(crate) fn is_virtio_driver(driver: &str) -> bool {
    matches!(
        driver,
        "virtio-blk-device"
            | "virtio-net-device"
            | "virtio-rng-device"
            | "virtio-blk-pci"
            | "virtio-net-pci"
            | "virtio-rng-pci"
            | "virtio-tablet-device"
            | "virtio-tablet-pci"
            | "virtio-keyboard-device"
            | "virtio-keyboard-pci"
            | "virtio-mouse-device"
            | "virtio-mouse-pci"
            | "virtio-balloon-device"
            | "virtio-balloon-pci"
            | "ide-hd"
            | "ide-cd"
    )
}

pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
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
    /// `-hda`..`-hdd` (index 0-3) and `-cdrom` (index 2, a CD): a drive of the probed format
    /// on the machine's default interface (the path may be any bytes).
    /// A `-blockdev` node devices may name with `drive=`.
    pub(crate) fn add_node_drive(
        &mut self,
        name: String,
        drive: DriveConfig,
    ) -> Result<(), VirtioArgError> {
        self.check_new_id(&name)?;
        self.drives.push((name, drive));
        Ok(())
    }

    pub(crate) fn hdx(&mut self, index: u32, file: PathBuf, cdrom: bool) {
        let drive = DriveConfig {
            file,
            format: None,
            readonly: cdrom,
            direct: false,
            locking: true,
            snapshot: self.snapshot,
            share_rw: false,
            serial: None,
            id: None,
            node_name: None,
            file_node_name: None,
        };
        self.push_default(crate::ide::IdeFront::Drive {
            index: Some(index),
            drive: Some(drive),
            cdrom,
        });
    }

    fn push_default(&mut self, front: crate::ide::IdeFront) {
        self.defaults.push((self.fronts.len(), front));
    }

    pub(crate) fn option(&mut self, name: &str, arg: &str) -> Result<(), VirtioArgError> {
        match name {
            "drive" => self.drive(OsStr::new(arg)),
            "netdev" => self.netdev(arg),
            "nic" => self.nic(arg),
            "net" => self.net(arg),
            "object" => self.object(arg),
            _ => Err(VirtioArgError::ObjectType(name.to_string())),
        }
    }

    /// `-drive`: the `file=` path may be any bytes, the rest is text.
    pub(crate) fn drive(&mut self, arg: &OsStr) -> Result<(), VirtioArgError> {
        let opts = QemuOpts::parse_os(arg, None).map_err(opts_err("-drive"))?;
        opts.check_known(&[
            "file",
            "format",
            "if",
            "id",
            "readonly",
            "cache",
            "media",
            "serial",
            "index",
            "snapshot",
            "locking",
            "file.locking",
        ])
        .and_then(|()| opts.check_text(&["file"]))
        .map_err(opts_err("-drive"))?;
        let cdrom = match opts.get("media").unwrap_or("disk") {
            "disk" => false,
            "cdrom" => true,
            other => {
                return Err(VirtioArgError::DriveMedia {
                    file: opts
                        .get_path("file")
                        .unwrap_or_default()
                        .display()
                        .to_string(),
                    media: other.into(),
                })
            }
        };
        let index = opts
            .get("index")
            .map(|i| {
                i.parse::<u32>()
                    .map_err(|_| VirtioArgError::DriveIndex(i.into()))
            })
            .transpose()?;
        // QEMU: a CD-ROM drive may be empty (no file=).
        let path = match opts.get_path("file").filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => p,
            None if cdrom => {
                let front = crate::ide::IdeFront::Drive {
                    index,
                    drive: None,
                    cdrom,
                };
                match opts.get("if") {
                    None => self.push_default(front),
                    Some("ide") => self.ide.push(front),
                    Some(other) => {
                        return Err(VirtioArgError::DriveInterface {
                            file: String::new(),
                            interface: other.into(),
                        })
                    }
                }
                return Ok(());
            }
            None => return Err(VirtioArgError::DriveFile),
        };
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
        // A CD-ROM is read-only whatever readonly= says (QEMU's media=cdrom).
        let readonly = cdrom
            || opts
                .get_bool("readonly")
                .map_err(opts_err("-drive"))?
                .unwrap_or(false);
        let locking = match (opts.get("file.locking"), opts.get("locking")) {
            (Some(v), _) => ("file.locking", v),
            (None, Some(v)) => ("locking", v),
            (None, None) => ("file.locking", "auto"),
        };
        // QEMU's auto is on wherever the host has OFD locks, which Linux has.
        let locking = match locking {
            (_, "on" | "auto") => true,
            (_, "off") => false,
            (key, value) => {
                return Err(VirtioArgError::DriveLocking {
                    file,
                    key,
                    value: value.into(),
                })
            }
        };
        let snapshot = opts
            .get_bool("snapshot")
            .map_err(opts_err("-drive"))?
            .unwrap_or(self.snapshot);
        let drive = DriveConfig {
            file: path,
            format,
            readonly,
            direct,
            locking,
            snapshot,
            share_rw: false,
            serial: opts.get("serial").map(str::to_string),
            id: opts.get("id").map(str::to_string),
            node_name: None,
            file_node_name: None,
        };
        let ide_front = |drive| crate::ide::IdeFront::Drive {
            index,
            drive: Some(drive),
            cdrom,
        };
        match opts.get("if") {
            // The machine's default: IDE (AHCI on q35) on pc/q35, virtio-blk on microvm.
            None => self.push_default(ide_front(drive)),
            Some("ide") => self.ide.push(ide_front(drive)),
            Some("virtio") => self
                .fronts
                .push((Front::BlockDirect(drive), Transport::MachineDefault)),
            Some("none") => {
                let id = opts
                    .get("id")
                    .ok_or(VirtioArgError::DriveId { file })?
                    .to_string();
                self.check_new_id(&id)?;
                self.drives.push((id, drive));
            }
            Some(other) => {
                return Err(VirtioArgError::DriveInterface {
                    file,
                    interface: other.into(),
                })
            }
        }
        Ok(())
    }

    /// `-device ide-hd|ide-cd,drive=ID[,bus=ide.N][,unit=U][,bootindex=N][,share-rw=on]`.
    fn ide_device(&mut self, opts: &QemuOpts, cdrom: bool) -> Result<(), VirtioArgError> {
        let driver = if cdrom { "ide-cd" } else { "ide-hd" };
        let option = format!("-device {driver}");
        let share_rw = opts
            .get_bool("share-rw")
            .map_err(opts_err(&option))?
            .unwrap_or(false);
        let drive = opts
            .get("drive")
            .ok_or(VirtioArgError::MissingParam {
                driver,
                param: "drive",
            })?
            .to_string();
        let bus = opts
            .get("bus")
            .map(|b| {
                b.strip_prefix("ide.")
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| VirtioArgError::IdeBusName {
                        driver,
                        bus: b.into(),
                    })
            })
            .transpose()?;
        let unit = opts.get_u32("unit").map_err(opts_err(&option))?;
        let bootindex = opts.get_u32("bootindex").map_err(opts_err(&option))?;
        self.ide.push(crate::ide::IdeFront::Device {
            drive,
            cdrom,
            bus,
            unit,
            bootindex,
            share_rw,
        });
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
        self.net_given = true;
        let opts = QemuOpts::parse(arg, Some("type")).map_err(opts_err("-netdev"))?;
        let kind = opts.get("type").unwrap_or_default().to_string();
        let id = opts
            .get("id")
            .ok_or_else(|| NetdevError::Id(kind.clone()))?
            .to_string();
        let backend = crate::netdev::parse_backend("-netdev", &kind, &id, &opts, &[])?;
        self.check_new_id(&id)?;
        self.netdevs.push((id, backend));
        Ok(())
    }

    /// `-nic none` or `-nic TYPE[,model=][,mac=][,backend options]`: a back-end and its NIC.
    fn nic(&mut self, arg: &str) -> Result<(), VirtioArgError> {
        self.net_given = true;
        let opts = QemuOpts::parse(arg, Some("type")).map_err(opts_err("-nic"))?;
        let kind = opts.get("type").unwrap_or_default().to_string();
        if kind == "none" {
            opts.check_known(&["type"]).map_err(opts_err("-nic none"))?;
            return Ok(());
        }
        let transport = crate::netdev::nic_transport("-nic", &opts)?;
        let mac = crate::netdev::nic_mac("-nic", &opts)?;
        let id = opts
            .get("id")
            .map(str::to_string)
            .unwrap_or_else(|| format!("__nic{}", self.nic_count));
        self.nic_count += 1;
        let backend = crate::netdev::parse_backend("-nic", &kind, &id, &opts, &["model", "mac"])?;
        self.check_new_id(&id)?;
        self.netdevs.push((id.clone(), backend));
        self.fronts
            .push((Front::Net { netdev: id, mac }, transport));
        Ok(())
    }

    /// `-net nic[,model=][,macaddr=][,netdev=ID]` or `-net TYPE[,backend options]`: QEMU's
    /// hub 0; rvmm connects one `-net nic` to one `-net` back-end.
    fn net(&mut self, arg: &str) -> Result<(), VirtioArgError> {
        self.net_given = true;
        let opts = QemuOpts::parse(arg, Some("type")).map_err(opts_err("-net"))?;
        let kind = opts.get("type").unwrap_or_default().to_string();
        match kind.as_str() {
            "none" => {
                opts.check_known(&["type"]).map_err(opts_err("-net none"))?;
            }
            "nic" => {
                opts.check_known(&["type", "model", "macaddr", "netdev", "name", "id"])
                    .map_err(opts_err("-net nic"))?;
                let transport = crate::netdev::nic_transport("-net nic", &opts)?;
                let mac = crate::netdev::nic_mac("-net nic", &opts)?;
                let netdev = opts.get("netdev").map(str::to_string);
                self.fronts.push((Front::HubNic { netdev, mac }, transport));
            }
            _ => {
                let backend =
                    crate::netdev::parse_backend("-net", &kind, "hub0", &opts, &["name"])?;
                self.net_backends.push((kind, backend));
            }
        }
        Ok(())
    }

    /// Pair `-net nic` with `-net` back-ends, and add the default NIC (user networking) when no
    /// network option was given on a machine where QEMU adds one.
    fn resolve_net(&mut self, default_nic: bool) -> Result<(), VirtioArgError> {
        let mut backends = std::mem::take(&mut self.net_backends);
        let on_hub = self
            .fronts
            .iter()
            .filter(|(f, _)| matches!(f, Front::HubNic { netdev: None, .. }))
            .count();
        if on_hub > 1 {
            return Err(NetdevError::HubTooBig("-net nic").into());
        }
        if backends.len() > 1 {
            return Err(NetdevError::HubTooBig("-net backend").into());
        }
        if on_hub == 0 {
            if let Some((kind, _)) = backends.first() {
                return Err(NetdevError::NoNic(kind.clone()).into());
            }
        }
        for (front, _) in &mut self.fronts {
            let Front::HubNic { netdev, mac } = front else {
                continue;
            };
            let netdev = match netdev.take() {
                Some(n) => n,
                None => {
                    let (_, backend) = backends.pop().ok_or(NetdevError::NoBackend)?;
                    let id = "__hub0".to_string();
                    self.netdevs.push((id.clone(), backend));
                    id
                }
            };
            *front = Front::Net { netdev, mac: *mac };
        }
        if default_nic && !self.net_given {
            let id = "__default_nic".to_string();
            self.netdevs.push((
                id.clone(),
                NetBackendConfig::User(crate::netdev::UserNetConfig {
                    implicit: true,
                    ..Default::default()
                }),
            ));
            // virtio-net-pci on pc and q35 (QEMU's default model there is e1000/e1000e).
            self.fronts.push((
                Front::Net {
                    netdev: id,
                    mac: None,
                },
                Transport::MachineDefault,
            ));
        }
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

    /// `-device virtio-*-device,...` and `-device virtio-*-pci,...`.
    pub(crate) fn device(&mut self, opts: &QemuOpts) -> Result<(), VirtioArgError> {
        let driver = opts.get("driver").unwrap_or_default();
        let option = format!("-device {driver}");
        if matches!(driver, "ide-hd" | "ide-cd") {
            return self.ide_device(opts, driver == "ide-cd");
        }
        let (kind, pci) = match driver.strip_suffix("-pci") {
            Some(kind) => (kind, true),
            None => (driver.strip_suffix("-device").unwrap_or(driver), false),
        };
        // The caller checked the keys against the device's properties (qdev.rs).
        let front = match kind {
            "virtio-blk" => {
                let drive = opts.get("drive").ok_or(VirtioArgError::MissingParam {
                    driver: "virtio-blk-device",
                    param: "drive",
                })?;
                Front::Block {
                    drive: drive.into(),
                    share_rw: opts
                        .get_bool("share-rw")
                        .map_err(opts_err(&option))?
                        .unwrap_or(false),
                }
            }
            "virtio-net" => {
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
            "virtio-tablet" | "virtio-keyboard" | "virtio-mouse" => {
                let kind = match kind {
                    "virtio-tablet" => InputKind::Tablet,
                    "virtio-keyboard" => InputKind::Keyboard,
                    _ => InputKind::Mouse,
                };
                // QEMU's default; without the wheel axis it is a different (v1) device.
                if let Some(w) = opts.get("wheel-axis") {
                    if !matches!(w, "on" | "true" | "yes") {
                        return Err(VirtioArgError::VirtioPciInterface {
                            driver: driver.into(),
                            key: "wheel-axis",
                            value: w.into(),
                            why: "rvmm's pointers always have QEMU's default wheel axis",
                        });
                    }
                }
                Front::Input {
                    kind,
                    serial: opts.get("serial").map(str::to_string),
                }
            }
            "virtio-balloon" => {
                if self
                    .fronts
                    .iter()
                    .any(|(f, _)| matches!(f, Front::Balloon(_)))
                {
                    // QEMU: qemu_add_balloon_handler refuses a second one.
                    return Err(VirtioArgError::SecondBalloon(driver.into()));
                }
                let flag = |key, default| {
                    opts.get_bool(key)
                        .map_err(opts_err(&option))
                        .map(|v| v.unwrap_or(default))
                };
                Front::Balloon(BalloonConfig {
                    id: opts.get("id").map(str::to_string),
                    deflate_on_oom: flag("deflate-on-oom", false)?,
                    free_page_reporting: flag("free-page-reporting", false)?,
                    page_poison: flag("page-poison", true)?,
                })
            }
            _ => {
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
        let transport = if pci {
            Transport::Pci(pci_options(driver, opts)?)
        } else {
            Transport::Mmio
        };
        self.fronts.push((front, transport));
        Ok(())
    }

    /// Places default-interface drives for `machine`, then links front-ends to their back-ends
    /// by id, in command-line order.
    pub(crate) fn resolve(
        mut self,
        machine: crate::MachineKind,
        nodefaults: bool,
    ) -> Result<ResolvedDevices, VirtioArgError> {
        // QEMU adds a NIC on user networking on pc and q35 (not on microvm).
        self.resolve_net(!nodefaults && machine != crate::MachineKind::Microvm)?;
        let has_ide = crate::ide::ide_layout(machine).is_some();
        let mut ide = Vec::new();
        // Later insertions first, so earlier positions stay valid.
        for (at, front) in std::mem::take(&mut self.defaults).into_iter().rev() {
            match front {
                crate::ide::IdeFront::Drive {
                    drive: Some(drive),
                    cdrom: false,
                    ..
                } if !has_ide => self
                    .fronts
                    .insert(at, (Front::BlockDirect(drive), Transport::Mmio)),
                other => ide.push(other),
            }
        }
        ide.reverse();
        ide.append(&mut self.ide);
        let ide = crate::ide::place(machine, ide, &mut self.drives)?;
        let pci_bus = machine != crate::MachineKind::Microvm;
        let mut virtio = Vec::new();
        let mut virtio_pci = Vec::new();
        for (device, transport) in self.resolve_virtio()? {
            match transport {
                Transport::Mmio => virtio.push(device),
                Transport::MachineDefault if !pci_bus => virtio.push(device),
                Transport::MachineDefault => virtio_pci.push(VirtioPciDeviceConfig {
                    device,
                    pci: VirtioPciOptions::default(),
                }),
                Transport::Pci(_) if !pci_bus => {
                    let driver = match device {
                        VirtioDeviceConfig::Block(_) => "virtio-blk-pci",
                        VirtioDeviceConfig::Net { .. } => "virtio-net-pci",
                        VirtioDeviceConfig::Rng => "virtio-rng-pci",
                        VirtioDeviceConfig::Input { kind, .. } => match kind {
                            InputKind::Tablet => "virtio-tablet-pci",
                            InputKind::Keyboard => "virtio-keyboard-pci",
                            InputKind::Mouse => "virtio-mouse-pci",
                        },
                        VirtioDeviceConfig::Balloon(_) => "virtio-balloon-pci",
                    };
                    return Err(VirtioArgError::NoPciBus {
                        driver: driver.into(),
                    });
                }
                Transport::Pci(pci) => virtio_pci.push(VirtioPciDeviceConfig { device, pci }),
            }
        }
        Ok(ResolvedDevices {
            virtio,
            virtio_pci,
            ide,
        })
    }

    fn resolve_virtio(&mut self) -> Result<Vec<(VirtioDeviceConfig, Transport)>, VirtioArgError> {
        let mut out = Vec::with_capacity(self.fronts.len());
        for (front, transport) in std::mem::take(&mut self.fronts) {
            let device = match front {
                Front::BlockDirect(d) => VirtioDeviceConfig::Block(d),
                Front::Rng => VirtioDeviceConfig::Rng,
                Front::Input { kind, serial } => VirtioDeviceConfig::Input { kind, serial },
                Front::Balloon(b) => VirtioDeviceConfig::Balloon(b),
                Front::Block { drive, share_rw } => {
                    let i = self.drives.iter().position(|(id, _)| *id == drive);
                    match i {
                        Some(i) => VirtioDeviceConfig::Block(DriveConfig {
                            share_rw,
                            ..self.drives.remove(i).1
                        }),
                        None => {
                            return Err(VirtioArgError::UnknownId {
                                driver: "virtio-blk-device",
                                what: "drive",
                                id: drive,
                            })
                        }
                    }
                }
                // resolve_net turned every hub NIC into a Net front-end.
                Front::HubNic { .. } => return Err(NetdevError::NoBackend.into()),
                Front::Net { netdev, mac } => {
                    let i = self.netdevs.iter().position(|(id, _)| *id == netdev);
                    match i {
                        Some(i) => VirtioDeviceConfig::Net {
                            backend: self.netdevs.remove(i).1,
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
            };
            out.push((device, transport));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netdev::TapConfig;

    fn parse(
        args: &[(&str, &str)],
        devices: &[&str],
    ) -> Result<Vec<VirtioDeviceConfig>, VirtioArgError> {
        let mut v = VirtioArgs::default();
        for (n, a) in args {
            match *n {
                "hda" => v.hdx(0, PathBuf::from(a), false),
                _ => v.option(n, a)?,
            }
        }
        for d in devices {
            v.device(&QemuOpts::parse(d, Some("driver")).unwrap())?;
        }
        // microvm: the default interface is virtio.
        v.resolve(crate::MachineKind::Microvm, false)
            .map(|r| r.virtio)
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
                locking: true,
                snapshot: false,
                share_rw: false,
                serial: None,
                id: Some("d0".into()),
                node_name: None,
                file_node_name: None,
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
            "-drive a: machine type 'microvm' has no IDE controller (use if=virtio)"
        );
        assert_eq!(
            parse(&[("drive", "file=a,if=scsi")], &[])
                .unwrap_err()
                .to_string(),
            "-drive a: if=scsi is not supported (supported: none, ide, virtio)"
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
                    backend: NetBackendConfig::Tap(TapConfig::Name("tap0".into())),
                    mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
                },
                VirtioDeviceConfig::Net {
                    backend: NetBackendConfig::Tap(TapConfig::Fd(5)),
                    mac: None
                },
                VirtioDeviceConfig::Rng,
                VirtioDeviceConfig::Rng,
            ]
        );
        assert!(parse(&[("netdev", "slirp,id=n0")], &[]).is_err());
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

    fn block_drives(args: &[&str]) -> Vec<DriveConfig> {
        let args = ["-M", "microvm"].iter().chain(args).map(|s| s.to_string());
        match crate::parse_args(args) {
            Ok(crate::Action::Run(c)) => c
                .virtio
                .into_iter()
                .filter_map(|d| match d {
                    VirtioDeviceConfig::Block(d) => Some(d),
                    _ => None,
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn locking_and_snapshot() {
        let flags = |args: &[&str]| -> Vec<(bool, bool)> {
            block_drives(args)
                .iter()
                .map(|d| (d.locking, d.snapshot))
                .collect()
        };
        assert_eq!(flags(&["-drive", "file=a"]), [(true, false)]);
        for off in [
            "file.locking=off",
            "locking=off",
            "locking=on,file.locking=off",
        ] {
            assert_eq!(
                flags(&["-drive", &format!("file=a,{off}")]),
                [(false, false)]
            );
        }
        assert_eq!(flags(&["-drive", "file=a,locking=auto"]), [(true, false)]);
        // -snapshot reaches drives on either side of it; snapshot=off wins.
        let args = [
            "-drive",
            "file=a",
            "-snapshot",
            "-hda",
            "b",
            "-drive",
            "file=c,snapshot=off",
        ];
        assert_eq!(flags(&args), [(true, true), (true, true), (true, false)]);
        assert_eq!(flags(&["-drive", "file=a,snapshot=on"]), [(true, true)]);
        assert_eq!(
            parse(&[("drive", "file=a,file.locking=maybe")], &[])
                .unwrap_err()
                .to_string(),
            "-drive a: file.locking=maybe is not supported (supported: on, off, auto)"
        );
    }
}
