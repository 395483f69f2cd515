//! The engine over in-memory ports (`testkit`): every branch of the executor, the dry-run
//! wrappers and the cycle's bookkeeping, on paused time so retry back-offs cost nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rstest::rstest;
use tokio_util::sync::CancellationToken;

use super::dry_run::{DryRunSink, DryRunStore};
use super::execute::{Ctx, Outcome};
use super::ports::Place;
use super::testkit::{Call, Fault, MemError, MemGitLab, MemJira, MemStore};
use super::*;
use crate::config::{Destination, OnDelete, OnLeave};
use crate::domain::{
    Commit, IncidentSeverity, IssueSnapshot, JiraId, Mapping, MovedTo, PageCursor, RemoteState,
    SearchPage, Severity, Target, TimelineTag,
};
use crate::http::RetryPolicy;

const RULE: &str = "ops";

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + minutes * 60, 0).expect("a valid time")
}

fn rule() -> RuleConfig {
    RuleConfig {
        name: RULE.into(),
        jql: "project = OPS".into(),
        destination: Destination {
            target: Target::Incident,
            project: "acme/ops".into(),
            project_id: None,
            alert: None,
        },
        labels: vec!["jira".into()],
        since: None,
        cron: "0 * * * * *".into(),
        title: "[{key}] {summary}".into(),
        severity_label: None,
        severity: BTreeMap::new(),
        on_leave: crate::config::OnLeave::Label,
        on_delete: crate::config::OnDelete::Close,
        history: Default::default(),
        timeline_events: false,
    }
}

fn settings() -> EngineSettings {
    EngineSettings {
        lookback: Duration::from_secs(600),
        concurrency: 4,
        reconcile: Duration::from_secs(3600),
        time_zone: Some(chrono_tz::UTC),
        retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        shutdown_grace: Duration::from_secs(30),
        link_back: None,
    }
}

type Bench = SyncEngine<MemJira, MemGitLab, MemStore>;

/// Where the test rule writes: its destination at project id 1.
fn place() -> Place {
    Place::new(&rule().destination, 1)
}

fn bench() -> Bench {
    SyncEngine::new(
        MemJira::default(),
        MemGitLab::default(),
        MemStore::default(),
        settings(),
    )
}

/// OPS-1 as Jira shows it: created at minute 0, changed at `updated`, resolved if `resolved`.
fn snap(summary: &str, updated: i64, resolved: Option<i64>) -> IssueSnapshot {
    IssueSnapshot {
        id: Some(JiraId::parse("10001").expect("a valid id")),
        key: JiraKey::parse("OPS-1").expect("a valid key"),
        summary: summary.into(),
        description: None,
        created: at(0),
        updated: at(updated),
        resolved_at: resolved.map(at),
        status: "Open".into(),
        priority: None,
        labels: Vec::new(),
        issue_type: None,
        fields: Default::default(),
        transitions: None,
    }
}

/// Applies `s` as a run of the test rule would, at the test place.
async fn apply_as(
    b: &Bench,
    s: IssueSnapshot,
    m: Option<Mapping>,
    source: Source,
    cursor: Option<DateTime<Utc>>,
) -> Result<Outcome, EngineError> {
    let (rule, place, log) = (rule(), place(), RunLog::new(RunMode::Once));
    let cx = Ctx {
        rule: &rule,
        place: &place,
        log: &log,
    };
    b.apply(&cx, s, m, source, cursor, None).await
}

/// Replicates `s` once so the store and GitLab hold it, then forgets the calls it took.
async fn replicated(b: &Bench, s: IssueSnapshot) -> Mapping {
    apply_as(b, s, None, Source::Search, None)
        .await
        .expect("the first apply runs");
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    b.store.mapping("OPS-1").expect("mapped")
}

async fn apply(b: &Bench, s: IssueSnapshot, m: Option<Mapping>) -> Result<Outcome, EngineError> {
    apply_as(b, s, m, Source::Search, Some(at(50))).await
}

/// Faults before the first apply → the GitLab calls it makes, the objects GitLab then holds,
/// and what the store records.
#[rstest]
#[case::fresh_open(
    snap("a", 1, None),
    vec![],
    vec![Call::Scan, Call::Create],
    RemoteState::Opened
)]
#[case::fresh_resolved(
    snap("a", 5, Some(4)),
    vec![],
    vec![Call::Scan, Call::Create, Call::Close],
    RemoteState::Closed
)]
#[case::create_applied_then_lost(
    snap("a", 1, None),
    vec![(Call::Create, Fault::ApplyThenLose)],
    vec![Call::Scan, Call::Create, Call::Find, Call::Severity],
    RemoteState::Opened
)]
#[case::create_lost_not_applied(
    snap("a", 1, None),
    vec![(Call::Create, Fault::Fail(MemError::Lost))],
    vec![Call::Scan, Call::Create, Call::Find, Call::Create],
    RemoteState::Opened
)]
#[case::close_after_a_lost_create(
    snap("a", 5, Some(4)),
    vec![(Call::Create, Fault::ApplyThenLose)],
    vec![Call::Scan, Call::Create, Call::Find, Call::Close, Call::Severity],
    RemoteState::Closed
)]
#[tokio::test(start_paused = true)]
async fn creates_exactly_once(
    #[case] s: IssueSnapshot,
    #[case] faults: Vec<(Call, Fault)>,
    #[case] calls: Vec<Call>,
    #[case] state: RemoteState,
) {
    let b = bench();
    for (call, fault) in faults {
        b.gitlab.fault(call, fault);
    }
    let out = apply(&b, s.clone(), None).await.expect("the apply runs");
    assert_eq!(b.gitlab.calls(), calls, "the calls sent");
    let objects = b.gitlab.objects();
    assert_eq!(objects.len(), 1, "exactly one object: {objects:?}");
    assert_eq!(objects[0].state, state);
    assert_eq!(objects[0].created_at, s.created, "Jira's created time");
    assert_eq!(
        objects[0].closed_at, s.resolved_at,
        "Jira's resolution time"
    );
    let m = b.store.mapping("OPS-1").expect("the mapping is committed");
    assert_eq!((m.iid, m.state), (Some(objects[0].iid), state));
    assert_eq!(b.store.intent(), None, "the intent is settled");
    assert_eq!(out.counts.created, 1);
    assert_eq!(
        b.store.cursor_of(RULE),
        Some(at(50)),
        "the cursor moves with the last commit"
    );
}

/// A create an earlier, interrupted run may have sent is never sent twice: the project's look
/// for objects the store does not know (once per process, before its first create) finds it
/// and it is adopted, rewritten if Jira was edited meanwhile; not found there or by the intent's
/// lookup, it is created.
#[rstest]
#[case::found(Some("a"), vec![Call::Scan, Call::Severity])]
#[case::found_but_edited_since(Some("older"), vec![Call::Scan, Call::Update, Call::Severity])]
#[case::not_found(None, vec![Call::Scan, Call::Find, Call::Create])]
#[tokio::test(start_paused = true)]
async fn an_interrupted_create_is_looked_for_first(
    #[case] made_from: Option<&str>,
    #[case] calls: Vec<Call>,
) {
    let b = bench();
    let s = snap("a", 1, None);
    if let Some(summary) = made_from {
        // The killed run's create reached GitLab; only its intent is in the store.
        let then = snap(summary, 1, None);
        let browse = b.jira.browse_url(&then.key);
        b.gitlab.fault(Call::Create, Fault::ApplyThenLose);
        b.gitlab
            .create(
                &rule().destination,
                &render::new_object(&rule(), &then, &browse),
            )
            .await
            .expect_err("the answer is lost");
        b.gitlab.calls.lock().expect("unpoisoned").clear();
    }
    b.store
        .begin_intent(RULE, &place(), s.id.as_ref(), &s.key)
        .await
        .expect("the killed run's intent");
    apply(&b, s, None).await.expect("the apply runs");
    assert_eq!(b.gitlab.calls(), calls);
    let objects = b.gitlab.objects();
    assert_eq!(objects.len(), 1, "exactly one object");
    assert_eq!(
        objects[0].title, "[OPS-1] a",
        "GitLab shows Jira's current text"
    );
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert!(
        m.content_hash.is_some(),
        "the hash of what GitLab now holds"
    );
}

