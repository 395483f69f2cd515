//! The live cycle ([`SyncEngine::run_rule`]): retry the rule's stored failures that are due,
//! walk Jira's changes since its cursor, apply each snapshot, and move the cursor with the
//! commits.
//!
//! # Applying concurrently
//! Snapshots are applied up to `concurrency` at once (`sync.backfill_concurrency`, the knob
//! backfill uses), started in the order the walk reads them, while the next page is fetched
//! ([`PageWalk::prefetch`], as backfill does). Two rules keep that as safe as one at a time:
//! - **One write per issue in flight.** A later snapshot of an issue (the same key or the same
//!   Jira id) waits until the earlier one is finished, and is then planned against the mapping
//!   that one left, exactly as it would have been one at a time.
//! - **The cursor stays before what is not finished.** A commit carries the cursor only up to
//!   the oldest search snapshot not finished (running or waiting) when its apply started, so a
//!   crash at any point re-reads every change not finished.
//!
//! A cancellation or an error that stops the run stops new starts; what is in flight finishes
//! and commits (or is abandoned at the end of the grace period, as one action would be).
//!
//! # The cursor and the re-read window
//! The cursor says: every change with `updated` before it is replicated or recorded as failed.
//! A complete walk earns its *ceiling*, `start − lookback` by Jira's clock, never more: Jira
//! Cloud's search is eventually consistent (a change can reach the index seconds to minutes
//! after it was made), so a change made in the last `lookback` before the walk may not have been
//! visible to it. The next search starts at the cursor itself, so each cycle re-reads exactly the
//! `lookback` before the previous walk's start (logged at debug as `re-read window`), plus what
//! changed since. When the account's time zone changed, bounds written in the old zone may have
//! been read hours off, so that search reaches [`ZONE_CHANGE_MARGIN`] further back.
//!
//! # Idle cycles write nothing
//! A cycle that finds nothing to do (no due failure, every change read already replicated)
//! writes nothing to the store: its run-log entry is opened only before its first write, and the
//! cursor its complete walk earned is kept in memory (a lost one only means a longer re-read).
//! It is written, with the time of the walk (`status` shows it as the rule's last check), by
//! any run that wrote anything, and by an idle one only every [`IDLE_CHECKPOINT`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::SearchPage;
use crate::domain::{
    Failure, IssueSnapshot, JiraId, JiraKey, Mapping, RunCounts, RunMode, RunOutcome,
};

use super::backfill::PREFETCH_PAGES;
use super::execute::{Ctx, Outcome};
use super::ports::{GitLabSink, JiraSource, Place, SyncStore};
use super::walk::{PageWalk, WalkError};
use super::{
    EngineError, IssueFailure, RunLog, RunReport, Source, SyncEngine, add_counts, error_chain, jql,
    uuid_like,
};

/// When the account's zone is found to have changed, the next search reaches back this much
/// further, covering any change a bound written in the old zone may have missed (zones differ by
/// at most 26 hours).
const ZONE_CHANGE_MARGIN: chrono::Duration = chrono::Duration::hours(26);

/// While a rule is idle, the cursor its walks earned and the time of its last complete walk are
/// written to the store at most this often: often enough for `status` to show that the rule is
/// being checked, rarely enough that idle cycles cost no store write (a write per idle cycle
/// was most of an idle service's CPU at 100 rules).
pub const IDLE_CHECKPOINT: chrono::Duration = chrono::Duration::minutes(15);

/// The store's meta key holding when `rule` last completed a walk, as of its last checkpoint.
pub fn checked_meta_key(rule: &str) -> String {
    format!("checked_at:{rule}")
}

/// What the engine remembers of a rule between its cycles in this process.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mark {
    /// The cursor the last complete walk earned, written to the store or not.
    cursor: Option<DateTime<Utc>>,
    /// The store's cursor is no later than `cursor`: the last run completed its walk, and only
    /// this process writes the store (its lock). An idle cycle then need not read it.
    cursor_known: bool,
    /// The store holds no failure of the rule: the last run completed its walk with none
    /// recorded or waiting. An idle cycle then need not read them.
    no_failures: bool,
    /// When a complete walk was last recorded in the store; `None` until read in this process.
    checkpoint: Option<Option<DateTime<Utc>>>,
    /// When the rule was last reconciled, as the store holds it; `None` until read in this
    /// process (then an idle cycle need not ask the store again).
    pub(super) reconciled: Option<Option<DateTime<Utc>>>,
}

