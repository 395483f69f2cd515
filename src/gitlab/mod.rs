//! The GitLab client: create issues and incidents (with Jira's `created_at`), close and reopen
//! them (with Jira's resolution time as `closed_at`), find what an interrupted create left, find
//! where a person moved an issue, post alerts to a project's HTTP alert integration, set an
//! incident's severity and write its timeline events over GraphQL (`graphql`), and the reads
//! `check` needs.
//!
//! It owns GitLab's wire format and error bodies. It never retries a create blindly: an
//! ambiguous failure is returned (`PortError::is_ambiguous`) and the engine looks first.

mod graphql;
mod wire;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::json;
use tracing::instrument;

use crate::config::{Destination, GitLabConfig, SyncConfig};
use crate::domain::{
    IncidentSeverity, JiraKey, LabelEvent, Mapping, NewObject, NewTimelineEvent, RemoteObject,
    RemoteState, Target, TimelineEvent,
};
use crate::engine::ports::{GitLabSink, PortError, ResolvedProject};
use crate::http::{DecodeError, HttpClient, HttpError, RequestKind, Response, Transport};

pub use wire::{Environment, ProjectAccess, User};

/// GitLab's access level for Owner: the role that may set `created_at` and `updated_at`.
pub const OWNER: u32 = 50;

/// GitLab's access level for Reporter: below it, `issue_type=incident` is dropped silently and
/// an incident is filed as a plain issue (`create_incident` in `app/policies/project_policy.rb`).
pub const REPORTER: u32 = 20;

/// What a GitLab request addressed. A 403 or 404 means something different for each: a
/// project that is not there stops the run, an issue that is not there is that issue's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// The token's user (`GET /user`).
    User,
    /// A project as configured (`gitlab_project`: a path or an id), read or created in.
    Project(String),
    /// One issue of a project.
    Issue { project: String, iid: u64 },
    /// A project's environments.
    Environments(String),
    /// A rule's HTTP alert integration (`alert_url`).
    AlertIntegration,
    /// The copy of an issue a person moved, by its global id.
    MovedCopy(u64),
    /// GitLab's GraphQL API (`/api/graphql`).
    GraphQl,
    /// An incident's timeline event, by its global id.
    TimelineEvent(String),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::User => f.write_str("user"),
            Resource::Project(p) => write!(f, "project {p:?}"),
            Resource::Issue { project, iid } => write!(f, "issue {project}#{iid}"),
            Resource::Environments(p) => write!(f, "environments of project {p:?}"),
            Resource::AlertIntegration => f.write_str("alert integration at alert_url"),
            Resource::MovedCopy(id) => write!(f, "moved issue's copy (id {id})"),
            Resource::GraphQl => f.write_str("GraphQL API"),
            Resource::TimelineEvent(id) => write!(f, "timeline event {id}"),
        }
    }
}

/// Why a GitLab call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// 401: the token, or for an alert integration the rule's alert key, was refused.
    #[error("{}", unauthorized_message(resource, what, key, message))]
    Unauthorized {
        resource: Resource,
        what: String,
        /// The setting the refused secret comes from (`gitlab.token_file`).
        key: String,
        message: String,
    },
    #[error("{}", forbidden_message(resource, what, message))]
    Forbidden {
        resource: Resource,
        what: String,
        message: String,
    },
    #[error("{}", not_found_message(resource, what, message))]
    NotFound {
        resource: Resource,
        what: String,
        message: String,
    },
    #[error("GitLab rejected {what} (HTTP {status}): {message}")]
    Rejected {
        what: String,
        status: u16,
        message: String,
    },
    /// An alert recovery answered 400: GitLab has no open alert with its fingerprint.
    #[error("GitLab has no open alert to resolve for {what} (HTTP 400)")]
    NoOpenAlert { what: String },
    #[error("cannot send {what}: {reason}")]
    Unsendable { what: String, reason: &'static str },
    #[error("GitLab request for {what} failed")]
    Http {
        what: String,
        #[source]
        source: HttpError,
    },
    /// GitLab's GraphQL API refused the request before running it: this GitLab does not know
    /// the query (an older version).
    #[error(
        "GitLab's GraphQL API does not take {what}: {message}; this GitLab may be too old (incident \
         timeline tags need GitLab 15.9 or later)"
    )]
    GraphQlInvalid { what: String, message: String },
    /// GitLab's GraphQL API ran the request and refused it for the token while the REST API
    /// shows the incident: the token's scope or its user's role does not allow it.
    #[error(
        "GitLab's GraphQL API refused {what}: {message}; the token needs the api scope, and its \
         user Reporter or more for severities and Developer or more for timeline events"
    )]
    GraphQlRefused { what: String, message: String },
    /// A GraphQL mutation ran and answered errors of its own (the values were refused).
    #[error("GitLab refused {what}: {}", errors.join("; "))]
    GraphQlErrors { what: String, errors: Vec<String> },
    #[error("GitLab's answer to {what} could not be read")]
    Decode {
        what: String,
        #[source]
        source: DecodeError,
    },
}

/// `HTTP 404`, with GitLab's own message after it when it sent one.
fn status_text(status: u16, message: &str) -> String {
    match message.trim() {
        "" => format!("HTTP {status}"),
        m => format!("HTTP {status}: {m}"),
    }
}

/// A 401: which secret to fix, the token or a rule's alert key.
fn unauthorized_message(resource: &Resource, what: &str, key: &str, message: &str) -> String {
    let status = status_text(401, message);
    match resource {
        Resource::AlertIntegration => format!(
            "GitLab rejected the alert key ({status}) for {what}: check {key}; it must hold the \
             authorization key of the HTTP alert integration at alert_url (the project's \
             Settings > Monitor > Alerts)"
        ),
        _ => format!(
            "GitLab rejected the token ({status}): check {key}; the token may be mistyped, \
             expired or revoked, or lack the api scope"
        ),
    }
}

