//! Jira's JSON, private to the client: search envelopes (Cloud and Data Center), issues, and
//! `/myself`. Each issue is decoded on its own, so one malformed issue is reported by key and the
//! rest of the page still replicates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Deployment;
use crate::domain::{
    IssueSnapshot, JiraId, JiraKey, JiraUser, PageCursor, ReadBack, SearchPage, UndecodableIssue,
};
use crate::http::{DecodeError, Response};

use super::{adf, wiki};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub error_messages: Vec<String>,
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
}

/// Cloud `search/approximate-count`.
#[derive(Debug, Deserialize)]
pub(super) struct Count {
    pub count: u64,
}

/// Cloud `search/jql`: `{issues, nextPageToken?, isLast?}`; Data Center `search`:
/// `{startAt, maxResults, total, issues}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    issues: Vec<Value>,
    next_page_token: Option<String>,
    is_last: Option<bool>,
    start_at: Option<u64>,
    total: Option<u64>,
}

/// A status change read from a changelog: when, from which status id, to which.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StatusChange {
    pub at: DateTime<Utc>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The status names (`fromString`, `toString`), as Jira wrote them at the change.
    pub from_name: Option<String>,
    pub to_name: Option<String>,
}

/// A Done-category issue without `resolutiondate`, whose resolution time is read from its
/// changelog: the latest change from a not-Done status into a Done one.
#[derive(Clone, Debug)]
pub(super) struct DoneWithoutResolution {
    /// Its place in the page's `issues`.
    pub index: usize,
    pub id: JiraId,
    pub key: JiraKey,
    pub created: DateTime<Utc>,
    /// The status changes the answer embedded (`expand=changelog`).
    pub embedded: Vec<StatusChange>,
    /// Whether the embedded changelog is the whole of it (`total` entries were given).
    pub complete: bool,
}

/// The status changes of a changelog's entries (`Changelog.items` whose `field` is `status`;
/// `from`/`to` are status ids), in any order.
pub(super) fn status_changes(entries: &[Value]) -> Vec<StatusChange> {
    entries
        .iter()
        .filter_map(|h| {
            let at = h
                .get("created")
                .and_then(Value::as_str)
                .and_then(parse_time)?;
            let items = h.get("items").and_then(Value::as_array)?;
            Some(
                items
                    .iter()
                    .filter(|i| i.get("field").and_then(Value::as_str) == Some("status"))
                    .map(move |i| {
                        let text = |k: &str| i.get(k).and_then(Value::as_str).map(str::to_owned);
                        StatusChange {
                            at,
                            from: text("from"),
                            to: text("to"),
                            from_name: text("fromString"),
                            to_name: text("toString"),
                        }
                    }),
            )
        })
        .flatten()
        .collect()
}

/// The embedded changelog of an issue (`IssueBean.changelog`, a `PageOfChangelogs`): its status
/// changes, and whether they are all of them (`histories` holds `total` entries).
pub(super) fn embedded_changelog(raw: &Value) -> (Vec<StatusChange>, bool) {
    let Some(log) = raw.get("changelog") else {
        return (Vec::new(), false);
    };
    let histories = log
        .get("histories")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let total = log.get("total").and_then(Value::as_u64);
    let complete = total.is_some_and(|t| histories.len() as u64 >= t);
    (status_changes(histories), complete)
}

/// The latest change from a status that is not Done into one that is (`is_done` says which
/// status ids are in the Done category).
pub(super) fn latest_into_done(
    changes: &[StatusChange],
    is_done: impl Fn(&str) -> bool,
) -> Option<DateTime<Utc>> {
    changes
        .iter()
        .filter(|c| {
            c.to.as_deref().is_some_and(&is_done) && !c.from.as_deref().is_some_and(&is_done)
        })
        .map(|c| c.at)
        .max()
}

