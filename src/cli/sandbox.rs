//! `sandbox`: the sandbox Jira and GitLab that `demo` runs against, served on loopback until
//! SIGINT or SIGTERM, seeded with incidents, with a ready-to-use config, so every other command
//! can be tried by hand with no credentials and no network.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use jira_gitlab_sync::domain::RemoteState;
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJira, FakeJiraConfig, WebhookTarget};

use super::signals::cancel_on_signals;
use super::{SandboxDeployment, SandboxOptions};

/// A small deterministic generator, so every seeding gives the same history.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// `t` to the millisecond, as Jira keeps times.
pub(super) fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Seeds `count` incidents `OPS-1`..`OPS-count` over the 30 days before `now`, the same every
/// time: all but the last `open` resolved, after 10 minutes to 8 hours.
pub(super) fn seed(jira: &FakeJira, count: u64, open: u64, now: DateTime<Utc>) {
    let mut rng = Lcg(42);
    for n in 1..=count {
        let created = millis(
            now - chrono::Duration::minutes((30 * 24 * 60 * (count - n) / count) as i64 + 90),
        );
        let summary = [
            "Checkout API returns 502",
            "Database failover",
            "Login latency above SLO",
            "Payment webhook backlog",
            "Search cluster red",
            "Certificate expired on edge",
        ][rng.next(6) as usize];
        let mut issue = FakeIssue::new(&format!("OPS-{n}"), summary, created)
            .with_description("Detected by synthetic monitoring.\n\nImpact: customers in EU.")
            .with_priority(Some(["Highest", "High", "Medium"][rng.next(3) as usize]));
        if n + open <= count {
            let restore = chrono::Duration::minutes(10 + rng.next(470) as i64);
            issue = issue.resolved_at(created + restore);
        }
        jira.insert(issue);
    }
}

/// Serves the seeded sandbox until a signal, after writing `config.toml` and its token files in
/// `dir` (default: a new temporary directory, kept) and printing how to use them.
///
/// # Errors
/// A sandbox server cannot start, or the files cannot be written.
pub async fn run(options: SandboxOptions) -> anyhow::Result<()> {
    let SandboxOptions {
        count,
        open,
        latency,
        log_requests,
        deployment,
        dir,
        webhook_url,
        webhook_secret_file,
        change_every,
    } = options;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create the directory {}", d.display()))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("jira-gitlab-sync-sandbox-")
            .tempdir()
            .context("cannot create a temporary directory")?
            .keep(),
    };
    let dir = std::path::absolute(&dir)
        .with_context(|| format!("cannot resolve the directory {}", dir.display()))?;
    let jira_config = match deployment {
        SandboxDeployment::Cloud => FakeJiraConfig::cloud(),
        SandboxDeployment::Datacenter => FakeJiraConfig::data_center(),
    };
    let jira = FakeJira::start(FakeJiraConfig {
        latency,
        ..jira_config
    })
    .await
    .context("cannot start the sandbox Jira")?;
    let gitlab = FakeGitLab::start(FakeGitLabConfig {
        latency,
        ..FakeGitLabConfig::default()
    })
    .await
    .context("cannot start the sandbox GitLab")?;
    let now = Utc::now();
    seed(&jira, count, open, now);
    let config = write_files(&dir, deployment, &jira, &gitlab, now)?;
    if let Some(url) = &webhook_url {
        let secret = webhooks(&jira, &dir, &config, url, webhook_secret_file.as_deref())?;
        println!(
            "webhooks: every change is posted to {url}, signed with the secret in {}",
            secret.display()
        );
    }
    let since = (now - chrono::Duration::days(31)).format("%Y-%m-%d");
    let cfg = config.display();
    println!(
        "sandbox Jira ({}): {}",
        deployment.as_str(),
        jira.base_url()
    );
    println!("sandbox GitLab: {}", gitlab.base_url());
    println!(
        "{count} incidents seeded in project OPS over the last 30 days, {} of them open",
        open.min(count)
    );
    if !latency.is_zero() {
        println!(
            "both servers wait {} ms before every answer",
            latency.as_millis()
        );
    }
    println!("config: {cfg}");
    println!();
    println!("try, from another terminal:");
    println!("  jira-gitlab-sync --config {cfg} check");
    println!("  jira-gitlab-sync --config {cfg} --once");
    println!("  jira-gitlab-sync --config {cfg} backfill --since {since}");
    println!("  jira-gitlab-sync --config {cfg} status");
    println!();
    println!(
        "serving until Ctrl-C (SIGINT) or SIGTERM; the files stay in {}",
        dir.display()
    );
    // Stdout may be a pipe: whoever reads it must see the lines now, not at exit.
    let _ = std::io::stdout().flush();

    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone(), Duration::ZERO);
    if let Some(every) = change_every {
        println!(
            "every {} s an incident is created and the oldest open one resolved",
            every.as_secs()
        );
        let _ = std::io::stdout().flush();
        tokio::spawn(change(jira.clone(), count, every, cancel.clone()));
    }
    if log_requests {
        let mut log = RequestLog::default();
        loop {
            log.print_new(&jira, &gitlab);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        log.print_new(&jira, &gitlab);
    } else {
        cancel.cancelled().await;
    }
    jira.shutdown();
    gitlab.shutdown();
    let issues = gitlab.issues(DEFAULT_PROJECT_ID);
    let closed = issues
        .iter()
        .filter(|i| i.state == RemoteState::Closed)
        .count();
    println!(
        "stopped after {} Jira and {} GitLab requests; {} holds {} issues, {closed} of them closed",
        jira.requests_since(0).len(),
        gitlab.requests_since(0).len(),
        FakeGitLabConfig::DEFAULT_PROJECT,
        issues.len(),
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Points the sandbox Jira's webhooks at `url`, signed with the secret in `secret_file` (or a
/// new random one written to `webhook-secret` in `dir`), and adds a `[webhook]` table receiving
/// them to the config at `config` (its `listen` is the URL's address when that is an IP address
/// with a port; otherwise the table says to set it). Returns the secret's file.
fn webhooks(
    jira: &FakeJira,
    dir: &Path,
    config: &Path,
    url: &url::Url,
    secret_file: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let (secret, path) = match secret_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the webhook secret {}", f.display()))?;
            let path = std::path::absolute(f)
                .with_context(|| format!("cannot resolve {}", f.display()))?;
            (text.trim().to_owned(), path)
        }
        None => {
            let secret: String = (0..4)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect();
            let path = dir.join("webhook-secret");
            std::fs::write(&path, &secret)
                .with_context(|| format!("cannot write {}", path.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot restrict {}", path.display()))?;
            }
            (secret, path)
        }
    };
    anyhow::ensure!(
        !secret.is_empty(),
        "the webhook secret file {} is empty",
        path.display()
    );
    jira.set_webhook(Some(WebhookTarget {
        url: url.clone(),
        secret: Some(secret),
    }));
    let listen = match (url.host(), url.port_or_known_default()) {
        (Some(url::Host::Ipv4(ip)), Some(port)) => format!("listen = \"{ip}:{port}\""),
        (Some(url::Host::Ipv6(ip)), Some(port)) => format!("listen = \"[{ip}]:{port}\""),
        _ => "# listen = \"127.0.0.1:8787\"   # set it: where the service receives the URL above"
            .to_owned(),
    };
    let table = format!(
        "\n# The sandbox Jira posts its webhooks to {url}.\n[webhook]\n{listen}\nsecret_file = \"{}\"\n",
        path.display()
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(config)
        .with_context(|| format!("cannot write {}", config.display()))?;
    file.write_all(table.as_bytes())
        .with_context(|| format!("cannot write {}", config.display()))?;
    Ok(path)
}

/// Every `every`, creates the incident after the last one (the seed made `OPS-1`..`OPS-count`)
/// and resolves the oldest one still open, until `cancel`.
async fn change(jira: FakeJira, count: u64, every: Duration, cancel: CancellationToken) {
    let mut next = count + 1;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = millis(Utc::now());
        if let Some(open) = jira
            .issues()
            .into_iter()
            .find(|i| i.resolutiondate.is_none())
        {
            jira.resolve(&open.key, now);
        }
        jira.insert(
            FakeIssue::new(&format!("OPS-{next}"), "Error rate above SLO", now)
                .with_priority(Some("High")),
        );
        next += 1;
    }
}

/// The id of [`FakeGitLabConfig::DEFAULT_PROJECT`] in the default configuration.
const DEFAULT_PROJECT_ID: u64 = 1;

/// How far `--log-requests` has printed each server's requests.
#[derive(Default)]
struct RequestLog {
    jira: usize,
    gitlab: usize,
}

impl RequestLog {
    /// Prints the requests received since the last call, one line each.
    fn print_new(&mut self, jira: &FakeJira, gitlab: &FakeGitLab) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let new_jira = jira.requests_since(self.jira);
        let new_gitlab = gitlab.requests_since(self.gitlab);
        for (server, seen, new) in [
            ("jira", &mut self.jira, new_jira),
            ("gitlab", &mut self.gitlab, new_gitlab),
        ] {
            *seen += new.len();
            for r in new {
                let _ = writeln!(out, "request {server} {} {}", r.method, r.path);
            }
        }
        let _ = out.flush();
    }
}

