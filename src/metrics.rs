//! Metrics in the Prometheus text format (`[metrics]`): what the runs did, per rule, and what the
//! HTTP clients sent, per service. Served on `GET /metrics` by the service (`listen`) and/or
//! written atomically to a `.prom` file for node_exporter's textfile collector (`textfile`).
//!
//! Fed from where things happen, through two narrow doors: [`Metrics::record_run`] (and its
//! siblings) with what the engine reports of each run, and [`RequestObserver`], which the HTTP
//! client calls for every attempt. Nothing here reaches into the engine or the clients.
//!
//! The names, all prefixed `jira_gitlab_sync_`:
//! - `last_success_timestamp_seconds{rule}`: when a run of the rule last finished its walk
//!   (outcome `ok` or `partial`), Unix seconds. Absent until one has, in this process.
//! - `cycle_duration_seconds{rule}`: how long the rule's last run took.
//! - `runs_total{rule,outcome}`: runs by outcome (`ok`, `partial`, `cancelled`, `failed`).
//! - `issues_created_total`, `issues_closed_total`, `issues_reopened_total`,
//!   `issues_updated_total`, `issues_failed_total`, each `{rule}`: GitLab writes made, and
//!   issues that failed (each failed attempt counts).
//! - `open_failures{rule}`: issues waiting for a retry, as the store holds them after the run.
//! - `replication_lag_seconds{rule}`: a histogram of the time from a change in Jira (the
//!   issue's `updated`, by Jira's clock) to its GitLab write. Live runs only: a backfill's
//!   history would only measure its age.
//! - `requests_total{service,status}`: request attempts to `jira` or `gitlab`, by status class
//!   (`2xx`, `3xx`, `4xx`, `5xx`, or `no_answer` when none came); retries count each attempt.
//! - `rate_limited_total{service}`: 429 answers.
//! - `webhooks_received_total`: requests to the service's `POST /webhook/jira` (`[webhook]`);
//!   `webhooks_rejected_total{reason}` (`unsigned`, `bad_signature`, `too_large`, `malformed`,
//!   `too_slow`)
//!   and `webhooks_ignored_total{reason}` (`repeated`, `no_issue`) are among them.
//! - `webhook_lag_seconds{rule}`: a histogram of the time from a webhook's receipt to the GitLab
//!   write of the issue it named, by the run it woke.
//! - `build_info{version}`: 1.
//!
//! Counters count from the start of the process: for the service, since it started; in a
//! textfile written by `--once` or `backfill`, that one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::domain::{RunCounts, RunOutcome};
use crate::engine::backfill::BackfillReport;
use crate::engine::{EngineError, RunReport};
use crate::http::RequestObserver;

/// The `Content-Type` of what [`Metrics::render`] writes (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The lag histogram's buckets, in seconds: from seconds (a busy schedule) to a day (an
/// outage), around the default two-minute schedule plus Jira Cloud's index lag.
const LAG_BUCKETS: [f64; 13] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 10_800.0, 21_600.0, 43_200.0,
    86_400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    rule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The webhook lag histogram's buckets, in seconds: the service wakes a rule within 250 ms of a
/// webhook, and its run writes within a second or two; the long tail is a run already going.
const WEBHOOK_LAG_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0];

