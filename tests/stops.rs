//! Every stop stops: SIGTERM, SIGINT, a fatal error, or a GitLab write that never returns ends
//! `backfill`, `--once` and the service within the grace period, with a summary, and the run is
//! recorded as cancelled or failed, never left `running`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jira_gitlab_sync::domain::{RunMode, RunOutcome};
use jira_gitlab_sync::sandbox::gitlab::{Fault, FaultTarget};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use jira_gitlab_sync::store::{RunRecord, Store};
use tokio::sync::Notify;

use crate::support::{GUARD, Running, Setup, Signal, World, ago};

/// What the binary logs once it has seen the first signal.
const SIGNAL_SEEN: &str = "stopping after the current action";

/// `n` incidents created in January 2025, an hour apart, for a backfill from December.
fn history(w: &World, n: i64) {
    let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc);
    for i in 1..=n {
        let created = start + chrono::Duration::hours(i);
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{i}"), "history", created));
    }
}

/// Holds GitLab's next create until the returned `release` is notified; `arrived` is notified
/// when it reaches GitLab.
fn hold_next_create(w: &World) -> (Arc<Notify>, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );
    (release, arrived)
}

/// Sets a 1 s grace period and request timeouts far beyond the tests' guard, so that only the
/// grace period can end a process whose GitLab write never returns.
fn short_grace_long_timeouts(w: &World) {
    let text = std::fs::read_to_string(&w.config_path).expect("the config reads");
    let text = text.replace("timeout_secs = 5", "timeout_secs = 600");
    std::fs::write(
        &w.config_path,
        format!("{text}\n[schedule]\nshutdown_grace_secs = 1\n"),
    )
    .expect("the config is written");
}

/// The newest run of the only rule, as the store recorded it.
async fn last_run(w: &World) -> RunRecord {
    let store = Store::open_read_only(&w.store_path()).expect("the store is readable");
    let rules = store.rule_status().await.expect("the store reads");
    rules[0].last_run.clone().expect("a run is logged")
}

/// Waits until a held create reached GitLab.
async fn arrived_at_gitlab(arrived: &Notify, child: &Running) {
    tokio::time::timeout(GUARD, arrived.notified())
        .await
        .unwrap_or_else(|_| panic!("no create reached GitLab:\n{}", child.output()));
}

/// A backfill with a create in flight, stopped by `signal`: the create finishes, nothing after
/// it starts, the summary is printed, the run is recorded as cancelled, and it exits 1 (not
/// done: the same command resumes).
async fn backfill_stops_on(signal: Signal) {
    let w = World::start(Setup::default()).await;
    history(&w, 20);
    let (release, arrived) = hold_next_create(&w);
    let mut child = w.launch(
        &["backfill", "--since", "2024-12-01", "--concurrency", "1"],
        &[],
    );
    arrived_at_gitlab(&arrived, &child).await;
    child.signal(signal);
    child.wait_for_output(SIGNAL_SEEN).await;
    release.notify_one();
    let done = child.exit().await;
    let out = &done.output;
    assert_eq!(
        done.status.code(),
        Some(1),
        "stopped before the end:\n{out}"
    );
    assert!(
        done.stdout.iter().any(|l| l.starts_with("backfill ops:")),
        "the summary is printed:\n{out}"
    );
    assert!(
        done.stdout.iter().any(|l| l.contains("created 1,")),
        "the summary counts the create in flight:\n{out}"
    );
    assert!(
        out.contains("run the same command again to resume"),
        "it says how to go on:\n{out}"
    );
    assert_eq!(w.gitlab_issues().len(), 1, "the create in flight finished");
    let run = last_run(&w).await;
    assert_eq!(run.mode, RunMode::Backfill, "{run:?}");
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
}

#[tokio::test]
async fn backfill_stops_on_sigterm() {
    backfill_stops_on(Signal::Term).await;
}

#[tokio::test]
async fn backfill_stops_on_sigint() {
    backfill_stops_on(Signal::Int).await;
}

/// A backfill whose GitLab write never returns ends once the grace period is over, with its run
/// recorded as cancelled; the create left unanswered is looked up by the next run.
#[tokio::test]
async fn backfill_ends_at_the_grace_period() {
    let w = World::start(Setup::default()).await;
    history(&w, 5);
    short_grace_long_timeouts(&w);
    let (_never, arrived) = hold_next_create(&w);
    let mut child = w.launch(
        &["backfill", "--since", "2024-12-01", "--concurrency", "1"],
        &[],
    );
    arrived_at_gitlab(&arrived, &child).await;
    child.terminate();
    child.wait_for_output(SIGNAL_SEEN).await;
    let done = child.exit().await;
    let out = &done.output;
    assert_eq!(done.status.code(), Some(1), "{out}");
    assert!(
        out.contains("grace period"),
        "it says why it did not wait:\n{out}"
    );
    assert!(
        done.stdout.iter().any(|l| l.starts_with("backfill ops:")),
        "the summary is printed:\n{out}"
    );
    let run = last_run(&w).await;
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
    assert!(run.finished_at.is_some(), "not left running: {run:?}");
}

