use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jira_gitlab_sync::config::Config;
use jira_gitlab_sync::daemon::{Backoff, RunEvent, Service};
use jira_gitlab_sync::domain::{JiraKey, RemoteState, RunOutcome};
use jira_gitlab_sync::sandbox::gitlab::{
    FakeGitLabConfig, Fault as GitLabFault, FaultTarget as GitLabTarget, access,
};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use jira_gitlab_sync::store::Store;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::support::{
    Finished, GUARD, NotifySocket, Running, Setup, World, ago, edit_config, output_text, rule,
};

/// The real binary as a service (no `--once`), with human log lines.
fn daemon(w: &World, env: &[(&str, &Path)]) -> Running {
    w.launch(&["--log-format", "human"], env)
}

/// What the service logs once it has seen the shutdown request (after the token fired).
const SHUTDOWN_LOGGED: &str = "shutting down: finishing the actions in flight";

/// A `[[rule]]` that the service runs every second.
fn every_second(name: &str) -> String {
    format!(
        "{}cron = \"* * * * * *\"\n",
        rule(name, "incident", "project = OPS")
    )
}

/// Waits for the next run's end that satisfies `pred`; panics on a failed run.
async fn next_run(
    events: &mut broadcast::Receiver<RunEvent>,
    what: &str,
    pred: impl Fn(&jira_gitlab_sync::engine::RunReport) -> bool,
) -> jira_gitlab_sync::engine::RunReport {
    loop {
        let event = tokio::time::timeout(GUARD, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no run {what} within {GUARD:?}"))
            .expect("the service keeps reporting runs");
        match event {
            RunEvent::Finished(report) if pred(&report) => return *report,
            RunEvent::Finished(_) => {}
            RunEvent::Failed { rule, error } => panic!("rule {rule} failed a run: {error}"),
        }
    }
}

/// One row of the run log, as the store keeps it.
#[derive(Debug)]
struct RunRow {
    id: i64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
}

/// The whole run log of `store`, oldest first, read with a separate read-only connection.
fn run_log(store: &Path) -> Vec<RunRow> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the store opens read-only");
    let parse = |t: String| {
        DateTime::parse_from_rfc3339(&t)
            .expect("run times are RFC 3339")
            .with_timezone(&Utc)
    };
    let mut stmt = conn
        .prepare("SELECT id, started_at, finished_at, outcome FROM runs ORDER BY id")
        .expect("the runs table exists");
    stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
        ))
    })
    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
    .expect("the run log reads")
    .into_iter()
    .map(|(id, started, finished, outcome)| RunRow {
        id,
        started_at: parse(started),
        finished_at: finished.map(parse),
        outcome,
    })
    .collect()
}

/// The service replicates a new Jira issue on its cron schedule and closes it on resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_replicates_on_schedule_and_closes_on_resolution() {
    let w = World::start(Setup {
        rules: every_second("ops"),
        ..Setup::default()
    })
    .await;
    let cfg = w.config();
    let engine = Arc::new(w.engine());
    let service = Service::new(Arc::clone(&engine), cfg.rules.clone(), Backoff::default());
    let mut events = service.subscribe();
    let mut scheduler = service.start_cron().await.expect("the scheduler starts");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(service.run(cancel.clone(), Duration::from_secs(10)));

    let first = next_run(&mut events, "at start", |_| true).await;
    assert_eq!(
        first.counts.created, 0,
        "Jira is empty at start, so nothing is created: {first:?}"
    );

    let created = ago(0);
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", created));
    let report = next_run(&mut events, "creating OPS-1", |r| r.counts.created > 0).await;
    assert_eq!(
        report.counts.created, 1,
        "the scheduled run picks up exactly the new issue: {report:?}"
    );

    let resolved = ago(0);
    w.jira.resolve("OPS-1", resolved);
    let report = next_run(&mut events, "closing OPS-1", |r| r.counts.closed > 0).await;
    assert_eq!(
        report.counts.closed, 1,
        "the resolution closes it: {report:?}"
    );
    assert_eq!(report.counts.created, 0, "and creates nothing: {report:?}");

    cancel.cancel();
    let clean = tokio::time::timeout(GUARD, running)
        .await
        .expect("the service stops")
        .expect("the service task does not panic");
    assert!(clean, "an idle worker stops within the grace period");
    scheduler.shutdown().await;

    let issues = w.gitlab_issues();
    assert_eq!(
        issues.len(),
        1,
        "one GitLab object for one Jira issue, however many runs: {issues:#?}"
    );
    assert_eq!(issues[0].state, RemoteState::Closed, "closed on resolution");
    assert_eq!(
        issues[0].created_at, created,
        "GitLab keeps Jira's created time"
    );
    assert_eq!(
        issues[0].closed_at,
        Some(resolved),
        "GitLab's closed_at is Jira's resolution time"
    );
}