/// A 403: which permission is missing, on what.
fn forbidden_message(resource: &Resource, what: &str, message: &str) -> String {
    let status = status_text(403, message);
    let fix = match resource {
        Resource::User => "check that the token has the api scope and its user is not blocked",
        Resource::Project(_) | Resource::Issue { .. } | Resource::Environments(_) => {
            "give the token's user Reporter or more on the project (Owner keeps Jira's times), \
             and check that the token has the api scope"
        }
        Resource::AlertIntegration => {
            "check the rule's alert key and that the integration at alert_url is active"
        }
        Resource::MovedCopy(_) => "the token's user cannot see the project the issue was moved to",
        Resource::GraphQl => "check that the token has the api scope and GraphQL is not turned off",
        Resource::TimelineEvent(_) => "give the token's user Developer or more on the project",
    };
    format!("GitLab refused access to the {resource} ({status}) for {what}: {fix}")
}

/// A 404: what is missing, and which setting names it.
fn not_found_message(resource: &Resource, what: &str, message: &str) -> String {
    let status = status_text(404, message);
    match resource {
        Resource::User => format!(
            "GitLab answered {status} for the token's user: check gitlab.url; it must be \
             GitLab's own address (like https://gitlab.example.com, with the path GitLab is \
             served under if any), not its API's"
        ),
        Resource::Project(p) => format!(
            "GitLab has no project {p:?} the token can see ({status}): check the \
             rule's gitlab_project (the path as in the project's URL, or its numeric id) and \
             that the token's user is a member of the project"
        ),
        Resource::Issue { project, iid } => format!(
            "GitLab has no issue {project}#{iid} any more ({status}) for {what}: a person \
             deleted it"
        ),
        Resource::Environments(p) => format!(
            "GitLab has no environments of project {p:?} the token can see ({status}): the \
             project may have its environments turned off"
        ),
        Resource::AlertIntegration => format!(
            "GitLab has no alert integration at the rule's alert_url ({status}) for {what}: \
             check alert_url; copy it from the project's Settings > Monitor > Alerts, and check \
             that the integration is active"
        ),
        Resource::MovedCopy(id) => format!(
            "GitLab has no copy (id {id}) of a moved issue the token can see ({status}) for \
             {what}"
        ),
        Resource::GraphQl => format!(
            "GitLab has no GraphQL API at gitlab.url ({status}) for {what}: check gitlab.url"
        ),
        Resource::TimelineEvent(id) => format!(
            "GitLab has no timeline event {id} any more ({status}) for {what}: a person deleted it"
        ),
    }
}

impl PortError for GitLabError {
    fn is_ambiguous(&self) -> bool {
        matches!(self, GitLabError::Http { source, .. } if source.is_ambiguous())
    }

    fn is_retryable(&self) -> bool {
        match self {
            GitLabError::Http { source, .. } => source.is_retryable(),
            GitLabError::Decode { .. } => true,
            _ => false,
        }
    }

    /// The token, its permissions, the configured project or alert integration, a server that
    /// redirects to another origin: every later request of the run would fail the same way. A
    /// missing *issue* is only that issue's, and a moved issue's copy out of sight only that
    /// one's.
    fn stops_run(&self) -> bool {
        match self {
            GitLabError::Unauthorized { .. } => true,
            GitLabError::Http { source, .. } => source.is_cross_origin_redirect(),
            GitLabError::Forbidden { resource, .. } => !matches!(
                resource,
                Resource::MovedCopy(_) | Resource::GraphQl | Resource::TimelineEvent(_)
            ),
            GitLabError::NotFound { resource, .. } => !matches!(
                resource,
                Resource::Issue { .. }
                    | Resource::MovedCopy(_)
                    | Resource::GraphQl
                    | Resource::TimelineEvent(_)
            ),
            _ => false,
        }
    }

    fn is_outage(&self) -> bool {
        matches!(self, GitLabError::Http { source, .. } if source.is_outage())
    }

    /// A 404 for an issue: the client asked for its project first, so the project is there
    /// and the issue is not (a person deleted it).
    fn is_gone(&self) -> bool {
        matches!(
            self,
            GitLabError::NotFound {
                resource: Resource::Issue { .. } | Resource::TimelineEvent(_),
                ..
            }
        )
    }

    /// GraphQL closed to the token (its scope, its user's role, the endpoint turned off or
    /// missing) or not knowing the query (an older GitLab): every incident alike.
    fn is_refused(&self) -> bool {
        match self {
            GitLabError::GraphQlInvalid { .. } | GitLabError::GraphQlRefused { .. } => true,
            GitLabError::Forbidden { resource, .. } | GitLabError::NotFound { resource, .. } => {
                *resource == Resource::GraphQl
            }
            _ => false,
        }
    }

    fn nothing_to_close(&self) -> bool {
        matches!(self, GitLabError::NoOpenAlert { .. })
    }

    /// 413: a reverse proxy's body limit, answered before GitLab saw the request.
    fn is_too_large(&self) -> bool {
        matches!(self, GitLabError::Rejected { status: 413, .. })
    }
}

/// One request's subject: what it addressed (typed, for classification) and what it was doing
/// (for messages).
struct Subject {
    resource: Resource,
    what: String,
    /// The setting of the secret the request carries, when not the token's (a rule's alert
    /// key): named when GitLab refuses it.
    key: Option<String>,
}

impl Subject {
    fn new(resource: Resource, what: impl Into<String>) -> Self {
        Self {
            resource,
            what: what.into(),
            key: None,
        }
    }

