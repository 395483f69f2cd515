//! What people do in GitLab behind the sync's back (delete, move, resolve alerts by hand, a token
//! below Reporter), and failures that can never succeed: per-issue backoff, `retry` and
//! `forget`, a proxy's body limit, a GitLab outage.

use chrono::{DateTime, Utc};
use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::sandbox::gitlab::{
    AlertStatus, FakeGitLabConfig, FakeProject, Fault, FaultTarget, access,
};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use serde_json::Value;

use crate::support::{PROJECT, Setup, World, ago, output_text, rule};

/// The second project of [`with_archive`]: where a person moves issues.
const ARCHIVE: u64 = 2;

/// The default GitLab plus a project `acme/archive` (id 2) the sync's user owns.
fn with_archive() -> FakeGitLabConfig {
    let mut gitlab = FakeGitLabConfig::default();
    gitlab.projects.push(FakeProject {
        id: ARCHIVE,
        path_with_namespace: "acme/archive".to_owned(),
        members: vec![(1, access::OWNER)],
        environments: Vec::new(),
        alert_integrations: Vec::new(),
        auto_close_incident: false,
    });
    gitlab
}

/// `status --json` of the world's store: its first rule.
async fn status_json(w: &World) -> Value {
    let out = w.binary(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("a time: {v}"))
}

/// An incident a person deleted: the next write's 404 records it as gone, with no failure; it is
/// never written again, even when Jira changes it, and `status` names it.
#[tokio::test]
async fn a_deleted_issue_is_recorded_as_gone() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(30)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(30)));
    w.once().await.expect("run 1");
    assert!(w.gitlab.delete_issue(PROJECT, 1), "a person deletes OPS-1");

    w.jira.resolve("OPS-1", ago(2));
    let r = w.once().await.expect("run 2");
    assert_eq!((r.counts.failed, r.counts.closed), (0, 0), "{r:?}");
    assert!(w.gitlab_issues().len() == 1, "nothing created again");

    w.gitlab.clear_requests();
    w.jira.reopen("OPS-1", ago(1));
    let r = w.once().await.expect("run 3");
    assert_eq!(r.counts.failed, 0, "{r:?}");
    assert!(
        w.gitlab.requests().is_empty(),
        "a gone issue is never written again: {:?}",
        w.gitlab.requests()
    );

    let report = status_json(&w).await;
    let rule = &report["rules"][0];
    assert_eq!(rule["gone"], 1, "{rule:#}");
    assert_eq!(rule["gone_keys"], serde_json::json!(["OPS-1"]), "{rule:#}");
    assert_eq!(rule["failed"], 0, "{rule:#}");
    let table = w.binary(&["status"]).await;
    let text = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.contains("gone") && l.contains("OPS-1")),
        "the table names it:\n{text}"
    );
}

/// A 404 because the project itself is gone is not an issue deleted by a person: the run stops
/// and no mapping is marked as gone.
#[tokio::test]
async fn a_missing_project_is_not_a_deleted_issue() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(30)));
    w.once().await.expect("run 1");
    w.gitlab.set_access_level(PROJECT, 1, 0);
    w.jira.resolve("OPS-1", ago(1));
    let err = w.once().await.expect_err("the project is out of reach");
    assert!(!err.is_retryable(), "{err:?}");
    let report = status_json(&w).await;
    assert_eq!(report["rules"][0]["gone"], 0, "{report:#}");
}