/// SIGTERM during a slow GitLab create lets that create finish and commit, stops before the
/// next action, and exits 0.
#[tokio::test]
async fn sigterm_finishes_the_action_in_flight_and_exits_0() {
    // One issue at a time, so that "after the create in flight" is defined.
    let w = World::start(Setup {
        sync: "backfill_concurrency = 1".into(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "second", ago(10)));
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );

    let mut daemon = daemon(&w, &[]);
    tokio::time::timeout(GUARD, arrived.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the first create never reached GitLab:\n{}",
                daemon.output()
            )
        });
    daemon.terminate();
    // Release only once the service has seen the signal, so the create is truly in flight
    // during shutdown.
    daemon.wait_for_output(SHUTDOWN_LOGGED).await;
    release.notify_one();
    let Finished { status, output, .. } = daemon.exit().await;

    assert_eq!(
        status.code(),
        Some(0),
        "a clean shutdown exits 0:\n{output}"
    );
    let issues = w.gitlab_issues();
    assert_eq!(
        issues.len(),
        1,
        "the held create completed and nothing after it started: {issues:#?}"
    );
    assert!(issues[0].title.contains("OPS-1"), "{issues:#?}");

    let store = Store::open_read_only(&w.store_path()).expect("the store is readable");
    let key = JiraKey::parse("OPS-1").expect("a valid key");
    let mapping = store
        .mapping("ops", &key)
        .await
        .expect("the store reads")
        .expect("the create in flight was committed before exit");
    assert_eq!(
        mapping.iid,
        Some(issues[0].iid),
        "the mapping names the issue GitLab created"
    );
    let status = store.rule_status().await.expect("the store reads");
    let last = status[0].last_run.as_ref().expect("the run is logged");
    assert_eq!(
        last.outcome,
        Some(RunOutcome::Cancelled),
        "the run was closed out as cancelled, not abandoned: {last:?}"
    );
    assert_eq!(last.counts.created, 1, "{last:?}");
    drop(store);

    let report = w.once().await.expect("the next cycle runs");
    assert_eq!(
        (report.counts.created, w.gitlab_issues().len()),
        (1, 2),
        "the next cycle creates only what the cancelled one did not reach: {report:?}"
    );
}

/// Ticks during a run queue at most one more run; runs of one rule never overlap.
#[tokio::test]
async fn overlapping_ticks_do_not_overlap_runs() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "slow", ago(10)));
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );
    let cfg = w.config();
    let service = Service::new(Arc::new(w.engine()), cfg.rules.clone(), Backoff::default());
    let ticker = service.ticker(0).expect("one rule, one ticker");
    let mut events = service.subscribe();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(service.run(cancel.clone(), Duration::from_secs(10)));

    assert!(ticker.tick(), "an idle rule accepts a tick");
    tokio::time::timeout(GUARD, arrived.notified())
        .await
        .expect("the first run reaches the GitLab create");
    let accepted: Vec<bool> = (0..5).map(|_| ticker.tick()).collect();
    assert_eq!(
        accepted,
        [true, false, false, false, false],
        "while a run is busy one tick queues and the rest are dropped"
    );
    // Past the first run's search: the queued run has something to do, so it is logged too (a
    // run that finds nothing to do leaves no row).
    w.jira.insert(FakeIssue::new("OPS-2", "next", ago(5)));
    release.notify_one();

    let one = next_run(&mut events, "1", |_| true).await;
    let two = next_run(&mut events, "2", |_| true).await;
    assert_eq!(one.counts.created, 1, "{one:?}");
    assert_eq!(
        (two.counts.created, w.gitlab_issues().len()),
        (1, 2),
        "the queued run sees the first run's work and creates only the new issue: {two:?}"
    );
    cancel.cancel();
    let clean = tokio::time::timeout(GUARD, running)
        .await
        .expect("the service stops")
        .expect("the service task does not panic");
    assert!(clean, "idle workers stop at once");
    assert!(
        matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ),
        "exactly two runs: nothing else was reported before the service stopped"
    );

    let log = run_log(&w.store_path());
    assert_eq!(log.len(), 2, "two runs in the run log: {log:?}");
    assert_eq!(
        (Some(log[0].id), Some(log[1].id)),
        (one.run_id, two.run_id),
        "the events and the run log describe the same runs"
    );
    let first_end = log[0].finished_at.expect("run 1 finished");
    assert!(
        log[1].started_at >= first_end,
        "run 2 started only after run 1 finished: {log:?}"
    );
    assert!(
        log.iter().all(|r| r.outcome.as_deref() == Some("ok")),
        "{log:?}"
    );
}

