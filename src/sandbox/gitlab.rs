//! The fake GitLab: the Issues API (create, update, get, list with search and offset paging, and
//! across projects: `GET /issues`, the administrators' `GET /issues/:id`),
//! `/user`, `/projects/:id`, environments, `/version`, the HTTP alert integration, GitLab.com's
//! rate limits, and the faults an at-least-once client must survive (an answer lost after the
//! write was committed, a dropped connection, a hang).
//!
//! It keeps GitLab's rights model where it matters for timestamps: `created_at`, `updated_at` and
//! `iid` are honoured only for project Owners and admins and silently ignored for everyone else.
//!
//! It also models what people and GitLab itself do to the objects the sync wrote: `search` is
//! PostgreSQL full-text search (`super::fts`), quick actions in descriptions run and vanish
//! (`super::gitlab_quick_actions`), label changes are kept as resource label events with their
//! times and scoped labels replace each other (`gitlab/labels.rs`), projects are renamed (old paths redirect until taken),
//! issues are moved, deleted or written by other users, alerts are resolved by hand. Every
//! behaviour names its GitLab source (a path in gitlabhq/gitlabhq) where it is modelled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::gitlab_quick_actions::{self, Command};
pub use dora::{DailyMetrics, FakeEnvironment};
use dora::{DoraState, IncidentEvent};

mod dora;
mod labels;

#[path = "gitlab_graphql.rs"]
mod graphql;
use super::{
    HandleInner, Listener, ParsedBody, RecordedRequest, Recorder, Reply, ShutdownGuard, Unanswered,
    fts, json_response, lock, query_pairs, raw_response, read_body,
};
use crate::domain::RemoteState;
pub use graphql::FakeTimelineEvent;
pub use labels::FakeLabelEvent;

/// GitLab's access levels.
pub mod access {
    pub const GUEST: u32 = 10;
    pub const REPORTER: u32 = 20;
    pub const DEVELOPER: u32 = 30;
    pub const MAINTAINER: u32 = 40;
    pub const OWNER: u32 = 50;
}

/// A GitLab account a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUser {
    pub id: u64,
    pub username: String,
    pub name: String,
    /// Instance administrators may backdate anywhere.
    pub admin: bool,
}

/// A project and who may do what in it.
#[derive(Clone, Debug)]
pub struct FakeProject {
    pub id: u64,
    pub path_with_namespace: String,
    /// `(user id, access level)`: 10 Guest, 20 Reporter, 30 Developer, 40 Maintainer, 50 Owner.
    pub members: Vec<(u64, u32)>,
    /// `(name, tier)`, e.g. `("production", "production")`.
    pub environments: Vec<(String, String)>,
    /// HTTP alert integrations: `(endpoint name, numeric id, authorization key)`. The URL is
    /// `<base>/<path_with_namespace>/-/alerts/notify/<name>/<id>.json`.
    pub alert_integrations: Vec<(String, u64, String)>,
    /// Whether a recovery alert closes the alert's incident (the project's alert setting).
    pub auto_close_incident: bool,
}

/// How the fake GitLab behaves.
#[derive(Clone, Debug)]
pub struct FakeGitLabConfig {
    /// Accepted tokens (as `PRIVATE-TOKEN` or `Authorization: Bearer`) and their users.
    pub tokens: Vec<(String, FakeUser)>,
    pub projects: Vec<FakeProject>,
    /// Added before every answer.
    pub latency: Duration,
    /// A token bucket over all API requests: excess requests get 429 (GitLab.com: 2,000).
    pub requests_per_minute: Option<u32>,
    /// A token bucket over requests with a `search` parameter (GitLab.com: 10).
    pub search_per_minute: Option<u32>,
    /// A reverse proxy's `client_max_body_size`: a larger request body gets nginx's 413 page
    /// before GitLab (or its authentication) sees it. `None`: no limit.
    pub max_body_bytes: Option<usize>,
    /// Loses the answer to this share of writes (issue create and update, alert posts) after
    /// GitLab applied them, as an at-least-once network does: a proxy that times out while
    /// GitLab commits answers 502, or the connection drops (alternately). GitLab has no
    /// idempotency key for these endpoints (`lib/api/issues.rb`), so a client cannot tell
    /// applied from not. `None`: every answer arrives.
    pub lost_answers: Option<LostAnswers>,
}

/// A deterministic share of writes whose answer is lost after they were applied.
#[derive(Clone, Copy, Debug)]
pub struct LostAnswers {
    /// Out of 100 writes.
    pub percent: u8,
    /// Seeds the choice, so a run can be repeated.
    pub seed: u64,
}

impl FakeGitLabConfig {
    /// The Owner token of the default configuration.
    pub const DEFAULT_TOKEN: &'static str = "glpat-sandbox-owner";
    /// The default project's path.
    pub const DEFAULT_PROJECT: &'static str = "acme/ops";
    /// The default project's alert integration name, id and key.
    pub const DEFAULT_ALERT_NAME: &'static str = "jira";
    pub const DEFAULT_ALERT_ID: u64 = 1;
    pub const DEFAULT_ALERT_KEY: &'static str = "sandbox-alert-key";
}

impl Default for FakeGitLabConfig {
    /// One Owner (`sync-bot`, id 1, token [`Self::DEFAULT_TOKEN`]) of one project `acme/ops`
    /// (id 1) with a `production` environment and an alert integration that auto-closes
    /// incidents; no latency, no rate limits.
    fn default() -> Self {
        Self {
            tokens: vec![(
                Self::DEFAULT_TOKEN.to_owned(),
                FakeUser {
                    id: 1,
                    username: "sync-bot".to_owned(),
                    name: "Sync Bot".to_owned(),
                    admin: false,
                },
            )],
            projects: vec![FakeProject {
                id: 1,
                path_with_namespace: Self::DEFAULT_PROJECT.to_owned(),
                members: vec![(1, access::OWNER)],
                environments: vec![("production".to_owned(), "production".to_owned())],
                alert_integrations: vec![(
                    Self::DEFAULT_ALERT_NAME.to_owned(),
                    Self::DEFAULT_ALERT_ID,
                    Self::DEFAULT_ALERT_KEY.to_owned(),
                )],
                auto_close_incident: true,
            }],
            latency: Duration::ZERO,
            requests_per_minute: None,
            search_per_minute: None,
            max_body_bytes: None,
            lost_answers: None,
        }
    }
}

/// An issue or incident as the fake stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeGitLabIssue {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub title: String,
    pub description: Option<String>,
    pub state: RemoteState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Sorted, as GitLab returns them.
    pub labels: Vec<String>,
    /// `issue`, `incident`, `test_case` or `task`.
    pub issue_type: String,
    pub confidential: bool,
    /// `UNKNOWN`, `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`; a new issue's is `UNKNOWN` until one is
    /// set (`Issue#severity` answers `IssuableSeverity::DEFAULT` without an
    /// `issuable_severity` row, `app/models/issue.rb`).
    pub severity: String,
    pub author_id: u64,
    pub closed_by_id: Option<u64>,
    /// GitLab Free allows one assignee (`/assign` keeps the first user).
    pub assignee_ids: Vec<u64>,
    pub due_date: Option<NaiveDate>,
    /// The global id of the copy, once the issue was moved to another project.
    pub moved_to_id: Option<u64>,
}

/// An alert's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertStatus {
    Triggered,
    Resolved,
}

/// An alert the HTTP integration received.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeAlert {
    pub project_id: u64,
    pub iid: u64,
    pub title: String,
    /// The payload's `fingerprint` as sent (a string, or an array joined with commas).
    pub fingerprint: Option<String>,
    pub status: AlertStatus,
    /// How many firing payloads were grouped into it.
    pub events: u64,
    /// Every payload that reached it, in order (the resolving one included).
    pub payloads: Vec<Value>,
    /// The incident GitLab created for it.
    pub incident_iid: Option<u64>,
    /// When the first payload arrived.
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// `POST /projects/:id/issues`.
    CreateIssue,
    /// `PUT /projects/:id/issues/:iid`.
    UpdateIssue,
    /// `GET /projects/:id/issues`.
    ListIssues,
    /// `POST <project>/-/alerts/notify/...`.
    Alert,
    Any,
}

/// A misbehaviour for the next matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with GitLab's `RateLimit-*` headers; `Retry-After` only when `Some`.
    RateLimited { retry_after_secs: Option<u64> },
    /// Answer `status` with `body` (JSON when it parses, HTML otherwise) without processing.
    Status { status: u16, body: String },
    /// Process the request (the write happens), then answer `status` with a proxy's HTML page.
    CommitThenStatus(u16),
    /// Process the request, then break the connection before a complete answer.
    CommitThenDrop,
    /// Process the request, notify the test, then never answer (until shutdown).
    CommitThenHang(Arc<Notify>),
    /// Notify the second `Notify` (if any) on arrival, wait for the first, then process normally.
    HoldUntil(Arc<Notify>, Option<Arc<Notify>>),
    /// Wait, then process normally.
    Delay(Duration),
}

/// A running fake GitLab. Clones share the server; it stops with [`FakeGitLab::shutdown`] or
/// when the last clone is dropped.
#[derive(Clone)]
pub struct FakeGitLab {
    inner: Arc<HandleInner<GitLabState>>,
}

struct GitLabState {
    base_url: url::Url,
    latency: Duration,
    data: Mutex<GitLabData>,
    faults: Mutex<VecDeque<(FaultTarget, Fault)>>,
    recorder: Recorder,
    api_bucket: Option<Mutex<Bucket>>,
    search_bucket: Option<Mutex<Bucket>>,
    max_body_bytes: Option<usize>,
    /// The share of write answers to lose, and the generator's state.
    lost_answers: Option<(u8, Mutex<u64>)>,
    shutdown: CancellationToken,
}

struct GitLabData {
    tokens: Vec<(String, FakeUser)>,
    projects: Vec<ProjectState>,
    next_issue_id: u64,
    /// The last label event id given.
    next_label_event_id: u64,
    /// Old project paths and the project they lead to (GitLab's `RedirectRoute`).
    redirects: Vec<(String, u64)>,
    /// Environments and per-day DORA rows ([`dora`]).
    dora: DoraState,
    /// Incident timeline events and tags (`graphql`).
    timeline: graphql::Timeline,
}

struct ProjectState {
    cfg: FakeProject,
    issues: BTreeMap<u64, FakeGitLabIssue>,
    next_iid: u64,
    alerts: Vec<FakeAlert>,
    /// The project's labels: created when first used through the API (`labels`, `add_labels`)
    /// or by [`FakeGitLab::create_label`]; `/label` only finds existing ones.
    labels: BTreeSet<String>,
    /// Every label added to or removed from its issues (`labels`).
    label_events: Vec<FakeLabelEvent>,
}

impl ProjectState {
    fn new(cfg: FakeProject) -> Self {
        Self {
            cfg,
            issues: BTreeMap::new(),
            next_iid: 1,
            alerts: Vec::new(),
            labels: BTreeSet::new(),
            label_events: Vec::new(),
        }
    }
}

/// The user GitLab files alert incidents as.
const ALERT_BOT_ID: u64 = 9_999;

