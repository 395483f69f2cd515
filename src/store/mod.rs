//! The SQLite store: each rule's cursor, the Jira → GitLab mappings, create intents, failed
//! issues kept for retry, the run log, and a small key/value table.
//!
//! This module owns the database file: opening it (one writing process at a time, enforced by an
//! advisory lock on `<path>.lock`), its pragmas, migrating it (the private `migrate` module),
//! and every SQL statement run against it. It implements [`SyncStore`] for the engine, plus a few read methods
//! for `status`. It does not decide *what* to write: the engine decides when an issue is
//! replicated, failed, or when a cursor may move; the store only makes each such step atomic.
//!
//! # Conventions
//! - Every method, trait or inherent, is `async` and runs its SQL on tokio's blocking pool
//!   (`spawn_blocking`) in one short transaction. The connection sits behind a mutex, so calls are
//!   serialised; none of them waits on the network.
//! - Timestamps are stored as UTC text in one fixed format with millisecond precision
//!   (`2024-05-01T12:00:00.000Z`), so text order is time order. Sub-millisecond parts are dropped
//!   on write.
//! - Nothing read from the file is trusted: a value this build would not have written is a
//!   [`StoreError::Corrupt`] naming the table, column and row, never a panic.

mod codec;
mod error;
mod lock;
mod migrate;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params, params_from_iter,
};
use serde::Serialize;

use crate::domain::{
    Commit, Failure, Intent, IssueSnapshot, JiraKey, Mapping, RemoteState, RunCounts, RunMode,
    RunOutcome, Target,
};
use crate::engine::ports::SyncStore;

use codec::{Cell, Int, format_timestamp};
use error::query;
use lock::lock;

pub use error::StoreError;

/// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
/// Long enough to ride out a `status` reader or a WAL checkpoint, short enough that a genuinely
/// stuck store surfaces as an error within a sync cycle.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// How many keys go into one `IN (...)` list. SQLite's bound-parameter limit is far higher in
/// current versions (32 766), but older builds allow only 999; 500 stays clear of both.
const KEYS_PER_QUERY: usize = 500;

/// The SQLite store. Cloning is cheap and shares one connection.
///
/// Writes go through one connection behind a mutex; a store opened with [`Store::open`] also
/// holds an advisory lock on `<path>.lock` until the last clone is dropped, so two writing
/// processes never share a file.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every clone of a [`Store`] shares. A blocking task holds its own reference, so a call
/// whose future is dropped mid-way still finishes under the lock.
#[derive(Debug)]
struct Inner {
    // Field order matters: the connection closes (and checkpoints the WAL) before the lock is
    // released, so the next process never opens a file this one is still writing.
    conn: Mutex<Connection>,
    /// The file, for error messages (`:memory:` for an in-memory store).
    path: PathBuf,
    /// Held only to keep the advisory lock; `None` for read-only and in-memory stores.
    _lock: Option<File>,
}

