//! One message per problem: each fatal error is one line, on stderr or in the log, never both;
//! `--log-format json` output is JSON lines only; each message names the cause and the fix.

use std::process::Output;

use jira_gitlab_sync::sandbox::gitlab::{
    FakeGitLabConfig, FakeProject, Fault, FaultTarget, access,
};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use serde_json::Value;

use crate::support::{Setup, World, ago, edit_config, output_text, refused_url, rule};

/// The binary with `args`, `RUST_LOG` as given (unset: `None`).
async fn run(w: &World, args: &[&str], rust_log: Option<&str>) -> Output {
    let mut cmd = w.command(args);
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().await.expect("the binary runs")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every line of stdout and stderr, each parsed as a JSON object; panics on any other line.
fn json_lines(out: &Output) -> Vec<Value> {
    let mut all = lines(&out.stdout);
    all.extend(lines(&out.stderr));
    all.iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", output_text(out)));
            assert!(v.is_object(), "not a JSON object: {l:?}");
            v
        })
        .collect()
}

/// A world whose GitLab refuses the token, with one issue to replicate.
async fn refused_token() -> World {
    let w = World::start(Setup {
        gitlab_token: Some("glpat-wrong".into()),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    w
}

/// `--once` under cron with JSON logs: every line parses, and the refused token is one ERROR
/// line that says which setting to fix.
#[tokio::test]
async fn once_json_is_json_lines_with_one_error() {
    let w = refused_token().await;
    let out = run(&w, &["--once", "--log-format", "json"], Some("info")).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let all = json_lines(&out);
    let about: Vec<&Value> = all
        .iter()
        .filter(|v| v.to_string().contains("HTTP 401"))
        .collect();
    assert_eq!(about.len(), 1, "one line about the 401: {about:#?}");
    assert_eq!(about[0]["level"], "ERROR", "{about:#?}");
    let text = about[0].to_string();
    assert!(
        text.contains("gitlab.token_file"),
        "it names the setting to fix: {text}"
    );
}

/// The same on a terminal: one `error:` line, no log line repeating it.
#[tokio::test]
async fn once_human_prints_one_line_per_error() {
    let w = refused_token().await;
    let out = run(&w, &["--once", "--log-format", "human"], Some("info")).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let about: Vec<&str> = text.lines().filter(|l| l.contains("HTTP 401")).collect();
    assert_eq!(about.len(), 1, "one line about the 401:\n{text}");
    assert!(about[0].starts_with("error: "), "{text}");
    assert!(about[0].contains("gitlab.token_file"), "{text}");
}

/// A backfill with JSON logs: the summary is a JSON line on stdout, and so is a fatal error.
#[tokio::test]
async fn backfill_json_is_json_lines() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new(
        "OPS-1",
        "history",
        chrono::DateTime::parse_from_rfc3339("2025-01-02T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    ));
    let out = run(
        &w,
        &["backfill", "--since", "2025-01-01", "--log-format", "json"],
        Some("info"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    json_lines(&out);
    let summary: Vec<Value> = lines(&out.stdout)
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(
        summary
            .iter()
            .any(|v| v["rule"] == "ops" && v["counts"]["created"] == 1),
        "{summary:#?}"
    );

    let w = refused_token().await;
    let out = run(
        &w,
        &["backfill", "--since", "2025-01-01", "--log-format", "json"],
        Some("info"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let all = json_lines(&out);
    assert_eq!(
        all.iter().filter(|v| v["level"] == "ERROR").count(),
        1,
        "{all:#?}"
    );
}

/// A wrong alert key is not reported as a rejected token: it names the rule's alert key setting.
#[tokio::test]
async fn wrong_alert_key_names_the_alert_key() {
    let w = World::start(Setup {
        rules: rule("pager", "alert", "project = OPS"),
        ..Setup::default()
    })
    .await;
    std::fs::write(w.dir.path().join("alert-token"), "not-the-key\n").unwrap();
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let out = run(&w, &["--once", "--log-format", "human"], Some("info")).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("alert key"), "{text}");
    assert!(text.contains("alert_token_file"), "{text}");
    assert!(!text.contains("rejected the token"), "{text}");
}

/// `gitlab.url` ending in `/api/v4` is a config error that says to drop it; GitLab is never
/// asked.
#[tokio::test]
async fn gitlab_url_with_api_v4_is_refused() {
    let w = World::start(Setup::default()).await;
    let base = w.gitlab.base_url().to_string();
    edit_config(
        &w,
        &format!("url = \"{base}\""),
        &format!("url = \"{}/api/v4\"", base.trim_end_matches('/')),
    );
    for args in [&["--once"][..], &["check"][..]] {
        let out = run(&w, args, Some("info")).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("gitlab.url") && text.contains("without /api/v4"),
            "{args:?}: {text}"
        );
        assert_eq!(text.lines().count(), 1, "{args:?}: one line:\n{text}");
    }
    assert!(w.gitlab.requests().is_empty());
}

/// A 404 for the configured project names the project and the setting, not a generic resource.
#[tokio::test]
async fn a_missing_project_is_named() {
    let w = World::start(Setup {
        rules: rule("ops", "incident", "project = OPS").replace(
            "gitlab_project = \"acme/ops\"",
            "gitlab_project = \"acme/opz\"",
        ),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let out = run(&w, &["--once", "--log-format", "human"], Some("info")).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("no project \"acme/opz\"") && text.contains("gitlab_project"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("HTTP 404")).count(),
        1,
        "{text}"
    );
}

/// `check` against hosts that refuse connections: one attempt each, no retry lines, and each
/// error says which URL setting to check.
#[tokio::test]
async fn check_fails_fast_on_unreachable_hosts() {
    let w = World::start(Setup::default()).await;
    let (jira, gitlab) = (refused_url(), refused_url());
    edit_config(
        &w,
        &format!("url = \"{}\"", w.jira.base_url()),
        &format!("url = \"{jira}\""),
    );
    edit_config(
        &w,
        &format!("url = \"{}\"", w.gitlab.base_url()),
        &format!("url = \"{gitlab}\""),
    );
    let out = run(&w, &["check"], Some("info")).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("retrying"), "no retries in check:\n{text}");
    assert!(out.stderr.is_empty(), "nothing but the table:\n{text}");
    let stdout = lines(&out.stdout);
    for (subject, key, url) in [
        ("jira", "jira.url", &jira),
        ("gitlab", "gitlab.url", &gitlab),
    ] {
        let line = stdout
            .iter()
            .find(|l| l.starts_with("error") && l.split_whitespace().nth(1) == Some(subject))
            .unwrap_or_else(|| panic!("an error line for {subject}:\n{text}"));
        assert!(line.contains(&format!("check {key}")), "{line}");
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        assert_eq!(line.matches(host).count(), 1, "the address once: {line}");
    }
}

/// `check`'s table lines up however long a project path is, and nothing is printed above it.
#[tokio::test]
async fn check_table_lines_up_with_nothing_above_it() {
    let long = "acme/platform-reliability/incident-response";
    let mut gitlab = FakeGitLabConfig::default();
    let mut project: FakeProject = gitlab.projects[0].clone();
    project.id = 2;
    project.path_with_namespace = long.to_owned();
    project.members = vec![(1, access::OWNER)];
    gitlab.projects.push(project);
    let w = World::start(Setup {
        gitlab,
        rules: format!(
            "{}{}",
            rule("ops", "incident", "project = OPS"),
            rule("platform", "incident", "project = OPS").replace(
                "gitlab_project = \"acme/ops\"",
                &format!("gitlab_project = \"{long}\"")
            )
        ),
        ..Setup::default()
    })
    .await;
    let out = run(&w, &["check"], None).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(out.stderr.is_empty(), "nothing but the table:\n{text}");
    let rows = lines(&out.stdout);
    assert!(rows[0].starts_with("ok"), "the table comes first:\n{text}");
    // Each row: level, subject, message, in columns separated by at least two spaces.
    let columns = |row: &str| -> (usize, usize) {
        let subject = row.find(|c: char| c.is_whitespace()).expect("a level");
        let subject = subject
            + row[subject..]
                .find(|c: char| !c.is_whitespace())
                .expect("a subject");
        let gap = subject + row[subject..].find("  ").expect("a gap after the subject");
        let message = gap
            + row[gap..]
                .find(|c: char| !c.is_whitespace())
                .expect("a message");
        (subject, message)
    };
    let first = columns(&rows[0]);
    for row in &rows {
        assert_eq!(columns(row), first, "columns line up:\n{text}");
    }
    assert!(text.contains(long), "{text}");
}

/// A create GitLab refused is a failing issue with GitLab's reason, not an "interrupted" create.
#[tokio::test]
async fn a_refused_create_is_failing_not_interrupted() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::Status {
            status: 400,
            body: r#"{"message":{"title":["is invalid"]}}"#.into(),
        },
    );
    let out = run(&w, &["--once"], Some("info")).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let out = run(&w, &["status"], Some("info")).await;
    let text = output_text(&out);
    assert!(text.contains("failing OPS-1"), "{text}");
    assert!(text.contains("is invalid"), "{text}");
    assert!(
        !text.contains("interrupted") && !text.contains("cut short"),
        "{text}"
    );
    let out = run(&w, &["status", "--json"], Some("info")).await;
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["rules"][0]["pending_intents"], 0, "{report:#}");
}
