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

mod migrate;

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::types::ToSqlOutput;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params,
    params_from_iter,
};
use serde::Serialize;
use tokio::task::JoinError;

use crate::domain::{
    Commit, Failure, Intent, IssueSnapshot, JiraKey, Mapping, RemoteState, RunCounts, RunMode,
    RunOutcome, Target, UnknownName,
};
use crate::engine::ports::{PortError, SyncStore};

/// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
/// Long enough to ride out a `status` reader or a WAL checkpoint, short enough that a genuinely
/// stuck store surfaces as an error within a sync cycle.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// How many keys go into one `IN (...)` list. SQLite's bound-parameter limit is far higher in
/// current versions (32 766), but older builds allow only 999; 500 stays clear of both.
const KEYS_PER_QUERY: usize = 500;

/// The one timestamp format in the file: fixed width, so text order is time order.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// How much of a bad value a [`StoreError::Corrupt`] quotes.
const CORRUPT_EXCERPT_CHARS: usize = 120;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory the store file goes in could not be created.
    #[error("cannot create the store's directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The lock file next to the store could not be opened, locked or written.
    #[error("cannot lock the store {} (lock file {})", path.display(), lock_path.display())]
    LockFile {
        path: PathBuf,
        lock_path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process holds the store's lock.
    #[error(
        "the store {} is in use by another jira-gitlab-sync process ({}); stop it, or point [store] path at another file",
        path.display(),
        holder_label(*holder)
    )]
    Locked {
        path: PathBuf,
        /// The holder's pid as it wrote it into the lock file, if it could be read.
        holder: Option<u32>,
    },
    /// SQLite could not open the file, set its pragmas, or read its schema version.
    #[error("cannot open the store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A read-only open found no file.
    #[error(
        "the store {} does not exist: no sync has run yet with this store path",
        path.display()
    )]
    Missing { path: PathBuf },
    /// A migration's SQL failed; the store is left at its previous version.
    #[error("cannot migrate the store {} to schema version {version}", path.display())]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was written by a newer build.
    #[error(
        "the store {} has schema version {found}, but this build knows only up to {known}; run a newer jira-gitlab-sync, or point [store] path at another file",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    /// A read-only open found a store that needs migrating, which only a writing open does.
    #[error(
        "the store {} has schema version {found}, older than this build's {known}; run the sync once to migrate it",
        path.display()
    )]
    Outdated {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    /// A statement failed. `context` says what the store was doing.
    #[error("store query failed while {context}")]
    Query {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A value in the file is not one this build writes (the file was edited or damaged).
    #[error(
        "the store's {table}.{column} for {key} holds {value:?}, which is not a value this program writes (was the file edited?)"
    )]
    Corrupt {
        table: &'static str,
        column: &'static str,
        /// The row: `<rule>/<jira key>`, `run <id>` or the like.
        key: String,
        /// The value, or its beginning if long.
        value: String,
    },
    /// A snapshot could not be turned into JSON for the failures table.
    #[error("cannot encode the snapshot of {key} as JSON")]
    Encode {
        key: JiraKey,
        #[source]
        source: serde_json::Error,
    },
    /// `finish_run` named a run the log does not have.
    #[error("run {id} is not in the store's run log")]
    UnknownRun { id: i64 },
    /// The blocking task running the SQL panicked, or the runtime shut down before it ran.
    #[error("a store task panicked or was cancelled")]
    Join(#[from] JoinError),
}

