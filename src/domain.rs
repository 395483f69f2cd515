//! The vocabulary shared by every module: Jira snapshots, GitLab objects, mappings, runs.
//!
//! Nothing here performs I/O and nothing here imports from the rest of the crate: the adapters
//! (`jira`, `gitlab`, `store`) and the engine all depend on this module, never the reverse. The
//! interfaces the engine drives live with the engine (`engine::ports`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Defines a fieldless enum together with its one string table: the names used by serde (config
/// files, JSON output), the store's columns and the command line all come from here, so they
/// cannot drift apart. A variant may accept extra spellings on input (`| "alias"`); it is always
/// written with its first name.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text $(| $alias)* => Ok($name::$variant), )+
                    _ => Err($crate::domain::UnknownName {
                        got: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

/// A name that is not one of an enum's (see `string_enum!`); the message lists the valid ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {got:?}: expected one of {}", expected.join(", "))]
pub struct UnknownName {
    pub got: String,
    pub expected: &'static [&'static str],
}

/// A Jira issue key such as `OPS-123`.
///
/// Keys are compared and stored as Jira returns them (upper-case project key, a dash, a number).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JiraKey(String);

impl JiraKey {
    /// Wraps a key, checking its `PROJECT-NUMBER` shape.
    ///
    /// # Errors
    /// Returns the offending text if it is not `<letters/digits/_>-<digits>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid = s.rsplit_once('-').is_some_and(|(project, number)| {
            !project.is_empty()
                && project
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(s.to_owned())
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JiraKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Jira issue's id, such as `10042`. Unlike the key it never changes: an issue moved to
/// another project gets a new key and keeps its id, so the id is what a GitLab object is
/// replicated from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JiraId(String);

impl JiraId {
    /// Wraps an id, checking it is a non-empty run of digits (as Jira writes ids).
    ///
    /// # Errors
    /// Returns the offending text.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(s.to_owned())
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JiraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// What a rule replicates into.
    pub enum Target {
        /// A GitLab incident (`issue_type=incident`) through the Issues API: counts for DORA.
        Incident = "incident",
        /// A plain GitLab issue: counts for Value Stream Analytics.
        Issue = "issue",
        /// An alert posted to the project's HTTP alert integration.
        Alert = "alert",
    }
}

impl Target {
    /// The `issue_type` GitLab's Issues API takes for this target.
    pub fn issue_type(self) -> &'static str {
        match self {
            Target::Incident | Target::Alert => "incident",
            Target::Issue => "issue",
        }
    }
}

string_enum! {
    /// GitLab's incident severities; the names are the alert payload's `severity` values and the
    /// `{severity}` of label templates.
    pub enum Severity {
        Critical = "critical",
        High = "high",
        Medium = "medium",
        Low = "low",
        Info = "info",
        Unknown = "unknown",
    }
}

impl Severity {
    /// The incident severity GitLab gets for it: GitLab has no `info`, so it becomes `LOW`.
    pub fn incident(self) -> IncidentSeverity {
        match self {
            Severity::Critical => IncidentSeverity::Critical,
            Severity::High => IncidentSeverity::High,
            Severity::Medium => IncidentSeverity::Medium,
            Severity::Low | Severity::Info => IncidentSeverity::Low,
            Severity::Unknown => IncidentSeverity::Unknown,
        }
    }
}

string_enum! {
    /// An incident's severity as GitLab's GraphQL API names it: the `IssuableSeverity` enum
    /// (`app/graphql/types/issuable_severity_enum.rb`, the upper-cased keys of
    /// `IssuableSeverity.severities` in `app/models/issuable_severity.rb`).
    pub enum IncidentSeverity {
        Unknown = "UNKNOWN",
        Low = "LOW",
        Medium = "MEDIUM",
        High = "HIGH",
        Critical = "CRITICAL",
    }
}

impl IncidentSeverity {
    /// A new incident's severity until one is set: `Issue#severity` answers
    /// `IssuableSeverity::DEFAULT` without an `issuable_severity` row (`app/models/issue.rb`).
    pub const GITLAB_DEFAULT: IncidentSeverity = IncidentSeverity::Unknown;
}

string_enum! {
    /// The incident timeline event tags the sync writes: two of GitLab's predefined tags
    /// (`TimelineEventTag::PREDEFINED_TAGS`, `app/models/incident_management/timeline_event_tag.rb`),
    /// which GitLab creates in a project the first time they are used.
    pub enum TimelineTag {
        /// When the incident started: Jira's created moment.
        Start = "Start time",
        /// When service was restored: the time the incident is closed at.
        End = "End time",
    }
}

/// One timeline event of an incident, as GitLab holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    /// GitLab's global id (`gid://gitlab/IncidentManagement::TimelineEvent/<n>`).
    pub id: String,
    /// GitLab answers whole seconds (`Types::TimeType` writes `iso8601`).
    pub occurred_at: DateTime<Utc>,
    pub note: String,
    pub tags: Vec<String>,
}

