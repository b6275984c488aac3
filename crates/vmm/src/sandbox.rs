//! The sandbox mode from `-sandbox` and `RVMM_SECCOMP` (docs/SANDBOX.md).

use rvmm_cli::SandboxConfig;
use rvmm_sandbox::Mode;

/// `-sandbox off` turns the filters off; `log=on` or `RVMM_SECCOMP=log` logs calls outside the
/// lists (kernel log, `audit: type=1326`) instead of stopping rvmm.
pub fn mode(config: &SandboxConfig) -> Mode {
    if !config.enabled {
        return Mode::Off;
    }
    let env_log = std::env::var("RVMM_SECCOMP").is_ok_and(|v| v == "log");
    if config.log {
        tracing::warn!(
            "-sandbox: log mode: system calls outside the lists are logged by the kernel, not refused"
        );
        Mode::Log
    } else if env_log {
        // Quiet: a whole test suite runs this way to regenerate the lists.
        tracing::debug!("RVMM_SECCOMP=log: calls outside the lists are logged, not refused");
        Mode::Log
    } else {
        Mode::Kill
    }
}

/// The paths the main thread may still open once the guest runs (Landlock, docs/SANDBOX.md):
/// the directories of rvmm's Unix sockets (also where QMP `screendump` and `migrate file:` may
/// write), of the pid file (removed at exit), the `-exit-stats` report and `-incoming file:`.
/// Images, firmware, kernels and devices are open before the restriction and need no rule.
pub fn path_rules(config: &rvmm_cli::VmConfig) -> Vec<rvmm_sandbox::PathRule> {
    use rvmm_sandbox::{Access, PathRule};
    use std::path::{Path, PathBuf};
    let dir = |p: &Path| -> PathRule {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        PathRule {
            path: parent,
            access: Access::Dir,
        }
    };
    let mut rules = Vec::new();
    for q in &config.qmp {
        if let rvmm_cli::QmpAddress::Unix(path) = &q.address {
            rules.push(dir(path));
        }
    }
    if let Some(rvmm_cli::VncConfig {
        listen: rvmm_cli::VncListen::Unix(path),
        ..
    }) = &config.vnc
    {
        rules.push(dir(path));
    }
    if let Some(p) = &config.pidfile {
        rules.push(dir(p));
    }
    if let Some(p) = config.exit_stats.as_ref().and_then(|e| e.json.as_ref()) {
        rules.push(PathRule {
            path: p.clone(),
            access: Access::ReadWriteFile,
        });
    }
    if let Some(rvmm_cli::IncomingConfig::File(p)) = &config.incoming {
        rules.push(dir(p));
    }
    rules
}

/// Build the Landlock rulesets (threads install them with their filters).
pub fn landlock(config: &rvmm_cli::VmConfig, mode: Mode) -> Result<(), crate::VmmError> {
    if mode == Mode::Off || !config.sandbox.landlock {
        return Ok(());
    }
    match rvmm_sandbox::restrict_paths(&path_rules(config))? {
        rvmm_sandbox::LandlockStatus::Abi(abi) => tracing::debug!("Landlock ABI {abi} in force"),
        status => tracing::debug!("Landlock: {status:?}"),
    }
    Ok(())
}
