//! Logging setup: the only place that touches the tracing subscriber.
//!
//! Human-readable lines on a terminal, JSON lines under systemd's journal or when asked,
//! filtered by `RUST_LOG` (default `info`). Logs go to stderr; stdout is kept for what a command
//! prints on purpose (`--dry-run` plans, `status`, `check`).
//!
//! **Journal priorities.** When stderr is the journal (`JOURNAL_STREAM` names its device and
//! inode, as systemd.exec(5) says to check), every line starts with the sd-daemon(3) priority
//! prefix: `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace. journald takes the
//! prefix off and files the line at that priority (`journalctl -p warning` works), so what the
//! journal stores is the line alone: a JSON line stays pure JSON. Anywhere else (a terminal, a
//! cron log, a pipe) no line has a prefix.
//!
//! **Quiet issues.** While a progress bar shows ([`quiet_issue_logs`]), the per-issue INFO lines
//! (those inside an `issue` span: "created in GitLab", …) are kept for `RUST_LOG=debug`, so the
//! bar is not drowned; warnings and errors still show.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is systemd's journal, human otherwise.
    Auto,
    Human,
    Json,
}

/// Whether stderr was found to be the journal, once [`init`] ran.
static JOURNAL: OnceLock<bool> = OnceLock::new();

/// While set, per-issue INFO lines are kept for debug (a progress bar shows).
static QUIET_ISSUES: AtomicBool = AtomicBool::new(false);

/// The name of the span the engine opens around each issue it applies.
const ISSUE_SPAN: &str = "issue";

/// Installs the global subscriber with `default_filter` unless `RUST_LOG` says otherwise, and
/// returns the format in force ([`LogFormat::Human`] or [`LogFormat::Json`], never `Auto`).
/// Call once, first thing.
pub fn init(format: LogFormat, default_filter: &str) -> LogFormat {
    let filter = filter_from(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let journal = *JOURNAL.get_or_init(stderr_is_journal);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => journal,
    };
    let writer = Stderr { journal };
    let quiet = tracing_subscriber::filter::dynamic_filter_fn(keep_unless_quieted);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true);
        tracing_subscriber::registry()
            .with(filter)
            .with(quiet)
            .with(layer)
            .try_init()
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(!journal && std::io::stderr().is_terminal())
            .compact();
        tracing_subscriber::registry()
            .with(filter)
            .with(quiet)
            .with(layer)
            .try_init()
    };
    if json {
        LogFormat::Json
    } else {
        LogFormat::Human
    }
}

/// The filter `RUST_LOG` (`rust_log`) asks for, else `default_filter`: comma-separated
/// `level` and `target=level` directives (`debug`, `jira_gitlab_sync=debug,warn`). Span and
/// field filters (`[span{field=value}]`) are not read: matching them needs a regex engine and a
/// per-span filter, which a daemon pays for in memory and on every issue; a `RUST_LOG` that is
/// not understood gives the default.
fn filter_from(rust_log: Option<&str>, default_filter: &str) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .or_else(|| default_filter.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Keeps per-issue INFO lines quiet while it lives (a progress bar shows): they are logged
/// only if debug is enabled. Warnings and errors are never held back.
pub fn quiet_issue_logs() -> QuietIssues {
    QUIET_ISSUES.store(true, Ordering::Relaxed);
    QuietIssues(())
}

/// See [`quiet_issue_logs`]; dropping it lets per-issue INFO lines through again.
#[derive(Debug)]
pub struct QuietIssues(());

impl Drop for QuietIssues {
    fn drop(&mut self) {
        QUIET_ISSUES.store(false, Ordering::Relaxed);
    }
}

/// The filter of [`quiet_issue_logs`]: false for an INFO event inside an issue's span while
/// issues are quiet and debug is off.
fn keep_unless_quieted<S>(meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !meta.is_event()
        || *meta.level() != Level::INFO
        || !QUIET_ISSUES.load(Ordering::Relaxed)
        || LevelFilter::current() >= LevelFilter::DEBUG
    {
        return true;
    }
    let in_issue = cx
        .lookup_current()
        .is_some_and(|span| span.scope().any(|s| s.name() == ISSUE_SPAN));
    !in_issue
}

/// Returns true if and only if stderr is systemd's journal: `JOURNAL_STREAM` holds
/// `DEVICE:INODE`, and stderr is that stream (systemd.exec(5): the variable is inherited by
/// children whose stderr may go elsewhere, so it is compared, not just read).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    journal_stream_matches(value.to_str().unwrap_or(""), &std::io::stderr())
}

