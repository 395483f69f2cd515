use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLabConfig, Fault, FaultTarget};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use serde_json::Value;

use crate::support::{PROJECT, Setup, World, output_text};

/// An incident rule from 2025-06-01 into `acme/ops`.
const RULE: &str = "[[rule]]\nname = \"ops\"\njql = \"project = OPS\"\ntarget = \"incident\"\ngitlab_project = \"acme/ops\"\nlabels = [\"jira\"]\nsince = \"2025-06-01\"\n";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Incidents over three days of June 2025, two of them still open; returns the expected median
/// time to restore (seconds) per day closed, as GitLab computes it from `closed_at −
/// created_at`.
fn seed(w: &World) -> BTreeMap<NaiveDate, f64> {
    let incidents = [
        (
            "OPS-1",
            "2025-06-02T08:00:00Z",
            Some("2025-06-02T09:00:00Z"),
        ),
        (
            "OPS-2",
            "2025-06-02T10:00:00Z",
            Some("2025-06-02T13:00:00Z"),
        ),
        (
            "OPS-3",
            "2025-06-03T23:00:00Z",
            Some("2025-06-04T01:30:00Z"),
        ),
        (
            "OPS-4",
            "2025-06-04T06:00:00Z",
            Some("2025-06-04T06:20:00Z"),
        ),
        (
            "OPS-5",
            "2025-06-04T07:00:00Z",
            Some("2025-06-04T12:00:00Z"),
        ),
        ("OPS-6", "2025-06-05T07:00:00Z", None),
    ];
    let mut per_day: BTreeMap<NaiveDate, Vec<f64>> = BTreeMap::new();
    for (key, created, resolved) in incidents {
        let mut issue = FakeIssue::new(key, "outage", t(created));
        if let Some(r) = resolved {
            issue = issue.resolved_at(t(r));
            per_day
                .entry(t(r).date_naive())
                .or_default()
                .push((t(r) - t(created)).num_seconds() as f64);
        }
        w.jira.insert(issue);
    }
    per_day
        .into_iter()
        .map(|(day, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            (day, median)
        })
        .collect()
}

async fn world(environments: Vec<(&str, &str)>) -> World {
    let mut gitlab = FakeGitLabConfig::default();
    gitlab.projects[0].environments = environments
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    World::start(Setup {
        gitlab,
        rules: RULE.to_owned(),
        ..Setup::default()
    })
    .await
}

