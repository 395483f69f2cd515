//! The fake GitLab's GraphQL endpoint, `POST /api/graphql`: the part of GitLab's schema the sync
//! uses for incident details, and GitLab's way of answering.
//!
//! - **Fields:** `Query.project(fullPath)` with `issue(iid)` and
//!   `incidentManagementTimelineEvents(incidentId, first, after)`, `Query.currentUser`;
//!   `Mutation.issueSetSeverity`, `timelineEventCreate`, `timelineEventUpdate`
//!   (`app/graphql/types/project_type.rb`, `app/graphql/mutations/issues/set_severity.rb`,
//!   `app/graphql/mutations/incident_management/timeline_event/{create,update}.rb`).
//! - **Parsing and validation before execution:** the query is parsed with `graphql-parser`; a
//!   syntax error, a field the type does not have (`extensions.code: "undefinedField"`,
//!   graphql-ruby's static validation), a missing or ill-typed variable is answered 200 with
//!   `errors` and no `data` (the GraphQL spec: an error before execution leaves no `data`).
//! - **Execution errors:** an object the user cannot reach answers the field `null` with
//!   `Gitlab::Graphql::Authorize::AuthorizeResource::RESOURCE_ACCESS_ERROR` and the field's
//!   `path`; a mutation's refused values come back in its own `errors` field.
//! - **Authentication:** a token that is not accepted is answered 401 with a GraphQL-shaped
//!   error (`app/controllers/graphql_controller.rb`: `authenticate_sessionless_user!(:api)`,
//!   `render_error`).
//! - **Rights:** severity needs `update_issue` and `admin_issue` (Reporter or more,
//!   `Mutations::Issues::SetSeverity`), timeline events `admin_incident_management_timeline_event`
//!   (Developer or more, `app/policies/issuable_policy.rb`).
//!
//! The severity is stored on the issue, where the REST API shows it as `severity`
//! (`lib/api/entities/issue.rb`, incidents only set it: `Issues::UpdateService` via
//! `IssuableBaseService#handle_severity_change` → `supports_severity?`).

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use graphql_parser::Pos;
use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Selection, SelectionSet, Type,
    Value as GqlValue, VariableDefinition,
};
use serde_json::{Map, Value, json};

use super::{FakeGitLab, FakeGitLabIssue, GitLabData, GitLabState, ParsedBody, access};
use crate::sandbox::{json_response, lock};

/// `RESOURCE_ACCESS_ERROR` (`lib/gitlab/graphql/authorize/authorize_resource.rb`).
const RESOURCE_ACCESS_ERROR: &str = "The resource that you are attempting to access does not exist or you don't have permission to perform this action";

/// `TimelineEventTag::PREDEFINED_TAGS` (`app/models/incident_management/timeline_event_tag.rb`):
/// created in a project when first used (`TimelineEvents::BaseService#auto_create_predefined_tags`).
const PREDEFINED_TAGS: &[&str] = &[
    "Start time",
    "End time",
    "Impact detected",
    "Response initiated",
    "Impact mitigated",
    "Cause identified",
];

/// `validates :note, presence: true, length: { maximum: 280 }, on: :user_input`
/// (`app/models/incident_management/timeline_event.rb`).
const MAX_NOTE_CHARS: usize = 280;

/// GitLab's default maximum page size for connections (`GitlabSchema` `default_max_page_size`).
const MAX_PAGE_SIZE: usize = 100;

/// `IssuableSeverity.severities` upper-cased (`app/graphql/types/issuable_severity_enum.rb`).
const SEVERITIES: &[&str] = &["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// An incident's timeline event as the fake keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeTimelineEvent {
    pub id: u64,
    pub project_id: u64,
    /// The incident's global id.
    pub issue_id: u64,
    pub note: String,
    pub occurred_at: DateTime<Utc>,
    /// Tag names, as the project keeps them (a predefined tag's own spelling).
    pub tags: Vec<String>,
    pub author_id: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The timeline events and tags of every project.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    events: Vec<FakeTimelineEvent>,
    next_event_id: u64,
    /// `(project id, tag name)`.
    tags: Vec<(u64, String)>,
}

impl FakeGitLab {
    /// The timeline events of the issue `iid` of the project `project_id`, in the order they
    /// occurred (`order_occurred_at_asc_id_asc`).
    pub fn timeline_events(&self, project_id: u64, iid: u64) -> Vec<FakeTimelineEvent> {
        let data = lock(&self.inner.state.data);
        let Some(issue_id) = data
            .projects
            .iter()
            .find(|p| p.cfg.id == project_id)
            .and_then(|p| p.issues.get(&iid))
            .map(|i| i.id)
        else {
            return Vec::new();
        };
        data.timeline.ordered(issue_id)
    }
}

