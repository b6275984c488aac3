//! rvmm: argv -> VmConfig -> vmm::run, and the process exit status.
//!
//! Status: what the guest asked for (0 for power-off, reset under -no-reboot or a terminating
//! signal; (v << 1) | 1 for an isa-debug-exit write of v, as QEMU), and 2 for any rvmm error.

use rvmm_cli::Action;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

const ERROR_STATUS: u8 = 2;

/// `-msg timestamp=on`: message lines start with QEMU's UTC timestamp.
static TIMESTAMPS: AtomicBool = AtomicBool::new(false);

/// "2026-12-08T01:18:42.938033Z " when timestamps are on (QEMU's `real_time_iso8601` form),
/// else "".
fn timestamp() -> String {
    if !TIMESTAMPS.load(Ordering::Relaxed) {
        return String::new();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z ",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// rvmm's messages on stderr without `RVMM_LOG`, in QEMU's style, one per line: errors as
/// "rvmm: ...", warnings as "rvmm: warning: ...", notes (info level) as "rvmm: note: ...".
/// Debug and trace events are off.
struct UserMessages;

impl<S, N> FormatEvent<S, N> for UserMessages
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let kind = match *event.metadata().level() {
            // Plain status lines, as QEMU prints them ("terminating on signal 15").
            _ if event.metadata().target() == rvmm_vmm::NOTICE_TARGET => "",
            tracing::Level::ERROR => "",
            tracing::Level::WARN => "warning: ",
            _ => "note: ",
        };
        write!(writer, "{}rvmm: {kind}", timestamp())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `RVMM_LOG=error|warn|info|debug|trace` logs at that level with timestamps (uptime since the
/// logger started); without it, notes, warnings and errors reach stderr as [`UserMessages`].
fn init_logging() {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    let installed = match std::env::var("RVMM_LOG") {
        Err(_) => builder
            .with_max_level(tracing::Level::INFO)
            .event_format(UserMessages)
            .try_init(),
        Ok(level) => {
            let level = match level.to_ascii_lowercase().as_str() {
                "error" => tracing::Level::ERROR,
                "warn" => tracing::Level::WARN,
                "info" => tracing::Level::INFO,
                "trace" => tracing::Level::TRACE,
                _ => tracing::Level::DEBUG,
            };
            builder
                .with_max_level(level)
                .with_target(false)
                .with_timer(tracing_subscriber::fmt::time::uptime())
                .try_init()
        }
    };
    if let Err(e) = installed {
        eprintln!("rvmm: warning: cannot set up logging: {e}");
    }
}

/// The error and each cause its message does not already include, on one line ("a: b: c"), as
/// anyhow's `{:#}`: a corrupt payload says which decompressor failed and where, not only that
/// unpacking failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

fn main() -> ExitCode {
    init_logging();
    let action = match rvmm_cli::parse_args(std::env::args_os().skip(1)) {
        Ok(action) => action,
        Err(e) => {
            eprintln!("rvmm: {}", chain(&e));
            return ExitCode::from(ERROR_STATUS);
        }
    };
    match action {
        Action::Help => {
            print!("{}", rvmm_cli::help_text());
            ExitCode::SUCCESS
        }
        Action::CpuHelp => {
            print!("{}", rvmm_cli::cpu_help_text());
            ExitCode::SUCCESS
        }
        Action::DeviceHelp(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Action::Version => {
            println!("{}", rvmm_cli::version_text());
            ExitCode::SUCCESS
        }
        Action::Run(config) => {
            TIMESTAMPS.store(config.process.msg_timestamp, Ordering::Relaxed);
            run(&config)
        }
    }
}

fn run(config: &rvmm_cli::VmConfig) -> ExitCode {
    match rvmm_vmm::run(config) {
        Ok(status) => ExitCode::from((status & 0xff) as u8),
        Err(e) => {
            eprintln!("{}rvmm: {}", timestamp(), chain(&e));
            ExitCode::from(ERROR_STATUS)
        }
    }
}
