//! The fake GitLab's environments and its per-day DORA figures for incidents, as GitLab Ultimate
//! keeps them: a table of daily rows per environment, written only when something refreshes a
//! day, and read back by the DORA API.
//!
//! What it models, each from GitLab's source (gitlabhq/gitlabhq):
//! - **Environments** (`GET`/`POST /projects/:id/environments`, `lib/api/environments.rb`): a
//!   name unique in its project and a `tier` (`production`, `staging`, `testing`, `development`,
//!   `other`; `app/models/environment.rb` `enum :tier`). A tier not given is guessed from the
//!   name (`Environment#guess_tier`). Creating one needs Developer (`create_environment`,
//!   `app/policies/project_policy.rb`).
//! - **When a day is recomputed** (`ee/app/models/dora/watchers/issue_watcher.rb`): only on an
//!   incident's create (its `created_at` day), close (its `closed_at` day), reopen (the day it
//!   had been closed, `closed_at_was`) and delete (both days; newer versions), and only if the
//!   project has a production-tier environment at that moment (`production_env_id`:
//!   `issue.project.environments.production.pick(:id)`, one environment, here the lowest id).
//!   A move counts as the copy's create and the original's close
//!   (`app/services/issues/move_service.rb` creates one and closes the other); an alert's
//!   incident counts as any other. The refresh job (`Dora::DailyMetrics::RefreshWorker`) runs
//!   after the commit, asynchronously (`perform_async`; a refresh asked twice computes the same
//!   row). The fake queues the (environment, day) and runs the queued refreshes when the rows
//!   are next read (the DORA API, [`FakeGitLab::dora_rows`]), as if the worker had run just
//!   before: each sees the issues as the last request left them, and a burst of events costs
//!   one computation per day, not one scan of the project per event. Nothing else refreshes a
//!   day: an incident imported before the environment existed stays uncounted, and changing
//!   `issue_type` or `created_at` later refreshes nothing (the watcher hooks only the state
//!   machine, `after_create` and `after_destroy`).
//! - **What a refresh computes** (`Dora::DailyMetrics.refresh!`, `ee/app/models/dora/
//!   daily_metrics.rb`, an upsert of the (environment, date) row): time to restore is the median
//!   (`PERCENTILE_CONT(0.5)`) of `closed_at − created_at` in seconds over the project's closed
//!   incidents closed that day (`ee/app/models/dora/time_to_restore_service_metric.rb`), NULL
//!   when there are none; the incident count is the project's incidents created that day, open
//!   or closed (`ee/app/models/dora/change_failure_rate_metric.rb`). Both only for a
//!   production-tier environment; `deployment_frequency` counts the environment's successful
//!   deployments finished that day (`ee/app/models/dora/deployment_frequency_metric.rb`), which
//!   exist here only through [`FakeGitLab::deploy`].
//! - **Deployments** refresh their own environment's day when they succeed
//!   (`ee/app/models/dora/watchers/deployment_watcher.rb`), whatever its tier.
//! - **The DORA API** (`GET /projects/:id/dora/metrics`, `ee/lib/api/dora/metrics.rb` →
//!   `ee/app/services/dora/aggregate_metrics_service.rb` → `DailyMetrics.aggregate_for!`): the
//!   rows of the project's environments in the asked tiers (default `production`) between
//!   `start_date` (default 3 months ago) and `end_date` (default today), grouped by `interval`
//!   (`daily`, the default; `monthly`; `all`). A day no refresh wrote has no row and is absent
//!   from a daily answer. Time to restore aggregates the daily medians by their median; change
//!   failure rate is `SUM(incidents_count) / GREATEST(SUM(deployment_frequency), 1)`, so two
//!   production-tier environments whose rows both hold a day's incidents count them twice.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{
    FakeGitLab, FakeGitLabIssue, FakeProject, GitLabState, Handled, ParsedBody, ProjectState,
    access, error, json_response, lock, message, param, query_pairs,
};
use crate::domain::RemoteState;

/// An environment of a project, as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeEnvironment {
    pub id: u64,
    pub project_id: u64,
    pub name: String,
    /// `production`, `staging`, `testing`, `development` or `other`.
    pub tier: String,
    pub created_at: DateTime<Utc>,
}

