//! The engine's side of the store: `impl SyncStore for Store` (cursors, mappings, create intents,
//! commits, failures, the run log), the inherent mapping and meta accessors, and the private
//! helpers they share.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use super::codec::{Cell, Int, format_timestamp};
use super::error::query;
use super::{Store, StoreError};
use crate::domain::{
    Commit, Failure, Intent, IssueSnapshot, JiraKey, Mapping, RemoteState, RunCounts, RunMode,
    RunOutcome, Target,
};
use crate::engine::ports::SyncStore;

/// How many keys go into one `IN (...)` list. SQLite's bound-parameter limit is far higher in
/// current versions (32 766), but older builds allow only 999; 500 stays clear of both.
pub(super) const KEYS_PER_QUERY: usize = 500;

impl Store {
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