    /// The request carries the secret of the setting `key`, not the token.
    fn with_key(self, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..self
        }
    }

    fn http(&self, source: HttpError) -> GitLabError {
        GitLabError::Http {
            what: self.what.clone(),
            source,
        }
    }
}

/// The GitLab client.
#[derive(Clone, Debug)]
pub struct GitLabClient {
    http: HttpClient,
    base: url::Url,
    token: HeaderValue,
    /// The setting the token comes from, for a 401's message.
    token_key: String,
    /// The token's user id, once read.
    me: std::sync::Arc<tokio::sync::OnceCell<u64>>,
    /// Project paths by id, for GraphQL, read once per process.
    paths: graphql::PathCache,
    /// Incidents' global ids, for GraphQL's timeline events.
    gids: graphql::GidCache,
}

impl GitLabClient {
    /// Builds the client from validated config.
    ///
    /// # Errors
    /// The HTTP client could not be built, or the token holds characters no header can carry.
    pub fn new(cfg: &GitLabConfig, sync: &SyncConfig) -> Result<Self, GitLabError> {
        let what = || cfg.url.to_string();
        let mut token =
            HeaderValue::from_str(cfg.token.expose()).map_err(|_| GitLabError::Http {
                what: what(),
                source: HttpError::Build {
                    url: what(),
                    reason: "the GitLab token holds characters an HTTP header cannot carry".into(),
                },
            })?;
        token.set_sensitive(true);
        let http = HttpClient::new(
            "GitLab",
            cfg.timeout,
            sync.retry.clone(),
            &cfg.pace,
            vec![cfg.token.clone()],
            &Transport {
                url_key: "gitlab.url",
                extra_roots: cfg.extra_roots.clone(),
            },
        )
        .map_err(|source| GitLabError::Http {
            what: what(),
            source,
        })?;
        Ok(Self {
            http,
            base: cfg.url.clone(),
            token,
            token_key: cfg.token_key.clone(),
            me: Default::default(),
            paths: Default::default(),
            gids: Default::default(),
        })
    }

    /// Tells `observer` about every request attempt to GitLab and every pause before one.
    pub fn observed_by(&mut self, observer: std::sync::Arc<dyn crate::http::RequestObserver>) {
        self.http.observed_by(observer);
    }

