//! The pure planning step: a Jira snapshot and the mapping we hold for its key → the one action
//! that brings GitLab in line. No I/O, so every case is a table test.
//!
//! The rules:
//! - no mapping → create (and close straight after, if Jira already resolved it);
//! - a snapshot older than the last one replicated → skip (a stale retry must not undo a newer
//!   state);
//! - otherwise apply the state difference (close or reopen), even for the very snapshot already
//!   recorded, so a run interrupted between a create and its close finishes the job;
//! - no difference → touch (remember the newer `updated`, no GitLab request), or skip when the
//!   snapshot is the one already recorded.

use crate::domain::{IssueSnapshot, Mapping, RemoteState};

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create the GitLab object; close it straight after when `then_close`.
    Create { then_close: bool },
    /// Close the GitLab object at Jira's resolution time.
    Close,
    /// Reopen the GitLab object.
    Reopen,
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
}

impl Action {
    /// The verb shown by `--dry-run` and in logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create { then_close: false } => "create",
            Action::Create { then_close: true } => "create+close",
            Action::Close => "close",
            Action::Reopen => "reopen",
            Action::Touch => "touch",
            Action::Skip(_) => "skip",
        }
    }

    /// Returns true if and only if the action sends something to GitLab.
    pub fn writes_gitlab(&self) -> bool {
        matches!(self, Action::Create { .. } | Action::Close | Action::Reopen)
    }
}

/// Plans the action for one snapshot.
pub fn plan(snap: &IssueSnapshot, mapping: Option<&Mapping>) -> Action {
    let Some(m) = mapping else {
        return Action::Create {
            then_close: snap.is_resolved(),
        };
    };
    if snap.updated < m.jira_updated {
        return Action::Skip(SkipReason::Stale);
    }
    match (snap.is_resolved(), m.state) {
        (true, RemoteState::Opened) => Action::Close,
        (false, RemoteState::Closed) => Action::Reopen,
        _ if snap.updated == m.jira_updated => Action::Skip(SkipReason::AlreadyReplicated),
        _ => Action::Touch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JiraKey, Target};
    use chrono::{DateTime, Duration, Utc};
    use rstest::rstest;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::minutes(min)
    }

    fn snap(updated: i64, resolved: bool) -> IssueSnapshot {
        IssueSnapshot {
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
        }
    }

    fn mapping(updated: i64, state: RemoteState) -> Mapping {
        Mapping {
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
        }
    }

    /// Each (snapshot, mapping) pair plans exactly one action.
    #[rstest]
    #[case::new_open(snap(1, false), None, Action::Create { then_close: false })]
    #[case::new_resolved(snap(1, true), None, Action::Create { then_close: true })]
    #[case::resolved_later(snap(5, true), Some(mapping(1, RemoteState::Opened)), Action::Close)]
    #[case::reopened_later(snap(5, false), Some(mapping(1, RemoteState::Closed)), Action::Reopen)]
    #[case::edited_still_open(snap(5, false), Some(mapping(1, RemoteState::Opened)), Action::Touch)]
    #[case::same_change_reread(
        snap(1, false),
        Some(mapping(1, RemoteState::Opened)),
        Action::Skip(SkipReason::AlreadyReplicated)
    )]
    #[case::stale_retry_never_reopens(
        snap(1, false),
        Some(mapping(5, RemoteState::Closed)),
        Action::Skip(SkipReason::Stale)
    )]
    #[case::create_done_close_pending(
        snap(1, true),
        Some(mapping(1, RemoteState::Opened)),
        Action::Close
    )]
    fn plans(#[case] s: IssueSnapshot, #[case] m: Option<Mapping>, #[case] expected: Action) {
        assert_eq!(plan(&s, m.as_ref()), expected);
    }
}
