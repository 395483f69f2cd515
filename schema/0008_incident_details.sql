-- 0008: incident details (issue 12): the severity set over GitLab's GraphQL API and the "Start
-- time" / "End time" timeline events, per GitLab incident.
--
-- Numbered 0008 because other branches add 0006 and 0007 at the same time; user_version counts
-- the files in src/store/migrate.rs's list, not their names.

-- One row per GitLab incident the sync wrote details of, by the object's identity (the project
-- id and iid it was created with, also after a person moved it).
CREATE TABLE incident_details (
    project_id     INTEGER NOT NULL,
    iid            INTEGER NOT NULL,
    -- The severity last set (GraphQL IssuableSeverity), NULL before the first.
    severity       TEXT CHECK (severity IN ('UNKNOWN', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    -- The "Start time" event: GitLab's global id and the time it was written with.
    start_event_id TEXT,
    start_at       TEXT,
    -- The "End time" event, likewise.
    end_event_id   TEXT,
    end_at         TEXT,
    -- When a create of the event was begun and not yet recorded as done (an earlier attempt may
    -- have made it: the incident's events are looked through before it is sent again).
    start_begun_at TEXT,
    end_begun_at   TEXT,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (project_id, iid),
    CHECK ((start_event_id IS NULL) = (start_at IS NULL)),
    CHECK ((end_event_id IS NULL) = (end_at IS NULL))
) STRICT;
