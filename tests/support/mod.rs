//! Shared test harness: the sandbox's fake Jira and GitLab on loopback, a temp dir holding a real
//! `config.toml`, token files and the SQLite store, and helpers to run a cycle in-process or the
//! real binary as a child process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Duration, Utc};
use jira_gitlab_sync::app::App;
pub use jira_gitlab_sync::app::Engine;
use jira_gitlab_sync::config::Config;
use jira_gitlab_sync::domain::RunMode;
use jira_gitlab_sync::engine::{EngineError, RunReport};
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{Deployment, FakeJira, FakeJiraConfig};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The GitLab project id of the default fake project `acme/ops`.
pub const PROJECT: u64 = 1;

/// A whole test world.
pub struct World {
    pub dir: TempDir,
    pub jira: FakeJira,
    pub gitlab: FakeGitLab,
    pub config_path: PathBuf,
}

/// What the config under test looks like.
pub struct Setup {
    pub jira: FakeJiraConfig,
    pub gitlab: FakeGitLabConfig,
    /// The `[[rule]]` tables (use `{project}`, `{alert_url}`, `{dir}` placeholders).
    pub rules: String,
    /// Extra lines for `[sync]`.
    pub sync: String,
    /// The Jira token written to the token file (default: the fake's).
    pub jira_token: Option<String>,
    pub gitlab_token: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            jira: FakeJiraConfig::cloud(),
            gitlab: FakeGitLabConfig::default(),
            rules: rule("ops", "incident", "project = OPS"),
            sync: String::new(),
            jira_token: None,
            gitlab_token: None,
        }
    }
}

/// A `[[rule]]` table replicating `jql` into `acme/ops`, history from a day ago.
pub fn rule(name: &str, target: &str, jql: &str) -> String {
    let since = (Utc::now() - Duration::days(1)).to_rfc3339();
    let alert = if target == "alert" {
        "alert_url = \"{alert_url}\"\nalert_token_file = \"{dir}/alert-token\"\n"
    } else {
        ""
    };
    format!(
        "[[rule]]\nname = \"{name}\"\njql = \"{jql}\"\ntarget = \"{target}\"\ngitlab_project = \"acme/ops\"\nlabels = [\"jira\"]\nsince = \"{since}\"\n{alert}\n"
    )
}

impl World {
    pub async fn start(setup: Setup) -> World {
        let dir = tempfile::tempdir().expect("a temp dir");
        let jira = FakeJira::start(setup.jira.clone())
            .await
            .expect("fake Jira starts");
        let gitlab = FakeGitLab::start(setup.gitlab.clone())
            .await
            .expect("fake GitLab starts");
        let d = dir.path();
        let (deployment, user, jira_token) = match setup.jira.deployment {
            Deployment::Cloud => (
                "cloud",
                format!("user = \"{}\"\n", FakeJiraConfig::DEFAULT_EMAIL),
                FakeJiraConfig::DEFAULT_API_TOKEN,
            ),
            Deployment::DataCenter => ("datacenter", String::new(), FakeJiraConfig::DEFAULT_PAT),
        };
        write(
            d,
            "jira-token",
            setup.jira_token.as_deref().unwrap_or(jira_token),
        );
        write(
            d,
            "gitlab-token",
            setup
                .gitlab_token
                .as_deref()
                .unwrap_or(FakeGitLabConfig::DEFAULT_TOKEN),
        );
        write(d, "alert-token", FakeGitLabConfig::DEFAULT_ALERT_KEY);
        let alert_url = gitlab.alert_url(
            FakeGitLabConfig::DEFAULT_PROJECT,
            FakeGitLabConfig::DEFAULT_ALERT_NAME,
            FakeGitLabConfig::DEFAULT_ALERT_ID,
        );
        let rules = setup
            .rules
            .replace("{alert_url}", alert_url.as_str())
            .replace("{dir}", &d.display().to_string());
        let config = format!(
            r#"
[store]
path = "{dir}/sync.db"

[sync]
retry_base_delay_ms = 10
retry_max_delay_secs = 1
max_attempts = 4
{sync}

[jira]
url = "{jira_url}"
deployment = "{deployment}"
{user}token_file = "{dir}/jira-token"
timeout_secs = 5

[gitlab]
url = "{gitlab_url}"
token_file = "{dir}/gitlab-token"
timeout_secs = 5

{rules}
"#,
            dir = d.display(),
            sync = setup.sync,
            jira_url = jira.base_url(),
            gitlab_url = gitlab.base_url(),
        );
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config).expect("config written");
        World {
            dir,
            jira,
            gitlab,
            config_path,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("the test config is valid")
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("sync.db")
    }

    /// A fresh engine (a new process, as far as the engine can tell) over the world.
    pub fn engine(&self) -> Engine {
        App::build(&self.config())
            .expect("engine builds")
            .into_engine()
    }

    /// One cycle of the first rule with a fresh engine.
    pub async fn once(&self) -> Result<RunReport, EngineError> {
        let engine = self.engine();
        run(&engine, &self.config()).await
    }

    /// The real binary with `args` (and `--config`), run to completion.
    pub async fn binary(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("the binary runs")
    }

    /// As [`World::binary`], with `cwd` as the working directory.
    pub async fn binary_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(args)
            .current_dir(cwd)
            .output()
            .await
            .expect("the binary runs")
    }

    /// The real binary with `args` (and `--config`), started and left running; its output is
    /// discarded.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"));
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("JIRA_GITLAB_SYNC_CONFIG")
            .kill_on_drop(true);
        cmd
    }

    /// The GitLab issues of the default project.
    pub fn gitlab_issues(&self) -> Vec<jira_gitlab_sync::sandbox::gitlab::FakeGitLabIssue> {
        self.gitlab.issues(PROJECT)
    }

    /// Requests the fake Jira received to its search endpoints.
    pub fn jira_searches(&self) -> usize {
        self.jira
            .requests()
            .iter()
            .filter(|r| r.path.contains("/search"))
            .count()
    }
}

/// One cycle of the first rule of `cfg` on `engine`.
pub async fn run(engine: &Engine, cfg: &Config) -> Result<RunReport, EngineError> {
    engine
        .run_rule(&cfg.rules[0], RunMode::Once, &CancellationToken::new())
        .await
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), format!("{content}\n")).expect("file written");
}

/// `now - minutes`, rounded to milliseconds (what both APIs carry).
pub fn ago(minutes: i64) -> DateTime<Utc> {
    let t = Utc::now() - Duration::minutes(minutes);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a valid time")
}

/// Text of a process's stdout and stderr.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