/// At most `max_running` rules run at once: a rule ticked while the limit is taken waits for a run
/// to finish, then runs (its tick is kept, not dropped).
#[tokio::test]
async fn rules_beyond_the_running_limit_wait_their_turn() {
    let w = World::start(Setup {
        rules: format!(
            "{}{}",
            rule("busy", "incident", "project = OPS"),
            rule("quiet", "incident", "project = OPS AND labels = quiet")
        ),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "slow", ago(10)));
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    w.gitlab.push_fault(
        GitLabTarget::CreateIssue,
        GitLabFault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );
    let cfg = w.config();
    let service = Service::new(Arc::new(w.engine()), cfg.rules.clone(), Backoff::default())
        .with_max_running(1);
    let (busy, quiet) = (
        service.ticker(0).expect("two rules"),
        service.ticker(1).expect("two rules"),
    );
    let mut events = service.subscribe();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(service.run(cancel.clone(), Duration::from_secs(10)));

    assert!(busy.tick(), "an idle rule accepts a tick");
    tokio::time::timeout(GUARD, arrived.notified())
        .await
        .expect("the busy rule's run reaches the GitLab create");
    assert!(quiet.tick(), "the waiting rule keeps its tick");
    // Without the limit the quiet rule's run (one empty search) ends well within this; a slow
    // machine can only make this check weaker, never fail it.
    let early = tokio::time::timeout(Duration::from_millis(700), events.recv()).await;
    assert!(
        early.is_err(),
        "no run ended while the one allowed run was held: {early:?}"
    );
    release.notify_one();
    let first = next_run(&mut events, "1", |_| true).await;
    let second = next_run(&mut events, "2", |_| true).await;
    assert_eq!(
        (first.rule.as_str(), first.counts.created),
        ("busy", 1),
        "{first:?}"
    );
    assert_eq!(
        second.rule, "quiet",
        "the waiting rule ran after: {second:?}"
    );
    cancel.cancel();
    let clean = tokio::time::timeout(GUARD, running)
        .await
        .expect("the service stops")
        .expect("the service task does not panic");
    assert!(clean, "idle workers stop at once");
}

/// The service tells systemd `READY=1` once it is up and `STOPPING=1` on SIGTERM, then exits 0.
#[tokio::test]
async fn sd_notify_ready_and_stopping() {
    let w = World::start(Setup::default()).await;
    let socket_path = w.dir.path().join("notify.sock");
    let mut socket = NotifySocket::bind(&socket_path);
    let daemon = daemon(&w, &[("NOTIFY_SOCKET", &socket_path)]);

    socket.wait_for("READY=1").await;
    daemon.terminate();
    let Finished { status, output, .. } = daemon.exit().await;
    assert_eq!(status.code(), Some(0), "a clean stop exits 0:\n{output}");
    // Whatever the service sent before exiting waits in the socket's queue.
    socket.drain();
    let ready = socket
        .received
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"));
    let stopping = socket
        .received
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(
        stopping.is_some(),
        "STOPPING=1 was sent before exit: {:?}",
        socket.received
    );
    assert!(
        ready < stopping,
        "READY before STOPPING: {:?}",
        socket.received
    );
}

