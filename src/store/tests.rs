//! Unit tests of the store: opening and locking, each `SyncStore` method, the `status` views,
//! and decoding what is read back.

use super::*;

use std::future::Future;
use std::sync::MutexGuard;

use chrono::{DateTime, Utc};
use rusqlite::params;
use tempfile::TempDir;

use super::codec::{Int, format_timestamp, parse_timestamp};
use crate::config::Destination;
use crate::domain::{
    Commit, IssueSnapshot, JiraId, JiraKey, Mapping, MovedTo, RemoteState, RunCounts, RunMode,
    RunOutcome, Target,
};
use crate::engine::ports::{Place, PortError, SyncStore};

const RULE: &str = "ops-incidents";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamps are RFC 3339")
        .with_timezone(&Utc)
}

fn key(text: &str) -> JiraKey {
    JiraKey::parse(text).expect("test keys are valid")
}

fn snapshot(k: &str, updated: &str) -> IssueSnapshot {
    IssueSnapshot {
        id: Some(JiraId::parse(&format!("1{}", &k[k.len() - 1..])).unwrap()),
        key: key(k),
        summary: format!("{k} is down"),
        description: Some("It broke.".to_owned()),
        created: at("2024-05-01T10:00:00Z"),
        updated: at(updated),
        resolved_at: None,
        status: "Open".to_owned(),
        priority: Some("High".to_owned()),
        labels: vec!["prod".to_owned()],
        issue_type: Some("Incident".to_owned()),
        fields: Default::default(),
        transitions: None,
    }
}

/// Where the test rule writes: project `ops/incidents`, id 42.
fn place() -> Place {
    Place::new(
        &Destination {
            target: Target::Incident,
            project: "ops/incidents".to_owned(),
            project_id: None,
            alert: None,
        },
        42,
    )
}

/// Keys asked for without ids, as rows from before ids were kept are found.
fn legacy(keys: Vec<JiraKey>) -> Vec<(Option<JiraId>, JiraKey)> {
    keys.into_iter().map(|k| (None, k)).collect()
}

fn mapping(k: &str, state: RemoteState) -> Mapping {
    Mapping {
        rule: RULE.to_owned(),
        jira_key: key(k),
        jira_id: None,
        target: Target::Incident,
        project: "ops/incidents".to_owned(),
        project_id: None,
        iid: Some(7),
        web_url: Some("https://gitlab.example/ops/incidents/-/issues/7".to_owned()),
        state,
        jira_updated: at("2024-05-01T11:00:00.250Z"),
        created_at: at("2024-05-01T10:00:00Z"),
        closed_at: (state == RemoteState::Closed).then(|| at("2024-05-01T12:00:00Z")),
        content_hash: Some("00ff00ff00ff00ff".to_owned()),
        moved_to: None,
        gone_at: None,
        jira_resolved_at: None,
        scope: crate::domain::IssueScope::InScope,
    }
}

/// A store in a fresh directory (in a subdirectory that does not exist yet).
fn temp_store() -> (TempDir, PathBuf, Store) {
    let dir = TempDir::new().expect("a temporary directory");
    let path = dir.path().join("state").join("sync.db");
    let store = Store::open(&path).expect("a new store opens");
    (dir, path, store)
}

/// The store's own connection, for arranging and inspecting rows behind the API's back.
fn raw(store: &Store) -> MutexGuard<'_, Connection> {
    store
        .inner
        .conn
        .lock()
        .expect("no test panics while holding the connection")
}

fn count(store: &Store, sql: &str) -> i64 {
    raw(store)
        .query_row(sql, [], |row| row.get(0))
        .expect("a count query")
}

/// Opening creates the directory, and reopening a migrated file migrates nothing and keeps
/// the data.
#[tokio::test]
async fn reopening_a_migrated_file_is_a_noop() {
    let (_dir, path, store) = temp_store();
    store
        .set_meta("jira", "https://jira.example")
        .await
        .unwrap();
    drop(store);
    let store = Store::open(&path).expect("a migrated store reopens");
    let version: u32 = raw(&store)
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(
        version,
        migrate::KNOWN_VERSION,
        "reopening must keep the schema version"
    );
    assert_eq!(
        store.get_meta("jira").await.unwrap().as_deref(),
        Some("https://jira.example"),
        "reopening must keep the data"
    );
    let mode: String = raw(&store)
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(
        mode, "wal",
        "a file store runs in WAL mode so status can read alongside"
    );
}

/// A second open of the same file is refused with `Locked`, naming the path and our pid,
/// until the first store is dropped.
#[tokio::test]
async fn second_open_is_locked_until_the_first_is_dropped() {
    let (_dir, path, store) = temp_store();
    let clone = store.clone();
    drop(store);
    let err = Store::open(&path).expect_err("the clone still holds the lock");
    match &err {
        StoreError::Locked { path: p, holder } => {
            assert_eq!(p, &path, "the error names the store, not the lock file");
            assert_eq!(
                *holder,
                Some(std::process::id()),
                "the holder's pid is read back"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("pid {}", std::process::id()))
            && message.contains("[store] path"),
        "the message says which file, who holds it and what to do: {message}"
    );
    assert!(
        !err.is_retryable(),
        "a held store needs a person, not a retry"
    );
    drop(clone);
    Store::open(&path).expect("the lock is released with the last clone");
}

/// The lock is the database file's own, wherever it is reached from: a symlink to a held store,
/// or a hard link to it, is refused too (a lock beside the path would have let both in).
#[cfg(unix)]
#[tokio::test]
async fn links_to_a_held_store_are_refused() {
    let (dir, path, store) = temp_store();
    let symlink = dir.path().join("elsewhere.db");
    std::os::unix::fs::symlink(&path, &symlink).expect("a symlink");
    let hard = dir.path().join("state").join("copy.db");
    std::fs::hard_link(&path, &hard).expect("a hard link");
    let err = Store::open(&symlink).expect_err("the same file is held");
    assert!(
        matches!(&err, StoreError::Locked { holder: Some(pid), .. } if *pid == std::process::id()),
        "a symlink resolves to the held file and names its holder, got {err:?}"
    );
    let err = Store::open(&hard).expect_err("the same file is held");
    assert!(
        matches!(&err, StoreError::Locked { .. }),
        "a hard link is the same file (its holder's pid sits beside the other name), got {err:?}"
    );
    drop(store);
    Store::open(&symlink).expect("free again once dropped");
}

/// A store written by a newer build is refused by both kinds of open.
#[tokio::test]
async fn newer_user_version_is_refused() {
    let (_dir, path, store) = temp_store();
    drop(store);
    let newer = migrate::KNOWN_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    for err in [
        Store::open(&path).expect_err("writing open must refuse"),
        Store::open_read_only(&path).expect_err("read-only open must refuse"),
    ] {
        assert!(
            matches!(&err, StoreError::TooNew { path: p, found, known }
                if p == &path && *found == newer && *known == migrate::KNOWN_VERSION),
            "a newer schema must be refused, got {err:?}"
        );
    }
}

/// A read-only open of a file that does not exist says no sync has run yet.
#[test]
fn read_only_open_of_a_missing_file_is_missing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("never.db");
    let err = Store::open_read_only(&path).expect_err("there is no file");
    assert!(
        matches!(&err, StoreError::Missing { path: p } if p == &path),
        "expected Missing, got {err:?}"
    );
    assert!(
        err.to_string().contains("no sync has run yet"),
        "the message explains the missing file: {err}"
    );
    assert!(!path.exists(), "a read-only open must not create the file");
}

