//! In-memory implementations of the three ports, for the engine's own unit tests: a scripted
//! Jira, a GitLab that keeps objects and fails on demand, and a store in plain maps. They model
//! only what the engine's contract with each port says (see `ports`); behaviour of the real
//! servers is modelled by the sandbox, over HTTP, in the integration tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::config::Destination;
use crate::domain::{
    Commit, DueLink, DueLinks, Failure, IncidentDetails, IncidentSeverity, Intent, IssueSnapshot,
    JiraId, JiraKey, JiraUser, Mapping, NewObject, NewTimelineEvent, PageCursor, ReadBack,
    RemoteLink, RemoteObject, RemoteState, RunCounts, RunMode, RunOutcome, SearchPage, Target,
    TimelineEvent,
};

use super::dry_run::advance;
use super::ports::{GitLabSink, JiraSource, Place, PortError, ResolvedProject, SyncStore};

/// A port's failure, with the classification the test chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MemError {
    /// Lost on the way back: the request may have been applied (ambiguous, retryable).
    #[error("the answer was lost")]
    Lost,
    /// Refused for good, this issue only.
    #[error("refused")]
    Refused,
    /// Refused in a way no later request can get past (a missing project, a bad token).
    #[error("refused for the whole run")]
    Fatal,
    /// The service is down: no connection (nothing was applied).
    #[error("cannot connect")]
    Down,
    /// The object was deleted by a person.
    #[error("no such object")]
    Gone,
    /// An alert recovery found no open alert for its fingerprint.
    #[error("no open alert to resolve")]
    NoOpenAlert,
    /// The request body is over the proxy's limit.
    #[error("request entity too large")]
    TooLarge,
    /// GraphQL is closed to the token (every incident alike).
    #[error("GraphQL refused")]
    NoGraphQl,
}

impl PortError for MemError {
    fn is_retryable(&self) -> bool {
        matches!(self, MemError::Lost | MemError::Down)
    }

    fn is_ambiguous(&self) -> bool {
        *self == MemError::Lost
    }

    fn stops_run(&self) -> bool {
        *self == MemError::Fatal
    }

    fn is_outage(&self) -> bool {
        *self == MemError::Down
    }

    fn is_gone(&self) -> bool {
        *self == MemError::Gone
    }

    fn nothing_to_close(&self) -> bool {
        *self == MemError::NoOpenAlert
    }

    fn is_too_large(&self) -> bool {
        *self == MemError::TooLarge
    }

    fn is_refused(&self) -> bool {
        *self == MemError::NoGraphQl
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("a test port's lock is never poisoned")
}

/// A Jira that answers one page with every issue it holds, and holds them by id for
/// [`JiraSource::issues_by_id`].
#[derive(Default)]
pub(crate) struct MemJira {
    pub(crate) issues: Mutex<Vec<IssueSnapshot>>,
    pub(crate) searches: Mutex<u64>,
    /// What `issues_by_id` finds, beyond `issues` (issues the search no longer returns).
    pub(crate) elsewhere: Mutex<Vec<IssueSnapshot>>,
    /// `issues_by_id` requests, with their sizes.
    pub(crate) read_backs: Mutex<Vec<usize>>,
    /// Every JQL searched, in order.
    pub(crate) asked: Mutex<Vec<String>>,
    /// The `Date` every search answer carries (Jira's clock), if set.
    pub(crate) date: Mutex<Option<DateTime<Utc>>>,
    /// Each issue's status transitions, by id, for [`JiraSource::transitions`].
    pub(crate) history: Mutex<HashMap<JiraId, Vec<crate::domain::Transition>>>,
    /// `transitions` requests, with their sizes.
    pub(crate) history_reads: Mutex<Vec<usize>>,
    /// Remote links, by global id, as Jira keeps them (the last one sent with each id).
    pub(crate) links: Mutex<HashMap<String, RemoteLink>>,
    /// Every remote link sent, accepted or not.
    pub(crate) links_sent: Mutex<Vec<RemoteLink>>,
    /// Errors the next remote-link requests fail with, in order.
    pub(crate) link_faults: Mutex<VecDeque<MemError>>,
    /// While any are left, each search answers the next of these (whatever its JQL) instead
    /// of one page of `issues`: a walk over several pages.
    pub(crate) pages: Mutex<VecDeque<SearchPage>>,
}

impl JiraSource for MemJira {
    type Error = MemError;

    async fn search(&self, jql: &str, _page: &PageCursor) -> Result<SearchPage, MemError> {
        *lock(&self.searches) += 1;
        lock(&self.asked).push(jql.to_owned());
        if let Some(page) = lock(&self.pages).pop_front() {
            return Ok(page);
        }
        let mut issues = lock(&self.issues).clone();
        issues.sort_by_key(|s| (s.updated, s.key.clone()));
        Ok(SearchPage {
            issues,
            date: *lock(&self.date),
            ..SearchPage::default()
        })
    }

