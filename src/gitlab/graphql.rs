//! GitLab's GraphQL API, for what its REST API cannot do: an incident's severity
//! (`issueSetSeverity`) and its timeline events with an exact time (`timelineEventCreate`,
//! `timelineEventUpdate`, `project.incidentManagementTimelineEvents`).
//!
//! Requests go to `POST <base>/api/graphql` through the same HTTP client as REST (token, retry,
//! pacing, observers). GitLab answers a GraphQL request 200 whatever happened to it, so the
//! answer's shape says what failed (the GraphQL spec, "Response": an error raised before
//! execution leaves no `data` entry):
//! - no `data`: the request was refused before it ran (a query this GitLab does not know, e.g.
//!   an older version): [`GitLabError::GraphQlInvalid`];
//! - `data` whose field is `null`, with `errors`: it ran and the object was refused
//!   (`Gitlab::Graphql::Authorize::AuthorizeResource::RESOURCE_ACCESS_ERROR`: "does not exist or
//!   you don't have permission"). The REST API is asked whether the incident is there: it is
//!   gone ([`PortError::is_gone`]), or the token may not do this
//!   ([`GitLabError::GraphQlRefused`]);
//! - a mutation's own `errors` field not empty: GitLab refused the values
//!   ([`GitLabError::GraphQlErrors`]), e.g. a note over 280 characters.
//!
//! It does not decide when to write what; the engine does (`engine::incident`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{GitLabClient, GitLabError, Resource, Subject, stamp};
use crate::config::Destination;
use crate::domain::{IncidentSeverity, Mapping, NewTimelineEvent, TimelineEvent};
use crate::http::{DecodeError, RequestKind};

/// Project paths by id, as read once per process (GraphQL addresses a project by its path).
pub(super) type PathCache = Arc<Mutex<HashMap<u64, String>>>;

/// Incidents' global ids by project id and iid, as GitLab last answered them: an issue's global
/// id never changes and an iid is never reused, so a remembered one is never wrong.
pub(super) type GidCache = Arc<Mutex<HashMap<(u64, u64), String>>>;

/// Global ids remembered at most; past it the cache starts again (a run writes an incident's
/// severity and events together, so a small cache saves nearly every look-up).
const GID_CACHE_MAX: usize = 4_096;

/// Timeline events asked per page (GitLab's default maximum page size is 100).
const EVENTS_PER_PAGE: u32 = 100;

/// Pages of timeline events read at most: an incident the sync looks through has few events.
const EVENTS_MAX_PAGES: u32 = 20;

const SET_SEVERITY: &str =
    "mutation($projectPath: ID!, $iid: String!, $severity: IssuableSeverity!) {
  issueSetSeverity(input: {projectPath: $projectPath, iid: $iid, severity: $severity}) {
    errors
    issue { id severity }
  }
}";

const INCIDENT_ID: &str = "query($fullPath: ID!, $iid: String!) {
  project(fullPath: $fullPath) {
    issue(iid: $iid) { id }
  }
}";

const EVENTS: &str = "query($fullPath: ID!, $incidentId: IssueID!, $first: Int!, $after: String) {
  project(fullPath: $fullPath) {
    incidentManagementTimelineEvents(incidentId: $incidentId, first: $first, after: $after) {
      nodes {
        id
        occurredAt
        note
        author { id }
        timelineEventTags { nodes { name } }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}";

const CREATE_EVENT: &str = "mutation($incidentId: IssueID!, $note: String!, $occurredAt: Time!, $tags: [String!]) {
  timelineEventCreate(input: {incidentId: $incidentId, note: $note, occurredAt: $occurredAt, timelineEventTagNames: $tags}) {
    errors
    timelineEvent { id occurredAt note author { id } timelineEventTags { nodes { name } } }
  }
}";

const UPDATE_EVENT: &str = "mutation($id: IncidentManagementTimelineEventID!, $note: String, $occurredAt: Time, $tags: [String!]) {
  timelineEventUpdate(input: {id: $id, note: $note, occurredAt: $occurredAt, timelineEventTagNames: $tags}) {
    errors
    timelineEvent { id occurredAt note author { id } timelineEventTags { nodes { name } } }
  }
}";

/// A GraphQL answer: `data` absent when the request was refused before it ran.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    message: String,
}