/// A refused create is this issue's failure: stored with its snapshot for the next cycle, the
/// cursor still moves, and no mapping is made. One whose outcome stays unknown after every
/// attempt is a failure too, never a blind extra create.
#[rstest]
#[case::refused(vec![Fault::Fail(MemError::Refused)], vec![Call::Scan, Call::Create])]
#[case::lost_every_time(
    vec![Fault::Fail(MemError::Lost); 3],
    vec![Call::Scan, Call::Create, Call::Find, Call::Create, Call::Find, Call::Create]
)]
#[tokio::test(start_paused = true)]
async fn a_failed_create_is_stored_for_retry(#[case] faults: Vec<Fault>, #[case] calls: Vec<Call>) {
    let b = bench();
    for f in faults {
        b.gitlab.fault(Call::Create, f);
    }
    let out = apply(&b, snap("a", 1, None), None)
        .await
        .expect("an issue's failure does not stop the run");
    assert_eq!(b.gitlab.calls(), calls);
    assert_eq!(out.counts.failed, 1);
    assert!(b.store.mapping("OPS-1").is_none());
    let f = b
        .store
        .failure(RULE, "OPS-1")
        .expect("the failure is stored");
    assert_eq!(f.snapshot.key.as_str(), "OPS-1");
    assert_eq!(
        b.store.cursor_of(RULE),
        Some(at(50)),
        "the cursor moves past it"
    );
    assert_eq!(
        b.store.intent(),
        Some(1),
        "the intent stays, so the retry looks first"
    );
}

/// An error that no later request can get past (a missing project, a rejected token) stops the
/// run and stores nothing as failed.
#[tokio::test(start_paused = true)]
async fn a_fatal_error_stops_the_run() {
    let b = bench();
    b.gitlab.fault(Call::Create, Fault::Fail(MemError::Fatal));
    let err = apply(&b, snap("a", 1, None), None)
        .await
        .expect_err("the run stops");
    assert!(matches!(err, EngineError::GitLab { .. }), "{err:?}");
    assert_eq!(err.cause_as::<MemError>(), Some(&MemError::Fatal));
    assert!(
        b.store.failure(RULE, "OPS-1").is_none(),
        "nothing stored as failed"
    );
    assert_eq!(b.store.cursor_of(RULE), None, "the cursor stays");
}

/// A mapped issue: the state difference and any edit are applied; nothing else is sent.
#[rstest]
#[case::resolved(snap("a", 5, Some(4)), vec![Call::Close], RemoteState::Closed, "[OPS-1] a")]
#[case::resolved_and_edited(
    snap("b", 5, Some(4)),
    vec![Call::Close, Call::Update],
    RemoteState::Closed,
    "[OPS-1] b"
)]
#[case::edited(snap("b", 5, None), vec![Call::Update], RemoteState::Opened, "[OPS-1] b")]
#[case::touched(snap("a", 5, None), vec![], RemoteState::Opened, "[OPS-1] a")]
#[case::already_replicated(snap("a", 1, None), vec![], RemoteState::Opened, "[OPS-1] a")]
#[case::stale(snap("b", 0, Some(0)), vec![], RemoteState::Opened, "[OPS-1] a")]
#[tokio::test(start_paused = true)]
async fn a_mapped_issue_gets_only_its_difference(
    #[case] s: IssueSnapshot,
    #[case] calls: Vec<Call>,
    #[case] state: RemoteState,
    #[case] title: &str,
) {
    let b = bench();
    let m = replicated(&b, snap("a", 1, None)).await;
    apply(&b, s.clone(), Some(m)).await.expect("the apply runs");
    assert_eq!(b.gitlab.calls(), calls);
    let objects = b.gitlab.objects();
    assert_eq!(
        (objects[0].state, objects[0].title.as_str()),
        (state, title)
    );
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert_eq!(m.state, state);
    assert_eq!(
        m.jira_updated,
        s.updated.max(at(1)),
        "the newest change replicated is remembered"
    );
}

/// A reopened issue is reopened in GitLab; re-resolving closes it again.
#[tokio::test(start_paused = true)]
async fn reopen_then_close_again() {
    let b = bench();
    let m = replicated(&b, snap("a", 5, Some(4))).await;
    apply(&b, snap("a", 6, None), Some(m))
        .await
        .expect("reopen");
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert_eq!(m.state, RemoteState::Opened);
    apply(&b, snap("a", 9, Some(8)), Some(m))
        .await
        .expect("close");
    assert_eq!(b.gitlab.calls(), vec![Call::Reopen, Call::Close]);
    assert_eq!(b.gitlab.objects()[0].closed_at, Some(at(8)));
}

/// A close whose answer was lost is recorded as a failure; the retry sends the close again
/// (closing is idempotent) and the stored failure is settled.
#[tokio::test(start_paused = true)]
async fn a_lost_close_is_retried_from_the_stored_failure() {
    let b = bench();
    let m = replicated(&b, snap("a", 1, None)).await;
    b.gitlab.fault(Call::Close, Fault::ApplyThenLose);
    let out = apply(&b, snap("a", 5, Some(4)), Some(m.clone()))
        .await
        .expect("the apply runs");
    assert_eq!(out.counts.failed, 1);
    let failed = b.store.failure(RULE, "OPS-1").expect("stored").snapshot;
    let out = apply_as(&b, failed, Some(m), Source::Retry, None)
        .await
        .expect("the retry runs");
    assert_eq!(out.counts.closed, 1);
    assert!(
        b.store.failure(RULE, "OPS-1").is_none(),
        "the failure is settled"
    );
    assert_eq!(
        b.store.mapping("OPS-1").map(|m| m.state),
        Some(RemoteState::Closed)
    );
}

/// An incident created already resolved whose close fails: its mapping (put off for the close)
/// is committed before the failure, so the retry closes it without a look or a second create.
#[tokio::test(start_paused = true)]
async fn a_failed_close_after_a_create_keeps_the_mapping() {
    let b = bench();
    b.gitlab.fault(Call::Close, Fault::Fail(MemError::Lost));
    let out = apply(&b, snap("a", 5, Some(4)), None)
        .await
        .expect("the apply runs");
    assert_eq!((out.counts.created, out.counts.failed), (1, 1));
    let m = b.store.mapping("OPS-1").expect("the mapping is committed");
    assert_eq!(m.state, RemoteState::Opened);
    assert_eq!(b.store.intent(), None, "the intent is settled with it");
    let failed = b.store.failure(RULE, "OPS-1").expect("stored").snapshot;
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_as(&b, failed, Some(m), Source::Retry, None)
        .await
        .expect("the retry runs");
    assert_eq!(b.gitlab.calls(), [Call::Close], "no look, no create");
    assert_eq!(b.gitlab.objects().len(), 1);
    assert_eq!(
        b.store.mapping("OPS-1").map(|m| m.state),
        Some(RemoteState::Closed)
    );
}

/// A stored failure that a newer change already replicated is dropped without a GitLab call.
#[tokio::test(start_paused = true)]
async fn an_obsolete_failure_is_settled_without_a_call() {
    let b = bench();
    let newer = replicated(&b, snap("a", 5, None)).await;
    b.store
        .commit(
            RULE,
            Commit::Failed {
                snapshot: snap("a", 2, None),
                error: "old".into(),
            },
            None,
        )
        .await
        .expect("stored");
    let out = apply_as(&b, snap("a", 2, None), Some(newer), Source::Retry, None)
        .await
        .expect("the retry runs");
    assert_eq!(out.counts.skipped, 1);
    assert!(b.gitlab.calls().is_empty());
    assert!(b.store.failure(RULE, "OPS-1").is_none());
}

/// GitLab storing another `created_at` than asked (a token that is not Owner) is reported.
#[tokio::test(start_paused = true)]
async fn ignored_times_are_reported() {
    let b = bench();
    *b.gitlab.ignore_times.lock().expect("unpoisoned") = Some(at(600));
    let out = apply(&b, snap("a", 1, None), None).await.expect("runs");
    assert!(out.timestamps_ignored);
}

/// A whole cycle: the changes are replicated and the cursor moves to `start − lookback`; the
/// next cycle with nothing new makes one search, no GitLab call and no store write at all (no
/// run-log entry, no cursor write).
#[tokio::test]
async fn an_idle_cycle_costs_one_search_and_no_write() {
    let b = bench();
    let recent = Utc::now() - chrono::Duration::minutes(5);
    let mut s = snap("a", 0, None);
    s.created = recent;
    s.updated = recent;
    b.jira.issues.lock().expect("unpoisoned").push(s);
    let cancel = CancellationToken::new();
    let first = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((first.counts.created, first.jira_requests), (1, 1));
    assert_eq!(first.planned.len(), 1, "the create is listed");
    assert!(first.run_id.is_some(), "a run that wrote is logged");
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    let before = b.store.writes().len();
    let read = b.store.reads().len();
    let second = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((second.counts.created, second.jira_requests), (0, 1));
    assert_eq!(second.outcome, RunOutcome::Ok);
    assert!(b.gitlab.calls().is_empty(), "no GitLab call when idle");
    assert_eq!(
        b.store.writes()[before..],
        [] as [&str; 0],
        "an idle cycle writes nothing to the store"
    );
    assert_eq!(second.run_id, None, "and leaves no run-log entry");
    assert_eq!(
        b.store.reads()[read..],
        ["mappings", "incident_details"],
        "and reads only the mapping and incident details of the change it re-read (the cursor, \
         the failures and the last reconciliation are known from the cycle before)"
    );
    assert_eq!(
        *b.store.runs.lock().expect("unpoisoned"),
        vec![Some(RunOutcome::Ok)],
        "only the run that wrote is logged, and closed"
    );
}