    async fn count(&self, _jql: &str) -> Result<Option<u64>, MemError> {
        Ok(Some(lock(&self.issues).len() as u64))
    }

    async fn issues_by_id(&self, ids: &[JiraId]) -> Result<ReadBack, MemError> {
        lock(&self.read_backs).push(ids.len());
        let all: Vec<IssueSnapshot> = lock(&self.issues)
            .iter()
            .chain(lock(&self.elsewhere).iter())
            .cloned()
            .collect();
        Ok(ReadBack {
            issues: all
                .into_iter()
                .filter(|s| s.id.as_ref().is_some_and(|id| ids.contains(id)))
                .collect(),
            ..ReadBack::default()
        })
    }

    async fn transitions(
        &self,
        ids: &[JiraId],
    ) -> Result<HashMap<JiraId, Vec<crate::domain::Transition>>, MemError> {
        lock(&self.history_reads).push(ids.len());
        let history = lock(&self.history);
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.clone(), history.get(id)?.clone())))
            .collect())
    }

    async fn put_remote_link(&self, link: &RemoteLink) -> Result<(), MemError> {
        lock(&self.links_sent).push(link.clone());
        if let Some(e) = lock(&self.link_faults).pop_front() {
            return Err(e);
        }
        lock(&self.links).insert(link.global_id.clone(), link.clone());
        Ok(())
    }

    async fn myself(&self) -> Result<JiraUser, MemError> {
        Ok(JiraUser {
            display_name: "sync bot".into(),
            time_zone: chrono_tz::UTC,
        })
    }

    fn browse_base(&self) -> String {
        "https://jira.example/browse/".to_owned()
    }
}

/// What a test makes the next call of one kind do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Fail with this error without applying anything.
    Fail(MemError),
    /// Apply the request, then lose the answer ([`MemError::Lost`]).
    ApplyThenLose,
}

/// Which call a fault is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    Resolve,
    Scan,
    Create,
    Find,
    Close,
    Reopen,
    Update,
    /// The look for where a moved issue went.
    Follow,
    Label,
    /// A stage label change (`relabel`).
    Relabel,
    /// A read of the label events.
    LabelEvents,
    Delete,
    /// GraphQL `issueSetSeverity`.
    Severity,
    /// The look through an incident's timeline events.
    Events,
    /// GraphQL `timelineEventCreate`.
    CreateEvent,
    /// GraphQL `timelineEventUpdate`.
    UpdateEvent,
}

/// One GitLab object as the in-memory GitLab keeps it.
#[derive(Clone, Debug)]
pub(crate) struct MemObject {
    /// The global id.
    pub(crate) id: u64,
    pub(crate) project_id: u64,
    pub(crate) iid: u64,
    pub(crate) jira_key: JiraKey,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) state: RemoteState,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) closed_at: Option<DateTime<Utc>>,
    /// Whether GitLab keeps it as an incident.
    pub(crate) incident: bool,
    /// The copy's global id, once a person moved it.
    pub(crate) moved_to_id: Option<u64>,
    pub(crate) labels: Vec<String>,
    /// Every label added or removed by `relabel`, at the time it asked for.
    pub(crate) label_events: Vec<crate::domain::LabelEvent>,
    /// The incident severity last set, if any.
    pub(crate) severity: Option<IncidentSeverity>,
    /// Its timeline events, in the order they were added.
    pub(crate) events: Vec<TimelineEvent>,
}

impl MemObject {
    fn remote(&self) -> RemoteObject {
        RemoteObject {
            iid: Some(self.iid),
            web_url: Some(format!(
                "https://gitlab.example/{}/-/issues/{}",
                self.project_id, self.iid
            )),
            state: self.state,
            created_at: self.created_at,
            closed_at: self.closed_at,
            content: Some((self.title.clone(), self.description.clone())),
            incident: Some(self.incident),
            moved_to_id: self.moved_to_id,
        }
    }
}

/// A GitLab that keeps its objects in a list and fails calls on demand.
#[derive(Default)]
pub(crate) struct MemGitLab {
    pub(crate) objects: Mutex<Vec<MemObject>>,
    faults: Mutex<HashMap<Call, VecDeque<Fault>>>,
    pub(crate) calls: Mutex<Vec<Call>>,
    /// Records this instead of the `created_at` asked for (a token that cannot backdate).
    pub(crate) ignore_times: Mutex<Option<DateTime<Utc>>>,
    /// Files incidents as plain issues (a token below Reporter).
    pub(crate) below_reporter: Mutex<bool>,
    /// Refuses a description longer than this as too large (a proxy's body limit).
    pub(crate) max_description: Mutex<Option<usize>>,
    /// Every write passes it: it counts the writes in flight and can hold them.
    pub(crate) gate: Gate,
}

