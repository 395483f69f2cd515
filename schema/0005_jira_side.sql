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

-- Where the issue stands on the Jira side, as the reconciliation last found it: NULL (its rule's
-- search returns it), 'out_of_scope' (it no longer matches the rule's JQL, or moved out of it;
-- still followed by id until resolved) or 'deleted' (Jira no longer returns it by id). `status`
-- lists the last two.
ALTER TABLE mappings ADD COLUMN scope TEXT CHECK (scope IN ('out_of_scope', 'deleted'));
-- The open mappings a reconciliation re-reads, per rule.
CREATE INDEX mappings_open_by_rule ON mappings (rule, state, replicated_at);
