-- 0001_init: the first schema of the jira-gitlab-sync store.
--
-- Append-only: once released, this file is never edited. A change to the schema is a new file,
-- 0002_*.sql, added to the end of the list in src/store/migrate.rs; `PRAGMA user_version` records
-- how many of those files a store has applied.
--
-- Conventions, relied on by the Rust side:
-- * Every timestamp is UTC text in one fixed format, `YYYY-MM-DDTHH:MM:SS.mmmZ` (always 24
--   characters), so comparing the text compares the times. The cursor's forward-only update below
--   depends on that.
-- * `rule` is the rule id from config.toml. Rules are not declared in a table of their own: a rule
--   exists in the store as soon as any row names it, and removing a rule from the config leaves
--   its rows behind for `status` to show.
-- * Tables are STRICT so that SQLite refuses a value of the wrong type instead of storing it.

-- Where each rule's next Jira search starts. Every Jira change with `updated` before `cursor` is
-- either replicated (a row in `mappings`) or recorded as failed (a row in `failures`). The cursor
-- only moves forward, and only in the same transaction that records what it covers, so a crash
-- can repeat work but never skip a change.
CREATE TABLE rule_state (
    rule       TEXT NOT NULL PRIMARY KEY,
    -- NULL until the first change is committed: the rule then starts from its configured `since`.
    cursor     TEXT,
    -- When the cursor last moved.
    updated_at TEXT NOT NULL
) STRICT;

-- The link from a Jira issue to the GitLab object replicated from it, with the last state written,
-- so the planner can tell create from close from reopen from nothing-to-do without asking GitLab.
CREATE TABLE mappings (
    rule          TEXT NOT NULL,
    jira_key      TEXT NOT NULL,
    target        TEXT NOT NULL CHECK (target IN ('incident', 'issue', 'alert')),
    -- The GitLab project as configured (numeric id or group/project path).
    project       TEXT NOT NULL,
    -- The project-scoped issue number; NULL for alerts, whose endpoint answers no body.
    iid           INTEGER,
    web_url       TEXT,
    state         TEXT NOT NULL CHECK (state IN ('opened', 'closed')),
    -- Jira's `updated` of the last snapshot replicated: a snapshot no newer needs no write.
    jira_updated  TEXT NOT NULL,
    -- GitLab's `created_at` / `closed_at` as GitLab reported them.
    created_at    TEXT NOT NULL,
    closed_at     TEXT,
    -- When this row was last written by us (not a GitLab or Jira time).
    replicated_at TEXT NOT NULL,
    PRIMARY KEY (rule, jira_key)
) STRICT;

-- Creates that were started and may or may not have reached GitLab. A row is written before the
-- GitLab create is sent and deleted in the transaction that records the mapping. A row still here
-- on the next attempt means an earlier attempt was interrupted: the engine then looks in GitLab for
-- the object before creating it again, so an issue is never duplicated.
CREATE TABLE intents (
    rule            TEXT NOT NULL,
    jira_key        TEXT NOT NULL,
    -- Attempts recorded so far, this one included.
    attempts        INTEGER NOT NULL CHECK (attempts >= 1),
    started_at      TEXT NOT NULL,
    last_attempt_at TEXT NOT NULL,
    PRIMARY KEY (rule, jira_key)
) STRICT;

-- Jira issues whose replication failed. The snapshot is kept so the next cycle retries the issue
-- without asking Jira again: the cursor has already moved past it. Deleted when the issue is
-- finally replicated.
CREATE TABLE failures (
    rule            TEXT NOT NULL,
    jira_key        TEXT NOT NULL,
    -- The IssueSnapshot as JSON (serde), as of the latest failed attempt.
    snapshot        TEXT NOT NULL,
    attempts        INTEGER NOT NULL CHECK (attempts >= 1),
    last_error      TEXT NOT NULL,
    first_failed_at TEXT NOT NULL,
    last_failed_at  TEXT NOT NULL,
    PRIMARY KEY (rule, jira_key)
) STRICT;

-- The run log: one row per run of one rule, opened when the run starts and closed when it ends.
-- A row with no `finished_at` is a run in progress, or one the process did not live to finish.
-- Kept for `status` and for people reading the file; nothing in the sync depends on it.
CREATE TABLE runs (
    -- AUTOINCREMENT so that an id is never reused, even after the newest rows are deleted:
    -- "the newest run" is "the highest id".
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('service', 'once', 'backfill')),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT CHECK (outcome IN ('ok', 'partial', 'failed', 'cancelled')),
    seen        INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL DEFAULT 0,
    closed      INTEGER NOT NULL DEFAULT 0,
    reopened    INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    -- Why the run stopped early, if it did.
    error       TEXT
) STRICT;

-- `status` asks for each rule's newest run.
CREATE INDEX runs_by_rule ON runs (rule, id);

-- Small facts about the store itself (for example which Jira and GitLab it was first used with),
-- so a later version can keep them without a migration.
CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
