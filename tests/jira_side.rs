//! Nothing lost on the Jira side (issue 9): walks that end only where Jira says, Jira's clock,
//! exact resolution times, and every replicated issue followed by id until it is resolved.

use std::time::Duration as StdDuration;

use chrono::{Duration, Timelike};
use jira_gitlab_sync::engine::ports::SyncStore;
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig, Fault, FaultTarget};

use crate::support::{Setup, World, ago, output_text};

/// Inserts `n` issues `OPS-1..n`, the `i`th changed at `at(i)`.
fn seed(w: &World, n: i64, at: impl Fn(i64) -> chrono::DateTime<chrono::Utc>) {
    for i in 1..=n {
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{i}"), "x", at(i)));
    }
}

/// The GitLab titles' keys, sorted, each once.
fn replicated_keys(w: &World) -> Vec<String> {
    let mut keys: Vec<String> = w
        .gitlab_issues()
        .iter()
        .filter_map(|i| {
            i.title
                .strip_prefix('[')
                .and_then(|t| t.split_once(']'))
                .map(|(k, _)| k.to_owned())
        })
        .collect();
    keys.sort();
    keys
}

fn all_keys(n: i64) -> Vec<String> {
    let mut keys: Vec<String> = (1..=n).map(|i| format!("OPS-{i}")).collect();
    keys.sort();
    keys
}

/// Row 1, Cloud: a page with no issues but `isLast: false` mid-walk is asked again, and the
/// walk goes on to Jira's last page.
#[tokio::test]
async fn cloud_empty_page_mid_walk_is_asked_again() {
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            cloud_page_cap: 10,
            ..FakeJiraConfig::cloud()
        },
        ..Setup::default()
    })
    .await;
    seed(&w, 40, |i| ago(200) + Duration::minutes(i * 2));
    w.jira
        .push_fault(FaultTarget::Search, Fault::Delay(StdDuration::ZERO));
    w.jira.push_fault(FaultTarget::Search, Fault::EmptyPage);
    w.jira.push_fault(FaultTarget::Search, Fault::EmptyPage);
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 40, "{report:?}");
    assert_eq!(replicated_keys(&w), all_keys(40));
}

/// Row 1, Data Center: empty pages below `total` that persist fail `--once` (exit 1) with a
/// message saying "empty page", and the cursor stays before what was not seen: the next run
/// replicates every issue.
#[tokio::test]
async fn datacenter_persistent_empty_pages_fail_the_run_and_lose_nothing() {
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            dc_page_cap: 10,
            ..FakeJiraConfig::data_center()
        },
        ..Setup::default()
    })
    .await;
    seed(&w, 40, |i| ago(200) + Duration::minutes(i * 2));
    w.jira
        .push_fault(FaultTarget::Search, Fault::Delay(StdDuration::ZERO));
    for _ in 0..4 {
        w.jira.push_fault(FaultTarget::Search, Fault::EmptyPage);
    }
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("empty page"), "{text}");
    let report = w.once().await.expect("the next cycle runs");
    assert_eq!(replicated_keys(&w), all_keys(40), "{report:?}");
}

/// An answer without Jira's last-page signal (a stand-in page: `{"issues": []}`) is not taken
/// for the end of the search.
#[tokio::test]
async fn an_answer_without_a_last_page_signal_is_not_the_end() {
    let w = World::start(Setup::default()).await;
    seed(&w, 3, |i| ago(100) + Duration::minutes(i));
    w.jira.push_fault(
        FaultTarget::Search,
        Fault::Status {
            status: 200,
            body: r#"{"issues": []}"#.into(),
        },
    );
    w.once().await.expect_err("the run fails");
    w.once().await.expect("the next run");
    assert_eq!(replicated_keys(&w), all_keys(3));
}

/// Row 5: a cross-origin redirect mid-walk, whose answer without credentials would be an empty
/// last page, fails the run; nothing is lost.
#[tokio::test]
async fn a_cross_origin_redirect_mid_walk_loses_nothing() {
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            cloud_page_cap: 10,
            ..FakeJiraConfig::cloud()
        },
        ..Setup::default()
    })
    .await;
    seed(&w, 30, |i| ago(200) + Duration::minutes(i * 2));
    // Another Jira site, on another origin: anonymous, it sees no issue (an empty last page).
    let other = jira_gitlab_sync::sandbox::jira::FakeJira::start(FakeJiraConfig {
        auth: vec![String::new()],
        ..FakeJiraConfig::cloud()
    })
    .await
    .expect("the other site starts");
    w.jira
        .push_fault(FaultTarget::Search, Fault::Delay(StdDuration::ZERO));
    w.jira.push_fault(
        FaultTarget::Search,
        Fault::Redirect {
            location: format!("{}rest/api/3/search/jql", other.base_url()),
        },
    );
    w.once().await.expect_err("the run fails");
    w.once().await.expect("the next run");
    assert_eq!(replicated_keys(&w), all_keys(30));
}