impl FakeGitLab {
    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Errors
    /// Returns the I/O error if the loopback socket cannot be bound.
    pub async fn start(config: FakeGitLabConfig) -> std::io::Result<Self> {
        let listener = Listener::bind().await?;
        let base_url = listener.base_url.clone();
        let shutdown = CancellationToken::new();
        let state = Arc::new(GitLabState {
            base_url: base_url.clone(),
            latency: config.latency,
            data: Mutex::new(GitLabData {
                tokens: config.tokens,
                dora: DoraState::new(&config.projects),
                projects: config.projects.into_iter().map(ProjectState::new).collect(),
                next_issue_id: 1_000,
                next_label_event_id: 0,
                redirects: Vec::new(),
                timeline: graphql::Timeline::default(),
            }),
            faults: Mutex::new(VecDeque::new()),
            recorder: Recorder::default(),
            api_bucket: config
                .requests_per_minute
                .map(|l| Mutex::new(Bucket::new(l))),
            search_bucket: config.search_per_minute.map(|l| Mutex::new(Bucket::new(l))),
            max_body_bytes: config.max_body_bytes,
            lost_answers: config
                .lost_answers
                .map(|l| (l.percent.min(100), Mutex::new(l.seed))),
            shutdown: shutdown.clone(),
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

    /// The URL of a project's HTTP alert integration.
    pub fn alert_url(&self, path_with_namespace: &str, name: &str, id: u64) -> url::Url {
        self.inner
            .base_url
            .join(&format!(
                "{path_with_namespace}/-/alerts/notify/{name}/{id}.json"
            ))
            .expect("a project path and integration name form a valid URL path")
    }

    /// Stops the server; hung and held requests are cut off.
    pub fn shutdown(&self) {
        self.inner.guard.0.cancel();
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

    /// The project's issues and incidents, by iid.
    pub fn issues(&self, project_id: u64) -> Vec<FakeGitLabIssue> {
        let data = lock(&self.inner.state.data);
        data.projects
            .iter()
            .find(|p| p.cfg.id == project_id)
            .map(|p| p.issues.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One issue, if it exists.
    pub fn issue(&self, project_id: u64, iid: u64) -> Option<FakeGitLabIssue> {
        let data = lock(&self.inner.state.data);
        data.projects
            .iter()
            .find(|p| p.cfg.id == project_id)
            .and_then(|p| p.issues.get(&iid).cloned())
    }

    /// Every alert of every project, in creation order per project.
    pub fn alerts(&self) -> Vec<FakeAlert> {
        let data = lock(&self.inner.state.data);
        data.projects
            .iter()
            .flat_map(|p| p.alerts.iter().cloned())
            .collect()
    }

    /// Sets `user`'s access level in `project` (0 removes the membership). Returns false if
    /// there is no such project.
    pub fn set_access_level(&self, project_id: u64, user_id: u64, level: u32) -> bool {
        let mut data = lock(&self.inner.state.data);
        let Some(project) = data.projects.iter_mut().find(|p| p.cfg.id == project_id) else {
            return false;
        };
        project.cfg.members.retain(|(u, _)| *u != user_id);
        if level > 0 {
            project.cfg.members.push((user_id, level));
        }
        true
    }

    /// The user the person helpers act as ([`Self::move_issue`], [`Self::resolve_alert`], …):
    /// `a.person`, "A Person". Tests may also pass it to [`Self::create_person_issue`].
    pub const PERSON_ID: u64 = 9_998;

    /// A person renames project `project_id` to `new_path` (its `path_with_namespace`). The old
    /// path keeps redirecting to the project (GitLab's `RedirectRoute`, created by
    /// `app/models/route.rb` `create_redirect_for_old_path`) until a project is created at it or
    /// renamed to it (`delete_conflicting_redirects`). Returns false if there is no such project
    /// or another project already has `new_path`.
    pub fn rename_project(&self, project_id: u64, new_path: &str) -> bool {
        let mut data = lock(&self.inner.state.data);
        let taken = data.projects.iter().any(|p| {
            p.cfg.id != project_id && p.cfg.path_with_namespace.eq_ignore_ascii_case(new_path)
        });
        let Some(project) = data.projects.iter_mut().find(|p| p.cfg.id == project_id) else {
            return false;
        };
        if taken {
            return false;
        }
        let old = std::mem::replace(&mut project.cfg.path_with_namespace, new_path.to_owned());
        data.claim_path(new_path);
        if !old.eq_ignore_ascii_case(new_path) {
            data.redirects.push((old, project_id));
        }
        true
    }

    /// A person creates another project (with its own id, path and members). A project created
    /// at a path that redirects elsewhere takes the path over (`app/models/route.rb`
    /// `after_create :delete_conflicting_redirects`). Returns false if the id or path is taken.
    pub fn add_project(&self, project: FakeProject) -> bool {
        let mut data = lock(&self.inner.state.data);
        if data.projects.iter().any(|p| {
            p.cfg.id == project.id
                || p.cfg
                    .path_with_namespace
                    .eq_ignore_ascii_case(&project.path_with_namespace)
        }) {
            return false;
        }
        data.claim_path(&project.path_with_namespace);
        data.dora.add_project(&project);
        data.projects.push(ProjectState::new(project));
        true
    }

    /// A person (`author_id`, e.g. [`Self::PERSON_ID`]) writes an issue in the web UI, for
    /// instance a postmortem quoting the Jira browse link. It is stored as given (no quick
    /// actions run). Returns its iid, or `None` if there is no such project.
    pub fn create_person_issue(
        &self,
        project_id: u64,
        author_id: u64,
        title: &str,
        description: &str,
    ) -> Option<u64> {
        let mut guard = lock(&self.inner.state.data);
        let data = &mut *guard;
        let id = data.next_issue_id + 1;
        let project = data.projects.iter_mut().find(|p| p.cfg.id == project_id)?;
        let iid = project.next_iid;
        project.next_iid += 1;
        let now = Utc::now();
        project.issues.insert(
            iid,
            FakeGitLabIssue {
                id,
                iid,
                project_id,
                title: title.to_owned(),
                description: Some(description.to_owned()),
                state: RemoteState::Opened,
                created_at: now,
                updated_at: now,
                closed_at: None,
                labels: Vec::new(),
                issue_type: "issue".to_owned(),
                confidential: false,
                severity: "UNKNOWN".to_owned(),
                author_id,
                closed_by_id: None,
                assignee_ids: Vec::new(),
                due_date: None,
                moved_to_id: None,
            },
        );
        data.next_issue_id = id;
        Some(iid)
    }

    /// A person ([`Self::PERSON_ID`]) moves issue `iid` to project `to_project_id`, as
    /// `app/services/issues/move_service.rb` does: a copy is created in the target (new id and
    /// iid, same author, title, description, type, `created_at`; labels only where the target
    /// has them), the original is closed by the person and carries `moved_to_id` (the copy's
    /// id). Returns the copy's iid; `None` if an issue or project is missing, the issue was
    /// already moved, or the target is its own project.
    pub fn move_issue(&self, project_id: u64, iid: u64, to_project_id: u64) -> Option<u64> {
        let mut data = lock(&self.inner.state.data);
        let from = data.projects.iter().position(|p| p.cfg.id == project_id)?;
        let to = data
            .projects
            .iter()
            .position(|p| p.cfg.id == to_project_id)?;
        data.move_issue(from, iid, to, Self::PERSON_ID, Utc::now())
    }

    /// A person deletes issue `iid` (Owners may): later GETs and PUTs answer 404. Returns false
    /// if it did not exist.
    pub fn delete_issue(&self, project_id: u64, iid: u64) -> bool {
        let data = &mut *lock(&self.inner.state.data);
        let Some(project) = data.projects.iter_mut().find(|p| p.cfg.id == project_id) else {
            return false;
        };
        let Some(gone) = project.issues.remove(&iid) else {
            return false;
        };
        data.dora.incident_event(&gone, IncidentEvent::Deleted);
        true
    }

    /// A person sets alert `alert_iid` of the project to Resolved in the UI. The fingerprint then
    /// has no unresolved alert: a recovery payload for it answers 400 and a firing one opens a
    /// new alert. The alert's incident is left as it is (whether GitLab syncs a hand-resolved
    /// alert to its incident is not modelled). Returns false if there is no such triggered alert.
    pub fn resolve_alert(&self, project_id: u64, alert_iid: u64) -> bool {
        let mut data = lock(&self.inner.state.data);
        let Some(alert) = data
            .projects
            .iter_mut()
            .find(|p| p.cfg.id == project_id)
            .and_then(|p| p.alerts.iter_mut().find(|a| a.iid == alert_iid))
            .filter(|a| a.status == AlertStatus::Triggered)
        else {
            return false;
        };
        alert.status = AlertStatus::Resolved;
        alert.resolved_at = Some(Utc::now());
        true
    }

    /// A person creates project label `name` (so that `/label ~name` finds it). Returns false if
    /// there is no such project.
    pub fn create_label(&self, project_id: u64, name: &str) -> bool {
        let mut data = lock(&self.inner.state.data);
        data.projects
            .iter_mut()
            .find(|p| p.cfg.id == project_id)
            .map(|p| p.labels.insert(name.to_owned()))
            .is_some()
    }
}

/// A token bucket: `limit` tokens, refilled evenly over a minute.
struct Bucket {
    limit: u32,
    tokens: f64,
    last: Instant,
    window_start: Instant,
    observed: u32,
}

impl Bucket {
    fn new(limit: u32) -> Self {
        let now = Instant::now();
        Self {
            limit: limit.max(1),
            tokens: f64::from(limit.max(1)),
            last: now,
            window_start: now,
            observed: 0,
        }
    }

    /// Takes a token; on refusal returns the whole seconds until one is back.
    fn take(&mut self) -> Result<(), u64> {
        let now = Instant::now();
        let rate = f64::from(self.limit) / 60.0;
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate)
            .min(f64::from(self.limit));
        self.last = now;
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.observed = 0;
        }
        self.observed += 1;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn remaining(&self) -> u32 {
        self.tokens.floor() as u32
    }
}

fn router(state: Arc<GitLabState>) -> Router {
    Router::new()
        .route("/api/v4/user", get(current_user))
        .route("/api/v4/version", get(version))
        .route("/api/v4/projects/{id}", get(project))
        .route(
            "/api/v4/projects/{id}/environments",
            get(dora::list_environments).post(dora::create_environment),
        )
        .route(
            "/api/v4/projects/{id}/dora/metrics",
            get(dora::dora_metrics),
        )
        .route(
            "/api/v4/projects/{id}/issues",
            get(list_issues).post(create_issue),
        )
        .route(
            "/api/v4/projects/{id}/issues/{iid}",
            get(get_issue).put(update_issue).delete(delete_issue),
        )
        .route(
            "/api/v4/projects/{id}/issues/{iid}/resource_label_events",
            get(labels::resource_label_events),
        )
        .route("/api/v4/issues", get(list_all_issues))
        .route("/api/v4/issues/{id}", get(get_issue_by_id))
        .route("/api/graphql", axum::routing::post(graphql::execute))
        .fallback(alert_or_not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), front))
        .with_state(state)
}

fn classify(method: &Method, path: &str) -> Option<FaultTarget> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["api", "v4", "projects", _, "issues"]) => Some(FaultTarget::CreateIssue),
        (&Method::GET, ["api", "v4", "projects", _, "issues"]) => Some(FaultTarget::ListIssues),
        (&Method::PUT, ["api", "v4", "projects", _, "issues", _]) => Some(FaultTarget::UpdateIssue),
        (&Method::POST, _) if path.contains("/-/alerts/notify/") => Some(FaultTarget::Alert),
        _ => None,
    }
}

/// The HTML page a reverse proxy answers when the application behind it did not.
const PROXY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// What nginx answers for a body over `client_max_body_size`.
const TOO_LARGE_PAGE: &str = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The most a request body may hold before the fake stops reading it.
const READ_LIMIT: usize = 64 * 1024 * 1024;

/// Logs the request, adds latency, applies the proxy's body limit, GitLab's malformed-string
/// check, rate limits and queued faults.
async fn front(State(state): State<Arc<GitLabState>>, req: Request, next: Next) -> Response {
    let (parts, raw) = req.into_parts();
    let bytes = axum::body::to_bytes(raw, READ_LIMIT)
        .await
        .unwrap_or_default();
    let too_large = state.max_body_bytes.is_some_and(|max| bytes.len() > max);
    let (req, body) = read_body(Request::from_parts(parts, Body::from(bytes))).await;
    let malformed = malformed_request(req.uri(), body.as_ref());
    let index = state
        .recorder
        .start(req.method(), req.uri(), req.headers(), body);
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let response = if too_large {
        // The reverse proxy answers before GitLab, so before authentication and rate limits.
        raw_response(413, TOO_LARGE_PAGE)
    } else if malformed {
        bad_request_text()
    } else {
        handle_front(&state, req, next).await
    };
    if response.extensions().get::<Unanswered>().is_none() {
        state.recorder.finish(index, response.status().as_u16());
    }
    response
}

/// `lib/gitlab/middleware/handle_malformed_strings.rb`: a NUL byte (or invalid UTF-8) in the
/// path or in any parameter (query, form or JSON body, nested up to two levels) is answered
/// `400 text/plain "Bad Request"` by a Rack middleware, before authentication and before
/// Rack::Attack's rate limits (`config/application.rb` inserts it after
/// `ActionDispatch::ShowExceptions`, Rack::Attack after `Warden::Manager`). PostgreSQL could not
/// store a NUL in a text column anyway.
fn malformed_request(uri: &axum::http::Uri, body: Option<&Value>) -> bool {
    /// Percent-decodes `raw`; a NUL or invalid UTF-8 is malformed.
    fn malformed_str(raw: &str) -> bool {
        let bytes = raw.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            match (
                bytes[i],
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (b'%', Some(hi), Some(lo)) => {
                    decoded.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    decoded.push(b);
                    i += 1;
                }
            }
        }
        decoded.contains(&0) || std::str::from_utf8(&decoded).is_err()
    }
    fn value_has_nul(v: &Value, depth: u32) -> bool {
        if depth > 2 {
            return false;
        }
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(|i| value_has_nul(i, depth + 1)),
            Value::Object(map) => map.values().any(|i| value_has_nul(i, depth + 1)),
            _ => false,
        }
    }
    malformed_str(uri.path())
        || uri.query().is_some_and(malformed_str)
        || body.is_some_and(|b| match b {
            Value::Object(map) => map.values().any(|v| value_has_nul(v, 0)),
            other => value_has_nul(other, 0),
        })
}

fn bad_request_text() -> Response {
    let mut resp = Response::new(Body::from("Bad Request"));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

async fn handle_front(state: &GitLabState, req: Request, next: Next) -> Response {
    if let Some(limited) = state.rate_limit(req.uri().query()) {
        return limited;
    }
    let target = classify(req.method(), req.uri().path());
    let fault = state
        .take_fault(target)
        .or_else(|| state.lost_answer(target));
    let Some(fault) = fault else {
        return state.with_rate_headers(next.run(req).await);
    };
    match fault {
        Fault::RateLimited { retry_after_secs } => {
            rate_limited(retry_after_secs, 2_000, 2_001, Utc::now())
        }
        Fault::Status { status, body } => raw_response(status, &body),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Fault::HoldUntil(release, arrived) => {
            if let Some(arrived) = arrived {
                arrived.notify_one();
            }
            tokio::select! {
                () = release.notified() => next.run(req).await,
                () = state.shutdown.cancelled() => unanswered(),
            }
        }
        Fault::CommitThenStatus(status) => {
            let _committed = next.run(req).await;
            raw_response(status, PROXY_PAGE)
        }
        Fault::CommitThenDrop => {
            let committed = next.run(req).await;
            let (mut parts, _) = committed.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "sandbox dropped the connection after committing",
                ))
            });
            let mut resp = Response::from_parts(parts, Body::from_stream(broken));
            resp.extensions_mut().insert(Unanswered);
            resp
        }
        Fault::CommitThenHang(committed) => {
            let _committed = next.run(req).await;
            committed.notify_one();
            state.shutdown.cancelled().await;
            unanswered()
        }
    }
}

/// What a cut-off request gets once the server stops (the client sees the connection close).
fn unanswered() -> Response {
    let mut resp = raw_response(503, PROXY_PAGE);
    resp.extensions_mut().insert(Unanswered);
    resp
}