/// What the gate saw of the writes in flight.
#[derive(Debug, Default)]
struct GateState {
    /// Writes in flight now, by key.
    by_key: HashMap<JiraKey, u32>,
    now: usize,
    /// The most in flight at once.
    max: usize,
    /// Keys that had two writes in flight at once.
    overlapped: Vec<JiraKey>,
    /// Writes are held until this many are in flight at once (then all pass, for good).
    open_at: usize,
    opened: bool,
    /// Writes for these keys wait for the test's word, then fail with the error it gives.
    held: HashMap<JiraKey, tokio::sync::oneshot::Receiver<Option<MemError>>>,
}

/// Observes the GitLab writes in flight, deterministically: how many at once, whether one key
/// had two, and, on request, holds them until enough are in flight, or holds one key's until
/// the test releases it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    opened: tokio::sync::Notify,
}

/// A write in flight; it leaves the gate when dropped.
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
    key: JiraKey,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.gate.state);
        st.now -= 1;
        if let Some(n) = st.by_key.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

impl Gate {
    /// Holds every write until `n` are in flight at once.
    pub(crate) fn open_at(&self, n: usize) {
        lock(&self.state).open_at = n;
    }

    /// Holds the writes for `key` until the sender is used: `Some(e)` fails the held write
    /// with `e`, `None` lets it through.
    pub(crate) fn hold(&self, key: &str) -> tokio::sync::oneshot::Sender<Option<MemError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let key = JiraKey::parse(key).expect("a valid key");
        lock(&self.state).held.insert(key, rx);
        tx
    }

    /// The writes in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.state).now
    }

    /// The most writes in flight at once so far.
    pub(crate) fn max(&self) -> usize {
        lock(&self.state).max
    }

    /// Keys that had two writes in flight at once.
    pub(crate) fn overlapped(&self) -> Vec<JiraKey> {
        lock(&self.state).overlapped.clone()
    }

    async fn pass(&self, key: &JiraKey) -> Result<Pass<'_>, MemError> {
        let held = {
            let mut st = lock(&self.state);
            st.now += 1;
            st.max = st.max.max(st.now);
            let n = st.by_key.entry(key.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                st.overlapped.push(key.clone());
            }
            if st.now >= st.open_at {
                st.opened = true;
                self.opened.notify_waiters();
            }
            st.held.remove(key)
        };
        let pass = Pass {
            gate: self,
            key: key.clone(),
        };
        loop {
            let opened = self.opened.notified();
            if lock(&self.state).opened {
                break;
            }
            opened.await;
        }
        if let Some(rx) = held
            && let Ok(Some(e)) = rx.await
        {
            return Err(e);
        }
        Ok(pass)
    }
}

impl MemGitLab {
    /// Queues `fault` for the next call of kind `call`.
    pub(crate) fn fault(&self, call: Call, fault: Fault) {
        lock(&self.faults).entry(call).or_default().push_back(fault);
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub(crate) fn objects(&self) -> Vec<MemObject> {
        lock(&self.objects).clone()
    }

    /// Counts the call; returns the fault queued for it, if any.
    fn enter(&self, call: Call) -> Option<Fault> {
        lock(&self.calls).push(call);
        lock(&self.faults)
            .get_mut(&call)
            .and_then(VecDeque::pop_front)
    }

    /// Applies `f` to the object `m` addresses, honouring a queued fault; a missing object is
    /// [`MemError::Gone`].
    fn modify(
        &self,
        call: Call,
        m: &Mapping,
        f: impl FnOnce(&mut MemObject),
    ) -> Result<RemoteObject, MemError> {
        let fault = self.enter(call);
        if let Some(Fault::Fail(e)) = fault {
            return Err(e);
        }
        let (project_id, iid) = m.address();
        let mut objects = lock(&self.objects);
        let obj = objects
            .iter_mut()
            .find(|o| Some(o.project_id) == project_id && Some(o.iid) == iid)
            .ok_or(MemError::Gone)?;
        f(obj);
        match fault {
            Some(Fault::ApplyThenLose) => Err(MemError::Lost),
            _ => Ok(obj.remote()),
        }
    }

    /// Applies `f` to the incident `m` addresses and answers what it returns, honouring a
    /// queued fault; a missing object is [`MemError::Gone`].
    fn on_incident<T>(
        &self,
        call: Call,
        m: &Mapping,
        f: impl FnOnce(&mut MemObject, u64) -> Result<T, MemError>,
    ) -> Result<T, MemError> {
        let fault = self.enter(call);
        if let Some(Fault::Fail(e)) = fault {
            return Err(e);
        }
        let (project_id, iid) = m.address();
        let mut objects = lock(&self.objects);
        let next_event = objects.iter().map(|o| o.events.len() as u64).sum::<u64>() + 1;
        let obj = objects
            .iter_mut()
            .find(|o| Some(o.project_id) == project_id && Some(o.iid) == iid)
            .ok_or(MemError::Gone)?;
        let answer = f(obj, next_event)?;
        match fault {
            Some(Fault::ApplyThenLose) => Err(MemError::Lost),
            _ => Ok(answer),
        }
    }

    /// Refuses `obj` as too large if its description is over the limit.
    fn fits(&self, obj: &NewObject) -> Result<(), MemError> {
        match *lock(&self.max_description) {
            Some(max) if obj.description.chars().count() > max => Err(MemError::TooLarge),
            _ => Ok(()),
        }
    }

    /// A person deletes object `iid` of project `project_id`.
    pub(crate) fn delete(&self, project_id: u64, iid: u64) {
        lock(&self.objects).retain(|o| (o.project_id, o.iid) != (project_id, iid));
    }

    /// A person moves object `iid` of project 1 to project `to`: a copy there (new id and
    /// iid), the original closed and pointing at it. Returns the copy's iid.
    pub(crate) fn move_to(&self, iid: u64, to: u64) -> u64 {
        let mut objects = lock(&self.objects);
        let copy_iid = objects.iter().filter(|o| o.project_id == to).count() as u64 + 1;
        let copy_id = objects.iter().map(|o| o.id).max().unwrap_or(0) + 1;
        let original = objects
            .iter_mut()
            .find(|o| (o.project_id, o.iid) == (1, iid))
            .expect("the object to move");
        original.moved_to_id = Some(copy_id);
        let copy = MemObject {
            id: copy_id,
            project_id: to,
            iid: copy_iid,
            moved_to_id: None,
            ..original.clone()
        };
        original.state = RemoteState::Closed;
        original.closed_at = Some(Utc::now());
        objects.push(copy);
        copy_iid
    }

    /// The object at `project_id`/`iid`.
    pub(crate) fn object(&self, project_id: u64, iid: u64) -> Option<MemObject> {
        lock(&self.objects)
            .iter()
            .find(|o| (o.project_id, o.iid) == (project_id, iid))
            .cloned()
    }
}

impl GitLabSink for MemGitLab {
    type Error = MemError;

