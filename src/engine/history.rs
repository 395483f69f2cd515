//! Jira's workflow history in GitLab: a rule's `[rule.stage_labels]` replayed as label events
//! at the transitions' times, and `created_from` / `closed_from`, which move the moments GitLab
//! counts time to restore from and to.
//!
//! How it fits the executor: before a snapshot is planned, `shape` reads the
//! issue's transitions when the rule needs them and they are not known yet (a page's issues are
//! read in one request beforehand, `prefetch_transitions`), and rewrites the
//! snapshot's `created` and `resolved_at` from the configured sources; the plan then closes,
//! reopens or closes again at those times as it does for Jira's own. After the plan's writes,
//! `finish_history` replays the stage steps not yet replayed and records that the
//! change's history is applied.
//!
//! Never twice: each step is recorded `pending` before its write and `done` after GitLab
//! answered; a pending step (an answer lost, a process killed) is looked up in GitLab's label
//! events before it is sent again. While a snapshot's steps are not all replayed, the rule's
//! cursor stays before it, so a crash leaves the change to be read again.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use tracing::{info, warn};

use crate::config::{ClosedFrom, CreatedFrom, HistoryConfig};
use crate::domain::{
    Commit, IssueSnapshot, JiraId, LabelEvent, Mapping, RemoteState, StageStep, Target, Transition,
};

use super::execute::{Ctx, Outcome, STAGE_REPLAYED};
use super::ports::{GitLabSink, JiraSource, PortError, SyncStore};
use super::{EngineError, SyncEngine, error_chain};

/// GitLab keeps label event times to the millisecond; a step's event within this of its time
/// is that step.
const EVENT_TOLERANCE: chrono::Duration = chrono::Duration::seconds(1);

/// The stage steps `transitions` make under `cfg`, oldest first: the label of the status the
/// issue was created in, at `created`; then for each transition into a mapped status its label
/// added (the previous stage label removed), and for each into an unmapped status the stage
/// label removed. `initial` is the status the issue was created in when there are no
/// transitions to say (its status now).
pub fn stage_steps(
    cfg: &HistoryConfig,
    created: DateTime<Utc>,
    initial: &str,
    transitions: &[Transition],
) -> Vec<StageStep> {
    let mut steps = Vec::new();
    let first = transitions
        .first()
        .and_then(|t| t.from.as_deref())
        .unwrap_or(initial);
    let mut current = cfg.stage_label(first).map(str::to_owned);
    if let Some(l) = &current {
        steps.push(StageStep {
            at: created,
            add: Some(l.clone()),
            remove: None,
        });
    }
    for t in transitions {
        let next = cfg.stage_label(&t.to).map(str::to_owned);
        if next == current {
            continue;
        }
        steps.push(StageStep {
            at: t.at,
            add: next.clone(),
            remove: current.take(),
        });
        current = next;
    }
    steps
}

/// When the issue was restored under `closed_from = "status:<status>"`: the latest entry into
/// `status`, unless the issue moved on to a status that is neither it nor Done (it is open
/// again then); an issue resolved without such an entry counts from its resolution. `None`
/// while it is open.
pub fn restored_at(
    status: &str,
    transitions: &[Transition],
    snap: &IssueSnapshot,
) -> Option<DateTime<Utc>> {
    let mut restored = None;
    for t in transitions {
        if t.to == status {
            restored = Some(t.at);
        } else if !t.to_done {
            restored = None;
        }
    }
    if snap.status == status {
        // Created in that status: restored from the start.
        return restored.or(Some(snap.created));
    }
    snap.resolved_at
        .map(|resolved| restored.unwrap_or(resolved))
}

/// A date or date-time field's value as a time: `YYYY-MM-DD` is midnight in `zone` (the Jira
/// account's), a date-time is Jira's `2025-02-15T09:45:32.700+0100` or RFC 3339.
pub fn field_time(text: &str, zone: Tz) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)?
            .and_local_timezone(zone)
            .earliest()
            .map(|t| t.with_timezone(&Utc));
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Returns true if and only if GitLab's `events` hold `step` (its label added, or, for a step
/// that only removes, its label removed, at its time).
fn holds(events: &[LabelEvent], step: &StageStep) -> bool {
    let (label, added) = match (&step.add, &step.remove) {
        (Some(a), _) => (a, true),
        (None, Some(r)) => (r, false),
        (None, None) => return true,
    };
    events
        .iter()
        .any(|e| e.added == added && e.label == *label && (e.at - step.at).abs() <= EVENT_TOLERANCE)
}

