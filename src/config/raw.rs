//! The serde mirror of `config.toml`: one struct per table, unknown keys rejected, and the
//! defaults of omitted keys. The `///` docs here are the users' documentation of each key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub sync: RawSync,
    pub jira: RawJira,
    pub gitlab: RawGitLab,
    /// Prometheus metrics: off unless a key is set.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Jira webhooks as a "sync now" signal for the service: off unless the table is there.
    pub webhook: Option<super::webhook::RawWebhook>,
    /// The sync rules: each is one JQL query replicated into one GitLab project.
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

/// `[metrics]`: where the metrics go, in the Prometheus text format. Both keys are optional and
/// can be combined; with neither, no metrics are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// The service serves `GET /metrics` on this address and port (`127.0.0.1:9898`; an IP
    /// address, `[::1]:9898` for IPv6).
    pub listen: Option<String>,
    /// A file rewritten (atomically) after every cycle and at the end of `--once` and
    /// `backfill`, for node_exporter's textfile collector; it must end in `.prom`. A relative
    /// path is relative to the config file's directory.
    pub textfile: Option<PathBuf>,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// The SQLite file holding cursors and mappings; created and migrated on start. A relative
    /// path is relative to the config file's directory.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Days the run log keeps a finished run (each rule's newest run is kept however old).
    /// Older runs are deleted at startup and then once a day. Only runs that did something are
    /// logged: a cycle that finds nothing to do leaves no row.
    #[serde(default = "default_keep_runs_days")]
    pub keep_runs_days: i64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            keep_runs_days: default_keep_runs_days(),
        }
    }
}

const fn default_keep_runs_days() -> i64 {
    30
}

fn default_store_path() -> PathBuf {
    PathBuf::from("jira-gitlab-sync.db")
}

/// `[schedule]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// When the service runs each rule: `sec min hour day month weekday`, in UTC.
    #[serde(default = "default_cron")]
    pub cron: String,
    /// On SIGTERM or SIGINT the service, `--once` and `backfill` finish the actions in flight;
    /// this long at most, then abandon them and record the run as cancelled.
    #[serde(default = "default_grace_secs")]
    pub shutdown_grace_secs: u64,
}

impl Default for RawSchedule {
    fn default() -> Self {
        Self {
            cron: default_cron(),
            shutdown_grace_secs: default_grace_secs(),
        }
    }
}

pub(super) const fn default_grace_secs() -> u64 {
    30
}

fn default_cron() -> String {
    "0 */2 * * * *".to_owned()
}

/// `[sync]`: how changes are found and how failures are retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// How far behind the cursor each search starts. Covers Jira Cloud's search index lag
    /// (seconds to minutes) and clock skew; re-read issues cost no GitLab request.
    #[serde(default = "default_lookback_secs")]
    pub lookback_secs: u64,
    /// Attempts per HTTP request for retryable failures (429, 5xx, timeouts).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff delay; doubles each attempt, with jitter.
    #[serde(default = "default_base_delay_ms")]
    pub retry_base_delay_ms: u64,
    /// Longest backoff delay between two attempts.
    #[serde(default = "default_max_delay_secs")]
    pub retry_max_delay_secs: u64,
    /// Longest `Retry-After` honoured by waiting; a longer one fails the request (and the issue
    /// is retried next cycle) instead of blocking the run.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
    /// Rules synced at the same time by `--once` and the service.
    #[serde(default = "default_rule_concurrency")]
    pub rule_concurrency: usize,
    /// GitLab writes in flight at once during `backfill` (still paced to the GitLab limits).
    #[serde(default = "default_backfill_concurrency")]
    pub backfill_concurrency: usize,
    /// How often every open replicated issue is re-read by id (seconds, at least 1), so one that
    /// left a rule's JQL, moved or was deleted is still followed until it is resolved.
    #[serde(default = "default_reconcile_secs")]
    pub reconcile_secs: u64,
}

impl Default for RawSync {
    fn default() -> Self {
        Self {
            lookback_secs: default_lookback_secs(),
            max_attempts: default_max_attempts(),
            retry_base_delay_ms: default_base_delay_ms(),
            retry_max_delay_secs: default_max_delay_secs(),
            max_retry_after_secs: default_max_retry_after_secs(),
            rule_concurrency: default_rule_concurrency(),
            backfill_concurrency: default_backfill_concurrency(),
            reconcile_secs: default_reconcile_secs(),
        }
    }
}

const fn default_lookback_secs() -> u64 {
    600
}
const fn default_max_attempts() -> u32 {
    6
}
const fn default_base_delay_ms() -> u64 {
    500
}
const fn default_max_delay_secs() -> u64 {
    60
}
const fn default_max_retry_after_secs() -> u64 {
    900
}
const fn default_rule_concurrency() -> usize {
    4
}
const fn default_backfill_concurrency() -> usize {
    8
}
const fn default_reconcile_secs() -> u64 {
    3600
}
const fn default_timeout_secs() -> u64 {
    30
}
const fn default_page_size() -> u32 {
    100
}