    async fn resolve_project(&self, configured: &str) -> Result<ResolvedProject, MemError> {
        lock(&self.calls).push(Call::Resolve);
        Ok(ResolvedProject {
            id: 1,
            path_with_namespace: configured.to_owned(),
        })
    }

    /// Every object above `above_iid` is the sync's own (no person writes to this GitLab).
    async fn own_objects(
        &self,
        _dest: &Destination,
        above_iid: Option<u64>,
        _browse_base: &str,
    ) -> Result<Vec<(JiraKey, RemoteObject)>, MemError> {
        if let Some(Fault::Fail(e)) = self.enter(Call::Scan) {
            return Err(e);
        }
        Ok(lock(&self.objects)
            .iter()
            .filter(|o| o.project_id == 1 && above_iid.is_none_or(|above| o.iid > above))
            .map(|o| (o.jira_key.clone(), o.remote()))
            .collect())
    }

    async fn create(&self, dest: &Destination, obj: &NewObject) -> Result<RemoteObject, MemError> {
        let _pass = self.gate.pass(&obj.jira_key).await?;
        let fault = self.enter(Call::Create);
        if let Some(Fault::Fail(e)) = fault {
            return Err(e);
        }
        self.fits(obj)?;
        let mut objects = lock(&self.objects);
        let iid = objects.iter().filter(|o| o.project_id == 1).count() as u64 + 1;
        let created = MemObject {
            id: objects.iter().map(|o| o.id).max().unwrap_or(0) + 1,
            project_id: 1,
            iid,
            jira_key: obj.jira_key.clone(),
            title: obj.title.clone(),
            description: obj.description.clone(),
            state: RemoteState::Opened,
            created_at: lock(&self.ignore_times).unwrap_or(obj.created_at),
            closed_at: None,
            incident: dest.target == Target::Incident && !*lock(&self.below_reporter),
            moved_to_id: None,
            labels: obj.labels.clone(),
            label_events: Vec::new(),
            severity: None,
            events: Vec::new(),
        };
        objects.push(created.clone());
        match fault {
            Some(Fault::ApplyThenLose) => Err(MemError::Lost),
            _ => Ok(created.remote()),
        }
    }

    async fn find(
        &self,
        _dest: &Destination,
        obj: &NewObject,
        _browse_url: &str,
        _attempted_since: DateTime<Utc>,
    ) -> Result<Option<RemoteObject>, MemError> {
        if let Some(Fault::Fail(e)) = self.enter(Call::Find) {
            return Err(e);
        }
        Ok(lock(&self.objects)
            .iter()
            .find(|o| o.project_id == 1 && o.jira_key == obj.jira_key)
            .map(MemObject::remote))
    }

    async fn close(
        &self,
        _dest: &Destination,
        m: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        let _pass = self.gate.pass(&m.jira_key).await?;
        self.modify(Call::Close, m, |o| {
            o.state = RemoteState::Closed;
            o.closed_at = Some(at);
        })
    }

