//! The live cycle ([`SyncEngine::run_rule`]): retry the rule's stored failures that are due,
//! walk Jira's changes since its cursor, apply each snapshot, and move the cursor with the
//! commits.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span};

use crate::config::RuleConfig;
use crate::domain::{IssueSnapshot, JiraKey, Mapping, RunCounts, RunMode, RunOutcome};

use super::execute::Outcome;
use super::ports::{GitLabSink, JiraSource, Place, SyncStore};
use super::walk::PageWalk;
use super::{EngineError, IssueFailure, RunReport, Source, SyncEngine, add_counts, jql, uuid_like};

/// When the account's zone is found to have changed, the next search reaches back this much
/// further, covering any change a bound written in the old zone may have missed (zones differ by
/// at most 26 hours).
const ZONE_CHANGE_MARGIN: chrono::Duration = chrono::Duration::hours(26);

/// The state of one run in progress.
pub(super) struct Run<'a> {
    pub(super) rule: &'a RuleConfig,
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
        self.report.timestamps_ignored |= out.timestamps_ignored;
        self.report.incidents_filed_as_issues |= out.filed_as_issue;
    }
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Runs one rule once: retry its failed issues whose backoff is over, walk Jira's changes
    /// since its cursor, replay them to GitLab. Stops between actions when `cancel` fires, with everything done so far
    /// committed.
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
        let run_id = self.open_run(rule, mode).await?;
        let lookback =
            chrono::Duration::from_std(self.settings.lookback).unwrap_or(chrono::Duration::zero());
        let mut run = Run {
            rule,
            report: RunReport {
                rule: rule.name.clone(),
                mode,
                run_id: Some(run_id),
                outcome: RunOutcome::Ok,
                counts: RunCounts::default(),
                failures: Vec::new(),
                planned: Vec::new(),
                jira_requests: 0,
                timestamps_ignored: false,
                incidents_filed_as_issues: false,
                reconcile: None,
                elapsed_ms: 0,
            },
            mappings: HashMap::new(),
            seen: HashSet::new(),
            ceiling: started + self.skew() - lookback,
            place: None,
        };
        let result = self
            .within_grace(cancel, async {
                match self.walk(&mut run, started, lookback, cancel).await {
                    // Only after a complete walk: the cursor then says what the search covered.
                    Ok(true) => self.reconcile_if_due(&mut run, cancel).await,
                    other => other,
                }
            })
            .await
            .unwrap_or(Ok(false));
        let mut report = run.report;
        report.elapsed_ms = clock.elapsed().as_millis() as u64;
        report.outcome = self
            .close_run(run_id, &result, &report.counts, report.jira_requests, clock)
            .await;
        result.map(|_| report)
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
        // A rule's first run starts from now by Jira's clock, as far as it is known.
        let base = cursor.or(rule.since).unwrap_or(started + self.skew());
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
        let waiting: HashMap<JiraKey, DateTime<Utc>> = waiting
            .into_iter()
            .map(|f| (f.snapshot.key, f.snapshot.updated))
            .collect();
        if !due.is_empty() {
            let issues = due.iter().map(|f| &f.snapshot).collect();
            self.load_mappings(run, issues).await?;
            info!(count = due.len(), "retrying issues that failed before");
        }
        for f in due {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            // The search may read the same change again: it is not tried twice in one run.
            run.seen
                .insert((f.snapshot.key.clone(), f.snapshot.updated));
            self.process(run, f.snapshot, Source::Retry).await?;
        }

        let mut walk = PageWalk::by_updated(lower, zone);
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            let page = walk
                .next(&self.jira, |lower, upper| {
                    jql::changed_since(&rule.jql, lower, upper, zone)
                })
                .await;
            let first = run.report.jira_requests == 0;
            run.report.jira_requests = walk.requests;
            let Some(result) = page.map_err(|e| EngineError::jira(rule, e))? else {
                break;
            };
            if first && let Some(jira_now) = result.date {
                // The cursor's ceiling by Jira's clock: `updated` is written by it, so a host
                // clock ahead of Jira's cannot move the cursor past changes not yet made.
                self.observe_jira_clock(jira_now, Utc::now());
                run.ceiling = jira_now - lookback;
            }
            for bad in result.undecodable {
                error!(jira_key = %bad.key, reason = %bad.reason, "cannot read an issue Jira returned; skipped");
                run.report.counts.failed += 1;
                run.report.failures.push(IssueFailure {
                    jira_key: bad.key,
                    error: bad.reason,
                });
            }
            let unknown = result
                .issues
                .iter()
                .filter(|s| !run.mappings.contains_key(&s.key))
                .collect::<Vec<_>>();
            if !unknown.is_empty() {
                self.load_mappings(run, unknown).await?;
            }
            for snap in result.issues {
                if cancel.is_cancelled() {
                    return Ok(false);
                }
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
                self.process(run, snap, Source::Search).await?;
            }
        }
        self.store
            .advance_cursor(&rule.name, run.ceiling)
            .await
            .map_err(|e| EngineError::store(rule, e))?;
        Ok(true)
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

    /// Applies one snapshot within a run, keeping the run's counts and mappings.
    async fn process(
        &self,
        run: &mut Run<'_>,
        snap: IssueSnapshot,
        source: Source,
    ) -> Result<(), EngineError> {
        let mapping = run.mappings.get(&snap.key).cloned();
        let cursor = match source {
            Source::Search => Some(snap.updated.min(run.ceiling)),
            Source::Retry | Source::Backfill | Source::Reconcile => None,
        };
        let place = self.run_place(run).await?;
        let outcome = self
            .apply(run.rule, &place, snap, mapping, source, cursor)
            .await?;
        run.absorb(outcome);
        Ok(())
    }
}
