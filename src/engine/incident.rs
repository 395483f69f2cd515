//! Incident details: after an incident rule's snapshot is applied, GitLab's incident severity is
//! brought to the rule's priority mapping, and (with `timeline_events`) the timeline events
//! "Start time" (Jira's created moment) and "End time" (the moment the incident is closed at)
//! are written, each once.
//!
//! What was written is kept in the store per GitLab object ([`IncidentDetails`]), so nothing is
//! sent twice: the severity only when the mapping gives another one (a priority edit in Jira),
//! an event only when it is missing or its time changed. An event's time that changes (an
//! incident reopened and closed again at another time) moves the existing event
//! (`timelineEventUpdate`): the timeline keeps one "End time", the latest restore, as GitLab's
//! `closed_at` does. While the incident is open again, its earlier "End time" stays until the
//! next close moves it.
//!
//! Exactly once, as for creates (`execute`): before an event create is sent its begin is
//! recorded; an attempt after one that may have been applied (a lost answer, a crash before the
//! commit, an object adopted from an earlier run) looks through the incident's events, the sync
//! user's own, for one with the tag before creating. The snapshot's cursor is committed with
//! the details, so a crash between the incident's write and its details replays the snapshot.
//!
//! Where the begin is recorded decides what it costs ([`Known`]):
//! - **An incident created in this pass**: the begins of the events it wants are committed
//!   (not synced) before its mapping, in the commit after the create's answer. A power cut
//!   leaves a prefix of the commits (the store's module doc): one holding the mapping holds the
//!   begins too, so the next pass looks; one without the mapping holds the create's durable
//!   intent, and an attempt after an intent adopts the object and looks. Either way no event
//!   is sent twice, and no fsync is spent on it. An adopted incident's begins are committed
//!   the same way, since its mapping's commit drops the intent that made the pass look.
//! - **GitLab's default severity**: a new incident's severity is `UNKNOWN` until one is set
//!   (`Issue#severity` answers `IssuableSeverity::DEFAULT`: `app/models/issue.rb`), so one
//!   created in this pass (not adopted) that wants `UNKNOWN` is not sent it.
//! - **An incident the store knew** (a close in a later pass): the begin is committed durably
//!   before the create is sent, as a create intent is, since a lost begin there would leave
//!   nothing to tell the next pass to look.
//!
//! A GraphQL API closed to the token, or a GitLab too old for the queries
//! ([`PortError::is_refused`]), is warned about once per rule, and the rule goes on without
//! details for the rest of the process.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::config::RuleConfig;
use crate::domain::{
    Commit, IncidentDetails, IncidentSeverity, IssueSnapshot, Mapping, NewObject, NewTimelineEvent,
    Target, TimelineEvent, TimelineMark, TimelineTag,
};

use super::execute::{Ctx, Outcome, closing_time};
use super::ports::{GitLabSink, JiraSource, PortError, SyncStore};
use super::{EngineError, SyncEngine, error_chain};

/// What an incident's details should be after a snapshot is applied.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Wanted {
    pub(super) severity: IncidentSeverity,
    /// The "Start time" event's time and note, if the rule writes timeline events.
    pub(super) start: Option<(DateTime<Utc>, String)>,
    /// The "End time" event's time and note, if the rule writes timeline events and the
    /// snapshot closes the incident.
    pub(super) end: Option<(DateTime<Utc>, String)>,
}

impl Wanted {
    /// What `rule` wants of the incident for `snap` (created at `created_at`, the time the
    /// incident was created with); `None` for rules that are not incident rules.
    pub(super) fn of(
        rule: &RuleConfig,
        snap: &IssueSnapshot,
        created_at: DateTime<Utc>,
        browse_url: &str,
    ) -> Option<Wanted> {
        if rule.destination.target != Target::Incident {
            return None;
        }
        let events = rule.timeline_events;
        let key = &snap.key;
        Some(Wanted {
            severity: rule.severity_of(snap.priority.as_deref()).incident(),
            start: events.then(|| {
                (
                    created_at,
                    note(
                        &format!("Incident started: {key} was created in Jira."),
                        browse_url,
                    ),
                )
            }),
            end: restored_at(snap).filter(|_| events).map(|at| {
                (
                    at,
                    note(&format!("Service restored: {key} was closed."), browse_url),
                )
            }),
        })
    }