    async fn update(
        &self,
        _dest: &Destination,
        m: &Mapping,
        obj: &NewObject,
    ) -> Result<RemoteObject, MemError> {
        let _pass = self.gate.pass(&m.jira_key).await?;
        if let Err(e) = self.fits(obj) {
            lock(&self.calls).push(Call::Update);
            return Err(e);
        }
        self.modify(Call::Update, m, |o| {
            o.title = obj.title.clone();
            o.description = obj.description.clone();
        })
    }

    async fn add_label(
        &self,
        _dest: &Destination,
        m: &Mapping,
        label: &str,
    ) -> Result<RemoteObject, MemError> {
        self.modify(Call::Label, m, |o| {
            if !o.labels.iter().any(|l| l == label) {
                o.labels.push(label.to_owned());
            }
        })
    }

    /// Labels change as the port says: `remove` goes, `add` comes, each a label event at `at`
    /// when it changed something.
    async fn relabel(
        &self,
        _dest: &Destination,
        m: &Mapping,
        add: Option<&str>,
        remove: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        let _pass = self.gate.pass(&m.jira_key).await?;
        self.modify(Call::Relabel, m, |o| {
            if let Some(r) = remove
                && Some(r) != add
                && o.labels.iter().any(|l| l == r)
            {
                o.labels.retain(|l| l != r);
                o.label_events.push(crate::domain::LabelEvent {
                    label: r.to_owned(),
                    added: false,
                    at,
                });
            }
            if let Some(a) = add
                && !o.labels.iter().any(|l| l == a)
            {
                o.labels.push(a.to_owned());
                o.label_events.push(crate::domain::LabelEvent {
                    label: a.to_owned(),
                    added: true,
                    at,
                });
            }
        })
    }

    async fn label_events(
        &self,
        _dest: &Destination,
        m: &Mapping,
    ) -> Result<Vec<crate::domain::LabelEvent>, MemError> {
        if let Some(Fault::Fail(e)) = self.enter(Call::LabelEvents) {
            return Err(e);
        }
        let (project_id, iid) = m.address();
        lock(&self.objects)
            .iter()
            .find(|o| Some(o.project_id) == project_id && Some(o.iid) == iid)
            .map(|o| o.label_events.clone())
            .ok_or(MemError::Gone)
    }

    async fn delete(&self, _dest: &Destination, m: &Mapping) -> Result<(), MemError> {
        if let Some(Fault::Fail(e)) = self.enter(Call::Delete) {
            return Err(e);
        }
        lock(&self.objects).retain(|o| Some(o.iid) != m.iid);
        Ok(())
    }

    /// A moved object is answered as it is, not reopened (as the port's contract says).
    async fn reopen(
        &self,
        _dest: &Destination,
        m: &Mapping,
        _obj: &NewObject,
        _at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        let _pass = self.gate.pass(&m.jira_key).await?;
        self.modify(Call::Reopen, m, |o| {
            if o.moved_to_id.is_none() {
                o.state = RemoteState::Opened;
                o.closed_at = None;
            }
        })
    }

    async fn moved_copy(
        &self,
        _dest: &Destination,
        _m: &Mapping,
        copy_id: u64,
    ) -> Result<Option<(u64, RemoteObject)>, MemError> {
        if let Some(Fault::Fail(e)) = self.enter(Call::Follow) {
            return Err(e);
        }
        Ok(lock(&self.objects)
            .iter()
            .find(|o| o.id == copy_id)
            .map(|o| (o.project_id, o.remote())))
    }

    async fn set_severity(
        &self,
        _dest: &Destination,
        m: &Mapping,
        severity: IncidentSeverity,
    ) -> Result<(), MemError> {
        self.on_incident(Call::Severity, m, |o, _| {
            o.severity = Some(severity);
            Ok(())
        })
    }

    async fn timeline_events(
        &self,
        _dest: &Destination,
        m: &Mapping,
    ) -> Result<Vec<TimelineEvent>, MemError> {
        self.on_incident(Call::Events, m, |o, _| Ok(o.events.clone()))
    }

