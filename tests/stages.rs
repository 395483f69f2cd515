use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::engine::backfill::{BackfillRequest, NoProgress};
use jira_gitlab_sync::engine::median;
use jira_gitlab_sync::sandbox::gitlab::FakeGitLabConfig;
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig};
use tokio_util::sync::CancellationToken;

use crate::support::{PROJECT, Setup, World, rule};

/// The stage keys every test here uses, after a `[[rule]]` table.
const STAGES: &str = "closed_from = \"status:Mitigated\"\n\
    [rule.stage_labels]\n\
    \"To Do\" = \"workflow::todo\"\n\
    \"In Progress\" = \"workflow::in progress\"\n\
    \"Mitigated\" = \"workflow::mitigated\"\n";

fn staged(jira: FakeJiraConfig) -> Setup {
    Setup {
        jira,
        rules: format!("{}{STAGES}", rule("ops", "incident", "project = OPS")),
        ..Setup::default()
    }
}

/// The stage label events of the issue made for `key`: (label, added, time), oldest first.
fn stage_events(w: &World, key: &str) -> Vec<(String, bool, DateTime<Utc>)> {
    let issue = w
        .gitlab_issues()
        .into_iter()
        .find(|i| i.title.starts_with(&format!("[{key}]")))
        .unwrap_or_else(|| panic!("{key} is in GitLab"));
    w.gitlab
        .label_events(PROJECT, issue.iid)
        .into_iter()
        .filter(|e| e.label.starts_with("workflow::"))
        .map(|e| (e.label, e.added, e.created_at))
        .collect()
}

fn ev(label: &str, added: bool, at: DateTime<Utc>) -> (String, bool, DateTime<Utc>) {
    (format!("workflow::{label}"), added, at)
}

/// `GET /projects/:id/dora/metrics` (time to restore, daily) from the sandbox GitLab: each day
/// with a figure → seconds.
async fn dora_daily_restore(w: &World, start: &str, end: &str) -> BTreeMap<NaiveDate, f64> {
    let url = w
        .gitlab
        .base_url()
        .join(&format!(
            "api/v4/projects/{PROJECT}/dora/metrics?metric=time_to_restore_service\
             &interval=daily&start_date={start}&end_date={end}"
        ))
        .expect("a URL");
    let rows: Vec<serde_json::Value> = reqwest::Client::new()
        .get(url)
        .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
        .send()
        .await
        .expect("the DORA API answers")
        .json()
        .await
        .expect("a JSON list");
    rows.iter()
        .filter_map(|r| {
            let day = NaiveDate::parse_from_str(r["date"].as_str()?, "%Y-%m-%d").ok()?;
            Some((day, r["value"].as_f64()?))
        })
        .collect()
}

/// One incident's history: created in To Do, then In Progress, Mitigated and Done.
struct History {
    created: DateTime<Utc>,
    progress: DateTime<Utc>,
    mitigated: DateTime<Utc>,
    done: DateTime<Utc>,
}

/// Inserts `OPS-<n>` with `h`'s transitions (each at a time with milliseconds).
fn insert(w: &World, n: usize, h: &History) {
    let mut issue = FakeIssue::new(&format!("OPS-{n}"), "outage", h.created);
    issue.status = "To Do".into();
    let issue = issue
        .transitioned(h.progress, "In Progress", "indeterminate")
        .transitioned(h.mitigated, "Mitigated", "indeterminate")
        .transitioned(h.done, "Done", "done");
    w.jira.insert(issue);
}

