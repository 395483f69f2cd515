//! The read-only views `status` shows: a [`RuleStatus`] per rule with its newest [`RunRecord`],
//! and a rule's failed issues as [`FailureEntry`]s, listed without decoding their snapshots.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::codec::Cell;
use super::error::query;
use super::{Store, StoreError};
use crate::domain::{IssueScope, JiraKey, RemoteState, RunCounts, RunMode, RunOutcome};

/// One failed issue as [`Store::failure_list`] lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureEntry {
    pub jira_key: JiraKey,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    pub last_failed_at: DateTime<Utc>,
    /// When a cycle retries it next (the backoff).
    pub next_attempt_at: DateTime<Utc>,
}

/// One issue a rule follows that its search no longer returns, as `status` lists it: its key
/// when last seen, where it stands, its GitLab object's state and link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrayEntry {
    pub jira_key: JiraKey,
    pub scope: IssueScope,
    pub state: RemoteState,
    pub web_url: Option<String>,
}

/// One rule as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleStatus {
    pub rule: String,
    /// Where the next search starts; `None` before the rule's first commit.
    pub cursor: Option<DateTime<Utc>>,
    /// Issues with a mapping (`open + closed + gone`).
    pub mapped: u64,
    /// Mappings whose GitLab object we last left opened.
    pub open: u64,
    /// Mappings whose GitLab object we last left closed.
    pub closed: u64,
    /// Mappings whose GitLab object a person deleted: never written again.
    pub gone: u64,
    /// Issues waiting in the failures table for a retry (forgotten ones aside).
    pub failed: u64,
    /// Creates started but never answered, the process having stopped before GitLab did: each
    /// is looked up in GitLab before a new attempt. A create that failed is counted in `failed`
    /// instead (with its error), whether GitLab refused it or its answer was lost.
    pub pending_intents: u64,
    /// The newest run of the rule, finished or not.
    pub last_run: Option<RunRecord>,
}

impl RuleStatus {
    /// A rule the store holds nothing of yet.
    pub fn empty(rule: &str) -> Self {
        Self {
            rule: rule.to_owned(),
            cursor: None,
            mapped: 0,
            open: 0,
            closed: 0,
            gone: 0,
            failed: 0,
            pending_intents: 0,
            last_run: None,
        }
    }
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

impl Store {
    /// Every rule any table mentions, sorted by id, with its cursor, counts and newest run.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a stored value is not
    /// readable.
    pub async fn rule_status(&self) -> Result<Vec<RuleStatus>, StoreError> {
        self.read(read_rule_status).await
    }

    /// The keys of the rule's mappings whose GitLab object a person deleted, sorted.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a key is not readable.
    pub async fn gone_list(&self, rule: &str) -> Result<Vec<JiraKey>, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT jira_key FROM mappings WHERE rule = ?1 AND gone_at IS NOT NULL
                     ORDER BY jira_key",
                )
                .map_err(query("listing objects gone from GitLab"))?;
            let keys = stmt
                .query_map([&rule], |row| row.get::<_, String>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing objects gone from GitLab"))?;
            let cell = Cell::new("mappings", "jira_key", &rule);
            keys.into_iter().map(|k| cell.jira_key(k)).collect()
        })
        .await
    }

    /// The rule's failed issues that are not forgotten, oldest first: key, attempts, last error,
    /// when it last failed and when it is retried next. Unlike [`SyncStore::failures`] it does not decode the snapshots, so one bad snapshot does
    /// not hide the list.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a stored value is not
    /// readable.
    ///
    /// [`SyncStore::failures`]: crate::engine::ports::SyncStore::failures
    pub async fn failure_list(&self, rule: &str) -> Result<Vec<FailureEntry>, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| read_failure_list(conn, &rule)).await
    }

    /// The rule's issues that left its JQL or were deleted in Jira, by key.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a stored value is not
    /// readable.
    pub async fn strays(&self, rule: &str) -> Result<Vec<StrayEntry>, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT jira_key, scope, state, web_url FROM mappings
                     WHERE rule = ?1 AND scope IS NOT NULL ORDER BY jira_key",
                )
                .map_err(query("listing issues out of scope or deleted"))?;
            let rows = stmt
                .query_map([&rule], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(query("listing issues out of scope or deleted"))?;
            rows.into_iter()
                .map(|(key, scope, state, web_url)| {
                    let cell = Cell::new("mappings", "jira_key", &rule);
                    let jira_key = cell.jira_key(key)?;
                    let cell = cell.key(&jira_key);
                    Ok(StrayEntry {
                        scope: cell.column("scope").name(&scope)?,
                        state: cell.column("state").name(&state)?,
                        jira_key,
                        web_url,
                    })
                })
                .collect()
        })
        .await
    }
}