impl FakeGitLab {
    /// A person deletes the timeline event `id` (`timelineEventDestroy`). Returns false if there
    /// was none.
    pub fn delete_timeline_event(&self, id: u64) -> bool {
        let mut data = lock(&self.inner.state.data);
        let before = data.timeline.events.len();
        data.timeline.events.retain(|e| e.id != id);
        data.timeline.events.len() < before
    }
}

impl Timeline {
    fn ordered(&self, issue_id: u64) -> Vec<FakeTimelineEvent> {
        let mut events: Vec<FakeTimelineEvent> = self
            .events
            .iter()
            .filter(|e| e.issue_id == issue_id)
            .cloned()
            .collect();
        events.sort_by_key(|e| (e.occurred_at, e.id));
        events
    }

    /// The project's names for `wanted` (matched without regard to case,
    /// `TimelineEventTag.by_names`), predefined ones created on first use; `Err` lists the
    /// names that are neither (`validate_tags`).
    fn resolve_tags(&mut self, project_id: u64, wanted: &[String]) -> Result<Vec<String>, String> {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| {
                !PREDEFINED_TAGS.iter().any(|p| p.eq_ignore_ascii_case(w))
                    && !self
                        .tags
                        .iter()
                        .any(|(p, n)| *p == project_id && n.eq_ignore_ascii_case(w))
            })
            .map(|w| w.to_lowercase())
            .collect();
        if !missing.is_empty() {
            // `"#{_("Following tags don't exist")}: #{non_existing_tags}"`: a Ruby array.
            let listed: Vec<String> = missing.iter().map(|m| format!("{m:?}")).collect();
            return Err(format!(
                "Following tags don't exist: [{}]",
                listed.join(", ")
            ));
        }
        let mut names = Vec::new();
        for w in wanted {
            let existing = self
                .tags
                .iter()
                .find(|(p, n)| *p == project_id && n.eq_ignore_ascii_case(w))
                .map(|(_, n)| n.clone());
            let name = match existing {
                Some(n) => n,
                None => {
                    let predefined = PREDEFINED_TAGS
                        .iter()
                        .find(|p| p.eq_ignore_ascii_case(w))
                        .map_or_else(|| w.clone(), |p| (*p).to_owned());
                    self.tags.push((project_id, predefined.clone()));
                    predefined
                }
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(names)
    }
}

/// One error of the answer's `errors`.
struct GqlError {
    message: String,
    pos: Option<Pos>,
    path: Vec<Value>,
    extensions: Option<Value>,
}

impl GqlError {
    fn new(message: impl Into<String>, pos: Option<Pos>) -> Self {
        Self {
            message: message.into(),
            pos,
            path: Vec::new(),
            extensions: None,
        }
    }