/// The state of one run in progress.
pub(super) struct Run<'a> {
    pub(super) rule: &'a RuleConfig,
    pub(super) log: &'a RunLog,
    pub(super) report: RunReport,
    /// Mappings read or written during this run, by key.
    mappings: HashMap<JiraKey, Mapping>,
    /// Snapshots handled in this run: re-reads from overlapping pages are not counted twice.
    seen: HashSet<(JiraKey, DateTime<Utc>)>,
    /// The cursor never moves past this: `start − lookback`, by Jira's clock (the first search
    /// answer's `Date`) once it is known.
    ceiling: DateTime<Utc>,
    /// Where the rule writes, resolved on the first issue (an idle run needs no project id).
    place: Option<Place>,
    /// Stored failures of the rule wait for their backoff (they stay in the store).
    failures_wait: bool,
    /// The report's `written`, as it grows.
    written: Vec<(String, std::time::Instant)>,
}

impl Run<'_> {
    pub(super) fn absorb(&mut self, out: Outcome) {
        add_counts(&mut self.report.counts, &out.counts);
        if let Some(f) = out.failure {
            self.report.failures.push(f);
        }
        if let Some(m) = out.mapping {
            self.mappings.insert(m.jira_key.clone(), m);
        }
        if let Some(a) = out.action {
            self.report.planned.push(a);
        }
        self.report.lags.extend(out.lag);
        self.report.timestamps_ignored |= out.timestamps_ignored;
        self.report.incidents_filed_as_issues |= out.filed_as_issue;
    }
}

/// One snapshot handed to the run, in the order the walk read it.
struct Job {
    snap: IssueSnapshot,
    source: Source,
    /// Its arrival: ties between equal `updated` are broken by it.
    seq: u64,
    /// Its key and, if it has one, its Jira id: the issue it writes to.
    issue: Vec<String>,
}

/// A job's end.
struct Finished {
    seq: u64,
    updated: DateTime<Utc>,
    issue: Vec<String>,
    result: Result<Outcome, EngineError>,
}

/// The snapshots of one run between the walk and their commits: waiting, in walk order, or
/// being applied, never two of one issue at once; and which of them the cursor stays before.
struct InFlight<'f> {
    pending: VecDeque<Job>,
    running: FuturesUnordered<BoxFuture<'f, Finished>>,
    /// The keys and ids of the issues being applied.
    busy: HashSet<String>,
    /// The search snapshots handed in and not finished, by `updated`, then arrival.
    unfinished: BTreeSet<(DateTime<Utc>, u64)>,
    arrivals: u64,
}

impl<'f> InFlight<'f> {
    fn new() -> Self {
        Self {
            pending: VecDeque::new(),
            running: FuturesUnordered::new(),
            busy: HashSet::new(),
            unfinished: BTreeSet::new(),
            arrivals: 0,
        }
    }

    fn hand_in(&mut self, snap: IssueSnapshot, source: Source) {
        self.arrivals += 1;
        let seq = self.arrivals;
        if source == Source::Search {
            self.unfinished.insert((snap.updated, seq));
        }
        let mut issue = vec![format!("key:{}", snap.key)];
        issue.extend(snap.id.as_ref().map(|id| format!("id:{id}")));
        self.pending.push_back(Job {
            snap,
            source,
            seq,
            issue,
        });
    }

    /// The next snapshot that may start, taken from the waiting ones: the first in walk order
    /// whose issue is not being applied and has no earlier snapshot waiting. `None` once `limit`
    /// are running.
    fn next_startable(&mut self, limit: usize) -> Option<Job> {
        if self.running.len() >= limit {
            return None;
        }
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut found = None;
        for (i, job) in self.pending.iter().enumerate() {
            let held = job
                .issue
                .iter()
                .any(|x| self.busy.contains(x) || blocked.contains(x.as_str()));
            if held {
                blocked.extend(job.issue.iter().map(String::as_str));
            } else {
                found = Some(i);
                break;
            }
        }
        let job = self.pending.remove(found?)?;
        self.busy.extend(job.issue.iter().cloned());
        Some(job)
    }

