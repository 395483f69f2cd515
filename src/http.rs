//! The HTTP client both API clients share: timeouts, user agent, pacing to published rate limits,
//! `Retry-After`, capped exponential backoff with jitter, and which failures are safe to retry.
//!
//! The one rule that matters most: a request that is not idempotent (a GitLab create) is never
//! re-sent after the server may have applied it (timeout, 5xx, a connection dropped mid-answer).
//! Such a failure comes back as [`HttpError::is_ambiguous`], and the engine looks before it
//! creates again. A 429 or a refused connection is always safe to retry: nothing was applied.
//!
//! Redirects are followed only within the origin (scheme, host and port) a request was sent to.
//! A redirect to another origin fails the request ([`HttpError::CrossOriginRedirect`]): the
//! credentials, the query and the body are for our server alone, and an answer from another host
//! (which reqwest would fetch without the credentials) must never pass for our server's.
//!
//! Servers are trusted by the operating system's certificate store (which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), the bundled Mozilla roots (so a machine without a CA
//! bundle still reaches public servers), and a section's `ca_file` ([`ExtraRoots`]).
//!
//! This module knows nothing of Jira or GitLab payloads; the clients map statuses to their own
//! typed errors.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::secret::Secret;

/// The user agent sent with every request.
pub const USER_AGENT: &str = concat!("jira-gitlab-sync/", env!("CARGO_PKG_VERSION"));

/// How retryable failures are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff delay; it doubles each attempt.
    pub base_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured by waiting. A longer one fails the request instead,
    /// because retrying earlier than the server asked is never done.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(900),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` after `attempt` failures (1-based): full jitter
    /// over an exponentially growing, capped window. `unit` is a random number in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        jittered_backoff(self.base_delay, self.max_delay, attempt, unit)
    }
}

/// Capped exponential backoff with jitter: after `failures` (≥ 1) failures, a delay in
/// `[½, 1]` of `base · 2^(failures−1)` capped at `max`; `unit` is a random number in `[0, 1)`.
/// Keeping at least half the window spreads consecutive attempts out.
pub fn jittered_backoff(base: Duration, max: Duration, failures: u32, unit: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    let window = base.saturating_mul(factor).min(max);
    window.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// Requests a minute allowed for each kind of request; `None` is unpaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    pub requests_per_minute: Option<u32>,
    pub creates_per_minute: Option<u32>,
    pub searches_per_minute: Option<u32>,
}

/// What a request is, for pacing and for deciding what may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Reads, and writes that can be repeated safely (close, reopen, alerts by fingerprint).
    Idempotent,
    /// A search (GitLab paces these separately).
    Search,
    /// A create that must not be repeated blindly.
    Create,
    /// Another write that must not be repeated blindly (an incident timeline event), outside
    /// the pace of creates (GitLab.com's create limit is for issues).
    Write,
}

impl RequestKind {
    fn is_idempotent(self) -> bool {
        !matches!(self, RequestKind::Create | RequestKind::Write)
    }
}

