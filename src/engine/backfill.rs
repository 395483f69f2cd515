//! Backfill: replicate history (`created` in `[since, until)`) with original timestamps,
//! resumable, concurrent up to a limit, and with memory that stays flat however long the
//! history is.
//!
//! How:
//! - History is walked oldest first by `created`, re-querying from the last `created` seen after
//!   every page (time windows that adapt to density) instead of paging deeper: Data Center's
//!   result window (10,000 by default) and Cloud's page tokens are never leaned on for long.
//! - A producer fetches the next page while the current one's GitLab writes run; the channel
//!   between them holds at most [`PREFETCH_PAGES`] pages.
//! - Issues are applied concurrently (up to `concurrency`), the next page's starting while the
//!   last of this one's are written (no drain to zero at each page); the HTTP client paces
//!   them to the configured limits and waits out 429s for every request at once.
//! - Once a page's issues and every earlier page's are written, the position reached is
//!   committed. A killed backfill re-run resumes from it; anything re-read is recognised by its
//!   mapping, so nothing is written twice.
//! - Backfill and the live cursor share the mappings: a later `--once` or service run does not
//!   replay what backfill wrote. Two processes cannot share a store (its lock), so running
//!   backfill while the service runs is refused with the holder's pid.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::{
    Intent, IssueSnapshot, JiraId, JiraKey, Mapping, RunCounts, RunMode, RunOutcome,
};

use super::ports::{GitLabSink, JiraSource, Place, SyncStore};

use super::execute::{Ctx, Outcome};
use super::walk::PageWalk;
use super::{
    EngineError, IssueFailure, PlannedAction, RunLog, Source, SyncEngine, add_counts, error_chain,
    jql, median,
};

/// Pages fetched ahead of the page being written.
pub const PREFETCH_PAGES: usize = 2;

/// What to backfill.
#[derive(Clone, Debug)]
pub struct BackfillRequest {
    /// Issues created at or after this.
    pub since: DateTime<Utc>,
    /// Issues created before this (default: now).
    pub until: Option<DateTime<Utc>>,
    /// GitLab writes in flight at once.
    pub concurrency: usize,
    /// How many planned actions a dry run lists.
    pub sample: usize,
}

/// Watches a backfill's progress (a progress bar, or periodic log lines).
pub trait Progress: Send + Sync {
    /// The number of issues to go through, when Jira can tell.
    fn total(&self, total: Option<u64>);
    /// `done` issues gone through so far, with the running counts.
    fn advance(&self, done: u64, counts: &RunCounts);
}

/// A progress watcher that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn total(&self, _: Option<u64>) {}
    fn advance(&self, _: u64, _: &RunCounts) {}
}

/// What a backfill did.
#[derive(Clone, Debug, Serialize)]
pub struct BackfillReport {
    pub rule: String,
    pub outcome: RunOutcome,
    pub total: Option<u64>,
    pub counts: RunCounts,
    pub failures: Vec<IssueFailure>,
    /// A dry run's sample of planned actions.
    pub planned: Vec<PlannedAction>,
    /// Where an earlier, interrupted backfill had got to.
    pub resumed_from: Option<DateTime<Utc>>,
    pub timestamps_ignored: bool,
    /// GitLab filed an incident as a plain issue (the token is below Reporter).
    pub incidents_filed_as_issues: bool,
    /// The median of `closed_at − created_at` over the incidents this backfill closed.
    pub median_restore_secs: Option<i64>,
    /// Jira requests sent (the count and the search pages).
    pub jira_requests: u64,
    /// The remote links on Jira the backfill sent (`[jira] link_back`).
    pub links: super::link_back::LinkReport,
    pub elapsed_ms: u64,
}

/// The pages a backfill is writing, as one window: their issues waiting to start, in walk order,
/// and how many of each page's are still to finish, oldest page first. The issues of the next
/// page start while the last ones of this page are still being written, so the writes in flight
/// do not drain to none at every page; a page's position is committed once its issues and every
/// earlier page's are written.
#[derive(Default)]
struct Window {
    /// The issues not started: their page, snapshot, mapping, and the intent begun with the
    /// page's (issues without a mapping: their creates).
    waiting: VecDeque<(u64, IssueSnapshot, Option<Mapping>, Option<Intent>)>,
    pages: VecDeque<PageMark>,
    /// The number of the oldest page in `pages`.
    first: u64,
    /// The issues of the pages settled so far.
    done: u64,
}