    /// Returns true if and only if `stored` lacks something this wants.
    pub(super) fn differs(&self, stored: &IncidentDetails) -> bool {
        stored.severity != Some(self.severity)
            || self.event(TimelineTag::Start).is_some_and(|(at, _)| {
                stored
                    .mark(TimelineTag::Start)
                    .is_none_or(|m| !same_second(m.occurred_at, at))
            })
            || self.event(TimelineTag::End).is_some_and(|(at, _)| {
                stored
                    .mark(TimelineTag::End)
                    .is_none_or(|m| !same_second(m.occurred_at, at))
            })
    }

    /// Returns true if and only if a new incident already is what this wants: GitLab's default
    /// severity, and no timeline event.
    pub(super) fn is_default(&self) -> bool {
        self.severity == IncidentSeverity::GITLAB_DEFAULT
            && self.start.is_none()
            && self.end.is_none()
    }

    /// The tags of the events this wants.
    pub(super) fn tags(&self) -> Vec<TimelineTag> {
        TimelineTag::ALL
            .iter()
            .copied()
            .filter(|t| self.event(*t).is_some())
            .collect()
    }

    fn event(&self, tag: TimelineTag) -> Option<(DateTime<Utc>, &str)> {
        let e = match tag {
            TimelineTag::Start => self.start.as_ref(),
            TimelineTag::End => self.end.as_ref(),
        };
        e.map(|(at, note)| (*at, note.as_str()))
    }
}

/// The moment service counts as restored for `snap`, while Jira has it resolved: the time the
/// executor closes the incident at ([`closing_time`]).
fn restored_at(snap: &IssueSnapshot) -> Option<DateTime<Utc>> {
    snap.is_resolved().then(|| closing_time(snap))
}

/// A timeline note: `text` and the browse link, cut to what GitLab takes.
fn note(text: &str, browse_url: &str) -> String {
    format!("{text} {browse_url}")
        .chars()
        .take(NewTimelineEvent::MAX_NOTE_CHARS)
        .collect()
}

/// GitLab answers timeline times in whole seconds (`Types::TimeType#coerce_result` writes
/// `iso8601`), and keeps what it was sent.
fn same_second(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    a.timestamp() == b.timestamp()
}

/// What the sync knows of an incident's details beyond the store's record.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Known {
    /// The store's record is all there is.
    Stored,
    /// An earlier run may have written what the store does not know (an object adopted after a
    /// lost answer or a crash): events are looked for before one is created.
    MayHoldMore,
    /// Created in this pass, with GitLab's defaults and no event; `begun` are the tags whose
    /// begins were committed before its mapping (module doc).
    Created { begun: Vec<TimelineTag> },
}

impl Known {
    /// Returns true if and only if `tag`'s begin was recorded in this pass, before any event
    /// could exist.
    fn begun_here(&self, tag: TimelineTag) -> bool {
        matches!(self, Known::Created { begun } if begun.contains(&tag))
    }
}

/// How writing the details ended.
enum Stop<E> {
    /// GraphQL is closed to the token, or does not know the query: warn, go on without.
    Refused(E),
    /// The incident is gone (a person deleted it): recorded as gone, never written again.
    Gone,
    /// This issue's failure (recorded, retried).
    Failed(E),
}

impl<E: PortError> Stop<E> {
    fn of(e: E) -> Self {
        if e.is_refused() {
            Stop::Refused(e)
        } else if e.is_gone() {
            Stop::Gone
        } else {
            Stop::Failed(e)
        }
    }
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Returns true if and only if `rule` writes incident details in this process (an incident
    /// rule whose GraphQL requests were not refused).
    pub(super) fn writes_details(&self, rule: &RuleConfig) -> bool {
        rule.destination.target == Target::Incident
            && !self
                .graphql_refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&rule.name)
    }

    /// The details `snap` still needs written (what is wanted, and what the store holds), if
    /// `rule` writes details and they differ; `obj` is what the snapshot renders to and
    /// `mapping` the issue's mapping before it is applied (`None` before its create).
    ///
    /// # Errors
    /// The store failed.
    pub(super) async fn details_due(
        &self,
        rule: &RuleConfig,
        snap: &IssueSnapshot,
        obj: &NewObject,
        browse_url: &str,
        mapping: Option<&Mapping>,
    ) -> Result<Option<(Wanted, IncidentDetails)>, EngineError> {
        if !self.writes_details(rule) {
            return Ok(None);
        }
        let Some(wanted) = Wanted::of(rule, snap, obj.created_at, browse_url) else {
            return Ok(None);
        };
        let stored = match mapping {
            Some(m) if m.gone_at.is_some() => return Ok(None),
            Some(m) => self.stored_details(rule, m).await?,
            None => IncidentDetails::default(),
        };
        Ok(wanted.differs(&stored).then_some((wanted, stored)))
    }

