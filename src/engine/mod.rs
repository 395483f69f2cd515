//! The sync engine: one run of one rule. It walks Jira's changes since the rule's cursor, plans
//! each snapshot against the mapping the store holds ([`plan`]), replays the plan to GitLab, and
//! commits each step with the cursor it covers.
//!
//! Guarantees, and how they are kept:
//! - **Nothing lost.** The search starts `lookback` before the cursor (Jira Cloud's index lags);
//!   the cursor only advances to what was committed, and never past `start − lookback`. Pages are
//!   walked by re-querying from the last `updated` seen rather than by deep offsets, so issues
//!   that change while we page cannot shift others out of view. A failed issue is stored with its
//!   snapshot and retried next cycle without asking Jira again.
//! - **Nothing twice.** A snapshot no newer than the mapping's is skipped. Before every create an
//!   intent is committed; a create whose answer was lost, or a run killed before its commit, is
//!   followed by a lookup (the browse link in the description) before any new create.
//! - **Exact times.** GitLab is asked for Jira's `created` and resolution time; what it stored is
//!   read back, and a token that cannot backdate (not Owner) is reported once per project.
//!
//! The engine speaks only to the [`JiraSource`], [`GitLabSink`] and [`SyncStore`] ports
//! ([`ports`]), and decides what a failure means only through [`PortError`].

pub mod backfill;
pub mod jql;
pub mod plan;
pub mod ports;
pub mod render;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::{Config, RuleConfig};
use crate::domain::{
    Commit, IssueSnapshot, JiraKey, Mapping, NewObject, PageCursor, RemoteObject, RemoteState,
    RunCounts, RunMode, RunOutcome, Target,
};
use crate::http::RetryPolicy;
use ports::{GitLabSink, JiraSource, PortError, SyncStore};

use plan::{Action, plan};

/// How long the Jira account's time zone is trusted before `/myself` is asked again.
const ZONE_TTL: Duration = Duration::from_secs(3600);

/// When the account's zone is found to have changed, the next search reaches back this much
/// further, covering any change a bound written in the old zone may have missed (zones differ by
/// at most 26 hours).
const ZONE_CHANGE_MARGIN: chrono::Duration = chrono::Duration::hours(26);

/// GitLab rounds to milliseconds; anything further off means it ignored the time we sent.
const TIMESTAMP_TOLERANCE: chrono::Duration = chrono::Duration::seconds(1);

const ZONE_META_KEY: &str = "jira.time_zone";

/// What the engine needs from the configuration.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub lookback: Duration,
    /// The Jira account's zone, when configured instead of read from `/myself`.
    pub time_zone: Option<Tz>,
    /// Plan and report, but write nothing to GitLab or the store.
    pub dry_run: bool,
    pub retry: RetryPolicy,
}