impl TimelineEvent {
    /// Returns true if and only if the event carries `tag` (GitLab matches tag names without
    /// regard to case: `TimelineEventTag.by_names`).
    pub fn has_tag(&self, tag: TimelineTag) -> bool {
        self.tags
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tag.as_str()))
    }
}

/// A timeline event to write.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTimelineEvent {
    pub tag: TimelineTag,
    pub occurred_at: DateTime<Utc>,
    /// At most [`NewTimelineEvent::MAX_NOTE_CHARS`] characters.
    pub note: String,
}

impl NewTimelineEvent {
    /// GitLab refuses a longer note from the API (`validates :note, length: { maximum: 280 },
    /// on: :user_input` in `app/models/incident_management/timeline_event.rb`).
    pub const MAX_NOTE_CHARS: usize = 280;
}

/// A timeline event the sync wrote: GitLab's id and the time it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineMark {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
}

/// What the sync has written of an incident's details, as the store keeps it per GitLab object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IncidentDetails {
    /// The severity last set, if any was.
    pub severity: Option<IncidentSeverity>,
    /// The "Start time" event, once written.
    pub start: Option<TimelineMark>,
    /// The "End time" event, once written.
    pub end: Option<TimelineMark>,
    /// Tags whose event create was begun and not recorded as done: an earlier attempt may have
    /// made it, so the incident's events are looked through before it is sent again.
    pub begun: Vec<TimelineTag>,
}

impl IncidentDetails {
    /// The event the sync wrote with `tag`, if it did.
    pub fn mark(&self, tag: TimelineTag) -> Option<&TimelineMark> {
        match tag {
            TimelineTag::Start => self.start.as_ref(),
            TimelineTag::End => self.end.as_ref(),
        }
    }

    /// Marks a create of the `tag` event as begun (once).
    pub fn begin(&mut self, tag: TimelineTag) {
        if !self.begun.contains(&tag) {
            self.begun.push(tag);
        }
    }

    /// Sets the event written with `tag` (and clears its begun create).
    pub fn set_mark(&mut self, tag: TimelineTag, mark: TimelineMark) {
        match tag {
            TimelineTag::Start => self.start = Some(mark),
            TimelineTag::End => self.end = Some(mark),
        }
        self.begun.retain(|t| *t != tag);
    }
}

/// One Jira issue as the search returned it, already decoded and normalised to UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueSnapshot {
    /// Jira's id; `None` only in snapshots stored before ids were kept.
    #[serde(default)]
    pub id: Option<JiraId>,
    pub key: JiraKey,
    pub summary: String,
    /// The description as Markdown (ADF converted on Cloud, wiki markup on Data Center), if any.
    pub description: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// When Jira resolved the issue; `None` while it is open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The workflow status name, for display only.
    pub status: String,
    pub priority: Option<String>,
    pub labels: Vec<String>,
    pub issue_type: Option<String>,
    /// The values of the extra fields the rules read (`created_from`/`closed_from =
    /// "field:<id>"`), by field id, as Jira gave them (a date or date-time text); a field that
    /// is empty is absent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
    /// The issue's status transitions, oldest first, once read from its changelog (only for
    /// rules that need them); `None` when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitions: Option<Vec<Transition>>,
}

/// One status transition read from Jira's changelog (a `Changelog` entry's `status` item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The entry's `created`: when the issue changed status.
    pub at: DateTime<Utc>,
    /// The status left (`fromString`), if the entry says.
    pub from: Option<String>,
    /// The status entered (`toString`).
    pub to: String,
    /// Whether the status entered is in the Done category (`/status`'s `statusCategory.key`).
    pub to_done: bool,
}

/// One label event GitLab holds for an issue (`resource_label_events`): a label added or
/// removed, and when GitLab recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelEvent {
    pub label: String,
    /// `add` (true) or `remove` (false).
    pub added: bool,
    pub at: DateTime<Utc>,
}