/// `GET /projects/1/dora/metrics` for June 2025, daily: day → value.
async fn dora(w: &World, metric: &str) -> BTreeMap<NaiveDate, Value> {
    let url = w.gitlab.base_url().join(&format!(
        "api/v4/projects/{PROJECT}/dora/metrics?metric={metric}&interval=daily&start_date=2025-06-01&end_date=2025-06-30"
    ));
    let rows: Vec<Value> = reqwest::Client::new()
        .get(url.unwrap())
        .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| {
            let day = NaiveDate::parse_from_str(r["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            (day, r["value"].clone())
        })
        .collect()
}

fn ttrs(rows: &BTreeMap<NaiveDate, Value>) -> BTreeMap<NaiveDate, f64> {
    rows.iter()
        .filter_map(|(d, v)| v.as_f64().map(|v| (*d, v)))
        .collect()
}

/// Requests that wrote to GitLab (anything but a GET).
fn writes(w: &World) -> usize {
    w.gitlab
        .requests()
        .iter()
        .filter(|r| r.method != axum::http::Method::GET)
        .count()
}

/// Without a production-tier environment, backfill of an incident rule refuses naming the
/// fixes, exits 2, and writes nothing: no GitLab write, no store.
#[tokio::test]
async fn backfill_without_production_environment_refuses_and_writes_nothing() {
    let w = world(vec![("staging", "staging")]).await;
    seed(&w);
    let out = w.binary(&["backfill", "--since", "2025-06-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "a refusal is fatal: {text}");
    for part in [
        "acme/ops",
        "staging (staging)",
        "--create-environment",
        "Operate > Environments",
    ] {
        assert!(text.contains(part), "the message names {part:?}: {text}");
    }
    assert_eq!(writes(&w), 0, "nothing was written to GitLab");
    assert!(w.gitlab_issues().is_empty());
    assert!(!w.store_path().exists(), "the store was not even created");

    // A dry run says what the real run would do, and writes nothing either.
    let dry = w
        .binary(&["backfill", "--since", "2025-06-01", "--dry-run"])
        .await;
    let dry_text = output_text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{dry_text}");
    assert!(dry_text.contains("backfill would refuse"), "{dry_text}");
    let dry = w
        .binary(&[
            "backfill",
            "--since",
            "2025-06-01",
            "--dry-run",
            "--create-environment",
        ])
        .await;
    let dry_text = output_text(&dry);
    assert!(
        dry_text
            .contains("would create environment production (tier production) in project acme/ops"),
        "{dry_text}"
    );
    assert!(
        dry_text.contains("would get the label jira-backfilled"),
        "{dry_text}"
    );
    assert_eq!(writes(&w), 0, "a dry run writes nothing");
    assert_eq!(
        w.gitlab.environments(PROJECT).len(),
        1,
        "no environment created"
    );
}

/// `--create-environment` creates `production` (tier production) before the first incident,
/// so every imported day counts in GitLab's DORA with Jira's times; every imported issue gets
/// the value-stream marker once; a re-run writes nothing.
#[tokio::test]
async fn create_environment_makes_imported_incidents_count() {
    let w = world(Vec::new()).await;
    let expected = seed(&w);
    let out = w
        .binary(&["backfill", "--since", "2025-06-01", "--create-environment"])
        .await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("created environment production"), "{text}");
    let envs = w.gitlab.environments(PROJECT);
    assert_eq!(envs.len(), 1);
    assert_eq!(
        (envs[0].name.as_str(), envs[0].tier.as_str()),
        ("production", "production")
    );
    assert_eq!(
        ttrs(&dora(&w, "time_to_restore_service").await),
        expected,
        "each day's median time to restore, to the second"
    );
    let cfr = dora(&w, "change_failure_rate").await;
    assert_eq!(cfr[&NaiveDate::from_ymd_opt(2025, 6, 2).unwrap()], 2.0);
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 6);
    for i in &issues {
        assert!(
            i.labels.contains(&"jira-backfilled".to_owned()),
            "{}: the marker label",
            i.title
        );
        assert!(
            i.updated_at > t("2026-01-01T00:00:00Z").min(Utc::now() - chrono::Duration::hours(1)),
            "{}: the marker write moved updated_at to now",
            i.title
        );
    }
    let before = writes(&w);
    let again = w
        .binary(&["backfill", "--since", "2025-06-01", "--create-environment"])
        .await;
    assert_eq!(again.status.code(), Some(0), "{}", output_text(&again));
    assert_eq!(writes(&w), before, "a re-run writes nothing twice");
}

/// `--no-marker` imports the same incidents, at Jira's times, and writes no marker label.
#[tokio::test]
async fn no_marker_leaves_the_label_out() {
    let w = world(Vec::new()).await;
    let expected = seed(&w);
    let out = w
        .binary(&[
            "backfill",
            "--since",
            "2025-06-01",
            "--create-environment",
            "--no-marker",
        ])
        .await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("value-stream marker"), "{text}");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 6);
    for i in &issues {
        assert!(
            !i.labels.contains(&"jira-backfilled".to_owned()),
            "{}: no marker label",
            i.title
        );
        assert_eq!(
            i.closed_at.is_some(),
            !i.title.contains("[OPS-6]"),
            "{}: closed if resolved in Jira",
            i.title
        );
    }
    assert_eq!(
        ttrs(&dora(&w, "time_to_restore_service").await),
        expected,
        "each day's median time to restore, to the second"
    );
}

/// Incidents replicated before the project had a production environment are missing from
/// GitLab's DORA, and adding the environment does not bring them back; `repair` does, one
/// reopen and close per day at the incident's own `closed_at`, and a second repair writes
/// nothing.
#[tokio::test]
async fn repair_makes_a_missed_day_count() {
    let w = world(Vec::new()).await;
    let expected = seed(&w);
    let once = w.binary(&["--once"]).await;
    assert_eq!(once.status.code(), Some(0), "{}", output_text(&once));
    assert_eq!(w.gitlab_issues().len(), 6);
    assert!(
        dora(&w, "time_to_restore_service").await.is_empty(),
        "no environment, no day"
    );

    w.gitlab
        .add_environment(PROJECT, "production", "production");
    assert!(
        dora(&w, "time_to_restore_service").await.is_empty(),
        "an environment added later refreshes nothing"
    );
    let closed_before: Vec<_> = w.gitlab_issues().iter().map(|i| i.closed_at).collect();

    let writes_before = writes(&w);
    let dry = w
        .binary(&["repair", "--since", "2025-06-01", "--dry-run"])
        .await;
    let dry_text = output_text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{dry_text}");
    assert!(
        dry_text.contains("2025-06-02") && dry_text.contains("2025-06-04"),
        "{dry_text}"
    );
    assert!(dry_text.contains("2 day(s) to repair"), "{dry_text}");
    assert_eq!(writes(&w), writes_before, "a dry run writes nothing");

    let out = w.binary(&["repair", "--since", "2025-06-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 day(s) repaired"), "{text}");
    assert_eq!(
        writes(&w) - writes_before,
        4,
        "one reopen and one close per day, no more"
    );
    assert_eq!(
        ttrs(&dora(&w, "time_to_restore_service").await),
        expected,
        "every missed day counts now, with Jira's times"
    );
    let closed_after: Vec<_> = w.gitlab_issues().iter().map(|i| i.closed_at).collect();
    assert_eq!(closed_after, closed_before, "closed again at the same time");

    let writes_repaired = writes(&w);
    let again = w.binary(&["repair", "--since", "2025-06-01"]).await;
    let again_text = output_text(&again);
    assert_eq!(again.status.code(), Some(0), "{again_text}");
    assert!(again_text.contains("2 repaired before"), "{again_text}");
    assert_eq!(
        writes(&w),
        writes_repaired,
        "a second repair writes nothing"
    );
}

