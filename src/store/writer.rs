//! The one thread that runs every statement of a [`Store`](super::Store): calls arrive over a
//! channel and are answered by a oneshot, so a store costs one thread however many rules call it.
//!
//! Calls queued together run as one batch in one transaction, each in a savepoint of its own (a
//! failing call rolls back only its own writes), and are answered after the commit: what a call
//! wrote is on disk, to the durability it asked for, before its caller hears back. A batch is
//! committed at `synchronous=FULL` (the write-ahead log is fsynced) if any call in it is
//! [`Mode::Durable`], else at `synchronous=NORMAL` (no fsync). The module doc of `store` says why
//! that is enough.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// The most calls one batch takes: enough to group the create intents of every issue in flight
/// (the engine's concurrency is far lower), few enough that a batch's answers are not held back
/// long by its own length.
const MAX_BATCH: usize = 64;

/// How often the writer prunes the run log while it writes: at most once a day per process.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a call does to the file, which decides the batch's transaction and durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Reads only: a deferred transaction, which writes nothing and syncs nothing.
    Read,
    /// Writes that may be lost on power loss (never on a crash of the process): committed at
    /// `synchronous=NORMAL`, made durable by the next durable commit or checkpoint.
    Write,
    /// Writes that must survive power loss before the caller goes on: committed at
    /// `synchronous=FULL`.
    Durable,
}

/// Counts of what the writer committed, for the benchmark and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions that changed the file.
    pub commits: u64,
    /// Of those, the ones committed at `synchronous=FULL` (each one fsync of the write-ahead
    /// log). Checkpoints, which SQLite runs every thousand pages or so and which sync too, are
    /// not counted.
    pub durable_commits: u64,
    /// Batches run (each one transaction, read or write).
    pub batches: u64,
}

/// The counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    durable_commits: AtomicU64,
    batches: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            durable_commits: self.durable_commits.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

/// One queued call: run against the connection, then told how the batch's commit went.
pub(super) trait Task: Send {
    fn mode(&self) -> Mode;
    /// Runs the call; returns true if and only if it succeeded (its savepoint is kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the call's result if the batch committed, else with `err`.
    fn finish(self: Box<Self>, err: Option<&rusqlite::Error>);
}

/// A call as [`Task`]: the closure, its result once run, and where to send it.
pub(super) struct Call<T, F> {
    mode: Mode,
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Call<T, F>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    /// The call of `f` as a task, and where its answer arrives.
    pub(super) fn task(
        mode: Mode,
        f: F,
    ) -> (Box<dyn Task>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let call = Call {
            mode,
            f: Some(f),
            out: None,
            reply,
        };
        (Box::new(call), rx)
    }
}

impl<T, F> Task for Call<T, F>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    fn mode(&self) -> Mode {
        self.mode
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panic in a call fails that call (its caller hears `Writer`), not the writer.
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(out) => {
                let ok = out.is_ok();
                self.out = Some(out);
                ok
            }
            Err(_) => false,
        }
    }

    fn finish(self: Box<Self>, err: Option<&rusqlite::Error>) {
        let out = match (self.out, err) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), None) => Ok(v),
            (Some(Ok(_)), Some(e)) | (None, Some(e)) => Err(StoreError::Query {
                context: "committing a batch of store calls",
                source: copy_error(e),
            }),
            // It panicked.
            (None, None) => Err(StoreError::Writer),
        };
        // The caller may have stopped waiting (its future was dropped): the call still ran.
        let _ = self.reply.send(out);
    }
}

/// A copy of `e` for each call of a batch that failed as a whole; SQLite's code is kept, so
/// whether it is worth retrying is still read from the error's type.
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Why the earlier calls of a batch failed when SQLite rolled the whole transaction back under
/// a later one (it does on some I/O and memory errors).
fn rolled_back() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("SQLite rolled the batch's transaction back".to_owned()),
    )
}

/// The run log's retention, applied by the writer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pruning {
    /// Finished runs older than this are deleted (each rule's newest run is kept).
    pub(super) keep: chrono::Duration,
    /// When the writer prunes next.
    pub(super) next: Instant,
}

/// Where calls are sent to the writer.
pub(super) type Calls = Sender<Box<dyn Task>>;

/// What the unit tests run on the writer thread after each durable commit (to copy the files as
/// a power cut would leave them).
#[cfg(test)]
pub(super) type DurableHook = Arc<Mutex<Option<Box<dyn FnMut() + Send>>>>;

/// The writer's state.
pub(super) struct Writer {
    conn: Arc<Mutex<Connection>>,
    counters: Arc<Counters>,
    #[cfg(test)]
    on_durable: DurableHook,
    /// Whether the connection's `synchronous` is FULL now (else NORMAL).
    full: bool,
    pruning: Option<Pruning>,
}