impl Store {
    /// Wraps an opened, migrated connection.
    fn new(conn: Connection, path: &Path, lock: Option<File>) -> Store {
        Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                _lock: lock,
            }),
        }
    }

    /// Opens the store at `path` for reading and writing, creating the file and its directory if
    /// missing, and migrates it to this build's schema.
    ///
    /// Takes an exclusive advisory lock on `<path>.lock` (and writes this process's pid into it)
    /// that lasts as long as the store. This call blocks on file I/O briefly; call it at startup
    /// or from `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds the store; [`StoreError::CreateDir`] or
    /// [`StoreError::LockFile`] for file-system failures; [`StoreError::Open`] if SQLite cannot
    /// open the file; [`StoreError::TooNew`] or [`StoreError::Migrate`] from the migration.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = lock(path)?;
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        // busy_timeout first, so that switching to WAL waits for a reader instead of failing.
        conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))
            .map_err(open_error)?;
        // WAL lets `status` read while the service writes. The pragma answers the mode in force.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode, "store is not in WAL mode");
        }
        // No foreign keys yet; on so that a later migration's references are enforced.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        // FULL: every commit reaches the disk before the next GitLab write. With NORMAL a power
        // cut could lose a just-committed intent, and the create it guarded could then be
        // repeated. Commits are per replicated issue, far below what an fsync each costs.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        migrate::migrate(&mut conn, path)?;
        Ok(Store::new(conn, path, Some(lock)))
    }

    /// Opens an existing store for reading only, without the lock: for `status` while a service
    /// runs. Does not migrate. Write methods on the result fail.
    ///
    /// # Errors
    /// [`StoreError::Missing`] if the file does not exist; [`StoreError::Outdated`] if it needs
    /// migrating (run the sync once); [`StoreError::TooNew`] if a newer build wrote it;
    /// [`StoreError::Open`] if SQLite cannot open or read it.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // If the file system cannot say, let SQLite try and report what it finds.
        if !path.try_exists().unwrap_or(true) {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))
            .map_err(open_error)?;
        migrate::check_current(&conn, path)?;
        Ok(Store::new(conn, path, None))
    }

    /// A fresh, migrated store that lives in memory and vanishes when the last clone is dropped:
    /// for tests, and for `--dry-run` when no store file exists yet.
    ///
    /// # Errors
    /// [`StoreError::Open`] or [`StoreError::Migrate`] if SQLite fails (it should not).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = Path::new(":memory:");
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        migrate::migrate(&mut conn, path)?;
        Ok(Store::new(conn, path, None))
    }

    /// The store's file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave a transaction open (a `Transaction`
            // rolls back when dropped during unwinding), so the connection is still sound.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await?
    }

    /// Every rule any table mentions, sorted by id, with its cursor, counts and newest run.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a stored value is not
    /// readable.
    pub async fn rule_status(&self) -> Result<Vec<RuleStatus>, StoreError> {
        self.with_conn(read_rule_status).await
    }

    /// The rule's failed issues, oldest first: key, attempts, last error and when it last failed.
    /// Unlike [`SyncStore::failures`] it does not decode the snapshots, so one bad snapshot does
    /// not hide the list.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a stored value is not
    /// readable.
    pub async fn failure_list(&self, rule: &str) -> Result<Vec<FailureEntry>, StoreError> {
        let rule = rule.to_owned();
        self.with_conn(move |conn| read_failure_list(conn, &rule))
            .await
    }

    /// The mapping of one issue, if it has one.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if the row is not readable.
    pub async fn mapping(&self, rule: &str, key: &JiraKey) -> Result<Option<Mapping>, StoreError> {
        let rule = rule.to_owned();
        let key = key.clone();
        self.with_conn(move |conn| {
            let raw = conn
                .query_row(
                    &format!(
                        "SELECT {MAPPING_COLUMNS} FROM mappings WHERE rule = ?1 AND jira_key = ?2"
                    ),
                    params![rule, key],
                    RawMapping::from_row,
                )
                .optional()
                .map_err(query("reading one mapping"))?;
            raw.map(RawMapping::decode).transpose()
        })
        .await
    }

    /// Every mapping of the rule, ordered by key (as text: `OPS-10` sorts before `OPS-9`).
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a row is not readable.
    pub async fn all_mappings(&self, rule: &str) -> Result<Vec<Mapping>, StoreError> {
        let rule = rule.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {MAPPING_COLUMNS} FROM mappings WHERE rule = ?1 ORDER BY jira_key"
                ))
                .map_err(query("listing a rule's mappings"))?;
            let raws = stmt
                .query_map([&rule], RawMapping::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing a rule's mappings"))?;
            raws.into_iter().map(RawMapping::decode).collect()
        })
        .await
    }

    /// The value stored under `key` in the `meta` table, if any.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.with_conn(move |conn| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [&key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(query("reading a meta value"))
        })
        .await
    }

    /// Stores `value` under `key` in the `meta` table, replacing any earlier value.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails (for example, on a read-only store).
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        let value = value.to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &value],
            )
            .map_err(query("writing a meta value"))?;
            Ok(())
        })
        .await
    }
}

/// One failed issue as [`Store::failure_list`] lists it: the Jira key, the attempts so far, the
/// last error, and when it last failed.
pub type FailureEntry = (JiraKey, u32, String, DateTime<Utc>);

