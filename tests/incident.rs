//! Incident details over GitLab's GraphQL API, against the sandbox's GraphQL endpoint: the
//! severity from the priority mapping, and the "Start time" / "End time" timeline events at
//! Jira's exact times, each written once.

use jira_gitlab_sync::sandbox::gitlab::{FakeGitLabConfig, FakeTimelineEvent, access};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use serde_json::{Value, json};

use crate::support::{PROJECT, Setup, World, ago, rule};

/// The GraphQL requests the fake GitLab received, by the field each one asked for.
fn graphql_calls(w: &World) -> Vec<String> {
    w.gitlab
        .requests()
        .iter()
        .filter(|r| r.path == "/api/graphql")
        .map(|r| {
            let query = r
                .body
                .as_ref()
                .and_then(|b| b["query"].as_str())
                .unwrap_or_default()
                .to_owned();
            [
                "issueSetSeverity",
                "timelineEventCreate",
                "timelineEventUpdate",
                "incidentManagementTimelineEvents",
                "issue(iid",
            ]
            .into_iter()
            .find(|f| query.contains(f))
            .unwrap_or("other")
            .to_owned()
        })
        .collect()
}

/// The iid of the incident replicating `key`.
fn iid_of(w: &World, key: &str) -> u64 {
    w.gitlab_issues()
        .into_iter()
        .find(|i| i.title.contains(&format!("[{key}]")))
        .unwrap_or_else(|| panic!("{key} replicated"))
        .iid
}

fn events(w: &World, key: &str) -> Vec<FakeTimelineEvent> {
    w.gitlab.timeline_events(PROJECT, iid_of(w, key))
}

fn tagged<'e>(events: &'e [FakeTimelineEvent], tag: &str) -> Vec<&'e FakeTimelineEvent> {
    events
        .iter()
        .filter(|e| e.tags.iter().any(|t| t == tag))
        .collect()
}

/// A setup whose rule maps priorities as given (over the default map).
fn with_severity_map(map: &str) -> Setup {
    Setup {
        rules: format!(
            "{}[rule.severity]\n{map}\n",
            rule("ops", "incident", "project = OPS")
        ),
        ..Setup::default()
    }
}

/// Each incident's severity is the rule's mapping of its Jira priority, `info` as LOW and an
/// unmapped or missing priority as UNKNOWN (a new incident's default, so not sent), visible in
/// GitLab's REST issue too; a priority edit in Jira changes it once, and a cycle with no change
/// sends nothing.
#[tokio::test]
async fn severity_follows_the_priority_mapping() {
    let w = World::start(with_severity_map("\"P1 - Outage\" = \"critical\"")).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "outage", ago(120)).with_priority(Some("P1 - Outage")));
    w.jira
        .insert(FakeIssue::new("OPS-2", "cosmetic", ago(110)).with_priority(Some("Lowest")));
    w.jira
        .insert(FakeIssue::new("OPS-3", "odd", ago(100)).with_priority(Some("Whenever")));
    w.jira
        .insert(FakeIssue::new("OPS-4", "none", ago(90)).with_priority(None));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.created, 4, "{report:?}");
    let severity = |key: &str| {
        w.gitlab
            .issue(PROJECT, iid_of(&w, key))
            .expect("the incident")
            .severity
    };
    assert_eq!(severity("OPS-1"), "CRITICAL", "mapped by the rule");
    assert_eq!(severity("OPS-2"), "LOW", "Lowest is info, and info is LOW");
    assert_eq!(severity("OPS-3"), "UNKNOWN", "an unmapped priority");
    assert_eq!(severity("OPS-4"), "UNKNOWN", "no priority");
    assert_eq!(
        graphql_calls(&w)
            .iter()
            .filter(|c| *c == "issueSetSeverity")
            .count(),
        2,
        "one severity write per incident whose severity is not GitLab's default (UNKNOWN)"
    );
    // REST shows it (`lib/api/entities/issue.rb` exposes `severity` for incidents).
    let rest: Value = reqwest::Client::new()
        .get(format!(
            "{}api/v4/projects/{PROJECT}/issues/{}",
            w.gitlab.base_url(),
            iid_of(&w, "OPS-1")
        ))
        .header("PRIVATE-TOKEN", FakeGitLabConfig::DEFAULT_TOKEN)
        .send()
        .await
        .expect("GET issue")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rest["severity"], "CRITICAL");

    w.gitlab.clear_requests();
    w.jira.update("OPS-2", ago(2), |i| {
        i.priority = Some("Highest".into());
    });
    w.jira.update("OPS-3", ago(1), |i| {
        i.labels.push("touched".into());
    });
    w.once().await.expect("the cycle runs");
    assert_eq!(severity("OPS-2"), "CRITICAL", "the edit is carried over");
    assert_eq!(
        graphql_calls(&w),
        ["issueSetSeverity"],
        "one write for the edited priority, none for the unchanged one"
    );

    w.gitlab.clear_requests();
    w.once().await.expect("an idle cycle");
    assert!(graphql_calls(&w).is_empty(), "nothing re-sent");
}

