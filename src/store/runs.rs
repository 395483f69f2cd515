//! The run log: a row per run that did something, written with the run's first write, closed
//! when it finishes, and pruned to a retention.
//!
//! [`SyncStore::start_run`] writes nothing: it notes the run in memory and hands out the id its
//! row will have (ids are taken above every id the log has used, so they are never reused, and a
//! run that leaves no row leaves a gap). The run's first create intent or commit inserts its row
//! in the same transaction (so a run killed half-way still shows, and the next open records it
//! as abandoned). [`SyncStore::finish_run`]
//! closes the row; a run with no row that ended `ok` or `cancelled` did nothing and leaves none,
//! and one that failed before writing anything gets a row then (repeats of the same failure
//! update the rule's newest row instead of adding one each cycle).
//!
//! [`SyncStore::start_run`]: crate::engine::ports::SyncStore::start_run
//! [`SyncStore::finish_run`]: crate::engine::ports::SyncStore::finish_run

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::codec::{Int, format_timestamp};
use super::error::query;
use super::writer::Mode;
use super::{Store, StoreError};
use crate::domain::{RunCounts, RunMode, RunOutcome};

/// A run started and not finished.
#[derive(Clone, Debug)]
pub(super) struct OpenRun {
    pub(super) key: RunKey,
    /// Whether a write of the run has been sent (its row may exist).
    wrote: bool,
    /// Whether a batch that inserted the run's row has committed: later writes need not insert
    /// it again. Set only after the commit, since a rolled-back batch takes the row with it.
    row_committed: bool,
}

/// What a run's row is opened with.
#[derive(Clone, Debug)]
pub(super) struct RunKey {
    id: i64,
    rule: String,
    mode: RunMode,
    started_at: String,
}

/// The first id to hand out: above every id the run log holds or ever held (AUTOINCREMENT's
/// high-water mark in `sqlite_sequence`).
pub(super) fn first_free_id(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0),
                    coalesce((SELECT max(id) FROM runs), 0)) + 1",
        [],
        |row| row.get(0),
    )
    .map_err(query("reading the run log's last id"))
}

impl Store {
    /// Notes a run of `rule` as started; writes nothing.
    pub(super) fn begin_run(&self, rule: &str, mode: RunMode) -> i64 {
        let id = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let run = OpenRun {
            key: RunKey {
                id,
                rule: rule.to_owned(),
                mode,
                started_at: format_timestamp(Utc::now()),
            },
            wrote: false,
            row_committed: false,
        };
        self.inner
            .open_runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, run);
        id
    }

    /// The open run of `rule` (the latest started, if several), marked as having written: a
    /// write of `rule` is about to be sent. Returns the row to insert with it, or `None` when
    /// there is no open run or its row is already committed (the common case: one indexed
    /// insert per write saved).
    pub(super) fn writing_run(&self, rule: &str) -> Option<RunKey> {
        let mut runs = self
            .inner
            .open_runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (_, run) = runs
            .iter_mut()
            .filter(|(_, r)| r.key.rule == rule)
            .max_by_key(|(id, _)| **id)?;
        run.wrote = true;
        (!run.row_committed).then(|| run.key.clone())
    }

    /// Notes that a call which inserted the row of `run` (from [`Self::writing_run`]) has
    /// committed. A run already finished is gone from the map and needs nothing.
    pub(super) fn run_row_committed(&self, run: Option<&RunKey>) {
        let Some(run) = run else { return };
        if let Some(open) = self
            .inner
            .open_runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&run.id)
        {
            open.row_committed = true;
        }
    }

    /// Closes the run `id`: its row is updated, inserted (a run that failed before writing),
    /// or, for a run that wrote nothing and did not fail, nothing is written.
    pub(super) async fn end_run(
        &self,
        id: i64,
        outcome: RunOutcome,
        counts: RunCounts,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let run = self
            .inner
            .open_runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .ok_or(StoreError::UnknownRun { id })?;
        let failed = !matches!(outcome, RunOutcome::Ok | RunOutcome::Cancelled) || error.is_some();
        if !run.wrote && !failed {
            return Ok(());
        }
        let now = format_timestamp(Utc::now());
        self.call(Mode::Write, move |conn| {
            let end = RunEnd {
                now: &now,
                outcome,
                counts: &counts,
                error: error.as_deref(),
            };
            if close_row(conn, &run.key, &end)? {
                return Ok(());
            }
            // No row: the run wrote nothing (or its first write's batch failed).
            if !run.wrote && repeat_failure(conn, &run.key, &end)? {
                return Ok(());
            }
            insert_closed(conn, &run.key, &end)
        })
        .await
    }
}

