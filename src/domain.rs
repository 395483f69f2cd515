//! The vocabulary shared by every module: Jira snapshots, GitLab objects, mappings, and the
//! three narrow interfaces ([`JiraSource`], [`GitLabSink`], [`SyncStore`]) that the sync engine
//! drives.
//!
//! Nothing here performs I/O. The adapters in `jira`, `gitlab` and `store` implement the traits;
//! the engine only ever names the traits, so each side can be tested alone.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::gitlab::GitLabError;
use crate::jira::JiraError;
use crate::secret::Secret;
use crate::store::StoreError;

/// A Jira issue key such as `OPS-123`.
///
/// Keys are compared and stored as Jira returns them (upper-case project key, a dash, a number).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JiraKey(String);

impl JiraKey {
    /// Wraps a key, checking its `PROJECT-NUMBER` shape.
    ///
    /// # Errors
    /// Returns the offending text if it is not `<letters/digits/_>-<digits>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid = s.rsplit_once('-').is_some_and(|(project, number)| {
            !project.is_empty()
                && project
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(s.to_owned())
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JiraKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a rule replicates into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A GitLab incident (`issue_type=incident`) through the Issues API: counts for DORA.
    Incident,
    /// A plain GitLab issue: counts for Value Stream Analytics.
    Issue,
    /// An alert posted to the project's HTTP alert integration.
    Alert,
}

impl Target {
    /// The `issue_type` GitLab's Issues API takes for this target.
    pub fn issue_type(self) -> &'static str {
        match self {
            Target::Incident | Target::Alert => "incident",
            Target::Issue => "issue",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Incident => "incident",
            Target::Issue => "issue",
            Target::Alert => "alert",
        })
    }
}

/// GitLab's incident severities (also the alert payload's `severity`, lower-cased).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
    Unknown,
}

impl Severity {
    /// The lower-case name used in alert payloads and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
            Severity::Unknown => "unknown",
        }
    }
}

/// One Jira issue as the search returned it, already decoded and normalised to UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueSnapshot {
    pub key: JiraKey,
    pub summary: String,
    /// The description as Markdown (ADF converted on Cloud, wiki markup on Data Center), if any.
    pub description: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// When Jira resolved the issue; `None` while it is open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The workflow status name, for display only.
    pub status: String,
    pub priority: Option<String>,
    pub labels: Vec<String>,
    pub issue_type: Option<String>,
}

impl IssueSnapshot {
    /// Returns true if and only if Jira considers the issue resolved.
    pub fn is_resolved(&self) -> bool {
        self.resolved_at.is_some()
    }
}

/// An issue the search returned that could not be decoded. The rest of the page goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct UndecodableIssue {
    /// The key, when even that could not be read this is `"<unknown>"`.
    pub key: String,
    /// What was wrong, naming the field.
    pub reason: String,
}

/// Where the next search page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageCursor {
    First,
    /// Cloud `nextPageToken`.
    Token(String),
    /// Data Center `startAt`.
    Offset(u64),
}

/// One page of search results.
#[derive(Clone, Debug, Default)]
pub struct SearchPage {
    pub issues: Vec<IssueSnapshot>,
    pub undecodable: Vec<UndecodableIssue>,
    /// The next page, or `None` when this was the last one.
    pub next: Option<PageCursor>,
    /// The number of matches, where the server says (Data Center only).
    pub total: Option<u64>,
}

/// The Jira account the token belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct JiraUser {
    pub display_name: String,
    /// The account's profile time zone: JQL date literals are read in it.
    pub time_zone: chrono_tz::Tz,
}

/// The read side: what the engine needs from Jira.
pub trait JiraSource: Send + Sync {
    /// Runs one page of a JQL search, asking for the fields a snapshot needs.
    fn search(
        &self,
        jql: &str,
        page: &PageCursor,
    ) -> impl Future<Output = Result<SearchPage, JiraError>> + Send;

    /// How many issues `jql` (without `ORDER BY`) matches, where Jira can say cheaply (Cloud's
    /// approximate count); `None` where it cannot.
    fn count(&self, jql: &str) -> impl Future<Output = Result<Option<u64>, JiraError>> + Send;

    /// The account behind the credentials, with its profile time zone.
    fn myself(&self) -> impl Future<Output = Result<JiraUser, JiraError>> + Send;

    /// The link a person follows to the issue (`<url>/browse/KEY`).
    fn browse_url(&self, key: &JiraKey) -> String;
}

/// Where one rule writes in GitLab.
#[derive(Clone, Debug)]
pub struct Destination {
    pub target: Target,
    /// The project, as configured: a numeric id or a `group/project` path.
    pub project: String,
    /// For `target = "alert"`: the HTTP integration's URL and key.
    pub alert: Option<AlertEndpoint>,
}

/// A project's HTTP alert integration.
#[derive(Clone, Debug)]
pub struct AlertEndpoint {
    pub url: url::Url,
    pub token: Secret,
}

/// What to create in GitLab for one Jira issue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewObject {
    pub jira_key: JiraKey,
    /// At most 255 characters.
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    pub severity: Severity,
    /// Jira's `created`: becomes GitLab's `created_at` where the token may backdate.
    pub created_at: DateTime<Utc>,
    /// The alert's `start_time` (alerts only).
    pub start_time: DateTime<Utc>,
}

/// GitLab's state of an issue or incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteState {
    Opened,
    Closed,
}

impl RemoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteState::Opened => "opened",
            RemoteState::Closed => "closed",
        }
    }
}

