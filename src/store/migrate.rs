//! Schema migrations, in the manner of cargo's `util/sqlite.rs`: an append-only list of SQL
//! files, and `PRAGMA user_version` holding how many of them a database has applied.
//!
//! This module owns bringing a database up to this build's schema and refusing one from a newer
//! build. It does not open files or set connection pragmas; that is [`super::Store`]'s job.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Every migration this build knows, oldest first. Append only: a released entry is never edited
/// or removed, because stores in the field have already applied it and will not apply it again.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/0001_init.sql"),
    include_str!("../../schema/0002_content_hash.sql"),
    include_str!("../../schema/0003_identity.sql"),
    include_str!("../../schema/0004_people.sql"),
    include_str!("../../schema/0005_jira_side.sql"),
    include_str!("../../schema/0006_stages.sql"),
    include_str!("../../schema/0007_dora.sql"),
    include_str!("../../schema/0008_incident_details.sql"),
    include_str!("../../schema/0009_remote_links.sql"),
    include_str!("../../schema/0010_fewer_btrees.sql"),
];

/// The schema version this build writes: the number of migrations it knows.
pub(crate) const KNOWN_VERSION: u32 = {
    assert!(
        MIGRATIONS.len() < i32::MAX as usize,
        "user_version is an i32"
    );
    MIGRATIONS.len() as u32
};

/// Applies the migrations `conn` has not yet applied, all in one exclusive transaction, so that a
/// crash leaves the store at its old version and no other connection sees a half-built schema.
/// Running it again on a migrated store changes nothing.
///
/// `path` names the store in errors.
///
/// # Errors
/// [`StoreError::TooNew`] if the store was written by a newer build (nothing is changed),
/// [`StoreError::Migrate`] naming the version whose SQL failed (nothing is changed), and
/// [`StoreError::Open`] if the transaction cannot start or commit (for example, the file is not a
/// SQLite database).
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(open_error)?;
    // Read inside the transaction: another connection cannot migrate between this read and ours.
    let found = user_version(&tx).map_err(open_error)?;
    if found > KNOWN_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: KNOWN_VERSION,
        });
    }
    if found == KNOWN_VERSION {
        return Ok(());
    }
    for (version, sql) in (1..=KNOWN_VERSION).zip(MIGRATIONS).skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                version,
                source,
            })?;
    }
    // `user_version` lives in the database header, so it commits or rolls back with the rest.
    tx.pragma_update(None, "user_version", KNOWN_VERSION)
        .map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            version: KNOWN_VERSION,
            source,
        })?;
    tx.commit().map_err(open_error)
}

/// Checks, without writing, that the store's schema is exactly this build's: what a read-only
/// connection needs, since it cannot migrate.
///
/// # Errors
/// [`StoreError::Outdated`] if the store needs migrating, [`StoreError::TooNew`] if a newer build
/// wrote it, and [`StoreError::Open`] if the version cannot be read.
pub(crate) fn check_current(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match found {
        v if v > KNOWN_VERSION => Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: KNOWN_VERSION,
        }),
        v if v < KNOWN_VERSION => Err(StoreError::Outdated {
            path: path.to_path_buf(),
            found,
            known: KNOWN_VERSION,
        }),
        _ => Ok(()),
    }
}

/// The store's schema version (0 for a new, empty database). A negative value, which this
/// program never writes, fails as an out-of-range conversion.
fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object in the schema, as SQL text, in a stable order.
    fn schema(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Migrating twice is a no-op: the same schema and the same version.
    #[test]
    fn migrate_twice_is_a_noop() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path).unwrap();
        let first = schema(&conn);
        migrate(&mut conn, path).unwrap();
        assert_eq!(
            schema(&conn),
            first,
            "a second migrate must not change the schema"
        );
        assert_eq!(
            user_version(&conn).unwrap(),
            KNOWN_VERSION,
            "the version records every migration"
        );
        assert!(
            first
                .iter()
                .any(|s| s.starts_with("CREATE TABLE") && s.contains("mappings")),
            "the first migration creates the tables: {first:?}"
        );
    }

    /// 0010 keeps every incident's details through the table's rebuild, and the plan of a
    /// lookup by rule still uses an index.
    #[test]
    fn fewer_btrees_keeps_the_details() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..9] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 9).unwrap();
        tx.execute(
            "INSERT INTO incident_details (project_id, iid, severity, start_event_id, start_at,
                                           end_begun_at, updated_at)
             VALUES (7, 42, 'HIGH', 'gid://gitlab/IncidentManagement::TimelineEvent/1',
                     '2026-01-01T00:00:00.000Z', '2026-01-02T00:00:00.000Z',
                     '2026-01-03T00:00:00.000Z')",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let row: (i64, i64, String, String, Option<String>, String) = conn
            .query_row(
                "SELECT project_id, iid, severity, start_event_id, end_event_id, end_begun_at
                 FROM incident_details",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                7,
                42,
                "HIGH".to_owned(),
                "gid://gitlab/IncidentManagement::TimelineEvent/1".to_owned(),
                None,
                "2026-01-02T00:00:00.000Z".to_owned()
            )
        );
        let indexes: Vec<String> = schema(&conn)
            .into_iter()
            .filter(|s| s.contains("mappings_by_rule") || s.contains("incident_details_v10"))
            .collect();
        assert!(indexes.is_empty(), "{indexes:?}");
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT jira_key FROM mappings WHERE rule = 'ops'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("USING"),
            "a lookup by rule uses an index: {plan}"
        );
    }

    /// A store whose version is newer than this build knows is refused and left unchanged.
    #[test]
    fn newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", KNOWN_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, Path::new("/srv/sync.db")).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, known, .. } if found == KNOWN_VERSION + 1 && known == KNOWN_VERSION),
            "a newer schema must be refused, got {err:?}"
        );
        assert!(
            schema(&conn).is_empty(),
            "a refused store must not be migrated"
        );
    }

    /// A read-only check accepts only this build's version.
    #[test]
    fn check_current_wants_exactly_this_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        let err = check_current(&conn, path).unwrap_err();
        assert!(
            matches!(err, StoreError::Outdated { found: 0, .. }),
            "an unmigrated store must be reported as outdated, got {err:?}"
        );
        migrate(&mut conn, path).unwrap();
        check_current(&conn, path).expect("a migrated store is current");
    }
}