    fn json(&self) -> Value {
        let mut e = Map::new();
        e.insert("message".into(), json!(self.message));
        if let Some(p) = self.pos {
            e.insert(
                "locations".into(),
                json!([{ "line": p.line, "column": p.column }]),
            );
        }
        if !self.path.is_empty() {
            e.insert("path".into(), Value::Array(self.path.clone()));
        }
        if let Some(x) = &self.extensions {
            e.insert("extensions".into(), x.clone());
        }
        Value::Object(e)
    }
}

/// A 200 answer with errors and no `data`: refused before execution.
fn refused(errors: &[GqlError]) -> Response {
    json_response(
        200,
        &json!({ "errors": errors.iter().map(GqlError::json).collect::<Vec<_>>() }),
    )
}

type Handled = Result<Response, super::super::Reply>;

/// `POST /api/graphql`.
pub(super) async fn execute(
    State(state): State<Arc<GitLabState>>,
    headers: HeaderMap,
    Extension(ParsedBody(body)): Extension<ParsedBody>,
) -> Handled {
    let Ok(user) = state.authenticate(&headers) else {
        // `GraphqlController#render_error(exception.message, status: :unauthorized)`.
        return Ok(json_response(
            401,
            &json!({ "errors": [{ "message": "Invalid token" }] }),
        ));
    };
    let body = body.unwrap_or(Value::Null);
    let Some(query) = body["query"].as_str() else {
        return Ok(refused(&[GqlError::new(
            "No query string was present",
            None,
        )]));
    };
    let variables = match &body["variables"] {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        // `Gitlab::Graphql::Variables#to_h`: a JSON string is parsed; anything else is refused
        // with 422 (`GraphqlController` `rescue_from Gitlab::Graphql::Variables::Invalid`).
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Ok(json_response(
                    422,
                    &json!({ "errors": [{ "message": format!("Unexpected parameter: {s}") }] }),
                ));
            }
        },
        other => {
            return Ok(json_response(
                422,
                &json!({ "errors": [{ "message": format!("Unexpected parameter: {other}") }] }),
            ));
        }
    };
    let doc: Document<'_, &str> = match graphql_parser::parse_query(query) {
        Ok(doc) => doc,
        Err(e) => {
            return Ok(refused(&[GqlError::new(
                format!("Parse error: {}", e.to_string().trim()),
                None,
            )]));
        }
    };
    let operation_name = body["operationName"].as_str();
    let (root, defs, selection) = match operation(&doc, operation_name) {
        Ok(op) => op,
        Err(e) => return Ok(refused(&[e])),
    };
    let mut errors = Vec::new();
    validate(root, selection, &mut Vec::new(), &mut errors);
    if !errors.is_empty() {
        return Ok(refused(&errors));
    }
    let vars = match coerce_variables(defs, &variables) {
        Ok(v) => v,
        Err(e) => return Ok(refused(&e)),
    };
    let mut data = lock(&state.data);
    let mut cx = Exec {
        data: &mut data,
        user_id: user.id,
        admin: user.admin,
        vars: &vars,
        errors: Vec::new(),
    };
    let out = match cx.run(root, selection) {
        Ok(out) => out,
        Err(e) => return Ok(refused(&[e])),
    };
    let mut answer = Map::new();
    answer.insert("data".into(), out);
    if !cx.errors.is_empty() {
        answer.insert(
            "errors".into(),
            Value::Array(cx.errors.iter().map(GqlError::json).collect()),
        );
    }
    Ok(json_response(200, &Value::Object(answer)))
}

/// An operation to run: its root type, variable definitions and selection set.
type Operation<'d, 'a> = (
    &'static str,
    &'d [VariableDefinition<'a, &'a str>],
    &'d SelectionSet<'a, &'a str>,
);

/// The operation to run: the one the document holds, or the one `name` names.
fn operation<'d, 'a>(
    doc: &'d Document<'a, &'a str>,
    name: Option<&str>,
) -> Result<Operation<'d, 'a>, GqlError> {
    let ops: Vec<&OperationDefinition<'a, &'a str>> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Operation(op) => Some(op),
            Definition::Fragment(_) => None,
        })
        .collect();
    let named = |op: &&OperationDefinition<'a, &'a str>| -> Option<&'a str> {
        match op {
            OperationDefinition::Query(q) => q.name,
            OperationDefinition::Mutation(m) => m.name,
            OperationDefinition::Subscription(s) => s.name,
            OperationDefinition::SelectionSet(_) => None,
        }
    };
    let op = match (name, ops.as_slice()) {
        (None, [one]) => *one,
        (None, _) => {
            return Err(GqlError::new("An operation name is required", None));
        }
        (Some(n), _) => *ops
            .iter()
            .find(|op| named(op) == Some(n))
            .ok_or_else(|| GqlError::new(format!("No operation named \"{n}\""), None))?,
    };
    Ok(match op {
        OperationDefinition::SelectionSet(s) => ("Query", &[][..], s),
        OperationDefinition::Query(q) => ("Query", &q.variable_definitions[..], &q.selection_set),
        OperationDefinition::Mutation(m) => {
            ("Mutation", &m.variable_definitions[..], &m.selection_set)
        }
        OperationDefinition::Subscription(s) => {
            return Err(GqlError::new(
                "Subscriptions are not supported over HTTP",
                Some(s.position),
            ));
        }
    })
}