/// The "Start time" event is at Jira's created moment and the "End time" event at its
/// resolution, to the second, written by the sync's user; re-running writes neither again; a
/// reopen and a resolution at another time moves the one "End time" event there.
#[tokio::test]
async fn timeline_events_at_exact_jira_times_once() {
    let w = World::start(Setup::default()).await;
    let (created, resolved) = (ago(300), ago(200));
    w.jira
        .insert(FakeIssue::new("OPS-1", "outage", created).resolved_at(resolved));
    w.jira.insert(FakeIssue::new("OPS-2", "ongoing", ago(100)));
    w.once().await.expect("the cycle runs");
    let mut calls = graphql_calls(&w);
    calls.sort();
    assert_eq!(
        calls,
        [
            "issueSetSeverity",
            "issueSetSeverity",
            "timelineEventCreate",
            "timelineEventCreate",
            "timelineEventCreate"
        ],
        "per incident: one severity (its answer gives the incident's global id) and one create \
         per event"
    );

    let one = events(&w, "OPS-1");
    assert_eq!(one.len(), 2, "{one:#?}");
    let start = tagged(&one, "Start time");
    let end = tagged(&one, "End time");
    assert_eq!(start.len(), 1, "{one:#?}");
    assert_eq!(end.len(), 1, "{one:#?}");
    assert_eq!(start[0].occurred_at, created, "Jira's created time");
    assert_eq!(end[0].occurred_at, resolved, "Jira's resolution time");
    assert_eq!(start[0].author_id, 1, "written by the sync's user");
    assert!(
        start[0].note.contains("OPS-1") && start[0].note.chars().count() <= 280,
        "{:?}",
        start[0].note
    );
    let two = events(&w, "OPS-2");
    assert_eq!(
        (
            tagged(&two, "Start time").len(),
            tagged(&two, "End time").len()
        ),
        (1, 0),
        "an open incident has a start and no end yet: {two:#?}"
    );

    // Re-running, and a fresh process over the same store: nothing twice.
    w.gitlab.clear_requests();
    w.once().await.expect("a second cycle");
    w.once().await.expect("a third cycle");
    assert!(graphql_calls(&w).is_empty(), "{:?}", graphql_calls(&w));
    assert_eq!(events(&w, "OPS-1").len(), 2);

    // Reopened, then resolved again later: one "End time", moved to the new resolution.
    w.jira.reopen("OPS-1", ago(3));
    w.once().await.expect("the reopen replicates");
    let again = ago(2);
    w.jira.resolve("OPS-1", again);
    w.gitlab.clear_requests();
    w.once().await.expect("the new resolution replicates");
    let one = events(&w, "OPS-1");
    let end = tagged(&one, "End time");
    assert_eq!(end.len(), 1, "still one end event: {one:#?}");
    assert_eq!(end[0].occurred_at, again, "at the latest resolution");
    assert_eq!(tagged(&one, "Start time").len(), 1);
    assert_eq!(
        graphql_calls(&w),
        ["timelineEventUpdate"],
        "moved, not added"
    );
}

/// `timeline_events = false` leaves the timeline alone (the severity is still set).
#[tokio::test]
async fn timeline_events_can_be_turned_off() {
    let w = World::start(Setup {
        rules: format!(
            "{}\ntimeline_events = false\n",
            rule("ops", "incident", "project = OPS").trim_end()
        ),
        ..Setup::default()
    })
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "outage", ago(300)).resolved_at(ago(200)));
    w.once().await.expect("the cycle runs");
    assert!(events(&w, "OPS-1").is_empty());
    assert_eq!(graphql_calls(&w), ["issueSetSeverity"]);
}

