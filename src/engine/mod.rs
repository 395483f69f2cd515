//! The sync engine: one run of one rule. It walks Jira's changes since the rule's cursor, plans
//! each snapshot against the mapping the store holds ([`plan`]), replays the plan to GitLab, and
//! commits each step with the cursor it covers.
//!
//! Guarantees, and how they are kept:
//! - **Nothing lost.** The search starts at the cursor, which only advances to what was committed
//!   (never past the oldest change still in flight) and never past `start − lookback` (Jira
//!   Cloud's index lags), so each cycle re-reads the look-back once (`cycle`). Pages are
//!   walked by re-querying from the last `updated` seen rather than by deep offsets (`walk`), so
//!   issues that change while we page cannot shift others out of view. A failed issue is stored
//!   with its snapshot and retried without asking Jira again, once its backoff is over (a
//!   minute, doubling, at most six hours).
//! - **Nothing twice.** A snapshot no newer than the mapping's is skipped. Before every create an
//!   intent is committed; a create whose answer was lost, or a run killed before its commit, is
//!   followed by a lookup (the browse link in the description) before any new create
//!   (`execute`).
//! - **Exact times.** GitLab is asked for Jira's `created` and resolution time; what it stored is
//!   read back, and a token that cannot backdate (not Owner) is reported once per project.
//!
//! # Layout
//! - [`ports`]: the three interfaces the engine drives and [`PortError`], how their errors
//!   classify themselves.
//! - [`plan`]: the pure planner (snapshot + mapping → one action). [`render`]: what an issue
//!   becomes in GitLab. [`jql`]: the queries.
//! - `cycle`: the live run ([`SyncEngine::run_rule`]); [`backfill`]: history; [`reconcile`]:
//!   following every replicated issue by id until it is resolved.
//! - [`history`]: `[rule.stage_labels]`, `created_from` and `closed_from` from Jira's
//!   changelog.
//! - [`link_back`]: remote links on Jira issues to their GitLab objects (`[jira] link_back`).
//! - `walk`: the page walker both share. `execute`: the executor both share. `zone`: the Jira
//!   account's time zone. `incident`: an incident's severity and timeline events, after the
//!   executor's write.
//! - [`dry_run`]: `--dry-run` as wrappers over the ports, so a dry run executes the same code.
//!
//! The engine speaks only to the ports, and decides what a failure means only through
//! [`PortError`], never from a message.

pub mod backfill;
mod cycle;
pub use cycle::{IDLE_CHECKPOINT, checked_meta_key};
pub mod dry_run;
mod execute;
pub mod history;
mod incident;
pub mod jql;
pub mod link_back;
pub mod plan;
pub mod ports;
pub mod reconcile;
pub mod render;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
mod walk;
mod zone;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, RuleConfig};
use crate::domain::{JiraKey, RemoteObject, RunCounts, RunMode, RunOutcome};
use crate::http::RetryPolicy;
use ports::{GitLabSink, JiraSource, Place, PortError, ResolvedProject, SyncStore};
use zone::{AccountZone, ZoneError};

/// GitLab answers that say it is down (a failed connection, a server error), after the HTTP
/// layer's own retries, for this many issues in a row stop a run: the rest waits for the next
/// cycle instead of spending its retries on every pending issue.
pub const OUTAGE_STREAK: u32 = 3;

/// What the engine needs from the configuration.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub lookback: Duration,
    /// Issues applied at once, in a live cycle as in a backfill (`sync.backfill_concurrency`).
    pub concurrency: usize,
    /// How often open mappings are re-read by id.
    pub reconcile: Duration,
    /// The Jira account's zone, when configured instead of read from `/myself`.
    pub time_zone: Option<Tz>,
    pub retry: RetryPolicy,
    /// Once a run is asked to stop, how long the action in flight may take before it is
    /// abandoned and the run recorded as cancelled.
    pub shutdown_grace: Duration,
    /// With `[jira] link_back`: what a remote link to a GitLab object needs.
    pub link_back: Option<link_back::LinkBackSettings>,
}

