//! Label events in the fake GitLab: each label added to or removed from an issue is kept as a
//! resource label event with its time, scoped labels replace each other, and
//! `GET /projects/:id/issues/:iid/resource_label_events` serves them as GitLab does.
//!
//! What GitLab does, and where:
//! - `ResourceEvents::ChangeLabelsService#execute` writes one `resource_label_events` row per
//!   label added or removed, with `created_at: resource.system_note_timestamp`
//!   (`app/services/resource_events/change_labels_service.rb`).
//! - `system_note_timestamp` is `params[:created_at] || params[:updated_at]` once
//!   `Issues::BaseService#filter_params` dropped what the user may not set (both need
//!   `set_issue_created_at` / `set_issue_updated_at`: an administrator or an owner), and
//!   `Time.current` otherwise (`Noteable#system_note_timestamp`). So an owner's `created_at` wins
//!   over `updated_at` for the events' time.
//! - Creating an issue with labels records their `add` events too, at the same timestamp
//!   (`Issuable::CommonSystemNotesService`, run on create with the issue's labels as changed).
//! - Scoped labels (`scope::value`; the scope is everything before the last `::`) are mutually
//!   exclusive: of the labels an issue would hold in one scope, the one selected last stays
//!   (`filter_mutually_exclusive_labels` in `ee/app/services/ee/issuable/callbacks/labels.rb`,
//!   with `Label#scoped_label_key`), and the others are removed, with their `remove` events.
//! - The API (`lib/api/resource_label_events.rb`, `Entities::ResourceLabelEvent`) lists an
//!   issue's events oldest first, paged (`per_page` at most 100), each with `id`, `user`,
//!   `created_at`, `resource_type` `Issue`, `resource_id` (the issue's global id), `label`
//!   (`id`, `name`, `color`, `description`) and `action` `add` or `remove`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::super::{json_response, lock, query_pairs};
use super::{FakeGitLab, GitLabState, Handled, message};

/// One label added to or removed from an issue, as GitLab keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeLabelEvent {
    pub id: u64,
    /// The issue's global id.
    pub issue_id: u64,
    pub label: String,
    /// `add` (true) or `remove` (false).
    pub added: bool,
    pub created_at: DateTime<Utc>,
    pub user_id: u64,
}

/// The scope of a scoped label (`workflow::in review` → `workflow`; `a::b::c` → `a::b`).
fn scope(label: &str) -> Option<&str> {
    label
        .rfind("::")
        .map(|i| &label[..i])
        .filter(|s| !s.is_empty())
}

/// Keeps one label per scope in `labels`: the one selected last among `selected` (the labels a
/// request named, in its order); scopes none of them names are left as they are.
pub(super) fn exclusive(labels: &mut Vec<String>, selected: &[String]) {
    let mut keep: Vec<&String> = Vec::new();
    for s in selected.iter().rev() {
        if let Some(sc) = scope(s)
            && !keep.iter().any(|k| scope(k) == Some(sc))
            && labels.contains(s)
        {
            keep.push(s);
        }
    }
    labels.retain(|l| match scope(l) {
        Some(sc) => keep
            .iter()
            .find(|k| scope(k) == Some(sc))
            .is_none_or(|k| *k == l),
        None => true,
    });
}

/// Records the events of an issue's labels going from `before` to `after`: removals first,
/// then additions, all at `at`.
pub(super) fn record(
    events: &mut Vec<FakeLabelEvent>,
    next_id: &mut u64,
    issue_id: u64,
    (before, after): (&[String], &[String]),
    at: DateTime<Utc>,
    user_id: u64,
) {
    let removed = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| (l, false));
    let added = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|l| (l, true));
    for (label, added) in removed.chain(added).collect::<Vec<_>>() {
        *next_id += 1;
        events.push(FakeLabelEvent {
            id: *next_id,
            issue_id,
            label: label.clone(),
            added,
            created_at: at,
            user_id,
        });
    }
}

impl FakeGitLab {
    /// The label events of issue `iid` of project `project_id`, oldest first.
    pub fn label_events(&self, project_id: u64, iid: u64) -> Vec<FakeLabelEvent> {
        let data = lock(&self.inner.state.data);
        let Some(project) = data.projects.iter().find(|p| p.cfg.id == project_id) else {
            return Vec::new();
        };
        let Some(issue) = project.issues.get(&iid) else {
            return Vec::new();
        };
        let mut out: Vec<FakeLabelEvent> = project
            .label_events
            .iter()
            .filter(|e| e.issue_id == issue.id)
            .cloned()
            .collect();
        out.sort_by_key(|e| (e.created_at, e.id));
        out
    }
}

