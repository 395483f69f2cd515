//! In-process fake Jira and GitLab HTTP servers that behave like the real APIs.
//!
//! They serve three audiences: the integration tests (real HTTP over loopback), the `demo`
//! command (the whole sync loop on a fresh machine, without credentials) and the benchmarks.
//! Each server binds `127.0.0.1:0`, runs on a spawned tokio task and is driven through a cheap,
//! cloneable handle: [`jira::FakeJira`] and [`gitlab::FakeGitLab`]. The server stops when
//! `shutdown()` is called or when the last handle is dropped.
//!
//! What this module owns: the wire behaviour of the two APIs as far as this crate uses them
//! (shapes, status codes, paging, rate limits, error bodies) and the fault injection the tests
//! need. What it does not own: anything the real clients in [`crate::jira`] and
//! [`crate::gitlab`] do; the fakes never import them, so a client bug cannot hide in a fake.
//!
//! Nothing here sleeps except where a configured latency, delay fault or rate limit asks for it.

mod fts;
pub mod gitlab;
mod gitlab_quick_actions;
pub mod jira;
mod jql;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, header};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// The largest request body the fakes read. Real servers allow less; nothing we send is close.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One request a fake received, in arrival order.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// The path, percent-encoded as it was sent (`/api/v4/projects/acme%2Fops/issues`).
    pub path: String,
    /// The raw query string without the `?`, empty when there was none.
    pub query: String,
    /// The body parsed as JSON; form-encoded bodies are converted to a JSON object
    /// (`labels[]=a&labels[]=b` becomes `"labels": ["a", "b"]`). `None` when empty or unparsable.
    pub body: Option<Value>,
    /// True if and only if the request carried `Authorization` or `PRIVATE-TOKEN`.
    pub authorization_present: bool,
    pub at: Instant,
    /// The status the fake answered, or `None` when it sent no complete response (a hung or
    /// dropped connection, or a request still in flight).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The first value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The request log shared by a server and its handles.
#[derive(Default)]
pub(crate) struct Recorder {
    entries: Mutex<Vec<RecordedRequest>>,
}

impl Recorder {
    /// Logs an arriving request; returns its index for [`Recorder::finish`].
    fn start(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: Option<Value>,
    ) -> usize {
        let mut entries = lock(&self.entries);
        entries.push(RecordedRequest {
            method: method.clone(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            body,
            authorization_present: headers.contains_key(header::AUTHORIZATION)
                || headers.contains_key("private-token"),
            at: Instant::now(),
            status: None,
        });
        entries.len() - 1
    }

    /// Records the status a request was answered with.
    fn finish(&self, index: usize, status: u16) {
        if let Some(entry) = lock(&self.entries).get_mut(index) {
            entry.status = Some(status);
        }
    }

    fn snapshot(&self) -> Vec<RecordedRequest> {
        lock(&self.entries).clone()
    }

    /// The requests from the `from`th on (none if there are not that many), so a reader that
    /// follows the log copies each request once.
    fn since(&self, from: usize) -> Vec<RecordedRequest> {
        lock(&self.entries)
            .get(from..)
            .map(<[RecordedRequest]>::to_vec)
            .unwrap_or_default()
    }

    fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// The parsed request body, put in the request's extensions by the fakes' middleware so the
/// handlers read JSON and form bodies alike.
#[derive(Clone, Debug, Default)]
pub(crate) struct ParsedBody(pub Option<Value>);

/// Marks a response that must not count as answered in the request log (the connection is
/// dropped or never completes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unanswered;

/// Reads the whole body and parses it as JSON or as a form, by content type (JSON when absent).
///
/// Returns the bytes too, so the request can be rebuilt for the handler.
pub(crate) async fn read_body(req: Request<Body>) -> (Request<Body>, Option<Value>) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let parsed = if bytes.is_empty() {
        None
    } else if is_form {
        Some(form_to_json(&bytes))
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(ParsedBody(parsed.clone()));
    (req, parsed)
}

/// Converts `a=1&b[]=x&b[]=y` into `{"a":"1","b":["x","y"]}`. A key repeated without `[]`
/// keeps its last value, as Rails does.
pub(crate) fn form_to_json(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    for (key, value) in url::form_urlencoded::parse(bytes) {
        if let Some(base) = key.strip_suffix("[]") {
            let entry = map
                .entry(base.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(Value::String(value.into_owned()));
            } else {
                *entry = Value::Array(vec![Value::String(value.into_owned())]);
            }
        } else {
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
    Value::Object(map)
}

/// Query parameters in order, decoded; repeated keys are kept.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Stops the server task when the last handle goes away.
pub(crate) struct ShutdownGuard(pub CancellationToken);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A bound loopback listener, ready to serve once the router (which may need the address) exists.
pub(crate) struct Listener {
    listener: tokio::net::TcpListener,
    pub base_url: url::Url,
}

impl Listener {
    /// Binds `127.0.0.1:0`.
    pub(crate) async fn bind() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let base_url = url::Url::parse(&format!("http://{addr}/"))
            .expect("a socket address always forms a valid http URL");
        Ok(Self { listener, base_url })
    }

    /// Serves `router` on a spawned task until `shutdown` is cancelled.
    pub(crate) fn serve(self, router: Router, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let result = axum::serve(self.listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(err) = result {
                tracing::warn!(cause = %err, "sandbox server stopped");
            }
        });
    }
}

/// Locks a mutex, recovering the data if a panicking test thread poisoned it: the fakes' state
/// stays consistent because every mutation completes under the lock without panicking.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A JSON response with a status.
pub(crate) fn json_response(status: u16, body: &Value) -> axum::response::Response {
    // The same compact text as `body.to_string()` (both are serde_json's compact serializer),
    // written straight into a Vec instead of through `fmt::Write`.
    let text = serde_json::to_vec(body).unwrap_or_else(|_| body.to_string().into_bytes());
    let mut resp = axum::response::Response::new(Body::from(text));
    *resp.status_mut() = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A response with a caller-chosen body: JSON content type when the body parses as JSON,
/// HTML otherwise (what a proxy in front of the API answers).
pub(crate) fn raw_response(status: u16, body: &str) -> axum::response::Response {
    let content_type = if serde_json::from_str::<Value>(body).is_ok() {
        "application/json"
    } else {
        "text/html; charset=utf-8"
    };
    let mut resp = axum::response::Response::new(Body::from(body.to_owned()));
    *resp.status_mut() = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// An early answer from a handler: a boxed response, so `Result<T, Reply>` stays small.
pub(crate) struct Reply(Box<axum::response::Response>);

impl From<axum::response::Response> for Reply {
    fn from(resp: axum::response::Response) -> Self {
        Self(Box::new(resp))
    }
}

impl axum::response::IntoResponse for Reply {
    fn into_response(self) -> axum::response::Response {
        *self.0
    }
}

/// Shared, cheaply cloneable state plus the guard that stops the server with the last handle.
pub(crate) struct HandleInner<S> {
    pub state: Arc<S>,
    pub base_url: url::Url,
    pub guard: ShutdownGuard,
}