impl EngineSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            lookback: cfg.sync.lookback,
            concurrency: cfg.sync.backfill_concurrency.max(1),
            reconcile: cfg.sync.reconcile,
            time_zone: cfg.jira.time_zone,
            retry: cfg.sync.retry.clone(),
            shutdown_grace: cfg.sync.shutdown_grace,
            link_back: cfg
                .jira
                .link_back
                .then(|| link_back::LinkBackSettings::new(&cfg.gitlab.url)),
        }
    }
}

/// A port's error, kept whole: its message, its chain and its classification.
#[derive(Debug)]
pub struct Cause(Box<dyn PortError>);

impl Cause {
    fn new(e: impl PortError) -> Self {
        Self(Box::new(e))
    }

    /// The adapter's own error, for callers that know which adapter they built.
    pub fn downcast_ref<E: PortError>(&self) -> Option<&E> {
        let e: &(dyn std::error::Error + 'static) = &*self.0;
        e.downcast_ref()
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rule {rule:?}: Jira failed")]
    Jira {
        rule: String,
        #[source]
        source: Cause,
    },
    #[error("rule {rule:?}: GitLab refused {jira_key}, stopping the run")]
    GitLab {
        rule: String,
        jira_key: JiraKey,
        #[source]
        source: Cause,
    },
    #[error(
        "rule {rule:?}: GitLab looks down ({failures} issues in a row failed, the last {jira_key}); \
         the rest waits for the next cycle"
    )]
    Outage {
        rule: String,
        jira_key: JiraKey,
        failures: u32,
        #[source]
        source: Cause,
    },
    #[error("rule {rule:?}: the store failed")]
    Store {
        rule: String,
        #[source]
        source: Cause,
    },
    #[error("rule {rule:?}: cannot resolve gitlab_project {project:?}")]
    Project {
        rule: String,
        project: String,
        #[source]
        source: Cause,
    },
}

impl EngineError {
    fn jira(rule: &RuleConfig, e: impl PortError) -> Self {
        EngineError::Jira {
            rule: rule.name.clone(),
            source: Cause::new(e),
        }
    }

    fn store(rule: &RuleConfig, e: impl PortError) -> Self {
        EngineError::Store {
            rule: rule.name.clone(),
            source: Cause::new(e),
        }
    }

    fn cause(&self) -> &Cause {
        match self {
            EngineError::Jira { source, .. }
            | EngineError::GitLab { source, .. }
            | EngineError::Outage { source, .. }
            | EngineError::Store { source, .. }
            | EngineError::Project { source, .. } => source,
        }
    }

    /// Returns true if and only if the next cycle may succeed with no change of configuration
    /// (an outage), as opposed to credentials, permissions, a bad query or a broken store.
    pub fn is_retryable(&self) -> bool {
        self.cause().0.is_retryable()
    }

    /// The adapter's own error (e.g. `GitLabError`), for callers that know which they built.
    pub fn cause_as<E: PortError>(&self) -> Option<&E> {
        self.cause().downcast_ref()
    }
}

/// One issue that failed in a run.
#[derive(Clone, Debug, Serialize)]
pub struct IssueFailure {
    pub jira_key: String,
    pub error: String,
}

/// One GitLab write a run planned (and, outside a dry run, sent).
#[derive(Clone, Debug, Serialize)]
pub struct PlannedAction {
    pub jira_key: JiraKey,
    pub action: &'static str,
    pub title: String,
}