struct PageMark {
    /// Its issues not written yet.
    left: usize,
    issues: u64,
    /// The `created` of its last issue: where a resumed backfill starts once it is settled.
    last_created: Option<DateTime<Utc>>,
}

impl Window {
    /// Adds the next page: its last `created` and its new issues with their mappings and
    /// begun intents.
    fn add(
        &mut self,
        last_created: Option<DateTime<Utc>>,
        issues: Vec<(IssueSnapshot, Option<Mapping>, Option<Intent>)>,
    ) {
        let page = self.first + self.pages.len() as u64;
        self.pages.push_back(PageMark {
            left: issues.len(),
            issues: issues.len() as u64,
            last_created,
        });
        self.waiting
            .extend(issues.into_iter().map(|(snap, m, i)| (page, snap, m, i)));
    }

    /// Takes the issues never started whose intents were begun afresh with their page: their
    /// creates were never sent.
    fn unsent(&mut self) -> Vec<(Option<JiraId>, JiraKey)> {
        self.waiting
            .drain(..)
            .filter(|(.., intent)| intent.as_ref().is_some_and(|i| i.previous_attempts == 0))
            .map(|(_, snap, ..)| (snap.id, snap.key))
            .collect()
    }

    /// One issue of `page` is written.
    fn finished(&mut self, page: u64) {
        let mark = usize::try_from(page.saturating_sub(self.first))
            .ok()
            .and_then(|i| self.pages.get_mut(i));
        if let Some(mark) = mark {
            mark.left = mark.left.saturating_sub(1);
        }
    }

    /// Takes the oldest page out of the window if all its issues are written, telling
    /// `progress`; answers its last `created`.
    fn settle(
        &mut self,
        report: &BackfillReport,
        progress: &dyn Progress,
    ) -> Option<Option<DateTime<Utc>>> {
        if self.pages.front()?.left > 0 {
            return None;
        }
        let mark = self.pages.pop_front()?;
        self.first += 1;
        self.done += mark.issues;
        progress.advance(self.done, &report.counts);
        Some(mark.last_created)
    }
}

