//! Backfill benchmarks against the loopback sandbox. Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench --bench backfill                     # all three
//! cargo bench --bench backfill -- overhead         # (a) issues/s with zero added latency
//! cargo bench --bench backfill -- paced [N]        # (b) N issues (default 5,000), 20 ms
//!                                                  #     latency, GitLab limit 600/min
//! cargo bench --bench backfill -- rss [N]          # (c) peak RSS of the real binary, N issues
//!                                                  #     (default 50,000)
//! cargo bench --bench backfill -- idle [CYCLES]    # the service's RSS and CPU per idle cycle
//! ```
//!
//! (a) and (b) run the engine in-process over real HTTP; (c) runs the released binary as a child
//! process so its peak RSS (`VmHWM`) is the sync's alone, not the fakes'.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jira_gitlab_sync::app::App;
use jira_gitlab_sync::config::Config;
use jira_gitlab_sync::engine::backfill::{BackfillRequest, NoProgress};
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJira, FakeJiraConfig};
use tokio_util::sync::CancellationToken;

struct Bench {
    _dir: tempfile::TempDir,
    jira: FakeJira,
    gitlab: FakeGitLab,
    config_path: std::path::PathBuf,
}

/// Seeds `n` incidents (90% resolved) one every 7 minutes from 2024-01-01 and writes a config.
async fn setup(n: u64, latency: Duration, gitlab_limit: Option<u32>, pace: Option<u32>) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let jira = FakeJira::start(FakeJiraConfig {
        latency,
        ..FakeJiraConfig::cloud()
    })
    .await
    .expect("fake Jira");
    let gitlab = FakeGitLab::start(FakeGitLabConfig {
        latency,
        requests_per_minute: gitlab_limit,
        ..FakeGitLabConfig::default()
    })
    .await
    .expect("fake GitLab");
    let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&Utc);
    for i in 1..=n as i64 {
        let created = start + chrono::Duration::minutes(i * 7);
        let mut issue = FakeIssue::new(&format!("OPS-{i}"), "Incident from history", created)
            .with_description("Something broke.\n\nIt was fixed.");
        if i % 10 != 0 {
            issue = issue.resolved_at(created + chrono::Duration::minutes(15 + i % 240));
        }
        jira.insert(issue);
    }
    let d = dir.path();
    std::fs::write(d.join("jira-token"), FakeJiraConfig::DEFAULT_API_TOKEN).expect("write");
    std::fs::write(d.join("gitlab-token"), FakeGitLabConfig::DEFAULT_TOKEN).expect("write");
    let pace = pace
        .map(|p| format!("requests_per_minute = {p}\n"))
        .unwrap_or_default();
    let config = format!(
        r#"
[store]
path = "{dir}/bench.db"
[sync]
backfill_concurrency = 8
[jira]
url = "{jira}"
deployment = "cloud"
user = "{user}"
token_file = "{dir}/jira-token"
[gitlab]
url = "{gitlab}"
token_file = "{dir}/gitlab-token"
{pace}
[[rule]]
name = "history"
jql = "project = OPS"
target = "incident"
gitlab_project = "acme/ops"
"#,
        dir = d.display(),
        jira = jira.base_url(),
        gitlab = gitlab.base_url(),
        user = FakeJiraConfig::DEFAULT_EMAIL,
    );
    let config_path = d.join("config.toml");
    std::fs::write(&config_path, config).expect("write config");
    Bench {
        _dir: dir,
        jira,
        gitlab,
        config_path,
    }
}

fn since() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2023-12-31T00:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

async fn run_in_process(
    b: &Bench,
) -> (Duration, jira_gitlab_sync::engine::backfill::BackfillReport) {
    let cfg = Config::load(&b.config_path).expect("config");
    let app = App::build(&cfg).expect("engine");
    let engine = app.engine();
    let req = BackfillRequest {
        since: since(),
        until: None,
        concurrency: cfg.sync.backfill_concurrency,
        sample: 0,
    };
    let t = Instant::now();
    let report = engine
        .backfill(&cfg.rules[0], &req, &NoProgress, &CancellationToken::new())
        .await
        .expect("backfill");
    (t.elapsed(), report)
}

async fn overhead() {
    let n = 5_000;
    let b = setup(n, Duration::ZERO, None, None).await;
    let (elapsed, report) = run_in_process(&b).await;
    let requests = b.gitlab.requests().len();
    println!(
        "(a) engine overhead: {n} issues ({} created, {} closed, {requests} GitLab requests, \
         {} Jira requests) in {:.2} s = {:.0} issues/s, {:.0} GitLab requests/s (zero added latency, \
         concurrency 8)",
        report.counts.created,
        report.counts.closed,
        b.jira.requests().len(),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
    );
}