    async fn create_timeline_event(
        &self,
        _dest: &Destination,
        m: &Mapping,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, MemError> {
        self.on_incident(Call::CreateEvent, m, |o, n| {
            let made = TimelineEvent {
                id: format!("gid://gitlab/IncidentManagement::TimelineEvent/{n}"),
                occurred_at: event.occurred_at,
                note: event.note.clone(),
                tags: vec![event.tag.as_str().to_owned()],
            };
            o.events.push(made.clone());
            Ok(made)
        })
    }

    async fn update_timeline_event(
        &self,
        _dest: &Destination,
        m: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, MemError> {
        self.on_incident(Call::UpdateEvent, m, |o, _| {
            let e = o
                .events
                .iter_mut()
                .find(|e| e.id == id)
                .ok_or(MemError::Gone)?;
            e.occurred_at = event.occurred_at;
            e.note = event.note.clone();
            e.tags = vec![event.tag.as_str().to_owned()];
            Ok(e.clone())
        })
    }
}

/// One stored failure.
#[derive(Clone, Debug)]
pub(crate) struct MemFailure {
    pub(crate) snapshot: IssueSnapshot,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    pub(crate) next_attempt_at: DateTime<Utc>,
}

/// What identifies an object in the in-memory store: the project id and the Jira id (or, for a
/// snapshot without one, the key), as the port's contract says.
type Ident = (u64, String);

fn ident(project_id: u64, id: Option<&JiraId>, key: &JiraKey) -> Ident {
    (
        project_id,
        id.map_or_else(|| format!("key:{key}"), |id| id.to_string()),
    )
}

/// A store in plain maps.
#[derive(Default)]
pub(crate) struct MemStore {
    pub(crate) mappings: Mutex<HashMap<Ident, Mapping>>,
    pub(crate) intents: Mutex<HashMap<Ident, u32>>,
    pub(crate) failures: Mutex<HashMap<(String, JiraKey), MemFailure>>,
    pub(crate) cursors: Mutex<HashMap<String, DateTime<Utc>>>,
    pub(crate) meta: Mutex<HashMap<String, String>>,
    pub(crate) projects: Mutex<HashMap<String, ResolvedProject>>,
    /// Every commit, in order, with the cursor it carried.
    pub(crate) commits: Mutex<Vec<(Commit, Option<DateTime<Utc>>)>>,
    pub(crate) runs: Mutex<Vec<Option<RunOutcome>>>,
    /// When each mapping was last written, by the key it was written under.
    pub(crate) written: Mutex<HashMap<JiraKey, DateTime<Utc>>>,
    /// Every write call, by method name, in order.
    pub(crate) writes: Mutex<Vec<&'static str>>,
    /// Every read call, by method name, in order.
    pub(crate) reads: Mutex<Vec<&'static str>>,
    /// Stage replay, by object (project id, iid).
    pub(crate) stages: Mutex<HashMap<(u64, u64), crate::domain::StageState>>,
    /// Remote links by global id: (rule, wanted, sent, failed attempts, next attempt, gone).
    pub(crate) links: Mutex<HashMap<String, MemLink>>,
    /// Incident details by project id and iid.
    pub(crate) details: Mutex<HashMap<(u64, u64), IncidentDetails>>,
}

/// A remote link as the in-memory store keeps it.
#[derive(Clone, Debug)]
pub(crate) struct MemLink {
    pub(crate) rule: String,
    pub(crate) wanted: RemoteLink,
    pub(crate) sent: Option<RemoteLink>,
    pub(crate) attempts: u32,
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) gone: bool,
}

impl MemStore {
    /// The mapping whose current key is `key`.
    pub(crate) fn mapping(&self, key: &str) -> Option<Mapping> {
        let key = JiraKey::parse(key).expect("a valid key");
        lock(&self.mappings)
            .values()
            .find(|m| m.jira_key == key)
            .cloned()
    }

    pub(crate) fn failure(&self, rule: &str, key: &str) -> Option<MemFailure> {
        let key = JiraKey::parse(key).expect("a valid key");
        lock(&self.failures).get(&(rule.to_owned(), key)).cloned()
    }

    /// Makes every failure due now (what `retry` does).
    pub(crate) fn all_due(&self) {
        for f in lock(&self.failures).values_mut() {
            f.next_attempt_at = Utc::now();
        }
    }

    /// The attempts of the one pending intent, if there is one.
    pub(crate) fn intent(&self) -> Option<u32> {
        let intents = lock(&self.intents);
        assert!(
            intents.len() <= 1,
            "one pending intent at most: {intents:?}"
        );
        intents.values().next().copied()
    }

    pub(crate) fn cursor_of(&self, rule: &str) -> Option<DateTime<Utc>> {
        lock(&self.cursors).get(rule).copied()
    }

    pub(crate) fn commits(&self) -> Vec<(Commit, Option<DateTime<Utc>>)> {
        lock(&self.commits).clone()
    }

    /// Every read call so far, by method name.
    pub(crate) fn reads(&self) -> Vec<&'static str> {
        lock(&self.reads).clone()
    }

    /// Every write call so far, by method name.
    pub(crate) fn writes(&self) -> Vec<&'static str> {
        lock(&self.writes).clone()
    }
}

impl MemStore {
    /// One more attempt at the intent of `id`/`key` at `place`, as the store counts them.
    fn count_attempt(
        &self,
        rule: &str,
        place: &Place,
        id: Option<&JiraId>,
        key: &JiraKey,
    ) -> Intent {
        let mut intents = lock(&self.intents);
        let n = intents.entry(ident(place.project_id, id, key)).or_insert(0);
        let previous = *n;
        *n += 1;
        Intent {
            rule: rule.to_owned(),
            jira_key: key.clone(),
            previous_attempts: previous,
            started_at: Utc::now(),
        }
    }
}

impl SyncStore for MemStore {
    type Error = MemError;

    async fn cursor(&self, rule: &str) -> Result<Option<DateTime<Utc>>, MemError> {
        lock(&self.reads).push("cursor");
        Ok(self.cursor_of(rule))
    }

