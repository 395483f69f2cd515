//! The Jira client: JQL search (Cloud `search/jql` with page tokens, Data Center `search` with
//! `startAt`), the searching account's profile (`/myself`), and decoding issues into
//! [`IssueSnapshot`](crate::domain::IssueSnapshot)s with descriptions as Markdown.
//!
//! It owns Jira's wire format and error bodies; it does not decide what to search for (the engine
//! builds the JQL) nor retry policy (the shared [`HttpClient`] does).

pub mod adf;
mod markdown;
mod remote_link;
pub mod wiki;
mod wire;

pub use remote_link::{LINK_PERMISSIONS, remote_link_body};

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::json;
use tracing::instrument;

use crate::config::{Deployment, JiraAuth, JiraConfig, SyncConfig};
use crate::domain::{JiraId, JiraUser, PageCursor, ReadBack, SearchPage, Transition};
use crate::engine::ports::{JiraSource, MAX_RECONCILE, PortError};
use crate::http::{DecodeError, HttpClient, HttpError, Pace, RequestKind, Response, Transport};
use crate::secret::Secret;

/// The fields a snapshot needs. Cloud returns only `id` unless fields are named.
pub const SEARCH_FIELDS: &[&str] = &[
    "summary",
    "description",
    "created",
    "updated",
    "resolutiondate",
    "status",
    "priority",
    "labels",
    "issuetype",
];

/// The most issues one Cloud `changelog/bulkfetch` request names: it takes up to 1,000 issue
/// ids or keys (`issueIdsOrKeys`; `maxResults` defaults to 1000, Atlassian's OpenAPI
/// `swagger-v3.v3.json`).
pub const MAX_BULK_CHANGELOG: usize = 1000;

/// Why a Jira call failed.
#[derive(Debug, thiserror::Error)]
pub enum JiraError {
    #[error("Jira rejected the credentials (HTTP 401): {hint}")]
    Unauthorized { hint: &'static str },
    #[error("Jira refused access (HTTP 403): {message}")]
    Forbidden { message: String },
    #[error("Jira rejected the JQL: {message}")]
    BadQuery { message: String },
    #[error(
        "{endpoint} answered HTTP 410 Gone: {message} (is jira.deployment right? Cloud must use \"cloud\")"
    )]
    EndpointRemoved { endpoint: String, message: String },
    #[error("{endpoint} answered HTTP 404: check jira.url and jira.deployment")]
    NotFound { endpoint: String },
    #[error("Jira refused to page past result {start_at}: {message}")]
    ResultWindow { start_at: u64, message: String },
    #[error("Jira answered HTTP {status} for {endpoint}: {message}")]
    Status {
        status: u16,
        endpoint: String,
        message: String,
    },
    #[error("Jira request to {endpoint} failed")]
    Http {
        endpoint: String,
        #[source]
        source: HttpError,
    },
    #[error("Jira's answer to {endpoint} could not be read")]
    Decode {
        endpoint: String,
        #[source]
        source: DecodeError,
    },
    #[error(
        "Jira refused the remote link on {jira_key} (HTTP 403: {message}): the account needs the \
         \"Browse projects\" and \"Link issues\" permissions in the issue's project, and issue \
         linking must be on"
    )]
    LinkForbidden { jira_key: String, message: String },
    #[error(
        "Jira has no issue {jira_key} to put the remote link on (HTTP 404): it was deleted, or the \
         account lacks \"Browse projects\" there"
    )]
    LinkIssueGone { jira_key: String },
}

impl PortError for JiraError {
    /// Outages and rate limits; not credentials, permissions or bad JQL.
    fn is_retryable(&self) -> bool {
        match self {
            JiraError::Http { source, .. } => source.is_retryable(),
            JiraError::Status { status, .. } => *status >= 500 || *status == 429,
            JiraError::Decode { .. } => true,
            _ => false,
        }
    }

    /// The issue a remote link was for is not there (deleted, or hidden from the account).
    fn is_gone(&self) -> bool {
        matches!(self, JiraError::LinkIssueGone { .. })
    }
}