/// An issue a person moved to another project: the close, reopen and edit that follow go to
/// the copy, and the moved original is left closed.
#[tokio::test]
async fn a_moved_issue_is_followed_to_its_copy() {
    let w = World::start(Setup {
        gitlab: with_archive(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(30)));
    w.once().await.expect("run 1");
    let copy = w.gitlab.move_issue(PROJECT, 1, ARCHIVE).expect("moved");

    let resolved = ago(3);
    w.jira.resolve("OPS-1", resolved);
    let r = w.once().await.expect("run 2");
    assert_eq!((r.counts.closed, r.counts.failed), (1, 0), "{r:?}");
    let moved = w.gitlab.issue(ARCHIVE, copy).expect("the copy");
    assert_eq!(moved.state, RemoteState::Closed, "the copy is closed");
    assert_eq!(moved.closed_at, Some(resolved), "at Jira's resolution time");

    w.jira.reopen("OPS-1", ago(2));
    let r = w.once().await.expect("run 3");
    assert_eq!(r.counts.reopened, 1, "{r:?}");
    assert_eq!(
        w.gitlab.issue(ARCHIVE, copy).map(|i| i.state),
        Some(RemoteState::Opened),
        "the copy is reopened"
    );
    assert_eq!(
        w.gitlab.issue(PROJECT, 1).map(|i| i.state),
        Some(RemoteState::Closed),
        "the moved original stays closed"
    );

    w.jira
        .update("OPS-1", ago(1), |i| i.summary = "a, edited".into());
    let r = w.once().await.expect("run 4");
    assert_eq!(r.counts.updated, 1, "{r:?}");
    assert_eq!(
        w.gitlab.issue(ARCHIVE, copy).map(|i| i.title),
        Some("[OPS-1] a, edited".to_owned())
    );
    assert_eq!(w.gitlab_issues().len(), 1, "nothing created in acme/ops");
    assert_eq!(w.gitlab.issues(ARCHIVE).len(), 1, "nor in acme/archive");

    w.gitlab.clear_requests();
    let r = w.once().await.expect("run 5");
    assert_eq!(r.counts.updated + r.counts.created, 0, "{r:?}");
    assert!(w.gitlab.requests().is_empty(), "idle: no GitLab request");
}

/// A recovery GitLab answers 400 because no alert with its fingerprint is open — a person
/// resolved it, or an earlier recovery's answer was lost — is recorded as resolved.
#[rstest::rstest]
#[case::resolved_by_a_person(true)]
#[case::answer_lost(false)]
#[tokio::test]
async fn a_recovery_with_no_open_alert_is_resolved(#[case] by_person: bool) {
    let w = World::start(Setup {
        rules: rule("pager", "alert", "project = OPS"),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-9", "Pager", ago(10)));
    w.once().await.expect("run 1");
    if by_person {
        let alert = w.gitlab.alerts()[0].iid;
        assert!(w.gitlab.resolve_alert(PROJECT, alert));
    } else {
        // The recovery is applied, its answer lost; the HTTP layer sends it again.
        w.gitlab
            .push_fault(FaultTarget::Alert, Fault::CommitThenStatus(502));
    }
    w.jira.resolve("OPS-9", ago(1));
    let r = w.once().await.expect("run 2");
    assert_eq!((r.counts.closed, r.counts.failed), (1, 0), "{r:?}");
    assert_eq!(w.gitlab.alerts()[0].status, AlertStatus::Resolved);

    w.gitlab.clear_requests();
    let r = w.once().await.expect("run 3");
    assert_eq!(r.counts.failed, 0, "{r:?}");
    assert!(w.gitlab.requests().is_empty(), "nothing left to retry");
}

/// An issue reopened in Jira fires a new alert with the first one's title, description and
/// severity (not a bare title that GitLab files as critical).
#[tokio::test]
async fn a_reopened_alert_carries_the_first_alerts_content() {
    let w = World::start(Setup {
        rules: rule("pager", "alert", "project = OPS"),
        ..Setup::default()
    })
    .await;
    w.jira.insert(
        FakeIssue::new("OPS-9", "Disk full", ago(10))
            .with_priority(Some("High"))
            .with_description("db-1 is out of space"),
    );
    w.once().await.expect("run 1");
    w.jira.resolve("OPS-9", ago(3));
    w.once().await.expect("run 2");
    w.jira.reopen("OPS-9", ago(1));
    let r = w.once().await.expect("run 3");
    assert_eq!(r.counts.reopened, 1, "{r:?}");
    let alerts = w.gitlab.alerts();
    assert_eq!(alerts.len(), 2, "a new alert: {alerts:#?}");
    let (first, again) = (&alerts[0].payloads[0], &alerts[1].payloads[0]);
    for field in ["title", "description", "severity", "fingerprint"] {
        assert_eq!(again[field], first[field], "{field}: {again:#}");
    }
    assert_eq!(again["severity"], "high");
    let incident = w
        .gitlab
        .issue(PROJECT, alerts[1].incident_iid.expect("an incident"))
        .expect("the incident");
    assert_eq!(incident.severity, "HIGH", "not GitLab's default, critical");
}

/// A token below Reporter makes GitLab file incidents as plain issues, silently: the sync warns
/// once per project, and `check` says why.
#[tokio::test]
async fn incidents_filed_as_issues_are_reported() {
    let w = World::start(Setup::default()).await;
    assert!(w.gitlab.set_access_level(PROJECT, 1, access::GUEST));
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(10)));
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(w.gitlab_issues().iter().all(|i| i.issue_type == "issue"));
    assert_eq!(
        text.matches("filed it as a plain issue").count(),
        1,
        "one warning for the project:\n{text}"
    );

    let out = w.binary(&["check"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("project acme/ops") && l.contains("Reporter"))
        .unwrap_or_else(|| panic!("a finding about the role:\n{text}"));
    assert!(
        line.contains("below Reporter") && line.contains("plain issue"),
        "{line}"
    );
}

/// A failing issue is retried a minute later, not at every cycle; `status` shows when.
#[tokio::test]
async fn a_failing_issue_backs_off() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let refusal = || Fault::Status {
        status: 422,
        body: r#"{"message":"refused"}"#.into(),
    };
    w.gitlab.push_fault(FaultTarget::CreateIssue, refusal());
    w.gitlab.push_fault(FaultTarget::CreateIssue, refusal());
    let r = w.once().await.expect("run 1");
    assert_eq!(r.counts.failed, 1, "{r:?}");

    w.gitlab.clear_requests();
    let r = w.once().await.expect("run 2");
    assert_eq!(r.counts.failed, 0, "{r:?}");
    assert!(
        w.gitlab.requests().is_empty(),
        "not due yet: {:?}",
        w.gitlab.requests()
    );

    let report = status_json(&w).await;
    let failing = &report["rules"][0]["failing"][0];
    assert_eq!(failing["jira_key"], "OPS-1", "{report:#}");
    assert_eq!(failing["attempts"], 1, "{failing:#}");
    let wait = time(&failing["next_attempt_at"]) - time(&failing["last_failed_at"]);
    assert_eq!(wait, chrono::Duration::minutes(1), "{failing:#}");
    assert!(
        failing["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("refused"),
        "{failing:#}"
    );
    let table = w.binary(&["status"]).await;
    let text = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.contains("OPS-1") && l.contains("next") && l.contains("refused")),
        "{text}"
    );
}

