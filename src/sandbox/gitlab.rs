//! The fake GitLab: the Issues API (create, update, get, list with search and offset paging),
//! `/user`, `/projects/:id`, environments, `/version`, the HTTP alert integration, GitLab.com's
//! rate limits, and the faults an at-least-once client must survive (an answer lost after the
//! write was committed, a dropped connection, a hang).
//!
//! It keeps GitLab's rights model where it matters for timestamps: `created_at`, `updated_at` and
//! `iid` are honoured only for project Owners and admins and silently ignored for everyone else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    HandleInner, Listener, ParsedBody, RecordedRequest, Recorder, Reply, ShutdownGuard, Unanswered,
    json_response, lock, query_pairs, raw_response, read_body,
};
use crate::domain::RemoteState;

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
    /// `UNKNOWN`, `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    pub severity: String,
    pub author_id: u64,
    pub closed_by_id: Option<u64>,
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
    shutdown: CancellationToken,
}

struct GitLabData {
    tokens: Vec<(String, FakeUser)>,
    projects: Vec<ProjectState>,
    next_issue_id: u64,
}

struct ProjectState {
    cfg: FakeProject,
    issues: BTreeMap<u64, FakeGitLabIssue>,
    next_iid: u64,
    alerts: Vec<FakeAlert>,
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
                projects: config
                    .projects
                    .into_iter()
                    .map(|cfg| ProjectState {
                        cfg,
                        issues: BTreeMap::new(),
                        next_iid: 1,
                        alerts: Vec::new(),
                    })
                    .collect(),
                next_issue_id: 1_000,
            }),
            faults: Mutex::new(VecDeque::new()),
            recorder: Recorder::default(),
            api_bucket: config
                .requests_per_minute
                .map(|l| Mutex::new(Bucket::new(l))),
            search_bucket: config.search_per_minute.map(|l| Mutex::new(Bucket::new(l))),
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
        .route("/api/v4/projects/{id}/environments", get(environments))
        .route(
            "/api/v4/projects/{id}/issues",
            get(list_issues).post(create_issue),
        )
        .route(
            "/api/v4/projects/{id}/issues/{iid}",
            get(get_issue).put(update_issue),
        )
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

/// Logs the request, adds latency, applies rate limits and queued faults.
async fn front(State(state): State<Arc<GitLabState>>, req: Request, next: Next) -> Response {
    let (req, body) = read_body(req).await;
    let index = state
        .recorder
        .start(req.method(), req.uri(), req.headers(), body);
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let response = handle_front(&state, req, next).await;
    if response.extensions().get::<Unanswered>().is_none() {
        state.recorder.finish(index, response.status().as_u16());
    }
    response
}

