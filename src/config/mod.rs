//! `config.toml` → a validated, typed [`Config`].
//!
//! [`RawConfig`] mirrors the file (serde, unknown keys rejected, every key documented for users);
//! [`Config::from_raw`] does all validation once and reads the secrets, so the rest of the program
//! only ever sees typed values. Nothing re-reads the file mid-run: to reload, restart.
//!
//! This module does not talk to Jira or GitLab; `check` does that with the clients.
//!
//! # Layout
//! - This file: [`ConfigError`], the validated types ([`Config`], [`RuleConfig`], …),
//!   [`resolve_path`], and loading: reading and parsing the file, then [`Config::from_raw`].
//! - `raw`: the serde mirror of the file ([`RawConfig`] and its tables) and the defaults of
//!   omitted keys.
//! - `validate`: each table → its typed counterpart, the value parsers ([`parse_since`], URLs,
//!   cron, enum names) and reading the secrets the file names.
//! - `history`: a rule's keys that read Jira's workflow history (`stage_labels`,
//!   `created_from`, `closed_from`).
//! - `file_error`: TOML errors about the file, naming the key and never quoting a value.
//! - `tests`: the unit tests.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use crate::domain::{Severity, Target, string_enum};
use crate::http::{ExtraRoots, Pace, RetryPolicy};
use crate::secret::{ExposedSecret, Secret, SecretError, SecretSource};

mod file_error;
mod history;
mod raw;
mod validate;
mod webhook;

pub use history::{ClosedFrom, CreatedFrom, HistoryConfig};
pub use raw::{RawConfig, RawGitLab, RawJira, RawMetrics, RawRule, RawSchedule, RawStore, RawSync};
pub use validate::parse_since;
use validate::{
    gitlab_insecure_http, validate_cron, validate_gitlab, validate_jira, validate_metrics,
    validate_rule, validate_sync,
};
pub use webhook::{RawWebhook, WebhookConfig};

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "JIRA_GITLAB_SYNC_CONFIG";

/// Why the configuration cannot be used. Every message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or has an unknown key or a value of the wrong type. The message
    /// names the key and its line, and never quotes a value.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{key}: cannot read the secret")]
    Secret {
        key: String,
        #[source]
        source: SecretError,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.
// ---------------------------------------------------------------------------------------------

string_enum! {
    /// Jira Cloud or Data Center/Server: they differ in search endpoint, paging and auth.
    pub enum Deployment {
        Cloud = "cloud",
        DataCenter = "datacenter" | "server" | "data-center" | "data_center",
    }
}

string_enum! {
    /// What happens to a replicated issue that stops matching its rule's JQL.
    pub enum OnLeave {
        /// Add the label `jira::out-of-scope`, and keep following it.
        Label = "label",
        /// Leave the object as it is, and keep following it.
        Keep = "keep",
    }
}

string_enum! {
    /// What happens to a replicated issue deleted in Jira.
    pub enum OnDelete {
        /// Close the object at the time the deletion was seen, with the label `jira::deleted`.
        Close = "close",
        /// Delete the GitLab object.
        Delete = "delete",
        /// Leave the object as it is.
        Keep = "keep",
    }
}

/// How requests to Jira authenticate.
#[derive(Clone, Debug)]
pub enum JiraAuth {
    /// Cloud: email + API token. Data Center: username + password.
    Basic { user: String, secret: Secret },
    /// Data Center personal access token.
    Bearer(Secret),
}

#[derive(Clone, Debug)]
pub struct JiraConfig {
    pub url: Url,
    pub deployment: Deployment,
    pub auth: JiraAuth,
    pub timeout: Duration,
    pub page_size: u32,
    pub time_zone: Option<chrono_tz::Tz>,
    /// `ca_file`'s certificates, trusted besides the system's.
    pub extra_roots: ExtraRoots,
    /// `link_back`: put a remote link to each GitLab issue or incident on its Jira issue.
    pub link_back: bool,
}

#[derive(Clone, Debug)]
pub struct GitLabConfig {
    pub url: Url,
    pub token: Secret,
    /// The setting the token comes from (`gitlab.token_file`), for messages that ask to fix it.
    pub token_key: String,
    pub timeout: Duration,
    pub pace: Pace,
    /// `ca_file`'s certificates, trusted besides the system's (for rules' `alert_url` too).
    pub extra_roots: ExtraRoots,
}

#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The service's shutdown grace period.
    pub shutdown_grace: Duration,
    pub lookback: Duration,
    pub retry: RetryPolicy,
    pub rule_concurrency: usize,
    pub backfill_concurrency: usize,
    /// How often open mappings are re-read by id (`reconcile_secs`).
    pub reconcile: Duration,
}

