//! The fake Jira: Cloud (`/rest/api/{2,3}/search/jql` with `nextPageToken`, 410 on the removed
//! `/search`) or Data Center (`/rest/api/2/search` with `startAt`, a silent page-size cap and a
//! max result window), `/myself`, `/serverInfo`, JQL with dates read in the user's zone, index
//! lag, and injected faults; each issue's changelog (every status transition at its time),
//! embedded (`expand=changelog`), paged per issue, and in bulk (`jira/changelog.rs`); custom
//! fields; remote issue links and `mypermissions` (`jira/links.rs`).
//!
//! Cloud's search lag is modelled two ways: by hand ([`FakeJira::hold_index`]) and, with
//! [`FakeJiraConfig::index_lag`], for every change made through the handle; a search naming an
//! issue in `reconcileIssues` sees it as it is now. With a webhook target set, changes are posted
//! to it, signed (`webhooks`).
//!
//! Issues live in memory and are changed through the [`FakeJira`] handle. Every search evaluates
//! the query afresh, so issues that change between two pages move between pages just as they do
//! against a real offset or token.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod changelog;
mod webhooks;

pub use webhooks::{Forgery, WebhookDelivery, WebhookTarget};

use super::jql::{Query, key_order};

/// Remote issue links and the account's permissions (`[jira] link_back`, `check`).
mod links;
use super::{
    HandleInner, Listener, ParsedBody, RecordedRequest, Recorder, Reply, ShutdownGuard,
    json_response, lock, query_pairs, raw_response, read_body,
};

/// Which Jira the fake plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    Cloud,
    DataCenter,
}

/// How the fake Jira behaves.
#[derive(Clone, Debug)]
pub struct FakeJiraConfig {
    pub deployment: Deployment,
    /// The `Authorization` header values accepted, compared exactly (Cloud:
    /// `Basic base64(email:token)`; Data Center: `Bearer <pat>` or basic).
    pub auth: Vec<String>,
    /// The searching user's profile zone: `/myself` reports it and JQL date literals are read in it.
    pub user_time_zone: Tz,
    /// The offset response timestamps are rendered in (`+01:00` renders as `+0100`).
    pub response_offset: FixedOffset,
    /// Cloud returns at most this many issues a page when fields beyond `id`/`key` are asked.
    pub cloud_page_cap: usize,
    /// Data Center silently caps `maxResults` to this and reports the capped value back.
    pub dc_page_cap: usize,
    /// Data Center refuses to page past this many results (`None`: no limit).
    pub dc_max_result_window: Option<u64>,
    /// The status of the "Search limit exceeded" answer: 400 by default; Atlassian's KB shows 500
    /// on some versions.
    pub dc_window_error_status: u16,
    /// Added before every answer.
    pub latency: Duration,
    /// Cloud embeds at most this many changelog entries in an issue (`expand=changelog`), the
    /// most recent first: Atlassian's OpenAPI (`swagger-v3.v3.json`) says `expand=changelog`
    /// "returns a list of recent updates to an issue, sorted by date, starting from the most
    /// recent" and, for bulk fetch, "a maximum of 40 changelogs". Data Center embeds them all,
    /// oldest first.
    pub cloud_changelog_cap: usize,
    /// Cloud's bulk changelog answers at most this many entries a page, whatever `maxResults`
    /// asks (a server may answer fewer than asked; `nextPageToken` says there is more).
    pub bulk_changelog_page_cap: usize,
    /// `/myself`'s `displayName`.
    pub display_name: String,
    /// `/myself`'s `emailAddress`.
    pub email_address: String,
    /// How far the fake's clock is from this host's (negative: behind). It sets every answer's
    /// `Date` header (RFC 9110 §6.6.1: an origin server with a clock sends the time the answer
    /// was generated), `serverInfo`'s `serverTime`, and what JQL's `now()` means.
    pub clock_offset: chrono::Duration,
    /// Cloud's search index lag: a change made through the handle (a create or an edit) reaches
    /// search this long after it was made (search shows the version before it until then; a
    /// later change restarts the wait). Atlassian, "Search and reconcile"
    /// (developer.atlassian.com/cloud/jira/platform/search-and-reconcile): "subsequent search
    /// operations … without the reconcileIssues parameter may return stale or outdated data …
    /// from a few seconds to minutes". Zero (the default): search sees every change at once.
    pub index_lag: Duration,
}

impl FakeJiraConfig {
    /// The account email of the default Cloud credentials.
    pub const DEFAULT_EMAIL: &'static str = "sync-bot@example.com";
    /// The API token of the default Cloud credentials.
    pub const DEFAULT_API_TOKEN: &'static str = "sandbox-jira-token";
    /// The personal access token of the default Data Center credentials.
    pub const DEFAULT_PAT: &'static str = "sandbox-jira-pat";

    /// `Basic base64(user:secret)`.
    pub fn basic(user: &str, secret: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        format!("Basic {encoded}")
    }

    /// `Bearer <pat>`.
    pub fn bearer(pat: &str) -> String {
        format!("Bearer {pat}")
    }

    /// A Cloud site accepting [`Self::DEFAULT_EMAIL`] with [`Self::DEFAULT_API_TOKEN`].
    pub fn cloud() -> Self {
        Self::default()
    }

    /// A Data Center server accepting the PAT [`Self::DEFAULT_PAT`], with a page cap of 50.
    pub fn data_center() -> Self {
        Self {
            deployment: Deployment::DataCenter,
            auth: vec![Self::bearer(Self::DEFAULT_PAT)],
            ..Self::default()
        }
    }
}

impl Default for FakeJiraConfig {
    /// Cloud, default credentials, UTC user and responses, Jira's own page caps, no latency.
    fn default() -> Self {
        Self {
            deployment: Deployment::Cloud,
            auth: vec![Self::basic(Self::DEFAULT_EMAIL, Self::DEFAULT_API_TOKEN)],
            user_time_zone: chrono_tz::UTC,
            response_offset: FixedOffset::east_opt(0).expect("zero is a valid offset"),
            cloud_page_cap: 100,
            dc_page_cap: 50,
            dc_max_result_window: Some(10_000),
            dc_window_error_status: 400,
            latency: Duration::ZERO,
            cloud_changelog_cap: 40,
            bulk_changelog_page_cap: 1000,
            display_name: "Sync Bot".to_owned(),
            email_address: Self::DEFAULT_EMAIL.to_owned(),
            clock_offset: chrono::Duration::zero(),
            index_lag: Duration::ZERO,
        }
    }
}

/// One Jira issue as the fake holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeIssue {
    pub key: String,
    /// The project key, derived from `key` by [`FakeIssue::new`].
    pub project: String,
    pub issue_type: String,
    pub summary: String,
    /// Plain text or wiki markup. Cloud v3 serves it as ADF (one paragraph per blank-line
    /// separated block); v2 and Data Center serve the string.
    pub description: Option<String>,
    /// Served as-is on Cloud v3 instead of the ADF made from `description`.
    pub description_adf: Option<Value>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub resolutiondate: Option<DateTime<Utc>>,
    /// The workflow status name (`Open`, `Done`, `Reopened`...).
    pub status: String,
    /// The status category key: `new`, `indeterminate` or `done`.
    pub status_category: String,
    pub priority: Option<String>,
    pub labels: Vec<String>,
    /// The issue's numeric id, set by [`FakeJira::insert`] (kept across moves); `None` before.
    pub id: Option<u64>,
    /// The changelog, oldest first (`IssueBean.changelog` / `PageOfChangelogs` in Atlassian's
    /// OpenAPI). Status changes made through [`FakeJira`] and [`FakeIssue::resolved_at`] are
    /// recorded here.
    pub history: Vec<FakeHistory>,
    /// Custom fields by id (`customfield_10042`), as Jira renders them: a date field's value is
    /// `"2025-03-01"`, a date-time field's `"2025-03-01T10:15:00.000+0100"`.
    pub fields: BTreeMap<String, Value>,
    /// The category key of every status the issue has been in (`/status` lists them).
    pub categories: BTreeMap<String, String>,
}

/// One changelog entry (`Changelog` in Atlassian's OpenAPI): when, and the items changed.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeHistory {
    pub at: DateTime<Utc>,
    pub items: Vec<FakeChangeItem>,
}

/// One changed field (`ChangeDetails`): `from`/`to` are ids (a status id), the `…String`s what
/// a person reads.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeChangeItem {
    pub field: String,
    pub from: Option<String>,
    pub from_string: Option<String>,
    pub to: Option<String>,
    pub to_string: Option<String>,
}

impl FakeHistory {
    /// A change of the status from `from` to `to` (names; their ids are [`status_id`]'s).
    pub fn status(at: DateTime<Utc>, from: &str, to: &str) -> Self {
        Self {
            at,
            items: vec![FakeChangeItem {
                field: "status".to_owned(),
                from: Some(status_id(from)),
                from_string: Some(from.to_owned()),
                to: Some(status_id(to)),
                to_string: Some(to.to_owned()),
            }],
        }
    }

    /// A change of a field other than the status (a label, a summary…).
    pub fn field(at: DateTime<Utc>, field: &str, from: &str, to: &str) -> Self {
        Self {
            at,
            items: vec![FakeChangeItem {
                field: field.to_owned(),
                from: None,
                from_string: Some(from.to_owned()),
                to: None,
                to_string: Some(to.to_owned()),
            }],
        }
    }
}

