use std::sync::Arc;
use std::time::Duration;

use jira_gitlab_sync::sandbox::gitlab::{Fault as GitLabFault, FaultTarget as GitLabTarget};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, Fault as JiraFault, FaultTarget as JiraTarget};
use tokio::sync::Notify;

use crate::support::{Setup, World, ago, output_text};

/// A 429 from Jira with `Retry-After: 1` delays the next request by at least a second.
#[tokio::test]
async fn jira_429_waits_for_retry_after() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(10)));
    w.jira.push_fault(
        JiraTarget::Search,
        JiraFault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    let report = w.once().await.expect("the cycle survives the 429");
    assert_eq!(report.counts.created, 1);
    let searches: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/search"))
        .collect();
    assert_eq!(searches[0].status, Some(429));
    let gap = searches[1].at - searches[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "no request before Retry-After is over: {gap:?}"
    );
}

/// A 429 from GitLab on create delays the retry by `Retry-After` and creates once.
#[tokio::test]
async fn gitlab_429_waits_for_retry_after() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(10)));
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    let report = w.once().await.expect("cycle");
    assert_eq!(report.counts.created, 1, "{report:?}");
    let reqs = w.gitlab.requests();
    let creates: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/issues"))
        .collect();
    assert_eq!(creates.len(), 2, "the 429'd create and its retry");
    assert!(
        creates[1].at - creates[0].at >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(w.gitlab_issues().len(), 1);
}

/// GitLab commits a create but answers 502: the retry finds it instead of creating again.
#[rstest::rstest]
#[case::bad_gateway(GitLabFault::CommitThenStatus(502))]
#[case::dropped_connection(GitLabFault::CommitThenDrop)]
#[tokio::test]
async fn lost_create_answer_makes_no_duplicate(#[case] fault: GitLabFault) {
    let w = World::start(Setup::default()).await;
    let resolved = ago(5);
    w.jira
        .insert(FakeIssue::new("OPS-1", "a", ago(20)).resolved_at(resolved));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(15)));
    w.gitlab.push_fault(GitLabTarget::CreateIssue, fault);
    let report = w.once().await.expect("cycle");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    let issues = w.gitlab_issues();
    assert_eq!(
        issues.len(),
        2,
        "exactly one object per Jira issue: {issues:#?}"
    );
    let one = issues.iter().find(|i| i.title.contains("OPS-1")).unwrap();
    assert_eq!(
        one.closed_at,
        Some(resolved),
        "and the close still happened"
    );
    let requests = w.gitlab.requests();
    let lookups = requests
        .iter()
        .filter(|r| r.query_param("created_after").is_some())
        .count();
    assert_eq!(lookups, 1, "one lookup, for the ambiguous create only");
    let scans = requests
        .iter()
        .filter(|r| {
            r.query_param("author_id").is_some() && r.query_param("created_after").is_none()
        })
        .count();
    assert_eq!(
        scans, 1,
        "one look for unknown objects, before the run's first create"
    );
    assert!(
        requests.iter().all(|r| r.query_param("search").is_none()),
        "no full-text search: it cannot find a key inside a URL"
    );
}

/// The process dies after GitLab created the issue but before the store commit; the next run
/// finds the issue instead of creating another.
#[tokio::test]
async fn crash_between_create_and_commit() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(20)));
    let arrived = Arc::new(Notify::new());
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::CommitThenHang(arrived.clone()),
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .arg("--config")
        .arg(&w.config_path)
        .arg("--once")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    tokio::time::timeout(Duration::from_secs(60), arrived.notified())
        .await
        .expect("the create reached GitLab");
    child.kill().await.expect("killed");
    assert_eq!(w.gitlab_issues().len(), 1, "GitLab holds the created issue");

    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        w.gitlab_issues().len(),
        1,
        "the second run must not create it again"
    );
    let store = w.engine();
    let key = jira_gitlab_sync::domain::JiraKey::parse("OPS-1").unwrap();
    let m = store.store().mapping("ops", &key).await.unwrap();
    assert_eq!(
        m.and_then(|m| m.iid),
        Some(w.gitlab_issues()[0].iid),
        "mapping recovered"
    );
}

/// One issue GitLab rejects is recorded and counted; the others replicate; a cycle retries it
/// without a new Jira change once its backoff is over (`retry` makes it due at once).
#[tokio::test]
async fn one_bad_issue_does_not_stop_the_cycle() {
    // One issue at a time: the fault below is for the first create, which must be OPS-1's.
    let w = World::start(Setup {
        sync: "backfill_concurrency = 1".into(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(10)));
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::Status {
            status: 400,
            body: r#"{"message":{"base":["spam detected"]}}"#.into(),
        },
    );
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some issues failed: exit 1\n{text}"
    );
    assert!(
        text.contains("OPS-1") && text.contains("spam detected"),
        "named in the log: {text}"
    );
    assert_eq!(w.gitlab_issues().len(), 1, "OPS-2 still replicated");

    let r = w.once().await.expect("next cycle");
    assert_eq!(r.counts.created, 0, "not due yet: {r:?}");
    let out = w.binary(&["retry", "OPS-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let r = w.once().await.expect("the cycle after");
    assert_eq!(r.counts.created, 1, "the failed issue is retried: {r:?}");
    assert_eq!(r.counts.failed, 0);
    assert_eq!(w.gitlab_issues().len(), 2);
}
