use std::time::{Duration, Instant};

use chrono::Utc;
use jira_gitlab_sync::engine::backfill::{BackfillRequest, NoProgress};
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLabConfig, LostAnswers};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use jira_gitlab_sync::sandbox::{RecordedRequest, jira::FakeJira};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{PROJECT, Setup, World, ago, output_text, rule};

/// `[jira] link_back = true`, as the tests below set it.
const LINK_BACK: &str = "link_back = true\n";

fn linked_world(setup: Setup) -> Setup {
    Setup {
        jira_lines: LINK_BACK.to_owned(),
        ..setup
    }
}

/// The one remote link on `key`, failing the test if there is not exactly one.
fn only_link(jira: &FakeJira, key: &str) -> Value {
    let links = jira.remote_links(key);
    assert_eq!(
        links.len(),
        1,
        "{key} has exactly one remote link: {links:#?}"
    );
    links.into_iter().next().expect("one link")
}

/// The remote-link writes Jira received.
fn link_posts(jira: &FakeJira) -> Vec<RecordedRequest> {
    jira.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/remotelink"))
        .collect()
}

/// What GitLab's object for `key` is: its iid.
fn iid_of(w: &World, key: &str) -> u64 {
    w.gitlab_issues()
        .iter()
        .find(|i| i.title.starts_with(&format!("[{key}]")))
        .unwrap_or_else(|| panic!("{key} is in GitLab"))
        .iid
}

/// After a create, the Jira issue links to its GitLab incident: global id
/// `gitlab:<host>:<project id>:<iid>`, title `<project path>#<iid> <title>`, the whole object;
/// the link is struck through when Jira resolves the issue and not when it reopens it, and an
/// idle cycle sends no link again.
#[tokio::test]
async fn link_follows_create_resolve_and_reopen() {
    let w = World::start(linked_world(Setup::default())).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Database down", ago(30)));

    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 1, "{report:?}");
    assert_eq!(report.links.sent, 1, "{report:?}");
    let iid = iid_of(&w, "OPS-1");
    let link = only_link(&w.jira, "OPS-1");
    assert_eq!(
        link["globalId"],
        format!("gitlab:127.0.0.1:{PROJECT}:{iid}"),
        "{link:#}"
    );
    assert_eq!(
        link["object"]["title"],
        format!("acme/ops#{iid} [OPS-1] Database down")
    );
    assert_eq!(
        link["object"]["url"],
        format!("{}acme/ops/-/issues/{iid}", w.gitlab.base_url())
    );
    assert_eq!(link["object"]["status"]["resolved"], false);
    assert_eq!(link["application"]["name"], "GitLab");
    assert!(
        link["relationship"].is_string(),
        "the relationship is sent every time, or Jira would null it: {link:#}"
    );

    // Idle: nothing changed, nothing is sent again.
    w.jira.clear_requests();
    let idle = w.once().await.expect("the idle cycle runs");
    assert_eq!(idle.links.sent, 0, "{idle:?}");
    assert!(
        link_posts(&w.jira).is_empty(),
        "an unchanged link is not sent again"
    );

    w.jira.resolve("OPS-1", ago(10));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.closed, 1, "{report:?}");
    let link = only_link(&w.jira, "OPS-1");
    assert_eq!(
        link["object"]["status"]["resolved"], true,
        "resolved in Jira: struck through"
    );
    assert_eq!(
        link["application"]["name"], "GitLab",
        "an update sends the whole link, so nothing is nulled"
    );

    w.jira.reopen("OPS-1", ago(5));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.reopened, 1, "{report:?}");
    let link = only_link(&w.jira, "OPS-1");
    assert_eq!(link["object"]["status"]["resolved"], false, "reopened");
    assert_eq!(
        link["globalId"],
        format!("gitlab:127.0.0.1:{PROJECT}:{iid}"),
        "still the same link"
    );
}

/// Backfill links what it creates, with the resolution already in the link; alerts have no
/// object to link and get none.
#[tokio::test]
async fn backfill_links_issues_and_not_alerts() {
    let w = World::start(linked_world(Setup {
        rules: format!(
            "{}{}",
            rule("ops", "issue", "project = OPS"),
            rule("alerts", "alert", "project = ALR")
        ),
        ..Setup::default()
    }))
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "old outage", ago(600)).resolved_at(ago(500)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "still open", ago(400)));
    w.jira.insert(FakeIssue::new("ALR-1", "an alert", ago(300)));

    let engine = w.engine();
    let cfg = w.config();
    let request = BackfillRequest {
        since: Utc::now() - chrono::Duration::days(2),
        until: None,
        concurrency: 4,
        sample: 5,
    };
    for rule in &cfg.rules {
        let report = engine
            .backfill(rule, &request, &NoProgress, &CancellationToken::new())
            .await
            .expect("backfill");
        assert_eq!(report.counts.failed, 0, "{report:?}");
    }
    assert_eq!(
        only_link(&w.jira, "OPS-1")["object"]["status"]["resolved"],
        true,
        "a resolved issue's link is struck through from the start"
    );
    assert_eq!(
        only_link(&w.jira, "OPS-2")["object"]["status"]["resolved"],
        false
    );
    assert!(
        w.jira.remote_links("ALR-1").is_empty(),
        "an alert has no object to link"
    );
    assert_eq!(link_posts(&w.jira).len(), 2, "one write per link");
}

