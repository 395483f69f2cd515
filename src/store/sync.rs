//! The engine's side of the store: `impl SyncStore for Store` (cursors, mappings, create intents,
//! commits, failures, the run log), the inherent mapping and meta accessors, and the private
//! helpers they share.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::codec::{Cell, Int, format_timestamp};
use super::error::query;
use super::{Store, StoreError};
use crate::domain::{
    Commit, Failure, Intent, IssueScope, IssueSnapshot, JiraId, JiraKey, Mapping, MovedTo,
    RemoteState, RunCounts, RunMode, RunOutcome, Target,
};
use crate::engine::ports::{Place, ResolvedProject, SyncStore};

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

    /// The projects resolved so far: configured path or id → (numeric id, path then).
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if an id is negative.
    pub async fn projects(&self) -> Result<BTreeMap<String, (u64, String)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT configured, project_id, path FROM projects")
                .map_err(query("listing resolved projects"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing resolved projects"))?;
            rows.into_iter()
                .map(|(configured, id, path)| {
                    let id = u64::try_from(id).map_err(|_| {
                        Cell::new("projects", "project_id", &configured).corrupt(&id.to_string())
                    })?;
                    Ok((configured, (id, path)))
                })
                .collect()
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

/// What [`Store::retry_failure`] and [`Store::forget_failure`] did with a Jira key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureChange {
    /// The failure of the key under this rule was made due now, or dropped.
    Done { rule: String },
    /// No rule (or not the rule named) has a failure of the key.
    Unknown,
    /// The key fails under several rules and none was named: these.
    Ambiguous { rules: Vec<String> },
}

impl Store {
    /// The rules under which `key` is failing, sorted.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn failing_rules(&self, key: &JiraKey) -> Result<Vec<String>, StoreError> {
        let key = key.clone();
        self.with_conn(move |conn| failing_rules(conn, &key)).await
    }

    /// Makes the failure of `key` (under `rule`, or under the one rule it fails under) due at
    /// the next cycle. Its attempts are kept, so another failure waits as long as the backoff
    /// says.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails (for example, on a read-only store).
    pub async fn retry_failure(
        &self,
        key: &JiraKey,
        rule: Option<&str>,
    ) -> Result<FailureChange, StoreError> {
        let now = format_timestamp(Utc::now());
        self.change_failure(key, rule, move |tx, rule, key| {
            tx.execute(
                "UPDATE failures SET next_attempt_at = ?3 WHERE rule = ?1 AND jira_key = ?2",
                params![rule, key, now],
            )
        })
        .await
    }

    /// Drops the failure of `key` (under `rule`, or under the one rule it fails under): it is no
    /// longer listed or retried, not even when a search reads the same change again; a newer
    /// change in Jira is replicated as any other.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails (for example, on a read-only store).
    pub async fn forget_failure(
        &self,
        key: &JiraKey,
        rule: Option<&str>,
    ) -> Result<FailureChange, StoreError> {
        let now = format_timestamp(Utc::now());
        self.change_failure(key, rule, move |tx, rule, key| {
            tx.execute(
                "UPDATE failures SET forgotten_at = ?3 WHERE rule = ?1 AND jira_key = ?2",
                params![rule, key, now],
            )
        })
        .await
    }

    /// Applies `change` to the one failure of `key` that `rule` picks, in one transaction.
    async fn change_failure<F>(
        &self,
        key: &JiraKey,
        rule: Option<&str>,
        change: F,
    ) -> Result<FailureChange, StoreError>
    where
        F: FnOnce(&rusqlite::Transaction<'_>, &str, &JiraKey) -> rusqlite::Result<usize>
            + Send
            + 'static,
    {
        let key = key.clone();
        let rule = rule.map(str::to_owned);
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(query("changing a failure"))?;
            let mut rules = failing_rules(&tx, &key)?;
            if let Some(wanted) = &rule {
                rules.retain(|r| r == wanted);
            }
            let picked = match rules.as_slice() {
                [] => return Ok(FailureChange::Unknown),
                [one] => one.clone(),
                _ => return Ok(FailureChange::Ambiguous { rules }),
            };
            change(&tx, &picked, &key).map_err(query("changing a failure"))?;
            tx.commit().map_err(query("changing a failure"))?;
            Ok(FailureChange::Done { rule: picked })
        })
        .await
    }
}

