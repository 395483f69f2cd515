//! `check`: before go-live, prove the configuration would work. Checks the store (writable, in
//! use by which process, rules it holds that the config no longer has, rules that would start
//! from now for want of `since`), authenticates to Jira and GitLab, runs each rule's JQL once,
//! and checks each GitLab project: the token's role (Owner keeps Jira's exact times; below
//! Reporter, incidents become plain issues), a `production`-tier environment (without one DORA
//! ignores incidents), and alert settings; with `[jira] link_back`, the Jira permissions its
//! remote links need ("Browse projects", "Link issues"). Writes nothing anywhere (but a file created in the
//! store's directory and removed at once, to prove the directory takes new files).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, SyncConfig};
use crate::domain::{PageCursor, Target};
use crate::engine::error_chain;
use crate::engine::ports::JiraSource;
use crate::gitlab::{GitLabClient, OWNER, REPORTER};
use crate::http::RetryPolicy;
use crate::jira::{JiraClient, LINK_PERMISSIONS};
use crate::store::{LockState, Store, StoreError};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// The service would run, but the numbers GitLab shows would be off.
    Warn,
    /// The service would not work.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// One finding: what was checked, and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5}  {:<24}  {}",
            self.level, self.subject, self.message
        )
    }
}

/// The findings as a table whose columns line up however long a subject is.
pub fn render(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.subject.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for f in findings {
        let level = f.level.to_string();
        out.push_str(&format!(
            "{level:<5}  {:<width$}  {}\n",
            f.subject, f.message
        ));
    }
    out
}

fn finding(level: Level, subject: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        level,
        subject: subject.into(),
        message: message.into(),
    }
}

/// Runs every check; findings come in order, each on its own line.
///
/// Every request is tried once: `check` is run by a person, who is better served by "cannot
/// connect, check jira.url" at once than by the retries a sync makes to ride out an outage.
pub async fn run(cfg: &Config, config_path: &Path) -> Vec<Finding> {
    let sync = SyncConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..cfg.sync.retry.clone()
        },
        ..cfg.sync.clone()
    };
    let mut out = Vec::new();
    out.push(finding(
        Level::Ok,
        "config",
        format!(
            "{} rule(s); store {}",
            cfg.rules.len(),
            cfg.store_path.display()
        ),
    ));

    for exposed in &cfg.exposed_secrets {
        out.push(finding(Level::Warn, "secret", exposed.to_string()));
    }
    check_store(cfg, config_path, &mut out).await;
    check_metrics(cfg, &mut out);
    check_webhook(cfg, &mut out);
    match JiraClient::new(&cfg.jira, &sync) {
        Err(e) => out.push(finding(Level::Error, "jira", error_chain(&e))),
        Ok(jira) => check_jira(cfg, &jira, &mut out).await,
    }
    match GitLabClient::new(&cfg.gitlab, &sync) {
        Err(e) => out.push(finding(Level::Error, "gitlab", error_chain(&e))),
        Ok(gitlab) => check_gitlab(cfg, &gitlab, &mut out).await,
    }
    out
}

async fn check_jira(cfg: &Config, jira: &JiraClient, out: &mut Vec<Finding>) {
    match jira.myself().await {
        Ok(me) => out.push(finding(
            Level::Ok,
            "jira",
            format!(
                "authenticated as {}; JQL dates are read in its zone {}{}",
                me.display_name,
                me.time_zone,
                cfg.jira
                    .time_zone
                    .filter(|z| *z != me.time_zone)
                    .map(|z| format!(
                        " (but jira.time_zone says {z}: remove it unless /myself is wrong)"
                    ))
                    .unwrap_or_default()
            ),
        )),
        Err(e) => {
            out.push(finding(Level::Error, "jira", error_chain(&e)));
            return;
        }
    }
    // The Jira projects the rules' issues are in, for `link_back`'s permissions.
    let mut projects: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut unknown_projects = false;
    for rule in &cfg.rules {
        let jql = format!("({}) ORDER BY updated DESC", rule.jql);
        let subject = format!("rule {}", rule.name);
        match jira.search(&jql, &PageCursor::First).await {
            Ok(page) => {
                projects.extend(page.issues.iter().filter_map(|i| {
                    i.key
                        .as_str()
                        .rsplit_once('-')
                        .map(|(project, _)| project.to_owned())
                }));
                unknown_projects |= page.issues.is_empty();
                let count = match page.total {
                    Some(total) => format!("{total} issue(s) match"),
                    None if page.next.is_some() => {
                        format!("more than {} issues match", page.issues.len())
                    }
                    None => format!("{} issue(s) match", page.issues.len()),
                };
                let level = if page.undecodable.is_empty() {
                    Level::Ok
                } else {
                    Level::Warn
                };
                let mut message = format!("JQL runs: {count}");
                for bad in &page.undecodable {
                    message.push_str(&format!("; {} cannot be read: {}", bad.key, bad.reason));
                }
                out.push(finding(level, subject, message));
            }
            Err(e) => out.push(finding(Level::Error, subject, error_chain(&e))),
        }
    }
    if cfg.jira.link_back {
        check_link_permissions(jira, &projects, unknown_projects, out).await;
    }
}