/// One stage step replayed to a GitLab issue: a label added and/or one removed, at a Jira
/// transition's time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StageStep {
    pub at: DateTime<Utc>,
    pub add: Option<String>,
    pub remove: Option<String>,
}

/// What the store knows of an object's stage replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageState {
    /// The steps GitLab answered for, oldest first.
    pub done: Vec<StageStep>,
    /// Steps sent (or about to be) whose answer was not recorded.
    pub pending: Vec<StageStep>,
    /// The Jira `updated` whose status history was fully applied.
    pub history_updated: Option<DateTime<Utc>>,
}

impl IssueSnapshot {
    /// Returns true if and only if Jira considers the issue resolved.
    pub fn is_resolved(&self) -> bool {
        self.resolved_at.is_some()
    }
}

/// An issue the search returned that could not be decoded. The rest of the page goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct UndecodableIssue {
    /// The key, when even that could not be read this is `"<unknown>"`.
    pub key: String,
    /// What was wrong, naming the field.
    pub reason: String,
}

/// Where the next search page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageCursor {
    First,
    /// Cloud `nextPageToken`.
    Token(String),
    /// Data Center `startAt`.
    Offset(u64),
}

/// One page of search results.
#[derive(Clone, Debug, Default)]
pub struct SearchPage {
    pub issues: Vec<IssueSnapshot>,
    pub undecodable: Vec<UndecodableIssue>,
    /// The next page, or `None` when Jira said this was the last one (Cloud `isLast: true`,
    /// Data Center `startAt + issues == total`). An empty page may still have a next one.
    pub next: Option<PageCursor>,
    /// The number of matches, where the server says (Data Center only).
    pub total: Option<u64>,
    /// Jira's clock when it answered: the answer's `Date` header, if it had one.
    pub date: Option<DateTime<Utc>>,
}

/// Issues re-read by id (reconciliation): those Jira returned, and the ids it could not answer
/// for this time. An id in neither is gone from the account's view: deleted (or hidden).
#[derive(Clone, Debug, Default)]
pub struct ReadBack {
    pub issues: Vec<IssueSnapshot>,
    pub undecodable: Vec<UndecodableIssue>,
    /// Ids Jira reported an error for (Cloud bulk fetch's `issueErrors`): not known to be gone.
    pub unanswered: Vec<JiraId>,
}

string_enum! {
    /// Where a replicated issue stands on the Jira side, as the reconciliation last found it.
    pub enum IssueScope {
        /// Its rule's search still returns it.
        InScope = "in_scope",
        /// It no longer matches its rule's JQL (or moved out of it); still followed by id.
        OutOfScope = "out_of_scope",
        /// Jira no longer returns it by id: deleted, or hidden from the account.
        Deleted = "deleted",
    }
}

/// The Jira account the token belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct JiraUser {
    pub display_name: String,
    /// The account's profile time zone: JQL date literals are read in it.
    pub time_zone: chrono_tz::Tz,
}

/// What to create in GitLab for one Jira issue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewObject {
    pub jira_key: JiraKey,
    /// At most 255 characters.
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
    pub severity: Severity,
    /// Jira's `created`: becomes GitLab's `created_at` where the token may backdate.
    pub created_at: DateTime<Utc>,
    /// The alert's `start_time` (alerts only).
    pub start_time: DateTime<Utc>,
}

string_enum! {
    /// GitLab's state of an issue or incident (GitLab's own `state` names).
    pub enum RemoteState {
        Opened = "opened",
        Closed = "closed",
    }
}

/// What GitLab stored, read back from its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteObject {
    /// The issue's project-scoped number; `None` for alerts (the alert endpoint answers the
    /// *alert's* number, which is not the incident's, so it is not kept).
    pub iid: Option<u64>,
    pub web_url: Option<String>,
    pub state: RemoteState,
    /// GitLab's `created_at` (for alerts, the time we posted).
    pub created_at: DateTime<Utc>,
    /// GitLab's `closed_at`, if closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// The title and description GitLab holds, where its answer shows them (issues and
    /// incidents; `None` for alerts and simulated answers).
    pub content: Option<(String, String)>,
    /// Whether GitLab holds it as an incident (its `issue_type`), where its answer shows it.
    /// GitLab files an incident as a plain issue, silently, for a token below Reporter.
    pub incident: Option<bool>,
    /// GitLab's `moved_to_id`: a person moved the issue to another project, and this is the
    /// global id of the copy, which is where the object lives now.
    pub moved_to_id: Option<u64>,
}