/// What one run of one rule did.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub rule: String,
    pub mode: RunMode,
    pub run_id: Option<i64>,
    pub outcome: RunOutcome,
    pub counts: RunCounts,
    pub failures: Vec<IssueFailure>,
    /// The GitLab writes the run planned, in order (what `--dry-run` prints).
    pub planned: Vec<PlannedAction>,
    /// Search requests sent to Jira.
    pub jira_requests: u64,
    /// GitLab ignored a `created_at` or closing time we sent (the token is not Owner).
    pub timestamps_ignored: bool,
    /// GitLab filed an incident as a plain issue (the token is below Reporter).
    pub incidents_filed_as_issues: bool,
    /// The reconciliation this run made, if one was due.
    pub reconcile: Option<reconcile::ReconcileReport>,
    /// The remote links on Jira the run sent (`[jira] link_back`).
    pub links: link_back::LinkReport,
    pub elapsed_ms: u64,
    /// For each issue the run wrote to GitLab: how long after its change in Jira (the
    /// snapshot's `updated`, by Jira's clock) the write was done. For the metrics' lag
    /// histogram; not part of the report's JSON.
    #[serde(skip)]
    pub lags: Vec<Duration>,
    /// The issues the run wrote to GitLab (live runs), by their Jira ids, with when the write
    /// was done: the service measures from a webhook naming the issue to its write. Not part of
    /// the report's JSON.
    #[serde(skip)]
    pub written: Box<[(String, std::time::Instant)]>,
}

/// The median as GitLab's DORA computes it: the middle value, or the mean of the two middle ones.
pub fn median<T>(v: &mut [T]) -> Option<T>
where
    T: Ord + Copy + std::ops::Add<Output = T> + std::ops::Div<i32, Output = T>,
{
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    })
}

/// How a run ended, from the walk's result: its outcome, and why it stopped if it failed.
fn conclude(result: &Result<bool, EngineError>, failed: u64) -> (RunOutcome, Option<String>) {
    match result {
        Ok(true) if failed > 0 => (RunOutcome::Partial, None),
        Ok(true) => (RunOutcome::Ok, None),
        Ok(false) => (RunOutcome::Cancelled, None),
        Err(e) => (RunOutcome::Failed, Some(error_chain(e))),
    }
}

/// The whole error chain on one line: `outer: inner: root`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Where a snapshot came from: a fresh search moves the cursor, a stored failure or a backfill
/// does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Search,
    Retry,
    Backfill,
    /// Re-read by id in a reconciliation.
    Reconcile,
}

/// The engine, generic over its three ports. For `--dry-run`, wrap the sink and the store in
/// [`dry_run::DryRunSink`] and [`dry_run::DryRunStore`].
pub struct SyncEngine<J, G, S> {
    jira: J,
    gitlab: G,
    store: S,
    settings: EngineSettings,
    zone: AccountZone,
    warned_timestamps: std::sync::Mutex<HashSet<String>>,
    /// Project ids where GitLab filed an incident as a plain issue, warned about once.
    warned_issue_type: std::sync::Mutex<HashSet<u64>>,
    /// Per rule: outages in a row in its current run ([`OUTAGE_STREAK`]).
    outages: std::sync::Mutex<HashMap<String, u32>>,
    /// Configured project → its numeric id, as resolved in this process.
    places: std::sync::Mutex<HashMap<String, u64>>,
    /// Per project id: objects the sync wrote that the store did not know when the project was
    /// first written to in this process (a lost or restored store), by the key their link names.
    adoptable: tokio::sync::Mutex<HashMap<u64, HashMap<JiraKey, RemoteObject>>>,
    /// Jira's clock minus this host's, as the last search answer's `Date` showed it.
    skew: std::sync::Mutex<Option<chrono::Duration>>,
    /// Whether a skew over [`MAX_SKEW`] was warned about (once per process).
    warned_skew: std::sync::atomic::AtomicBool,
    /// Per rule: what its last cycles earned that idle cycles do not write at once.
    marks: std::sync::Mutex<HashMap<String, cycle::Mark>>,
    /// Rule, key and setting of each empty `field:<id>` source warned about (once per issue).
    warned_fields: std::sync::Mutex<HashSet<String>>,
    /// Per rule: when its remote links are due, as known in this process (absent: ask the store).
    links_due: std::sync::Mutex<HashMap<String, link_back::LinksDue>>,
    /// Rules whose incident details GitLab's GraphQL API refused, warned about once
    /// (`incident`).
    graphql_refused: std::sync::Mutex<HashSet<String>>,
}

