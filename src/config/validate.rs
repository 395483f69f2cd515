//! Validation: each `Raw*` table → its typed counterpart, every error naming the key at fault;
//! plus the value parsers (URLs, dates, cron, enum names) and reading the secrets the file names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use url::Url;

use super::raw::{RawGitLab, RawJira, RawMetrics, RawRule, RawSync, default_grace_secs};
use super::{
    AlertEndpoint, ConfigError, Deployment, Destination, GitLabConfig, JiraAuth, JiraConfig,
    MetricsConfig, OnDelete, OnLeave, RuleConfig, SyncConfig, invalid,
};
use crate::domain::{Severity, Target, UnknownName};
use crate::http::{ExtraRoots, Pace, RetryPolicy};
use crate::secret::{Secret, SecretSource};

/// Whether a section lets its URLs use `http://` to a host that is not loopback, and the key
/// that says so (named in the error that refuses it).
#[derive(Clone, Copy, Debug)]
pub(super) struct InsecureHttp {
    pub allowed: bool,
    pub key: &'static str,
}

/// A server URL: `http(s)` with a host, no credentials, and `https` unless the host is loopback
/// or `insecure` allows it. Messages name `key` and never echo a value that may hold a secret.
fn parse_server_url(key: &str, s: &str, insecure: InsecureHttp) -> Result<Url, ConfigError> {
    // A value with an `@` may hold credentials: it is never echoed.
    let shown = if s.contains('@') {
        "the value".to_owned()
    } else {
        format!("{:?}", s.trim())
    };
    let url =
        Url::parse(s.trim()).map_err(|e| invalid(key, format!("{shown} is not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            "holds credentials (user:secret@host): remove them from the URL; the token comes \
             from the token_env or token_file settings",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{shown} must be an https URL with a host"),
        ));
    }
    if url.scheme() == "http" && !insecure.allowed && !is_loopback(&url) {
        return Err(invalid(
            key,
            format!(
                "{shown} uses http://, which would send the token and the data unencrypted: use \
                 https://, or set {} = true if the network is trusted (loopback hosts need \
                 neither)",
                insecure.key
            ),
        ));
    }
    Ok(url)
}

/// Returns true if and only if the URL's host is `localhost`, in 127.0.0.0/8, or `[::1]`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The certificates of a section's `ca_file` (none if unset); errors name `key` and the path.
fn read_ca_file(key: &str, path: Option<&PathBuf>) -> Result<ExtraRoots, ConfigError> {
    let Some(path) = path else {
        return Ok(ExtraRoots::default());
    };
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    ExtraRoots::from_pem(&pem).map_err(|e| invalid(key, format!("{} {e}", path.display())))
}

/// A base URL with a trailing slash, so joining relative paths keeps any context path
/// (`https://example.com/jira/` + `rest/api/2/search`).
fn as_base(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn secret_source(
    key_prefix: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    default_env: Option<&str>,
) -> Result<SecretSource, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(invalid(
            format!("{key_prefix}token_env"),
            format!("set either {key_prefix}token_env or {key_prefix}token_file, not both"),
        )),
        (Some(e), None) if e.trim().is_empty() => Err(invalid(
            format!("{key_prefix}token_env"),
            "must not be empty",
        )),
        // Not echoed: a value that is no variable name is most likely the token itself.
        (Some(e), None) if !is_env_name(e.trim()) => Err(invalid(
            format!("{key_prefix}token_env"),
            "must be the name of an environment variable (letters, digits and _), not the \
             token: put the token in that variable, or in a file named by token_file",
        )),
        (Some(e), None) => Ok(SecretSource::Env(e.trim().to_owned())),
        (None, Some(f)) => Ok(SecretSource::File(f.clone())),
        (None, None) => match default_env {
            Some(d) => Ok(SecretSource::Env(d.to_owned())),
            None => Err(invalid(
                format!("{key_prefix}token_env"),
                format!("set {key_prefix}token_env or {key_prefix}token_file"),
            )),
        },
    }
}

/// Returns true if and only if `s` is an environment variable name as shells and systemd write
/// them: ASCII letters, digits and `_`, not starting with a digit.
pub(super) fn is_env_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_secret(
    key: String,
    source: &SecretSource,
    what: &'static str,
) -> Result<Secret, ConfigError> {
    source
        .read(what)
        .map_err(|source| ConfigError::Secret { key, source })
}

fn secret_key(prefix: &str, source: &SecretSource) -> String {
    match source {
        SecretSource::Env(_) => format!("{prefix}token_env"),
        SecretSource::File(_) => format!("{prefix}token_file"),
    }
}

