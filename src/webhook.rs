//! Jira webhooks as a "sync now" signal (`[webhook]`): the service receives `POST /webhook/jira`,
//! checks it, and wakes the rules the issue could concern, naming the issue so that their next
//! search reads it consistently (`reconcileIssues`).
//!
//! A webhook never writes anything by itself: its payload may be stale or out of order (Cloud
//! delivers at least once, unordered, and retries), so it only says "search now, and read this
//! issue as it is". The search decides what is written, exactly as a scheduled run would; losing
//! every webhook loses nothing, the schedule still runs.
//!
//! Each request, in this order, before any other work:
//! 1. a body over [`MAX_BODY`] is refused with 413 (by its `Content-Length`, or while it is read;
//!    at most [`READING_MAX`] bodies are read at once, each within [`BODY_TIMEOUT`], else 408);
//! 2. a body not signed with the secret is refused with 401: `X-Hub-Signature: sha256=<hex>`,
//!    the HMAC-SHA256 of the raw body (Atlassian, "Webhooks": "Secure admin webhooks"), compared
//!    in constant time;
//! 3. an `X-Atlassian-Webhook-Identifier` already received is answered 200 and ignored (Cloud
//!    keeps it "the same across retries"); the identifiers are kept [`SEEN_FOR`], at most
//!    [`SEEN_MAX`] of them;
//! 4. the payload (`webhookEvent`, `issue.id`, `issue.key`, `issue.fields.project`) names the
//!    issue; one naming none is answered 200 and ignored. Anything but JSON is refused with 400.
//!
//! The rules woken are those whose JQL could match the issue: a rule whose JQL is a conjunction
//! with `project = X` or `project in (X, Y)` only for those projects (by key, id or name), every other rule always
//! ([`jql_projects`]). Wakes are debounced ([`DEBOUNCE`]): a burst of webhooks is one run per
//! rule, started at most [`DEBOUNCE`] after the first of them; the ids ride along to the run
//! ([`Wakes::take`]). The service (`daemon`) owns the runs and the timer; this module owns the
//! HTTP side, the verdicts, their counts, and what is waiting to be woken.
//!
//! Not here: the runs (`daemon`, `engine`), the metrics' names (`metrics`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::RuleConfig;
use crate::domain::JiraId;
use crate::engine::ports::MAX_RECONCILE;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// Where Jira posts.
pub const PATH: &str = "/webhook/jira";

/// The largest body read: 4 MiB. Jira's issue payloads are a few KB (a long description, many
/// fields); a larger one is refused before it is read.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// From the first webhook of a burst to the wake of the rules it concerns: webhooks arriving
/// meanwhile join it, so a burst (a bulk edit) is one run per rule. Well within the 250 ms the
/// service promises between a webhook and its rules' wake.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a webhook's identifier is remembered: longer than Cloud's retries go on (Atlassian:
/// "webhooks might be delivered later than usual (up to 30 minutes)" when retried).
pub const SEEN_FOR: Duration = Duration::from_secs(60 * 60);

/// The most identifiers remembered; the oldest is forgotten first. At Jira's busiest this is
/// minutes of webhooks, far more than retries need; it bounds the memory a flood could take.
pub const SEEN_MAX: usize = 10_000;

/// The most issue ids kept waiting for one rule's run; a run reads [`MAX_RECONCILE`] of them
/// consistently, and the schedule's search reads any change anyway.
const PENDING_MAX: usize = 1_000;

/// Bodies read at once, at most: a flood of large requests waits its turn rather than holding
/// [`MAX_BODY`] each in memory (16 × 4 MiB at most).
pub const READING_MAX: usize = 16;

/// The longest a body may take to arrive: a request trickling in (or a connection left open
/// mid-body) is answered 408, which Jira retries.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The store's meta key holding the webhook counts, for `status` (a separate process).
pub const COUNTS_META_KEY: &str = "webhooks";

/// The header carrying the signature.
const SIGNATURE: &str = "x-hub-signature";
/// The header naming a delivery, the same across its retries.
const IDENTIFIER: &str = "x-atlassian-webhook-identifier";

