use chrono::Duration;
use jira_gitlab_sync::domain::{RemoteState, RunOutcome};
use jira_gitlab_sync::sandbox::gitlab::{AlertStatus, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig};

use crate::support::{PROJECT, Setup, World, ago, rule, run};

/// A created and a resolved incident land in GitLab with Jira's created and resolution times.
#[tokio::test]
async fn exact_created_and_closed_times() {
    let w = World::start(Setup::default()).await;
    let (created, resolved) = (ago(180), ago(60));
    w.jira
        .insert(FakeIssue::new("OPS-1", "Database down", created).resolved_at(resolved));
    w.jira
        .insert(FakeIssue::new("OPS-2", "Latency spike", ago(30)));

    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 2, "{report:?}");
    assert_eq!(report.counts.closed, 1, "{report:?}");

    let issues = w.gitlab_issues();
    let one = issues
        .iter()
        .find(|i| i.title.contains("OPS-1"))
        .expect("OPS-1 replicated");
    assert_eq!(
        one.created_at, created,
        "GitLab created_at must be Jira's created"
    );
    assert_eq!(
        one.closed_at,
        Some(resolved),
        "GitLab closed_at must be Jira's resolution"
    );
    assert_eq!(one.state, RemoteState::Closed);
    assert_eq!(one.issue_type, "incident");
    assert!(one.labels.contains(&"jira".to_owned()), "{:?}", one.labels);
    let two = issues
        .iter()
        .find(|i| i.title.contains("OPS-2"))
        .expect("OPS-2 replicated");
    assert_eq!(two.state, RemoteState::Opened);
    assert!(
        two.description.as_deref().unwrap_or("").lines().next()
            == Some(&*format!("{}browse/OPS-2", w.jira.base_url())),
        "the description starts with the Jira link on its own line: {:?}",
        two.description
    );
}

/// A second run with nothing new sends exactly one Jira request per rule and none to GitLab.
#[tokio::test]
async fn idle_cycle_costs_one_jira_request() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "x", ago(90)).resolved_at(ago(45)));
    w.once().await.expect("first cycle");
    w.jira.clear_requests();
    w.gitlab.clear_requests();

    let report = w.once().await.expect("second cycle");
    assert_eq!(
        report.counts.created + report.counts.closed,
        0,
        "{report:?}"
    );
    let jira: Vec<_> = w.jira.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        jira,
        vec!["/rest/api/3/search/jql".to_owned()],
        "one search, no /myself (zone cached)"
    );
    assert!(
        w.gitlab.requests().is_empty(),
        "no GitLab request: {:?}",
        w.gitlab.requests()
    );
}

/// Resolve, reopen and new issues on later runs each reach GitLab once.
#[tokio::test]
async fn later_runs_close_reopen_and_create() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(50)));
    w.once().await.expect("run 1");

    let resolved = ago(3);
    w.jira.resolve("OPS-1", resolved);
    w.jira.insert(FakeIssue::new("OPS-2", "second", ago(2)));
    let r2 = w.once().await.expect("run 2");
    assert_eq!((r2.counts.created, r2.counts.closed), (1, 1), "{r2:?}");
    let one = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-1"))
        .unwrap();
    assert_eq!(one.closed_at, Some(resolved));

    w.jira.reopen("OPS-1", ago(1));
    let r3 = w.once().await.expect("run 3");
    assert_eq!(r3.counts.reopened, 1, "{r3:?}");
    let one = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-1"))
        .unwrap();
    assert_eq!(one.state, RemoteState::Opened);
    assert_eq!(one.closed_at, None);

    let r4 = w.once().await.expect("run 4");
    assert_eq!(
        r4.counts.created + r4.counts.closed + r4.counts.reopened,
        0,
        "{r4:?}"
    );
    assert_eq!(w.gitlab_issues().len(), 2, "never a duplicate");
}

/// A change that reaches Jira's search index late (after a newer one) is still replicated.
#[tokio::test]
async fn late_indexed_update_is_not_lost() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "late", ago(40)));
    w.jira.insert(FakeIssue::new("OPS-2", "prompt", ago(40)));
    w.once().await.expect("run 1");

    // OPS-1 is resolved first but its change is indexed 5 s late; OPS-2 changes after it and
    // is indexed at once, so a watermark at the newest `updated` seen would skip OPS-1.
    w.jira.hold_index("OPS-1");
    w.jira.resolve("OPS-1", ago(0) - Duration::seconds(5));
    w.jira
        .update("OPS-2", ago(0), |i| i.summary = "prompt, edited".into());
    let r2 = w.once().await.expect("run 2");
    assert_eq!(r2.counts.closed, 0, "the resolution is not searchable yet");

    w.jira.release_all();
    let r3 = w.once().await.expect("run 3");
    assert_eq!(r3.counts.closed, 1, "the late change is picked up: {r3:?}");
}

