//! A backfill's progress: a bar on a terminal, log lines elsewhere.

use std::time::{Duration, Instant};

use jira_gitlab_sync::domain::RunCounts;
use jira_gitlab_sync::engine::backfill::Progress;
use jira_gitlab_sync::telemetry;
use tracing::info;

/// Progress on a terminal: an indicatif bar (done/total, rate, ETA). While it shows, the
/// per-issue INFO log lines are kept for `RUST_LOG=debug`, so they do not drown it.
pub struct BarProgress {
    bar: indicatif::ProgressBar,
    _quiet: telemetry::QuietIssues,
}

impl BarProgress {
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            _quiet: telemetry::quiet_issue_logs(),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for BarProgress {
    fn total(&self, total: Option<u64>) {
        if let Some(t) = total {
            self.bar.set_length(t);
            self.bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} issues {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        }
    }

    fn advance(&self, done: u64, c: &RunCounts) {
        self.bar.set_position(done);
        self.bar.set_message(format!(
            "created {} closed {} skipped {} failed {}",
            c.created, c.closed, c.skipped, c.failed
        ));
    }
}

/// Progress off a terminal: a log line every few seconds.
pub struct LogProgress {
    every: Duration,
    state: std::sync::Mutex<(Instant, Option<u64>)>,
    started: Instant,
}

impl LogProgress {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((Instant::now(), None)),
            started: Instant::now(),
        }
    }
}

impl Progress for LogProgress {
    fn total(&self, total: Option<u64>) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = total;
        }
        info!(total = ?total, "backfill started");
    }

    fn advance(&self, done: u64, c: &RunCounts) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.0.elapsed() < self.every {
            return;
        }
        s.0 = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        info!(
            done,
            total = ?s.1,
            per_sec = format!("{rate:.1}"),
            created = c.created,
            closed = c.closed,
            skipped = c.skipped,
            failed = c.failed,
            "backfill progress"
        );
    }
}