fn webhook_lag_histogram() -> Histogram {
    Histogram::new(WEBHOOK_LAG_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

/// The process's metrics. Shared (`Arc`) between the runs, the HTTP clients and the exporters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    last_success: Family<RuleLabel, FloatGauge>,
    cycle_duration: Family<RuleLabel, FloatGauge>,
    runs: Family<RunLabels, Counter>,
    created: Family<RuleLabel, Counter>,
    closed: Family<RuleLabel, Counter>,
    reopened: Family<RuleLabel, Counter>,
    updated: Family<RuleLabel, Counter>,
    failed: Family<RuleLabel, Counter>,
    open_failures: Family<RuleLabel, Gauge>,
    lag: Family<RuleLabel, Histogram, fn() -> Histogram>,
    requests: Family<RequestLabels, Counter>,
    rate_limited: Family<ServiceLabel, Counter>,
    /// Remote links on Jira (`link_back`), by rule and outcome (`sent`, `failed`).
    links: Family<RunLabels, Counter>,
    webhooks_received: Counter,
    webhooks_rejected: Family<ReasonLabel, Counter>,
    webhooks_ignored: Family<ReasonLabel, Counter>,
    webhook_lag: Family<RuleLabel, Histogram, fn() -> Histogram>,
    /// One textfile write at a time: the service's workers report their runs concurrently.
    textfile: std::sync::Mutex<()>,
}

impl Metrics {
    /// Metrics for `rules` (in config order): their counters start at 0, so a rule that has
    /// done nothing yet shows 0 rather than nothing.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("jira_gitlab_sync");
        let m = Metrics {
            last_success: Family::default(),
            cycle_duration: Family::default(),
            runs: Family::default(),
            created: Family::default(),
            closed: Family::default(),
            reopened: Family::default(),
            updated: Family::default(),
            failed: Family::default(),
            open_failures: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            requests: Family::default(),
            rate_limited: Family::default(),
            links: Family::default(),
            webhooks_received: Counter::default(),
            webhooks_rejected: Family::default(),
            webhooks_ignored: Family::default(),
            webhook_lag: Family::new_with_constructor(webhook_lag_histogram),
            registry: Registry::default(),
            textfile: std::sync::Mutex::new(()),
        };
        registry.register(
            "build",
            "The version running",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When a run of the rule last finished its walk (outcome ok or partial), Unix seconds",
            m.last_success.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "How long the rule's last run took",
            m.cycle_duration.clone(),
        );
        registry.register(
            "runs",
            "Runs of the rule, by outcome (ok, partial, cancelled, failed)",
            m.runs.clone(),
        );
        for (name, help, family) in [
            ("issues_created", "Objects created in GitLab", &m.created),
            ("issues_closed", "Objects closed in GitLab", &m.closed),
            ("issues_reopened", "Objects reopened in GitLab", &m.reopened),
            (
                "issues_updated",
                "Objects whose title, description or labels were rewritten in GitLab",
                &m.updated,
            ),
            (
                "issues_failed",
                "Issues that failed to replicate (each failed attempt; retried after a backoff)",
                &m.failed,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "open_failures",
            "Issues of the rule waiting for a retry, after its last run",
            m.open_failures.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "From a change in Jira (the issue's updated time, by Jira's clock) to its GitLab write",
            m.lag.clone(),
        );
        registry.register(
            "requests",
            "HTTP request attempts, by service and status class (no_answer: none came)",
            m.requests.clone(),
        );
        registry.register(
            "rate_limited",
            "429 Too Many Requests answers, by service",
            m.rate_limited.clone(),
        );
        registry.register(
            "remote_links",
            "Remote links put on Jira issues (jira.link_back), by outcome: sent, or failed (each \
             failed attempt; retried after a backoff)",
            m.links.clone(),
        );
        registry.register(
            "webhooks_received",
            "Requests to POST /webhook/jira ([webhook]), whatever became of them",
            m.webhooks_received.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused: unsigned, bad_signature (401), too_large (413), malformed (400), too_slow (408)",
            m.webhooks_rejected.clone(),
        );
        registry.register(
            "webhooks_ignored",
            "Webhook requests answered 200 that woke nothing: repeated (a retry), no_issue",
            m.webhooks_ignored.clone(),
        );
        registry.register(
            "webhook_lag_seconds",
            "From a webhook's receipt to the GitLab write of the issue it named",
            m.webhook_lag.clone(),
        );
        for rule in rules {
            let l = rule_label(rule);
            for family in [&m.created, &m.closed, &m.reopened, &m.updated, &m.failed] {
                drop(family.get_or_create(&l));
            }
        }
        Metrics { registry, ..m }
    }

    /// What one run reported.
    pub fn record_run(&self, report: &RunReport) {
        let l = rule_label(&report.rule);
        self.count_run(&report.rule, report.outcome);
        if matches!(report.outcome, RunOutcome::Ok | RunOutcome::Partial) {
            self.last_success.get_or_create(&l).set(unix_now());
        }
        self.cycle_duration
            .get_or_create(&l)
            .set(report.elapsed_ms as f64 / 1000.0);
        self.add_counts(&l, &report.counts);
        let lag = self.lag.get_or_create(&l);
        for d in &report.lags {
            lag.observe(d.as_secs_f64());
        }
        self.count_links(&report.rule, &report.links);
    }

    /// What a run's link pass did (`link_back`); nothing shows until a link was sent or failed.
    fn count_links(&self, rule: &str, links: &crate::engine::link_back::LinkReport) {
        for (outcome, n) in [("sent", links.sent), ("failed", links.failed)] {
            if n > 0 {
                self.links
                    .get_or_create(&RunLabels {
                        rule: rule.to_owned(),
                        outcome: outcome.to_owned(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// A run of `rule` that stopped with an error (Jira or GitLab down, a refused token…),
    /// after `elapsed`.
    pub fn record_failed_run(&self, rule: &str, elapsed: Duration) {
        self.count_run(rule, RunOutcome::Failed);
        self.cycle_duration
            .get_or_create(&rule_label(rule))
            .set(elapsed.as_secs_f64());
    }

    /// How a run of `rule` ended after `elapsed`: its report, or the error that stopped it.
    pub fn record(&self, rule: &str, result: &Result<RunReport, EngineError>, elapsed: Duration) {
        match result {
            Ok(report) => self.record_run(report),
            Err(_) => self.record_failed_run(rule, elapsed),
        }
    }

    /// What a backfill of one rule wrote. It is no sync cycle: neither the last success nor
    /// the cycle's duration moves, and history's lag is not replication lag.
    pub fn record_backfill(&self, report: &BackfillReport) {
        self.add_counts(&rule_label(&report.rule), &report.counts);
        self.count_links(&report.rule, &report.links);
    }

    /// A request to the webhook endpoint, and why it was refused or ignored, if it was.
    pub fn webhook(&self, reason: &str, rejected: bool, ignored: bool) {
        self.webhooks_received.inc();
        let l = ReasonLabel {
            reason: reason.to_owned(),
        };
        if rejected {
            self.webhooks_rejected.get_or_create(&l).inc();
        } else if ignored {
            self.webhooks_ignored.get_or_create(&l).inc();
        }
    }

    /// A run of `rule` wrote an issue `lag` after a webhook named it.
    pub fn webhook_lag(&self, rule: &str, lag: Duration) {
        self.webhook_lag
            .get_or_create(&rule_label(rule))
            .observe(lag.as_secs_f64());
    }

    /// How many issues of `rule` wait for a retry.
    pub fn set_open_failures(&self, rule: &str, count: usize) {
        self.open_failures
            .get_or_create(&rule_label(rule))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn count_run(&self, rule: &str, outcome: RunOutcome) {
        self.runs
            .get_or_create(&RunLabels {
                rule: rule.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    fn add_counts(&self, l: &RuleLabel, c: &RunCounts) {
        for (family, n) in [
            (&self.created, c.created),
            (&self.closed, c.closed),
            (&self.reopened, c.reopened),
            (&self.updated, c.updated),
            (&self.failed, c.failed),
        ] {
            family.get_or_create(l).inc_by(n);
        }
    }

    /// Every metric, in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every name and label is well formed.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Replaces the file at `path` with [`Metrics::render`]'s text, atomically: a reader (the
    /// textfile collector) sees the old file or the new one, never half of one. The file is
    /// made readable by every user (0644): node_exporter runs as another user, and metrics
    /// hold rule names and counts, nothing secret.
    ///
    /// # Errors
    /// The file cannot be written or renamed into place.
    pub fn write_textfile(&self, path: &Path) -> Result<(), MetricsError> {
        let _one_at_a_time = self
            .textfile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = self.render();
        let fail = |source: std::io::Error| MetricsError::Textfile {
            path: path.to_path_buf(),
            source,
        };
        let temp = temp_beside(path);
        let written = std::fs::write(&temp, text).and_then(|()| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))?;
            }
            std::fs::rename(&temp, path)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(e));
        }
        Ok(())
    }

    /// Serves `GET /metrics` on `listener` until `cancel` fires.
    ///
    /// # Errors
    /// The listener fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        use axum::http::header;
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(
                    |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                        ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render())
                    },
                ),
            )
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }
}

/// Counts each attempt by service and status class, and 429s apart.
impl RequestObserver for Metrics {
    fn attempt(&self, service: &'static str, status: Option<u16>) {
        let service = service.to_ascii_lowercase();
        let class = match status {
            Some(s) => format!("{}xx", s / 100),
            None => "no_answer".to_owned(),
        };
        if status == Some(429) {
            self.rate_limited
                .get_or_create(&ServiceLabel {
                    service: service.clone(),
                })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                service,
                status: class,
            })
            .inc();
    }

    fn waiting(&self, _: &'static str, _: Duration) {}
}

fn rule_label(rule: &str) -> RuleLabel {
    RuleLabel {
        rule: rule.to_owned(),
    }
}

fn unix_now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0
}

/// A hidden file beside `path` for this process (node_exporter reads only `*.prom`).
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Why metrics cannot be served or written. Each names the setting to check.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot serve metrics on {addr}: check metrics.listen (another process may use the port)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write the metrics file {}: check metrics.textfile, and that its directory exists \
         and is writable by the user the sync runs as",
        path.display()
    )]
    Textfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the metrics listener at `addr` (before the service says it is ready, so a port in use
/// fails the start).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Whether the textfile's directory takes new files: a file is created there and removed at
/// once. `None` if it does; else why not.
pub fn textfile_unwritable(path: &Path) -> Option<String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let probe = temp_beside(path);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!("cannot create files in {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunMode;

    fn report(rule: &str, outcome: RunOutcome, created: u64, lags: &[u64]) -> RunReport {
        RunReport {
            rule: rule.into(),
            mode: RunMode::Service,
            run_id: Some(1),
            outcome,
            counts: RunCounts {
                seen: created,
                created,
                closed: 1,
                ..RunCounts::default()
            },
            failures: Vec::new(),
            planned: Vec::new(),
            jira_requests: 1,
            timestamps_ignored: false,
            incidents_filed_as_issues: false,
            reconcile: None,
            links: Default::default(),
            elapsed_ms: 1_500,
            lags: lags.iter().map(|s| Duration::from_secs(*s)).collect(),
            written: Box::default(),
        }
    }

    /// The value of the sample `series` (name and labels, as written) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// The remote links a run sent and failed (`link_back`) count under its rule and outcome.
    #[test]
    fn remote_links_are_counted() {
        let m = Metrics::new(["ops"]);
        let mut r = report("ops", RunOutcome::Ok, 1, &[]);
        r.links = crate::engine::link_back::LinkReport { sent: 3, failed: 1 };
        m.record_run(&r);
        m.record_run(&r);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                "jira_gitlab_sync_remote_links_total{rule=\"ops\",outcome=\"sent\"}"
            ),
            Some(6.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "jira_gitlab_sync_remote_links_total{rule=\"ops\",outcome=\"failed\"}"
            ),
            Some(2.0)
        );
    }

    /// A run's report moves its rule's counters, duration, last success and lag histogram.
    #[test]
    fn a_run_is_counted_under_its_rule() {
        let m = Metrics::new(["ops", "other"]);
        m.record_run(&report("ops", RunOutcome::Ok, 2, &[10, 200]));
        m.record_run(&report("ops", RunOutcome::Partial, 3, &[]));
        m.record_failed_run("ops", Duration::from_millis(250));
        m.set_open_failures("ops", 4);
        let text = m.render();
        let s = |series: &str| sample(&text, series);
        assert_eq!(
            s("jira_gitlab_sync_issues_created_total{rule=\"ops\"}"),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            s("jira_gitlab_sync_issues_closed_total{rule=\"ops\"}"),
            Some(2.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_issues_created_total{rule=\"other\"}"),
            Some(0.0),
            "a configured rule shows 0 before it does anything"
        );
        for (outcome, n) in [("ok", 1.0), ("partial", 1.0), ("failed", 1.0)] {
            assert_eq!(
                s(&format!(
                    "jira_gitlab_sync_runs_total{{rule=\"ops\",outcome=\"{outcome}\"}}"
                )),
                Some(n),
                "{text}"
            );
        }
        assert_eq!(
            s("jira_gitlab_sync_cycle_duration_seconds{rule=\"ops\"}"),
            Some(0.25),
            "the last run's duration"
        );
        assert_eq!(s("jira_gitlab_sync_open_failures{rule=\"ops\"}"), Some(4.0));
        let success = s("jira_gitlab_sync_last_success_timestamp_seconds{rule=\"ops\"}")
            .expect("a success is recorded");
        assert!(
            (success - unix_now()).abs() < 60.0,
            "now, in Unix seconds: {success}"
        );
        assert_eq!(
            s("jira_gitlab_sync_last_success_timestamp_seconds{rule=\"other\"}"),
            None,
            "no success, no sample"
        );
        assert_eq!(
            s("jira_gitlab_sync_replication_lag_seconds_bucket{rule=\"ops\",le=\"15\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            s("jira_gitlab_sync_replication_lag_seconds_count{rule=\"ops\"}"),
            Some(2.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_replication_lag_seconds_sum{rule=\"ops\"}"),
            Some(210.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_build_info{version=\"0.1.0\"}").map(|_| ()),
            Some(()),
            "{text}"
        );
    }

    /// Each request attempt is counted by service and status class; 429s also apart.
    #[test]
    fn requests_are_counted_by_service_and_class() {
        let m = Metrics::new([]);
        m.attempt("Jira", Some(200));
        m.attempt("Jira", Some(200));
        m.attempt("GitLab", Some(429));
        m.attempt("GitLab", Some(201));
        m.attempt("GitLab", None);
        let text = m.render();
        let s = |series: &str| sample(&text, series);
        assert_eq!(
            s("jira_gitlab_sync_requests_total{service=\"jira\",status=\"2xx\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            s("jira_gitlab_sync_requests_total{service=\"gitlab\",status=\"4xx\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_requests_total{service=\"gitlab\",status=\"no_answer\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_rate_limited_total{service=\"gitlab\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("jira_gitlab_sync_rate_limited_total{service=\"jira\"}"),
            None
        );
    }

    /// The textfile is replaced whole, readable by node_exporter, and leaves no temp file.
    #[test]
    fn the_textfile_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.prom");
        std::fs::write(&path, "old").unwrap();
        let m = Metrics::new(["ops"]);
        m.write_textfile(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, m.render());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["sync.prom"], "no temp file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let missing = dir.path().join("no/such/dir/sync.prom");
        let err = m.write_textfile(&missing).unwrap_err();
        assert!(err.to_string().contains("metrics.textfile"), "{err}");
        assert!(textfile_unwritable(&missing).is_some());
        assert_eq!(textfile_unwritable(&path), None);
    }
}