async fn handle_front(state: &GitLabState, req: Request, next: Next) -> Response {
    if let Some(limited) = state.rate_limit(req.uri().query()) {
        return limited;
    }
    let fault = state.take_fault(classify(req.method(), req.uri().path()));
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
    fn take_fault(&self, target: Option<FaultTarget>) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let pos = faults
            .iter()
            .position(|(t, _)| *t == FaultTarget::Any || Some(*t) == target)?;
        faults.remove(pos).map(|(_, f)| f)
    }

    /// Applies the search and request buckets; `Some` is the 429 to answer.
    fn rate_limit(&self, query: Option<&str>) -> Option<Response> {
        let is_search = query_pairs(query)
            .iter()
            .any(|(k, v)| k == "search" && !v.is_empty());
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
        let (username, name) = if id == ALERT_BOT_ID {
            ("alert-bot".to_owned(), "GitLab Alert Bot".to_owned())
        } else {
            data.tokens
                .iter()
                .find(|(_, u)| u.id == id)
                .map(|(_, u)| (u.username.clone(), u.name.clone()))
                .unwrap_or_else(|| (format!("user{id}"), format!("User {id}")))
        };
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
            "assignees": [],
            "author": self.user_json(issue.author_id, data),
            "type": issue.issue_type.to_ascii_uppercase(),
            "assignee": null,
            "user_notes_count": 0,
            "merge_requests_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "due_date": null,
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
            "moved_to_id": null,
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
    /// The project named by `id` (numeric or a URL-decoded path) and the user's access level
    /// there; 404 when it does not exist or the user cannot see it.
    fn project_for(
        &mut self,
        id: &str,
        user: &FakeUser,
    ) -> Result<(&mut ProjectState, u32), Reply> {
        let project = self
            .projects
            .iter_mut()
            .find(|p| {
                p.cfg.id.to_string() == id || p.cfg.path_with_namespace.eq_ignore_ascii_case(id)
            })
            .ok_or_else(|| message(404, "404 Project Not Found"))?;
        let level = project
            .cfg
            .members
            .iter()
            .find(|(u, _)| *u == user.id)
            .map_or(0, |(_, l)| *l);
        if level == 0 && !user.admin {
            return Err(message(404, "404 Project Not Found"));
        }
        Ok((project, level))
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

async fn environments(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let mut data = lock(&state.data);
    let (project, _) = data.project_for(&id, &user)?;
    let envs: Vec<Value> = project
        .cfg
        .environments
        .iter()
        .enumerate()
        .map(|(i, (name, tier))| {
            json!({
                "id": project.cfg.id * 100 + i as u64 + 1,
                "name": name,
                "slug": name.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
                "external_url": null,
                "state": "available",
                "tier": tier,
                "created_at": "2024-01-01T00:00:00.000Z",
                "updated_at": "2024-01-01T00:00:00.000Z",
            })
        })
        .collect();
    Ok(json_response(200, &Value::Array(envs)))
}

async fn create_issue(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let body = body.unwrap_or(Value::Null);
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let issue_id = data.next_issue_id + 1;
    let (project, level) = data.project_for(&id, &user)?;
    let title = param(&body, "title")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| error(400, "title is missing"))?;
    validate_title(&title)?;
    let issue_type = validate_issue_type(param(&body, "issue_type"))?;
    // Grape checks the types for everyone; only the rights decide whether they are used.
    let created_at = param(&body, "created_at")
        .map(|t| parse_time("created_at", &t))
        .transpose()?;
    let iid = param(&body, "iid")
        .map(|v| v.parse::<u64>().map_err(|_| error(400, "iid is invalid")))
        .transpose()?;
    let privileged = user.admin || level >= access::OWNER;
    let iid = match iid.filter(|_| privileged) {
        Some(iid) if project.issues.contains_key(&iid) => {
            return Err(message(409, "Duplicated issue"));
        }
        Some(iid) => iid,
        None => project.next_iid,
    };
    project.next_iid = project.next_iid.max(iid + 1);
    let now = Utc::now();
    let created = created_at.filter(|_| privileged).unwrap_or(now);
    let issue = FakeGitLabIssue {
        id: issue_id,
        iid,
        project_id: project.cfg.id,
        title,
        description: param(&body, "description"),
        state: RemoteState::Opened,
        created_at: created,
        updated_at: created,
        closed_at: None,
        labels: labels(&body["labels"]).unwrap_or_default(),
        issue_type: issue_type.unwrap_or_else(|| "issue".to_owned()),
        confidential: truthy(param(&body, "confidential")).unwrap_or(false),
        severity: "UNKNOWN".to_owned(),
        author_id: user.id,
        closed_by_id: None,
    };
    project.issues.insert(iid, issue.clone());
    let path = project.cfg.path_with_namespace.clone();
    data.next_issue_id = issue_id;
    Ok(json_response(201, &state.issue_json(&issue, &path, data)))
}

/// The parameters `PUT /issues/:iid` knows; at least one must be given.
const UPDATE_PARAMS: [&str; 10] = [
    "title",
    "description",
    "labels",
    "add_labels",
    "remove_labels",
    "state_event",
    "issue_type",
    "confidential",
    "updated_at",
    "discussion_locked",
];

async fn update_issue(
    State(state): State<Arc<GitLabState>>,
    Path((id, iid)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let body = body.unwrap_or(Value::Null);
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let (project, level) = data.project_for(&id, &user)?;
    let path = project.cfg.path_with_namespace.clone();
    let issue = iid
        .parse::<u64>()
        .ok()
        .and_then(|iid| project.issues.get_mut(&iid))
        .ok_or_else(|| message(404, "404 Not found"))?;
    if !UPDATE_PARAMS.iter().any(|p| !body[*p].is_null()) {
        return Err(error(
            400,
            &format!(
                "{} are missing, at least one parameter must be provided",
                UPDATE_PARAMS.join(", ")
            ),
        ));
    }
    if !user.admin && level < access::REPORTER && issue.author_id != user.id {
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
    let issue_type = validate_issue_type(param(&body, "issue_type"))?;
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
    let privileged = user.admin || level >= access::OWNER;
    let honoured = updated_at.filter(|_| privileged);
    let when = honoured.unwrap_or_else(Utc::now);
    let before = issue.clone();
    if let Some(t) = title {
        issue.title = t;
    }
    if !body["description"].is_null() {
        issue.description = param(&body, "description");
    }
    if let Some(l) = labels(&body["labels"]) {
        issue.labels = l;
    }
    if let Some(add) = labels(&body["add_labels"]) {
        issue.labels.extend(add);
        issue.labels.sort();
        issue.labels.dedup();
    }
    if let Some(remove) = labels(&body["remove_labels"]) {
        issue.labels.retain(|l| !remove.contains(l));
    }
    if let Some(t) = issue_type {
        issue.issue_type = t;
    }
    if let Some(c) = truthy(param(&body, "confidential")) {
        issue.confidential = c;
    }
    match (state_event.as_deref(), issue.state) {
        (Some("close"), RemoteState::Opened) => {
            issue.state = RemoteState::Closed;
            // GitLab's system_note_timestamp: an honoured updated_at is the closing time.
            issue.closed_at = Some(when);
            issue.closed_by_id = Some(user.id);
        }
        (Some("reopen"), RemoteState::Closed) => {
            issue.state = RemoteState::Opened;
            issue.closed_at = None;
            issue.closed_by_id = None;
        }
        _ => {}
    }
    if *issue != before || honoured.is_some() {
        issue.updated_at = when;
    }
    let issue = issue.clone();
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
    let user = state.authenticate(&headers)?;
    let pairs = query_pairs(query.as_deref());
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
    let order_by = get("order_by").unwrap_or_else(|| "created_at".to_owned());
    if !matches!(order_by.as_str(), "created_at" | "updated_at" | "title") {
        return Err(error(400, "order_by does not have a valid value"));
    }
    let ascending = match get("sort").as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(error(400, "sort does not have a valid value")),
    };
    let issue_type = validate_issue_type(get("issue_type"))?;
    let search = get("search")
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase());
    let within = get("in").unwrap_or_else(|| "title,description".to_owned());
    let (in_title, in_description) = (within.contains("title"), within.contains("description"));
    let label_filter = get("labels").map(|l| labels(&Value::String(l)).unwrap_or_default());
    let iids: Vec<u64> = pairs
        .iter()
        .filter(|(k, _)| k == "iids[]" || k == "iids")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
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
    let (project, _) = data.project_for(&id, &user)?;
    let path = project.cfg.path_with_namespace.clone();
    let mut found: Vec<FakeGitLabIssue> = project
        .issues
        .values()
        .filter(|i| match wanted_state.as_str() {
            "opened" => i.state == RemoteState::Opened,
            "closed" => i.state == RemoteState::Closed,
            _ => true,
        })
        .filter(|i| issue_type.as_ref().is_none_or(|t| &i.issue_type == t))
        .filter(|i| iids.is_empty() || iids.contains(&i.iid))
        .filter(|i| match label_filter.as_deref() {
            None => true,
            Some([only]) if only.eq_ignore_ascii_case("none") => i.labels.is_empty(),
            Some([only]) if only.eq_ignore_ascii_case("any") => !i.labels.is_empty(),
            Some(all) => all.iter().all(|l| i.labels.contains(l)),
        })
        .filter(|i| {
            search.as_ref().is_none_or(|s| {
                (in_title && i.title.to_lowercase().contains(s))
                    || (in_description
                        && i.description
                            .as_ref()
                            .is_some_and(|d| d.to_lowercase().contains(s)))
            })
        })
        .filter(|i| {
            bounds.iter().all(|(name, t)| match *name {
                "created_after" => i.created_at >= *t,
                "created_before" => i.created_at <= *t,
                "updated_after" => i.updated_at >= *t,
                _ => i.updated_at <= *t,
            })
        })
        .cloned()
        .collect();
    found.sort_by(|a, b| {
        let ord = match order_by.as_str() {
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "title" => a.title.cmp(&b.title),
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
        .map(|i| state.issue_json(i, &path, data))
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
            }
            Some(answer)
        }
        // A recovery for an alert that is not open changes nothing.
        (None, true) => None,
        (None, false) => {
            let title = payload["title"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("New: Alert")
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
        let resp = get("search=BROWSE/OPS-4&in=description").await.unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body.as_array().unwrap().len(),
            1,
            "case-insensitive search in descriptions"
        );
        assert_eq!(body[0]["title"], "Incident 4", "the one with that link");
        let resp = get("search=OPS-4&in=title").await.unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!([]), "the link is not in any title");
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
}
