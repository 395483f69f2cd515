-- 0005: follow the Jira side exactly (issue 9).
--
-- Numbered 0005 because another branch adds 0004 at the same time; in a tree without 0004 this
-- file is applied fifth in the list of src/store/migrate.rs all the same (user_version counts
-- files, not names).

-- The Jira resolution time last replicated as the GitLab object's closing (NULL while open, and
-- for rows written before this migration). A resolution at another time reopens and closes the
-- object again at that time: GitLab only records `closed_at` on the transition, and what GitLab
-- stored (`closed_at`) may be the sync's clock where the token cannot backdate.
ALTER TABLE mappings ADD COLUMN jira_resolved_at TEXT;
