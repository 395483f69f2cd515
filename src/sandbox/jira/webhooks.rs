//! The fake Jira's admin webhook: when a target is set ([`FakeJira::set_webhook`]), every issue
//! created, changed (edited, transitioned, resolved, reopened, moved) or deleted through the
//! handle is posted to it, signed, as Jira Cloud posts admin webhooks.
//!
//! What is modelled, and where it comes from (Atlassian, developer.atlassian.com
//! "Webhooks", cloud/jira/platform/webhooks, and the announcement "New Jira Cloud webhook retry
//! policy", community.developer.atlassian.com/t/30554):
//! - the body: `timestamp` (epoch ms), `webhookEvent` (`jira:issue_created`,
//!   `jira:issue_updated`, `jira:issue_deleted`), `issue_event_type_name`, `user`, and `issue`
//!   as the REST API renders it (`id`, `self`, `key`, `fields` with `project`);
//! - with a secret, `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>` ("Secure admin
//!   webhooks"); without one, no signature;
//! - `X-Atlassian-Webhook-Identifier`, unique per delivery and the same across its retries;
//! - retries when the receiver answers 408, 409, 425, 429 or 5xx or cannot be reached, with
//!   `X-Atlassian-Webhook-Retry: <n>` (the attempt's number); deliveries are not ordered.
//!
//! Tests can replay a delivery ([`FakeJira::redeliver`], the same identifier and body, as a
//! retry) and send one signed with another secret or none ([`FakeJira::send_forged`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{FakeIssue, FakeJira, FieldSelection, JiraState, render_issue};
use crate::sandbox::lock;

/// Where the fake posts its webhooks, and the secret it signs them with (`None`: a webhook
/// registered without a secret, sent unsigned).
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    pub url: url::Url,
    pub secret: Option<String>,
}

/// How a forged webhook is signed ([`FakeJira::send_forged`]).
#[derive(Clone, Debug)]
pub enum Forgery {
    /// No `X-Hub-Signature` at all.
    Unsigned,
    /// Signed with this secret instead of the target's.
    OtherSecret(String),
    /// Signed with the target's secret, then the body changed.
    Tampered,
}

/// One webhook the fake sent (or tried to), with every attempt.
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    /// `X-Atlassian-Webhook-Identifier`.
    pub identifier: String,
    /// `webhookEvent`.
    pub event: String,
    pub key: String,
    pub issue_id: u64,
    /// The body, as signed.
    pub body: Vec<u8>,
    /// When each attempt was sent, and the status it was answered (`None`: no answer).
    pub attempts: Vec<(Instant, Option<u16>)>,
}

impl WebhookDelivery {
    /// When the first attempt was sent.
    pub fn sent_at(&self) -> Option<Instant> {
        self.attempts.first().map(|(t, _)| *t)
    }

    /// Returns true if and only if an attempt was answered 2xx.
    pub fn delivered(&self) -> bool {
        self.attempts
            .iter()
            .any(|(_, s)| s.is_some_and(|s| (200..300).contains(&s)))
    }
}

/// Retries after the first attempt, at most. Atlassian does not give a number; its announcement
/// says retries may go on "up to 30 minutes". Five, doubling from the retry delay, covers that
/// at the default delay's scale without keeping a test's tasks alive for long.
const RETRIES: u32 = 5;

/// The webhook state of one fake Jira.
pub(super) struct Hooks {
    target: Mutex<Option<WebhookTarget>>,
    log: Arc<Mutex<Vec<WebhookDelivery>>>,
    next: AtomicU64,
    /// The pause before the first retry; it doubles each time.
    retry_delay: Mutex<Duration>,
    client: reqwest::Client,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            target: Mutex::new(None),
            log: Arc::new(Mutex::new(Vec::new())),
            next: AtomicU64::new(1),
            retry_delay: Mutex::new(Duration::from_secs(1)),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// The signature header's value for `body` signed with `secret`: `sha256=` and the hex
/// HMAC-SHA256 (made here, not by the receiver's code, so a bug there cannot hide here).
fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC takes a key of any length.
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Returns true if and only if Cloud retries a delivery answered `status` (`None`: no answer).
fn is_retried(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => matches!(s, 408 | 409 | 425 | 429) || (500..600).contains(&s),
    }
}