/// What `shape` found: whether the snapshot's history is to be applied after the
/// plan's writes.
pub(super) struct Shaped {
    pub(super) snap: IssueSnapshot,
    /// The snapshot as shaped, kept for the stage replay after its writes (`None`: nothing to
    /// do after them).
    pub(super) history: Option<IssueSnapshot>,
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Returns true if and only if `snap` needs its transitions read: the rule uses them, it is
    /// not an alert, they are not known, and the store has not applied this change's history
    /// to the object already.
    async fn wants_transitions(
        &self,
        cx: &Ctx<'_>,
        snap: &IssueSnapshot,
        mapping: Option<&Mapping>,
    ) -> Result<bool, EngineError> {
        if !cx.rule.history.needs_transitions()
            || cx.place.target() == Target::Alert
            || snap.transitions.is_some()
        {
            return Ok(false);
        }
        let Some(m) = mapping else {
            return Ok(true);
        };
        if m.gone_at.is_some() || snap.updated < m.jira_updated {
            return Ok(false);
        }
        let (Some(project_id), Some(iid)) = (m.project_id, m.iid) else {
            return Ok(true);
        };
        let state = self
            .store
            .stages(project_id, iid)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))?;
        Ok(state.history_updated.is_none_or(|u| u < snap.updated))
    }

    /// Reads the transitions of the `snaps` that need them in one request (Cloud's bulk
    /// changelog takes up to 1,000 issues), before they are applied one by one.
    ///
    /// # Errors
    /// Jira or the store failed: the run stops, and the cursor stays before these issues.
    pub(super) async fn prefetch_transitions(
        &self,
        cx: &Ctx<'_>,
        snaps: &mut [IssueSnapshot],
        mappings: &std::collections::HashMap<crate::domain::JiraKey, Mapping>,
    ) -> Result<(), EngineError> {
        if !cx.rule.history.needs_transitions() || cx.place.target() == Target::Alert {
            return Ok(());
        }
        let mut ids: Vec<JiraId> = Vec::new();
        for s in snaps.iter() {
            if let Some(id) = &s.id
                && self.wants_transitions(cx, s, mappings.get(&s.key)).await?
            {
                ids.push(id.clone());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let mut found = self
            .jira
            .transitions(&ids)
            .await
            .map_err(|e| EngineError::jira(cx.rule, e))?;
        let wanted: HashSet<&JiraId> = ids.iter().collect();
        for s in snaps.iter_mut() {
            if let Some(id) = &s.id
                && wanted.contains(id)
            {
                s.transitions = Some(found.remove(id).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// The snapshot as the rule's history keys make it: transitions read if needed, `created`
    /// from `created_from`, `resolved_at` from `closed_from`.
    ///
    /// # Errors
    /// Jira or the store failed: the run stops.
    pub(super) async fn shape(
        &self,
        cx: &Ctx<'_>,
        mut snap: IssueSnapshot,
        mapping: Option<&Mapping>,
    ) -> Result<Shaped, EngineError> {
        let cfg = &cx.rule.history;
        if cfg.is_default() || cx.place.target() == Target::Alert {
            return Ok(Shaped {
                snap,
                history: None,
            });
        }
        if let Some(id) = snap.id.clone()
            && self.wants_transitions(cx, &snap, mapping).await?
        {
            let mut found = self
                .jira
                .transitions(std::slice::from_ref(&id))
                .await
                .map_err(|e| EngineError::jira(cx.rule, e))?;
            snap.transitions = Some(found.remove(&id).unwrap_or_default());
        }
        let zone = if cfg.field_ids().is_empty() {
            chrono_tz::UTC
        } else {
            self.zone(cx.rule).await?.0
        };
        if let CreatedFrom::Field(id) = &cfg.created_from {
            match snap.fields.get(id).and_then(|v| field_time(v, zone)) {
                Some(at) => snap.created = at,
                None => self.warn_empty(cx, &snap, "created_from", id, "created"),
            }
        }
        match &cfg.closed_from {
            ClosedFrom::Resolution => {}
            ClosedFrom::Field(id) => match snap.fields.get(id).and_then(|v| field_time(v, zone)) {
                Some(at) => snap.resolved_at = Some(at.max(snap.created)),
                None if snap.resolved_at.is_some() => {
                    self.warn_empty(cx, &snap, "closed_from", id, "the resolution time");
                }
                None => {}
            },
            ClosedFrom::Status(status) => {
                snap.resolved_at = match &snap.transitions {
                    Some(t) => restored_at(status, t, &snap).map(|at| at.max(snap.created)),
                    // This change's history is applied already: what was replicated stands.
                    None => mapping.and_then(|m| match m.state {
                        RemoteState::Closed => m.jira_resolved_at.or(snap.resolved_at),
                        RemoteState::Opened => None,
                    }),
                };
            }
        }
        let history = snap.transitions.is_some().then(|| snap.clone());
        Ok(Shaped { snap, history })
    }

    /// Warns once per issue (per process) that a `field:<id>` source is empty.
    fn warn_empty(
        &self,
        cx: &Ctx<'_>,
        snap: &IssueSnapshot,
        key: &str,
        field: &str,
        fallback: &str,
    ) {
        let first = self
            .warned_fields
            .lock()
            .map(|mut w| w.insert(format!("{}\u{0}{}\u{0}{key}", cx.rule.name, snap.key)))
            .unwrap_or(true);
        if first {
            warn!(
                jira_key = %snap.key,
                field,
                "{key} = \"field:{field}\" is empty for {}: {fallback} is used instead",
                snap.key
            );
        }
    }

    /// After the plan's writes for `snap` (shaped, with its transitions): replays the stage
    /// steps not yet replayed, records that the change's history is applied, then commits the
    /// cursor the writes held back (`staged`).
    ///
    /// # Errors
    /// The store failed, or GitLab refused in a way that stops the run.
    pub(super) async fn finish_history(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        before: Option<Mapping>,
        cursor: Option<DateTime<Utc>>,
        staged: bool,
    ) -> Result<(), EngineError> {
        if out.failure.is_some() {
            // Recorded as failed: the retry applies the history.
            return Ok(());
        }
        let Some(m) = out.mapping.clone().or(before) else {
            return Ok(());
        };
        if m.gone_at.is_some() {
            return Ok(());
        }
        let (Some(project_id), Some(iid)) = (m.project_id, m.iid) else {
            return Ok(());
        };
        let store = |e: S::Error| EngineError::store(cx.rule, e);
        if !cx.rule.history.stage_labels.is_empty() {
            let transitions = snap.transitions.as_deref().unwrap_or_default();
            let steps = stage_steps(&cx.rule.history, m.created_at, &snap.status, transitions);
            let state = self.store.stages(project_id, iid).await.map_err(store)?;
            let last_done = state.done.iter().map(|s| s.at).max();
            let mut events: Option<Vec<LabelEvent>> = None;
            for step in steps {
                // Done already, or older than what was replayed (history from before a change
                // of `stage_labels`: replaying it now would leave an old label on).
                if state.done.contains(&step) || last_done.is_some_and(|d| step.at < d) {
                    continue;
                }
                self.open_log(cx.rule, cx.log).await?;
                if state.pending.contains(&step) {
                    if events.is_none() {
                        match self.gitlab.label_events(&cx.place.dest, &m).await {
                            Ok(e) => events = Some(e),
                            Err(e) => return self.stage_failed(cx, out, snap, m, e, cursor).await,
                        }
                    }
                    if events.as_deref().is_some_and(|e| holds(e, &step)) {
                        info!(at = %step.at, add = ?step.add, remove = ?step.remove,
                            "GitLab holds a stage step whose answer was lost; not sending it again");
                        self.store
                            .record_stage(project_id, iid, &step, true)
                            .await
                            .map_err(store)?;
                        continue;
                    }
                }
                self.store
                    .record_stage(project_id, iid, &step, false)
                    .await
                    .map_err(store)?;
                let sent = self
                    .gitlab
                    .relabel(
                        &cx.place.dest,
                        &m,
                        step.add.as_deref(),
                        step.remove.as_deref(),
                        step.at,
                    )
                    .await;
                if let Err(e) = sent {
                    return self.stage_failed(cx, out, snap, m, e, cursor).await;
                }
                self.answered(&cx.rule.name);
                let said = self.said(STAGE_REPLAYED);
                info!(at = %step.at, add = ?step.add, remove = ?step.remove, "{said}");
                self.store
                    .record_stage(project_id, iid, &step, true)
                    .await
                    .map_err(store)?;
            }
        }
        self.store
            .history_done(project_id, iid, snap.updated)
            .await
            .map_err(store)?;
        if staged && let Some(m) = out.mapping.clone() {
            self.commit(cx, out, Commit::Replicated(m), cursor).await?;
        }
        Ok(())
    }

    /// A stage write failed: an object a person deleted is recorded as gone; anything else is
    /// this issue's failure (retried later, the replay going on from the step that failed).
    async fn stage_failed(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        e: G::Error,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        if e.is_gone() {
            return self
                .gone(cx, out, snap, m, "a person deleted it in GitLab", cursor)
                .await;
        }
        warn!(cause = %error_chain(&e), "a stage label write failed");
        self.fail(cx, out, snap, e, cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JiraKey;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + min * 60, 0).expect("a valid time")
    }

    fn tr(min: i64, from: &str, to: &str, done: bool) -> Transition {
        Transition {
            at: t(min),
            from: Some(from.into()),
            to: to.into(),
            to_done: done,
        }
    }

    fn cfg() -> HistoryConfig {
        HistoryConfig {
            stage_labels: [
                ("To Do", "workflow::todo"),
                ("In Progress", "workflow::doing"),
                ("Mitigated", "workflow::mitigated"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect(),
            ..HistoryConfig::default()
        }
    }

    fn snap(status: &str, resolved: Option<i64>) -> IssueSnapshot {
        IssueSnapshot {
            id: None,
            key: JiraKey::parse("OPS-1").expect("a key"),
            summary: String::new(),
            description: None,
            created: t(0),
            updated: t(100),
            resolved_at: resolved.map(t),
            status: status.into(),
            priority: None,
            labels: vec![],
            issue_type: None,
            fields: Default::default(),
            transitions: None,
        }
    }

    fn step(min: i64, add: Option<&str>, remove: Option<&str>) -> StageStep {
        StageStep {
            at: t(min),
            add: add.map(str::to_owned),
            remove: remove.map(str::to_owned),
        }
    }

    /// The created status's label at creation, each mapped status's label at its entry (the
    /// previous one removed), and an unmapped status removes the label.
    #[test]
    fn transitions_become_stage_steps() {
        let history = [
            tr(5, "To Do", "In Progress", false),
            tr(9, "In Progress", "Mitigated", false),
            tr(12, "Mitigated", "Done", true),
        ];
        assert_eq!(
            stage_steps(&cfg(), t(0), "Done", &history),
            vec![
                step(0, Some("workflow::todo"), None),
                step(5, Some("workflow::doing"), Some("workflow::todo")),
                step(9, Some("workflow::mitigated"), Some("workflow::doing")),
                step(12, None, Some("workflow::mitigated")),
            ]
        );
        assert_eq!(
            stage_steps(&cfg(), t(0), "In Progress", &[]),
            vec![step(0, Some("workflow::doing"), None)],
            "no transitions: the status it is in now, from its creation"
        );
    }

    /// The latest entry into the status counts; moving back to an open status reopens; Done
    /// after it keeps it; resolved without it counts from the resolution.
    #[test]
    fn restored_from_the_latest_entry_into_the_status() {
        let mitigated_then_done = [
            tr(5, "To Do", "Mitigated", false),
            tr(9, "Mitigated", "In Progress", false),
            tr(12, "In Progress", "Mitigated", false),
            tr(20, "Mitigated", "Done", true),
        ];
        let s = snap("Done", Some(20));
        assert_eq!(
            restored_at("Mitigated", &mitigated_then_done, &s),
            Some(t(12))
        );
        let back = &mitigated_then_done[..2];
        assert_eq!(
            restored_at("Mitigated", back, &snap("In Progress", None)),
            None
        );
        let in_it = &mitigated_then_done[..3];
        assert_eq!(
            restored_at("Mitigated", in_it, &snap("Mitigated", None)),
            Some(t(12))
        );
        let skipped = [
            tr(5, "To Do", "In Progress", false),
            tr(8, "In Progress", "Done", true),
        ];
        assert_eq!(
            restored_at("Mitigated", &skipped, &snap("Done", Some(8))),
            Some(t(8))
        );
        let reopened = [
            tr(5, "To Do", "Mitigated", false),
            tr(8, "Mitigated", "Done", true),
            tr(9, "Done", "Reopened", false),
        ];
        assert_eq!(
            restored_at("Mitigated", &reopened, &snap("Reopened", None)),
            None
        );
    }

    /// A date-only field is midnight in the account's zone; a date-time keeps its offset.
    #[test]
    fn field_times() {
        let berlin: Tz = "Europe/Berlin".parse().expect("a zone");
        assert_eq!(
            field_time("2025-03-01", berlin),
            DateTime::parse_from_rfc3339("2025-02-28T23:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        assert_eq!(
            field_time("2025-03-01T10:15:00.000+0100", chrono_tz::UTC),
            DateTime::parse_from_rfc3339("2025-03-01T09:15:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        assert_eq!(field_time("soon", chrono_tz::UTC), None);
    }
}