fn rate_limited(
    retry_after_secs: Option<u64>,
    limit: u32,
    observed: u32,
    reset: DateTime<Utc>,
) -> Response {
    let mut resp = Response::new(Body::from("Retry later\n"));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(secs) = retry_after_secs {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    h.insert(
        "ratelimit-name",
        HeaderValue::from_static("throttle_authenticated_api"),
    );
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-observed", HeaderValue::from(observed));
    h.insert("ratelimit-remaining", HeaderValue::from(0u32));
    h.insert("ratelimit-reset", HeaderValue::from(reset.timestamp()));
    if let Ok(v) = HeaderValue::from_str(&reset.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        h.insert("ratelimit-resettime", v);
    }
    resp
}

impl GitLabState {
    /// For a write, when [`FakeGitLabConfig::lost_answers`] picks it: apply it, then lose the
    /// answer.
    fn lost_answer(&self, target: Option<FaultTarget>) -> Option<Fault> {
        let (percent, state) = self.lost_answers.as_ref()?;
        if !matches!(
            target,
            Some(FaultTarget::CreateIssue | FaultTarget::UpdateIssue | FaultTarget::Alert)
        ) {
            return None;
        }
        let mut x = lock(state);
        *x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let draw = (*x >> 33) % 200;
        (draw < 2 * u64::from(*percent)).then_some(if draw % 2 == 0 {
            Fault::CommitThenStatus(502)
        } else {
            Fault::CommitThenDrop
        })
    }

    fn take_fault(&self, target: Option<FaultTarget>) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let pos = faults
            .iter()
            .position(|(t, _)| *t == FaultTarget::Any || Some(*t) == target)?;
        faults.remove(pos).map(|(_, f)| f)
    }

    /// Applies the search and request buckets; `Some` is the 429 to answer.
    fn rate_limit(&self, query: Option<&str>) -> Option<Response> {
        // `validate_search_rate_limit! if declared_params[:search].present?` (lib/api/issues.rb):
        // a blank search is no search.
        let is_search = query_pairs(query)
            .iter()
            .any(|(k, v)| k == "search" && !v.trim().is_empty());
        let buckets = [
            is_search.then_some(self.search_bucket.as_ref()).flatten(),
            self.api_bucket.as_ref(),
        ];
        for bucket in buckets.into_iter().flatten() {
            let mut b = lock(bucket);
            if let Err(retry) = b.take() {
                let reset = Utc::now() + chrono::Duration::seconds(retry as i64);
                return Some(rate_limited(Some(retry), b.limit, b.observed, reset));
            }
        }
        None
    }

    /// GitLab.com sends `RateLimit-*` on every API answer.
    fn with_rate_headers(&self, mut resp: Response) -> Response {
        if let Some(bucket) = &self.api_bucket {
            let b = lock(bucket);
            let h = resp.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(b.limit));
            h.insert("ratelimit-observed", HeaderValue::from(b.observed));
            h.insert("ratelimit-remaining", HeaderValue::from(b.remaining()));
        }
        resp
    }

    /// The user behind `PRIVATE-TOKEN` or `Authorization: Bearer`.
    fn authenticate(&self, headers: &HeaderMap) -> Result<FakeUser, Reply> {
        let token = headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned)
            });
        let data = lock(&self.data);
        token
            .and_then(|t| data.tokens.iter().find(|(k, _)| *k == t))
            .map(|(_, user)| user.clone())
            .ok_or_else(|| message(401, "401 Unauthorized"))
    }

    fn timestamp(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn user_json(&self, id: u64, data: &GitLabData) -> Value {
        let (username, name) = data.user_names(id);
        json!({
            "id": id,
            "username": username,
            "name": name,
            "state": "active",
            "locked": false,
            "avatar_url": format!("{}uploads/-/system/user/avatar/{id}/avatar.png", self.base_url),
            "web_url": format!("{}{username}", self.base_url),
        })
    }

    fn issue_json(&self, issue: &FakeGitLabIssue, path: &str, data: &GitLabData) -> Value {
        let api = format!("{}api/v4/projects/{}", self.base_url, issue.project_id);
        let web = format!("{}{path}/-/issues/{}", self.base_url, issue.iid);
        json!({
            "id": issue.id,
            "iid": issue.iid,
            "project_id": issue.project_id,
            "title": issue.title,
            "description": issue.description,
            "state": issue.state.as_str(),
            "created_at": Self::timestamp(issue.created_at),
            "updated_at": Self::timestamp(issue.updated_at),
            "closed_at": issue.closed_at.map(Self::timestamp),
            "closed_by": issue.closed_by_id.map(|id| self.user_json(id, data)),
            "labels": issue.labels,
            "milestone": null,
            "assignees": issue.assignee_ids.iter().map(|id| self.user_json(*id, data)).collect::<Vec<_>>(),
            "author": self.user_json(issue.author_id, data),
            "type": issue.issue_type.to_ascii_uppercase(),
            "assignee": issue.assignee_ids.first().map(|id| self.user_json(*id, data)),
            "user_notes_count": 0,
            "merge_requests_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "due_date": issue.due_date.map(|d| d.format("%Y-%m-%d").to_string()),
            "confidential": issue.confidential,
            "discussion_locked": null,
            "issue_type": issue.issue_type,
            "web_url": web,
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": null,
                "human_total_time_spent": null,
            },
            "task_completion_status": { "count": 0, "completed_count": 0 },
            "weight": null,
            "blocking_issues_count": 0,
            "has_tasks": false,
            "_links": {
                "self": format!("{api}/issues/{}", issue.iid),
                "notes": format!("{api}/issues/{}/notes", issue.iid),
                "award_emoji": format!("{api}/issues/{}/award_emoji", issue.iid),
                "project": api,
                "closed_as_duplicate_of": null,
            },
            "references": {
                "short": format!("#{}", issue.iid),
                "relative": format!("#{}", issue.iid),
                "full": format!("{path}#{}", issue.iid),
            },
            "severity": issue.severity,
            "moved_to_id": issue.moved_to_id,
            "service_desk_reply_to": null,
        })
    }
}

fn message(status: u16, text: &str) -> Reply {
    json_response(status, &json!({ "message": text })).into()
}

fn error(status: u16, text: &str) -> Reply {
    json_response(status, &json!({ "error": text })).into()
}

impl GitLabData {
    /// The project an API `:id` names: a number is an id; a path (it has a `/`) is matched
    /// case-insensitively and, failing that, through the redirects old paths left
    /// (`lib/api/helpers.rb` `find_project`: `find_by_full_path(id, follow_redirects: true)`);
    /// anything else names nothing.
    fn project_index(&self, id: &str) -> Option<usize> {
        let numeric = id.strip_prefix('-').unwrap_or(id);
        if !numeric.is_empty() && numeric.bytes().all(|b| b.is_ascii_digit()) {
            return self
                .projects
                .iter()
                .position(|p| p.cfg.id.to_string() == id);
        }
        if !id.contains('/') {
            return None;
        }
        self.projects
            .iter()
            .position(|p| p.cfg.path_with_namespace.eq_ignore_ascii_case(id))
            .or_else(|| {
                let (_, target) = self
                    .redirects
                    .iter()
                    .find(|(old, _)| old.eq_ignore_ascii_case(id))?;
                self.projects.iter().position(|p| p.cfg.id == *target)
            })
    }

    /// A project now lives at `path`: redirects from it (and below it) are dropped
    /// (`app/models/route.rb` `delete_conflicting_redirects`).
    fn claim_path(&mut self, path: &str) {
        let lower = path.to_ascii_lowercase();
        self.redirects.retain(|(old, _)| {
            let old = old.to_ascii_lowercase();
            old != lower && !old.starts_with(&format!("{lower}/"))
        });
    }

    /// The project named by `id` and the user's access level there; 404 when it does not exist
    /// or the user cannot see it.
    fn project_at(&self, id: &str, user: &FakeUser) -> Result<(usize, u32), Reply> {
        let index = self
            .project_index(id)
            .ok_or_else(|| message(404, "404 Project Not Found"))?;
        let level = self.projects[index].level_of(user.id);
        if level == 0 && !user.admin {
            return Err(message(404, "404 Project Not Found"));
        }
        Ok((index, level))
    }

    /// [`Self::project_at`], borrowing the project.
    fn project_for(
        &mut self,
        id: &str,
        user: &FakeUser,
    ) -> Result<(&mut ProjectState, u32), Reply> {
        let (index, level) = self.project_at(id, user)?;
        Ok((&mut self.projects[index], level))
    }

    /// A user's username and name (the token users, the alert bot, the person, or made up).
    fn user_names(&self, id: u64) -> (String, String) {
        match id {
            ALERT_BOT_ID => ("alert-bot".to_owned(), "GitLab Alert Bot".to_owned()),
            FakeGitLab::PERSON_ID => ("a.person".to_owned(), "A Person".to_owned()),
            _ => self
                .tokens
                .iter()
                .find(|(_, u)| u.id == id)
                .map(|(_, u)| (u.username.clone(), u.name.clone()))
                .unwrap_or_else(|| (format!("user{id}"), format!("User {id}"))),
        }
    }

    /// The user a `/assign` argument word names: `me`, or `@username` / `username`.
    fn user_named(&self, word: &str, me: &FakeUser) -> Option<u64> {
        if word.eq_ignore_ascii_case("me") {
            return Some(me.id);
        }
        let name = word.strip_prefix('@').unwrap_or(word);
        self.tokens
            .iter()
            .map(|(_, u)| (u.id, u.username.clone()))
            .chain([(FakeGitLab::PERSON_ID, "a.person".to_owned())])
            .find(|(_, username)| username.eq_ignore_ascii_case(name))
            .map(|(id, _)| id)
    }

    /// `app/services/issues/move_service.rb` (`Issuable::Clone::BaseService`): the copy is
    /// created in the target with the original's attributes except id and iid
    /// (`create_new_entity`; `Issues::BaseService#filter_params` keeps `created_at` for a
    /// `moved_issue`), labels only where the target project has them (`cloneable_label_ids`);
    /// then the original is closed by the mover (`close_issue`) and `mark_as_moved` sets its
    /// `moved_to_id`. Returns the copy's iid.
    fn move_issue(
        &mut self,
        from: usize,
        iid: u64,
        to: usize,
        actor: u64,
        now: DateTime<Utc>,
    ) -> Option<u64> {
        if from == to {
            return None;
        }
        let original = self.projects[from]
            .issues
            .get(&iid)
            .filter(|i| i.moved_to_id.is_none())?
            .clone();
        let id = self.next_issue_id + 1;
        self.next_issue_id = id;
        let target = &mut self.projects[to];
        let new_iid = target.next_iid;
        target.next_iid += 1;
        let copy = FakeGitLabIssue {
            id,
            iid: new_iid,
            project_id: target.cfg.id,
            labels: original
                .labels
                .iter()
                .filter(|l| target.labels.contains(*l))
                .cloned()
                .collect(),
            updated_at: now,
            moved_to_id: None,
            ..original.clone()
        };
        target.issues.insert(new_iid, copy.clone());
        self.dora.incident_event(&copy, IncidentEvent::Created);
        let old = self.projects[from].issues.get_mut(&iid)?;
        let closing = old.state == RemoteState::Opened;
        if closing {
            old.state = RemoteState::Closed;
            old.closed_at = Some(now);
            old.closed_by_id = Some(actor);
        }
        old.moved_to_id = Some(id);
        old.updated_at = now;
        if closing {
            let closed = old.clone();
            self.dora.incident_event(&closed, IncidentEvent::Closed);
        }
        Some(new_iid)
    }
}

impl ProjectState {
    fn level_of(&self, user_id: u64) -> u32 {
        self.cfg
            .members
            .iter()
            .find(|(u, _)| *u == user_id)
            .map_or(0, |(_, l)| *l)
    }

    /// Labels used through the API come into existence (`Labels::FindOrCreateService`).
    fn remember_labels(&mut self, labels: &[String]) {
        self.labels.extend(labels.iter().cloned());
    }

    /// The project labels a `/label` or `/unlabel` argument names
    /// (`app/services/quick_actions/interpret_service.rb` `find_labels`): `~label` and
    /// `~"a label"` references when there is a `~`, otherwise the names of
    /// `"A" "A B C" A B`; only labels the project has.
    fn find_labels(&self, arg: &str) -> Vec<String> {
        let mut names = Vec::new();
        let chars: Vec<char> = arg.chars().collect();
        let with_tilde = arg.contains('~');
        let mut i = 0;
        while i < chars.len() {
            let tilde = chars[i] == '~';
            if with_tilde && !tilde {
                i += 1;
                continue;
            }
            let start = i + usize::from(tilde);
            if chars.get(start) == Some(&'"')
                && let Some(len) = chars[start + 1..].iter().position(|c| *c == '"')
            {
                names.push(chars[start + 1..start + 1 + len].iter().collect::<String>());
                i = start + len + 2;
                continue;
            }
            let end = start
                + chars[start..]
                    .iter()
                    .take_while(|c| !c.is_whitespace() && **c != '~')
                    .count();
            if end > start {
                names.push(chars[start..end].iter().collect());
            }
            i = end.max(i + 1);
        }
        names.retain(|n| self.labels.contains(n));
        names.dedup();
        names
    }
}

/// What a user may do in a project (`app/policies/project_policy.rb`,
/// `app/policies/issue_policy.rb`).
#[derive(Clone, Copy, Debug)]
struct Rights {
    admin: bool,
    level: u32,
}

impl Rights {
    /// `admin_issue`, `create_incident` (`reporter_access & create_issue`), `set_issue_metadata`
    /// on an existing issue, `move_issue`.
    fn reporter(self) -> bool {
        self.admin || self.level >= access::REPORTER
    }

    /// `set_issue_created_at`, `set_issue_updated_at`, `set_issue_iid`.
    fn owner(self) -> bool {
        self.admin || self.level >= access::OWNER
    }

    /// `set_issue_metadata` / `set_confidentiality`: any member (or admin) on a new issue
    /// (`~persisted & is_project_member & guest_access`), `admin_issue` on an existing one.
    fn set_metadata(self, persisted: bool) -> bool {
        if persisted {
            self.reporter()
        } else {
            self.admin || self.level >= access::GUEST
        }
    }
}

/// The changes a description's quick actions ask for (`@updates`).
#[derive(Clone, Debug, Default, PartialEq)]
struct QuickUpdates {
    state_event: Option<&'static str>,
    title: Option<String>,
    add_labels: Vec<String>,
    remove_labels: Vec<String>,
    remove_all_labels: bool,
    confidential: bool,
    assignee: Option<u64>,
    severity: Option<String>,
    due_date: Option<NaiveDate>,
    /// The project index `/move` targets.
    move_to: Option<usize>,
}

/// `IssuableSeverity::SEVERITY_QUICK_ACTION_PARAMS` (`app/models/issuable_severity.rb`).
fn severity_param(arg: &str) -> Option<&'static str> {
    match arg.to_ascii_lowercase().as_str() {
        "unknown" | "0" => Some("UNKNOWN"),
        "low" | "s4" | "4" => Some("LOW"),
        "medium" | "s3" | "3" => Some("MEDIUM"),
        "high" | "s2" | "2" => Some("HIGH"),
        "critical" | "s1" | "1" => Some("CRITICAL"),
        _ => None,
    }
}

/// `/due`'s argument. GitLab parses it with Chronic; the fake knows `YYYY-MM-DD`, `today` and
/// `tomorrow` (anything else fails to parse, which GitLab also answers by ignoring the action).
fn due_param(arg: &str, now: DateTime<Utc>) -> Option<NaiveDate> {
    match arg.to_ascii_lowercase().as_str() {
        "today" => Some(now.date_naive()),
        "tomorrow" => now.date_naive().succ_opt(),
        other => NaiveDate::parse_from_str(other, "%Y-%m-%d").ok(),
    }
}

