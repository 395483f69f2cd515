//! Following every replicated issue by id until it is resolved: the reconciliation.
//!
//! A rule's search only returns what matches its JQL, so an issue that stops matching it (a
//! lowered priority, a move to another project) or is deleted would stay open in GitLab for
//! ever. Every `reconcile_secs`, after a complete walk, the rule's open mappings that no run
//! wrote within that interval are re-read by id, at most [`MAX_READ_BACK`] a request
//! ([`JiraSource::issues_by_id`]):
//! - an issue Jira still shows is replicated as it is now: resolved anywhere → closed at its
//!   exact time, also after it left the JQL. One whose change is older than the cursor (so the
//!   rule's search would have returned it) but that the search did not return has left the JQL:
//!   the rule's `on_leave` says whether it gets the label `jira::out-of-scope`;
//! - an issue Jira no longer shows is deleted (or hidden from the account): the rule's
//!   `on_delete` closes it at the time the deletion was seen with the label `jira::deleted`,
//!   deletes the GitLab object, or keeps it.
//!
//! The time of the last reconciliation is kept in the store, so `--once` reconciles when it is
//! due; outside the interval a cycle costs no request for it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{OnDelete, OnLeave};
use crate::domain::{Commit, IssueScope, IssueSnapshot, JiraId, Mapping, RemoteState, Target};

use super::cycle::Run;
use super::execute::Ctx;
use super::ports::{GitLabSink, JiraSource, MAX_READ_BACK, Place, PortError, SyncStore};
use super::{Cause, EngineError, IssueFailure, Source, SyncEngine, error_chain};

/// The label an issue that left its rule's JQL gets (`on_leave = "label"`).
pub const OUT_OF_SCOPE_LABEL: &str = "jira::out-of-scope";

/// The label an issue deleted in Jira gets when it is closed (`on_delete = "close"`).
pub const DELETED_LABEL: &str = "jira::deleted";