/// With `[jira] link_back`: whether the account has "Browse projects" and "Link issues" in each
/// project the rules' issues are in (`mypermissions`), or, for a rule whose JQL matches nothing
/// yet, in any project. A missing one is a warning: the sync runs, but its links fail.
async fn check_link_permissions(
    jira: &JiraClient,
    projects: &std::collections::BTreeSet<String>,
    unknown_projects: bool,
    out: &mut Vec<Finding>,
) {
    let keys: Vec<&str> = LINK_PERMISSIONS.iter().map(|(k, _)| *k).collect();
    let mut contexts: Vec<Option<&str>> = projects.iter().map(|p| Some(p.as_str())).collect();
    if unknown_projects || projects.is_empty() {
        contexts.push(None);
    }
    for project in contexts {
        let (subject, place) = match project {
            Some(p) => (format!("link_back {p}"), format!("in project {p}")),
            None => (
                "link_back".to_owned(),
                "in any project (a rule matches no issue yet, so its projects are unknown)"
                    .to_owned(),
            ),
        };
        match jira.my_permissions(project, &keys).await {
            Ok(have) => {
                let missing: Vec<&str> = LINK_PERMISSIONS
                    .iter()
                    .filter(|(k, _)| !have.get(*k).copied().unwrap_or(false))
                    .map(|(_, name)| *name)
                    .collect();
                if missing.is_empty() {
                    out.push(finding(
                        Level::Ok,
                        subject,
                        format!(
                            "the account may put remote links on issues {place} (\"Browse \
                             projects\" and \"Link issues\")"
                        ),
                    ));
                } else {
                    let names: Vec<String> = missing.iter().map(|n| format!("\"{n}\"")).collect();
                    out.push(finding(
                        Level::Warn,
                        subject,
                        format!(
                            "the Jira account lacks the {} permission{} {place}: jira.link_back's \
                             remote links there will fail (GitLab is not affected); grant {} in \
                             the project's permission scheme",
                            names.join(" and "),
                            if missing.len() > 1 { "s" } else { "" },
                            if missing.len() > 1 { "them" } else { "it" },
                        ),
                    ));
                }
            }
            Err(e) => out.push(finding(Level::Warn, subject, error_chain(&e))),
        }
    }
}

