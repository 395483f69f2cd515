use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::engine::backfill::{BackfillRequest, NoProgress};
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLabConfig, Fault, FaultTarget};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::{Setup, World, output_text, rule};

/// `n` historical incidents from about a year ago, one every `step` minutes; every third open.
fn seed(w: &World, n: i64, step: i64) -> HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)> {
    let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut expected = HashMap::new();
    for i in 1..=n {
        let created = start + chrono::Duration::minutes(i * step);
        let key = format!("OPS-{i}");
        let mut issue = FakeIssue::new(&key, "history", created);
        let resolved = (i % 3 != 0).then(|| created + chrono::Duration::minutes(30 + i % 90));
        if let Some(r) = resolved {
            issue = issue.resolved_at(r);
        }
        w.jira.insert(issue);
        expected.insert(key, (created, resolved));
    }
    expected
}

fn request(since: &str, until: Option<&str>) -> BackfillRequest {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    BackfillRequest {
        since: parse(since),
        until: until.map(parse),
        concurrency: 8,
        sample: 5,
    }
}

/// Asserts GitLab holds exactly one object per expected issue, with Jira's exact times.
fn assert_exactly_once(
    w: &World,
    expected: &HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)>,
) {
    let issues = w.gitlab_issues();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for i in &issues {
        let key = i
            .title
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap()
            .to_owned();
        *by_key.entry(key.clone()).or_default() += 1;
        let (created, resolved) = expected
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected {key}"));
        assert_eq!(i.created_at, *created, "{key}: created_at is Jira's");
        assert_eq!(
            i.closed_at, *resolved,
            "{key}: closed_at is Jira's resolution"
        );
        assert_eq!(
            i.state == RemoteState::Closed,
            resolved.is_some(),
            "{key}: state"
        );
    }
    assert_eq!(by_key.len(), expected.len(), "every issue arrived");
    let dupes: Vec<_> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "no issue twice: {dupes:?}");
}

/// 1,500 Data Center issues with a result window of 500 all arrive once, with exact times.
#[tokio::test]
async fn datacenter_result_window_500() {
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            dc_max_result_window: Some(500),
            ..FakeJiraConfig::data_center()
        },
        ..Setup::default()
    })
    .await;
    let expected = seed(&w, 1_500, 7);
    let engine = w.engine();
    let cfg = w.config();
    let report = engine
        .backfill(
            &cfg.rules[0],
            &request("2024-12-01T00:00:00Z", None),
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .expect("backfill");
    assert_eq!(report.counts.created, 1_500, "{report:?}");
    assert_eq!(report.counts.closed, 1_000);
    assert_eq!(
        report.total,
        Some(1_500),
        "Data Center tells the total for the progress bar"
    );
    assert!(report.median_restore_secs.is_some());
    assert_exactly_once(&w, &expected);
    let refused = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.status == Some(400))
        .count();
    assert_eq!(refused, 0, "never paged past the result window");
}

