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