/// How a run ended.
struct RunEnd<'a> {
    now: &'a str,
    outcome: RunOutcome,
    counts: &'a RunCounts,
    error: Option<&'a str>,
}

/// Inserts the row of `run` unless it has one: the first write of a run does.
pub(super) fn ensure_row(conn: &Connection, run: &RunKey) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO runs (id, rule, mode, started_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![run.id, run.rule, run.mode, run.started_at]))
    .map_err(query("opening a run-log entry"))?;
    Ok(())
}

/// Closes the open row of `run`; returns false if it has none.
fn close_row(conn: &Connection, run: &RunKey, end: &RunEnd<'_>) -> Result<bool, StoreError> {
    let c = end.counts;
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET finished_at = ?3, outcome = ?4, seen = ?5, created = ?6,
                             closed = ?7, reopened = ?8, skipped = ?9, failed = ?10,
                             error = ?11, updated = ?12
             WHERE id = ?1 AND rule = ?2 AND finished_at IS NULL",
        )
        .and_then(|mut s| {
            s.execute(params![
                run.id,
                run.rule,
                end.now,
                end.outcome,
                Int(c.seen),
                Int(c.created),
                Int(c.closed),
                Int(c.reopened),
                Int(c.skipped),
                Int(c.failed),
                end.error,
                Int(c.updated),
            ])
        })
        .map_err(query("closing a run-log entry"))?;
    Ok(changed > 0)
}

/// A run that failed before writing anything, as the rule's newest run did (same outcome and
/// error, nothing written): that row's end and counts are updated instead of adding another,
/// so an outage does not add a row a cycle. Returns false if the newest run is not such a one.
fn repeat_failure(conn: &Connection, run: &RunKey, end: &RunEnd<'_>) -> Result<bool, StoreError> {
    let c = end.counts;
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET finished_at = ?2, seen = ?5, skipped = ?6, failed = ?7
             WHERE id = (SELECT max(id) FROM runs WHERE rule = ?1)
               AND finished_at IS NOT NULL AND outcome = ?3 AND error IS ?4
               AND created = 0 AND closed = 0 AND reopened = 0 AND updated = 0
               AND ?8 = 0",
        )
        .and_then(|mut s| {
            s.execute(params![
                run.rule,
                end.now,
                end.outcome,
                end.error,
                Int(c.seen),
                Int(c.skipped),
                Int(c.failed),
                Int(c.created + c.closed + c.reopened + c.updated),
            ])
        })
        .map_err(query("closing a run-log entry"))?;
    Ok(changed > 0)
}

/// Inserts the whole row of a finished run.
fn insert_closed(conn: &Connection, run: &RunKey, end: &RunEnd<'_>) -> Result<(), StoreError> {
    let c = end.counts;
    conn.prepare_cached(
        "INSERT INTO runs (id, rule, mode, started_at, finished_at, outcome, seen, created,
                           closed, reopened, skipped, failed, error, updated)
         VALUES (?14, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run.rule,
            run.mode,
            run.started_at,
            end.now,
            end.outcome,
            Int(c.seen),
            Int(c.created),
            Int(c.closed),
            Int(c.reopened),
            Int(c.skipped),
            Int(c.failed),
            end.error,
            Int(c.updated),
            run.id,
        ])
    })
    .map_err(query("closing a run-log entry"))?;
    Ok(())
}

/// Deletes the finished runs that ended before `cutoff`, except each rule's newest run (which
/// `status` shows however old it is). Returns how many were deleted.
pub(super) fn prune(conn: &Connection, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM runs
             WHERE finished_at IS NOT NULL AND finished_at < ?1
               AND id NOT IN (SELECT max(id) FROM runs GROUP BY rule)",
        )
        .and_then(|mut s| s.execute([format_timestamp(cutoff)]))
        .map_err(query("pruning the run log"))?;
    if deleted > 0 {
        tracing::debug!(deleted, "pruned the run log");
    }
    Ok(deleted)
}