/// `retry KEY` makes a failure due now and `forget KEY` drops it; a key failing under several
/// rules needs `--rule`; an unknown key exits 2; a store in use is refused with its holder.
#[tokio::test]
async fn retry_and_forget_a_failing_issue() {
    let w = World::start(Setup {
        rules: format!(
            "{}{}",
            rule("ops", "incident", "project = OPS"),
            rule("vsa", "issue", "project = OPS")
        ),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    for _ in 0..2 {
        w.gitlab.push_fault(
            FaultTarget::CreateIssue,
            Fault::Status {
                status: 422,
                body: r#"{"message":"refused"}"#.into(),
            },
        );
    }
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    let out = w.binary(&["retry", "OPS-1"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "ambiguous: {text}");
    assert!(text.contains("ops") && text.contains("vsa"), "{text}");

    let out = w.binary(&["retry", "OPS-7"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    {
        let _held = jira_gitlab_sync::store::Store::open(&w.store_path()).expect("opens");
        let out = w.binary(&["retry", "OPS-1", "--rule", "ops"]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }

    let out = w.binary(&["retry", "OPS-1", "--rule", "ops"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = w.binary(&["forget", "OPS-1", "--rule", "vsa"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let report = status_json(&w).await;
    let by_rule = |name: &str| {
        report["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["rule"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("rule {name}: {report:#}"))
    };
    assert_eq!(by_rule("vsa")["failing"], serde_json::json!([]));
    let ops = by_rule("ops");
    assert!(
        time(&ops["failing"][0]["next_attempt_at"]) <= Utc::now(),
        "due now: {ops:#}"
    );

    w.gitlab.clear_requests();
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 1, "the retried incident only: {issues:#?}");
    assert_eq!(issues[0].issue_type, "incident");
}

/// A description over the reverse proxy's body limit (413) is halved until it fits, keeping
/// the Jira link and ending with a line that says the full text is in Jira.
#[tokio::test]
async fn a_description_too_large_is_halved_until_it_fits() {
    let w = World::start(Setup {
        gitlab: FakeGitLabConfig {
            max_body_bytes: Some(6 * 1024),
            ..FakeGitLabConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let long: String = (0..600)
        .map(|i| format!("line {i} of the log\n\n"))
        .collect();
    w.jira
        .insert(FakeIssue::new("OPS-1", "a", ago(10)).with_description(&long));
    let r = w.once().await.expect("run 1");
    assert_eq!((r.counts.created, r.counts.failed), (1, 0), "{r:?}");
    let issue = &w.gitlab_issues()[0];
    let description = issue.description.clone().unwrap_or_default();
    let lines: Vec<&str> = description.trim_end().lines().collect();
    assert_eq!(
        lines[0],
        format!("{}browse/OPS-1", w.jira.base_url()),
        "the link stays"
    );
    assert!(lines.contains(&"line 0 of the log"), "{description}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.contains("truncated") && last.contains("full text is in Jira"),
        "{last}"
    );

    w.gitlab.clear_requests();
    let r = w.once().await.expect("run 2");
    assert_eq!(r.counts.updated, 0, "no rewrite of the cut text: {r:?}");
    assert!(w.gitlab.requests().is_empty());
}

/// GitLab down (every answer 502): the run stops after three issues in a row fail, instead of
/// spending its retries on every pending issue; the rest waits for the next cycle.
#[tokio::test]
async fn a_gitlab_outage_stops_the_run() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(30)));
    w.once().await.expect("run 1 resolves the project");
    for n in 2..=8 {
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{n}"), "b", ago(9 - n)));
    }
    for _ in 0..500 {
        w.gitlab.push_fault(
            FaultTarget::Any,
            Fault::Status {
                status: 502,
                body: "<html>502 Bad Gateway</html>".into(),
            },
        );
    }
    let err = w.once().await.expect_err("the run stops");
    assert!(
        err.is_retryable(),
        "an outage is retried next cycle: {err:?}"
    );
    let store = jira_gitlab_sync::store::Store::open_read_only(&w.store_path()).expect("reads");
    let failing = store.failure_list("ops").await.expect("reads");
    assert_eq!(
        failing.len(),
        2,
        "two recorded; the third stopped the run: {failing:?}"
    );
}