/// An idle cycle still records, every `IDLE_CHECKPOINT`, the cursor it earned and when it
/// checked, so `status` can tell the rule is being checked.
#[tokio::test]
async fn an_idle_rule_is_checkpointed_now_and_then() {
    let b = bench();
    let cancel = CancellationToken::new();
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    let key = checked_meta_key(RULE);
    let first = b.store.meta.lock().expect("unpoisoned").get(&key).cloned();
    assert!(first.is_some(), "a first check is recorded");
    let before = b.store.writes().len();
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(b.store.writes().len(), before, "not again at once");
    let long_ago = Utc::now() - IDLE_CHECKPOINT - chrono::Duration::seconds(1);
    b.marks.lock().expect("unpoisoned").clear();
    b.store
        .meta
        .lock()
        .expect("unpoisoned")
        .insert(key.clone(), long_ago.to_rfc3339());
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(
        b.store.writes()[before..],
        ["advance_cursor", "set_meta"],
        "a checkpoint is due"
    );
    assert!(
        b.store.cursor_of(RULE).is_some(),
        "the cursor the idle walks earned is written"
    );
}

/// Each cycle re-reads exactly the look-back: the search starts at the cursor, and a complete
/// walk leaves the cursor at its start by Jira's clock minus the look-back, written or (idle)
/// kept in memory.
#[tokio::test]
async fn each_cycle_rereads_exactly_the_lookback() {
    let b = bench();
    let lookback = chrono::Duration::minutes(10);
    b.store
        .cursors
        .lock()
        .expect("unpoisoned")
        .insert(RULE.to_owned(), at(0));
    let mut s = snap("a", 20, None);
    s.created = at(20);
    b.jira.issues.lock().expect("unpoisoned").push(s);
    let cancel = CancellationToken::new();
    let lower = |n: usize| {
        let asked = b.jira.asked.lock().expect("unpoisoned");
        asked[n]
            .split("updated >= ")
            .nth(1)
            .and_then(|rest| rest.split(" ORDER BY").next())
            .expect("a lower bound")
            .to_owned()
    };
    let literal = |t| jql::literal(t, chrono_tz::UTC);

    *b.jira.date.lock().expect("unpoisoned") = Some(at(30));
    let one = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 1");
    assert_eq!(one.counts.created, 1);
    assert_eq!(
        lower(0),
        literal(at(0)),
        "the first search starts at the cursor"
    );
    assert_eq!(
        b.store.cursor_of(RULE),
        Some(at(30) - lookback),
        "the walk that started at minute 30 (Jira's clock) leaves the cursor a look-back before"
    );

    *b.jira.date.lock().expect("unpoisoned") = Some(at(32));
    let two = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 2");
    assert_eq!(two.counts.created, 0);
    assert_eq!(
        lower(1),
        literal(at(30) - lookback),
        "the next search re-reads the look-back before the last walk's start, not twice that"
    );

    *b.jira.date.lock().expect("unpoisoned") = Some(at(34));
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 3");
    assert_eq!(
        lower(2),
        literal(at(32) - lookback),
        "an idle walk's cursor, kept in memory, moves the next search too"
    );
}

/// A live cycle with many changes applies several issues at once, up to the concurrency, and
/// never two writes for one issue at once: an issue's retried change and its newer change read
/// by the search are applied one after the other, the newer last.
#[tokio::test(start_paused = true)]
async fn a_cycle_applies_issues_concurrently_one_write_per_issue() {
    let b = bench();
    let old = Utc::now() - chrono::Duration::hours(1);
    let issues: Vec<IssueSnapshot> = (1..=20)
        .map(|n| {
            let mut s = numbered(n, old + chrono::Duration::seconds(n as i64));
            s.resolved_at = Some(s.updated);
            s
        })
        .collect();
    *b.jira.issues.lock().expect("unpoisoned") = issues;
    // OPS-1's creation failed in an earlier run and is due again.
    b.store
        .commit(
            RULE,
            Commit::Failed {
                snapshot: numbered(1, old),
                error: "earlier".into(),
            },
            None,
        )
        .await
        .expect("stored");
    b.store.all_due();
    // Every write waits until 4 are in flight: the run ends only if 4 run at once.
    b.gitlab.gate.open_at(4);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        b.run_rule(&rule(), RunMode::Once, &CancellationToken::new()),
    )
    .await
    .expect("four writes were in flight at once")
    .expect("the run ends");
    assert_eq!(b.gitlab.gate.max(), 4, "up to the concurrency, no more");
    assert_eq!(
        b.gitlab.gate.overlapped(),
        Vec::<JiraKey>::new(),
        "never two writes for one issue in flight"
    );
    assert_eq!(
        (
            report.counts.created,
            report.counts.closed,
            report.counts.failed
        ),
        (20, 20, 0),
        "{report:?}"
    );
    let objects = b.gitlab.objects();
    assert_eq!(objects.len(), 20, "one object per issue");
    assert!(
        objects.iter().all(|o| o.state == RemoteState::Closed),
        "the newer change of OPS-1 was applied after its retry: {objects:?}"
    );
    assert!(b.store.failure(RULE, "OPS-1").is_none(), "settled");
}

/// A cancellation with every slot busy starts nothing new: the writes in flight finish and
/// commit, the run is recorded as cancelled, and the cursor stays before what was not started.
#[tokio::test(start_paused = true)]
async fn a_cancelled_cycle_finishes_what_is_in_flight_and_starts_nothing() {
    let b = bench();
    let old = Utc::now() - chrono::Duration::hours(1);
    let issues: Vec<IssueSnapshot> = (1..=6)
        .map(|n| numbered(n, old + chrono::Duration::seconds(n as i64)))
        .collect();
    let fifth = issues[4].updated;
    *b.jira.issues.lock().expect("unpoisoned") = issues;
    let held: Vec<_> = (1..=4)
        .map(|n| b.gitlab.gate.hold(&format!("OPS-{n}")))
        .collect();
    let cancel = CancellationToken::new();
    let the_rule = rule();
    let run = b.run_rule(&the_rule, RunMode::Once, &cancel);
    let watch = async {
        for _ in 0..10_000 {
            if b.gitlab.gate.in_flight() == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.gitlab.gate.in_flight(),
            4,
            "four creates in flight (the concurrency), all held"
        );
        cancel.cancel();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        for release in held {
            release.send(None).expect("held");
        }
    };
    let (result, ()) = tokio::join!(run, watch);
    let report = result.expect("a cancelled run is no error");
    assert_eq!(report.outcome, RunOutcome::Cancelled);
    assert_eq!(report.counts.created, 4, "the four in flight finished");
    assert_eq!(
        b.gitlab.objects().len(),
        4,
        "nothing started after the cancel"
    );
    assert_eq!(
        b.store.mappings.lock().expect("unpoisoned").len(),
        4,
        "and committed"
    );
    let cursor = b.store.cursor_of(RULE).expect("a cursor");
    assert!(cursor < fifth, "before OPS-5, not started: {cursor}");
    assert_eq!(
        *b.store.runs.lock().expect("unpoisoned"),
        vec![Some(RunOutcome::Cancelled)]
    );
}

/// Issue `n` of a backfill's walk from `start`: created `n` minutes after it.
fn paged_issue(start: DateTime<Utc>, n: u64) -> IssueSnapshot {
    numbered(n, start + chrono::Duration::minutes(n as i64))
}

/// Jira answers a backfill's walk from `start` with three pages of four issues (OPS-1 to
/// OPS-12), a minute apart, as the walk by `created` reads them.
fn three_pages_of_four(b: &Bench, start: DateTime<Utc>) {
    *b.jira.pages.lock().expect("unpoisoned") = (0..3)
        .map(|p| SearchPage {
            issues: (1..=4).map(|i| paged_issue(start, p * 4 + i)).collect(),
            next: (p < 2).then_some(PageCursor::Token(format!("t{p}"))),
            ..SearchPage::default()
        })
        .collect();
}

/// A backfill from `start`, four issues at once.
fn backfill_from(start: DateTime<Utc>) -> backfill::BackfillRequest {
    backfill::BackfillRequest {
        since: start,
        until: None,
        concurrency: 4,
        sample: 0,
    }
}

