//! GitLab's JSON, private to the client: `Entities::Issue` (the fields we read back), users,
//! projects with permissions, environments, and error bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{RemoteObject, RemoteState};
use crate::http::{DecodeError, Response};

use super::GitLabError;

/// One of `GET …/issues/:iid/resource_label_events` (`Entities::ResourceLabelEvent`:
/// `created_at`, `label` — `nil` once the label was deleted —, `action` `add` or `remove`).
#[derive(Debug, Deserialize)]
pub(super) struct LabelEvent {
    created_at: DateTime<Utc>,
    label: Option<LabelRef>,
    action: String,
}

#[derive(Debug, Deserialize)]
struct LabelRef {
    name: String,
}

impl LabelEvent {
    /// The domain's event; `None` for a deleted label or an action other than add or remove.
    pub(super) fn into_domain(self) -> Option<crate::domain::LabelEvent> {
        let added = match self.action.as_str() {
            "add" => true,
            "remove" => false,
            _ => return None,
        };
        Some(crate::domain::LabelEvent {
            label: self.label?.name,
            added,
            at: self.created_at,
        })
    }
}

/// The fields of `Entities::Issue` the sync reads back.
#[derive(Debug, Deserialize)]
pub(super) struct Issue {
    /// The global id (`moved_to_id` names a copy by it).
    #[serde(default)]
    id: u64,
    #[serde(default)]
    project_id: u64,
    iid: u64,
    web_url: Option<String>,
    state: String,
    #[serde(default)]
    title: String,
    description: Option<String>,
    /// `author.id`: only what the sync's own user wrote may be adopted.
    author: Option<Author>,
    created_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    /// `issue`, `incident`, …: what GitLab filed it as.
    #[serde(default)]
    issue_type: Option<String>,
    /// Set once a person moved the issue: the copy's global id.
    #[serde(default)]
    moved_to_id: Option<u64>,
}

impl Issue {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn project_id(&self) -> u64 {
        self.project_id
    }

    /// Returns true if and only if the description holds `browse_url` on a line of its own.
    pub(super) fn links_to(&self, browse_url: &str) -> bool {
        self.description
            .as_deref()
            .is_some_and(|d| d.lines().any(|l| l.trim() == browse_url))
    }

    pub(super) fn iid(&self) -> u64 {
        self.iid
    }

    pub(super) fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Returns true if and only if the user `id` wrote the issue.
    pub(super) fn is_by(&self, id: u64) -> bool {
        self.author.as_ref().is_some_and(|a| a.id == id)
    }

    pub(super) fn into_remote(self, what: &str) -> Result<RemoteObject, GitLabError> {
        let state = match self.state.as_str() {
            "opened" | "reopened" => RemoteState::Opened,
            "closed" => RemoteState::Closed,
            other => {
                return Err(GitLabError::Decode {
                    what: what.to_owned(),
                    source: DecodeError {
                        reason: format!("unknown issue state {other:?}"),
                        body_excerpt: String::new(),
                    },
                });
            }
        };
        Ok(RemoteObject {
            iid: Some(self.iid),
            web_url: self.web_url,
            state,
            created_at: self.created_at,
            closed_at: self.closed_at,
            content: Some((self.title, self.description.unwrap_or_default())),
            incident: self.issue_type.as_deref().map(|t| t == "incident"),
            moved_to_id: self.moved_to_id,
        })
    }
}

/// An issue's `author`.
#[derive(Debug, Deserialize)]
pub(super) struct Author {
    id: u64,
}

/// `GET /user`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub is_admin: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
struct AccessLevel {
    access_level: u32,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct Permissions {
    project_access: Option<AccessLevel>,
    group_access: Option<AccessLevel>,
}

/// `GET /projects/:id`, with the token's permissions.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectAccess {
    pub id: u64,
    pub path_with_namespace: String,
    #[serde(default)]
    permissions: Option<Permissions>,
}

impl ProjectAccess {
    /// The token's effective access level: the higher of project and group membership.
    pub fn access_level(&self) -> u32 {
        let p = self.permissions.as_ref();
        let project = p
            .and_then(|p| p.project_access.as_ref())
            .map_or(0, |a| a.access_level);
        let group = p
            .and_then(|p| p.group_access.as_ref())
            .map_or(0, |a| a.access_level);
        project.max(group)
    }
}

/// `GET /projects/:id/environments`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Environment {
    pub name: String,
    #[serde(default)]
    pub tier: Option<String>,
}

/// GitLab's error text: `{"message":"…"}`, `{"message":{"field":["…"]}}` or `{"error":"…"}`.
pub(super) fn error_message(response: &Response) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(&response.body) else {
        return response.excerpt(200);
    };
    let flatten = |m: &Value| -> String {
        match m {
            Value::String(s) => s.clone(),
            Value::Object(fields) => fields
                .iter()
                .map(|(k, v)| match v {
                    Value::Array(msgs) => format!(
                        "{k} {}",
                        msgs.iter()
                            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    other => format!("{k} {other}"),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    };
    v.get("message")
        .or_else(|| v.get("error"))
        .map(flatten)
        .unwrap_or_else(|| response.excerpt(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A real `Entities::Issue` payload decodes into what we read back.
    #[test]
    fn decodes_real_issue() {
        let body =
            include_str!("../../tests/fixtures/gitlab/xanzy_go-gitlab_testdata_issue_move.json");
        let issue: Issue = response(200, body).json().unwrap();
        assert!(issue.id() > 0 && issue.project_id() > 0, "{issue:?}");
        let remote = issue.into_remote("test").unwrap();
        assert_eq!(remote.iid, Some(11));
        assert_eq!(remote.state, RemoteState::Opened);
        assert_eq!(
            remote.created_at.to_rfc3339(),
            "2016-04-05T21:41:45.652+00:00"
        );
    }

    /// GitLab's three error body shapes become one readable line.
    #[rstest::rstest]
    #[case(
        r#"{"message":{"title":["is too long (maximum is 255 characters)"]}}"#,
        "title is too long (maximum is 255 characters)"
    )]
    #[case(r#"{"error":"title is missing"}"#, "title is missing")]
    #[case(r#"{"message":"404 Project Not Found"}"#, "404 Project Not Found")]
    #[case("<html>bad gateway</html>", "<html>bad gateway</html>")]
    fn error_bodies(#[case] body: &str, #[case] expected: &str) {
        assert_eq!(error_message(&response(400, body)), expected);
    }

    /// The browse link must stand on a line of its own to count.
    #[test]
    fn link_must_be_its_own_line() {
        let mk = |d: &str| Issue {
            id: 101,
            project_id: 1,
            iid: 1,
            web_url: None,
            state: "opened".into(),
            title: String::new(),
            description: Some(d.into()),
            author: Some(Author { id: 7 }),
            created_at: Utc::now(),
            closed_at: None,
            issue_type: Some("incident".into()),
            moved_to_id: None,
        };
        let url = "https://j.example/browse/OPS-1";
        assert!(mk("Jira: \nhttps://j.example/browse/OPS-1\n\ntext").links_to(url));
        assert!(
            !mk("https://j.example/browse/OPS-12").links_to(url),
            "OPS-12 is not OPS-1"
        );
        assert!(mk("x").is_by(7) && !mk("x").is_by(8), "the author is read");
    }
}