/// 200 incidents (To Do → In Progress → Mitigated → Done at varied times) backfilled with
/// `closed_from = "status:Mitigated"`: each stage is a label event at its transition's exact
/// time, each incident closed when it entered Mitigated, so GitLab's median time to restore (of
/// the incidents, and each day's DORA figure) is the one Jira's changelog gives, to the second;
/// backfill again and a live cycle write nothing.
#[tokio::test]
async fn backfill_replays_stages_and_restores_from_mitigated() {
    let w = World::start(staged(FakeJiraConfig::cloud())).await;
    let start = DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z")
        .expect("a time")
        .with_timezone(&Utc);
    let ms = |n: i64| Duration::milliseconds(n);
    let mut histories = HashMap::new();
    for i in 1..=203usize {
        let k = i as i64;
        // The last three are recent: the live cycle's window reads them again.
        let created = if i > 200 {
            crate::support::ago(40 - k % 10)
        } else {
            start + Duration::minutes(k * 97) + ms(k * 13)
        };
        let h = History {
            created,
            progress: created + ms(60_000 + (k * 7_919) % 600_000),
            mitigated: created + ms(700_000 + (k * 104_729) % 5_000_000),
            done: created + ms(6_000_000 + (k * 1_299_709) % 9_000_000),
        };
        let h = if i > 200 {
            History {
                progress: created + ms(1_000 + k),
                mitigated: created + ms(2_000 + k),
                done: created + ms(3_000 + k),
                created,
            }
        } else {
            h
        };
        insert(&w, i, &h);
        histories.insert(format!("OPS-{i}"), h);
    }
    let engine = w.engine();
    let cfg = w.config();
    let request = BackfillRequest {
        since: start - Duration::days(1),
        until: None,
        concurrency: 8,
        sample: 5,
    };
    let report = engine
        .backfill(
            &cfg.rules[0],
            &request,
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .expect("backfill");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    assert_eq!(report.counts.created, 203);
    let bulk = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/changelog/bulkfetch"))
        .count();
    assert_eq!(
        bulk, 3,
        "the changelogs come in bulk, one request per search page of 100"
    );

    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 203, "one incident per Jira issue");
    let mut gitlab_restore = Vec::new();
    let mut jira_restore = Vec::new();
    for (key, h) in &histories {
        assert_eq!(
            stage_events(&w, key),
            vec![
                ev("todo", true, h.created),
                ev("todo", false, h.progress),
                ev("in progress", true, h.progress),
                ev("in progress", false, h.mitigated),
                ev("mitigated", true, h.mitigated),
                ev("mitigated", false, h.done),
            ],
            "{key}: each stage at its transition's exact time"
        );
        let issue = issues
            .iter()
            .find(|i| i.title.starts_with(&format!("[{key}]")))
            .expect("replicated");
        assert_eq!(issue.state, RemoteState::Closed, "{key}");
        assert_eq!(
            issue.created_at, h.created,
            "{key}: created at Jira's created"
        );
        assert_eq!(
            issue.closed_at,
            Some(h.mitigated),
            "{key}: closed when mitigated"
        );
        if let Some(closed) = issue.closed_at {
            gitlab_restore.push(closed - issue.created_at);
        }
        // From Jira's own changelog: the entry into Mitigated.
        let jira_issue = w.jira.get(key).expect("in Jira");
        let entered = jira_issue
            .history
            .iter()
            .filter(|e| {
                e.items
                    .iter()
                    .any(|i| i.field == "status" && i.to_string.as_deref() == Some("Mitigated"))
            })
            .map(|e| e.at)
            .max()
            .expect("it was mitigated");
        jira_restore.push(entered - jira_issue.created);
    }
    let gitlab_median = median(&mut gitlab_restore).expect("a median");
    let jira_median = median(&mut jira_restore).expect("a median");
    assert_eq!(
        gitlab_median.num_seconds(),
        jira_median.num_seconds(),
        "GitLab's median time to restore is Jira's, to the second"
    );
    assert_eq!(report.median_restore_secs, Some(jira_median.num_seconds()));
    // GitLab's own DORA figures (the sandbox's per-day rows, as GitLab Ultimate keeps them):
    // each day's time to restore is the median over the incidents closed that day, and it is
    // the one Jira's changelog gives for the incidents mitigated that day, to the second.
    let mut by_day: BTreeMap<NaiveDate, Vec<f64>> = BTreeMap::new();
    for h in histories
        .values()
        .filter(|h| h.created < start + Duration::days(60))
    {
        by_day
            .entry(h.mitigated.date_naive())
            .or_default()
            .push((h.mitigated - h.created).num_milliseconds() as f64 / 1000.0);
    }
    let dora = dora_daily_restore(&w, "2025-03-01", "2025-03-31").await;
    assert_eq!(
        dora.keys().collect::<Vec<_>>(),
        by_day.keys().collect::<Vec<_>>(),
        "a DORA time to restore for each day incidents were mitigated"
    );
    for (day, mut secs) in by_day {
        secs.sort_by(f64::total_cmp);
        let mid = secs.len() / 2;
        let expected = if secs.len() % 2 == 1 {
            secs[mid]
        } else {
            (secs[mid - 1] + secs[mid]) / 2.0
        };
        assert!(
            (dora[&day] - expected).abs() < 1.0,
            "{day}: DORA {} s, Jira's changelog {expected} s",
            dora[&day]
        );
    }

    // Again, and a live cycle (which reads the three recent ones again): nothing twice.
    let events_before: usize = issues
        .iter()
        .map(|i| w.gitlab.label_events(PROJECT, i.iid).len())
        .sum();
    w.gitlab.clear_requests();
    w.jira.clear_requests();
    let again = engine
        .backfill(
            &cfg.rules[0],
            &request,
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .expect("backfill again");
    assert_eq!(again.counts.created + again.counts.closed, 0, "{again:?}");
    let live = crate::support::run(&engine, &cfg)
        .await
        .expect("a live cycle");
    assert!(
        live.counts.seen >= 3,
        "the live cycle read the recent ones: {live:?}"
    );
    let writes: Vec<_> = w
        .gitlab
        .requests()
        .into_iter()
        .filter(|r| r.method != axum::http::Method::GET)
        .collect();
    assert!(writes.is_empty(), "no GitLab write: {writes:?}");
    let events_after: usize = issues
        .iter()
        .map(|i| w.gitlab.label_events(PROJECT, i.iid).len())
        .sum();
    assert_eq!(events_after, events_before, "no label event twice");
    assert!(
        !w.jira
            .requests()
            .iter()
            .any(|r| r.path.contains("changelog")),
        "an applied change's changelog is not read again"
    );
}

/// Live cycles on Data Center: each transition is a label event at its time; a transition to
/// a status that is not mapped removes the stage label; entering Mitigated closes the incident
/// then, going back to In Progress reopens it, and the latest entry into Mitigated counts.
#[tokio::test]
async fn live_transitions_move_labels_and_the_restore_time() {
    let w = World::start(staged(FakeJiraConfig::data_center())).await;
    let created = crate::support::ago(30);
    let mut issue = FakeIssue::new("OPS-1", "outage", created);
    issue.status = "To Do".into();
    w.jira.insert(issue);
    let cycle = || async {
        let r = w.once().await.expect("a cycle");
        assert_eq!(r.counts.failed, 0, "{r:?}");
        r
    };
    cycle().await;
    assert_eq!(stage_events(&w, "OPS-1"), vec![ev("todo", true, created)]);

    let step = |status: &'static str, category: &'static str| {
        let at = crate::support::ago(0);
        w.jira
            .transition("OPS-1", at, status, category)
            .expect("the issue exists");
        at
    };
    let progress = step("In Progress", "indeterminate");
    cycle().await;
    let blocked = step("Blocked", "indeterminate");
    cycle().await;
    let mitigated = step("Mitigated", "indeterminate");
    cycle().await;
    let gitlab = &w.gitlab_issues()[0];
    assert_eq!(gitlab.state, RemoteState::Closed, "closed when mitigated");
    assert_eq!(gitlab.closed_at, Some(mitigated));
    let back = step("In Progress", "indeterminate");
    let r = cycle().await;
    assert_eq!(
        r.counts.reopened, 1,
        "back to an open status reopens: {r:?}"
    );
    assert_eq!(w.gitlab_issues()[0].state, RemoteState::Opened);
    let again = step("Mitigated", "indeterminate");
    cycle().await;
    let gitlab = &w.gitlab_issues()[0];
    assert_eq!(
        gitlab.closed_at,
        Some(again),
        "the latest entry into Mitigated counts"
    );
    assert_eq!(
        stage_events(&w, "OPS-1"),
        vec![
            ev("todo", true, created),
            ev("todo", false, progress),
            ev("in progress", true, progress),
            ev("in progress", false, blocked),
            ev("mitigated", true, mitigated),
            ev("mitigated", false, back),
            ev("in progress", true, back),
            ev("in progress", false, again),
            ev("mitigated", true, again),
        ],
        "an unmapped status (Blocked) removes the stage label at its time"
    );
    let changelog_reads = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.contains("/issue/") && r.query.contains("expand=changelog"))
        .count();
    assert_eq!(
        changelog_reads, 6,
        "Data Center: one changelog read per change"
    );
    // A cycle with nothing new writes nothing and reads no changelog.
    w.gitlab.clear_requests();
    w.jira.clear_requests();
    cycle().await;
    assert!(
        w.gitlab
            .requests()
            .iter()
            .all(|r| r.method == axum::http::Method::GET)
    );
    assert!(
        !w.jira
            .requests()
            .iter()
            .any(|r| r.query.contains("changelog"))
    );
}

