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

/// The binary with `args` only (no `--config` added), run to completion.
async fn bare(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .args(args)
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

/// Flags that do not apply to the command are refused as usage errors (exit 2), saying what to
/// type instead, before anything is read or sent.
#[tokio::test]
async fn flags_that_do_not_apply_are_refused() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    for (args, says) in [
        (&["--once", "check"][..], "--once does not go with `check`"),
        (
            &["status", "--dry-run"][..],
            "unexpected argument '--dry-run'",
        ),
        (&["--dry-run"][..], "--dry-run needs --once"),
        (
            &["--dry-run", "run"][..],
            "--dry-run does not go with `run`",
        ),
        (&["--once", "run"][..], "--once does not go with `run`"),
        (
            &["--dry-run", "backfill", "--since", "2024-01-01"][..],
            "--dry-run goes after `backfill`",
        ),
        (&["demo"][..], "--config does not go with `demo`"),
        (&["sandbox"][..], "--config does not go with `sandbox`"),
    ] {
        let out = w.binary(args).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
    let out = bare(&["demo", "--config", "x.toml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        w.jira.requests().is_empty() && w.gitlab.requests().is_empty(),
        "nothing was sent"
    );
    assert!(!w.store_path().exists(), "nothing was opened");
}

/// `--help` says that without a command the binary runs the service, which writes to GitLab,
/// and lists `run`.
#[tokio::test]
async fn help_says_what_no_command_does() {
    let out = bare(&["--help"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("  run "), "{text}");
    assert!(
        text.contains("Without a command it runs the service, as `run` does"),
        "{text}"
    );
}

/// `run` is the service, as no command is: it starts, syncs, and stops cleanly on SIGTERM.
#[tokio::test]
async fn run_is_the_service() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let mut service = w.launch(&["run"], &[]);
    service.wait_for_output("run finished").await;
    service.terminate();
    let done = service.exit().await;
    assert_eq!(done.status.code(), Some(0), "{}", done.output);
    assert!(done.output.contains("service started"), "{}", done.output);
    assert_eq!(w.gitlab_issues().len(), 1, "{}", done.output);
}

/// A token file every user may read is used, with one warning naming it (`check` lists it as a
/// warning, exit 1); a private one raises none.
#[tokio::test]
async fn a_world_readable_token_file_is_warned_about_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let w = World::start(Setup::default()).await;
    let token = w.dir.path().join("gitlab-token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.jira.insert(FakeIssue::new("OPS-1", "a", ago(5)));
    let out = w.binary(&["--once"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let named: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&token.display().to_string()))
        .collect();
    assert_eq!(named.len(), 1, "one warning:\n{text}");
    assert!(
        named[0].starts_with("warning: ") && named[0].contains("chmod 600"),
        "{text}"
    );
    assert!(
        !text.contains("jira-token"),
        "the private file is fine:\n{text}"
    );

    let out = w
        .command(&["check"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("the binary runs");
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("gitlab.token_file")),
        "{text}"
    );
    assert!(out.stderr.is_empty(), "in the table only:\n{text}");
}

/// The bench's sandbox: `--open` leaves that many of the seed open, `--latency-ms` delays every
/// answer, `--log-requests` prints each request, and on SIGTERM it says what GitLab holds.
#[tokio::test]
async fn sandbox_flags_shape_the_seed_and_report_requests() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .args([
            "sandbox",
            "--count",
            "4",
            "--open",
            "1",
            "--latency-ms",
            "50",
        ])
        .args(["--log-requests", "--dir"])
        .arg(dir.path())
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = tokio::io::BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let config = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(path) = line.strip_prefix("config: ") {
                return Some(path.to_owned());
            }
        }
        None
    })
    .await
    .expect("the config path is printed in time")
    .unwrap_or_else(|| panic!("no config path in:\n{printed}"));
    assert!(printed.contains("4 incidents seeded"), "{printed}");
    assert!(printed.contains("1 of them open"), "{printed}");
    assert!(printed.contains("wait 50 ms"), "{printed}");

    let started = std::time::Instant::now();
    let once = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(once.status.code(), Some(0), "{}", output_text(&once));
    // At least a Jira search, then a create and a close for the first incident, one after another.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(150),
        "answers are delayed: the run took {:?}",
        started.elapsed()
    );

    let pid = sandbox.id().expect("the sandbox still runs");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut rest = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    })
    .await
    .expect("the sandbox stops on SIGTERM");
    let creates = rest
        .lines()
        .filter(|l| *l == "request gitlab POST /api/v4/projects/1/issues")
        .count();
    assert_eq!(creates, 4, "{rest}");
    assert!(
        rest.lines()
            .any(|l| l == "request jira POST /rest/api/3/search/jql"),
        "{rest}"
    );
    assert!(
        rest.contains("acme/ops holds 4 issues, 3 of them closed"),
        "{rest}"
    );
    let exit = sandbox.wait().await.unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// `sandbox` serves a seeded sandbox with a config the real binary can use at once: `check`
/// passes, `--once` creates the seeded incidents, and SIGTERM stops it with exit 0.
#[tokio::test]
async fn sandbox_serves_a_config_that_check_and_once_use() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .args(["sandbox", "--count", "3", "--dir"])
        .arg(dir.path())
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = tokio::io::BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let config = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(path) = line.strip_prefix("config: ") {
                return Some(path.to_owned());
            }
        }
        None
    })
    .await
    .expect("the config path is printed in time")
    .unwrap_or_else(|| panic!("no config path in:\n{printed}"));
    assert_eq!(
        std::path::Path::new(&config),
        dir.path().join("config.toml").as_path()
    );
    assert!(printed.contains("sandbox Jira"), "{printed}");

    let run = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("JIRA_GITLAB_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output()
    };
    let check = run(&["check"]).await.unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    let once = run(&["--once"]).await.unwrap();
    assert_eq!(once.status.code(), Some(0), "{}", output_text(&once));
    let status = run(&["status", "--json"]).await.unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let rule = &report["rules"][0];
    assert_eq!(rule["mapped"], 3, "{report}");
    assert_eq!(rule["last_run"]["counts"]["created"], 3, "{report}");

    let pid = sandbox.id().expect("the sandbox still runs");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), sandbox.wait())
        .await
        .expect("the sandbox stops on SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