/// The type of `ty.field` in the part of GitLab's schema the fake serves: `Some("")` for a
/// scalar, `Some(object type)`, or `None` when the type has no such field.
fn field_type(ty: &str, field: &str) -> Option<&'static str> {
    Some(match (ty, field) {
        (_, "__typename") => "",
        ("Query", "project") => "Project",
        ("Query", "currentUser") => "UserCore",
        ("Mutation", "issueSetSeverity") => "IssueSetSeverityPayload",
        ("Mutation", "timelineEventCreate") => "TimelineEventCreatePayload",
        ("Mutation", "timelineEventUpdate") => "TimelineEventUpdatePayload",
        ("Project", "id" | "fullPath" | "name") => "",
        ("Project", "issue") => "Issue",
        ("Project", "incidentManagementTimelineEvents") => "TimelineEventTypeConnection",
        ("Issue", "id" | "iid" | "title" | "state" | "severity" | "type" | "createdAt") => "",
        ("TimelineEventTypeConnection", "nodes") => "TimelineEventType",
        ("TimelineEventTypeConnection", "pageInfo") => "PageInfo",
        ("TimelineEventTypeConnection", "count") => "",
        ("PageInfo", "hasNextPage" | "hasPreviousPage" | "startCursor" | "endCursor") => "",
        (
            "TimelineEventType",
            "id" | "note" | "noteHtml" | "occurredAt" | "action" | "editable" | "createdAt"
            | "updatedAt",
        ) => "",
        ("TimelineEventType", "author" | "updatedByUser") => "UserCore",
        ("TimelineEventType", "incident") => "Issue",
        ("TimelineEventType", "timelineEventTags") => "TimelineEventTagTypeConnection",
        ("TimelineEventTagTypeConnection", "nodes") => "TimelineEventTagType",
        ("TimelineEventTagType", "id" | "name") => "",
        ("UserCore", "id" | "username" | "name") => "",
        ("IssueSetSeverityPayload", "errors" | "clientMutationId") => "",
        ("IssueSetSeverityPayload", "issue") => "Issue",
        (
            "TimelineEventCreatePayload" | "TimelineEventUpdatePayload",
            "errors" | "clientMutationId",
        ) => "",
        ("TimelineEventCreatePayload" | "TimelineEventUpdatePayload", "timelineEvent") => {
            "TimelineEventType"
        }
        _ => return None,
    })
}

/// graphql-ruby's static validation of fields (`FieldsAreDefinedOnType`, `undefinedField`),
/// and of selections on scalars and objects.
fn validate<'a>(
    ty: &str,
    set: &SelectionSet<'a, &'a str>,
    path: &mut Vec<String>,
    errors: &mut Vec<GqlError>,
) {
    for item in &set.items {
        let Selection::Field(f) = item else {
            errors.push(GqlError::new(
                "Fragments are not supported by this sandbox",
                None,
            ));
            continue;
        };
        path.push(f.name.to_owned());
        match field_type(ty, f.name) {
            None => errors.push(GqlError {
                message: format!("Field '{}' doesn't exist on type '{ty}'", f.name),
                pos: Some(f.position),
                path: std::iter::once(json!(operation_word(ty)))
                    .chain(path.iter().map(|p| json!(p)))
                    .collect(),
                extensions: Some(json!({
                    "code": "undefinedField",
                    "typeName": ty,
                    "fieldName": f.name,
                })),
            }),
            Some("") if !f.selection_set.items.is_empty() => errors.push(GqlError::new(
                format!(
                    "Selections can't be made on scalars (field '{}' returns a scalar)",
                    f.name
                ),
                Some(f.position),
            )),
            Some("") => {}
            Some(object) if f.selection_set.items.is_empty() => errors.push(GqlError::new(
                format!(
                    "Field must have selections (field '{}' returns {object} but has no selections)",
                    f.name
                ),
                Some(f.position),
            )),
            Some(object) => validate(object, &f.selection_set, path, errors),
        }
        path.pop();
    }
}

fn operation_word(ty: &str) -> &'static str {
    if ty == "Mutation" {
        "mutation"
    } else {
        "query"
    }
}