/// A read-only open of an unmigrated store asks for a sync run instead of migrating.
#[test]
fn read_only_open_of_an_old_store_asks_for_a_sync() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("old.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Store::open_read_only(&path).expect_err("version 0 is older than ours");
    assert!(
        matches!(err, StoreError::Outdated { found: 0, .. }),
        "expected Outdated, got {err:?}"
    );
    assert!(
        err.to_string().contains("run the sync once"),
        "the message says how to migrate: {err}"
    );
}

/// A read-only store sees a running writer's commits and cannot write.
#[tokio::test]
async fn read_only_store_reads_alongside_a_writer() {
    let (_dir, path, store) = temp_store();
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            None,
        )
        .await
        .unwrap();
    let reader = Store::open_read_only(&path).expect("no lock is needed to read");
    let status = reader.rule_status().await.unwrap();
    assert_eq!(status.len(), 1, "the writer's rule is visible: {status:?}");
    assert_eq!(status[0].mapped, 1, "the writer's mapping is visible");
    assert!(
        reader.set_meta("k", "v").await.is_err(),
        "a read-only store must refuse writes"
    );
}

/// The cursor only moves forward, through `advance_cursor` and `commit` alike.
#[tokio::test]
async fn cursor_never_moves_backward() {
    let (_dir, _path, store) = temp_store();
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        None,
        "a new rule has no cursor"
    );
    let (t1, t2, t3) = (
        at("2024-05-01T10:00:00.100Z"),
        at("2024-05-01T10:00:00.200Z"),
        at("2024-05-02T09:00:00Z"),
    );
    store.advance_cursor(RULE, t2).await.unwrap();
    store.advance_cursor(RULE, t1).await.unwrap();
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        Some(t2),
        "advance_cursor never goes back"
    );
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-1", "2024-05-01T09:00:00Z"),
        error: "boom".to_owned(),
    };
    store.commit(RULE, failed, Some(t1)).await.unwrap();
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        Some(t2),
        "commit never moves it back"
    );
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-2", RemoteState::Opened)),
            Some(t3),
        )
        .await
        .unwrap();
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        Some(t3),
        "commit moves it forward"
    );
    assert_eq!(
        store.cursor("other").await.unwrap(),
        None,
        "cursors are per rule"
    );
}

/// Committing a replicated issue records its mapping and clears its intent and failure.
#[tokio::test]
async fn replicated_commit_clears_intent_and_failure() {
    let (_dir, _path, store) = temp_store();
    let k = key("OPS-1");
    store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-1", "2024-05-01T11:00:00Z"),
        error: "GitLab answered 502".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    let m = mapping("OPS-1", RemoteState::Opened);
    let cursor = at("2024-05-01T11:00:00Z");
    store
        .commit(RULE, Commit::Replicated(m.clone()), Some(cursor))
        .await
        .unwrap();

    assert_eq!(
        store.mapping(RULE, &k).await.unwrap(),
        Some(m),
        "the mapping is recorded"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM intents"),
        0,
        "the intent is cleared"
    );
    assert!(
        store.failures(RULE).await.unwrap().is_empty(),
        "the failure is cleared"
    );
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        Some(cursor),
        "the cursor moved with it"
    );

    let closed = mapping("OPS-1", RemoteState::Closed);
    store
        .commit(RULE, Commit::Replicated(closed.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        store.mapping(RULE, &k).await.unwrap(),
        Some(closed),
        "a later commit replaces the mapping"
    );
}

/// A replicated commit is one transaction: if clearing the failure fails, the mapping,
/// intent and cursor are as they were.
#[tokio::test]
async fn replicated_commit_is_all_or_nothing() {
    let (_dir, _path, store) = temp_store();
    let k = key("OPS-1");
    store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-1", "2024-05-01T11:00:00Z"),
        error: "GitLab answered 502".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    // A trigger fires per row, so the failure row above is what makes the delete abort.
    raw(&store)
        .execute_batch(
            "CREATE TRIGGER no_delete BEFORE DELETE ON failures
             BEGIN SELECT RAISE(ABORT, 'failures are frozen'); END",
        )
        .unwrap();
    let result = store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            Some(at("2024-05-01T11:00:00Z")),
        )
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::Query {
                context: "clearing a failure",
                ..
            })
        ),
        "the commit fails on the failures table, got {result:?}"
    );
    assert_eq!(
        store.mapping(RULE, &k).await.unwrap(),
        None,
        "the mapping is rolled back"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM intents"),
        1,
        "the intent is kept"
    );
    assert_eq!(
        store.cursor(RULE).await.unwrap(),
        None,
        "the cursor did not move"
    );
    assert_eq!(
        store.failures(RULE).await.unwrap().len(),
        1,
        "the failure is kept"
    );
}