fn resume_key(rule: &RuleConfig, since: DateTime<Utc>) -> String {
    format!("backfill:{}:{}", rule.name, since.to_rfc3339())
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Backfills one rule's history.
    ///
    /// Per-issue failures are recorded (and retried by a live cycle once their backoff is over)
    /// and counted; the backfill goes on, unless GitLab looks down. Stops between issues when
    /// `cancel` fires, with its position committed; an action still in flight when the grace
    /// period ends is abandoned (the run is recorded as cancelled).
    ///
    /// # Errors
    /// Jira cannot be searched, GitLab rejects the token or the project, or the store fails.
    pub async fn backfill(
        &self,
        rule: &RuleConfig,
        req: &BackfillRequest,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<BackfillReport, EngineError> {
        let (report, stopped) = self.backfill_reporting(rule, req, progress, cancel).await;
        match stopped {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// As [`SyncEngine::backfill`], but the report of what was done comes back however the
    /// backfill ended, with the error that stopped it, if one did: for a summary of a backfill
    /// that failed part-way.
    pub async fn backfill_reporting(
        &self,
        rule: &RuleConfig,
        req: &BackfillRequest,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> (BackfillReport, Option<EngineError>) {
        let span = info_span!("backfill", rule = %rule.name);
        async {
            let clock = Instant::now();
            let mut report = BackfillReport {
                rule: rule.name.clone(),
                outcome: RunOutcome::Failed,
                total: None,
                counts: RunCounts::default(),
                failures: Vec::new(),
                planned: Vec::new(),
                resumed_from: None,
                timestamps_ignored: false,
                incidents_filed_as_issues: false,
                median_restore_secs: None,
                jira_requests: 0,
                links: Default::default(),
                elapsed_ms: 0,
            };
            // A backfill is asked for by a person: it is recorded from its start.
            let log = self.begin_run(rule, RunMode::Backfill);
            if let Err(e) = self.open_log(rule, &log).await {
                return (report, Some(e));
            }
            let result = self
                .within_grace(
                    cancel,
                    self.backfill_walk(rule, req, progress, cancel, &log, &mut report),
                )
                .await
                .unwrap_or(Ok(false));
            // After every GitLab write, whatever the walk did.
            if !cancel.is_cancelled() {
                report.links = self
                    .within_grace(cancel, self.send_links(rule, cancel))
                    .await
                    .unwrap_or_default();
            }
            report.elapsed_ms = clock.elapsed().as_millis() as u64;
            (report.outcome, _) = self
                .close_run(
                    rule,
                    &log,
                    &result,
                    &report.counts,
                    report.jira_requests,
                    clock,
                )
                .await;
            (report, result.err())
        }
        .instrument(span)
        .await
    }

    /// The walk; returns false if cancelled before the end.
    async fn backfill_walk(
        &self,
        rule: &RuleConfig,
        req: &BackfillRequest,
        progress: &dyn Progress,
        cancel: &CancellationToken,
        log: &RunLog,
        report: &mut BackfillReport,
    ) -> Result<bool, EngineError> {
        let (zone, _) = self.zone(rule).await?;
        let until = req.until.unwrap_or_else(Utc::now);
        let key = resume_key(rule, req.since);
        let resumed = self
            .store
            .meta(&key)
            .await
            .map_err(|e| EngineError::store(rule, e))?
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t > req.since && *t < until);
        if let Some(at) = resumed {
            info!(from = %at, "resuming an interrupted backfill");
        }
        report.resumed_from = resumed;
        let lower = resumed.unwrap_or(req.since);

        let jira_err = |e| EngineError::jira(rule, e);
        let counted = self
            .jira
            .count(&jql::created_filter(&rule.jql, lower, until, zone))
            .await
            .map_err(jira_err)?;
        report.total = counted;
        progress.total(counted);

        let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
        let producer = PageWalk::by_created(lower, zone).prefetch(
            &self.jira,
            |lower, upper| {
                let to = upper.map_or(until, |u| u.min(until));
                jql::created_between(&rule.jql, lower, to, zone)
            },
            tx,
            cancel,
        );

        let consumer = async {
            // Owned here, so that however the writers stop, the receiver is dropped with them
            // and a producer waiting on a full channel wakes up and ends.
            let mut rx = rx;
            // Resolved on the first page with issues: a backfill of nothing needs none. Declared
            // before the writes, which borrow it.
            let place: OnceCell<Place> = OnceCell::new();
            let limit = req.concurrency.max(1);
            let mut window = Window::default();
            let walked = async {
                let mut running = FuturesUnordered::new();
                let mut previous: HashSet<JiraKey> = HashSet::new();
                let mut restore_times: Vec<chrono::Duration> = Vec::new();
                let mut first_page = true;
                let mut walking = true;
                loop {
                    while running.len() < limit && !cancel.is_cancelled() {
                        let Some(place) = place.get() else { break };
                        let Some((page, snap, mapping, begun)) = window.waiting.pop_front() else {
                            break;
                        };
                        running.push(
                            async move {
                                let cx = Ctx { rule, place, log };
                                let source = Source::Backfill;
                                let out = self.apply(&cx, snap, mapping, source, None, begun);
                                (page, out.await)
                            }
                            .boxed(),
                        );
                    }
                    // The position reached: the last page whose issues, and every earlier page's,
                    // are all written.
                    while let Some(last_created) = window.settle(report, progress) {
                        if let Some(at) = last_created {
                            self.store
                                .set_meta(&key, &at.to_rfc3339())
                                .await
                                .map_err(|e| EngineError::store(rule, e))?;
                        }
                    }
                    if running.is_empty() {
                        if cancel.is_cancelled() {
                            report.median_restore_secs =
                                median(&mut restore_times).map(|d| d.num_seconds());
                            return Ok(false);
                        }
                        if !walking && window.waiting.is_empty() {
                            break;
                        }
                    }
                    // The next page once this one's issues are under way: memory stays flat.
                    let want_page =
                        walking && !cancel.is_cancelled() && window.waiting.len() < limit;
                    tokio::select! {
                        biased;
                        Some((page, outcome)) = running.next(), if !running.is_empty() => {
                            let out: Outcome = outcome?;
                            window.finished(page);
                            if let Some(m) = &out.mapping
                                && let Some(closed) = m.closed_at
                                && out.counts.closed > 0
                            {
                                restore_times.push(closed - m.created_at);
                            }
                            add_counts(&mut report.counts, &out.counts);
                            if let Some(f) = out.failure {
                                report.failures.push(f);
                            }
                            if let Some(a) = out.action
                                && report.planned.len() < req.sample
                            {
                                report.planned.push(a);
                            }
                            report.timestamps_ignored |= out.timestamps_ignored;
                            report.incidents_filed_as_issues |= out.filed_as_issue;
                        }
                        item = rx.recv(), if want_page => {
                            let Some(item) = item else {
                                walking = false;
                                continue;
                            };
                            let page = item.map_err(|e| EngineError::jira(rule, e))?;
                            if first_page && report.total.is_none() {
                                report.total = page.total;
                                progress.total(page.total);
                            }
                            first_page = false;
                            for bad in page.undecodable {
                                error!(jira_key = %bad.key, reason = %bad.reason, "cannot read an issue Jira returned; skipped");
                                report.counts.failed += 1;
                                report.failures.push(IssueFailure {
                                    jira_key: bad.key,
                                    error: bad.reason,
                                });
                            }
                            let last_created = page.issues.last().map(|s| s.created);
                            // Pages overlap by the minute they were re-queried from; the previous
                            // page's keys are the only ones that can come again. So no issue is in
                            // two pages of the window at once.
                            let current: HashSet<JiraKey> =
                                page.issues.iter().map(|s| s.key.clone()).collect();
                            let mut fresh: Vec<IssueSnapshot> = page
                                .issues
                                .into_iter()
                                .filter(|s| !previous.contains(&s.key))
                                .filter(|s| s.created >= req.since && s.created < until)
                                .collect();
                            previous = current;
                            report.counts.seen += fresh.len() as u64;
                            if fresh.is_empty() {
                                window.add(last_created, Vec::new());
                                continue;
                            }
                            let place = place
                                .get_or_try_init(|| self.place(rule))
                                .await?;
                            let cx = Ctx { rule, place, log };
                            let issues: Vec<_> = fresh
                                .iter()
                                .map(|s| (s.id.clone(), s.key.clone()))
                                .collect();
                            let mut mappings = self
                                .store
                                .mappings(place, issues)
                                .await
                                .map_err(|e| EngineError::store(rule, e))?;
                            self.prefetch_transitions(&cx, &mut fresh, &mappings).await?;
                            // The page's creates, begun together: one durable commit for the page.
                            let creates = fresh
                                .iter()
                                .filter(|s| !mappings.contains_key(&s.key))
                                .map(|s| (s.id.clone(), s.key.clone()))
                                .collect();
                            let mut begun = self
                                .store
                                .begin_intents(&rule.name, place, creates)
                                .await
                                .map_err(|e| EngineError::store(rule, e))?;
                            let issues = fresh
                                .into_iter()
                                .map(|snap| {
                                    let mapping = mappings.remove(&snap.key);
                                    let intent = begun.remove(&snap.key);
                                    (snap, mapping, intent)
                                })
                                .collect();
                            window.add(last_created, issues);
                        }
                    }
                }
                report.median_restore_secs = median(&mut restore_times).map(|d| d.num_seconds());
                // The producer stops early only when cancelled.
                Ok(!cancel.is_cancelled())
            }
            .await;
            // However the walk stopped: the creates begun with their pages and never sent are
            // withdrawn, so that a resumed backfill does not look for them first.
            let unsent = window.unsent();
            if let (false, Some(place)) = (unsent.is_empty(), place.get())
                && let Err(e) = self.store.withdraw_intents(&rule.name, place, unsent).await
            {
                warn!(cause = %error_chain(&e), "cannot withdraw the intents of creates never sent; a resumed backfill looks for those issues before creating them");
            }
            walked
        };

        let (searches, result) = tokio::join!(producer, consumer);
        report.jira_requests += searches;
        result
    }
}