impl GitLabData {
    /// Runs the commands the way `QuickActions::InterpretService#extract_updates` does: each
    /// command only if its `condition` holds for this user and issue (persisted or not), later
    /// commands overriding earlier ones. Conditions (lib/gitlab/quick_actions/*.rb):
    /// - `/close` (open), `/reopen` (closed), `/title`: persisted and `update_issue`
    ///   (issuable_actions.rb) — so on create they are removed from the text and do nothing;
    /// - `/label`, `/labels`: `set_issue_metadata` and the project has labels; only existing
    ///   labels are added; `/unlabel`, `/remove_label`: persisted, the issue has labels,
    ///   `set_issue_metadata`; without an argument all labels go;
    /// - `/confidential`: not yet confidential and `set_confidentiality`;
    /// - `/assign`: `set_issue_metadata`; `me` or `@username`; one assignee on GitLab Free;
    /// - `/severity`: incidents only (`supports_severity?`); on an existing issue through
    ///   `Issues::UpdateService`, whose `filter_severity` needs `admin_issue`;
    /// - `/due`: `set_issue_metadata` (issue_actions.rb);
    /// - `/move <path>`: persisted, `move_issue` (`admin_issue`) here and `admin_issue` in the
    ///   target project, which must exist (issue_actions.rb).
    ///
    /// Every other known command is removed from the text and ignored.
    fn interpret(
        &self,
        commands: &[Command],
        (user, rights): (&FakeUser, Rights),
        (project, issue, persisted): (usize, &FakeGitLabIssue, bool),
        now: DateTime<Utc>,
    ) -> QuickUpdates {
        let mut u = QuickUpdates::default();
        let state = &self.projects[project];
        let arg_of = |c: &Command| c.arg.clone().unwrap_or_default();
        for c in commands {
            match c.name.as_str() {
                "close" if persisted && issue.state == RemoteState::Opened => {
                    u.state_event = Some("close");
                }
                "reopen" if persisted && issue.state == RemoteState::Closed => {
                    u.state_event = Some("reopen");
                }
                "title" if persisted && c.arg.is_some() => u.title = c.arg.clone(),
                "label" | "labels"
                    if rights.set_metadata(persisted) && !state.labels.is_empty() =>
                {
                    for l in state.find_labels(&arg_of(c)) {
                        if !u.add_labels.contains(&l) {
                            u.add_labels.push(l);
                        }
                    }
                }
                "unlabel" | "remove_label"
                    if persisted && !issue.labels.is_empty() && rights.set_metadata(true) =>
                {
                    match &c.arg {
                        Some(arg) => u.remove_labels.extend(state.find_labels(arg)),
                        None => u.remove_all_labels = true,
                    }
                }
                "confidential" if !issue.confidential && rights.set_metadata(persisted) => {
                    u.confidential = true;
                }
                "assign" if rights.set_metadata(persisted) => {
                    if let Some(id) = arg_of(c)
                        .split(|ch: char| ch.is_whitespace() || ch == ',')
                        .filter(|w| !w.is_empty() && *w != "and")
                        .find_map(|w| self.user_named(w, user))
                    {
                        u.assignee = Some(id);
                    }
                }
                "severity"
                    if issue.issue_type == "incident" && (!persisted || rights.reporter()) =>
                {
                    if let Some(sev) = severity_param(&arg_of(c)) {
                        u.severity = Some(sev.to_owned());
                    }
                }
                "due" if rights.set_metadata(persisted) => {
                    if let Some(date) = due_param(&arg_of(c), now) {
                        u.due_date = Some(date);
                    }
                }
                "move" if persisted && rights.reporter() => {
                    let target = self
                        .projects
                        .iter()
                        .position(|p| p.cfg.path_with_namespace.eq_ignore_ascii_case(&arg_of(c)));
                    if let Some(t) = target.filter(|t| {
                        *t != project
                            && (user.admin
                                || self.projects[*t].level_of(user.id) >= access::REPORTER)
                    }) {
                        u.move_to = Some(t);
                    }
                }
                _ => {}
            }
        }
        u
    }
}

/// A parameter as text, whether JSON gave a string, number or boolean.
fn param(body: &Value, name: &str) -> Option<String> {
    match &body[name] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, Reply> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| error(400, &format!("{name} is invalid")))
}

/// `labels` as a comma-separated string or an array.
fn labels(value: &Value) -> Option<Vec<String>> {
    let raw: Vec<String> = match value {
        Value::String(s) => s.split(',').map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str())
            .flat_map(|s| s.split(','))
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    let mut out: Vec<String> = raw
        .into_iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

fn validate_title(title: &str) -> Result<(), Reply> {
    if title.chars().count() > 255 {
        return Err(json_response(
            400,
            &json!({ "message": { "title": ["is too long (maximum is 255 characters)"] } }),
        )
        .into());
    }
    Ok(())
}

fn validate_issue_type(value: Option<String>) -> Result<Option<String>, Reply> {
    match value.as_deref() {
        None => Ok(None),
        Some(t @ ("issue" | "incident" | "test_case" | "task")) => Ok(Some(t.to_owned())),
        Some(_) => Err(error(400, "issue_type does not have a valid value")),
    }
}

fn truthy(value: Option<String>) -> Option<bool> {
    value.map(|v| matches!(v.as_str(), "true" | "1" | "yes"))
}

type Handled = Result<Response, Reply>;

async fn current_user(State(state): State<Arc<GitLabState>>, headers: HeaderMap) -> Handled {
    let user = state.authenticate(&headers)?;
    let data = lock(&state.data);
    let mut body = state.user_json(user.id, &data);
    body["created_at"] = json!("2020-01-01T00:00:00.000Z");
    body["bio"] = json!("");
    body["public_email"] = Value::Null;
    if user.admin {
        body["is_admin"] = json!(true);
    }
    Ok(json_response(200, &body))
}

async fn version(State(state): State<Arc<GitLabState>>, headers: HeaderMap) -> Handled {
    state.authenticate(&headers)?;
    Ok(json_response(
        200,
        &json!({
            "version": "17.5.0-ee",
            "revision": "0123456789a",
            "kas": { "enabled": false, "externalUrl": null, "version": null },
            "enterprise": true,
        }),
    ))
}

async fn project(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let mut data = lock(&state.data);
    let (project, level) = data.project_for(&id, &user)?;
    let path = project.cfg.path_with_namespace.clone();
    let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    let project_access = if level > 0 {
        json!({ "access_level": level, "notification_level": 3 })
    } else {
        Value::Null
    };
    Ok(json_response(
        200,
        &json!({
            "id": project.cfg.id,
            "name": name,
            "path": name,
            "path_with_namespace": path,
            "name_with_namespace": path.replace('/', " / "),
            "web_url": format!("{}{path}", state.base_url),
            "default_branch": "main",
            "visibility": "private",
            "issues_enabled": true,
            "permissions": { "project_access": project_access, "group_access": null },
        }),
    ))
}

/// `issue_type` as GitLab keeps it: a type the user may not create falls back to `issue`,
/// silently (`app/services/issues/build_service.rb` `set_work_item_type` and
/// `Issues::BaseService#filter_params` with `create_issue_type_allowed?` in
/// `app/services/issues/issue_type_helpers.rb`; `create_incident` is
/// `reporter_access & create_issue` in `app/policies/project_policy.rb`).
fn allowed_issue_type(wanted: Option<String>, rights: Rights) -> Option<String> {
    wanted.map(|t| {
        if t == "incident" && !rights.reporter() {
            "issue".to_owned()
        } else {
            t
        }
    })
}

async fn create_issue(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let body = body.unwrap_or(Value::Null);
    // Grape validates the parameters (for everyone, before the endpoint looks the project up);
    // only the rights decide whether they are used.
    let title = param(&body, "title")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| error(400, "title is missing"))?;
    let wanted_type = validate_issue_type(param(&body, "issue_type"))?;
    let created_at = param(&body, "created_at")
        .map(|t| parse_time("created_at", &t))
        .transpose()?;
    let iid = param(&body, "iid")
        .map(|v| v.parse::<u64>().map_err(|_| error(400, "iid is invalid")))
        .transpose()?;
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let issue_id = data.next_issue_id + 1;
    let (pidx, level) = data.project_at(&id, &user)?;
    let rights = Rights {
        admin: user.admin,
        level,
    };
    validate_title(&title)?;
    let issue_type = allowed_issue_type(wanted_type, rights);
    let project = &mut data.projects[pidx];
    let privileged = rights.owner();
    let iid = match iid.filter(|_| privileged) {
        Some(iid) if project.issues.contains_key(&iid) => {
            return Err(message(409, "Duplicated issue"));
        }
        Some(iid) => iid,
        None => project.next_iid,
    };
    let now = Utc::now();
    let created = created_at.filter(|_| privileged).unwrap_or(now);
    let labels = labels(&body["labels"]).unwrap_or_default();
    project.remember_labels(&labels);
    let mut issue = FakeGitLabIssue {
        id: issue_id,
        iid,
        project_id: project.cfg.id,
        title,
        description: param(&body, "description"),
        state: RemoteState::Opened,
        created_at: created,
        updated_at: created,
        closed_at: None,
        labels,
        issue_type: issue_type.unwrap_or_else(|| "issue".to_owned()),
        confidential: truthy(param(&body, "confidential")).unwrap_or(false),
        severity: "UNKNOWN".to_owned(),
        author_id: user.id,
        closed_by_id: None,
        assignee_ids: Vec::new(),
        due_date: None,
        moved_to_id: None,
    };
    // `IssuableBaseService#create` runs `handle_quick_actions` on the new (not persisted) issue.
    if let Some(description) = issue.description.clone() {
        let extracted = gitlab_quick_actions::extract(&description);
        let updates = data.interpret(
            &extracted.commands,
            (&user, rights),
            (pidx, &issue, false),
            now,
        );
        issue.description = Some(extracted.content);
        apply_quick_updates(&mut issue, &updates, user.id, now);
    }
    let project = &mut data.projects[pidx];
    project.next_iid = project.next_iid.max(iid + 1);
    let given = issue.labels.clone();
    labels::exclusive(&mut issue.labels, &given);
    labels::record(
        &mut project.label_events,
        &mut data.next_label_event_id,
        issue.id,
        (&[], &issue.labels),
        issue.created_at,
        user.id,
    );
    project.issues.insert(iid, issue.clone());
    let path = project.cfg.path_with_namespace.clone();
    data.next_issue_id = issue_id;
    data.dora.incident_event(&issue, IncidentEvent::Created);
    Ok(json_response(201, &state.issue_json(&issue, &path, data)))
}

/// Applies what quick actions asked for (except `/move`, which the caller performs).
fn apply_quick_updates(
    issue: &mut FakeGitLabIssue,
    u: &QuickUpdates,
    user_id: u64,
    when: DateTime<Utc>,
) {
    if let Some(t) = &u.title {
        issue.title.clone_from(t);
    }
    if u.remove_all_labels {
        issue.labels.clear();
    }
    issue.labels.retain(|l| !u.remove_labels.contains(l));
    issue.labels.extend(u.add_labels.iter().cloned());
    issue.labels.sort();
    issue.labels.dedup();
    if u.confidential {
        issue.confidential = true;
    }
    if let Some(a) = u.assignee {
        issue.assignee_ids = vec![a];
    }
    if let Some(sev) = &u.severity {
        issue.severity.clone_from(sev);
    }
    if let Some(d) = u.due_date {
        issue.due_date = Some(d);
    }
    change_state(issue, u.state_event, user_id, when);
}

fn change_state(
    issue: &mut FakeGitLabIssue,
    event: Option<&str>,
    user_id: u64,
    when: DateTime<Utc>,
) {
    match (event, issue.state) {
        (Some("close"), RemoteState::Opened) => {
            issue.state = RemoteState::Closed;
            // GitLab's system_note_timestamp: an honoured updated_at is the closing time.
            issue.closed_at = Some(when);
            issue.closed_by_id = Some(user_id);
        }
        (Some("reopen"), RemoteState::Closed) => {
            issue.state = RemoteState::Opened;
            issue.closed_at = None;
            issue.closed_by_id = None;
        }
        _ => {}
    }
}

/// `PUT /issues/:iid` needs at least one of these (`lib/api/issues.rb`:
/// `at_least_one_of(*Helpers::IssuesHelpers.update_params_at_least_one_of)`, the list in
/// `lib/api/helpers/issues_helpers.rb`). `updated_at` is not among them: alone it is a 400.
/// (GitLab EE may add its own, e.g. `weight`; the fake knows none of them.)
const UPDATE_PARAMS: [&str; 14] = [
    "assignee_id",
    "assignee_ids",
    "confidential",
    "created_at",
    "description",
    "discussion_locked",
    "due_date",
    "labels",
    "add_labels",
    "remove_labels",
    "milestone_id",
    "state_event",
    "title",
    "issue_type",
];

