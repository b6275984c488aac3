//! rvmm: argv -> VmConfig -> vmm::run, and the process exit status.
//!
//! Status: what the guest asked for (0 for power-off, reset under -no-reboot or a terminating
//! signal; (v << 1) | 1 for an isa-debug-exit write of v, as QEMU), and 2 for any rvmm error.

use rvmm_cli::Action;
use std::process::ExitCode;

const ERROR_STATUS: u8 = 2;

fn init_logging() {
    // Logging costs start-up time, so it is only set up when asked for: RVMM_LOG=debug|info|...
    let Ok(level) = std::env::var("RVMM_LOG") else {
        return;
    };
    let level = match level.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .init();
}

fn main() -> ExitCode {
    init_logging();
    let action = match rvmm_cli::parse_args(std::env::args().skip(1)) {
        Ok(action) => action,
        Err(e) => {
            eprintln!("rvmm: {e}");
            return ExitCode::from(ERROR_STATUS);
        }
    };
    match action {
        Action::Help => {
            print!("{}", rvmm_cli::help_text());
            ExitCode::SUCCESS
        }
        Action::Version => {
            println!("{}", rvmm_cli::version_text());
            ExitCode::SUCCESS
        }
        Action::Run(config) => match rvmm_vmm::run(&config) {
            Ok(status) => ExitCode::from((status & 0xff) as u8),
            Err(e) => {
                eprintln!("rvmm: {e}");
                ExitCode::from(ERROR_STATUS)
            }
        },
    }
}