/// The variables the operation declares, from `given`, with their defaults; a required one
/// missing, or a value its type refuses, is answered before execution as graphql-ruby does
/// ("Variable $x of type T was provided invalid value").
fn coerce_variables<'a>(
    defs: &[VariableDefinition<'a, &'a str>],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<GqlError>> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    for def in defs {
        let value = given
            .get(def.name)
            .cloned()
            .or_else(|| def.default_value.as_ref().map(|v| literal(v, &Map::new())))
            .unwrap_or(Value::Null);
        if let Err(problem) = check_type(&def.var_type, &value) {
            errors.push(GqlError {
                message: format!(
                    "Variable ${} of type {} was provided invalid value",
                    def.name,
                    type_text(&def.var_type)
                ),
                pos: Some(def.position),
                path: Vec::new(),
                extensions: Some(json!({
                    "value": value,
                    "problems": [{ "path": [], "explanation": problem }],
                })),
            });
        }
        out.insert(def.name.to_owned(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn type_text<'a>(t: &Type<'a, &'a str>) -> String {
    match t {
        Type::NamedType(n) => (*n).to_owned(),
        Type::ListType(inner) => format!("[{}]", type_text(inner)),
        Type::NonNullType(inner) => format!("{}!", type_text(inner)),
    }
}

/// Whether `value` fits `t`: non-null, lists, and the scalars and enums the fake's fields take
/// (`IssuableSeverity`, `Time` parsed as `Time.parse` would, global ids of their model).
fn check_type<'a>(t: &Type<'a, &'a str>, value: &Value) -> Result<(), String> {
    match (t, value) {
        (Type::NonNullType(_), Value::Null) => Err("Expected value to not be null".into()),
        (Type::NonNullType(inner), v) => check_type(inner, v),
        (_, Value::Null) => Ok(()),
        (Type::ListType(inner), Value::Array(items)) => {
            items.iter().try_for_each(|i| check_type(inner, i))
        }
        // A single value where a list is expected is coerced to a list of one.
        (Type::ListType(inner), v) => check_type(inner, v),
        (Type::NamedType(name), v) => check_scalar(name, v),
    }
}

fn check_scalar(name: &str, v: &Value) -> Result<(), String> {
    match name {
        "String" | "ID" => match v {
            Value::String(_) => Ok(()),
            Value::Number(n) if name == "ID" && n.is_i64() => Ok(()),
            _ => Err(format!("Could not coerce value {v} to {name}")),
        },
        "Int" => v
            .as_i64()
            .map(|_| ())
            .ok_or_else(|| format!("Could not coerce value {v} to Int")),
        "Boolean" => v
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| format!("Could not coerce value {v} to Boolean")),
        "IssuableSeverity" => match v.as_str() {
            Some(s) if SEVERITIES.contains(&s) => Ok(()),
            _ => Err(format!(
                "Expected {v} to be one of: {}",
                SEVERITIES.join(", ")
            )),
        },
        // `Types::TimeType.coerce_input`: `Time.parse(value)`, its error message otherwise.
        "Time" => match v.as_str().map(parse_time) {
            Some(Some(_)) => Ok(()),
            _ => Err(format!("no time information in {v}")),
        },
        // `Types::GlobalIDType[Model]`: "… does not represent an instance of Model".
        "IssueID" => gid_of(v, "Issue")
            .map(|_| ())
            .ok_or_else(|| format!("{v} does not represent an instance of Issue")),
        "IncidentManagementTimelineEventID" => gid_of(v, "IncidentManagement::TimelineEvent")
            .map(|_| ())
            .ok_or_else(|| {
                format!("{v} does not represent an instance of IncidentManagement::TimelineEvent")
            }),
        _ => Err(format!("{name} isn't a defined input type")),
    }
}

/// The numeric id of a global id `gid://gitlab/<model>/<n>`.
fn gid_of(v: &Value, model: &str) -> Option<u64> {
    v.as_str()?
        .strip_prefix("gid://gitlab/")?
        .strip_prefix(model)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

/// What `Time.parse` reads from the sync and from people: RFC 3339 (with or without fraction).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `Types::TimeType.coerce_result`: `value.iso8601`, whole seconds.
fn time_out(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A literal argument as JSON, with `vars` substituted.
fn literal<'a>(v: &GqlValue<'a, &'a str>, vars: &Map<String, Value>) -> Value {
    match v {
        GqlValue::Variable(name) => vars.get(*name).cloned().unwrap_or(Value::Null),
        GqlValue::Int(n) => n.as_i64().map_or(Value::Null, |i| json!(i)),
        GqlValue::Float(f) => json!(f),
        GqlValue::String(s) => json!(s),
        GqlValue::Boolean(b) => json!(b),
        GqlValue::Null => Value::Null,
        GqlValue::Enum(e) => json!(e),
        GqlValue::List(items) => Value::Array(items.iter().map(|i| literal(i, vars)).collect()),
        GqlValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), literal(v, vars)))
                .collect(),
        ),
    }
}

/// The arguments of `f`, as JSON.
fn arguments<'a>(f: &Field<'a, &'a str>, vars: &Map<String, Value>) -> Map<String, Value> {
    f.arguments
        .iter()
        .map(|(k, v)| ((*k).to_owned(), literal(v, vars)))
        .collect()
}

/// One request's execution.
struct Exec<'d> {
    data: &'d mut GitLabData,
    user_id: u64,
    admin: bool,
    vars: &'d Map<String, Value>,
    errors: Vec<GqlError>,
}

/// A field's failure during execution: the field is `null`, with this error at its path.
struct FieldError(String);

