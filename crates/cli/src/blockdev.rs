//! `-blockdev` node graphs and `-add-fd` descriptor sets, as libvirt writes them:
//!
//! ```text
//! -blockdev driver=file,filename=/img.qcow2,node-name=libvirt-1-storage,auto-read-only=on,discard=unmap
//! -blockdev node-name=libvirt-1-format,read-only=off,driver=qcow2,file=libvirt-1-storage
//! -device virtio-blk-pci,drive=libvirt-1-format,...
//! ```
//!
//! A protocol node (`file`, `host_device`, `host_cdrom`) names the bytes; a format node (`raw`,
//! `qcow2`) on top of it says how to read them. Each node a device may use becomes one entry of
//! the `-drive if=none` table under its node name, so `drive=NODE` works as `drive=ID` does; a
//! protocol node stops being usable on its own once a format node takes it as `file=`.
//! A path `/dev/fdset/S` names a descriptor of set S passed with `-add-fd fd=N,set=S`: rvmm
//! opens it again through `/proc/self/fd/N`, which reaches the same file.

use std::collections::HashMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};
use crate::DriveConfig;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockdevError {
    #[error("-blockdev: {0}")]
    Opts(#[source] OptsError),
    #[error("-blockdev: parameter 'node-name' is missing")]
    NodeName,
    #[error("-blockdev node-name={node}: driver '{driver}' is not supported (supported: file, host_device, host_cdrom, raw, qcow2)")]
    Driver { node: String, driver: String },
    #[error("-blockdev node-name={node}: parameter '{param}' is missing")]
    Missing { node: String, param: &'static str },
    #[error("-blockdev node-name={node}: {key}={value} is not supported ({why})")]
    Value {
        node: String,
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("-blockdev node-name={node}: Cannot find device='' nor node-name='{child}'")]
    UnknownChild { node: String, child: String },
    #[error("-blockdev node-name={0}: Duplicate nodes with node-name='{0}'")]
    Duplicate(String),
    #[error("-add-fd: {0}")]
    AddFdOpts(#[source] OptsError),
    #[error("-add-fd: fd={0} is not an open descriptor")]
    AddFdClosed(i32),
    #[error("-add-fd: {0}")]
    AddFd(&'static str),
    #[error("{path}: no -add-fd descriptor of set {set} is open for {mode}")]
    FdSet {
        path: String,
        set: u32,
        mode: &'static str,
    },
}

/// `-add-fd` sets: set number -> descriptors in command-line order.
#[derive(Debug, Default)]
pub(crate) struct FdSets(HashMap<u32, Vec<i32>>);

impl FdSets {
    /// `-add-fd fd=N,set=S[,opaque=TEXT]`.
    pub(crate) fn add(&mut self, arg: &str) -> Result<(), BlockdevError> {
        let opts = QemuOpts::parse(arg, None).map_err(BlockdevError::AddFdOpts)?;
        opts.check_known(&["fd", "set", "opaque"])
            .map_err(BlockdevError::AddFdOpts)?;
        let fd = opts.get_u32("fd").map_err(BlockdevError::AddFdOpts)?;
        let set = opts.get_u32("set").map_err(BlockdevError::AddFdOpts)?;
        let (Some(fd), Some(set)) = (fd, set) else {
            return Err(BlockdevError::AddFd("both fd= and set= are needed"));
        };
        let fd = i32::try_from(fd).map_err(|_| BlockdevError::AddFd("fd= out of range"))?;
        // QEMU: "fd is not valid or already in use"; stdio are never a set's.
        if fd <= 2 {
            return Err(BlockdevError::AddFd(
                "fd= must not be stdin, stdout or stderr",
            ));
        }
        if access_mode(fd).is_none() {
            return Err(BlockdevError::AddFdClosed(fd));
        }
        self.0.entry(set).or_default().push(fd);
        Ok(())
    }

    /// The path to open for `path`: itself, or for `/dev/fdset/S` the `/proc/self/fd/N` of a
    /// descriptor of set S whose access mode allows `write` (QEMU's `monitor_fdset_dup_fd_add`).
    pub(crate) fn resolve(&self, path: PathBuf, write: bool) -> Result<PathBuf, BlockdevError> {
        let Some(set) = path
            .to_str()
            .and_then(|p| p.strip_prefix("/dev/fdset/"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return Ok(path);
        };
        let fits = |fd: &&i32| match access_mode(**fd) {
            // O_RDONLY 0, O_WRONLY 1, O_RDWR 2.
            Some(mode) => !write || mode == 2,
            None => false,
        };
        self.0
            .get(&set)
            .and_then(|fds| fds.iter().find(fits))
            .map(|fd| PathBuf::from(format!("/proc/self/fd/{fd}")))
            .ok_or(BlockdevError::FdSet {
                path: path.display().to_string(),
                set,
                mode: if write {
                    "reading and writing"
                } else {
                    "reading"
                },
            })
    }
}

/// The access mode bits of an open descriptor, from `/proc/self/fdinfo` (None: not open).
fn access_mode(fd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(flags.trim(), 8).ok().map(|f| f & 3)
}

/// What one node contributes to a drive.
#[derive(Debug, Clone)]
struct Node {
    drive: DriveConfig,
    /// `auto-read-only=on`: read-only unless a parent or device needs writes.
    auto_read_only: bool,
}

/// The nodes given so far that no format node has taken as its `file=`.
#[derive(Debug, Default)]
pub(crate) struct BlockNodes {
    nodes: Vec<(String, Node)>,
}

fn get_bool(opts: &QemuOpts, key: &str) -> Result<Option<bool>, BlockdevError> {
    opts.get_bool(key).map_err(BlockdevError::Opts)
}

impl BlockNodes {
    /// `-blockdev`: a protocol node, or a format node on one given before it (or inline as
    /// `file.driver=...`).
    pub(crate) fn add(&mut self, arg: &str, fdsets: &FdSets) -> Result<(), BlockdevError> {
        let opts = QemuOpts::parse(arg, None).map_err(BlockdevError::Opts)?;
        let (name, node) = self.node(&opts, "", fdsets)?;
        if self.nodes.iter().any(|(n, _)| *n == name) {
            return Err(BlockdevError::Duplicate(name));
        }
        self.nodes.push((name, node));
        Ok(())
    }

    /// The nodes devices may use, as `(node-name, drive)`, in command-line order.
    pub(crate) fn into_drives(self) -> Vec<(String, DriveConfig)> {
        self.nodes
            .into_iter()
            .map(|(name, mut node)| {
                // Nobody above asked for writes: auto-read-only leaves it writable only if
                // read-only=off was said (QEMU opens it read-write when a writer attaches;
                // every rvmm device that takes a drive writes unless read-only).
                node.drive.node_name = Some(name.clone());
                (name, node.drive)
            })
            .collect()
    }

    /// Parse one node with its keys under `prefix` (`""` or `"file."`).
    fn node(
        &mut self,
        opts: &QemuOpts,
        prefix: &str,
        fdsets: &FdSets,
    ) -> Result<(String, Node), BlockdevError> {
        let key = |k: &str| format!("{prefix}{k}");
        let get = |k: &str| opts.get(&key(k));
        let name = match get("node-name") {
            Some(n) if !n.is_empty() => n.to_string(),
            // An inline child gets QEMU's generated name.
            _ if !prefix.is_empty() => format!("#block{}", self.nodes.len()),
            _ => return Err(BlockdevError::NodeName),
        };
        let driver = get("driver").unwrap_or_default().to_string();
        let value = |k: &str, v: &str, why| BlockdevError::Value {
            node: name.clone(),
            key: k.to_string(),
            value: v.to_string(),
            why,
        };
        let common = [
            "driver",
            "node-name",
            "read-only",
            "auto-read-only",
            "discard",
            "cache.direct",
            "cache.no-flush",
            "detect-zeroes",
            "force-share",
        ];
        let own: &[&str] = match driver.as_str() {
            "file" | "host_device" | "host_cdrom" => &["filename", "locking", "aio"],
            "raw" | "qcow2" => &["file", "backing"],
            _ => return Err(BlockdevError::Driver { node: name, driver }),
        };
        // Keys of this node (not of an inline child, checked by its own call).
        for (k, v) in opts.params() {
            let Some(k) = k.strip_prefix(prefix) else {
                continue;
            };
            if prefix.is_empty() && k.starts_with("file.") && own.contains(&"file") {
                continue;
            }
            if !common.contains(&k) && !own.contains(&k) {
                return Err(BlockdevError::Opts(OptsError::UnknownParameter(format!(
                    "{prefix}{k}"
                ))));
            }
            match (k, v.as_str()) {
                ("discard", "ignore" | "off" | "unmap" | "on") => {}
                ("discard", v) => return Err(value(k, v, "expected ignore or unmap")),
                ("detect-zeroes", "off") => {}
                ("detect-zeroes", v) => return Err(value(k, v, "rvmm writes zeroes as given")),
                ("aio", "threads") => {}
                ("aio", v) => return Err(value(k, v, "rvmm's disk I/O is synchronous: threads")),
                ("backing", "") => {}
                ("backing", v) => {
                    return Err(value(k, v, "backing files come from the image header"))
                }
                _ => {}
            }
        }
        if get_bool(opts, &key("cache.no-flush"))? == Some(true) {
            return Err(value(
                "cache.no-flush",
                "on",
                "guest flushes always reach the disk",
            ));
        }
        if get_bool(opts, &key("force-share"))? == Some(true) {
            return Err(value("force-share", "on", "use share-rw=on on the device"));
        }
        let read_only = get_bool(opts, &key("read-only"))?;
        let auto_read_only = get_bool(opts, &key("auto-read-only"))?.unwrap_or(false);
        let direct = get_bool(opts, &key("cache.direct"))?;
        let node = if own.contains(&"filename") {
            let filename = opts
                .get_path(&key("filename"))
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| BlockdevError::Missing {
                    node: name.clone(),
                    param: "filename",
                })?;
            let writable = read_only != Some(true);
            let locking = match get("locking").unwrap_or("auto") {
                "on" | "auto" => true,
                "off" => false,
                v => return Err(value("locking", v, "expected on, off or auto")),
            };
            Node {
                drive: DriveConfig {
                    file: fdsets.resolve(filename, writable)?,
                    format: Some("raw".into()),
                    readonly: read_only.unwrap_or(false),
                    direct: direct.unwrap_or(false),
                    locking,
                    snapshot: false,
                    share_rw: false,
                    serial: None,
                    id: None,
                    node_name: None,
                    file_node_name: None,
                },
                auto_read_only,
            }
        } else {
            let (child_name, mut child) =
                if opts.params().iter().any(|(k, _)| k == &key("file.driver")) {
                    self.node(opts, &key("file."), fdsets)?
                } else {
                    let child_name = get("file").ok_or_else(|| BlockdevError::Missing {
                        node: name.clone(),
                        param: "file",
                    })?;
                    let i = self
                        .nodes
                        .iter()
                        .position(|(n, _)| n == child_name)
                        .ok_or_else(|| BlockdevError::UnknownChild {
                            node: name.clone(),
                            child: child_name.to_string(),
                        })?;
                    self.nodes.remove(i)
                };
            child.drive.file_node_name = Some(child_name);
            let readonly = match read_only {
                Some(ro) => ro,
                None => child.drive.readonly && !child.auto_read_only,
            };
            Node {
                drive: DriveConfig {
                    format: Some(driver.clone()),
                    readonly,
                    direct: direct.unwrap_or(child.drive.direct),
                    ..child.drive
                },
                auto_read_only,
            }
        };
        Ok((name, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(args: &[&str]) -> Result<Vec<(String, DriveConfig)>, BlockdevError> {
        let mut n = BlockNodes::default();
        for a in args {
            n.add(a, &FdSets::default())?;
        }
        Ok(n.into_drives())
    }

    #[test]
    fn libvirt_graph() {
        let d = nodes(&[
            "driver=file,filename=/img.qcow2,node-name=libvirt-1-storage,auto-read-only=on,discard=unmap",
            "node-name=libvirt-1-format,read-only=off,discard=unmap,driver=qcow2,file=libvirt-1-storage,backing=",
        ])
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "libvirt-1-format");
        let drive = &d[0].1;
        assert_eq!(drive.file, PathBuf::from("/img.qcow2"));
        assert_eq!(drive.format.as_deref(), Some("qcow2"));
        assert!(!drive.readonly && drive.locking && !drive.direct);
        assert_eq!(drive.node_name.as_deref(), Some("libvirt-1-format"));
    }

    #[test]
    fn inline_child_cache_and_read_only() {
        let d = nodes(&[
            "driver=raw,node-name=cd,read-only=on,file.driver=file,file.filename=/x.iso,cache.direct=on",
        ])
        .unwrap();
        assert_eq!(d[0].1.file, PathBuf::from("/x.iso"));
        assert!(d[0].1.readonly && d[0].1.direct);
        // A protocol node alone is a raw drive.
        let d = nodes(&["driver=file,filename=/r,node-name=p"]).unwrap();
        assert_eq!(d[0].1.format.as_deref(), Some("raw"));
    }

    #[test]
    fn errors_name_the_node() {
        let e = nodes(&["driver=nbd,node-name=n"]).unwrap_err();
        assert!(e.to_string().contains("driver 'nbd'"), "{e}");
        let e = nodes(&["driver=qcow2,node-name=f,file=nope"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-blockdev node-name=f: Cannot find device='' nor node-name='nope'"
        );
        assert!(nodes(&["driver=file,node-name=a"]).is_err());
        assert!(nodes(&["driver=file,filename=/a"]).is_err());
        assert!(nodes(&["driver=file,filename=/a,node-name=a,aio=native"]).is_err());
        assert!(nodes(&["driver=file,filename=/a,node-name=a,bogus=1"]).is_err());
        assert!(nodes(&[
            "driver=file,filename=/a,node-name=a",
            "driver=file,filename=/b,node-name=a"
        ])
        .is_err());
    }

    #[test]
    fn fdsets() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let mut sets = FdSets::default();
        sets.add(&format!("fd={fd},set=3,opaque=x")).unwrap();
        assert_eq!(
            sets.resolve("/dev/fdset/3".into(), false).unwrap(),
            PathBuf::from(format!("/proc/self/fd/{fd}"))
        );
        // Opened read-only: not for writing.
        assert!(sets.resolve("/dev/fdset/3".into(), true).is_err());
        assert!(sets.resolve("/dev/fdset/4".into(), false).is_err());
        assert_eq!(
            sets.resolve("/plain".into(), true).unwrap(),
            PathBuf::from("/plain")
        );
        assert!(sets.add("fd=1,set=1").is_err());
        assert!(sets.add("fd=9999,set=1").is_err());
        assert!(sets.add("set=1").is_err());
    }
}