pub(super) fn validate_jira(raw: &RawJira) -> Result<JiraConfig, ConfigError> {
    let insecure = InsecureHttp {
        allowed: raw.allow_insecure_http,
        key: "jira.allow_insecure_http",
    };
    let url = as_base(parse_server_url("jira.url", &raw.url, insecure)?);
    let deployment = match raw.deployment.as_deref() {
        Some(d) => parse_name("jira.deployment", "deployment", d)?,
        None if url
            .host_str()
            .is_some_and(|h| h.ends_with(".atlassian.net") || h.ends_with(".jira.com")) =>
        {
            Deployment::Cloud
        }
        None => Deployment::DataCenter,
    };
    let source = secret_source("jira.", &raw.token_env, &raw.token_file, Some("JIRA_TOKEN"))?;
    let secret = read_secret(secret_key("jira.", &source), &source, "Jira API token")?;
    let user = raw.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let auth = match (deployment, user) {
        (Deployment::Cloud, None) => {
            return Err(invalid(
                "jira.user",
                "Jira Cloud needs the account's email in jira.user (API tokens use basic auth)",
            ));
        }
        (_, Some(u)) => JiraAuth::Basic {
            user: u.to_owned(),
            secret,
        },
        (Deployment::DataCenter, None) => JiraAuth::Bearer(secret),
    };
    if raw.page_size == 0 || raw.page_size > 1000 {
        return Err(invalid("jira.page_size", "must be between 1 and 1000"));
    }
    let time_zone = match raw.time_zone.as_deref() {
        None => None,
        Some(tz) => Some(tz.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                "jira.time_zone",
                format!("{tz:?} is not an IANA time zone name (like \"Europe/Berlin\")"),
            )
        })?),
    };
    Ok(JiraConfig {
        url,
        deployment,
        auth,
        timeout: timeout("jira.timeout_secs", raw.timeout_secs)?,
        page_size: raw.page_size,
        time_zone,
        extra_roots: read_ca_file("jira.ca_file", raw.ca_file.as_ref())?,
        link_back: raw.link_back,
    })
}

fn timeout(key: &str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 || secs > 600 {
        return Err(invalid(key, "must be between 1 and 600 seconds"));
    }
    Ok(Duration::from_secs(secs))
}

/// GitLab.com's published limits, kept under with a margin. Self-managed instances have these
/// limits off by default, so nothing is paced there unless configured.
const GITLAB_COM_REQUESTS_PER_MINUTE: u32 = 1_800;
const GITLAB_COM_CREATES_PER_MINUTE: u32 = 180;
const GITLAB_COM_SEARCHES_PER_MINUTE: u32 = 9;

/// `[gitlab]`'s `allow_insecure_http`, which a rule's `alert_url` follows too.
pub(super) fn gitlab_insecure_http(raw: &RawGitLab) -> InsecureHttp {
    InsecureHttp {
        allowed: raw.allow_insecure_http,
        key: "gitlab.allow_insecure_http",
    }
}

pub(super) fn validate_gitlab(raw: &RawGitLab) -> Result<GitLabConfig, ConfigError> {
    let url = as_base(parse_server_url(
        "gitlab.url",
        &raw.url,
        gitlab_insecure_http(raw),
    )?);
    // The sync adds /api/v4 itself: with it in the URL every request would ask for
    // /api/v4/api/v4/… and GitLab would answer 404 for the token's user.
    if url
        .path()
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with("/api/v4")
    {
        return Err(invalid(
            "gitlab.url",
            "ends in /api/v4: give GitLab's own address, without /api/v4 (like \
             https://gitlab.example.com, with the path GitLab is served under if any); the sync \
             adds /api/v4 itself",
        ));
    }
    let source = secret_source(
        "gitlab.",
        &raw.token_env,
        &raw.token_file,
        Some("GITLAB_TOKEN"),
    )?;
    let token_key = secret_key("gitlab.", &source);
    let token = read_secret(token_key.clone(), &source, "GitLab access token")?;
    let is_dot_com = url.host_str() == Some("gitlab.com");
    let pick = |key: &str, v: Option<u32>, dot_com: u32| -> Result<Option<u32>, ConfigError> {
        match v {
            Some(0) => Err(invalid(
                format!("gitlab.{key}"),
                "must be at least 1 (omit it for the default)",
            )),
            Some(n) => Ok(Some(n)),
            None => Ok(is_dot_com.then_some(dot_com)),
        }
    };
    let pace = Pace {
        requests_per_minute: pick(
            "requests_per_minute",
            raw.requests_per_minute,
            GITLAB_COM_REQUESTS_PER_MINUTE,
        )?,
        creates_per_minute: pick(
            "creates_per_minute",
            raw.creates_per_minute,
            GITLAB_COM_CREATES_PER_MINUTE,
        )?,
        searches_per_minute: pick(
            "searches_per_minute",
            raw.searches_per_minute,
            GITLAB_COM_SEARCHES_PER_MINUTE,
        )?,
    };
    Ok(GitLabConfig {
        url,
        token,
        token_key,
        timeout: timeout("gitlab.timeout_secs", raw.timeout_secs)?,
        pace,
        extra_roots: read_ca_file("gitlab.ca_file", raw.ca_file.as_ref())?,
    })
}

