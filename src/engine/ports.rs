//! The three narrow interfaces the engine drives — [`JiraSource`], [`GitLabSink`],
//! [`SyncStore`] — and [`PortError`], the classification every adapter's error gives the engine.
//!
//! The adapters (`jira`, `gitlab`, `store`) implement these; the engine names nothing else of
//! theirs. Each port has its own error type: the engine decides what to do with a failure (retry,
//! look before creating again, skip the issue, stop the run) from the answers of [`PortError`],
//! never from an error's message text.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::config::Destination;
use crate::domain::{
    Commit, DueLinks, Failure, IncidentDetails, IncidentSeverity, Intent, JiraId, JiraKey,
    JiraUser, LabelEvent, Mapping, NewObject, NewTimelineEvent, PageCursor, ReadBack, RemoteLink,
    RemoteObject, RunCounts, RunMode, RunOutcome, SearchPage, StageState, StageStep, Target,
    TimelineEvent, Transition,
};

/// Where a rule's objects live once its project is resolved: the rule's destination, whose
/// `project_id` is set, so every request addresses the project by its numeric id.
#[derive(Clone, Debug)]
pub struct Place {
    pub dest: Destination,
    pub project_id: u64,
}

impl Place {
    /// `dest` at the project `project_id`.
    pub fn new(dest: &Destination, project_id: u64) -> Self {
        Self {
            dest: Destination {
                project_id: Some(project_id),
                ..dest.clone()
            },
            project_id,
        }
    }

    pub fn target(&self) -> Target {
        self.dest.target
    }

    /// The project as configured.
    pub fn project(&self) -> &str {
        &self.dest.project
    }
}

/// A project as GitLab resolved a configured path or id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedProject {
    pub id: u64,
    pub path_with_namespace: String,
}

/// How a port's error classifies itself. Every answer is decided from the error's type and
/// fields (an HTTP status, a typed resource), never from its message.
pub trait PortError: std::error::Error + Send + Sync + 'static {
    /// Returns true if and only if the same request may succeed later with no change of
    /// configuration (an outage, a timeout, a busy database), as opposed to credentials,
    /// permissions, a bad query or broken data.
    fn is_retryable(&self) -> bool;

    /// Returns true if and only if the request may have been applied although no answer said so
    /// (a timeout or dropped connection after it was sent, a 5xx). A create that failed so is
    /// looked for before it is sent again.
    fn is_ambiguous(&self) -> bool {
        false
    }

    /// Returns true if and only if no further request of this run can succeed: the token is
    /// rejected, permissions are missing, or the configured project does not exist. The run
    /// stops instead of recording every issue as failed.
    fn stops_run(&self) -> bool {
        false
    }

    /// Returns true if and only if the service looks down: the connection failed, or it
    /// answered a server error, after the HTTP layer's own retries. A run stops after a few in a
    /// row instead of spending its retries on every pending issue.
    fn is_outage(&self) -> bool {
        false
    }

    /// Returns true if and only if the object the request addressed no longer exists (a person
    /// deleted it): no later request for it can succeed, and nothing else is affected.
    fn is_gone(&self) -> bool {
        false
    }

    /// Returns true if and only if a close found nothing open to close: an alert recovery for a
    /// fingerprint with no open alert (a person resolved it, or an earlier recovery whose answer
    /// was lost). The object is closed all the same.
    fn nothing_to_close(&self) -> bool {
        false
    }

    /// Returns true if and only if the request was refused for its size (a reverse proxy's
    /// body limit), before anything was applied: a smaller one may pass.
    fn is_too_large(&self) -> bool {
        false
    }

    /// Returns true if and only if this kind of request is refused for every object alike, while
    /// other kinds may pass: GitLab's GraphQL API is closed to the token (its scope, the user's
    /// role on incidents) or does not know the query (an older GitLab). What needs it is left
    /// out, with a warning, and the rest goes on.
    fn is_refused(&self) -> bool {
        false
    }
}

/// The most ids one [`JiraSource::issues_by_id`] request carries (Cloud's bulk fetch takes "up
/// to 100 issues").
pub const MAX_READ_BACK: usize = 100;

/// The most issue ids one search asks Jira to read consistently (`reconcileIssues` "accepts
/// max 50 ids", Atlassian's OpenAPI).
pub const MAX_RECONCILE: usize = 50;

/// The read side: what the engine needs from Jira.
pub trait JiraSource: Send + Sync {
    /// Why a request failed.
    type Error: PortError;