/// `[jira]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJira {
    /// The site, e.g. `https://example.atlassian.net` or `https://jira.example.com`.
    pub url: String,
    /// `cloud` or `datacenter`; by default `cloud` for `*.atlassian.net`, else `datacenter`.
    pub deployment: Option<String>,
    /// Cloud: the account's email. Data Center: a username for basic auth, or omit for a PAT.
    pub user: Option<String>,
    /// The environment variable holding the API token (Cloud) or PAT/password (Data Center).
    pub token_env: Option<String>,
    /// Or a file holding it (relative paths are looked up in `$CREDENTIALS_DIRECTORY`).
    pub token_file: Option<PathBuf>,
    /// Request timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Issues asked per search page (Jira may answer fewer).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The search user's profile time zone (IANA name). By default it is read from `/myself`;
    /// set it only if that account cannot read its own profile.
    pub time_zone: Option<String>,
    /// Allow an `http://` `url` on a host other than loopback (the token then travels unencrypted).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// A PEM file of CA certificates trusted besides the operating system's store (a company CA).
    /// A relative path is relative to the config file's directory.
    pub ca_file: Option<PathBuf>,
    /// After a GitLab issue or incident is created, put a remote link to it on the Jira issue
    /// (needs "Browse projects" and "Link issues"); off by default, when the sync writes nothing
    /// to Jira.
    #[serde(default)]
    pub link_back: bool,
}

/// `[gitlab]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitLab {
    /// `https://gitlab.com` or your self-managed instance.
    pub url: String,
    /// The environment variable holding the access token (`api` scope; Owner for exact times).
    pub token_env: Option<String>,
    /// Or a file holding it.
    pub token_file: Option<PathBuf>,
    /// Request timeout.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Requests a minute at most. Default: 1,800 on gitlab.com (limit 2,000), unpaced elsewhere.
    pub requests_per_minute: Option<u32>,
    /// Issue creates a minute at most. Default: 180 on gitlab.com (limit 200), unpaced elsewhere.
    pub creates_per_minute: Option<u32>,
    /// Issue searches a minute at most (used only to find what an interrupted create left).
    /// Default: 9 on gitlab.com (limit 10), unpaced elsewhere.
    pub searches_per_minute: Option<u32>,
    /// Allow an `http://` `url` (and rules' `alert_url`) on a host other than loopback (the token
    /// then travels unencrypted).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// A PEM file of CA certificates trusted besides the operating system's store (a company CA),
    /// for `url` and rules' `alert_url`. A relative path is relative to the config file's directory.
    pub ca_file: Option<PathBuf>,
}

/// `[[rule]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// A unique name: it keys the rule's cursor and mappings in the store, so keep it stable.
    pub name: String,
    /// Which issues to replicate. Without `ORDER BY`: the sync adds its own bounds and order.
    pub jql: String,
    /// `incident`, `issue` or `alert`.
    pub target: String,
    /// The GitLab project: `group/project` path or numeric id.
    pub gitlab_project: String,
    /// Labels put on every object created.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Earliest change replicated (`YYYY-MM-DD`, UTC, or an RFC 3339 time). Default: the rule's
    /// first run. Older history is what `backfill` is for.
    pub since: Option<String>,
    /// The service's schedule for this rule, overriding `[schedule] cron`.
    pub cron: Option<String>,
    /// The GitLab title; `{key}` and `{summary}` are replaced. Cut to 255 characters.
    #[serde(default = "default_title")]
    pub title: String,
    /// A label naming the severity, `{severity}` replaced; `""` for none.
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// Jira priority name → severity; merged over the default map.
    #[serde(default)]
    pub severity: BTreeMap<String, String>,
    /// `target = "incident"`: add the timeline events "Start time" (Jira's created moment) and
    /// "End time" (the moment the incident is closed at) to each incident, over GitLab's GraphQL
    /// API. Default: `true` for incident rules.
    pub timeline_events: Option<bool>,
    /// `target = "alert"`: the HTTP alert integration's URL.
    pub alert_url: Option<String>,
    /// `target = "alert"`: the environment variable holding the integration's key.
    pub alert_token_env: Option<String>,
    /// `target = "alert"`: or a file holding it.
    pub alert_token_file: Option<PathBuf>,
    /// What happens to an issue that stops matching `jql` (found by the reconciliation): `label`
    /// (default: the label `jira::out-of-scope` is added) or `keep`. Either way it is still
    /// followed by id and closed when Jira resolves it.
    pub on_leave: Option<String>,
    /// What happens to an issue deleted in Jira: `close` (default: closed at the time the
    /// deletion was seen, with the label `jira::deleted`), `delete` (the GitLab object is
    /// deleted; needs an Owner token) or `keep`.
    pub on_delete: Option<String>,
    /// Jira status name → GitLab label: each transition into a mapped status is replayed as that
    /// label added at the transition's time; one into an unmapped status removes it.
    #[serde(default)]
    pub stage_labels: BTreeMap<String, String>,
    /// Where `created_at` comes from: `created` (default) or `field:<id>` (a date or date-time
    /// field; empty: `created`).
    pub created_from: Option<String>,
    /// What counts as resolved: `resolution` (default), `status:<name>` (the latest entry into
    /// that status) or `field:<id>` (a date or date-time field; empty: the resolution).
    pub closed_from: Option<String>,
}

fn default_title() -> String {
    "[{key}] {summary}".to_owned()
}

fn default_severity_label() -> String {
    "severity::{severity}".to_owned()
}