    /// `<base>/api/v4/<segments…>`, each segment percent-encoded (a project path's `/` too).
    fn api(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("a validated http(s) base URL can have path segments");
            path.pop_if_empty().extend(["api", "v4"]).extend(segments);
        }
        url
    }

    async fn call(
        &self,
        kind: RequestKind,
        method: Method,
        url: url::Url,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        subject: &Subject,
    ) -> Result<Response, GitLabError> {
        let response = self
            .http
            .send(kind, || {
                let mut r = self
                    .http
                    .request(method.clone(), url.clone())
                    .header("PRIVATE-TOKEN", self.token.clone())
                    .header(ACCEPT, "application/json");
                if !query.is_empty() {
                    r = r.query(query);
                }
                if let Some(b) = &body {
                    r = r.json(b);
                }
                r
            })
            .await
            .map_err(|source| subject.http(source))?;
        self.check_status(response, subject)
    }

    fn check_status(&self, response: Response, subject: &Subject) -> Result<Response, GitLabError> {
        if response.status.is_success() {
            return Ok(response);
        }
        let message = self.http.scrub(&wire::error_message(&response));
        let resource = subject.resource.clone();
        let what = subject.what.clone();
        Err(match response.status.as_u16() {
            401 => GitLabError::Unauthorized {
                resource,
                what,
                key: subject
                    .key
                    .clone()
                    .unwrap_or_else(|| self.token_key.clone()),
                message,
            },
            403 => GitLabError::Forbidden {
                resource,
                what,
                message,
            },
            404 => GitLabError::NotFound {
                resource,
                what,
                message,
            },
            status => GitLabError::Rejected {
                what,
                status,
                message,
            },
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        response: &Response,
        subject: &Subject,
    ) -> Result<T, GitLabError> {
        response.json().map_err(|source| GitLabError::Decode {
            what: subject.what.clone(),
            source,
        })
    }

    /// `GET` a read-only resource and decode it.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        subject: Subject,
    ) -> Result<T, GitLabError> {
        let r = self
            .call(
                RequestKind::Idempotent,
                Method::GET,
                self.api(segments),
                query,
                None,
                &subject,
            )
            .await?;
        Self::decode(&r, &subject)
    }

    /// The id of the token's user, read once per client: the author of everything the sync
    /// creates.
    async fn my_id(&self) -> Result<u64, GitLabError> {
        self.me
            .get_or_try_init(|| async { self.current_user().await.map(|u| u.id) })
            .await
            .copied()
    }

    /// One lookup window: the sync user's issues with `window`'s time filters, oldest first,
    /// paged; the first whose description links `browse_url` on a line of its own.
    async fn find_in(
        &self,
        dest: &Destination,
        key: &JiraKey,
        me: u64,
        browse_url: &str,
        window: &[(&str, String)],
    ) -> Result<Option<RemoteObject>, GitLabError> {
        let subject = Subject::new(
            Resource::Project(dest.project.clone()),
            format!("lookup of {key} in project {}", dest.project),
        );
        let mut page = 1u32;
        loop {
            let mut query = vec![
                ("author_id", me.to_string()),
                ("scope", "all".to_owned()),
                ("state", "all".to_owned()),
                ("order_by", "created_at".to_owned()),
                ("sort", "asc".to_owned()),
                ("per_page", "100".to_owned()),
                ("page", page.to_string()),
            ];
            query.extend(window.iter().cloned());
            let r = self
                .call(
                    RequestKind::Idempotent,
                    Method::GET,
                    self.api(&["projects", &project_ref(dest), "issues"]),
                    &query,
                    None,
                    &subject,
                )
                .await?;
            let issues: Vec<wire::Issue> = Self::decode(&r, &subject)?;
            // The author is checked here too: a person's issue quoting the link is never ours.
            if let Some(found) = issues
                .into_iter()
                .find(|i| i.is_by(me) && i.links_to(browse_url))
            {
                return found.into_remote(&subject.what).map(Some);
            }
            match r
                .header("x-next-page")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(next) if next > page && next <= LOOKUP_MAX_PAGES => page = next,
                _ => return Ok(None),
            }
        }
    }

    /// The token's user (`GET /user`).
    ///
    /// # Errors
    /// The token is rejected, or GitLab cannot be reached.
    pub async fn current_user(&self) -> Result<User, GitLabError> {
        self.get(
            &["user"],
            &[],
            Subject::new(Resource::User, "the token's user"),
        )
        .await
    }

    /// The project and the token's access level on it.
    ///
    /// # Errors
    /// The project does not exist or the token cannot see it.
    pub async fn project(&self, project: &str) -> Result<ProjectAccess, GitLabError> {
        let subject = Subject::new(
            Resource::Project(project.to_owned()),
            format!("project {project}"),
        );
        self.get(&["projects", project], &[], subject).await
    }

    /// The project's environments (DORA counts only projects with a `production`-tier one).
    ///
    /// # Errors
    /// The project does not exist or the token cannot see it.
    pub async fn environments(&self, project: &str) -> Result<Vec<Environment>, GitLabError> {
        let subject = Subject::new(
            Resource::Environments(project.to_owned()),
            format!("listing the environments of project {project}"),
        );
        self.get(
            &["projects", project, "environments"],
            &[("per_page", "100".to_owned())],
            subject,
        )
        .await
    }

    /// Creates environment `name` in tier `tier` (`POST /projects/:id/environments`, Developer
    /// or more): what DORA needs before it counts a project's incidents.
    ///
    /// # Errors
    /// The project does not exist, the token may not create environments, or GitLab refuses the
    /// name (one the project already has).
    pub async fn create_environment(
        &self,
        project: &str,
        name: &str,
        tier: &str,
    ) -> Result<Environment, GitLabError> {
        let subject = Subject::new(
            Resource::Environments(project.to_owned()),
            format!("creating environment {name:?} (tier {tier}) in project {project}"),
        );
        let r = self
            .call(
                RequestKind::Create,
                Method::POST,
                self.api(&["projects", project, "environments"]),
                &[],
                Some(json!({ "name": name, "tier": tier })),
                &subject,
            )
            .await?;
        Self::decode(&r, &subject)
    }

    /// The issue as GitLab holds it now (the copy, once a person moved it).
    ///
    /// # Errors
    /// As [`GitLabSink::close`].
    pub async fn issue_state(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<RemoteObject, GitLabError> {
        let what = format!("read of {}", mapping.jira_key);
        self.issue_request(dest, mapping, Method::GET, None, "read")
            .await?
            .into_remote(&what)
    }

    /// Makes GitLab recompute the DORA day of a closed incident: reopens it and closes it again
    /// at `at` (its own `closed_at`; both back-dated with `updated_at`). GitLab's
    /// `Dora::Watchers::IssueWatcher` refreshes the day it had been closed on the reopen, and
    /// the day it is closed on the close (`ee/app/models/dora/watchers/issue_watcher.rb`).
    ///
    /// # Errors
    /// As [`GitLabSink::close`]; an error after the reopen may leave the incident open, and the
    /// caller must close it ([`GitLabClient::finish_reclose`]).
    pub async fn reclose_at(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, GitLabError> {
        let body = json!({ "state_event": "reopen", "updated_at": stamp(at) });
        self.put_issue(dest, mapping, body, "repair reopen").await?;
        let body = json!({ "state_event": "close", "updated_at": stamp(at) });
        self.put_issue(dest, mapping, body, "repair close").await
    }

    /// Closes at `at` an incident a repair reopened, if it is still open (a repair interrupted
    /// between its reopen and its close). Returns what GitLab holds after.
    ///
    /// # Errors
    /// As [`GitLabSink::close`].
    pub async fn finish_reclose(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, GitLabError> {
        let what = format!("repair of {}", mapping.jira_key);
        let current = self
            .issue_request(dest, mapping, Method::GET, None, "read before repair")
            .await?
            .into_remote(&what)?;
        if current.state == RemoteState::Closed {
            return Ok(current);
        }
        let body = json!({ "state_event": "close", "updated_at": stamp(at) });
        self.put_issue(dest, mapping, body, "repair close").await
    }

    async fn post_alert(
        &self,
        dest: &Destination,
        payload: serde_json::Value,
        what: String,
    ) -> Result<(), GitLabError> {
        let alert = dest.alert.as_ref().ok_or_else(|| GitLabError::Unsendable {
            what: what.clone(),
            reason: "the rule has no alert_url",
        })?;
        let subject = Subject::new(Resource::AlertIntegration, what).with_key(&alert.token_key);
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", alert.token.expose()))
            .map_err(|_| {
                subject.http(HttpError::Build {
                    url: "alert_url".into(),
                    reason: "the alert key holds characters an HTTP header cannot carry".into(),
                })
            })?;
        bearer.set_sensitive(true);
        // Alerts are deduplicated by fingerprint while open, so a repeat is harmless.
        let response = self
            .http
            .send(RequestKind::Idempotent, || {
                self.http
                    .request(Method::POST, alert.url.clone())
                    .header(AUTHORIZATION, bearer.clone())
                    .json(&payload)
            })
            .await
            .map_err(|source| subject.http(source.with_url_key("the rule's alert_url")))?;
        self.check_status(response, &subject).map(|_| ())
    }

    /// `method` (`GET` or `PUT` with `body`) on the issue `mapping` addresses: the copy once a
    /// person moved it. `doing` names it in errors.
    ///
    /// A 404 in the rule's own project is told apart by asking for the project: the project is
    /// there, so the issue is gone ([`Resource::Issue`], [`PortError::is_gone`]); or the project
    /// is not ([`Resource::Project`], which stops the run).
    async fn issue_request(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        method: Method,
        body: Option<serde_json::Value>,
        doing: &str,
    ) -> Result<wire::Issue, GitLabError> {
        let unsendable = |reason| GitLabError::Unsendable {
            what: format!("{doing} of {}", mapping.jira_key),
            reason,
        };
        if dest.target == Target::Alert {
            return Err(unsendable("alerts are not issues"));
        }
        let (moved_project, iid) = match mapping.moved_to {
            Some(to) => (Some(to.project_id), to.iid),
            None => (
                None,
                mapping
                    .iid
                    .ok_or_else(|| unsendable("the mapping holds no GitLab iid"))?,
            ),
        };
        let (project, named) = match moved_project {
            Some(id) => (id.to_string(), format!("project {id}")),
            None => (project_ref(dest), dest.project.clone()),
        };
        let iid_text = iid.to_string();
        let subject = Subject::new(
            Resource::Issue {
                project: named.clone(),
                iid,
            },
            format!("{doing} of issue {named}#{iid} ({})", mapping.jira_key),
        );
        let answer = self
            .call(
                RequestKind::Idempotent,
                method,
                self.api(&["projects", &project, "issues", &iid_text]),
                &[],
                body,
                &subject,
            )
            .await;
        let r = match answer {
            Err(GitLabError::NotFound { message, .. }) if moved_project.is_none() => {
                return Err(match self.project(&project).await {
                    Ok(_) => GitLabError::NotFound {
                        resource: subject.resource,
                        what: subject.what,
                        message,
                    },
                    Err(GitLabError::NotFound { message, .. }) => GitLabError::NotFound {
                        resource: Resource::Project(dest.project.clone()),
                        what: subject.what,
                        message,
                    },
                    Err(other) => other,
                });
            }
            other => other?,
        };
        Self::decode(&r, &subject)
    }

    /// `PUT /projects/:id/issues/:iid` with `body` (`doing` names it in errors).
    async fn put_issue(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        body: serde_json::Value,
        doing: &str,
    ) -> Result<RemoteObject, GitLabError> {
        let what = format!("{doing} of {}", mapping.jira_key);
        self.issue_request(dest, mapping, Method::PUT, Some(body), doing)
            .await?
            .into_remote(&what)
    }

    /// The sync user's issues across every project it sees, created within [`LOOKUP_SLACK`] of
    /// `created_at`, paged: the one whose global id is `id`, with its project's id. What a token
    /// that is not an administrator can do instead of `GET /issues/:id`.
    async fn find_by_id(
        &self,
        id: u64,
        created_at: DateTime<Utc>,
        subject: &Subject,
    ) -> Result<Option<(u64, RemoteObject)>, GitLabError> {
        let me = self.my_id().await?;
        let mut page = 1u32;
        loop {
            let query = [
                ("scope", "all".to_owned()),
                ("state", "all".to_owned()),
                ("author_id", me.to_string()),
                ("created_after", stamp(created_at - LOOKUP_SLACK)),
                ("created_before", stamp(created_at + LOOKUP_SLACK)),
                ("per_page", "100".to_owned()),
                ("page", page.to_string()),
            ];
            let r = self
                .call(
                    RequestKind::Idempotent,
                    Method::GET,
                    self.api(&["issues"]),
                    &query,
                    None,
                    subject,
                )
                .await?;
            let issues: Vec<wire::Issue> = Self::decode(&r, subject)?;
            if let Some(found) = issues.into_iter().find(|i| i.id() == id) {
                let project_id = found.project_id();
                return found
                    .into_remote(&subject.what)
                    .map(|remote| Some((project_id, remote)));
            }
            match r
                .header("x-next-page")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(next) if next > page && next <= LOOKUP_MAX_PAGES => page = next,
                _ => return Ok(None),
            }
        }
    }
}

/// What we know of a just-posted firing alert (the endpoint answers the alert's number only).
fn firing_alert() -> RemoteObject {
    RemoteObject {
        iid: None,
        web_url: None,
        state: RemoteState::Opened,
        created_at: Utc::now(),
        closed_at: None,
        content: None,
        incident: None,
        moved_to_id: None,
    }
}

/// The payload of a firing alert for `obj`, starting at `start`.
fn alert_payload(obj: &NewObject, start: DateTime<Utc>) -> serde_json::Value {
    json!({
        "title": obj.title,
        "description": obj.description,
        "start_time": stamp(start),
        "severity": obj.severity.as_str(),
        "fingerprint": obj.jira_key.as_str(),
        "monitoring_tool": "Jira",
    })
}

/// How a request names `dest`'s project: by its numeric id once the engine resolved it (a
/// renamed path, or one another project took over, cannot redirect the request), else as
/// configured.
fn project_ref(dest: &Destination) -> String {
    dest.project_id
        .map_or_else(|| dest.project.clone(), |id| id.to_string())
}

/// The Jira key a description's browse link names: a line that is exactly `browse_base` + key.
fn linked_key(description: &str, browse_base: &str) -> Option<JiraKey> {
    description.lines().find_map(|line| {
        line.trim()
            .strip_prefix(browse_base)
            .and_then(|k| JiraKey::parse(k).ok())
    })
}

/// Iids asked for at once when looking for objects above the store's highest (GitLab pages at
/// 100).
const IIDS_PER_REQUEST: u64 = 100;

/// How far around the asked time a lookup window reaches: GitLab keeps milliseconds, and a
/// clock between us and GitLab may differ a little.
const LOOKUP_SLACK: chrono::Duration = chrono::Duration::minutes(2);

/// Pages of one lookup window read at most (100 issues each): the window is narrow, so more
/// would mean a project flooded by the sync's own user in one instant.
const LOOKUP_MAX_PAGES: u32 = 20;

/// RFC 3339 with milliseconds, as GitLab prints and accepts.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl GitLabSink for GitLabClient {
    type Error = GitLabError;

    async fn resolve_project(&self, configured: &str) -> Result<ResolvedProject, GitLabError> {
        let p = self.project(configured).await?;
        Ok(ResolvedProject {
            id: p.id,
            path_with_namespace: p.path_with_namespace,
        })
    }

    /// With `above_iid`: the iids above it, a hundred a request, while the last of each batch
    /// exists (a store restored from a backup misses only the newest objects). Without: every
    /// issue of the sync's user, a hundred a page (a store lost whole).
    #[instrument(level = "debug", skip_all, fields(project = %dest.project), err(level = "debug"))]
    async fn own_objects(
        &self,
        dest: &Destination,
        above_iid: Option<u64>,
        browse_base: &str,
    ) -> Result<Vec<(JiraKey, RemoteObject)>, GitLabError> {
        if dest.target == Target::Alert {
            return Ok(Vec::new());
        }
        let me = self.my_id().await?;
        let subject = Subject::new(
            Resource::Project(dest.project.clone()),
            format!(
                "look for objects the store does not know in project {}",
                dest.project
            ),
        );
        let mut found = Vec::new();
        let keep = |issues: Vec<wire::Issue>, found: &mut Vec<(JiraKey, RemoteObject)>| {
            for issue in issues {
                if !issue.is_by(me) {
                    continue;
                }
                if let Some(key) = issue.description().and_then(|d| linked_key(d, browse_base)) {
                    found.push((key, issue.into_remote(&subject.what)?));
                }
            }
            Ok::<_, GitLabError>(())
        };
        let url = self.api(&["projects", &project_ref(dest), "issues"]);
        let mut page_or_batch = 0u64;
        loop {
            let mut query = vec![
                ("scope", "all".to_owned()),
                ("state", "all".to_owned()),
                ("per_page", "100".to_owned()),
            ];
            let batch_end = match above_iid {
                Some(above) => {
                    let first = above + 1 + page_or_batch * IIDS_PER_REQUEST;
                    let last = first + IIDS_PER_REQUEST - 1;
                    query.extend((first..=last).map(|iid| ("iids[]", iid.to_string())));
                    Some(last)
                }
                None => {
                    query.push(("author_id", me.to_string()));
                    query.push(("order_by", "created_at".to_owned()));
                    query.push(("sort", "asc".to_owned()));
                    query.push(("page", (page_or_batch + 1).to_string()));
                    None
                }
            };
            let r = self
                .call(
                    RequestKind::Idempotent,
                    Method::GET,
                    url.clone(),
                    &query,
                    None,
                    &subject,
                )
                .await?;
            let issues: Vec<wire::Issue> = Self::decode(&r, &subject)?;
            let more = match batch_end {
                Some(last) => issues.iter().any(|i| i.iid() == last),
                None => r
                    .header("x-next-page")
                    .is_some_and(|v| !v.trim().is_empty()),
            };
            keep(issues, &mut found)?;
            if !more {
                return Ok(found);
            }
            page_or_batch += 1;
        }
    }

    #[instrument(level = "debug", skip_all, fields(jira_key = %obj.jira_key), err(level = "debug"))]
    async fn create(
        &self,
        dest: &Destination,
        obj: &NewObject,
    ) -> Result<RemoteObject, GitLabError> {
        let what = format!("create of the {} for {}", dest.target, obj.jira_key);
        if dest.target == Target::Alert {
            self.post_alert(dest, alert_payload(obj, obj.start_time), what)
                .await?;
            return Ok(firing_alert());
        }
        // GitLab answers 404 here only when the project is not there (or hidden from the token).
        let subject = Subject::new(Resource::Project(dest.project.clone()), what);
        let r = self
            .call(
                RequestKind::Create,
                Method::POST,
                self.api(&["projects", &project_ref(dest), "issues"]),
                &[],
                Some(json!({
                    "title": obj.title,
                    "description": obj.description,
                    "labels": obj.labels.join(","),
                    "issue_type": dest.target.issue_type(),
                    "created_at": stamp(obj.created_at),
                })),
                &subject,
            )
            .await?;
        let issue: wire::Issue = Self::decode(&r, &subject)?;
        issue.into_remote(&subject.what)
    }

    /// Lists the project's issues by the sync's own user in a time window (`created_after` /
    /// `created_before`, or `updated_after`), exact filters GitLab answers from its index, and
    /// keeps the one whose description holds the browse link on a line of its own.
    ///
    /// Not `search=`: GitLab's issue search is PostgreSQL full-text search
    /// (`app/finders/issuable_finder.rb`, `app/models/concerns/pg_full_text_searchable.rb`), whose
    /// parser reads a URL as url/host/path tokens, so a Jira key inside the browse link is never
    /// found; gitlab.com also allows only 10 searches a minute.
    #[instrument(level = "debug", skip_all, fields(jira_key = %obj.jira_key), err(level = "debug"))]
    async fn find(
        &self,
        dest: &Destination,
        obj: &NewObject,
        browse_url: &str,
        attempted_since: DateTime<Utc>,
    ) -> Result<Option<RemoteObject>, GitLabError> {
        if dest.target == Target::Alert {
            // The alert endpoint deduplicates by fingerprint: re-posting is the lookup.
            return Ok(None);
        }
        let me = self.my_id().await?;
        // GitLab kept Jira's `created` (an Owner token): an exact window around it. It did not:
        // the object was made at or after the first attempt, and its `updated_at` says so.
        let windows = [
            vec![
                ("created_after", stamp(obj.created_at - LOOKUP_SLACK)),
                ("created_before", stamp(obj.created_at + LOOKUP_SLACK)),
            ],
            vec![("updated_after", stamp(attempted_since - LOOKUP_SLACK))],
        ];
        for window in windows {
            if let Some(found) = self
                .find_in(dest, &obj.jira_key, me, browse_url, &window)
                .await?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err(level = "debug"))]
    async fn close(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, GitLabError> {
        if dest.target == Target::Alert {
            let what = format!("recovery alert for {}", mapping.jira_key);
            let sent = self
                .post_alert(
                    dest,
                    json!({
                        "title": mapping.jira_key.as_str(),
                        "fingerprint": mapping.jira_key.as_str(),
                        "end_time": stamp(at),
                        "monitoring_tool": "Jira",
                    }),
                    what,
                )
                .await;
            match sent {
                // The recovery endpoint answers 400 when no alert with the fingerprint is open
                // (`Projects::Alerting::NotifyService`: `bad_request unless alert.persisted?`);
                // the payload is ours and well-formed, so that is the only reason it can have.
                Err(GitLabError::Rejected {
                    status: 400, what, ..
                }) => return Err(GitLabError::NoOpenAlert { what }),
                other => other?,
            }
            return Ok(RemoteObject {
                iid: None,
                web_url: mapping.web_url.clone(),
                state: RemoteState::Closed,
                created_at: mapping.created_at,
                closed_at: Some(Utc::now()),
                content: None,
                incident: None,
                moved_to_id: None,
            });
        }
        let body = json!({ "state_event": "close", "updated_at": stamp(at) });
        self.put_issue(dest, mapping, body, "close").await
    }

    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err(level = "debug"))]
    async fn update(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
    ) -> Result<RemoteObject, GitLabError> {
        let body = json!({ "title": obj.title, "description": obj.description });
        self.put_issue(dest, mapping, body, "update").await
    }

    /// `PUT /projects/:id/issues/:iid` with `add_labels` ("comma-separated label names to add to
    /// an issue", GitLab's Issues API).
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err)]
    async fn add_label(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        label: &str,
    ) -> Result<RemoteObject, GitLabError> {
        let body = json!({ "add_labels": label });
        self.put_issue(dest, mapping, body, "label").await
    }

    /// `PUT /projects/:id/issues/:iid` with `add_labels`, `remove_labels` and `updated_at`:
    /// `ResourceEvents::ChangeLabelsService` stamps the label events with the issue's
    /// `system_note_timestamp`, which is the `updated_at` an administrator or owner sent
    /// (`Issuable#system_note_timestamp`, `IssuableBaseService#filter_params`). Never with
    /// `created_at`, which would win over `updated_at` for that timestamp.
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err)]
    async fn relabel(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        add: Option<&str>,
        remove: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, GitLabError> {
        let mut body = json!({ "updated_at": stamp(at) });
        if let Some(a) = add {
            body["add_labels"] = json!(a);
        }
        if let Some(r) = remove.filter(|r| Some(*r) != add) {
            body["remove_labels"] = json!(r);
        }
        self.put_issue(dest, mapping, body, "stage label").await
    }

    /// `GET /projects/:id/issues/:iid/resource_label_events` (GitLab's "Resource label events"
    /// API: `id`, `created_at`, `label` {`name`, …}, `action` `add`|`remove`), paged by
    /// `x-next-page`.
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err)]
    async fn label_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<LabelEvent>, GitLabError> {
        let (project, iid) = match (mapping.moved_to, mapping.iid) {
            (Some(to), _) => (to.project_id.to_string(), to.iid),
            (None, Some(iid)) => (project_ref(dest), iid),
            (None, None) => {
                return Err(GitLabError::Unsendable {
                    what: format!("label events of {}", mapping.jira_key),
                    reason: "the mapping holds no GitLab iid",
                });
            }
        };
        let subject = Subject::new(
            Resource::Issue {
                project: dest.project.clone(),
                iid,
            },
            format!(
                "label events of {}#{iid} ({})",
                dest.project, mapping.jira_key
            ),
        );
        let iid_text = iid.to_string();
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let r = self
                .call(
                    RequestKind::Idempotent,
                    Method::GET,
                    self.api(&[
                        "projects",
                        &project,
                        "issues",
                        &iid_text,
                        "resource_label_events",
                    ]),
                    &[("per_page", "100".to_owned()), ("page", page.to_string())],
                    None,
                    &subject,
                )
                .await?;
            let events: Vec<wire::LabelEvent> = Self::decode(&r, &subject)?;
            out.extend(events.into_iter().filter_map(wire::LabelEvent::into_domain));
            match r
                .header("x-next-page")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(next) if next > page => page = next,
                _ => break,
            }
        }
        out.sort_by_key(|e| e.at);
        Ok(out)
    }

    /// `DELETE /projects/:id/issues/:iid` ("only for administrators and project owners",
    /// GitLab's Issues API; 204 No Content). An issue already gone (404) counts as deleted.
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err)]
    async fn delete(&self, dest: &Destination, mapping: &Mapping) -> Result<(), GitLabError> {
        let what = format!("delete of {}", mapping.jira_key);
        if dest.target == Target::Alert {
            return Err(GitLabError::Unsendable {
                what,
                reason: "alerts are not issues",
            });
        }
        let iid = mapping.iid.ok_or_else(|| GitLabError::Unsendable {
            what: what.clone(),
            reason: "the mapping holds no GitLab iid",
        })?;
        let iid_text = iid.to_string();
        let subject = Subject::new(
            Resource::Issue {
                project: dest.project.clone(),
                iid,
            },
            format!("{what}: issue {}#{iid}", dest.project),
        );
        match self
            .call(
                RequestKind::Idempotent,
                Method::DELETE,
                self.api(&["projects", &project_ref(dest), "issues", &iid_text]),
                &[],
                None,
                &subject,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(GitLabError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An issue is read first: one a person moved is answered as it is (closed, with its
    /// `moved_to_id`) instead of being reopened, since GitLab would reopen the moved original.
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err(level = "debug"))]
    async fn reopen(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, GitLabError> {
        if dest.target == Target::Alert {
            // A resolved alert cannot be reopened: the same fingerprint opens a new one, with
            // the first one's content (without a severity GitLab would file it as critical).
            let what = format!("alert for reopened {}", mapping.jira_key);
            self.post_alert(dest, alert_payload(obj, at), what).await?;
            return Ok(firing_alert());
        }
        let what = format!("reopen of {}", mapping.jira_key);
        let current = self
            .issue_request(dest, mapping, Method::GET, None, "read before reopen")
            .await?
            .into_remote(&what)?;
        if current.moved_to_id.is_some() {
            return Ok(current);
        }
        let body = json!({ "state_event": "reopen", "updated_at": stamp(at) });
        self.put_issue(dest, mapping, body, "reopen").await
    }

    /// `GET /issues/:id` (administrators only); for any other token, the sync user's issues
    /// across its projects created when the original was (a copy keeps its author and
    /// `created_at`, `app/services/issues/move_service.rb`).
    #[instrument(level = "debug", skip_all, fields(jira_key = %mapping.jira_key), err(level = "debug"))]
    async fn moved_copy(
        &self,
        _dest: &Destination,
        mapping: &Mapping,
        copy_id: u64,
    ) -> Result<Option<(u64, RemoteObject)>, GitLabError> {
        let subject = || {
            Subject::new(
                Resource::MovedCopy(copy_id),
                format!("look for where a person moved {}", mapping.jira_key),
            )
        };
        let id = copy_id.to_string();
        match self
            .get::<wire::Issue>(&["issues", &id], &[], subject())
            .await
        {
            Ok(issue) => {
                let project_id = issue.project_id();
                issue
                    .into_remote(&subject().what)
                    .map(|remote| Some((project_id, remote)))
            }
            Err(GitLabError::Forbidden { .. } | GitLabError::NotFound { .. }) => {
                self.find_by_id(copy_id, mapping.created_at, &subject())
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn set_severity(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        severity: IncidentSeverity,
    ) -> Result<(), GitLabError> {
        self.graphql_set_severity(dest, mapping, severity).await
    }

    async fn timeline_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<TimelineEvent>, GitLabError> {
        // Only the sync's own events: a person's "Start time" is never taken for ours.
        Ok(self
            .graphql_timeline_events(dest, mapping)
            .await?
            .into_iter()
            .filter_map(|(event, mine)| mine.then_some(event))
            .collect())
    }

    async fn create_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, GitLabError> {
        self.graphql_create_event(dest, mapping, event).await
    }

    async fn update_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, GitLabError> {
        self.graphql_update_event(dest, mapping, id, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found(resource: Resource) -> String {
        GitLabError::NotFound {
            resource,
            what: "create of the incident for OPS-1".into(),
            message: "404 Not Found".into(),
        }
        .to_string()
    }

    /// Each 404 names what is missing and the setting that names it, not one template for all.
    #[test]
    fn a_404_says_which_resource_and_what_to_fix() {
        let user = not_found(Resource::User);
        assert!(user.contains("check gitlab.url"), "{user}");
        let project = not_found(Resource::Project("acme/ops".into()));
        assert!(
            project.contains("no project \"acme/ops\"") && project.contains("gitlab_project"),
            "{project}"
        );
        let issue = not_found(Resource::Issue {
            project: "acme/ops".into(),
            iid: 7,
        });
        assert!(
            issue.contains("acme/ops#7") && issue.contains("deleted"),
            "{issue}"
        );
        let alert = not_found(Resource::AlertIntegration);
        assert!(alert.contains("check alert_url"), "{alert}");
        let envs = not_found(Resource::Environments("acme/ops".into()));
        assert!(envs.contains("environments"), "{envs}");
        let texts = [user, project, issue, alert, envs];
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// A 401 from an alert integration is about the rule's alert key, not the token; an empty
    /// answer leaves no dangling colon.
    #[test]
    fn a_401_names_the_secret_to_fix() {
        let alert = GitLabError::Unauthorized {
            resource: Resource::AlertIntegration,
            what: "create of the alert for OPS-1".into(),
            key: "rule \"pager\": alert_token_file".into(),
            message: String::new(),
        }
        .to_string();
        assert!(
            alert.contains("alert key (HTTP 401)") && alert.contains("alert_token_file"),
            "{alert}"
        );
        assert!(!alert.contains("token (HTTP"), "{alert}");
        let token = GitLabError::Unauthorized {
            resource: Resource::User,
            what: "the token's user".into(),
            key: "gitlab.token_env".into(),
            message: String::new(),
        }
        .to_string();
        assert!(
            token.contains("rejected the token (HTTP 401)")
                && token.contains("check gitlab.token_env"),
            "{token}"
        );
    }
}