/// Where a GitLab issue a person moved to another project lives now: the copy's project and
/// iid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MovedTo {
    pub project_id: u64,
    pub iid: u64,
}

/// The Jira key → GitLab object link, with the last state we replicated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mapping {
    /// The rule that last wrote it.
    pub rule: String,
    /// The issue's key when last replicated (it follows a move to another Jira project).
    pub jira_key: JiraKey,
    /// With `project_id` and `target`, what identifies the object; `None` in rows from before
    /// ids were kept, until the issue is next replicated.
    pub jira_id: Option<JiraId>,
    pub target: Target,
    /// The project as configured (a path or an id), for people.
    pub project: String,
    /// The project's numeric id, which a rename or a reused path cannot change.
    pub project_id: Option<u64>,
    pub iid: Option<u64>,
    pub web_url: Option<String>,
    pub state: RemoteState,
    /// Jira's `updated` of the last snapshot replicated: a snapshot no newer is already done.
    pub jira_updated: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// A hash of the title and description last written (`None` for rows from before it was
    /// kept): an edit in Jira is carried over when it changes.
    pub content_hash: Option<String>,
    /// Where the object lives since a person moved it to another project; `project_id` and
    /// `iid` still name the original, which identifies it.
    pub moved_to: Option<MovedTo>,
    /// When the sync found the object deleted in GitLab (a person deleted it): it is never
    /// written again.
    pub gone_at: Option<DateTime<Utc>>,
    /// The Jira resolution time the GitLab object was last closed for (`None` while open, and
    /// in rows from before it was kept): a resolution at another time closes it again.
    pub jira_resolved_at: Option<DateTime<Utc>>,
    /// Where the issue stands on the Jira side.
    pub scope: IssueScope,
}

impl Mapping {
    /// The mapping after a write GitLab answered with `remote`, replicating a Jira change made
    /// at `jira_updated` (never moving that time back).
    pub fn followed(self, remote: &RemoteObject, jira_updated: DateTime<Utc>) -> Mapping {
        Mapping {
            state: remote.state,
            closed_at: remote.closed_at,
            jira_updated: jira_updated.max(self.jira_updated),
            // A moved object answers with the copy's iid; the original's stays the identity.
            iid: if self.moved_to.is_some() {
                self.iid
            } else {
                remote.iid.or(self.iid)
            },
            web_url: remote.web_url.clone().or(self.web_url),
            ..self
        }
    }

    /// The project id and iid a write addresses: the copy's once a person moved the object,
    /// else the mapping's own.
    pub fn address(&self) -> (Option<u64>, Option<u64>) {
        match self.moved_to {
            Some(m) => (Some(m.project_id), Some(m.iid)),
            None => (self.project_id, self.iid),
        }
    }
}

/// A create that was started and may or may not have reached GitLab.
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    pub rule: String,
    pub jira_key: JiraKey,
    /// How many attempts were recorded before this one (0 for a fresh intent).
    pub previous_attempts: u32,
    pub started_at: DateTime<Utc>,
}

/// A Jira issue whose replication failed, kept so a later cycle retries it without asking Jira.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub rule: String,
    pub snapshot: IssueSnapshot,
    pub attempts: u32,
    pub last_error: String,
    pub last_failed_at: DateTime<Utc>,
    /// The first cycle at or after this retries it ([`Failure::backoff`]); `None` once a person
    /// forgot it (`forget KEY`): it is never retried, and only keeps the same change, read again,
    /// from being tried again. A newer change of the issue is replicated as any other.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Failure {
    /// The first retry waits this long.
    pub const FIRST_BACKOFF: chrono::Duration = chrono::Duration::minutes(1);
    /// No retry waits longer.
    pub const MAX_BACKOFF: chrono::Duration = chrono::Duration::hours(6);

    /// How long after its `attempts`-th failed attempt (1-based) an issue is tried again: a
    /// minute, doubling with each attempt, at most six hours. A failure that can never succeed
    /// costs a few attempts a day, not one every cycle.
    pub fn backoff(attempts: u32) -> chrono::Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        (Self::FIRST_BACKOFF * (1i32 << doublings)).min(Self::MAX_BACKOFF)
    }

    /// Returns true if and only if the failure may be retried at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.next_attempt_at.is_some_and(|at| at <= now)
    }
}

/// Counts for one run of one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub seen: u64,
    pub created: u64,
    pub closed: u64,
    pub reopened: u64,
    /// GitLab objects rewritten because the Jira summary or description changed.
    #[serde(default)]
    pub updated: u64,
    /// Snapshots that needed no GitLab write (already replicated, or only their `updated` moved).
    pub skipped: u64,
    pub failed: u64,
}

