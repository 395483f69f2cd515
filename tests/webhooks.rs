use std::time::{Duration, Instant};

use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::sandbox::RecordedRequest;
use jira_gitlab_sync::sandbox::jira::{
    FakeIssue, FakeJiraConfig, Fault, FaultTarget, Forgery, WebhookTarget,
};
use serde_json::Value;

use crate::support::{GUARD, Running, Setup, World, ago, free_port, rule};

/// The secret registered with the sandbox Jira's webhook and given to the service.
const SECRET: &str = "webhook-secret-for-tests";

/// Cloud's search lag in these tests: longer than any test waits, so only a search naming the
/// issue in `reconcileIssues` sees a change before the next scheduled run.
const INDEX_LAG: Duration = Duration::from_secs(120);

/// A world whose rule runs every 5 minutes, whose Jira's search lags [`INDEX_LAG`], with the
/// service's `[webhook]` on a free port (and `[metrics]` on another, for the counters). Returns
/// the world and the two ports.
async fn world() -> (World, u16, u16) {
    let (hook_port, metrics_port) = (free_port(), free_port());
    let rules = format!(
        "{}cron = \"0 */5 * * * *\"\n\n[webhook]\nlisten = \"127.0.0.1:{hook_port}\"\n\
         secret_file = \"{{dir}}/webhook-secret\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        rule("ops", "incident", "project = OPS")
    );
    let w = World::start(Setup {
        jira: FakeJiraConfig {
            index_lag: INDEX_LAG,
            ..FakeJiraConfig::cloud()
        },
        rules,
        ..Setup::default()
    })
    .await;
    let path = w.dir.path().join("webhook-secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("the secret is written");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("the secret is private");
    }
    (w, hook_port, metrics_port)
}

/// Starts the service and waits until it receives webhooks and its first run ended.
async fn service(w: &World, hook_port: u16) -> Running {
    let mut daemon = w.launch(&["--log-format", "human"], &[]);
    daemon.wait_for_output("webhooks received").await;
    daemon.wait_for_output("run finished").await;
    w.jira.set_webhook(Some(WebhookTarget {
        url: format!("http://127.0.0.1:{hook_port}/webhook/jira")
            .parse()
            .expect("a URL"),
        secret: Some(SECRET.to_owned()),
    }));
    daemon
}

