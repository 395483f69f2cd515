//! Incident details in the store (`incident_details`, schema 0008): the severity the sync last
//! set on a GitLab incident and the timeline events it wrote, per GitLab object, with the
//! creates begun and not yet recorded as done.
//!
//! It owns the table's SQL; the engine reaches it through `SyncStore::incident_details`,
//! `SyncStore::begin_timeline_event` and `Commit::Details` (`super::sync`).

use rusqlite::{Connection, params};

use super::codec::{Cell, Int};
use super::{StoreError, exec, one};
use crate::domain::{IncidentDetails, TimelineMark, TimelineTag};

/// The row of the incident `iid` of the project `project_id`; the default when it has none.
pub(super) fn read(
    conn: &Connection,
    project_id: u64,
    iid: u64,
) -> Result<IncidentDetails, StoreError> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = one(
        conn,
        "SELECT severity, start_event_id, start_at, end_event_id, end_at, start_begun_at,
                end_begun_at
         FROM incident_details WHERE project_id = ?1 AND iid = ?2",
        params![Int(project_id), Int(iid)],
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
        "reading an incident's details",
    )?;
    let Some((severity, start_id, start_at, end_id, end_at, start_begun, end_begun)) = row else {
        return Ok(IncidentDetails::default());
    };
    let cell = Cell::new(
        "incident_details",
        "severity",
        &format!("{project_id}#{iid}"),
    );
    let mark = |id: Option<String>, at: Option<String>, column| -> Result<_, StoreError> {
        match (id, at) {
            (Some(id), Some(at)) => Ok(Some(TimelineMark {
                id,
                occurred_at: cell.column(column).timestamp(at)?,
            })),
            _ => Ok(None),
        }
    };
    let mut begun = Vec::new();
    if start_begun.is_some() {
        begun.push(TimelineTag::Start);
    }
    if end_begun.is_some() {
        begun.push(TimelineTag::End);
    }
    Ok(IncidentDetails {
        severity: severity.map(|s| cell.name(&s)).transpose()?,
        start: mark(start_id, start_at, "start_at")?,
        end: mark(end_id, end_at, "end_at")?,
        begun,
    })
}

/// Writes what the sync has written of the incident's details, whole: a tag no longer in
/// `details.begun` has its begun create cleared.
pub(super) fn write(
    conn: &Connection,
    project_id: u64,
    iid: u64,
    details: &IncidentDetails,
    now: &str,
) -> Result<(), StoreError> {
    let id = |m: &Option<TimelineMark>| m.as_ref().map(|m| m.id.clone());
    let at = |m: &Option<TimelineMark>| {
        m.as_ref()
            .map(|m| super::codec::format_timestamp(m.occurred_at))
    };
    let begun = |tag| details.begun.contains(&tag);
    exec(
        conn,
        "INSERT INTO incident_details (project_id, iid, severity, start_event_id, start_at,
                                       end_event_id, end_at, start_begun_at, end_begun_at,
                                       updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, CASE WHEN ?8 THEN ?10 END,
                 CASE WHEN ?9 THEN ?10 END, ?10)
         ON CONFLICT (project_id, iid) DO UPDATE SET
            severity = excluded.severity,
            start_event_id = excluded.start_event_id,
            start_at = excluded.start_at,
            end_event_id = excluded.end_event_id,
            end_at = excluded.end_at,
            start_begun_at = CASE WHEN ?8 THEN coalesce(start_begun_at, ?10) END,
            end_begun_at = CASE WHEN ?9 THEN coalesce(end_begun_at, ?10) END,
            updated_at = excluded.updated_at",
        params![
            Int(project_id),
            Int(iid),
            details.severity.map(|s| s.as_str()),
            id(&details.start),
            at(&details.start),
            id(&details.end),
            at(&details.end),
            begun(TimelineTag::Start),
            begun(TimelineTag::End),
            now
        ],
        "recording an incident's details",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use crate::domain::{IncidentDetails, IncidentSeverity, TimelineMark, TimelineTag};
    use crate::engine::ports::SyncStore;
    use crate::store::Store;

    fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
        DateTime::from_timestamp(1_750_000_000 + s, 0).expect("a valid time")
    }

    /// What is written reads back whole, a begun create survives until a write records its
    /// event, and another incident's row is untouched.
    #[tokio::test]
    async fn details_round_trip_and_begun_creates_are_kept() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&dir.path().join("sync.db")).expect("opens");
        assert_eq!(
            store.incident_details(1, 7).await.expect("reads"),
            IncidentDetails::default()
        );
        let start = IncidentDetails {
            begun: vec![TimelineTag::Start],
            ..IncidentDetails::default()
        };
        store
            .begin_timeline_event("ops", 1, 7, start)
            .await
            .expect("begins");
        let begun = store.incident_details(1, 7).await.expect("reads");
        assert_eq!(begun.begun, [TimelineTag::Start]);
        let mut d = IncidentDetails {
            severity: Some(IncidentSeverity::High),
            ..begun
        };
        d.set_mark(
            TimelineTag::Start,
            TimelineMark {
                id: "gid://gitlab/IncidentManagement::TimelineEvent/3".into(),
                occurred_at: at(0),
            },
        );
        d.begun.push(TimelineTag::End);
        store
            .commit(
                "ops",
                crate::domain::Commit::Details {
                    project_id: 1,
                    iid: 7,
                    details: d.clone(),
                },
                Some(at(60)),
            )
            .await
            .expect("commits");
        assert_eq!(store.incident_details(1, 7).await.expect("reads"), d);
        assert_eq!(store.cursor("ops").await.expect("reads"), Some(at(60)));
        assert_eq!(
            store.incident_details(1, 8).await.expect("reads"),
            IncidentDetails::default(),
            "another incident has nothing"
        );
    }
}