/// A failed commit keeps the newest snapshot and error, counts attempts, keeps the first
/// failure time, and leaves the mapping and intent alone.
#[tokio::test]
async fn failed_commit_keeps_the_snapshot_and_counts_attempts() {
    let (_dir, _path, store) = temp_store();
    let k = key("OPS-1");
    let m = mapping("OPS-1", RemoteState::Opened);
    store
        .commit(RULE, Commit::Replicated(m.clone()), None)
        .await
        .unwrap();
    store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    let first = snapshot("OPS-1", "2024-05-01T11:00:00Z");
    store
        .commit(
            RULE,
            Commit::Failed {
                snapshot: first,
                error: "first".to_owned(),
            },
            None,
        )
        .await
        .unwrap();
    raw(&store)
        .execute(
            "UPDATE failures SET first_failed_at = '2024-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    let second = snapshot("OPS-1", "2024-05-01T12:00:00Z");
    store
        .commit(
            RULE,
            Commit::Failed {
                snapshot: second.clone(),
                error: "second".to_owned(),
            },
            None,
        )
        .await
        .unwrap();

    let failures = store.failures(RULE).await.unwrap();
    assert_eq!(failures.len(), 1, "one row per issue: {failures:?}");
    let f = &failures[0];
    assert_eq!(
        f.snapshot, second,
        "the newest snapshot is kept for the retry"
    );
    assert_eq!(f.attempts, 2, "each failure counts");
    assert_eq!(f.last_error, "second", "the newest error is kept");
    let first_failed: String = raw(&store)
        .query_row("SELECT first_failed_at FROM failures", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        first_failed, "2024-01-01T00:00:00.000Z",
        "the first failure time is kept"
    );
    assert_eq!(
        store.mapping(RULE, &k).await.unwrap(),
        Some(m),
        "the mapping is untouched"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM intents"),
        1,
        "the intent is untouched"
    );
    let next = f.next_attempt_at.expect("not forgotten");
    assert_eq!(
        next - f.last_failed_at,
        chrono::Duration::minutes(2),
        "the second failure waits twice the first's minute"
    );
    let listed = store.failure_list(RULE).await.unwrap();
    assert_eq!(
        listed,
        vec![FailureEntry {
            jira_key: k,
            attempts: 2,
            last_error: "second".to_owned(),
            last_failed_at: f.last_failed_at,
            next_attempt_at: next,
        }],
        "failure_list agrees with failures"
    );
}

/// A failure from before the backoff was kept (no `next_attempt_at`) is due at once.
#[tokio::test]
async fn a_failure_without_a_next_attempt_is_due() {
    let (_dir, _path, store) = temp_store();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-1", "2024-05-01T11:00:00Z"),
        error: "old".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    raw(&store)
        .execute("UPDATE failures SET next_attempt_at = NULL", [])
        .unwrap();
    let f = &store.failures(RULE).await.unwrap()[0];
    assert_eq!(f.next_attempt_at, Some(f.last_failed_at));
    assert!(f.is_due(Utc::now()));
}

/// `retry` makes a failure due now and keeps its attempts; `forget` drops it; a key failing
/// under several rules needs the rule; an unknown key changes nothing.
#[tokio::test]
async fn retry_and_forget_pick_one_failure() {
    let (_dir, _path, store) = temp_store();
    for rule in [RULE, "vsa"] {
        let failed = Commit::Failed {
            snapshot: snapshot("OPS-1", "2024-05-01T11:00:00Z"),
            error: "boom".to_owned(),
        };
        store.commit(rule, failed, None).await.unwrap();
    }
    let k = key("OPS-1");
    assert_eq!(store.failing_rules(&k).await.unwrap(), [RULE, "vsa"]);
    assert_eq!(
        store.retry_failure(&k, None).await.unwrap(),
        FailureChange::Ambiguous {
            rules: vec![RULE.to_owned(), "vsa".to_owned()]
        }
    );
    assert_eq!(
        store.retry_failure(&key("OPS-2"), None).await.unwrap(),
        FailureChange::Unknown
    );
    assert_eq!(
        store.forget_failure(&k, Some("other")).await.unwrap(),
        FailureChange::Unknown
    );
    let before = Utc::now();
    assert_eq!(
        store.retry_failure(&k, Some(RULE)).await.unwrap(),
        FailureChange::Done {
            rule: RULE.to_owned()
        }
    );
    let f = &store.failures(RULE).await.unwrap()[0];
    let next = f.next_attempt_at.expect("not forgotten");
    assert!(f.is_due(Utc::now()) && next >= before - chrono::Duration::milliseconds(1));
    assert_eq!(f.attempts, 1, "attempts are kept");
    assert!(!store.failures("vsa").await.unwrap()[0].is_due(Utc::now()));
    assert_eq!(
        store.forget_failure(&k, Some("vsa")).await.unwrap(),
        FailureChange::Done {
            rule: "vsa".to_owned()
        }
    );
    let forgotten = &store.failures("vsa").await.unwrap()[0];
    assert_eq!(
        (forgotten.next_attempt_at, forgotten.is_due(Utc::now())),
        (None, false),
        "kept only to hold the same change back"
    );
    assert!(
        store.failure_list("vsa").await.unwrap().is_empty(),
        "not listed"
    );
    assert_eq!(
        store.forget_failure(&k, None).await.unwrap(),
        FailureChange::Done {
            rule: RULE.to_owned()
        },
        "one rule left: no need to name it"
    );
    assert!(store.failing_rules(&k).await.unwrap().is_empty());
    assert_eq!(
        store.retry_failure(&k, None).await.unwrap(),
        FailureChange::Unknown,
        "a forgotten failure is not failing"
    );
    let again = Commit::Failed {
        snapshot: snapshot("OPS-1", "2024-05-01T12:00:00Z"),
        error: "again".to_owned(),
    };
    store.commit("vsa", again, None).await.unwrap();
    let f = &store.failures("vsa").await.unwrap()[0];
    assert_eq!(f.attempts, 1, "a newer change failing starts afresh");
    assert!(f.next_attempt_at.is_some());
    assert_eq!(store.failing_rules(&k).await.unwrap(), ["vsa"]);
}

/// Where a moved object lives and when it was found gone are kept with its mapping.
#[tokio::test]
async fn moved_and_gone_round_trip() {
    let (_dir, _path, store) = temp_store();
    let moved = Mapping {
        moved_to: Some(MovedTo {
            project_id: 9,
            iid: 3,
        }),
        ..mapping("OPS-1", RemoteState::Opened)
    };
    let gone = Mapping {
        gone_at: Some(at("2024-05-02T00:00:00Z")),
        ..mapping("OPS-2", RemoteState::Closed)
    };
    for m in [&moved, &gone] {
        store
            .commit(RULE, Commit::Replicated(m.clone()), None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.mapping(RULE, &key("OPS-1")).await.unwrap(),
        Some(moved)
    );
    assert_eq!(
        store.mapping(RULE, &key("OPS-2")).await.unwrap(),
        Some(gone)
    );
    assert_eq!(store.gone_list(RULE).await.unwrap(), [key("OPS-2")]);
    raw(&store)
        .execute(
            "UPDATE mappings SET moved_iid = NULL WHERE jira_key = 'OPS-1'",
            [],
        )
        .unwrap();
    let err = store.mapping(RULE, &key("OPS-1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "moved_iid",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Failures come back oldest first.
#[tokio::test]
async fn failures_are_listed_oldest_first() {
    let (_dir, _path, store) = temp_store();
    for k in ["OPS-1", "OPS-2", "OPS-3"] {
        let failed = Commit::Failed {
            snapshot: snapshot(k, "2024-05-01T11:00:00Z"),
            error: "boom".to_owned(),
        };
        store.commit(RULE, failed, None).await.unwrap();
    }
    raw(&store)
        .execute_batch(
            "UPDATE failures SET first_failed_at = '2024-03-01T00:00:00.000Z' WHERE jira_key = 'OPS-1';
             UPDATE failures SET first_failed_at = '2024-01-01T00:00:00.000Z' WHERE jira_key = 'OPS-2';
             UPDATE failures SET first_failed_at = '2024-02-01T00:00:00.000Z' WHERE jira_key = 'OPS-3';",
        )
        .unwrap();
    let order: Vec<String> = store
        .failures(RULE)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.snapshot.key.to_string())
        .collect();
    assert_eq!(
        order,
        ["OPS-2", "OPS-3", "OPS-1"],
        "the longest-failing issue comes first"
    );
}

/// `begin_intent` reports the attempts recorded before it, per rule and key, and keeps the
/// first start time.
#[tokio::test]
async fn begin_intent_counts_attempts() {
    let (_dir, _path, store) = temp_store();
    let k = key("OPS-1");
    let first = store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    assert_eq!(
        first.previous_attempts, 0,
        "a fresh intent has no earlier attempt"
    );
    let second = store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    let third = store.begin_intent(RULE, &place(), None, &k).await.unwrap();
    assert_eq!(
        (second.previous_attempts, third.previous_attempts),
        (1, 2),
        "each call counts one more attempt"
    );
    assert_eq!(
        third.started_at, first.started_at,
        "the first start time is kept"
    );
    assert_eq!(
        (third.rule.as_str(), &third.jira_key),
        (RULE, &k),
        "the intent names its issue"
    );
    let other_key = store
        .begin_intent(RULE, &place(), None, &key("OPS-2"))
        .await
        .unwrap();
    let other_rule = store
        .begin_intent("other", &place(), None, &k)
        .await
        .unwrap();
    assert_eq!(
        (other_key.previous_attempts, other_rule.previous_attempts),
        (0, 0),
        "attempts are counted per rule and key"
    );
}

/// A page's intents are begun in one durable commit, each counted as `begin_intent` counts it;
/// withdrawing them deletes only those with no earlier attempt.
#[tokio::test]
async fn begin_intents_at_once_and_withdraw_the_fresh_ones() {
    let (_dir, _path, store) = temp_store();
    let id = |n: &str| Some(JiraId::parse(n).unwrap());
    let earlier = store
        .begin_intent(RULE, &place(), id("10001").as_ref(), &key("OPS-1"))
        .await
        .unwrap();
    assert_eq!(earlier.previous_attempts, 0);
    let before = stats(&store);
    let issues = vec![
        (id("10001"), key("OPS-1")),
        (id("10002"), key("OPS-2")),
        (None, key("OPS-3")),
    ];
    let begun = store
        .begin_intents(RULE, &place(), issues.clone())
        .await
        .unwrap();
    let after = stats(&store);
    assert_eq!(
        (
            after.durable_commits - before.durable_commits,
            after.commits - before.commits
        ),
        (1, 1),
        "one durable commit for the three"
    );
    let attempts = |k: &str| begun.get(&key(k)).map(|i| i.previous_attempts);
    assert_eq!(
        (attempts("OPS-1"), attempts("OPS-2"), attempts("OPS-3")),
        (Some(1), Some(0), Some(0)),
        "OPS-1 had an attempt before"
    );
    assert_eq!(
        begun[&key("OPS-1")].started_at,
        earlier.started_at,
        "the first start time is kept"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM intents"), 3);
    store
        .withdraw_intents(RULE, &place(), issues)
        .await
        .unwrap();
    let left: Vec<String> = {
        let conn = raw(&store);
        let mut stmt = conn.prepare("SELECT jira_key FROM intents").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        left,
        vec!["OPS-1".to_owned()],
        "the intent an earlier attempt left is kept"
    );
}

/// `rule_status` lists every rule any table mentions, with its counts and newest run.
#[tokio::test]
async fn rule_status_counts_every_rule() {
    let (_dir, _path, store) = temp_store();
    let cursor = at("2024-05-01T11:00:00Z");
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            Some(cursor),
        )
        .await
        .unwrap();
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-2", RemoteState::Closed)),
            None,
        )
        .await
        .unwrap();
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-3", RemoteState::Closed)),
            None,
        )
        .await
        .unwrap();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-4", "2024-05-01T11:00:00Z"),
        error: "boom".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    store
        .begin_intent(RULE, &place(), None, &key("OPS-5"))
        .await
        .unwrap();
    let old_run = store.start_run(RULE, RunMode::Backfill).await.unwrap();
    store
        .finish_run(old_run, RunOutcome::Ok, RunCounts::default(), None)
        .await
        .unwrap();
    let run = store.start_run(RULE, RunMode::Service).await.unwrap();
    let counts = RunCounts {
        seen: 5,
        created: 3,
        closed: 2,
        reopened: 0,
        updated: 4,
        skipped: 0,
        failed: 1,
    };
    store
        .finish_run(
            run,
            RunOutcome::Partial,
            counts.clone(),
            Some("one failed".to_owned()),
        )
        .await
        .unwrap();
    let gone = Mapping {
        gone_at: Some(at("2024-05-02T00:00:00Z")),
        ..mapping("OPS-6", RemoteState::Opened)
    };
    store
        .commit(RULE, Commit::Replicated(gone), None)
        .await
        .unwrap();
    // A run that writes nothing leaves no row; one that writes gets its row with its first
    // write, unfinished until it ends.
    let quiet = store.start_run("quiet", RunMode::Once).await.unwrap();
    store
        .finish_run(quiet, RunOutcome::Ok, RunCounts::default(), None)
        .await
        .unwrap();
    store.start_run("pending", RunMode::Once).await.unwrap();
    store
        .begin_intent("pending", &place(), None, &key("DEV-1"))
        .await
        .unwrap();

    let status = store.rule_status().await.unwrap();
    let rules: Vec<&str> = status.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(
        rules,
        [RULE, "pending"],
        "every rule that wrote appears once, sorted; a run that wrote nothing leaves no trace"
    );

    let ops = &status[0];
    assert_eq!(ops.cursor, Some(cursor), "the cursor is shown");
    assert_eq!(
        (
            ops.mapped,
            ops.open,
            ops.closed,
            ops.gone,
            ops.failed,
            ops.pending_intents
        ),
        (4, 1, 2, 1, 1, 1),
        "mappings by state (gone apart), failures and intents are counted"
    );
    let last = ops.last_run.as_ref().expect("the rule has runs");
    assert_eq!(last.id, run, "a run's row has the id start_run gave");
    assert_eq!(
        (last.mode, last.outcome, &last.counts, last.error.as_deref()),
        (
            RunMode::Service,
            Some(RunOutcome::Partial),
            &counts,
            Some("one failed")
        ),
        "the newest run is shown, with its outcome, counts and error"
    );
    assert!(
        last.finished_at.is_some(),
        "a finished run has its end time"
    );

    let pending = &status[1];
    assert_eq!(
        pending.pending_intents, 1,
        "a rule with only an intent is listed"
    );
    let open = pending
        .last_run
        .as_ref()
        .expect("the run that began the intent has its row");
    assert_eq!(
        (open.mode, open.outcome, open.finished_at),
        (RunMode::Once, None, None),
        "an unfinished run has no outcome or end"
    );
    assert_eq!(
        (pending.mapped, pending.cursor),
        (0, None),
        "nothing else for that rule"
    );
}

/// Finishing a run the log does not have is an error naming it.
#[tokio::test]
async fn finishing_an_unknown_run_is_an_error() {
    let (_dir, _path, store) = temp_store();
    let err = store
        .finish_run(42, RunOutcome::Ok, RunCounts::default(), None)
        .await
        .expect_err("there is no run 42");
    assert!(
        matches!(err, StoreError::UnknownRun { id: 42 }),
        "got {err:?}"
    );
}

/// A timestamp the store would not have written is `Corrupt`, naming the table, column
/// and key.
#[tokio::test]
async fn corrupt_timestamp_is_reported_with_its_key() {
    let (_dir, _path, store) = temp_store();
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            None,
        )
        .await
        .unwrap();
    raw(&store)
        .execute(
            "UPDATE mappings SET jira_updated = '2024-05-01 11:00:00'",
            [],
        )
        .unwrap();
    let err = store
        .mappings(&place(), legacy(vec![key("OPS-1")]))
        .await
        .expect_err("the timestamp is not in the store's format");
    match &err {
        StoreError::Corrupt {
            table,
            column,
            key,
            value,
        } => {
            assert_eq!(
                (*table, *column),
                ("mappings", "jira_updated"),
                "names the cell"
            );
            assert_eq!(
                key,
                &format!("{RULE}/OPS-1"),
                "names the row by rule and key"
            );
            assert_eq!(value, "2024-05-01 11:00:00", "quotes the bad value");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        err.to_string().contains("OPS-1"),
        "the message names the key: {err}"
    );

    store
        .advance_cursor(RULE, at("2024-05-01T11:00:00Z"))
        .await
        .unwrap();
    raw(&store)
        .execute("UPDATE rule_state SET cursor = 'yesterday'", [])
        .unwrap();
    let err = store
        .cursor(RULE)
        .await
        .expect_err("the cursor is unreadable");
    assert!(
        matches!(&err, StoreError::Corrupt { table: "rule_state", column: "cursor", key, .. } if key == RULE),
        "a bad cursor names its rule, got {err:?}"
    );
}

/// A snapshot that is not valid JSON is `Corrupt` naming its key; the summary list still
/// reads.
#[tokio::test]
async fn bad_snapshot_json_is_corrupt_naming_the_key() {
    let (_dir, _path, store) = temp_store();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-9", "2024-05-01T11:00:00Z"),
        error: "boom".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    raw(&store)
        .execute("UPDATE failures SET snapshot = '{\"key\":'", [])
        .unwrap();
    let err = store
        .failures(RULE)
        .await
        .expect_err("the snapshot is cut short");
    assert!(
        matches!(&err, StoreError::Corrupt { table: "failures", column: "snapshot", key, .. }
            if key == &format!("{RULE}/OPS-9")),
        "the bad snapshot is named by its key, got {err:?}"
    );
    assert_eq!(
        store.failure_list(RULE).await.unwrap().len(),
        1,
        "the summary does not need the snapshot"
    );
}

/// `mappings` returns only the asked-for keys that have mappings, many at once, at the place
/// asked (not another project's).
#[tokio::test]
async fn mappings_reads_many_keys_at_one_place() {
    let store = Store::open_in_memory().unwrap();
    let total = 1_001;
    {
        let mut conn = raw(&store);
        let tx = conn.transaction().unwrap();
        for n in 1..=total {
            let mut m = mapping(&format!("OPS-{n}"), RemoteState::Opened);
            m.iid = Some(n as u64);
            tx.execute(
                "INSERT INTO mappings (rule, jira_key, target, project, iid, state,
                                       jira_updated, created_at, replicated_at)
                 VALUES (?1, ?2, 'incident', 'ops/incidents', ?3, 'opened', ?4, ?4, ?4)",
                params![
                    RULE,
                    m.jira_key,
                    Int(n as u64),
                    format_timestamp(m.jira_updated)
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut keys: Vec<JiraKey> = (1..=total + 10).map(|n| key(&format!("OPS-{n}"))).collect();
    keys.push(key("DEV-1"));
    let found = store.mappings(&place(), legacy(keys)).await.unwrap();
    assert_eq!(
        found.len(),
        total,
        "every stored key is found, no unknown one"
    );
    assert_eq!(
        found[&key(&format!("OPS-{total}"))].iid,
        Some(total as u64),
        "each key maps to its own row"
    );
    let elsewhere = Place::new(
        &Destination {
            project: "ops/other".to_owned(),
            ..place().dest
        },
        43,
    );
    assert!(
        store
            .mappings(&elsewhere, legacy(vec![key("OPS-1")]))
            .await
            .unwrap()
            .is_empty(),
        "mappings are per project"
    );
    assert!(
        store
            .mappings(&place(), Vec::new())
            .await
            .unwrap()
            .is_empty(),
        "no keys, no rows"
    );
}

/// `all_mappings` lists a rule's mappings ordered by key.
#[tokio::test]
async fn all_mappings_are_ordered_by_key() {
    let (_dir, _path, store) = temp_store();
    for k in ["OPS-3", "OPS-1", "OPS-2"] {
        store
            .commit(
                RULE,
                Commit::Replicated(mapping(k, RemoteState::Opened)),
                None,
            )
            .await
            .unwrap();
    }
    let keys: Vec<String> = store
        .all_mappings(RULE)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.jira_key.to_string())
        .collect();
    assert_eq!(keys, ["OPS-1", "OPS-2", "OPS-3"], "ordered by key");
    assert!(
        store.all_mappings("other").await.unwrap().is_empty(),
        "per rule"
    );
}

/// `set_meta` replaces, `get_meta` reads back, an unknown key is `None`.
#[tokio::test]
async fn meta_round_trips() {
    let (_dir, _path, store) = temp_store();
    assert_eq!(
        store.get_meta("k").await.unwrap(),
        None,
        "nothing stored yet"
    );
    store.set_meta("k", "one").await.unwrap();
    store.set_meta("k", "two").await.unwrap();
    assert_eq!(
        store.get_meta("k").await.unwrap().as_deref(),
        Some("two"),
        "last write wins"
    );
}

/// Stored timestamps are fixed width, so text order is time order, and they round-trip at
/// millisecond precision.
#[test]
fn timestamps_sort_as_text_and_round_trip() {
    let times = [
        at("2024-05-01T09:59:59.999Z"),
        at("2024-05-01T10:00:00Z"),
        at("2024-05-01T10:00:00.001Z"),
        at("2024-12-31T23:00:00+02:00"),
    ];
    let texts: Vec<String> = times.iter().copied().map(format_timestamp).collect();
    assert!(
        texts.iter().all(|t| t.len() == 24),
        "fixed width: {texts:?}"
    );
    assert!(
        texts.windows(2).all(|w| w[0] < w[1]),
        "text order is time order: {texts:?}"
    );
    assert_eq!(texts[3], "2024-12-31T21:00:00.000Z", "stored in UTC");
    for (t, text) in times.iter().zip(&texts) {
        assert_eq!(parse_timestamp(text), Some(*t), "{text} round-trips");
    }
}

/// Only the store's own spelling parses: other RFC 3339 forms would break text ordering.
#[test]
fn other_timestamp_spellings_do_not_parse() {
    for text in [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.000+00:00",
        "2024-05-01 10:00:00.000Z",
        "2024-05-01T10:00:00.0000Z",
        "",
    ] {
        assert_eq!(
            parse_timestamp(text),
            None,
            "{text:?} is not the store's format"
        );
    }
}

/// Only SQLite's busy and locked errors are retryable.
#[test]
fn busy_and_locked_errors_are_retryable() {
    let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    let busy = StoreError::Query {
        context: "testing",
        source: sqlite(rusqlite::ffi::SQLITE_BUSY),
    };
    let locked = StoreError::Query {
        context: "testing",
        source: sqlite(rusqlite::ffi::SQLITE_LOCKED),
    };
    let full = StoreError::Query {
        context: "testing",
        source: sqlite(rusqlite::ffi::SQLITE_FULL),
    };
    assert!(
        busy.is_retryable() && locked.is_retryable(),
        "busy and locked pass"
    );
    assert!(
        !full.is_retryable(),
        "a full disk does not go away by retrying"
    );
    let corrupt = StoreError::Corrupt {
        table: "t",
        column: "c",
        key: "k".to_owned(),
        value: String::new(),
    };
    assert!(!corrupt.is_retryable(), "bad data stays bad");
}

/// A run an earlier process left open (killed mid-run) is closed as failed, with why, when the
/// store is next opened for writing: `status` does not show it running for ever. A finished run
/// is left as it was.
#[tokio::test]
async fn runs_left_open_are_closed_as_failed_on_the_next_open() {
    let (_dir, path, store) = temp_store();
    let done = store.start_run(RULE, RunMode::Once).await.unwrap();
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            None,
        )
        .await
        .unwrap();
    store
        .finish_run(done, RunOutcome::Ok, RunCounts::default(), None)
        .await
        .unwrap();
    store.start_run(RULE, RunMode::Backfill).await.unwrap();
    // Its first write gives the run its row.
    store
        .begin_intent(RULE, &place(), None, &key("OPS-2"))
        .await
        .unwrap();
    drop(store);

    let reader = Store::open_read_only(&path).unwrap();
    let last = reader.rule_status().await.unwrap()[0].last_run.clone();
    assert_eq!(last.unwrap().outcome, None, "still open before the reopen");
    drop(reader);

    let store = Store::open(&path).expect("the store reopens");
    let last = store.rule_status().await.unwrap()[0]
        .last_run
        .clone()
        .expect("the run is logged");
    assert_eq!(last.mode, RunMode::Backfill);
    assert_eq!(last.outcome, Some(RunOutcome::Failed), "{last:?}");
    assert!(last.finished_at.is_some(), "{last:?}");
    assert_eq!(last.error.as_deref(), Some(ABANDONED_RUN));
    let outcomes: Vec<Option<String>> = store
        .read(|conn| {
            let mut stmt = conn
                .prepare("SELECT outcome FROM runs ORDER BY id")
                .unwrap();
            let rows = stmt
                .query_map([], |row| row.get(0))
                .and_then(Iterator::collect)
                .unwrap();
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [Some("ok".to_owned()), Some("failed".to_owned())],
        "the finished run is untouched"
    );
}

/// `lock_state` tells no store, a free store and a held one (with the holder's pid) apart, and
/// takes nothing: the holder keeps its lock, and a free store can be opened after.
#[tokio::test]
async fn lock_state_names_the_holder() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("sync.db");
    assert_eq!(Store::lock_state(&path).unwrap(), LockState::NoStore);
    assert!(!path.exists(), "probing creates nothing");
    let store = Store::open(&path).unwrap();
    assert_eq!(
        Store::lock_state(&path).unwrap(),
        LockState::Held {
            holder: Some(std::process::id())
        }
    );
    store.cursor(RULE).await.expect("the holder still uses it");
    drop(store);
    assert_eq!(Store::lock_state(&path).unwrap(), LockState::Free);
    Store::open(&path).expect("nothing was left held");
    assert_eq!(Store::unwritable(&path), None);
    let file = dir.path().join("afile");
    std::fs::write(&file, "").unwrap();
    let why = Store::unwritable(&file.join("sync.db")).expect("a file is no directory");
    assert!(why.contains("afile"), "{why}");
}

/// Every file a new store creates — the database, its WAL and shared-memory files, the pid file
/// beside them — and a directory it creates are its owner's alone, whatever the umask.
#[cfg(unix)]
#[tokio::test]
async fn new_store_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state").join("sync.db");
    let store = Store::open(&path).unwrap();
    store.start_run(RULE, RunMode::Once).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["sync.db", "sync.db-shm", "sync.db-wal", "sync.db.lock"],
        "the files a store makes"
    );
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(path.parent().unwrap()), 0o700, "the directory it made");
}