/// The Jira client.
#[derive(Clone, Debug)]
pub struct JiraClient {
    http: HttpClient,
    base: url::Url,
    deployment: Deployment,
    auth: HeaderValue,
    page_size: u32,
    /// Fields asked for beyond [`SEARCH_FIELDS`] (the rules' `field:<id>` sources).
    extra_fields: Vec<String>,
    /// Status id → whether its category is Done, read once when first needed.
    statuses: std::sync::Arc<tokio::sync::Mutex<Option<std::collections::HashMap<String, bool>>>>,
}

impl JiraClient {
    /// Builds the client from validated config.
    ///
    /// # Errors
    /// The HTTP client could not be built, or the credentials hold characters no header can carry.
    pub fn new(cfg: &JiraConfig, sync: &SyncConfig) -> Result<Self, JiraError> {
        let (value, secret) = match &cfg.auth {
            JiraAuth::Basic { user, secret } => {
                let raw = format!("{user}:{}", secret.expose());
                (
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    ),
                    secret.clone(),
                )
            }
            JiraAuth::Bearer(secret) => (format!("Bearer {}", secret.expose()), secret.clone()),
        };
        let mut auth = HeaderValue::from_str(&value).map_err(|_| JiraError::Http {
            endpoint: cfg.url.to_string(),
            source: HttpError::Build {
                url: cfg.url.to_string(),
                reason: "the Jira token holds characters an HTTP header cannot carry".into(),
            },
        })?;
        auth.set_sensitive(true);
        let http = HttpClient::new(
            "Jira",
            cfg.timeout,
            sync.retry.clone(),
            &Pace::default(),
            vec![secret, Secret::new(value)],
            &Transport {
                url_key: "jira.url",
                extra_roots: cfg.extra_roots.clone(),
            },
        )
        .map_err(|source| JiraError::Http {
            endpoint: cfg.url.to_string(),
            source,
        })?;
        Ok(Self {
            http,
            base: cfg.url.clone(),
            deployment: cfg.deployment,
            auth,
            page_size: cfg.page_size,
            extra_fields: Vec::new(),
            statuses: std::sync::Arc::default(),
        })
    }

    /// Also asks every search and read-back for `ids` (the rules' `created_from`/`closed_from =
    /// "field:<id>"`), whose values snapshots then carry in `fields`.
    #[must_use]
    pub fn with_fields(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        for id in ids {
            if !SEARCH_FIELDS.contains(&id.as_str()) && !self.extra_fields.contains(&id) {
                self.extra_fields.push(id);
            }
        }
        self
    }

    /// The fields a search asks for: [`SEARCH_FIELDS`] and the rules' extra ones.
    fn fields(&self) -> Vec<&str> {
        SEARCH_FIELDS
            .iter()
            .copied()
            .chain(self.extra_fields.iter().map(String::as_str))
            .collect()
    }

    /// Tells `observer` about every request attempt to Jira and every pause before one.
    pub fn observed_by(&mut self, observer: std::sync::Arc<dyn crate::http::RequestObserver>) {
        self.http.observed_by(observer);
    }

    fn api(&self) -> &'static str {
        match self.deployment {
            Deployment::Cloud => "rest/api/3/",
            Deployment::DataCenter => "rest/api/2/",
        }
    }

    fn url(&self, path: &str) -> url::Url {
        // `base` always ends in '/', and `path` is one of our constants: joining cannot fail.
        self.base
            .join(path)
            .expect("a constant relative path joins onto a validated base URL")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        kind: RequestKind,
    ) -> Result<Response, JiraError> {
        let url = self.url(path);
        let endpoint = format!("/{path}");
        let response = self
            .http
            .send(kind, || {
                let mut r = self
                    .http
                    .request(method.clone(), url.clone())
                    .header(AUTHORIZATION, self.auth.clone())
                    .header(ACCEPT, "application/json");
                if let Some(b) = &body {
                    r = r.json(b);
                }
                r
            })
            .await
            .map_err(|source| JiraError::Http {
                endpoint: endpoint.clone(),
                source,
            })?;
        if response.status.is_success() {
            return Ok(response);
        }
        let message = self.http.scrub(&error_message(&response));
        Err(match response.status.as_u16() {
            401 => JiraError::Unauthorized {
                hint: match self.deployment {
                    Deployment::Cloud => {
                        "check jira.user (the account's email) and the API token it was made for"
                    }
                    Deployment::DataCenter => {
                        "check the personal access token, or jira.user and password for basic auth"
                    }
                },
            },
            403 => JiraError::Forbidden {
                message: if message.is_empty() {
                    "the account may lack Browse permission, or basic auth is disabled on this site"
                        .into()
                } else {
                    message
                },
            },
            404 => JiraError::NotFound { endpoint },
            410 => JiraError::EndpointRemoved { endpoint, message },
            status => JiraError::Status {
                status,
                endpoint,
                message,
            },
        })
    }
}