/// A backfill starts the next page's issues while one of this page's is still being written,
/// so the writes in flight do not drain at every page; the position it would resume from moves
/// past a page only once all of that page's issues are written.
#[tokio::test(start_paused = true)]
async fn a_backfill_writes_the_next_pages_while_one_issue_is_held() {
    let b = bench();
    let start = Utc::now() - chrono::Duration::days(1);
    let issue = |n: u64| paged_issue(start, n);
    three_pages_of_four(&b, start);
    *b.jira.issues.lock().expect("unpoisoned") = (1..=12).map(issue).collect();
    let release = b.gitlab.gate.hold("OPS-1");
    let cancel = CancellationToken::new();
    let the_rule = rule();
    let req = backfill_from(start);
    let run = b.backfill(&the_rule, &req, &backfill::NoProgress, &cancel);
    let resume_points = || {
        b.store
            .meta
            .lock()
            .expect("unpoisoned")
            .keys()
            .filter(|k| k.starts_with("backfill:"))
            .count()
    };
    let watch = async {
        for _ in 0..10_000 {
            if b.store.mappings.lock().expect("unpoisoned").len() == 11 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.store.mappings.lock().expect("unpoisoned").len(),
            11,
            "the later pages are written while OPS-1, on the first, is held"
        );
        assert_eq!(
            resume_points(),
            0,
            "no position is committed past the first page while OPS-1 is unwritten"
        );
        release.send(None).expect("the write is held");
    };
    let (result, ()) = tokio::join!(run, watch);
    let report = result.expect("the backfill runs");
    assert_eq!(report.counts.created, 12);
    assert_eq!(b.gitlab.objects().len(), 12, "one object each");
    assert!(
        b.gitlab.gate.overlapped().is_empty(),
        "one write per issue at a time"
    );
    let meta = b.store.meta.lock().expect("unpoisoned").clone();
    let resume = meta
        .iter()
        .find(|(k, _)| k.starts_with("backfill:"))
        .map(|(_, v)| v.clone())
        .expect("the position is committed at the end");
    assert_eq!(
        DateTime::parse_from_rfc3339(&resume).expect("a time"),
        issue(12).created,
        "after the last page"
    );
    let writes = b.store.writes.lock().expect("unpoisoned").clone();
    let count = |w: &str| writes.iter().filter(|x| **x == w).count();
    assert_eq!(
        (count("begin_intents"), count("begin_intent")),
        (3, 0),
        "each page's creates are begun together: {writes:?}"
    );
}

/// A cancelled backfill withdraws the intents it began with a page for creates it then never
/// sent, so that the resumed backfill creates them without looking for them first.
#[tokio::test(start_paused = true)]
async fn a_cancelled_backfill_withdraws_the_intents_of_creates_never_sent() {
    let b = bench();
    let start = Utc::now() - chrono::Duration::days(1);
    three_pages_of_four(&b, start);
    let held: Vec<_> = (1..=4)
        .map(|n| b.gitlab.gate.hold(&format!("OPS-{n}")))
        .collect();
    let cancel = CancellationToken::new();
    let the_rule = rule();
    let req = backfill_from(start);
    let run = b.backfill(&the_rule, &req, &backfill::NoProgress, &cancel);
    let watch = async {
        for _ in 0..10_000 {
            let begun = b.store.intents.lock().expect("unpoisoned").len();
            if b.gitlab.gate.in_flight() == 4 && begun == 8 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            (
                b.gitlab.gate.in_flight(),
                b.store.intents.lock().expect("unpoisoned").len()
            ),
            (4, 8),
            "the first page's four creates in flight, the second page's begun"
        );
        cancel.cancel();
        for release in held {
            release.send(None).expect("held");
        }
    };
    let (result, ()) = tokio::join!(run, watch);
    let report = result.expect("a cancelled backfill is no error");
    assert_eq!(report.outcome, RunOutcome::Cancelled);
    assert_eq!(report.counts.created, 4, "the four in flight finished");
    assert!(
        b.store.intents.lock().expect("unpoisoned").is_empty(),
        "the second page's intents are withdrawn, the first page's settled by their mappings"
    );
    let writes = b.store.writes.lock().expect("unpoisoned").clone();
    assert!(writes.contains(&"withdraw_intents"), "{writes:?}");
}

/// The cursor never passes a change not finished: while the oldest change's write is held, the
/// later ones commit with the cursor no further than it; when it then fails in a way that stops
/// the run, it is not recorded, the cursor is still before it, and the next cycle replicates it.
#[tokio::test(start_paused = true)]
async fn the_cursor_stays_before_an_unfinished_change() {
    let b = bench();
    let old = Utc::now() - chrono::Duration::hours(1);
    let issues: Vec<IssueSnapshot> = (1..=6)
        .map(|n| numbered(n, old + chrono::Duration::seconds(n as i64)))
        .collect();
    let oldest = issues[0].updated;
    *b.jira.issues.lock().expect("unpoisoned") = issues;
    let release = b.gitlab.gate.hold("OPS-1");
    let cancel = CancellationToken::new();
    let the_rule = rule();
    let run = b.run_rule(&the_rule, RunMode::Once, &cancel);
    let watch = async {
        for _ in 0..10_000 {
            if b.store.mappings.lock().expect("unpoisoned").len() == 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.store.mappings.lock().expect("unpoisoned").len(),
            5,
            "the five later issues are replicated while OPS-1's write is held"
        );
        let cursor = b
            .store
            .cursor_of(RULE)
            .expect("the commits carried a cursor");
        assert!(
            cursor <= oldest,
            "the cursor ({cursor}) stays before OPS-1's change ({oldest}), still in flight"
        );
        release
            .send(Some(MemError::Fatal))
            .expect("the write is held");
    };
    let (result, ()) = tokio::join!(run, watch);
    let err = result.expect_err("a refusal that stops the run stops it");
    assert!(matches!(err, EngineError::GitLab { .. }), "{err:?}");
    let cursor = b.store.cursor_of(RULE).expect("a cursor");
    assert!(cursor <= oldest, "still before OPS-1's change: {cursor}");
    assert!(b.store.failure(RULE, "OPS-1").is_none(), "not recorded");
    assert!(b.store.mapping("OPS-1").is_none());

    let next = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("the next cycle runs");
    assert_eq!(next.counts.created, 1, "OPS-1 is read again and created");
    assert_eq!(b.gitlab.objects().len(), 6, "nothing twice");
}

/// A dry run runs the same executor over wrapped ports: it plans what a real run would do
/// (create, then close, counted as such) and writes nothing to GitLab or the store.
#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let b = SyncEngine::new(
        MemJira::default(),
        DryRunSink::new(MemGitLab::default()),
        DryRunStore::new(MemStore::default()),
        settings(),
    );
    let recent = Utc::now() - chrono::Duration::minutes(5);
    let mut s = snap("a", 0, None);
    s.created = recent - chrono::Duration::minutes(1);
    s.updated = recent;
    s.resolved_at = Some(recent);
    b.jira.issues.lock().expect("unpoisoned").push(s);
    let cancel = CancellationToken::new();
    let report = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((report.counts.created, report.counts.closed), (1, 1));
    assert_eq!(report.planned.len(), 1);
    assert_eq!(report.planned[0].action, "create+close");
    let store = b.store().inner();
    assert!(store.commits().is_empty(), "no commit reached the store");
    assert_eq!(store.cursor_of(RULE), None, "the cursor did not move");
    assert!(store.meta.lock().expect("unpoisoned").is_empty());
    assert!(store.runs.lock().expect("unpoisoned").is_empty());
}

/// An object a person deleted: the write's "gone" is recorded on the mapping, not as a
/// failure, and nothing is sent for it again, whatever Jira does.
#[tokio::test(start_paused = true)]
async fn a_deleted_object_is_gone_for_good() {
    let b = bench();
    let m = replicated(&b, snap("a", 1, None)).await;
    b.gitlab.delete(1, m.iid.expect("an iid"));
    let out = apply(&b, snap("a", 5, Some(4)), Some(m))
        .await
        .expect("the apply runs");
    assert_eq!((out.counts.failed, out.counts.closed), (0, 0));
    assert!(b.store.failure(RULE, "OPS-1").is_none(), "no failure");
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert!(m.gone_at.is_some(), "recorded as gone: {m:?}");
    assert_eq!(m.jira_updated, at(5), "the change is accounted for");
    assert_eq!(b.store.cursor_of(RULE), Some(at(50)), "the cursor moves");
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    let out = apply(&b, snap("b", 9, None), Some(m))
        .await
        .expect("the apply runs");
    assert_eq!(out.counts.skipped, 1);
    assert!(b.gitlab.calls().is_empty(), "never written again");
    assert!(out.action.is_none(), "nothing planned");
}