impl EngineSettings {
    pub fn from_config(cfg: &Config, dry_run: bool) -> Self {
        Self {
            lookback: cfg.sync.lookback,
            time_zone: cfg.jira.time_zone,
            dry_run,
            retry: cfg.sync.retry.clone(),
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
    #[error("rule {rule:?}: the store failed")]
    Store {
        rule: String,
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
            | EngineError::Store { source, .. } => source,
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

/// One action a `--dry-run` would take.
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
    /// Filled only by `--dry-run`.
    pub planned: Vec<PlannedAction>,
    /// Search requests sent to Jira.
    pub jira_requests: u64,
    /// GitLab ignored a `created_at` or closing time we sent (the token is not Owner).
    pub timestamps_ignored: bool,
    pub elapsed_ms: u64,
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
}

/// The state of one run in progress.
struct Run<'a> {
    rule: &'a RuleConfig,
    report: RunReport,
    /// Mappings read or written during this run, by key.
    mappings: HashMap<JiraKey, Mapping>,
    /// Snapshots handled in this run: re-reads from overlapping pages are not counted twice.
    seen: HashSet<(JiraKey, DateTime<Utc>)>,
    /// The cursor never moves past this: `start − lookback`.
    ceiling: DateTime<Utc>,
}

/// The engine, generic over its three sides.
pub struct SyncEngine<J, G, S> {
    jira: J,
    gitlab: G,
    store: S,
    settings: EngineSettings,
    zone: Mutex<Option<(Tz, tokio::time::Instant)>>,
    warned_timestamps: std::sync::Mutex<HashSet<String>>,
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    pub fn new(jira: J, gitlab: G, store: S, settings: EngineSettings) -> Self {
        Self {
            jira,
            gitlab,
            store,
            settings,
            zone: Mutex::new(None),
            warned_timestamps: std::sync::Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs one rule once: retry its failed issues, walk Jira's changes since its cursor, replay
    /// them to GitLab. Stops between actions when `cancel` fires, with everything done so far
    /// committed.
    ///
    /// Per-issue failures do not stop the run: they are logged with their key, stored for the
    /// next cycle and counted in the report (outcome `Partial`).
    ///
    /// # Errors
    /// Jira cannot be searched, GitLab rejects the token or the project, or the store fails.
    pub async fn run_rule(
        &self,
        rule: &RuleConfig,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let run_id = uuid_like();
        let span = info_span!("sync_cycle", rule = %rule.name, mode = %mode, run_id = %run_id);
        self.run_rule_inner(rule, mode, cancel)
            .instrument(span)
            .await
    }

    async fn run_rule_inner(
        &self,
        rule: &RuleConfig,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let clock = std::time::Instant::now();
        let started = Utc::now();
        let dry = self.settings.dry_run;
        let run_id = if dry {
            None
        } else {
            Some(
                self.store
                    .start_run(&rule.name, mode)
                    .await
                    .map_err(|e| EngineError::store(rule, e))?,
            )
        };
        let lookback =
            chrono::Duration::from_std(self.settings.lookback).unwrap_or(chrono::Duration::zero());
        let mut run = Run {
            rule,
            report: RunReport {
                rule: rule.name.clone(),
                mode,
                run_id,
                outcome: RunOutcome::Ok,
                counts: RunCounts::default(),
                failures: Vec::new(),
                planned: Vec::new(),
                jira_requests: 0,
                timestamps_ignored: false,
                elapsed_ms: 0,
            },
            mappings: HashMap::new(),
            seen: HashSet::new(),
            ceiling: started - lookback,
        };
        let result = self.walk(&mut run, started, lookback, cancel).await;
        let mut report = run.report;
        report.elapsed_ms = clock.elapsed().as_millis() as u64;
        let (outcome, error) = conclude(&result, report.counts.failed);
        report.outcome = outcome;
        self.record_end(run_id, outcome, &report.counts, error)
            .await;
        let c = &report.counts;
        info!(
            outcome = report.outcome.as_str(),
            seen = c.seen,
            created = c.created,
            closed = c.closed,
            reopened = c.reopened,
            updated = c.updated,
            skipped = c.skipped,
            failed = c.failed,
            jira_requests = report.jira_requests,
            elapsed_ms = report.elapsed_ms,
            "sync cycle finished"
        );
        result.map(|_| report)
    }

    /// Closes the run-log entry; a failure to do so is logged, not fatal (the work is committed).
    async fn record_end(
        &self,
        run_id: Option<i64>,
        outcome: RunOutcome,
        counts: &RunCounts,
        error: Option<String>,
    ) {
        if let Some(id) = run_id
            && let Err(e) = self
                .store
                .finish_run(id, outcome, counts.clone(), error)
                .await
        {
            error!(cause = %error_chain(&e), "cannot record the run's end in the store");
        }
    }

    /// The walk; returns false if cancelled before the end.
    async fn walk(
        &self,
        run: &mut Run<'_>,
        started: DateTime<Utc>,
        lookback: chrono::Duration,
        cancel: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let rule = run.rule;
        let (zone, zone_changed) = self.zone(rule).await?;
        let cursor = self
            .store
            .cursor(&rule.name)
            .await
            .map_err(|e| EngineError::store(rule, e))?;
        let base = cursor.or(rule.since).unwrap_or(started);
        let mut lower = base - lookback;
        if zone_changed {
            lower -= ZONE_CHANGE_MARGIN;
        }
        if let Some(since) = rule.since {
            lower = lower.max(since);
        }
        debug!(cursor = ?cursor, lower = %lower, zone = %zone, "walking Jira changes");

        let failures = self
            .store
            .failures(&rule.name)
            .await
            .map_err(|e| EngineError::store(rule, e))?;
        if !failures.is_empty() {
            let keys = failures.iter().map(|f| f.snapshot.key.clone()).collect();
            self.load_mappings(run, keys).await?;
            info!(count = failures.len(), "retrying issues that failed before");
        }
        for f in failures {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            self.process(run, f.snapshot, Source::Retry).await?;
        }

        let mut bound = lower;
        let mut page = PageCursor::First;
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            let query = jql::changed_since(&rule.jql, bound, zone);
            run.report.jira_requests += 1;
            let result = self
                .jira
                .search(&query, &page)
                .await
                .map_err(|e| EngineError::jira(rule, e))?;
            for bad in result.undecodable {
                error!(jira_key = %bad.key, reason = %bad.reason, "cannot read an issue Jira returned; skipped");
                run.report.counts.failed += 1;
                run.report.failures.push(IssueFailure {
                    jira_key: bad.key,
                    error: bad.reason,
                });
            }
            let last = result.issues.last().map(|s| s.updated);
            let keys = result
                .issues
                .iter()
                .map(|s| s.key.clone())
                .filter(|k| !run.mappings.contains_key(k))
                .collect::<Vec<_>>();
            if !keys.is_empty() {
                self.load_mappings(run, keys).await?;
            }
            for snap in result.issues {
                if cancel.is_cancelled() {
                    return Ok(false);
                }
                if !run.seen.insert((snap.key.clone(), snap.updated)) {
                    continue;
                }
                run.report.counts.seen += 1;
                self.process(run, snap, Source::Search).await?;
            }
            match (result.next, last) {
                (Some(next), Some(last)) => {
                    // Re-query from the last change seen rather than paging deeper, unless the
                    // whole page sits in one minute (JQL's precision), where only the page
                    // cursor makes progress.
                    if jql::literal(last, zone) != jql::literal(bound, zone) {
                        bound = last;
                        page = PageCursor::First;
                    } else {
                        page = next;
                    }
                }
                _ => break,
            }
        }
        if !self.settings.dry_run {
            self.store
                .advance_cursor(&rule.name, run.ceiling)
                .await
                .map_err(|e| EngineError::store(rule, e))?;
        }
        Ok(true)
    }

    async fn load_mappings(
        &self,
        run: &mut Run<'_>,
        keys: Vec<JiraKey>,
    ) -> Result<(), EngineError> {
        let found = self
            .store
            .mappings(&run.rule.name, keys)
            .await
            .map_err(|e| EngineError::store(run.rule, e))?;
        for (k, m) in found {
            run.mappings.entry(k).or_insert(m);
        }
        Ok(())
    }

    /// The Jira account's zone, from config, memory, the store, or `/myself` (in that order);
    /// and whether it changed since it was last read.
    async fn zone(&self, rule: &RuleConfig) -> Result<(Tz, bool), EngineError> {
        if let Some(tz) = self.settings.time_zone {
            return Ok((tz, false));
        }
        let mut cached = self.zone.lock().await;
        if let Some((tz, at)) = *cached
            && at.elapsed() < ZONE_TTL
        {
            return Ok((tz, false));
        }
        let stored = self
            .store
            .meta(ZONE_META_KEY)
            .await
            .map_err(|e| EngineError::store(rule, e))?
            .and_then(|v| parse_zone_meta(&v));
        if let Some((tz, read_at)) = stored {
            let age = (Utc::now() - read_at).to_std().unwrap_or(Duration::MAX);
            if age < ZONE_TTL && cached.is_none() {
                *cached = Some((tz, tokio::time::Instant::now() - age));
                return Ok((tz, false));
            }
        }
        let me = self
            .jira
            .myself()
            .await
            .map_err(|e| EngineError::jira(rule, e))?;
        let previous = cached.map(|(tz, _)| tz).or(stored.map(|(tz, _)| tz));
        let changed = previous.is_some_and(|p| p != me.time_zone);
        if changed {
            warn!(
                from = %previous.map(|p| p.to_string()).unwrap_or_default(),
                to = %me.time_zone,
                "the Jira account's time zone changed; this run searches a day further back"
            );
        }
        info!(account = %me.display_name, zone = %me.time_zone, "Jira dates are read in the account's zone");
        if !self.settings.dry_run {
            self.store
                .set_meta(
                    ZONE_META_KEY,
                    &format!("{}@{}", me.time_zone, Utc::now().to_rfc3339()),
                )
                .await
                .map_err(|e| EngineError::store(rule, e))?;
        }
        *cached = Some((me.time_zone, tokio::time::Instant::now()));
        Ok((me.time_zone, changed))
    }

    /// Plans and applies one snapshot within a run, keeping the run's counts and mappings.
    async fn process(
        &self,
        run: &mut Run<'_>,
        snap: IssueSnapshot,
        source: Source,
    ) -> Result<(), EngineError> {
        let mapping = run.mappings.get(&snap.key).cloned();
        if self.settings.dry_run {
            let action = self.plan_for(run.rule, &snap, mapping.as_ref());
            self.simulate(run, &snap, &action);
            let m = simulated_mapping(run.rule, &snap, mapping);
            run.mappings.insert(snap.key.clone(), m);
            return Ok(());
        }
        let cursor = match source {
            Source::Search => Some(snap.updated.min(run.ceiling)),
            Source::Retry | Source::Backfill => None,
        };
        let outcome = self.apply(run.rule, snap, mapping, source, cursor).await?;
        run.absorb(outcome);
        Ok(())
    }

    /// The action for `snap`, as [`apply`](Self::apply) would plan it.
    fn plan_for(
        &self,
        rule: &RuleConfig,
        snap: &IssueSnapshot,
        mapping: Option<&Mapping>,
    ) -> Action {
        let obj = render::new_object(rule, snap, &self.jira.browse_url(&snap.key));
        plan(snap, mapping, &render::content_hash(&obj))
    }

    /// Plans and applies one snapshot, committing each GitLab write (with `cursor`, once the
    /// snapshot is fully replicated or recorded as failed). Independent of any run state, so
    /// snapshots of different keys may be applied concurrently.
    async fn apply(
        &self,
        rule: &RuleConfig,
        snap: IssueSnapshot,
        mapping: Option<Mapping>,
        source: Source,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Outcome, EngineError> {
        let browse = self.jira.browse_url(&snap.key);
        let obj = render::new_object(rule, &snap, &browse);
        let hash = render::content_hash(&obj);
        let action = plan(&snap, mapping.as_ref(), &hash);
        let span = info_span!("issue", jira_key = %snap.key, action = action.verb());
        async {
            let mut out = Outcome::default();
            match action {
                Action::Skip(reason) => {
                    debug!(?reason, "nothing to do");
                    out.counts.skipped += 1;
                    if source == Source::Retry
                        && let Some(m) = mapping
                    {
                        // A newer change already replicated: the stored failure is obsolete.
                        self.commit(rule, &mut out, Commit::Replicated(m), None)
                            .await?;
                    }
                }
                Action::Touch => {
                    let mut m = mapping.expect("plan() touches only mapped issues");
                    m.jira_updated = snap.updated;
                    m.content_hash = Some(hash);
                    out.counts.skipped += 1;
                    self.commit(rule, &mut out, Commit::Replicated(m), cursor)
                        .await?;
                }
                Action::Create { then_close } => {
                    let m = match self.create(rule, &mut out, &snap, &obj, &hash).await? {
                        Ok(m) => m,
                        Err(e) => {
                            self.fail(rule, &mut out, snap, e, cursor).await?;
                            return Ok(out);
                        }
                    };
                    out.counts.created += 1;
                    info!(iid = ?m.iid, "created in GitLab");
                    let commit_cursor = if then_close { None } else { cursor };
                    self.commit(rule, &mut out, Commit::Replicated(m.clone()), commit_cursor)
                        .await?;
                    if then_close {
                        self.set_state(rule, &mut out, snap, m, true, None, cursor)
                            .await?;
                    }
                }
                Action::Close { edit } | Action::Reopen { edit } => {
                    let close = matches!(action, Action::Close { .. });
                    let m = mapping.expect("plan() closes and reopens only mapped issues");
                    let edit = edit.then_some((&obj, hash));
                    self.set_state(rule, &mut out, snap, m, close, edit, cursor)
                        .await?;
                }
                Action::Update => {
                    let m = mapping.expect("plan() updates only mapped issues");
                    self.rewrite(rule, &mut out, snap, m, &obj, hash, cursor)
                        .await?;
                }
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// `--dry-run`: record what would happen and pretend it did, so later snapshots of the same
    /// key plan as they would for real.
    fn simulate(&self, run: &mut Run<'_>, snap: &IssueSnapshot, action: &Action) {
        count_planned(&mut run.report.counts, action);
        if action.writes_gitlab() {
            run.report.planned.push(PlannedAction {
                jira_key: snap.key.clone(),
                action: action.verb(),
                title: render::title(&run.rule.title, snap),
            });
        }
    }

    async fn commit(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        if let Commit::Replicated(m) = &commit {
            out.mapping = Some(m.clone());
        }
        self.store
            .commit(&rule.name, commit, cursor)
            .await
            .map_err(|e| EngineError::store(rule, e))
    }

    /// Records a per-issue failure (or stops the run if GitLab refuses everything).
    async fn fail(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        snap: IssueSnapshot,
        e: G::Error,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        if e.stops_run() {
            return Err(EngineError::GitLab {
                rule: rule.name.clone(),
                jira_key: snap.key,
                source: Cause::new(e),
            });
        }
        let message = error_chain(&e);
        warn!(jira_key = %snap.key, error = %message, "replication failed; it is retried next cycle");
        out.counts.failed += 1;
        out.failure = Some(IssueFailure {
            jira_key: snap.key.to_string(),
            error: message.clone(),
        });
        self.commit(
            rule,
            out,
            Commit::Failed {
                snapshot: snap,
                error: message,
            },
            cursor,
        )
        .await
    }

    /// Creates the GitLab object for `snap` exactly once: the intent is committed first, and any
    /// attempt after one whose outcome is unknown starts with a lookup.
    ///
    /// The outer error stops the run (the intent could not be recorded, so nothing may be sent);
    /// the inner one is this issue's failure.
    async fn create(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        snap: &IssueSnapshot,
        obj: &NewObject,
        hash: &str,
    ) -> Result<Result<Mapping, G::Error>, EngineError> {
        let intent = self
            .store
            .begin_intent(&rule.name, &snap.key)
            .await
            .map_err(|e| EngineError::store(rule, e))?;
        Ok(self
            .create_once(rule, out, snap, obj, intent.previous_attempts)
            .await
            .map(|m| Mapping {
                content_hash: Some(hash.to_owned()),
                ..m
            }))
    }

    async fn create_once(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        snap: &IssueSnapshot,
        obj: &NewObject,
        previous_attempts: u32,
    ) -> Result<Mapping, G::Error> {
        let dest = &rule.destination;
        let browse = self.jira.browse_url(&snap.key);
        let mut attempt = 0u32;
        let remote = loop {
            attempt += 1;
            if (previous_attempts > 0 || attempt > 1)
                && let Some(found) = self.gitlab.find(dest, &snap.key, &browse).await?
            {
                info!(iid = ?found.iid, "found what an earlier attempt created; not creating again");
                break found;
            }
            match self.gitlab.create(dest, obj).await {
                Ok(r) => break r,
                Err(e) if e.is_ambiguous() && attempt < self.settings.retry.max_attempts => {
                    let delay = self.settings.retry.backoff(attempt, rand::random());
                    warn!(
                        cause = %error_chain(&e),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "create may or may not have reached GitLab; will look before retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        };
        if dest.target != Target::Alert
            && (remote.created_at - snap.created).abs() > TIMESTAMP_TOLERANCE
        {
            self.timestamps_ignored(rule, out, "created_at", snap.created, remote.created_at);
        }
        Ok(mapping_from(rule, snap, &remote))
    }

    /// Closes (`close`) or reopens the object, then commits; then rewrites it if `edit` holds
    /// the new content and its hash.
    #[allow(clippy::too_many_arguments)]
    async fn set_state(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        close: bool,
        edit: Option<(&NewObject, String)>,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let dest = &rule.destination;
        let result = if close {
            let at = snap.resolved_at.unwrap_or(snap.updated);
            self.gitlab.close(dest, &m, at).await
        } else {
            self.gitlab.reopen(dest, &m, snap.updated).await
        };
        let remote = match result {
            Ok(r) => r,
            Err(e) => return self.fail(rule, out, snap, e, cursor).await,
        };
        if close {
            out.counts.closed += 1;
            info!(closed_at = ?remote.closed_at, "closed in GitLab");
            if dest.target != Target::Alert
                && let (Some(asked), Some(got)) = (snap.resolved_at, remote.closed_at)
                && (got - asked).abs() > TIMESTAMP_TOLERANCE
            {
                self.timestamps_ignored(rule, out, "closed_at", asked, got);
            }
        } else {
            out.counts.reopened += 1;
            info!("reopened in GitLab");
        }
        let updated = Mapping {
            state: remote.state,
            closed_at: remote.closed_at,
            jira_updated: snap.updated.max(m.jira_updated),
            iid: remote.iid.or(m.iid),
            web_url: remote.web_url.or(m.web_url.clone()),
            ..m
        };
        match edit {
            None => {
                self.commit(rule, out, Commit::Replicated(updated), cursor)
                    .await
            }
            Some((obj, hash)) => {
                self.commit(rule, out, Commit::Replicated(updated.clone()), None)
                    .await?;
                self.rewrite(rule, out, snap, updated, obj, hash, cursor)
                    .await
            }
        }
    }

    /// Rewrites the title and description after a Jira edit, then commits the new hash.
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        obj: &NewObject,
        hash: String,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let remote = match self.gitlab.update(&rule.destination, &m, obj).await {
            Ok(r) => r,
            Err(e) => return self.fail(rule, out, snap, e, cursor).await,
        };
        out.counts.updated += 1;
        info!("title and description rewritten after a Jira edit");
        let updated = Mapping {
            state: remote.state,
            closed_at: remote.closed_at,
            jira_updated: snap.updated.max(m.jira_updated),
            content_hash: Some(hash),
            ..m
        };
        self.commit(rule, out, Commit::Replicated(updated), cursor)
            .await
    }

    fn timestamps_ignored(
        &self,
        rule: &RuleConfig,
        out: &mut Outcome,
        field: &str,
        asked: DateTime<Utc>,
        got: DateTime<Utc>,
    ) {
        out.timestamps_ignored = true;
        let project = &rule.destination.project;
        let first = self
            .warned_timestamps
            .lock()
            .map(|mut w| w.insert(project.clone()))
            .unwrap_or(true);
        if first {
            warn!(
                project = %project,
                field,
                asked = %asked,
                stored = %got,
                "GitLab ignored the Jira time we sent: the token is not Owner of the project, so \
                 GitLab records the sync's clock and DORA time to restore will be off; give the \
                 token's user the Owner role for exact times"
            );
        }
    }
}

/// What applying one snapshot did.
#[derive(Debug, Default)]
struct Outcome {
    counts: RunCounts,
    failure: Option<IssueFailure>,
    /// The mapping as last committed, if any commit replicated something.
    mapping: Option<Mapping>,
    timestamps_ignored: bool,
}

impl Run<'_> {
    fn absorb(&mut self, out: Outcome) {
        add_counts(&mut self.report.counts, &out.counts);
        if let Some(f) = out.failure {
            self.report.failures.push(f);
        }
        if let Some(m) = out.mapping {
            self.mappings.insert(m.jira_key.clone(), m);
        }
        self.report.timestamps_ignored |= out.timestamps_ignored;
    }
}

fn add_counts(total: &mut RunCounts, add: &RunCounts) {
    total.seen += add.seen;
    total.created += add.created;
    total.closed += add.closed;
    total.reopened += add.reopened;
    total.updated += add.updated;
    total.skipped += add.skipped;
    total.failed += add.failed;
}

/// Counts an action a dry run would take.
fn count_planned(c: &mut RunCounts, action: &Action) {
    match action {
        Action::Skip(_) | Action::Touch => c.skipped += 1,
        Action::Create { then_close } => {
            c.created += 1;
            if *then_close {
                c.closed += 1;
            }
        }
        Action::Close { edit } => {
            c.closed += 1;
            c.updated += u64::from(*edit);
        }
        Action::Reopen { edit } => {
            c.reopened += 1;
            c.updated += u64::from(*edit);
        }
        Action::Update => c.updated += 1,
    }
}

/// The mapping a dry run pretends it wrote.
fn simulated_mapping(rule: &RuleConfig, snap: &IssueSnapshot, mapping: Option<Mapping>) -> Mapping {
    let state = if snap.is_resolved() {
        RemoteState::Closed
    } else {
        RemoteState::Opened
    };
    match mapping {
        Some(mut m) => {
            m.state = state;
            m.jira_updated = m.jira_updated.max(snap.updated);
            m
        }
        None => Mapping {
            rule: rule.name.clone(),
            jira_key: snap.key.clone(),
            target: rule.destination.target,
            project: rule.destination.project.clone(),
            iid: None,
            web_url: None,
            state,
            jira_updated: snap.updated,
            created_at: snap.created,
            closed_at: snap.resolved_at,
            content_hash: None,
        },
    }
}

fn mapping_from(rule: &RuleConfig, snap: &IssueSnapshot, remote: &RemoteObject) -> Mapping {
    Mapping {
        rule: rule.name.clone(),
        jira_key: snap.key.clone(),
        target: rule.destination.target,
        project: rule.destination.project.clone(),
        iid: remote.iid,
        web_url: remote.web_url.clone(),
        state: remote.state,
        jira_updated: snap.updated,
        created_at: remote.created_at,
        closed_at: remote.closed_at,
        content_hash: None,
    }
}

fn parse_zone_meta(v: &str) -> Option<(Tz, DateTime<Utc>)> {
    let (tz, at) = v.split_once('@')?;
    Some((
        tz.parse().ok()?,
        DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
    ))
}

/// A short random id to tie a run's log lines together.
fn uuid_like() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median of an even count is the mean of the middle two, as GitLab's DORA takes it.
    #[test]
    fn median_even_and_odd() {
        let m = |v: &[i64]| {
            let mut d: Vec<_> = v.iter().map(|s| chrono::Duration::seconds(*s)).collect();
            median(&mut d).map(|d| d.num_seconds())
        };
        assert_eq!(m(&[]), None);
        assert_eq!(m(&[5, 1, 3]), Some(3));
        assert_eq!(
            m(&[4, 1, 3, 2]),
            Some(2),
            "(2 s + 3 s) / 2 = 2.5 s, 2 in whole seconds"
        );
    }

    /// A run's outcome follows from how its walk ended and whether issues failed.
    #[test]
    fn conclusions() {
        assert_eq!(conclude(&Ok(true), 0), (RunOutcome::Ok, None));
        assert_eq!(conclude(&Ok(true), 2), (RunOutcome::Partial, None));
        assert_eq!(conclude(&Ok(false), 2), (RunOutcome::Cancelled, None));
        let err = Err(EngineError::Jira {
            rule: "r".into(),
            source: Cause::new(crate::jira::JiraError::Unauthorized { hint: "check" }),
        });
        let (outcome, why) = conclude(&err, 0);
        assert_eq!(outcome, RunOutcome::Failed);
        assert!(
            why.unwrap().contains("401"),
            "the reason carries the whole chain"
        );
    }
}
