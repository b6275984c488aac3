//! Options about the rvmm process around the guest, as libvirt writes them: `-name
//! ...,debug-threads=on`, `-no-shutdown`, `-machine dump-guest-core=,memory-backend=` with
//! `-object memory-backend-ram|memory-backend-memfd`, `-object secret`, `-overcommit`, `-rtc`,
//! `-msg` and `-audiodev`. Each keeps QEMU's meaning; values rvmm cannot honour are refused by
//! name.

use thiserror::Error;

use crate::opts::{OptsError, QemuOpts};
use crate::size::parse_size;

/// Which memory backend holds guest RAM (`-machine memory-backend=ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    pub id: String,
    pub size: u64,
    /// `memory-backend-memfd`: RAM is a memfd (QEMU's default `share=on` for it).
    pub memfd: bool,
    /// `share=on`: MAP_SHARED rather than private.
    pub share: bool,
}

/// How the process behaves around the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// `-name ...,debug-threads=on`: threads named as QEMU names them (`CPU 0/KVM`).
    pub debug_threads: bool,
    /// `-no-shutdown`: a guest power-off stops the VM (SHUTDOWN, then STOP) and the process
    /// stays until QMP `quit` (or a signal).
    pub no_shutdown: bool,
    /// `-machine dump-guest-core=on|off` (QEMU's default on): off keeps guest RAM out of core
    /// dumps (MADV_DONTDUMP).
    pub dump_guest_core: bool,
    /// `-overcommit mem-lock=on`: lock all memory (mlockall) before the guest runs.
    pub mem_lock: bool,
    /// `-machine memory-backend=ID`: the object that holds guest RAM.
    pub memory_backend: Option<MemoryBackend>,
    /// `-msg timestamp=on`: error and warning lines start with a UTC timestamp.
    pub msg_timestamp: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            debug_threads: false,
            no_shutdown: false,
            dump_guest_core: true,
            mem_lock: false,
            memory_backend: None,
            msg_timestamp: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProcessArgError {
    #[error("{option}: {source}")]
    Opts {
        option: &'static str,
        #[source]
        source: OptsError,
    },
    #[error("{option}: {key}={value} is not supported ({why})")]
    Value {
        option: &'static str,
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("-object {kind}: parameter 'id' is missing")]
    ObjectId { kind: String },
    #[error("-object {kind},id={id}: {why}")]
    Object {
        kind: String,
        id: String,
        why: String,
    },
    #[error("-machine memory-backend={0}: no -object memory-backend-* has that id")]
    UnknownBackend(String),
    #[error("Machine memory size does not match the size of the memory backend ({machine} vs {backend} bytes)")]
    BackendSize { machine: u64, backend: u64 },
    #[error(
        "-audiodev: driver '{0}' is not supported (rvmm has no sound devices; supported: none)"
    )]
    Audiodev(String),
    #[error("-audiodev: parameter 'id' is missing")]
    AudiodevId,
}

fn opts_err(option: &'static str) -> impl FnOnce(OptsError) -> ProcessArgError {
    move |source| ProcessArgError::Opts { option, source }
}

/// Objects defined with `-object` that are not device back-ends, kept until `-machine` names
/// its memory backend.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    backends: Vec<MemoryBackend>,
    secrets: Vec<String>,
    /// `-machine memory-backend=`, resolved in [`Objects::resolve`].
    pub(crate) machine_backend: Option<String>,
}

/// The `-object` types this module handles; others go to the device back-ends (rng).
pub(crate) fn is_process_object(kind: &str) -> bool {
    matches!(
        kind,
        "secret" | "memory-backend-ram" | "memory-backend-memfd"
    )
}