/// What GitLab stored, read back from its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteObject {
    /// The issue's project-scoped number; `None` for alerts (the alert endpoint answers the
    /// *alert's* number, which is not the incident's, so it is not kept).
    pub iid: Option<u64>,
    pub web_url: Option<String>,
    pub state: RemoteState,
    /// GitLab's `created_at` (for alerts, the time we posted).
    pub created_at: DateTime<Utc>,
    /// GitLab's `closed_at`, if closed.
    pub closed_at: Option<DateTime<Utc>>,
}

/// The write side: what the engine needs from GitLab.
///
/// Implementations retry only what is safe to retry: a create whose outcome is unknown (timeout,
/// 5xx, dropped connection after the request was sent) is returned as an error the engine treats
/// as "maybe created", and it looks before creating again.
pub trait GitLabSink: Send + Sync {
    /// Creates the object.
    fn create(
        &self,
        dest: &Destination,
        obj: &NewObject,
    ) -> impl Future<Output = Result<RemoteObject, GitLabError>> + Send;

    /// Looks for an object an earlier, interrupted attempt may have created for `key`
    /// (its description holds `browse_url` on a line of its own).
    fn find(
        &self,
        dest: &Destination,
        key: &JiraKey,
        browse_url: &str,
    ) -> impl Future<Output = Result<Option<RemoteObject>, GitLabError>> + Send;

    /// Closes the object, asking GitLab to record `at` as the closing time.
    fn close(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RemoteObject, GitLabError>> + Send;

    /// Rewrites the object's title and description (issues and incidents; alerts cannot be
    /// edited).
    fn update(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
    ) -> impl Future<Output = Result<RemoteObject, GitLabError>> + Send;

    /// Reopens the object.
    fn reopen(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<RemoteObject, GitLabError>> + Send;
}

/// The Jira key → GitLab object link, with the last state we replicated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mapping {
    pub rule: String,
    pub jira_key: JiraKey,
    pub target: Target,
    pub project: String,
    pub iid: Option<u64>,
    pub web_url: Option<String>,
    pub state: RemoteState,
    /// Jira's `updated` of the last snapshot replicated: a snapshot no newer is already done.
    pub jira_updated: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// A hash of the title and description last written (`None` for rows from before it was
    /// kept): an edit in Jira is carried over when it changes.
    pub content_hash: Option<String>,
}

/// A create that was started and may or may not have reached GitLab.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub rule: String,
    pub jira_key: JiraKey,
    /// How many attempts were recorded before this one (0 for a fresh intent).
    pub previous_attempts: u32,
    pub started_at: DateTime<Utc>,
}

/// A Jira issue whose replication failed, kept so the next cycle retries it without asking Jira.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub rule: String,
    pub snapshot: IssueSnapshot,
    pub attempts: u32,
    pub last_error: String,
    pub last_failed_at: DateTime<Utc>,
}

/// Counts for one run of one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub seen: u64,
    pub created: u64,
    pub closed: u64,
    pub reopened: u64,
    /// GitLab objects rewritten because the Jira summary or description changed.
    #[serde(default)]
    pub updated: u64,
    /// Snapshots that needed no GitLab write (already replicated, or only their `updated` moved).
    pub skipped: u64,
    pub failed: u64,
}

/// How a run ended, as kept in the run log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Everything replicated.
    Ok,
    /// The run finished but some issues failed; they are retried next cycle.
    Partial,
    /// The run stopped early (Jira or GitLab unreachable, rejected credentials, a bad query).
    Failed,
    /// Stopped on request (shutdown) between actions.
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// What one committed step changes in the store, in one transaction.
#[derive(Clone, Debug)]
pub enum Commit {
    /// The issue is replicated: upsert its mapping, drop its intent and failure record.
    Replicated(Mapping),
    /// The issue failed: keep its snapshot for a retry next cycle.
    Failed {
        snapshot: IssueSnapshot,
        error: String,
    },
}

/// The persistent side: cursors, mappings, intents, failures and the run log.
pub trait SyncStore: Send + Sync {
    /// The rule's cursor: every change with `updated` before it is replicated or recorded as failed.
    fn cursor(
        &self,
        rule: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// The mappings of `keys` under `rule` (keys with none are absent).
    fn mappings(
        &self,
        rule: &str,
        keys: Vec<JiraKey>,
    ) -> impl Future<Output = Result<HashMap<JiraKey, Mapping>, StoreError>> + Send;

    /// Records that a create of `key` is about to be sent; returns the intent with the number of
    /// earlier attempts (an earlier attempt may already have created the object).
    fn begin_intent(
        &self,
        rule: &str,
        key: &JiraKey,
    ) -> impl Future<Output = Result<Intent, StoreError>> + Send;

    /// Applies `commit` and, in the same transaction, moves the rule's cursor forward to
    /// `cursor` (never backward).
    fn commit(
        &self,
        rule: &str,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the rule's cursor forward to `to` (never backward).
    fn advance_cursor(
        &self,
        rule: &str,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The rule's failed issues, oldest first.
    fn failures(&self, rule: &str)
    -> impl Future<Output = Result<Vec<Failure>, StoreError>> + Send;

    /// A small remembered value (e.g. the Jira account's time zone, with when it was read).
    fn meta(&self, key: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Remembers a small value.
    fn set_meta(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Opens a run-log entry; returns its id.
    fn start_run(
        &self,
        rule: &str,
        mode: RunMode,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Closes a run-log entry with its outcome, counts and, if it stopped early, why.
    fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        counts: RunCounts,
        error: Option<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Which of the three ways of running started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Service,
    Once,
    Backfill,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Service => "service",
            RunMode::Once => "once",
            RunMode::Backfill => "backfill",
        }
    }
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