#[cfg(unix)]
fn journal_stream_matches(value: &str, stream: &impl std::os::fd::AsFd) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = stream.as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

#[cfg(not(unix))]
fn journal_stream_matches(_: &str, _: &std::io::Stderr) -> bool {
    false
}

/// The sd-daemon(3) prefix of `level`: `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
/// trace.
pub fn priority_prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Writes `text` on stderr (a newline added), each line led by `level`'s priority prefix when
/// stderr is the journal: for what a command tells a person there (`error: …`), outside the log.
pub fn eprint_lines(level: Level, text: &str) {
    let journal = JOURNAL.get().copied().unwrap_or(false);
    let mut out = Vec::with_capacity(text.len() + 8);
    write_prefixed(
        &mut out,
        journal.then(|| priority_prefix(level)),
        true,
        text.as_bytes(),
    );
    out.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&out);
}

/// Appends `bytes` to `out` with `prefix` at the start of each line (`at_start`: `bytes` begins
/// a line); returns whether the next byte would begin a line.
fn write_prefixed(out: &mut Vec<u8>, prefix: Option<&str>, at_start: bool, bytes: &[u8]) -> bool {
    let Some(prefix) = prefix else {
        out.extend_from_slice(bytes);
        return bytes.last().map_or(at_start, |b| *b == b'\n');
    };
    let mut at_start = at_start;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if at_start {
            out.extend_from_slice(prefix.as_bytes());
        }
        out.extend_from_slice(line);
        at_start = line.ends_with(b"\n");
    }
    at_start
}

/// Log lines go to stderr, each with its priority prefix when stderr is the journal.
#[derive(Clone, Copy, Debug)]
struct Stderr {
    journal: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            prefix: None,
            at_start: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            prefix: self.journal.then(|| priority_prefix(*meta.level())),
            at_start: true,
        }
    }
}

/// One event's writer: its lines, prefixed, to stderr in one write.
struct LineWriter {
    prefix: Option<&'static str>,
    at_start: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 8);
        self.at_start = write_prefixed(&mut out, self.prefix, self.at_start, buf);
        std::io::stderr().lock().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RUST_LOG`'s level and target directives are read; an empty or unreadable one gives the
    /// default.
    #[test]
    fn rust_log_directives() {
        let default = "info,tokio_cron_scheduler=warn";
        let f = filter_from(Some("jira_gitlab_sync=debug,warn"), default);
        assert!(f.would_enable("jira_gitlab_sync::engine", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::WARN));
        let f = filter_from(Some("debug"), default);
        assert!(f.would_enable("anything", &Level::DEBUG));
        for unread in [None, Some(""), Some("  "), Some("=[{")] {
            let f = filter_from(unread, default);
            assert!(
                f.would_enable("jira_gitlab_sync", &Level::INFO),
                "{unread:?}"
            );
            assert!(
                !f.would_enable("jira_gitlab_sync", &Level::DEBUG),
                "{unread:?}"
            );
            assert!(
                !f.would_enable("tokio_cron_scheduler::job", &Level::INFO),
                "{unread:?}"
            );
        }
    }

    /// Every line of a write gets the prefix, also across writes that split a line.
    #[test]
    fn each_line_is_prefixed() {
        let mut out = Vec::new();
        let at = write_prefixed(&mut out, Some("<4>"), true, b"one\ntwo\nthr");
        assert!(!at);
        let at = write_prefixed(&mut out, Some("<4>"), at, b"ee\n");
        assert!(at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<4>one\n<4>two\n<4>three\n"
        );
        let mut plain = Vec::new();
        write_prefixed(&mut plain, None, true, b"one\ntwo\n");
        assert_eq!(plain, b"one\ntwo\n");
    }

    /// `JOURNAL_STREAM` matches only the stream whose device and inode it names.
    #[test]
    fn journal_stream_is_compared_with_the_stream() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("stream")).unwrap();
        let other = std::fs::File::create(dir.path().join("other")).unwrap();
        let m = file.metadata().unwrap();
        let value = format!("{}:{}", m.dev(), m.ino());
        assert!(journal_stream_matches(&value, &file));
        assert!(!journal_stream_matches(&value, &other), "another file");
        assert!(!journal_stream_matches("", &file));
        assert!(!journal_stream_matches("12", &file));
        assert!(!journal_stream_matches("a:b", &file));
    }

    /// The priorities are sd-daemon's.
    #[test]
    fn priorities_are_sd_daemon_s() {
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority_prefix),
            ["<3>", "<4>", "<6>", "<7>", "<7>"]
        );
    }
}
