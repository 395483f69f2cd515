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
    w.jira.reopen("OPS-1", ago(30));
    let again = ago(20);
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
