//! Cloud's bulk changelog: `POST /rest/api/3/changelog/bulkfetch`, as Atlassian's OpenAPI
//! (`swagger-v3.v3.json`) describes it. The request (`BulkChangelogRequestBean`) names up to
//! 1,000 issues (`issueIdsOrKeys`), may filter the entries to some fields (`fieldIds`), and pages
//! with `maxResults` (default 1000) and `nextPageToken`. The answer
//! (`BulkChangelogResponseBean`) is `issueChangeLogs` — `IssueChangeLog`: `issueId` and
//! `changeHistories`, a list of `Changelog` — and `nextPageToken`, absent on the last page. One
//! issue's entries may continue on the next page. Issues that are not there (deleted, or hidden
//! from the account) are left out.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::super::{ParsedBody, json_response};
use super::{FakeHistory, JiraState, jira_error, not_found, render_history};

/// The most issues one request may name, and the most entries one page holds.
const MAX_ISSUES: usize = 1000;
const MAX_RESULTS: usize = 1000;

/// The page token for the entry at `offset` (opaque to the client).
fn token(offset: usize) -> String {
    format!("changelog-{offset}")
}

fn offset(token: &str) -> Option<usize> {
    token.strip_prefix("changelog-")?.parse().ok()
}

pub(super) async fn bulk_fetch(
    State(state): State<Arc<JiraState>>,
    Path(version): Path<String>,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
    req: Request<Body>,
) -> Response {
    if !state.is_cloud() || version != "3" {
        return not_found(State(state), req).await;
    }
    let body = body.unwrap_or(Value::Null);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let wanted = strings(&body["issueIdsOrKeys"]);
    if wanted.is_empty() || wanted.len() > MAX_ISSUES {
        return jira_error(
            400,
            "issueIdsOrKeys must name between 1 and 1000 issue IDs or keys.",
        );
    }
    let fields = strings(&body["fieldIds"]);
    let max = body["maxResults"]
        .as_u64()
        .map_or(MAX_RESULTS, |m| m as usize)
        .clamp(1, MAX_RESULTS)
        .min(state.config.bulk_changelog_page_cap.max(1));
    let start = match body["nextPageToken"].as_str() {
        None => 0,
        Some(t) => match offset(t) {
            Some(o) => o,
            None => return jira_error(400, "The nextPageToken is not valid."),
        },
    };
    // Every entry of the issues asked for, in the order asked, each issue's oldest first;
    // items of other fields left out when `fieldIds` filters them.
    let mut seen = std::collections::HashSet::new();
    let mut entries: Vec<(u64, usize, FakeHistory)> = Vec::new();
    for w in &wanted {
        let Some((id, issue)) = state.find(w) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        for (n, h) in issue.history.iter().enumerate() {
            let items: Vec<_> = h
                .items
                .iter()
                .filter(|i| fields.is_empty() || fields.contains(&i.field))
                .cloned()
                .collect();
            if !items.is_empty() {
                entries.push((id, n, FakeHistory { at: h.at, items }));
            }
        }
    }
    let page: Vec<&(u64, usize, FakeHistory)> = entries.iter().skip(start).take(max).collect();
    let mut logs: Vec<(u64, Vec<Value>)> = Vec::new();
    for (id, n, h) in page {
        let rendered = render_history(&state, *n, h);
        match logs.last_mut() {
            Some((last, list)) if last == id => list.push(rendered),
            _ => logs.push((*id, vec![rendered])),
        }
    }
    let mut out = json!({
        "issueChangeLogs": logs
            .into_iter()
            .map(|(id, list)| json!({ "issueId": id.to_string(), "changeHistories": list }))
            .collect::<Vec<_>>(),
    });
    if start + max < entries.len() {
        out["nextPageToken"] = json!(token(start + max));
    }
    json_response(200, &out)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};
    use serde_json::{Value, json};

    use super::super::{FakeHistory, FakeIssue, FakeJira, FakeJiraConfig};

    async fn bulk(jira: &FakeJira, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(
                jira.base_url()
                    .join("rest/api/3/changelog/bulkfetch")
                    .unwrap(),
            )
            .header("Authorization", jira.authorization().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// `fieldIds` filters the entries, issues that are not there are left out, the entries of
    /// one issue come oldest first and page on by `nextPageToken`, and over 1,000 issues is a 400.
    #[tokio::test]
    async fn bulk_changelog_filters_and_pages() {
        let jira = FakeJira::start(FakeJiraConfig::cloud()).await.unwrap();
        let t0: DateTime<Utc> = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let mut issue = FakeIssue::new("OPS-1", "a", t0)
            .transitioned(t0 + Duration::minutes(1), "In Progress", "indeterminate")
            .transitioned(t0 + Duration::minutes(3), "Done", "done");
        issue.history.insert(
            1,
            FakeHistory::field(t0 + Duration::minutes(2), "labels", "", "x"),
        );
        jira.insert(issue);
        let id = jira.get("OPS-1").unwrap().id.unwrap().to_string();
        let (status, all) = bulk(&jira, json!({ "issueIdsOrKeys": [id, "OPS-404"] })).await;
        assert_eq!(status, 200);
        let logs = all["issueChangeLogs"].as_array().unwrap();
        assert_eq!(logs.len(), 1, "a missing issue is left out: {all}");
        assert_eq!(logs[0]["issueId"], json!(id));
        assert_eq!(logs[0]["changeHistories"].as_array().unwrap().len(), 3);
        assert!(all.get("nextPageToken").is_none(), "one page: {all}");
        let (_, first) = bulk(
            &jira,
            json!({ "issueIdsOrKeys": ["OPS-1"], "fieldIds": ["status"], "maxResults": 1 }),
        )
        .await;
        let histories = &first["issueChangeLogs"][0]["changeHistories"];
        assert_eq!(histories[0]["items"][0]["toString"], "In Progress");
        let token = first["nextPageToken"]
            .as_str()
            .expect("more to come")
            .to_owned();
        let (_, second) = bulk(
            &jira,
            json!({ "issueIdsOrKeys": ["OPS-1"], "fieldIds": ["status"], "maxResults": 1,
                    "nextPageToken": token }),
        )
        .await;
        let histories = &second["issueChangeLogs"][0]["changeHistories"];
        assert_eq!(
            histories[0]["items"][0]["toString"], "Done",
            "labels filtered out"
        );
        assert!(second.get("nextPageToken").is_none(), "the last page");
        let many: Vec<String> = (0..1001).map(|n| format!("OPS-{n}")).collect();
        let (status, _) = bulk(&jira, json!({ "issueIdsOrKeys": many })).await;
        assert_eq!(status, 400, "over 1,000 issues");
    }
}
