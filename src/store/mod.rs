//! The SQLite store: each rule's cursor, the Jira → GitLab mappings, create intents, failed
//! issues kept for retry, the run log, and a small key/value table.
//!
//! This module owns the database file: opening it (one writing process at a time, enforced by an
//! advisory lock on `<path>.lock`), its pragmas, migrating it, and every SQL statement run against
//! it. It implements [`SyncStore`] for the engine, plus a few read methods for `status`. It does
//! not decide *what* to write: the engine decides when an issue is replicated, failed, or when a
//! cursor may move; the store only makes each such step atomic.
//!
//! # Layout
//! - This file: [`Store`], opening it (`open`, `open_read_only`, `open_in_memory`) with its
//!   pragmas, and the re-exports that make up the public API.
//! - `error`: [`StoreError`], and which of its kinds are worth retrying.
//! - `lock`: the advisory lock file.
//! - `migrate`: the schema migrations.
//! - `sync`: the [`SyncStore`] impl, the inherent mapping and meta accessors, `retry` and
//!   `forget` of a failing issue ([`FailureChange`]), and their helpers.
//! - `status`: the read-only views `status` shows: [`RuleStatus`], [`RunRecord`],
//!   [`FailureEntry`]; and the keys of objects gone from GitLab.
//! - `codec`: decoding stored values, the timestamp format, and the `ToSql` impls.
//! - `tests`: the unit tests.
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
//!
//! [`SyncStore`]: crate::engine::ports::SyncStore

mod codec;
mod error;
mod lock;
mod migrate;
mod runs;
mod status;
mod sync;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use lock::lock;
use writer::{Call, Counters, Mode, Pruning, Writer};

pub use error::StoreError;
pub use lock::LockState;
pub use status::{FailureEntry, RuleStatus, RunRecord, StrayEntry};
pub use sync::FailureChange;
pub use writer::StoreStats;

/// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
/// Long enough to ride out a `status` reader or a WAL checkpoint, short enough that a genuinely
/// stuck store surfaces as an error within a sync cycle.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// How many prepared statements the connection keeps. Every statement the store runs more than
/// once is prepared from the cache (`prepare_cached`); there are about forty distinct ones (the
/// engine's, `status`'s, and the writer's own transaction control), so this holds them all and
/// none is ever evicted and prepared again. rusqlite's default is 16.
const STATEMENT_CACHE: usize = 96;

/// What [`Store::open_with`] is told besides the path.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    /// Finished runs older than this many days are deleted from the run log, at startup and
    /// then once a day while the store writes (each rule's newest run is always kept). `None`
    /// keeps every run.
    pub keep_runs_days: Option<u32>,
}

/// The SQLite store. Cloning is cheap and shares one connection.
///
/// Every call runs on the store's one writer thread, which owns the connection; a store opened
/// with [`Store::open`] also holds an advisory lock on `<path>.lock` until the last clone is
/// dropped, so two writing processes never share a file.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every clone of a [`Store`] shares.
struct Inner {
    /// Where calls go; `None` only while the store is being dropped.
    calls: Option<writer::Calls>,
    /// The writer thread, joined on drop so that the connection is closed (and the WAL
    /// checkpointed) before the lock is released.
    writer: Option<std::thread::JoinHandle<()>>,
    /// The writer's connection, for the unit tests to arrange and inspect rows with. (It closes,
    /// and checkpoints the WAL, when the writer thread ends: before the lock is released, so
    /// the next process never opens a file this one is still writing.)
    #[cfg(test)]
    conn: Arc<Mutex<Connection>>,
    counters: Arc<Counters>,
    /// Runs started and not yet finished, by the id [`SyncStore::start_run`] gave them. A run
    /// gets its row in `runs` with its first write, so a run that writes nothing costs none.
    ///
    /// [`SyncStore::start_run`]: crate::engine::ports::SyncStore::start_run
    open_runs: Mutex<HashMap<i64, runs::OpenRun>>,
    next_run: AtomicI64,
    /// The file, for error messages (`:memory:` for an in-memory store).
    path: PathBuf,
    /// Held only to keep the advisory lock; `None` for read-only and in-memory stores.
    _lock: Option<File>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("path", &self.path)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends once it has run what is queued and sees no sender left.
        drop(self.calls.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Wraps an opened, migrated connection and starts its writer thread.
    fn new(
        conn: Connection,
        path: &Path,
        lock: Option<File>,
        pruning: Option<Pruning>,
    ) -> Result<Store, StoreError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let conn = Arc::new(Mutex::new(conn));
        let counters = Arc::new(Counters::default());
        let (calls, writer) = Writer::spawn(
            #[cfg(test)]
            Arc::clone(&conn),
            #[cfg(not(test))]
            conn,
            Arc::clone(&counters),
            pruning,
            "store-writer",
        )
        .map_err(|source| StoreError::Thread { source })?;
        Ok(Store {
            inner: Arc::new(Inner {
                calls: Some(calls),
                writer: Some(writer),
                #[cfg(test)]
                conn,
                counters,
                open_runs: Mutex::new(HashMap::new()),
                next_run: AtomicI64::new(1),
                path: path.to_path_buf(),
                _lock: lock,
            }),
        })
    }