/// An issue a person moved to another project: the write that finds it moved (its answer's
/// `moved_to_id`) is sent to the copy, which the mapping keeps; a reopen never reopens the
/// moved original; a copy out of the token's sight is gone.
#[rstest]
#[case::close(snap("a", 1, None), snap("a", 5, Some(4)), vec![Call::Close, Call::Follow, Call::Close], Some(RemoteState::Closed))]
#[case::update(snap("a", 1, None), snap("b", 5, None), vec![Call::Update, Call::Follow, Call::Update], Some(RemoteState::Opened))]
#[case::reopen(snap("a", 1, Some(1)), snap("a", 5, None), vec![Call::Reopen, Call::Follow, Call::Reopen], Some(RemoteState::Opened))]
#[case::out_of_sight(snap("a", 1, None), snap("a", 5, Some(4)), vec![Call::Close, Call::Follow], None)]
#[tokio::test(start_paused = true)]
async fn a_moved_issue_is_followed_to_its_copy(
    #[case] first: IssueSnapshot,
    #[case] then: IssueSnapshot,
    #[case] calls: Vec<Call>,
    #[case] copy_state: Option<RemoteState>,
) {
    let b = bench();
    let m = replicated(&b, first).await;
    let original = b.gitlab.object(1, 1).expect("the original");
    let copy_iid = b.gitlab.move_to(1, 2);
    if copy_state.is_none() {
        b.gitlab.delete(2, copy_iid);
    }
    let out = apply(&b, then.clone(), Some(m))
        .await
        .expect("the apply runs");
    assert_eq!(b.gitlab.calls(), calls);
    assert_eq!(out.counts.failed, 0, "{out:?}");
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert_eq!(
        (m.project_id, m.iid),
        (Some(1), Some(1)),
        "the identity stays"
    );
    let Some(state) = copy_state else {
        assert!(m.gone_at.is_some(), "moved out of sight: gone");
        return;
    };
    assert_eq!(
        m.moved_to,
        Some(MovedTo {
            project_id: 2,
            iid: copy_iid
        })
    );
    assert_eq!(m.state, state);
    let copy = b.gitlab.object(2, copy_iid).expect("the copy");
    assert_eq!(copy.state, state, "the write reached the copy");
    assert_eq!(copy.title, format!("[OPS-1] {}", then.summary));
    let after = b.gitlab.object(1, 1).expect("the original");
    assert_eq!(
        (after.state, after.created_at),
        (RemoteState::Closed, original.created_at),
        "the original stays closed"
    );
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply(&b, snap("c", 9, None), Some(m)).await.expect("runs");
    assert!(
        !b.gitlab.calls().contains(&Call::Follow),
        "later writes go straight to the copy: {:?}",
        b.gitlab.calls()
    );
    let copy = b.gitlab.object(2, copy_iid).expect("the copy");
    assert_eq!(
        (copy.state, copy.title.as_str()),
        (RemoteState::Opened, "[OPS-1] c")
    );
}

/// An alert recovery with no open alert to resolve is recorded as resolved, not as a failure.
#[tokio::test(start_paused = true)]
async fn a_close_with_nothing_to_close_is_resolved() {
    let b = bench();
    let m = replicated(&b, snap("a", 1, None)).await;
    b.gitlab
        .fault(Call::Close, Fault::Fail(MemError::NoOpenAlert));
    let out = apply(&b, snap("a", 5, Some(4)), Some(m))
        .await
        .expect("the apply runs");
    assert_eq!((out.counts.closed, out.counts.failed), (1, 0));
    assert!(b.store.failure(RULE, "OPS-1").is_none());
    assert_eq!(
        b.store.mapping("OPS-1").map(|m| m.state),
        Some(RemoteState::Closed)
    );
}

/// A create or rewrite refused as too large is sent again with its description halved until
/// it fits; what fits is kept as current, so the next cycle does not rewrite it again.
#[tokio::test(start_paused = true)]
async fn a_request_too_large_is_halved_until_it_fits() {
    let b = bench();
    *b.gitlab.max_description.lock().expect("unpoisoned") = Some(600);
    let mut s = snap("a", 1, None);
    s.description = Some("word ".repeat(400));
    apply(&b, s.clone(), None).await.expect("the apply runs");
    let creates = b
        .gitlab
        .calls()
        .iter()
        .filter(|c| **c == Call::Create)
        .count();
    assert_eq!(
        creates,
        4,
        "1999 characters of text, then 999, 499 and 249: {:?}",
        b.gitlab.calls()
    );
    let made = &b.gitlab.objects()[0];
    assert!(
        made.description
            .starts_with("https://jira.example/browse/OPS-1\n\nword")
    );
    assert!(
        made.description
            .trim_end()
            .ends_with(render::TRUNCATED_NOTE)
    );
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    let m = b.store.mapping("OPS-1").expect("mapped");
    apply(&b, s.clone(), Some(m)).await.expect("runs");
    assert!(b.gitlab.calls().is_empty(), "what fitted is current");

    let mut edited = s;
    edited.updated = at(5);
    edited.description = Some("other ".repeat(400));
    let m = b.store.mapping("OPS-1").expect("mapped");
    let out = apply(&b, edited, Some(m)).await.expect("runs");
    assert_eq!((out.counts.updated, out.counts.failed), (1, 0));
    assert!(b.gitlab.objects()[0].description.contains("other"));

    *b.gitlab.max_description.lock().expect("unpoisoned") = Some(10);
    let mut hopeless = snap("x", 9, None);
    hopeless.description = Some("z".repeat(100));
    let m = b.store.mapping("OPS-1").expect("mapped");
    let out = apply(&b, hopeless, Some(m)).await.expect("runs");
    assert_eq!(out.counts.failed, 1, "nothing left to cut: a failure");
}

/// Three issues in a row failing on an outage stop the run (the third is left for the next
/// cycle, not recorded); any other answer in between starts the count again.
#[rstest]
#[case::down(vec![MemError::Down; 5], Err(2))]
#[case::answered_in_between(
    vec![MemError::Down, MemError::Down, MemError::Refused, MemError::Down, MemError::Down],
    Ok(5)
)]
#[tokio::test(start_paused = true)]
async fn an_outage_stops_the_run(
    #[case] faults: Vec<MemError>,
    #[case] failed: Result<u64, usize>,
) {
    let b = bench();
    let recent = Utc::now() - chrono::Duration::minutes(5);
    for n in 1..=5 {
        let mut s = snap("a", 0, None);
        s.id = Some(JiraId::parse(&format!("{n}")).expect("an id"));
        s.key = JiraKey::parse(&format!("OPS-{n}")).expect("a key");
        s.created = recent;
        s.updated = recent + chrono::Duration::seconds(n);
        b.jira.issues.lock().expect("unpoisoned").push(s);
    }
    for e in faults {
        b.gitlab.fault(Call::Create, Fault::Fail(e));
    }
    let result = b
        .run_rule(&rule(), RunMode::Once, &CancellationToken::new())
        .await;
    let recorded = b.store.failures.lock().expect("unpoisoned").len();
    match failed {
        Ok(n) => {
            let report = result.expect("the run goes on");
            assert_eq!((report.counts.failed, recorded), (n, n as usize));
        }
        Err(n) => {
            let err = result.expect_err("the run stops");
            assert!(
                matches!(err, EngineError::Outage { failures: 3, .. }),
                "{err:?}"
            );
            assert!(err.is_retryable());
            assert_eq!(recorded, n);
            let creates = b
                .gitlab
                .calls()
                .iter()
                .filter(|c| **c == Call::Create)
                .count();
            assert!(
                creates <= 3 + 3,
                "no write starts after the third outage in a row; at most the three others in \
                 flight with it (concurrency 4) were sent: {creates}"
            );
        }
    }
}

/// A failed issue waits for its backoff: the next cycles send nothing for it, even when the
/// search reads the same change again; once due it is tried once per cycle, not twice.
#[tokio::test(start_paused = true)]
async fn a_failure_waits_for_its_backoff() {
    let b = bench();
    let recent = Utc::now() - chrono::Duration::minutes(5);
    let mut s = snap("a", 0, None);
    s.created = recent;
    s.updated = recent;
    b.jira.issues.lock().expect("unpoisoned").push(s);
    b.gitlab.fault(Call::Create, Fault::Fail(MemError::Refused));
    let cancel = CancellationToken::new();
    let first = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(first.counts.failed, 1);
    let f = b.store.failure(RULE, "OPS-1").expect("stored");
    let wait = f.next_attempt_at - Utc::now();
    assert!(wait > chrono::Duration::seconds(50) && wait <= chrono::Duration::minutes(1));

    b.gitlab.calls.lock().expect("unpoisoned").clear();
    let second = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((second.counts.failed, second.counts.skipped), (0, 1));
    assert!(
        b.gitlab.calls().is_empty(),
        "not due: {:?}",
        b.gitlab.calls()
    );

    b.store.all_due();
    b.gitlab.fault(Call::Create, Fault::Fail(MemError::Refused));
    let third = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(third.counts.failed, 1, "{third:?}");
    let creates = b
        .gitlab
        .calls()
        .iter()
        .filter(|c| **c == Call::Create)
        .count();
    assert_eq!(creates, 1, "tried once, not again when the search reads it");
    let f = b.store.failure(RULE, "OPS-1").expect("stored");
    assert_eq!(f.attempts, 2);
    assert!(
        f.next_attempt_at - Utc::now() > chrono::Duration::seconds(110),
        "two minutes now"
    );
}

