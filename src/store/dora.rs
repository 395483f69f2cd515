//! What `repair` and `backfill` write for GitLab's analytics (schema 0007): the DORA days a
//! repair has made GitLab recompute, with the intent it records before reopening an incident,
//! and the issues that got backfill's value-stream marker.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::params;

use super::codec::{Cell, Int, format_timestamp};
use super::writer::Mode;
use super::{Store, StoreError, all, exec};
use crate::domain::JiraKey;

/// Where a repair of one day stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairState {
    /// The reopen may have been sent; the incident may be open in GitLab until it is closed
    /// again at `closed_at`.
    Reopening,
    /// GitLab holds the incident closed again: the day was recomputed.
    Done,
}

impl RepairState {
    fn as_str(self) -> &'static str {
        match self {
            RepairState::Reopening => "reopening",
            RepairState::Done => "done",
        }
    }
}

/// One repaired (or being repaired) day of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairRow {
    pub project_id: u64,
    pub day: NaiveDate,
    pub rule: String,
    pub jira_key: JiraKey,
    pub iid: u64,
    pub closed_at: DateTime<Utc>,
    pub state: RepairState,
}

type RawRepair = (i64, String, String, String, i64, String, String);

fn decode_repair(raw: RawRepair) -> Result<RepairRow, StoreError> {
    let (project_id, day, rule, key, iid, closed_at, state) = raw;
    let cell = Cell::new("dora_repairs", "day", &format!("{project_id}/{day}"));
    Ok(RepairRow {
        project_id: u64::try_from(project_id)
            .map_err(|_| cell.column("project_id").corrupt(&project_id.to_string()))?,
        day: NaiveDate::parse_from_str(&day, "%Y-%m-%d").map_err(|_| cell.corrupt(&day))?,
        rule,
        jira_key: cell.column("jira_key").jira_key(key)?,
        iid: u64::try_from(iid).map_err(|_| cell.column("iid").corrupt(&iid.to_string()))?,
        closed_at: cell.column("closed_at").timestamp(closed_at)?,
        state: match state.as_str() {
            "reopening" => RepairState::Reopening,
            "done" => RepairState::Done,
            _ => return Err(cell.column("state").corrupt(&state)),
        },
    })
}

impl Store {
    /// Every repair row, by project then day.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails; [`StoreError::Corrupt`] if a row is not readable.
    pub async fn repairs(&self) -> Result<Vec<RepairRow>, StoreError> {
        self.read(|conn| {
            let raws = all(
                conn,
                "SELECT project_id, day, rule, jira_key, iid, closed_at, state FROM dora_repairs
                 ORDER BY project_id, day",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
                "listing DORA repairs",
            )?;
            raws.into_iter().map(decode_repair).collect()
        })
        .await
    }

    /// Records `row` (its state included), replacing an earlier row of the same project and
    /// day. A `Reopening` row is committed durably: it is the intent that lets a later run close
    /// an incident a crash left open.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn record_repair(&self, row: RepairRow) -> Result<(), StoreError> {
        let mode = match row.state {
            RepairState::Reopening => Mode::Durable,
            RepairState::Done => Mode::Write,
        };
        self.call(mode, move |conn| {
            let now = format_timestamp(Utc::now());
            let finished = (row.state == RepairState::Done).then(|| now.clone());
            exec(
                conn,
                "INSERT INTO dora_repairs
                     (project_id, day, rule, jira_key, iid, closed_at, state, started_at,
                      finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (project_id, day) DO UPDATE SET
                     rule = excluded.rule, jira_key = excluded.jira_key, iid = excluded.iid,
                     closed_at = excluded.closed_at, state = excluded.state,
                     finished_at = excluded.finished_at",
                params![
                    Int(row.project_id),
                    row.day.format("%Y-%m-%d").to_string(),
                    row.rule,
                    row.jira_key,
                    Int(row.iid),
                    format_timestamp(row.closed_at),
                    row.state.as_str(),
                    now,
                    finished,
                ],
                "recording a DORA repair",
            )?;
            Ok(())
        })
        .await
    }

    /// The iids of `project_id` that already carry backfill's value-stream marker.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn marked(&self, project_id: u64) -> Result<HashSet<u64>, StoreError> {
        self.read(move |conn| {
            let iids: Vec<i64> = all(
                conn,
                "SELECT iid FROM vsa_marks WHERE project_id = ?1",
                [Int(project_id)],
                |r| r.get(0),
                "listing marked issues",
            )?;
            Ok(iids
                .into_iter()
                .filter_map(|i| u64::try_from(i).ok())
                .collect())
        })
        .await
    }

    /// Records that issue `iid` of `project_id` got the marker `label`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn record_mark(
        &self,
        project_id: u64,
        iid: u64,
        rule: &str,
        key: &JiraKey,
        label: &str,
    ) -> Result<(), StoreError> {
        let (rule, key, label) = (rule.to_owned(), key.clone(), label.to_owned());
        self.call(Mode::Write, move |conn| {
            exec(
                conn,
                "INSERT INTO vsa_marks (project_id, iid, rule, jira_key, label, marked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (project_id, iid) DO NOTHING",
                params![
                    Int(project_id),
                    Int(iid),
                    rule,
                    key,
                    label,
                    format_timestamp(Utc::now())
                ],
                "recording a marked issue",
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repair's intent and its end are kept per project and day; the latest state wins.
    #[tokio::test]
    async fn repairs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let day = NaiveDate::from_ymd_opt(2025, 3, 4).unwrap();
        let row = RepairRow {
            project_id: 7,
            day,
            rule: "ops".into(),
            jira_key: JiraKey::parse("OPS-1").unwrap(),
            iid: 3,
            closed_at: day.and_hms_opt(10, 0, 0).unwrap().and_utc(),
            state: RepairState::Reopening,
        };
        store.record_repair(row.clone()).await.unwrap();
        assert_eq!(store.repairs().await.unwrap(), vec![row.clone()]);
        let done = RepairRow {
            state: RepairState::Done,
            ..row
        };
        store.record_repair(done.clone()).await.unwrap();
        assert_eq!(
            store.repairs().await.unwrap(),
            vec![done],
            "one row per day"
        );
    }

    /// A marked issue is remembered once per project.
    #[tokio::test]
    async fn marks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let key = JiraKey::parse("OPS-1").unwrap();
        store.record_mark(7, 3, "ops", &key, "m").await.unwrap();
        store.record_mark(7, 3, "ops", &key, "m").await.unwrap();
        store.record_mark(8, 4, "ops", &key, "m").await.unwrap();
        assert_eq!(store.marked(7).await.unwrap(), HashSet::from([3]));
    }
}