impl Objects {
    /// `-object secret|memory-backend-ram|memory-backend-memfd,id=ID,...`.
    pub(crate) fn object(&mut self, opts: &QemuOpts) -> Result<(), ProcessArgError> {
        let kind = opts.get("qom-type").unwrap_or_default().to_string();
        let id = opts
            .get("id")
            .ok_or_else(|| ProcessArgError::ObjectId { kind: kind.clone() })?
            .to_string();
        let bad = |why: String| ProcessArgError::Object {
            kind: kind.clone(),
            id: id.clone(),
            why,
        };
        if kind == "secret" {
            // libvirt's master key: rvmm decrypts no secrets, but the object must be valid.
            opts.check_known(&["qom-type", "id", "format", "file", "data"])
                .map_err(opts_err("-object"))?;
            match opts.get("format").unwrap_or("raw") {
                "raw" | "base64" => {}
                f => return Err(bad(format!("format '{f}' is not supported (raw, base64)"))),
            }
            match (opts.get_path("file"), opts.get("data")) {
                (Some(file), None) => {
                    std::fs::metadata(&file)
                        .map_err(|e| bad(format!("{}: {e}", file.display())))?;
                }
                (None, Some(_)) => {}
                _ => return Err(bad("give one of file= and data=".into())),
            }
            self.secrets.push(id);
            return Ok(());
        }
        let memfd = kind == "memory-backend-memfd";
        opts.check_unsupported(&["host-nodes", "policy", "hugetlb", "hugetlbsize", "seal"])
            .and_then(|()| opts.check_known(&["qom-type", "id", "size", "share", "prealloc"]))
            .map_err(opts_err("-object"))?;
        let size = opts
            .get("size")
            .ok_or_else(|| bad("parameter 'size' is missing".into()))?;
        let size = parse_size(size, 1).map_err(|e| bad(format!("size: {e}")))?;
        let share = opts
            .get_bool("share")
            .map_err(opts_err("-object"))?
            .unwrap_or(memfd);
        if opts.get_bool("prealloc").map_err(opts_err("-object"))? == Some(true) {
            return Err(bad("prealloc=on is not supported".into()));
        }
        // rvmm's guest RAM is private anonymous memory: what memory-backend-ram,share=off is.
        if memfd || share {
            return Err(bad(
                "guest RAM shared with other processes (memfd, share=on) is not supported".into(),
            ));
        }
        if self.backends.iter().any(|b| b.id == id) {
            return Err(bad("duplicate id".into()));
        }
        self.backends.push(MemoryBackend {
            id,
            size,
            memfd,
            share,
        });
        Ok(())
    }

    /// The machine's memory backend, checked against `-m` as QEMU checks it.
    pub(crate) fn resolve(
        self,
        memory_bytes: u64,
    ) -> Result<Option<MemoryBackend>, ProcessArgError> {
        let Some(id) = self.machine_backend else {
            return Ok(None);
        };
        let backend = self
            .backends
            .into_iter()
            .find(|b| b.id == id)
            .ok_or(ProcessArgError::UnknownBackend(id))?;
        if backend.size != memory_bytes {
            return Err(ProcessArgError::BackendSize {
                machine: memory_bytes,
                backend: backend.size,
            });
        }
        Ok(Some(backend))
    }
}

/// `-overcommit mem-lock=on|off[,cpu-pm=off]`: returns whether memory is locked.
pub(crate) fn overcommit(arg: &str) -> Result<bool, ProcessArgError> {
    let opts = QemuOpts::parse(arg, None).map_err(opts_err("-overcommit"))?;
    opts.check_known(&["mem-lock", "cpu-pm"])
        .map_err(opts_err("-overcommit"))?;
    if opts.get_bool("cpu-pm").map_err(opts_err("-overcommit"))? == Some(true) {
        return Err(ProcessArgError::Value {
            option: "-overcommit",
            key: "cpu-pm",
            value: "on".into(),
            why: "rvmm does not pass HLT/MWAIT through to the guest",
        });
    }
    Ok(opts
        .get_bool("mem-lock")
        .map_err(opts_err("-overcommit"))?
        .unwrap_or(false))
}

/// `-rtc base=utc[,clock=host][,driftfix=none|slew]`. rvmm's RTC always follows the host's
/// UTC clock; `driftfix=slew` (QEMU: re-inject lost RTC ticks for Windows guests under TCG's
/// timer) changes nothing on a KVM host whose RTC timer is the host clock.
pub(crate) fn rtc(arg: &str) -> Result<(), ProcessArgError> {
    let opts = QemuOpts::parse(arg, None).map_err(opts_err("-rtc"))?;
    opts.check_known(&["base", "clock", "driftfix"])
        .map_err(opts_err("-rtc"))?;
    let refuse = |key, value: &str, why| ProcessArgError::Value {
        option: "-rtc",
        key,
        value: value.into(),
        why,
    };
    match opts.get("base") {
        None | Some("utc") => {}
        Some(v) => {
            return Err(refuse(
                "base",
                v,
                "the RTC always starts at the host's UTC time",
            ))
        }
    }
    match opts.get("clock") {
        None | Some("host") => {}
        Some(v) => return Err(refuse("clock", v, "the RTC always follows the host clock")),
    }
    match opts.get("driftfix") {
        None | Some("none" | "slew") => Ok(()),
        Some(v) => Err(refuse("driftfix", v, "expected none or slew")),
    }
}