impl PortError for StoreError {
    /// Returns true if and only if the error is SQLite reporting the database busy or locked by
    /// another connection past the busy timeout: trying the same call again later may succeed.
    /// A store held by another process ([`StoreError::Locked`]) is not retryable: it needs a
    /// person.
    fn is_retryable(&self) -> bool {
        match self {
            StoreError::Open { source, .. }
            | StoreError::Migrate { source, .. }
            | StoreError::Query { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

/// Returns true if and only if `err` is `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code).
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// "pid 1234", or what to say when the lock file did not tell.
fn holder_label(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// A [`StoreError::Query`] maker for `map_err`.
fn query(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}

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

/// Takes the advisory lock on `<path>.lock` and writes our pid into it.
fn lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock_error = |source| StoreError::LockFile {
        path: path.to_path_buf(),
        lock_path: lock_path.clone(),
        source,
    };
    // Not truncated on open: while another process holds it, its pid is what we want to read.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(source)) => return Err(lock_error(source)),
    }
    file.set_len(0).map_err(lock_error)?;
    (&file)
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(lock_error)?;
    Ok(file)
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

/// Where a value came from, for decoding it into a domain type or a [`StoreError::Corrupt`].
#[derive(Clone)]
struct Cell {
    table: &'static str,
    column: &'static str,
    /// The row, as a person would name it.
    key: String,
}

impl Cell {
    /// A cell of a row known so far only by its rule.
    fn new(table: &'static str, column: &'static str, rule: &str) -> Cell {
        Cell {
            table,
            column,
            key: rule.to_owned(),
        }
    }

    /// The same row, now also named by its Jira key.
    fn key(&self, key: &JiraKey) -> Cell {
        Cell {
            key: format!("{}/{key}", self.key),
            ..self.clone()
        }
    }

    /// Another column of the same row.
    fn column(&self, column: &'static str) -> Cell {
        Cell {
            column,
            ..self.clone()
        }
    }

    fn corrupt(&self, value: &str) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            column: self.column,
            key: self.key.clone(),
            value: value.chars().take(CORRUPT_EXCERPT_CHARS).collect(),
        }
    }

    /// One of an enum's names as the store writes them (`domain::string_enum!`).
    fn name<T: std::str::FromStr<Err = UnknownName>>(&self, text: &str) -> Result<T, StoreError> {
        text.parse().map_err(|_| self.corrupt(text))
    }

    fn timestamp(&self, text: String) -> Result<DateTime<Utc>, StoreError> {
        parse_timestamp(&text).ok_or_else(|| self.corrupt(&text))
    }

    fn jira_key(&self, text: String) -> Result<JiraKey, StoreError> {
        JiraKey::parse(&text).map_err(|bad| self.corrupt(&bad))
    }

    /// An attempts count, which this program keeps between 0 and `u32::MAX`.
    fn count(&self, value: i64) -> Result<u32, StoreError> {
        u32::try_from(value).map_err(|_| self.corrupt(&value.to_string()))
    }
}

/// Formats `t` the one way the store writes times (millisecond precision, always 24 characters).
fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format(TIMESTAMP_FORMAT).to_string()
}

/// Parses a time written by [`format_timestamp`]; anything else, even another valid RFC 3339
/// spelling, is `None`, because it would break the store's text ordering.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT)
        .ok()?
        .and_utc();
    (format_timestamp(t) == text).then_some(t)
}

impl ToSql for JiraKey {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl ToSql for Target {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl ToSql for RemoteState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl ToSql for RunMode {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl ToSql for RunOutcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// A `u64` bound as SQLite's signed 64-bit integer; a value above `i64::MAX` (which no count or
/// GitLab iid reaches) fails the statement instead of wrapping.
struct Int(u64);

impl ToSql for Int {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        i64::try_from(self.0)
            .map(ToSqlOutput::from)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::MutexGuard;

    use tempfile::TempDir;

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
        }
    }