    /// The furthest a commit may move the cursor now: to the oldest search snapshot not
    /// finished (the one about to start is among them).
    fn cursor_bound(&self) -> Option<DateTime<Utc>> {
        self.unfinished.first().map(|(t, _)| *t)
    }

    fn finish(&mut self, done: &Finished) {
        for x in &done.issue {
            self.busy.remove(x);
        }
        self.unfinished.remove(&(done.updated, done.seq));
    }
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Runs one rule once: retry its failed issues whose backoff is over, walk Jira's changes
    /// since its cursor, replay them to GitLab, up to `concurrency` issues at once. Stops
    /// between actions when `cancel` fires, with everything done so far committed.
    ///
    /// Per-issue failures do not stop the run: they are logged with their key, stored for a
    /// later cycle and counted in the report (outcome `Partial`).
    ///
    /// # Errors
    /// Jira cannot be searched, GitLab rejects the token or the project or looks down, or the
    /// store fails.
    pub async fn run_rule(
        &self,
        rule: &RuleConfig,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        self.run_rule_reconciling(rule, mode, cancel, &[]).await
    }

    /// As [`SyncEngine::run_rule`], with every page of the search asking Jira to read the
    /// issues `reconcile` names consistently (those a webhook just named; Cloud's search may not
    /// show their change yet otherwise). They are only read: what the search answers decides.
    ///
    /// # Errors
    /// As [`SyncEngine::run_rule`].
    pub async fn run_rule_reconciling(
        &self,
        rule: &RuleConfig,
        mode: RunMode,
        cancel: &CancellationToken,
        reconcile: &[JiraId],
    ) -> Result<RunReport, EngineError> {
        let run_id = uuid_like();
        let span = info_span!("sync_cycle", rule = %rule.name, mode = %mode, run_id = %run_id);
        self.run_rule_inner(rule, mode, cancel, reconcile)
            .instrument(span)
            .await
    }

    async fn run_rule_inner(
        &self,
        rule: &RuleConfig,
        mode: RunMode,
        cancel: &CancellationToken,
        reconcile: &[JiraId],
    ) -> Result<RunReport, EngineError> {
        let clock = std::time::Instant::now();
        let started = Utc::now();
        let log = self.begin_run(rule, mode);
        let mut run = Run {
            rule,
            log: &log,
            report: RunReport {
                rule: rule.name.clone(),
                mode,
                run_id: None,
                outcome: RunOutcome::Ok,
                counts: RunCounts::default(),
                failures: Vec::new(),
                planned: Vec::new(),
                jira_requests: 0,
                timestamps_ignored: false,
                incidents_filed_as_issues: false,
                reconcile: None,
                links: Default::default(),
                elapsed_ms: 0,
                lags: Vec::new(),
                written: Box::default(),
            },
            mappings: HashMap::new(),
            seen: HashSet::new(),
            ceiling: started + self.skew() - self.lookback(),
            place: None,
            failures_wait: false,
            written: Vec::new(),
        };
        let result = self
            .within_grace(cancel, async {
                match self.walk(&mut run, started, cancel, reconcile).await {
                    // Only after a complete walk: the cursor then says what the search covered.
                    Ok(true) => {
                        self.walked(&run, started).await?;
                        self.reconcile_if_due(&mut run, cancel).await
                    }
                    other => other,
                }
            })
            .await
            .unwrap_or(Ok(false));
        // After every GitLab write, whatever the walk did: links wait for nothing else, and
        // nothing waits for them.
        if !cancel.is_cancelled() {
            run.report.links = self
                .within_grace(cancel, self.send_links(rule, cancel))
                .await
                .unwrap_or_default();
        }
        let (outcome, run_id) = self
            .close_run(
                rule,
                &log,
                &result,
                &run.report.counts,
                run.report.jira_requests,
                clock,
            )
            .await;
        let mut report = run.report;
        report.written = run.written.into_boxed_slice();
        report.elapsed_ms = clock.elapsed().as_millis() as u64;
        report.outcome = outcome;
        report.run_id = run_id;
        result.map(|_| report)
    }