    async fn mappings(
        &self,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Mapping>, MemError> {
        lock(&self.reads).push("mappings");
        let all = lock(&self.mappings);
        Ok(issues
            .into_iter()
            .filter_map(|(id, key)| {
                all.get(&ident(place.project_id, id.as_ref(), &key))
                    .map(|m| (key, m.clone()))
            })
            .collect())
    }

    async fn begin_intent(
        &self,
        rule: &str,
        place: &Place,
        id: Option<&JiraId>,
        key: &JiraKey,
    ) -> Result<Intent, MemError> {
        lock(&self.writes).push("begin_intent");
        Ok(self.count_attempt(rule, place, id, key))
    }

    async fn begin_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Intent>, MemError> {
        lock(&self.writes).push("begin_intents");
        Ok(issues
            .into_iter()
            .map(|(id, key)| {
                let intent = self.count_attempt(rule, place, id.as_ref(), &key);
                (key, intent)
            })
            .collect())
    }

    async fn withdraw_intents(
        &self,
        _rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("withdraw_intents");
        let mut intents = lock(&self.intents);
        for (id, key) in issues {
            let ident = ident(place.project_id, id.as_ref(), &key);
            if intents.get(&ident) == Some(&1) {
                intents.remove(&ident);
            }
        }
        Ok(())
    }

    async fn project_id(&self, configured: &str) -> Result<Option<u64>, MemError> {
        lock(&self.reads).push("project_id");
        Ok(lock(&self.projects).get(configured).map(|p| p.id))
    }

    async fn remember_project(
        &self,
        configured: &str,
        project: &ResolvedProject,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("remember_project");
        lock(&self.projects).insert(configured.to_owned(), project.clone());
        Ok(())
    }

    async fn following(
        &self,
        rule: &str,
        written_before: DateTime<Utc>,
    ) -> Result<Vec<Mapping>, MemError> {
        lock(&self.reads).push("following");
        let written = lock(&self.written).clone();
        let mut out: Vec<Mapping> = lock(&self.mappings)
            .values()
            .filter(|m| {
                m.rule == rule
                    && written
                        .get(&m.jira_key)
                        .is_none_or(|at| *at < written_before)
                    && m.state == RemoteState::Opened
                    && m.jira_id.is_some()
                    && m.scope != crate::domain::IssueScope::Deleted
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.jira_key.cmp(&b.jira_key));
        Ok(out)
    }

    async fn max_iid(&self, place: &Place) -> Result<Option<u64>, MemError> {
        lock(&self.reads).push("max_iid");
        Ok(lock(&self.mappings)
            .iter()
            .filter(|((project, _), _)| *project == place.project_id)
            .filter_map(|(_, m)| m.iid)
            .max())
    }

    async fn incident_details(
        &self,
        project_id: u64,
        iid: u64,
    ) -> Result<IncidentDetails, MemError> {
        lock(&self.reads).push("incident_details");
        Ok(lock(&self.details)
            .get(&(project_id, iid))
            .cloned()
            .unwrap_or_default())
    }

    async fn begin_timeline_event(
        &self,
        _rule: &str,
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("begin_timeline_event");
        lock(&self.details).insert((project_id, iid), details);
        Ok(())
    }

    async fn commit(
        &self,
        rule: &str,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("commit");
        lock(&self.commits).push((commit.clone(), cursor));
        if let Commit::Settled { mapping, details } = &commit
            && let (Some(project_id), Some(iid)) = (mapping.project_id, mapping.iid)
        {
            lock(&self.details).insert((project_id, iid), details.clone());
        }
        match commit {
            Commit::Replicated(m) | Commit::Settled { mapping: m, .. } => {
                let id = ident(
                    m.project_id.expect("the engine commits resolved mappings"),
                    m.jira_id.as_ref(),
                    &m.jira_key,
                );
                lock(&self.intents).remove(&id);
                lock(&self.failures).remove(&(rule.to_owned(), m.jira_key.clone()));
                lock(&self.written).insert(m.jira_key.clone(), Utc::now());
                lock(&self.mappings).insert(
                    id,
                    Mapping {
                        rule: rule.to_owned(),
                        ..m
                    },
                );
            }
            Commit::Details {
                project_id,
                iid,
                details,
            } => {
                lock(&self.details).insert((project_id, iid), details);
            }
            Commit::Failed { snapshot, error } => {
                let id = (rule.to_owned(), snapshot.key.clone());
                let mut failures = lock(&self.failures);
                let attempts = failures.get(&id).map_or(0, |f| f.attempts) + 1;
                failures.insert(
                    id,
                    MemFailure {
                        snapshot,
                        attempts,
                        error,
                        next_attempt_at: Utc::now() + Failure::backoff(attempts),
                    },
                );
            }
        }
        if let Some(to) = cursor {
            advance(&mut lock(&self.cursors), rule, to);
        }
        Ok(())
    }

    async fn advance_cursor(&self, rule: &str, to: DateTime<Utc>) -> Result<(), MemError> {
        lock(&self.writes).push("advance_cursor");
        advance(&mut lock(&self.cursors), rule, to);
        Ok(())
    }

    async fn failures(&self, rule: &str) -> Result<Vec<Failure>, MemError> {
        lock(&self.reads).push("failures");
        let mut out: Vec<Failure> = lock(&self.failures)
            .iter()
            .filter(|((r, _), _)| r == rule)
            .map(|((r, _), f)| Failure {
                rule: r.clone(),
                snapshot: f.snapshot.clone(),
                attempts: f.attempts,
                last_error: f.error.clone(),
                last_failed_at: Utc::now(),
                next_attempt_at: Some(f.next_attempt_at),
            })
            .collect();
        out.sort_by_key(|f| f.snapshot.updated);
        Ok(out)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, MemError> {
        lock(&self.reads).push("meta");
        Ok(lock(&self.meta).get(key).cloned())
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), MemError> {
        lock(&self.writes).push("set_meta");
        lock(&self.meta).insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn stages(
        &self,
        project_id: u64,
        iid: u64,
    ) -> Result<crate::domain::StageState, MemError> {
        lock(&self.reads).push("stages");
        Ok(lock(&self.stages)
            .get(&(project_id, iid))
            .cloned()
            .unwrap_or_default())
    }

    async fn record_stage(
        &self,
        project_id: u64,
        iid: u64,
        step: &crate::domain::StageStep,
        done: bool,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("record_stage");
        let mut stages = lock(&self.stages);
        super::dry_run::put_stage(stages.entry((project_id, iid)).or_default(), step, done);
        Ok(())
    }

    async fn history_done(
        &self,
        project_id: u64,
        iid: u64,
        updated: DateTime<Utc>,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("history_done");
        let mut stages = lock(&self.stages);
        let s = stages.entry((project_id, iid)).or_default();
        s.history_updated = s.history_updated.max(Some(updated));
        Ok(())
    }

    async fn want_link(&self, rule: &str, link: &RemoteLink) -> Result<bool, MemError> {
        lock(&self.writes).push("want_link");
        let mut links = lock(&self.links);
        if let Some(l) = links.get(&link.global_id)
            && l.wanted == *link
        {
            return Ok(false);
        }
        let sent = links.get(&link.global_id).and_then(|l| l.sent.clone());
        let pending = sent.as_ref() != Some(link);
        links.insert(
            link.global_id.clone(),
            MemLink {
                rule: rule.to_owned(),
                wanted: link.clone(),
                sent,
                attempts: 0,
                next_attempt_at: None,
                gone: false,
            },
        );
        Ok(pending)
    }

    async fn due_links(
        &self,
        rule: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<DueLinks, MemError> {
        lock(&self.reads).push("due_links");
        let links = lock(&self.links);
        let pending = || {
            links
                .values()
                .filter(|l| l.rule == rule && !l.gone && l.sent.as_ref() != Some(&l.wanted))
        };
        let mut due: Vec<DueLink> = pending()
            .filter(|l| l.next_attempt_at.is_none_or(|t| t <= now))
            .map(|l| DueLink {
                link: l.wanted.clone(),
                attempts: l.attempts,
            })
            .collect();
        due.sort_by(|a, b| a.link.global_id.cmp(&b.link.global_id));
        due.truncate(limit);
        let next_due = pending()
            .filter_map(|l| l.next_attempt_at)
            .filter(|t| *t > now)
            .min();
        Ok(DueLinks { due, next_due })
    }

    async fn link_sent(&self, link: &RemoteLink) -> Result<(), MemError> {
        lock(&self.writes).push("link_sent");
        if let Some(l) = lock(&self.links).get_mut(&link.global_id) {
            l.sent = Some(link.clone());
            l.attempts = 0;
            l.next_attempt_at = None;
        }
        Ok(())
    }

    async fn link_failed(
        &self,
        link: &RemoteLink,
        _error: &str,
        gone: bool,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("link_failed");
        if let Some(l) = lock(&self.links).get_mut(&link.global_id)
            && l.wanted == *link
        {
            l.attempts += 1;
            l.next_attempt_at = Some(Utc::now() + Failure::backoff(l.attempts));
            l.gone = gone;
        }
        Ok(())
    }

    async fn start_run(&self, _rule: &str, _mode: RunMode) -> Result<i64, MemError> {
        lock(&self.writes).push("start_run");
        let mut runs = lock(&self.runs);
        runs.push(None);
        Ok(runs.len() as i64)
    }

    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        _counts: RunCounts,
        _error: Option<String>,
    ) -> Result<(), MemError> {
        lock(&self.writes).push("finish_run");
        let mut runs = lock(&self.runs);
        let slot = usize::try_from(run_id - 1)
            .ok()
            .and_then(|i| runs.get_mut(i))
            .ok_or(MemError::Refused)?;
        *slot = Some(outcome);
        Ok(())
    }
}
