-- 0009: remote links on Jira issues pointing at the GitLab objects replicated from them
-- (`[jira] link_back`).
--
-- One row per link, keyed by its global id (`gitlab:<host>:<project id>:<iid>`), which is what
-- Jira creates or updates a remote link by. `wanted` is the link the object should have, written
-- before the commit of the mapping it comes from (so a mapping never lacks its link, whatever a
-- crash interrupts); `sent` is the link Jira last accepted. A row whose `sent` differs from
-- `wanted` is pending, and is sent at the end of a run once `next_attempt_at` has passed: never
-- in the way of a GitLab write or the cursor. Both are the link as JSON (the domain's
-- `RemoteLink`), compared as text.
CREATE TABLE remote_links (
    global_id       TEXT NOT NULL PRIMARY KEY,
    -- The rule that last wanted it: its runs send it.
    rule            TEXT NOT NULL,
    jira_key        TEXT NOT NULL,
    wanted          TEXT NOT NULL,
    -- NULL until Jira first accepted it.
    sent            TEXT,
    -- Failed attempts at the wanted link, reset when another link is wanted.
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT,
    -- NULL: due at once (while pending).
    next_attempt_at TEXT,
    -- Jira answered that the issue is not there (deleted, or hidden from the account): not
    -- tried again until another link is wanted.
    abandoned_at    TEXT,
    updated_at      TEXT NOT NULL
) STRICT;

-- A run asks for its rule's pending links; most rows are not pending.
CREATE INDEX remote_links_pending ON remote_links (rule, next_attempt_at)
    WHERE sent IS NOT wanted AND abandoned_at IS NULL;
