//! DORA days that count, and back-dated issues that Premium's value-stream analytics sees.
//!
//! GitLab's DORA keeps one row of figures per day and production environment, and recomputes a
//! day only on an incident event (create, close, reopen; delete on newer versions) in a project
//! that has a production-tier environment at that moment (`ee/app/models/dora/watchers/
//! issue_watcher.rb` → `Dora::DailyMetrics::RefreshWorker` → `Dora::DailyMetrics.refresh!`).
//! So this module:
//! - checks, before `backfill` writes an incident, that each incident rule's project has a
//!   production-tier environment, and creates one named `production` on request
//!   ([`ensure_production`]); without it the imported incidents would never be counted;
//! - `repair`s the days GitLab missed: one incident per (project, day) reopened and closed again
//!   at its own `closed_at`, which refreshes that day ([`repair`]), with an intent recorded
//!   before the reopen so that a crash never leaves an incident open ([`RepairState`]);
//! - gives each issue a backfill imported one write without `updated_at` (a label,
//!   [`MARKER_LABEL`]): Premium's value-stream aggregation walks issues by an `updated_at`
//!   cursor (`ee/app/services/analytics/cycle_analytics/aggregator_service.rb` keeps
//!   `cursor_for(mode, model)` between incremental runs; `data_loader_service.rb` reads issues
//!   past it in `updated_at` order), so an issue whose last write was back-dated sits behind
//!   the cursor until the periodic full re-aggregation ([`mark_backfilled`]).
//!
//! It talks to the GitLab client and the store directly, as `check` does: none of this is part
//! of a sync cycle.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::RuleConfig;
use crate::domain::{JiraKey, Mapping, RemoteState, Target};
use crate::engine::error_chain;
use crate::engine::ports::{GitLabSink, Place, PortError};
use crate::gitlab::{Environment, GitLabClient, GitLabError};
use crate::store::{RepairRow, RepairState, Store, StoreError};

/// The environment `--create-environment` creates, and its tier.
pub const PRODUCTION: &str = "production";

/// The label backfill adds, without `updated_at`, to each issue it imported.
pub const MARKER_LABEL: &str = "jira-backfilled";

/// Why DORA work could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DoraError {
    /// Incident rules write to projects without a production-tier environment.
    #[error("{}", no_production_message(.0))]
    NoProductionEnvironment(Vec<ProjectEnvironments>),
    /// A project's environments cannot be read, or one cannot be created.
    #[error("cannot {doing}")]
    GitLab {
        doing: String,
        #[source]
        source: GitLabError,
    },
    #[error("cannot {doing}")]
    Store {
        doing: String,
        #[source]
        source: StoreError,
    },
    /// `repair --rule` named a rule that does not replicate incidents.
    #[error(
        "rule {0} does not replicate incidents (target = \"incident\"): repair has nothing to do for it"
    )]
    NotIncidentRule(String),
}

impl DoraError {
    /// Returns true if and only if a later attempt may succeed with no change of configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            DoraError::GitLab { source, .. } => source.is_retryable(),
            DoraError::Store { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// A project and the environments GitLab lists for it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectEnvironments {
    pub project: String,
    pub environments: Vec<Environment>,
}

impl ProjectEnvironments {
    /// The production-tier environments.
    pub fn production(&self) -> Vec<&Environment> {
        self.environments
            .iter()
            .filter(|e| e.tier.as_deref() == Some(PRODUCTION))
            .collect()
    }