/// A paced gate: requests of one kind leave at most once per `interval` (a GCRA with no burst),
/// and all requests wait while the server has asked us to back off.
#[derive(Debug)]
struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_minute: Option<u32>) -> Self {
        Self {
            interval: per_minute.map(|n| Duration::from_secs(60) / n.max(1)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Takes the next turn: the time it starts at (now or later), or `None` when unpaced.
    async fn reserve(&self) -> Option<Instant> {
        let interval = self.interval?;
        let mut next = self.next.lock().await;
        let at = (*next).max(Instant::now());
        *next = at + interval;
        Some(at)
    }

    #[cfg(test)]
    async fn acquire(&self) {
        if let Some(at) = self.reserve().await {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A whole response, read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The first `n` characters of a body, on one line, for error messages.
pub fn excerpt(body: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(n).collect();
    if text.chars().count() > n {
        out.push('…');
    }
    out.replace(['\n', '\r'], " ")
}

impl Response {
    /// The first `n` characters of the body.
    pub fn excerpt(&self, n: usize) -> String {
        excerpt(&self.body, n)
    }

    /// Decodes the body as JSON.
    ///
    /// # Errors
    /// The body is not the expected JSON; the error holds an excerpt of it.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.body).map_err(|e| DecodeError {
            reason: e.to_string(),
            body_excerpt: excerpt(&self.body, 200),
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A body that could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} (body starts: {body_excerpt})")]
pub struct DecodeError {
    pub reason: String,
    pub body_excerpt: String,
}

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No connection could be made (the name does not resolve, the connection is refused or
    /// times out, TLS fails): nothing reached the server.
    #[error(
        "cannot connect to {service} at {origin} ({reason}): check {url_key}, and that this \
         machine can reach it (DNS, firewall, proxy)"
    )]
    Connect {
        service: &'static str,
        /// `scheme://host:port`.
        origin: String,
        /// The configuration key that names the server (`gitlab.url`).
        url_key: &'static str,
        /// The innermost cause, as the network stack put it.
        reason: String,
        /// The error itself; its own text repeats the URL, so it is not the message's source.
        error: reqwest::Error,
    },
    /// The request was sent but no complete answer came back (timeout, dropped connection).
    /// The server may have applied it.
    #[error("no complete answer from {service} at {url} ({reason})")]
    NoAnswer {
        service: &'static str,
        url: String,
        /// The innermost cause, as the network stack put it.
        reason: String,
        /// The error itself; its own text repeats the URL, so it is not the message's source.
        error: reqwest::Error,
    },
    /// A server error status (5xx) after the request was sent; the server may have applied it.
    #[error("HTTP {status} from {url}: {body_excerpt}")]
    ServerError {
        url: String,
        status: u16,
        body_excerpt: String,
    },
    /// Still rate limited after every attempt, or told to wait longer than we may.
    #[error("rate limited by {url}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
    },
    /// The request could not be built (a bad header value).
    #[error("cannot build the request to {url}: {reason}")]
    Build { url: String, reason: String },
    /// The server redirected to another origin, which is never followed: nothing was sent there.
    /// Only a change of configuration (`url_key`) helps, so it is not retryable.
    #[error(
        "{service} redirected from {from} to {to}; the sync follows redirects only within one origin: set {url_key} to the final address"
    )]
    CrossOriginRedirect {
        service: &'static str,
        /// The origin the request was sent to, as `scheme://host:port`.
        from: String,
        /// The origin the redirect pointed at, as `scheme://host:port`.
        to: String,
        /// The configuration key that names the server (`jira.url`).
        url_key: &'static str,
    },
}

impl HttpError {
    /// Returns true if and only if the server may have applied the request although we got no
    /// success answer, so a create must look before it is sent again.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            HttpError::NoAnswer { .. } | HttpError::ServerError { .. }
        )
    }

    /// Returns true if and only if trying again later (next cycle) may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            HttpError::Build { .. } | HttpError::CrossOriginRedirect { .. }
        )
    }

    /// Returns true if and only if the server redirected to another origin: every request to it
    /// would fail alike until the configuration changes.
    pub fn is_cross_origin_redirect(&self) -> bool {
        matches!(self, HttpError::CrossOriginRedirect { .. })
    }

    /// Returns true if and only if the server looks down: no connection, no complete answer,
    /// or a server error (after this client's retries). Rate limiting is not an outage.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. } | HttpError::NoAnswer { .. } | HttpError::ServerError { .. }
        )
    }

    /// The same error, naming `key` as the configuration key to fix if it is a cross-origin
    /// redirect (for requests to a URL other than the client's base, such as an `alert_url`).
    #[must_use]
    pub fn with_url_key(self, key: &'static str) -> Self {
        match self {
            HttpError::Connect {
                service,
                origin,
                reason,
                error,
                ..
            } => HttpError::Connect {
                service,
                origin,
                url_key: key,
                reason,
                error,
            },
            HttpError::CrossOriginRedirect {
                service, from, to, ..
            } => HttpError::CrossOriginRedirect {
                service,
                from,
                to,
                url_key: key,
            },
            other => other,
        }
    }
}

/// The innermost cause of `e` (`Connection refused (os error 111)`, a DNS failure, a timeout):
/// the outer layers only repeat the URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Redirects followed in one request at most (as `reqwest::redirect::Policy::limited`).
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port`, the port always written (`https://jira.example.com:443`), so a message
/// shows what differs even when only the port does.
pub fn origin_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// A redirect to another origin, refused by [`same_origin_redirects`]; `send` turns it into
/// [`HttpError::CrossOriginRedirect`].
#[derive(Debug, thiserror::Error)]
#[error("redirected from {from} to {to}")]
struct CrossOrigin {
    from: String,
    to: String,
}