async fn paced(n: u64) {
    let limit = 600;
    let b = setup(n, Duration::from_millis(20), Some(limit), Some(limit)).await;
    let (elapsed, report) = run_in_process(&b).await;
    let reqs = b.gitlab.requests();
    let limited = reqs.iter().filter(|r| r.status == Some(429)).count();
    let minutes = elapsed.as_secs_f64() / 60.0;
    let achieved = reqs.len() as f64 / minutes;
    let floor = reqs.len() as f64 / f64::from(limit);
    println!(
        "(b) paced: {n} issues ({} created, {} closed), {} GitLab requests in {:.1} min with 20 ms \
         latency; achieved {:.0} requests/min = {:.1}% of the {limit}/min limit; floor {:.1} min, \
         took {:.2}× the floor; {limited} answers were 429",
        report.counts.created,
        report.counts.closed,
        reqs.len(),
        minutes,
        achieved,
        100.0 * achieved / f64::from(limit),
        floor,
        minutes / floor,
    );
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn rss(n: u64) {
    let b = setup(n, Duration::ZERO, None, None).await;
    let exe = Path::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"));
    let t = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&b.config_path)
        .args(["backfill", "--since", "2023-12-31"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let pid = child.id().expect("a pid");
    let mut peak = 0;
    let mut samples = Vec::new();
    loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
            samples.push((b.gitlab.issues(1).len(), kib));
        }
        match tokio::time::timeout(Duration::from_millis(100), child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait");
                assert!(status.success(), "backfill failed: {status}");
                break;
            }
            Err(_) => continue,
        }
    }
    let done = b.gitlab.issues(1).len();
    let quarter = samples
        .iter()
        .find(|(d, _)| *d >= done / 4)
        .map_or(0, |(_, k)| *k);
    println!(
        "(c) memory: {done} issues backfilled by the binary in {:.1} s; peak RSS {:.1} MiB \
         (peak when a quarter was done: {:.1} MiB)",
        t.elapsed().as_secs_f64(),
        peak as f64 / 1024.0,
        quarter as f64 / 1024.0,
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The service with 1,000 replicated incidents, syncing every second with nothing new, and
/// following them by id every 10 seconds (`reconcile_secs = 10`) to show what that costs.
async fn idle(cycles: u64) {
    let b = setup(1_000, Duration::ZERO, None, None).await;
    let text = std::fs::read_to_string(&b.config_path).expect("config");
    let text = text
        .replace(
            "target = \"incident\"",
            "target = \"incident\"\nsince = \"2023-12-31\"\ncron = \"* * * * * *\"",
        )
        .replace("[sync]\n", "[sync]\nreconcile_secs = 10\n");
    std::fs::write(&b.config_path, text).expect("config");
    let exe = Path::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"));
    let mut child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&b.config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    let pid = child.id().expect("a pid");
    // Wait until the first (full) cycle has replicated the history.
    while b.gitlab.issues(1).len() < 1_000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let searches = |b: &Bench| {
        b.jira
            .requests()
            .iter()
            .filter(|r| r.path.contains("/search"))
            .count()
    };
    let bulk = |b: &Bench| {
        b.jira
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/issue/bulkfetch"))
            .count()
    };
    let (s0, g0, r0) = (searches(&b), b.gitlab.requests().len(), bulk(&b));
    let t0 = cpu_ticks(pid).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(cycles)).await;
    let t1 = cpu_ticks(pid).unwrap_or(0);
    let (s1, g1, r1) = (searches(&b), b.gitlab.requests().len(), bulk(&b));
    let rss = vm_rss_kib(pid).unwrap_or(0);
    let open = b
        .gitlab
        .issues(1)
        .iter()
        .filter(|i| i.state == jira_gitlab_sync::domain::RemoteState::Opened)
        .count();
    let done = (s1 - s0).max(1) as f64;
    // Linux reports CPU time in clock ticks, 100 a second (USER_HZ) on every mainstream kernel.
    let cpu_ms = (t1 - t0) as f64 * 10.0;
    println!(
        "idle service: {} Jira searches and {} GitLab requests in {cycles} idle one-second cycles; \
         CPU {:.2} ms per idle cycle; RSS {:.1} MiB with 1,000 mapped incidents; reconciliation \
         every 10 s: {} bulk fetches for {open} open incidents (at most one per 100 a \
         reconciliation)",
        s1 - s0,
        g1 - g0,
        cpu_ms / done,
        rss as f64 / 1024.0,
        r1 - r0
    );
    let _ = child.kill().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let n = |default: u64| args.get(1).and_then(|s| s.parse().ok()).unwrap_or(default);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
    match which {
        "overhead" => overhead().await,
        "paced" => paced(n(5_000)).await,
        "rss" => rss(n(50_000)).await,
        "idle" => idle(n(60)).await,
        _ => {
            overhead().await;
            rss(50_000).await;
            paced(5_000).await;
        }
    }
}