    fn lookback(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lookback).unwrap_or(chrono::Duration::zero())
    }

    /// Changes what the engine remembers of `rule`.
    pub(super) fn remark(&self, rule: &str, change: impl FnOnce(&mut Mark)) {
        let mut marks = self
            .marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(marks.entry(rule.to_owned()).or_default());
    }

    /// The store holds no failure of `rule`, as this process knows without asking it: its last
    /// run completed its walk with none recorded or waiting (idle cycles then read no failures,
    /// and a caller counting them need not either).
    pub fn knows_no_failures(&self, rule: &str) -> bool {
        self.mark(rule).no_failures
    }

    pub(super) fn mark(&self, rule: &str) -> Mark {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(rule)
            .copied()
            .unwrap_or_default()
    }

    /// The rule's cursor: the store's, or the one a later idle walk earned in this process.
    pub(super) async fn cursor(
        &self,
        rule: &RuleConfig,
    ) -> Result<Option<DateTime<Utc>>, EngineError> {
        let mark = self.mark(&rule.name);
        if mark.cursor_known {
            return Ok(mark.cursor);
        }
        let stored = self
            .store
            .cursor(&rule.name)
            .await
            .map_err(|e| EngineError::store(rule, e))?;
        Ok(stored.max(mark.cursor))
    }

    /// A complete walk: every change before the run's ceiling is replicated or recorded.
    /// Remembers that cursor, and writes it with the time of the walk if the run wrote anything
    /// anyway, or the last such record is [`IDLE_CHECKPOINT`] old.
    async fn walked(&self, run: &Run<'_>, at: DateTime<Utc>) -> Result<(), EngineError> {
        let rule = run.rule;
        let store_err = |e| EngineError::store(rule, e);
        let key = checked_meta_key(&rule.name);
        let checkpoint = match self.mark(&rule.name).checkpoint {
            Some(known) => known,
            None => self
                .store
                .meta(&key)
                .await
                .map_err(store_err)?
                .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&Utc)),
        };
        let due = run.log.id().is_some()
            || checkpoint.is_none_or(|t| at - t >= IDLE_CHECKPOINT || t > at);
        if due {
            self.store
                .advance_cursor(&rule.name, run.ceiling)
                .await
                .map_err(store_err)?;
            self.store
                .set_meta(&key, &at.to_rfc3339())
                .await
                .map_err(store_err)?;
        }
        let no_failures = !run.failures_wait && run.report.failures.is_empty();
        self.remark(&rule.name, |mark| {
            mark.cursor = mark.cursor.max(Some(run.ceiling));
            mark.checkpoint = Some(if due { Some(at) } else { checkpoint });
            mark.cursor_known = true;
            mark.no_failures = no_failures;
        });
        Ok(())
    }

    /// The walk; returns false if cancelled before the end.
    async fn walk(
        &self,
        run: &mut Run<'_>,
        started: DateTime<Utc>,
        cancel: &CancellationToken,
        reconcile: &[JiraId],
    ) -> Result<bool, EngineError> {
        let rule = run.rule;
        let lookback = self.lookback();
        let (zone, zone_changed) = self.zone(rule).await?;
        let cursor = self.cursor(rule).await?;
        // A rule's first run starts `lookback` before now by Jira's clock, as far as it is known,
        // as if the cursor were where a walk now would leave it.
        let mut lower = match (cursor, rule.since) {
            (Some(c), _) => c,
            (None, Some(since)) => since,
            (None, None) => started + self.skew() - lookback,
        };
        if let Some(c) = cursor {
            debug!(
                from = %c,
                to = %(c + lookback),
                lookback_secs = lookback.num_seconds(),
                "re-read window"
            );
        }
        if zone_changed {
            lower -= ZONE_CHANGE_MARGIN;
        }
        if let Some(since) = rule.since {
            lower = lower.max(since);
        }
        debug!(cursor = ?cursor, lower = %lower, zone = %zone, "walking Jira changes");

        let failures = if self.mark(&rule.name).no_failures {
            Vec::new()
        } else {
            self.store
                .failures(&rule.name)
                .await
                .map_err(|e| EngineError::store(rule, e))?
        };
        // Until this run completes its walk, its commits may move the cursor and record
        // failures: the store must be read again if it does not.
        self.remark(&rule.name, |mark| {
            mark.cursor_known = false;
            mark.no_failures = false;
        });
        // Only failures whose backoff is over are retried; a search that reads one of the others
        // again (the lookback window) leaves it waiting, unless Jira changed it since.
        let now = Utc::now();
        let (due, waiting): (Vec<_>, Vec<_>) = failures.into_iter().partition(|f| f.is_due(now));
        if !waiting.is_empty() {
            debug!(
                count = waiting.len(),
                "failed issues wait for their next attempt"
            );
        }
        run.failures_wait = !waiting.is_empty();
        let waiting: HashMap<JiraKey, DateTime<Utc>> = waiting
            .into_iter()
            .map(|f| (f.snapshot.key, f.snapshot.updated))
            .collect();
        if !due.is_empty() {
            let issues = due.iter().map(|f| &f.snapshot).collect();
            self.load_mappings(run, issues).await?;
            info!(count = due.len(), "retrying issues that failed before");
        }

        let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
        // Stops the walk when the run is cancelled, or stops for an error (no search in flight
        // is waited for then).
        let stop_walk = cancel.child_token();
        if !reconcile.is_empty() {
            debug!(
                issues = reconcile.len(),
                "the search reads the issues webhooks named consistently"
            );
        }
        let producer = PageWalk::by_updated(lower, zone)
            .reconciling(reconcile)
            .prefetch(
                &self.jira,
                |lower, upper| jql::changed_since(&rule.jql, lower, upper, zone),
                tx,
                &stop_walk,
            );
        let consumer = async {
            let result = self.apply_all(run, due, &waiting, rx, cancel).await;
            stop_walk.cancel();
            result
        };
        let (requests, result) = tokio::join!(producer, consumer);
        run.report.jira_requests += requests;
        result
    }

    /// Applies the due failures, then every page the walk sends, up to `concurrency` issues at
    /// once; returns false if cancelled before the end.
    async fn apply_all(
        &self,
        run: &mut Run<'_>,
        due: Vec<Failure>,
        waiting: &HashMap<JiraKey, DateTime<Utc>>,
        mut pages: mpsc::Receiver<Result<SearchPage, WalkError<J::Error>>>,
        cancel: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let rule = run.rule;
        let limit = self.settings.concurrency.max(1);
        let mut flight = InFlight::new();
        for f in due {
            // The search may read the same change again: it is not tried twice in one run.
            run.seen
                .insert((f.snapshot.key.clone(), f.snapshot.updated));
            flight.hand_in(f.snapshot, Source::Retry);
        }
        let mut walking = true;
        let mut first_page = true;
        let mut cancelled = false;
        let mut stopped: Option<EngineError> = None;
        loop {
            cancelled |= cancel.is_cancelled();
            while stopped.is_none() && !cancelled {
                let Some(job) = flight.next_startable(limit) else {
                    break;
                };
                let place = match self.run_place(run).await {
                    Ok(p) => p,
                    Err(e) => {
                        stopped = Some(e);
                        break;
                    }
                };
                let mapping = run.mappings.get(&job.snap.key).cloned();
                let cursor = match job.source {
                    Source::Search => flight.cursor_bound().map(|c| c.min(run.ceiling)),
                    Source::Retry | Source::Backfill | Source::Reconcile => None,
                };
                let log = run.log;
                let Job {
                    snap,
                    source,
                    seq,
                    issue,
                } = job;
                let updated = snap.updated;
                flight.running.push(
                    async move {
                        let cx = Ctx {
                            rule,
                            place: &place,
                            log,
                        };
                        let result = self.apply(&cx, snap, mapping, source, cursor, None).await;
                        Finished {
                            seq,
                            updated,
                            issue,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
            let ending = stopped.is_some() || cancelled;
            if flight.running.is_empty() && (ending || (!walking && flight.pending.is_empty())) {
                break;
            }
            // The next page only once this one is under way: memory stays flat.
            let want_page = walking && !ending && flight.pending.len() < limit;
            tokio::select! {
                biased;
                Some(done) = flight.running.next(), if !flight.running.is_empty() => {
                    flight.finish(&done);
                    match done.result {
                        Ok(out) => {
                            if out.lag.is_some() {
                                let at = std::time::Instant::now();
                                run.written.extend(
                                    done.issue
                                        .iter()
                                        .filter_map(|i| i.strip_prefix("id:"))
                                        .map(|id| (id.to_owned(), at)),
                                );
                            }
                            run.absorb(out);
                        }
                        Err(e) if stopped.is_none() => stopped = Some(e),
                        Err(e) => {
                            warn!(cause = %error_chain(&e), "another issue failed while the run was stopping");
                        }
                    }
                }
                page = pages.recv(), if want_page => match page {
                    None => walking = false,
                    Some(Err(e)) => {
                        walking = false;
                        stopped = Some(EngineError::jira(rule, e));
                    }
                    Some(Ok(page)) => {
                        if let Err(e) = self
                            .take_page(run, page, waiting, &mut flight, &mut first_page)
                            .await
                        {
                            walking = false;
                            stopped = Some(e);
                        }
                    }
                },
                () = cancel.cancelled(), if !cancelled => cancelled = true,
                else => break,
            }
        }
        match stopped {
            Some(e) => Err(e),
            None => Ok(!cancelled && !cancel.is_cancelled()),
        }
    }

    /// Hands a page's new snapshots to `flight`, with their mappings loaded.
    async fn take_page(
        &self,
        run: &mut Run<'_>,
        page: SearchPage,
        waiting: &HashMap<JiraKey, DateTime<Utc>>,
        flight: &mut InFlight<'_>,
        first: &mut bool,
    ) -> Result<(), EngineError> {
        if std::mem::take(first)
            && let Some(jira_now) = page.date
        {
            // The cursor's ceiling by Jira's clock: `updated` is written by it, so a host
            // clock ahead of Jira's cannot move the cursor past changes not yet made.
            self.observe_jira_clock(jira_now, Utc::now());
            run.ceiling = jira_now - self.lookback();
        }
        for bad in page.undecodable {
            error!(jira_key = %bad.key, reason = %bad.reason, "cannot read an issue Jira returned; skipped");
            run.report.counts.failed += 1;
            run.report.failures.push(IssueFailure {
                jira_key: bad.key,
                error: bad.reason,
            });
        }
        let unknown = page
            .issues
            .iter()
            .filter(|s| !run.mappings.contains_key(&s.key))
            .collect::<Vec<_>>();
        if !unknown.is_empty() {
            self.load_mappings(run, unknown).await?;
        }
        let mut fresh = Vec::with_capacity(page.issues.len());
        for snap in page.issues {
            if !run.seen.insert((snap.key.clone(), snap.updated)) {
                continue;
            }
            run.report.counts.seen += 1;
            if waiting
                .get(&snap.key)
                .is_some_and(|failed| snap.updated <= *failed)
            {
                // Recorded as failed already, and not due: the failure holds it.
                run.report.counts.skipped += 1;
                continue;
            }
            fresh.push(snap);
        }
        if run.rule.history.needs_transitions() && !fresh.is_empty() {
            let place = self.run_place(run).await?;
            let cx = Ctx {
                rule: run.rule,
                place: &place,
                log: run.log,
            };
            self.prefetch_transitions(&cx, &mut fresh, &run.mappings)
                .await?;
        }
        for snap in fresh {
            flight.hand_in(snap, Source::Search);
        }
        Ok(())
    }

    /// Where the run writes, resolved once.
    pub(super) async fn run_place(&self, run: &mut Run<'_>) -> Result<Place, EngineError> {
        if let Some(p) = &run.place {
            return Ok(p.clone());
        }
        let place = self.place(run.rule).await?;
        run.place = Some(place.clone());
        Ok(place)
    }

    async fn load_mappings(
        &self,
        run: &mut Run<'_>,
        issues: Vec<&IssueSnapshot>,
    ) -> Result<(), EngineError> {
        let place = self.run_place(run).await?;
        let issues = issues
            .into_iter()
            .map(|s| (s.id.clone(), s.key.clone()))
            .collect();
        let found = self
            .store
            .mappings(&place, issues)
            .await
            .map_err(|e| EngineError::store(run.rule, e))?;
        for (k, m) in found {
            run.mappings.entry(k).or_insert(m);
        }
        Ok(())
    }
}