/// `-msg timestamp=on|off[,guest-name=off]`: returns whether messages get timestamps.
pub(crate) fn msg(arg: &str) -> Result<bool, ProcessArgError> {
    let opts = QemuOpts::parse(arg, None).map_err(opts_err("-msg"))?;
    opts.check_known(&["timestamp", "guest-name"])
        .map_err(opts_err("-msg"))?;
    if opts.get_bool("guest-name").map_err(opts_err("-msg"))? == Some(true) {
        return Err(ProcessArgError::Value {
            option: "-msg",
            key: "guest-name",
            value: "on".into(),
            why: "messages never carry the guest name",
        });
    }
    Ok(opts
        .get_bool("timestamp")
        .map_err(opts_err("-msg"))?
        .unwrap_or(false))
}

/// `-audiodev [driver=]none,id=ID`: a sound back-end for no sound device (libvirt always
/// writes one); any other driver is refused.
pub(crate) fn audiodev(arg: &str) -> Result<(), ProcessArgError> {
    let opts = QemuOpts::parse(arg, Some("driver")).map_err(opts_err("-audiodev"))?;
    match opts.get("driver").unwrap_or_default() {
        "none" => {}
        other => return Err(ProcessArgError::Audiodev(other.into())),
    }
    // QEMU's common per-direction settings are accepted for "none" (it ignores them too).
    let known = |k: &str| {
        k == "driver"
            || k == "id"
            || k == "timer-period"
            || k.starts_with("in.")
            || k.starts_with("out.")
    };
    if let Some((k, _)) = opts.params().iter().find(|(k, _)| !known(k)) {
        return Err(ProcessArgError::Opts {
            option: "-audiodev",
            source: OptsError::UnknownParameter(k.clone()),
        });
    }
    opts.get("id").ok_or(ProcessArgError::AudiodevId)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_values() {
        assert!(!overcommit("mem-lock=off").unwrap());
        assert!(overcommit("mem-lock=on").unwrap());
        assert!(overcommit("cpu-pm=on").is_err());
        rtc("base=utc,driftfix=slew").unwrap();
        assert!(matches!(
            rtc("base=localtime"),
            Err(ProcessArgError::Value { key: "base", .. })
        ));
        assert!(msg("timestamp=on").unwrap());
        audiodev("id=audio1,driver=none").unwrap();
        assert_eq!(
            audiodev("id=a,driver=pa"),
            Err(ProcessArgError::Audiodev("pa".into()))
        );
        assert_eq!(audiodev("none"), Err(ProcessArgError::AudiodevId));
    }

    #[test]
    fn memory_backends() {
        let mut o = Objects::default();
        o.object(
            &QemuOpts::parse(
                "memory-backend-ram,id=pc.ram,size=134217728",
                Some("qom-type"),
            )
            .unwrap(),
        )
        .unwrap();
        o.machine_backend = Some("pc.ram".into());
        let b = o.resolve(128 << 20).unwrap().unwrap();
        assert!(!b.memfd && !b.share);
        let mut o = Objects::default();
        assert!(o
            .object(
                &QemuOpts::parse("memory-backend-memfd,id=m,size=64M", Some("qom-type")).unwrap()
            )
            .is_err());
        o.object(&QemuOpts::parse("memory-backend-ram,id=m,size=64M", Some("qom-type")).unwrap())
            .unwrap();
        o.machine_backend = Some("m".into());
        assert_eq!(
            o.resolve(128 << 20),
            Err(ProcessArgError::BackendSize {
                machine: 128 << 20,
                backend: 64 << 20
            })
        );
        let o = Objects {
            machine_backend: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            o.resolve(1),
            Err(ProcessArgError::UnknownBackend("x".into()))
        );
    }
}
