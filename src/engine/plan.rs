//! The pure planning step: a Jira snapshot and the mapping we hold for its key → the one action
//! that brings GitLab in line. No I/O, so every case is a table test.
//!
//! The rules:
//! - no mapping → create (and close straight after, if Jira already resolved it);
//! - a mapping whose GitLab object a person deleted → skip, for ever;
//! - a snapshot older than the last one replicated → skip (a stale retry must not undo a newer
//!   state);
//! - otherwise apply the state difference (close or reopen), even for the very snapshot already
//!   recorded, so a run interrupted between a create and its close finishes the job; and rewrite
//!   the title and description if what they would show changed (an edit in Jira);
//! - a closed object whose issue was resolved again at another time is reopened and closed at
//!   the new time (`closed_at` is always the latest resolution; GitLab records it only on the
//!   transition). Alerts cannot be reopened, and rows that do not know the resolution they were
//!   closed for are left alone;
//! - no difference → touch (remember the newer `updated`, no GitLab request), or skip when the
//!   snapshot is the one already recorded.

use crate::domain::{IssueSnapshot, Mapping, RemoteState, Target};

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the GitLab object; close it straight after when `then_close`.
    Create { then_close: bool },
    /// Close the GitLab object at Jira's resolution time; then rewrite it when `edit`.
    Close { edit: bool },
    /// Reopen the GitLab object; then rewrite it when `edit`.
    Reopen { edit: bool },
    /// Reopen the GitLab object and close it again at Jira's latest resolution time; then
    /// rewrite it when `edit`.
    Reclose { edit: bool },
    /// Rewrite the title and description (the Jira summary or description changed).
    Update,
    /// Nothing to send; record the newer Jira `updated`.
    Touch,
    /// Nothing to do at all.
    Skip(SkipReason),
}

/// Why a snapshot needs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// This exact change was replicated already (a re-read from the lookback window).
    AlreadyReplicated,
    /// A newer change of the issue was replicated already.
    Stale,
    /// A person deleted the GitLab object: it is never written again.
    Gone,
}

impl Action {
    /// The verb shown by `--dry-run` and in logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create { then_close: false } => "create",
            Action::Create { then_close: true } => "create+close",
            Action::Close { edit: false } => "close",
            Action::Close { edit: true } => "close+update",
            Action::Reopen { edit: false } => "reopen",
            Action::Reopen { edit: true } => "reopen+update",
            Action::Reclose { edit: false } => "reclose",
            Action::Reclose { edit: true } => "reclose+update",
            Action::Update => "update",
            Action::Touch => "touch",
            Action::Skip(_) => "skip",
        }
    }

    /// Returns true if and only if the action sends something to GitLab.
    pub fn writes_gitlab(&self) -> bool {
        !matches!(self, Action::Touch | Action::Skip(_))
    }
}