/// `[metrics]`: where metrics go; neither set means none are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The service serves `GET /metrics` here.
    pub listen: Option<std::net::SocketAddr>,
    /// A `.prom` file for node_exporter's textfile collector, rewritten atomically.
    pub textfile: Option<PathBuf>,
}

impl MetricsConfig {
    /// Returns true if and only if metrics go anywhere.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some()
    }
}

/// Where one rule writes in GitLab.
#[derive(Clone, Debug)]
pub struct Destination {
    pub target: Target,
    /// The project, as configured: a numeric id or a `group/project` path.
    pub project: String,
    /// The project's numeric id once the engine resolved it (never set by the config): requests
    /// address the project by it, so a renamed or reused path cannot redirect them.
    pub project_id: Option<u64>,
    /// For `target = "alert"`: the HTTP integration's URL and key.
    pub alert: Option<AlertEndpoint>,
}

/// A project's HTTP alert integration.
#[derive(Clone, Debug)]
pub struct AlertEndpoint {
    pub url: url::Url,
    pub token: Secret,
    /// The setting the key comes from (`rule "pager": alert_token_file`), for messages.
    pub token_key: String,
}

/// One validated rule.
#[derive(Clone, Debug)]
pub struct RuleConfig {
    pub name: String,
    pub jql: String,
    pub destination: Destination,
    pub labels: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub cron: String,
    pub title: String,
    pub severity_label: Option<String>,
    /// Lower-cased Jira priority name → severity.
    pub severity: BTreeMap<String, Severity>,
    pub on_leave: OnLeave,
    pub on_delete: OnDelete,
    /// `stage_labels`, `created_from`, `closed_from`.
    pub history: HistoryConfig,
    /// Incident rules: write the "Start time" and "End time" timeline events.
    pub timeline_events: bool,
}

impl RuleConfig {
    /// The severity for a Jira priority (unknown or absent priorities are `Unknown`).
    pub fn severity_of(&self, priority: Option<&str>) -> Severity {
        priority
            .and_then(|p| self.severity.get(&p.to_lowercase()).copied())
            .unwrap_or(Severity::Unknown)
    }
}

/// The longest `[store] keep_runs_days` accepted: a hundred years.
const MAX_KEEP_RUNS_DAYS: u32 = 36_500;

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub store_path: PathBuf,
    /// `[store] keep_runs_days`: days the run log keeps a finished run.
    pub store_keep_runs_days: u32,
    pub sync: SyncConfig,
    pub jira: JiraConfig,
    pub gitlab: GitLabConfig,
    pub rules: Vec<RuleConfig>,
    pub metrics: MetricsConfig,
    /// `[webhook]`: Jira webhooks wake the service's rules; `None` without the table.
    pub webhook: Option<WebhookConfig>,
    /// Secret files every user may read, each once (by the file read), in config order: the
    /// command warns about them (`check` lists them with its findings).
    pub exposed_secrets: Vec<ExposedSecret>,
}

/// The token and alert key files of `raw` that every user may read, each file once.
fn exposed_secrets(raw: &RawConfig) -> Vec<ExposedSecret> {
    let mut files: Vec<(String, &PathBuf)> = Vec::new();
    files.extend(
        raw.jira
            .token_file
            .iter()
            .map(|f| ("jira.token_file".to_owned(), f)),
    );
    files.extend(
        raw.gitlab
            .token_file
            .iter()
            .map(|f| ("gitlab.token_file".to_owned(), f)),
    );
    files.extend(
        raw.webhook
            .iter()
            .filter_map(|w| w.secret_file.as_ref())
            .map(|f| ("webhook.secret_file".to_owned(), f)),
    );
    for r in &raw.rule {
        files.extend(
            r.alert_token_file
                .iter()
                .map(|f| (format!("rule {:?}: alert_token_file", r.name), f)),
        );
    }
    let mut seen = HashSet::new();
    files
        .into_iter()
        .filter_map(|(key, file)| {
            let (path, mode) = SecretSource::File(file.clone()).exposed()?;
            seen.insert(path.clone())
                .then_some(ExposedSecret { key, path, mode })
        })
        .collect()
}

