use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeProject, Fault, FaultTarget, access};
use jira_gitlab_sync::sandbox::jira::FakeIssue;

use crate::support::{PROJECT, Setup, World, ago, rule};

/// Every issue the default GitLab project holds, by title.
fn titles(w: &World) -> Vec<String> {
    let mut t: Vec<String> = w.gitlab_issues().into_iter().map(|i| i.title).collect();
    t.sort();
    t
}

/// Quick actions in a Jira description reach GitLab as text and run nothing, on create and
/// on a later edit; NUL and other control characters do not make GitLab refuse the write.
#[tokio::test]
async fn jira_text_runs_no_quick_action() {
    let w = World::start(Setup::default()).await;
    let hostile =
        "Steps:\n/close\n/confidential\n/assign me\n/label ~pwned\n/title pwned\nnul\u{0}here";
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(30)).with_description(hostile));
    w.once().await.expect("the first cycle runs");
    let issue = &w.gitlab_issues()[0];
    assert_eq!(issue.state, RemoteState::Opened, "/close ran: {issue:#?}");
    assert!(!issue.confidential, "/confidential ran");
    assert!(issue.assignee_ids.is_empty(), "/assign ran");
    assert!(!issue.labels.contains(&"pwned".to_owned()), "/label ran");
    assert_eq!(issue.title, "[OPS-1] Checkout down", "/title ran");
    let d = issue.description.as_deref().unwrap_or_default();
    for line in [
        "\\/close",
        "\\/confidential",
        "\\/assign me",
        "\\/title pwned",
    ] {
        assert!(d.contains(line), "{line} stays visible as text: {d}");
    }
    assert!(
        d.contains("nulhere"),
        "the NUL is dropped, the text kept: {d}"
    );

    w.jira.update("OPS-1", ago(10), |i| {
        i.summary = "Checkout down (edited)".into();
        i.description = Some("/close\n/reopen".into());
    });
    w.once().await.expect("the edit cycle runs");
    let issue = &w.gitlab_issues()[0];
    assert_eq!(
        issue.title, "[OPS-1] Checkout down (edited)",
        "the edit is carried"
    );
    assert_eq!(issue.state, RemoteState::Opened, "/close in an edit ran");
}

/// A person's issue that quotes the Jira link is never taken for the sync's own object, even
/// when the sync has to look for what a create whose answer was lost made.
#[tokio::test]
async fn a_persons_issue_quoting_the_link_is_not_adopted() {
    let w = World::start(Setup::default()).await;
    w.gitlab
        .push_fault(FaultTarget::CreateIssue, Fault::CommitThenStatus(502));
    let link = format!("{}browse/OPS-1", w.jira.base_url());
    let postmortem = w
        .gitlab
        .create_person_issue(
            PROJECT,
            FakeGitLab::PERSON_ID,
            "Postmortem: checkout",
            &format!("{link}\n\nWhat happened."),
        )
        .expect("the person's issue is made");
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(30)).resolved_at(ago(20)));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 1, "{report:?}");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 2, "ours and the person's: {issues:#?}");
    let theirs = w.gitlab.issue(PROJECT, postmortem).expect("still there");
    assert_eq!(
        (theirs.state, theirs.title.as_str()),
        (RemoteState::Opened, "Postmortem: checkout"),
        "the person's issue is untouched"
    );
    let ours = issues.iter().find(|i| i.iid != postmortem).expect("ours");
    assert_eq!(ours.state, RemoteState::Closed);
}

/// A project renamed after the first sync, with its old path then taken by another project:
/// the sync keeps writing to the project it resolved (by id), never to the newcomer.
#[tokio::test]
async fn a_renamed_project_and_a_reused_path_misdirect_nothing() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(30)));
    w.once().await.expect("the first cycle runs");
    assert!(w.gitlab.rename_project(PROJECT, "acme/ops-archive"));
    let newcomer = 2;
    assert!(w.gitlab.add_project(FakeProject {
        id: newcomer,
        path_with_namespace: "acme/ops".to_owned(),
        members: vec![(1, access::OWNER), (FakeGitLab::PERSON_ID, access::OWNER)],
        environments: Vec::new(),
        alert_integrations: Vec::new(),
        auto_close_incident: false,
    }));
    let unrelated = w
        .gitlab
        .create_person_issue(
            newcomer,
            FakeGitLab::PERSON_ID,
            "Unrelated",
            "Not from Jira.",
        )
        .expect("the newcomer's issue");
    w.jira.resolve("OPS-1", ago(5));
    w.once().await.expect("the second cycle runs");
    let ours = &w.gitlab.issues(PROJECT)[0];
    assert_eq!(
        ours.state,
        RemoteState::Closed,
        "the close reached our project"
    );
    let theirs = w.gitlab.issue(newcomer, unrelated).expect("still there");
    assert_eq!(
        (theirs.state, theirs.title.as_str()),
        (RemoteState::Opened, "Unrelated"),
        "nothing was written to the project that took the old path"
    );
    let out = w.binary(&["check"]).await;
    let text = crate::support::output_text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "check refuses the ambiguity:\n{text}"
    );
    assert!(
        text.contains("acme/ops (id 2)") && text.contains("resolved it to id 1"),
        "check names both projects:\n{text}"
    );
}