/// How many webhooks the service received, refused and ignored. `received` counts every request
/// to [`PATH`]; `rejected` (401, 413, 400, 408) and `ignored` (a retry of one already received, or an
/// event that names no issue) are among them; the others woke rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTotals {
    pub received: u64,
    pub rejected: u64,
    pub ignored: u64,
}

/// Why a request was refused or ignored: the metrics' `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It woke the rules it concerns.
    Accepted,
    /// 401: no `X-Hub-Signature`, or not `sha256=<hex>`.
    Unsigned,
    /// 401: signed with another secret, or the body was changed.
    BadSignature,
    /// 413: over [`MAX_BODY`].
    TooLarge,
    /// 400: signed, but not a JSON object.
    Malformed,
    /// 408: the body did not arrive within [`BODY_TIMEOUT`].
    TooSlow,
    /// 200: its identifier was received already (a retry).
    Repeated,
    /// 200: an event about no issue.
    NoIssue,
}

impl Verdict {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Unsigned => "unsigned",
            Verdict::BadSignature => "bad_signature",
            Verdict::TooLarge => "too_large",
            Verdict::Malformed => "malformed",
            Verdict::TooSlow => "too_slow",
            Verdict::Repeated => "repeated",
            Verdict::NoIssue => "no_issue",
        }
    }

    /// Returns true if and only if the request was refused.
    pub fn is_rejected(self) -> bool {
        matches!(
            self,
            Verdict::Unsigned
                | Verdict::BadSignature
                | Verdict::TooLarge
                | Verdict::Malformed
                | Verdict::TooSlow
        )
    }

    /// Returns true if and only if the request was answered 200 and did nothing.
    pub fn is_ignored(self) -> bool {
        matches!(self, Verdict::Repeated | Verdict::NoIssue)
    }

    fn status(self) -> StatusCode {
        match self {
            Verdict::Accepted | Verdict::Repeated | Verdict::NoIssue => StatusCode::OK,
            Verdict::Unsigned | Verdict::BadSignature => StatusCode::UNAUTHORIZED,
            Verdict::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Verdict::Malformed => StatusCode::BAD_REQUEST,
            Verdict::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The counts since the store began: those a previous process left (read at start) plus this
/// process's. Written to the store in batches by the service ([`WebhookCounts::dirty`]).
#[derive(Debug, Default)]
pub struct WebhookCounts {
    base: Mutex<WebhookTotals>,
    received: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
    dirty: AtomicBool,
}

impl WebhookCounts {
    /// Starts from the counts a previous process left.
    pub fn set_base(&self, base: WebhookTotals) {
        *self.base.lock().unwrap_or_else(PoisonError::into_inner) = base;
    }

    fn count(&self, verdict: Verdict) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if verdict.is_rejected() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        } else if verdict.is_ignored() {
            self.ignored.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// The totals since the store began.
    pub fn totals(&self) -> WebhookTotals {
        let base = *self.base.lock().unwrap_or_else(PoisonError::into_inner);
        WebhookTotals {
            received: base.received + self.received.load(Ordering::Relaxed),
            rejected: base.rejected + self.rejected.load(Ordering::Relaxed),
            ignored: base.ignored + self.ignored.load(Ordering::Relaxed),
        }
    }

    /// Returns true (once) if and only if a webhook was counted since the last call: the counts
    /// are then due to be written.
    pub fn dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// The counts could not be written: they are due again.
    pub fn unwritten(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

/// The projects a rule's JQL restricts it to, if it surely does: the JQL is a conjunction (no
/// `OR`, no `NOT`) holding a clause `project = X` or `project in (X, Y, …)` (keys or ids, quoted
/// or not). `None` when it cannot tell cheaply: the rule may match any issue.
pub fn jql_projects(jql: &str) -> Option<Vec<String>> {
    let tokens = tokenize(jql)?;
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w));
    if tokens.iter().any(|t| is_word(t, "or") || is_word(t, "not")) {
        return None;
    }
    let mut i = 0;
    while i < tokens.len() {
        let after_op = i > 0 && matches!(tokens[i - 1], Token::Op(_));
        if !after_op && is_word(&tokens[i], "project") {
            match (tokens.get(i + 1), tokens.get(i + 2)) {
                (Some(Token::Op(op)), Some(Token::Word(v) | Token::Str(v))) if op == "=" => {
                    // A function (`project = currentProject()`) is no value.
                    if matches!(tokens.get(i + 3), Some(Token::Open)) {
                        return None;
                    }
                    return Some(vec![v.clone()]);
                }
                (Some(t), Some(Token::Open)) if is_word(t, "in") => {
                    let mut values = Vec::new();
                    for t in &tokens[i + 3..] {
                        match t {
                            Token::Close => return (!values.is_empty()).then_some(values),
                            Token::Word(v) | Token::Str(v) => values.push(v.clone()),
                            Token::Comma => {}
                            // A function in the list (`projectsWhereUserHasRole(…)`).
                            Token::Open | Token::Op(_) => return None,
                        }
                    }
                    return None;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Op(String),
    Open,
    Close,
    Comma,
}

/// JQL's tokens, as far as [`jql_projects`] needs them; `None` for text it cannot read (an
/// unterminated string).
fn tokenize(jql: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = jql.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        q if q == c => break,
                        x => s.push(x),
                    }
                }
                out.push(Token::Str(s));
            }
            '=' | '!' | '<' | '>' | '~' => {
                let mut op = String::new();
                while let Some(&x) = chars.peek() {
                    if matches!(x, '=' | '!' | '<' | '>' | '~') {
                        op.push(x);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Op(op));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || "()=,!<>~\"'".contains(x) {
                        break;
                    }
                    w.push(x);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Some(out)
}

/// What one rule waits for: whether a webhook woke it, and the issues named since its last run
/// began, each with when it was first received.
#[derive(Debug, Default)]
struct Pending {
    woken: bool,
    ids: HashMap<JiraId, Instant>,
}

/// The rules webhooks woke and the issues they named, between the receiver and the service.
#[derive(Debug)]
pub struct Wakes {
    /// Per rule, in config order: the projects its JQL is restricted to (`None`: any).
    scopes: Vec<Option<Vec<String>>>,
    pending: Mutex<Vec<Pending>>,
    notify: Notify,
}

impl Wakes {
    /// For `rules`, in config order.
    pub fn new(rules: &[RuleConfig]) -> Self {
        Self {
            scopes: rules.iter().map(|r| jql_projects(&r.jql)).collect(),
            pending: Mutex::new(rules.iter().map(|_| Pending::default()).collect()),
            notify: Notify::new(),
        }
    }

    /// Records a webhook about the issue `id` (if Jira gave one) in the project `project` names
    /// (what the payload gives of its key, id and name, as JQL may name it by any of them; none:
    /// every rule), received at `at`; returns how many rules it wakes.
    pub fn record(&self, id: Option<JiraId>, project: &[&str], at: Instant) -> usize {
        let names = |p: &String| project.iter().any(|n| p.eq_ignore_ascii_case(n));
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut woken = 0;
        for (scope, p) in self.scopes.iter().zip(pending.iter_mut()) {
            let could_match = match scope {
                Some(projects) if !project.is_empty() => projects.iter().any(names),
                _ => true,
            };
            if !could_match {
                continue;
            }
            woken += 1;
            p.woken = true;
            if let Some(id) = &id
                && (p.ids.len() < PENDING_MAX || p.ids.contains_key(id))
            {
                p.ids.entry(id.clone()).or_insert(at);
            }
        }
        drop(pending);
        if woken > 0 {
            self.notify.notify_one();
        }
        woken
    }

    /// Waits until a webhook woke some rule since the last [`Wakes::woken`].
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The rules woken since the last call (their indices in config order), no longer woken.
    pub fn woken(&self) -> Vec<usize> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| std::mem::take(&mut p.woken).then_some(i))
            .collect()
    }

    /// The issues waiting for the run of rule `index` that starts now (the earliest received,
    /// at most [`MAX_RECONCILE`]), with when each was received; they are no longer waiting.
    /// When more wait, the rule stays woken for another run.
    pub fn take(&self, index: usize) -> Vec<(JiraId, Instant)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = pending.get_mut(index) else {
            return Vec::new();
        };
        let mut ids: Vec<(JiraId, Instant)> = p.ids.drain().collect();
        ids.sort_by(|(a, at_a), (b, at_b)| at_a.cmp(at_b).then_with(|| a.cmp(b)));
        if ids.len() > MAX_RECONCILE {
            for (id, at) in ids.split_off(MAX_RECONCILE) {
                p.ids.insert(id, at);
            }
            p.woken = true;
            drop(pending);
            self.notify.notify_one();
        }
        ids
    }

    /// Puts back issues a run took but did not get to read (its search failed): the next run
    /// reads them.
    pub fn put_back(&self, index: usize, ids: Vec<(JiraId, Instant)>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pending.get_mut(index) {
            for (id, at) in ids {
                if p.ids.len() >= PENDING_MAX {
                    break;
                }
                p.ids.entry(id).or_insert(at);
            }
        }
    }
}

/// The identifiers received lately, oldest first, for at most [`SEEN_FOR`] and [`SEEN_MAX`].
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(Instant, String)>,
    ids: HashSet<String>,
}

impl Seen {
    /// Returns true if and only if `id` was not seen (it is remembered from now).
    fn first(&mut self, id: &str, now: Instant) -> bool {
        while let Some((at, old)) = self.order.front() {
            if now.duration_since(*at) < SEEN_FOR && self.order.len() < SEEN_MAX {
                break;
            }
            self.ids.remove(old);
            self.order.pop_front();
        }
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back((now, id.to_owned()));
        true
    }
}

/// The receiver of `POST /webhook/jira`.
pub struct Receiver {
    secret: Secret,
    wakes: Arc<Wakes>,
    counts: Arc<WebhookCounts>,
    metrics: Option<Arc<Metrics>>,
    seen: Mutex<Seen>,
    /// One permit per body being read ([`READING_MAX`]).
    reading: tokio::sync::Semaphore,
}

/// What a webhook's payload says, as far as the sync reads it.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "webhookEvent", default)]
    event: Option<String>,
    #[serde(default)]
    issue: Option<PayloadIssue>,
}