impl Writer {
    /// Starts the writer thread over `conn` (whose `synchronous` is NORMAL).
    ///
    /// # Errors
    /// The operating system refuses a thread.
    pub(super) fn spawn(
        conn: Arc<Mutex<Connection>>,
        counters: Arc<Counters>,
        pruning: Option<Pruning>,
        name: &str,
        #[cfg(test)] on_durable: DurableHook,
    ) -> std::io::Result<(Calls, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            conn,
            counters,
            #[cfg(test)]
            on_durable,
            full: false,
            pruning,
        };
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || writer.run(&rx))?;
        Ok((tx, handle))
    }

    /// Runs batches until every sender is gone.
    fn run(mut self, rx: &Receiver<Box<dyn Task>>) {
        while let Ok(first) = rx.recv() {
            let conn = Arc::clone(&self.conn);
            // A panic while the lock was held cannot leave a transaction open: the batch rolls
            // back before its answers are sent.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            // What queued meanwhile joins the batch (taken after the lock, so calls that queue
            // while a test holds the connection are batched as they would be behind a commit).
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(task) => batch.push(task),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.batch(&conn, batch);
        }
    }

    /// Runs `batch` in one transaction and answers each call.
    fn batch(&mut self, conn: &Connection, mut batch: Vec<Box<dyn Task>>) {
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let writes = batch.iter().any(|t| t.mode() != Mode::Read);
        let durable = batch.iter().any(|t| t.mode() == Mode::Durable);
        if writes && durable != self.full {
            let sql = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            // Not from the statement cache: SQLite applies this pragma when it compiles it
            // (`PragTyp_SYNCHRONOUS` in sqlite3.c sets the safety level in the parser), so a
            // cached statement run again would change nothing.
            match conn.execute_batch(sql) {
                Ok(_) => self.full = durable,
                Err(e) => {
                    return batch.into_iter().for_each(|t| t.finish(Some(&e)));
                }
            }
        }
        let begin = if writes { "BEGIN IMMEDIATE" } else { "BEGIN" };
        if let Err(e) = exec(conn, begin) {
            return batch.into_iter().for_each(|t| t.finish(Some(&e)));
        }
        let changes_before = conn.total_changes();
        if writes {
            self.prune_if_due(conn);
        }
        let single = batch.len() == 1;
        let mut done: Vec<Box<dyn Task>> = Vec::with_capacity(batch.len());
        let mut tasks = batch.drain(..);
        for mut task in tasks.by_ref() {
            if !single && let Err(e) = exec(conn, "SAVEPOINT call") {
                task.finish(Some(&e));
                continue;
            }
            let ok = task.run(conn);
            if conn.is_autocommit() {
                // SQLite ended the transaction under this call: what the earlier ones wrote
                // is gone with it. The rest run in a batch of their own.
                let lost = rolled_back();
                done.into_iter().for_each(|t| t.finish(Some(&lost)));
                task.finish(if ok { Some(&lost) } else { None });
                let rest: Vec<_> = tasks.collect();
                if !rest.is_empty() {
                    self.batch(conn, rest);
                }
                return;
            }
            if single {
                if !ok {
                    let _ = exec(conn, "ROLLBACK");
                    task.finish(None);
                    return;
                }
            } else {
                let end = if ok {
                    exec(conn, "RELEASE call")
                } else {
                    exec(conn, "ROLLBACK TO call").and_then(|()| exec(conn, "RELEASE call"))
                };
                if let Err(e) = end {
                    task.finish(Some(&e));
                    continue;
                }
            }
            done.push(task);
        }
        let changed = conn.total_changes() != changes_before;
        match exec(conn, "COMMIT") {
            Ok(()) => {
                if changed {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    if self.full {
                        self.counters
                            .durable_commits
                            .fetch_add(1, Ordering::Relaxed);
                        #[cfg(test)]
                        if let Some(hook) = self
                            .on_durable
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_mut()
                        {
                            hook();
                        }
                    }
                }
                done.into_iter().for_each(|t| t.finish(None));
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK");
                }
                done.into_iter().for_each(|t| t.finish(Some(&e)));
            }
        }
    }

    /// Deletes old runs inside the open write transaction, if a day has passed since the last
    /// time; a failure is logged and tried again the next day.
    fn prune_if_due(&mut self, conn: &Connection) {
        let Some(p) = &mut self.pruning else { return };
        let now = Instant::now();
        if now < p.next {
            return;
        }
        p.next = now + PRUNE_EVERY;
        let keep = p.keep;
        if exec(conn, "SAVEPOINT prune").is_err() {
            return;
        }
        match super::runs::prune(conn, chrono::Utc::now() - keep) {
            Ok(_) => {
                let _ = exec(conn, "RELEASE prune");
            }
            Err(e) => {
                tracing::warn!(cause = %e, "cannot prune the run log; trying again tomorrow");
                let _ = exec(conn, "ROLLBACK TO prune").and_then(|()| exec(conn, "RELEASE prune"));
            }
        }
    }
}

/// Runs one of the writer's own statements, from the statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