/// Findings as `check` prints them: `(level, line)`.
fn findings(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let level = l.split_whitespace().next().unwrap_or_default().to_owned();
            (level, l.to_owned())
        })
        .collect()
}

/// `check` on a good setup: every finding ok, exit 0.
#[tokio::test]
async fn check_good_setup_exits_0() {
    let w = World::start(Setup::default()).await;
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let found = findings(&out.stdout);
    assert!(
        !found.is_empty() && found.iter().all(|(level, _)| level == "ok"),
        "every finding is ok: {found:#?}"
    );
    assert!(
        w.gitlab.requests().iter().all(|r| r.method == "GET"
            || (r.path == "/api/graphql"
                && r.body
                    .as_ref()
                    .and_then(|b| b["query"].as_str())
                    .is_some_and(|q| q.trim_start().starts_with("query")))),
        "check writes nothing to GitLab (its GraphQL request is a query)"
    );
    assert!(
        found
            .iter()
            .any(|(_, text)| text.contains("GraphQL API usable")),
        "check says the token can use GraphQL: {found:#?}"
    );
}

/// `check` with a rejected GitLab token: an error line naming GitLab and the 401, exit 2.
#[tokio::test]
async fn check_rejected_token_exits_2() {
    let w = World::start(Setup {
        gitlab_token: Some("glpat-wrong".into()),
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "it would not work: {text}");
    assert!(
        findings(&out.stdout)
            .iter()
            .any(|(level, line)| level == "error"
                && line.contains("gitlab")
                && line.contains("401")),
        "an error line names GitLab and the 401: {text}"
    );
}

/// `check` with a Developer token: a warning that asks for the Owner role, exit 1.
#[tokio::test]
async fn check_non_owner_role_warns_and_exits_1() {
    let mut gitlab = FakeGitLabConfig::default();
    gitlab.projects[0].members = vec![(1, access::DEVELOPER)];
    let w = World::start(Setup {
        gitlab,
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "it works but the times would be off: {text}"
    );
    let found = findings(&out.stdout);
    assert!(
        found
            .iter()
            .any(|(level, line)| level == "warn" && line.contains("Owner")),
        "a warning names the Owner role: {text}"
    );
    assert!(
        found.iter().all(|(level, _)| level != "error"),
        "a Developer can still sync: {text}"
    );
}

/// `check` on a project without a production environment: a warning naming production, exit 1.
#[tokio::test]
async fn check_missing_production_environment_warns_and_exits_1() {
    let mut gitlab = FakeGitLabConfig::default();
    gitlab.projects[0].environments.clear();
    let w = World::start(Setup {
        gitlab,
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "it works but DORA would ignore it: {text}"
    );
    let found = findings(&out.stdout);
    assert!(
        found
            .iter()
            .any(|(level, line)| level == "warn" && line.contains("production")),
        "a warning names the production tier: {text}"
    );
    assert!(
        found.iter().all(|(level, _)| level != "error"),
        "nothing would fail: {text}"
    );
}

/// `check` on a store the sync could not create (its directory path runs through a file): an
/// error naming the store, exit 2, as `--once` would fail.
#[tokio::test]
async fn check_store_not_writable_exits_2() {
    let w = World::start(Setup::default()).await;
    std::fs::write(w.dir.path().join("afile"), "").unwrap();
    edit_config(
        &w,
        &format!("path = \"{}/sync.db\"", w.dir.path().display()),
        &format!("path = \"{}/afile/sync.db\"", w.dir.path().display()),
    );
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        findings(&out.stdout)
            .iter()
            .any(|(level, line)| level == "error"
                && line.contains("store")
                && line.contains("afile")),
        "{text}"
    );
}

/// `check` while the service holds the store: a warning naming the service's pid, exit 1.
#[tokio::test]
async fn check_names_the_process_holding_the_store() {
    let w = World::start(Setup::default()).await;
    let mut service = daemon(&w, &[]);
    service.wait_for_output("service started").await;
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        findings(&out.stdout)
            .iter()
            .any(|(level, line)| level == "warn"
                && line.contains("in use by")
                && line.contains(&format!("pid {}", service.pid))),
        "{text}"
    );
    service.terminate();
    service.exit().await;
    let out = w.binary(&["check"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "free again: {}",
        output_text(&out)
    );
}

/// `check` after a rule was renamed: the old name's mappings are named, exit 1.
#[tokio::test]
async fn check_names_rules_the_config_no_longer_has() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "open", ago(10)));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    edit_config(&w, "name = \"ops\"", "name = \"ops-incidents\"");
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        findings(&out.stdout)
            .iter()
            .any(|(level, line)| level == "warn"
                && line.contains("rule ops ")
                && line.contains("1 mapped")
                && line.contains("no longer has")),
        "{text}"
    );
}