/// A repair stopped between the reopen and the close leaves an intent: `check` warns, and the
/// next repair closes the incident again at its own time before anything else.
#[tokio::test]
async fn interrupted_repair_is_finished_by_the_next() {
    let w = world(Vec::new()).await;
    let expected = seed(&w);
    let once = w.binary(&["--once"]).await;
    assert_eq!(once.status.code(), Some(0), "{}", output_text(&once));
    w.gitlab
        .add_environment(PROJECT, "production", "production");
    let closed_before: Vec<_> = w.gitlab_issues().iter().map(|i| i.closed_at).collect();

    // The first day's reopen goes through; its close fails every attempt.
    w.gitlab.push_fault(
        FaultTarget::UpdateIssue,
        Fault::Delay(std::time::Duration::ZERO),
    );
    w.gitlab.push_fault(
        FaultTarget::UpdateIssue,
        Fault::Status {
            status: 400,
            body: r#"{"message":"refused"}"#.to_owned(),
        },
    );
    let out = w.binary(&["repair", "--since", "2025-06-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "a day failed: {text}");
    let open: Vec<_> = w
        .gitlab_issues()
        .into_iter()
        .filter(|i| i.state == RemoteState::Opened && i.title.contains("OPS-1"))
        .collect();
    assert_eq!(open.len(), 1, "the reopened incident is open: {text}");

    let check = w.binary(&["check"]).await;
    let check_text = output_text(&check);
    assert!(
        check_text.contains("a repair stopped after reopening OPS-1"),
        "{check_text}"
    );

    let again = w.binary(&["repair", "--since", "2025-06-01"]).await;
    let again_text = output_text(&again);
    assert_eq!(again.status.code(), Some(0), "{again_text}");
    let closed_after: Vec<_> = w.gitlab_issues().iter().map(|i| i.closed_at).collect();
    assert_eq!(closed_after, closed_before, "closed again at its own time");
    assert_eq!(ttrs(&dora(&w, "time_to_restore_service").await), expected);
}

/// `check` exits 1 naming the environments when the project has no production-tier one, or
/// two; with exactly one it says DORA counts the incidents.
#[tokio::test]
async fn check_names_the_environments() {
    for (envs, code, needle) in [
        (
            vec![("staging", "staging")],
            1,
            "no environment in the production tier (environments: staging (staging))",
        ),
        (
            vec![("production", "production"), ("prod-eu", "production")],
            1,
            "2 production-tier environments (production, prod-eu)",
        ),
        (
            vec![("production", "production")],
            0,
            "one production-tier environment (production)",
        ),
    ] {
        let w = world(envs).await;
        let out = w.binary(&["check"]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(code), "{text}");
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
}

/// An incident a person reopened is left open: the day is repaired with another of its
/// incidents.
#[tokio::test]
async fn repair_leaves_a_reopened_incident_alone() {
    let w = world(Vec::new()).await;
    seed(&w);
    let once = w.binary(&["--once"]).await;
    assert_eq!(once.status.code(), Some(0), "{}", output_text(&once));
    w.gitlab
        .add_environment(PROJECT, "production", "production");
    let first = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-1"))
        .unwrap();
    let url = w
        .gitlab
        .base_url()
        .join(&format!("api/v4/projects/{PROJECT}/issues/{}", first.iid))
        .unwrap();
    let reopened = reqwest::Client::new()
        .put(url)
        .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
        .json(&serde_json::json!({ "state_event": "reopen" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reopened.status().as_u16(), 200);

    let out = w.binary(&["repair", "--since", "2025-06-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2025-06-02  OPS-2"),
        "the day's other incident: {text}"
    );
    let still = w.gitlab.issue(PROJECT, first.iid).unwrap();
    assert_eq!(still.state, RemoteState::Opened, "a person's reopen stands");
    let day = NaiveDate::from_ymd_opt(2025, 6, 2).unwrap();
    assert_eq!(
        ttrs(&dora(&w, "time_to_restore_service").await).get(&day),
        Some(&10_800.0),
        "the day counts the incident still closed (3 h)"
    );
}