impl Exec<'_> {
    fn run<'a>(&mut self, root: &str, set: &SelectionSet<'a, &'a str>) -> Result<Value, GqlError> {
        let mut out = Map::new();
        for item in &set.items {
            let Selection::Field(f) = item else {
                continue;
            };
            let key = f.alias.unwrap_or(f.name).to_owned();
            let args = arguments(f, self.vars);
            let resolved = match (root, f.name) {
                (_, "__typename") => Ok(json!(root)),
                ("Query", "project") => Ok(self.project(args["fullPath"].as_str())),
                ("Query", "currentUser") => Ok(self.user(self.user_id)),
                ("Mutation", "issueSetSeverity") => self.set_severity(&args["input"]),
                ("Mutation", "timelineEventCreate") => self.create_event(&args["input"]),
                ("Mutation", "timelineEventUpdate") => self.update_event(&args["input"]),
                _ => unreachable!("validated: {root}.{}", f.name),
            };
            let value = match resolved {
                Ok(v) => self.select(field_type(root, f.name).unwrap_or(""), &v, f, &[json!(key)]),
                Err(FieldError(message)) => {
                    self.errors.push(GqlError {
                        message,
                        pos: Some(f.position),
                        path: vec![json!(key)],
                        extensions: None,
                    });
                    Value::Null
                }
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    /// The fields of `f`'s selection from `obj` (of type `ty`); fields that take arguments are
    /// resolved here.
    fn select<'a>(
        &mut self,
        ty: &str,
        obj: &Value,
        f: &Field<'a, &'a str>,
        path: &[Value],
    ) -> Value {
        if f.selection_set.items.is_empty() || obj.is_null() {
            return obj.clone();
        }
        if let Value::Array(items) = obj {
            return Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut p = path.to_vec();
                        p.push(json!(i));
                        self.select(ty, item, f, &p)
                    })
                    .collect(),
            );
        }
        let mut out = Map::new();
        for item in &f.selection_set.items {
            let Selection::Field(sub) = item else {
                continue;
            };
            let key = sub.alias.unwrap_or(sub.name).to_owned();
            let args = arguments(sub, self.vars);
            let value = match (ty, sub.name) {
                (_, "__typename") => json!(ty),
                ("Project", "issue") => self.issue_of(obj, args["iid"].as_str()),
                ("Project", "incidentManagementTimelineEvents") => self.events_of(obj, &args),
                _ => obj.get(sub.name).cloned().unwrap_or(Value::Null),
            };
            let sub_ty = field_type(ty, sub.name).unwrap_or("");
            let mut p = path.to_vec();
            p.push(json!(key));
            let value = self.select(sub_ty, &value, sub, &p);
            out.insert(key, value);
        }
        Value::Object(out)
    }

    /// The user's access level in the project at `index`.
    fn level(&self, index: usize) -> u32 {
        if self.admin {
            return access::OWNER;
        }
        self.data.projects[index].level_of(self.user_id)
    }

    /// The project at `full_path` the user can see (`Project.find_by_full_path` with
    /// `read_project`), as its index.
    fn project_index(&self, full_path: Option<&str>) -> Option<usize> {
        let path = full_path?;
        if !path.contains('/') {
            return None;
        }
        let index = self.data.project_index(path)?;
        (self.level(index) > 0).then_some(index)
    }

    fn project(&self, full_path: Option<&str>) -> Value {
        let Some(index) = self.project_index(full_path) else {
            // An object the user cannot read resolves to null, without an error.
            return Value::Null;
        };
        let cfg = &self.data.projects[index].cfg;
        json!({
            "id": format!("gid://gitlab/Project/{}", cfg.id),
            "fullPath": cfg.path_with_namespace,
            "name": cfg.path_with_namespace.rsplit('/').next().unwrap_or_default(),
        })
    }

    fn user(&self, id: u64) -> Value {
        let (username, name) = self.data.user_names(id);
        json!({ "id": format!("gid://gitlab/User/{id}"), "username": username, "name": name })
    }

    fn issue_json(&self, issue: &FakeGitLabIssue) -> Value {
        json!({
            "id": format!("gid://gitlab/Issue/{}", issue.id),
            "iid": issue.iid.to_string(),
            "title": issue.title,
            "state": issue.state.as_str(),
            "severity": issue.severity,
            "type": issue.issue_type.to_ascii_uppercase(),
            "createdAt": time_out(issue.created_at),
        })
    }

    /// `Project.issue(iid)`: `null` when there is none.
    fn issue_of(&self, project: &Value, iid: Option<&str>) -> Value {
        let index = self.project_index(project["fullPath"].as_str());
        let issue = index
            .zip(iid.and_then(|i| i.parse::<u64>().ok()))
            .and_then(|(index, iid)| self.data.projects[index].issues.get(&iid));
        issue.map_or(Value::Null, |i| self.issue_json(i))
    }

    /// The project index and issue of the global id `id`, if the user can read it.
    fn issue_by_gid(&self, id: u64) -> Option<(usize, &FakeGitLabIssue)> {
        self.data
            .projects
            .iter()
            .enumerate()
            .find_map(|(index, p)| {
                p.issues
                    .values()
                    .find(|i| i.id == id)
                    .filter(|_| self.level(index) > 0)
                    .map(|i| (index, i))
            })
    }

    fn event_json(&self, e: &FakeTimelineEvent) -> Value {
        let tags: Vec<Value> = e
            .tags
            .iter()
            .map(|name| json!({ "id": format!("gid://gitlab/IncidentManagement::TimelineEventTag/{name}"), "name": name }))
            .collect();
        json!({
            "id": format!("gid://gitlab/IncidentManagement::TimelineEvent/{}", e.id),
            "note": e.note,
            "noteHtml": format!("<p>{}</p>", e.note),
            "occurredAt": time_out(e.occurred_at),
            "action": "comment",
            "editable": true,
            "createdAt": time_out(e.created_at),
            "updatedAt": time_out(e.updated_at),
            "author": self.user(e.author_id),
            "updatedByUser": Value::Null,
            "timelineEventTags": { "nodes": tags },
            "incident": self.issue_by_gid(e.issue_id).map_or(Value::Null, |(_, i)| self.issue_json(i)),
        })
    }

    /// `Project.incidentManagementTimelineEvents(incidentId, first, after)`: the incident's
    /// events (`TimelineEventsFinder`), oldest first, in pages of at most 100.
    fn events_of(&self, project: &Value, args: &Map<String, Value>) -> Value {
        let Some(index) = self.project_index(project["fullPath"].as_str()) else {
            return Value::Null;
        };
        let incident = args
            .get("incidentId")
            .and_then(|v| gid_of(v, "Issue"))
            .and_then(|id| self.issue_by_gid(id))
            .filter(|(i, _)| *i == index)
            .map(|(_, issue)| issue.id);
        let events = incident
            .map(|id| self.data.timeline.ordered(id))
            .unwrap_or_default();
        let first = args
            .get("first")
            .and_then(Value::as_u64)
            .map_or(MAX_PAGE_SIZE, |n| (n as usize).min(MAX_PAGE_SIZE));
        let start = args
            .get("after")
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix("cursor:"))
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(0, |n| n + 1);
        let page: Vec<Value> = events
            .iter()
            .skip(start)
            .take(first)
            .map(|e| self.event_json(e))
            .collect();
        let end = start + page.len();
        json!({
            "count": events.len(),
            "nodes": page,
            "pageInfo": {
                "hasNextPage": end < events.len(),
                "hasPreviousPage": start > 0,
                "startCursor": (end > start).then(|| format!("cursor:{start}")),
                "endCursor": (end > start).then(|| format!("cursor:{}", end - 1)),
            },
        })
    }

    /// `Mutations::Issues::SetSeverity#resolve`: `authorized_find!(project_path:, iid:)` with
    /// `update_issue` and `admin_issue` (Reporter), then `Issues::UpdateService` with
    /// `severity`, which only an incident takes.
    fn set_severity(&mut self, input: &Value) -> Result<Value, FieldError> {
        let severity = input["severity"].as_str().unwrap_or_default().to_owned();
        if !SEVERITIES.contains(&severity.as_str()) {
            return Err(FieldError(format!(
                "Argument 'severity' on InputObject 'IssueSetSeverityInput' has an invalid value ({}). Expected type 'IssuableSeverity!'.",
                input["severity"]
            )));
        }
        let index = self
            .project_index(input["projectPath"].as_str())
            .filter(|i| self.level(*i) >= access::REPORTER)
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        let iid = input["iid"]
            .as_str()
            .and_then(|i| i.parse::<u64>().ok())
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        let issue = self.data.projects[index]
            .issues
            .get_mut(&iid)
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        if issue.issue_type == "incident" && issue.severity != severity {
            issue.severity = severity;
            issue.updated_at = Utc::now();
        }
        let issue = issue.clone();
        Ok(json!({
            "clientMutationId": input.get("clientMutationId").cloned().unwrap_or(Value::Null),
            "errors": [],
            "issue": self.issue_json(&issue),
        }))
    }

    /// `Mutations::IncidentManagement::TimelineEvent::Create#resolve` and
    /// `TimelineEvents::CreateService#execute`.
    fn create_event(&mut self, input: &Value) -> Result<Value, FieldError> {
        let (index, issue_id) = input
            .get("incidentId")
            .and_then(|v| gid_of(v, "Issue"))
            .and_then(|id| self.issue_by_gid(id))
            .map(|(index, issue)| (index, issue.id))
            .filter(|(index, _)| self.level(*index) >= access::DEVELOPER)
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        let project_id = self.data.projects[index].cfg.id;
        let note = input["note"].as_str().unwrap_or_default().to_owned();
        let occurred_at = input["occurredAt"].as_str().and_then(parse_time);
        let wanted: Vec<String> = tag_names(&input["timelineEventTagNames"]);
        let client_id = input
            .get("clientMutationId")
            .cloned()
            .unwrap_or(Value::Null);
        let failed = |errors: Vec<String>| json!({ "clientMutationId": client_id, "errors": errors, "timelineEvent": Value::Null });
        // `validate_tags` runs before the event is saved.
        let tags = match self.data.timeline.resolve_tags(project_id, &wanted) {
            Ok(t) => t,
            Err(message) => return Ok(failed(vec![message])),
        };
        let mut problems = Vec::new();
        if note.trim().is_empty() {
            problems.push("Timeline text can't be blank".to_owned());
        } else if note.chars().count() > MAX_NOTE_CHARS {
            problems.push(format!(
                "Timeline text is too long (maximum is {MAX_NOTE_CHARS} characters)"
            ));
        }
        let Some(occurred_at) = occurred_at else {
            problems.push("Occurred at can't be blank".to_owned());
            return Ok(failed(problems));
        };
        if !problems.is_empty() {
            return Ok(failed(problems));
        }
        let now = Utc::now();
        self.data.timeline.next_event_id += 1;
        let event = FakeTimelineEvent {
            id: self.data.timeline.next_event_id,
            project_id,
            issue_id,
            note,
            occurred_at,
            tags,
            author_id: self.user_id,
            created_at: now,
            updated_at: now,
        };
        self.data.timeline.events.push(event.clone());
        Ok(json!({
            "clientMutationId": client_id,
            "errors": [],
            "timelineEvent": self.event_json(&event),
        }))
    }

    /// `Mutations::IncidentManagement::TimelineEvent::Update#resolve` and
    /// `TimelineEvents::UpdateService#execute`: the given attributes change, tags are replaced.
    fn update_event(&mut self, input: &Value) -> Result<Value, FieldError> {
        let id = input
            .get("id")
            .and_then(|v| gid_of(v, "IncidentManagement::TimelineEvent"))
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        let (project_id, issue_id) = self
            .data
            .timeline
            .events
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.project_id, e.issue_id))
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        self.issue_by_gid(issue_id)
            .filter(|(index, _)| self.level(*index) >= access::DEVELOPER)
            .ok_or_else(|| FieldError(RESOURCE_ACCESS_ERROR.into()))?;
        let client_id = input
            .get("clientMutationId")
            .cloned()
            .unwrap_or(Value::Null);
        let failed = |errors: Vec<String>| json!({ "clientMutationId": client_id, "errors": errors, "timelineEvent": Value::Null });
        let tags = match input.get("timelineEventTagNames") {
            None | Some(Value::Null) => None,
            Some(v) => match self.data.timeline.resolve_tags(project_id, &tag_names(v)) {
                Ok(t) => Some(t),
                Err(message) => return Ok(failed(vec![message])),
            },
        };
        let note = input.get("note").and_then(Value::as_str).map(str::to_owned);
        if note
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.chars().count() > MAX_NOTE_CHARS)
        {
            return Ok(failed(vec![format!(
                "Timeline text is too long (maximum is {MAX_NOTE_CHARS} characters)"
            )]));
        }
        let occurred_at = input
            .get("occurredAt")
            .and_then(Value::as_str)
            .and_then(parse_time);
        let event = self
            .data
            .timeline
            .events
            .iter_mut()
            .find(|e| e.id == id)
            .expect("found above, under the same lock");
        if let Some(n) = note {
            event.note = n;
        }
        if let Some(at) = occurred_at {
            event.occurred_at = at;
        }
        if let Some(t) = tags {
            event.tags = t;
        }
        event.updated_at = Utc::now();
        let event = event.clone();
        Ok(json!({
            "clientMutationId": client_id,
            "errors": [],
            "timelineEvent": self.event_json(&event),
        }))
    }
}

/// Tag names as given: a list, or one name.
fn tag_names(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}