/// Writes the token files and `config.toml` in `dir`; returns the config's path. `demo` runs on
/// the same files.
pub(super) fn write_files(
    dir: &Path,
    deployment: SandboxDeployment,
    jira: &FakeJira,
    gitlab: &FakeGitLab,
    now: DateTime<Utc>,
) -> anyhow::Result<PathBuf> {
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
        }
        Ok(path)
    };
    let (jira_token, user) = match deployment {
        SandboxDeployment::Cloud => (
            FakeJiraConfig::DEFAULT_API_TOKEN,
            format!("user = \"{}\"\n", FakeJiraConfig::DEFAULT_EMAIL),
        ),
        SandboxDeployment::Datacenter => (FakeJiraConfig::DEFAULT_PAT, String::new()),
    };
    let jira_token = write("jira-token", jira_token)?;
    let gitlab_token = write("gitlab-token", FakeGitLabConfig::DEFAULT_TOKEN)?;
    let since = (now - chrono::Duration::days(31)).format("%Y-%m-%d");
    let text = format!(
        r#"# Written by `jira-gitlab-sync sandbox`: the sandbox Jira and GitLab on loopback.
[store]
path = "{store}"

[jira]
url = "{jira}"
deployment = "{deployment}"
{user}token_file = "{jira_token}"

[gitlab]
url = "{gitlab}"
token_file = "{gitlab_token}"

[[rule]]
name = "ops-incidents"
jql = "project = OPS"
target = "incident"
gitlab_project = "{project}"
since = "{since}"
"#,
        store = dir.join("sync.db").display(),
        jira = jira.base_url(),
        deployment = deployment.as_str(),
        jira_token = jira_token.display(),
        gitlab = gitlab.base_url(),
        gitlab_token = gitlab_token.display(),
        project = FakeGitLabConfig::DEFAULT_PROJECT,
    );
    write("config.toml", &text)
}