/// Commits the store counts in `stats`, of the writer's transactions since opening.
fn stats(store: &Store) -> StoreStats {
    store.stats()
}

/// `PRAGMA data_version` as seen from another connection: it changes when any other connection
/// commits a change to the file.
fn data_version(other: &Connection) -> i64 {
    other
        .query_row("PRAGMA data_version", [], |r| r.get(0))
        .expect("data_version reads")
}

/// Every read path of the engine and `status`, and a run that wrote nothing, leave the file
/// untouched: no change counted, no commit, and another connection sees no new version.
/// (Reopening an up-to-date store writes nothing either.)
#[tokio::test]
async fn reads_and_idle_runs_write_nothing() {
    let (_dir, path, store) = temp_store();
    let m = Mapping {
        jira_id: Some(JiraId::parse("101").unwrap()),
        project_id: Some(42),
        ..mapping("OPS-1", RemoteState::Opened)
    };
    store
        .commit(
            RULE,
            Commit::Replicated(m),
            Some(at("2024-05-01T11:00:00Z")),
        )
        .await
        .unwrap();
    let failed = Commit::Failed {
        snapshot: snapshot("OPS-2", "2024-05-01T11:00:00Z"),
        error: "boom".to_owned(),
    };
    store.commit(RULE, failed, None).await.unwrap();
    store.set_meta("zone", "UTC").await.unwrap();
    drop(store);

    let other = Connection::open(&path).unwrap();
    let version = data_version(&other);
    let store = Store::open_with(
        &path,
        StoreOptions {
            keep_runs_days: Some(30),
        },
    )
    .expect("the store reopens");
    assert_eq!(
        data_version(&other),
        version,
        "reopening an up-to-date store writes nothing"
    );
    let changes = raw(&store).total_changes();
    let before = stats(&store);

    let run = store.start_run(RULE, RunMode::Service).await.unwrap();
    assert!(store.cursor(RULE).await.unwrap().is_some());
    let found = store
        .mappings(
            &place(),
            vec![(Some(JiraId::parse("101").unwrap()), key("OPS-1"))],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "the mapping is read");
    assert_eq!(store.failures(RULE).await.unwrap().len(), 1);
    assert_eq!(
        SyncStore::meta(&store, "zone").await.unwrap().as_deref(),
        Some("UTC")
    );
    store.project_id("ops/incidents").await.unwrap();
    store
        .following(RULE, at("2030-01-01T00:00:00Z"))
        .await
        .unwrap();
    store.max_iid(&place()).await.unwrap();
    store.rule_status().await.unwrap();
    store.failure_list(RULE).await.unwrap();
    store.all_mappings(RULE).await.unwrap();
    store
        .finish_run(run, RunOutcome::Ok, RunCounts::default(), None)
        .await
        .unwrap();
    let cancelled = store.start_run(RULE, RunMode::Service).await.unwrap();
    store
        .finish_run(cancelled, RunOutcome::Cancelled, RunCounts::default(), None)
        .await
        .unwrap();

    assert_eq!(
        raw(&store).total_changes(),
        changes,
        "reads and idle runs change no row"
    );
    assert_eq!(stats(&store).commits, before.commits, "nothing committed");
    assert_eq!(
        data_version(&other),
        version,
        "no other connection sees a change"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs"),
        0,
        "a run that wrote nothing leaves no row"
    );
}