pub(super) fn validate_sync(raw: &RawSync) -> Result<SyncConfig, ConfigError> {
    if raw.lookback_secs > 7 * 24 * 3600 {
        return Err(invalid(
            "sync.lookback_secs",
            "must be at most 604800 (a week)",
        ));
    }
    if raw.max_attempts == 0 {
        return Err(invalid("sync.max_attempts", "must be at least 1"));
    }
    if raw.reconcile_secs == 0 {
        return Err(invalid("sync.reconcile_secs", "must be at least 1"));
    }
    if raw.rule_concurrency == 0 {
        return Err(invalid("sync.rule_concurrency", "must be at least 1"));
    }
    if raw.backfill_concurrency == 0 || raw.backfill_concurrency > 64 {
        return Err(invalid(
            "sync.backfill_concurrency",
            "must be between 1 and 64",
        ));
    }
    Ok(SyncConfig {
        shutdown_grace: Duration::from_secs(default_grace_secs()),
        lookback: Duration::from_secs(raw.lookback_secs),
        retry: RetryPolicy {
            max_attempts: raw.max_attempts,
            base_delay: Duration::from_millis(raw.retry_base_delay_ms),
            max_delay: Duration::from_secs(raw.retry_max_delay_secs),
            max_retry_after: Duration::from_secs(raw.max_retry_after_secs),
        },
        rule_concurrency: raw.rule_concurrency,
        backfill_concurrency: raw.backfill_concurrency,
        reconcile: Duration::from_secs(raw.reconcile_secs),
    })
}

/// `[metrics]`: `listen` an IP address with a port other than 0, `textfile` a `.prom` file.
pub(super) fn validate_metrics(raw: &RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let listen = match raw.listen.as_deref().map(str::trim) {
        None => None,
        Some(s) => {
            let addr: std::net::SocketAddr = s.parse().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!(
                        "{s:?} is not an IP address and port such as 127.0.0.1:9898 (or \
                         [::1]:9898; a host name is not accepted)"
                    ),
                )
            })?;
            if addr.port() == 0 {
                return Err(invalid(
                    "metrics.listen",
                    "port 0 would pick a random port Prometheus could not know: name the port",
                ));
            }
            Some(addr)
        }
    };
    let textfile = match &raw.textfile {
        None => None,
        Some(path) => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_dir = path.as_os_str().to_string_lossy().ends_with('/');
            if is_dir || !name.ends_with(".prom") || name == ".prom" {
                return Err(invalid(
                    "metrics.textfile",
                    "must name a file ending in .prom, such as \
                     /var/lib/node_exporter/textfile_collector/jira-gitlab-sync.prom \
                     (node_exporter's textfile collector reads only *.prom files)",
                ));
            }
            Some(path.clone())
        }
    };
    Ok(MetricsConfig { listen, textfile })
}

pub(super) fn validate_cron(key: &str, cron: &str) -> Result<(), ConfigError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
        .map(|_| ())
        .map_err(|e| {
            invalid(
                key,
                format!(
                    "{cron:?} is not a schedule: {e} (six fields: sec min hour day month weekday)"
                ),
            )
        })
}

/// Parses a `YYYY-MM-DD` (UTC midnight) or RFC 3339 time, as `since` and the CLI take them.
///
/// # Errors
/// Neither form; the message names `key`.
pub fn parse_since(key: &str, s: &str) -> Result<DateTime<Utc>, ConfigError> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            invalid(
                key,
                format!("{s:?} is not a date: use YYYY-MM-DD or an RFC 3339 time"),
            )
        })
}