/// A mutation's payload: its `errors` field and the object.
#[derive(Deserialize)]
struct Payload<T> {
    #[serde(default)]
    errors: Vec<String>,
    #[serde(flatten)]
    object: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetSeverityData {
    issue_set_severity: Option<Payload<IssuePayload>>,
}

#[derive(Deserialize)]
struct IssuePayload {
    #[serde(default)]
    issue: Option<IdOnly>,
}

#[derive(Deserialize)]
struct ProjectData<T> {
    project: Option<T>,
}

#[derive(Deserialize)]
struct IssueField {
    issue: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsField {
    incident_management_timeline_events: Option<Connection<WireEvent>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection<T> {
    nodes: Vec<T>,
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    id: String,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    author: Option<IdOnly>,
    #[serde(default)]
    timeline_event_tags: Option<Connection<TagName>>,
}

#[derive(Deserialize)]
struct TagName {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventPayload {
    timeline_event: Option<WireEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateEventData {
    timeline_event_create: Option<Payload<EventPayload>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateEventData {
    timeline_event_update: Option<Payload<EventPayload>>,
}

impl WireEvent {
    fn into_event(self) -> TimelineEvent {
        TimelineEvent {
            id: self.id,
            occurred_at: self.occurred_at,
            note: self.note.unwrap_or_default(),
            tags: self
                .timeline_event_tags
                .map(|c| c.nodes.into_iter().map(|t| t.name).collect())
                .unwrap_or_default(),
        }
    }

    /// Returns true if and only if the user `gid://gitlab/User/<me>` wrote it.
    fn is_by(&self, me: u64) -> bool {
        self.author
            .as_ref()
            .is_some_and(|a| a.id == format!("gid://gitlab/User/{me}"))
    }
}

/// The outcome of one GraphQL request: the data, or the field was refused while running.
enum Answer<T> {
    Data(T),
    /// The request ran, and the field came back `null` with errors: the object does not exist
    /// or the token may not do this (GitLab says the same for both).
    Unavailable(String),
}

impl GitLabClient {
    /// `<base>/api/graphql`.
    fn graphql_url(&self) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("a validated http(s) base URL can have path segments")
            .pop_if_empty()
            .extend(["api", "graphql"]);
        url
    }

    /// Sends one GraphQL request and reads its answer (see the module doc for what each shape
    /// means).
    async fn graphql<T: DeserializeOwned>(
        &self,
        kind: RequestKind,
        query: &str,
        variables: Value,
        subject: &Subject,
    ) -> Result<Answer<T>, GitLabError> {
        let body = json!({ "query": query, "variables": variables });
        let response = self
            .http
            .send(kind, || {
                self.http
                    .request(Method::POST, self.graphql_url())
                    .header("PRIVATE-TOKEN", self.token.clone())
                    .header(ACCEPT, "application/json")
                    .json(&body)
            })
            .await
            .map_err(|source| subject.http(source))?;
        let response = self.check_status(response, subject)?;
        let envelope: Envelope<T> = Self::decode(&response, subject)?;
        let message = || {
            let joined = envelope
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            self.http.scrub(&joined)
        };
        match (&envelope.data, envelope.errors.is_empty()) {
            (None, _) => Err(GitLabError::GraphQlInvalid {
                what: subject.what.clone(),
                message: message(),
            }),
            (Some(_), false) => Ok(Answer::Unavailable(message())),
            (Some(_), true) => Ok(Answer::Data(
                envelope.data.expect("matched Some just above"),
            )),
        }
    }

    /// The path of the project `project_id` (GraphQL names projects by path), read once per
    /// process; `fresh` reads it again (the project was renamed).
    async fn project_path(&self, project_id: u64, fresh: bool) -> Result<String, GitLabError> {
        if !fresh
            && let Some(path) = self
                .paths
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&project_id)
        {
            return Ok(path.clone());
        }
        let project = self.project(&project_id.to_string()).await?;
        self.paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(project_id, project.path_with_namespace.clone());
        Ok(project.path_with_namespace)
    }

    /// The project id and iid `mapping`'s incident lives at now (its copy once a person moved
    /// it), or why it cannot be addressed.
    fn address(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        doing: &str,
    ) -> Result<(u64, u64), GitLabError> {
        match mapping.address() {
            (Some(project_id), Some(iid)) => Ok((project_id, iid)),
            _ if dest.target != crate::domain::Target::Incident => Err(GitLabError::Unsendable {
                what: format!("{doing} of {}", mapping.jira_key),
                reason: "only incidents have a severity and timeline events",
            }),
            _ => Err(GitLabError::Unsendable {
                what: format!("{doing} of {}", mapping.jira_key),
                reason: "the mapping holds no GitLab project id or iid",
            }),
        }
    }

    fn incident_subject(
        &self,
        project_id: u64,
        iid: u64,
        mapping: &Mapping,
        doing: &str,
    ) -> Subject {
        let project = format!("project {project_id}");
        Subject::new(
            Resource::GraphQl,
            format!("{doing} of incident {project}#{iid} ({})", mapping.jira_key),
        )
    }

    /// What a refused GraphQL request on the incident means: the incident is gone (REST cannot
    /// find it either: [`PortError::is_gone`]), or the token may not do this over GraphQL.
    async fn refused(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        subject: &Subject,
        message: String,
    ) -> GitLabError {
        match self
            .issue_request(dest, mapping, Method::GET, None, "look-up")
            .await
        {
            Ok(_) => GitLabError::GraphQlRefused {
                what: subject.what.clone(),
                message,
            },
            Err(e) => e,
        }
    }

    /// Remembers the global id of the incident `iid` of the project `project_id`.
    fn remember_gid(&self, project_id: u64, iid: u64, gid: &str) {
        let mut gids = self
            .gids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if gids.len() >= GID_CACHE_MAX {
            gids.clear();
        }
        gids.insert((project_id, iid), gid.to_owned());
    }

    /// The incident's global id (`gid://gitlab/Issue/<id>`), which timeline events take: as
    /// remembered, else read (with the project's path).
    async fn incident_gid(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        project_id: u64,
        iid: u64,
        subject: &Subject,
    ) -> Result<(String, String), GitLabError> {
        let known = self
            .gids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(project_id, iid))
            .cloned();
        if let Some(gid) = known {
            let path = self.project_path(project_id, false).await?;
            return Ok((path, gid));
        }
        for fresh in [false, true] {
            let path = self.project_path(project_id, fresh).await?;
            let answer: Answer<ProjectData<IssueField>> = self
                .graphql(
                    RequestKind::Idempotent,
                    INCIDENT_ID,
                    json!({ "fullPath": path, "iid": iid.to_string() }),
                    subject,
                )
                .await?;
            match answer {
                Answer::Data(ProjectData {
                    project: Some(IssueField { issue: Some(issue) }),
                }) => {
                    self.remember_gid(project_id, iid, &issue.id);
                    return Ok((path, issue.id));
                }
                // The project answers, the issue does not: ask REST whether it is gone.
                Answer::Data(ProjectData { project: Some(_) }) => {
                    return Err(self
                        .refused(dest, mapping, subject, "the incident is not there".into())
                        .await);
                }
                // No project at that path: renamed since it was read? Read it again once.
                Answer::Data(ProjectData { project: None }) if !fresh => {}
                Answer::Data(ProjectData { project: None }) => {
                    return Err(self
                        .refused(dest, mapping, subject, "the project is not there".into())
                        .await);
                }
                Answer::Unavailable(message) => {
                    return Err(self.refused(dest, mapping, subject, message).await);
                }
            }
        }
        unreachable!("the second pass returns")
    }

    /// GraphQL `issueSetSeverity`.
    pub(super) async fn graphql_set_severity(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        severity: IncidentSeverity,
    ) -> Result<(), GitLabError> {
        let doing = "setting the severity";
        let (project_id, iid) = self.address(dest, mapping, doing)?;
        let subject = self.incident_subject(project_id, iid, mapping, doing);
        for fresh in [false, true] {
            let path = self.project_path(project_id, fresh).await?;
            let answer: Answer<SetSeverityData> = self
                .graphql(
                    RequestKind::Idempotent,
                    SET_SEVERITY,
                    json!({
                        "projectPath": path,
                        "iid": iid.to_string(),
                        "severity": severity.as_str(),
                    }),
                    &subject,
                )
                .await?;
            match answer {
                Answer::Data(SetSeverityData {
                    issue_set_severity: Some(payload),
                }) => {
                    mutation_errors(&subject, payload.errors)?;
                    if let Some(issue) = payload.object.issue {
                        self.remember_gid(project_id, iid, &issue.id);
                    }
                    return Ok(());
                }
                Answer::Data(SetSeverityData {
                    issue_set_severity: None,
                }) => {
                    return Err(GitLabError::Decode {
                        what: subject.what.clone(),
                        source: DecodeError {
                            reason: "issueSetSeverity answered null without errors".into(),
                            body_excerpt: String::new(),
                        },
                    });
                }
                // The path may be stale (a renamed project): read it again once.
                Answer::Unavailable(_) if !fresh => {}
                Answer::Unavailable(message) => {
                    return Err(self.refused(dest, mapping, &subject, message).await);
                }
            }
        }
        unreachable!("the second pass returns")
    }

    /// GraphQL `project.incidentManagementTimelineEvents`, every page, each with whether the
    /// token's user wrote it.
    pub(super) async fn graphql_timeline_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<(TimelineEvent, bool)>, GitLabError> {
        let doing = "listing the timeline events";
        let (project_id, iid) = self.address(dest, mapping, doing)?;
        let subject = self.incident_subject(project_id, iid, mapping, doing);
        let (path, gid) = self
            .incident_gid(dest, mapping, project_id, iid, &subject)
            .await?;
        let me = self.my_id().await?;
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..EVENTS_MAX_PAGES {
            let answer: Answer<ProjectData<EventsField>> = self
                .graphql(
                    RequestKind::Idempotent,
                    EVENTS,
                    json!({
                        "fullPath": path,
                        "incidentId": gid,
                        "first": EVENTS_PER_PAGE,
                        "after": after,
                    }),
                    &subject,
                )
                .await?;
            let connection = match answer {
                Answer::Data(ProjectData {
                    project:
                        Some(EventsField {
                            incident_management_timeline_events: Some(c),
                        }),
                }) => c,
                Answer::Data(_) => {
                    return Err(self
                        .refused(
                            dest,
                            mapping,
                            &subject,
                            "no timeline events answered".into(),
                        )
                        .await);
                }
                Answer::Unavailable(message) => {
                    return Err(self.refused(dest, mapping, &subject, message).await);
                }
            };
            events.extend(connection.nodes.into_iter().map(|e| {
                let mine = e.is_by(me);
                (e.into_event(), mine)
            }));
            match connection.page_info {
                Some(PageInfo {
                    has_next_page: true,
                    end_cursor: Some(cursor),
                }) => after = Some(cursor),
                _ => return Ok(events),
            }
        }
        Ok(events)
    }

    /// GraphQL `timelineEventCreate`. Sent once: a lost answer is returned as ambiguous.
    pub(super) async fn graphql_create_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, GitLabError> {
        let doing = "adding a timeline event";
        let (project_id, iid) = self.address(dest, mapping, doing)?;
        let subject = self.incident_subject(project_id, iid, mapping, doing);
        let (_, gid) = self
            .incident_gid(dest, mapping, project_id, iid, &subject)
            .await?;
        let answer: Answer<CreateEventData> = self
            .graphql(
                RequestKind::Write,
                CREATE_EVENT,
                json!({
                    "incidentId": gid,
                    "note": event.note,
                    "occurredAt": stamp(event.occurred_at),
                    "tags": [event.tag.as_str()],
                }),
                &subject,
            )
            .await?;
        let payload = match answer {
            Answer::Data(CreateEventData {
                timeline_event_create: Some(p),
            }) => p,
            Answer::Data(_) => return Err(null_payload(&subject, "timelineEventCreate")),
            Answer::Unavailable(message) => {
                return Err(self.refused(dest, mapping, &subject, message).await);
            }
        };
        mutation_errors(&subject, payload.errors)?;
        payload
            .object
            .timeline_event
            .map(WireEvent::into_event)
            .ok_or_else(|| null_payload(&subject, "timelineEventCreate"))
    }

    /// GraphQL `timelineEventUpdate`: moves the event `id` to `event`'s time and note. An event
    /// that is no longer there (a person deleted it) is [`PortError::is_gone`].
    pub(super) async fn graphql_update_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, GitLabError> {
        let doing = "moving a timeline event";
        let (project_id, iid) = self.address(dest, mapping, doing)?;
        let subject = self.incident_subject(project_id, iid, mapping, doing);
        let answer: Answer<UpdateEventData> = self
            .graphql(
                RequestKind::Idempotent,
                UPDATE_EVENT,
                json!({
                    "id": id,
                    "note": event.note,
                    "occurredAt": stamp(event.occurred_at),
                    "tags": [event.tag.as_str()],
                }),
                &subject,
            )
            .await?;
        let payload = match answer {
            Answer::Data(UpdateEventData {
                timeline_event_update: Some(p),
            }) => p,
            Answer::Data(_) => return Err(null_payload(&subject, "timelineEventUpdate")),
            Answer::Unavailable(message) => {
                // The event, or the incident, or the right to edit: tell them apart.
                let events = self.graphql_timeline_events(dest, mapping).await?;
                return Err(if events.iter().any(|(e, _)| e.id == id) {
                    GitLabError::GraphQlRefused {
                        what: subject.what,
                        message,
                    }
                } else {
                    GitLabError::NotFound {
                        resource: Resource::TimelineEvent(id.to_owned()),
                        what: subject.what,
                        message,
                    }
                });
            }
        };
        mutation_errors(&subject, payload.errors)?;
        payload
            .object
            .timeline_event
            .map(WireEvent::into_event)
            .ok_or_else(|| null_payload(&subject, "timelineEventUpdate"))
    }

    /// Whether the token may use GraphQL at all: a query of the current user (`check`).
    ///
    /// # Errors
    /// GitLab refused the request or could not be reached.
    pub async fn graphql_probe(&self) -> Result<(), GitLabError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Me {
            current_user: Option<IdOnly>,
        }
        let subject = Subject::new(Resource::GraphQl, "a GraphQL query of the token's user");
        match self
            .graphql::<Me>(
                RequestKind::Idempotent,
                "query { currentUser { id } }",
                json!({}),
                &subject,
            )
            .await?
        {
            Answer::Data(Me {
                current_user: Some(_),
            }) => Ok(()),
            Answer::Data(Me { current_user: None }) => Err(GitLabError::GraphQlRefused {
                what: subject.what,
                message: "GitLab answered no current user for the token".into(),
            }),
            Answer::Unavailable(message) => Err(GitLabError::GraphQlRefused {
                what: subject.what,
                message,
            }),
        }
    }
}

/// A mutation's own `errors`: none is success.
fn mutation_errors(subject: &Subject, errors: Vec<String>) -> Result<(), GitLabError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(GitLabError::GraphQlErrors {
            what: subject.what.clone(),
            errors,
        })
    }
}