/// One rule as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleStatus {
    pub rule: String,
    /// Where the next search starts; `None` before the rule's first commit.
    pub cursor: Option<DateTime<Utc>>,
    /// Issues with a mapping (`open + closed`).
    pub mapped: u64,
    /// Mappings whose GitLab object we last left opened.
    pub open: u64,
    /// Mappings whose GitLab object we last left closed.
    pub closed: u64,
    /// Issues waiting in the failures table for a retry.
    pub failed: u64,
    /// Creates started but never confirmed: each is looked up in GitLab before a new attempt.
    pub pending_intents: u64,
    /// The newest run of the rule, finished or not.
    pub last_run: Option<RunRecord>,
}

/// One entry of the run log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub mode: RunMode,
    pub started_at: DateTime<Utc>,
    /// `None` while the run goes on, or if the process died during it.
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<RunOutcome>,
    pub counts: RunCounts,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl SyncStore for Store {
    type Error = StoreError;

    async fn cursor(&self, rule: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rule = rule.to_owned();
        self.with_conn(move |conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT cursor FROM rule_state WHERE rule = ?1",
                    [&rule],
                    |row| row.get(0),
                )
                .optional()
                .map_err(query("reading a rule's cursor"))?
                .flatten();
            text.map(|t| Cell::new("rule_state", "cursor", &rule).timestamp(t))
                .transpose()
        })
        .await
    }

    async fn mappings(
        &self,
        rule: &str,
        keys: Vec<JiraKey>,
    ) -> Result<HashMap<JiraKey, Mapping>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rule = rule.to_owned();
        self.with_conn(move |conn| {
            // One read transaction, so every chunk sees the same state.
            let tx = conn.transaction().map_err(query("reading mappings"))?;
            let mut found = HashMap::with_capacity(keys.len());
            for chunk in keys.chunks(KEYS_PER_QUERY) {
                let placeholders = vec!["?"; chunk.len()].join(", ");
                let sql = format!(
                    "SELECT {MAPPING_COLUMNS} FROM mappings WHERE rule = ? AND jira_key IN ({placeholders})"
                );
                let mut stmt = tx.prepare(&sql).map_err(query("reading mappings"))?;
                let args = std::iter::once(rule.as_str()).chain(chunk.iter().map(JiraKey::as_str));
                let raws = stmt
                    .query_map(params_from_iter(args), RawMapping::from_row)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(query("reading mappings"))?;
                for raw in raws {
                    let mapping = raw.decode()?;
                    found.insert(mapping.jira_key.clone(), mapping);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn begin_intent(&self, rule: &str, key: &JiraKey) -> Result<Intent, StoreError> {
        let rule = rule.to_owned();
        let key = key.clone();
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| {
            let (attempts, started_at): (i64, String) = conn
                .query_row(
                    "INSERT INTO intents (rule, jira_key, attempts, started_at, last_attempt_at)
                     VALUES (?1, ?2, 1, ?3, ?3)
                     ON CONFLICT (rule, jira_key) DO UPDATE
                        SET attempts = intents.attempts + 1,
                            last_attempt_at = excluded.last_attempt_at
                     RETURNING attempts, started_at",
                    params![rule, key, now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(query("recording a create intent"))?;
            let cell = Cell::new("intents", "attempts", &rule).key(&key);
            let previous_attempts = cell.count(attempts.saturating_sub(1))?;
            let started_at = cell.column("started_at").timestamp(started_at)?;
            Ok(Intent {
                rule,
                jira_key: key,
                previous_attempts,
                started_at,
            })
        })
        .await
    }

    async fn commit(
        &self,
        rule: &str,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let rule = rule.to_owned();
        let now = format_timestamp(Utc::now());
        // Encode before taking the connection: a failure here needs no transaction.
        let change = match commit {
            Commit::Replicated(mapping) => {
                debug_assert_eq!(
                    mapping.rule, rule,
                    "a mapping is committed under its own rule"
                );
                Change::Replicated(mapping)
            }
            Commit::Failed { snapshot, error } => {
                let json =
                    serde_json::to_string(&snapshot).map_err(|source| StoreError::Encode {
                        key: snapshot.key.clone(),
                        source,
                    })?;
                Change::Failed {
                    key: snapshot.key,
                    json,
                    error,
                }
            }
        };
        self.with_conn(move |conn| {
            // IMMEDIATE: take the write lock now, so the transaction never fails half-way on
            // upgrading a read lock (which busy_timeout cannot help with).
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(query("starting a commit"))?;
            match &change {
                Change::Replicated(m) => {
                    tx.execute(
                        "INSERT INTO mappings (rule, jira_key, target, project, iid, web_url, state,
                                               jira_updated, created_at, closed_at, replicated_at,
                                               content_hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                         ON CONFLICT (rule, jira_key) DO UPDATE SET
                            content_hash = excluded.content_hash,
                            target = excluded.target,
                            project = excluded.project,
                            iid = excluded.iid,
                            web_url = excluded.web_url,
                            state = excluded.state,
                            jira_updated = excluded.jira_updated,
                            created_at = excluded.created_at,
                            closed_at = excluded.closed_at,
                            replicated_at = excluded.replicated_at",
                        params![
                            rule,
                            m.jira_key,
                            m.target,
                            m.project,
                            m.iid.map(Int),
                            m.web_url,
                            m.state,
                            format_timestamp(m.jira_updated),
                            format_timestamp(m.created_at),
                            m.closed_at.map(format_timestamp),
                            now,
                            m.content_hash,
                        ],
                    )
                    .map_err(query("recording a mapping"))?;
                    tx.execute(
                        "DELETE FROM intents WHERE rule = ?1 AND jira_key = ?2",
                        params![rule, m.jira_key],
                    )
                    .map_err(query("clearing a create intent"))?;
                    tx.execute(
                        "DELETE FROM failures WHERE rule = ?1 AND jira_key = ?2",
                        params![rule, m.jira_key],
                    )
                    .map_err(query("clearing a failure"))?;
                }
                Change::Failed { key, json, error } => {
                    tx.execute(
                        "INSERT INTO failures (rule, jira_key, snapshot, attempts, last_error,
                                               first_failed_at, last_failed_at)
                         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)
                         ON CONFLICT (rule, jira_key) DO UPDATE SET
                            snapshot = excluded.snapshot,
                            attempts = failures.attempts + 1,
                            last_error = excluded.last_error,
                            last_failed_at = excluded.last_failed_at",
                        params![rule, key, json, error, now],
                    )
                    .map_err(query("recording a failure"))?;
                }
            }
            if let Some(to) = cursor {
                move_cursor(&tx, &rule, to, &now)?;
            }
            tx.commit()
                .map_err(query("committing a replicated or failed issue"))
        })
        .await
    }

    async fn advance_cursor(&self, rule: &str, to: DateTime<Utc>) -> Result<(), StoreError> {
        let rule = rule.to_owned();
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| move_cursor(conn, &rule, to, &now))
            .await
    }

    async fn failures(&self, rule: &str) -> Result<Vec<Failure>, StoreError> {
        let rule = rule.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT jira_key, snapshot, attempts, last_error, last_failed_at
                     FROM failures WHERE rule = ?1
                     ORDER BY first_failed_at, jira_key",
                )
                .map_err(query("listing failures"))?;
            let rows = stmt
                .query_map([&rule], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing failures"))?;
            rows.into_iter()
                .map(|(key, json, attempts, last_error, last_failed_at)| {
                    let cell = Cell::new("failures", "jira_key", &rule);
                    let jira_key = cell.jira_key(key)?;
                    let cell = cell.key(&jira_key);
                    let snapshot: IssueSnapshot = serde_json::from_str(&json)
                        .ok()
                        .filter(|s: &IssueSnapshot| s.key == jira_key)
                        .ok_or_else(|| cell.column("snapshot").corrupt(&json))?;
                    Ok(Failure {
                        rule: rule.clone(),
                        snapshot,
                        attempts: cell.column("attempts").count(attempts)?,
                        last_error,
                        last_failed_at: cell.column("last_failed_at").timestamp(last_failed_at)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn start_run(&self, rule: &str, mode: RunMode) -> Result<i64, StoreError> {
        let rule = rule.to_owned();
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| {
            conn.query_row(
                "INSERT INTO runs (rule, mode, started_at) VALUES (?1, ?2, ?3) RETURNING id",
                params![rule, mode, now],
                |row| row.get(0),
            )
            .map_err(query("opening a run-log entry"))
        })
        .await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get_meta(key).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        Store::set_meta(self, key, value).await
    }

    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        counts: RunCounts,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE runs SET finished_at = ?2, outcome = ?3, seen = ?4, created = ?5,
                                     closed = ?6, reopened = ?7, skipped = ?8, failed = ?9,
                                     error = ?10, updated = ?11
                     WHERE id = ?1",
                    params![
                        run_id,
                        now,
                        outcome,
                        Int(counts.seen),
                        Int(counts.created),
                        Int(counts.closed),
                        Int(counts.reopened),
                        Int(counts.skipped),
                        Int(counts.failed),
                        error,
                        Int(counts.updated),
                    ],
                )
                .map_err(query("closing a run-log entry"))?;
            if changed == 0 {
                return Err(StoreError::UnknownRun { id: run_id });
            }
            Ok(())
        })
        .await
    }
}

/// A commit's change, prepared outside the connection lock.
enum Change {
    Replicated(Mapping),
    Failed {
        key: JiraKey,
        json: String,
        error: String,
    },
}

/// Moves the rule's cursor to `to` unless it is already there or later.
fn move_cursor(
    conn: &Connection,
    rule: &str,
    to: DateTime<Utc>,
    now: &str,
) -> Result<(), StoreError> {
    // Text comparison is time comparison: every timestamp has the same fixed-width format.
    conn.execute(
        "INSERT INTO rule_state (rule, cursor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (rule) DO UPDATE SET
            updated_at = CASE WHEN rule_state.cursor IS NULL OR excluded.cursor > rule_state.cursor
                              THEN excluded.updated_at ELSE rule_state.updated_at END,
            cursor = CASE WHEN rule_state.cursor IS NULL OR excluded.cursor > rule_state.cursor
                          THEN excluded.cursor ELSE rule_state.cursor END",
        params![rule, format_timestamp(to), now],
    )
    .map_err(query("moving a rule's cursor"))?;
    Ok(())
}

/// The columns [`RawMapping::from_row`] reads, in its order.
const MAPPING_COLUMNS: &str = "rule, jira_key, target, project, iid, web_url, state, jira_updated, \
     created_at, closed_at, content_hash";

/// A `mappings` row as SQLite returned it, before any of it is trusted.
struct RawMapping {
    rule: String,
    jira_key: String,
    target: String,
    project: String,
    iid: Option<i64>,
    web_url: Option<String>,
    state: String,
    jira_updated: String,
    created_at: String,
    closed_at: Option<String>,
    content_hash: Option<String>,
}

impl RawMapping {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawMapping {
            rule: row.get(0)?,
            jira_key: row.get(1)?,
            target: row.get(2)?,
            project: row.get(3)?,
            iid: row.get(4)?,
            web_url: row.get(5)?,
            state: row.get(6)?,
            jira_updated: row.get(7)?,
            created_at: row.get(8)?,
            closed_at: row.get(9)?,
            content_hash: row.get(10)?,
        })
    }

    fn decode(self) -> Result<Mapping, StoreError> {
        let cell = Cell::new("mappings", "jira_key", &self.rule);
        let jira_key = cell.jira_key(self.jira_key)?;
        let cell = cell.key(&jira_key);
        let target: Target = cell.column("target").name(&self.target)?;
        let state: RemoteState = cell.column("state").name(&self.state)?;
        let iid = self
            .iid
            .map(|iid| u64::try_from(iid).map_err(|_| cell.column("iid").corrupt(&iid.to_string())))
            .transpose()?;
        Ok(Mapping {
            jira_key,
            target,
            project: self.project,
            iid,
            web_url: self.web_url,
            state,
            jira_updated: cell.column("jira_updated").timestamp(self.jira_updated)?,
            created_at: cell.column("created_at").timestamp(self.created_at)?,
            closed_at: self
                .closed_at
                .map(|t| cell.column("closed_at").timestamp(t))
                .transpose()?,
            content_hash: self.content_hash,
            rule: self.rule,
        })
    }
}

