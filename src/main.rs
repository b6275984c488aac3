//! rvmm: argv -> VmConfig -> vmm::run, and the process exit status.
//!
//! Status: what the guest asked for (0 for power-off, reset under -no-reboot or a terminating
//! signal; (v << 1) | 1 for an isa-debug-exit write of v, as QEMU), and 2 for any rvmm error.

use rvmm_cli::Action;
use std::process::ExitCode;

const ERROR_STATUS: u8 = 2;

/// Warnings and notices for the user ("rvmm: terminating on signal 15"), as QEMU prints them.
struct Notice;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Notice
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "rvmm: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn init_logging() {
    // Without RVMM_LOG only warnings reach stderr, one "rvmm: ..." line each; RVMM_LOG=debug|
    // info|... shows everything up to that level with timestamps.
    let Ok(level) = std::env::var("RVMM_LOG") else {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .event_format(Notice)
            .init();
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
