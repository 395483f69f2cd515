-- 0007: what `repair` and `backfill` write to GitLab only for GitLab's analytics, so that a
-- re-run writes none of it twice and a crash in the middle leaves nothing half done.

-- `repair`: one incident per (project, day) reopened and closed again at its own closed_at, so
-- that GitLab's DORA recomputes the day (`ee/app/models/dora/watchers/issue_watcher.rb`). The row
-- is written as 'reopening' before the reopen is sent and set to 'done' once GitLab holds the
-- incident closed again; a 'reopening' row found later is a repair that was interrupted between
-- the two, and the next `repair` closes the incident at `closed_at` before anything else.
CREATE TABLE dora_repairs (
    project_id  INTEGER NOT NULL,
    -- The UTC day (YYYY-MM-DD) that GitLab recomputes.
    day         TEXT NOT NULL,
    rule        TEXT NOT NULL,
    jira_key    TEXT NOT NULL,
    iid         INTEGER NOT NULL,
    -- The closing time the incident is closed again at.
    closed_at   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('reopening', 'done')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (project_id, day)
) STRICT;

-- `backfill`: the one write without `updated_at` each imported issue gets (a label), which moves
-- its `updated_at` to now so that Premium's value-stream aggregation, which walks issues by an
-- `updated_at` cursor, picks the back-dated issue up.
CREATE TABLE vsa_marks (
    project_id INTEGER NOT NULL,
    iid        INTEGER NOT NULL,
    rule       TEXT NOT NULL,
    jira_key   TEXT NOT NULL,
    label      TEXT NOT NULL,
    marked_at  TEXT NOT NULL,
    PRIMARY KEY (project_id, iid)
) STRICT;