fn failing_rules(conn: &Connection, key: &JiraKey) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT rule FROM failures WHERE jira_key = ?1 AND forgotten_at IS NULL ORDER BY rule",
        )
        .map_err(query("finding a failing key"))?;
    stmt.query_map([key], |row| row.get(0))
        .and_then(Iterator::collect::<Result<Vec<String>, _>>)
        .map_err(query("finding a failing key"))
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
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Mapping>, StoreError> {
        if issues.is_empty() {
            return Ok(HashMap::new());
        }
        let place = place.clone();
        self.with_conn(move |conn| {
            // One read transaction, so every lookup sees the same state.
            let tx = conn.transaction().map_err(query("reading mappings"))?;
            let mut by_id = tx
                .prepare_cached(&format!(
                    "SELECT {MAPPING_COLUMNS} FROM mappings
                     WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3"
                ))
                .map_err(query("reading mappings"))?;
            let mut by_key = tx
                .prepare_cached(&format!(
                    "SELECT {MAPPING_COLUMNS} FROM mappings
                     WHERE project = ?1 AND target = ?2 AND jira_key = ?3 AND jira_id IS NULL"
                ))
                .map_err(query("reading mappings"))?;
            let mut found = HashMap::with_capacity(issues.len());
            for (id, key) in issues {
                let mut raw = None;
                if let Some(id) = &id {
                    raw = by_id
                        .query_row(
                            params![Int(place.project_id), place.target(), id.as_str()],
                            RawMapping::from_row,
                        )
                        .optional()
                        .map_err(query("reading mappings"))?;
                }
                if raw.is_none() {
                    raw = by_key
                        .query_row(
                            params![place.project(), place.target(), key],
                            RawMapping::from_row,
                        )
                        .optional()
                        .map_err(query("reading mappings"))?;
                }
                if let Some(raw) = raw {
                    found.insert(key, raw.decode()?);
                }
            }
            drop((by_id, by_key));
            Ok(found)
        })
        .await
    }

    async fn begin_intent(
        &self,
        rule: &str,
        place: &Place,
        id: Option<&JiraId>,
        key: &JiraKey,
    ) -> Result<Intent, StoreError> {
        let rule = rule.to_owned();
        let key = key.clone();
        let id = id.cloned();
        let (target, project_id) = (place.target(), place.project_id);
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(query("recording a create intent"))?;
            // An intent belongs to the object it would make: found by the issue's id whatever
            // rule or key started it; without an id, by rule and key.
            let existing: Option<i64> = match &id {
                Some(id) => tx.query_row(
                    "SELECT id FROM intents WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3",
                    params![Int(project_id), target, id.as_str()],
                    |row| row.get(0),
                ),
                None => tx.query_row(
                    "SELECT id FROM intents WHERE rule = ?1 AND jira_key = ?2 AND jira_id IS NULL",
                    params![rule, key],
                    |row| row.get(0),
                ),
            }
            .optional()
            .map_err(query("recording a create intent"))?;
            let (attempts, started_at): (i64, String) = match existing {
                Some(row) => tx.query_row(
                    "UPDATE intents SET attempts = attempts + 1, last_attempt_at = ?2,
                            rule = ?3, jira_key = ?4
                     WHERE id = ?1 RETURNING attempts, started_at",
                    params![row, now, rule, key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                ),
                None => tx.query_row(
                    "INSERT INTO intents (rule, jira_key, jira_id, target, project_id, attempts,
                                          started_at, last_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
                     RETURNING attempts, started_at",
                    params![
                        rule,
                        key,
                        id.as_ref().map(JiraId::as_str),
                        target,
                        Int(project_id),
                        now
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                ),
            }
            .map_err(query("recording a create intent"))?;
            tx.commit().map_err(query("recording a create intent"))?;
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

    async fn project_id(&self, configured: &str) -> Result<Option<u64>, StoreError> {
        let configured = configured.to_owned();
        self.with_conn(move |conn| {
            let id: Option<i64> = conn
                .query_row(
                    "SELECT project_id FROM projects WHERE configured = ?1",
                    [&configured],
                    |row| row.get(0),
                )
                .optional()
                .map_err(query("reading a project's id"))?;
            id.map(|id| {
                u64::try_from(id).map_err(|_| {
                    Cell::new("projects", "project_id", &configured).corrupt(&id.to_string())
                })
            })
            .transpose()
        })
        .await
    }

    async fn remember_project(
        &self,
        configured: &str,
        project: &ResolvedProject,
    ) -> Result<(), StoreError> {
        let configured = configured.to_owned();
        let project = project.clone();
        let now = format_timestamp(Utc::now());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO projects (configured, project_id, path, resolved_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (configured) DO UPDATE SET
                    project_id = excluded.project_id,
                    path = excluded.path,
                    resolved_at = excluded.resolved_at",
                params![
                    configured,
                    Int(project.id),
                    project.path_with_namespace,
                    now
                ],
            )
            .map_err(query("remembering a project's id"))?;
            Ok(())
        })
        .await
    }

    async fn following(
        &self,
        rule: &str,
        written_before: DateTime<Utc>,
    ) -> Result<Vec<Mapping>, StoreError> {
        let rule = rule.to_owned();
        let before = format_timestamp(written_before);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {MAPPING_COLUMNS} FROM mappings
                     WHERE rule = ?1 AND state = 'opened' AND jira_id IS NOT NULL
                       AND project_id IS NOT NULL AND replicated_at < ?2
                       AND (scope IS NULL OR scope <> 'deleted')
                     ORDER BY id"
                ))
                .map_err(query("listing the mappings to follow"))?;
            let raws = stmt
                .query_map(params![rule, before], RawMapping::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing the mappings to follow"))?;
            raws.into_iter().map(RawMapping::decode).collect()
        })
        .await
    }

    async fn max_iid(&self, place: &Place) -> Result<Option<u64>, StoreError> {
        // Issues and incidents share a project's iids.
        let project_id = place.project_id;
        self.with_conn(move |conn| {
            let max: Option<i64> = conn
                .query_row(
                    "SELECT max(iid) FROM mappings WHERE project_id = ?1",
                    params![Int(project_id)],
                    |row| row.get(0),
                )
                .map_err(query("reading the highest iid"))?;
            Ok(max.and_then(|m| u64::try_from(m).ok()))
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
        let at = Utc::now();
        let now = format_timestamp(at);
        // Encode before taking the connection: a failure here needs no transaction.
        let change = match commit {
            Commit::Replicated(mapping) => Change::Replicated(mapping),
            Commit::Failed { snapshot, error } => {
                let json =
                    serde_json::to_string(&snapshot).map_err(|source| StoreError::Encode {
                        key: snapshot.key.clone(),
                        source,
                    })?;
                Change::Failed {
                    key: snapshot.key,
                    id: snapshot.id,
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
                    record_mapping(&tx, &rule, m, &now)?;
                    let id = m.jira_id.as_ref().map(JiraId::as_str);
                    // The intent of this object, however it was keyed when it was begun.
                    tx.execute(
                        "DELETE FROM intents
                         WHERE (project_id = ?1 AND target = ?2 AND jira_id = ?3)
                            OR (rule = ?4 AND jira_key = ?5 AND jira_id IS NULL)",
                        params![m.project_id.map(Int), m.target, id, rule, m.jira_key],
                    )
                    .map_err(query("clearing a create intent"))?;
                    // The rule's failure of this issue, under its key then or now.
                    tx.execute(
                        "DELETE FROM failures WHERE rule = ?1 AND (jira_key = ?2 OR jira_id = ?3)",
                        params![rule, m.jira_key, id],
                    )
                    .map_err(query("clearing a failure"))?;
                }
                Change::Failed {
                    key,
                    id,
                    json,
                    error,
                } => {
                    // A forgotten failure failing again (Jira changed it) starts afresh.
                    let before: Option<i64> = tx
                        .query_row(
                            "SELECT attempts FROM failures
                             WHERE rule = ?1 AND jira_key = ?2 AND forgotten_at IS NULL",
                            params![rule, key],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(query("recording a failure"))?;
                    let attempts = before.map_or(1, |n| n.saturating_add(1));
                    let wait = Failure::backoff(u32::try_from(attempts).unwrap_or(u32::MAX));
                    tx.execute(
                        "INSERT INTO failures (rule, jira_key, jira_id, snapshot, attempts,
                                               last_error, first_failed_at, last_failed_at,
                                               next_attempt_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
                         ON CONFLICT (rule, jira_key) DO UPDATE SET
                            jira_id = excluded.jira_id,
                            snapshot = excluded.snapshot,
                            attempts = excluded.attempts,
                            last_error = excluded.last_error,
                            last_failed_at = excluded.last_failed_at,
                            next_attempt_at = excluded.next_attempt_at,
                            forgotten_at = NULL",
                        params![
                            rule,
                            key,
                            id.as_ref().map(JiraId::as_str),
                            json,
                            attempts,
                            error,
                            now,
                            format_timestamp(at + wait)
                        ],
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
                    "SELECT jira_key, snapshot, attempts, last_error, last_failed_at,
                            CASE WHEN forgotten_at IS NULL
                                 THEN coalesce(next_attempt_at, last_failed_at) END
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
                        row.get::<_, Option<String>>(5)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing failures"))?;
            rows.into_iter()
                .map(|(key, json, attempts, last_error, last_failed_at, next)| {
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
                        next_attempt_at: next
                            .map(|t| cell.column("next_attempt_at").timestamp(t))
                            .transpose()?,
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
        id: Option<JiraId>,
        json: String,
        error: String,
    },
}

/// Writes `m` as replicated by `rule`: onto the row of its object (by project id, target and
/// Jira id), else onto a row from before ids were kept (by the project as configured, target and
/// key), else as a new row. The row then carries the ids, the current key and the writing rule.
fn record_mapping(
    tx: &rusqlite::Transaction<'_>,
    rule: &str,
    m: &Mapping,
    now: &str,
) -> Result<(), StoreError> {
    let id = m.jira_id.as_ref().map(JiraId::as_str);
    let project_id = m.project_id.map(Int);
    let mut row: Option<i64> = None;
    if let (Some(id), Some(project_id)) = (id, m.project_id) {
        row = tx
            .query_row(
                "SELECT id FROM mappings WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3",
                params![Int(project_id), m.target, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(query("recording a mapping"))?;
    }
    if row.is_none() {
        row = tx
            .query_row(
                "SELECT id FROM mappings
                 WHERE project = ?1 AND target = ?2 AND jira_key = ?3 AND jira_id IS NULL",
                params![m.project, m.target, m.jira_key],
                |r| r.get(0),
            )
            .optional()
            .map_err(query("recording a mapping"))?;
    }
    let values = params![
        rule,
        m.jira_key,
        id,
        m.target,
        m.project,
        project_id,
        m.iid.map(Int),
        m.web_url,
        m.state,
        format_timestamp(m.jira_updated),
        format_timestamp(m.created_at),
        m.closed_at.map(format_timestamp),
        now,
        m.content_hash,
        row,
        m.gone_at.map(format_timestamp),
        m.moved_to.map(|to| Int(to.project_id)),
        m.moved_to.map(|to| Int(to.iid)),
        m.jira_resolved_at.map(format_timestamp),
        (m.scope != IssueScope::InScope).then_some(m.scope),
    ];
    let sql = if row.is_some() {
        "UPDATE mappings SET rule = ?1, jira_key = ?2, jira_id = coalesce(?3, jira_id),
                target = ?4, project = ?5, project_id = coalesce(?6, project_id), iid = ?7,
                web_url = ?8, state = ?9, jira_updated = ?10, created_at = ?11,
                closed_at = ?12, replicated_at = ?13, content_hash = ?14, gone_at = ?16,
                moved_project_id = ?17, moved_iid = ?18, jira_resolved_at = ?19, scope = ?20
         WHERE id = ?15"
    } else {
        "INSERT INTO mappings (rule, jira_key, jira_id, target, project, project_id, iid,
                               web_url, state, jira_updated, created_at, closed_at,
                               replicated_at, content_hash, gone_at, moved_project_id, moved_iid,
                               jira_resolved_at, scope)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?16, ?17, ?18, ?19,
                ?20
         WHERE ?15 IS NULL"
    };
    tx.execute(sql, values)
        .map_err(query("recording a mapping"))?;
    Ok(())
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
     created_at, closed_at, content_hash, jira_id, project_id, gone_at, moved_project_id, moved_iid, \
     jira_resolved_at, scope";

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
    jira_id: Option<String>,
    project_id: Option<i64>,
    gone_at: Option<String>,
    moved_project_id: Option<i64>,
    moved_iid: Option<i64>,
    jira_resolved_at: Option<String>,
    scope: Option<String>,
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
            jira_id: row.get(11)?,
            project_id: row.get(12)?,
            gone_at: row.get(13)?,
            moved_project_id: row.get(14)?,
            moved_iid: row.get(15)?,
            jira_resolved_at: row.get(16)?,
            scope: row.get(17)?,
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
        let jira_id = self
            .jira_id
            .map(|id| JiraId::parse(&id).map_err(|bad| cell.column("jira_id").corrupt(&bad)))
            .transpose()?;
        let id_in = |column: &'static str, value: Option<i64>| {
            value
                .map(|id| {
                    u64::try_from(id).map_err(|_| cell.column(column).corrupt(&id.to_string()))
                })
                .transpose()
        };
        let project_id = id_in("project_id", self.project_id)?;
        let moved_to = match (
            id_in("moved_project_id", self.moved_project_id)?,
            id_in("moved_iid", self.moved_iid)?,
        ) {
            (Some(project_id), Some(iid)) => Some(MovedTo { project_id, iid }),
            (None, None) => None,
            (Some(p), None) => {
                return Err(cell
                    .column("moved_iid")
                    .corrupt(&format!("NULL (moved to project {p})")));
            }
            (None, Some(i)) => {
                return Err(cell
                    .column("moved_project_id")
                    .corrupt(&format!("NULL (moved to iid {i})")));
            }
        };
        Ok(Mapping {
            jira_key,
            jira_id,
            target,
            project: self.project,
            project_id,
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
            moved_to,
            gone_at: self
                .gone_at
                .map(|t| cell.column("gone_at").timestamp(t))
                .transpose()?,
            jira_resolved_at: self
                .jira_resolved_at
                .map(|t| cell.column("jira_resolved_at").timestamp(t))
                .transpose()?,
            scope: self
                .scope
                .map(|s| cell.column("scope").name(&s))
                .transpose()?
                .unwrap_or(IssueScope::InScope),
            rule: self.rule,
        })
    }
}