impl JiraState {
    /// Posts `event` about the issue `id` as it is now (`issue`) to the webhook target, if one
    /// is set; returns at once (the delivery runs on its own task).
    pub(super) fn webhook(&self, event: &str, id: u64, issue: &FakeIssue) {
        let Some(target) = lock(&self.hooks.target).clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fields = FieldSelection::new(None, true);
        let issue_json = render_issue(self, "2", id, issue, &fields);
        let type_name = match event {
            "jira:issue_created" => "issue_created",
            "jira:issue_deleted" => "issue_deleted",
            _ => "issue_generic",
        };
        let body = json!({
            "timestamp": self.now().timestamp_millis(),
            "webhookEvent": event,
            "issue_event_type_name": type_name,
            "user": {
                "self": self.api("2", "user?accountId=5b10a2844c20165700ede21g"),
                "accountId": "5b10a2844c20165700ede21g",
                "displayName": "A Person",
                "active": true,
            },
            "issue": issue_json,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let n = self.hooks.next.fetch_add(1, Ordering::Relaxed);
        let delivery = WebhookDelivery {
            identifier: format!("sandbox-{n:08}-{:016x}", super::fnv1a(&body)),
            event: event.to_owned(),
            key: issue.key.clone(),
            issue_id: id,
            body,
            attempts: Vec::new(),
        };
        let index = {
            let mut log = lock(&self.hooks.log);
            log.push(delivery.clone());
            log.len() - 1
        };
        let client = self.hooks.client.clone();
        let log = Arc::clone(&self.hooks.log);
        let delay = *lock(&self.hooks.retry_delay);
        runtime.spawn(async move {
            let mut pause = delay;
            for attempt in 0..=RETRIES {
                let sent = Instant::now();
                let status = post(&client, &target, &delivery, attempt, None).await;
                if let Some(d) = lock(&log).get_mut(index) {
                    d.attempts.push((sent, status));
                }
                if !is_retried(status) || attempt == RETRIES {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        });
    }
}

/// Sends `delivery` to `target` (attempt 0 is the first; later ones carry
/// `X-Atlassian-Webhook-Retry`), signed as the target says unless `forgery` says otherwise;
/// returns the status answered, `None` if none came.
async fn post(
    client: &reqwest::Client,
    target: &WebhookTarget,
    delivery: &WebhookDelivery,
    attempt: u32,
    forgery: Option<&Forgery>,
) -> Option<u16> {
    let mut body = delivery.body.clone();
    let signature = match (forgery, &target.secret) {
        (Some(Forgery::Unsigned), _) | (None, None) => None,
        (Some(Forgery::OtherSecret(s)), _) => Some(sign(s, &body)),
        (Some(Forgery::Tampered), secret) => {
            let signature = sign(secret.as_deref().unwrap_or_default(), &body);
            body.extend_from_slice(b" ");
            Some(signature)
        }
        (None, Some(secret)) => Some(sign(secret, &body)),
    };
    let mut req = client
        .post(target.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "Atlassian Webhook HTTP Client")
        .header("X-Atlassian-Webhook-Identifier", &delivery.identifier)
        // The lane Cloud delivers an issue's own event on (`Primary`; the fallout of a bulk
        // change is `Secondary`), as a capture from a Cloud site shows (jira.js,
        // `webhooks.WebhookHeaders`).
        .header("X-Atlassian-Webhook-Flow", "Primary")
        .body(body);
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature", s);
    }
    if attempt > 0 {
        req = req.header("X-Atlassian-Webhook-Retry", attempt.to_string());
    }
    req.send().await.ok().map(|r| r.status().as_u16())
}

impl FakeJira {
    /// Posts a webhook to `target` for every change made through this handle from now on
    /// (`None`: stops).
    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        *lock(&self.inner.state.hooks.target) = target;
    }

    /// The pause before a failed delivery's first retry (1 s by default; it doubles each time).
    pub fn set_webhook_retry_delay(&self, delay: Duration) {
        *lock(&self.inner.state.hooks.retry_delay) = delay;
    }

    /// Every webhook sent so far, in the order the changes were made.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.inner.state.hooks.log).clone()
    }

    /// Sends the delivery `identifier` again, as Cloud retries it: the same identifier, the same
    /// body and signature, with `X-Atlassian-Webhook-Retry`. Returns the status answered
    /// (`None`: no answer, no such delivery or no target).
    pub async fn redeliver(&self, identifier: &str) -> Option<u16> {
        let target = lock(&self.inner.state.hooks.target).clone()?;
        let delivery = lock(&self.inner.state.hooks.log)
            .iter()
            .find(|d| d.identifier == identifier)
            .cloned()?;
        let attempt = u32::try_from(delivery.attempts.len())
            .unwrap_or(u32::MAX)
            .max(1);
        let sent = Instant::now();
        let status = post(
            &self.inner.state.hooks.client,
            &target,
            &delivery,
            attempt,
            None,
        )
        .await;
        if let Some(d) = lock(&self.inner.state.hooks.log)
            .iter_mut()
            .find(|d| d.identifier == identifier)
        {
            d.attempts.push((sent, status));
        }
        status
    }

    /// Sends a webhook about `key` as it is now, under a fresh identifier, signed as `forgery`
    /// says: what someone without the secret can send. It is not logged as a delivery. Returns
    /// the status answered (`None`: no answer, no such issue or no target).
    pub async fn send_forged(&self, key: &str, forgery: Forgery) -> Option<u16> {
        let target = lock(&self.inner.state.hooks.target).clone()?;
        let (id, issue) = lock(&self.inner.state.data).issues.get(key).cloned()?;
        let fields = FieldSelection::new(None, true);
        let body = json!({
            "timestamp": self.inner.state.now().timestamp_millis(),
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "issue": render_issue(&self.inner.state, "2", id, &issue, &fields),
        });
        let delivery = WebhookDelivery {
            identifier: format!(
                "forged-{}",
                self.inner.state.hooks.next.fetch_add(1, Ordering::Relaxed)
            ),
            event: "jira:issue_updated".to_owned(),
            key: key.to_owned(),
            issue_id: id,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            attempts: Vec::new(),
        };
        post(
            &self.inner.state.hooks.client,
            &target,
            &delivery,
            0,
            Some(&forgery),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderMap;
    use chrono::Utc;
    use serde_json::Value;
    use tokio::sync::mpsc;

    use super::*;
    use crate::sandbox::jira::FakeJiraConfig;

    /// A receiver on loopback answering `status` to every post, handing over each request's
    /// headers and body.
    async fn receiver(status: u16) -> (url::Url, mpsc::UnboundedReceiver<(HeaderMap, Vec<u8>)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tx = Arc::new(tx);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let tx = Arc::clone(&tx);
                async move {
                    let _ = tx.send((headers, body.to_vec()));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), rx)
    }

    /// A change is posted signed, with an identifier; a 5xx answer is retried under the same
    /// identifier with the retry count.
    #[tokio::test]
    async fn changes_are_posted_signed_and_retried() {
        let jira = FakeJira::start(FakeJiraConfig::cloud()).await.unwrap();
        let (url, mut rx) = receiver(503).await;
        jira.set_webhook_retry_delay(Duration::from_millis(1));
        jira.set_webhook(Some(WebhookTarget {
            url,
            secret: Some("s3".into()),
        }));
        jira.insert(FakeIssue::new("OPS-1", "Down", Utc::now()));
        let (first, body) = rx.recv().await.unwrap();
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(payload["webhookEvent"], "jira:issue_created");
        assert_eq!(payload["issue"]["key"], "OPS-1");
        assert_eq!(payload["issue"]["fields"]["project"]["key"], "OPS");
        assert_eq!(
            first["x-hub-signature"].to_str().unwrap(),
            sign("s3", &body)
        );
        let (retry, again) = rx.recv().await.unwrap();
        assert_eq!(again, body, "the same body");
        assert_eq!(
            retry["x-atlassian-webhook-identifier"],
            first["x-atlassian-webhook-identifier"]
        );
        assert_eq!(retry["x-atlassian-webhook-retry"], "1");
        assert!(first.get("x-atlassian-webhook-retry").is_none());
    }
}