#[derive(Debug, Deserialize)]
struct PayloadIssue {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    fields: Option<PayloadFields>,
}

#[derive(Debug, Deserialize)]
struct PayloadFields {
    #[serde(default)]
    project: Option<PayloadProject>,
}

#[derive(Debug, Deserialize)]
struct PayloadProject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Receiver {
    pub fn new(
        secret: Secret,
        wakes: Arc<Wakes>,
        counts: Arc<WebhookCounts>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            secret,
            wakes,
            counts,
            metrics,
            seen: Mutex::new(Seen::default()),
            reading: tokio::sync::Semaphore::new(READING_MAX),
        }
    }

    /// Serves `POST /webhook/jira` on `listener` until `cancel` fires.
    ///
    /// # Errors
    /// The listener fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let app = axum::Router::new()
            .route(PATH, axum::routing::post(receive))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }

    /// Judges one request: `headers` and its `body`, received at `at`.
    async fn judge(&self, headers: &HeaderMap, body: Body, at: Instant) -> Verdict {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Verdict::TooLarge;
        }
        // The semaphore is never closed.
        let Ok(_reading) = self.reading.acquire().await else {
            return Verdict::TooSlow;
        };
        let bytes =
            match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => return Verdict::TooLarge,
                Err(_) => return Verdict::TooSlow,
            };
        let Some(signature) = headers
            .get(SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("sha256="))
            .and_then(|hex| hex::decode(hex).ok())
        else {
            return Verdict::Unsigned;
        };
        if !signed_by(&self.secret, &bytes, &signature) {
            return Verdict::BadSignature;
        }
        let Ok(payload) = serde_json::from_slice::<Payload>(&bytes) else {
            return Verdict::Malformed;
        };
        if let Some(id) = headers.get(IDENTIFIER).and_then(|v| v.to_str().ok())
            && !self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first(id, at)
        {
            return Verdict::Repeated;
        }
        let Some(issue) = payload.issue else {
            return Verdict::NoIssue;
        };
        let id = issue.id.as_deref().and_then(|i| JiraId::parse(i).ok());
        if id.is_none() && issue.key.is_none() {
            return Verdict::NoIssue;
        }
        let project = issue.fields.and_then(|f| f.project);
        let names: Vec<&str> = project
            .iter()
            .flat_map(|p| [&p.key, &p.id, &p.name])
            .filter_map(|n| n.as_deref())
            .collect();
        let woken = self.wakes.record(id, &names, at);
        debug!(
            event = payload.event.as_deref().unwrap_or("?"),
            jira_key = issue.key.as_deref().unwrap_or("?"),
            rules = woken,
            "webhook received"
        );
        Verdict::Accepted
    }
}