/// The statuses every fake site has, with their ids and category keys (Jira's defaults: `Open`
/// 1, `In Progress` 3, `Reopened` 4, `Resolved` 5, `Closed` 6, `To Do` 10000, `Done` 10001).
const KNOWN_STATUSES: [(&str, &str, &str); 7] = [
    ("1", "Open", "new"),
    ("3", "In Progress", "indeterminate"),
    ("4", "Reopened", "indeterminate"),
    ("5", "Resolved", "done"),
    ("6", "Closed", "done"),
    ("10000", "To Do", "new"),
    ("10001", "Done", "done"),
];

/// The id of the status called `name`: Jira's default ids, else a stable one of its own.
pub fn status_id(name: &str) -> String {
    KNOWN_STATUSES
        .iter()
        .find(|(_, n, _)| *n == name)
        .map_or_else(
            || (20_000 + fnv1a(name.as_bytes()) % 10_000).to_string(),
            |(id, _, _)| (*id).to_owned(),
        )
}

impl FakeIssue {
    /// An open `Incident` with priority `Medium`, created and last updated at `created`.
    pub fn new(key: &str, summary: &str, created: DateTime<Utc>) -> Self {
        let project = key
            .rsplit_once('-')
            .map_or(key, |(project, _)| project)
            .to_owned();
        Self {
            key: key.to_owned(),
            project,
            issue_type: "Incident".to_owned(),
            summary: summary.to_owned(),
            description: None,
            description_adf: None,
            created,
            updated: created,
            resolutiondate: None,
            status: "Open".to_owned(),
            status_category: "new".to_owned(),
            priority: Some("Medium".to_owned()),
            labels: Vec::new(),
            id: None,
            history: Vec::new(),
            fields: BTreeMap::new(),
            categories: BTreeMap::new(),
        }
    }

    /// Sets the custom field `id` to `value` (`Value::Null` empties it).
    pub fn with_field(mut self, id: &str, value: Value) -> Self {
        self.fields.insert(id.to_owned(), value);
        self
    }

    /// Moves the issue to `status` (of `category`) at `at`, as a person does in the workflow:
    /// the changelog records it at that time, `updated` moves to it if later, and entering the
    /// `done` category resolves it then (leaving it clears the resolution).
    pub fn transitioned(mut self, at: DateTime<Utc>, status: &str, category: &str) -> Self {
        self.set_status(at, status, category);
        if category == "done" {
            self.resolutiondate = Some(at);
        } else {
            self.resolutiondate = None;
        }
        self.updated = self.updated.max(at);
        self
    }

    /// Sets the description text.
    pub fn with_description(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }

    /// Sets the labels.
    pub fn with_labels(mut self, labels: &[&str]) -> Self {
        self.labels = labels.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    /// Sets the priority name (`None`: no priority).
    pub fn with_priority(mut self, priority: Option<&str>) -> Self {
        self.priority = priority.map(str::to_owned);
        self
    }

    /// Sets the issue type name.
    pub fn with_issue_type(mut self, issue_type: &str) -> Self {
        self.issue_type = issue_type.to_owned();
        self
    }

    /// Marks the issue resolved (`Done`) at `at`, which also becomes its `updated`.
    pub fn resolved_at(mut self, at: DateTime<Utc>) -> Self {
        self.mark_resolved(at);
        self
    }

    fn mark_resolved(&mut self, at: DateTime<Utc>) {
        self.resolutiondate = Some(at);
        self.set_status(at, "Done", "done");
        self.updated = at;
    }

    /// Moves the issue to `status` (of category `category`) at `at`, recording it in the
    /// changelog; the resolution is left as it is.
    pub fn set_status(&mut self, at: DateTime<Utc>, status: &str, category: &str) {
        if self.status != status {
            self.history
                .push(FakeHistory::status(at, &self.status, status));
        }
        self.categories
            .insert(self.status.clone(), self.status_category.clone());
        self.categories
            .insert(status.to_owned(), category.to_owned());
        self.status = status.to_owned();
        self.status_category = category.to_owned();
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// Any search endpoint (`/search`, `/search/jql`).
    Search,
    /// `/myself`.
    Myself,
    Any,
}

/// A misbehaviour for the next matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with Jira Cloud's rate-limit headers; `Retry-After` only when `Some`.
    RateLimited { retry_after_secs: Option<u64> },
    /// Answer `status` with `body` (JSON when it parses, HTML otherwise) without processing.
    Status { status: u16, body: String },
    /// Wait, then process normally.
    Delay(Duration),
    /// `302 Found` to `location`, as a proxy or a moved site answers (RFC 9110 §15.4.3).
    Redirect { location: String },
    /// A search answered with no issues but not as the last page, pointing at the same place
    /// again (Cloud: `isLast: false` with a `nextPageToken`; Data Center: `startAt` below
    /// `total`). What a lagging search index can answer: Atlassian's OpenAPI
    /// (`swagger-v3.v3.json`, `/rest/api/3/search/jql`) warns that "recent updates might not be
    /// immediately visible", and only `isLast` says "whether this is the last page".
    EmptyPage,
    /// A Cloud search page whose `nextPageToken` is the token the request carried (Jira paging
    /// in a circle), or a fresh one on the first page.
    RepeatToken,
    /// The search is answered normally, then `key` is edited at `at` (`updated = at`): a person
    /// editing while the sync pages. On Data Center the offsets then shift ("the data position
    /// shifts … the data will shift forward or backward on the pages", Atlassian KB
    /// "Inconsistent paginated API search result while using JQL",
    /// support.atlassian.com/jira/kb/inconsistent-paginated-api-search-result-while-using-jql).
    EditAfter { key: String, at: DateTime<Utc> },
}

/// A fault that shapes a search answer rather than replacing it.
#[derive(Clone, Debug)]
struct PageFault(Fault);

/// A running fake Jira. Clones share the server; it stops with [`FakeJira::shutdown`] or when
/// the last clone is dropped.
#[derive(Clone)]
pub struct FakeJira {
    inner: Arc<HandleInner<JiraState>>,
}

struct JiraState {
    config: FakeJiraConfig,
    base_url: url::Url,
    data: Mutex<JiraData>,
    faults: Mutex<VecDeque<(FaultTarget, Fault)>>,
    recorder: Recorder,
    links: links::RemoteLinks,
    hooks: webhooks::Hooks,
}

#[derive(Default)]
struct JiraData {
    /// By key, with the numeric id assigned at first insert.
    issues: BTreeMap<String, (u64, FakeIssue)>,
    next_id: u64,
    /// Keys whose searchable version is frozen: `None` while the key is not indexed at all.
    held: HashMap<String, Option<(u64, FakeIssue)>>,
    /// Keys held by the index lag, not by hand, with when search catches up with them.
    lagging: HashMap<String, std::time::Instant>,
}

impl JiraData {
    /// With an index `lag`, search keeps the version of `key` before the change about to be
    /// made (none for a new issue) until `lag` has passed. A key held by hand stays so.
    fn lag_change(&mut self, key: &str, lag: Duration) {
        if lag.is_zero() || (self.held.contains_key(key) && !self.lagging.contains_key(key)) {
            return;
        }
        let before = self.issues.get(key).cloned();
        self.held.entry(key.to_owned()).or_insert(before);
        self.lagging
            .insert(key.to_owned(), std::time::Instant::now() + lag);
    }

    /// Lets search see the keys whose lag has passed.
    fn catch_up(&mut self) {
        if self.lagging.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .lagging
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.lagging.remove(&k);
            self.held.remove(&k);
        }
    }
}

impl FakeJira {
    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Errors
    /// Returns the I/O error if the loopback socket cannot be bound.
    pub async fn start(config: FakeJiraConfig) -> std::io::Result<Self> {
        let listener = Listener::bind().await?;
        let base_url = listener.base_url.clone();
        let shutdown = CancellationToken::new();
        let state = Arc::new(JiraState {
            config,
            base_url: base_url.clone(),
            data: Mutex::new(JiraData {
                next_id: 10_000,
                ..JiraData::default()
            }),
            faults: Mutex::new(VecDeque::new()),
            recorder: Recorder::default(),
            links: links::RemoteLinks::default(),
            hooks: webhooks::Hooks::default(),
        });
        listener.serve(router(Arc::clone(&state)), shutdown.clone());
        Ok(Self {
            inner: Arc::new(HandleInner {
                state,
                base_url,
                guard: ShutdownGuard(shutdown),
            }),
        })
    }

    /// Where the fake listens, with a trailing slash (`http://127.0.0.1:PORT/`).
    pub fn base_url(&self) -> url::Url {
        self.inner.base_url.clone()
    }

    /// The configuration the fake runs with.
    pub fn config(&self) -> &FakeJiraConfig {
        &self.inner.state.config
    }

    /// The first accepted `Authorization` value, for clients under test.
    pub fn authorization(&self) -> Option<String> {
        self.inner.state.config.auth.first().cloned()
    }

    /// Stops the server; requests in flight are answered or cut off.
    pub fn shutdown(&self) {
        self.inner.guard.0.cancel();
    }