    /// Runs one page of a JQL search, asking for the fields a snapshot needs.
    fn search(
        &self,
        jql: &str,
        page: &PageCursor,
    ) -> impl Future<Output = Result<SearchPage, Self::Error>> + Send;

    /// As [`JiraSource::search`], asking Jira to read the issues `reconcile` names (at most
    /// [`MAX_RECONCILE`] ids) consistently: Cloud's search is eventually consistent, and its
    /// `reconcileIssues` makes it answer those issues as they are now, if they match (Atlassian,
    /// "Search and reconcile"; OpenAPI `SearchAndReconcileRequestBean.reconcileIssues`). A Jira
    /// without it (Data Center, whose search is consistent) searches as `search` does.
    fn search_reconciling(
        &self,
        jql: &str,
        page: &PageCursor,
        reconcile: &[JiraId],
    ) -> impl Future<Output = Result<SearchPage, Self::Error>> + Send {
        let _ = reconcile;
        self.search(jql, page)
    }

    /// How many issues `jql` (without `ORDER BY`) matches, where Jira can say cheaply (Cloud's
    /// approximate count); `None` where it cannot.
    fn count(&self, jql: &str) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;

    /// Re-reads issues by id (at most [`MAX_READ_BACK`] in one request): those Jira still
    /// shows, with the fields a snapshot needs, wherever they are now (another project, another
    /// key); an id Jira does not return and does not list as unanswered is gone (deleted, or
    /// hidden from the account).
    fn issues_by_id(
        &self,
        ids: &[JiraId],
    ) -> impl Future<Output = Result<ReadBack, Self::Error>> + Send;

    /// The status transitions of `ids`, each issue's oldest first, read from Jira's changelog
    /// (asked only for rules that need them). An issue Jira does not answer for (deleted since)
    /// is absent.
    fn transitions(
        &self,
        ids: &[JiraId],
    ) -> impl Future<Output = Result<HashMap<JiraId, Vec<Transition>>, Self::Error>> + Send;

    /// The account behind the credentials, with its profile time zone.
    fn myself(&self) -> impl Future<Output = Result<JiraUser, Self::Error>> + Send;

    /// Creates the remote link `link` on its Jira issue, or updates the one with its global id,
    /// sending every field (Jira sets those a request leaves out to null): the only write the
    /// sync makes to Jira, and only with `[jira] link_back`. Sending it again is harmless.
    fn put_remote_link(
        &self,
        link: &RemoteLink,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// What precedes the key in the link a person follows to an issue (`<url>/browse/`).
    fn browse_base(&self) -> String;

    /// The link a person follows to the issue (`<url>/browse/KEY`).
    fn browse_url(&self, key: &JiraKey) -> String {
        format!("{}{key}", self.browse_base())
    }
}

/// The write side: what the engine needs from GitLab.
///
/// Implementations retry only what is safe to retry: a create whose outcome is unknown (timeout,
/// 5xx, dropped connection after the request was sent) is returned as an error the engine treats
/// as "maybe created", and it looks before creating again.
pub trait GitLabSink: Send + Sync {
    /// Why a request failed.
    type Error: PortError;

    /// Whether this sink only plans its writes (`--dry-run`): the log then says what would be
    /// written, not what was.
    fn plans_only(&self) -> bool {
        false
    }