/// GitLab filing an incident as a plain issue (a token below Reporter) is reported, and warned
/// about once per project.
#[tokio::test(start_paused = true)]
async fn incidents_filed_as_issues_are_reported() {
    let b = bench();
    *b.gitlab.below_reporter.lock().expect("unpoisoned") = true;
    let out = apply(&b, snap("a", 1, None), None).await.expect("runs");
    assert!(out.filed_as_issue);
    let mut other = snap("b", 1, None);
    other.key = JiraKey::parse("OPS-2").expect("a key");
    other.id = Some(JiraId::parse("10002").expect("an id"));
    let out = apply(&b, other, None).await.expect("runs");
    assert!(out.filed_as_issue);
    assert_eq!(
        b.warned_issue_type.lock().expect("unpoisoned").len(),
        1,
        "one warning for the project"
    );
}

/// The median of an even count is the mean of the middle two, as GitLab's DORA takes it.
#[test]
fn median_even_and_odd() {
    let m = |v: &[i64]| {
        let mut d: Vec<_> = v.iter().map(|s| chrono::Duration::seconds(*s)).collect();
        median(&mut d).map(|d| d.num_seconds())
    };
    assert_eq!(m(&[]), None);
    assert_eq!(m(&[5, 1, 3]), Some(3));
    assert_eq!(
        m(&[4, 1, 3, 2]),
        Some(2),
        "(2 s + 3 s) / 2 = 2.5 s, 2 in whole seconds"
    );
}

/// A run's outcome follows from how its walk ended and whether issues failed.
#[test]
fn conclusions() {
    assert_eq!(conclude(&Ok(true), 0), (RunOutcome::Ok, None));
    assert_eq!(conclude(&Ok(true), 2), (RunOutcome::Partial, None));
    assert_eq!(conclude(&Ok(false), 2), (RunOutcome::Cancelled, None));
    let err = Err(EngineError::Jira {
        rule: "r".into(),
        source: Cause::new(MemError::Refused),
    });
    let (outcome, why) = conclude(&err, 0);
    assert_eq!(outcome, RunOutcome::Failed);
    assert_eq!(why.as_deref(), Some("rule \"r\": Jira failed: refused"));
}

/// Back-dates every mapping's last write by a day and forgets the last reconciliation, so the
/// next cycle reconciles them all.
fn reconciliation_due(b: &Bench) {
    for at in b.store.written.lock().expect("unpoisoned").values_mut() {
        *at -= chrono::Duration::days(1);
    }
    b.store.meta.lock().expect("unpoisoned").clear();
    b.marks.lock().expect("unpoisoned").clear();
}

fn numbered(n: u64, updated: DateTime<Utc>) -> IssueSnapshot {
    IssueSnapshot {
        id: Some(JiraId::parse(&(10_000 + n).to_string()).expect("an id")),
        key: JiraKey::parse(&format!("OPS-{n}")).expect("a key"),
        created: updated,
        updated,
        ..snap("x", 0, None)
    }
}

/// Reconciliation: an issue the search stopped returning whose change is older than the
/// cursor left the JQL (labelled, then closed at its resolution); one Jira no longer shows was
/// deleted (labelled and closed); 250 open mappings cost 3 requests; not due, none.
#[rstest]
#[case::label_and_close(OnLeave::Label, OnDelete::Close, vec!["jira::out-of-scope"], vec!["jira::deleted"], true)]
#[case::keep_and_keep(OnLeave::Keep, OnDelete::Keep, vec![], vec![], false)]
#[tokio::test]
async fn reconciliation_follows_every_issue(
    #[case] on_leave: OnLeave,
    #[case] on_delete: OnDelete,
    #[case] left_labels: Vec<&str>,
    #[case] deleted_labels: Vec<&str>,
    #[case] deleted_closed: bool,
) {
    let b = bench();
    let rule = RuleConfig {
        on_leave,
        on_delete,
        ..rule()
    };
    let cancel = CancellationToken::new();
    let old = Utc::now() - chrono::Duration::hours(2);
    let issues: Vec<IssueSnapshot> = (1..=250).map(|n| numbered(n, old)).collect();
    *b.jira.issues.lock().expect("unpoisoned") = issues.clone();
    b.run_rule(&rule, RunMode::Once, &cancel)
        .await
        .expect("run 1");
    // OPS-1 leaves the JQL and is resolved (an hour ago); OPS-2 is deleted.
    let mut left = issues[0].clone();
    left.updated = old + chrono::Duration::minutes(30);
    left.resolved_at = Some(left.updated);
    {
        let mut all = b.jira.issues.lock().expect("unpoisoned");
        all.retain(|s| s.key.as_str() != "OPS-1" && s.key.as_str() != "OPS-2");
    }
    b.jira
        .elsewhere
        .lock()
        .expect("unpoisoned")
        .push(left.clone());
    reconciliation_due(&b);
    let report = b
        .run_rule(&rule, RunMode::Once, &cancel)
        .await
        .expect("run 2");
    let rec = report.reconcile.expect("reconciled");
    assert_eq!(
        (rec.followed, rec.jira_requests, rec.left, rec.deleted),
        (250, 3, 1, 1)
    );
    assert_eq!(
        *b.jira.read_backs.lock().expect("unpoisoned"),
        vec![100, 100, 50]
    );
    let objects = b.gitlab.objects();
    let one = objects
        .iter()
        .find(|o| o.jira_key.as_str() == "OPS-1")
        .expect("OPS-1");
    assert_eq!(
        (one.state, one.closed_at),
        (RemoteState::Closed, left.resolved_at)
    );
    let extra = |o: &testkit::MemObject| -> Vec<String> {
        o.labels
            .iter()
            .filter(|l| l.starts_with("jira::"))
            .cloned()
            .collect()
    };
    assert_eq!(extra(one), left_labels);
    let two = objects
        .iter()
        .find(|o| o.jira_key.as_str() == "OPS-2")
        .expect("OPS-2");
    assert_eq!(extra(two), deleted_labels);
    assert_eq!(two.state == RemoteState::Closed, deleted_closed);
    let m = b.store.mapping("OPS-2").expect("mapped");
    assert_eq!(m.scope, crate::domain::IssueScope::Deleted);
    // Not due again: no read by id.
    b.run_rule(&rule, RunMode::Once, &cancel)
        .await
        .expect("run 3");
    assert_eq!(b.jira.read_backs.lock().expect("unpoisoned").len(), 3);
}

/// An issue whose latest change failed to replicate (stored for a retry) is behind because of
/// that, not because it left the JQL: the reconciliation leaves it to the retry.
#[tokio::test]
async fn a_failing_issue_is_not_taken_for_one_that_left() {
    let b = bench();
    let cancel = CancellationToken::new();
    let old = Utc::now() - chrono::Duration::hours(2);
    *b.jira.issues.lock().expect("unpoisoned") = vec![numbered(1, old)];
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 1");
    let mut edited = numbered(1, old + chrono::Duration::minutes(30));
    edited.summary = "edited".into();
    *b.jira.issues.lock().expect("unpoisoned") = vec![edited];
    for _ in 0..2 {
        b.gitlab.fault(Call::Update, Fault::Fail(MemError::Refused));
    }
    // The edit fails, and again on the retry of the next run, whose search no longer returns
    // the issue (only its re-read by id would).
    b.run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 2");
    let moved: Vec<IssueSnapshot> = std::mem::take(&mut *b.jira.issues.lock().expect("unpoisoned"));
    *b.jira.elsewhere.lock().expect("unpoisoned") = moved;
    reconciliation_due(&b);
    let report = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("run 3");
    assert!(b.store.failure(RULE, "OPS-1").is_some(), "still failing");
    let rec = report.reconcile.expect("reconciled");
    assert_eq!((rec.followed, rec.left), (0, 0), "{rec:?}");
    let m = b.store.mapping("OPS-1").expect("mapped");
    assert_eq!(m.scope, crate::domain::IssueScope::InScope);
}