string_enum! {
    /// How a run ended, as kept in the run log.
    pub enum RunOutcome {
        /// Everything replicated.
        Ok = "ok",
        /// The run finished but some issues failed; they are retried next cycle.
        Partial = "partial",
        /// The run stopped early (Jira or GitLab unreachable, rejected credentials, a bad query).
        Failed = "failed",
        /// Stopped on request (shutdown) between actions.
        Cancelled = "cancelled",
    }
}

/// What one committed step changes in the store, in one transaction.
#[derive(Clone, Debug)]
pub enum Commit {
    /// The issue is replicated: upsert its mapping, drop its intent and failure record.
    Replicated(Mapping),
    /// The issue failed: keep its snapshot for a retry next cycle.
    Failed {
        snapshot: IssueSnapshot,
        error: String,
    },
    /// The issue is replicated and its incident's details are `details`, in one transaction: a
    /// new incident whose wanted details are GitLab's defaults for it, so none was sent.
    Settled {
        mapping: Mapping,
        details: IncidentDetails,
    },
    /// An incident's details were written: keep what was written, for the GitLab object
    /// `iid` of the project `project_id` (its identity, also after a person moved it).
    Details {
        project_id: u64,
        iid: u64,
        details: IncidentDetails,
    },
}

string_enum! {
    /// Which of the three ways of running started a run.
    pub enum RunMode {
        Service = "service",
        Once = "once",
        Backfill = "backfill",
    }
}

/// A remote link on a Jira issue that points at the GitLab issue or incident replicated from
/// it (`[jira] link_back`): everything the link shows, so it can be sent whole (Jira sets the
/// fields a request leaves out to null).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLink {
    /// The Jira issue the link is on: its id, or its key when the id is not known.
    pub issue: String,
    /// The issue's key, for messages.
    pub jira_key: JiraKey,
    /// `gitlab:<gitlab host>:<project id>:<iid>`, of the object as the store identifies it:
    /// Jira updates the link with this id in place instead of adding another.
    pub global_id: String,
    /// The GitLab object's page.
    pub url: String,
    /// `<project path>#<iid> <title>`.
    pub title: String,
    /// Jira has the issue resolved: Jira shows the link struck through.
    pub resolved: bool,
}

/// A remote link that is due to be sent, and how many attempts at it failed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueLink {
    pub link: RemoteLink,
    pub attempts: u32,
}

/// What a look at a rule's pending remote links found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueLinks {
    /// Links whose wanted state Jira has not accepted yet and whose backoff is over.
    pub due: Vec<DueLink>,
    /// When the next link still waiting on a backoff is due, if one is.
    pub next_due: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name parses back to its variant, and serde writes and reads the same names: config,
    /// store and JSON share one table.
    #[test]
    fn string_tables_round_trip() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + std::str::FromStr<Err = UnknownName>,
            T: Serialize + for<'de> Deserialize<'de>,
        {
            for v in all {
                let name = v.to_string();
                assert_eq!(name.parse::<T>().ok(), Some(*v), "{name} parses back");
                let json = serde_json::to_string(v).expect("serialises");
                assert_eq!(json, format!("{name:?}"), "serde writes the same name");
                let back: T = serde_json::from_str(&json).expect("deserialises");
                assert_eq!(back, *v);
            }
        }
        check(Target::ALL);
        check(Severity::ALL);
        check(RemoteState::ALL);
        check(RunOutcome::ALL);
        check(RunMode::ALL);
        check(IssueScope::ALL);
        check(IncidentSeverity::ALL);
        check(TimelineTag::ALL);
    }

    /// A failure waits a minute, then twice as long after each attempt, never over six hours.
    #[test]
    fn failure_backoff_doubles_up_to_six_hours() {
        let minutes = |n| Failure::backoff(n).num_minutes();
        assert_eq!(
            [0, 1, 2, 3, 4, 9, 10, 1_000].map(minutes),
            [1, 1, 2, 4, 8, 256, 360, 360]
        );
    }

    /// An unknown name is refused with the list of valid ones, in serde too.
    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = "bug".parse::<Target>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown value \"bug\": expected one of incident, issue, alert"
        );
        let err = serde_json::from_str::<RunMode>("\"daily\"").unwrap_err();
        assert!(err.to_string().contains("service, once, backfill"), "{err}");
    }
}