/// Returns true if and only if `signature` is the HMAC-SHA256 of `body` with `secret`, compared
/// in constant time.
pub fn signed_by(secret: &Secret, body: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

/// `sha256=<hex>`: the `X-Hub-Signature` value of `body` signed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = receiver.judge(&headers, body, Instant::now()).await;
    receiver.counts.count(verdict);
    if let Some(m) = &receiver.metrics {
        m.webhook(
            verdict.as_str(),
            verdict.is_rejected(),
            verdict.is_ignored(),
        );
    }
    if verdict.is_rejected() {
        let rejected = receiver.counts.totals().rejected;
        // Every refusal at debug; a warning at the 1st, 10th, 100th…: a wrong secret makes
        // every webhook fail, a flood of forged ones must not flood the log.
        let n = receiver.counts.rejected.load(Ordering::Relaxed);
        if is_power_of_ten(n) {
            warn!(
                reason = verdict.as_str(),
                refused = n,
                "a webhook was refused: check that the secret registered in Jira is the one in \
                 webhook.secret_env or webhook.secret_file"
            );
        } else {
            debug!(reason = verdict.as_str(), rejected, "a webhook was refused");
        }
    }
    (verdict.status(), verdict.as_str()).into_response()
}

/// Returns true if and only if `n` is 1, 10, 100…: the counts at which something repeated is
/// logged.
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Binds the webhook listener at `addr` (before the service says it is ready, so a port in
/// use fails the start).
///
/// # Errors
/// The address cannot be bound; the message names `webhook.listen`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, WebhookError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })
}