    fn mapping(k: &str, state: RemoteState) -> Mapping {
        Mapping {
            rule: RULE.to_owned(),
            jira_key: key(k),
            target: Target::Incident,
            project: "ops/incidents".to_owned(),
            iid: Some(7),
            web_url: Some("https://gitlab.example/ops/incidents/-/issues/7".to_owned()),
            state,
            jira_updated: at("2024-05-01T11:00:00.250Z"),
            created_at: at("2024-05-01T10:00:00Z"),
            closed_at: (state == RemoteState::Closed).then(|| at("2024-05-01T12:00:00Z")),
            content_hash: Some("00ff00ff00ff00ff".to_owned()),
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
        store.begin_intent(RULE, &k).await.unwrap();
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
        store.begin_intent(RULE, &k).await.unwrap();
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
        store.begin_intent(RULE, &k).await.unwrap();
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
        let listed = store.failure_list(RULE).await.unwrap();
        assert_eq!(
            listed,
            vec![(k, 2, "second".to_owned(), f.last_failed_at)],
            "failure_list agrees with failures"
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
        let first = store.begin_intent(RULE, &k).await.unwrap();
        assert_eq!(
            first.previous_attempts, 0,
            "a fresh intent has no earlier attempt"
        );
        let second = store.begin_intent(RULE, &k).await.unwrap();
        let third = store.begin_intent(RULE, &k).await.unwrap();
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
        let other_key = store.begin_intent(RULE, &key("OPS-2")).await.unwrap();
        let other_rule = store.begin_intent("other", &k).await.unwrap();
        assert_eq!(
            (other_key.previous_attempts, other_rule.previous_attempts),
            (0, 0),
            "attempts are counted per rule and key"
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
        store.begin_intent(RULE, &key("OPS-5")).await.unwrap();
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
        let only_run = store.start_run("quiet", RunMode::Once).await.unwrap();
        store.begin_intent("pending", &key("DEV-1")).await.unwrap();

        let status = store.rule_status().await.unwrap();
        let rules: Vec<&str> = status.iter().map(|s| s.rule.as_str()).collect();
        assert_eq!(
            rules,
            [RULE, "pending", "quiet"],
            "every rule appears once, sorted"
        );

        let ops = &status[0];
        assert_eq!(ops.cursor, Some(cursor), "the cursor is shown");
        assert_eq!(
            (
                ops.mapped,
                ops.open,
                ops.closed,
                ops.failed,
                ops.pending_intents
            ),
            (3, 1, 2, 1, 1),
            "mappings by state, failures and intents are counted"
        );
        let last = ops.last_run.as_ref().expect("the rule has runs");
        assert_eq!(last.id, run, "the newest run is shown");
        assert_eq!(
            (last.mode, last.outcome, &last.counts, last.error.as_deref()),
            (
                RunMode::Service,
                Some(RunOutcome::Partial),
                &counts,
                Some("one failed")
            ),
            "the run's outcome, counts and error are kept"
        );
        assert!(
            last.finished_at.is_some(),
            "a finished run has its end time"
        );

        assert_eq!(
            status[1].pending_intents, 1,
            "a rule with only an intent is listed"
        );
        assert_eq!(
            status[1].last_run, None,
            "a rule with no runs has no last run"
        );
        let quiet = status[2]
            .last_run
            .as_ref()
            .expect("a rule with only a run has it");
        assert_eq!(
            (quiet.id, quiet.outcome, quiet.finished_at),
            (only_run, None, None),
            "an unfinished run has no outcome or end"
        );
        assert_eq!(
            (status[2].mapped, status[2].cursor),
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
            .mappings(RULE, vec![key("OPS-1")])
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

    /// `mappings` returns only the asked-for keys that have mappings, across several `IN` lists.
    #[tokio::test]
    async fn mappings_reads_more_keys_than_one_query_holds() {
        let store = Store::open_in_memory().unwrap();
        let total = KEYS_PER_QUERY * 2 + 1;
        {
            let mut conn = raw(&store);
            let tx = conn.transaction().unwrap();
            for n in 1..=total {
                let mut m = mapping(&format!("OPS-{n}"), RemoteState::Opened);
                m.iid = Some(n as u64);
                tx.execute(
                    "INSERT INTO mappings (rule, jira_key, target, project, iid, state,
                                           jira_updated, created_at, replicated_at)
                     VALUES (?1, ?2, 'incident', 'p', ?3, 'opened', ?4, ?4, ?4)",
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
        let found = store.mappings(RULE, keys).await.unwrap();
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
        assert!(
            store
                .mappings("other", vec![key("OPS-1")])
                .await
                .unwrap()
                .is_empty(),
            "mappings are per rule"
        );
        assert!(
            store.mappings(RULE, Vec::new()).await.unwrap().is_empty(),
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
}