/// A token whose user may set severities (Reporter) but not write timeline events (Developer)
/// gets one warning, and the incidents are replicated all the same.
#[tokio::test]
async fn a_refused_timeline_is_a_warning_not_a_failure() {
    let w = World::start(Setup::default()).await;
    assert!(w.gitlab.set_access_level(PROJECT, 1, access::REPORTER));
    w.jira
        .insert(FakeIssue::new("OPS-1", "one", ago(300)).resolved_at(ago(200)));
    w.jira.insert(FakeIssue::new("OPS-2", "two", ago(100)));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    assert_eq!(report.counts.created, 2, "{report:?}");
    assert!(events(&w, "OPS-1").is_empty());
    let creates = graphql_calls(&w)
        .iter()
        .filter(|c| *c == "timelineEventCreate")
        .count();
    assert!(
        creates <= 2,
        "one refused create per incident in flight at most, then the rule stops asking: {creates}"
    );
    assert_eq!(
        w.gitlab
            .issue(PROJECT, iid_of(&w, "OPS-2"))
            .expect("OPS-2")
            .severity,
        "MEDIUM",
        "the severity (Reporter may set it) is written all the same"
    );
}

/// Sends `query` with `variables` to the fake's GraphQL endpoint with `token`.
async fn graphql(w: &World, token: &str, query: &str, variables: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}api/graphql", w.gitlab.base_url()))
        .header("PRIVATE-TOKEN", token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("POST /api/graphql");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON answer"))
}

/// The sandbox answers as GitLab does: an unknown field before execution (no `data`), an
/// object out of reach as a `null` field with GitLab's access error and its path, a refused
/// value in the mutation's own `errors`, a bad token 401, a bad enum as an invalid variable.
#[tokio::test]
async fn the_sandbox_answers_graphql_like_gitlab() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "one", ago(300)));
    w.once().await.expect("the cycle runs");
    let token = FakeGitLabConfig::DEFAULT_TOKEN;

    let (status, body) = graphql(
        &w,
        token,
        "query { project(fullPath: \"acme/ops\") { nope } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "undefinedField");
    assert_eq!(
        body["errors"][0]["message"],
        "Field 'nope' doesn't exist on type 'Project'"
    );

    let set = "mutation($p: ID!, $i: String!, $s: IssuableSeverity!) { issueSetSeverity(input: {projectPath: $p, iid: $i, severity: $s}) { errors issue { severity } } }";
    let (_, body) = graphql(
        &w,
        token,
        set,
        json!({ "p": "acme/ops", "i": "999", "s": "HIGH" }),
    )
    .await;
    assert_eq!(body["data"]["issueSetSeverity"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "The resource that you are attempting to access does not exist or you don't have permission to perform this action"
    );
    assert_eq!(body["errors"][0]["path"], json!(["issueSetSeverity"]));

    let iid = iid_of(&w, "OPS-1").to_string();
    let (_, body) = graphql(
        &w,
        token,
        set,
        json!({ "p": "acme/ops", "i": iid, "s": "SEVERE" }),
    )
    .await;
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "Variable $s of type IssuableSeverity! was provided invalid value"
    );

    let (_, body) = graphql(
        &w,
        token,
        set,
        json!({ "p": "acme/ops", "i": iid, "s": "HIGH" }),
    )
    .await;
    assert_eq!(
        body["data"]["issueSetSeverity"]["issue"]["severity"], "HIGH",
        "{body}"
    );

    let id = format!(
        "gid://gitlab/Issue/{}",
        w.gitlab
            .issue(PROJECT, iid_of(&w, "OPS-1"))
            .expect("OPS-1")
            .id
    );
    let create = "mutation($id: IssueID!, $note: String!, $at: Time!, $tags: [String!]) { timelineEventCreate(input: {incidentId: $id, note: $note, occurredAt: $at, timelineEventTagNames: $tags}) { errors timelineEvent { occurredAt timelineEventTags { nodes { name } } } } }";
    let (_, body) = graphql(
        &w,
        token,
        create,
        json!({ "id": id, "note": "n".repeat(281), "at": "2025-01-01T10:00:00.250Z", "tags": ["Start time"] }),
    )
    .await;
    assert_eq!(
        body["data"]["timelineEventCreate"]["errors"],
        json!(["Timeline text is too long (maximum is 280 characters)"])
    );
    let (_, body) = graphql(
        &w,
        token,
        create,
        json!({ "id": id, "note": "n", "at": "2025-01-01T10:00:00.250Z", "tags": ["No such tag"] }),
    )
    .await;
    assert_eq!(
        body["data"]["timelineEventCreate"]["errors"],
        json!(["Following tags don't exist: [\"no such tag\"]"])
    );
    let (_, body) = graphql(
        &w,
        token,
        create,
        json!({ "id": id, "note": "n", "at": "2025-01-01T10:00:00.250Z", "tags": ["start TIME"] }),
    )
    .await;
    let made = &body["data"]["timelineEventCreate"]["timelineEvent"];
    assert_eq!(
        made["occurredAt"], "2025-01-01T10:00:00Z",
        "whole seconds out"
    );
    assert_eq!(
        made["timelineEventTags"]["nodes"][0]["name"], "Start time",
        "a predefined tag keeps its own spelling"
    );

    let (status, body) =
        graphql(&w, "glpat-wrong", "query { currentUser { id } }", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["message"], "Invalid token");
}

