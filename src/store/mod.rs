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
//! - This file: [`Store`], opening it (`open`, `open_with`, `open_read_only`, `open_in_memory`)
//!   with its pragmas, the calls to its writer, and the re-exports that make up the public API.
//! - `writer`: the one thread that owns the connection and runs every call, batched.
//! - `error`: [`StoreError`], and which of its kinds are worth retrying.
//! - `lock`: the advisory lock file.
//! - `migrate`: the schema migrations.
//! - `sync`: the [`SyncStore`] impl, the inherent mapping and meta accessors, `retry` and
//!   `forget` of a failing issue ([`FailureChange`]), and their helpers.
//! - `links`: remote links on Jira issues (`[jira] link_back`): wanted, sent, due.
//! - `runs`: the run log: a row per run that wrote something, and its retention.
//! - `status`: the read-only views `status` shows: [`RuleStatus`], [`RunRecord`],
//!   [`FailureEntry`]; and the keys of objects gone from GitLab.
//! - `codec`: decoding stored values, the timestamp format, and the `ToSql` impls.
//! - `tests`: the unit tests.
//!
//! # Conventions
//! - Every method, trait or inherent, is `async` and runs its SQL on the store's one writer
//!   thread, which owns the connection: a store costs one thread however many rules call it, and
//!   calls are serialised; none of them waits on the network. Calls queued together run in one
//!   transaction (each in a savepoint of its own, so one failing rolls back only itself) and are
//!   answered once it has committed.
//! - Every statement run more than once is prepared from rusqlite's statement cache, sized to
//!   hold them all.
//! - Reads write nothing: opening an up-to-date store with nothing to prune, the cursor, the
//!   mappings, the failures, meta, and starting or finishing a run that wrote nothing leave the
//!   file as it was (`data_version` and `total_changes` unchanged).
//! - Timestamps are stored as UTC text in one fixed format with millisecond precision
//!   (`2024-05-01T12:00:00.000Z`), so text order is time order. Sub-millisecond parts are dropped
//!   on write.
//! - Nothing read from the file is trusted: a value this build would not have written is a
//!   [`StoreError::Corrupt`] naming the table, column and row, never a panic.
//!
//! # Durability
//! The file is in WAL mode. A commit at `synchronous=NORMAL` is not synced: it survives a crash
//! or `kill -9` of the process (the WAL's pages are in the operating system's cache), but a power
//! cut or kernel crash may take it back ("A transaction committed in WAL mode with
//! synchronous=NORMAL might roll back following a power loss or system crash. Transactions are
//! durable across application crashes regardless of the synchronous setting or journal mode",
//! <https://www.sqlite.org/pragma.html#pragma_synchronous>). At `synchronous=FULL` the WAL is
//! fsynced at the commit. Either way the file stays consistent, and what a power cut leaves is
//! a **prefix** of the commits: recovery reads the WAL from its start and stops at the first
//! frame whose cumulative checksum fails, keeping everything up to the last valid commit frame
//! (<https://www.sqlite.org/fileformat2.html#the_write_ahead_log>, "WAL Recovery"), and a
//! checkpoint syncs the WAL before copying it into the database and the database after
//! (<https://www.sqlite.org/wal.html>, "with PRAGMA synchronous set to NORMAL, the checkpoint is
//! the only operation to issue an I/O barrier or sync operation"). An fsync of the WAL covers
//! every frame written before it, so **a FULL commit makes every earlier commit durable too**.
//!
//! So one kind of commit is FULL and everything else NORMAL. After a power cut the store is as
//! it was after some commit at or after the last FULL one, while GitLab may hold the effects of
//! requests sent after that: it is as if the process had been killed then, except that several
//! GitLab answers (not just the one in flight) may be unrecorded. Case by case:
//!
//! - **Create intents** (`begin_intent`): **FULL**, and answered only once synced. The engine
//!   sends a create only after its intent is answered, so every object GitLab may hold has its
//!   intent (or, later, its mapping) in the surviving prefix. This is the one write whose loss
//!   could double something: without it a retry would not know a create may have been applied.
//!   Intents queued together (the issues in flight) share one commit and one fsync, and a
//!   backfill begins a whole page's with one call (`begin_intents`), before any of its creates.
//! - **Withdrawn intents** (`withdraw_intents`, of creates begun with their page and never sent,
//!   when a backfill stops): NORMAL. If lost, the intents are back, and the next attempt at each
//!   looks its object up first, finds none, and creates it.
//! - **Mapping commits** (`commit` of a replicated issue, which deletes the intent and any
//!   failure in the same transaction): NORMAL. If lost, the intent is back (it was committed
//!   before, durably), so the next attempt counts an earlier attempt and looks the object up
//!   (`GitLabSink::find`, and the adoption scan of objects above the highest known iid) before
//!   creating: adopted, not doubled. A lost close, reopen, label or rewrite leaves the mapping in
//!   its earlier state: the change is planned and sent again, and each is idempotent in GitLab
//!   (closing a closed issue changes nothing; GitLab keeps the first `closed_at`).
//! - **Timeline event begins** (an incident's details): a create of a "Start time" or "End
//!   time" event is sent only after its begin is committed, and an attempt that finds a begin
//!   looks through the incident's events first. For an incident created or adopted in the same
//!   pass the begins are NORMAL, committed before its mapping: a prefix that holds the mapping
//!   holds them, and one without it holds the create's intent, whose next attempt adopts the
//!   object and looks. For an incident the store already knew (closed in a later pass)
//!   `begin_timeline_event` is **FULL**, with every event found so far, since nothing else
//!   would make the next pass look. The details' commit after the events is NORMAL: if lost,
//!   the begins are back and the events are found.
//! - **Cursor** (`commit` with a cursor, `advance_cursor`): NORMAL. A cursor only moves in or
//!   after the commit of what it covers, so the prefix never holds a cursor past a lost commit:
//!   a lost cursor is an older one, and the search reads those changes again, which the mappings
//!   dedupe and the cases above replay. Nothing is skipped.
//! - **Failures** (`commit` of a failure, `retry`/`forget` of one): a failure is recorded with the
//!   cursor that passes it, so if it is lost the cursor is lost with it and the change is read
//!   again. A lost deletion of a failure (in a mapping commit) makes it retried, which finds the
//!   mapping or, through the intent, the object. `retry` and `forget` are a person's commands and
//!   are committed FULL, so a power cut after the answer does not undo them.
//! - **Moves and deletions seen in GitLab** (a mapping's `moved_to`/`gone_at`), and objects
//!   deleted because Jira deleted the issue: NORMAL. If lost, the next write to the object finds
//!   the move again in GitLab's answer (`moved_to_id`) or the 404 again, and a repeated delete
//!   answers 404, which is recorded as gone.
//! - **Projects** (`remember_project`) and **meta** (the Jira account's zone, reconciliation and
//!   backfill checkpoints): NORMAL. Each is looked up or recomputed when missing: the project
//!   resolved again, the zone read again, a reconciliation or a backfill window run again, whose
//!   writes dedupe as above.
//! - **Runs**: NORMAL. The run log is for people; nothing in the sync reads it. A lost row is a
//!   run missing from `status`; a lost end shows the run as abandoned at the next open. Pruning,
//!   if lost, is done again.
//!
//! A commit is never applied twice (a commit is atomic and recovery never replays one), so
//! power loss can only take writes back, and each write taken back is one of the above.
//! Everything a `kill -9` at any point can do is covered by the same argument (nothing is lost
//! there at all), and `tests/chaos.rs` kills the real binary at random points to check it;
//! `power_cut` (a unit test) puts the files back as of the last durable commit after each of
//! many cycles and checks that every issue still ends with exactly one object.
//!
//! [`SyncStore`]: crate::engine::ports::SyncStore
mod codec;
mod dora;
mod error;
mod incident;
mod links;
mod lock;
mod migrate;
mod runs;
mod stages;
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