    /// Opens the store at `path` for reading and writing, creating the file and its directory if
    /// missing (the file, its WAL, shared-memory and lock files 0600, a new directory 0700), and
    /// migrates it to this build's schema. Keeps every run in the run log; the service opens
    /// with [`Store::open_with`] and a retention.
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
        Self::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with `options`: with a run-log retention, finished runs past it are
    /// deleted now and then once a day.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            // A directory the store creates is its owner's alone, as its files are.
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|source| StoreError::CreateDir {
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
        // WAL lets `status` read while the service writes, and lets a commit skip its fsync
        // (NORMAL) without risking the file's integrity. The pragma answers the mode in force.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode, "store is not in WAL mode");
        }
        // No foreign keys yet; on so that a later migration's references are enforced.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        // NORMAL by default; the writer switches to FULL for the commits that must be durable
        // (see "Durability" in the module doc).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        migrate::migrate(&mut conn, path)?;
        close_abandoned_runs(&conn)?;
        let pruning = match options.keep_runs_days {
            Some(days) => {
                let keep = chrono::Duration::days(i64::from(days));
                runs::prune(&conn, chrono::Utc::now() - keep)?;
                Some(Pruning {
                    keep,
                    next: std::time::Instant::now() + writer::PRUNE_EVERY,
                })
            }
            None => None,
        };
        Store::new(conn, path, Some(lock), pruning)
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
        Store::new(conn, path, None, None)
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
        Store::new(conn, path, None, None)
    }
    /// Whether a process holds the store at `path` (and which, by pid), found by trying its
    /// lock once and letting go at once: for `check`. Creates and writes nothing.
    ///
    /// # Errors
    /// The file exists but cannot be opened or locked for another reason.
    pub fn lock_state(path: &Path) -> std::io::Result<LockState> {
        lock::probe(path)
    }

    /// Why the service could not create or write the store at `path`, if it could not: the
    /// files that exist (the database, its WAL and shared-memory files) must open for writing,
    /// and the directory (or the nearest existing one above it, which the store's directory is
    /// created in) must take new files. The directory is tried with a file created and removed
    /// at once; nothing else is written.
    pub fn unwritable(path: &Path) -> Option<String> {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = PathBuf::from(name);
            if file.exists()
                && let Err(e) = std::fs::OpenOptions::new().write(true).open(&file)
            {
                return Some(format!("cannot write {}: {e}", file.display()));
            }
        }
        let mut dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        while !dir.exists() {
            match dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(up) => dir = up,
                None => break,
            }
        }
        let probe = dir.join(format!(".jira-gitlab-sync-check-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                None
            }
            Err(e) => Some(format!("cannot create files in {}: {e}", dir.display())),
        }
    }

    /// The store's file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the store has committed since it was opened: all commits, and the durable
    /// (fsynced) ones.
    pub fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }

    /// Runs `f` on the writer thread, in a transaction shared with the calls queued beside it,
    /// and answers once that transaction has committed (to the durability `mode` asks for).
    async fn call<T, F>(&self, mode: Mode, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (task, answer) = Call::task(mode, f);
        let calls = self.inner.calls.as_ref().ok_or(StoreError::Writer)?;
        calls.send(task).map_err(|_| StoreError::Writer)?;
        answer.await.map_err(|_| StoreError::Writer)?
    }

    /// Reads with `f` (a deferred transaction: nothing is written, nothing synced).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.call(Mode::Read, f).await
    }
}

/// Why a run an earlier process left open is recorded as failed.
pub const ABANDONED_RUN: &str = "the process ended before the run did (killed, crashed, or the \
     machine stopped); what it committed is kept, and a create it left unanswered is looked up \
     before it is sent again";

/// Closes the runs an earlier process left open (it was killed or crashed): with the store's
/// lock held no other process can be running them, so `status` would otherwise show them
/// running for ever. They are recorded as failed, with [`ABANDONED_RUN`] as the reason.
fn close_abandoned_runs(conn: &Connection) -> Result<(), StoreError> {
    let closed = conn
        .execute(
            "UPDATE runs SET finished_at = ?1, outcome = ?2, error = ?3 WHERE finished_at IS NULL",
            rusqlite::params![
                codec::format_timestamp(chrono::Utc::now()),
                crate::domain::RunOutcome::Failed,
                ABANDONED_RUN
            ],
        )
        .map_err(error::query(
            "closing the runs an earlier process left open",
        ))?;
    if closed > 0 {
        tracing::warn!(
            runs = closed,
            "an earlier process ended in the middle of a run (killed or crashed); its run is \
             recorded as failed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// Runs `sql` (from the statement cache) with `params`; returns the rows changed.
fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    context: &'static str,
) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(error::query(context))
}

/// The first row `sql` (from the statement cache) answers, read by `f`; `None` if none.
fn one<T, P, F>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: F,
    context: &'static str,
) -> Result<Option<T>, StoreError>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    use rusqlite::OptionalExtension;
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f).optional())
        .map_err(error::query(context))
}

/// Every row `sql` (from the statement cache) answers, read by `f`.
fn all<T, P, F>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: F,
    context: &'static str,
) -> Result<Vec<T>, StoreError>
where
    P: rusqlite::Params,
    F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, f)?.collect())
        .map_err(error::query(context))
}