    /// Adds the issue, or replaces the one with the same key (keeping its id).
    pub fn insert(&self, mut issue: FakeIssue) {
        let state = &self.inner.state;
        let mut data = lock(&state.data);
        let (id, event) = match data.issues.get(&issue.key) {
            Some((id, _)) => (*id, "jira:issue_updated"),
            None => {
                data.next_id += 1;
                (data.next_id, "jira:issue_created")
            }
        };
        issue.id = Some(id);
        data.lag_change(&issue.key, state.config.index_lag);
        data.issues.insert(issue.key.clone(), (id, issue.clone()));
        drop(data);
        state.webhook(event, id, &issue);
    }

    /// Deletes the issue, as a person with the Delete Issues permission does: it is gone from
    /// search, `GET /issue` answers 404 and bulk fetch leaves it out. Returns false if there is
    /// no such key.
    pub fn delete(&self, key: &str) -> bool {
        let mut data = lock(&self.inner.state.data);
        data.held.remove(key);
        data.lagging.remove(key);
        let removed = data.issues.remove(key);
        drop(data);
        match removed {
            Some((id, issue)) => {
                self.inner.state.webhook("jira:issue_deleted", id, &issue);
                true
            }
            None => false,
        }
    }

    /// Resolves the issue at `at` (status `Done`, category `done`, `updated = at`).
    /// Returns the new version, or `None` if there is no such key.
    pub fn resolve(&self, key: &str, at: DateTime<Utc>) -> Option<FakeIssue> {
        self.update(key, at, |issue| issue.mark_resolved(at))
    }

    /// Reopens the issue at `at` (no resolution date, status `Reopened`, category
    /// `indeterminate`, `updated = at`). Returns the new version, or `None` if there is no such key.
    pub fn reopen(&self, key: &str, at: DateTime<Utc>) -> Option<FakeIssue> {
        self.update(key, at, |issue| {
            issue.resolutiondate = None;
            issue.set_status(at, "Reopened", "indeterminate");
        })
    }

    /// Moves the issue to `status` of `category` at `at` without touching its resolution, as a
    /// workflow whose Done statuses set no resolution does. Returns the new version, or `None`
    /// if there is no such key.
    pub fn transition(
        &self,
        key: &str,
        at: DateTime<Utc>,
        status: &str,
        category: &str,
    ) -> Option<FakeIssue> {
        self.update(key, at, |issue| issue.set_status(at, status, category))
    }

    /// Changes the issue with `change`, then sets `updated = at`. Returns the new version, or
    /// `None` if there is no such key.
    pub fn update(
        &self,
        key: &str,
        at: DateTime<Utc>,
        change: impl FnOnce(&mut FakeIssue),
    ) -> Option<FakeIssue> {
        let state = &self.inner.state;
        let mut data = lock(&state.data);
        if data.issues.contains_key(key) {
            data.lag_change(key, state.config.index_lag);
        }
        let (id, issue) = data.issues.get_mut(key)?;
        change(issue);
        issue.updated = at;
        let (id, issue) = (*id, issue.clone());
        drop(data);
        state.webhook("jira:issue_updated", id, &issue);
        Some(issue)
    }

    /// Moves the issue to another project at `at`, as a person does with Jira's "Move": it gets
    /// `new_key` (and that key's project) and keeps its id, and `updated` becomes `at`. Atlassian
    /// documents that a moved issue keeps its id while its key changes ("Move an issue",
    /// support.atlassian.com/jira-software-cloud/docs/move-an-issue; `IssueBean.id` versus
    /// `IssueBean.key` in the OpenAPI `swagger-v3.v3.json`). Returns false if there is no such
    /// key or `new_key` is taken.
    pub fn move_issue(&self, key: &str, new_key: &str, at: DateTime<Utc>) -> bool {
        let mut data = lock(&self.inner.state.data);
        if data.issues.contains_key(new_key) {
            return false;
        }
        let Some((id, mut issue)) = data.issues.remove(key) else {
            return false;
        };
        let moved = FakeIssue::new(new_key, &issue.summary, issue.created);
        issue.key = moved.key;
        issue.project = moved.project;
        issue.updated = at;
        data.issues.insert(new_key.to_owned(), (id, issue.clone()));
        drop(data);
        self.inner.state.webhook("jira:issue_updated", id, &issue);
        true
    }

    /// The current version of the issue (what `GET /issue` would show, index lag aside).
    pub fn get(&self, key: &str) -> Option<FakeIssue> {
        lock(&self.inner.state.data)
            .issues
            .get(key)
            .map(|(_, issue)| issue.clone())
    }

    /// Every issue's current version, in natural key order.
    pub fn issues(&self) -> Vec<FakeIssue> {
        let data = lock(&self.inner.state.data);
        let mut issues: Vec<FakeIssue> = data.issues.values().map(|(_, i)| i.clone()).collect();
        issues.sort_by(|a, b| key_order(&a.key, &b.key));
        issues
    }

    /// Freezes what search returns for `key` at its current version; a key not yet inserted
    /// stays invisible to search. Changes made meanwhile are stored but not searchable until
    /// [`FakeJira::release_index`] or [`FakeJira::release_all`].
    pub fn hold_index(&self, key: &str) {
        let mut data = lock(&self.inner.state.data);
        let current = data.issues.get(key).cloned();
        data.held.entry(key.to_owned()).or_insert(current);
    }

    /// Lets search see the current version of `key` again.
    pub fn release_index(&self, key: &str) {
        lock(&self.inner.state.data).held.remove(key);
    }

    /// Releases every held key.
    pub fn release_all(&self) {
        lock(&self.inner.state.data).held.clear();
    }

    /// Queues `fault` for the next request matching `target` (faults are consumed in order).
    pub fn push_fault(&self, target: FaultTarget, fault: Fault) {
        lock(&self.inner.state.faults).push_back((target, fault));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.state.recorder.snapshot()
    }

    /// The requests received after the first `from`, in arrival order (indices restart at 0 after
    /// [`Self::clear_requests`]).
    pub fn requests_since(&self, from: usize) -> Vec<RecordedRequest> {
        self.inner.state.recorder.since(from)
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.state.recorder.clear();
    }
}

fn router(state: Arc<JiraState>) -> Router {
    Router::new()
        .route(
            "/rest/api/{version}/search/jql",
            get(search_jql).post(search_jql),
        )
        .route(
            "/rest/api/{version}/search",
            get(search_legacy).post(search_legacy),
        )
        .route(
            "/rest/api/{version}/search/approximate-count",
            post(approximate_count),
        )
        .route("/rest/api/{version}/myself", get(myself))
        .route("/rest/api/{version}/status", get(statuses))
        .route("/rest/api/{version}/issue/{id_or_key}", get(get_issue))
        .route("/rest/api/{version}/issue/bulkfetch", post(bulk_fetch))
        .route(
            "/rest/api/{version}/issue/{id_or_key}/changelog",
            get(get_changelog),
        )
        .route(
            "/rest/api/{version}/changelog/bulkfetch",
            post(changelog::bulk_fetch),
        )
        .route("/rest/api/{version}/serverInfo", get(server_info))
        .route(
            "/rest/api/{version}/issue/{id_or_key}/remotelink",
            get(links::list_remote_links).post(links::put_remote_link),
        )
        .route(
            "/rest/api/{version}/mypermissions",
            get(links::my_permissions),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), front))
        .with_state(state)
}

/// Logs the request, adds latency, applies a queued fault, checks credentials.
async fn front(State(state): State<Arc<JiraState>>, req: Request, next: Next) -> Response {
    let (mut req, body) = read_body(req).await;
    let index = state
        .recorder
        .start(req.method(), req.uri(), req.headers(), body);
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let response = match state.take_fault(req.uri().path()) {
        Some(Fault::RateLimited { retry_after_secs }) => Some(rate_limited(retry_after_secs)),
        Some(Fault::Status { status, body }) => Some(raw_response(status, &body)),
        Some(Fault::Redirect { location }) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = axum::http::StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Some(r)
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(f @ (Fault::EmptyPage | Fault::RepeatToken | Fault::EditAfter { .. })) => {
            req.extensions_mut().insert(PageFault(f));
            None
        }
        None => None,
    };
    let response = match response {
        Some(r) => r,
        None => {
            let authorized = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| state.config.auth.iter().any(|a| a == v));
            if authorized {
                next.run(req).await
            } else {
                let mut r = jira_error(
                    401,
                    "You are not authenticated. Authentication required to perform this operation.",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"protected-area\""),
                );
                r
            }
        }
    };
    let mut response = response;
    let date = state.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, v);
    }
    state.recorder.finish(index, response.status().as_u16());
    response
}