async fn check_gitlab(cfg: &Config, gitlab: &GitLabClient, out: &mut Vec<Finding>) {
    let admin = match gitlab.current_user().await {
        Ok(user) => {
            out.push(finding(
                Level::Ok,
                "gitlab",
                format!("authenticated as {}", user.username),
            ));
            user.is_admin.unwrap_or(false)
        }
        Err(e) => {
            out.push(finding(Level::Error, "gitlab", error_chain(&e)));
            return;
        }
    };
    if cfg
        .rules
        .iter()
        .any(|r| r.destination.target == Target::Incident)
    {
        // Incident severities and timeline events are written over GraphQL: one cheap query.
        out.push(match gitlab.graphql_probe().await {
            Ok(()) => finding(
                Level::Ok,
                "gitlab",
                "GraphQL API usable (incident severity and timeline events)",
            ),
            Err(e) => finding(
                Level::Warn,
                "gitlab",
                format!(
                    "incident severity and timeline events will be left out: {}",
                    error_chain(&e)
                ),
            ),
        });
    }
    // Each project once, with the targets that write to it.
    let mut projects: BTreeMap<&str, Vec<Target>> = BTreeMap::new();
    for rule in &cfg.rules {
        projects
            .entry(rule.destination.project.as_str())
            .or_default()
            .push(rule.destination.target);
        if rule.destination.target == Target::Alert {
            out.push(finding(
                Level::Ok,
                format!("rule {}", rule.name),
                "alert URL and key are set; in GitLab, enable \"Create an incident\" and \
                 \"Automatically close associated incident\" in the alert settings, and note \
                 alerts carry arrival times, not Jira's",
            ));
        }
    }
    let known = known_projects(cfg).await;
    for (project, targets) in projects {
        let subject = format!("project {project}");
        let access = match gitlab.project(project).await {
            Ok(p) => p,
            Err(e) => {
                out.push(finding(Level::Error, subject, error_chain(&e)));
                continue;
            }
        };
        if let Some((id, path)) = known.get(project)
            && *id != access.id
        {
            out.push(finding(
                Level::Error,
                &subject,
                format!(
                    "now names project {} (id {}), but the sync resolved it to id {id} ({path} \
                     at the time) and writes there by id: the project was renamed and its old path taken by \
                     another. Set gitlab_project to the project you mean (its new path, or its \
                     numeric id {id} to keep writing where the objects are)",
                    access.path_with_namespace, access.id
                ),
            ));
        }
        let level = access.access_level();
        let writes_issues = targets.iter().any(|t| *t != Target::Alert);
        let writes_incidents = targets.contains(&Target::Incident);
        if writes_issues {
            if writes_incidents && !admin && level < REPORTER {
                out.push(finding(
                    Level::Error,
                    &subject,
                    format!(
                        "token role {} ({level}) is below Reporter: GitLab files incidents as \
                         plain issues, silently (it drops issue_type=incident), and DORA does \
                         not count them; give the token's user Reporter at least, Owner for \
                         exact times",
                        role_name(level)
                    ),
                ));
            } else if admin || level >= OWNER {
                out.push(finding(
                    Level::Ok,
                    &subject,
                    format!(
                        "token role {} ({level}): Jira's created and resolution times are kept exactly",
                        if admin { "administrator" } else { "Owner" }
                    ),
                ));
            } else if level >= REPORTER {
                out.push(finding(
                    Level::Warn,
                    &subject,
                    format!(
                        "token role {} ({level}): GitLab will silently use the sync's clock for \
                         created_at and closed_at, so DORA time to restore will be wrong; give \
                         the token's user the Owner role on {project}",
                        role_name(level)
                    ),
                ));
            } else {
                out.push(finding(
                    Level::Error,
                    &subject,
                    format!(
                        "token role {} ({level}) cannot create and close incidents; it needs \
                         Reporter at least, Owner for exact times",
                        role_name(level)
                    ),
                ));
            }
        }
        // DORA counts incidents (ours, and those alerts open) only in a project with a
        // production-tier environment (`ee/app/models/dora/watchers/issue_watcher.rb`).
        if targets.iter().any(|t| *t != Target::Issue) {
            out.push(production_finding(gitlab, project, &subject).await);
        }
    }
}