/// The severity map used when a rule sets none: Jira Cloud's and Data Center's default
/// priority schemes.
fn default_severity_map() -> BTreeMap<String, Severity> {
    [
        ("highest", Severity::Critical),
        ("blocker", Severity::Critical),
        ("critical", Severity::Critical),
        ("high", Severity::High),
        ("major", Severity::High),
        ("medium", Severity::Medium),
        ("low", Severity::Low),
        ("minor", Severity::Low),
        ("lowest", Severity::Info),
        ("trivial", Severity::Info),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One of an enum's names (see `domain::string_enum!`), trimmed and case-insensitive; the error
/// names `key` and lists the names there are.
fn parse_name<T>(key: &str, what: &str, s: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr<Err = UnknownName>,
{
    s.trim().to_lowercase().parse().map_err(|e: UnknownName| {
        let names: Vec<String> = e.expected.iter().map(|n| format!("{n:?}")).collect();
        invalid(
            key,
            format!("{:?} is not a {what}: use {}", s.trim(), names.join(", ")),
        )
    })
}

/// One `[[rule]]`, the `i`th; its `alert_url` may use `http://` as `insecure` (`[gitlab]`'s) says.
pub(super) fn validate_rule(
    i: usize,
    raw: &RawRule,
    default_cron: &str,
    insecure: InsecureHttp,
) -> Result<RuleConfig, ConfigError> {
    let name = raw.name.trim();
    if name.is_empty() {
        return Err(invalid(format!("rule[{i}].name"), "must not be empty"));
    }
    let k = |field: &str| format!("rule {name:?}: {field}");
    let jql = raw.jql.trim();
    if jql.is_empty() {
        return Err(invalid(k("jql"), "must not be empty"));
    }
    if jql.to_lowercase().contains("order by") {
        return Err(invalid(
            k("jql"),
            "remove ORDER BY: the sync orders by updated and key itself",
        ));
    }
    let target: Target = parse_name(&k("target"), "target", &raw.target)?;
    let project = raw.gitlab_project.trim().trim_matches('/');
    if project.is_empty() {
        return Err(invalid(k("gitlab_project"), "must not be empty"));
    }
    let alert = if target == Target::Alert {
        let url = raw.alert_url.as_deref().ok_or_else(|| {
            invalid(
                k("alert_url"),
                "target = \"alert\" needs the alert integration's URL",
            )
        })?;
        let url = parse_server_url(&k("alert_url"), url, insecure)?;
        let prefix = format!("rule {name:?}: alert_");
        let source = secret_source(&prefix, &raw.alert_token_env, &raw.alert_token_file, None)?;
        let token_key = secret_key(&prefix, &source);
        let token = read_secret(token_key.clone(), &source, "GitLab alert integration key")?;
        Some(AlertEndpoint {
            url,
            token,
            token_key,
        })
    } else {
        for (set, field) in [
            (raw.alert_url.is_some(), "alert_url"),
            (raw.alert_token_env.is_some(), "alert_token_env"),
            (raw.alert_token_file.is_some(), "alert_token_file"),
        ] {
            if set {
                return Err(invalid(k(field), "only applies to target = \"alert\""));
            }
        }
        None
    };
    for (j, l) in raw.labels.iter().enumerate() {
        if l.trim().is_empty() || l.contains(',') {
            return Err(invalid(
                k(&format!("labels[{j}]")),
                format!("{l:?} is not a label (empty, or holds a comma)"),
            ));
        }
    }
    if raw.title.trim().is_empty() {
        return Err(invalid(k("title"), "must not be empty"));
    }
    let mut severity = default_severity_map();
    for (prio, sev) in &raw.severity {
        severity.insert(
            prio.to_lowercase(),
            parse_name(&k(&format!("severity.{prio}")), "severity", sev)?,
        );
    }
    // Timeline events are an incident's (`timelineEventCreate` takes an incident's id).
    let timeline_events = match (target, raw.timeline_events) {
        (Target::Incident, set) => set.unwrap_or(true),
        (_, Some(true)) => {
            return Err(invalid(
                k("timeline_events"),
                "only applies to target = \"incident\" (GitLab keeps timeline events on incidents)",
            ));
        }
        (_, _) => false,
    };
    let cron = raw.cron.clone().unwrap_or_else(|| default_cron.to_owned());
    validate_cron(&k("cron"), &cron)?;
    let history = super::history::validate_history(
        &k,
        target == Target::Alert,
        &raw.stage_labels,
        raw.created_from.as_deref(),
        raw.closed_from.as_deref(),
    )?;
    Ok(RuleConfig {
        name: name.to_owned(),
        jql: jql.to_owned(),
        destination: Destination {
            target,
            project: project.to_owned(),
            project_id: None,
            alert,
        },
        labels: raw.labels.iter().map(|l| l.trim().to_owned()).collect(),
        since: raw
            .since
            .as_deref()
            .map(|s| parse_since(&k("since"), s))
            .transpose()?,
        cron,
        title: raw.title.clone(),
        severity_label: Some(raw.severity_label.trim().to_owned()).filter(|s| !s.is_empty()),
        severity,
        on_leave: raw
            .on_leave
            .as_deref()
            .map(|s| parse_name(&k("on_leave"), "on_leave", s))
            .transpose()?
            .unwrap_or(OnLeave::Label),
        on_delete: raw
            .on_delete
            .as_deref()
            .map(|s| parse_name(&k("on_delete"), "on_delete", s))
            .transpose()?
            .unwrap_or(OnDelete::Close),
        history,
        timeline_events,
    })
}