/// `GET /projects/:id/issues/:iid/resource_label_events`.
pub(super) async fn resource_label_events(
    State(state): State<Arc<GitLabState>>,
    Path((id, iid)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Handled {
    let user = state.authenticate(&headers)?;
    let pairs = query_pairs(query.as_deref());
    let number = |name: &str, default: u64| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let per_page = number("per_page", 20).clamp(1, 100);
    let page = number("page", 1).max(1);
    let mut guard = lock(&state.data);
    let data = &mut *guard;
    let (project, _) = data.project_for(&id, &user)?;
    let issue = iid
        .parse::<u64>()
        .ok()
        .and_then(|iid| project.issues.get(&iid))
        .ok_or_else(|| message(404, "404 Not found"))?;
    let mut events: Vec<&FakeLabelEvent> = project
        .label_events
        .iter()
        .filter(|e| e.issue_id == issue.id)
        .collect();
    events.sort_by_key(|e| (e.created_at, e.id));
    let total = events.len() as u64;
    let total_pages = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = events
        .iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|e| {
            json!({
                "id": e.id,
                "user": { "id": e.user_id },
                "created_at": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "resource_type": "Issue",
                "resource_id": e.issue_id,
                "label": {
                    "id": label_id(&e.label),
                    "name": e.label,
                    "color": "#6699cc",
                    "description": null,
                },
                "action": if e.added { "add" } else { "remove" },
            })
        })
        .collect();
    let mut resp = json_response(200, &Value::Array(items));
    let next = (page < total_pages).then(|| (page + 1).to_string());
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-page", page.to_string()),
        ("x-per-page", per_page.to_string()),
        ("x-next-page", next.unwrap_or_default()),
        ("x-total", total.to_string()),
        ("x-total-pages", total_pages.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}

/// A stable id for a label name.
fn label_id(name: &str) -> u64 {
    name.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
    }) % 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| (*l).to_owned()).collect()
    }

    /// Adding a scoped label removes the other label of its scope; other scopes and plain
    /// labels stay.
    #[test]
    fn scoped_labels_replace_each_other() {
        let mut labels = v(&[
            "jira",
            "workflow::todo",
            "severity::high",
            "workflow::doing",
        ]);
        exclusive(&mut labels, &v(&["workflow::doing"]));
        assert_eq!(labels, v(&["jira", "severity::high", "workflow::doing"]));
        let mut nested = v(&["a::b::c", "a::b::d", "a::x"]);
        exclusive(&mut nested, &v(&["a::b::c"]));
        assert_eq!(
            nested,
            v(&["a::b::c", "a::x"]),
            "the scope is up to the last ::"
        );
    }

    /// Over HTTP, as GitLab does: events at an owner's `updated_at`, `created_at` winning over
    /// it, a non-owner's at the time of the request; a scoped label replacing its scope's
    /// other one; the list oldest first, paged.
    #[tokio::test]
    async fn label_events_over_http() {
        use super::super::{FakeGitLab, FakeGitLabConfig, FakeUser, access};
        let mut config = FakeGitLabConfig::default();
        config.tokens.push((
            "glpat-dev".to_owned(),
            FakeUser {
                id: 2,
                username: "dev".to_owned(),
                name: "Dev".to_owned(),
                admin: false,
            },
        ));
        config.projects[0].members.push((2, access::DEVELOPER));
        let gitlab = FakeGitLab::start(config).await.expect("starts");
        let client = reqwest::Client::new();
        let owner = FakeGitLabConfig::DEFAULT_TOKEN;
        let issues = gitlab.base_url().join("api/v4/projects/1/issues").unwrap();
        let created: Value = client
            .post(issues.clone())
            .header("PRIVATE-TOKEN", owner)
            .json(&json!({ "title": "a", "labels": "jira", "created_at": "2025-02-15T09:00:00Z" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let issue = issues.join(&format!("issues/{}", created["iid"])).unwrap();
        let put = |token: &'static str, body: Value| {
            let (client, issue) = (client.clone(), issue.clone());
            async move {
                let r = client
                    .put(issue)
                    .header("PRIVATE-TOKEN", token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{body}");
            }
        };
        put(
            owner,
            json!({ "add_labels": "workflow::a", "updated_at": "2025-02-15T10:00:00Z" }),
        )
        .await;
        put(
            owner,
            json!({ "add_labels": "workflow::b", "updated_at": "2025-02-15T11:00:00Z" }),
        )
        .await;
        put(
            owner,
            json!({ "add_labels": "x", "updated_at": "2025-02-15T12:00:00Z", "created_at": "2025-02-15T12:30:00Z" }),
        )
        .await;
        let before = Utc::now();
        put(
            "glpat-dev",
            json!({ "remove_labels": "x", "updated_at": "2025-02-15T13:00:00Z" }),
        )
        .await;
        let events = gitlab.label_events(1, 1);
        let shown: Vec<(&str, bool, String)> = events
            .iter()
            .map(|e| {
                (
                    e.label.as_str(),
                    e.added,
                    e.created_at.format("%H:%M").to_string(),
                )
            })
            .collect();
        assert_eq!(
            shown[..5],
            [
                ("jira", true, "09:00".to_owned()),
                ("workflow::a", true, "10:00".to_owned()),
                ("workflow::a", false, "11:00".to_owned()),
                ("workflow::b", true, "11:00".to_owned()),
                ("x", true, "12:30".to_owned()),
            ],
            "owner times, created_at over updated_at, scoped labels replaced"
        );
        assert!(
            !events[5].added && events[5].created_at >= before,
            "a developer's updated_at is ignored: the event is at the request's time"
        );
        let page = |n: u32| {
            let url = issue
                .join(&format!(
                    "{}/resource_label_events?per_page=4&page={n}",
                    created["iid"]
                ))
                .unwrap();
            client.get(url).header("PRIVATE-TOKEN", owner).send()
        };
        let first = page(1).await.unwrap();
        assert_eq!(first.headers()["x-next-page"], "2");
        let body: Value = first.json().await.unwrap();
        assert_eq!(body.as_array().map(Vec::len), Some(4));
        assert_eq!(
            (
                &body[0]["label"]["name"],
                &body[0]["action"],
                &body[0]["created_at"]
            ),
            (
                &json!("jira"),
                &json!("add"),
                &json!("2025-02-15T09:00:00.000Z")
            )
        );
        let second = page(2).await.unwrap();
        assert_eq!(second.headers()["x-next-page"], "");
        let body: Value = second.json().await.unwrap();
        assert_eq!(body[1]["action"], "remove");
    }
}
