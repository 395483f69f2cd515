//! Shared test harness: the sandbox's fake Jira and GitLab on loopback, a temp dir holding a real
//! `config.toml`, token files and the SQLite store, and helpers to run a cycle in-process or the
//! real binary as a child process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use jira_gitlab_sync::app::App;
pub use jira_gitlab_sync::app::Engine;
use jira_gitlab_sync::config::Config;
use jira_gitlab_sync::domain::RunMode;
use jira_gitlab_sync::engine::{EngineError, RunReport};
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{Deployment, FakeJira, FakeJiraConfig};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single wait on a child process may take before the test is declared failed.
/// Only a guard against hanging forever: every wait ends on an event long before this.
pub const GUARD: StdDuration = StdDuration::from_secs(60);

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
    /// Extra lines for `[jira]`.
    pub jira_lines: String,
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
            jira_lines: String::new(),
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
{jira_lines}

[gitlab]
url = "{gitlab_url}"
token_file = "{dir}/gitlab-token"
timeout_secs = 5

{rules}
"#,
            dir = d.display(),
            sync = setup.sync,
            jira_lines = setup.jira_lines,
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

    /// The real binary with `args` (after `--config`), started and left running with its output
    /// collected, `RUST_LOG=info` and no systemd variables unless `env` sets them.
    pub fn launch(&self, args: &[&str], env: &[(&str, &Path)]) -> Running {
        let mut cmd = self.command(args);
        cmd.env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Running::spawn(cmd)
    }

    /// The real binary with `args` (after `--config`), `RUST_LOG=debug`, not started: for a test
    /// that sets its own environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
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

/// Writes a secret file, readable by its owner only (as the README tells).
fn write(dir: &Path, name: &str, content: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("file written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("file made private");
}

/// `now - minutes`, rounded to milliseconds (what both APIs carry).
pub fn ago(minutes: i64) -> DateTime<Utc> {
    let t = Utc::now() - Duration::minutes(minutes);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a valid time")
}

/// A loopback port for a server the test starts in a child, which cannot listen on port 0 (the
/// config refuses it: Prometheus or Jira must be told the port). Taken below the kernel's
/// ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), where neither a connection's
/// local port nor a port-0 listener of another test lands, so it stays free until the child
/// binds it; each is handed out once per test process, and only if it is free now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let _ = NEXT.compare_exchange(0, low.saturating_sub(1), Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_sub(1, Ordering::SeqCst);
        assert!(
            port > 1_024,
            "no free loopback port below the ephemeral range"
        );
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback address nothing listens on: a connection to it is refused at once.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("a bound address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// Replaces `from` with `to` in the world's config file; `from` must be there.
pub fn edit_config(w: &World, from: &str, to: &str) {
    let text = std::fs::read_to_string(&w.config_path).expect("the config reads");
    assert!(text.contains(from), "{from:?} is in the config:\n{text}");
    std::fs::write(&w.config_path, text.replace(from, to)).expect("the config is written");
}

/// Text of a process's stdout and stderr.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A signal the tests send to a child, as systemd (`SIGTERM`) or a terminal (`SIGINT`) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    /// What `kill -9`, the OOM killer or a power cut leaves: no chance to clean up.
    Kill,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Int => "-INT",
            Signal::Kill => "-KILL",
        }
    }
}

/// The real binary running as a child, with its output collected as it arrives.
pub struct Running {
    pub pid: u32,
    /// stdout and stderr interleaved, for failure messages and for waiting on log lines.
    output: Arc<Mutex<String>>,
    /// stdout alone, and stderr alone, line by line.
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Wakes whenever a line arrives.
    line: mpsc::UnboundedReceiver<()>,
    exit: JoinHandle<std::io::Result<ExitStatus>>,
}