fn read_failure_list(conn: &Connection, rule: &str) -> Result<Vec<FailureEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT jira_key, attempts, last_error, last_failed_at,
                    coalesce(next_attempt_at, last_failed_at)
             FROM failures WHERE rule = ?1 AND forgotten_at IS NULL
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
                row.get::<_, String>(4)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(query("listing failures"))?;
    rows.into_iter()
        .map(|(key, attempts, last_error, last_failed_at, next)| {
            let cell = Cell::new("failures", "jira_key", rule);
            let jira_key = cell.jira_key(key)?;
            let cell = cell.key(&jira_key);
            Ok(FailureEntry {
                attempts: cell.column("attempts").count(attempts)?,
                last_error,
                last_failed_at: cell.column("last_failed_at").timestamp(last_failed_at)?,
                next_attempt_at: cell.column("next_attempt_at").timestamp(next)?,
                jira_key,
            })
        })
        .collect()
}

fn read_rule_status(conn: &Connection) -> Result<Vec<RuleStatus>, StoreError> {
    // The call runs in one transaction: the counts and the run log agree with each other.
    let rows = {
        let mut stmt = conn
            .prepare_cached(
                "WITH rules (rule) AS (
                     SELECT rule FROM rule_state UNION SELECT rule FROM mappings
                     UNION SELECT rule FROM intents UNION SELECT rule FROM failures
                     UNION SELECT rule FROM runs)
                 SELECT r.rule,
                        (SELECT cursor FROM rule_state s WHERE s.rule = r.rule),
                        (SELECT count(*) FROM mappings m
                         WHERE m.rule = r.rule AND m.state = 'opened' AND m.gone_at IS NULL),
                        (SELECT count(*) FROM mappings m
                         WHERE m.rule = r.rule AND m.state = 'closed' AND m.gone_at IS NULL),
                        (SELECT count(*) FROM mappings m
                         WHERE m.rule = r.rule AND m.gone_at IS NOT NULL),
                        (SELECT count(*) FROM failures f
                         WHERE f.rule = r.rule AND f.forgotten_at IS NULL),
                        (SELECT count(*) FROM intents i WHERE i.rule = r.rule
                         AND NOT EXISTS (SELECT 1 FROM failures f
                                         WHERE f.rule = i.rule AND f.jira_key = i.jira_key)),
                        (SELECT max(id) FROM runs u WHERE u.rule = r.rule)
                 FROM rules r ORDER BY r.rule",
            )
            .map_err(query("reading the status"))?;
        stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                [
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ],
                row.get::<_, Option<i64>>(7)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(query("reading the status"))?
    };
    rows.into_iter()
        .map(|(rule, cursor, counts, last_run)| {
            // `count(*)` is never negative.
            let [open, closed, gone, failed, pending_intents] =
                counts.map(|n| u64::try_from(n).unwrap_or(0));
            let cursor = cursor
                .map(|t| Cell::new("rule_state", "cursor", &rule).timestamp(t))
                .transpose()?;
            let last_run = last_run.map(|id| read_run(conn, id)).transpose()?;
            Ok(RuleStatus {
                rule,
                cursor,
                mapped: open + closed + gone,
                open,
                closed,
                gone,
                failed,
                pending_intents,
                last_run,
            })
        })
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
        .prepare_cached(
            "SELECT mode, started_at, finished_at, outcome,
                    seen, created, closed, reopened, skipped, failed, error, updated
             FROM runs WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([id], |row| {
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
            })
        })
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