/// With `link_back` off (the default), a sync that creates, closes and reopens sends no write
/// to Jira at all: every request is a read (GET, or a POST to a search endpoint).
#[tokio::test]
async fn link_back_off_writes_nothing_to_jira() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "one", ago(60)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "two", ago(50)).resolved_at(ago(40)));
    w.once().await.expect("the cycle runs");
    w.jira.resolve("OPS-1", ago(20));
    w.jira.reopen("OPS-2", ago(10));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(w.gitlab_issues().len(), 2);

    let reads = [
        "/search/jql",
        "/search",
        "/search/approximate-count",
        "/issue/bulkfetch",
    ];
    let writes: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !reads.iter().any(|p| r.path.ends_with(p)))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "no write reached Jira: {writes:?}");
    assert!(w.jira.remote_links("OPS-1").is_empty());
}

/// A link Jira refuses (the account lacks "Link issues") neither fails the GitLab write nor
/// holds the cursor: the incident is created once, the run is ok, the next cycle writes nothing
/// to GitLab, and the link is retried after its backoff, then made.
#[tokio::test]
async fn a_refused_link_blocks_nothing_and_is_retried() {
    let w = World::start(linked_world(Setup::default())).await;
    w.jira.deny_permission("LINK_ISSUES");
    w.jira.insert(FakeIssue::new("OPS-1", "down", ago(30)));

    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 1, "{report:?}");
    assert_eq!(
        report.counts.failed, 0,
        "the issue itself did not fail: {report:?}"
    );
    assert_eq!(report.links.failed, 1, "{report:?}");
    assert_eq!(report.outcome.as_str(), "ok");
    assert!(w.jira.remote_links("OPS-1").is_empty());

    // The next cycle: no GitLab write again, and the link waits for its backoff.
    w.gitlab.clear_requests();
    w.jira.clear_requests();
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 0, "{report:?}");
    let gitlab_writes = w
        .gitlab
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(gitlab_writes, 0, "the GitLab side is not repeated");
    assert!(
        link_posts(&w.jira).is_empty(),
        "the link waits for its backoff"
    );

    // `status --json` counts it as failing.
    let out = w.binary(&["status", "--json"]).await;
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json ({e}): {}", output_text(&out)));
    assert_eq!(
        status["rules"][0]["remote_links"],
        serde_json::json!({ "linked": 0, "pending": 1, "failing": 1 }),
        "{status:#}"
    );

    // The backoff is over (set in the store, as a minute passing would) and the permission is
    // back: the link is made.
    w.jira.grant_all_permissions();
    let conn = rusqlite::Connection::open(w.store_path()).expect("the store opens");
    let failing: (i64, String) = conn
        .query_row("SELECT attempts, last_error FROM remote_links", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the link is recorded");
    assert_eq!(failing.0, 1, "one failed attempt");
    assert!(
        failing.1.contains("Link issues"),
        "the error names the permission: {}",
        failing.1
    );
    conn.execute(
        "UPDATE remote_links SET next_attempt_at = '2000-01-01T00:00:00.000Z'",
        [],
    )
    .expect("the backoff is cut short");
    drop(conn);
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.links.sent, 1, "{report:?}");
    only_link(&w.jira, "OPS-1");
    let out = w.binary(&["status", "--json"]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(
        status["rules"][0]["remote_links"],
        serde_json::json!({ "linked": 1, "pending": 0, "failing": 0 })
    );
}

/// `check` with `link_back` on reports a missing "Link issues" permission, naming it and the
/// project, and exits 1 (it would run, but its links would fail).
#[tokio::test]
async fn check_names_a_missing_permission() {
    let w = World::start(linked_world(Setup::default())).await;
    w.jira.insert(FakeIssue::new("OPS-1", "down", ago(30)));

    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("link_back OPS") && l.starts_with("ok")),
        "both permissions are there: {text}"
    );

    w.jira.deny_permission("LINK_ISSUES");
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("\"Link issues\""))
        .unwrap_or_else(|| panic!("a line names the permission: {text}"));
    assert!(line.contains("OPS"), "and the project: {line}");
    assert!(
        !line.contains("\"Browse projects\""),
        "only the missing one: {line}"
    );
    let asked = w
        .jira
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/mypermissions"))
        .expect("check asked mypermissions");
    assert_eq!(asked.query_param("projectKey").as_deref(), Some("OPS"));
    assert_eq!(
        asked.query_param("permissions").as_deref(),
        Some("BROWSE_PROJECTS,LINK_ISSUES")
    );
}