/// Polls `cond` until it holds (a condition, not a fixed pause); panics after [`GUARD`].
async fn until<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {GUARD:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When GitLab received the request `pred` picks, if it did.
fn received(w: &World, pred: impl Fn(&RecordedRequest) -> bool) -> Option<Instant> {
    w.gitlab.requests().iter().find(|r| pred(r)).map(|r| r.at)
}

fn is_create_of(r: &RecordedRequest, key: &str) -> bool {
    r.method == "POST"
        && r.path.ends_with("/issues")
        && r.status == Some(201)
        && r.body
            .as_ref()
            .and_then(|b| b["title"].as_str())
            .is_some_and(|t| t.contains(&format!("[{key}]")))
}

fn is_close_of(r: &RecordedRequest, iid: u64) -> bool {
    r.method == "PUT"
        && r.path.ends_with(&format!("/issues/{iid}"))
        && r.status == Some(200)
        && r.body.as_ref().and_then(|b| b["state_event"].as_str()) == Some("close")
}

/// When the sandbox sent the webhook of `event` about `key` (known once it was answered).
async fn webhook_sent(w: &World, key: &str, event: &str) -> Instant {
    until(&format!("a {event} webhook for {key}"), || {
        w.jira
            .webhook_deliveries()
            .iter()
            .find(|d| d.key == key && d.event == event)
            .and_then(|d| d.sent_at())
    })
    .await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Sends a signed webhook of `body`'s length, but only its first KB, by hand (the service
/// answers from `Content-Length` and closes, which an HTTP client still writing the body takes
/// for a broken pipe); returns the status line answered.
async fn oversized(port: u16, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the receiver accepts");
    let head = format!(
        "POST /webhook/jira HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-Hub-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        jira_gitlab_sync::webhook::signature(SECRET, body),
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the head is sent");
    stream
        .write_all(&body[..1024])
        .await
        .expect("a little body is sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Issue 13's acceptance: with a 5-minute schedule and a search index that lags minutes, an
/// issue created and then resolved in Jira reaches GitLab within 2 s of each webhook (median
/// over 20), through the real binary; the woken searches name the issue in `reconcileIssues`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_bring_each_change_to_gitlab_within_two_seconds() {
    let (w, hook_port, _) = world().await;
    let daemon = service(&w, hook_port).await;
    let (mut creates, mut closes) = (Vec::new(), Vec::new());
    for n in 1..=20 {
        let key = format!("OPS-{n}");
        w.jira.insert(FakeIssue::new(&key, "Checkout down", ago(0)));
        let sent = webhook_sent(&w, &key, "jira:issue_created").await;
        let written = until(&format!("the create of {key}"), || {
            received(&w, |r| is_create_of(r, &key))
        })
        .await;
        creates.push(written.saturating_duration_since(sent));
        let iid = w
            .gitlab_issues()
            .iter()
            .find(|i| i.title.contains(&format!("[{key}]")))
            .map(|i| i.iid)
            .expect("the issue is in GitLab");

        w.jira.resolve(&key, ago(0));
        let sent = webhook_sent(&w, &key, "jira:issue_updated").await;
        let written = until(&format!("the close of {key}"), || {
            received(&w, |r| is_close_of(r, iid))
        })
        .await;
        closes.push(written.saturating_duration_since(sent));
    }
    let (create, close) = (median(creates.clone()), median(closes.clone()));
    eprintln!(
        "webhook → GitLab write, median of 20: create {} ms, close {} ms (max {} / {} ms)",
        create.as_millis(),
        close.as_millis(),
        creates.iter().max().unwrap().as_millis(),
        closes.iter().max().unwrap().as_millis(),
    );
    assert!(create <= Duration::from_secs(2), "creates: {creates:?}");
    assert!(close <= Duration::from_secs(2), "closes: {closes:?}");
    let issues = w.gitlab_issues();
    assert_eq!(issues.len(), 20, "one object per issue");
    assert!(issues.iter().all(|i| i.state == RemoteState::Closed));
    let reconciled = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/search/jql"))
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["reconcileIssues"].is_array())
        })
        .count();
    assert!(
        reconciled >= 40,
        "every woken search names its issues in reconcileIssues ({reconciled} did)"
    );
    daemon.terminate();
    let done = daemon.exit().await;
    assert!(done.status.success(), "{}", done.output);
}

/// Forged (another secret, a changed body), unsigned, oversized and replayed webhooks write
/// nothing, and are counted in `status --json` and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_unsigned_and_oversized_webhooks_write_nothing_and_are_counted() {
    let (w, hook_port, metrics_port) = world().await;
    let daemon = service(&w, hook_port).await;
    let url = format!("http://127.0.0.1:{hook_port}/webhook/jira");

    // OPS-2 reaches GitLab through its webhook; then it is resolved with no webhook sent.
    w.jira.insert(FakeIssue::new("OPS-2", "Replayed", ago(0)));
    until("OPS-2 in GitLab", || {
        received(&w, |r| is_create_of(r, "OPS-2"))
    })
    .await;
    let sent = w.jira.webhook_deliveries();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let genuine = sent[0].identifier.clone();
    w.jira.set_webhook(None);
    w.jira.insert(FakeIssue::new("OPS-1", "Forged", ago(0)));
    w.jira.resolve("OPS-2", ago(0));
    w.jira.set_webhook(Some(WebhookTarget {
        url: url.parse().expect("a URL"),
        secret: Some(SECRET.to_owned()),
    }));

    for forgery in [
        Forgery::Unsigned,
        Forgery::OtherSecret("guessed".to_owned()),
        Forgery::Tampered,
    ] {
        assert_eq!(
            w.jira.send_forged("OPS-1", forgery.clone()).await,
            Some(401),
            "{forgery:?} is refused"
        );
    }
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    assert_eq!(
        oversized(hook_port, &big).await,
        "HTTP/1.1 413 Payload Too Large",
        "over 4 MiB, even signed, is refused before its body is read"
    );
    assert_eq!(
        w.jira.redeliver(&genuine).await,
        Some(200),
        "a replay is answered 200 (Jira would retry anything else)"
    );

    // A genuine webhook after them all: once its issue is written, any of them that had been
    // taken would have been read in the same run or an earlier one.
    w.jira.insert(FakeIssue::new("OPS-3", "Genuine", ago(0)));
    until("OPS-3 in GitLab", || {
        received(&w, |r| is_create_of(r, "OPS-3"))
    })
    .await;
    let issues = w.gitlab_issues();
    assert!(
        !issues.iter().any(|i| i.title.contains("[OPS-1]")),
        "no forged webhook made the sync read OPS-1: {issues:?}"
    );
    let ops2 = issues.iter().find(|i| i.title.contains("[OPS-2]")).unwrap();
    assert_eq!(
        ops2.state,
        RemoteState::Opened,
        "the replayed webhook did not make the sync read OPS-2 again"
    );

    // The lag is recorded when the run that wrote OPS-3 ends, just after its write.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let lag_line = "jira_gitlab_sync_webhook_lag_seconds_count{rule=\"ops\"} 2";
    let deadline = Instant::now() + GUARD;
    let metrics = loop {
        let text = client
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        if text.lines().any(|l| l == lag_line) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no {lag_line} within {GUARD:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        "jira_gitlab_sync_webhooks_received_total 7",
        "jira_gitlab_sync_webhooks_rejected_total{reason=\"unsigned\"} 1",
        "jira_gitlab_sync_webhooks_rejected_total{reason=\"bad_signature\"} 2",
        "jira_gitlab_sync_webhooks_rejected_total{reason=\"too_large\"} 1",
        "jira_gitlab_sync_webhooks_ignored_total{reason=\"repeated\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    daemon.terminate();
    let done = daemon.exit().await;
    assert!(done.status.success(), "{}", done.output);
    let status = w.binary(&["status", "--json"]).await;
    let report: Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    assert_eq!(
        report["webhooks"],
        serde_json::json!({"received": 7, "rejected": 4, "ignored": 1}),
        "{report}"
    );
}

/// Data Center has no `reconcileIssues` (its search is consistent): a webhook wakes the rule
/// all the same, and no search carries the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_center_is_woken_without_reconcile_issues() {
    let hook_port = free_port();
    let rules = format!(
        "{}cron = \"0 */5 * * * *\"\n\n[webhook]\nlisten = \"127.0.0.1:{hook_port}\"\n\
         secret_file = \"{{dir}}/webhook-secret\"\n",
        rule("ops", "incident", "project = OPS")
    );
    let w = World::start(Setup {
        jira: FakeJiraConfig::data_center(),
        rules,
        ..Setup::default()
    })
    .await;
    std::fs::write(w.dir.path().join("webhook-secret"), SECRET).expect("the secret is written");
    let daemon = service(&w, hook_port).await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "Checkout down", ago(0)));
    until("OPS-1 in GitLab", || {
        received(&w, |r| is_create_of(r, "OPS-1"))
    })
    .await;
    let searches: Vec<_> = w
        .jira
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/search"))
        .collect();
    assert!(searches.len() >= 2, "the start's run and the woken one");
    assert!(
        searches.iter().all(|r| r
            .body
            .as_ref()
            .is_none_or(|b| b.get("reconcileIssues").is_none())),
        "{searches:?}"
    );
    daemon.terminate();
    assert!(daemon.exit().await.status.success());
}