/// Whether DORA counts the project's incidents: exactly one production-tier environment. None:
/// DORA ignores them; more than one: GitLab sums incident counts over every production-tier
/// environment's daily rows (`ChangeFailureRateMetric.calculation_query`), so a day refreshed
/// for two of them counts its incidents twice.
async fn production_finding(gitlab: &GitLabClient, project: &str, subject: &str) -> Finding {
    let p = match gitlab.environments(project).await {
        Ok(environments) => crate::dora::ProjectEnvironments {
            project: project.to_owned(),
            environments,
        },
        Err(e) => {
            return finding(
                Level::Warn,
                subject,
                format!(
                    "cannot list environments to check for a production tier: {}",
                    error_chain(&e)
                ),
            );
        }
    };
    let production = p.production();
    match production.len() {
        1 => finding(
            Level::Ok,
            subject,
            format!(
                "has one production-tier environment ({}): DORA counts its incidents",
                production[0].name
            ),
        ),
        0 => finding(
            Level::Warn,
            subject,
            format!(
                "no environment in the production tier (environments: {}): DORA ignores this \
                 project's incidents; create one named \"production\" (backfill \
                 --create-environment, or Operate > Environments) or set an environment's \
                 deployment_tier to production, then run repair for the days already imported",
                p.listed()
            ),
        ),
        _ => finding(
            Level::Warn,
            subject,
            format!(
                "{} production-tier environments ({}): GitLab sums incident counts over every \
                 one of them, so change failure rate can count an incident twice; keep one in \
                 the production tier",
                production.len(),
                production
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// The store: can the service write it, does a process hold it, and what does it hold that the
/// config does not expect (rules renamed or removed; rules that have never run and have no
/// `since`, whose first run would start from now).
async fn check_store(cfg: &Config, config_path: &Path, out: &mut Vec<Finding>) {
    let path = &cfg.store_path;
    let shown = path.display();
    match Store::unwritable(path) {
        Some(why) => out.push(finding(
            Level::Error,
            "store",
            format!(
                "{why}: the sync could not open its store; make the directory writable by the \
                 user the sync runs as, or set [store] path elsewhere"
            ),
        )),
        None => out.push(finding(Level::Ok, "store", format!("{shown} is writable"))),
    }
    match Store::lock_state(path) {
        Ok(LockState::NoStore) => out.push(finding(
            Level::Ok,
            "store",
            "not created yet: the first run creates it",
        )),
        Ok(LockState::Free) => out.push(finding(Level::Ok, "store", "not in use by a process")),
        Ok(LockState::Held { holder }) => out.push(finding(
            Level::Warn,
            "store",
            format!(
                "in use by {}: --once, backfill, retry and forget are refused until it stops \
                 (fine if it is the service; stop it first to run those)",
                holder.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"))
            ),
        )),
        Err(e) => out.push(finding(
            Level::Error,
            "store",
            format!("cannot tell whether a process holds {shown}: {e}"),
        )),
    }
    let known = match Store::open_read_only(path) {
        Ok(store) => match store.rule_status().await {
            Ok(rules) => {
                interrupted_repairs(&store, out).await;
                rules
            }
            Err(e) => {
                out.push(finding(
                    Level::Error,
                    "store",
                    format!("cannot read {shown}: {}", error_chain(&e)),
                ));
                return;
            }
        },
        // Migrated on the next writable open; nothing is known of its rules meanwhile.
        Err(StoreError::Missing { .. } | StoreError::Outdated { .. }) => Vec::new(),
        Err(e) => {
            out.push(finding(Level::Error, "store", error_chain(&e)));
            return;
        }
    };
    for old in known
        .iter()
        .filter(|s| !cfg.rules.iter().any(|r| r.name == s.rule))
        .filter(|s| s.mapped > 0 || s.failed > 0)
    {
        out.push(finding(
            Level::Warn,
            format!("rule {}", old.rule),
            format!(
                "the store holds {} mapped object(s) and {} failing issue(s) under this rule \
                 name, which the config no longer has: if it was renamed, the new name still \
                 finds its objects (by Jira issue id, so nothing is duplicated) but starts from \
                 its own since, and the old name's failing issues are never retried; restore the \
                 name to keep them, or ignore this if the rule is gone for good",
                old.mapped, old.failed
            ),
        ));
    }
    for rule in &cfg.rules {
        let has_run = known
            .iter()
            .any(|s| s.rule == rule.name && s.cursor.is_some());
        if rule.since.is_some() || has_run {
            continue;
        }
        out.push(finding(
            Level::Warn,
            format!("rule {}", rule.name),
            format!(
                "has no since and has never run: its first run starts from that moment, so \
                 nothing that changed in Jira before it is replicated; for the history, run \
                 `jira-gitlab-sync --config {} backfill --since YYYY-MM-DD --rule {}` (the \
                 oldest date you want in GitLab), or set since = \"YYYY-MM-DD\" on the rule",
                config_path.display(),
                rule.name
            ),
        ));
    }
}

/// `[metrics]`: the service can listen on `listen` (a port in use is a warning: it may be the
/// running service's), and the sync can create the `textfile` in its directory.
fn check_metrics(cfg: &Config, out: &mut Vec<Finding>) {
    if let Some(addr) = cfg.metrics.listen {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => out.push(finding(
                Level::Ok,
                "metrics",
                format!("metrics.listen: the service can serve GET /metrics on {addr}"),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => out.push(finding(
                Level::Warn,
                "metrics",
                format!(
                    "metrics.listen: {addr} is in use: fine if the service runs and serves it; \
                     otherwise another process has the port and the service would not start: \
                     choose another port"
                ),
            )),
            Err(e) => out.push(finding(
                Level::Error,
                "metrics",
                format!(
                    "metrics.listen: cannot listen on {addr} ({e}): the service would not \
                     start; use an address of this machine, and a port above 1023 unless it \
                     runs as root"
                ),
            )),
        }
    }
    if let Some(path) = &cfg.metrics.textfile {
        match crate::metrics::textfile_unwritable(path) {
            None => out.push(finding(
                Level::Ok,
                "metrics",
                format!("metrics.textfile: {} can be written", path.display()),
            )),
            Some(why) => out.push(finding(
                Level::Error,
                "metrics",
                format!(
                    "metrics.textfile: {why}: the metrics file {} could not be written; make \
                     the directory writable by the user the sync runs as, or set \
                     metrics.textfile elsewhere",
                    path.display()
                ),
            )),
        }
    }
}

/// `[webhook]`: the service can listen on `listen` (in use is a warning: it may be the running
/// service's), and its secret can be read.
fn check_webhook(cfg: &Config, out: &mut Vec<Finding>) {
    let Some(w) = &cfg.webhook else {
        return;
    };
    let addr = w.listen;
    match std::net::TcpListener::bind(addr) {
        Ok(_) => out.push(finding(
            Level::Ok,
            "webhook",
            format!(
                "webhook.listen: the service can receive POST {} on {addr}",
                crate::webhook::PATH
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => out.push(finding(
            Level::Warn,
            "webhook",
            format!(
                "webhook.listen: {addr} is in use: fine if the service runs and receives there;                  otherwise another process has the port and the service would not start:                  choose another port"
            ),
        )),
        Err(e) => out.push(finding(
            Level::Error,
            "webhook",
            format!(
                "webhook.listen: cannot listen on {addr} ({e}): the service would not start;                  use an address of this machine, and a port above 1023 unless it runs as root"
            ),
        )),
    }
    match w.read_secret() {
        Ok(_) => out.push(finding(
            Level::Ok,
            "webhook",
            format!("{}: the webhook secret can be read", w.secret_key),
        )),
        Err(e) => out.push(finding(
            Level::Error,
            "webhook",
            format!(
                "{}: the service would not start; give it the secret registered with the                  Jira webhook",
                error_chain(&e)
            ),
        )),
    }
}

/// The projects the store resolved before (configured → id and path), read without the lock;
/// empty when there is no store yet or it cannot be read (the store's own check says why).
/// Incidents a `repair` reopened and may not have closed again (it was stopped in between).
async fn interrupted_repairs(store: &Store, out: &mut Vec<Finding>) {
    let Ok(rows) = store.repairs().await else {
        return;
    };
    for r in rows
        .iter()
        .filter(|r| r.state == crate::store::RepairState::Reopening)
    {
        out.push(finding(
            Level::Warn,
            format!("rule {}", r.rule),
            format!(
                "a repair stopped after reopening {} (iid {}, day {}): it may be open in GitLab; \
                 run `repair --since {}` again to close it at {}",
                r.jira_key,
                r.iid,
                r.day,
                r.day,
                r.closed_at.to_rfc3339()
            ),
        ));
    }
}

async fn known_projects(cfg: &Config) -> BTreeMap<String, (u64, String)> {
    let Ok(store) = Store::open_read_only(&cfg.store_path) else {
        return BTreeMap::new();
    };
    store.projects().await.unwrap_or_default()
}

fn role_name(level: u32) -> &'static str {
    match level {
        0 => "none",
        1..=10 => "Guest",
        11..=20 => "Reporter",
        21..=30 => "Developer",
        31..=40 => "Maintainer",
        _ => "Owner",
    }
}
