use chrono::Duration;
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig};

use crate::support::{Setup, World, ago};

/// 250 issues spread over time arrive once each through Cloud pages of at most 100.
#[tokio::test]
async fn cloud_250_issues_across_pages() {
    let w = World::start(Setup::default()).await;
    let base = ago(600);
    for n in 1..=250 {
        w.jira.insert(FakeIssue::new(
            &format!("OPS-{n}"),
            "x",
            base + Duration::seconds(n * 2),
        ));
    }
    let report = w.once().await.expect("cycle");
    assert_eq!(report.counts.created, 250, "{report:?}");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 250, "every issue once, none twice");
    let pages: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/search/jql"))
        .collect();
    assert!(
        pages.len() >= 3,
        "250 issues need at least three pages of 100: {}",
        pages.len()
    );
}

/// 250 issues changed in the same minute (JQL's precision) are walked with page tokens.
#[tokio::test]
async fn cloud_same_minute_uses_page_tokens() {
    let w = World::start(Setup::default()).await;
    let minute = ago(30);
    let minute = minute - Duration::seconds(chrono::Timelike::second(&minute) as i64);
    for n in 1..=250 {
        w.jira.insert(FakeIssue::new(
            &format!("OPS-{n}"),
            "x",
            minute + Duration::milliseconds(n * 100),
        ));
    }
    let report = w.once().await.expect("cycle");
    assert_eq!(report.counts.created, 250, "{report:?}");
    let tokens = w
        .jira
        .requests()
        .iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.get("nextPageToken").is_some())
        })
        .count();
    assert!(
        tokens >= 2,
        "pages within one minute follow nextPageToken ({tokens})"
    );
}

/// Data Center caps pages at 50 whatever we ask; every issue still arrives once.
#[tokio::test]
async fn datacenter_page_cap_50() {
    let w = World::start(Setup {
        jira: FakeJiraConfig::data_center(),
        ..Setup::default()
    })
    .await;
    let base = ago(500);
    for n in 1..=120 {
        w.jira.insert(
            FakeIssue::new(&format!("OPS-{n}"), "x", base + Duration::seconds(n * 3))
                .with_description("h1. Title\n\n*bold* text"),
        );
    }
    let report = w.once().await.expect("cycle");
    assert_eq!(report.counts.created, 120, "{report:?}");
    assert_eq!(w.gitlab_issues().len(), 120);
    let searches: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.path == "/rest/api/2/search")
        .collect();
    assert!(
        searches.len() >= 3,
        "120 issues at 50 a page need three pages or more"
    );
    let d = w.gitlab_issues()[0].description.clone().unwrap();
    assert!(
        d.contains("**bold**"),
        "wiki markup converted to Markdown: {d}"
    );
}
