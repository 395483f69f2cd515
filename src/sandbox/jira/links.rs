//! The sandbox Jira's remote issue links and the account's permissions: what `[jira] link_back`
//! writes and what `check` reads.
//!
//! Sources, for every behaviour here:
//! - Atlassian's OpenAPI for Jira Cloud (`swagger-v3.v3.json`), operations
//!   `createOrUpdateRemoteIssueLink` (`POST /rest/api/3/issue/{issueIdOrKey}/remotelink`),
//!   `getRemoteIssueLinks` (`GET` the same) and `getMyPermissions` (`GET
//!   /rest/api/3/mypermissions`), with the schemas `RemoteIssueLinkRequest`, `RemoteObject`,
//!   `RemoteIssueLink`, `RemoteIssueLinkIdentifies`, `Permissions` and `UserPermission`.
//! - For Data Center (`/rest/api/2/`): developer.atlassian.com, "Jira REST API for Remote
//!   Issue Links" (the same resource and bodies, available since Jira 5.0).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{FakeJira, JiraState, jira_error, no_such_issue, not_found};
use crate::sandbox::{ParsedBody, json_response, lock, query_pairs};

/// "The maximum length is 255 characters" (`RemoteIssueLinkRequest.globalId`).
const MAX_GLOBAL_ID_CHARS: usize = 255;

/// The project permissions the fake knows by key, with the names and descriptions Jira's
/// `GET /rest/api/3/permissions` lists for them (a subset: the ones this crate asks about and a
/// few neighbours). Any other key is "an invalid key": 400 (`getMyPermissions`).
const PERMISSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "BROWSE_PROJECTS",
        "10",
        "Browse Projects",
        "Ability to browse projects and the issues within them.",
    ),
    (
        "LINK_ISSUES",
        "21",
        "Link Issues",
        "Ability to link issues together and create linked issues. Only useful if issue linking is turned on.",
    ),
    (
        "CREATE_ISSUES",
        "11",
        "Create Issues",
        "Ability to create issues.",
    ),
    (
        "EDIT_ISSUES",
        "12",
        "Edit Issues",
        "Ability to edit issues.",
    ),
];

/// One remote link as Jira keeps it: `RemoteIssueLink` without `self`, which is derived.
#[derive(Clone, Debug)]
struct StoredLink {
    id: u64,
    global_id: Option<String>,
    /// What the last create or update sent; a field it left out is null ("Any fields without
    /// values in the request are set to null").
    application: Value,
    relationship: Value,
    object: Value,
}

/// The remote links of every issue, and the permissions the account lacks.
#[derive(Default)]
pub(super) struct RemoteLinks {
    inner: Mutex<LinksData>,
}

#[derive(Default)]
struct LinksData {
    /// By issue id, in creation order.
    by_issue: BTreeMap<u64, Vec<StoredLink>>,
    next_id: u64,
    /// Permission keys the account does not have, in every project.
    denied: BTreeSet<String>,
}

impl FakeJira {
    /// The remote links on the issue `key` as `GET .../remotelink` lists them
    /// (`RemoteIssueLink` objects, oldest first); empty for an issue that has none or is not
    /// there.
    pub fn remote_links(&self, key: &str) -> Vec<Value> {
        let state = &self.inner.state;
        let Some((id, _)) = state.find(key) else {
            return Vec::new();
        };
        let data = lock(&state.links.inner);
        data.by_issue
            .get(&id)
            .map(|links| links.iter().map(|l| render(state, "3", key, l)).collect())
            .unwrap_or_default()
    }

    /// Takes the project permission `key` (`LINK_ISSUES`, `BROWSE_PROJECTS`) from the account
    /// in every project: `mypermissions` answers `havePermission: false`, and the remote-link
    /// endpoints refuse as Jira does without it.
    pub fn deny_permission(&self, key: &str) {
        lock(&self.inner.state.links.inner)
            .denied
            .insert(key.to_owned());
    }