/// JQL bounds are written in the Jira user's zone while responses come in another offset.
#[rstest::rstest]
#[case::kolkata(chrono_tz::Asia::Kolkata, 1)]
#[case::los_angeles(chrono_tz::America::Los_Angeles, 1)]
#[tokio::test]
async fn user_zone_differs_from_response_offset(#[case] zone: chrono_tz::Tz, #[case] _n: u8) {
    let jira = FakeJiraConfig {
        user_time_zone: zone,
        response_offset: chrono::FixedOffset::east_opt(3600).unwrap(),
        ..FakeJiraConfig::cloud()
    };
    let w = World::start(Setup {
        jira,
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(100)));
    w.once().await.expect("run 1");

    // A change one minute old: a bound written in the wrong zone would miss it (west of UTC)
    // or the fake would read it hours off.
    let created = ago(20);
    let resolved = ago(1);
    w.jira
        .insert(FakeIssue::new("OPS-2", "b", created).resolved_at(resolved));
    w.jira.clear_requests();
    let r = w.once().await.expect("run 2");
    assert_eq!((r.counts.created, r.counts.closed), (1, 1), "{r:?}");
    let two = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-2"))
        .unwrap();
    assert_eq!(
        two.created_at, created,
        "+01:00 response times are read as instants"
    );
    assert_eq!(two.closed_at, Some(resolved));

    let jql = w.jira.requests()[0].body.as_ref().unwrap()["jql"]
        .as_str()
        .unwrap()
        .to_owned();
    let cursor = w.engine().store().get_meta("jira.time_zone").await.unwrap();
    assert!(
        cursor.unwrap().starts_with(zone.name()),
        "the zone came from /myself"
    );
    let lower = jql.split('"').nth(1).unwrap();
    let local_now = chrono::Utc::now().with_timezone(&zone).naive_local();
    let bound = chrono::NaiveDateTime::parse_from_str(lower, "%Y-%m-%d %H:%M").unwrap();
    let behind = local_now - bound;
    assert!(
        behind > Duration::minutes(5) && behind < Duration::minutes(15),
        "the bound {lower} must be about the 10 min lookback behind now in {zone}, got {behind}"
    );
}

/// A 300-character summary is cut to GitLab's 255, and a null description still links back.
#[tokio::test]
async fn long_summary_and_null_description() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", &"x".repeat(300), ago(10)));
    let report = w.once().await.expect("cycle");
    assert_eq!(
        report.counts.created, 1,
        "GitLab must not reject the title: {report:?}"
    );
    let issue = &w.gitlab_issues()[0];
    assert_eq!(issue.title.chars().count(), 255);
    let description = issue.description.as_deref().unwrap();
    assert!(description.contains("/browse/OPS-1"), "{description}");
}

/// Descriptions arrive as Markdown (ADF on Cloud converted), with labels and severity.
#[tokio::test]
async fn description_and_severity() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(
        FakeIssue::new("OPS-1", "x", ago(10))
            .with_description("Checkout fails.\n\nSince 09:00.")
            .with_priority(Some("Highest")),
    );
    w.once().await.expect("cycle");
    let issue = &w.gitlab_issues()[0];
    let d = issue.description.as_deref().unwrap();
    assert!(
        d.contains("Checkout fails.") && d.contains("Since 09:00."),
        "{d}"
    );
    assert!(
        issue.labels.contains(&"severity::critical".to_owned()),
        "{:?}",
        issue.labels
    );
}

/// `--dry-run` plans but writes nothing to GitLab or the store (it may read both, so that the
/// plan starts from what they really hold).
#[tokio::test]
async fn dry_run_writes_nothing() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "a", ago(10)).resolved_at(ago(5)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(10)));
    let out = w.binary(&["--once", "--dry-run"]).await;
    let text = crate::support::output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("create+close") && text.contains("OPS-1"),
        "{text}"
    );
    assert!(text.contains("OPS-2"), "{text}");
    let writes: Vec<_> = w
        .gitlab
        .requests()
        .into_iter()
        .filter(|r| r.method != axum::http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "a dry run only reads GitLab (the project, what it already holds): {writes:?}"
    );
    assert!(
        !w.store_path().exists(),
        "no store file created in a dry run"
    );
}

/// Without Owner rights GitLab ignores our times: replication still works and a warning says so.
#[tokio::test]
async fn non_owner_token_still_replicates() {
    let w = World::start(Setup::default()).await;
    assert!(
        w.gitlab.set_access_level(PROJECT, 1, 30),
        "make the token a Developer"
    );
    w.jira
        .insert(FakeIssue::new("OPS-1", "a", ago(120)).resolved_at(ago(60)));
    let report = w.once().await.expect("cycle");
    assert_eq!(
        (report.counts.created, report.counts.closed),
        (1, 1),
        "{report:?}"
    );
    assert!(
        report.timestamps_ignored,
        "the report says times were not kept"
    );
    assert_eq!(
        report.outcome,
        RunOutcome::Ok,
        "ignored times are a warning, not a failure"
    );
}

