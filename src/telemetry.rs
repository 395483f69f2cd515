//! Logging setup: the only place that touches the tracing subscriber.
//!
//! Human-readable lines on a terminal, JSON lines under systemd (journald sets
//! `JOURNAL_STREAM`) or when asked, filtered by `RUST_LOG` (default `info`). Logs go to stderr;
//! stdout is kept for what a command prints on purpose (`--dry-run` plans, `status`, `check`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON under systemd (journald), human otherwise.
    Auto,
    Human,
    Json,
}

/// Installs the global subscriber with `default_filter` unless `RUST_LOG` says otherwise, and
/// returns the format in force ([`LogFormat::Human`] or [`LogFormat::Json`], never `Auto`).
/// Call once, first thing.
pub fn init(format: LogFormat, default_filter: &str) -> LogFormat {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .try_init()
    };
    if json {
        LogFormat::Json
    } else {
        LogFormat::Human
    }
}