/// What people do in GitLab is followed: a timeline event a person deleted is written again
/// when the incident next changes; an incident a person deleted is recorded as gone (no
/// failure, never written again).
#[tokio::test]
async fn deleted_events_and_incidents_are_followed() {
    let w = World::start(Setup::default()).await;
    let resolved = ago(200);
    w.jira
        .insert(FakeIssue::new("OPS-1", "one", ago(300)).resolved_at(resolved));
    w.jira.insert(FakeIssue::new("OPS-2", "two", ago(250)));
    w.once().await.expect("the cycle runs");
    let end = tagged(&events(&w, "OPS-1"), "End time")[0].clone();
    assert!(w.gitlab.delete_timeline_event(end.id));

    // Reopened and resolved again: the end event is gone, so it is added again, at the new time.
    w.jira.reopen("OPS-1", ago(4));
    w.once().await.expect("the reopen replicates");
    let again = ago(2);
    w.jira.resolve("OPS-1", again);
    w.once().await.expect("the resolution replicates");
    let ends: Vec<_> = tagged(&events(&w, "OPS-1"), "End time")
        .iter()
        .map(|e| e.occurred_at)
        .collect();
    assert_eq!(ends, [again], "one end event, at the new resolution");

    // OPS-2's incident deleted in GitLab; its priority edited in Jira.
    assert!(w.gitlab.delete_issue(PROJECT, iid_of(&w, "OPS-2")));
    w.jira
        .update("OPS-2", ago(1), |i| i.priority = Some("Highest".into()));
    let report = w.once().await.expect("the cycle runs");
    assert_eq!(report.counts.failed, 0, "{report:?}");
    w.gitlab.clear_requests();
    w.jira
        .update("OPS-2", ago(0), |i| i.priority = Some("Low".into()));
    w.once().await.expect("the cycle runs");
    assert!(
        graphql_calls(&w).is_empty(),
        "a gone incident is never written again: {:?}",
        graphql_calls(&w)
    );
}

/// Incidents replicated without timeline events get them, and only them, from a later
/// `backfill` over their period; a second backfill writes nothing.
#[tokio::test]
async fn a_backfill_adds_what_earlier_runs_did_not_write() {
    let w = World::start(Setup {
        rules: format!(
            "{}\ntimeline_events = false\n",
            rule("ops", "incident", "project = OPS").trim_end()
        ),
        ..Setup::default()
    })
    .await;
    let (created, resolved) = (ago(300), ago(200));
    w.jira
        .insert(FakeIssue::new("OPS-1", "outage", created).resolved_at(resolved));
    w.once().await.expect("the cycle runs");
    assert!(events(&w, "OPS-1").is_empty());

    crate::support::edit_config(&w, "timeline_events = false", "timeline_events = true");
    let since = (created - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    w.gitlab.clear_requests();
    let out = w.binary(&["backfill", "--since", &since]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::output_text(&out)
    );
    let one = events(&w, "OPS-1");
    assert_eq!(
        (
            tagged(&one, "Start time").len(),
            tagged(&one, "End time").len()
        ),
        (1, 1),
        "{one:#?}"
    );
    assert!(
        !graphql_calls(&w).iter().any(|c| c == "issueSetSeverity"),
        "the severity was set already: {:?}",
        graphql_calls(&w)
    );
    w.gitlab.clear_requests();
    let out = w.binary(&["backfill", "--since", &since]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::output_text(&out)
    );
    assert!(graphql_calls(&w).is_empty(), "{:?}", graphql_calls(&w));
    assert_eq!(events(&w, "OPS-1").len(), 2);
}