/// One `dora_daily_metrics` row: what the last refresh of (environment, date) computed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DailyMetrics {
    /// The median time to restore of the incidents closed that day, in seconds; `None` (NULL)
    /// when none was.
    pub time_to_restore_service_in_seconds: Option<f64>,
    /// The incidents created that day.
    pub incidents_count: u64,
    /// Successful deployments that day (the sandbox has none).
    pub deployment_frequency: u64,
}

/// An incident event the watcher hooks (`Dora::Watchers::IssueWatcher.mount`).
#[derive(Clone, Copy, Debug)]
pub(super) enum IncidentEvent {
    /// `after_create`.
    Created,
    /// `after_transition any => :closed`.
    Closed,
    /// `before_transition closed: any`, with the `closed_at` the issue had.
    Reopened {
        closed_at_was: Option<DateTime<Utc>>,
    },
    /// `after_destroy`.
    Deleted,
}

/// Every project's environments and every environment's daily rows.
#[derive(Default)]
pub(super) struct DoraState {
    next_env_id: u64,
    environments: Vec<FakeEnvironment>,
    daily: BTreeMap<(u64, NaiveDate), DailyMetrics>,
    /// Successful deployments: (environment id, finished at).
    deployments: Vec<(u64, DateTime<Utc>)>,
    /// Refreshes asked for and not yet run (the worker's queue): (environment id, project id,
    /// day).
    queued: BTreeSet<(u64, u64, NaiveDate)>,
}

/// The tiers GitLab knows (`app/models/environment.rb`, `enum :tier`).
const TIERS: [&str; 5] = ["production", "staging", "testing", "development", "other"];

impl DoraState {
    /// The configured projects' environments, created at `now`.
    pub(super) fn new(projects: &[FakeProject]) -> Self {
        let mut state = Self::default();
        for p in projects {
            state.add_project(p);
        }
        state
    }

    /// Registers a project's configured environments.
    pub(super) fn add_project(&mut self, project: &FakeProject) {
        for (name, tier) in &project.environments {
            self.create(project.id, name, tier);
        }
    }

    fn create(&mut self, project_id: u64, name: &str, tier: &str) -> FakeEnvironment {
        self.next_env_id += 1;
        let env = FakeEnvironment {
            id: self.next_env_id,
            project_id,
            name: name.to_owned(),
            tier: tier.to_owned(),
            created_at: Utc::now(),
        };
        self.environments.push(env.clone());
        env
    }

    fn of_project(&self, project_id: u64) -> impl Iterator<Item = &FakeEnvironment> {
        self.environments
            .iter()
            .filter(move |e| e.project_id == project_id)
    }

    /// `issue.project.environments.production.pick(:id)`: one production-tier environment.
    /// `pick` has no `ORDER BY`; PostgreSQL usually answers the oldest row, the lowest id here.
    fn production_env_id(&self, project_id: u64) -> Option<u64> {
        self.of_project(project_id)
            .filter(|e| e.tier == "production")
            .map(|e| e.id)
            .min()
    }

    /// `Dora::Watchers::IssueWatcher#process`: for an incident of a project that has a
    /// production-tier environment now, queues a refresh of each day the event touches
    /// (`RefreshWorker.perform_async`); otherwise nothing.
    pub(super) fn incident_event(&mut self, issue: &FakeGitLabIssue, event: IncidentEvent) {
        if issue.issue_type != "incident" {
            return;
        }
        let Some(env_id) = self.production_env_id(issue.project_id) else {
            return;
        };
        // `refresh_dates`.
        let stamps = match event {
            IncidentEvent::Created => vec![Some(issue.created_at)],
            IncidentEvent::Closed => vec![issue.closed_at],
            IncidentEvent::Reopened { closed_at_was } => vec![closed_at_was],
            IncidentEvent::Deleted => vec![Some(issue.created_at), issue.closed_at],
        };
        let mut dates: Vec<NaiveDate> = stamps
            .into_iter()
            .flatten()
            .map(|t| t.date_naive())
            .collect();
        dates.dedup();
        for date in dates {
            self.queued.insert((env_id, issue.project_id, date));
        }
    }