/// Row 2: the same `nextPageToken` again ends the run with an error instead of paging for ever.
#[tokio::test]
async fn a_repeated_page_token_ends_the_run() {
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            cloud_page_cap: 10,
            ..FakeJiraConfig::cloud()
        },
        ..Setup::default()
    })
    .await;
    let minute = ago(30).with_second(0).expect("a minute");
    seed(&w, 30, |i| minute + Duration::milliseconds(i * 100));
    for _ in 0..50 {
        w.jira.push_fault(FaultTarget::Search, Fault::RepeatToken);
    }
    let e = w.once().await.expect_err("the run fails");
    assert!(
        jira_gitlab_sync::engine::error_chain(&e).contains("page token"),
        "{e:?}"
    );
    assert!(w.jira_searches() <= 4, "{} searches", w.jira_searches());
}

/// Row 3: Data Center, 150 issues changed in one minute (a bulk edit), one edited again while
/// the walk pages that minute by `startAt`: the offsets shift, and the minute's check walks it
/// again. Every issue is replicated once.
#[tokio::test]
async fn datacenter_bulk_edit_paged_by_offset_loses_nothing() {
    let w = World::start(Setup {
        jira: FakeJiraConfig::data_center(),
        ..Setup::default()
    })
    .await;
    let minute = ago(30).with_second(0).expect("a minute");
    seed(&w, 150, |i| minute + Duration::milliseconds(i * 100));
    w.jira
        .push_fault(FaultTarget::Search, Fault::Delay(StdDuration::ZERO));
    w.jira.push_fault(
        FaultTarget::Search,
        Fault::EditAfter {
            key: "OPS-10".into(),
            at: ago(1),
        },
    );
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(replicated_keys(&w), all_keys(150), "{report:?}");
    let store = jira_gitlab_sync::store::Store::open_read_only(&w.store_path()).expect("store");
    assert!(store.cursor("ops").await.expect("cursor").is_some());
}

/// Row 4: Jira's clock 25 minutes behind this host's (look-back 10 minutes). The cursor's
/// ceiling comes from the search answer's `Date`, so an issue created just after a run is found
/// by the next one; the skew is warned about with its figure in seconds. An idle cycle still
/// costs one search.
#[tokio::test]
async fn jira_clock_behind_loses_nothing_and_is_warned() {
    let offset = Duration::minutes(-25);
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            clock_offset: offset,
            ..FakeJiraConfig::cloud()
        },
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        ["-1499", "-1500", "-1501"].iter().any(|s| text.contains(s)) && text.contains("clock"),
        "the skew is warned about with its figure: {text}"
    );
    // Created now, by Jira's clock.
    w.jira
        .insert(FakeIssue::new("OPS-1", "new", ago(0) + offset));
    w.jira.clear_requests();
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 1, "{report:?}");
    assert_eq!(w.jira_searches(), 1, "still one search");
}

/// Row 9: resolved (GitLab closed), then reopened and resolved again before the next cycle:
/// GitLab's `closed_at` is the latest resolution (the object is reopened and closed again).
#[tokio::test]
async fn a_re_resolution_moves_closed_at() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "x", ago(120)).resolved_at(ago(60)));
    w.once().await.expect("run 1");
    w.jira.reopen("OPS-1", ago(5));
    let again = ago(3);
    w.jira.resolve("OPS-1", again);
    let report = w.once().await.expect("run 2");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].closed_at, Some(again), "{report:?}");
    assert_eq!(
        issues[0].state,
        jira_gitlab_sync::domain::RemoteState::Closed
    );
    // Nothing more to do on the next run.
    w.gitlab.clear_requests();
    w.once().await.expect("run 3");
    assert!(w.gitlab.requests().is_empty(), "{:?}", w.gitlab.requests());
}

/// Row 11: `resolutiondate` before `created` is clamped to `created`, with a warning that names
/// the key; no negative time to restore reaches GitLab.
#[tokio::test]
async fn a_resolution_before_creation_is_clamped() {
    let w = World::start(Setup::default()).await;
    let created = ago(60);
    let mut issue = FakeIssue::new("OPS-7", "imported", created).resolved_at(ago(90));
    issue.updated = ago(50);
    w.jira.insert(issue);
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("OPS-7") && text.contains("before the issue was created"),
        "{text}"
    );
    let issues = w.gitlab_issues();
    assert_eq!(issues[0].closed_at, Some(created));
}