/// `GET /rest/api/{2,3}/status`: status id → whether its category is Done.
pub(super) fn decode_statuses(
    response: &Response,
) -> Result<std::collections::HashMap<String, bool>, DecodeError> {
    let list: Vec<Value> = response.json()?;
    Ok(list
        .iter()
        .filter_map(|s| {
            let id = s.get("id").and_then(Value::as_str)?;
            let key = s
                .get("statusCategory")
                .and_then(|c| c.get("key"))
                .and_then(Value::as_str);
            Some((id.to_owned(), key == Some("done")))
        })
        .collect())
}

/// A page of Cloud's changelog endpoint (`PageBeanChangelog`): its status changes, and whether
/// it is the last page (`isLast`).
pub(super) fn decode_changelog_page(
    response: &Response,
) -> Result<(Vec<StatusChange>, bool, usize), DecodeError> {
    let page: Value = response.json()?;
    let values = page
        .get("values")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_last = page.get("isLast").and_then(Value::as_bool).unwrap_or(true);
    Ok((
        status_changes(values),
        is_last || values.is_empty(),
        values.len(),
    ))
}

/// One page of the bulk changelog: each issue id with its status changes on the page, and the
/// token of the next page, if there is one.
pub(super) type BulkChangelogPage = (Vec<(String, Vec<StatusChange>)>, Option<String>);

/// A page of Cloud's `POST /rest/api/3/changelog/bulkfetch` (`BulkChangelogResponseBean` in
/// Atlassian's OpenAPI, `swagger-v3.v3.json`): `issueChangeLogs` (`IssueChangeLog`: `issueId`,
/// `changeHistories`, a list of `Changelog`), and `nextPageToken`, "null" on "the last or the
/// only page". One issue's entries may continue on the next page.
pub(super) fn decode_bulk_changelog(response: &Response) -> Result<BulkChangelogPage, DecodeError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        #[serde(default)]
        issue_change_logs: Vec<IssueChangeLog>,
        next_page_token: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct IssueChangeLog {
        issue_id: Option<String>,
        #[serde(default)]
        change_histories: Vec<Value>,
    }
    let page: Page = response.json()?;
    let logs = page
        .issue_change_logs
        .into_iter()
        .filter_map(|l| Some((l.issue_id?, status_changes(&l.change_histories))))
        .collect();
    Ok((logs, page.next_page_token.filter(|t| !t.is_empty())))
}

/// Data Center's `GET /rest/api/2/issue/{key}?expand=changelog`: every status change.
pub(super) fn decode_issue_changelog(
    response: &Response,
) -> Result<Vec<StatusChange>, DecodeError> {
    let issue: Value = response.json()?;
    Ok(embedded_changelog(&issue).0)
}

/// Decodes one search page; the Done-category issues without `resolutiondate` come back with
/// no resolution yet, listed for the client to read from their changelogs.
pub(super) fn decode_page(
    response: &Response,
    deployment: Deployment,
    requested_start: u64,
) -> Result<(SearchPage, Vec<DoneWithoutResolution>), DecodeError> {
    let env: Envelope = response.json()?;
    let count = env.issues.len() as u64;
    let unsigned = |what: &str| DecodeError {
        reason: format!(
            "the search answer carries no last-page signal ({what}): it is not taken as the end of \
             the search"
        ),
        body_excerpt: response.excerpt(200),
    };
    // The walk ends only where Jira says the search ends; an answer without Jira's own signal
    // (a login page, a proxy's stand-in) is not taken for it.
    let next = match deployment {
        // `SearchAndReconcileResults` in Atlassian's OpenAPI (`swagger-v3.v3.json`): `isLast`
        // "indicates whether this is the last page", and `nextPageToken` is the "continuation
        // token to fetch the next page". An empty page with `isLast: false` is not the end.
        Deployment::Cloud => match (env.is_last, env.next_page_token) {
            (Some(true), _) => None,
            (_, Some(t)) => Some(PageCursor::Token(t)),
            (Some(false), None) => return Err(unsigned("`isLast: false` without `nextPageToken`")),
            (None, None) => return Err(unsigned("no `isLast`")),
        },
        // Data Center's `SearchResults`: `startAt`, `maxResults`, `total`. Read back where the
        // server actually started and how many it gave: it caps page sizes silently. The last
        // page is the one that reaches `total`; an empty page below it asks the same offset again.
        Deployment::DataCenter => {
            let start = env.start_at.unwrap_or(requested_start);
            let end = start + count;
            match env.total {
                Some(total) if end >= total => None,
                Some(_) => Some(PageCursor::Offset(end)),
                None => return Err(unsigned("no `total`")),
            }
        }
    };
    let mut page = SearchPage {
        next,
        total: env.total,
        date: date_header(response),
        ..SearchPage::default()
    };
    let (issues, undecodable, pending) = decode_issues(&env.issues);
    page.issues = issues;
    page.undecodable = undecodable;
    Ok((page, pending))
}