/// GitLab refusing the token in the middle of a backfill ends it at once: exit 2, the summary,
/// one error line naming the 401, and the run recorded as failed.
#[tokio::test]
async fn backfill_ends_when_gitlab_refuses_the_token_mid_run() {
    let w = World::start(Setup::default()).await;
    history(&w, 10);
    // The first create passes; the second is refused as a revoked token would be.
    w.gitlab
        .push_fault(FaultTarget::CreateIssue, Fault::Delay(Duration::ZERO));
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::Status {
            status: 401,
            body: r#"{"message":"401 Unauthorized"}"#.into(),
        },
    );
    let child = w.launch(
        &["backfill", "--since", "2024-12-01", "--concurrency", "1"],
        &[],
    );
    let done = child.exit().await;
    let out = &done.output;
    assert_eq!(done.status.code(), Some(2), "{out}");
    assert!(
        done.stdout.iter().any(|l| l.starts_with("backfill ops:")),
        "the summary is printed:\n{out}"
    );
    let about: Vec<_> = done
        .output
        .lines()
        .filter(|l| l.contains("HTTP 401"))
        .collect();
    assert_eq!(about.len(), 1, "one line about the 401:\n{out}");
    assert!(about[0].starts_with("error: "), "{out}");
    let run = last_run(&w).await;
    assert_eq!(run.outcome, Some(RunOutcome::Failed), "{run:?}");
    assert!(run.error.is_some(), "{run:?}");
}

/// `--once` with a create in flight, stopped by `signal`: the create finishes, the run is
/// recorded as cancelled, and it exits 1 (the next run goes on).
async fn once_stops_on(signal: Signal) {
    // One issue at a time, so that "after the create in flight" is defined.
    let w = World::start(Setup {
        sync: "backfill_concurrency = 1".into(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "second", ago(10)));
    let (release, arrived) = hold_next_create(&w);
    let mut child = w.launch(&["--once"], &[]);
    arrived_at_gitlab(&arrived, &child).await;
    child.signal(signal);
    child.wait_for_output(SIGNAL_SEEN).await;
    release.notify_one();
    let done = child.exit().await;
    assert_eq!(done.status.code(), Some(1), "{}", done.output);
    assert_eq!(w.gitlab_issues().len(), 1, "the create in flight finished");
    let run = last_run(&w).await;
    assert_eq!(run.mode, RunMode::Once, "{run:?}");
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
    assert!(run.finished_at.is_some(), "{run:?}");
}

#[tokio::test]
async fn once_stops_on_sigterm() {
    once_stops_on(Signal::Term).await;
}

#[tokio::test]
async fn once_stops_on_sigint() {
    once_stops_on(Signal::Int).await;
}

/// `--once` whose GitLab write never returns ends at the grace period, its run recorded as
/// cancelled.
#[tokio::test]
async fn once_ends_at_the_grace_period() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(20)));
    short_grace_long_timeouts(&w);
    let (_never, arrived) = hold_next_create(&w);
    let mut child = w.launch(&["--once"], &[]);
    arrived_at_gitlab(&arrived, &child).await;
    child.terminate();
    child.wait_for_output(SIGNAL_SEEN).await;
    let done = child.exit().await;
    assert_eq!(done.status.code(), Some(1), "{}", done.output);
    let run = last_run(&w).await;
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
    assert!(run.finished_at.is_some(), "not left running: {run:?}");
}

/// The service stops on SIGINT (Ctrl-C) as it does on SIGTERM: the create in flight finishes,
/// the run is recorded as cancelled, exit 0.
#[tokio::test]
async fn service_stops_on_sigint() {
    // One issue at a time, so that "after the create in flight" is defined.
    let w = World::start(Setup {
        sync: "backfill_concurrency = 1".into(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "second", ago(10)));
    let (release, arrived) = hold_next_create(&w);
    let mut child = w.launch(&[], &[]);
    arrived_at_gitlab(&arrived, &child).await;
    child.signal(Signal::Int);
    child.wait_for_output(SIGNAL_SEEN).await;
    release.notify_one();
    let done = child.exit().await;
    assert_eq!(done.status.code(), Some(0), "{}", done.output);
    assert_eq!(w.gitlab_issues().len(), 1, "the create in flight finished");
    let run = last_run(&w).await;
    assert_eq!(run.mode, RunMode::Service, "{run:?}");
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
}

/// The service whose GitLab write never returns ends at the grace period, its run recorded as
/// cancelled rather than left running; exit 0, as for any stop.
#[tokio::test]
async fn service_ends_at_the_grace_period() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "first", ago(20)));
    short_grace_long_timeouts(&w);
    let (_never, arrived) = hold_next_create(&w);
    let mut child = w.launch(&[], &[]);
    arrived_at_gitlab(&arrived, &child).await;
    child.terminate();
    child.wait_for_output(SIGNAL_SEEN).await;
    let done = child.exit().await;
    let out = &done.output;
    assert_eq!(done.status.code(), Some(0), "{out}");
    assert!(out.contains("grace period ended"), "{out}");
    let run = last_run(&w).await;
    assert_eq!(run.outcome, Some(RunOutcome::Cancelled), "{run:?}");
    assert!(run.finished_at.is_some(), "not left running: {run:?}");
}
