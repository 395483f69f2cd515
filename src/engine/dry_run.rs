//! `--dry-run` as wrappers over the ports: the engine runs exactly the code of a real run, while
//! [`DryRunSink`] answers GitLab writes with what GitLab would have stored and [`DryRunStore`]
//! keeps every store write in memory. Reads go to the real adapters, so the plan starts from what
//! the store and GitLab really hold; nothing is written to either.
//!
//! Later snapshots of the same key in the same run see the simulated writes (a create followed by
//! a close plans as a close), exactly as they would see real ones.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::config::Destination;
use crate::domain::{
    Commit, DueLinks, Failure, IncidentDetails, IncidentSeverity, Intent, JiraId, JiraKey,
    LabelEvent, Mapping, NewObject, NewTimelineEvent, RemoteLink, RemoteObject, RemoteState,
    RunCounts, RunMode, RunOutcome, StageState, StageStep, TimelineEvent,
};

use super::ports::{GitLabSink, Place, ResolvedProject, SyncStore};

/// A GitLab sink that sends no write: each one is answered as GitLab would answer it.
pub struct DryRunSink<G>(G);

impl<G> DryRunSink<G> {
    /// Wraps the real sink, which is used for reads only.
    pub fn new(inner: G) -> Self {
        Self(inner)
    }
}

impl<G: GitLabSink> GitLabSink for DryRunSink<G> {
    type Error = G::Error;

    fn plans_only(&self) -> bool {
        true
    }