fn read_failure_list(conn: &mut Connection, rule: &str) -> Result<Vec<FailureEntry>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT jira_key, attempts, last_error, last_failed_at
             FROM failures WHERE rule = ?1
             ORDER BY first_failed_at, jira_key",
        )
        .map_err(query("listing failures"))?;
    let rows = stmt
        .query_map([rule], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(query("listing failures"))?;
    rows.into_iter()
        .map(|(key, attempts, last_error, last_failed_at)| {
            let cell = Cell::new("failures", "jira_key", rule);
            let jira_key = cell.jira_key(key)?;
            let cell = cell.key(&jira_key);
            let attempts = cell.column("attempts").count(attempts)?;
            let at = cell.column("last_failed_at").timestamp(last_failed_at)?;
            Ok((jira_key, attempts, last_error, at))
        })
        .collect()
}

fn read_rule_status(conn: &mut Connection) -> Result<Vec<RuleStatus>, StoreError> {
    // One read transaction: the counts and the run log agree with each other.
    let tx = conn.transaction().map_err(query("reading the status"))?;
    let rows = {
        let mut stmt = tx
            .prepare(
                "WITH rules (rule) AS (
                     SELECT rule FROM rule_state UNION SELECT rule FROM mappings
                     UNION SELECT rule FROM intents UNION SELECT rule FROM failures
                     UNION SELECT rule FROM runs)
                 SELECT r.rule,
                        (SELECT cursor FROM rule_state s WHERE s.rule = r.rule),
                        (SELECT count(*) FROM mappings m WHERE m.rule = r.rule AND m.state = 'opened'),
                        (SELECT count(*) FROM mappings m WHERE m.rule = r.rule AND m.state = 'closed'),
                        (SELECT count(*) FROM failures f WHERE f.rule = r.rule),
                        (SELECT count(*) FROM intents i WHERE i.rule = r.rule),
                        (SELECT max(id) FROM runs u WHERE u.rule = r.rule)
                 FROM rules r ORDER BY r.rule",
            )
            .map_err(query("reading the status"))?;
        stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Option<i64>>(6)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(query("reading the status"))?
    };
    rows.into_iter()
        .map(
            |(rule, cursor, open, closed, failed, pending_intents, last_run)| {
                // `count(*)` is never negative.
                let [open, closed, failed, pending_intents] =
                    [open, closed, failed, pending_intents].map(|n| u64::try_from(n).unwrap_or(0));
                let cursor = cursor
                    .map(|t| Cell::new("rule_state", "cursor", &rule).timestamp(t))
                    .transpose()?;
                let last_run = last_run.map(|id| read_run(&tx, id)).transpose()?;
                Ok(RuleStatus {
                    rule,
                    cursor,
                    mapped: open + closed,
                    open,
                    closed,
                    failed,
                    pending_intents,
                    last_run,
                })
            },
        )
        .collect()
}