/// A run that writes gets its row with its first write (unfinished until it ends); a run that
/// fails before writing gets one at its end, and the same failure again updates that row
/// instead of adding one a cycle.
#[tokio::test]
async fn runs_are_logged_when_they_write_or_fail() {
    let (_dir, _path, store) = temp_store();
    let run = store.start_run(RULE, RunMode::Service).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM runs"), 0);
    store
        .begin_intent(RULE, &place(), None, &key("OPS-1"))
        .await
        .unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM runs WHERE finished_at IS NULL"
        ),
        1,
        "the first write opens the run's row"
    );
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            None,
        )
        .await
        .unwrap();
    let counts = RunCounts {
        seen: 1,
        created: 1,
        ..RunCounts::default()
    };
    store
        .finish_run(run, RunOutcome::Ok, counts.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM runs WHERE created = 1 AND outcome = 'ok'"
        ),
        1,
        "one row, closed with its counts"
    );

    for _ in 0..3 {
        let run = store.start_run(RULE, RunMode::Service).await.unwrap();
        store
            .finish_run(
                run,
                RunOutcome::Failed,
                RunCounts::default(),
                Some("cannot reach Jira".to_owned()),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs WHERE outcome = 'failed'"),
        1,
        "a repeated failure is one row, not one a cycle"
    );
    let status = store.rule_status().await.unwrap();
    let last = status[0].last_run.as_ref().unwrap();
    assert_eq!(
        (last.outcome, last.error.as_deref()),
        (Some(RunOutcome::Failed), Some("cannot reach Jira")),
        "status shows the failure"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM runs"), 2);
}

/// Inserts a finished run of `rule` that ended `days_ago` days ago.
fn old_run(store: &Store, rule: &str, days_ago: i64) {
    let at = format_timestamp(Utc::now() - chrono::Duration::days(days_ago));
    raw(store)
        .execute(
            "INSERT INTO runs (rule, mode, started_at, finished_at, outcome)
             VALUES (?1, 'service', ?2, ?2, 'ok')",
            params![rule, at],
        )
        .unwrap();
}

/// Opening with a retention deletes the finished runs older than it, but keeps each rule's
/// newest run however old (`status` shows it) and runs still open.
#[tokio::test]
async fn opening_prunes_runs_past_the_retention() {
    let (_dir, path, store) = temp_store();
    for days in [90, 45, 31, 29, 1] {
        old_run(&store, RULE, days);
    }
    old_run(&store, "retired", 400);
    old_run(&store, "retired", 200);
    drop(store);

    let store = Store::open_with(
        &path,
        StoreOptions {
            keep_runs_days: Some(30),
        },
    )
    .unwrap();
    let mut kept: Vec<(String, i64)> = raw(&store)
        .prepare("SELECT rule, finished_at FROM runs ORDER BY rule, id")
        .unwrap()
        .query_map([], |r| {
            let rule: String = r.get(0)?;
            let at: String = r.get(1)?;
            Ok((rule, at))
        })
        .unwrap()
        .map(|r| {
            let (rule, at) = r.unwrap();
            let age = (Utc::now() - parse_timestamp(&at).unwrap()).num_days();
            (rule, age)
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            (RULE.to_owned(), 1),
            (RULE.to_owned(), 29),
            ("retired".to_owned(), 200)
        ],
        "runs within 30 days stay, and each rule's newest"
    );
}

/// The writer prunes while it writes once the day is up, inside the write's own transaction.
#[tokio::test]
async fn the_writer_prunes_when_due() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate::migrate(&mut conn, Path::new(":memory:")).unwrap();
    let pruning = Pruning {
        keep: chrono::Duration::days(7),
        next: std::time::Instant::now(),
    };
    let store = Store::new(conn, Path::new(":memory:"), None, Some(pruning)).unwrap();
    old_run(&store, RULE, 20);
    old_run(&store, RULE, 10);
    old_run(&store, RULE, 2);
    store.rule_status().await.unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs"),
        3,
        "a read does not prune"
    );
    store.set_meta("k", "v").await.unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs"),
        1,
        "the first write prunes what is past the retention"
    );
    old_run(&store, RULE, 20);
    store.set_meta("k", "w").await.unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs"),
        2,
        "at most once a day"
    );
}