/// A difference between Jira's clock and this host's beyond this is warned about.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::seconds(60);

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    pub fn new(jira: J, gitlab: G, store: S, settings: EngineSettings) -> Self {
        Self {
            jira,
            gitlab,
            store,
            zone: AccountZone::new(settings.time_zone),
            settings,
            warned_timestamps: std::sync::Mutex::new(HashSet::new()),
            warned_issue_type: std::sync::Mutex::new(HashSet::new()),
            outages: std::sync::Mutex::new(HashMap::new()),
            places: std::sync::Mutex::new(HashMap::new()),
            adoptable: tokio::sync::Mutex::new(HashMap::new()),
            skew: std::sync::Mutex::new(None),
            warned_skew: std::sync::atomic::AtomicBool::new(false),
            marks: std::sync::Mutex::new(HashMap::new()),
            warned_fields: std::sync::Mutex::new(HashSet::new()),
            links_due: std::sync::Mutex::new(HashMap::new()),
            graphql_refused: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Jira's clock minus this host's, as last seen (zero before any answer showed it).
    fn skew(&self) -> chrono::Duration {
        self.skew
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or_else(chrono::Duration::zero)
    }

    /// Records Jira's clock as an answer's `Date` showed it at `here` (this host's clock), and
    /// warns once per process when the two differ by more than [`MAX_SKEW`].
    fn observe_jira_clock(&self, jira: DateTime<Utc>, here: DateTime<Utc>) {
        let skew = jira - here;
        *self
            .skew
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(skew);
        if skew.abs() > MAX_SKEW
            && !self
                .warned_skew
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            warn!(
                skew_secs = skew.num_seconds(),
                "Jira's clock and this host's differ by {} s (Jira minus here): the cursor follows \
                 Jira's clock, so nothing is missed, but fix the clock that is wrong (NTP)",
                skew.num_seconds()
            );
        }
    }

    /// Where `rule` writes, with its project's numeric id: from memory, the store, or (once
    /// ever per configured project) GitLab. A numeric `gitlab_project` is its own id.
    ///
    /// # Errors
    /// The project cannot be resolved (it does not exist, or the token cannot see it), or the
    /// store fails.
    async fn place(&self, rule: &RuleConfig) -> Result<Place, EngineError> {
        let dest = &rule.destination;
        let cached = self
            .places
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&dest.project)
            .copied();
        if let Some(id) = cached {
            return Ok(Place::new(dest, id));
        }
        let id = match dest.project.parse::<u64>() {
            Ok(id) => id,
            Err(_) => match self
                .store
                .project_id(&dest.project)
                .await
                .map_err(|e| EngineError::store(rule, e))?
            {
                Some(id) => id,
                None => {
                    let resolved =
                        self.gitlab
                            .resolve_project(&dest.project)
                            .await
                            .map_err(|e| EngineError::Project {
                                rule: rule.name.clone(),
                                project: dest.project.clone(),
                                source: Cause::new(e),
                            })?;
                    self.remember(rule, &resolved).await?;
                    resolved.id
                }
            },
        };
        self.places
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dest.project.clone(), id);
        Ok(Place::new(dest, id))
    }

    async fn remember(
        &self,
        rule: &RuleConfig,
        resolved: &ResolvedProject,
    ) -> Result<(), EngineError> {
        info!(
            project = %rule.destination.project,
            id = resolved.id,
            path = %resolved.path_with_namespace,
            "GitLab project resolved; it is addressed by its id from now on"
        );
        self.store
            .remember_project(&rule.destination.project, resolved)
            .await
            .map_err(|e| EngineError::store(rule, e))
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The Jira account's zone, and whether it changed since it was last read.
    async fn zone(&self, rule: &RuleConfig) -> Result<(Tz, bool), EngineError> {
        self.zone
            .get(&self.jira, &self.store)
            .await
            .map_err(|e| match e {
                ZoneError::Jira(e) => EngineError::jira(rule, e),
                ZoneError::Store(e) => EngineError::store(rule, e),
            })
    }

    /// Runs `work` to its end, or, once `cancel` has fired, for the grace period at most: an
    /// action still in flight then is abandoned (`None`). A create cut short so is looked up
    /// before it is sent again, as after a lost answer.
    async fn within_grace<T>(
        &self,
        cancel: &CancellationToken,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let grace = self.settings.shutdown_grace;
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            biased;
            out = work => Some(out),
            () = deadline => {
                warn!(
                    grace_secs = grace.as_secs(),
                    "the grace period ended with an action in flight: abandoned it (a create cut \
                     short is looked up before it is sent again)"
                );
                None
            }
        }
    }

    /// Starts a run: no outage counted yet, and a run-log entry that is opened only when the run
    /// first writes ([`RunLog`]).
    fn begin_run(&self, rule: &RuleConfig, mode: RunMode) -> RunLog {
        self.outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&rule.name);
        RunLog::new(mode)
    }

    /// Opens the run's run-log entry if it is not open yet; called before the run's first write.
    ///
    /// # Errors
    /// The store cannot record the run: nothing may be written then.
    async fn open_log(&self, rule: &RuleConfig, log: &RunLog) -> Result<i64, EngineError> {
        log.id
            .get_or_try_init(|| self.store.start_run(&rule.name, log.mode))
            .await
            .copied()
            .map_err(|e| EngineError::store(rule, e))
    }

    /// Concludes a run from its walk's result, logs the run's one summary line and records the
    /// run's end in the run log, if the run wrote anything or did not end `ok` (an idle cycle
    /// that found nothing to do leaves no trace in the store). Returns the outcome and the run's
    /// id in the log, if it has one. A failure to record the end is logged, not fatal (the work
    /// is committed).
    async fn close_run(
        &self,
        rule: &RuleConfig,
        log: &RunLog,
        result: &Result<bool, EngineError>,
        counts: &RunCounts,
        jira_requests: u64,
        started: std::time::Instant,
    ) -> (RunOutcome, Option<i64>) {
        let (outcome, error) = conclude(result, counts.failed);
        info!(
            outcome = outcome.as_str(),
            seen = counts.seen,
            created = counts.created,
            closed = counts.closed,
            reopened = counts.reopened,
            updated = counts.updated,
            skipped = counts.skipped,
            failed = counts.failed,
            jira_requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "run finished"
        );
        if log.id().is_none() && outcome == RunOutcome::Ok {
            return (outcome, None);
        }
        let run_id = match self.open_log(rule, log).await {
            Ok(id) => id,
            Err(e) => {
                error!(cause = %error_chain(&e), "cannot record the run in the store");
                return (outcome, None);
            }
        };
        if let Err(e) = self
            .store
            .finish_run(run_id, outcome, counts.clone(), error)
            .await
        {
            error!(cause = %error_chain(&e), "cannot record the run's end in the store");
        }
        (outcome, Some(run_id))
    }
}

/// A run's entry in the store's run log. It is opened just before the run's first write (a
/// GitLab write or a store commit), so a cycle that finds nothing to do writes nothing; a run
/// that fails or is cancelled before it wrote is recorded at its end.
pub(crate) struct RunLog {
    mode: RunMode,
    id: tokio::sync::OnceCell<i64>,
}

impl RunLog {
    fn new(mode: RunMode) -> Self {
        Self {
            mode,
            id: tokio::sync::OnceCell::new(),
        }
    }

    /// The entry's id, once it is open.
    fn id(&self) -> Option<i64> {
        self.id.get().copied()
    }
}

/// Adds one outcome's counts to a run's.
fn add_counts(total: &mut RunCounts, add: &RunCounts) {
    total.seen += add.seen;
    total.created += add.created;
    total.closed += add.closed;
    total.reopened += add.reopened;
    total.updated += add.updated;
    total.skipped += add.skipped;
    total.failed += add.failed;
}

/// A short random id to tie a run's log lines together.
fn uuid_like() -> String {
    format!("{:08x}", rand::random::<u32>())
}