/// Issue beans, each on its own: the snapshots, the issues that could not be read, and the
/// Done-category ones without `resolutiondate` (by their index in the snapshots).
fn decode_issues(
    raws: &[Value],
) -> (
    Vec<IssueSnapshot>,
    Vec<UndecodableIssue>,
    Vec<DoneWithoutResolution>,
) {
    let (mut issues, mut undecodable, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for raw in raws {
        match snapshot(raw) {
            Ok((s, done_without_resolution)) => {
                if done_without_resolution && let Some(id) = s.id.clone() {
                    let (embedded, complete) = embedded_changelog(raw);
                    pending.push(DoneWithoutResolution {
                        index: issues.len(),
                        id,
                        key: s.key.clone(),
                        created: s.created,
                        embedded,
                        complete,
                    });
                }
                issues.push(s);
            }
            Err(bad) => undecodable.push(bad),
        }
    }
    (issues, undecodable, pending)
}

/// Cloud `POST /rest/api/3/issue/bulkfetch`'s `BulkIssueResults`: `issues` (issue beans), and
/// `issueErrors` (`IssueError`: `id`, `errorMessage`) for issues Jira could not return "due to
/// a retriable error or payload constraint". Issues "which aren't found or that the user
/// doesn't have permission to view" are in neither (Atlassian's OpenAPI, `swagger-v3.v3.json`).
pub(super) fn decode_bulk(
    response: &Response,
) -> Result<(ReadBack, Vec<DoneWithoutResolution>), DecodeError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bulk {
        #[serde(default)]
        issues: Vec<Value>,
        #[serde(default)]
        issue_errors: Vec<IssueError>,
    }
    #[derive(Deserialize)]
    struct IssueError {
        id: Option<String>,
    }
    let bulk: Bulk = response.json()?;
    let (issues, undecodable, pending) = decode_issues(&bulk.issues);
    let unanswered = bulk
        .issue_errors
        .into_iter()
        .filter_map(|e| e.id.and_then(|id| JiraId::parse(&id).ok()))
        .collect();
    Ok((
        ReadBack {
            issues,
            undecodable,
            unanswered,
        },
        pending,
    ))
}