/// A repeated statement is prepared once and reused from the cache: after three calls the
/// cached statement has run three times.
#[tokio::test]
async fn repeated_statements_come_from_the_cache() {
    let (_dir, _path, store) = temp_store();
    store
        .advance_cursor(RULE, at("2024-05-01T11:00:00Z"))
        .await
        .unwrap();
    for _ in 0..3 {
        store.cursor(RULE).await.unwrap();
    }
    let conn = raw(&store);
    let stmt = conn
        .prepare_cached(super::sync::CURSOR_SQL)
        .expect("the statement is cached");
    assert_eq!(
        stmt.get_status(rusqlite::StatementStatus::Run),
        3,
        "the same prepared statement served every call"
    );
}

/// Sends the writer a call that holds it until `gate` yields, and returns once the writer runs
/// it: calls sent from then on queue behind it, to be batched together.
async fn hold_writer(
    store: &Store,
    gate: std::sync::mpsc::Receiver<()>,
) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    let (entered, running) = tokio::sync::oneshot::channel();
    let holder = store.clone();
    let held = tokio::spawn(async move {
        holder
            .read(move |_| {
                let _ = entered.send(());
                gate.recv().ok();
                Ok(())
            })
            .await
    });
    running.await.expect("the writer runs the holding call");
    held
}

