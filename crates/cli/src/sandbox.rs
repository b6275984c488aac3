//! `-sandbox on|off[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
//! [,spawn=allow|deny][,resourcecontrol=allow|deny][,log=on|off]` (QEMU's spelling; rvmm's
//! default is on, docs/SANDBOX.md).

use crate::opts::QemuOpts;
use crate::OptsError;

/// The sandbox the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Per-thread seccomp filters (and Landlock where the kernel has it).
    pub enabled: bool,
    /// Log calls outside the lists instead of stopping (rvmm's `log=on`; env `RVMM_SECCOMP=log`).
    pub log: bool,
    /// `spawn=allow`: QMP `migrate exec:` and `-incoming exec:` may start commands (through a
    /// launcher forked before the filters go in). rvmm never forks or execs otherwise.
    pub spawn: bool,
    /// rvmm's `landlock=on|off`: Landlock path restrictions where the kernel has them.
    pub landlock: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            enabled: true,
            log: false,
            spawn: true,
            landlock: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxArgError {
    #[error("-sandbox {arg}: {source}")]
    Opts {
        arg: String,
        #[source]
        source: OptsError,
    },
    /// QEMU's message for a value outside the sub-option's choices.
    #[error("-sandbox {arg}: invalid argument for {key}")]
    InvalidArgument { arg: String, key: &'static str },
}

/// Parse one `-sandbox` argument. Without `enable` (`-sandbox spawn=deny`) the sandbox stays on,
/// rvmm's default. `obsolete=`, `elevateprivileges=` and `resourcecontrol=` are accepted with
/// QEMU's values: rvmm's lists never allow obsolete, privilege-changing or scheduling calls, so
/// only their spelling is checked.
pub fn parse_sandbox(arg: &str) -> Result<SandboxConfig, SandboxArgError> {
    let opts_err = |source| SandboxArgError::Opts {
        arg: arg.to_string(),
        source,
    };
    let opts = QemuOpts::parse(arg, Some("enable")).map_err(opts_err)?;
    opts.check_known(&[
        "enable",
        "obsolete",
        "elevateprivileges",
        "spawn",
        "resourcecontrol",
        "log",
        "landlock",
    ])
    .map_err(opts_err)?;
    let mut config = SandboxConfig::default();
    if let Some(on) = opts.get_bool("enable").map_err(opts_err)? {
        config.enabled = on;
    }
    if let Some(on) = opts.get_bool("log").map_err(opts_err)? {
        config.log = on;
    }
    if let Some(on) = opts.get_bool("landlock").map_err(opts_err)? {
        config.landlock = on;
    }
    let choice = |key: &'static str, allowed: &[&str]| -> Result<Option<String>, SandboxArgError> {
        match opts.get(key) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_string())),
            Some(_) => Err(SandboxArgError::InvalidArgument {
                arg: arg.to_string(),
                key,
            }),
        }
    };
    choice("obsolete", &["allow", "deny"])?;
    choice("elevateprivileges", &["allow", "deny", "children"])?;
    choice("resourcecontrol", &["allow", "deny"])?;
    if let Some(v) = choice("spawn", &["allow", "deny"])? {
        config.spawn = v == "allow";
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_spellings() {
        assert!(!parse_sandbox("off").unwrap().enabled);
        assert!(parse_sandbox("on").unwrap().enabled);
        let c = parse_sandbox(
            "on,obsolete=deny,elevateprivileges=children,spawn=deny,resourcecontrol=deny",
        )
        .unwrap();
        assert!(c.enabled && !c.spawn && !c.log);
        assert!(parse_sandbox("enable=on,log=on").unwrap().log);
        assert!(parse_sandbox("spawn=deny").unwrap().enabled);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse_sandbox("on,spawn=x").unwrap_err().to_string();
        assert_eq!(e, "-sandbox on,spawn=x: invalid argument for spawn");
        let e = parse_sandbox("maybe").unwrap_err().to_string();
        assert!(e.contains("'enable' expects 'on' or 'off'"), "{e}");
        let e = parse_sandbox("on,foo=bar").unwrap_err().to_string();
        assert!(e.contains("unknown parameter 'foo'"), "{e}");
        let e = parse_sandbox("on,elevateprivileges=never")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("invalid argument for elevateprivileges"), "{e}");
    }
}