    /// Gives back every permission [`FakeJira::deny_permission`] took.
    pub fn grant_all_permissions(&self) {
        lock(&self.inner.state.links.inner).denied.clear();
    }
}

impl RemoteLinks {
    fn denied(&self, key: &str) -> bool {
        lock(&self.inner).denied.contains(key)
    }
}

/// `RemoteIssueLink`: `id`, `self`, `globalId`, `application`, `relationship`, `object`; a
/// field that is null is left out.
fn render(state: &JiraState, version: &str, key: &str, link: &StoredLink) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(link.id));
    out.insert(
        "self".into(),
        json!(state.api(version, &format!("issue/{key}/remotelink/{}", link.id))),
    );
    if let Some(g) = &link.global_id {
        out.insert("globalId".into(), json!(g));
    }
    for (name, value) in [
        ("application", &link.application),
        ("relationship", &link.relationship),
        ("object", &link.object),
    ] {
        if !value.is_null() {
            out.insert(name.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// `POST /rest/api/{2,3}/issue/{issueIdOrKey}/remotelink`: "If a `globalId` is provided and a
/// remote issue link with that global ID is found it is updated. Any fields without values in
/// the request are set to null. Otherwise, the remote issue link is created." 201 with
/// `RemoteIssueLinkIdentifies` (`id`, `self`) when created, 200 when updated; 400 when
/// `object.title` or `object.url` is missing (`RemoteObject` requires both; the example error
/// is `{"errorMessages":[],"errors":{"title":"'title' is required."}}`) or `globalId` is over
/// 255 characters; 403 "if the user does not have permission to link issues"; 404 "if the
/// issue is not found or the user does not have permission to view the issue".
pub(super) async fn put_remote_link(
    State(state): State<Arc<JiraState>>,
    Path((version, id_or_key)): Path<(String, String)>,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    if state.links.denied("BROWSE_PROJECTS") {
        return no_such_issue();
    }
    let Some((issue_id, issue)) = state.find(&id_or_key) else {
        return no_such_issue();
    };
    if state.links.denied("LINK_ISSUES") {
        return jira_error(403, "You do not have permission to link issues.");
    }
    let body = body.unwrap_or(Value::Null);
    let object = body.get("object").cloned().unwrap_or(Value::Null);
    for field in ["title", "url"] {
        if object
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return json_response(
                400,
                &json!({ "errorMessages": [], "errors": { field: format!("'{field}' is required.") } }),
            );
        }
    }
    let global_id = body
        .get("globalId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if global_id
        .as_ref()
        .is_some_and(|g| g.chars().count() > MAX_GLOBAL_ID_CHARS)
    {
        return json_response(
            400,
            &json!({ "errorMessages": [], "errors": { "globalId": "The global ID must be at most 255 characters." } }),
        );
    }
    let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
    let mut data = lock(&state.links.inner);
    let existing = global_id.as_ref().and_then(|g| {
        data.by_issue
            .get(&issue_id)
            .and_then(|links| links.iter().position(|l| l.global_id.as_ref() == Some(g)))
    });
    let (status, id) = match existing {
        Some(i) => {
            let link = &mut data
                .by_issue
                .get_mut(&issue_id)
                .expect("the position was found in this issue's links")[i];
            link.application = field("application");
            link.relationship = field("relationship");
            link.object = object;
            (200, link.id)
        }
        None => {
            data.next_id += 1;
            let id = 10_000 + data.next_id;
            data.by_issue.entry(issue_id).or_default().push(StoredLink {
                id,
                global_id,
                application: field("application"),
                relationship: field("relationship"),
                object,
            });
            (201, id)
        }
    };
    drop(data);
    json_response(
        status,
        &json!({
            "id": id,
            "self": state.api(&version, &format!("issue/{}/remotelink/{id}", issue.key)),
        }),
    )
}

/// `GET /rest/api/{2,3}/issue/{issueIdOrKey}/remotelink[?globalId=…]`: every `RemoteIssueLink`
/// of the issue, or with `globalId` "the record with that global ID" (404 when there is none);
/// 404 for an issue that is not there or not visible.
pub(super) async fn list_remote_links(
    State(state): State<Arc<JiraState>>,
    Path((version, id_or_key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    if state.links.denied("BROWSE_PROJECTS") {
        return no_such_issue();
    }
    let Some((issue_id, issue)) = state.find(&id_or_key) else {
        return no_such_issue();
    };
    let wanted = query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "globalId")
        .map(|(_, v)| v);
    let data = lock(&state.links.inner);
    let links = data.by_issue.get(&issue_id).cloned().unwrap_or_default();
    drop(data);
    match wanted {
        Some(g) => match links.iter().find(|l| l.global_id.as_deref() == Some(&g)) {
            Some(l) => json_response(200, &render(&state, &version, &issue.key, l)),
            None => jira_error(404, "No remote link with the given global ID was found."),
        },
        None => json_response(
            200,
            &Value::Array(
                links
                    .iter()
                    .map(|l| render(&state, &version, &issue.key, l))
                    .collect(),
            ),
        ),
    }
}

/// `GET /rest/api/{2,3}/mypermissions?projectKey=…&permissions=A,B`: `Permissions`, a map from
/// each key asked to its `UserPermission` (`id`, `key`, `name`, `type`, `description`,
/// `havePermission`). `permissions` is required ("This parameter accepts a comma-separated
/// list"); empty, or with an invalid key: 400; a `projectKey` of no project: 404 ("if the
/// project or issue is not found"). The fake's projects are the prefixes of its issues' keys.
pub(super) async fn my_permissions(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    RawQuery(query): RawQuery,
    req: Request<Body>,
) -> Response {
    if !state.version_served(&version) {
        return not_found(State(state), req).await;
    }
    let pairs = query_pairs(query.as_deref());
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let keys: Vec<String> = param("permissions")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return jira_error(400, "The permissions parameter is required.");
    }
    if let Some(bad) = keys
        .iter()
        .find(|k| !PERMISSIONS.iter().any(|(p, ..)| p == k))
    {
        return jira_error(400, &format!("Permission key '{bad}' is invalid."));
    }
    if let Some(project) = param("projectKey") {
        let known = lock(&state.data)
            .issues
            .keys()
            .any(|k| k.rsplit_once('-').is_some_and(|(p, _)| p == project));
        if !known {
            return jira_error(
                404,
                &format!("No project could be found with key '{project}'."),
            );
        }
    }
    let mut permissions = Map::new();
    for key in keys {
        let (_, id, name, description) = PERMISSIONS
            .iter()
            .find(|(p, ..)| *p == key)
            .expect("every key was checked against the list");
        permissions.insert(
            key.clone(),
            json!({
                "id": id,
                "key": key,
                "name": name,
                "type": "PROJECT",
                "description": description,
                "havePermission": !state.links.denied(&key),
            }),
        );
    }
    json_response(200, &json!({ "permissions": permissions }))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{Value, json};

    use crate::sandbox::jira::{FakeIssue, FakeJira, FakeJiraConfig};

    async fn send(
        jira: &FakeJira,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = jira.base_url().join(path).expect("a path");
        let mut req = reqwest::Client::new()
            .request(method, url)
            .header("Authorization", jira.authorization().expect("a credential"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the fake answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn with_issue() -> FakeJira {
        let jira = FakeJira::start(FakeJiraConfig::cloud())
            .await
            .expect("the fake starts");
        jira.insert(FakeIssue::new("OPS-1", "down", Utc::now()));
        jira
    }

    const PATH: &str = "rest/api/3/issue/OPS-1/remotelink";

    /// A global id creates once (201) and then updates (200) the same link; a field the update
    /// leaves out is null afterwards, as Jira documents.
    #[tokio::test]
    async fn create_then_update_by_global_id_nulls_what_is_left_out() {
        let jira = with_issue().await;
        let first = json!({
            "globalId": "g1",
            "relationship": "causes",
            "application": { "name": "GitLab" },
            "object": { "url": "https://x/1", "title": "one" },
        });
        let (status, created) = send(&jira, reqwest::Method::POST, PATH, Some(first)).await;
        assert_eq!(status, 201);
        let again = json!({ "globalId": "g1", "object": { "url": "https://x/1", "title": "two" } });
        let (status, updated) = send(&jira, reqwest::Method::POST, PATH, Some(again)).await;
        assert_eq!(status, 200, "the same global id updates");
        assert_eq!(created["id"], updated["id"]);
        let links = jira.remote_links("OPS-1");
        assert_eq!(links.len(), 1, "{links:#?}");
        assert_eq!(links[0]["object"]["title"], "two");
        assert!(
            links[0].get("relationship").is_none(),
            "nulled: {:#}",
            links[0]
        );
        assert!(
            links[0].get("application").is_none(),
            "nulled: {:#}",
            links[0]
        );
        // Without a global id every request creates another link.
        let plain = json!({ "object": { "url": "https://x/2", "title": "three" } });
        let (status, _) = send(&jira, reqwest::Method::POST, PATH, Some(plain)).await;
        assert_eq!(status, 201);
        let (status, listed) = send(&jira, reqwest::Method::GET, PATH, None).await;
        assert_eq!(status, 200);
        assert_eq!(listed.as_array().map(Vec::len), Some(2));
        let (status, one) = send(
            &jira,
            reqwest::Method::GET,
            &format!("{PATH}?globalId=g1"),
            None,
        )
        .await;
        assert_eq!((status, &one["object"]["title"]), (200, &json!("two")));
    }

    /// `object.title` and `object.url` are required (400); a missing issue is 404; without
    /// "Link issues" a link is 403 and `mypermissions` says so.
    #[tokio::test]
    async fn refusals() {
        let jira = with_issue().await;
        let no_title = json!({ "object": { "url": "https://x/1" } });
        let (status, body) = send(&jira, reqwest::Method::POST, PATH, Some(no_title)).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"]["title"], "'title' is required.");
        let ok = json!({ "object": { "url": "https://x/1", "title": "t" } });
        let (status, _) = send(
            &jira,
            reqwest::Method::POST,
            "rest/api/3/issue/OPS-9/remotelink",
            Some(ok.clone()),
        )
        .await;
        assert_eq!(status, 404);

        let ask = "rest/api/3/mypermissions?projectKey=OPS&permissions=BROWSE_PROJECTS,LINK_ISSUES";
        let (status, body) = send(&jira, reqwest::Method::GET, ask, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["permissions"]["LINK_ISSUES"]["havePermission"], true);
        jira.deny_permission("LINK_ISSUES");
        let (_, body) = send(&jira, reqwest::Method::GET, ask, None).await;
        assert_eq!(body["permissions"]["LINK_ISSUES"]["havePermission"], false);
        assert_eq!(
            body["permissions"]["BROWSE_PROJECTS"]["havePermission"],
            true
        );
        let (status, _) = send(&jira, reqwest::Method::POST, PATH, Some(ok)).await;
        assert_eq!(status, 403);

        let (status, _) = send(
            &jira,
            reqwest::Method::GET,
            "rest/api/3/mypermissions?permissions=NOT_A_PERMISSION",
            None,
        )
        .await;
        assert_eq!(status, 400, "an invalid key");
        let (status, _) = send(
            &jira,
            reqwest::Method::GET,
            "rest/api/3/mypermissions?projectKey=NOPE&permissions=LINK_ISSUES",
            None,
        )
        .await;
        assert_eq!(status, 404, "no such project");
    }
}
