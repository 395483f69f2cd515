-- 0003: identify a GitLab object by what cannot change — the Jira issue's id, the GitLab
-- project's numeric id and the target — instead of by (rule, Jira key).
--
-- Keys change when an issue moves to another Jira project; rules get renamed; two rules can
-- match the same issue into the same project; a GitLab project path can be renamed and then
-- taken by another project. None of these may create a second object or write into someone
-- else's project.
--
-- Rows written before this migration have no ids (NULL). They are still found by the project
-- as configured, the target and the key, and take their ids the next time they are written.

-- Configured project (path or id, as in gitlab_project) → the numeric id it resolved to. Writes
-- address the project by this id, so a rename or a reused path cannot redirect them; `check`
-- says when the configured path now resolves to another project.
CREATE TABLE projects (
    configured  TEXT NOT NULL PRIMARY KEY,
    project_id  INTEGER NOT NULL,
    -- path_with_namespace when it was resolved.
    path        TEXT NOT NULL,
    resolved_at TEXT NOT NULL
) STRICT;

CREATE TABLE mappings_v3 (
    id            INTEGER PRIMARY KEY,
    -- The rule that last wrote the row.
    rule          TEXT NOT NULL,
    -- The issue's key when last replicated.
    jira_key      TEXT NOT NULL,
    jira_id       TEXT,
    target        TEXT NOT NULL CHECK (target IN ('incident', 'issue', 'alert')),
    -- The project as configured (numeric id or group/project path), for people and for rows
    -- from before 0003.
    project       TEXT NOT NULL,
    project_id    INTEGER,
    iid           INTEGER,
    web_url       TEXT,
    state         TEXT NOT NULL CHECK (state IN ('opened', 'closed')),
    jira_updated  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    closed_at     TEXT,
    replicated_at TEXT NOT NULL,
    content_hash  TEXT
) STRICT;

INSERT INTO mappings_v3 (rule, jira_key, target, project, iid, web_url, state, jira_updated,
                         created_at, closed_at, replicated_at, content_hash)
    SELECT rule, jira_key, target, project, iid, web_url, state, jira_updated, created_at,
           closed_at, replicated_at, content_hash
    FROM mappings;
DROP TABLE mappings;
ALTER TABLE mappings_v3 RENAME TO mappings;

-- One object per (project, target, Jira issue).
CREATE UNIQUE INDEX mappings_identity ON mappings (project_id, target, jira_id)
    WHERE project_id IS NOT NULL AND jira_id IS NOT NULL;
-- Rows from before 0003, and `status`, find mappings by key and by rule.
CREATE INDEX mappings_by_key ON mappings (project, target, jira_key);
CREATE INDEX mappings_by_rule ON mappings (rule);
-- The highest iid the store knows in a project: where the look for lost objects starts.
CREATE INDEX mappings_by_iid ON mappings (project_id, iid);

-- A create intent belongs to the object it would make, not to the rule that started it.
CREATE TABLE intents_v3 (
    id              INTEGER PRIMARY KEY,
    rule            TEXT NOT NULL,
    jira_key        TEXT NOT NULL,
    jira_id         TEXT,
    target          TEXT,
    project_id      INTEGER,
    attempts        INTEGER NOT NULL CHECK (attempts >= 1),
    started_at      TEXT NOT NULL,
    last_attempt_at TEXT NOT NULL
) STRICT;
INSERT INTO intents_v3 (rule, jira_key, attempts, started_at, last_attempt_at)
    SELECT rule, jira_key, attempts, started_at, last_attempt_at FROM intents;
DROP TABLE intents;
ALTER TABLE intents_v3 RENAME TO intents;
CREATE UNIQUE INDEX intents_identity ON intents (project_id, target, jira_id)
    WHERE project_id IS NOT NULL AND jira_id IS NOT NULL;
CREATE UNIQUE INDEX intents_legacy ON intents (rule, jira_key)
    WHERE jira_id IS NULL;

-- A failure is settled by its issue's id too, so a key that changed meanwhile cannot leave it
-- behind.
ALTER TABLE failures ADD COLUMN jira_id TEXT;