/// Row 10, Data Center: a Done-category status without a resolution is closed at the latest
/// change into Done from the changelog (embedded by `expand=changelog`), not at `updated`, which
/// a later edit moves.
#[tokio::test]
async fn datacenter_done_without_resolution_closes_at_its_transition() {
    let w = World::start(Setup {
        jira: FakeJiraConfig::data_center(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "x", ago(300)));
    w.jira
        .transition("OPS-1", ago(200), "In Progress", "indeterminate");
    let done = ago(120);
    w.jira.transition("OPS-1", done, "Closed", "done");
    w.jira.update("OPS-1", ago(10), |_| {});
    w.once().await.expect("the cycle runs");
    let issues = w.gitlab_issues();
    assert_eq!(issues[0].closed_at, Some(done));
}

/// Row 10, Cloud: the search embeds only the 40 most recent changelog entries; when the change
/// into Done is older, the changelog endpoint is paged for it. A later move between two Done
/// statuses is not a resolution.
#[tokio::test]
async fn cloud_done_without_resolution_reads_a_truncated_changelog() {
    let w = World::start(Setup::default()).await;
    let mut issue = FakeIssue::new("OPS-1", "x", ago(400));
    issue.set_status(ago(300), "In Progress", "indeterminate");
    let done = ago(200);
    issue.set_status(done, "Done", "done");
    for i in 0..45 {
        issue
            .history
            .push(jira_gitlab_sync::sandbox::jira::FakeHistory::field(
                ago(190) + Duration::minutes(i),
                "labels",
                "",
                &format!("l{i}"),
            ));
    }
    issue.set_status(ago(100), "Closed", "done");
    issue.updated = ago(10);
    w.jira.insert(issue);
    w.once().await.expect("the cycle runs");
    let issues = w.gitlab_issues();
    assert_eq!(issues[0].closed_at, Some(done));
    assert!(
        w.jira
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/changelog")),
        "the changelog endpoint was asked"
    );
}

/// A setup whose reconciliation is due every second, for `rules`.
fn reconciling(rules: String, jira: FakeJiraConfig) -> Setup {
    Setup {
        jira,
        rules,
        sync: "reconcile_secs = 1".into(),
        ..Setup::default()
    }
}

/// Lets the reconciliation interval (1 s) pass since the last write.
async fn next_interval() {
    tokio::time::sleep(StdDuration::from_millis(1_100)).await;
}

fn labels_of(w: &World, key: &str) -> Vec<String> {
    w.gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains(key))
        .map(|i| i.labels)
        .unwrap_or_default()
}

/// Row 6: an issue that stops matching the JQL (priority lowered), then is resolved: the
/// reconciliation re-reads it by id, labels it `jira::out-of-scope` and closes it at its exact
/// resolution time.
#[tokio::test]
async fn an_issue_that_leaves_the_jql_is_closed_when_resolved() {
    let rules = crate::support::rule("ops", "incident", "project = OPS AND priority = High");
    let w = World::start(reconciling(rules, FakeJiraConfig::cloud())).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "x", ago(60)).with_priority(Some("High")));
    w.once().await.expect("run 1");
    w.jira.update("OPS-1", ago(20), |i| {
        i.priority = Some("Low".into());
    });
    next_interval().await;
    let r2 = w.once().await.expect("run 2");
    assert_eq!(r2.reconcile.as_ref().map(|r| r.left), Some(1), "{r2:?}");
    assert!(
        labels_of(&w, "OPS-1").contains(&"jira::out-of-scope".to_owned()),
        "{:?}",
        labels_of(&w, "OPS-1")
    );
    let resolved = ago(15);
    w.jira.resolve("OPS-1", resolved);
    next_interval().await;
    w.once().await.expect("run 3");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].closed_at, Some(resolved));
}

/// Row 7: an issue deleted in Jira is closed (`on_delete = "close"`, the default) at the time
/// the deletion was seen, with the label `jira::deleted`, by `--once` when the reconciliation
/// is due; `status` lists it.
#[tokio::test]
async fn a_deleted_issue_is_closed_and_listed() {
    let w = World::start(reconciling(
        crate::support::rule("ops", "incident", "project = OPS"),
        FakeJiraConfig::cloud(),
    ))
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "x", ago(60)));
    w.jira.insert(FakeIssue::new("OPS-2", "y", ago(50)));
    w.once().await.expect("run 1");
    assert!(w.jira.delete("OPS-1"));
    next_interval().await;
    let before = chrono::Utc::now() - Duration::seconds(1);
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let one = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-1"))
        .expect("OPS-1's object");
    assert_eq!(one.state, jira_gitlab_sync::domain::RemoteState::Closed);
    assert!(
        one.closed_at.is_some_and(|t| t >= before),
        "{:?}",
        one.closed_at
    );
    assert!(
        one.labels.contains(&"jira::deleted".to_owned()),
        "{:?}",
        one.labels
    );
    let two = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains("OPS-2"))
        .expect("OPS-2's object");
    assert_eq!(two.state, jira_gitlab_sync::domain::RemoteState::Opened);
    let status = w.binary(&["status"]).await;
    let text = output_text(&status);
    assert!(text.contains("OPS-1 deleted in Jira"), "{text}");
}