    /// For an incident created or adopted in this pass (`m`, its mapping, not committed yet):
    /// commits the begins of the events `wanted` asks for, before the mapping (module doc), and
    /// says what the incident holds (for an adopted one, [`Known::MayHoldMore`] wins).
    ///
    /// # Errors
    /// The store failed.
    pub(super) async fn begin_details(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        m: &Mapping,
        wanted: &Wanted,
    ) -> Result<Known, EngineError> {
        let begun = wanted.tags();
        if let (Some(project_id), Some(iid), false) = (m.project_id, m.iid, begun.is_empty()) {
            let details = IncidentDetails {
                begun: begun.clone(),
                ..IncidentDetails::default()
            };
            self.commit(
                cx,
                out,
                Commit::Details {
                    project_id,
                    iid,
                    details,
                },
                None,
            )
            .await?;
        }
        Ok(Known::Created { begun })
    }

    /// What the store holds of `m`'s details (nothing for a mapping without an iid).
    pub(super) async fn stored_details(
        &self,
        rule: &RuleConfig,
        m: &Mapping,
    ) -> Result<IncidentDetails, EngineError> {
        match (m.project_id, m.iid) {
            (Some(project_id), Some(iid)) => self
                .store
                .incident_details(project_id, iid)
                .await
                .map_err(|e| EngineError::store(rule, e)),
            _ => Ok(IncidentDetails::default()),
        }
    }