    /// The worker runs the queued refreshes, each over its project's issues as they are now.
    pub(super) fn run_queued(&mut self, projects: &[ProjectState]) {
        for (env_id, project_id, date) in std::mem::take(&mut self.queued) {
            if let Some(p) = projects.iter().find(|p| p.cfg.id == project_id) {
                self.refresh(env_id, project_id, &p.issues, date);
            }
        }
    }

    /// `Dora::DailyMetrics.refresh!(environment, date)`: every metric's `data_queries` for
    /// the environment and day, upserted; the incident metrics only for a production-tier
    /// environment ("we assume all Incidents happen on production").
    fn refresh(
        &mut self,
        env_id: u64,
        project_id: u64,
        issues: &BTreeMap<u64, FakeGitLabIssue>,
        date: NaiveDate,
    ) {
        let production = self
            .environments
            .iter()
            .any(|e| e.id == env_id && e.tier == "production");
        let incidents = || {
            issues
                .values()
                .filter(move |i| i.project_id == project_id && i.issue_type == "incident")
        };
        let durations: Vec<f64> = incidents()
            .filter(|i| i.state == RemoteState::Closed)
            .filter_map(|i| {
                let closed = i.closed_at?;
                (closed.date_naive() == date)
                    .then(|| (closed - i.created_at).num_milliseconds() as f64 / 1000.0)
            })
            .collect();
        let deployment_frequency = self
            .deployments
            .iter()
            .filter(|(env, at)| *env == env_id && at.date_naive() == date)
            .count() as u64;
        let row = DailyMetrics {
            time_to_restore_service_in_seconds: production
                .then(|| percentile_cont_median(durations))
                .flatten(),
            incidents_count: if production {
                incidents()
                    .filter(|i| i.created_at.date_naive() == date)
                    .count() as u64
            } else {
                0
            },
            deployment_frequency,
        };
        self.daily.insert((env_id, date), row);
    }
}

/// `PERCENTILE_CONT(0.5)`: the middle value, or the mean of the two middle ones; NULLs are
/// skipped, and no value gives NULL.
fn percentile_cont_median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// `Environment#guess_tier` (`app/models/environment.rb`): the tier a name suggests, checked in
/// GitLab's order (development, testing, staging, production), `other` otherwise.
fn guess_tier(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if any(&["dev", "review", "trunk"]) {
        "development"
    } else if any(&[
        "test", "tst", "int", "acpt", "accept", "qa", "qc", "control", "quality",
    ]) {
        "testing"
    } else if any(&["stag", "stg", "model", "modl", "pre", "demo", "non"]) {
        "staging"
    } else if any(&["prod", "prd", "live"]) {
        "production"
    } else {
        "other"
    }
}

fn environment_json(env: &FakeEnvironment) -> Value {
    let stamp = env
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "id": env.id,
        "name": env.name,
        "slug": env.name.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        "external_url": null,
        "state": "available",
        "tier": env.tier,
        "created_at": stamp,
        "updated_at": stamp,
    })
}

/// `GET /projects/:id/environments` (`lib/api/environments.rb`).
pub(super) async fn list_environments(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let data = &mut *lock(&state.data);
    let (pidx, _) = data.project_at(&id, &user)?;
    let project_id = data.projects[pidx].cfg.id;
    let envs: Vec<Value> = data
        .dora
        .of_project(project_id)
        .map(environment_json)
        .collect();
    Ok(json_response(200, &Value::Array(envs)))
}

/// `POST /projects/:id/environments` with `name` (required), `external_url`, `tier`
/// (`lib/api/environments.rb`; `tier` is a Grape `values:` list of the tiers). 201 with the
/// environment; a name the project already has is a 400 from the model's uniqueness validation.
pub(super) async fn create_environment(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let body = body.unwrap_or(Value::Null);
    let name = param(&body, "name").ok_or_else(|| error(400, "name is missing"))?;
    let tier = param(&body, "tier");
    if tier.as_deref().is_some_and(|t| !TIERS.contains(&t)) {
        return Err(error(400, "tier does not have a valid value"));
    }
    let data = &mut *lock(&state.data);
    let (pidx, level) = data.project_at(&id, &user)?;
    if level < access::DEVELOPER && !user.admin {
        return Err(message(403, "403 Forbidden"));
    }
    let project_id = data.projects[pidx].cfg.id;
    // `validates :name, presence, uniqueness: { scope: :project_id }, format:
    // Gitlab::Regex.environment_name_regex` (letters, digits, `-_/.${} `, not starting or ending
    // with `/`).
    let well_formed = !name.trim().is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_/.${} ".contains(c));
    if !well_formed {
        return Err(json_response(
            400,
            &json!({ "message": { "name": ["can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'"] } }),
        )
        .into());
    }
    if data.dora.of_project(project_id).any(|e| e.name == name) {
        return Err(json_response(
            400,
            &json!({ "message": { "name": ["has already been taken"] } }),
        )
        .into());
    }
    let tier = tier.unwrap_or_else(|| guess_tier(&name).to_owned());
    let env = data.dora.create(project_id, &name, &tier);
    Ok(json_response(201, &environment_json(&env)))
}