/// Deterministic kill points, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Requests that change something: GitLab's writes and Jira's remote links.
fn writes(w: &World) -> usize {
    let gitlab = w
        .gitlab
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    gitlab + link_posts(&w.jira).len()
}

/// The real binary (`--once`, and `backfill` every other time) killed with SIGKILL at random
/// points by count of writes (GitLab's and Jira's links), while GitLab loses 20 % of its
/// answers: once a run ends clean, each replicated issue has exactly one remote link, pointing
/// at its one GitLab object, struck through exactly when Jira has it resolved.
#[tokio::test]
async fn kills_leave_exactly_one_link_per_issue() {
    let w = World::start(linked_world(Setup {
        gitlab: FakeGitLabConfig {
            lost_answers: Some(LostAnswers {
                percent: 20,
                seed: 11,
            }),
            ..FakeGitLabConfig::default()
        },
        ..Setup::default()
    }))
    .await;
    for n in 1..=40 {
        let mut issue = FakeIssue::new(&format!("OPS-{n}"), &format!("incident {n}"), ago(600 - n));
        if n % 2 == 0 {
            issue = issue.resolved_at(ago(300 - n));
        }
        w.jira.insert(issue);
    }
    let since = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let mut rng = Lcg(2026);
    let mut kills = 0;
    for attempt in 0..8 {
        let at = writes(&w) + 1 + rng.below(30) as usize;
        let args: &[&str] = if attempt % 2 == 1 {
            &["backfill", "--since", &since]
        } else {
            &["--once"]
        };
        let mut child = w.spawn(args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if writes(&w) >= at {
                child.start_kill().expect("SIGKILL is sent");
                let _ = child.wait().await;
                kills += 1;
                break;
            }
            if child.try_wait().expect("the child can be polled").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the child neither wrote nor ended"
            );
            // Polling on the write count, not waiting for time to pass.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Halfway, resolve and reopen some issues so links change while runs are killed.
        if attempt == 3 {
            w.jira.resolve("OPS-1", ago(2));
            w.jira.reopen("OPS-2", ago(2));
        }
    }
    assert!(kills > 0, "at least one run was killed");
    let mut finished = false;
    for _ in 0..10 {
        let out = w.binary(&["--once"]).await;
        if out.status.code() == Some(0) {
            finished = true;
            break;
        }
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    }
    assert!(finished, "ten runs after the kills replicate everything");

    let issues = w.gitlab.issues(PROJECT);
    assert_eq!(issues.len(), 40, "one object per issue");
    for issue in &issues {
        let key = issue
            .title
            .trim_start_matches('[')
            .split(']')
            .next()
            .expect("a title starts with its key")
            .to_owned();
        let link = only_link(&w.jira, &key);
        assert_eq!(
            link["globalId"],
            format!("gitlab:127.0.0.1:{PROJECT}:{}", issue.iid),
            "{key}: the link names its object"
        );
        let resolved = w
            .jira
            .get(&key)
            .expect("the issue is in Jira")
            .resolutiondate
            .is_some();
        assert_eq!(
            link["object"]["status"]["resolved"], resolved,
            "{key}: the link follows Jira's resolution"
        );
    }
}

/// On Data Center the link goes through `/rest/api/2/…/remotelink`, the same resource.
#[tokio::test]
async fn data_center_links_through_api_2() {
    let w = World::start(linked_world(Setup {
        jira: jira_gitlab_sync::sandbox::jira::FakeJiraConfig::data_center(),
        ..Setup::default()
    }))
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "down", ago(30)).resolved_at(ago(10)));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.links.sent, 1, "{report:?}");
    assert_eq!(
        only_link(&w.jira, "OPS-1")["object"]["status"]["resolved"],
        true
    );
    let posts = link_posts(&w.jira);
    assert!(
        posts.iter().all(|r| r.path.starts_with("/rest/api/2/")),
        "{posts:?}"
    );
}

/// A dry run with `link_back` on plans GitLab writes and sends no link, even one the store
/// holds as due.
#[tokio::test]
async fn dry_run_sends_no_link() {
    let w = World::start(linked_world(Setup::default())).await;
    w.jira.deny_permission("LINK_ISSUES");
    w.jira.insert(FakeIssue::new("OPS-1", "down", ago(30)));
    w.once().await.expect("the cycle runs");
    // The refused link is due again at once, as far as the store is concerned.
    let conn = rusqlite::Connection::open(w.store_path()).expect("the store opens");
    conn.execute("UPDATE remote_links SET next_attempt_at = NULL", [])
        .expect("made due");
    drop(conn);
    w.jira.grant_all_permissions();
    w.jira.insert(FakeIssue::new("OPS-2", "also down", ago(20)));
    w.jira.clear_requests();
    let out = w.binary(&["--once", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        link_posts(&w.jira).is_empty(),
        "a dry run writes nothing to Jira"
    );
    assert!(w.jira.remote_links("OPS-1").is_empty());
}