/// The alert target posts with the Jira key as fingerprint and a recovery alert on resolution.
#[tokio::test]
async fn alert_fingerprint_and_recovery() {
    let w = World::start(Setup {
        rules: rule("pager", "alert", "project = OPS"),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-9", "Pager", ago(10)));
    let r1 = w.once().await.expect("run 1");
    assert_eq!(r1.counts.created, 1, "{r1:?}");
    let alerts = w.gitlab.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fingerprint.as_deref(), Some("OPS-9"));
    assert_eq!(alerts[0].status, AlertStatus::Triggered);

    w.jira.resolve("OPS-9", ago(0));
    let r2 = w.once().await.expect("run 2");
    assert_eq!(r2.counts.closed, 1, "{r2:?}");
    let alerts = w.gitlab.alerts();
    assert_eq!(alerts.len(), 1, "the recovery resolves the same alert");
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    let recovery = alerts[0].payloads.last().unwrap();
    assert!(recovery.get("end_time").is_some(), "{recovery}");
    let auth = w.gitlab.requests().iter().all(|r| r.authorization_present);
    assert!(auth, "the alert key is sent");
    let _ = FakeGitLabConfig::DEFAULT_ALERT_KEY;
}

/// Two runs in one process (the service) need no second `/myself` and share the mapping.
#[tokio::test]
async fn same_engine_runs_twice() {
    let w = World::start(Setup::default()).await;
    let engine = w.engine();
    let cfg = w.config();
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(10)));
    run(&engine, &cfg).await.expect("run 1");
    w.jira.resolve("OPS-1", ago(0));
    let r = run(&engine, &cfg).await.expect("run 2");
    assert_eq!(r.counts.closed, 1);
    let myself = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/myself"))
        .count();
    assert_eq!(myself, 1, "the zone is asked once per process");
}

/// An edit to the Jira summary or description rewrites the GitLab title and description once;
/// a change that does not show in GitLab costs no GitLab request.
#[tokio::test]
async fn jira_edit_rewrites_title_once() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Databse down", ago(30)));
    w.once().await.expect("run 1");

    w.jira.update("OPS-1", ago(2), |i| {
        i.summary = "Database down".into();
        i.description = Some("Root cause: disk full.".into());
    });
    let r = w.once().await.expect("run 2");
    assert_eq!(r.counts.updated, 1, "{r:?}");
    let issue = &w.gitlab_issues()[0];
    assert_eq!(issue.title, "[OPS-1] Database down");
    assert!(
        issue
            .description
            .as_deref()
            .unwrap()
            .contains("Root cause: disk full.")
    );
    assert!(
        issue
            .description
            .as_deref()
            .unwrap()
            .starts_with(&format!("{}browse/OPS-1\n", w.jira.base_url())),
        "the Jira link stays on the first line"
    );

    w.gitlab.clear_requests();
    w.jira
        .update("OPS-1", ago(1), |i| i.labels = vec!["triaged".into()]);
    let r = w.once().await.expect("run 3");
    assert_eq!(r.counts.updated, 0, "{r:?}");
    assert!(
        w.gitlab.requests().is_empty(),
        "labels do not show in GitLab: no request"
    );

    let resolved = ago(0);
    w.jira.update("OPS-1", resolved, |i| {
        i.summary = "Database down (disk full)".into()
    });
    w.jira.resolve("OPS-1", resolved);
    let r = w.once().await.expect("run 4");
    assert_eq!((r.counts.closed, r.counts.updated), (1, 1), "{r:?}");
    let issue = &w.gitlab_issues()[0];
    assert_eq!(issue.title, "[OPS-1] Database down (disk full)");
    assert_eq!(
        issue.closed_at,
        Some(resolved),
        "closed at Jira's resolution time"
    );
}

/// A misspelt `gitlab_project` stops the run at GitLab's first 404: exit 2 with a message that
/// names the project, and no issue recorded as failed (so nothing is retried every cycle).
#[tokio::test]
async fn misspelt_project_stops_the_run_naming_it() {
    let w = World::start(Setup {
        rules: rule("ops", "incident", "project = OPS").replace("acme/ops", "acme/opz"),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(4)));
    let out = w.binary(&["--once"]).await;
    let text = crate::support::output_text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a wrong project is fatal:\n{text}"
    );
    assert!(
        text.contains("project \"acme/opz\""),
        "the message names the project:\n{text}"
    );
    assert_eq!(
        w.gitlab.requests().len(),
        1,
        "stopped at the first 404, not one request per issue"
    );
    let store = jira_gitlab_sync::store::Store::open_read_only(&w.store_path())
        .expect("the store is readable");
    let failing = store.failure_list("ops").await.expect("the store reads");
    assert!(
        failing.is_empty(),
        "nothing is stored as failed for a config error: {failing:?}"
    );
}