/// The metrics `Dora::DailyMetrics::AVAILABLE_METRICS` names.
const METRICS: [&str; 4] = [
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
];

/// `Dora::AggregateMetricsService::MAX_RANGE` (`3.months`, in whole days).
const MAX_RANGE_DAYS: i64 = 91;

fn parse_date(name: &str, text: &str) -> Result<NaiveDate, super::Reply> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.date_naive())
        })
        .ok_or_else(|| error(400, &format!("{name} is invalid")))
}

/// `GET /projects/:id/dora/metrics?metric=…&start_date=…&end_date=…&interval=…
/// &environment_tiers[]=…` (`ee/lib/api/dora/metrics.rb`): `[{"date": "YYYY-MM-DD", "value":
/// …}]`, one element per day (or month) that has rows, `date` null for `interval=all`.
pub(super) async fn dora_metrics(
    State(state): State<Arc<GitLabState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let pairs = query_pairs(query.as_deref());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let metric = get("metric").ok_or_else(|| error(400, "metric is missing"))?;
    let today = Utc::now().date_naive();
    let start = get("start_date")
        .map(|t| parse_date("start_date", &t))
        .transpose()?
        .unwrap_or_else(|| today - Months::new(3));
    let end = get("end_date")
        .map(|t| parse_date("end_date", &t))
        .transpose()?
        .unwrap_or(today);
    let interval = get("interval").unwrap_or_else(|| "daily".to_owned());
    // `environment_tier` is kept for backwards compatibility and merged into the list.
    let mut tiers: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == "environment_tiers[]" || n == "environment_tier")
        .map(|(_, v)| v.clone())
        .collect();
    if tiers.is_empty() {
        tiers.push("production".to_owned());
    }
    // `AggregateMetricsService#validate`, in its order.
    if (end - start).num_days() > MAX_RANGE_DAYS {
        return Err(message(
            400,
            &format!("Date range must be shorter than {MAX_RANGE_DAYS} days."),
        ));
    }
    if start >= end {
        return Err(message(
            400,
            "The start date must be earlier than the end date.",
        ));
    }
    if !["all", "monthly", "daily"].contains(&interval.as_str()) {
        return Err(message(
            400,
            "The interval must be one of all,monthly,daily.",
        ));
    }
    if !METRICS.contains(&metric.as_str()) {
        return Err(message(
            400,
            &format!("The metric must be one of {}.", METRICS.join(",")),
        ));
    }
    if let Some(bad) = tiers.iter().find(|t| !TIERS.contains(&t.as_str())) {
        let _ = bad;
        return Err(message(
            400,
            &format!("The environment tier must be one of {}.", TIERS.join(",")),
        ));
    }
    let data = &mut *lock(&state.data);
    let (pidx, level) = data.project_at(&id, &user)?;
    // `read_dora4_analytics`: Reporter and up.
    if level < access::REPORTER && !user.admin {
        return Err(message(
            401,
            "You do not have permission to access dora metrics.",
        ));
    }
    let project_id = data.projects[pidx].cfg.id;
    data.dora.run_queued(&data.projects);
    let envs: Vec<u64> = data
        .dora
        .of_project(project_id)
        .filter(|e| tiers.contains(&e.tier))
        .map(|e| e.id)
        .collect();
    // `for_environments(environments).in_range_of(start_date, end_date)`, grouped.
    let mut groups: BTreeMap<Option<NaiveDate>, Vec<DailyMetrics>> = BTreeMap::new();
    for ((env, date), row) in &data.dora.daily {
        if !envs.contains(env) || *date < start || *date > end {
            continue;
        }
        let key = match interval.as_str() {
            "all" => None,
            "monthly" => date.with_day(1),
            _ => Some(*date),
        };
        groups.entry(key).or_default().push(*row);
    }
    if interval == "all" && groups.is_empty() {
        groups.insert(None, Vec::new());
    }
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|(date, rows)| {
            json!({
                "date": date.map(|d| d.format("%Y-%m-%d").to_string()),
                "value": aggregate(&metric, &rows),
            })
        })
        .collect();
    Ok(json_response(200, &Value::Array(rows)))
}