    /// Brings `m`'s incident details to `wanted` from `stored`, then commits what was written
    /// with `cursor` (or only moves the cursor). `known` says what GitLab holds beyond `stored`.
    ///
    /// # Errors
    /// The run must stop (the store failed, or GitLab refused something no later request can
    /// get past); a failure of this issue alone is recorded in `out`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_details(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: &Mapping,
        wanted: &Wanted,
        mut stored: IncidentDetails,
        known: Known,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let (Some(project_id), Some(iid)) = (m.project_id, m.iid) else {
            return self.cursor_only(cx, cursor).await;
        };
        if let Known::Created { begun } = &known {
            // What the store holds since the commit before the mapping.
            begun.iter().for_each(|tag| stored.begin(*tag));
        }
        let mut details = stored.clone();
        match known {
            // GitLab's default severity (module doc): an UNKNOWN it wants is not sent.
            Known::Created { .. } => {
                details
                    .severity
                    .get_or_insert(IncidentSeverity::GITLAB_DEFAULT);
            }
            // Each event it wants may be there already: begun until it is found or made, so
            // that a pass that stops early leaves the rest to be looked for.
            Known::MayHoldMore => {
                for tag in wanted.tags() {
                    if details.mark(tag).is_none() {
                        details.begin(tag);
                    }
                }
            }
            Known::Stored => {}
        }
        let stop = self
            .send_details(cx, m, wanted, &mut details, &known)
            .await?;
        let changed = details != stored;
        match stop {
            None => {}
            Some(Stop::Gone) => {
                // A person deleted the incident: recorded as gone, as a write to it would.
                if changed {
                    self.commit_details(cx, project_id, iid, details, None)
                        .await?;
                }
                return self
                    .gone(
                        cx,
                        out,
                        snap,
                        m.clone(),
                        "a person deleted it in GitLab",
                        cursor,
                    )
                    .await;
            }
            Some(Stop::Refused(e)) => self.graphql_refused(cx.rule, &e),
            Some(Stop::Failed(e)) => {
                if changed {
                    self.commit_details(cx, project_id, iid, details, None)
                        .await?;
                }
                return self.fail_details(cx, out, snap, e, cursor).await;
            }
        }
        if changed {
            self.commit_details(cx, project_id, iid, details, cursor)
                .await
        } else {
            self.cursor_only(cx, cursor).await
        }
    }

    /// Sends what `details` lacks of `wanted`, recording each write in `details`; the first
    /// error ends it.
    async fn send_details(
        &self,
        cx: &Ctx<'_>,
        m: &Mapping,
        wanted: &Wanted,
        details: &mut IncidentDetails,
        known: &Known,
    ) -> Result<Option<Stop<G::Error>>, EngineError> {
        let dest = &cx.place.dest;
        if details.severity != Some(wanted.severity) {
            match self.gitlab.set_severity(dest, m, wanted.severity).await {
                Ok(()) => {
                    info!(severity = %wanted.severity, "incident severity set");
                    details.severity = Some(wanted.severity);
                }
                Err(e) => return Ok(Some(Stop::of(e))),
            }
        }
        let mut seen = None;
        for tag in TimelineTag::ALL.iter().copied() {
            let Some((at, note)) = wanted.event(tag) else {
                continue;
            };
            let event = NewTimelineEvent {
                tag,
                occurred_at: at,
                note: note.to_owned(),
            };
            if let Err(e) = self
                .send_event(cx, m, &event, details, known, &mut seen)
                .await?
            {
                return Ok(Some(Stop::of(e)));
            }
        }
        Ok(None)
    }

    /// Brings the `event.tag` event to `event`: nothing if the store knows it at that time, a
    /// move if at another, else a create (after a look, where an earlier attempt may have made
    /// it). The outer error stops the run; the inner one ends the details.
    async fn send_event(
        &self,
        cx: &Ctx<'_>,
        m: &Mapping,
        event: &NewTimelineEvent,
        details: &mut IncidentDetails,
        known: &Known,
        seen: &mut Option<Vec<TimelineEvent>>,
    ) -> Result<Result<(), G::Error>, EngineError> {
        let dest = &cx.place.dest;
        let tag = event.tag;
        let mut existing = details.mark(tag).cloned();
        let here = known.begun_here(tag);
        let look = *known == Known::MayHoldMore || (details.begun.contains(&tag) && !here);
        if existing.is_none() && look {
            // One read per pass serves every tag: the events this pass made have other tags.
            let events = match seen.take() {
                Some(events) => Ok(events),
                None => self.gitlab.timeline_events(dest, m).await,
            };
            match events {
                Ok(events) => {
                    let found = events.iter().find(|e| e.has_tag(tag)).cloned();
                    *seen = Some(events);
                    if let Some(found) = found {
                        info!(tag = %tag, id = %found.id, "found the timeline event an earlier attempt made; not creating it again");
                        existing = Some(TimelineMark {
                            id: found.id,
                            occurred_at: found.occurred_at,
                        });
                        if let Some(mark) = &existing {
                            details.set_mark(tag, mark.clone());
                        }
                    }
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        if let Some(mark) = existing {
            if same_second(mark.occurred_at, event.occurred_at) {
                return Ok(Ok(()));
            }
            match self
                .gitlab
                .update_timeline_event(dest, m, &mark.id, event)
                .await
            {
                Ok(moved) => {
                    info!(tag = %tag, from = %mark.occurred_at, to = %event.occurred_at, "timeline event moved");
                    details.set_mark(
                        tag,
                        TimelineMark {
                            id: moved.id,
                            occurred_at: event.occurred_at,
                        },
                    );
                    return Ok(Ok(()));
                }
                // A person deleted the event: write it again.
                Err(e) if e.is_gone() => {
                    info!(tag = %tag, "the timeline event was deleted in GitLab; adding it again");
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        let (Some(project_id), Some(iid)) = (m.project_id, m.iid) else {
            return Ok(Ok(()));
        };
        details.begin(tag);
        if !here {
            // Whole: the events a look found, which the store may not hold yet, go with it, so
            // a power cut after this create never leaves one of them unknown and unlooked-for.
            self.open_log(cx.rule, cx.log).await?;
            self.store
                .begin_timeline_event(&cx.rule.name, project_id, iid, details.clone())
                .await
                .map_err(|e| EngineError::store(cx.rule, e))?;
        }
        match self.gitlab.create_timeline_event(dest, m, event).await {
            Ok(made) => {
                info!(tag = %tag, at = %event.occurred_at, "timeline event added");
                details.set_mark(
                    tag,
                    TimelineMark {
                        id: made.id,
                        occurred_at: event.occurred_at,
                    },
                );
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn commit_details(
        &self,
        cx: &Ctx<'_>,
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        self.open_log(cx.rule, cx.log).await?;
        self.store
            .commit(
                &cx.rule.name,
                Commit::Details {
                    project_id,
                    iid,
                    details,
                },
                cursor,
            )
            .await
            .map_err(|e| EngineError::store(cx.rule, e))
    }

    /// Moves the rule's cursor to `cursor`, which the snapshot's last commit did not carry
    /// because its details were still to be written.
    pub(super) async fn cursor_only(
        &self,
        cx: &Ctx<'_>,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let Some(to) = cursor else {
            return Ok(());
        };
        self.store
            .advance_cursor(&cx.rule.name, to)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))
    }

    /// The details failed for this issue alone (or in a way that stops the run): recorded like
    /// any failure of the issue, so a retry writes what is missing.
    async fn fail_details(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        e: G::Error,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        self.fail(cx, out, snap, e, cursor).await
    }

    /// GraphQL refused `rule`'s details: warned once, and the rule goes on without them.
    fn graphql_refused(&self, rule: &RuleConfig, e: &G::Error) {
        let first = self
            .graphql_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(rule.name.clone());
        if first {
            warn!(
                rule = %rule.name,
                cause = %error_chain(e),
                "GitLab's GraphQL API refused the incident details (severity, timeline events); \
                 this rule goes on without them until the service restarts"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JiraKey, Severity};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + s, 0).expect("a valid time")
    }

    fn snap(priority: Option<&str>, resolved: Option<i64>) -> IssueSnapshot {
        IssueSnapshot {
            id: None,
            key: JiraKey::parse("OPS-1").expect("a key"),
            summary: "s".into(),
            description: None,
            created: t(0),
            updated: t(100),
            resolved_at: resolved.map(t),
            status: String::new(),
            priority: priority.map(str::to_owned),
            labels: vec![],
            issue_type: None,
            fields: Default::default(),
            transitions: None,
        }
    }

    /// `info` becomes LOW (GitLab has no info), and an unmapped priority UNKNOWN.
    #[test]
    fn severities_follow_the_mapping() {
        assert_eq!(Severity::Info.incident(), IncidentSeverity::Low);
        assert_eq!(Severity::Unknown.incident(), IncidentSeverity::Unknown);
        assert_eq!(Severity::Critical.incident(), IncidentSeverity::Critical);
    }

    /// Nothing differs once the store holds the severity and both events at their seconds; a
    /// new resolution time, or a new severity, differs.
    #[test]
    fn differs_compares_to_the_second() {
        let w = Wanted {
            severity: IncidentSeverity::High,
            start: Some((t(0), "n".into())),
            end: Some((t(50), "n".into())),
        };
        let mark = |s| TimelineMark {
            id: "x".into(),
            occurred_at: t(s),
        };
        let stored = IncidentDetails {
            severity: Some(IncidentSeverity::High),
            start: Some(mark(0)),
            end: Some(mark(50)),
            begun: vec![],
        };
        assert!(!w.differs(&stored));
        let later = Wanted {
            end: Some((t(60), "n".into())),
            ..w.clone()
        };
        assert!(later.differs(&stored));
        let other = Wanted {
            severity: IncidentSeverity::Low,
            ..w
        };
        assert!(other.differs(&stored));
    }

    /// A note never exceeds GitLab's 280 characters, however long the link.
    #[test]
    fn notes_fit() {
        let long = format!("https://jira.example/browse/{}", "X".repeat(400));
        assert_eq!(
            note("Incident started.", &long).chars().count(),
            NewTimelineEvent::MAX_NOTE_CHARS
        );
        let rule = RuleConfig {
            name: "r".into(),
            jql: "x".into(),
            destination: crate::config::Destination {
                target: Target::Incident,
                project: "p".into(),
                project_id: None,
                alert: None,
            },
            labels: vec![],
            since: None,
            cron: "0 * * * * *".into(),
            title: "{key}".into(),
            severity_label: None,
            severity: [("lowest".to_owned(), Severity::Info)]
                .into_iter()
                .collect(),
            on_leave: crate::config::OnLeave::Label,
            on_delete: crate::config::OnDelete::Close,
            history: Default::default(),
            timeline_events: true,
        };
        let w = Wanted::of(
            &rule,
            &snap(Some("Lowest"), Some(50)),
            t(0),
            "https://jira.example/browse/OPS-1",
        )
        .expect("an incident rule");
        assert_eq!(w.severity, IncidentSeverity::Low);
        assert_eq!(w.end.map(|(at, _)| at), Some(t(50)));
    }
}
