-- 0002: remember what was written as the GitLab title and description, so an edit to the Jira
-- summary or description is carried over once, and an unchanged issue costs no GitLab request.
--
-- A hash (FNV-1a 64, hex) of the rendered title and description as last sent. NULL for rows
-- written before this migration: the next change to such an issue records the hash without
-- rewriting the GitLab object, so an upgrade never triggers a wave of updates.
ALTER TABLE mappings ADD COLUMN content_hash TEXT;

-- How many GitLab objects a run rewrote after their Jira summary or description changed.
ALTER TABLE runs ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