/// Each issue a run writes to GitLab reports how long after its change in Jira it was written
/// (for the lag histogram); a run that writes nothing reports none.
#[tokio::test]
async fn a_write_reports_its_lag_from_the_jira_change() {
    let b = bench();
    let changed = Utc::now() - chrono::Duration::minutes(5);
    let mut s = snap("a", 0, None);
    s.created = changed;
    s.updated = changed;
    b.jira.issues.lock().expect("unpoisoned").push(s);
    let cancel = CancellationToken::new();
    let first = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(first.counts.created, 1);
    assert_eq!(first.lags.len(), 1, "one write, one lag: {:?}", first.lags);
    let lag = first.lags[0];
    assert!(
        lag >= Duration::from_secs(300) && lag < Duration::from_secs(360),
        "written about five minutes after the change: {lag:?}"
    );
    let second = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert!(second.lags.is_empty(), "nothing written: {:?}", second.lags);
}

/// A rule replaying `To Do` and `In Progress` as the stage labels `wf::todo` and `wf::doing`.
fn staged_rule() -> RuleConfig {
    let mut history = crate::config::HistoryConfig::default();
    history
        .stage_labels
        .insert("To Do".into(), "wf::todo".into());
    history
        .stage_labels
        .insert("In Progress".into(), "wf::doing".into());
    RuleConfig { history, ..rule() }
}

/// A stage write whose answer was lost is looked up in GitLab's label events on the retry and
/// not sent again; the next step follows, each label event once, at the transition's time.
#[tokio::test(start_paused = true)]
async fn a_stage_step_whose_answer_was_lost_is_not_sent_twice() {
    let b = bench();
    let mut s = snap("stages", 5, None);
    s.status = "In Progress".into();
    *b.jira.issues.lock().expect("unpoisoned") = vec![s];
    b.jira.history.lock().expect("unpoisoned").insert(
        JiraId::parse("10001").expect("an id"),
        vec![crate::domain::Transition {
            at: at(3),
            from: Some("To Do".into()),
            to: "In Progress".into(),
            to_done: false,
        }],
    );
    b.gitlab.fault(Call::Relabel, Fault::ApplyThenLose);
    let cancel = CancellationToken::new();
    let first = b
        .run_rule(&staged_rule(), RunMode::Once, &cancel)
        .await
        .expect("run 1");
    assert_eq!(first.counts.failed, 1, "the lost answer fails the issue");
    b.store.all_due();
    let second = b
        .run_rule(&staged_rule(), RunMode::Once, &cancel)
        .await
        .expect("run 2");
    assert_eq!(second.counts.failed, 0, "{second:?}");
    let calls = b.gitlab.calls();
    let count = |c: Call| calls.iter().filter(|x| **x == c).count();
    assert_eq!(
        count(Call::Relabel),
        2,
        "the lost step is not sent again: {calls:?}"
    );
    assert_eq!(count(Call::LabelEvents), 1, "looked up once");
    let events: Vec<(String, bool, DateTime<Utc>)> = b.gitlab.objects()[0]
        .label_events
        .iter()
        .map(|e| (e.label.clone(), e.added, e.at))
        .collect();
    assert_eq!(
        events,
        vec![
            ("wf::todo".into(), true, at(0)),
            ("wf::todo".into(), false, at(3)),
            ("wf::doing".into(), true, at(3)),
        ],
        "each label event once, at the transition's time"
    );
    let third = b
        .run_rule(&staged_rule(), RunMode::Once, &cancel)
        .await
        .expect("run 3");
    assert_eq!(
        count(Call::Relabel),
        2,
        "a re-read writes nothing: {third:?}"
    );
    assert_eq!(
        b.jira.history_reads.lock().expect("unpoisoned").len(),
        1,
        "the changelog is read once: the stored failure keeps the transitions, and a re-read \
         of an applied change needs none"
    );
}

/// With `link_back` on: the create wants its link just before the mapping is committed and the
/// run sends it after its writes; a link Jira refuses fails neither the issue nor the run; the
/// next idle cycle sends nothing and reads nothing more from the store than without links (when
/// links are due is known); once the backoff is over the link is sent, once.
#[tokio::test]
async fn link_back_after_the_write_and_idle_costs_nothing() {
    let b = SyncEngine::new(
        MemJira::default(),
        MemGitLab::default(),
        MemStore::default(),
        EngineSettings {
            link_back: Some(super::link_back::LinkBackSettings::new(
                &url::Url::parse("https://gitlab.example/").expect("a URL"),
            )),
            ..settings()
        },
    );
    let recent = Utc::now() - chrono::Duration::minutes(5);
    let mut s = snap("a", 0, None);
    s.created = recent;
    s.updated = recent;
    b.jira.issues.lock().expect("unpoisoned").push(s);
    b.jira
        .link_faults
        .lock()
        .expect("unpoisoned")
        .push_back(MemError::Refused);
    let cancel = CancellationToken::new();
    let first = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!(first.counts.created, 1, "{first:?}");
    assert_eq!(
        first.counts.failed, 0,
        "a refused link is not the issue's failure"
    );
    assert_eq!(first.outcome, RunOutcome::Ok);
    assert_eq!((first.links.sent, first.links.failed), (0, 1));
    let writes = b.store.writes();
    let wanted = writes
        .iter()
        .position(|w| *w == "want_link")
        .expect("the link is wanted");
    assert_eq!(
        writes[wanted + 1],
        "commit",
        "wanted just before the mapping's commit: {writes:?}"
    );
    assert!(b.jira.links.lock().expect("unpoisoned").is_empty());

    let before = b.store.writes().len();
    let read = b.store.reads().len();
    let second = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((second.links.sent, second.links.failed), (0, 0));
    assert_eq!(
        b.jira.links_sent.lock().expect("unpoisoned").len(),
        1,
        "the refused link waits for its backoff"
    );
    assert_eq!(b.store.writes()[before..], [] as [&str; 0]);
    assert_eq!(
        b.store.reads()[read..],
        ["mappings", "incident_details"],
        "when the links are due is known without asking the store (the re-read change's mapping \
         and incident details are read as without links)"
    );

    // The backoff is over (in the store, and in what the engine knows of it, as a minute
    // passing would make it): the link is sent, once.
    let past = Utc::now() - chrono::Duration::seconds(1);
    for l in b.store.links.lock().expect("unpoisoned").values_mut() {
        l.next_attempt_at = Some(past);
    }
    b.links_due
        .lock()
        .expect("unpoisoned")
        .insert(rule().name, super::link_back::LinksDue::At(past));
    let third = b
        .run_rule(&rule(), RunMode::Once, &cancel)
        .await
        .expect("runs");
    assert_eq!((third.links.sent, third.links.failed), (1, 0));
    let links = b.jira.links.lock().expect("unpoisoned").clone();
    assert_eq!(links.len(), 1);
    let link = links.values().next().expect("one link");
    assert!(
        link.global_id.starts_with("gitlab:gitlab.example:1:"),
        "{link:?}"
    );
    assert!(!link.resolved);
}

/// The test rule with timeline events.
fn with_events() -> RuleConfig {
    RuleConfig {
        timeline_events: true,
        ..rule()
    }
}

/// Applies `s` with the rule `r`, at the test place, with `cursor`.
async fn apply_rule(
    b: &Bench,
    r: &RuleConfig,
    s: IssueSnapshot,
    m: Option<Mapping>,
    source: Source,
    cursor: Option<DateTime<Utc>>,
) -> Result<Outcome, EngineError> {
    let (place, log) = (Place::new(&r.destination, 1), RunLog::new(RunMode::Once));
    let cx = Ctx {
        rule: r,
        place: &place,
        log: &log,
    };
    b.apply(&cx, s, m, source, cursor, None).await
}

/// A new incident whose wanted details are GitLab's defaults (UNKNOWN severity, no timeline
/// events) costs no GraphQL request and no commit of its own: its details settle with the
/// mapping. Created already resolved, its mapping waits for the close: one commit, carrying
/// the closed mapping, its details and the cursor.
#[tokio::test(start_paused = true)]
async fn a_new_incident_with_default_details_settles_with_its_mapping() {
    let b = bench();
    apply(&b, snap("a", 5, Some(4)), None)
        .await
        .expect("the apply runs");
    assert_eq!(b.store.writes(), ["start_run", "begin_intent", "commit"]);
    let commits = b.store.commits();
    let (Commit::Settled { mapping, details }, cursor) = &commits[0] else {
        panic!("the mapping and its details at once: {commits:?}");
    };
    assert_eq!(details.severity, Some(IncidentSeverity::Unknown));
    assert_eq!(mapping.state, RemoteState::Closed, "the close's mapping");
    assert_eq!(*cursor, Some(at(50)), "the close carries the cursor");
    assert_eq!(b.store.intent(), None, "the intent is settled");
    assert_eq!(
        b.gitlab.calls(),
        [Call::Scan, Call::Create, Call::Close],
        "no severity write"
    );
    // A re-read of the same snapshot finds the details settled: nothing to write.
    let m = b.store.mapping("OPS-1").expect("mapped");
    let before = b.store.writes().len();
    apply(&b, snap("a", 5, Some(4)), Some(m))
        .await
        .expect("the re-read runs");
    assert_eq!(b.store.writes()[before..], [] as [&str; 0]);
}