/// An issue moved to another Jira project (a new key, the same id) keeps its GitLab object:
/// the title follows the new key, and its resolution closes that object.
#[tokio::test]
async fn a_moved_jira_issue_keeps_its_object() {
    let w = World::start(Setup {
        rules: rule("ops", "incident", "project in (OPS, NEW)"),
        ..Setup::default()
    })
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(30)));
    w.once().await.expect("the first cycle runs");
    // Changes are made after the cycle before them (a change older than the look-back before
    // the previous cycle is one Jira's index is assumed to have shown it).
    assert!(w.jira.move_issue("OPS-1", "NEW-7", ago(5)));
    w.once().await.expect("the cycle after the move runs");
    assert_eq!(
        titles(&w),
        vec!["[NEW-7] Checkout down".to_owned()],
        "one object, titled with the new key"
    );
    w.jira.resolve("NEW-7", ago(3));
    w.once().await.expect("the cycle after the resolution runs");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].state, RemoteState::Closed);
}

/// Renaming a rule, or a second rule matching the same issues into the same project and
/// target, never creates a second object.
#[tokio::test]
async fn renamed_and_overlapping_rules_make_one_object_per_issue() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(30)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "Login slow", ago(25)));
    w.once().await.expect("the first cycle runs");
    let text = std::fs::read_to_string(&w.config_path).expect("config");
    let renamed = text.replace("name = \"ops\"", "name = \"incidents\"");
    let overlap = format!("{renamed}\n{}", rule("second", "incident", "project = OPS"));
    std::fs::write(&w.config_path, overlap).expect("config written");
    w.jira.resolve("OPS-1", ago(5));
    let cfg = w.config();
    let engine = w.engine();
    for rule in &cfg.rules {
        engine
            .run_rule(
                rule,
                jira_gitlab_sync::domain::RunMode::Once,
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
            .expect("each rule's cycle runs");
    }
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 2, "one object per Jira issue: {issues:#?}");
    let one = issues
        .iter()
        .find(|i| i.title.contains("OPS-1"))
        .expect("OPS-1");
    assert_eq!(one.state, RemoteState::Closed, "and the close reached it");
}

/// A store deleted after a sync, then one restored from a backup older than the last sync:
/// each next run adopts what GitLab holds instead of creating it again.
#[tokio::test]
async fn a_lost_or_restored_store_makes_no_duplicate() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(60)).resolved_at(ago(50)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "Login slow", ago(40)));
    w.once().await.expect("the first cycle runs");
    let backup = w.dir.path().join("backup.db");
    std::fs::copy(w.store_path(), &backup).expect("a backup");

    // Within the look-back of the first cycle's cursor, as a change after a backup would be.
    w.jira.insert(FakeIssue::new("OPS-3", "Search red", ago(5)));
    w.once().await.expect("the second cycle runs");
    assert_eq!(w.gitlab_issues().len(), 3);

    // Restored from the older backup: OPS-3 is unknown to the store.
    restore(&w, Some(&backup));
    w.jira.resolve("OPS-3", ago(2));
    let report = w
        .once()
        .await
        .expect("the cycle on the restored store runs");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    let issues = w.gitlab_issues();
    assert_eq!(
        titles(&w).len(),
        3,
        "no duplicate after a restore: {issues:#?}"
    );
    let three = issues
        .iter()
        .find(|i| i.title.contains("OPS-3"))
        .expect("OPS-3");
    assert_eq!(
        three.state,
        RemoteState::Closed,
        "the adopted object is closed"
    );

    // Deleted altogether.
    restore(&w, None);
    w.gitlab.clear_requests();
    let report = w.once().await.expect("the cycle on a new store runs");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    assert_eq!(titles(&w).len(), 3, "no duplicate after a loss");
    let requests = w.gitlab.requests();
    let creates = requests
        .iter()
        .filter(|r| r.method == axum::http::Method::POST && r.path != "/api/graphql")
        .count();
    assert_eq!(creates, 0, "nothing was created again");
    let event_creates = requests
        .iter()
        .filter(|r| {
            r.path == "/api/graphql"
                && r.body
                    .as_ref()
                    .and_then(|b| b["query"].as_str())
                    .is_some_and(|q| q.contains("timelineEventCreate"))
        })
        .count();
    assert_eq!(
        event_creates, 0,
        "no timeline event was created again: the adopted incidents' events were looked up"
    );
}

/// Replaces the store (and its WAL files) with `backup`, or deletes it.
fn restore(w: &World, backup: Option<&std::path::Path>) {
    let store = w.store_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = store.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    if let Some(b) = backup {
        std::fs::copy(b, &store).expect("the backup is restored");
    }
}