/// The answer's `Date` header: when Jira generated it, by Jira's clock (RFC 9110 §6.6.1,
/// IMF-fixdate such as `Tue, 01 Dec 2026 14:04:24 GMT`, which RFC 2822 parsing reads).
fn date_header(response: &Response) -> Option<DateTime<Utc>> {
    let value = response.headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Parses Jira's timestamp forms: `2025-02-15T09:45:32.700+0100` (REST), and RFC 3339.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// One issue; `true` beside it when it is in a Done-category status without `resolutiondate`
/// (its resolution time is then left for the changelog to give).
fn snapshot(raw: &Value) -> Result<(IssueSnapshot, bool), UndecodableIssue> {
    let key_text = raw
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or("<unknown>");
    let bad = |reason: String| UndecodableIssue {
        key: key_text.to_owned(),
        reason,
    };
    let key =
        JiraKey::parse(key_text).map_err(|k| bad(format!("key {k:?} is not an issue key")))?;
    // Every issue bean carries its id (`IssueBean.id` in Atlassian's OpenAPI), as text.
    let id = match raw.get("id") {
        Some(Value::String(s)) => JiraId::parse(s),
        Some(Value::Number(n)) => JiraId::parse(&n.to_string()),
        _ => Err(String::new()),
    }
    .map_err(|s| bad(format!("`id` {s:?} is not an issue id")))?;
    let fields = raw
        .get("fields")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `fields` object".into()))?;
    let time = |name: &str, required: bool| -> Result<Option<DateTime<Utc>>, UndecodableIssue> {
        match fields.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(bad(format!("field `{name}` is missing"))),
            Some(Value::String(s)) => parse_time(s)
                .map(Some)
                .ok_or_else(|| bad(format!("field `{name}` is not a timestamp: {s:?}"))),
            Some(other) => Err(bad(format!("field `{name}` is not a timestamp: {other}"))),
        }
    };
    let created = time("created", true)?.expect("required field checked above");
    let updated = time("updated", true)?.expect("required field checked above");
    let resolution_date = time("resolutiondate", false)?;
    let status_category = fields
        .get("status")
        .and_then(|s| s.get("statusCategory"))
        .and_then(|c| c.get("key"))
        .and_then(Value::as_str);
    let status = fields
        .get("status")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // Jira sets `resolutiondate` when an issue gets a resolution. Some workflows reach a Done
    // status without one: they count as resolved when they last entered the Done category,
    // which only the changelog says (`statuscategorychangedate` is not in Atlassian's OpenAPI,
    // and Data Center has no such field).
    let done_without_resolution = resolution_date.is_none() && status_category == Some("done");
    let resolved_at = resolution_date;
    // A resolution before the issue existed (an import, a migrated site) would give GitLab a
    // closing before its creation and DORA a negative time to restore: clamp it to `created`.
    let resolved_at = resolved_at.map(|at| {
        if at < created {
            tracing::warn!(
                jira_key = %key,
                resolved = %at,
                created = %created,
                "{key}: Jira's resolution time is before the issue was created; it is replicated \
                 as closed at its creation time"
            );
            created
        } else {
            at
        }
    });
    let description = match fields.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(wiki::wiki_to_markdown(s)),
        Some(doc @ Value::Object(_)) => Some(adf::adf_to_markdown(doc)),
        Some(other) => {
            return Err(bad(format!(
                "field `description` is neither text nor ADF: {other}"
            )));
        }
    }
    .filter(|d| !d.trim().is_empty());
    let name_of = |field: &str| {
        fields
            .get(field)
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let labels = match fields.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect(),
        Some(other) => return Err(bad(format!("field `labels` is not a list: {other}"))),
    };
    let summary = match fields.get("summary") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("field `summary` is not text: {other}"))),
    };
    Ok((
        IssueSnapshot {
            id: Some(id),
            key,
            summary,
            description,
            created,
            updated,
            resolved_at,
            status,
            priority: name_of("priority"),
            labels,
            issue_type: name_of("issuetype"),
            fields: extra_fields(fields),
            transitions: None,
        },
        done_without_resolution,
    ))
}

