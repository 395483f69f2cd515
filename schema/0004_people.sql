-- 0004: what people do to the objects in GitLab, and a backoff for failing issues.
--
-- An issue a person deleted answers 404: its row records when that was found, and it is never
-- written again. An issue a person moved to another project lives on as a copy there: the row
-- keeps the original's project id and iid (its identity, and the project's iid high-water mark)
-- and records where the copy is, which every later write addresses.
ALTER TABLE mappings ADD COLUMN gone_at TEXT;
ALTER TABLE mappings ADD COLUMN moved_project_id INTEGER;
ALTER TABLE mappings ADD COLUMN moved_iid INTEGER;

-- A failing issue is retried a minute after it failed, then after twice as long each time, at
-- most six hours. NULL in rows from before this migration: due at once.
ALTER TABLE failures ADD COLUMN next_attempt_at TEXT;
-- When a person forgot the failure (`forget KEY`): it is no longer listed or retried, and the
-- row only keeps the same change, read again by a search's look-back, from being tried again.
-- A newer failure of the issue clears it; its replication deletes the row.
ALTER TABLE failures ADD COLUMN forgotten_at TEXT;