/// Follows redirects within the origin of the first request only, at most [`MAX_REDIRECTS`].
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous` starts with the URL first requested.
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let (from, to) = (origin_of(first), origin_of(attempt.url()));
        if from != to {
            return attempt.error(CrossOrigin { from, to });
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        attempt.follow()
    })
}

/// The refused cross-origin redirect behind a reqwest error, if that is what it is.
fn cross_origin_cause(e: &reqwest::Error) -> Option<&CrossOrigin> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<CrossOrigin>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// How a client reaches its server, beyond timeouts and pacing.
#[derive(Clone, Debug)]
pub struct Transport {
    /// The configuration key naming the server (`jira.url`), for messages that ask to change it.
    pub url_key: &'static str,
    /// Certificates trusted besides the system's and the bundled roots.
    pub extra_roots: ExtraRoots,
}

/// Certificate authorities trusted besides the operating system's store and the bundled roots:
/// a section's `ca_file`, such as a company CA.
#[derive(Clone, Default)]
pub struct ExtraRoots(Vec<reqwest::Certificate>);

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExtraRoots({} certificates)", self.0.len())
    }
}

/// Why a `ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)")]
    Empty,
    #[error("is not a PEM bundle of certificates ({0})")]
    Malformed(String),
    #[error("holds a certificate that TLS cannot use, number {index} from the top ({reason})")]
    Rejected { index: usize, reason: String },
}

impl ExtraRoots {
    /// Reads a PEM bundle of one or more certificates, and checks that TLS accepts each as a
    /// trust anchor, so a bad file is refused when the config is loaded, not at the first
    /// request.
    ///
    /// # Errors
    /// No certificate, a malformed block, or a block that is not a certificate TLS can use.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CaFileError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| CaFileError::Malformed(error_chain(&e)))?;
        if certs.is_empty() {
            return Err(CaFileError::Empty);
        }
        for (i, cert) in certs.iter().enumerate() {
            // Only these roots, so the check does not read the system's store each time.
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert.clone())
                .build()
                .map_err(|e| CaFileError::Rejected {
                    index: i + 1,
                    reason: error_chain(&e),
                })?;
        }
        Ok(Self(certs))
    }

    /// How many certificates there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns true if and only if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// Told about every request attempt a client makes and every pause it takes on purpose: how