/// `created_from` and `closed_from` from date fields: a date-time keeps its offset, a date is
/// midnight in the Jira account's zone; an empty field falls back to Jira's own time.
#[tokio::test]
async fn restore_times_from_fields() {
    let mut jira = FakeJiraConfig::cloud();
    jira.user_time_zone = chrono_tz::Europe::Berlin;
    let w = World::start(Setup {
        jira,
        rules: format!(
            "{}created_from = \"field:customfield_10042\"\nclosed_from = \"field:customfield_10043\"\n",
            rule("ops", "incident", "project = OPS")
        ),
        ..Setup::default()
    })
    .await;
    let created = crate::support::ago(120);
    let resolved = crate::support::ago(5);
    w.jira.insert(
        FakeIssue::new("OPS-1", "fields", created)
            .with_field(
                "customfield_10042",
                serde_json::json!(format!(
                    "{}",
                    (created - Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%S%.3f+0000")
                )),
            )
            .with_field("customfield_10043", serde_json::json!("2030-01-02"))
            .resolved_at(resolved),
    );
    w.jira
        .insert(FakeIssue::new("OPS-2", "empty", created).resolved_at(resolved));
    let r = w.once().await.expect("a cycle");
    assert_eq!(r.counts.failed, 0, "{r:?}");
    let issues = w.gitlab_issues();
    let one = issues
        .iter()
        .find(|i| i.title.starts_with("[OPS-1]"))
        .expect("OPS-1");
    assert_eq!(
        one.created_at,
        created - Duration::minutes(30),
        "impact start"
    );
    assert_eq!(
        one.closed_at.map(|t| t.to_rfc3339()),
        Some("2030-01-01T23:00:00+00:00".to_owned()),
        "a date is midnight in the account's zone (Berlin)"
    );
    let two = issues
        .iter()
        .find(|i| i.title.starts_with("[OPS-2]"))
        .expect("OPS-2");
    assert_eq!(two.created_at, created, "empty: Jira's created");
    assert_eq!(two.closed_at, Some(resolved), "empty: Jira's resolution");
}

/// Cloud's bulk changelog answering a few entries a page: the client follows `nextPageToken`
/// until the last page, and one issue's entries split across pages are joined in order.
#[tokio::test]
async fn bulk_changelog_pages_are_followed() {
    let mut jira = FakeJiraConfig::cloud();
    jira.bulk_changelog_page_cap = 2;
    let w = World::start(staged(jira)).await;
    let mut expected = HashMap::new();
    for i in 1..=3usize {
        let created = crate::support::ago(50 - i as i64 * 10);
        let ms = |n: i64| Duration::milliseconds(n);
        let h = History {
            created,
            progress: created + ms(1_001),
            mitigated: created + ms(2_002),
            done: created + ms(3_003),
        };
        insert(&w, i, &h);
        expected.insert(format!("OPS-{i}"), h);
    }
    let r = w.once().await.expect("a cycle");
    assert_eq!((r.counts.created, r.counts.failed), (3, 0), "{r:?}");
    let pages: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/changelog/bulkfetch"))
        .collect();
    assert_eq!(pages.len(), 5, "9 entries, 2 a page");
    assert!(
        pages[1..].iter().all(|p| p
            .body
            .as_ref()
            .is_some_and(|b| b["nextPageToken"].is_string())),
        "each later page asks with the token the last one gave"
    );
    for (key, h) in &expected {
        assert_eq!(
            stage_events(&w, key),
            vec![
                ev("todo", true, h.created),
                ev("todo", false, h.progress),
                ev("in progress", true, h.progress),
                ev("in progress", false, h.mitigated),
                ev("mitigated", true, h.mitigated),
                ev("mitigated", false, h.done),
            ],
            "{key}"
        );
    }
}