/// Create intents are the only durable (fsynced) commits, and the intents queued together
/// share one: sixteen begun while the writer is busy cost one fsync.
#[tokio::test]
async fn only_intents_are_durable_and_queued_ones_share_a_commit() {
    let (_dir, _path, store) = temp_store();
    let before = stats(&store);
    // What the connection's `synchronous` is after a call (FULL 2, NORMAL 1).
    let level = |store: &Store| -> i64 {
        raw(store)
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    store
        .begin_intent(RULE, &place(), None, &key("OPS-1"))
        .await
        .unwrap();
    assert_eq!(level(&store), 2, "the intent is committed at FULL");
    store.set_meta("k", "u").await.unwrap();
    assert_eq!(level(&store), 1, "other writes at NORMAL");
    store
        .begin_intent(RULE, &place(), None, &key("OPS-9"))
        .await
        .unwrap();
    assert_eq!(level(&store), 2, "and the next intent at FULL again");
    store
        .commit(
            RULE,
            Commit::Replicated(mapping("OPS-1", RemoteState::Opened)),
            Some(at("2024-05-01T11:00:00Z")),
        )
        .await
        .unwrap();
    store
        .advance_cursor(RULE, at("2024-05-01T12:00:00Z"))
        .await
        .unwrap();
    store.set_meta("k", "v").await.unwrap();
    let after = stats(&store);
    assert_eq!(
        (
            after.commits - before.commits,
            after.durable_commits - before.durable_commits
        ),
        (6, 2),
        "six commits, of which only the intents' are durable"
    );

    // Hold the writer in a call of its own while sixteen intents queue behind it.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = hold_writer(&store, gate).await;
    let mut intents: Vec<_> = (1..=16)
        .map(|n| {
            let store = store.clone();
            Box::pin(async move {
                let k = key(&format!("DEV-{n}"));
                store.begin_intent(RULE, &place(), None, &k).await
            })
        })
        .collect();
    // Poll each once: each sends its call to the writer and waits for the answer.
    std::future::poll_fn(|cx| {
        for f in &mut intents {
            assert!(f.as_mut().poll(cx).is_pending(), "the writer is held");
        }
        std::task::Poll::Ready(())
    })
    .await;
    let before = stats(&store);
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for f in intents {
        f.await.unwrap();
    }
    let after = stats(&store);
    assert_eq!(
        after.durable_commits - before.durable_commits,
        1,
        "sixteen queued intents, one fsync"
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM intents WHERE jira_key LIKE 'DEV-%'"
        ),
        16
    );
}