impl JiraState {
    /// The fake's own clock: this host's, moved by `clock_offset`.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.config.clock_offset
    }

    /// Edits `key` at `at`, as a person would: `updated` moves.
    fn edit(&self, key: &str, at: DateTime<Utc>) {
        if let Some((_, issue)) = lock(&self.data).issues.get_mut(key) {
            issue.updated = at;
        }
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let target = if path.contains("/search") {
            Some(FaultTarget::Search)
        } else if path.ends_with("/myself") {
            Some(FaultTarget::Myself)
        } else {
            None
        };
        let mut faults = lock(&self.faults);
        let pos = faults
            .iter()
            .position(|(t, _)| *t == FaultTarget::Any || Some(*t) == target)?;
        faults.remove(pos).map(|(_, f)| f)
    }

    fn is_cloud(&self) -> bool {
        self.config.deployment == Deployment::Cloud
    }

    /// How many searchable issues `query` finds, and clones of those in `start..start + len` of
    /// its order.
    ///
    /// Only the page asked for is cloned: the matching, the order and the count are those of
    /// filtering and sorting clones of every searchable version (the held one where a key is
    /// held) as before, since the same versions are filtered in the same (key) order and sorted
    /// by the same stable sort; a search costing a clone of every issue is the fake's, not
    /// Jira's.
    fn search_page(
        &self,
        query: &Query,
        start: usize,
        len: usize,
    ) -> (usize, Vec<(u64, FakeIssue)>) {
        self.search_page_reconciling(query, start, len, &[])
    }

    /// As [`JiraState::search_page`], with the issues whose ids are in `reconcile` searched as
    /// they are now, whatever the index holds ("consistency is ensured only for the specified
    /// issues": Atlassian, "Search and reconcile").
    fn search_page_reconciling(
        &self,
        query: &Query,
        start: usize,
        len: usize,
        reconcile: &[u64],
    ) -> (usize, Vec<(u64, FakeIssue)>) {
        let mut data = lock(&self.data);
        data.catch_up();
        let data = data;
        let mut found: Vec<&(u64, FakeIssue)> = data
            .issues
            .iter()
            .filter_map(|(key, current)| match data.held.get(key) {
                Some(_) if reconcile.contains(&current.0) => Some(current),
                Some(frozen) => frozen.as_ref(),
                None => Some(current),
            })
            .filter(|(_, issue)| query.matches(issue))
            .collect();
        found.sort_by(|(_, a), (_, b)| query.compare(a, b));
        let total = found.len();
        let start = start.min(total);
        let end = start.saturating_add(len).min(total);
        let page = found[start..end]
            .iter()
            .map(|&found| found.clone())
            .collect();
        (total, page)
    }

    fn timestamp(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.config.response_offset)
            .format("%Y-%m-%dT%H:%M:%S%.3f%z")
            .to_string()
    }

    fn api(&self, version: &str, rest: &str) -> String {
        format!("{}rest/api/{version}/{rest}", self.base_url)
    }
}

fn jira_error(status: u16, message: &str) -> Response {
    json_response(status, &json!({ "errorMessages": [message], "errors": {} }))
}