pub use dora::{RepairRow, RepairState};
pub use error::StoreError;
pub use links::LinkCounts;
pub use lock::LockState;
pub use status::{FailureEntry, RuleStatus, RunRecord, StrayEntry};
pub use sync::FailureChange;
pub use writer::StoreStats;

/// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
/// Long enough to ride out a `status` reader or a WAL checkpoint, short enough that a genuinely
/// stuck store surfaces as an error within a sync cycle.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// How many prepared statements the connection keeps. Every statement the store runs more than
/// once is prepared from the cache (`prepare_cached`); there are fewer than sixty distinct ones (the
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
    /// Run after each durable commit, for the unit tests.
    #[cfg(test)]
    on_durable: writer::DurableHook,
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
        let next_run = runs::first_free_id(&conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let counters = Arc::new(Counters::default());
        #[cfg(test)]
        let on_durable = writer::DurableHook::default();
        let (calls, writer) = Writer::spawn(
            #[cfg(test)]
            Arc::clone(&conn),
            #[cfg(not(test))]
            conn,
            Arc::clone(&counters),
            pruning,
            "store-writer",
            #[cfg(test)]
            Arc::clone(&on_durable),
        )
        .map_err(|source| StoreError::Thread { source })?;
        Ok(Store {
            inner: Arc::new(Inner {
                calls: Some(calls),
                writer: Some(writer),
                #[cfg(test)]
                conn,
                #[cfg(test)]
                on_durable,
                counters,
                open_runs: Mutex::new(HashMap::new()),
                next_run: AtomicI64::new(next_run),
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
        // A batch runs each call in a savepoint, whose statement journal (the pages' earlier
        // contents, for `ROLLBACK TO`) SQLite keeps in memory only up to 64 KiB and then spills
        // to a temporary file, opened afresh for each transaction. A batch is at most 64 calls
        // of a few pages each, so its journal is a few MiB at worst, and usually far less:
        // memory is the right place for it (and for the sorts of `status`'s listings).
        conn.pragma_update(None, "temp_store", "MEMORY")
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
mod power_cut;
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