/// Each metric's `calculation_query` over a group of rows (`SUM` over no rows is NULL).
fn aggregate(metric: &str, rows: &[DailyMetrics]) -> Value {
    if rows.is_empty() {
        return Value::Null;
    }
    match metric {
        "time_to_restore_service" => json!(percentile_cont_median(
            rows.iter()
                .filter_map(|r| r.time_to_restore_service_in_seconds)
                .collect()
        )),
        "change_failure_rate" => {
            let incidents: u64 = rows.iter().map(|r| r.incidents_count).sum();
            let deployments: u64 = rows.iter().map(|r| r.deployment_frequency).sum();
            json!(incidents as f64 / deployments.max(1) as f64)
        }
        "deployment_frequency" => json!(rows.iter().map(|r| r.deployment_frequency).sum::<u64>()),
        // Merge requests and deployments are not modelled: no lead time.
        _ => Value::Null,
    }
}

impl FakeGitLab {
    /// A person creates environment `name` in tier `tier` in the UI (Operate > Environments).
    /// Returns its id; `None` if there is no such project or it already has an environment of
    /// that name.
    pub fn add_environment(&self, project_id: u64, name: &str, tier: &str) -> Option<u64> {
        let data = &mut *lock(&self.inner.state.data);
        if !data.projects.iter().any(|p| p.cfg.id == project_id)
            || data.dora.of_project(project_id).any(|e| e.name == name)
        {
            return None;
        }
        Some(data.dora.create(project_id, name, tier).id)
    }

    /// A deployment to environment `env_name` succeeds at `finished_at`: the deployment
    /// watcher refreshes that environment's day (`ee/app/models/dora/watchers/
    /// deployment_watcher.rb`; GitLab waits 5 minutes first, the fake queues it at once).
    /// Returns false if the project has no such environment.
    pub fn deploy(&self, project_id: u64, env_name: &str, finished_at: DateTime<Utc>) -> bool {
        let data = &mut *lock(&self.inner.state.data);
        let Some(env_id) = data
            .dora
            .of_project(project_id)
            .find(|e| e.name == env_name)
            .map(|e| e.id)
        else {
            return false;
        };
        let Some(project) = data.projects.iter().find(|p| p.cfg.id == project_id) else {
            return false;
        };
        data.dora.deployments.push((env_id, finished_at));
        data.dora
            .queued
            .insert((env_id, project.cfg.id, finished_at.date_naive()));
        true
    }

    /// The project's environments, oldest first.
    pub fn environments(&self, project_id: u64) -> Vec<FakeEnvironment> {
        let data = lock(&self.inner.state.data);
        data.dora.of_project(project_id).cloned().collect()
    }