/// `[webhook]` is the service's: `check` names a secret it cannot read and the service will
/// not start without it (exit 2), while `--once` ignores the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_secret_is_checked_and_needed_only_by_the_service() {
    let (w, _, _) = world().await;
    std::fs::remove_file(w.dir.path().join("webhook-secret")).expect("the secret is removed");
    let check = w.binary(&["check"]).await;
    let text = crate::support::output_text(&check);
    assert_eq!(check.status.code(), Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("webhook.secret_file") && l.starts_with("error")),
        "{text}"
    );
    assert!(
        text.contains("webhook.listen: the service can receive"),
        "{text}"
    );
    let once = w.binary(&["--once"]).await;
    assert_eq!(
        once.status.code(),
        Some(0),
        "{}",
        crate::support::output_text(&once)
    );
    let run = w.binary(&["run"]).await;
    let text = crate::support::output_text(&run);
    assert_eq!(run.status.code(), Some(2), "{text}");
    assert!(text.contains("webhook.secret_file"), "{text}");
}

/// The searches Jira received that named `id` in `reconcileIssues`.
fn reconciling(w: &World, id: u64) -> usize {
    w.jira
        .requests()
        .iter()
        .filter(|r| {
            r.body.as_ref().is_some_and(|b| {
                b["reconcileIssues"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|i| i.as_u64() == Some(id)))
            })
        })
        .count()
}

/// A webhook that comes while the rule's run is going wakes it again when that run ends (its
/// issue is read then), and a burst of webhooks is a run or two, not one per webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_during_a_run_wakes_the_rule_again_and_bursts_are_gathered() {
    let (w, hook_port, _) = world().await;
    let daemon = service(&w, hook_port).await;
    // The run OPS-1's webhook wakes answers slowly; OPS-2 changes while it runs.
    w.jira.push_fault(
        FaultTarget::Search,
        Fault::Delay(Duration::from_millis(700)),
    );
    w.jira.insert(FakeIssue::new("OPS-1", "Slow", ago(0)));
    let ops1 = w.jira.get("OPS-1").unwrap().id.unwrap();
    until("the run woken for OPS-1", || {
        (reconciling(&w, ops1) > 0).then_some(())
    })
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-2", "During the run", ago(0)));
    let ops2 = w.jira.get("OPS-2").unwrap().id.unwrap();
    until("OPS-2 in GitLab", || {
        received(&w, |r| is_create_of(r, "OPS-2"))
    })
    .await;
    let one = received(&w, |r| is_create_of(r, "OPS-1")).expect("OPS-1 is in GitLab");
    let two = received(&w, |r| is_create_of(r, "OPS-2")).unwrap();
    assert!(one < two, "OPS-2 is read by the run after the slow one");
    assert_eq!(reconciling(&w, ops1), 1, "OPS-1's webhook woke one run");
    assert!(reconciling(&w, ops2) >= 1);

    let before = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.contains("/search"))
        .count();
    for n in 10..20 {
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{n}"), "Bulk", ago(0)));
    }
    until("the burst in GitLab", || {
        (10..20)
            .all(|n| received(&w, |r| is_create_of(r, &format!("OPS-{n}"))).is_some())
            .then_some(())
    })
    .await;
    let runs = w
        .jira
        .requests()
        .iter()
        .filter(|r| r.path.contains("/search"))
        .count()
        - before;
    assert!(runs <= 4, "10 webhooks at once woke {runs} runs");
    daemon.terminate();
    assert!(daemon.exit().await.status.success());
}