    /// Creates the object.
    fn create(
        &self,
        dest: &Destination,
        obj: &NewObject,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// Looks for the object an earlier, interrupted attempt to create `obj` may have made: one
    /// the sync's own user authored, created at `obj.created_at` (GitLab kept Jira's time) or
    /// since `attempted_since` (it did not), whose description holds `browse_url` on a line of
    /// its own. Never an object a person wrote, even one quoting the link.
    fn find(
        &self,
        dest: &Destination,
        obj: &NewObject,
        browse_url: &str,
        attempted_since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RemoteObject>, Self::Error>> + Send;

    /// The project a configured path or id names now.
    fn resolve_project(
        &self,
        configured: &str,
    ) -> impl Future<Output = Result<ResolvedProject, Self::Error>> + Send;

    /// The issues or incidents of `dest`'s project that the sync's own user wrote and whose
    /// description holds a browse link (`browse_base` + key) on a line of its own, with iids
    /// above `above_iid` (all of them when `None`): what a lost or restored store no longer
    /// knows. Each with the key its link names.
    fn own_objects(
        &self,
        dest: &Destination,
        above_iid: Option<u64>,
        browse_base: &str,
    ) -> impl Future<Output = Result<Vec<(JiraKey, RemoteObject)>, Self::Error>> + Send;

    /// Closes the object, asking GitLab to record `at` as the closing time. The answer of an
    /// issue a person moved carries its `moved_to_id`, and the engine closes the copy.
    fn close(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// Rewrites the object's title and description (issues and incidents; alerts cannot be
    /// edited). The answer of an issue a person moved carries its `moved_to_id`, and the engine
    /// rewrites the copy.
    fn update(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// Adds `label` to the object (issues and incidents; alerts have no labels).
    fn add_label(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        label: &str,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// Adds `add` and removes `remove` (issues and incidents) in one write that asks GitLab to
    /// record it at `at`: the label events take that time where the token may back-date
    /// (Owner).
    fn relabel(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        add: Option<&str>,
        remove: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// The label events GitLab holds for the object, oldest first (issues and incidents).
    fn label_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> impl Future<Output = Result<Vec<LabelEvent>, Self::Error>> + Send;

    /// Deletes the object (issues and incidents; GitLab lets only Owners and administrators).
    fn delete(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reopens the object. An alert cannot be reopened: a new one is fired with `obj`'s title,
    /// description and severity, as the first was. An issue a person moved is not reopened: the
    /// answer carries its `moved_to_id`, and the engine reopens the copy.
    fn reopen(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RemoteObject, Self::Error>> + Send;

    /// The copy a person moved `mapping`'s issue to, by the global id the original's
    /// `moved_to_id` gave: its project's id and the copy as GitLab holds it. `None` if the token
    /// cannot see it (moved where the sync has no access, or deleted since).
    fn moved_copy(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        copy_id: u64,
    ) -> impl Future<Output = Result<Option<(u64, RemoteObject)>, Self::Error>> + Send;

    /// Sets the incident's severity (incidents only; GraphQL `issueSetSeverity`).
    fn set_severity(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        severity: IncidentSeverity,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The incident's timeline events, oldest first (GraphQL
    /// `project.incidentManagementTimelineEvents`).
    fn timeline_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> impl Future<Output = Result<Vec<TimelineEvent>, Self::Error>> + Send;

    /// Adds a timeline event to the incident, tagged with `event.tag` (GraphQL
    /// `timelineEventCreate`). Not idempotent: a create whose answer was lost is looked for
    /// ([`GitLabSink::timeline_events`]) before it is sent again.
    fn create_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        event: &NewTimelineEvent,
    ) -> impl Future<Output = Result<TimelineEvent, Self::Error>> + Send;

    /// Moves the timeline event `id` to `event`'s time and note (GraphQL
    /// `timelineEventUpdate`).
    fn update_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> impl Future<Output = Result<TimelineEvent, Self::Error>> + Send;
}

/// The persistent side: cursors, mappings, intents, failures and the run log.
pub trait SyncStore: Send + Sync {
    /// Why a read or write failed.
    type Error: PortError;

    /// The rule's cursor: every change with `updated` before it is replicated or recorded as failed.
    fn cursor(
        &self,
        rule: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, Self::Error>> + Send;

    /// The mappings of `issues` (their ids and current keys) at `place`, by the key asked with
    /// (issues with none are absent). An issue is found by its id whatever rule wrote it and
    /// whatever its key was then; rows from before ids were kept are found by key.
    fn mappings(
        &self,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> impl Future<Output = Result<HashMap<JiraKey, Mapping>, Self::Error>> + Send;

    /// Records that a create for the issue `id`/`key` at `place` is about to be sent, on behalf
    /// of `rule`; returns the intent with the number of earlier attempts (an earlier attempt may
    /// already have created the object).
    fn begin_intent(
        &self,
        rule: &str,
        place: &Place,
        id: Option<&JiraId>,
        key: &JiraKey,
    ) -> impl Future<Output = Result<Intent, Self::Error>> + Send;

    /// Records, at once and durably, the intents of the creates of `issues` (their ids and
    /// keys) at `place`, on behalf of `rule`, before any of them is sent: as
    /// [`SyncStore::begin_intent`] for each, by key. A backfill begins a page's creates this
    /// way, one durable commit for the page instead of one per create; the intents of creates
    /// it then never sends are withdrawn ([`SyncStore::withdraw_intents`]).
    fn begin_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> impl Future<Output = Result<HashMap<JiraKey, Intent>, Self::Error>> + Send;

    /// Deletes the intents of `issues` at `place` that [`SyncStore::begin_intents`] recorded
    /// afresh (with no earlier attempt) and whose creates were never sent. An intent an earlier
    /// attempt left is kept.
    fn withdraw_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The numeric id a configured project resolved to before, if it was.
    fn project_id(
        &self,
        configured: &str,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;

    /// Remembers what a configured project resolved to.
    fn remember_project(
        &self,
        configured: &str,
        project: &ResolvedProject,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The rule's mappings to follow on the Jira side: GitLab object open, issue not known to be
    /// deleted, with ids, and not written since `written_before` (a run that wrote one saw it).
    fn following(
        &self,
        rule: &str,
        written_before: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Mapping>, Self::Error>> + Send;

    /// What the sync has written of the incident `iid` of the project `project_id`'s details
    /// (the default when nothing yet).
    fn incident_details(
        &self,
        project_id: u64,
        iid: u64,
    ) -> impl Future<Output = Result<IncidentDetails, Self::Error>> + Send;

    /// Records, durably, what the sync knows of the incident `iid` of the project `project_id`'s
    /// details, whole, on behalf of `rule`, before a timeline event create is sent: `details`
    /// holds the events found so far, and its `begun` the create about to be sent (and any other
    /// tag an earlier attempt may have made). Until a [`Commit::Details`] records them, a later
    /// attempt looks for the begun ones before creating them again.
    fn begin_timeline_event(
        &self,
        rule: &str,
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The highest iid of any mapping at `place`, if there is one.
    fn max_iid(
        &self,
        place: &Place,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;

    /// Applies `commit` and, in the same transaction, moves the rule's cursor forward to
    /// `cursor` (never backward).
    fn commit(
        &self,
        rule: &str,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Moves the rule's cursor forward to `to` (never backward).
    fn advance_cursor(
        &self,
        rule: &str,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The rule's failed issues, oldest first, each with when it is due again.
    fn failures(
        &self,
        rule: &str,
    ) -> impl Future<Output = Result<Vec<Failure>, Self::Error>> + Send;

    /// What the store knows of the stage replay of the object `project_id`/`iid` (a mapping's
    /// identity).
    fn stages(
        &self,
        project_id: u64,
        iid: u64,
    ) -> impl Future<Output = Result<StageState, Self::Error>> + Send;

    /// Records `step` of the object `project_id`/`iid` as about to be sent (`done` false) or
    /// answered by GitLab (`done` true).
    fn record_stage(
        &self,
        project_id: u64,
        iid: u64,
        step: &StageStep,
        done: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Records that the status history of the Jira change at `updated` is fully applied to the
    /// object `project_id`/`iid` (never moving it back).
    fn history_done(
        &self,
        project_id: u64,
        iid: u64,
        updated: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A small remembered value (e.g. the Jira account's time zone, with when it was read).
    fn meta(&self, key: &str) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;

    /// Remembers a small value.
    fn set_meta(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Records the remote link `link` as the one its Jira issue should have (`[jira]
    /// link_back`), on behalf of `rule`; returns true if and only if it differs from what was
    /// wanted before (it is then due to be sent). Written before the commit of the mapping it
    /// comes from, so a mapping the store holds never lacks its link.
    fn want_link(
        &self,
        rule: &str,
        link: &RemoteLink,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// The rule's remote links whose wanted state Jira has not accepted yet and whose backoff
    /// is over at `now`, at most `limit` of them, with when the next waiting one is due.
    fn due_links(
        &self,
        rule: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<DueLinks, Self::Error>> + Send;

    /// Jira accepted `link` as sent: it is not sent again until a different one is wanted.
    fn link_sent(&self, link: &RemoteLink) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Sending `link` failed with `error`: it is tried again after a backoff, or, when `gone`
    /// (the Jira issue is no longer there), not until a different link is wanted.
    fn link_failed(
        &self,
        link: &RemoteLink,
        error: &str,
        gone: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Starts a run of `rule`; returns the id its run-log entry has, if it gets one. Costs no
    /// write: the entry is written with the run's first write (an intent or a commit), so a run
    /// that writes nothing leaves none.
    fn start_run(
        &self,
        rule: &str,
        mode: RunMode,
    ) -> impl Future<Output = Result<i64, Self::Error>> + Send;

    /// Ends the run `run_id` with its outcome, counts and, if it stopped early, why. A run that
    /// wrote nothing and ended `ok` or `cancelled` writes nothing here either; one that failed
    /// before writing is logged now.
    fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        counts: RunCounts,
        error: Option<String>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