/// Plans the action for one snapshot; `content` is the hash of what the GitLab object would
/// show ([`super::render::content_hash`]).
pub fn plan(snap: &IssueSnapshot, mapping: Option<&Mapping>, content: &str) -> Action {
    let Some(m) = mapping else {
        return Action::Create {
            then_close: snap.is_resolved(),
        };
    };
    if m.gone_at.is_some() {
        return Action::Skip(SkipReason::Gone);
    }
    if snap.updated < m.jira_updated {
        return Action::Skip(SkipReason::Stale);
    }
    // A row from before hashes were kept has none: it is recorded, never rewritten blindly.
    let edit = m.target != Target::Alert && m.content_hash.as_deref().is_some_and(|h| h != content);
    match (snap.is_resolved(), m.state) {
        (true, RemoteState::Opened) => Action::Close { edit },
        (false, RemoteState::Closed) => Action::Reopen { edit },
        (true, RemoteState::Closed)
            if m.target != Target::Alert
                && m.jira_resolved_at.is_some()
                && m.jira_resolved_at != snap.resolved_at =>
        {
            Action::Reclose { edit }
        }
        _ if edit => Action::Update,
        _ if snap.updated == m.jira_updated => Action::Skip(SkipReason::AlreadyReplicated),
        _ => Action::Touch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JiraKey;
    use chrono::{DateTime, Duration, Utc};
    use rstest::rstest;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::minutes(min)
    }

    fn snap(updated: i64, resolved: bool) -> IssueSnapshot {
        IssueSnapshot {
            id: None,
            key: JiraKey::parse("OPS-1").unwrap(),
            summary: "s".into(),
            description: None,
            created: t(0),
            updated: t(updated),
            resolved_at: resolved.then(|| t(updated)),
            status: String::new(),
            priority: None,
            labels: vec![],
            issue_type: None,
            fields: Default::default(),
            transitions: None,
        }
    }

    fn mapping(updated: i64, state: RemoteState) -> Mapping {
        Mapping {
            jira_id: None,
            project_id: None,
            rule: "r".into(),
            jira_key: JiraKey::parse("OPS-1").unwrap(),
            target: Target::Incident,
            project: "p".into(),
            iid: Some(1),
            web_url: None,
            state,
            jira_updated: t(updated),
            created_at: t(0),
            closed_at: None,
            content_hash: Some("h1".into()),
            moved_to: None,
            gone_at: None,
            jira_resolved_at: None,
            scope: crate::domain::IssueScope::InScope,
        }
    }

    fn gone(m: Mapping) -> Mapping {
        Mapping {
            gone_at: Some(t(3)),
            ..m
        }
    }

    /// Closed for a resolution at minute `r`, last replicated at minute `r`.
    fn resolved_at(r: i64) -> Mapping {
        Mapping {
            jira_resolved_at: Some(t(r)),
            closed_at: Some(t(r)),
            ..mapping(r, RemoteState::Closed)
        }
    }

    fn unhashed(m: Mapping) -> Mapping {
        Mapping {
            content_hash: None,
            ..m
        }
    }

    /// Each (snapshot, mapping, content) triple plans exactly one action.
    #[rstest]
    #[case::new_open(snap(1, false), None, "h1", Action::Create { then_close: false })]
    #[case::new_resolved(snap(1, true), None, "h1", Action::Create { then_close: true })]
    #[case::resolved_later(snap(5, true), Some(mapping(1, RemoteState::Opened)), "h1", Action::Close { edit: false })]
    #[case::reopened_later(snap(5, false), Some(mapping(1, RemoteState::Closed)), "h1", Action::Reopen { edit: false })]
    #[case::other_field_changed(
        snap(5, false),
        Some(mapping(1, RemoteState::Opened)),
        "h1",
        Action::Touch
    )]
    #[case::summary_edited(
        snap(5, false),
        Some(mapping(1, RemoteState::Opened)),
        "h2",
        Action::Update
    )]
    #[case::edited_and_resolved(snap(5, true), Some(mapping(1, RemoteState::Opened)), "h2", Action::Close { edit: true })]
    #[case::unhashed_row_is_touched(
        snap(5, false),
        Some(unhashed(mapping(1, RemoteState::Opened))),
        "h2",
        Action::Touch
    )]
    #[case::same_change_reread(
        snap(1, false),
        Some(mapping(1, RemoteState::Opened)),
        "h1",
        Action::Skip(SkipReason::AlreadyReplicated)
    )]
    #[case::stale_retry_never_reopens(
        snap(1, false),
        Some(mapping(5, RemoteState::Closed)),
        "h2",
        Action::Skip(SkipReason::Stale)
    )]
    #[case::create_done_close_pending(snap(1, true), Some(mapping(1, RemoteState::Opened)), "h1", Action::Close { edit: false })]
    #[case::gone_is_never_written(
        snap(5, true),
        Some(gone(mapping(1, RemoteState::Opened))),
        "h2",
        Action::Skip(SkipReason::Gone)
    )]
    #[case::resolved_again_later(snap(9, true), Some(resolved_at(5)), "h1", Action::Reclose { edit: false })]
    #[case::same_resolution_reread(
        snap(9, true),
        Some(resolved_at(9)),
        "h1",
        Action::Skip(SkipReason::AlreadyReplicated)
    )]
    #[case::legacy_closed_row(
        snap(9, true),
        Some(mapping(5, RemoteState::Closed)),
        "h1",
        Action::Touch
    )]
    #[case::update_interrupted(
        snap(1, false),
        Some(mapping(1, RemoteState::Opened)),
        "h2",
        Action::Update
    )]
    fn plans(
        #[case] s: IssueSnapshot,
        #[case] m: Option<Mapping>,
        #[case] content: &str,
        #[case] expected: Action,
    ) {
        assert_eq!(plan(&s, m.as_ref(), content), expected);
    }

    /// Alerts cannot be edited: a changed summary never plans an update for them.
    #[test]
    fn alerts_are_never_updated() {
        let m = Mapping {
            target: Target::Alert,
            ..mapping(1, RemoteState::Opened)
        };
        assert_eq!(plan(&snap(5, false), Some(&m), "h2"), Action::Touch);
    }
}