/// the service counts requests for its metrics and knows that a rule's run is still moving.
/// Called from the task that sends the request.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// An attempt to `service` ("Jira", "GitLab") ended: answered with `status`, or `None` when
    /// no complete answer came (the connection failed, timed out or was cut short).
    fn attempt(&self, service: &'static str, status: Option<u16>);

    /// The client waits `wait` on purpose before its next attempt to `service`: a
    /// `Retry-After`, a backoff between retries, or pacing to a rate limit.
    fn waiting(&self, service: &'static str, wait: Duration);
}

/// Several observers told the same things, in order.
#[derive(Debug, Default)]
pub struct Observers(pub Vec<Arc<dyn RequestObserver>>);

impl RequestObserver for Observers {
    fn attempt(&self, service: &'static str, status: Option<u16>) {
        for o in &self.0 {
            o.attempt(service, status);
        }
    }

    fn waiting(&self, service: &'static str, wait: Duration) {
        for o in &self.0 {
            o.waiting(service, wait);
        }
    }
}

/// The shared client: one per remote service.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    service: &'static str,
    retry: RetryPolicy,
    requests: Arc<Pacer>,
    creates: Arc<Pacer>,
    searches: Arc<Pacer>,
    /// While the server asked us to wait (429 / 503 with `Retry-After`), every request waits.
    blocked_until: Arc<Mutex<Option<Instant>>>,
    secrets: Arc<Vec<Secret>>,
    url_key: &'static str,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl HttpClient {
    /// A client for `service` ("Jira", "GitLab") with a per-request `timeout`.
    ///
    /// # Errors
    /// The TLS backend could not be initialised.
    pub fn new(
        service: &'static str,
        timeout: Duration,
        retry: RetryPolicy,
        pace: &Pace,
        secrets: Vec<Secret>,
        transport: &Transport,
    ) -> Result<Self, HttpError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(same_origin_redirects());
        for cert in &transport.extra_roots.0 {
            builder = builder.add_root_certificate(cert.clone());
        }
        let inner = builder.build().map_err(|e| HttpError::Build {
            url: service.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner,
            service,
            retry,
            requests: Arc::new(Pacer::new(pace.requests_per_minute)),
            creates: Arc::new(Pacer::new(pace.creates_per_minute)),
            searches: Arc::new(Pacer::new(pace.searches_per_minute)),
            blocked_until: Arc::new(Mutex::new(None)),
            secrets: Arc::new(secrets),
            url_key: transport.url_key,
            observer: None,
        })
    }

    /// Tells `observer` about every attempt and pause from now on.
    pub fn observed_by(&mut self, observer: Arc<dyn RequestObserver>) {
        self.observer = Some(observer);
    }

    fn attempted(&self, status: Option<u16>) {
        if let Some(o) = &self.observer {
            o.attempt(self.service, status);
        }
    }

    /// Sleeps `wait`, telling the observer first.
    async fn pause(&self, wait: Duration) {
        if let Some(o) = &self.observer
            && !wait.is_zero()
        {
            o.waiting(self.service, wait);
        }
        tokio::time::sleep(wait).await;
    }

    /// Starts a request; finish it with [`HttpClient::send`].
    pub fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        self.inner.request(method, url)
    }

    /// Removes any secret from text that came from a server, before it reaches a log or error.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            if s.appears_in(&out) {
                out = out.replace(s.expose(), "****");
            }
        }
        out
    }

    /// Sends the request built by `build`, retrying what is safe to retry.
    ///
    /// Returns any answer that is not a 429 or (for idempotent requests) a 5xx, whatever its
    /// status: callers map 4xx to their own errors.
    ///
    /// # Errors
    /// See [`HttpError`]; [`HttpError::is_ambiguous`] tells whether the server may have applied
    /// a request that was not answered.
    pub async fn send(
        &self,
        kind: RequestKind,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.wait_turn(kind).await;
            let request = build().build().map_err(|e| HttpError::Build {
                url: self.service.to_owned(),
                reason: e.to_string(),
            })?;
            let url = redact_url(request.url());
            let sent_to = request.url().clone();
            let method = request.method().clone();
            let last = attempt >= self.retry.max_attempts;
            let outcome = self.inner.execute(request).await;
            let response = match outcome {
                Ok(r) => r,
                Err(e) => {
                    self.attempted(None);
                    if let Some(refused) = cross_origin_cause(&e) {
                        return Err(HttpError::CrossOriginRedirect {
                            service: self.service,
                            from: refused.from.clone(),
                            to: refused.to.clone(),
                            url_key: self.url_key,
                        });
                    }
                    let connect = e.is_connect();
                    let reason = root_cause(&e);
                    let err = if connect {
                        HttpError::Connect {
                            service: self.service,
                            origin: origin_of(&sent_to),
                            url_key: self.url_key,
                            reason,
                            error: e,
                        }
                    } else {
                        HttpError::NoAnswer {
                            service: self.service,
                            url: url.clone(),
                            reason,
                            error: e,
                        }
                    };
                    if last || !(connect || kind.is_idempotent()) {
                        return Err(err);
                    }
                    let delay = self.retry.backoff(attempt, rand::random());
                    warn!(service = self.service, %method, %url, attempt, delay_ms = delay.as_millis() as u64, cause = %err, "request failed, retrying");
                    self.pause(delay).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    self.attempted(None);
                    let err = HttpError::NoAnswer {
                        service: self.service,
                        url: url.clone(),
                        reason: root_cause(&e),
                        error: e,
                    };
                    if last || !kind.is_idempotent() {
                        return Err(err);
                    }
                    let delay = self.retry.backoff(attempt, rand::random());
                    warn!(service = self.service, %method, %url, attempt, delay_ms = delay.as_millis() as u64, cause = %err, "answer cut short, retrying");
                    self.pause(delay).await;
                    continue;
                }
            };
            self.attempted(Some(status.as_u16()));
            let retry_after = parse_retry_after(&headers, chrono::Utc::now());

            if status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
            {
                // Nothing was applied: safe to retry whatever the method, but never earlier than
                // the server asked.
                if let Some(wait) = retry_after
                    && wait > self.retry.max_retry_after
                {
                    return Err(HttpError::RateLimited { url, retry_after });
                }
                if last {
                    return Err(HttpError::RateLimited { url, retry_after });
                }
                let wait =
                    retry_after.unwrap_or_else(|| self.retry.backoff(attempt, rand::random()));
                self.block_for(wait).await;
                warn!(
                    service = self.service,
                    %method,
                    %url,
                    status = status.as_u16(),
                    retry_after_secs = wait.as_secs_f64(),
                    reason = headers.get("RateLimit-Reason").and_then(|v| v.to_str().ok()).unwrap_or(""),
                    "rate limited, waiting"
                );
                continue;
            }
            if status.is_server_error() {
                let err = HttpError::ServerError {
                    url: url.clone(),
                    status: status.as_u16(),
                    body_excerpt: self.scrub(&excerpt(&body, 200)),
                };
                if last || !kind.is_idempotent() {
                    return Err(err);
                }
                let delay =
                    retry_after.unwrap_or_else(|| self.retry.backoff(attempt, rand::random()));
                warn!(service = self.service, %method, %url, attempt, status = status.as_u16(), delay_ms = delay.as_millis() as u64, "server error, retrying");
                self.pause(delay).await;
                continue;
            }
            debug!(service = self.service, %method, %url, status = status.as_u16(), "answered");
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
    }

    async fn wait_turn(&self, kind: RequestKind) {
        loop {
            let until = *self.blocked_until.lock().await;
            match until {
                Some(t) if t > Instant::now() => self.pause(t - Instant::now()).await,
                _ => break,
            }
        }
        let pacer = match kind {
            RequestKind::Create => Some(&self.creates),
            RequestKind::Search => Some(&self.searches),
            RequestKind::Idempotent | RequestKind::Write => None,
        };
        for pacer in pacer.into_iter().chain([&self.requests]) {
            if let Some(at) = pacer.reserve().await {
                self.pause(at.saturating_duration_since(Instant::now()))
                    .await;
            }
        }
    }

    async fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.blocked_until.lock().await;
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }
}

