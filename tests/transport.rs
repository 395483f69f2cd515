use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::routing::get;
use jira_gitlab_sync::http::{
    ExtraRoots, HttpClient, HttpError, Pace, RequestKind, RetryPolicy, Transport,
};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use reqwest::Method;

use crate::support::{Setup, World, ago, output_text};

/// Serves `app` on a loopback port of its own (its own origin) until the test ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Another host: counts the requests it gets and answers each with an empty JSON object, the
/// kind of answer that would be taken for Jira's or GitLab's if a redirect were followed.
async fn other_host() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            axum::Json(serde_json::json!({}))
        }
    });
    (serve(app).await, hits)
}

/// A server answering every request with a 302 to the same path and query at `to`.
async fn redirecting_to(to: SocketAddr) -> SocketAddr {
    let app = Router::new().fallback(move |uri: Uri| async move {
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        (
            StatusCode::FOUND,
            [(header::LOCATION, format!("http://{to}{path}"))],
        )
    });
    serve(app).await
}

/// Points `section.url` of the world's config file at `addr`.
fn point_at(w: &World, old: &url::Url, addr: SocketAddr) {
    let text = std::fs::read_to_string(&w.config_path).expect("config readable");
    assert!(text.contains(old.as_str()), "the config names {old}");
    let text = text.replace(old.as_str(), &format!("http://{addr}/"));
    std::fs::write(&w.config_path, text).expect("config written");
}

/// `jira.url` answers with a redirect to another origin: `--once` fails, naming both origins
/// with their ports and the key to fix, and the other host never gets a request (so neither the
/// JQL nor an answer that is not Jira's crosses over).
#[tokio::test]
async fn jira_redirect_to_another_origin_fails_the_run() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let (other, hits) = other_host().await;
    let jira = redirecting_to(other).await;
    point_at(&w, &w.jira.base_url(), jira);

    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "a fatal error: {text}");
    assert!(
        text.contains(&format!("from http://127.0.0.1:{}", jira.port()))
            && text.contains(&format!("to http://127.0.0.1:{}", other.port())),
        "the message names both origins with their ports: {text}"
    );
    assert!(text.contains("jira.url"), "the key to fix is named: {text}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the other host got nothing");
    assert!(w.gitlab.issues(crate::support::PROJECT).is_empty());
}

/// `gitlab.url` answers with a redirect to another origin: the token never reaches the other
/// host, the run stops (every GitLab request would fail alike) and the message names both
/// origins and `gitlab.url`.
#[tokio::test]
async fn gitlab_redirect_to_another_origin_stops_the_run() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(4)));
    let (other, hits) = other_host().await;
    let gitlab = redirecting_to(other).await;
    point_at(&w, &w.gitlab.base_url(), gitlab);

    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "a fatal error: {text}");
    assert!(
        text.contains(&format!("from http://127.0.0.1:{}", gitlab.port()))
            && text.contains(&format!("to http://127.0.0.1:{}", other.port())),
        "the message names both origins with their ports: {text}"
    );
    assert!(
        text.contains("gitlab.url"),
        "the key to fix is named: {text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the other host got nothing");
}

/// The shared HTTP client as the Jira client builds it.
fn client() -> HttpClient {
    HttpClient::new(
        "Jira",
        Duration::from_secs(5),
        RetryPolicy::default(),
        &Pace::default(),
        Vec::new(),
        &Transport {
            url_key: "jira.url",
            extra_roots: ExtraRoots::default(),
        },
    )
    .expect("a client")
}

/// A redirect within the origin (a moved path) is still followed.
#[tokio::test]
async fn same_origin_redirect_is_followed() {
    let app = Router::new()
        .route(
            "/old",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/new?page=1")]) }),
        )
        .route("/new", get(|| async { "moved here" }));
    let addr = serve(app).await;
    let http = client();
    let url = url::Url::parse(&format!("http://{addr}/old")).unwrap();
    let response = http
        .send(RequestKind::Idempotent, || {
            http.request(Method::GET, url.clone())
        })
        .await
        .expect("a same-origin redirect is followed");
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.body, b"moved here");
}

/// A hop within the origin and then one to another origin: refused with a typed error naming
/// the origin first asked and the other one, not retryable (only a config change helps), not
/// ambiguous (nothing reached the other host), and sent once, not retried.
#[tokio::test]
async fn cross_origin_redirect_is_a_typed_error() {
    let (other, hits) = other_host().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = Router::new()
        .route(
            "/hop",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/away")]) }
            }),
        )
        .route(
            "/away",
            get(move || async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("http://{other}/landed"))],
                )
            }),
        );
    let addr = serve(app).await;
    let http = client();
    let url = url::Url::parse(&format!("http://{addr}/hop")).unwrap();
    let err = http
        .send(RequestKind::Idempotent, || {
            http.request(Method::GET, url.clone())
        })
        .await
        .expect_err("a cross-origin redirect fails the request");
    match &err {
        HttpError::CrossOriginRedirect { from, to, .. } => {
            assert_eq!(from, &format!("http://127.0.0.1:{}", addr.port()));
            assert_eq!(to, &format!("http://127.0.0.1:{}", other.port()));
        }
        other => panic!("expected CrossOriginRedirect, got {other:?}"),
    }
    assert!(!err.is_retryable() && !err.is_ambiguous(), "{err}");
    assert!(err.to_string().contains("set jira.url"), "{err}");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the other host got nothing");
}