fn rate_limited(retry_after_secs: Option<u64>) -> Response {
    let mut r = jira_error(429, "Rate limit exceeded.");
    let reset = Utc::now() + chrono::Duration::seconds(retry_after_secs.unwrap_or(60) as i64);
    let headers = r.headers_mut();
    if let Some(secs) = retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    headers.insert(
        "ratelimit-reason",
        HeaderValue::from_static("jira-burst-based"),
    );
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("100"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-nearlimit", HeaderValue::from_static("true"));
    if let Ok(v) = HeaderValue::from_str(&reset.format("%Y-%m-%dT%H:%MZ").to_string()) {
        headers.insert("x-ratelimit-reset", v);
    }
    r
}

async fn not_found(State(state): State<Arc<JiraState>>, req: Request<Body>) -> Response {
    json_response(
        404,
        &json!({
            "message": format!("null for uri: {}{}", state.base_url.as_str().trim_end_matches('/'), req.uri()),
            "status-code": 404,
        }),
    )
}

/// What a search asked for, from the query string (GET) or the JSON body (POST).
#[derive(Debug, Default)]
struct SearchParams {
    jql: String,
    fields: Option<Vec<String>>,
    max_results: Option<i64>,
    start_at: Option<i64>,
    next_page_token: Option<String>,
    /// `expand`: a comma-separated string (Cloud `search/jql`) or a list (Data Center).
    expand: Vec<String>,
    /// Data Center `validateQuery`: `strict` (the default), `warn` or `none`.
    validate_query: Option<String>,
    /// Cloud `reconcileIssues`: issue ids searched consistently (at most 50).
    reconcile: Vec<u64>,
}

impl SearchParams {
    fn read(method: &Method, query: Option<&str>, body: Option<Value>) -> Result<Self, Reply> {
        let mut p = SearchParams::default();
        let bad = |name: &str, value: &str| {
            Reply::from(jira_error(
                400,
                &format!("The value '{value}' is invalid for the parameter '{name}'."),
            ))
        };
        if method == Method::POST {
            let body = body.unwrap_or(Value::Null);
            p.jql = body["jql"].as_str().unwrap_or_default().to_owned();
            p.fields = match &body["fields"] {
                Value::Array(items) => Some(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                Value::String(s) => Some(split_fields(s)),
                _ => None,
            };
            for (name, slot) in [
                ("maxResults", &mut p.max_results),
                ("startAt", &mut p.start_at),
            ] {
                match &body[name] {
                    Value::Null => {}
                    v => *slot = Some(v.as_i64().ok_or_else(|| bad(name, &v.to_string()))?),
                }
            }
            p.next_page_token = body["nextPageToken"].as_str().map(str::to_owned);
            match &body["reconcileIssues"] {
                Value::Null => {}
                Value::Array(ids) => {
                    for v in ids {
                        p.reconcile.push(
                            v.as_u64()
                                .ok_or_else(|| bad("reconcileIssues", &v.to_string()))?,
                        );
                    }
                }
                v => return Err(bad("reconcileIssues", &v.to_string())),
            }
            p.validate_query = match &body["validateQuery"] {
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(if *b { "strict" } else { "none" }.to_owned()),
                _ => None,
            };
            p.expand = match &body["expand"] {
                Value::String(s) => split_fields(s),
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
        } else {
            for (k, v) in query_pairs(query) {
                match k.as_str() {
                    "jql" => p.jql = v,
                    "fields" => p
                        .fields
                        .get_or_insert_with(Vec::new)
                        .extend(split_fields(&v)),
                    "maxResults" => p.max_results = Some(v.parse().map_err(|_| bad(&k, &v))?),
                    "startAt" => p.start_at = Some(v.parse().map_err(|_| bad(&k, &v))?),
                    "nextPageToken" => p.next_page_token = Some(v),
                    "expand" => p.expand.extend(split_fields(&v)),
                    "validateQuery" => p.validate_query = Some(v),
                    "reconcileIssues" => {
                        for id in split_fields(&v) {
                            p.reconcile.push(id.parse().map_err(|_| bad(&k, &v))?);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(p)
    }
}

fn split_fields(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The fields the fake can render, in the order it renders them.
const ALL_FIELDS: [&str; 11] = [
    "summary",
    "issuetype",
    "project",
    "status",
    "priority",
    "labels",
    "resolution",
    "resolutiondate",
    "created",
    "updated",
    "description",
];

/// Which of [`ALL_FIELDS`] a request asked for.
/// The system fields asked for, and the custom fields (`customfield_…`, any name Jira does not
/// know as a system field) asked for by name, or all of the issue's with `*all`.
struct FieldSelection(Vec<&'static str>, CustomFields);

/// Which custom fields a request asked for.
enum CustomFields {
    Named(Vec<String>),
    All,
}

impl FieldSelection {
    /// Reads `fields`: names, `*all`, `*navigable`, `-name` exclusions; `default_all` when absent.
    fn new(requested: Option<&[String]>, default_all: bool) -> Self {
        let Some(requested) = requested.filter(|r| !r.is_empty()) else {
            return if default_all {
                Self(ALL_FIELDS.to_vec(), CustomFields::All)
            } else {
                Self(Vec::new(), CustomFields::Named(Vec::new()))
            };
        };
        let all = requested.iter().any(|f| f == "*all" || f == "*navigable");
        let wanted = |name: &str| {
            let excluded = requested.iter().any(|f| f.strip_prefix('-') == Some(name));
            !excluded && (all || requested.iter().any(|f| f == name))
        };
        let custom = if all {
            CustomFields::All
        } else {
            CustomFields::Named(
                requested
                    .iter()
                    .filter(|f| !f.starts_with('-') && !f.starts_with('*'))
                    .filter(|f| !ALL_FIELDS.contains(&f.as_str()))
                    .cloned()
                    .collect(),
            )
        };
        Self(
            ALL_FIELDS.iter().copied().filter(|f| wanted(f)).collect(),
            custom,
        )
    }

    /// Returns true if and only if nothing beyond `id`/`key` was asked.
    fn is_empty(&self) -> bool {
        self.0.is_empty() && matches!(&self.1, CustomFields::Named(n) if n.is_empty())
    }
}

async fn search_jql(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if !state.is_cloud() || !matches!(version.as_str(), "2" | "3") {
        return not_found(State(state), req).await;
    }
    let params = match SearchParams::read(&method, query.as_deref(), body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let jql = match Query::parse(&params.jql, state.config.user_time_zone, state.now()) {
        Ok(q) => q,
        Err(e) => return jira_error(400, &e.0),
    };
    let jql_hash = fnv1a(params.jql.as_bytes());
    let offset = match params.next_page_token.as_deref() {
        None | Some("") => 0,
        Some(token) => match decode_token(token, jql_hash) {
            Some(o) => o,
            None => return jira_error(400, "The provided next page token is invalid or expired."),
        },
    };
    // "Accepts max 50 ids" (OpenAPI, `SearchAndReconcileRequestBean.reconcileIssues`).
    if params.reconcile.len() > 50 {
        return jira_error(400, "reconcileIssues accepts at most 50 issue ids.");
    }
    let fault = req.extensions().get::<PageFault>().map(|f| f.0.clone());
    let fields = FieldSelection::new(params.fields.as_deref(), false);
    // Cloud serves up to 5000 ids a page, but far fewer full issues.
    let cap = if fields.is_empty() {
        5000
    } else {
        state.config.cloud_page_cap
    };
    let page_size = params.max_results.unwrap_or(50).clamp(1, cap.max(1) as i64) as usize;
    let (total, found) = state.search_page_reconciling(&jql, offset, page_size, &params.reconcile);
    let start = offset.min(total);
    let end = (start + page_size).min(total);
    let issues: Vec<Value> = found
        .iter()
        .map(|(id, issue)| {
            let mut out = render_issue(&state, &version, *id, issue, &fields);
            if params.expand.iter().any(|e| e == "changelog") {
                out["changelog"] = embedded_changelog(&state, issue);
            }
            out
        })
        .collect();
    let is_last = end >= total;
    let mut body = json!({ "issues": issues, "isLast": is_last });
    if !is_last {
        body["nextPageToken"] = Value::String(encode_token(end, jql_hash));
    }
    match fault {
        Some(Fault::EmptyPage) => {
            body = json!({
                "issues": [],
                "isLast": false,
                "nextPageToken": encode_token(start, jql_hash),
            });
        }
        Some(Fault::RepeatToken) if !is_last => {
            if let Some(token) = params.next_page_token.filter(|t| !t.is_empty()) {
                body["nextPageToken"] = Value::String(token);
            }
        }
        Some(Fault::EditAfter { key, at }) => state.edit(&key, at),
        _ => {}
    }
    json_response(200, &body)
}

/// Cloud's `POST /rest/api/3/search/approximate-count` (`{"jql"}` → `{"count"}`). The real one
/// is approximate; the fake's is exact.
async fn approximate_count(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if !state.is_cloud() || version != "3" {
        return not_found(State(state), req).await;
    }
    let Some(jql) = body
        .as_ref()
        .and_then(|b| b.get("jql"))
        .and_then(Value::as_str)
    else {
        return jira_error(400, "The JQL query is required.");
    };
    match Query::parse(jql, state.config.user_time_zone, state.now()) {
        Ok(q) => json_response(200, &json!({ "count": state.search_page(&q, 0, 0).0 })),
        Err(e) => jira_error(400, &e.0),
    }
}

async fn search_legacy(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if state.is_cloud() {
        if matches!(version.as_str(), "2" | "3" | "latest") {
            return jira_error(
                410,
                "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046",
            );
        }
        return not_found(State(state), req).await;
    }
    if !matches!(version.as_str(), "2" | "latest") {
        return not_found(State(state), req).await;
    }
    let params = match SearchParams::read(&method, query.as_deref(), body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let jql = match Query::parse(&params.jql, state.config.user_time_zone, state.now()) {
        Ok(q) => q,
        Err(e) => return jira_error(400, &e.0),
    };
    // An issue key or id the query names that does not exist: with `validateQuery=strict` (the
    // default) a 400, with `warn` a `warningMessages` entry and the rest of the search
    // (`SearchRequestBean.validateQuery` of Jira Data Center's REST API; the texts are Jira's
    // "An issue with key '…' does not exist for field 'key'.").
    let missing: Vec<String> = {
        let data = lock(&state.data);
        jql.referenced_issues()
            .into_iter()
            .filter(|r| {
                !data
                    .issues
                    .values()
                    .any(|(id, issue)| id.to_string() == *r || issue.key.eq_ignore_ascii_case(r))
            })
            .collect()
    };
    let warnings: Vec<String> = missing
        .iter()
        .map(|r| format!("An issue with key '{r}' does not exist for field 'id'."))
        .collect();
    match params.validate_query.as_deref() {
        Some("warn" | "none" | "false") => {}
        _ if !warnings.is_empty() => {
            return json_response(
                400,
                &json!({ "errorMessages": warnings, "warningMessages": [] }),
            );
        }
        _ => {}
    }
    let start_at = params.start_at.unwrap_or(0).max(0) as u64;
    let requested = params.max_results.unwrap_or(50).max(0) as u64;
    let max_results = requested.min(state.config.dc_page_cap as u64);
    let (found_total, found) = state.search_page(&jql, start_at as usize, max_results as usize);
    let total = found_total as u64;
    if let Some(window) = state.config.dc_max_result_window {
        let reaches = start_at + max_results.min(total.saturating_sub(start_at));
        if reaches > window || (start_at >= window && total > window) {
            return jira_error(
                state.config.dc_window_error_status,
                &format!(
                    "Search limit exceeded. We couldn't complete your search because it requests {} results which exceeded the search platform limit of {}. Try refining your query or contact your Jira administrator. Repeating the same search may not work.",
                    thousands(start_at + max_results),
                    thousands(window)
                ),
            );
        }
    }
    let fields = FieldSelection::new(params.fields.as_deref(), true);
    let mut issues: Vec<Value> = found
        .iter()
        .map(|(id, issue)| {
            let mut out = render_issue(&state, &version, *id, issue, &fields);
            if params.expand.iter().any(|e| e == "changelog") {
                out["changelog"] = embedded_changelog(&state, issue);
            }
            out
        })
        .collect();
    match req.extensions().get::<PageFault>().map(|f| f.0.clone()) {
        Some(Fault::EmptyPage) => issues.clear(),
        Some(Fault::EditAfter { key, at }) => state.edit(&key, at),
        _ => {}
    }
    json_response(
        200,
        &json!({
            "expand": "schema,names",
            "startAt": start_at,
            "maxResults": max_results,
            "total": total,
            "issues": issues,
            "warningMessages": if params.validate_query.as_deref() == Some("warn") { warnings } else { Vec::new() },
        }),
    )
}

/// Cloud `POST /rest/api/3/issue/bulkfetch` (`BulkFetchIssueRequestBean`: `issueIdsOrKeys`,
/// "up to 100 issues", `fields`, `expand` as a list) → `BulkIssueResults`: the issues found, "in
/// ascending `id` order", and `issueErrors`; issues "which aren't found or that the user doesn't
/// have permission to view won't be returned" in either (Atlassian's OpenAPI,
/// `swagger-v3.v3.json`). More than 100, or none: 400.
async fn bulk_fetch(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if !state.is_cloud() || version != "3" {
        return not_found(State(state), req).await;
    }
    let body = body.unwrap_or(Value::Null);
    let wanted: Vec<String> = body["issueIdsOrKeys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if wanted.is_empty() || wanted.len() > 100 {
        return jira_error(
            400,
            "Between 1 and 100 issue IDs or keys must be requested.",
        );
    }
    let requested: Option<Vec<String>> = body["fields"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    });
    let fields = FieldSelection::new(requested.as_deref(), true);
    let changelog = body["expand"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("changelog")));
    let mut found: Vec<(u64, FakeIssue)> = wanted.iter().filter_map(|w| state.find(w)).collect();
    found.sort_by_key(|(id, _)| *id);
    found.dedup_by_key(|(id, _)| *id);
    let issues: Vec<Value> = found
        .iter()
        .map(|(id, issue)| {
            let mut out = render_issue(&state, &version, *id, issue, &fields);
            if changelog {
                out["changelog"] = embedded_changelog(&state, issue);
            }
            out
        })
        .collect();
    json_response(200, &json!({ "issues": issues, "issueErrors": [] }))
}

async fn myself(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    let c = &state.config;
    let avatars = json!({
        "16x16": "https://avatar.example.invalid/SB.png?size=16",
        "24x24": "https://avatar.example.invalid/SB.png?size=24",
        "32x32": "https://avatar.example.invalid/SB.png?size=32",
        "48x48": "https://avatar.example.invalid/SB.png?size=48",
    });
    let body = if state.is_cloud() {
        json!({
            "self": state.api(&version, "user?accountId=5b10a2844c20165700ede21g"),
            "accountId": "5b10a2844c20165700ede21g",
            "accountType": "atlassian",
            "emailAddress": c.email_address,
            "avatarUrls": avatars,
            "displayName": c.display_name,
            "active": true,
            "timeZone": c.user_time_zone.name(),
            "locale": "en_US",
            "groups": { "size": 3, "items": [] },
            "applicationRoles": { "size": 1, "items": [] },
            "expand": "groups,applicationRoles",
        })
    } else {
        json!({
            "self": state.api(&version, "user?username=sync-bot"),
            "key": "JIRAUSER10100",
            "name": "sync-bot",
            "emailAddress": c.email_address,
            "avatarUrls": avatars,
            "displayName": c.display_name,
            "active": true,
            "deleted": false,
            "timeZone": c.user_time_zone.name(),
            "locale": "en_US",
            "groups": { "size": 2, "items": [] },
            "applicationRoles": { "size": 1, "items": [] },
            "expand": "groups,applicationRoles",
        })
    };
    json_response(200, &body)
}

async fn server_info(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    let (deployment, version_text, numbers, build) = if state.is_cloud() {
        ("Cloud", "1001.0.0-SNAPSHOT", json!([1001, 0, 0]), 100_282)
    } else {
        ("DataCenter", "10.3.2", json!([10, 3, 2]), 10_030_002)
    };
    json_response(
        200,
        &json!({
            "baseUrl": state.base_url.as_str().trim_end_matches('/'),
            "displayUrl": state.base_url.as_str().trim_end_matches('/'),
            "version": version_text,
            "versionNumbers": numbers,
            "deploymentType": deployment,
            "buildNumber": build,
            "buildDate": "2025-01-15T00:00:00.000+0000",
            "serverTime": state.timestamp(state.now()),
            "serverTimeZone": state.config.user_time_zone.name(),
            "scmInfo": "0000000000000000000000000000000000000000",
            "serverTitle": "Sandbox Jira",
            "defaultLocale": { "locale": "en_US" },
        }),
    )
}

impl JiraState {
    /// Cloud serves v2 and v3; Data Center only v2 (and `latest`).
    fn version_served(&self, version: &str) -> bool {
        match version {
            "2" | "latest" => true,
            "3" => self.is_cloud(),
            _ => false,
        }
    }
}

/// The name of a status category key, as Jira shows it.
pub(crate) fn status_category_name(key: &str) -> &'static str {
    match key {
        "new" => "To Do",
        "indeterminate" => "In Progress",
        "done" => "Done",
        _ => "No Category",
    }
}

fn status_category(key: &str) -> (u64, &'static str) {
    match key {
        "new" => (2, "blue-gray"),
        "indeterminate" => (4, "yellow"),
        "done" => (3, "green"),
        _ => (1, "medium-gray"),
    }
}

/// Renders an issue like Jira's search does: `id`, `key`, `self` always, `fields` as asked.
fn render_issue(
    state: &JiraState,
    version: &str,
    id: u64,
    issue: &FakeIssue,
    fields: &FieldSelection,
) -> Value {
    let mut out = json!({
        "expand": "operations,versionedRepresentations,editmeta,changelog,renderedFields",
        "id": id.to_string(),
        "self": state.api(version, &format!("issue/{id}")),
        "key": issue.key,
    });
    if fields.is_empty() {
        return out;
    }
    let mut f = serde_json::Map::new();
    for name in &fields.0 {
        let value = match *name {
            "summary" => json!(issue.summary),
            "issuetype" => json!({
                "self": state.api(version, "issuetype/10004"),
                "id": "10004",
                "description": "",
                "name": issue.issue_type,
                "subtask": false,
            }),
            "project" => json!({
                "self": state.api(version, &format!("project/{}", issue.project)),
                "id": "10000",
                "key": issue.project,
                "name": issue.project,
            }),
            "status" => {
                let (cat_id, color) = status_category(&issue.status_category);
                json!({
                    "self": state.api(version, &format!("status/{}", status_id(&issue.status))),
                    "description": "",
                    "name": issue.status,
                    "id": status_id(&issue.status),
                    "statusCategory": {
                        "self": state.api(version, &format!("statuscategory/{cat_id}")),
                        "id": cat_id,
                        "key": issue.status_category,
                        "colorName": color,
                        "name": status_category_name(&issue.status_category),
                    },
                })
            }
            "priority" => match &issue.priority {
                Some(p) => json!({
                    "self": state.api(version, "priority/3"),
                    "name": p,
                    "id": "3",
                }),
                None => Value::Null,
            },
            "labels" => json!(issue.labels),
            "resolution" => match issue.resolutiondate {
                Some(_) => json!({
                    "self": state.api(version, "resolution/10000"),
                    "id": "10000",
                    "description": "Work has been completed on this issue.",
                    "name": "Done",
                }),
                None => Value::Null,
            },
            "resolutiondate" => match issue.resolutiondate {
                Some(t) => json!(state.timestamp(t)),
                None => Value::Null,
            },
            "created" => json!(state.timestamp(issue.created)),
            "updated" => json!(state.timestamp(issue.updated)),
            "description" => render_description(state.is_cloud() && version == "3", issue),
            _ => continue,
        };
        f.insert((*name).to_owned(), value);
    }
    // A custom field asked for is always in `fields`, `null` while empty, as Jira renders it.
    match &fields.1 {
        CustomFields::All => f.extend(issue.fields.iter().map(|(k, v)| (k.clone(), v.clone()))),
        CustomFields::Named(names) => {
            for name in names {
                f.insert(
                    name.clone(),
                    issue.fields.get(name).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }
    out["fields"] = Value::Object(f);
    out
}

fn render_description(adf: bool, issue: &FakeIssue) -> Value {
    match (adf, &issue.description_adf, &issue.description) {
        (true, Some(doc), _) => doc.clone(),
        (true, None, Some(text)) => text_to_adf(text),
        (false, _, Some(text)) => json!(text),
        (false, Some(doc), None) => json!(adf_plain_text(doc)),
        (_, None, None) => Value::Null,
    }
}

/// An ADF document whose paragraphs are `text` split on blank lines; single line breaks become
/// `hardBreak` nodes, as Jira's editor stores them.
pub(crate) fn text_to_adf(text: &str) -> Value {
    let normalized = text.replace("\r\n", "\n");
    let paragraphs: Vec<Value> = normalized
        .split("\n\n")
        .map(|p| p.trim_matches('\n'))
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let mut content = Vec::new();
            for (i, line) in p.split('\n').enumerate() {
                if i > 0 {
                    content.push(json!({ "type": "hardBreak" }));
                }
                if !line.is_empty() {
                    content.push(json!({ "type": "text", "text": line }));
                }
            }
            json!({ "type": "paragraph", "content": content })
        })
        .collect();
    json!({ "type": "doc", "version": 1, "content": paragraphs })
}

/// The text of an ADF document, paragraphs separated by blank lines (what v2 shows of it).
fn adf_plain_text(doc: &Value) -> String {
    fn walk(node: &Value, out: &mut String) {
        match node["type"].as_str() {
            Some("text") => out.push_str(node["text"].as_str().unwrap_or_default()),
            Some("hardBreak") => out.push('\n'),
            _ => {
                if let Some(children) = node["content"].as_array() {
                    for child in children {
                        walk(child, out);
                    }
                }
            }
        }
    }
    let blocks: Vec<String> = doc["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| {
                    let mut s = String::new();
                    walk(b, &mut s);
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    blocks.join("\n\n")
}

/// One changelog entry as Jira renders it (`Changelog`: `id`, `author`, `created`, `items`).
fn render_history(state: &JiraState, n: usize, h: &FakeHistory) -> Value {
    let items: Vec<Value> = h
        .items
        .iter()
        .map(|i| {
            json!({
                "field": i.field,
                "fieldtype": "jira",
                "fieldId": i.field,
                "from": i.from,
                "fromString": i.from_string,
                "to": i.to,
                "toString": i.to_string,
            })
        })
        .collect();
    json!({
        "id": (10_000 + n).to_string(),
        "author": { "displayName": "Someone", "active": true },
        "created": state.timestamp(h.at),
        "items": items,
    })
}

/// `IssueBean.changelog` (a `PageOfChangelogs`: `startAt`, `maxResults`, `total`, `histories`)
/// as `expand=changelog` embeds it: on Cloud the most recent [`FakeJiraConfig::cloud_changelog_cap`]
/// entries, newest first; on Data Center every entry, oldest first.
fn embedded_changelog(state: &JiraState, issue: &FakeIssue) -> Value {
    let all: Vec<Value> = issue
        .history
        .iter()
        .enumerate()
        .map(|(n, h)| render_history(state, n, h))
        .collect();
    let total = all.len();
    let histories: Vec<Value> = if state.is_cloud() {
        all.into_iter()
            .rev()
            .take(state.config.cloud_changelog_cap)
            .collect()
    } else {
        all
    };
    json!({
        "startAt": 0,
        "maxResults": histories.len(),
        "total": total,
        "histories": histories,
    })
}

impl JiraState {
    /// The issue whose id or key is `id_or_key`, with its id.
    fn find(&self, id_or_key: &str) -> Option<(u64, FakeIssue)> {
        let data = lock(&self.data);
        data.issues
            .values()
            .find(|(id, issue)| id.to_string() == id_or_key || issue.key == id_or_key)
            .cloned()
    }
}

/// "Issue does not exist or you do not have permission to see it.": Jira's 404 for an issue
/// that is gone (deleted) or hidden (`GET /rest/api/3/issue/{issueIdOrKey}`: "404 Returned if
/// the issue is not found or the user does not have permission to view it").
fn no_such_issue() -> Response {
    jira_error(
        404,
        "Issue does not exist or you do not have permission to see it.",
    )
}

/// `GET /rest/api/{2,3}/issue/{issueIdOrKey}` with `fields` and `expand=changelog`: one
/// `IssueBean`, or 404.
async fn get_issue(
    State(state): State<Arc<JiraState>>,
    Path((version, id_or_key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    let Some((id, issue)) = state.find(&id_or_key) else {
        return no_such_issue();
    };
    let pairs = query_pairs(query.as_deref());
    let requested: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| split_fields(v))
        .collect();
    let fields = FieldSelection::new(Some(&requested), true);
    let mut out = render_issue(&state, &version, id, &issue, &fields);
    let expand = pairs
        .iter()
        .filter(|(k, _)| k == "expand")
        .any(|(_, v)| split_fields(v).iter().any(|e| e == "changelog"));
    if expand {
        out["changelog"] = embedded_changelog(&state, &issue);
    }
    json_response(200, &out)
}

/// Cloud `GET /rest/api/3/issue/{issueIdOrKey}/changelog`: a `PageBeanChangelog` (`startAt`,
/// `maxResults`, `total`, `isLast`, `values`), "sorted by date, starting from the oldest"; 404
/// for an issue that is not there.
async fn get_changelog(
    State(state): State<Arc<JiraState>>,
    Path((version, id_or_key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request<Body>,
) -> Response {
    if !state.is_cloud() || !matches!(version.as_str(), "2" | "3") {
        return not_found(State(state), req).await;
    }
    let Some((_, issue)) = state.find(&id_or_key) else {
        return no_such_issue();
    };
    let pairs = query_pairs(query.as_deref());
    let number = |name: &str, default: usize| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let start = number("startAt", 0);
    let max = number("maxResults", 100).clamp(1, 100);
    let all: Vec<Value> = issue
        .history
        .iter()
        .enumerate()
        .map(|(n, h)| render_history(&state, n, h))
        .collect();
    let total = all.len();
    let values: Vec<Value> = all.into_iter().skip(start).take(max).collect();
    json_response(
        200,
        &json!({
            "self": state.api(&version, &format!("issue/{id_or_key}/changelog?startAt={start}&maxResults={max}")),
            "startAt": start,
            "maxResults": max,
            "total": total,
            "isLast": start + values.len() >= total,
            "values": values,
        }),
    )
}

/// `GET /rest/api/{2,3}/status`: every status (`StatusDetails`: `id`, `name`,
/// `statusCategory`), the default ones and those the issues use.
async fn statuses(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    let mut all: BTreeMap<String, (String, String)> = KNOWN_STATUSES
        .iter()
        .map(|(id, name, cat)| ((*id).to_owned(), ((*name).to_owned(), (*cat).to_owned())))
        .collect();
    for (_, issue) in lock(&state.data).issues.values() {
        for (name, cat) in &issue.categories {
            all.insert(status_id(name), (name.clone(), cat.clone()));
        }
        all.insert(
            status_id(&issue.status),
            (issue.status.clone(), issue.status_category.clone()),
        );
    }
    let list: Vec<Value> = all
        .into_iter()
        .map(|(id, (name, cat))| {
            let (cat_id, color) = status_category(&cat);
            json!({
                "self": state.api(&version, &format!("status/{id}")),
                "description": "",
                "iconUrl": "",
                "name": name,
                "id": id,
                "statusCategory": {
                    "self": state.api(&version, &format!("statuscategory/{cat_id}")),
                    "id": cat_id,
                    "key": cat,
                    "colorName": color,
                    "name": status_category_name(&cat),
                },
            })
        })
        .collect();
    json_response(200, &Value::Array(list))
}

/// FNV-1a, so tokens are stable across processes (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode_token(offset: usize, jql_hash: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{offset}:{jql_hash:016x}"))
}

/// The offset in a token, if the token is ours and was issued for the same JQL.
fn decode_token(token: &str, jql_hash: u64) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != "v1" {
        return None;
    }
    let offset = parts.next()?.parse().ok()?;
    let hash = u64::from_str_radix(parts.next()?, 16).ok()?;
    (hash == jql_hash && parts.next().is_none()).then_some(offset)
}

/// `10100` → `10,100`, as the real error text writes numbers.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 2, 15, h, m, 0).unwrap()
    }

    async fn cloud() -> FakeJira {
        FakeJira::start(FakeJiraConfig::cloud()).await.unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn get_json(
        jira: &FakeJira,
        path_and_query: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = jira.base_url().join(path_and_query).unwrap();
        let resp = client()
            .get(url)
            .header("Authorization", jira.authorization().unwrap())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Cloud pages 250 issues as 100 + 100 + 50, chained by `nextPageToken`, ending on `isLast`.
    #[tokio::test]
    async fn cloud_pages_with_next_page_token() {
        let jira = cloud().await;
        for n in 1..=250 {
            jira.insert(FakeIssue::new(
                &format!("OPS-{n}"),
                "s",
                t(0, 0) + chrono::Duration::minutes(n),
            ));
        }
        let mut token: Option<String> = None;
        let mut sizes = Vec::new();
        let mut keys = Vec::new();
        loop {
            let mut body = json!({
                "jql": "project = OPS ORDER BY updated ASC, key ASC",
                "fields": ["summary", "updated"],
                "maxResults": 500,
            });
            if let Some(tok) = &token {
                body["nextPageToken"] = json!(tok);
            }
            let resp = client()
                .post(jira.base_url().join("rest/api/3/search/jql").unwrap())
                .header("Authorization", jira.authorization().unwrap())
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "search must succeed");
            let page: Value = resp.json().await.unwrap();
            assert!(page.get("total").is_none(), "enhanced search has no total");
            let issues = page["issues"].as_array().unwrap();
            sizes.push(issues.len());
            keys.extend(issues.iter().map(|i| i["key"].as_str().unwrap().to_owned()));
            if page["isLast"] == json!(true) {
                assert!(
                    page.get("nextPageToken").is_none(),
                    "the last page carries no token"
                );
                break;
            }
            token = Some(
                page["nextPageToken"]
                    .as_str()
                    .expect("a non-last page has a token")
                    .to_owned(),
            );
        }
        assert_eq!(
            sizes,
            [100, 100, 50],
            "pages are capped at 100 when fields are requested"
        );
        let expected: Vec<String> = (1..=250).map(|n| format!("OPS-{n}")).collect();
        assert_eq!(keys, expected, "every issue once, in updated order");
    }

    /// Without `fields`, Cloud returns only ids and keys.
    #[tokio::test]
    async fn cloud_default_fields_are_ids_only() {
        let jira = cloud().await;
        jira.insert(FakeIssue::new("OPS-1", "s", t(1, 0)));
        let (status, _, body) = get_json(&jira, "rest/api/3/search/jql?jql=project%3DOPS").await;
        assert_eq!(status, 200, "search must succeed");
        let issue = &body["issues"][0];
        assert_eq!(issue["key"], "OPS-1", "the key is always there");
        assert!(issue.get("fields").is_none(), "no fields unless asked");
    }

    /// Fields render with Jira's offset format and Cloud v3 serves the description as ADF.
    #[tokio::test]
    async fn fields_render_like_jira() {
        let jira = FakeJira::start(FakeJiraConfig {
            response_offset: FixedOffset::east_opt(3600).unwrap(),
            ..FakeJiraConfig::cloud()
        })
        .await
        .unwrap();
        let created = Utc.with_ymd_and_hms(2025, 2, 15, 8, 45, 32).unwrap()
            + chrono::Duration::milliseconds(700);
        jira.insert(
            FakeIssue::new("OPS-7", "Checkout down", created)
                .with_description("first\nline\n\nsecond"),
        );
        let (_, _, v3) = get_json(&jira, "rest/api/3/search/jql?jql=&fields=*all").await;
        let fields = &v3["issues"][0]["fields"];
        assert_eq!(
            fields["created"], "2025-02-15T09:45:32.700+0100",
            "offset without colon, millis"
        );
        assert_eq!(
            fields["resolutiondate"],
            Value::Null,
            "open issues have no resolution date"
        );
        assert_eq!(
            fields["status"]["statusCategory"]["key"], "new",
            "status category key"
        );
        assert_eq!(
            fields["project"]["key"], "OPS",
            "project derived from the key"
        );
        assert_eq!(
            fields["description"]["type"], "doc",
            "v3 descriptions are ADF"
        );
        assert_eq!(
            fields["description"]["content"].as_array().unwrap().len(),
            2,
            "one paragraph per blank-line block"
        );
        let (_, _, v2) = get_json(&jira, "rest/api/2/search/jql?jql=&fields=description").await;
        assert_eq!(
            v2["issues"][0]["fields"]["description"], "first\nline\n\nsecond",
            "v2 serves the text"
        );
    }

    /// Data Center caps `maxResults` to its limit and echoes the capped value with a total.
    #[tokio::test]
    async fn data_center_caps_page_size() {
        let jira = FakeJira::start(FakeJiraConfig::data_center())
            .await
            .unwrap();
        for n in 1..=120 {
            jira.insert(FakeIssue::new(&format!("OPS-{n}"), "s", t(0, 0)));
        }
        let (status, _, body) = get_json(
            &jira,
            "rest/api/2/search?jql=order%20by%20key&maxResults=1000&startAt=100",
        )
        .await;
        assert_eq!(status, 200, "search must succeed");
        assert_eq!(
            body["maxResults"], 50,
            "the server reports the capped page size"
        );
        assert_eq!(body["total"], 120, "Data Center reports the total");
        assert_eq!(body["startAt"], 100, "startAt is echoed");
        assert_eq!(
            body["issues"].as_array().unwrap().len(),
            20,
            "the rest after 100"
        );
        assert_eq!(body["issues"][0]["key"], "OPS-101", "natural key order");
        assert!(
            body["issues"][0]["fields"]["summary"].is_string(),
            "DC returns navigable fields by default"
        );
    }

    /// Paging past the max result window fails with Jira's "Search limit exceeded".
    #[tokio::test]
    async fn data_center_result_window() {
        let jira = FakeJira::start(FakeJiraConfig {
            dc_max_result_window: Some(100),
            ..FakeJiraConfig::data_center()
        })
        .await
        .unwrap();
        for n in 1..=150 {
            jira.insert(FakeIssue::new(&format!("OPS-{n}"), "s", t(0, 0)));
        }
        let (status, _, _) = get_json(&jira, "rest/api/2/search?jql=&startAt=50").await;
        assert_eq!(status, 200, "results 51..100 are inside the window");
        let (status, _, body) = get_json(&jira, "rest/api/2/search?jql=&startAt=100").await;
        assert_eq!(status, 400, "results past 100 are outside the window");
        let message = body["errorMessages"][0].as_str().unwrap();
        assert!(
            message.starts_with("Search limit exceeded") && message.contains("limit of 100"),
            "the message names the limit: {message}"
        );
    }

    /// A JQL date literal is read in the user's profile zone (+05:30 here), at minute precision.
    #[tokio::test]
    async fn jql_dates_use_user_zone() {
        let jira = FakeJira::start(FakeJiraConfig {
            user_time_zone: "Asia/Kolkata".parse().unwrap(),
            ..FakeJiraConfig::cloud()
        })
        .await
        .unwrap();
        // 04:29 and 04:31 UTC are 09:59 and 10:01 in Kolkata.
        jira.insert(FakeIssue::new("OPS-1", "early", t(4, 29)));
        jira.insert(FakeIssue::new("OPS-2", "late", t(4, 31)));
        let jql = url::form_urlencoded::byte_serialize(b"updated >= \"2025-02-15 10:00\"")
            .collect::<String>();
        let (status, _, body) = get_json(&jira, &format!("rest/api/3/search/jql?jql={jql}")).await;
        assert_eq!(status, 200, "search must succeed");
        let keys: Vec<&str> = body["issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["OPS-2"],
            "10:00 Kolkata is 04:30 UTC, so only the later issue matches"
        );
        let (_, _, me) = get_json(&jira, "rest/api/3/myself").await;
        assert_eq!(
            me["timeZone"], "Asia/Kolkata",
            "/myself reports the zone used"
        );
    }

    /// Bad JQL answers 400 in Jira's error format.
    #[tokio::test]
    async fn jql_errors_are_400() {
        let jira = cloud().await;
        let (status, _, body) = get_json(&jira, "rest/api/3/search/jql?jql=foo%3Dbar").await;
        assert_eq!(status, 400, "unknown field");
        assert_eq!(
            body["errorMessages"][0],
            "Field 'foo' does not exist or you do not have permission to view it.",
            "Jira's message"
        );
        assert_eq!(body["errors"], json!({}), "Jira's envelope");
    }

    /// Cloud's removed `/search` answers 410 with Atlassian's migration message; DC has no v3.
    #[tokio::test]
    async fn legacy_search_is_gone_on_cloud() {
        let jira = cloud().await;
        for path in ["rest/api/3/search?jql=", "rest/api/2/search?jql="] {
            let (status, _, body) = get_json(&jira, path).await;
            assert_eq!(status, 410, "{path} was removed on Cloud");
            assert!(
                body["errorMessages"][0]
                    .as_str()
                    .unwrap()
                    .contains("/rest/api/3/search/jql"),
                "the message points to the new API"
            );
        }
        let dc = FakeJira::start(FakeJiraConfig::data_center())
            .await
            .unwrap();
        let (status, _, _) = get_json(&dc, "rest/api/3/search/jql?jql=").await;
        assert_eq!(status, 404, "Data Center has no v3 search");
    }

    /// Missing or wrong credentials answer 401 in Jira's format.
    #[tokio::test]
    async fn wrong_credentials_are_401() {
        let jira = cloud().await;
        let url = jira.base_url().join("rest/api/3/myself").unwrap();
        for auth in [None, Some(FakeJiraConfig::basic("x@example.com", "nope"))] {
            let mut req = client().get(url.clone());
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "credentials {auth:?} must be refused");
            let body: Value = resp.json().await.unwrap();
            assert!(
                body["errorMessages"][0]
                    .as_str()
                    .unwrap()
                    .contains("not authenticated"),
                "Jira's message"
            );
        }
        let recorded = jira.requests();
        assert_eq!(recorded.len(), 2, "both attempts are logged");
        assert!(
            !recorded[0].authorization_present && recorded[1].authorization_present,
            "auth presence is logged"
        );
        assert_eq!(recorded[1].status, Some(401), "the status is logged");
    }

    /// A rate-limit fault answers 429 with Jira Cloud's headers, once, then service resumes.
    #[tokio::test]
    async fn rate_limit_fault() {
        let jira = cloud().await;
        jira.push_fault(
            FaultTarget::Search,
            Fault::RateLimited {
                retry_after_secs: Some(7),
            },
        );
        let (status, _, _) = get_json(&jira, "rest/api/3/myself").await;
        assert_eq!(status, 200, "a search fault leaves /myself alone");
        let (status, headers, _) = get_json(&jira, "rest/api/3/search/jql?jql=").await;
        assert_eq!(status, 429, "the fault applies to the next search");
        assert_eq!(headers["retry-after"], "7", "Retry-After in seconds");
        assert_eq!(
            headers["ratelimit-reason"], "jira-burst-based",
            "the reason header"
        );
        assert_eq!(headers["x-ratelimit-remaining"], "0", "nothing remains");
        assert!(
            headers.contains_key("x-ratelimit-limit") && headers.contains_key("x-ratelimit-reset"),
            "limit and reset headers"
        );
        let (status, _, _) = get_json(&jira, "rest/api/3/search/jql?jql=").await;
        assert_eq!(status, 200, "the fault is consumed");
    }

    /// A held key keeps its old version in search until released; unindexed keys are invisible.
    #[tokio::test]
    async fn index_lag() {
        let jira = cloud().await;
        jira.insert(FakeIssue::new("OPS-1", "s", t(1, 0)));
        jira.hold_index("OPS-1");
        jira.hold_index("OPS-2");
        jira.resolve("OPS-1", t(2, 0)).unwrap();
        jira.insert(FakeIssue::new("OPS-2", "s", t(2, 0)));
        let search = "rest/api/3/search/jql?jql=&fields=resolutiondate";
        let (_, _, body) = get_json(&jira, search).await;
        let issues = body["issues"].as_array().unwrap();
        assert_eq!(issues.len(), 1, "OPS-2 is not indexed yet");
        assert_eq!(
            issues[0]["fields"]["resolutiondate"],
            Value::Null,
            "OPS-1 shows its old version"
        );
        assert!(
            jira.get("OPS-1").unwrap().resolutiondate.is_some(),
            "the change is stored"
        );
        jira.release_all();
        let (_, _, body) = get_json(&jira, search).await;
        assert_eq!(
            body["issues"].as_array().unwrap().len(),
            2,
            "both are visible after release"
        );
        assert!(
            body["issues"][0]["fields"]["resolutiondate"].is_string(),
            "and current"
        );
    }

    /// With an index lag, a change stays out of search until the lag passes, except for an
    /// issue named in `reconcileIssues`, which is searched as it is now; more than 50 are
    /// refused.
    #[tokio::test]
    async fn reconcile_issues_sees_through_the_index_lag() {
        let jira = FakeJira::start(FakeJiraConfig {
            index_lag: Duration::from_secs(600),
            ..FakeJiraConfig::cloud()
        })
        .await
        .unwrap();
        jira.insert(FakeIssue::new("OPS-1", "s", t(1, 0)));
        let id = jira.get("OPS-1").unwrap().id.unwrap();
        let search = "rest/api/3/search/jql?jql=project%20%3D%20OPS&fields=summary";
        let (_, _, body) = get_json(&jira, search).await;
        assert_eq!(body["issues"], json!([]), "not indexed yet: {body}");
        let (_, _, body) = get_json(&jira, &format!("{search}&reconcileIssues={id}")).await;
        assert_eq!(body["issues"][0]["key"], "OPS-1", "{body}");
        let many: Vec<String> = (1..=51).map(|n| n.to_string()).collect();
        let (status, _, _) = get_json(
            &jira,
            &format!("{search}&reconcileIssues={}", many.join(",")),
        )
        .await;
        assert_eq!(status, 400);
    }

    /// `shutdown()` stops the server: new connections fail.
    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let jira = cloud().await;
        let (status, _, _) = get_json(&jira, "rest/api/3/myself").await;
        assert_eq!(status, 200, "serving before shutdown");
        let other_handle = jira.clone();
        jira.shutdown();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            client()
                .get(other_handle.base_url().join("rest/api/3/myself").unwrap())
                .send(),
        )
        .await
        .expect("a stopped server refuses promptly");
        assert!(
            result.is_err(),
            "no server answers after shutdown, got {result:?}"
        );
    }

    /// A token issued for one query is refused for another.
    #[test]
    fn tokens_are_bound_to_the_query() {
        let token = encode_token(100, fnv1a(b"project = A"));
        assert_eq!(
            decode_token(&token, fnv1a(b"project = A")),
            Some(100),
            "round trip"
        );
        assert_eq!(
            decode_token(&token, fnv1a(b"project = B")),
            None,
            "another query"
        );
        assert_eq!(decode_token("garbage!", 0), None, "not a token");
    }

    /// Large numbers are written with thousands separators.
    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(10_100), "10,100", "as in Jira's message");
        assert_eq!(thousands(100), "100", "no separator below 1000");
    }
}