/// A backfill killed twice part-way — each time while a create it sent is committed in GitLab
/// but unanswered — and re-run ends with each issue exactly once.
#[tokio::test]
async fn killed_twice_then_resumed() {
    let w = World::start(Setup {
        // Latency keeps the child from racing to the end while this test waits to kill it.
        gitlab: FakeGitLabConfig {
            latency: Duration::from_millis(10),
            ..FakeGitLabConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let expected = seed(&w, 600, 11);
    for stop_at in [150, 350] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
            .arg("--config")
            .arg(&w.config_path)
            .args(["backfill", "--since", "2024-12-01"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("backfill starts");
        // Wait (polling GitLab's state, with a deadline) until the backfill is part-way, then
        // make its next create hang after GitLab committed it, and kill the process there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while w.gitlab_issues().len() < stop_at {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the backfill progresses"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let arrived = Arc::new(Notify::new());
        w.gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::CommitThenHang(arrived.clone()),
        );
        tokio::time::timeout(Duration::from_secs(60), arrived.notified())
            .await
            .expect("the next create reached GitLab");
        child.kill().await.expect("killed");
        let n = w.gitlab_issues().len();
        assert!(n < 600, "killed part-way ({n})");
    }
    let out = w.binary(&["backfill", "--since", "2024-12-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("resumed from"), "the re-run resumes: {text}");
    assert_exactly_once(&w, &expected);
}

/// `--until` and `--rule` select what they say.
#[tokio::test]
async fn until_and_rule_select() {
    let w = World::start(Setup {
        rules: format!(
            "{}{}",
            rule("ops", "incident", "project = OPS"),
            rule("other", "issue", "project = OTHER")
        ),
        ..Setup::default()
    })
    .await;
    seed(&w, 100, 60); // OPS-1 … OPS-100, hourly from 2025-01-01 01:00
    w.jira.insert(FakeIssue::new(
        "OTHER-1",
        "elsewhere",
        DateTime::parse_from_rfc3339("2025-01-01T05:30:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let out = w
        .binary(&[
            "backfill",
            "--since",
            "2025-01-01",
            "--until",
            "2025-01-02T00:00:00Z",
            "--rule",
            "ops",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let titles: Vec<String> = w.gitlab_issues().into_iter().map(|i| i.title).collect();
    assert_eq!(titles.len(), 23, "01:00 … 23:00 on Jan 1: {titles:?}");
    assert!(
        titles.iter().all(|t| t.starts_with("[OPS-")),
        "only the ops rule: {titles:?}"
    );
    assert!(
        !titles.iter().any(|t| t.starts_with("[OPS-24]")),
        "OPS-24 is created at --until"
    );
}

/// A live `--once` after a backfill writes nothing to GitLab.
#[tokio::test]
async fn live_once_after_backfill_writes_nothing() {
    let w = World::start(Setup::default()).await;
    // History plus recent issues the live window also sees.
    seed(&w, 50, 30);
    let now = Utc::now();
    let recent =
        DateTime::from_timestamp_millis((now - chrono::Duration::minutes(3)).timestamp_millis())
            .unwrap();
    w.jira.insert(
        FakeIssue::new("OPS-900", "recent", recent)
            .resolved_at(recent + chrono::Duration::seconds(30)),
    );
    let out = w.binary(&["backfill", "--since", "2024-12-01"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(w.gitlab_issues().len(), 51);
    w.gitlab.clear_requests();
    let report = w.once().await.expect("live cycle");
    assert_eq!(
        report.counts.created + report.counts.closed,
        0,
        "{report:?}"
    );
    assert!(
        w.gitlab.requests().is_empty(),
        "no GitLab request: {:?}",
        w.gitlab.requests()
    );
}

/// 429s during backfill slow it down without losing or repeating anything.
#[tokio::test]
async fn rate_limited_backfill_loses_nothing() {
    let w = World::start(Setup::default()).await;
    let expected = seed(&w, 200, 13);
    for _ in 0..3 {
        w.gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::RateLimited {
                retry_after_secs: Some(1),
            },
        );
    }
    let engine = w.engine();
    let cfg = w.config();
    let report = engine
        .backfill(
            &cfg.rules[0],
            &request("2024-12-01T00:00:00Z", None),
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .expect("backfill");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    assert_exactly_once(&w, &expected);
    // Requests already in flight when the 429 came back may still arrive (at most the
    // concurrency); nothing more may be sent until Retry-After has passed.
    let reqs = w.gitlab.requests();
    let limited: Vec<_> = reqs.iter().filter(|r| r.status == Some(429)).collect();
    assert_eq!(limited.len(), 3, "the three 429s were served");
    for r in limited {
        let during = reqs
            .iter()
            .filter(|n| n.at > r.at && n.at - r.at < Duration::from_millis(900))
            .count();
        assert!(
            during <= 8,
            "{during} requests within Retry-After of a 429: it kept hammering"
        );
    }
}

/// Backfill refuses to run while another process (the service) holds the store.
#[tokio::test]
async fn refused_while_store_in_use() {
    let w = World::start(Setup::default()).await;
    let _service = w.engine(); // holds the store's lock
    let out = w.binary(&["backfill", "--since", "2024-12-01"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("in use by another"), "{text}");
}

/// `--dry-run` counts and samples what it would write, and writes nothing.
#[tokio::test]
async fn dry_run_backfill_writes_nothing() {
    let w = World::start(Setup::default()).await;
    seed(&w, 40, 60);
    let out = w
        .binary(&["backfill", "--since", "2024-12-01", "--dry-run"])
        .await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("would create 40"), "{text}");
    assert!(text.contains("create+close"), "a sample is listed: {text}");
    assert!(
        w.gitlab.requests().iter().all(|r| r.method == "GET"),
        "only reads (role check)"
    );
    assert!(!w.store_path().exists());
}