    /// `name (tier), …`, or `none`.
    pub fn listed(&self) -> String {
        if self.environments.is_empty() {
            return "none".to_owned();
        }
        self.environments
            .iter()
            .map(|e| format!("{} ({})", e.name, e.tier.as_deref().unwrap_or("no tier")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn no_production_message(missing: &[ProjectEnvironments]) -> String {
    let list = missing
        .iter()
        .map(|p| format!("{} (environments: {})", p.project, p.listed()))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "no production-tier environment in {list}: GitLab's DORA counts a project's incidents \
         only while it has one, and recomputes a day only when an incident of it is created, \
         closed or reopened, so incidents imported now would never be counted. Run again with \
         --create-environment to create an environment named \"production\" (tier production) \
         first, or create it in GitLab (the project's Operate > Environments > New environment, \
         named production); nothing was written"
    )
}

/// The projects of incident rules, each once, in the rules' order.
pub fn incident_projects(rules: &[RuleConfig]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        if r.destination.target == Target::Incident && !out.contains(&r.destination.project) {
            out.push(r.destination.project.clone());
        }
    }
    out
}

/// Lists each project's environments.
///
/// # Errors
/// GitLab cannot list them.
pub async fn environments(
    gitlab: &GitLabClient,
    projects: &[String],
) -> Result<Vec<ProjectEnvironments>, DoraError> {
    let mut out = Vec::new();
    for project in projects {
        let environments =
            gitlab
                .environments(project)
                .await
                .map_err(|source| DoraError::GitLab {
                    doing: format!("list the environments of project {project}"),
                    source,
                })?;
        out.push(ProjectEnvironments {
            project: project.clone(),
            environments,
        });
    }
    Ok(out)
}

/// Makes sure each incident rule's project has a production-tier environment: with `create`,
/// creates one named [`PRODUCTION`] in tier [`PRODUCTION`] where there is none (only says so
/// when `dry_run`). Returns a line for each environment created (or that would be).
///
/// # Errors
/// [`DoraError::NoProductionEnvironment`] naming the projects without one (nothing written),
/// unless `create`; GitLab cannot list or create environments.
pub async fn ensure_production(
    gitlab: &GitLabClient,
    rules: &[RuleConfig],
    create: bool,
    dry_run: bool,
) -> Result<Vec<String>, DoraError> {
    let found = environments(gitlab, &incident_projects(rules)).await?;
    let missing: Vec<ProjectEnvironments> = found
        .into_iter()
        .filter(|p| p.production().is_empty())
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if !create {
        return Err(DoraError::NoProductionEnvironment(missing));
    }
    let mut notes = Vec::new();
    for p in missing {
        if dry_run {
            notes.push(format!(
                "would create environment {PRODUCTION} (tier {PRODUCTION}) in project {}",
                p.project
            ));
            continue;
        }
        gitlab
            .create_environment(&p.project, PRODUCTION, PRODUCTION)
            .await
            .map_err(|source| DoraError::GitLab {
                doing: format!(
                    "create environment {PRODUCTION} (tier {PRODUCTION}) in project {} (it has: \
                     {}); an environment of that name in another tier must be moved to the \
                     production tier by hand",
                    p.project,
                    p.listed()
                ),
                source,
            })?;
        notes.push(format!(
            "created environment {PRODUCTION} (tier {PRODUCTION}) in project {}",
            p.project
        ));
    }
    Ok(notes)
}

/// What [`mark_backfilled`] did for one rule.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MarkReport {
    pub rule: String,
    /// Issues that got the marker now.
    pub marked: u64,
    /// Issues that had it from an earlier run.
    pub already: u64,
    /// Issues whose marker write failed (they get it on the next backfill).
    pub failed: Vec<(JiraKey, String)>,
}

/// Adds [`MARKER_LABEL`] to each issue or incident of `rule` created in `[since, until)` that
/// does not have it yet (per the store), `concurrency` at a time, without `updated_at`: GitLab
/// stamps the issue's `updated_at` with now, which brings it forward to Premium's value-stream
/// aggregation. Stops between issues when `cancel` fires.
///
/// # Errors
/// The store cannot be read or written, or GitLab refuses in a way that stops every later write
/// (token, permissions, project).
pub async fn mark_backfilled(
    gitlab: &GitLabClient,
    store: &Store,
    rule: &RuleConfig,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<MarkReport, DoraError> {
    let mut report = MarkReport {
        rule: rule.name.clone(),
        ..MarkReport::default()
    };
    if rule.destination.target == Target::Alert {
        return Ok(report);
    }
    let store_err = |doing: &str| {
        let doing = doing.to_owned();
        move |source| DoraError::Store { doing, source }
    };
    let mappings = store
        .all_mappings(&rule.name)
        .await
        .map_err(store_err("read the rule's mappings"))?;
    let mut by_project: BTreeMap<u64, Vec<Mapping>> = BTreeMap::new();
    for m in mappings {
        let in_range = m.created_at >= since && until.is_none_or(|u| m.created_at < u);
        if let (true, Some(pid), Some(_), None) = (in_range, m.project_id, m.iid, m.gone_at) {
            by_project.entry(pid).or_default().push(m);
        }
    }
    for (pid, mappings) in by_project {
        let marked = store
            .marked(pid)
            .await
            .map_err(store_err("read the marked issues"))?;
        let place = Place::new(&rule.destination, pid);
        let todo: Vec<Mapping> = mappings
            .into_iter()
            .filter(|m| {
                let done = m.iid.is_some_and(|iid| marked.contains(&iid));
                if done {
                    report.already += 1;
                }
                !done
            })
            .collect();
        let mut writes = futures_util::stream::iter(todo)
            .take_while(|_| std::future::ready(!cancel.is_cancelled()))
            .map(|m| {
                let dest = &place.dest;
                async move {
                    let r = gitlab.add_label(dest, &m, MARKER_LABEL).await;
                    (m, r)
                }
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((m, result)) = writes.next().await {
            match result {
                Ok(_) => {
                    let iid = m.iid.expect("only mappings with an iid are marked");
                    store
                        .record_mark(pid, iid, &rule.name, &m.jira_key, MARKER_LABEL)
                        .await
                        .map_err(store_err("record a marked issue"))?;
                    report.marked += 1;
                }
                Err(e) if e.stops_run() => {
                    return Err(DoraError::GitLab {
                        doing: format!("label {} with {MARKER_LABEL}", m.jira_key),
                        source: e,
                    });
                }
                Err(e) => report.failed.push((m.jira_key.clone(), error_chain(&e))),
            }
        }
    }
    Ok(report)
}

/// What `repair` did (or, in a dry run, would do) for one day of one project.
#[derive(Clone, Debug, Serialize)]
pub struct RepairDay {
    pub project: String,
    pub project_id: u64,
    pub day: NaiveDate,
    pub rule: String,
    pub jira_key: JiraKey,
    pub iid: u64,
    pub closed_at: DateTime<Utc>,
    pub outcome: RepairOutcome,
}

/// How a day's repair ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairOutcome {
    /// A dry run: it would be reopened and closed again.
    Planned,
    /// Reopened and closed again: GitLab recomputed the day.
    Repaired,
    /// An earlier repair was interrupted after the reopen; the incident is closed again now.
    Finished,
    /// GitLab holds none of the day's replicated incidents closed on that day (a person
    /// reopened them, or closed them at another time): nothing written.
    Open,
    /// It failed; the error says why. A reopen that was sent is finished by the next repair.
    Failed(String),
}

/// What `repair` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    pub days: Vec<RepairDay>,
    /// Days repaired by an earlier run, left alone.
    pub already_repaired: u64,
    /// Lines about what was not repaired and why (projects refused, rules skipped).
    pub notes: Vec<String>,
}

impl RepairReport {
    /// Returns true if and only if some day failed.
    pub fn has_failures(&self) -> bool {
        self.days
            .iter()
            .any(|d| matches!(d.outcome, RepairOutcome::Failed(_)))
    }
}

/// Candidates of one (project, day): the rule, its place and the closed incidents of that day,
/// earliest closed first.
struct DayCandidates {
    project: String,
    rule: RuleConfig,
    place: Place,
    incidents: Vec<Mapping>,
}

/// Makes GitLab recompute each day since `since` on which an incident replicated by `rules`
/// (incident rules) was closed: for each (project, day), one of those incidents is reopened and
/// closed again at its own `closed_at`. Days an earlier repair did are skipped; a repair an
/// earlier run left between reopen and close is finished first. With `dry_run`, only lists.
///
/// Refuses projects without a production-tier environment (their days would not be
/// recomputed), naming them in [`RepairReport::notes`].
///
/// # Errors
/// The store cannot be read or written; GitLab refuses the token, permissions or project.
pub async fn repair(
    gitlab: &GitLabClient,
    store: &Store,
    rules: &[RuleConfig],
    since: DateTime<Utc>,
    dry_run: bool,
    cancel: &CancellationToken,
) -> Result<RepairReport, DoraError> {
    let store_err = |doing: &str| {
        let doing = doing.to_owned();
        move |source| DoraError::Store { doing, source }
    };
    let mut report = RepairReport::default();
    let done = store
        .repairs()
        .await
        .map_err(store_err("read earlier repairs"))?;

    // First, the incidents an interrupted repair may have left open.
    for row in done.iter().filter(|r| r.state == RepairState::Reopening) {
        let Some(rule) = rules.iter().find(|r| r.name == row.rule) else {
            report.notes.push(format!(
                "{} (iid {}) of rule {} was being repaired when an earlier run stopped; the rule \
                 is not in this run (name it with --rule): check that GitLab holds it closed",
                row.jira_key, row.iid, row.rule
            ));
            continue;
        };
        let day = finish_interrupted(gitlab, store, rule, row, dry_run).await?;
        report.days.push(day);
    }

    // The days to repair, per project and day.
    let mut days: BTreeMap<(u64, NaiveDate), DayCandidates> = BTreeMap::new();
    let mut resolved: BTreeMap<String, u64> = BTreeMap::new();
    for rule in rules {
        let mappings = store
            .all_mappings(&rule.name)
            .await
            .map_err(store_err("read the rule's mappings"))?;
        for m in mappings {
            let (Some(closed), Some(_), None) = (m.closed_at, m.iid, m.gone_at) else {
                continue;
            };
            if m.target != Target::Incident || m.state != RemoteState::Closed || closed < since {
                continue;
            }
            let pid = match m.project_id {
                Some(pid) => pid,
                None => match resolved.get(&rule.destination.project) {
                    Some(pid) => *pid,
                    None => {
                        let p = gitlab
                            .resolve_project(&rule.destination.project)
                            .await
                            .map_err(|source| DoraError::GitLab {
                                doing: format!("resolve project {}", rule.destination.project),
                                source,
                            })?;
                        resolved.insert(rule.destination.project.clone(), p.id);
                        p.id
                    }
                },
            };
            let entry = days
                .entry((pid, closed.date_naive()))
                .or_insert_with(|| DayCandidates {
                    project: rule.destination.project.clone(),
                    rule: rule.clone(),
                    place: Place::new(&rule.destination, pid),
                    incidents: Vec::new(),
                });
            if entry.rule.name == rule.name {
                entry.incidents.push(m);
            }
        }
    }
    let repaired: HashSet<(u64, NaiveDate)> = done
        .iter()
        .filter(|r| r.state == RepairState::Done)
        .map(|r| (r.project_id, r.day))
        .collect();

    // Projects without a production-tier environment: their days would not be recomputed.
    let projects: Vec<String> = {
        let mut v: Vec<String> = days.values().map(|d| d.project.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let refused: HashSet<String> = environments(gitlab, &projects)
        .await?
        .into_iter()
        .filter(|p| p.production().is_empty())
        .map(|p| {
            report.notes.push(format!(
                "project {} has no production-tier environment (environments: {}): GitLab would \
                 not recompute its days; create one (backfill --create-environment, or the \
                 project's Operate > Environments) and run repair again",
                p.project,
                p.listed()
            ));
            p.project
        })
        .collect();

    for ((pid, day), mut c) in days {
        if cancel.is_cancelled() {
            break;
        }
        if refused.contains(&c.project) {
            continue;
        }
        if repaired.contains(&(pid, day)) {
            report.already_repaired += 1;
            continue;
        }
        c.incidents.sort_by_key(|m| (m.closed_at, m.iid));
        let outcome = repair_day(gitlab, store, &c, pid, day, dry_run).await?;
        report.days.push(outcome);
    }
    Ok(report)
}

/// Closes again an incident an interrupted repair reopened, and records the day as done.
async fn finish_interrupted(
    gitlab: &GitLabClient,
    store: &Store,
    rule: &RuleConfig,
    row: &RepairRow,
    dry_run: bool,
) -> Result<RepairDay, DoraError> {
    let mut day = RepairDay {
        project: rule.destination.project.clone(),
        project_id: row.project_id,
        day: row.day,
        rule: row.rule.clone(),
        jira_key: row.jira_key.clone(),
        iid: row.iid,
        closed_at: row.closed_at,
        outcome: RepairOutcome::Planned,
    };
    if dry_run {
        return Ok(day);
    }
    let mapping = store
        .mapping(&row.rule, &row.jira_key)
        .await
        .map_err(|source| DoraError::Store {
            doing: format!("read the mapping of {}", row.jira_key),
            source,
        })?;
    let Some(mapping) = mapping else {
        day.outcome = RepairOutcome::Failed(
            "the store no longer maps it; check that GitLab holds it closed".to_owned(),
        );
        return Ok(day);
    };
    let place = Place::new(&rule.destination, row.project_id);
    match gitlab
        .finish_reclose(&place.dest, &mapping, row.closed_at)
        .await
    {
        Ok(_) => {
            record(store, row.clone(), RepairState::Done).await?;
            day.outcome = RepairOutcome::Finished;
        }
        Err(e) if e.stops_run() => {
            return Err(DoraError::GitLab {
                doing: format!("close {} again", row.jira_key),
                source: e,
            });
        }
        Err(e) => day.outcome = RepairOutcome::Failed(error_chain(&e)),
    }
    Ok(day)
}

async fn record(store: &Store, row: RepairRow, state: RepairState) -> Result<(), DoraError> {
    let key = row.jira_key.clone();
    store
        .record_repair(RepairRow { state, ..row })
        .await
        .map_err(|source| DoraError::Store {
            doing: format!("record the repair of {key}"),
            source,
        })
}

/// Repairs one day with the first of its incidents GitLab holds closed.
async fn repair_day(
    gitlab: &GitLabClient,
    store: &Store,
    c: &DayCandidates,
    project_id: u64,
    day: NaiveDate,
    dry_run: bool,
) -> Result<RepairDay, DoraError> {
    let first = &c.incidents[0];
    let mut out = RepairDay {
        project: c.project.clone(),
        project_id,
        day,
        rule: c.rule.name.clone(),
        jira_key: first.jira_key.clone(),
        iid: first.iid.unwrap_or_default(),
        closed_at: first.closed_at.unwrap_or_default(),
        outcome: RepairOutcome::Planned,
    };
    if dry_run {
        return Ok(out);
    }
    let stop = |m: &Mapping, e: GitLabError| DoraError::GitLab {
        doing: format!("repair {}", m.jira_key),
        source: e,
    };
    for m in &c.incidents {
        out.jira_key = m.jira_key.clone();
        out.iid = m.iid.unwrap_or_default();
        let current = match gitlab.issue_state(&c.place.dest, m).await {
            Ok(r) => r,
            Err(e) if e.stops_run() => return Err(stop(m, e)),
            Err(e) if e.is_gone() => continue,
            Err(e) => {
                out.outcome = RepairOutcome::Failed(error_chain(&e));
                return Ok(out);
            }
        };
        // Only one GitLab holds closed, on this day, is reopened: closing it again at its own
        // time changes nothing else.
        let (RemoteState::Closed, Some(at)) = (current.state, current.closed_at) else {
            continue;
        };
        if at.date_naive() != day {
            continue;
        }
        out.closed_at = at;
        let row = RepairRow {
            project_id,
            day,
            rule: c.rule.name.clone(),
            jira_key: m.jira_key.clone(),
            iid: out.iid,
            closed_at: at,
            state: RepairState::Reopening,
        };
        record(store, row.clone(), RepairState::Reopening).await?;
        match gitlab.reclose_at(&c.place.dest, m, at).await {
            Ok(_) => {
                record(store, row, RepairState::Done).await?;
                out.outcome = RepairOutcome::Repaired;
            }
            Err(e) if e.stops_run() => return Err(stop(m, e)),
            Err(e) => out.outcome = RepairOutcome::Failed(error_chain(&e)),
        }
        return Ok(out);
    }
    out.outcome = RepairOutcome::Open;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal names each project, its environments and both fixes, and says nothing was
    /// written.
    #[test]
    fn refusal_names_projects_and_fixes() {
        let e = DoraError::NoProductionEnvironment(vec![ProjectEnvironments {
            project: "acme/ops".into(),
            environments: vec![Environment {
                name: "staging".into(),
                tier: Some("staging".into()),
            }],
        }]);
        let text = e.to_string();
        for part in [
            "acme/ops",
            "staging (staging)",
            "--create-environment",
            "Operate > Environments",
            "nothing was written",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }
}
