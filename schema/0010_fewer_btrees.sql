-- 0010: fewer b-trees written per replicated issue (issue 11). Every commit writes each page it
-- dirties to the write-ahead log whole, so each index a row is in costs a page per commit.

-- `mappings_open_by_rule (rule, state, replicated_at)` (0005) begins with `rule`: it serves
-- every lookup `mappings_by_rule (rule)` (0003) did.
DROP INDEX mappings_by_rule;

-- A rowid table with a composite primary key is two b-trees (the rows, and the key's automatic
-- index); keyed by its primary key, it is one.
CREATE TABLE incident_details_v10 (
    project_id     INTEGER NOT NULL,
    iid            INTEGER NOT NULL,
    severity       TEXT CHECK (severity IN ('UNKNOWN', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    start_event_id TEXT,
    start_at       TEXT,
    end_event_id   TEXT,
    end_at         TEXT,
    start_begun_at TEXT,
    end_begun_at   TEXT,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (project_id, iid),
    CHECK ((start_event_id IS NULL) = (start_at IS NULL)),
    CHECK ((end_event_id IS NULL) = (end_at IS NULL))
) STRICT, WITHOUT ROWID;
INSERT INTO incident_details_v10
    SELECT project_id, iid, severity, start_event_id, start_at, end_event_id, end_at,
           start_begun_at, end_begun_at, updated_at
    FROM incident_details;
DROP TABLE incident_details;
ALTER TABLE incident_details_v10 RENAME TO incident_details;