/// The fields beyond [`super::SEARCH_FIELDS`] that an issue carries (the rules' `field:<id>`
/// sources; only asked-for fields are returned), as text: a date field's value is `YYYY-MM-DD`
/// and a date-time field's an ISO 8601 text (`FieldMetadata.schema.type` `date` / `datetime` in
/// Atlassian's OpenAPI). Empty fields (`null`, `""`) are left out.
fn extra_fields(
    fields: &serde_json::Map<String, Value>,
) -> std::collections::BTreeMap<String, String> {
    fields
        .iter()
        .filter(|(k, _)| !super::SEARCH_FIELDS.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::String(s) if !s.trim().is_empty() => Some((k.clone(), s.trim().to_owned())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Myself {
    display_name: Option<String>,
    email_address: Option<String>,
    name: Option<String>,
    time_zone: Option<String>,
}

pub(super) fn decode_myself(response: &Response) -> Result<JiraUser, DecodeError> {
    let me: Myself = response.json()?;
    let zone_name = me.time_zone.ok_or_else(|| DecodeError {
        reason: "`timeZone` is missing: set jira.time_zone to the account's profile zone".into(),
        body_excerpt: String::new(),
    })?;
    let time_zone = zone_name
        .parse::<chrono_tz::Tz>()
        .map_err(|_| DecodeError {
            reason: format!(
                "`timeZone` {zone_name:?} is not a zone this build knows: set jira.time_zone"
            ),
            body_excerpt: String::new(),
        })?;
    let display_name = me
        .display_name
        .or(me.email_address)
        .or(me.name)
        .unwrap_or_default();
    Ok(JiraUser {
        display_name,
        time_zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn response(body: &str) -> Response {
        Response {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    const DC_SAMPLE: &str = include_str!("../../tests/fixtures/jira/go-jira_issues_in_sprint.json");
    const CLOUD_SAMPLE: &str =
        include_str!("../../tests/fixtures/jira/atlassian-openapi_search-jql_GET_200.json");
    const MYSELF: &str =
        include_str!("../../tests/fixtures/jira/atlassian-openapi_myself_GET_200.json");

    /// A real Data Center search page decodes, with its offset timestamps turned to UTC.
    #[test]
    fn decodes_real_datacenter_page() {
        let page = decode_page(&response(DC_SAMPLE), Deployment::DataCenter, 0)
            .unwrap()
            .0;
        assert_eq!(page.issues.len(), 1);
        let s = &page.issues[0];
        assert_eq!(s.key.as_str(), "AR-86");
        assert_eq!(
            s.created.to_rfc3339(),
            "2015-12-02T15:39:15+00:00",
            "-0800 offset applied"
        );
        assert_eq!(
            s.resolved_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2015-12-07T22:19:13+00:00")
        );
        assert_eq!(s.priority.as_deref(), Some("Major"));
        assert_eq!(page.total, Some(10));
        assert_eq!(
            page.next,
            Some(PageCursor::Offset(1)),
            "1 of 10 read: next starts at 1"
        );
    }

    /// Atlassian's synthetic Cloud example (`updated: 1`) is reported by key, not fatal.
    #[test]
    fn malformed_issue_is_reported_by_key() {
        let page = decode_page(&response(CLOUD_SAMPLE), Deployment::Cloud, 0)
            .unwrap()
            .0;
        assert!(page.issues.is_empty());
        assert_eq!(page.undecodable.len(), 1);
        assert_eq!(page.undecodable[0].key, "ED-1");
        assert!(
            page.undecodable[0].reason.contains("created"),
            "{:?}",
            page.undecodable
        );
        assert_eq!(page.next, None, "isLast: true ends the walk");
    }

    /// `/myself` gives the profile time zone that JQL dates are read in.
    #[test]
    fn myself_zone() {
        let me = decode_myself(&response(MYSELF)).unwrap();
        assert_eq!(me.time_zone, chrono_tz::Australia::Sydney);
        assert_eq!(me.display_name, "Mia Krystof");
    }

    /// A resolution before `created` is clamped to `created`.
    #[test]
    fn resolution_before_creation_is_clamped() {
        let body = r#"{"isLast":true,"issues":[{"id":"10000","key":"OPS-1","fields":{
            "summary":"x","created":"2025-01-02T00:00:00.000+0000","updated":"2025-01-03T00:00:00.000+0000",
            "resolutiondate":"2025-01-01T00:00:00.000+0000",
            "status":{"name":"Done","statusCategory":{"key":"done"}}}}]}"#;
        let page = decode_page(&response(body), Deployment::Cloud, 0)
            .unwrap()
            .0;
        assert_eq!(page.issues[0].resolved_at, Some(page.issues[0].created));
    }

    /// The `Date` header is Jira's clock at the answer.
    #[test]
    fn date_header_is_read() {
        let mut r = response(r#"{"isLast":true,"issues":[]}"#);
        r.headers.insert(
            reqwest::header::DATE,
            reqwest::header::HeaderValue::from_static("Tue, 01 Dec 2026 14:04:24 GMT"),
        );
        let page = decode_page(&r, Deployment::Cloud, 0).unwrap().0;
        assert_eq!(
            page.date.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-12-01T14:04:24+00:00")
        );
    }

    /// An answer without Jira's last-page signal is an error, not the end of the search.
    #[rstest::rstest]
    #[case::cloud_no_is_last(Deployment::Cloud, r#"{"issues":[]}"#)]
    #[case::cloud_not_last_no_token(Deployment::Cloud, r#"{"issues":[],"isLast":false}"#)]
    #[case::dc_no_total(Deployment::DataCenter, r#"{"startAt":0,"issues":[]}"#)]
    fn no_last_page_signal(#[case] d: Deployment, #[case] body: &str) {
        let e = decode_page(&response(body), d, 0).unwrap_err();
        assert!(e.reason.contains("last-page signal"), "{e:?}");
    }

    /// An empty page below `total` asks the same offset again; one that reaches it is the last.
    #[test]
    fn datacenter_empty_page_below_total() {
        let body = r#"{"startAt":20,"maxResults":10,"total":40,"issues":[]}"#;
        let page = decode_page(&response(body), Deployment::DataCenter, 20)
            .unwrap()
            .0;
        assert_eq!(page.next, Some(PageCursor::Offset(20)));
        let body = r#"{"startAt":40,"maxResults":10,"total":40,"issues":[]}"#;
        let page = decode_page(&response(body), Deployment::DataCenter, 40)
            .unwrap()
            .0;
        assert_eq!(page.next, None);
    }

    /// Jira's timestamp forms parse to the same instant.
    #[rstest::rstest]
    #[case("2025-02-15T09:45:32.700+0100")]
    #[case("2025-02-15T09:45:32.700+01:00")]
    #[case("2025-02-15T08:45:32.700Z")]
    fn timestamp_forms(#[case] s: &str) {
        assert_eq!(
            parse_time(s).unwrap().to_rfc3339(),
            "2025-02-15T08:45:32.700+00:00"
        );
    }

    /// A Done-category issue without a resolution is listed with its embedded changelog, and
    /// its resolution is the latest change from a not-Done status into a Done one, not
    /// `statuscategorychangedate`.
    #[test]
    fn done_without_resolution_reads_the_changelog() {
        let body = r#"{"isLast":true,"issues":[{"id":"10000","key":"OPS-1","fields":{
            "summary":"x","created":"2025-01-01T00:00:00.000+0000","updated":"2025-01-09T00:00:00.000+0000",
            "resolutiondate":null,"statuscategorychangedate":"2025-01-08T12:00:00.000+0000",
            "status":{"id":"6","name":"Closed","statusCategory":{"key":"done"}}},
            "changelog":{"startAt":0,"maxResults":3,"total":3,"histories":[
              {"id":"3","created":"2025-01-08T12:00:00.000+0000","items":[{"field":"status","from":"10001","to":"6"}]},
              {"id":"2","created":"2025-01-05T00:00:00.000+0000","items":[{"field":"status","from":"3","to":"10001"}]},
              {"id":"1","created":"2025-01-02T00:00:00.000+0000","items":[{"field":"labels","from":null,"to":null}]}]}}]}"#;
        let (page, pending) = decode_page(&response(body), Deployment::Cloud, 0).unwrap();
        assert_eq!(page.issues[0].resolved_at, None, "left for the changelog");
        let p = &pending[0];
        assert!(p.complete);
        let done = |s: &str| matches!(s, "6" | "10001");
        assert_eq!(
            latest_into_done(&p.embedded, done)
                .map(|t| t.to_rfc3339())
                .as_deref(),
            Some("2025-01-05T00:00:00+00:00"),
            "Done → Closed is not a resolution; In Progress → Done is"
        );
    }
}