    /// The daily rows of the project's environments: `(environment id, date, row)`, by
    /// environment then date.
    pub fn dora_rows(&self, project_id: u64) -> Vec<(u64, NaiveDate, DailyMetrics)> {
        let data = &mut *lock(&self.inner.state.data);
        data.dora.run_queued(&data.projects);
        let envs: Vec<u64> = data.dora.of_project(project_id).map(|e| e.id).collect();
        data.dora
            .daily
            .iter()
            .filter(|((env, _), _)| envs.contains(env))
            .map(|((env, date), row)| (*env, *date, *row))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::FakeGitLabConfig;
    use super::*;
    use chrono::TimeZone;

    const TOKEN: &str = FakeGitLabConfig::DEFAULT_TOKEN;

    async fn start(environments: &[(&str, &str)]) -> FakeGitLab {
        let mut config = FakeGitLabConfig::default();
        config.projects[0].environments = environments
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        FakeGitLab::start(config).await.unwrap()
    }

    async fn call(
        gitlab: &FakeGitLab,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new()
            .request(method, gitlab.base_url().join(path).unwrap())
            .header("PRIVATE-TOKEN", TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, d, h, 0, 0).unwrap()
    }

    fn stamp(t: DateTime<Utc>) -> String {
        t.to_rfc3339()
    }

    /// Creates an issue of `issue_type` at `created` (an Owner's `created_at` is kept); returns
    /// its iid.
    async fn create(gitlab: &FakeGitLab, issue_type: &str, created: DateTime<Utc>) -> u64 {
        let (status, body) = call(
            gitlab,
            "POST",
            "api/v4/projects/1/issues",
            Some(json!({ "title": "outage", "issue_type": issue_type, "created_at": stamp(created) })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["iid"].as_u64().unwrap()
    }

    async fn put(gitlab: &FakeGitLab, iid: u64, body: Value) {
        let (status, answer) = call(
            gitlab,
            "PUT",
            &format!("api/v4/projects/1/issues/{iid}"),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// `GET /dora/metrics` for June 2025, daily, as (date, value) pairs.
    async fn daily(gitlab: &FakeGitLab, metric: &str) -> Vec<(String, Value)> {
        let (status, body) = call(
            gitlab,
            "GET",
            &format!("api/v4/projects/1/dora/metrics?metric={metric}&start_date=2025-06-01&end_date=2025-06-30"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["date"].as_str().unwrap().to_owned(), r["value"].clone()))
            .collect()
    }

    /// `POST /environments` creates with the given tier or the one the name suggests; a name
    /// taken or a tier unknown is a 400; `GET` lists them.
    #[tokio::test]
    async fn environments_api() {
        let gitlab = start(&[]).await;
        let path = "api/v4/projects/acme%2Fops/environments";
        let (status, env) =
            call(&gitlab, "POST", path, Some(json!({ "name": "production" }))).await;
        assert_eq!(status, 201, "{env}");
        assert_eq!(env["tier"], "production", "guessed from the name");
        let (status, env) = call(
            &gitlab,
            "POST",
            path,
            Some(json!({ "name": "eu", "tier": "staging" })),
        )
        .await;
        assert_eq!((status, env["tier"].as_str()), (201, Some("staging")));
        let (status, body) =
            call(&gitlab, "POST", path, Some(json!({ "name": "production" }))).await;
        assert_eq!(status, 400);
        assert_eq!(body["message"]["name"][0], "has already been taken");
        let (status, _) = call(
            &gitlab,
            "POST",
            path,
            Some(json!({ "name": "x", "tier": "prod" })),
        )
        .await;
        assert_eq!(status, 400, "tier is one of GitLab's five");
        let (_, list) = call(&gitlab, "GET", path, None).await;
        let names: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("production"), json!("eu")]);
    }

    /// A day is recomputed only on an incident's create, close, reopen or delete while the
    /// project has a production-tier environment: not when the environment appears later, not
    /// when an issue becomes an incident.
    #[tokio::test]
    async fn days_recomputed_only_on_incident_events() {
        let gitlab = start(&[]).await;
        let first = create(&gitlab, "incident", at(2, 8)).await;
        put(
            &gitlab,
            first,
            json!({ "state_event": "close", "updated_at": stamp(at(2, 9)) }),
        )
        .await;
        assert!(
            gitlab.dora_rows(1).is_empty(),
            "no production environment, no row"
        );

        assert!(
            gitlab
                .add_environment(1, "production", "production")
                .is_some()
        );
        let issue = create(&gitlab, "issue", at(2, 10)).await;
        put(
            &gitlab,
            issue,
            json!({ "state_event": "close", "updated_at": stamp(at(2, 12)) }),
        )
        .await;
        put(&gitlab, issue, json!({ "issue_type": "incident" })).await;
        put(&gitlab, first, json!({ "created_at": stamp(at(2, 7)) })).await;
        assert!(
            gitlab.dora_rows(1).is_empty(),
            "neither the environment, a new issue_type nor a new created_at refreshes a day"
        );
        assert!(daily(&gitlab, "time_to_restore_service").await.is_empty());

        // Reopened: the day it had been closed is recomputed without it.
        put(
            &gitlab,
            first,
            json!({ "state_event": "reopen", "updated_at": stamp(at(2, 9)) }),
        )
        .await;
        assert_eq!(
            daily(&gitlab, "time_to_restore_service").await,
            vec![("2025-06-02".to_owned(), json!(7200.0))]
        );
        // Closed again at the same time: both incidents count.
        put(
            &gitlab,
            first,
            json!({ "state_event": "close", "updated_at": stamp(at(2, 9)) }),
        )
        .await;
        assert_eq!(
            daily(&gitlab, "time_to_restore_service").await,
            vec![("2025-06-02".to_owned(), json!(5400.0))]
        );
        assert_eq!(
            daily(&gitlab, "change_failure_rate").await,
            vec![("2025-06-02".to_owned(), json!(2.0))]
        );
        // Deleted: both its days are recomputed without it.
        let (status, _) = call(
            &gitlab,
            "DELETE",
            &format!("api/v4/projects/1/issues/{first}"),
            None,
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(
            daily(&gitlab, "time_to_restore_service").await,
            vec![("2025-06-02".to_owned(), json!(7200.0))]
        );
    }

    /// With two production-tier environments, incidents are refreshed into the first one's rows;
    /// a deployment to the second refreshes its row too, and the sum counts the day's incidents
    /// twice.
    #[tokio::test]
    async fn two_production_environments_count_twice() {
        let gitlab = start(&[("production", "production"), ("prod-eu", "production")]).await;
        create(&gitlab, "incident", at(3, 8)).await;
        let rows = gitlab.dora_rows(1);
        assert_eq!(
            rows.len(),
            1,
            "the watcher refreshes one environment: {rows:?}"
        );
        assert_eq!(
            daily(&gitlab, "change_failure_rate").await,
            vec![("2025-06-03".to_owned(), json!(1.0))]
        );
        assert!(gitlab.deploy(1, "prod-eu", at(3, 12)));
        assert_eq!(
            daily(&gitlab, "change_failure_rate").await,
            vec![("2025-06-03".to_owned(), json!(2.0))],
            "two incidents over one deployment, from one incident"
        );
    }

    /// The DORA API's validations, in GitLab's words.
    #[tokio::test]
    async fn dora_api_validations() {
        let gitlab = start(&[("production", "production")]).await;
        let base = "api/v4/projects/1/dora/metrics";
        for (query, text) in [
            (
                "metric=time_to_restore_service&start_date=2025-01-01&end_date=2025-06-30",
                "Date range must be shorter than 91 days.",
            ),
            (
                "metric=time_to_restore_service&start_date=2025-06-30&end_date=2025-06-01",
                "The start date must be earlier than the end date.",
            ),
            (
                "metric=time_to_restore_service&interval=weekly&start_date=2025-06-01&end_date=2025-06-30",
                "The interval must be one of all,monthly,daily.",
            ),
            (
                "metric=mttr&start_date=2025-06-01&end_date=2025-06-30",
                "The metric must be one of",
            ),
        ] {
            let (status, body) = call(&gitlab, "GET", &format!("{base}?{query}"), None).await;
            assert_eq!(status, 400, "{query}");
            assert!(
                body["message"].as_str().unwrap().starts_with(text),
                "{body}"
            );
        }
        let (status, body) = call(
            &gitlab,
            "GET",
            &format!("{base}?metric=change_failure_rate&interval=all"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!([{ "date": null, "value": null }]),
            "one row for all, NULL over no rows"
        );
    }

    /// GitLab's median: the middle value, or the mean of the middle two.
    #[test]
    fn median_as_percentile_cont() {
        assert_eq!(percentile_cont_median(vec![]), None);
        assert_eq!(percentile_cont_median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(percentile_cont_median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    /// Names suggest tiers in GitLab's order.
    #[test]
    fn tiers_guessed_from_names() {
        assert_eq!(guess_tier("production"), "production");
        assert_eq!(guess_tier("live"), "production");
        assert_eq!(guess_tier("staging"), "staging");
        assert_eq!(guess_tier("review/feature"), "development");
        assert_eq!(guess_tier("qa"), "testing");
        assert_eq!(guess_tier("europe"), "other");
    }
}
