//! The engine's side of the store: `impl SyncStore for Store` (cursors, mappings, create intents,
//! commits, failures, the run log), the inherent mapping and meta accessors, and the private
//! helpers they share.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::codec::{Cell, Int, format_timestamp};
use super::error::query;
use super::writer::Mode;
use super::{Store, StoreError, all, exec, one, runs};
use crate::domain::{
    Commit, DueLinks, Failure, IncidentDetails, Intent, IssueScope, IssueSnapshot, JiraId, JiraKey,
    Mapping, MovedTo, RemoteLink, RemoteState, RunCounts, RunMode, RunOutcome, StageState,
    StageStep, Target,
};
use crate::engine::ports::{Place, ResolvedProject, SyncStore};

/// The columns [`RawMapping::from_row`] reads, in its order (a macro, so that statements are
/// `concat!`ed text the statement cache can key on without formatting them each call).
macro_rules! mapping_columns {
    () => {
        "rule, jira_key, target, project, iid, web_url, state, jira_updated, created_at, \
         closed_at, content_hash, jira_id, project_id, gone_at, moved_project_id, moved_iid, \
         jira_resolved_at, scope"
    };
}

impl Store {
    /// Records the intents of the creates of `issues` at `place` for `rule`, in one durable
    /// call, in the order given (`begin_intent` and `begin_intents`).
    async fn record_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<Vec<Intent>, StoreError> {
        let rule = rule.to_owned();
        let (target, project_id) = (place.target(), place.project_id);
        let now = format_timestamp(Utc::now());
        let run = self.writing_run(&rule);
        let inserting = run.clone();
        // Durable: the creates these intents guard are sent once the call answers, and a power
        // cut must not leave GitLab with an object the store has no trace of.
        let result = self
            .call(Mode::Durable, move |conn| {
                if let Some(run) = &run {
                    runs::ensure_row(conn, run)?;
                }
                issues
                    .into_iter()
                    .map(|(id, key)| {
                        record_intent(conn, &rule, target, project_id, id.as_ref(), key, &now)
                    })
                    .collect()
            })
            .await;
        if result.is_ok() {
            self.run_row_committed(inserting.as_ref());
        }
        result
    }