/// `DELETE /projects/:id/issues/:issue_iid`: "Only for administrators and project owners"
/// (GitLab's Issues API); 204 No Content, 403 for anyone else, 404 for an issue not there.
async fn delete_issue(
    State(state): State<Arc<GitLabState>>,
    Path((id, iid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let (pidx, level) = data.project_at(&id, &user)?;
    let rights = Rights {
        admin: user.admin,
        level,
    };
    let iid = iid
        .parse::<u64>()
        .ok()
        .filter(|iid| data.projects[pidx].issues.contains_key(iid))
        .ok_or_else(|| message(404, "404 Not found"))?;
    if !rights.owner() {
        return Err(message(403, "403 Forbidden"));
    }
    if let Some(gone) = data.projects[pidx].issues.remove(&iid) {
        data.dora.incident_event(&gone, IncidentEvent::Deleted);
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn update_issue(
    State(state): State<Arc<GitLabState>>,
    Path((id, iid)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let body = body.unwrap_or(Value::Null);
    // Grape's validations come before the endpoint finds the project and the issue.
    if !UPDATE_PARAMS.iter().any(|p| !body[*p].is_null()) {
        return Err(error(
            400,
            &format!(
                "{} are missing, at least one parameter must be provided",
                UPDATE_PARAMS.join(", ")
            ),
        ));
    }
    let wanted_type = validate_issue_type(param(&body, "issue_type"))?;
    let updated_at = param(&body, "updated_at")
        .map(|t| parse_time("updated_at", &t))
        .transpose()?;
    let state_event = param(&body, "state_event");
    if state_event
        .as_deref()
        .is_some_and(|e| e != "close" && e != "reopen")
    {
        return Err(error(400, "state_event does not have a valid value"));
    }
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let (pidx, level) = data.project_at(&id, &user)?;
    let rights = Rights {
        admin: user.admin,
        level,
    };
    let iid = iid
        .parse::<u64>()
        .ok()
        .filter(|iid| data.projects[pidx].issues.contains_key(iid))
        .ok_or_else(|| message(404, "404 Not found"))?;
    let before = data.projects[pidx].issues[&iid].clone();
    // `update_issue`: Reporters, or the author (`app/policies/issuable_policy.rb`); never below
    // Reporter on an incident (`is_incident & ~reporter_access` in `issue_policy.rb`).
    let may_update =
        rights.reporter() || (before.author_id == user.id && before.issue_type != "incident");
    if !may_update {
        return Err(message(403, "403 Forbidden"));
    }
    let title = param(&body, "title");
    if let Some(t) = &title {
        if t.trim().is_empty() {
            return Err(
                json_response(400, &json!({ "message": { "title": ["can't be blank"] } })).into(),
            );
        }
        validate_title(t)?;
    }
    let issue_type = allowed_issue_type(wanted_type, rights);
    let honoured = updated_at.filter(|_| rights.owner());
    // The label events' time: `system_note_timestamp` (see `labels`).
    let created_at = param(&body, "created_at")
        .map(|t| parse_time("created_at", &t))
        .transpose()?
        .filter(|_| rights.owner());
    let now = Utc::now();
    let when = honoured.unwrap_or(now);
    // Quick actions run only when the request carries a description
    // (`IssuableBaseService#merge_quick_actions_into_params!`); commands already in the stored
    // description do not run again (`execute_with_original_text`).
    let mut description = (!body["description"].is_null())
        .then(|| param(&body, "description"))
        .flatten();
    let mut quick = QuickUpdates::default();
    if let Some(text) = description.clone() {
        let extracted = gitlab_quick_actions::extract(&text);
        let old = before
            .description
            .as_deref()
            .map(|d| gitlab_quick_actions::extract(d).commands)
            .unwrap_or_default();
        let fresh: Vec<Command> = extracted
            .commands
            .into_iter()
            .filter(|c| !old.contains(c))
            .collect();
        quick = data.interpret(&fresh, (&user, rights), (pidx, &before, true), now);
        description = Some(extracted.content);
    }
    let project = &mut data.projects[pidx];
    // `filter_params` drops metadata the user may not set (`set_issue_metadata` is
    // `admin_issue` on an existing issue) and `confidential` without `set_confidentiality`.
    let may_set_metadata = rights.set_metadata(true);
    let label_params = if may_set_metadata {
        (
            labels(&body["labels"]),
            labels(&body["add_labels"]),
            labels(&body["remove_labels"]),
        )
    } else {
        (None, None, None)
    };
    for given in [&label_params.0, &label_params.1].into_iter().flatten() {
        project.remember_labels(given);
    }
    let path = project.cfg.path_with_namespace.clone();
    let issue = project
        .issues
        .get_mut(&iid)
        .ok_or_else(|| message(404, "404 Not found"))?;
    if let Some(t) = title {
        issue.title = t;
    }
    if let Some(d) = description {
        issue.description = Some(d);
    }
    let selected: Vec<String> = [&label_params.0, &label_params.1]
        .into_iter()
        .flatten()
        .flatten()
        .chain(&quick.add_labels)
        .cloned()
        .collect();
    if let Some(l) = label_params.0 {
        issue.labels = l;
    }
    if let Some(add) = label_params.1 {
        issue.labels.extend(add);
        issue.labels.sort();
        issue.labels.dedup();
    }
    if let Some(remove) = label_params.2 {
        issue.labels.retain(|l| !remove.contains(l));
    }
    if let Some(t) = issue_type {
        issue.issue_type = t;
    }
    if let Some(c) = truthy(param(&body, "confidential")).filter(|_| may_set_metadata) {
        issue.confidential = c;
    }
    // Command params override the request's (`params.merge!(command_params)`).
    let event = quick.state_event.or(state_event.as_deref());
    let quick_without_state = QuickUpdates {
        state_event: None,
        ..quick.clone()
    };
    apply_quick_updates(issue, &quick_without_state, user.id, when);
    change_state(issue, event, user.id, when);
    labels::exclusive(&mut issue.labels, &selected);
    labels::record(
        &mut project.label_events,
        &mut data.next_label_event_id,
        issue.id,
        (&before.labels, &issue.labels),
        created_at.or(honoured).unwrap_or(now),
        user.id,
    );
    if *issue != before || honoured.is_some() {
        issue.updated_at = when;
    }
    if let Some(target) = quick.move_to {
        data.move_issue(pidx, iid, target, user.id, now);
    }
    let issue = data.projects[pidx].issues[&iid].clone();
    let event = match (before.state, issue.state) {
        (RemoteState::Opened, RemoteState::Closed) => Some(IncidentEvent::Closed),
        (RemoteState::Closed, RemoteState::Opened) => Some(IncidentEvent::Reopened {
            closed_at_was: before.closed_at,
        }),
        _ => None,
    };
    if let Some(event) = event {
        data.dora.incident_event(&issue, event);
    }
    Ok(json_response(200, &state.issue_json(&issue, &path, data)))
}

async fn get_issue(
    State(state): State<Arc<GitLabState>>,
    Path((id, iid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let (project, _) = data.project_for(&id, &user)?;
    let path = project.cfg.path_with_namespace.clone();
    let issue = iid
        .parse::<u64>()
        .ok()
        .and_then(|iid| project.issues.get(&iid))
        .cloned()
        .ok_or_else(|| message(404, "404 Not found"))?;
    Ok(json_response(200, &state.issue_json(&issue, &path, data)))
}

async fn list_issues(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> Handled {
    list(&state, Some(&id), query.as_deref(), &headers, &req)
}

/// `GET /issues`: the issues of every project the user can see (`lib/api/issues.rb`,
/// `get '/issues'`), with the project endpoint's filters; `scope` defaults to `created_by_me`.
async fn list_all_issues(
    State(state): State<Arc<GitLabState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> Handled {
    list(&state, None, query.as_deref(), &headers, &req)
}

/// `GET /issues/:id`, by global id: `authenticated_as_admin!` first (`lib/api/issues.rb`), so
/// 403 for anyone else; 404 for an id no issue has.
async fn get_issue_by_id(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    if !user.admin {
        return Err(message(403, "403 Forbidden"));
    }
    let data = lock(&state.data);
    let found = id.parse::<u64>().ok().and_then(|id| {
        data.projects.iter().find_map(|p| {
            p.issues
                .values()
                .find(|i| i.id == id)
                .map(|i| (i.clone(), p.cfg.path_with_namespace.clone()))
        })
    });
    let (issue, path) = found.ok_or_else(|| message(404, "404 Not found"))?;
    Ok(json_response(200, &state.issue_json(&issue, &path, &data)))
}

/// Lists the issues of project `id`, or of every project the user can see when `None`.
fn list(
    state: &GitLabState,
    id: Option<&str>,
    query: Option<&str>,
    headers: &HeaderMap,
    req: &Request,
) -> Handled {
    let user = state.authenticate(headers)?;
    let pairs = query_pairs(query);
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let wanted_state = get("state").unwrap_or_else(|| "all".to_owned());
    if !matches!(wanted_state.as_str(), "opened" | "closed" | "all") {
        return Err(error(400, "state does not have a valid value"));
    }
    // `Helpers::IssuesHelpers.sort_options`; the fake orders by created_at, updated_at, title
    // and due_date, and by created_at for the others (priorities, popularity, positions).
    let order_by = get("order_by").unwrap_or_else(|| "created_at".to_owned());
    if !matches!(
        order_by.as_str(),
        "created_at"
            | "due_date"
            | "label_priority"
            | "milestone_due"
            | "popularity"
            | "priority"
            | "relative_position"
            | "title"
            | "updated_at"
    ) {
        return Err(error(400, "order_by does not have a valid value"));
    }
    let ascending = match get("sort").as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(error(400, "sort does not have a valid value")),
    };
    let issue_type = validate_issue_type(get("issue_type"))?;
    // `search` is PostgreSQL full-text search, `in` picks the weights (see `fts`); a blank
    // search is no search (`params[:search].presence`).
    let search = get("search").filter(|s| !s.trim().is_empty());
    let within = get("in");
    let label_filter = get("labels").map(|l| labels(&Value::String(l)).unwrap_or_default());
    // `iids`: `Array[Integer]` coerced from repeated `iids[]` or a comma-separated string.
    let mut iids: Vec<u64> = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "iids[]" || k == "iids") {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            iids.push(part.parse().map_err(|_| error(400, "iids is invalid"))?);
        }
    }
    // `author_id` (Integer) and `author_username` are mutually exclusive
    // (`lib/api/issues.rb` `issues_stats_params`); `Issuables::AuthorFilter` keeps the issues
    // `authored` by that user (`app/finders/issuables/author_filter.rb`).
    let author_id = get("author_id")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| error(400, "author_id is invalid"))
        })
        .transpose()?;
    let author_username = get("author_username");
    if author_id.is_some() && author_username.is_some() {
        return Err(error(
            400,
            "author_id, author_username are mutually exclusive",
        ));
    }
    // `scope`: `created_by_me`/`assigned_to_me`/`all` (`IssuableFinder#by_scope`); none is all
    // on the project endpoint, `created_by_me` on `/issues`.
    let scope = get("scope")
        .or_else(|| id.is_none().then(|| "created_by_me".to_owned()))
        .map(|s| s.replace('-', "_"));
    if scope
        .as_deref()
        .is_some_and(|s| !matches!(s, "created_by_me" | "assigned_to_me" | "all"))
    {
        return Err(error(400, "scope does not have a valid value"));
    }
    let mut bounds = Vec::new();
    for name in [
        "created_after",
        "created_before",
        "updated_after",
        "updated_before",
    ] {
        if let Some(v) = get(name) {
            bounds.push((name, parse_time(name, &v)?));
        }
    }
    let page = get("page")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let per_page = get("per_page")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(20)
        .clamp(1, 100);

    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let author = match (author_id, author_username) {
        (Some(id), _) => Some(id),
        (None, Some(name)) => Some(data.user_named(&name, &user).unwrap_or(0)),
        (None, None) => None,
    };
    let projects: Vec<usize> = match id {
        Some(id) => vec![data.project_at(id, &user)?.0],
        None => (0..data.projects.len())
            .filter(|p| user.admin || data.projects[*p].level_of(user.id) > 0)
            .collect(),
    };
    let mut found: Vec<(FakeGitLabIssue, String)> = projects
        .iter()
        .map(|p| &data.projects[*p])
        .flat_map(|p| {
            p.issues
                .values()
                .map(|i| (i.clone(), p.cfg.path_with_namespace.clone()))
        })
        .filter(|(i, _)| match wanted_state.as_str() {
            "opened" => i.state == RemoteState::Opened,
            "closed" => i.state == RemoteState::Closed,
            _ => true,
        })
        .filter(|(i, _)| issue_type.as_ref().is_none_or(|t| &i.issue_type == t))
        .filter(|(i, _)| iids.is_empty() || iids.contains(&i.iid))
        .filter(|(i, _)| author.is_none_or(|a| i.author_id == a))
        .filter(|(i, _)| match scope.as_deref() {
            Some("created_by_me") => i.author_id == user.id,
            Some("assigned_to_me") => i.assignee_ids.contains(&user.id),
            _ => true,
        })
        .filter(|(i, _)| match label_filter.as_deref() {
            None => true,
            Some([only]) if only.eq_ignore_ascii_case("none") => i.labels.is_empty(),
            Some([only]) if only.eq_ignore_ascii_case("any") => !i.labels.is_empty(),
            Some(all) => all.iter().all(|l| i.labels.contains(l)),
        })
        .filter(|(i, _)| {
            search.as_ref().is_none_or(|s| {
                fts::issue_matches(&i.title, i.description.as_deref(), s, within.as_deref())
            })
        })
        // Inclusive bounds: `created_after`/`updated_after` are `>=`, `*_before` are `<=`
        // (`app/models/concerns/created_at_filterable.rb`, `updated_at_filterable.rb`, used by
        // `CreatedAtFilter`/`UpdatedAtFilter` in `app/finders/issuable_finder.rb`).
        .filter(|(i, _)| {
            bounds.iter().all(|(name, t)| match *name {
                "created_after" => i.created_at >= *t,
                "created_before" => i.created_at <= *t,
                "updated_after" => i.updated_at >= *t,
                _ => i.updated_at <= *t,
            })
        })
        .collect();
    found.sort_by(|(a, _), (b, _)| {
        let ord = match order_by.as_str() {
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "title" => a.title.cmp(&b.title),
            "due_date" => a.due_date.cmp(&b.due_date),
            _ => a.created_at.cmp(&b.created_at),
        }
        .then(a.id.cmp(&b.id));
        if ascending { ord } else { ord.reverse() }
    });
    let total = found.len() as u64;
    let total_pages = total.div_ceil(per_page).max(1);
    let start = ((page - 1) * per_page).min(total) as usize;
    let end = (start + per_page as usize).min(found.len());
    let items: Vec<Value> = found[start..end]
        .iter()
        .map(|(i, path)| state.issue_json(i, path, data))
        .collect();
    let mut resp = json_response(200, &Value::Array(items));
    let next = (page < total_pages).then_some(page + 1);
    let prev = (page > 1).then(|| (page - 1).min(total_pages));
    let page_url = |p: u64| {
        let mut url = state
            .base_url
            .join(req.uri().path().trim_start_matches('/'))
            .expect("a request path joins onto the base URL");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs.iter().filter(|(k, _)| k != "page" && k != "per_page") {
                q.append_pair(k, v);
            }
            q.append_pair("page", &p.to_string());
            q.append_pair("per_page", &per_page.to_string());
        }
        url
    };
    let mut links = Vec::new();
    if let Some(p) = prev {
        links.push(format!("<{}>; rel=\"prev\"", page_url(p)));
    }
    if let Some(n) = next {
        links.push(format!("<{}>; rel=\"next\"", page_url(n)));
    }
    links.push(format!("<{}>; rel=\"first\"", page_url(1)));
    links.push(format!("<{}>; rel=\"last\"", page_url(total_pages)));
    let h = resp.headers_mut();
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    for (name, value) in [
        ("x-page", page.to_string()),
        ("x-per-page", per_page.to_string()),
        ("x-next-page", opt(next)),
        ("x-prev-page", opt(prev)),
        ("x-total", total.to_string()),
        ("x-total-pages", total_pages.to_string()),
        ("link", links.join(", ")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}

/// `POST /<project path>/-/alerts/notify/<name>/<id>.json`, or GitLab's 404.
async fn alert_or_not_found(
    State(state): State<Arc<GitLabState>>,
    method: Method,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request,
) -> Response {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let target = path
        .split_once("/-/alerts/notify/")
        .and_then(|(project, rest)| {
            let (name, file) = rest.split_once('/')?;
            let id: u64 = file.strip_suffix(".json")?.parse().ok()?;
            Some((project.to_owned(), name.to_owned(), id))
        });
    match (method, target) {
        (Method::POST, Some((project, name, id))) => {
            receive_alert(&state, &project, &name, id, &headers, body)
        }
        _ => error(404, "404 Not Found").into_response(),
    }
}

fn receive_alert(
    state: &GitLabState,
    project_path: &str,
    name: &str,
    integration_id: u64,
    headers: &HeaderMap,
    payload: Option<Value>,
) -> Response {
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    // A web route, not the API: a POST does not follow an old path's redirect
    // (`app/controllers/concerns/routable_actions.rb`: `follow_redirects: request.get?`).
    let Some(project) = data
        .projects
        .iter_mut()
        .find(|p| p.cfg.path_with_namespace.eq_ignore_ascii_case(project_path))
    else {
        return raw_response(404, "");
    };
    let Some((_, _, key)) = project
        .cfg
        .alert_integrations
        .iter()
        .find(|(n, i, _)| n == name && *i == integration_id)
    else {
        return raw_response(404, "");
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == key);
    if !authorized {
        return raw_response(401, "");
    }
    let Some(payload) = payload.filter(Value::is_object) else {
        return raw_response(400, "");
    };
    let now = Utc::now();
    let fingerprint = match &payload["fingerprint"] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(items) if !items.is_empty() => Some(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let resolving = payload
        .get("end_time")
        .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    let open = fingerprint.as_ref().and_then(|f| {
        project
            .alerts
            .iter()
            .position(|a| a.status == AlertStatus::Triggered && a.fingerprint.as_ref() == Some(f))
    });
    let answered = match (open, resolving) {
        (Some(i), false) => {
            let alert = &mut project.alerts[i];
            alert.events += 1;
            alert.payloads.push(payload);
            Some((alert.iid, alert.title.clone()))
        }
        (Some(i), true) => {
            let auto_close = project.cfg.auto_close_incident;
            let alert = &mut project.alerts[i];
            alert.status = AlertStatus::Resolved;
            alert.resolved_at = Some(now);
            alert.payloads.push(payload);
            let answer = (alert.iid, alert.title.clone());
            if let Some(incident) = alert
                .incident_iid
                .filter(|_| auto_close)
                .and_then(|iid| project.issues.get_mut(&iid))
                .filter(|i| i.state == RemoteState::Opened)
            {
                incident.state = RemoteState::Closed;
                incident.closed_at = Some(now);
                incident.updated_at = now;
                incident.closed_by_id = Some(ALERT_BOT_ID);
                let closed = incident.clone();
                data.dora.incident_event(&closed, IncidentEvent::Closed);
            }
            Some(answer)
        }
        // A recovery with no unresolved alert for its fingerprint creates nothing
        // (`AlertManagement::AlertProcessing#process_new_alert`: `return if resolving_alert?`,
        // app/services/concerns/alert_management/alert_processing.rb), and
        // `Projects::Alerting::NotifyService#execute` then answers
        // `bad_request unless alert.persisted?` (app/services/projects/alerting/notify_service.rb).
        (None, true) => return raw_response(400, ""),
        (None, false) => {
            // `Gitlab::AlertManagement::Payload::Generic`: `DEFAULT_TITLE = 'New: Incident'`,
            // `DEFAULT_SEVERITY = 'critical'` (lib/gitlab/alert_management/payload/generic.rb).
            let title = payload["title"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("New: Incident")
                .chars()
                .take(200)
                .collect::<String>();
            let severity = payload["severity"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .filter(|s| {
                    ["critical", "high", "medium", "low", "info", "unknown"].contains(&s.as_str())
                })
                .unwrap_or_else(|| "critical".to_owned());
            let incident_severity = match severity.as_str() {
                "info" => "UNKNOWN".to_owned(),
                s => s.to_ascii_uppercase(),
            };
            data.next_issue_id += 1;
            let iid = project.next_iid;
            project.next_iid += 1;
            project.issues.insert(
                iid,
                FakeGitLabIssue {
                    id: data.next_issue_id,
                    iid,
                    project_id: project.cfg.id,
                    title: title.clone(),
                    description: payload["description"].as_str().map(str::to_owned),
                    state: RemoteState::Opened,
                    // GitLab stamps the incident with the arrival time, not `start_time`.
                    created_at: now,
                    updated_at: now,
                    closed_at: None,
                    labels: Vec::new(),
                    issue_type: "incident".to_owned(),
                    confidential: false,
                    severity: incident_severity,
                    author_id: ALERT_BOT_ID,
                    closed_by_id: None,
                    assignee_ids: Vec::new(),
                    due_date: None,
                    moved_to_id: None,
                },
            );
            let alert_iid = project.alerts.len() as u64 + 1;
            project.alerts.push(FakeAlert {
                project_id: project.cfg.id,
                iid: alert_iid,
                title: title.clone(),
                fingerprint,
                status: AlertStatus::Triggered,
                events: 1,
                payloads: vec![payload],
                incident_iid: Some(iid),
                created_at: now,
                resolved_at: None,
            });
            if let Some(created) = project.issues.get(&iid) {
                data.dora.incident_event(created, IncidentEvent::Created);
            }
            Some((alert_iid, title))
        }
    };
    let body: Vec<Value> = answered
        .into_iter()
        .map(|(iid, title)| json!({ "iid": iid, "title": title }))
        .collect();
    json_response(200, &Value::Array(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SCHEMA: &str = include_str!(
        "../../tests/fixtures/gitlab/gitlab_spec_fixtures_api_schemas_public_api_v4_issue.json"
    );
    const OTHER_TOKEN: &str = "glpat-developer";

    /// The default project plus a Developer (user 2) with their own token.
    fn config() -> FakeGitLabConfig {
        let mut config = FakeGitLabConfig::default();
        config.tokens.push((
            OTHER_TOKEN.to_owned(),
            FakeUser {
                id: 2,
                username: "dev".to_owned(),
                name: "Dev".to_owned(),
                admin: false,
            },
        ));
        config.projects[0].members.push((2, access::DEVELOPER));
        config
    }

    async fn start() -> FakeGitLab {
        FakeGitLab::start(config()).await.unwrap()
    }

    fn issues_url(gitlab: &FakeGitLab) -> url::Url {
        gitlab
            .base_url()
            .join("api/v4/projects/acme%2Fops/issues")
            .unwrap()
    }

    async fn create(gitlab: &FakeGitLab, token: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(issues_url(gitlab))
            .header("PRIVATE-TOKEN", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 2, 15, h, 0, 0).unwrap()
    }

    /// An Owner's `created_at` is kept; a Developer's is silently replaced by now, still 201.
    #[tokio::test]
    async fn created_at_only_for_owner() {
        let gitlab = start().await;
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a", "created_at": "2025-02-15T09:00:00Z", "issue_type": "incident", "labels": "jira,sev::1" }),
        )
        .await;
        assert_eq!(status, 201, "the owner may create");
        assert_eq!(
            body["created_at"], "2025-02-15T09:00:00.000Z",
            "the owner's created_at is honoured"
        );
        assert_eq!(
            body["updated_at"], body["created_at"],
            "updated_at follows created_at"
        );
        assert_eq!(
            body["type"], "INCIDENT",
            "issue_type=incident makes an incident"
        );
        assert_eq!(
            body["labels"],
            json!(["jira", "sev::1"]),
            "comma-separated labels"
        );
        let (status, body) = create(
            &gitlab,
            OTHER_TOKEN,
            json!({ "title": "b", "created_at": "2025-02-15T09:00:00Z" }),
        )
        .await;
        assert_eq!(status, 201, "a developer may create too");
        let stored = gitlab.issue(1, body["iid"].as_u64().unwrap()).unwrap();
        assert!(
            stored.created_at > at(12),
            "a developer's created_at is ignored, not an error"
        );
    }

    /// Created issues carry every key GitLab's own schema requires.
    #[tokio::test]
    async fn issue_shape_matches_gitlab_schema() {
        let gitlab = start().await;
        let (_, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a" }),
        )
        .await;
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        for key in schema["required"].as_array().unwrap() {
            let key = key.as_str().unwrap();
            assert!(body.get(key).is_some(), "required key {key} is missing");
        }
        for key in schema["properties"]["author"]["required"]
            .as_array()
            .unwrap()
        {
            let key = key.as_str().unwrap();
            assert!(
                body["author"].get(key).is_some(),
                "author key {key} is missing"
            );
        }
        assert!(
            schema["properties"]["severity"]["enum"]
                .as_array()
                .unwrap()
                .contains(&body["severity"]),
            "severity is one of the schema's values"
        );
        assert!(
            body["references"]["full"]
                .as_str()
                .unwrap()
                .ends_with("acme/ops#1"),
            "references"
        );
    }

    /// Closing with an Owner's `updated_at` records it as `closed_at`; reopening clears it.
    #[tokio::test]
    async fn close_with_updated_at_sets_closed_at() {
        let gitlab = start().await;
        let (_, created) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a", "created_at": "2025-02-15T09:00:00Z" }),
        )
        .await;
        let url = gitlab
            .base_url()
            .join(&format!("api/v4/projects/1/issues/{}", created["iid"]))
            .unwrap();
        let client = reqwest::Client::new();
        let resp = client
            .put(url.clone())
            .bearer_auth(FakeGitLabConfig::DEFAULT_TOKEN)
            .form(&[
                ("state_event", "close"),
                ("updated_at", "2025-02-15T11:00:00Z"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "the owner may close");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["state"], "closed", "closed");
        assert_eq!(
            body["closed_at"], "2025-02-15T11:00:00.000Z",
            "updated_at becomes closed_at"
        );
        let resp = client
            .put(url)
            .bearer_auth(FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "state_event": "reopen" }))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (body["state"].as_str(), &body["closed_at"]),
            (Some("opened"), &Value::Null),
            "reopen clears closed_at"
        );
        let missing = client
            .put(
                gitlab
                    .base_url()
                    .join("api/v4/projects/1/issues/999")
                    .unwrap(),
            )
            .bearer_auth(FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "state_event": "close" }))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "unknown iid");
    }

    /// Titles over 255 characters, missing titles, bad tokens and foreign projects are refused.
    #[tokio::test]
    async fn validation_and_access_errors() {
        let gitlab = start().await;
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "x".repeat(256) }),
        )
        .await;
        assert_eq!(status, 400, "a 256-character title is too long");
        assert_eq!(
            body["message"]["title"][0], "is too long (maximum is 255 characters)",
            "GitLab's message"
        );
        let (status, _) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "x".repeat(255) }),
        )
        .await;
        assert_eq!(status, 201, "255 characters are fine");
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "description": "d" }),
        )
        .await;
        assert_eq!(
            (status, body),
            (400, json!({ "error": "title is missing" })),
            "title is required"
        );
        let (status, body) = create(&gitlab, "wrong", json!({ "title": "a" })).await;
        assert_eq!(
            (status, body),
            (401, json!({ "message": "401 Unauthorized" })),
            "bad token"
        );
        gitlab.set_access_level(1, 2, 0);
        let (status, body) = create(&gitlab, OTHER_TOKEN, json!({ "title": "a" })).await;
        assert_eq!(
            (status, body),
            (404, json!({ "message": "404 Project Not Found" })),
            "no access looks like no project"
        );
    }

    /// A forced iid that is taken answers 409 for an Owner.
    #[tokio::test]
    async fn duplicated_iid() {
        let gitlab = start().await;
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a", "iid": 42 }),
        )
        .await;
        assert_eq!(
            (status, body["iid"].as_u64()),
            (201, Some(42)),
            "an owner may choose the iid"
        );
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "b", "iid": "42" }),
        )
        .await;
        assert_eq!(
            (status, body),
            (409, json!({ "message": "Duplicated issue" })),
            "the iid is taken"
        );
        let (_, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "c" }),
        )
        .await;
        assert_eq!(
            body["iid"], 43,
            "later iids continue after the greatest one"
        );
    }

    /// A 502 after commit leaves the issue created.
    #[tokio::test]
    async fn commit_then_status_keeps_the_write() {
        let gitlab = start().await;
        gitlab.push_fault(FaultTarget::CreateIssue, Fault::CommitThenStatus(502));
        let resp = reqwest::Client::new()
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "title": "lost answer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "the client sees a gateway error");
        assert!(
            resp.text().await.unwrap().contains("Bad Gateway"),
            "a proxy's HTML page"
        );
        assert_eq!(gitlab.issues(1).len(), 1, "but the issue was created");
        assert_eq!(
            gitlab.requests()[0].status,
            Some(502),
            "the log shows what the client saw"
        );
    }

    /// A dropped connection after commit makes reqwest fail, yet the issue exists.
    #[tokio::test]
    async fn commit_then_drop_keeps_the_write() {
        let gitlab = start().await;
        gitlab.push_fault(FaultTarget::CreateIssue, Fault::CommitThenDrop);
        let result = reqwest::Client::new()
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "title": "dropped" }))
            .send()
            .await;
        assert!(
            result.is_err(),
            "send() itself must fail (no status line arrives), got {result:?}"
        );
        assert_eq!(
            gitlab.issues(1).len(),
            1,
            "the issue was created before the drop"
        );
        assert_eq!(
            gitlab.requests()[0].status,
            None,
            "no complete answer was sent"
        );
    }

    /// A hung request commits and notifies; a held one waits for release.
    #[tokio::test]
    async fn hang_and_hold() {
        let gitlab = start().await;
        let committed = Arc::new(Notify::new());
        gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::CommitThenHang(Arc::clone(&committed)),
        );
        let client = reqwest::Client::new();
        let request = client
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "title": "hung" }))
            .send();
        let pending = tokio::spawn(request);
        committed.notified().await;
        assert_eq!(gitlab.issues(1).len(), 1, "committed before hanging");
        assert!(!pending.is_finished(), "no answer while hanging");
        pending.abort();

        let (release, arrived) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
        );
        let held = tokio::spawn(
            client
                .post(issues_url(&gitlab))
                .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
                .json(&json!({ "title": "held" }))
                .send(),
        );
        arrived.notified().await;
        assert_eq!(gitlab.issues(1).len(), 1, "not processed while held");
        release.notify_one();
        let resp = held.await.unwrap().unwrap();
        assert_eq!(resp.status(), 201, "processed normally after release");
        assert_eq!(gitlab.issues(1).len(), 2, "the held issue exists now");
    }

    /// Listing filters by search and labels and pages with GitLab's headers.
    #[tokio::test]
    async fn list_filters_and_pages() {
        let gitlab = start().await;
        for n in 1..=5 {
            let labels = if n % 2 == 1 { "jira,ops" } else { "ops" };
            create(
                &gitlab,
                FakeGitLabConfig::DEFAULT_TOKEN,
                json!({ "title": format!("Incident {n}"), "description": format!("https://jira.example/browse/OPS-{n}"), "labels": labels }),
            )
            .await;
        }
        let client = reqwest::Client::new();
        let get = |query: &'static str| {
            let mut url = issues_url(&gitlab);
            url.set_query(Some(query));
            client
                .get(url)
                .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
                .send()
        };
        let resp = get("labels=jira,ops&per_page=2&page=1&order_by=created_at&sort=asc")
            .await
            .unwrap();
        let h = resp.headers().clone();
        let body: Value = resp.json().await.unwrap();
        let titles: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap())
            .collect();
        assert_eq!(
            titles,
            ["Incident 1", "Incident 3"],
            "only issues with both labels, oldest first"
        );
        assert_eq!(h["x-total"], "3", "three issues match");
        assert_eq!(h["x-total-pages"], "2", "two pages of two");
        assert_eq!(
            (
                h["x-page"].to_str().unwrap(),
                h["x-next-page"].to_str().unwrap(),
                h["x-prev-page"].to_str().unwrap()
            ),
            ("1", "2", ""),
            "page links"
        );
        assert!(
            h["link"].to_str().unwrap().contains("rel=\"next\""),
            "a Link header"
        );
        let resp = get("search=JIRA.example/browse/OPS-4&in=description")
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body.as_array().unwrap().len(),
            1,
            "the whole link (lower-cased lexemes) is found in descriptions"
        );
        assert_eq!(body[0]["title"], "Incident 4", "the one with that link");
        let resp = get("search=OPS-4&in=description").await.unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!([]), "the key inside a link is no lexeme");
    }

    /// Searches beyond the per-minute budget get 429 with Retry-After and RateLimit headers.
    #[tokio::test]
    async fn search_rate_limit() {
        let gitlab = FakeGitLab::start(FakeGitLabConfig {
            search_per_minute: Some(2),
            ..config()
        })
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let mut url = issues_url(&gitlab);
        url.set_query(Some("search=x"));
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let resp = client
                .get(url.clone())
                .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
                .send()
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
            last = Some(resp);
        }
        assert_eq!(
            statuses,
            [200, 200, 429],
            "the third search in a minute is refused"
        );
        let h = last.unwrap().headers().clone();
        assert!(
            h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1,
            "Retry-After in seconds"
        );
        assert_eq!(h["ratelimit-remaining"], "0", "nothing remains");
        assert_eq!(h["ratelimit-limit"], "2", "the limit");
        assert!(
            h.contains_key("ratelimit-reset") && h.contains_key("ratelimit-observed"),
            "reset and observed"
        );
        let plain = client
            .get(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            plain.status(),
            200,
            "requests without search are not limited"
        );
    }

    /// The request bucket refuses excess calls; Status and RateLimited faults answer without processing.
    #[tokio::test]
    async fn request_budget_and_status_faults() {
        let gitlab = FakeGitLab::start(FakeGitLabConfig {
            requests_per_minute: Some(3),
            ..config()
        })
        .await
        .unwrap();
        gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::Status {
                status: 500,
                body: r#"{"message":"500 Internal Server Error"}"#.to_owned(),
            },
        );
        gitlab.push_fault(
            FaultTarget::Any,
            Fault::RateLimited {
                retry_after_secs: Some(1),
            },
        );
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a" }),
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (500, Some("500 Internal Server Error")),
            "the queued status"
        );
        let resp = reqwest::Client::new()
            .get(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            429,
            "the queued rate limit applies to any request"
        );
        assert_eq!(resp.headers()["retry-after"], "1", "with Retry-After");
        assert!(
            gitlab.issues(1).is_empty(),
            "neither fault processed the request"
        );
        let (status, _) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "b" }),
        )
        .await;
        assert_eq!(
            status, 201,
            "the third request is within the budget of three a minute"
        );
        let (status, _) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "c" }),
        )
        .await;
        assert_eq!(status, 429, "the fourth request in a minute is over budget");
    }

    /// Alerts group by fingerprint, each new alert opens an incident, a recovery resolves and closes it.
    #[tokio::test]
    async fn alert_dedup_and_resolve() {
        let gitlab = start().await;
        let url = gitlab.alert_url("acme/ops", "jira", 1);
        let client = reqwest::Client::new();
        let post = |payload: Value, key: &'static str| {
            client
                .post(url.clone())
                .bearer_auth(key)
                .json(&payload)
                .send()
        };
        let key = FakeGitLabConfig::DEFAULT_ALERT_KEY;
        let firing = json!({ "title": "OPS-1 down", "fingerprint": "OPS-1", "severity": "high", "start_time": "2025-01-01T00:00:00Z" });
        let resp = post(firing.clone(), key).await.unwrap();
        assert_eq!(resp.status(), 200, "the endpoint answers 200");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!([{ "iid": 1, "title": "OPS-1 down" }]),
            "the alert is listed"
        );
        post(firing.clone(), key).await.unwrap();
        let alerts = gitlab.alerts();
        assert_eq!(
            alerts.len(),
            1,
            "the same fingerprint groups into one alert"
        );
        assert_eq!(alerts[0].events, 2, "as a second event");
        let incident = gitlab.issue(1, alerts[0].incident_iid.unwrap()).unwrap();
        assert_eq!(incident.issue_type, "incident", "an incident was opened");
        assert_eq!(incident.severity, "HIGH", "with the alert's severity");
        assert!(
            incident.created_at > at(12),
            "at arrival time, not start_time"
        );
        let resp = post(json!({ "title": "x" }), "wrong").await.unwrap();
        assert_eq!(resp.status(), 401, "a wrong key is refused");
        let mut recovery = firing.clone();
        recovery["end_time"] = json!("2025-01-01T01:00:00Z");
        post(recovery, key).await.unwrap();
        let alerts = gitlab.alerts();
        assert_eq!(
            alerts[0].status,
            AlertStatus::Resolved,
            "end_time resolves the alert"
        );
        let incident = gitlab.issue(1, alerts[0].incident_iid.unwrap()).unwrap();
        assert_eq!(
            incident.state,
            RemoteState::Closed,
            "auto-close closes the incident"
        );
        assert!(incident.closed_at.is_some(), "with a closing time");
        post(firing, key).await.unwrap();
        assert_eq!(
            gitlab.alerts().len(),
            2,
            "after recovery the fingerprint opens a new alert"
        );
    }

    /// `/user`, `/projects/:id`, environments and `/version` answer like GitLab.
    #[tokio::test]
    async fn metadata_endpoints() {
        let gitlab = start().await;
        let client = reqwest::Client::new();
        let get = |path: &str| {
            client
                .get(gitlab.base_url().join(path).unwrap())
                .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
                .send()
        };
        let user: Value = get("api/v4/user").await.unwrap().json().await.unwrap();
        assert_eq!(user["username"], "sync-bot", "the token's user");
        let project: Value = get("api/v4/projects/acme%2Fops")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            project["permissions"]["project_access"]["access_level"], 50,
            "owner access"
        );
        let envs: Value = get("api/v4/projects/1/environments")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(envs[0]["tier"], "production", "a production environment");
        let version: Value = get("api/v4/version").await.unwrap().json().await.unwrap();
        assert_eq!(version["version"], "17.5.0-ee", "the version");
    }

    const GUEST_TOKEN: &str = "glpat-guest";

    /// [`config`] plus a Guest (user 3) and a second project `acme/archive` (id 2) where user 1
    /// is Owner and user 2 Developer.
    fn wide_config() -> FakeGitLabConfig {
        let mut config = config();
        config.tokens.push((
            GUEST_TOKEN.to_owned(),
            FakeUser {
                id: 3,
                username: "guest".to_owned(),
                name: "Guest".to_owned(),
                admin: false,
            },
        ));
        config.projects[0].members.push((3, access::GUEST));
        config.projects.push(FakeProject {
            id: 2,
            path_with_namespace: "acme/archive".to_owned(),
            members: vec![(1, access::OWNER), (2, access::DEVELOPER)],
            environments: Vec::new(),
            alert_integrations: Vec::new(),
            auto_close_incident: true,
        });
        config
    }

    /// One API call: `(status, JSON body or Null)`.
    async fn call(
        gitlab: &FakeGitLab,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, gitlab.base_url().join(path).unwrap())
            .header("PRIVATE-TOKEN", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn iids(body: &Value) -> Vec<u64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|i| i["iid"].as_u64().unwrap())
            .collect()
    }

    /// `search` is full-text search: keys inside links are not lexemes, plain keys are, with
    /// prefix matching, and `in` picks title (A) or description (B).
    #[tokio::test]
    async fn search_is_full_text() {
        let gitlab = start().await;
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        let link = "https://acme.atlassian.net/browse/OPS-1";
        for (title, description) in [
            ("Database down", link.to_owned()),
            ("OPS-1 broke again", "postmortem".to_owned()),
            ("OPS-12 is another one", "unrelated".to_owned()),
            ("Disk full", format!("Quoting OPS-1 here: {link}")),
        ] {
            let (status, _) = create(
                &gitlab,
                owner,
                json!({ "title": title, "description": description }),
            )
            .await;
            assert_eq!(status, 201);
        }
        let search = |q: &str| {
            let mut url = issues_url(&gitlab);
            url.query_pairs_mut()
                .append_pair("search", q)
                .append_pair("order_by", "created_at")
                .append_pair("sort", "asc");
            url.query().unwrap().to_owned()
        };
        let list = |query: String| {
            let gitlab = gitlab.clone();
            async move {
                let (status, body) = call(
                    &gitlab,
                    Method::GET,
                    &format!("api/v4/projects/1/issues?{query}"),
                    owner,
                    None,
                )
                .await;
                assert_eq!(status, 200, "{query}");
                iids(&body)
            }
        };
        assert_eq!(
            list(format!("{}&in=description", search("OPS-1"))).await,
            [4],
            "in descriptions, only the plain-word OPS-1 counts, not the one inside the link"
        );
        assert_eq!(
            list(search("OPS-1")).await,
            [2, 3, 4],
            "title and description; OPS-1 is a prefix of OPS-12"
        );
        assert_eq!(
            list(format!("{}&in=title", search("ops-1 BROKE"))).await,
            [2],
            "case-insensitive, every term"
        );
        assert_eq!(
            list(format!("{}&in=description", search(link))).await,
            [1, 4],
            "the whole link is found"
        );
        assert_eq!(
            list(search("browse/OPS-1")).await,
            Vec::<u64>::new(),
            "a piece of a link is not a substring match"
        );
        assert_eq!(
            list(search("the")).await,
            Vec::<u64>::new(),
            "stop words alone match nothing"
        );
    }

    /// `author_id`, `author_username`, `scope`, comma-separated `iids`, inclusive
    /// `created_after`/`created_before`, and a person's issue listed as theirs.
    #[tokio::test]
    async fn list_filters_by_author_and_dates() {
        let gitlab = FakeGitLab::start(wide_config()).await.unwrap();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        create(
            &gitlab,
            owner,
            json!({ "title": "mine", "created_at": "2025-02-15T09:00:00Z" }),
        )
        .await;
        create(&gitlab, OTHER_TOKEN, json!({ "title": "dev's" })).await;
        let person = gitlab
            .create_person_issue(
                1,
                FakeGitLab::PERSON_ID,
                "Postmortem",
                "See https://acme.atlassian.net/browse/OPS-1",
            )
            .unwrap();
        assert_eq!(person, 3, "the next iid");
        let list = |query: &'static str| {
            let gitlab = gitlab.clone();
            async move {
                let (status, body) = call(
                    &gitlab,
                    Method::GET,
                    &format!("api/v4/projects/1/issues?sort=asc&{query}"),
                    owner,
                    None,
                )
                .await;
                (status, body)
            }
        };
        let (_, body) = list("author_id=1").await;
        assert_eq!(iids(&body), [1], "only the sync user's issue");
        let (_, body) = list("author_id=9998").await;
        assert_eq!(iids(&body), [3], "the person's issue");
        assert_eq!(body[0]["author"]["username"], "a.person", "the person");
        let (_, body) = list("author_username=dev").await;
        assert_eq!(iids(&body), [2], "by username");
        let (_, body) = list("scope=created_by_me").await;
        assert_eq!(iids(&body), [1], "scope");
        let (status, body) = list("author_id=1&author_username=dev").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (
                400,
                Some("author_id, author_username are mutually exclusive")
            ),
            "Grape's mutually_exclusive"
        );
        let (status, _) = list("author_id=x").await;
        assert_eq!(status, 400, "author_id is an Integer");
        let (_, body) = list("iids=1,3").await;
        assert_eq!(iids(&body), [1, 3], "comma-separated iids");
        let (_, body) = list("iids[]=2&author_id=1").await;
        assert_eq!(iids(&body), Vec::<u64>::new(), "filters combine");
        let (_, body) =
            list("created_after=2025-02-15T09:00:00Z&created_before=2025-02-15T09:00:00Z").await;
        assert_eq!(iids(&body), [1], "both bounds are inclusive");
    }

    /// Quick actions in a new issue's description run (those available before the issue
    /// exists) and vanish from the text; unknown ones and those in code stay.
    #[tokio::test]
    async fn quick_actions_on_create() {
        let gitlab = start().await;
        gitlab.create_label(1, "sev::1");
        let description = "Postmortem\n/confidential\n/label ~sev::1 ~missing\n/CLOSE\n/title X\n/due 2025-03-01\n/assign me\n/foo bar\n\n```\n/close\n```\n\n  /unlabel";
        let (status, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "t", "description": description, "labels": "jira" }),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(
            body["description"], "Postmortem\n/foo bar\n\n```\n/close\n```\n\n  /unlabel",
            "commands stripped; unknown, fenced and indented ones kept"
        );
        assert_eq!(body["confidential"], true, "/confidential");
        assert_eq!(
            body["labels"],
            json!(["jira", "sev::1"]),
            "/label adds existing labels only"
        );
        assert_eq!(
            (body["state"].as_str(), body["title"].as_str()),
            (Some("opened"), Some("t")),
            "/close and /title need a persisted issue"
        );
        assert_eq!(body["due_date"], "2025-03-01", "/due");
        assert_eq!(body["assignees"][0]["username"], "sync-bot", "/assign me");
        let (_, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "i", "issue_type": "incident", "description": "x\n/severity S2" }),
        )
        .await;
        assert_eq!(
            (body["severity"].as_str(), body["description"].as_str()),
            (Some("HIGH"), Some("x")),
            "/severity on an incident"
        );
        let (_, body) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "i", "description": "/severity high" }),
        )
        .await;
        assert_eq!(
            (body["severity"].as_str(), body["description"].as_str()),
            (Some("UNKNOWN"), Some("")),
            "/severity does nothing on a plain issue but still vanishes"
        );
    }

    /// On update, quick actions run only when a description is sent, with the user's rights.
    #[tokio::test]
    async fn quick_actions_on_update() {
        let gitlab = FakeGitLab::start(wide_config()).await.unwrap();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        let (_, created) = create(
            &gitlab,
            owner,
            json!({ "title": "t", "description": "d", "labels": "a,b" }),
        )
        .await;
        let iid = created["iid"].as_u64().unwrap();
        let put = |token: &'static str, body: Value| {
            let gitlab = gitlab.clone();
            async move {
                call(
                    &gitlab,
                    Method::PUT,
                    &format!("api/v4/projects/1/issues/{iid}"),
                    token,
                    Some(body),
                )
                .await
            }
        };
        let (status, body) = put(
            OTHER_TOKEN,
            json!({ "description": "new text\n/close\n/title New\n/unlabel ~a", "title": "ignored" }),
        )
        .await;
        assert_eq!(status, 200, "a Developer may update");
        assert_eq!(
            (
                body["state"].as_str(),
                body["title"].as_str(),
                body["description"].as_str()
            ),
            (Some("closed"), Some("New"), Some("new text")),
            "/close and /title run (the command wins over the title parameter)"
        );
        assert_eq!(body["labels"], json!(["b"]), "/unlabel ~a");
        assert_eq!(
            body["closed_by"]["username"], "dev",
            "closed by the token's user"
        );
        let (_, body) = put(owner, json!({ "title": "/reopen" })).await;
        assert_eq!(
            (body["state"].as_str(), body["title"].as_str()),
            (Some("closed"), Some("/reopen")),
            "no description, no quick actions"
        );
        let (_, guest_issue) = create(
            &gitlab,
            GUEST_TOKEN,
            json!({ "title": "g", "description": "x" }),
        )
        .await;
        let giid = guest_issue["iid"].as_u64().unwrap();
        let (status, body) = call(
            &gitlab,
            Method::PUT,
            &format!("api/v4/projects/1/issues/{giid}"),
            GUEST_TOKEN,
            Some(json!({ "description": "y\n/confidential\n/close" })),
        )
        .await;
        assert_eq!(status, 200, "the author may update their issue");
        assert_eq!(
            (body["confidential"].as_bool(), body["state"].as_str()),
            (Some(false), Some("closed")),
            "a Guest may close their own issue but not set metadata on it"
        );
    }

    /// `/move` in a description and the `move_issue` helper: the original is closed and
    /// carries `moved_to_id`; the copy is open in the other project.
    #[tokio::test]
    async fn moved_issues() {
        let gitlab = FakeGitLab::start(wide_config()).await.unwrap();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        let (_, a) = create(
            &gitlab,
            owner,
            json!({ "title": "a", "description": "d", "created_at": "2025-02-15T09:00:00Z" }),
        )
        .await;
        let new_iid = gitlab.move_issue(1, 1, 2).unwrap();
        let (status, original) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/1/issues/1",
            owner,
            None,
        )
        .await;
        assert_eq!(status, 200, "the original is still there");
        let copy = gitlab.issue(2, new_iid).unwrap();
        assert_eq!(
            (original["state"].as_str(), original["moved_to_id"].as_u64()),
            (Some("closed"), Some(copy.id)),
            "closed, moved_to_id is the copy's id"
        );
        assert_eq!(
            original["closed_by"]["username"], "a.person",
            "by the person"
        );
        assert_eq!(
            original["_links"]["closed_as_duplicate_of"],
            Value::Null,
            "not a duplicate"
        );
        assert_eq!(
            (
                copy.state,
                copy.title.as_str(),
                copy.author_id,
                copy.created_at.to_rfc3339()
            ),
            (
                RemoteState::Opened,
                "a",
                1,
                "2025-02-15T09:00:00+00:00".to_owned()
            ),
            "the copy is open, same author and creation time"
        );
        assert_ne!(copy.id, a["id"].as_u64().unwrap(), "a new issue");
        assert!(
            gitlab.move_issue(1, 1, 2).is_none(),
            "a moved issue does not move again"
        );
        create(&gitlab, owner, json!({ "title": "b" })).await;
        let (_, body) = call(
            &gitlab,
            Method::PUT,
            "api/v4/projects/1/issues/2",
            OTHER_TOKEN,
            Some(json!({ "description": "bye\n/move acme/archive" })),
        )
        .await;
        assert_eq!(
            (body["state"].as_str(), body["description"].as_str()),
            (Some("closed"), Some("bye")),
            "/move closes the original"
        );
        assert!(body["moved_to_id"].is_u64(), "and points at the copy");
        assert_eq!(gitlab.issues(2).len(), 2, "the copy is in acme/archive");
    }

    /// A moved issue's copy is found by its global id: `GET /issues/:id` for administrators
    /// only, `GET /issues` (every project the user sees, `created_by_me` unless asked) for all.
    #[tokio::test]
    async fn issues_across_projects() {
        let mut cfg = wide_config();
        cfg.tokens.push((
            "glpat-admin".to_owned(),
            FakeUser {
                id: 4,
                username: "root".to_owned(),
                name: "Admin".to_owned(),
                admin: true,
            },
        ));
        let gitlab = FakeGitLab::start(cfg).await.unwrap();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        create(
            &gitlab,
            owner,
            json!({ "title": "a", "created_at": "2025-02-15T09:00:00Z" }),
        )
        .await;
        create(&gitlab, OTHER_TOKEN, json!({ "title": "by dev" })).await;
        let copy_iid = gitlab.move_issue(1, 1, 2).unwrap();
        let copy = gitlab.issue(2, copy_iid).unwrap();
        let path = format!("api/v4/issues/{}", copy.id);
        let (status, _) = call(&gitlab, Method::GET, &path, owner, None).await;
        assert_eq!(status, 403, "administrators only");
        let (status, body) = call(&gitlab, Method::GET, &path, "glpat-admin", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["project_id"].as_u64(), body["iid"].as_u64()),
            (Some(2), Some(copy_iid))
        );
        let (status, _) = call(
            &gitlab,
            Method::GET,
            "api/v4/issues/99999",
            "glpat-admin",
            None,
        )
        .await;
        assert_eq!(status, 404);

        let (_, body) = call(&gitlab, Method::GET, "api/v4/issues", owner, None).await;
        let ids: Vec<u64> = body
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_u64())
            .collect();
        assert_eq!(
            ids.len(),
            2,
            "created by me: the original and its copy: {body}"
        );
        assert!(ids.contains(&copy.id));
        let (_, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/issues?scope=all&created_after=2025-02-15T08:59:00Z&created_before=2025-02-15T09:01:00Z",
            owner,
            None,
        )
        .await;
        let found: Vec<(u64, u64)> = body
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| Some((i["project_id"].as_u64()?, i["iid"].as_u64()?)))
            .collect();
        assert_eq!(
            found,
            [(2, copy_iid), (1, 1)],
            "newest first, across projects"
        );
        let (_, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/issues?scope=all",
            GUEST_TOKEN,
            None,
        )
        .await;
        assert_eq!(
            body.as_array().unwrap().len(),
            2,
            "a member of acme/ops only sees its issues: {body}"
        );
    }

    /// A renamed project answers at its old path until another project takes the path.
    #[tokio::test]
    async fn rename_redirects_until_the_path_is_taken() {
        let gitlab = FakeGitLab::start(wide_config()).await.unwrap();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        assert!(gitlab.rename_project(1, "acme/operations"));
        let (status, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Fops",
            owner,
            None,
        )
        .await;
        assert_eq!(
            (status, body["path_with_namespace"].as_str()),
            (200, Some("acme/operations")),
            "the old path redirects"
        );
        let (status, body) = call(
            &gitlab,
            Method::POST,
            "api/v4/projects/acme%2Fops/issues",
            owner,
            Some(json!({ "title": "via old path" })),
        )
        .await;
        assert_eq!(
            (status, body["project_id"].as_u64()),
            (201, Some(1)),
            "POST follows too"
        );
        assert!(
            body["web_url"]
                .as_str()
                .unwrap()
                .contains("acme/operations/-/issues/1")
        );
        let (status, body) = call(
            &gitlab,
            Method::PUT,
            "api/v4/projects/acme%2Fops/issues/1",
            owner,
            Some(json!({ "state_event": "close" })),
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("closed")),
            "PUT follows too"
        );
        let (status, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Fops/issues?state=closed",
            owner,
            None,
        )
        .await;
        assert_eq!((status, iids(&body)), (200, vec![1]), "and listing");
        let resp = reqwest::Client::new()
            .post(gitlab.alert_url("acme/ops", "jira", 1))
            .bearer_auth(FakeGitLabConfig::DEFAULT_ALERT_KEY)
            .json(&json!({ "title": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            404,
            "the alert endpoint (a POST web route) does not follow"
        );
        assert!(
            !gitlab.rename_project(2, "acme/operations"),
            "a path in use cannot be taken"
        );
        assert!(
            gitlab.rename_project(2, "acme/ops"),
            "the old path can be taken"
        );
        let (_, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Fops",
            owner,
            None,
        )
        .await;
        assert_eq!(body["id"], 2, "the project now at the old path wins");
        assert!(gitlab.rename_project(2, "acme/archive"));
        let (_, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Fops",
            owner,
            None,
        )
        .await;
        assert_eq!(
            body["id"], 2,
            "the old path now redirects to the second project"
        );
        assert!(gitlab.add_project(FakeProject {
            id: 3,
            path_with_namespace: "acme/ops".to_owned(),
            members: vec![(1, access::OWNER)],
            environments: Vec::new(),
            alert_integrations: Vec::new(),
            auto_close_incident: false,
        }));
        let (_, body) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Fops",
            owner,
            None,
        )
        .await;
        assert_eq!(
            body["id"], 3,
            "a project created at the path wins over the redirect"
        );
        let (status, _) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/acme%2Foperations",
            owner,
            None,
        )
        .await;
        assert_eq!(status, 200, "the current path still works");
    }

    /// A recovery without an unresolved alert is a 400; no severity files a critical incident;
    /// an alert resolved by hand makes the next recovery a 400 and the next firing a new alert.
    #[tokio::test]
    async fn alert_recovery_and_manual_resolve() {
        let gitlab = start().await;
        let client = reqwest::Client::new();
        let post = |payload: Value| {
            client
                .post(gitlab.alert_url("acme/ops", "jira", 1))
                .bearer_auth(FakeGitLabConfig::DEFAULT_ALERT_KEY)
                .json(&payload)
                .send()
        };
        let recovery = json!({ "fingerprint": "OPS-9", "end_time": "2025-01-01T01:00:00Z" });
        let resp = post(recovery.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "nothing to resolve");
        assert!(gitlab.alerts().is_empty(), "and nothing created");
        let resp = post(json!({ "fingerprint": "OPS-9" })).await.unwrap();
        assert_eq!(resp.status(), 200);
        let alert = gitlab.alerts()[0].clone();
        assert_eq!(alert.title, "New: Incident", "Generic::DEFAULT_TITLE");
        let incident = gitlab.issue(1, alert.incident_iid.unwrap()).unwrap();
        assert_eq!(incident.severity, "CRITICAL", "Generic::DEFAULT_SEVERITY");
        assert!(gitlab.resolve_alert(1, alert.iid), "a person resolves it");
        assert!(!gitlab.resolve_alert(1, alert.iid), "only once");
        let resp = post(recovery).await.unwrap();
        assert_eq!(resp.status(), 400, "the recovery finds no unresolved alert");
        assert_eq!(
            gitlab.issue(1, alert.incident_iid.unwrap()).unwrap().state,
            RemoteState::Opened,
            "the incident is left as it was"
        );
        post(json!({ "fingerprint": "OPS-9" })).await.unwrap();
        assert_eq!(gitlab.alerts().len(), 2, "a new alert for the next firing");
    }

    /// `issue_type=incident` below Reporter is silently a plain issue; `PUT` with only
    /// `updated_at` is a 400.
    #[tokio::test]
    async fn incident_rights_and_update_params() {
        let gitlab = FakeGitLab::start(wide_config()).await.unwrap();
        let (status, body) = create(
            &gitlab,
            GUEST_TOKEN,
            json!({ "title": "g", "issue_type": "incident" }),
        )
        .await;
        assert_eq!(
            (status, body["issue_type"].as_str()),
            (201, Some("issue")),
            "a Guest's incident is an issue"
        );
        let (_, body) = create(
            &gitlab,
            OTHER_TOKEN,
            json!({ "title": "d", "issue_type": "incident" }),
        )
        .await;
        assert_eq!(
            body["issue_type"], "incident",
            "a Developer may create incidents"
        );
        let (status, body) = call(
            &gitlab,
            Method::PUT,
            "api/v4/projects/1/issues/1",
            FakeGitLabConfig::DEFAULT_TOKEN,
            Some(json!({ "updated_at": "2025-02-15T11:00:00Z" })),
        )
        .await;
        assert_eq!(status, 400, "updated_at alone");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .ends_with("are missing, at least one parameter must be provided"),
            "{body}"
        );
        assert!(
            !body["error"].as_str().unwrap().contains("updated_at"),
            "not in the list"
        );
    }

    /// NUL bytes are a 400 before anything else; a body over the proxy's limit is nginx's 413,
    /// even with a bad token.
    #[tokio::test]
    async fn nul_bytes_and_body_limit() {
        let gitlab = FakeGitLab::start(FakeGitLabConfig {
            max_body_bytes: Some(1024),
            ..config()
        })
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let resp = client
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .json(&json!({ "title": "a\u{0}b" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "NUL in a JSON title");
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(resp.text().await.unwrap(), "Bad Request");
        let resp = client
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
            .form(&[("title", "ok"), ("description", "x\u{0}")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "NUL in a form field");
        let mut url = issues_url(&gitlab);
        url.set_query(Some("search=a%00"));
        let resp = client
            .get(url)
            .header("PRIVATE-TOKEN", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            400,
            "NUL in the query, before authentication"
        );
        assert!(gitlab.issues(1).is_empty(), "nothing stored");
        let resp = client
            .post(issues_url(&gitlab))
            .header("PRIVATE-TOKEN", "wrong")
            .json(&json!({ "title": "x".repeat(2000) }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "over the limit, before authentication");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("413 Request Entity Too Large")
        );
        let (status, _) = create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "small" }),
        )
        .await;
        assert_eq!(status, 201, "under the limit");
    }

    /// A deleted issue is gone for GET and PUT.
    #[tokio::test]
    async fn deleted_issue_is_404() {
        let gitlab = start().await;
        create(
            &gitlab,
            FakeGitLabConfig::DEFAULT_TOKEN,
            json!({ "title": "a" }),
        )
        .await;
        assert!(gitlab.delete_issue(1, 1));
        assert!(!gitlab.delete_issue(1, 1), "only once");
        let (status, _) = call(
            &gitlab,
            Method::GET,
            "api/v4/projects/1/issues/1",
            FakeGitLabConfig::DEFAULT_TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &gitlab,
            Method::PUT,
            "api/v4/projects/1/issues/1",
            FakeGitLabConfig::DEFAULT_TOKEN,
            Some(json!({ "state_event": "close" })),
        )
        .await;
        assert_eq!(status, 404);
    }
}