    async fn set_severity(
        &self,
        _dest: &Destination,
        _mapping: &Mapping,
        _severity: IncidentSeverity,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn timeline_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<TimelineEvent>, Self::Error> {
        self.0.timeline_events(dest, mapping).await
    }

    /// What GitLab would answer: the event, with an id that says it was not made.
    async fn create_timeline_event(
        &self,
        _dest: &Destination,
        _mapping: &Mapping,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, Self::Error> {
        Ok(TimelineEvent {
            id: format!("dry-run:{}", event.tag),
            occurred_at: event.occurred_at,
            note: event.note.clone(),
            tags: vec![event.tag.as_str().to_owned()],
        })
    }

    async fn update_timeline_event(
        &self,
        _dest: &Destination,
        _mapping: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, Self::Error> {
        Ok(TimelineEvent {
            id: id.to_owned(),
            occurred_at: event.occurred_at,
            note: event.note.clone(),
            tags: vec![event.tag.as_str().to_owned()],
        })
    }

    async fn create(
        &self,
        _dest: &Destination,
        obj: &NewObject,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(RemoteObject {
            iid: None,
            web_url: None,
            state: RemoteState::Opened,
            created_at: obj.created_at,
            closed_at: None,
            content: None,
            incident: None,
            moved_to_id: None,
        })
    }

    async fn resolve_project(&self, configured: &str) -> Result<ResolvedProject, Self::Error> {
        self.0.resolve_project(configured).await
    }

    async fn own_objects(
        &self,
        dest: &Destination,
        above_iid: Option<u64>,
        browse_base: &str,
    ) -> Result<Vec<(JiraKey, RemoteObject)>, Self::Error> {
        self.0.own_objects(dest, above_iid, browse_base).await
    }

    async fn find(
        &self,
        dest: &Destination,
        obj: &NewObject,
        browse_url: &str,
        attempted_since: DateTime<Utc>,
    ) -> Result<Option<RemoteObject>, Self::Error> {
        self.0.find(dest, obj, browse_url, attempted_since).await
    }

    async fn close(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(simulated(mapping, RemoteState::Closed, Some(at)))
    }

    async fn update(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        _obj: &NewObject,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(simulated(mapping, mapping.state, mapping.closed_at))
    }

    async fn add_label(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        _label: &str,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(simulated(mapping, mapping.state, mapping.closed_at))
    }

    async fn relabel(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        _add: Option<&str>,
        _remove: Option<&str>,
        _at: DateTime<Utc>,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(simulated(mapping, mapping.state, mapping.closed_at))
    }

    /// A read; an object the dry run only simulated has none.
    async fn label_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<LabelEvent>, Self::Error> {
        if mapping.iid.is_none() {
            return Ok(Vec::new());
        }
        self.0.label_events(dest, mapping).await
    }

    async fn delete(&self, _dest: &Destination, _mapping: &Mapping) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn reopen(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        _obj: &NewObject,
        _at: DateTime<Utc>,
    ) -> Result<RemoteObject, Self::Error> {
        Ok(simulated(mapping, RemoteState::Opened, None))
    }

    /// A read: where a moved issue went.
    async fn moved_copy(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        copy_id: u64,
    ) -> Result<Option<(u64, RemoteObject)>, Self::Error> {
        self.0.moved_copy(dest, mapping, copy_id).await
    }
}

fn simulated(m: &Mapping, state: RemoteState, closed_at: Option<DateTime<Utc>>) -> RemoteObject {
    RemoteObject {
        iid: m.iid,
        web_url: m.web_url.clone(),
        state,
        created_at: m.created_at,
        closed_at,
        content: None,
        incident: None,
        moved_to_id: None,
    }
}

/// What a dry run "wrote".
#[derive(Default)]
struct Overlay {
    /// By project id and key.
    mappings: HashMap<(u64, JiraKey), Mapping>,
    /// Incident details by project id and iid.
    details: HashMap<(u64, u64), IncidentDetails>,
    projects: HashMap<String, ResolvedProject>,
    /// Keys whose stored failure a commit settled (replicated or failed again).
    settled: HashSet<(String, JiraKey)>,
    cursors: HashMap<String, DateTime<Utc>>,
    meta: HashMap<String, String>,
    runs: i64,
    /// Stage replay, by object (project id, iid).
    stages: HashMap<(u64, u64), StageState>,
}

/// A store whose writes stay in memory, over the real store's reads.
pub struct DryRunStore<S> {
    inner: S,
    overlay: Mutex<Overlay>,
}

impl<S> DryRunStore<S> {
    /// Wraps the real store, which is only read.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            overlay: Mutex::new(Overlay::default()),
        }
    }

    /// The real store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        // The overlay holds plain maps: a panic elsewhere cannot leave them half-updated.
        self.overlay.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: SyncStore> DryRunStore<S> {
    /// Applies `change` to the overlay's stage state of issue `iid`, first copied from the real
    /// store if the overlay does not hold it yet.
    async fn change_stages(
        &self,
        project_id: u64,
        iid: u64,
        change: impl FnOnce(&mut StageState),
    ) -> Result<(), S::Error> {
        let known = self.overlay().stages.contains_key(&(project_id, iid));
        let mut state = if known {
            StageState::default()
        } else {
            self.inner.stages(project_id, iid).await?
        };
        let mut overlay = self.overlay();
        let entry = overlay
            .stages
            .entry((project_id, iid))
            .or_insert_with(|| std::mem::take(&mut state));
        change(entry);
        Ok(())
    }
}

impl<S: SyncStore> SyncStore for DryRunStore<S> {
    type Error = S::Error;

    async fn cursor(&self, rule: &str) -> Result<Option<DateTime<Utc>>, Self::Error> {
        let stored = self.inner.cursor(rule).await?;
        // The real cursor never moves back, so neither does the simulated one.
        Ok(self.overlay().cursors.get(rule).copied().max(stored))
    }

    async fn mappings(
        &self,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Mapping>, Self::Error> {
        let keys: Vec<JiraKey> = issues.iter().map(|(_, k)| k.clone()).collect();
        let mut found = self.inner.mappings(place, issues).await?;
        let overlay = self.overlay();
        for key in keys {
            if let Some(m) = overlay.mappings.get(&(place.project_id, key.clone())) {
                found.insert(key, m.clone());
            }
        }
        Ok(found)
    }

    /// Every create is planned as a first attempt: recording an attempt would be a write.
    async fn begin_intent(
        &self,
        rule: &str,
        _place: &Place,
        _id: Option<&JiraId>,
        key: &JiraKey,
    ) -> Result<Intent, Self::Error> {
        Ok(Intent {
            rule: rule.to_owned(),
            jira_key: key.clone(),
            previous_attempts: 0,
            started_at: Utc::now(),
        })
    }

    /// As `begin_intent`: first attempts, nothing written.
    async fn begin_intents(
        &self,
        rule: &str,
        _place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Intent>, Self::Error> {
        let started_at = Utc::now();
        Ok(issues
            .into_iter()
            .map(|(_, key)| {
                let intent = Intent {
                    rule: rule.to_owned(),
                    jira_key: key.clone(),
                    previous_attempts: 0,
                    started_at,
                };
                (key, intent)
            })
            .collect())
    }

    async fn withdraw_intents(
        &self,
        _rule: &str,
        _place: &Place,
        _issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn project_id(&self, configured: &str) -> Result<Option<u64>, Self::Error> {
        if let Some(p) = self.overlay().projects.get(configured) {
            return Ok(Some(p.id));
        }
        self.inner.project_id(configured).await
    }

    async fn remember_project(
        &self,
        configured: &str,
        project: &ResolvedProject,
    ) -> Result<(), Self::Error> {
        self.overlay()
            .projects
            .insert(configured.to_owned(), project.clone());
        Ok(())
    }

    /// The real store's, as this dry run "wrote" them.
    async fn following(
        &self,
        rule: &str,
        written_before: DateTime<Utc>,
    ) -> Result<Vec<Mapping>, Self::Error> {
        let mut found = self.inner.following(rule, written_before).await?;
        let overlay = self.overlay();
        found.retain(|m| {
            m.project_id
                .and_then(|p| overlay.mappings.get(&(p, m.jira_key.clone())))
                .is_none()
        });
        Ok(found)
    }

    async fn max_iid(&self, place: &Place) -> Result<Option<u64>, Self::Error> {
        self.inner.max_iid(place).await
    }

    async fn incident_details(
        &self,
        project_id: u64,
        iid: u64,
    ) -> Result<IncidentDetails, Self::Error> {
        if let Some(d) = self.overlay().details.get(&(project_id, iid)) {
            return Ok(d.clone());
        }
        self.inner.incident_details(project_id, iid).await
    }

    /// Recording a begun create would be a write; a dry run creates nothing to look for.
    async fn begin_timeline_event(
        &self,
        _rule: &str,
        _project_id: u64,
        _iid: u64,
        _details: IncidentDetails,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn commit(
        &self,
        rule: &str,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), Self::Error> {
        let mut overlay = self.overlay();
        if let Commit::Settled { mapping, details } = &commit
            && let (Some(project_id), Some(iid)) = (mapping.project_id, mapping.iid)
        {
            overlay.details.insert((project_id, iid), details.clone());
        }
        let key = match commit {
            Commit::Replicated(m) | Commit::Settled { mapping: m, .. } => {
                let key = m.jira_key.clone();
                if let Some(project_id) = m.project_id {
                    overlay.mappings.insert((project_id, key.clone()), m);
                }
                key
            }
            Commit::Failed { snapshot, .. } => snapshot.key,
            Commit::Details {
                project_id,
                iid,
                details,
            } => {
                overlay.details.insert((project_id, iid), details);
                if let Some(to) = cursor {
                    advance(&mut overlay.cursors, rule, to);
                }
                return Ok(());
            }
        };
        overlay.settled.insert((rule.to_owned(), key));
        if let Some(to) = cursor {
            advance(&mut overlay.cursors, rule, to);
        }
        Ok(())
    }

    async fn advance_cursor(&self, rule: &str, to: DateTime<Utc>) -> Result<(), Self::Error> {
        advance(&mut self.overlay().cursors, rule, to);
        Ok(())
    }

    async fn failures(&self, rule: &str) -> Result<Vec<Failure>, Self::Error> {
        let mut failures = self.inner.failures(rule).await?;
        let overlay = self.overlay();
        failures.retain(|f| {
            !overlay
                .settled
                .contains(&(rule.to_owned(), f.snapshot.key.clone()))
        });
        Ok(failures)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, Self::Error> {
        if let Some(v) = self.overlay().meta.get(key) {
            return Ok(Some(v.clone()));
        }
        self.inner.meta(key).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), Self::Error> {
        self.overlay().meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn stages(&self, project_id: u64, iid: u64) -> Result<StageState, Self::Error> {
        if let Some(s) = self.overlay().stages.get(&(project_id, iid)) {
            return Ok(s.clone());
        }
        self.inner.stages(project_id, iid).await
    }

    async fn record_stage(
        &self,
        project_id: u64,
        iid: u64,
        step: &StageStep,
        done: bool,
    ) -> Result<(), Self::Error> {
        self.change_stages(project_id, iid, |state| put_stage(state, step, done))
            .await
    }

    async fn history_done(
        &self,
        project_id: u64,
        iid: u64,
        updated: DateTime<Utc>,
    ) -> Result<(), Self::Error> {
        self.change_stages(project_id, iid, |state| {
            state.history_updated = state.history_updated.max(Some(updated));
        })
        .await
    }

    /// A dry run sends nothing to Jira either: no link is ever wanted, so none is due.
    async fn want_link(&self, _rule: &str, _link: &RemoteLink) -> Result<bool, Self::Error> {
        Ok(false)
    }

    /// None: even links the real store holds as due wait for a run that writes.
    async fn due_links(
        &self,
        _rule: &str,
        _now: DateTime<Utc>,
        _limit: usize,
    ) -> Result<DueLinks, Self::Error> {
        Ok(DueLinks::default())
    }

    async fn link_sent(&self, _link: &RemoteLink) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn link_failed(
        &self,
        _link: &RemoteLink,
        _error: &str,
        _gone: bool,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn start_run(&self, _rule: &str, _mode: RunMode) -> Result<i64, Self::Error> {
        let mut overlay = self.overlay();
        overlay.runs += 1;
        Ok(overlay.runs)
    }

    async fn finish_run(
        &self,
        _run_id: i64,
        _outcome: RunOutcome,
        _counts: RunCounts,
        _error: Option<String>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Moves a cursor forward, never back (as the real store does).
pub(super) fn advance(cursors: &mut HashMap<String, DateTime<Utc>>, rule: &str, to: DateTime<Utc>) {
    let c = cursors.entry(rule.to_owned()).or_insert(to);
    *c = (*c).max(to);
}

/// Applies a stage record to a [`StageState`] kept in memory, as the store does.
pub(crate) fn put_stage(state: &mut StageState, step: &StageStep, done: bool) {
    state.done.retain(|s| s != step);
    state.pending.retain(|s| s != step);
    if done {
        state.done.push(step.clone());
        state.done.sort_by_key(|s| s.at);
    } else {
        state.pending.push(step.clone());
    }
}