/// Row 8: an issue moved to another Jira project (new key, same id) that the rule no longer
/// matches keeps its one GitLab object, which is followed by id and closed when the moved issue
/// is resolved.
#[tokio::test]
async fn a_moved_issue_keeps_one_object_and_is_closed_when_resolved() {
    let w = World::start(reconciling(
        crate::support::rule("ops", "incident", "project = OPS"),
        FakeJiraConfig::cloud(),
    ))
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "x", ago(60)));
    w.once().await.expect("run 1");
    assert!(w.jira.move_issue("OPS-1", "NEW-7", ago(20)));
    next_interval().await;
    w.once().await.expect("run 2");
    let resolved = ago(15);
    w.jira.resolve("NEW-7", resolved);
    next_interval().await;
    w.once().await.expect("run 3");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 1, "one object");
    assert_eq!(issues[0].closed_at, Some(resolved));
    assert!(issues[0].title.contains("NEW-7"), "{}", issues[0].title);
}

/// The budget: 250 open mappings cost 3 bulk fetches (at most 100 ids each) and the one search;
/// outside the interval, nothing but the search.
#[tokio::test]
async fn reconciliation_costs_one_request_per_100_open_mappings() {
    let w = World::start(reconciling(
        crate::support::rule("ops", "incident", "project = OPS"),
        FakeJiraConfig::cloud(),
    ))
    .await;
    seed(&w, 250, |i| ago(300) + Duration::seconds(i));
    w.once().await.expect("run 1");
    next_interval().await;
    w.jira.clear_requests();
    w.gitlab.clear_requests();
    let report = w.once().await.expect("run 2");
    let bulk: Vec<usize> = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path == "/rest/api/3/issue/bulkfetch")
        .map(|r| {
            r.body
                .as_ref()
                .and_then(|b| b["issueIdsOrKeys"].as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(bulk, vec![100, 100, 50], "{report:?}");
    assert_eq!(w.jira_searches(), 1);
    assert!(w.gitlab.requests().is_empty(), "{:?}", w.gitlab.requests());
    assert_eq!(report.reconcile.map(|r| r.jira_requests), Some(3));
}

/// Data Center: the open mappings are re-read with JQL `id in (…)` and `validateQuery=warn`, so
/// a deleted id does not fail the batch; with `on_delete = "delete"` the GitLab object is
/// deleted, and with `on_leave = "keep"` an issue that left the JQL gets no label but is closed
/// when resolved.
#[tokio::test]
async fn datacenter_reconciles_by_jql_ids_with_on_leave_keep_and_on_delete_delete() {
    let rules = format!(
        "{}on_leave = \"keep\"\non_delete = \"delete\"\n",
        crate::support::rule("ops", "incident", "project = OPS AND priority = High")
    );
    let w = World::start(reconciling(rules, FakeJiraConfig::data_center())).await;
    for key in ["OPS-1", "OPS-2", "OPS-3"] {
        w.jira
            .insert(FakeIssue::new(key, "x", ago(60)).with_priority(Some("High")));
    }
    w.once().await.expect("run 1");
    assert!(w.jira.delete("OPS-1"));
    w.jira.update("OPS-2", ago(20), |i| {
        i.priority = Some("Low".into());
    });
    let resolved = ago(18);
    w.jira.resolve("OPS-2", resolved);
    next_interval().await;
    w.jira.clear_requests();
    let report = w.once().await.expect("run 2");
    let by_id: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| {
            r.body
                .as_ref()
                .and_then(|b| b["jql"].as_str())
                .is_some_and(|q| q.starts_with("id in ("))
        })
        .collect();
    assert_eq!(by_id.len(), 1, "{report:?}");
    assert_eq!(
        by_id[0].body.as_ref().map(|b| b["validateQuery"].clone()),
        Some(serde_json::json!("warn"))
    );
    let issues = w.gitlab_issues();
    assert!(
        !issues.iter().any(|i| i.title.contains("OPS-1")),
        "deleted: {issues:?}"
    );
    let two = issues
        .iter()
        .find(|i| i.title.contains("OPS-2"))
        .expect("OPS-2");
    assert_eq!(two.closed_at, Some(resolved));
    assert!(!two.labels.contains(&"jira::out-of-scope".to_owned()));
    let three = issues
        .iter()
        .find(|i| i.title.contains("OPS-3"))
        .expect("OPS-3");
    assert_eq!(three.state, jira_gitlab_sync::domain::RemoteState::Opened);
}