/// The store's meta key holding when a rule was last reconciled.
fn meta_key(rule: &str) -> String {
    format!("reconciled_at:{rule}")
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Open mappings re-read.
    pub followed: u64,
    /// Jira requests it cost.
    pub jira_requests: u64,
    /// Issues found to have left the rule's JQL.
    pub left: u64,
    /// Issues found deleted in Jira.
    pub deleted: u64,
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Reconciles the run's rule if `reconcile_secs` passed since the last time (or it never
    /// was); returns false if cancelled.
    ///
    /// # Errors
    /// Jira cannot be read, GitLab refuses the token or the project, or the store fails; the
    /// time of the last reconciliation is then left as it was, so the next cycle tries again.
    pub(super) async fn reconcile_if_due(
        &self,
        run: &mut Run<'_>,
        cancel: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let rule = run.rule;
        let store_err = |e| EngineError::store(rule, e);
        let key = meta_key(&rule.name);
        let now = Utc::now();
        let interval = chrono::Duration::from_std(self.settings.reconcile)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        let last = match self.mark(&rule.name).reconciled {
            Some(known) => known,
            None => {
                let stored = self
                    .store
                    .meta(&key)
                    .await
                    .map_err(store_err)?
                    .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                    .map(|t| t.with_timezone(&Utc));
                self.remark(&rule.name, |m| m.reconciled = Some(stored));
                stored
            }
        };
        if last.is_some_and(|t| now - t < interval && t <= now) {
            return Ok(true);
        }
        // An issue whose latest change is stored as failed was returned by the search: its
        // mapping is behind for that reason, not because it left the JQL. The retry handles it.
        let failing: HashSet<String> = self
            .store
            .failures(&rule.name)
            .await
            .map_err(store_err)?
            .into_iter()
            .flat_map(|f| {
                let id = f.snapshot.id.map(|id| id.to_string());
                [Some(f.snapshot.key.to_string()), id]
            })
            .flatten()
            .collect();
        let mappings: Vec<Mapping> = self
            .store
            .following(&rule.name, now - interval)
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|m| {
                !failing.contains(m.jira_key.as_str())
                    && !m
                        .jira_id
                        .as_ref()
                        .is_some_and(|id| failing.contains(id.as_str()))
            })
            .collect();
        let cursor = self.cursor(rule).await?;
        let mut report = ReconcileReport {
            followed: mappings.len() as u64,
            ..ReconcileReport::default()
        };
        if !mappings.is_empty() {
            info!(open = mappings.len(), "following open issues by id");
            let place = self.run_place(run).await?;
            for batch in mappings.chunks(MAX_READ_BACK) {
                if cancel.is_cancelled() {
                    run.report.reconcile = Some(report);
                    return Ok(false);
                }
                let ids: Vec<JiraId> = batch.iter().filter_map(|m| m.jira_id.clone()).collect();
                report.jira_requests += 1;
                run.report.jira_requests += 1;
                let back = self
                    .jira
                    .issues_by_id(&ids)
                    .await
                    .map_err(|e| EngineError::jira(rule, e))?;
                let mut found: HashMap<JiraId, IssueSnapshot> = back
                    .issues
                    .into_iter()
                    .filter_map(|s| s.id.clone().map(|id| (id, s)))
                    .collect();
                let unanswered: HashSet<JiraId> = back.unanswered.into_iter().collect();
                let unreadable: HashSet<String> =
                    back.undecodable.into_iter().map(|bad| bad.key).collect();
                for m in batch {
                    let Some(id) = m.jira_id.clone() else {
                        continue;
                    };
                    match found.remove(&id) {
                        Some(snap) => {
                            self.follow(run, &place, m.clone(), snap, cursor, &mut report)
                                .await?;
                        }
                        // Jira could not say this time: not known to be gone.
                        None if unanswered.contains(&id)
                            || unreadable.contains(m.jira_key.as_str()) => {}
                        None => {
                            self.deleted_in_jira(
                                run,
                                &place,
                                m.clone(),
                                now + self.skew(),
                                &mut report,
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        self.store
            .set_meta(&key, &now.to_rfc3339())
            .await
            .map_err(store_err)?;
        self.remark(&rule.name, |m| m.reconciled = Some(Some(now)));
        info!(
            followed = report.followed,
            jira_requests = report.jira_requests,
            left = report.left,
            deleted = report.deleted,
            "reconciled"
        );
        run.report.reconcile = Some(report);
        Ok(true)
    }

    /// An issue Jira still shows: marks it out of scope if it left the JQL, then replicates it
    /// as it is now.
    async fn follow(
        &self,
        run: &mut Run<'_>,
        place: &Place,
        mut m: Mapping,
        snap: IssueSnapshot,
        cursor: Option<DateTime<Utc>>,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let rule = run.rule;
        // Its change is older than the cursor, so the rule's search would have returned it if
        // it still matched; it did not (the mapping does not hold it).
        let left = m.scope == IssueScope::InScope
            && snap.updated > m.jira_updated
            && cursor.is_some_and(|c| snap.updated < c);
        if left {
            self.open_log(rule, run.log).await?;
            report.left += 1;
            info!(
                jira_key = %snap.key,
                was = %m.jira_key,
                "the issue no longer matches the rule's JQL; it is followed by id until resolved"
            );
            if rule.on_leave == OnLeave::Label && place.target() != Target::Alert {
                match self
                    .gitlab
                    .add_label(&place.dest, &m, OUT_OF_SCOPE_LABEL)
                    .await
                {
                    Ok(remote) => m = m.followed(&remote, DateTime::<Utc>::MIN_UTC),
                    Err(e) => return self.reconcile_failed(run, &m, e),
                }
            }
            m.scope = IssueScope::OutOfScope;
            self.store
                .commit(&rule.name, Commit::Replicated(m.clone()), None)
                .await
                .map_err(|e| EngineError::store(rule, e))?;
        }
        let cx = Ctx {
            rule,
            place,
            log: run.log,
        };
        let outcome = self
            .apply(&cx, snap, Some(m), Source::Reconcile, None, None)
            .await?;
        run.absorb(outcome);
        Ok(())
    }

    /// An issue Jira no longer shows, seen so at `seen`: the rule's `on_delete`.
    async fn deleted_in_jira(
        &self,
        run: &mut Run<'_>,
        place: &Place,
        m: Mapping,
        seen: DateTime<Utc>,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let rule = run.rule;
        self.open_log(rule, run.log).await?;
        report.deleted += 1;
        warn!(
            jira_key = %m.jira_key,
            on_delete = %rule.on_delete,
            "the issue is gone from Jira (deleted, or hidden from the account)"
        );
        let dest = &place.dest;
        let alert = place.target() == Target::Alert;
        let m = match (rule.on_delete, alert) {
            (OnDelete::Keep, _) => m,
            (OnDelete::Delete, false) => match self.gitlab.delete(dest, &m).await {
                Ok(()) => Mapping {
                    state: RemoteState::Closed,
                    closed_at: Some(seen),
                    ..m
                },
                Err(e) => return self.reconcile_failed(run, &m, e),
            },
            // An alert has no labels and cannot be deleted: its recovery closes it.
            (OnDelete::Close | OnDelete::Delete, _) => {
                let mut m = m;
                if !alert {
                    match self.gitlab.add_label(dest, &m, DELETED_LABEL).await {
                        Ok(remote) => m = m.followed(&remote, DateTime::<Utc>::MIN_UTC),
                        Err(e) => return self.reconcile_failed(run, &m, e),
                    }
                }
                match self.gitlab.close(dest, &m, seen).await {
                    Ok(remote) => {
                        run.report.counts.closed += 1;
                        m.followed(&remote, DateTime::<Utc>::MIN_UTC)
                    }
                    Err(e) => return self.reconcile_failed(run, &m, e),
                }
            }
        };
        let m = Mapping {
            scope: IssueScope::Deleted,
            ..m
        };
        self.store
            .commit(&rule.name, Commit::Replicated(m), None)
            .await
            .map_err(|e| EngineError::store(rule, e))
    }

    /// A GitLab write of the reconciliation failed: the run stops if nothing can get through,
    /// else the issue is counted as failed and tried again at the next reconciliation.
    fn reconcile_failed(
        &self,
        run: &mut Run<'_>,
        m: &Mapping,
        e: G::Error,
    ) -> Result<(), EngineError> {
        if e.stops_run() {
            return Err(EngineError::GitLab {
                rule: run.rule.name.clone(),
                jira_key: m.jira_key.clone(),
                source: Cause::new(e),
            });
        }
        let message = error_chain(&e);
        warn!(jira_key = %m.jira_key, error = %message, "following the issue failed; tried again at the next reconciliation");
        run.report.counts.failed += 1;
        run.report.failures.push(IssueFailure {
            jira_key: m.jira_key.to_string(),
            error: message,
        });
        Ok(())
    }
}