/// `check` on a rule with no `since` that has never run: a warning with the backfill command,
/// exit 1; once the rule has run, nothing to say.
#[tokio::test]
async fn check_gives_the_backfill_command_for_a_rule_without_since() {
    let no_since: String = rule("ops", "incident", "project = OPS")
        .lines()
        .filter(|l| !l.starts_with("since"))
        .map(|l| format!("{l}\n"))
        .collect();
    let w = World::start(Setup {
        rules: no_since,
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "open", ago(60 * 24)));
    let out = w.binary(&["check"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let command = format!(
        "jira-gitlab-sync --config {} backfill --since YYYY-MM-DD --rule ops",
        w.config_path.display()
    );
    assert!(
        findings(&out.stdout)
            .iter()
            .any(|(level, line)| level == "warn"
                && line.contains("no since")
                && line.contains(&command)),
        "{text}"
    );
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = w.binary(&["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

/// `status --json` after a `--once` run shows the rule, its cursor, counts and last run.
#[tokio::test]
async fn status_json_reports_the_store_after_once() {
    let w = World::start(Setup::default()).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "resolved", ago(30)).resolved_at(ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "open", ago(10)));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let out = w.binary(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(report["store_exists"], true, "{report:#}");
    let rules = report["rules"].as_array().expect("a rules array");
    assert_eq!(rules.len(), 1, "one configured rule: {report:#}");
    let r = &rules[0];
    assert_eq!(r["rule"], "ops", "{r:#}");
    assert_eq!(r["configured"], true, "{r:#}");
    assert!(
        r["cursor"].is_string(),
        "the finished run left a cursor: {r:#}"
    );
    assert_eq!(
        (&r["mapped"], &r["open"], &r["closed"], &r["failed"]),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(1),
            &Value::from(0)
        ),
        "two mapped: one left open, one closed: {r:#}"
    );
    assert!(
        r["last_checked"].is_string(),
        "the finished cycle is recorded as the rule's last check: {r:#}"
    );
    assert_eq!(r["last_run"]["outcome"], "ok", "{r:#}");
    assert_eq!(r["last_run"]["mode"], "once", "{r:#}");
    assert_eq!(r["last_run"]["counts"]["created"], 2, "{r:#}");
    assert!(
        r["last_run"]["finished_at"].is_string(),
        "the run finished: {r:#}"
    );
}

/// `status` reads the store while a running service holds its lock.
#[tokio::test]
async fn status_works_while_the_service_holds_the_store() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "open", ago(10)));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let socket_path = w.dir.path().join("notify.sock");
    let mut socket = NotifySocket::bind(&socket_path);
    let daemon = daemon(&w, &[("NOTIFY_SOCKET", &socket_path)]);
    // READY comes after the store is opened and locked.
    socket.wait_for("READY=1").await;

    let second = w.binary(&["--once"]).await;
    assert_eq!(
        second.status.code(),
        Some(2),
        "the service holds the store, so a second writer is refused: {}",
        output_text(&second)
    );

    let table = w.binary(&["status"]).await;
    let text = output_text(&table);
    assert_eq!(table.status.code(), Some(0), "{text}");
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .lines()
            .any(|l| l.starts_with("ops ")),
        "the table has the rule's row: {text}"
    );
    let json = w.binary(&["status", "--json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", output_text(&json));
    let report: Value = serde_json::from_slice(&json.stdout).expect("status --json prints JSON");
    assert_eq!(
        report["rules"][0]["mapped"], 1,
        "status sees what the store holds: {report:#}"
    );

    daemon.terminate();
    let Finished { status, output, .. } = daemon.exit().await;
    assert_eq!(status.code(), Some(0), "{output}");
}