/// Why the webhook receiver cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "cannot receive webhooks on {addr}: check webhook.listen (another process may use the port)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Conjunctions naming their project(s) are restricted to them; anything else may match any
    /// issue.
    #[test]
    fn a_rule_is_restricted_to_the_projects_its_jql_names() {
        let p = |s: &str| jql_projects(s);
        let v = |xs: &[&str]| Some(xs.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(p("project = OPS"), v(&["OPS"]));
        assert_eq!(p("project=OPS AND issuetype = Incident"), v(&["OPS"]));
        assert_eq!(p("issuetype = Incident AND Project = \"OPS\""), v(&["OPS"]));
        assert_eq!(
            p("project in (OPS, 'SRE', 10000) AND x = y"),
            v(&["OPS", "SRE", "10000"])
        );
        assert_eq!(p("(project = OPS AND priority = High)"), v(&["OPS"]));
        for any in [
            "project = OPS OR labels = x",
            "project != OPS",
            "project not in (OPS)",
            "NOT project = OPS",
            "issuetype = Incident",
            "project in projectsWhereUserHasRole(Developers)",
            "project in (OPS, projectsLeadByUser())",
            "project = currentProject()",
            "summary ~ \"unterminated",
            "labels = project",
        ] {
            assert_eq!(p(any), None, "{any}");
        }
    }

    /// Webhooks wake only the rules whose projects they name (and rules of any project), keep
    /// each issue once, and hand a run at most 50, the earliest first.
    #[test]
    fn wakes_go_to_the_rules_that_could_match() {
        let rule = |name: &str, jql: &str| {
            let mut text = String::from(
                "[jira]\nurl = \"https://x.atlassian.net\"\nuser = \"u\"\ntoken_env = \"PATH\"\n\
                 [gitlab]\nurl = \"https://gitlab.com\"\ntoken_env = \"PATH\"\n",
            );
            text.push_str(&format!(
                "[[rule]]\nname = \"{name}\"\njql = \"{jql}\"\ntarget = \"issue\"\ngitlab_project = \"a/b\"\n"
            ));
            crate::config::Config::from_toml(&text, std::path::Path::new("c.toml"))
                .expect("valid")
                .rules
                .remove(0)
        };
        let rules = [
            rule("ops", "project = OPS"),
            rule("sre", "project in (SRE, 10002, 'Site Reliability')"),
            rule("all", "labels = incident"),
        ];
        let wakes = Wakes::new(&rules);
        let t0 = Instant::now();
        let id = |n: u32| JiraId::parse(&n.to_string()).unwrap();
        assert_eq!(wakes.record(Some(id(1)), &["ops", "10001"], t0), 2);
        assert_eq!(wakes.woken(), vec![0, 2]);
        assert_eq!(wakes.woken(), Vec::<usize>::new(), "taken once");
        assert_eq!(wakes.record(Some(id(2)), &["10002"], t0), 2);
        assert_eq!(
            wakes.record(Some(id(3)), &[], t0),
            3,
            "no project: every rule"
        );
        assert_eq!(wakes.woken(), vec![0, 1, 2]);
        assert_eq!(
            wakes.record(None, &["X", "10009", "site reliability"], t0),
            2,
            "by the project's name too"
        );
        assert_eq!(wakes.woken(), vec![1, 2]);
        let taken: Vec<JiraId> = wakes.take(0).into_iter().map(|(i, _)| i).collect();
        assert_eq!(taken.len(), 2);
        assert!(taken.contains(&id(1)) && taken.contains(&id(3)));
        assert!(wakes.take(0).is_empty(), "taken by the run");
        for n in 0..60 {
            wakes.record(
                Some(id(100 + n)),
                &["SRE"],
                t0 + Duration::from_millis(u64::from(n) + 1),
            );
        }
        wakes.woken();
        let first = wakes.take(1);
        assert_eq!(first.len(), MAX_RECONCILE);
        assert_eq!(first[0].0, id(2), "the earliest first");
        assert_eq!(wakes.woken(), vec![1], "the rest wake the rule again");
        assert_eq!(wakes.take(1).len(), 12);
    }

    /// An identifier is seen once within its time; the memory of them is bounded.
    #[test]
    fn identifiers_are_remembered_for_a_while_and_bounded() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        assert!(seen.first("a", t0));
        assert!(!seen.first("a", t0 + Duration::from_secs(60)));
        assert!(
            seen.first("a", t0 + SEEN_FOR + Duration::from_secs(1)),
            "expired"
        );
        for n in 0..SEEN_MAX + 10 {
            seen.first(&n.to_string(), t0 + SEEN_FOR * 2);
        }
        assert!(seen.order.len() <= SEEN_MAX && seen.ids.len() <= SEEN_MAX);
    }

    /// A signature made with the secret verifies; another secret's or a changed body's does not.
    #[test]
    fn signatures_are_hmac_sha256_of_the_raw_body() {
        let secret = Secret::new("It's a Secret to Everybody");
        // GitHub's published test vector for the same scheme (docs.github.com, "Validating
        // webhook deliveries"): HMAC-SHA256 of "Hello, World!" with that secret.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(signature(secret.expose(), b"Hello, World!"), expected);
        let raw = hex::decode(expected.trim_start_matches("sha256=")).unwrap();
        assert!(signed_by(&secret, b"Hello, World!", &raw));
        assert!(!signed_by(&secret, b"Hello, World?", &raw));
        assert!(!signed_by(&Secret::new("other"), b"Hello, World!", &raw));
        assert!(is_power_of_ten(10) && is_power_of_ten(1) && !is_power_of_ten(11));
    }
}