    /// The mapping of one issue, if it has one.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if the row is not readable.
    pub async fn mapping(&self, rule: &str, key: &JiraKey) -> Result<Option<Mapping>, StoreError> {
        let rule = rule.to_owned();
        let key = key.clone();
        self.read(move |conn| {
            let raw = one(
                conn,
                concat!(
                    "SELECT ",
                    mapping_columns!(),
                    " FROM mappings WHERE rule = ?1 AND jira_key = ?2"
                ),
                params![rule, key],
                RawMapping::from_row,
                "reading one mapping",
            )?;
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
        self.read(move |conn| {
            let raws = all(
                conn,
                concat!(
                    "SELECT ",
                    mapping_columns!(),
                    " FROM mappings WHERE rule = ?1 ORDER BY jira_key"
                ),
                [&rule],
                RawMapping::from_row,
                "listing a rule's mappings",
            )?;
            raws.into_iter().map(RawMapping::decode).collect()
        })
        .await
    }

    /// The projects resolved so far: configured path or id → (numeric id, path then).
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if an id is negative.
    pub async fn projects(&self) -> Result<BTreeMap<String, (u64, String)>, StoreError> {
        self.read(|conn| {
            let rows = all(
                conn,
                "SELECT configured, project_id, path FROM projects",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?)),
                "listing resolved projects",
            )?;
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
        self.read(move |conn| {
            one(
                conn,
                "SELECT value FROM meta WHERE key = ?1",
                [&key],
                |row| row.get(0),
                "reading a meta value",
            )
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
        self.call(Mode::Write, move |conn| {
            exec(
                conn,
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &value],
                "writing a meta value",
            )?;
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
        self.read(move |conn| failing_rules(conn, &key)).await
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
        self.change_failure(key, rule, move |conn, rule, key| {
            exec(
                conn,
                "UPDATE failures SET next_attempt_at = ?3 WHERE rule = ?1 AND jira_key = ?2",
                params![rule, key, now],
                "changing a failure",
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
        self.change_failure(key, rule, move |conn, rule, key| {
            exec(
                conn,
                "UPDATE failures SET forgotten_at = ?3 WHERE rule = ?1 AND jira_key = ?2",
                params![rule, key, now],
                "changing a failure",
            )
        })
        .await
    }

    /// Applies `change` to the one failure of `key` that `rule` picks, in one transaction,
    /// durably: a person's command is not undone by a power cut after it answered.
    async fn change_failure<F>(
        &self,
        key: &JiraKey,
        rule: Option<&str>,
        change: F,
    ) -> Result<FailureChange, StoreError>
    where
        F: FnOnce(&Connection, &str, &JiraKey) -> Result<usize, StoreError> + Send + 'static,
    {
        let key = key.clone();
        let rule = rule.map(str::to_owned);
        self.call(Mode::Durable, move |conn| {
            let mut rules = failing_rules(conn, &key)?;
            if let Some(wanted) = &rule {
                rules.retain(|r| r == wanted);
            }
            let picked = match rules.as_slice() {
                [] => return Ok(FailureChange::Unknown),
                [one] => one.clone(),
                _ => return Ok(FailureChange::Ambiguous { rules }),
            };
            change(conn, &picked, &key)?;
            Ok(FailureChange::Done { rule: picked })
        })
        .await
    }
}

fn failing_rules(conn: &Connection, key: &JiraKey) -> Result<Vec<String>, StoreError> {
    all(
        conn,
        "SELECT rule FROM failures WHERE jira_key = ?1 AND forgotten_at IS NULL ORDER BY rule",
        [key],
        |row| row.get(0),
        "finding a failing key",
    )
}

impl SyncStore for Store {
    type Error = StoreError;

    async fn cursor(&self, rule: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| {
            let text: Option<String> = one(
                conn,
                CURSOR_SQL,
                [&rule],
                |row| row.get(0),
                "reading a rule's cursor",
            )?
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
        self.read(move |conn| {
            // The call runs in one transaction, so every lookup sees the same state.
            let mut by_id = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    mapping_columns!(),
                    " FROM mappings WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3"
                ))
                .map_err(query("reading mappings"))?;
            let mut by_key = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    mapping_columns!(),
                    " FROM mappings
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
        let mut begun = self
            .record_intents(rule, place, vec![(id.cloned(), key.clone())])
            .await?;
        begun.pop().ok_or_else(|| StoreError::Query {
            context: "recording a create intent",
            source: rusqlite::Error::QueryReturnedNoRows,
        })
    }

    async fn begin_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<HashMap<JiraKey, Intent>, StoreError> {
        if issues.is_empty() {
            return Ok(HashMap::new());
        }
        let begun = self.record_intents(rule, place, issues).await?;
        Ok(begun
            .into_iter()
            .map(|intent| (intent.jira_key.clone(), intent))
            .collect())
    }

    async fn withdraw_intents(
        &self,
        rule: &str,
        place: &Place,
        issues: Vec<(Option<JiraId>, JiraKey)>,
    ) -> Result<(), StoreError> {
        if issues.is_empty() {
            return Ok(());
        }
        let rule = rule.to_owned();
        let (target, project_id) = (place.target(), place.project_id);
        // Not durable: a withdrawal lost to a power cut leaves intents whose creates were never
        // sent, and the next attempt at each looks for its object first and finds none.
        self.call(Mode::Write, move |conn| {
            for (id, key) in issues {
                // Only an intent with no attempt before the one begun for it.
                exec(
                    conn,
                    "DELETE FROM intents
                     WHERE attempts = 1
                       AND ((project_id = ?1 AND target = ?2 AND jira_id = ?3)
                            OR (rule = ?4 AND jira_key = ?5 AND jira_id IS NULL))",
                    params![
                        Int(project_id),
                        target,
                        id.as_ref().map(JiraId::as_str),
                        rule,
                        key
                    ],
                    "withdrawing a create intent",
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn project_id(&self, configured: &str) -> Result<Option<u64>, StoreError> {
        let configured = configured.to_owned();
        self.read(move |conn| {
            let id: Option<i64> = one(
                conn,
                "SELECT project_id FROM projects WHERE configured = ?1",
                [&configured],
                |row| row.get(0),
                "reading a project's id",
            )?;
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
        self.call(Mode::Write, move |conn| {
            exec(
                conn,
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
                "remembering a project's id",
            )?;
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
        self.read(move |conn| {
            let raws = all(
                conn,
                concat!(
                    "SELECT ",
                    mapping_columns!(),
                    " FROM mappings
                     WHERE rule = ?1 AND state = 'opened' AND jira_id IS NOT NULL
                       AND project_id IS NOT NULL AND replicated_at < ?2
                       AND (scope IS NULL OR scope <> 'deleted')
                     ORDER BY id"
                ),
                params![rule, before],
                RawMapping::from_row,
                "listing the mappings to follow",
            )?;
            raws.into_iter().map(RawMapping::decode).collect()
        })
        .await
    }

    async fn incident_details(
        &self,
        project_id: u64,
        iid: u64,
    ) -> Result<IncidentDetails, StoreError> {
        self.read(move |conn| super::incident::read(conn, project_id, iid))
            .await
    }

    async fn begin_timeline_event(
        &self,
        rule: &str,
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
    ) -> Result<(), StoreError> {
        let now = format_timestamp(Utc::now());
        let run = self.writing_run(rule);
        let inserting = run.clone();
        // Durable, as a create intent: the create it guards is sent once the call answers.
        let result = self
            .call(Mode::Durable, move |conn| {
                if let Some(run) = &run {
                    runs::ensure_row(conn, run)?;
                }
                super::incident::write(conn, project_id, iid, &details, &now)
            })
            .await;
        if result.is_ok() {
            self.run_row_committed(inserting.as_ref());
        }
        result
    }

    async fn max_iid(&self, place: &Place) -> Result<Option<u64>, StoreError> {
        // Issues and incidents share a project's iids.
        let project_id = place.project_id;
        self.read(move |conn| {
            let max: Option<i64> = one(
                conn,
                "SELECT max(iid) FROM mappings WHERE project_id = ?1",
                params![Int(project_id)],
                |row| row.get(0),
                "reading the highest iid",
            )?
            .flatten();
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
            Commit::Replicated(mapping) => Change::Replicated(mapping, None),
            Commit::Settled { mapping, details } => {
                Change::Replicated(mapping, Some(Box::new(details)))
            }
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
            Commit::Details {
                project_id,
                iid,
                details,
            } => Change::Details {
                project_id,
                iid,
                details,
            },
        };
        let run = self.writing_run(&rule);
        let inserting = run.clone();
        // Not durable: a power cut may lose it, and the module doc says why nothing is then
        // lost or doubled.
        let result = self.call(Mode::Write, move |conn| {
            if let Some(run) = &run {
                runs::ensure_row(conn, run)?;
            }
            match &change {
                Change::Replicated(m, details) => {
                    record_mapping(conn, &rule, m, &now)?;
                    if let (Some(d), Some(project_id), Some(iid)) = (details, m.project_id, m.iid)
                    {
                        super::incident::write(conn, project_id, iid, d, &now)?;
                    }
                    let id = m.jira_id.as_ref().map(JiraId::as_str);
                    // The intent of this object, however it was keyed when it was begun.
                    exec(
                        conn,
                        "DELETE FROM intents
                         WHERE (project_id = ?1 AND target = ?2 AND jira_id = ?3)
                            OR (rule = ?4 AND jira_key = ?5 AND jira_id IS NULL)",
                        params![m.project_id.map(Int), m.target, id, rule, m.jira_key],
                        "clearing a create intent",
                    )?;
                    // The rule's failure of this issue, under its key then or now.
                    exec(
                        conn,
                        "DELETE FROM failures WHERE rule = ?1 AND (jira_key = ?2 OR jira_id = ?3)",
                        params![rule, m.jira_key, id],
                        "clearing a failure",
                    )?;
                }
                Change::Failed {
                    key,
                    id,
                    json,
                    error,
                } => {
                    // A forgotten failure failing again (Jira changed it) starts afresh.
                    let before: Option<i64> = one(
                        conn,
                        "SELECT attempts FROM failures
                         WHERE rule = ?1 AND jira_key = ?2 AND forgotten_at IS NULL",
                        params![rule, key],
                        |row| row.get(0),
                        "recording a failure",
                    )?;
                    let attempts = before.map_or(1, |n| n.saturating_add(1));
                    let wait = Failure::backoff(u32::try_from(attempts).unwrap_or(u32::MAX));
                    exec(
                        conn,
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
                        "recording a failure",
                    )?;
                }
                Change::Details {
                    project_id,
                    iid,
                    details,
                } => super::incident::write(conn, *project_id, *iid, details, &now)?,
            }
            if let Some(to) = cursor {
                move_cursor(conn, &rule, to, &now)?;
            }
            Ok(())
        })
        .await;
        if result.is_ok() {
            self.run_row_committed(inserting.as_ref());
        }
        result
    }

    async fn advance_cursor(&self, rule: &str, to: DateTime<Utc>) -> Result<(), StoreError> {
        let rule = rule.to_owned();
        let now = format_timestamp(Utc::now());
        self.call(Mode::Write, move |conn| move_cursor(conn, &rule, to, &now))
            .await
    }

    async fn failures(&self, rule: &str) -> Result<Vec<Failure>, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| {
            let rows = all(
                conn,
                "SELECT jira_key, snapshot, attempts, last_error, last_failed_at,
                        CASE WHEN forgotten_at IS NULL
                             THEN coalesce(next_attempt_at, last_failed_at) END
                 FROM failures WHERE rule = ?1
                 ORDER BY first_failed_at, jira_key",
                [&rule],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                },
                "listing failures",
            )?;
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

    async fn want_link(&self, rule: &str, link: &RemoteLink) -> Result<bool, StoreError> {
        self.want_remote_link(rule, link).await
    }

    async fn due_links(
        &self,
        rule: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<DueLinks, StoreError> {
        self.due_remote_links(rule, now, limit).await
    }

    async fn link_sent(&self, link: &RemoteLink) -> Result<(), StoreError> {
        self.remote_link_sent(link).await
    }

    async fn link_failed(
        &self,
        link: &RemoteLink,
        error: &str,
        gone: bool,
    ) -> Result<(), StoreError> {
        self.remote_link_failed(link, error, gone).await
    }

    async fn start_run(&self, rule: &str, mode: RunMode) -> Result<i64, StoreError> {
        Ok(self.begin_run(rule, mode))
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get_meta(key).await
    }

    async fn stages(&self, project_id: u64, iid: u64) -> Result<StageState, StoreError> {
        self.stage_state(project_id, iid).await
    }

    async fn record_stage(
        &self,
        project_id: u64,
        iid: u64,
        step: &StageStep,
        done: bool,
    ) -> Result<(), StoreError> {
        self.put_stage(project_id, iid, step, done).await
    }

    async fn history_done(
        &self,
        project_id: u64,
        iid: u64,
        updated: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.put_history_mark(project_id, iid, updated).await
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
        self.end_run(run_id, outcome, counts, error).await
    }
}

/// A commit's change, prepared before it is sent to the writer.
enum Change {
    /// A mapping, and its incident's details if they are settled with it.
    Replicated(Mapping, Option<Box<IncidentDetails>>),
    Failed {
        key: JiraKey,
        id: Option<JiraId>,
        json: String,
        error: String,
    },
    Details {
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
    },
}

/// Records an intent for the create of `id`/`key` at (`project_id`, `target`) on behalf of
/// `rule`, or counts one more attempt at the intent already there; returns it with the attempts
/// before this one.
fn record_intent(
    conn: &Connection,
    rule: &str,
    target: Target,
    project_id: u64,
    id: Option<&JiraId>,
    key: JiraKey,
    now: &str,
) -> Result<Intent, StoreError> {
    // An intent belongs to the object it would make: found by the issue's id whatever rule or
    // key started it; without an id, by rule and key.
    let existing: Option<i64> = match id {
        Some(id) => one(
            conn,
            "SELECT id FROM intents WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3",
            params![Int(project_id), target, id.as_str()],
            |row| row.get(0),
            "recording a create intent",
        ),
        None => one(
            conn,
            "SELECT id FROM intents WHERE rule = ?1 AND jira_key = ?2 AND jira_id IS NULL",
            params![rule, key],
            |row| row.get(0),
            "recording a create intent",
        ),
    }?;
    let (attempts, started_at): (i64, String) = match existing {
        Some(row) => one(
            conn,
            "UPDATE intents SET attempts = attempts + 1, last_attempt_at = ?2,
                    rule = ?3, jira_key = ?4
             WHERE id = ?1 RETURNING attempts, started_at",
            params![row, now, rule, key],
            |row| Ok((row.get(0)?, row.get(1)?)),
            "recording a create intent",
        ),
        None => one(
            conn,
            "INSERT INTO intents (rule, jira_key, jira_id, target, project_id, attempts,
                                  started_at, last_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
             RETURNING attempts, started_at",
            params![
                rule,
                key,
                id.map(JiraId::as_str),
                target,
                Int(project_id),
                now
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
            "recording a create intent",
        ),
    }?
    .ok_or_else(|| StoreError::Query {
        context: "recording a create intent",
        source: rusqlite::Error::QueryReturnedNoRows,
    })?;
    let cell = Cell::new("intents", "attempts", rule).key(&key);
    let previous_attempts = cell.count(attempts.saturating_sub(1))?;
    let started_at = cell.column("started_at").timestamp(started_at)?;
    Ok(Intent {
        rule: rule.to_owned(),
        jira_key: key,
        previous_attempts,
        started_at,
    })
}

/// Writes `m` as replicated by `rule`: onto the row of its object (by project id, target and
/// Jira id), else onto a row from before ids were kept (by the project as configured, target and
/// key), else as a new row. The row then carries the ids, the current key and the writing rule.
fn record_mapping(conn: &Connection, rule: &str, m: &Mapping, now: &str) -> Result<(), StoreError> {
    let id = m.jira_id.as_ref().map(JiraId::as_str);
    let project_id = m.project_id.map(Int);
    let mut row: Option<i64> = None;
    if let (Some(id), Some(project_id)) = (id, m.project_id) {
        row = one(
            conn,
            "SELECT id FROM mappings WHERE project_id = ?1 AND target = ?2 AND jira_id = ?3",
            params![Int(project_id), m.target, id],
            |r| r.get(0),
            "recording a mapping",
        )?;
    }
    if row.is_none() {
        row = one(
            conn,
            "SELECT id FROM mappings
             WHERE project = ?1 AND target = ?2 AND jira_key = ?3 AND jira_id IS NULL",
            params![m.project, m.target, m.jira_key],
            |r| r.get(0),
            "recording a mapping",
        )?;
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
    exec(conn, sql, values, "recording a mapping")?;
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
    exec(
        conn,
        "INSERT INTO rule_state (rule, cursor, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (rule) DO UPDATE SET
            updated_at = CASE WHEN rule_state.cursor IS NULL OR excluded.cursor > rule_state.cursor
                              THEN excluded.updated_at ELSE rule_state.updated_at END,
            cursor = CASE WHEN rule_state.cursor IS NULL OR excluded.cursor > rule_state.cursor
                          THEN excluded.cursor ELSE rule_state.cursor END",
        params![rule, format_timestamp(to), now],
        "moving a rule's cursor",
    )?;
    Ok(())
}

/// The statement that reads a rule's cursor.
pub(super) const CURSOR_SQL: &str = "SELECT cursor FROM rule_state WHERE rule = ?1";

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