/// A URL fit for logs: no query string (it may hold JQL with personal data) and no userinfo.
fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(
    headers: &HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    /// `Retry-After` is read as seconds or as an HTTP date.
    #[rstest::rstest]
    #[case::seconds("7", Some(7.0))]
    #[case::fraction("0.5", Some(0.5))]
    #[case::date("Sun, 22 Nov 2026 10:00:30 GMT", Some(30.0))]
    #[case::past_date("Sun, 22 Nov 2026 09:00:00 GMT", Some(0.0))]
    #[case::garbage("soon", None)]
    fn retry_after_forms(#[case] v: &str, #[case] secs: Option<f64>) {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(&headers(v), now).map(|d| d.as_secs_f64()),
            secs,
            "Retry-After {v:?}"
        );
    }

    /// Backoff doubles per attempt, is capped, and jitter stays within [half, full] window.
    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(
            p.backoff(3, 0.0),
            Duration::from_millis(200),
            "half the window at least"
        );
        assert_eq!(p.backoff(9, 1.0), Duration::from_secs(1), "capped");
        assert_eq!(
            p.backoff(60, 1.0),
            Duration::from_secs(1),
            "no overflow on huge attempts"
        );
    }

    /// The pacer spaces requests by the configured rate (checked with paused time).
    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests() {
        let pacer = Pacer::new(Some(600)); // one per 100 ms
        let start = Instant::now();
        for _ in 0..5 {
            pacer.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(400),
            "5 requests need 4 intervals"
        );
    }

    /// Origins are written with their port, default or not, and compare scheme, host and port.
    #[rstest::rstest]
    #[case::default_https(
        "https://jira.example.com/jira/rest?x=1",
        "https://jira.example.com:443"
    )]
    #[case::default_http("http://Jira.Example.com", "http://jira.example.com:80")]
    #[case::explicit_port("https://jira.example.com:8443/", "https://jira.example.com:8443")]
    #[case::ipv6("http://[::1]:8080/", "http://[::1]:8080")]
    fn origins_name_their_port(#[case] url: &str, #[case] origin: &str) {
        assert_eq!(origin_of(&url::Url::parse(url).unwrap()), origin);
    }

    /// The cross-origin message names both origins and the key to change.
    #[test]
    fn cross_origin_message_names_both_origins() {
        let err = HttpError::CrossOriginRedirect {
            service: "Jira",
            from: "https://jira.example.com:443".into(),
            to: "https://evil.example:443".into(),
            url_key: "jira.url",
        };
        assert_eq!(
            err.to_string(),
            "Jira redirected from https://jira.example.com:443 to https://evil.example:443; \
             the sync follows redirects only within one origin: set jira.url to the final address"
        );
        assert!(!err.is_retryable() && !err.is_ambiguous());
        let alert = err.with_url_key("the rule's alert_url").to_string();
        assert!(
            alert.ends_with("set the rule's alert_url to the final address"),
            "{alert}"
        );
    }

    /// URLs in logs lose their query and credentials.
    #[test]
    fn urls_are_redacted_for_logs() {
        let u = url::Url::parse("https://u:p@h.example/rest?jql=secret").unwrap();
        assert_eq!(redact_url(&u), "https://h.example/rest");
    }
}