/// A new incident's events are begun in a commit before its mapping's, and no durable begin
/// is written for them; an event for an incident the store already knew (a close in a later
/// pass) is begun durably, with the event written before it. A new incident's UNKNOWN severity
/// (GitLab's default) is not sent.
#[tokio::test(start_paused = true)]
async fn a_new_incidents_events_are_begun_before_its_mapping_not_durably() {
    let b = bench();
    let r = with_events();
    apply_rule(
        &b,
        &r,
        snap("a", 1, None),
        None,
        Source::Search,
        Some(at(50)),
    )
    .await
    .expect("the apply runs");
    assert_eq!(
        b.store.writes(),
        ["start_run", "begin_intent", "commit", "commit", "commit"],
        "the intent, the begins, the mapping, the details: no durable begin"
    );
    let commits = b.store.commits();
    let Commit::Details { details, .. } = &commits[0].0 else {
        panic!("the begins come first: {commits:?}");
    };
    assert_eq!(details.begun, [TimelineTag::Start]);
    assert!(matches!(commits[1].0, Commit::Replicated(_)), "{commits:?}");
    assert_eq!(
        b.gitlab.calls(),
        [Call::Scan, Call::Create, Call::CreateEvent],
        "no severity: UNKNOWN is a new incident's"
    );

    // Resolved later: the end event's begin is durable and carries the start event.
    let m = b.store.mapping("OPS-1").expect("mapped");
    let before = b.store.writes().len();
    apply_rule(
        &b,
        &r,
        snap("a", 9, Some(8)),
        Some(m.clone()),
        Source::Search,
        None,
    )
    .await
    .expect("the close runs");
    assert_eq!(
        b.store.writes()[before..],
        ["start_run", "commit", "begin_timeline_event", "commit"],
        "the closed mapping, the durable begin, the details"
    );
    let d = b.store.details.lock().expect("unpoisoned")[&(1, m.iid.expect("an iid"))].clone();
    assert!(
        d.begun.is_empty() && d.start.is_some() && d.end.is_some(),
        "{d:?}"
    );
}

/// A timeline event whose create reached GitLab but whose answer was lost is not created
/// again: the begun create is in the store, so the retry looks through the incident's events,
/// finds it, and records it. The snapshot's cursor waits until the details are committed.
#[tokio::test(start_paused = true)]
async fn a_timeline_event_whose_answer_was_lost_is_not_created_twice() {
    let b = bench();
    let r = with_events();
    let s = snap("a", 5, Some(4));
    b.gitlab.fault(Call::CreateEvent, Fault::ApplyThenLose);
    let out = apply_rule(&b, &r, s.clone(), None, Source::Search, Some(at(50)))
        .await
        .expect("an issue's failure does not stop the run");
    assert_eq!(
        out.counts.failed, 1,
        "the lost answer is this issue's failure"
    );
    assert_eq!(
        b.store.cursor_of(RULE),
        Some(at(50)),
        "the failure is recorded with the cursor"
    );
    let m = b.store.mapping("OPS-1").expect("the incident is mapped");
    let d = b.store.details.lock().expect("unpoisoned")[&(1, m.iid.expect("an iid"))].clone();
    assert_eq!(
        d.begun,
        [TimelineTag::Start, TimelineTag::End],
        "the begun creates are kept: the one whose answer was lost and the one not yet sent"
    );
    assert!(d.start.is_none(), "its answer never came back");

    // The retry: the same snapshot, from the stored failure.
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_rule(&b, &r, s.clone(), Some(m.clone()), Source::Retry, None)
        .await
        .expect("the retry runs");
    assert_eq!(
        b.gitlab.calls(),
        [Call::Events, Call::CreateEvent],
        "it looks first, finds the start event, and creates only the end event"
    );
    let objects = b.gitlab.objects();
    let starts = objects[0]
        .events
        .iter()
        .filter(|e| e.has_tag(TimelineTag::Start))
        .count();
    assert_eq!(starts, 1, "one start event: {:?}", objects[0].events);
    let ends: Vec<_> = objects[0]
        .events
        .iter()
        .filter(|e| e.has_tag(TimelineTag::End))
        .map(|e| e.occurred_at)
        .collect();
    assert_eq!(ends, [at(4)], "one end event, at Jira's resolution");
    let d = b.store.details.lock().expect("unpoisoned")[&(1, m.iid.expect("an iid"))].clone();
    assert!(d.begun.is_empty(), "nothing left begun: {d:?}");
    assert_eq!(
        d.start.map(|m| m.occurred_at),
        Some(at(0)),
        "the start is Jira's created"
    );

    // Read again: nothing more is sent.
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_rule(&b, &r, s, Some(m), Source::Search, Some(at(60)))
        .await
        .expect("the re-read runs");
    assert!(b.gitlab.calls().is_empty(), "{:?}", b.gitlab.calls());
}

/// A crash between the incident's write and its details' commit replays the snapshot: the
/// close's commit does not carry the cursor while details are due, the details' commit does.
#[tokio::test(start_paused = true)]
async fn the_cursor_waits_for_the_details() {
    let b = bench();
    let r = with_events();
    apply_rule(
        &b,
        &r,
        snap("a", 5, Some(4)),
        None,
        Source::Search,
        Some(at(50)),
    )
    .await
    .expect("the apply runs");
    let commits = b.store.commits();
    let (last, rest) = commits.split_last().expect("commits");
    assert!(
        matches!(last, (Commit::Details { .. }, Some(c)) if *c == at(50)),
        "the details' commit carries the cursor: {last:?}"
    );
    assert!(
        rest.iter().all(|(_, c)| c.is_none()),
        "no earlier commit moves the cursor: {rest:?}"
    );
}

/// A priority edit in Jira changes the severity once; an unchanged one sends nothing; a
/// GraphQL API closed to the token is warned about once and the rule goes on without details.
#[tokio::test(start_paused = true)]
async fn severity_follows_priority_edits_and_a_refusal_is_not_fatal() {
    let b = bench();
    let r = RuleConfig {
        severity: [
            ("highest".to_owned(), Severity::Critical),
            ("lowest".to_owned(), Severity::Info),
        ]
        .into_iter()
        .collect(),
        ..rule()
    };
    let mut s = snap("a", 1, None);
    s.priority = Some("Lowest".into());
    apply_rule(&b, &r, s.clone(), None, Source::Search, None)
        .await
        .expect("runs");
    assert_eq!(
        b.gitlab.objects()[0].severity,
        Some(IncidentSeverity::Low),
        "info becomes LOW"
    );
    let m = b.store.mapping("OPS-1").expect("mapped");
    s.updated = at(2);
    s.priority = Some("Highest".into());
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_rule(&b, &r, s.clone(), Some(m), Source::Search, None)
        .await
        .expect("runs");
    assert_eq!(b.gitlab.calls(), [Call::Severity], "one severity change");
    assert_eq!(
        b.gitlab.objects()[0].severity,
        Some(IncidentSeverity::Critical)
    );
    let m = b.store.mapping("OPS-1").expect("mapped");
    s.updated = at(3);
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_rule(&b, &r, s.clone(), Some(m.clone()), Source::Search, None)
        .await
        .expect("runs");
    assert!(b.gitlab.calls().is_empty(), "unchanged: nothing re-sent");

    // GraphQL refused: the issue is not failed, and the rule stops asking.
    s.updated = at(4);
    s.priority = Some("Unheard-of".into());
    b.gitlab
        .fault(Call::Severity, Fault::Fail(MemError::NoGraphQl));
    let out = apply_rule(&b, &r, s.clone(), Some(m.clone()), Source::Search, None)
        .await
        .expect("a refusal does not stop the run");
    assert_eq!(out.counts.failed, 0, "nor fail the issue");
    s.updated = at(5);
    b.gitlab.calls.lock().expect("unpoisoned").clear();
    apply_rule(&b, &r, s, Some(m), Source::Search, None)
        .await
        .expect("runs");
    assert!(
        b.gitlab.calls().is_empty(),
        "the rule goes on without details: {:?}",
        b.gitlab.calls()
    );
}
