-- 0006: Jira's workflow as GitLab stage labels (issue 12).
--
-- Each stage step replayed to a GitLab issue: a label added and/or removed at a Jira transition's
-- time, keyed by the object's identity (its project id and iid, as in `mappings`; a moved issue
-- keeps them). 'pending' is written before the GitLab write is sent and 'done' once GitLab
-- answered, so a step whose answer was lost (or whose process died) is looked up in GitLab's
-- label events before it is sent again. '' stands for "no label" (part of the key).
CREATE TABLE stage_steps (
    project_id   INTEGER NOT NULL,
    iid          INTEGER NOT NULL,
    at           TEXT    NOT NULL,
    add_label    TEXT    NOT NULL DEFAULT '',
    remove_label TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    PRIMARY KEY (project_id, iid, at, add_label, remove_label)
) WITHOUT ROWID;

-- The Jira `updated` of the latest change whose status history was fully applied to the object
-- (its stage steps sent, its `closed_from = "status:…"` state set): a snapshot no newer needs no
-- changelog read.
CREATE TABLE history_marks (
    project_id   INTEGER NOT NULL,
    iid          INTEGER NOT NULL,
    jira_updated TEXT    NOT NULL,
    PRIMARY KEY (project_id, iid)
) WITHOUT ROWID;