/// `demo` runs the whole loop in under 15 s and the two medians agree.
#[tokio::test]
async fn demo_medians_agree() {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .arg("demo")
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs");
    let elapsed = started.elapsed();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("they agree"),
        "Jira's and GitLab's median time to restore agree: {text}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "the demo is quick enough to show: {elapsed:?}"
    );
}

/// The shipped production `deploy/config.toml` validates once its credentials exist.
#[test]
fn deploy_config_validates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = include_str!("../deploy/config.toml");
    let mut replaced = text.to_owned();
    for name in ["jira-token", "gitlab-token"] {
        let file = dir.path().join(name);
        std::fs::write(&file, "x\n").expect("token file written");
        let from = format!("token_file = \"{name}\"");
        assert!(
            replaced.contains(&from),
            "deploy/config.toml reads {name} from the systemd credentials"
        );
        replaced = replaced.replace(&from, &format!("token_file = \"{}\"", file.display()));
    }
    let cfg = Config::from_toml(&replaced, Path::new("deploy/config.toml"))
        .unwrap_or_else(|e| panic!("deploy/config.toml must validate: {e}"));
    assert!(!cfg.rules.is_empty(), "the example shows a rule");
    assert_eq!(
        cfg.store_path,
        Path::new("/var/lib/jira-gitlab-sync/sync.db"),
        "the store lives in the unit's StateDirectory"
    );
}