/// Jira's error text: `errorMessages` and `errors` joined, or a body excerpt.
fn error_message(response: &Response) -> String {
    match response.json::<wire::ErrorBody>() {
        Ok(b) => {
            let mut parts = b.error_messages;
            parts.extend(b.errors.into_iter().map(|(k, v)| format!("{k}: {v}")));
            if parts.is_empty() {
                response.excerpt(200)
            } else {
                parts.join("; ")
            }
        }
        Err(_) => response.excerpt(200),
    }
}

impl JiraSource for JiraClient {
    type Error = JiraError;

    async fn search(&self, jql: &str, page: &PageCursor) -> Result<SearchPage, JiraError> {
        self.search_reconciling(jql, page, &[]).await
    }

    /// Cloud sends the ids as `reconcileIssues` (numbers, at most [`MAX_RECONCILE`]: Atlassian's
    /// OpenAPI, `SearchAndReconcileRequestBean`); Data Center has no such field (its search is
    /// consistent), so it is not sent there.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn search_reconciling(
        &self,
        jql: &str,
        page: &PageCursor,
        reconcile: &[JiraId],
    ) -> Result<SearchPage, JiraError> {
        let (path, body) = match (self.deployment, page) {
            (Deployment::Cloud, cursor) => {
                // `expand` is "a comma-delimited string" on `search/jql` (Atlassian's OpenAPI).
                let mut body = json!({
                    "jql": jql,
                    "fields": self.fields(),
                    "maxResults": self.page_size,
                    "expand": "changelog",
                });
                if let PageCursor::Token(t) = cursor {
                    body["nextPageToken"] = json!(t);
                }
                let ids: Vec<u64> = reconcile
                    .iter()
                    .filter_map(|id| id.as_str().parse().ok())
                    .take(MAX_RECONCILE)
                    .collect();
                if !ids.is_empty() {
                    body["reconcileIssues"] = json!(ids);
                }
                ("rest/api/3/search/jql", body)
            }
            (Deployment::DataCenter, cursor) => {
                let start_at = match cursor {
                    PageCursor::Offset(n) => *n,
                    _ => 0,
                };
                (
                    "rest/api/2/search",
                    json!({
                        "jql": jql,
                        "startAt": start_at,
                        "maxResults": self.page_size,
                        "fields": self.fields(),
                        "expand": ["changelog"],
                    }),
                )
            }
        };
        let start_at = match page {
            PageCursor::Offset(n) => *n,
            _ => 0,
        };
        let response = match self
            .call(Method::POST, path, Some(body), RequestKind::Idempotent)
            .await
        {
            Ok(r) => r,
            Err(JiraError::Status {
                status: 400 | 500,
                message,
                ..
            }) if start_at > 0 && is_window_error(&message) => {
                return Err(JiraError::ResultWindow { start_at, message });
            }
            Err(JiraError::Status {
                status: 400,
                message,
                ..
            }) => return Err(JiraError::BadQuery { message }),
            Err(e) => return Err(e),
        };
        let (mut page, pending) =
            wire::decode_page(&response, self.deployment, start_at).map_err(|source| {
                JiraError::Decode {
                    endpoint: format!("/{path}"),
                    source,
                }
            })?;
        self.fill_done(&mut page.issues, pending).await?;
        Ok(page)
    }

    #[instrument(level = "debug", skip_all, fields(ids = ids.len()), err)]
    async fn issues_by_id(&self, ids: &[JiraId]) -> Result<ReadBack, JiraError> {
        if ids.is_empty() {
            return Ok(ReadBack::default());
        }
        match self.deployment {
            Deployment::Cloud => {
                // `BulkFetchIssueRequestBean`: `issueIdsOrKeys` ("up to 100 issues"), `fields`,
                // `expand` ("a list of values"). A moved issue is found by its id.
                let path = "rest/api/3/issue/bulkfetch";
                let body = json!({
                    "issueIdsOrKeys": ids.iter().map(JiraId::as_str).collect::<Vec<_>>(),
                    "fields": self.fields(),
                    "expand": ["changelog"],
                });
                let response = self
                    .call(Method::POST, path, Some(body), RequestKind::Idempotent)
                    .await?;
                let (mut back, pending) =
                    wire::decode_bulk(&response).map_err(|source| JiraError::Decode {
                        endpoint: format!("/{path}"),
                        source,
                    })?;
                self.fill_done(&mut back.issues, pending).await?;
                Ok(back)
            }
            Deployment::DataCenter => {
                // JQL `id in (…)` with `validateQuery=warn`: an id that no longer exists is
                // a warning, not a 400 that fails the whole batch.
                let list: Vec<&str> = ids.iter().map(JiraId::as_str).collect();
                let jql = format!("id in ({}) ORDER BY id ASC", list.join(", "));
                let path = "rest/api/2/search";
                let mut back = ReadBack::default();
                let mut start_at = 0u64;
                loop {
                    let body = json!({
                        "jql": jql,
                        "startAt": start_at,
                        "maxResults": ids.len(),
                        "fields": self.fields(),
                        "expand": ["changelog"],
                        "validateQuery": "warn",
                    });
                    let response = match self
                        .call(Method::POST, path, Some(body), RequestKind::Idempotent)
                        .await
                    {
                        Err(JiraError::Status {
                            status: 400,
                            message,
                            ..
                        }) => return Err(JiraError::BadQuery { message }),
                        other => other?,
                    };
                    let (mut page, pending) =
                        wire::decode_page(&response, self.deployment, start_at).map_err(
                            |source| JiraError::Decode {
                                endpoint: format!("/{path}"),
                                source,
                            },
                        )?;
                    self.fill_done(&mut page.issues, pending).await?;
                    let got = (page.issues.len() + page.undecodable.len()) as u64;
                    start_at += got;
                    back.issues.append(&mut page.issues);
                    back.undecodable.append(&mut page.undecodable);
                    // The server may cap the page: page on to `total`, never in a circle.
                    if page.next.is_none() || got == 0 {
                        return Ok(back);
                    }
                }
            }
        }
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn count(&self, jql: &str) -> Result<Option<u64>, JiraError> {
        if self.deployment != Deployment::Cloud {
            return Ok(None);
        }
        let path = "rest/api/3/search/approximate-count";
        let response = match self
            .call(
                Method::POST,
                path,
                Some(json!({ "jql": jql })),
                RequestKind::Idempotent,
            )
            .await
        {
            Ok(r) => r,
            Err(JiraError::Status {
                status: 400,
                message,
                ..
            }) => {
                return Err(JiraError::BadQuery { message });
            }
            // An older site without the endpoint: the count is only for progress display.
            Err(JiraError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let count: wire::Count = response.json().map_err(|source| JiraError::Decode {
            endpoint: format!("/{path}"),
            source,
        })?;
        Ok(Some(count.count))
    }

    #[instrument(level = "debug", skip_all, fields(ids = ids.len()), err)]
    async fn transitions(
        &self,
        ids: &[JiraId],
    ) -> Result<std::collections::HashMap<JiraId, Vec<Transition>>, JiraError> {
        let mut changes: std::collections::HashMap<JiraId, Vec<wire::StatusChange>> =
            std::collections::HashMap::new();
        match self.deployment {
            Deployment::Cloud => {
                for chunk in ids.chunks(MAX_BULK_CHANGELOG) {
                    self.bulk_changelog(chunk, &mut changes).await?;
                }
            }
            Deployment::DataCenter => {
                for id in ids {
                    // `GET /rest/api/2/issue/{issueIdOrKey}?expand=changelog` embeds every entry
                    // on Data Center; an issue deleted since answers 404 and is left out.
                    let path = format!("rest/api/2/issue/{id}?expand=changelog&fields=status");
                    let response = match self
                        .call(Method::GET, &path, None, RequestKind::Idempotent)
                        .await
                    {
                        Err(JiraError::NotFound { .. }) => continue,
                        other => other?,
                    };
                    let found = wire::decode_issue_changelog(&response).map_err(|source| {
                        JiraError::Decode {
                            endpoint: format!("/{path}"),
                            source,
                        }
                    })?;
                    changes.insert(id.clone(), found);
                }
            }
        }
        let all: Vec<wire::StatusChange> = changes.values().flatten().cloned().collect();
        let done = self.done_statuses(&all).await?;
        Ok(changes
            .into_iter()
            .map(|(id, mut list)| {
                list.sort_by_key(|c| c.at);
                let transitions = list
                    .into_iter()
                    .filter_map(|c| {
                        let to_done =
                            c.to.as_deref()
                                .is_some_and(|t| done.get(t).copied().unwrap_or(false));
                        Some(Transition {
                            at: c.at,
                            from: c.from_name,
                            to: c.to_name?,
                            to_done,
                        })
                    })
                    .collect();
                (id, transitions)
            })
            .collect())
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn myself(&self) -> Result<JiraUser, JiraError> {
        let path = format!("{}myself", self.api());
        let response = self
            .call(Method::GET, &path, None, RequestKind::Idempotent)
            .await?;
        wire::decode_myself(&response).map_err(|source| JiraError::Decode {
            endpoint: format!("/{path}"),
            source,
        })
    }

    #[instrument(level = "debug", skip_all, fields(jira_key = %link.jira_key), err(level = "debug"))]
    async fn put_remote_link(&self, link: &crate::domain::RemoteLink) -> Result<(), JiraError> {
        self.put_link(link).await
    }

    fn browse_base(&self) -> String {
        format!("{}browse/", self.base)
    }
}

impl JiraClient {
    /// Sets the resolution time of the Done-category issues without `resolutiondate`.
    async fn fill_done(
        &self,
        issues: &mut [crate::domain::IssueSnapshot],
        pending: Vec<wire::DoneWithoutResolution>,
    ) -> Result<(), JiraError> {
        for p in pending {
            let at = self.done_since(&p).await?;
            if let Some(issue) = issues.get_mut(p.index) {
                issue.resolved_at = Some(at.max(p.created));
            }
        }
        Ok(())
    }

    /// When a Done-category issue without `resolutiondate` was resolved: the latest change from
    /// a status that is not Done into one that is, from the changelog the search embedded, or
    /// the whole changelog when that was cut short; `created` if it never changed into Done (it
    /// was created so).
    async fn done_since(
        &self,
        p: &wire::DoneWithoutResolution,
    ) -> Result<chrono::DateTime<chrono::Utc>, JiraError> {
        let mut full = None;
        let changes = if p.complete {
            &p.embedded
        } else {
            full.insert(self.changelog(p).await?)
        };
        let done = self.done_statuses(changes).await?;
        let is_done = |s: &str| done.get(s).copied().unwrap_or(false);
        // A cut-short changelog is the most recent part: a change into Done there is the latest.
        if !p.complete
            && let Some(at) = wire::latest_into_done(&p.embedded, is_done)
        {
            return Ok(at);
        }
        Ok(wire::latest_into_done(changes, is_done).unwrap_or(p.created))
    }

    /// Status id → Done category, read from `/status` once, and again when a changelog names a
    /// status it did not list (one made since).
    async fn done_statuses(
        &self,
        changes: &[wire::StatusChange],
    ) -> Result<std::collections::HashMap<String, bool>, JiraError> {
        let mut cached = self.statuses.lock().await;
        let known = cached.as_ref().is_some_and(|m| {
            changes
                .iter()
                .flat_map(|c| [&c.from, &c.to])
                .flatten()
                .all(|s| m.contains_key(s))
        });
        if !known {
            let path = format!("{}status", self.api());
            let response = self
                .call(Method::GET, &path, None, RequestKind::Idempotent)
                .await?;
            let map = wire::decode_statuses(&response).map_err(|source| JiraError::Decode {
                endpoint: format!("/{path}"),
                source,
            })?;
            *cached = Some(map);
        }
        Ok(cached.clone().unwrap_or_default())
    }

    /// The status changes of up to [`MAX_BULK_CHANGELOG`] issues, added to `into` by issue id:
    /// Cloud `POST /rest/api/3/changelog/bulkfetch` (`BulkChangelogRequestBean` in Atlassian's
    /// OpenAPI: `issueIdsOrKeys`, `fieldIds` to filter the entries, `maxResults` "per page",
    /// default 1000, and `nextPageToken`), paged until no `nextPageToken` comes back.
    async fn bulk_changelog(
        &self,
        ids: &[JiraId],
        into: &mut std::collections::HashMap<JiraId, Vec<wire::StatusChange>>,
    ) -> Result<(), JiraError> {
        let path = "rest/api/3/changelog/bulkfetch";
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut body = json!({
                "issueIdsOrKeys": ids.iter().map(JiraId::as_str).collect::<Vec<_>>(),
                "fieldIds": ["status"],
                "maxResults": MAX_BULK_CHANGELOG,
            });
            if let Some(t) = &token {
                body["nextPageToken"] = json!(t);
            }
            let response = self
                .call(Method::POST, path, Some(body), RequestKind::Idempotent)
                .await?;
            let (logs, next) =
                wire::decode_bulk_changelog(&response).map_err(|source| JiraError::Decode {
                    endpoint: format!("/{path}"),
                    source,
                })?;
            for (id, list) in logs {
                if let Ok(id) = JiraId::parse(&id) {
                    into.entry(id).or_default().extend(list);
                }
            }
            match next {
                // A token already followed would page in a circle: what came is what there is.
                Some(t) if seen.insert(t.clone()) => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// The issue's whole changelog: Cloud `GET /rest/api/3/issue/{id}/changelog`, paged
    /// (`PageBeanChangelog`, oldest first, until `isLast`); Data Center `GET
    /// /rest/api/2/issue/{key}?expand=changelog`, which embeds every entry.
    async fn changelog(
        &self,
        p: &wire::DoneWithoutResolution,
    ) -> Result<Vec<wire::StatusChange>, JiraError> {
        let decode = |path: &str| {
            let endpoint = format!("/{path}");
            move |source| JiraError::Decode { endpoint, source }
        };
        match self.deployment {
            Deployment::Cloud => {
                let mut all = Vec::new();
                let mut start = 0usize;
                loop {
                    let path = format!(
                        "rest/api/3/issue/{}/changelog?startAt={start}&maxResults=100",
                        p.id
                    );
                    let response = self
                        .call(Method::GET, &path, None, RequestKind::Idempotent)
                        .await?;
                    let (changes, last, n) =
                        wire::decode_changelog_page(&response).map_err(decode(&path))?;
                    all.extend(changes);
                    start += n;
                    if last {
                        return Ok(all);
                    }
                }
            }
            Deployment::DataCenter => {
                let path = format!("rest/api/2/issue/{}?expand=changelog&fields=status", p.key);
                let response = self
                    .call(Method::GET, &path, None, RequestKind::Idempotent)
                    .await?;
                wire::decode_issue_changelog(&response).map_err(decode(&path))
            }
        }
    }
}

/// Returns true if and only if a Jira error text is the "result window" refusal.
fn is_window_error(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("search limit") || m.contains("result window") || m.contains("maxresultwindow")
}