/// Where the config file is: `--config`, else `$JIRA_GITLAB_SYNC_CONFIG`, else `./config.toml`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("config.toml"),
    }
}

impl Config {
    /// Reads, parses and validates the file, and reads the secrets it names.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, has an unknown key, or a value is invalid; each error
    /// names the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_toml(&read_file(path)?, path)
    }

    /// Parses and validates TOML text; `path` names the file in messages, and a relative
    /// `[store] path` is taken relative to the file's directory (not the working directory, which
    /// is `/` under systemd and anything under cron).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::from_raw(parse_file(text, path)?)
    }

    /// Validates a parsed file.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let jira = validate_jira(&raw.jira)?;
        let gitlab = validate_gitlab(&raw.gitlab)?;
        let mut sync = validate_sync(&raw.sync)?;
        sync.shutdown_grace = Duration::from_secs(raw.schedule.shutdown_grace_secs);
        validate_cron("schedule.cron", &raw.schedule.cron)?;
        if raw.rule.is_empty() {
            return Err(invalid(
                "rule",
                "no [[rule]] is configured: add at least one (name, jql, target, gitlab_project)",
            ));
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (i, r) in raw.rule.iter().enumerate() {
            let rule = validate_rule(i, r, &raw.schedule.cron, gitlab_insecure_http(&raw.gitlab))?;
            if !names.insert(rule.name.clone()) {
                return Err(invalid(
                    format!("rule[{i}].name"),
                    format!(
                        "the name {:?} is used by an earlier rule; names must be unique",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }
        if raw.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        let store_keep_runs_days = u32::try_from(raw.store.keep_runs_days)
            .ok()
            .filter(|d| (1..=MAX_KEEP_RUNS_DAYS).contains(d))
            .ok_or_else(|| {
                invalid(
                    "store.keep_runs_days",
                    format!(
                        "must be a whole number of days from 1 to {MAX_KEEP_RUNS_DAYS}, not {}",
                        raw.store.keep_runs_days
                    ),
                )
            })?;
        let metrics = validate_metrics(&raw.metrics)?;
        let webhook = raw
            .webhook
            .as_ref()
            .map(webhook::validate_webhook)
            .transpose()?;
        let exposed_secrets = exposed_secrets(&raw);
        Ok(Config {
            store_path: raw.store.path,
            store_keep_runs_days,
            sync,
            jira,
            gitlab,
            rules,
            metrics,
            webhook,
            exposed_secrets,
        })
    }

    /// Only the store path (resolved as [`Config::load`] resolves it) and rule names, without
    /// reading any secret: what `status` needs.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, or has an unknown key.
    pub fn load_store_and_rules(path: &Path) -> Result<(PathBuf, Vec<String>), ConfigError> {
        let raw = parse_file(&read_file(path)?, path)?;
        Ok((
            raw.store.path,
            raw.rule
                .into_iter()
                .map(|r| r.name.trim().to_owned())
                .collect(),
        ))
    }

    /// The rule called `name`.
    ///
    /// # Errors
    /// No rule has that name; the message lists the names there are.
    pub fn rule(&self, name: &str) -> Result<&RuleConfig, ConfigError> {
        self.rules.iter().find(|r| r.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
            invalid(
                "--rule",
                format!(
                    "no rule is named {name:?}; the rules are: {}",
                    known.join(", ")
                ),
            )
        })
    }
}

/// The text of the config file at `path`. Every loader reads the file through here.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the text of the config file at `path`, with a relative `[store] path`, `ca_file` and
/// `[metrics] textfile` made relative to the file's directory. Every loader parses through here, so all commands find the same store.
fn parse_file(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: file_error::describe(text, &e),
    })?;
    raw.store.path = beside(path, &raw.store.path);
    for file in [
        &mut raw.jira.ca_file,
        &mut raw.gitlab.ca_file,
        &mut raw.metrics.textfile,
    ]
    .into_iter()
    .flatten()
    {
        *file = beside(path, file);
    }
    Ok(raw)
}

/// `target` as written, or, if relative, relative to the directory of the file at `config`.
fn beside(config: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        return target.to_path_buf();
    }
    match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(target),
        _ => target.to_path_buf(),
    }
}

#[cfg(test)]
mod tests;
