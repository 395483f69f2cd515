use jira_gitlab_sync::sandbox::gitlab::FakeGitLabConfig;
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJiraConfig};

use crate::support::{Setup, World, ago, output_text, rule};

/// A misspelt key is a config error: exit 2, naming the key.
#[tokio::test]
async fn bad_config_exits_2_naming_the_key() {
    let w = World::start(Setup::default()).await;
    let text = std::fs::read_to_string(&w.config_path)
        .unwrap()
        .replace("target =", "targte =");
    std::fs::write(&w.config_path, text).unwrap();
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("targte"),
        "{}",
        output_text(&out)
    );
    assert!(w.jira.requests().is_empty() && w.gitlab.requests().is_empty());
}

/// Rejected Jira credentials: exit 2, and GitLab is never touched.
#[tokio::test]
async fn rejected_jira_credentials_exit_2() {
    let w = World::start(Setup {
        jira_token: Some("wrong-token".into()),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(w.gitlab.requests().is_empty(), "GitLab untouched");
}

/// A rejected GitLab token stops the run with exit 2 instead of failing issue after issue.
#[tokio::test]
async fn rejected_gitlab_token_exit_2() {
    let w = World::start(Setup {
        gitlab_token: Some("glpat-wrong".into()),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    w.jira.insert(FakeIssue::new("OPS-2", "b", ago(4)));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert_eq!(w.gitlab.requests().len(), 1, "stopped at the first 401");
}

/// A JQL error shows Jira's own message and exits 2.
#[tokio::test]
async fn bad_jql_shows_jiras_message() {
    let w = World::start(Setup {
        rules: rule("ops", "incident", "projcet = OPS"),
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("projcet"),
        "Jira's error names the field: {text}"
    );
}

/// Data Center settings against Jira Cloud hit the removed endpoint: a clear fatal error.
#[tokio::test]
async fn removed_endpoint_is_explained() {
    let w = World::start(Setup::default()).await;
    let text = std::fs::read_to_string(&w.config_path)
        .unwrap()
        .replace("deployment = \"cloud\"", "deployment = \"datacenter\"");
    std::fs::write(&w.config_path, text).unwrap();
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("410") && text.contains("deployment"),
        "{text}"
    );
}

/// No token or key appears in any output, debug logs included, nor in the store file.
#[tokio::test]
async fn secrets_never_leak() {
    let w = World::start(Setup {
        rules: format!(
            "{}{}",
            rule("ops", "incident", "project = OPS"),
            rule("pager", "alert", "project = OPS")
        ),
        ..Setup::default()
    })
    .await;
    w.jira
        .insert(FakeIssue::new("OPS-1", "a", ago(20)).resolved_at(ago(10)));
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sync.db")
        {
            stored.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(!stored.is_empty(), "the store was written");
    let stored = String::from_utf8_lossy(&stored);
    let basic = FakeJiraConfig::basic(
        FakeJiraConfig::DEFAULT_EMAIL,
        FakeJiraConfig::DEFAULT_API_TOKEN,
    );
    for secret in [
        FakeJiraConfig::DEFAULT_API_TOKEN,
        FakeGitLabConfig::DEFAULT_TOKEN,
        FakeGitLabConfig::DEFAULT_ALERT_KEY,
        basic.trim_start_matches("Basic "),
    ] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} in the output:\n{text}"
        );
        assert!(!stored.contains(secret), "secret {secret:?} in the store");
    }
}

/// A relative `[store] path` is relative to the config file for every command: `status` run from
/// another directory, with no token at hand, reads the store a `--once` run wrote.
#[tokio::test]
async fn status_finds_a_relative_store_from_another_directory() {
    let w = World::start(Setup::default()).await;
    let absolute = format!("path = \"{}/sync.db\"", w.dir.path().display());
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    assert!(text.contains(&absolute), "{text}");
    std::fs::write(
        &w.config_path,
        text.replace(&absolute, "path = \"sync.db\""),
    )
    .unwrap();
    w.jira
        .insert(FakeIssue::new("OPS-1", "resolved", ago(30)).resolved_at(ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "open", ago(10)));
    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(w.store_path().exists(), "the store is beside the config");

    // status needs no secret.
    std::fs::remove_file(w.dir.path().join("jira-token")).unwrap();
    std::fs::remove_file(w.dir.path().join("gitlab-token")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = w.binary_in(elsewhere.path(), &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(report["store_exists"], true, "{report:#}");
    assert_eq!(
        report["store"],
        w.store_path().display().to_string(),
        "{report:#}"
    );
    let r = &report["rules"][0];
    assert_eq!(r["rule"], "ops", "{r:#}");
    assert_eq!(
        (&r["mapped"], &r["closed"]),
        (&2.into(), &1.into()),
        "{r:#}"
    );
    assert_eq!(r["last_run"]["counts"]["created"], 2, "{r:#}");

    let table = w.binary_in(elsewhere.path(), &["status"]).await;
    let text = output_text(&table);
    assert_eq!(table.status.code(), Some(0), "{text}");
    assert!(!text.contains("no sync has run yet"), "{text}");
}