/// One run-log entry by id; the caller knows it exists.
fn read_run(conn: &Connection, id: i64) -> Result<RunRecord, StoreError> {
    type RawRun = (
        String,
        String,
        Option<String>,
        Option<String>,
        [i64; 7],
        Option<String>,
    );
    let (mode, started_at, finished_at, outcome, counts, error): RawRun = conn
        .query_row(
            "SELECT mode, started_at, finished_at, outcome,
                    seen, created, closed, reopened, skipped, failed, error, updated
             FROM runs WHERE id = ?1",
            [id],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    [
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                        row.get(9)?,
                        row.get(11)?,
                    ],
                    row.get(10)?,
                ))
            },
        )
        .map_err(query("reading a run-log entry"))?;
    let key = format!("run {id}");
    let cell = |column| Cell {
        table: "runs",
        column,
        key: key.clone(),
    };
    let mode: RunMode = cell("mode").name(&mode)?;
    let outcome: Option<RunOutcome> = outcome.map(|o| cell("outcome").name(&o)).transpose()?;
    let [seen, created, closed, reopened, skipped, failed, updated] = counts;
    let n = |column, value: i64| {
        u64::try_from(value).map_err(|_| cell(column).corrupt(&value.to_string()))
    };
    Ok(RunRecord {
        id,
        mode,
        started_at: cell("started_at").timestamp(started_at)?,
        finished_at: finished_at
            .map(|t| cell("finished_at").timestamp(t))
            .transpose()?,
        outcome,
        counts: RunCounts {
            seen: n("seen", seen)?,
            created: n("created", created)?,
            closed: n("closed", closed)?,
            reopened: n("reopened", reopened)?,
            updated: n("updated", updated)?,
            skipped: n("skipped", skipped)?,
            failed: n("failed", failed)?,
        },
        error,
    })
}

#[cfg(test)]
mod tests;