/// What a child printed, once it exited.
pub struct Finished {
    pub status: ExitStatus,
    /// stdout and stderr interleaved.
    pub output: String,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Running {
    fn spawn(mut cmd: tokio::process::Command) -> Running {
        let mut child = cmd.spawn().expect("the binary starts");
        let pid = child.id().expect("a running child has a pid");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, line) = mpsc::unbounded_channel();
        collect(
            child.stdout.take(),
            Arc::clone(&output),
            Arc::clone(&stdout),
            tx.clone(),
        );
        collect(
            child.stderr.take(),
            Arc::clone(&output),
            Arc::clone(&stderr),
            tx,
        );
        // The child moves into the task: if the test fails, dropping the task kills it.
        let exit = tokio::spawn(async move { child.wait().await });
        Running {
            pid,
            output,
            stdout,
            stderr,
            line,
            exit,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().expect("no reader panics").clone()
    }

    /// Sends `signal` to the child, which must still run.
    pub fn signal(&self, signal: Signal) {
        let status = std::process::Command::new("kill")
            .arg(signal.flag())
            .arg(self.pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "the process must still exist");
    }

    /// Sends SIGTERM, as systemd does on `systemctl stop`.
    pub fn terminate(&self) {
        self.signal(Signal::Term);
    }

    /// Waits until the output contains `needle`.
    pub async fn wait_for_output(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !self.output().contains(needle) {
            match tokio::time::timeout_at(deadline, self.line.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => panic!(
                    "the process closed its output before saying {needle:?}:\n{}",
                    self.output()
                ),
                Err(_) => panic!("no {needle:?} within {GUARD:?}:\n{}", self.output()),
            }
        }
    }

    /// Waits until the output holds `needle` at least `count` times.
    pub async fn wait_for_count(&mut self, needle: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while self.output().matches(needle).count() < count {
            match tokio::time::timeout_at(deadline, self.line.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => panic!(
                    "the process closed its output before saying {needle:?} {count} times:\n{}",
                    self.output()
                ),
                Err(_) => panic!("no {count} {needle:?} within {GUARD:?}:\n{}", self.output()),
            }
        }
    }

    /// Waits for the process to exit; returns its status and everything it printed.
    pub async fn exit(mut self) -> Finished {
        let status = tokio::time::timeout(GUARD, &mut self.exit)
            .await
            .unwrap_or_else(|_| panic!("the process did not exit:\n{}", self.output()))
            .expect("the wait task does not panic")
            .expect("waiting for the child works");
        // Both pipes close at exit; drain them so the output is complete.
        let drained = async { while self.line.recv().await.is_some() {} };
        if tokio::time::timeout(GUARD, drained).await.is_err() {
            panic!("the process's output stayed open after exit");
        }
        Finished {
            status,
            output: self.output(),
            stdout: self.stdout.lock().expect("no reader panics").clone(),
            stderr: self.stderr.lock().expect("no reader panics").clone(),
        }
    }
}

/// Appends every line of `pipe` to `output` and `lines`, signalling each on `tx`.
fn collect(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    output: Arc<Mutex<String>>,
    lines: Arc<Mutex<Vec<String>>>,
    tx: mpsc::UnboundedSender<()>,
) {
    let pipe = pipe.expect("the pipe was requested");
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            {
                let mut out = output.lock().expect("no reader panics");
                out.push_str(&line);
                out.push('\n');
            }
            lines.lock().expect("no reader panics").push(line);
            let _ = tx.send(());
        }
    });
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    /// Every message received so far, in order.
    pub received: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        NotifySocket {
            socket: tokio::net::UnixDatagram::bind(path).expect("the notify socket binds"),
            received: Vec::new(),
        }
    }

    /// Waits for a message with the line `state` (e.g. `READY=1`).
    pub async fn wait_for(&mut self, state: &str) {
        self.wait_for_line(state, |line| line == state).await;
    }

    /// Waits for a message with a line that satisfies `pred` (`what` names it in a failure),
    /// received at or after message number `from`; returns that message's number.
    pub async fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.wait_for_line_from(0, what, pred).await
    }

    /// As [`NotifySocket::wait_for_line`], among the messages from number `from` on.
    pub async fn wait_for_line_from(
        &mut self,
        from: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> usize {
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            if let Some(i) = self
                .received
                .iter()
                .skip(from)
                .position(|m| m.lines().any(&pred))
            {
                return from + i;
            }
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!("no {what} within {GUARD:?}; received {:?}", self.received)
                })
                .expect("the notify socket reads");
            self.received
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// Takes every message already queued, without waiting.
    pub fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        loop {
            match self.socket.try_recv(&mut buf) {
                Ok(n) => self
                    .received
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("the notify socket reads: {e}"),
            }
        }
    }
}