/// The systemd unit and the production config agree: credentials, state directory, stop timeout.
#[test]
fn deploy_unit_matches_config() {
    let unit = include_str!("../deploy/jira-gitlab-sync.service");
    let config = include_str!("../deploy/config.toml");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    for name in ["jira-token", "gitlab-token"] {
        assert!(
            values("LoadCredential")
                .iter()
                .any(|v| v.split_once(':').map(|(n, _)| n) == Some(name)),
            "the unit loads the credential {name} the config names"
        );
        assert!(
            config.contains(&format!("token_file = \"{name}\"")),
            "the config reads {name} from $CREDENTIALS_DIRECTORY"
        );
    }
    assert_eq!(values("StateDirectory"), ["jira-gitlab-sync"]);
    assert_eq!(values("Type"), ["notify"], "the service sends READY=1");
    let exec = values("ExecStart");
    assert!(
        exec.len() == 1 && exec[0].contains("--config /etc/jira-gitlab-sync/config.toml"),
        "{exec:?}"
    );
    assert!(
        !exec[0].contains("--once") && exec[0].ends_with(" run"),
        "the unit runs the long-lived service, by name: {exec:?}"
    );

    let raw: toml::Value = toml::from_str(config).expect("the config is TOML");
    let grace = raw
        .get("schedule")
        .and_then(|s| s.get("shutdown_grace_secs"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(30);
    let stop: Vec<i64> = values("TimeoutStopSec")
        .iter()
        .map(|v| {
            v.trim_end_matches('s')
                .parse()
                .expect("TimeoutStopSec in seconds")
        })
        .collect();
    assert!(
        stop.len() == 1
            && stop[0] >= grace + jira_gitlab_sync::daemon::RECORD_MARGIN.as_secs() as i64,
        "systemd must wait longer than the service's own grace ({grace} s) and the time to \
         record the runs: {stop:?}"
    );
}

/// The README's systemd steps, replayed on a model of the file system (paths and modes; root
/// owns everything they create), give the unit what it needs: its binary and config readable by
/// the dynamic user it runs as (which is neither root nor in root's group), and its credentials
/// there for systemd, root's alone. A step this model does not know fails the test, so the
/// README cannot drift from what is checked.
#[test]
fn readme_systemd_steps_let_the_unit_read_what_it_needs() {
    use std::collections::BTreeMap;
    let readme = include_str!("../README.md");
    let unit = include_str!("../deploy/jira-gitlab-sync.service");
    let section = readme
        .split("## Run as a service (systemd)")
        .nth(1)
        .expect("the README has the systemd section");
    let steps = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a sh block");

    let umask = 0o022;
    // path → (mode, is a directory); what exists before the steps.
    let mut fs: BTreeMap<String, (u32, bool)> = BTreeMap::new();
    for dir in [
        "/",
        "/etc",
        "/etc/systemd",
        "/etc/systemd/system",
        "/usr",
        "/usr/local",
        "/usr/local/bin",
    ] {
        fs.insert(dir.to_owned(), (0o755, true));
    }
    let mode = |m: &str| u32::from_str_radix(m, 8).expect("an octal mode");
    for line in steps.lines() {
        let cmd = line.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["sudo", "install", "-d", "-m", m, dir] => {
                fs.insert((*dir).to_owned(), (mode(m), true));
            }
            ["sudo", "install", "-m", m, src, dst] => {
                let dst = match dst.strip_suffix('/') {
                    Some(d) => format!("{d}/{}", src.rsplit('/').next().unwrap_or(src)),
                    None => (*dst).to_owned(),
                };
                fs.insert(dst, (mode(m), false));
            }
            ["printf", .., "|", "sudo", "tee", path, ">/dev/null"] => {
                fs.entry((*path).to_owned())
                    .or_insert((0o666 & !umask, false));
            }
            ["sudo", "chmod", m, pattern] => {
                let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
                for (p, entry) in fs.iter_mut() {
                    if p.starts_with(prefix) && p.ends_with(suffix) {
                        entry.0 = mode(m);
                    }
                }
            }
            ["sudo", "systemctl", ..] | ["systemctl", ..] | ["journalctl", ..] => {}
            other => panic!("a README step this test does not model: {other:?}"),
        }
    }

    // Readable (or runnable) by a user that is neither the owner nor in the group: every
    // directory on the way searchable by others, the file readable (or executable) by others.
    let reachable_by_others = |path: &str, bit: u32| -> Result<(), String> {
        let mut dir = std::path::Path::new(path).parent();
        while let Some(d) = dir {
            let d_str = d.to_str().expect("UTF-8 paths");
            match fs.get(d_str) {
                Some((m, true)) if m & 0o001 != 0 => {}
                Some((m, _)) => return Err(format!("{d_str} is {m:04o}: others cannot enter it")),
                None => return Err(format!("{d_str} is never created")),
            }
            dir = d.parent();
        }
        match fs.get(path) {
            Some((m, false)) if m & bit != 0 => Ok(()),
            Some((m, _)) => Err(format!("{path} is {m:04o}")),
            None => Err(format!("{path} is never installed")),
        }
    };
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(value("DynamicUser"), ["yes"], "the case this test is about");
    let exec: Vec<&str> = value("ExecStart")[0].split_whitespace().collect();
    reachable_by_others(exec[0], 0o001)
        .unwrap_or_else(|e| panic!("the dynamic user cannot run the binary: {e}"));
    let config = exec
        .iter()
        .position(|w| *w == "--config")
        .map(|i| exec[i + 1])
        .expect("ExecStart names the config");
    reachable_by_others(config, 0o004)
        .unwrap_or_else(|e| panic!("the dynamic user cannot read its config: {e}"));
    for credential in value("LoadCredential") {
        let (_, source) = credential.split_once(':').expect("name:path");
        let (m, dir) = fs
            .get(source)
            .unwrap_or_else(|| panic!("{source} is never written"));
        assert!(!dir, "{source} is a file");
        assert_eq!(m & 0o077, 0, "{source} is root's alone: {m:04o}");
    }
    assert!(
        fs.contains_key("/etc/systemd/system/jira-gitlab-sync.service"),
        "the unit is installed"
    );
}

/// Cargo.toml says MIT, and the repository carries the MIT license text that says so.
#[test]
fn the_license_file_is_the_one_cargo_toml_names() {
    let manifest: toml::Value =
        toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml is TOML");
    assert_eq!(manifest["package"]["license"].as_str(), Some("MIT"));
    let license = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/LICENSE"))
        .expect("a LICENSE file at the top of the repository");
    assert!(license.starts_with("MIT License\n"), "{license}");
    assert!(
        license.contains("Permission is hereby granted, free of charge"),
        "{license}"
    );
}
