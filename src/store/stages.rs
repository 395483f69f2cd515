//! The stage replay's records (`schema/0006_stages.sql`): each stage step sent to a GitLab
//! issue, pending until GitLab answered, and the Jira change whose status history was fully
//! applied to it.

use chrono::{DateTime, Utc};

use super::codec::{Cell, Int, format_timestamp};
use super::writer::Mode;
use super::{Store, StoreError, all, exec, one};
use crate::domain::{StageState, StageStep};

/// `''` in the store stands for no label.
fn label(l: &Option<String>) -> &str {
    l.as_deref().unwrap_or("")
}

fn some(l: String) -> Option<String> {
    Some(l).filter(|l| !l.is_empty())
}

impl Store {
    /// The stage replay of the object `project_id`/`iid`.
    ///
    /// # Errors
    /// SQLite fails, or a row is not readable.
    pub async fn stage_state(&self, project_id: u64, iid: u64) -> Result<StageState, StoreError> {
        self.read(move |conn| {
            let cell = Cell::new("stage_steps", "at", &format!("{project_id}#{iid}"));
            let rows: Vec<(String, String, String, String)> = all(
                conn,
                "SELECT at, add_label, remove_label, state FROM stage_steps
                 WHERE project_id = ?1 AND iid = ?2 ORDER BY at",
                rusqlite::params![Int(project_id), Int(iid)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                "reading stage steps",
            )?;
            let mut state = StageState::default();
            for (at, add, remove, st) in rows {
                let step = StageStep {
                    at: cell.timestamp(at)?,
                    add: some(add),
                    remove: some(remove),
                };
                match st.as_str() {
                    "done" => state.done.push(step),
                    _ => state.pending.push(step),
                }
            }
            let mark: Option<String> = one(
                conn,
                "SELECT jira_updated FROM history_marks WHERE project_id = ?1 AND iid = ?2",
                rusqlite::params![Int(project_id), Int(iid)],
                |row| row.get(0),
                "reading a history mark",
            )?;
            state.history_updated = mark
                .map(|t| {
                    Cell::new(
                        "history_marks",
                        "jira_updated",
                        &format!("{project_id}#{iid}"),
                    )
                    .timestamp(t)
                })
                .transpose()?;
            Ok(state)
        })
        .await
    }

    /// Records a stage step as pending or done.
    ///
    /// # Errors
    /// SQLite fails.
    pub async fn put_stage(
        &self,
        project_id: u64,
        iid: u64,
        step: &StageStep,
        done: bool,
    ) -> Result<(), StoreError> {
        let at = format_timestamp(step.at);
        let (add, remove) = (label(&step.add).to_owned(), label(&step.remove).to_owned());
        self.call(Mode::Write, move |conn| {
            exec(
                conn,
                "INSERT INTO stage_steps (project_id, iid, at, add_label, remove_label, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (project_id, iid, at, add_label, remove_label)
                 DO UPDATE SET state = excluded.state",
                rusqlite::params![
                    Int(project_id),
                    Int(iid),
                    at,
                    add,
                    remove,
                    if done { "done" } else { "pending" }
                ],
                "recording a stage step",
            )?;
            Ok(())
        })
        .await
    }

    /// Records the Jira change whose status history is fully applied (never moving it back).
    ///
    /// # Errors
    /// SQLite fails.
    pub async fn put_history_mark(
        &self,
        project_id: u64,
        iid: u64,
        updated: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let updated = format_timestamp(updated);
        self.call(Mode::Write, move |conn| {
            exec(
                conn,
                "INSERT INTO history_marks (project_id, iid, jira_updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (project_id, iid) DO UPDATE SET jira_updated =
                     max(history_marks.jira_updated, excluded.jira_updated)",
                rusqlite::params![Int(project_id), Int(iid), updated],
                "recording a history mark",
            )?;
            Ok(())
        })
        .await
    }
}