/// A store call under way, to be polled by hand.
type PendingCall<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + 'a>>;

/// A call that fails rolls back only its own writes, in a batch with others that succeed.
#[tokio::test]
async fn a_failing_call_in_a_batch_rolls_back_alone() {
    let (_dir, _path, store) = temp_store();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = hold_writer(&store, gate).await;
    let mut calls: Vec<PendingCall<'_>> = vec![
        Box::pin(store.call(Mode::Write, |conn| {
            exec(conn, "INSERT INTO meta VALUES ('a', '1')", [], "test")?;
            Ok(())
        })),
        Box::pin(store.call(Mode::Write, |conn| {
            exec(conn, "INSERT INTO meta VALUES ('b', '1')", [], "test")?;
            // The key exists: this call fails, and its first insert is undone with it.
            exec(conn, "INSERT INTO meta VALUES ('a', '2')", [], "test")?;
            Ok(())
        })),
        Box::pin(store.call(Mode::Write, |_| -> Result<(), StoreError> {
            panic!("a bug in a call")
        })),
        Box::pin(store.call(Mode::Write, |conn| {
            exec(conn, "INSERT INTO meta VALUES ('c', '1')", [], "test")?;
            Ok(())
        })),
    ];
    std::future::poll_fn(|cx| {
        for f in &mut calls {
            assert!(f.as_mut().poll(cx).is_pending(), "the writer is held");
        }
        std::task::Poll::Ready(())
    })
    .await;
    let before = stats(&store);
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let mut results = Vec::new();
    for f in calls {
        results.push(f.await);
    }
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::Query { .. })),
        "{results:?}"
    );
    assert!(matches!(results[2], Err(StoreError::Writer)), "{results:?}");
    assert_eq!(
        stats(&store).commits - before.commits,
        1,
        "one transaction for the batch"
    );
    let keys: Vec<String> = raw(&store)
        .prepare("SELECT key || '=' || value FROM meta ORDER BY key")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys, ["a=1", "c=1"], "the failed call left nothing behind");
    store.set_meta("d", "1").await.expect("the writer lives on");
}