fn null_payload(subject: &Subject, field: &str) -> GitLabError {
    GitLabError::Decode {
        what: subject.what.clone(),
        source: DecodeError {
            reason: format!("{field} answered no object and no errors"),
            body_excerpt: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ports::PortError;

    /// GraphQL's failures classify by type: a refusal for every incident alike (a query this
    /// GitLab does not know, GraphQL closed to the token, the endpoint forbidden) neither stops
    /// the run nor fails the issue; a mutation's own errors are the issue's; a timeline event
    /// no longer there is gone, and the run goes on.
    #[test]
    fn graphql_errors_classify_by_type() {
        let invalid = GitLabError::GraphQlInvalid {
            what: "w".into(),
            message: "m".into(),
        };
        let refused = GitLabError::GraphQlRefused {
            what: "w".into(),
            message: "m".into(),
        };
        let forbidden = GitLabError::Forbidden {
            resource: Resource::GraphQl,
            what: "w".into(),
            message: String::new(),
        };
        for e in [&invalid, &refused, &forbidden] {
            assert!(e.is_refused(), "{e}");
            assert!(!e.stops_run(), "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
        let rejected = GitLabError::GraphQlErrors {
            what: "w".into(),
            errors: vec!["Timeline text is too long (maximum is 280 characters)".into()],
        };
        assert!(!rejected.is_refused() && !rejected.stops_run() && !rejected.is_retryable());
        let event_gone = GitLabError::NotFound {
            resource: Resource::TimelineEvent(
                "gid://gitlab/IncidentManagement::TimelineEvent/1".into(),
            ),
            what: "w".into(),
            message: String::new(),
        };
        assert!(event_gone.is_gone() && !event_gone.stops_run());
        assert!(
            rejected.to_string().contains("280 characters"),
            "{rejected}"
        );
    }

    /// An answer without `data` was refused before it ran; with `data` and errors, a field was
    /// refused while running (the GraphQL spec's "Response" section).
    #[test]
    fn envelopes_read_as_the_spec_says() {
        let before: Envelope<Value> = serde_json::from_str(
            r#"{"errors":[{"message":"Field 'x' doesn't exist on type 'Project'","extensions":{"code":"undefinedField"}}]}"#,
        )
        .expect("parses");
        assert!(before.data.is_none() && before.errors.len() == 1);
        let during: Envelope<SetSeverityData> = serde_json::from_str(
            r#"{"data":{"issueSetSeverity":null},"errors":[{"message":"The resource that you are attempting to access does not exist or you don't have permission to perform this action","path":["issueSetSeverity"]}]}"#,
        )
        .expect("parses");
        assert!(matches!(
            during.data,
            Some(SetSeverityData {
                issue_set_severity: None
            })
        ));
        let payload: Envelope<CreateEventData> = serde_json::from_str(
            r#"{"data":{"timelineEventCreate":{"errors":["Following tags don't exist: [\"x\"]"],"timelineEvent":null}}}"#,
        )
        .expect("parses");
        let p = payload
            .data
            .and_then(|d| d.timeline_event_create)
            .expect("a payload");
        assert_eq!(p.errors.len(), 1);
        assert!(p.object.timeline_event.is_none());
    }
}
