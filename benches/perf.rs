//! Issue 11's figures, side by side: this build and a baseline binary (e.g. an older main) run as
//! the client against the same fakes, which are always this build's `sandbox` subcommand in a
//! process of their own. Prints a table with the targets and a pass/fail mark; asserts nothing.
//!
//! ```text
//! BASELINE_BIN=/path/to/old/jira-gitlab-sync cargo bench --bench perf
//! cargo bench --bench perf                      # the current column only
//! cargo bench --bench perf -- throughput idle   # some sections: throughput burst fsync idle
//! ```
//!
//! Sizes and repetitions come from the environment (defaults in brackets):
//! `PERF_ISSUES` [5000] issues for throughput, `PERF_REPS` [3] its repetitions;
//! `PERF_BURST` [2000] incidents for the burst, `PERF_BURST_MS` [20] round trip,
//! `PERF_BURST_REPS` [1]; `PERF_FSYNC_ISSUES` [500]; `PERF_IDLE_SECS` [30] measured seconds
//! of each idle service, `PERF_IDLE_WARMUP_SECS` [5], `PERF_STRACE_SECS` [10] seconds traced
//! after that, `PERF_IDLE_RULES` [1,100].
//!
//! Throughput, burst and fsyncs are measured for equal work (both sides send the same GitLab
//! requests; [`Work::Equal`]), the targets' rows, then for this build's defaults alone.
//!
//! Every client run starts from an empty store against a freshly seeded sandbox. Noisy figures
//! are medians of repetitions that alternate baseline and current. The README's Performance
//! section says what each figure means.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use jira_gitlab_sync::sandbox::jira::FakeJiraConfig;

/// How long any wait for a child may take before the bench gives up on that figure. Only a
/// guard against a hang; every wait normally ends on an event.
const GUARD: Duration = Duration::from_secs(600);

/// Cycles a day at the default schedule (`0 */2 * * * *`: every two minutes).
const DEFAULT_CYCLES_PER_DAY: f64 = 720.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One client binary under test.
#[derive(Clone)]
struct Side {
    name: &'static str,
    bin: PathBuf,
}

/// What the client is asked to do per incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// The same GitLab requests on both sides, the baseline's: a create and a close per resolved
    /// incident. The rule maps every seeded priority to `unknown` (both sides know
    /// `[rule.severity]`; the label in the create is the same, and this build has no severity
    /// to set on a new incident, GitLab's default being UNKNOWN), and this build's rule has
    /// `timeline_events = false` and its backfill `--no-marker`.
    Equal,
    /// The client's defaults: for this build, the severity of each incident over GraphQL, its
    /// two timeline events, and under `backfill` the value-stream marker.
    Defaults,
}

/// Linux's clock ticks per second for `/proc/<pid>/stat` times (USER_HZ; 100 almost everywhere).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name, so that field 3 (state) is index 0.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process, all its threads, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(&pid.to_string())?;
    Some(f.get(11)? + f.get(12)?)
}

/// cutime + cstime of this process: the CPU of every child it has waited for, in ticks.
fn children_ticks() -> u64 {
    stat_fields("self")
        .and_then(|f| Some(f.get(13)? + f.get(14)?))
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field's number (`VmRSS`, `VmHWM` in KiB; `Threads`).
fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.split(':').next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait_for(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if t.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no exit within {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
    }
}

/// A child that is killed if the bench leaves it running (a failed figure, a panic).
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The current build's `sandbox` in its own process, with a directory for the client's files.
struct Sandbox {
    child: Guarded,
    dir: tempfile::TempDir,
    jira_url: String,
    gitlab_url: String,
    /// Jira searches received so far (counted only with `--log-requests`).
    searches: Arc<AtomicU64>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

/// What the sandbox held when it stopped.
struct Held {
    issues: u64,
    closed: u64,
}

impl Sandbox {
    fn start(
        bin: &Path,
        count: u64,
        open: u64,
        latency_ms: u64,
        log_requests: bool,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("sandbox")
            .args(["--count", &count.to_string()])
            .args(["--open", &open.to_string()])
            .args(["--latency-ms", &latency_ms.to_string()])
            .arg("--dir")
            .arg(dir.path().join("sandbox"))
            .env_remove("JIRA_GITLAB_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if log_requests {
            cmd.arg("--log-requests");
        }
        let mut child = cmd.spawn().map_err(|e| format!("sandbox: {e}"))?;
        let stdout = child.stdout.take().ok_or("sandbox: no stdout")?;
        let child = Guarded(child);
        let searches = Arc::new(AtomicU64::new(0));
        let (tx, lines) = mpsc::channel();
        let counter = Arc::clone(&searches);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(req) = line.strip_prefix("request ") {
                    if req.starts_with("jira ") && req.contains("/search") {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                } else if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sb = Sandbox {
            child,
            dir,
            jira_url: String::new(),
            gitlab_url: String::new(),
            searches,
            lines,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = sb
                .lines
                .recv_timeout(left)
                .map_err(|_| "the sandbox printed no config".to_owned())?;
            if let Some((head, url)) = line.split_once(": ") {
                if head.starts_with("sandbox Jira") {
                    sb.jira_url = url.trim().to_owned();
                } else if head == "sandbox GitLab" {
                    sb.gitlab_url = url.trim().to_owned();
                } else if head == "config" {
                    break;
                }
            }
        }
        if sb.jira_url.is_empty() || sb.gitlab_url.is_empty() {
            return Err("the sandbox printed no URLs".to_owned());
        }
        Ok(sb)
    }

    fn searches(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }

    /// The client's config: `rules` rules into `acme/ops` (the first `project = OPS`, the
    /// others matching nothing), history since 31 days ago, the service every second if
    /// `every_second`, for `work` ([`Work`]). The baseline's config has only keys it knows.
    fn client_config(
        &self,
        side: &Side,
        rules: usize,
        every_second: bool,
        work: Work,
    ) -> Result<PathBuf, String> {
        let d = self.dir.path();
        let sandbox = d.join("sandbox");
        let since = (Utc::now() - chrono::Duration::days(31)).format("%Y-%m-%d");
        let schedule = if every_second {
            "[schedule]\ncron = \"* * * * * *\"\n"
        } else {
            ""
        };
        let mut text = format!(
            r#"[store]
path = "{store}"
{schedule}
[sync]
backfill_concurrency = 8

[jira]
url = "{jira}"
deployment = "cloud"
user = "{user}"
token_file = "{jira_token}"

[gitlab]
url = "{gitlab}"
token_file = "{gitlab_token}"
"#,
            store = d.join("sync.db").display(),
            jira = self.jira_url,
            user = FakeJiraConfig::DEFAULT_EMAIL,
            jira_token = sandbox.join("jira-token").display(),
            gitlab = self.gitlab_url,
            gitlab_token = sandbox.join("gitlab-token").display(),
        );
        for i in 1..=rules {
            let jql = if i == 1 {
                "project = OPS".to_owned()
            } else {
                format!("project = OPS AND labels = team-{i}")
            };
            text.push_str(&format!(
                "\n[[rule]]\nname = \"rule-{i}\"\njql = \"{jql}\"\ntarget = \"incident\"\n\
                 gitlab_project = \"acme/ops\"\nsince = \"{since}\"\n"
            ));
            if work == Work::Equal {
                if side.name == "current" {
                    text.push_str("timeline_events = false\n");
                }
                // The sandbox seeds these priorities (`cli/sandbox.rs`).
                text.push_str(
                    "[rule.severity]\nHighest = \"unknown\"\nHigh = \"unknown\"\n\
                     Medium = \"unknown\"\n",
                );
            }
        }
        let path = d.join("config.toml");
        std::fs::write(&path, text).map_err(|e| format!("config: {e}"))?;
        Ok(path)
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("sync.db")
    }

    /// Stops the sandbox (SIGTERM) and reads what GitLab held.
    fn stop(mut self) -> Result<Held, String> {
        signal(self.child.0.id(), "-TERM");
        wait_for(&mut self.child.0, Duration::from_secs(60))?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let line = self
            .lines
            .try_iter()
            .find(|l| l.starts_with("stopped after"))
            .ok_or("the sandbox printed no summary")?;
        // "stopped after J Jira and G GitLab requests; acme/ops holds N issues, C of them closed"
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .and_then(|i| words.get(i + 1))
                .and_then(|n| n.trim_end_matches(',').parse::<u64>().ok())
        };
        Ok(Held {
            issues: after("holds").ok_or("unreadable summary")?,
            closed: words
                .iter()
                .position(|x| *x == "issues,")
                .and_then(|i| words.get(i + 1))
                .and_then(|n| n.parse().ok())
                .ok_or("unreadable summary")?,
        })
    }
}

/// A finished client run.
struct Run {
    wall: Duration,
    /// User + system CPU of the client, in ticks.
    cpu_ticks: u64,
    /// User + system CPU the sandbox spent serving the run (from `/proc/<pid>/stat` just before
    /// the client started and just after it exited), in ticks; `None` if unreadable.
    server_ticks: Option<u64>,
}

/// Runs `side`'s binary with `args` (after `--config`), to completion.
fn run_client(side: &Side, config: &Path, args: &[&str]) -> Result<Run, String> {
    let before = children_ticks();
    let t = Instant::now();
    let mut child = Command::new(&side.bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", side.bin.display()))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let status = wait_for(&mut child, GUARD)?;
    let wall = t.elapsed();
    let cpu_ticks = children_ticks().saturating_sub(before);
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = errors.lines().rev().take(3).collect();
        return Err(format!(
            "{} exited {status}: {}",
            side.name,
            tail.join(" | ")
        ));
    }
    Ok(Run {
        wall,
        cpu_ticks,
        server_ticks: None,
    })
}

fn since_arg() -> String {
    (Utc::now() - chrono::Duration::days(31))
        .format("%Y-%m-%d")
        .to_string()
}

/// Checks that the run replicated the whole seed.
fn check_held(held: &Held, issues: u64, closed: u64) -> Result<(), String> {
    if held.issues == issues && held.closed == closed {
        Ok(())
    } else {
        Err(format!(
            "GitLab holds {} issues ({} closed); expected {issues} ({closed} closed)",
            held.issues, held.closed
        ))
    }
}

/// The client's arguments after `--config` for `command` ("backfill" or "--once") and `work`.
fn client_args(side: &Side, command: &str, work: Work) -> Vec<String> {
    match command {
        "backfill" => {
            let mut args = vec!["backfill".to_owned(), "--since".to_owned(), since_arg()];
            if work == Work::Equal && side.name == "current" {
                args.push("--no-marker".to_owned());
            }
            args
        }
        _ => vec!["--once".to_owned()],
    }
}

/// The sides that run `work`: both for equal work, this build alone for its defaults.
fn sides_for(sides: &[Side], work: Work) -> Vec<Side> {
    sides
        .iter()
        .filter(|s| work == Work::Equal || s.name == "current")
        .cloned()
        .collect()
}

/// How a row names `work`.
fn work_label(work: Work) -> &'static str {
    match work {
        Work::Equal => "equal work",
        Work::Defaults => "this build's defaults, incident details on",
    }
}

/// `count` issues through `command` ("backfill" or "--once") against a fresh sandbox.
fn replicate(
    side: &Side,
    current: &Path,
    count: u64,
    open: u64,
    latency_ms: u64,
    command: &str,
    work: Work,
) -> Result<Run, String> {
    let sb = Sandbox::start(current, count, open, latency_ms, false)?;
    let config = sb.client_config(side, 1, false, work)?;
    let owned = client_args(side, command, work);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let server_pid = sb.child.0.id();
    let server_before = cpu_ticks(server_pid);
    let run = run_client(side, &config, &args);
    // Read before the sandbox stops: its /proc entry goes with it.
    let server_after = cpu_ticks(server_pid);
    let held = sb.stop()?;
    let mut run = run?;
    run.server_ticks = server_after
        .zip(server_before)
        .map(|(after, before)| after.saturating_sub(before));
    check_held(&held, count, count - open)?;
    Ok(run)
}

/// The order of the sides in repetition `rep`: alternating, so drift hits both alike.
fn order(sides: &[Side], rep: u64) -> Vec<Side> {
    let mut v = sides.to_vec();
    if rep % 2 == 1 {
        v.reverse();
    }
    v
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// A figure per side (`None`: not measured or failed).
#[derive(Default, Clone)]
struct Figure {
    baseline: Option<f64>,
    current: Option<f64>,
}

impl Figure {
    fn set(&mut self, side: &str, v: Option<f64>) {
        if side == "baseline" {
            self.baseline = v;
        } else {
            self.current = v;
        }
    }
}

/// Collects samples per side and reports their medians.
#[derive(Default)]
struct Samples {
    baseline: Vec<f64>,
    current: Vec<f64>,
}

impl Samples {
    fn push(&mut self, side: &str, v: f64) {
        if side == "baseline" {
            self.baseline.push(v);
        } else {
            self.current.push(v);
        }
    }

    fn figure(&self) -> Figure {
        Figure {
            baseline: median(self.baseline.clone()),
            current: median(self.current.clone()),
        }
    }
}

/// How a figure is judged against its target.
enum Target {
    /// No target: shown for context.
    None,
    /// current / baseline at least this.
    RatioAtLeast(f64),
    /// current at most this.
    AtMost(f64),
}

struct Row {
    name: String,
    unit: &'static str,
    figure: Figure,
    decimals: usize,
    target: Target,
    target_text: String,
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        name: impl Into<String>,
        unit: &'static str,
        figure: Figure,
        decimals: usize,
    ) {
        self.rows.push(Row {
            name: name.into(),
            unit,
            figure,
            decimals,
            target: Target::None,
            target_text: String::new(),
        });
    }

    fn target(&mut self, target: Target, text: &str) {
        if let Some(r) = self.rows.last_mut() {
            r.target = target;
            r.target_text = text.to_owned();
        }
    }

    fn print(&self, with_baseline: bool) {
        let fmt = |v: Option<f64>, d: usize, unit: &str| match v {
            Some(v) if unit == "×" => format!("{v:.d$}×"),
            Some(v) => format!("{v:.d$} {unit}").trim_end().to_owned(),
            None => "n/a".to_owned(),
        };
        let mut rows: Vec<[String; 5]> = vec![[
            "figure".into(),
            "baseline".into(),
            "current".into(),
            "target".into(),
            String::new(),
        ]];
        for r in &self.rows {
            let base = fmt(r.figure.baseline, r.decimals, r.unit);
            let mut cur = fmt(r.figure.current, r.decimals, r.unit);
            if let (Some(b), Some(c)) = (r.figure.baseline, r.figure.current)
                && b > 0.0
                && !matches!(r.target, Target::AtMost(_))
            {
                cur.push_str(&format!(" ({:.2}×)", c / b));
            }
            let mark = match r.target {
                Target::None => String::new(),
                Target::RatioAtLeast(min) => match (r.figure.baseline, r.figure.current) {
                    (Some(b), Some(c)) if b > 0.0 => pass(c / b >= min),
                    _ => "n/a".into(),
                },
                Target::AtMost(max) => match r.figure.current {
                    Some(c) => pass(c <= max + 1e-9),
                    None => "n/a".into(),
                },
            };
            rows.push([r.name.clone(), base, cur, r.target_text.clone(), mark]);
        }
        let cols: Vec<usize> = if with_baseline {
            vec![0, 1, 2, 3, 4]
        } else {
            vec![0, 2, 3, 4]
        };
        let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..5).map(width).collect();
        println!();
        for (i, r) in rows.iter().enumerate() {
            let line: Vec<String> = cols
                .iter()
                .map(|&c| format!("{:<w$}", r[c], w = widths[c]))
                .collect();
            println!("{}", line.join("  ").trim_end());
            if i == 0 {
                let total: usize = cols.iter().map(|&c| widths[c] + 2).sum();
                println!("{}", "-".repeat(total.saturating_sub(2)));
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn pass(ok: bool) -> String {
    if ok { "PASS".into() } else { "FAIL".into() }
}

/// Engine throughput: `backfill` of `PERF_ISSUES` issues (90 % resolved) at zero latency,
/// equal work on both sides, then this build's defaults.
fn throughput(sides: &[Side], current: &Path, report: &mut Report) {
    for work in [Work::Equal, Work::Defaults] {
        throughput_of(&sides_for(sides, work), current, report, work);
    }
}

fn throughput_of(sides: &[Side], current: &Path, report: &mut Report, work: Work) {
    let n = env_u64("PERF_ISSUES", 5_000).max(1);
    let reps = env_u64("PERF_REPS", 3).max(1);
    let open = n / 10;
    let ticks = clock_ticks();
    let (mut rate, mut cpu, mut server) =
        (Samples::default(), Samples::default(), Samples::default());
    let label = work_label(work);
    println!("throughput ({label}): backfill of {n} issues, zero latency, {reps} repetitions");
    for rep in 0..reps {
        for side in order(sides, rep) {
            match replicate(&side, current, n, open, 0, "backfill", work) {
                Ok(run) => {
                    let r = n as f64 / run.wall.as_secs_f64();
                    let c = run.cpu_ticks as f64 / ticks * 1000.0 / n as f64;
                    let sc = run
                        .server_ticks
                        .map(|t| t as f64 / ticks * 1000.0 / n as f64);
                    let sc_text = sc.map_or("unreadable".to_owned(), |v| format!("{v:.3} ms"));
                    println!(
                        "  {:<8} {r:>8.0} issues/s, {c:.3} ms CPU/issue, fakes {sc_text} CPU/issue",
                        side.name
                    );
                    rate.push(side.name, r);
                    cpu.push(side.name, c);
                    if let Some(v) = sc {
                        server.push(side.name, v);
                    }
                }
                Err(e) => println!("  {:<8} failed: {e}", side.name),
            }
        }
    }
    report.row(
        format!("engine throughput (backfill {n}, 0 ms; {label})"),
        "issues/s",
        rate.figure(),
        0,
    );
    if work == Work::Equal {
        report.target(Target::RatioAtLeast(2.5), "≥ 2.5× baseline");
    }
    report.row(
        format!("client CPU per issue ({label})"),
        "ms",
        cpu.figure(),
        3,
    );
    // The fakes run on the same cores: what they spend per issue is not the engine's, but it
    // bounds the figure above (both columns are served by this build's sandbox).
    report.row(
        format!("fakes' CPU per issue ({label})"),
        "ms",
        server.figure(),
        3,
    );
}

/// A burst of `PERF_BURST` created+resolved incidents at `PERF_BURST_MS` through `--once` and
/// through `backfill`, equal work on both sides, then this build's defaults.
fn burst(sides: &[Side], current: &Path, report: &mut Report) {
    for work in [Work::Equal, Work::Defaults] {
        burst_of(&sides_for(sides, work), current, report, work);
    }
}

fn burst_of(sides: &[Side], current: &Path, report: &mut Report, work: Work) {
    let n = env_u64("PERF_BURST", 2_000).max(1);
    let ms = env_u64("PERF_BURST_MS", 20);
    let reps = env_u64("PERF_BURST_REPS", 1).max(1);
    let (mut once, mut back, mut ratio) =
        (Samples::default(), Samples::default(), Samples::default());
    let label = work_label(work);
    println!("burst ({label}): {n} created+resolved incidents at {ms} ms, {reps} repetitions");
    for rep in 0..reps {
        for side in order(sides, rep) {
            let o = replicate(&side, current, n, 0, ms, "--once", work);
            let b = replicate(&side, current, n, 0, ms, "backfill", work);
            match (&o, &b) {
                (Ok(o), Ok(b)) => {
                    let (o, b) = (o.wall.as_secs_f64(), b.wall.as_secs_f64());
                    println!(
                        "  {:<8} --once {o:.1} s, backfill {b:.1} s, {:.2}×",
                        side.name,
                        o / b
                    );
                    once.push(side.name, o);
                    back.push(side.name, b);
                    ratio.push(side.name, o / b);
                }
                _ => {
                    for e in [o.err(), b.err()].into_iter().flatten() {
                        println!("  {:<8} failed: {e}", side.name);
                    }
                }
            }
        }
    }
    report.row(
        format!("burst {n} at {ms} ms: --once ({label})"),
        "s",
        once.figure(),
        1,
    );
    report.row(
        format!("burst {n} at {ms} ms: backfill ({label})"),
        "s",
        back.figure(),
        1,
    );
    report.row(
        format!("burst: --once / backfill ({label})"),
        "×",
        ratio.figure(),
        2,
    );
    report.target(Target::AtMost(1.3), "≤ 1.3");
}

fn strace_present() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Calls per syscall from an `strace -c` summary.
fn strace_counts(path: &Path) -> Result<Vec<(String, u64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("strace output: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // "% time seconds usecs/call calls [errors] syscall"
        if words.len() >= 5
            && words[0].parse::<f64>().is_ok()
            && let (Some(name), Ok(calls)) = (words.last(), words[3].parse::<u64>())
            && *name != "total"
        {
            out.push(((*name).to_owned(), calls));
        }
    }
    Ok(out)
}

fn sum_calls(counts: &[(String, u64)], names: &[&str]) -> u64 {
    counts
        .iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .map(|(_, c)| c)
        .sum()
}

const SYNCS: &[&str] = &["fsync", "fdatasync", "sync_file_range"];
const WRITES: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];

/// fsyncs per created issue: `PERF_FSYNC_ISSUES` created+resolved incidents through `backfill`
/// and through `--once`, the client under `strace -f -c`.
fn fsyncs(sides: &[Side], current: &Path, report: &mut Report) {
    let n = env_u64("PERF_FSYNC_ISSUES", 500).max(1);
    if !strace_present() {
        report.row("fsyncs per created issue", "", Figure::default(), 2);
        report.target(Target::AtMost(1.1), "≤ 1.1");
        report
            .notes
            .push("strace is not installed: fsyncs and store writes are n/a".into());
        return;
    }
    println!("fsyncs: {n} created+resolved incidents under strace");
    for (command, work) in [
        ("backfill", Work::Equal),
        ("--once", Work::Equal),
        ("backfill", Work::Defaults),
        ("--once", Work::Defaults),
    ] {
        let mut fig = Figure::default();
        let label = work_label(work);
        for side in &sides_for(sides, work) {
            let result = (|| -> Result<f64, String> {
                let sb = Sandbox::start(current, n, 0, 0, false)?;
                let config = sb.client_config(side, 1, false, work)?;
                let out = sb.dir.path().join("strace.txt");
                let client = client_args(side, command, work);
                let mut args: Vec<&str> = vec!["-f", "-c", "-e", "trace=fsync,fdatasync"];
                let out_text = out.display().to_string();
                args.extend(["-o", &out_text, "--"]);
                let bin = side.bin.display().to_string();
                let config_text = config.display().to_string();
                args.extend([bin.as_str(), "--config", &config_text]);
                args.extend(client.iter().map(String::as_str));
                let status = Command::new("strace")
                    .args(&args)
                    .env_remove("JIRA_GITLAB_SYNC_CONFIG")
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("strace: {e}"))
                    .and_then(|mut c| wait_for(&mut c, GUARD));
                // Read before the sandbox stops: its directory goes with it.
                let counts = strace_counts(&out);
                let held = sb.stop()?;
                let status = status?;
                if !status.success() {
                    return Err(format!("{} under strace exited {status}", side.name));
                }
                check_held(&held, n, n)?;
                let syncs = sum_calls(&counts?, SYNCS);
                Ok(syncs as f64 / n as f64)
            })();
            match result {
                Ok(v) => {
                    println!(
                        "  {:<8} {command} ({label}): {v:.2} fsyncs per created issue",
                        side.name
                    );
                    fig.set(side.name, Some(v));
                }
                Err(e) => println!("  {:<8} {command} failed: {e}", side.name),
            }
        }
        report.row(
            format!("fsyncs per created issue ({command}; {label})"),
            "",
            fig,
            2,
        );
        report.target(Target::AtMost(1.1), "≤ 1.1");
    }
}

/// Bytes of payload in every table and index of the store (SQLite's `dbstat`), read through a
/// read-only connection while the service runs; file sizes would show the WAL's reuse instead.
fn stored_bytes(db: &Path) -> Option<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row("SELECT coalesce(sum(payload), 0) FROM dbstat", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .map(|b| b.max(0) as u64)
}

/// What one idle service showed.
#[derive(Default)]
struct Idle {
    cpu_ms_per_cycle: Option<f64>,
    rss_mib: Option<f64>,
    hwm_mib: Option<f64>,
    threads: Option<f64>,
    bytes_per_cycle: Option<f64>,
    writes_per_cycle: Option<f64>,
    syncs_per_cycle: Option<f64>,
}

/// The service with `rules` rules on a one-second schedule: warm-up (the first cycle replicates
/// the sandbox's 24 incidents), then `PERF_IDLE_SECS` of idle cycles measured from `/proc` and
/// the store, then `PERF_STRACE_SECS` with strace attached counting the store's writes.
fn idle_service(side: &Side, current: &Path, rules: usize) -> Result<Idle, String> {
    let secs = env_u64("PERF_IDLE_SECS", 30).max(1);
    let warmup = env_u64("PERF_IDLE_WARMUP_SECS", 5);
    let strace_secs = env_u64("PERF_STRACE_SECS", 10);
    let ticks = clock_ticks();
    let sb = Sandbox::start(current, 24, 2, 0, true)?;
    let config = sb.client_config(side, rules, true, Work::Defaults)?;
    let db = sb.store();
    let child = Command::new(&side.bin)
        .arg("--config")
        .arg(&config)
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", side.bin.display()))?;
    let mut child = Guarded(child);
    let pid = child.0.id();
    let alive = |c: &mut Guarded| matches!(c.0.try_wait(), Ok(None));
    // Warm-up: every rule has run twice, and at least `warmup` seconds have passed.
    let t = Instant::now();
    while sb.searches() < 2 * rules as u64 || t.elapsed() < Duration::from_secs(warmup) {
        if !alive(&mut child) {
            return Err(format!("{} service exited during warm-up", side.name));
        }
        if t.elapsed() > Duration::from_secs(180) {
            return Err(format!("{} service: no second cycle in 180 s", side.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s0, c0, b0) = (sb.searches(), cpu_ticks(pid), stored_bytes(&db));
    let mut rss = Vec::new();
    let mut threads = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(kib) = status_field(pid, "VmRSS") {
            rss.push(kib);
        }
        threads = threads.max(status_field(pid, "Threads").unwrap_or(0));
    }
    let (s1, c1, b1) = (sb.searches(), cpu_ticks(pid), stored_bytes(&db));
    let hwm = status_field(pid, "VmHWM");
    if !alive(&mut child) {
        return Err(format!("{} service exited while idle", side.name));
    }
    let cycles = s1.saturating_sub(s0);
    if cycles == 0 {
        return Err(format!("{} service made no cycle in {secs} s", side.name));
    }
    let mut idle = Idle {
        cpu_ms_per_cycle: c0
            .zip(c1)
            .map(|(a, b)| (b.saturating_sub(a)) as f64 / ticks * 1000.0 / cycles as f64),
        rss_mib: rss.iter().max().map(|k| *k as f64 / 1024.0),
        // Linux batches RSS counts per thread, so VmHWM can read a little under a VmRSS seen
        // before it; the peak is the larger.
        hwm_mib: hwm
            .into_iter()
            .chain(rss.iter().copied())
            .max()
            .map(|k| k as f64 / 1024.0),
        threads: Some(threads as f64),
        bytes_per_cycle: b0
            .zip(b1)
            .map(|(a, b)| (b as f64 - a as f64) / cycles as f64),
        ..Idle::default()
    };
    if strace_secs > 0 && strace_present() {
        let out = sb.dir.path().join("strace-idle.txt");
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let journal = PathBuf::from(format!("{}-journal", db.display()));
        let mut strace = Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&out)
            .arg("-e")
            .arg(format!("trace={}", [SYNCS, WRITES].concat().join(",")))
            .arg("-P")
            .arg(&db)
            .arg("-P")
            .arg(&wal)
            .arg("-P")
            .arg(&journal)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("strace: {e}"))?;
        // strace prints nothing when attached; give it a moment to attach every thread.
        std::thread::sleep(Duration::from_millis(500));
        let s2 = sb.searches();
        std::thread::sleep(Duration::from_secs(strace_secs));
        let s3 = sb.searches();
        signal(strace.id(), "-INT");
        wait_for(&mut strace, Duration::from_secs(30))?;
        let counts = strace_counts(&out)?;
        let cycles = s3.saturating_sub(s2).max(1) as f64;
        idle.writes_per_cycle = Some(sum_calls(&counts, WRITES) as f64 / cycles);
        idle.syncs_per_cycle = Some(sum_calls(&counts, SYNCS) as f64 / cycles);
    }
    signal(pid, "-TERM");
    let _ = wait_for(&mut child.0, Duration::from_secs(60));
    sb.stop()?;
    println!(
        "  {:<8} {rules} rules: {cycles} rule-cycles, {:.2} ms CPU each, RSS {:.1} MiB, {} threads",
        side.name,
        idle.cpu_ms_per_cycle.unwrap_or(f64::NAN),
        idle.rss_mib.unwrap_or(f64::NAN),
        threads
    );
    Ok(idle)
}

fn idle(sides: &[Side], current: &Path, report: &mut Report) {
    let rule_counts: Vec<usize> = std::env::var("PERF_IDLE_RULES")
        .unwrap_or_else(|_| "1,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    println!(
        "idle: the service on a 1 s schedule, {} s measured (+{} s traced)",
        env_u64("PERF_IDLE_SECS", 30),
        env_u64("PERF_STRACE_SECS", 10)
    );
    if !strace_present() {
        report
            .notes
            .push("strace is not installed: idle store writes and fsyncs are n/a".into());
    }
    for (i, &rules) in rule_counts.iter().enumerate() {
        let mut results: Vec<(&'static str, Idle)> = Vec::new();
        for side in order(sides, i as u64) {
            match idle_service(&side, current, rules) {
                Ok(r) => results.push((side.name, r)),
                Err(e) => println!("  {:<8} {rules} rules failed: {e}", side.name),
            }
        }
        let fig = |f: &dyn Fn(&Idle) -> Option<f64>| {
            let mut fig = Figure::default();
            for (name, r) in &results {
                fig.set(name, f(r));
            }
            fig
        };
        let r = if rules == 1 {
            "1 rule".to_owned()
        } else {
            format!("{rules} rules")
        };
        report.row(
            format!("idle CPU per rule-cycle, {r}"),
            "ms",
            fig(&|i| i.cpu_ms_per_cycle),
            2,
        );
        if rules >= 100 {
            report.target(Target::AtMost(1.0), "≤ 1 ms");
        }
        report.row(format!("idle RSS, {r}"), "MiB", fig(&|i| i.rss_mib), 1);
        match rules {
            1 => report.target(Target::AtMost(16.0), "≤ 16 MiB"),
            100 => report.target(Target::AtMost(20.0), "≤ 20 MiB"),
            _ => {}
        }
        report.row(
            format!("peak RSS (VmHWM), {r}"),
            "MiB",
            fig(&|i| i.hwm_mib),
            1,
        );
        report.row(format!("threads, {r}"), "", fig(&|i| i.threads), 0);
        report.row(
            format!("store writes per idle rule-cycle, {r}"),
            "",
            fig(&|i| i.writes_per_cycle),
            2,
        );
        report.target(Target::AtMost(0.0), "0");
        report.row(
            format!("store fsyncs per idle rule-cycle, {r}"),
            "",
            fig(&|i| i.syncs_per_cycle),
            2,
        );
        report.target(Target::AtMost(0.0), "0");
        let per_day = |per_cycle: Option<f64>, cycles_per_day: f64| {
            per_cycle.map(|b| b * cycles_per_day / 1024.0)
        };
        if rules == 1 {
            report.row(
                "store growth per idle day, 1 rule, default schedule (2 min)",
                "KiB",
                fig(&|i| per_day(i.bytes_per_cycle, DEFAULT_CYCLES_PER_DAY)),
                1,
            );
            report.target(Target::AtMost(0.0), "0 (runs does not grow)");
        }
        report.row(
            format!("store growth per idle day, {r}, 1 s schedule"),
            "KiB",
            fig(&|i| per_day(i.bytes_per_cycle, 86_400.0 * rules as f64)),
            1,
        );
        report.target(Target::AtMost(0.0), "0 (runs does not grow)");
    }
}

fn main() {
    let current = PathBuf::from(env!("CARGO_BIN_EXE_jira-gitlab-sync"));
    let mut sides = Vec::new();
    if let Some(bin) = std::env::var_os("BASELINE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            eprintln!("BASELINE_BIN={} is not a file", bin.display());
            std::process::exit(2);
        }
        sides.push(Side {
            name: "baseline",
            bin,
        });
    }
    let with_baseline = !sides.is_empty();
    sides.push(Side {
        name: "current",
        bin: current.clone(),
    });
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = ["throughput", "burst", "fsync", "idle"];
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        all.iter()
            .copied()
            .filter(|s| args.iter().any(|a| a == s))
            .collect()
    };
    println!(
        "machine: {} cores, {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    for s in &sides {
        println!("{}: {}", s.name, s.bin.display());
    }
    println!("fakes: {} sandbox (another process)", current.display());
    let t = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for section in chosen {
        match section {
            "throughput" => throughput(&sides, &current, &mut report),
            "burst" => burst(&sides, &current, &mut report),
            "fsync" => fsyncs(&sides, &current, &mut report),
            _ => idle(&sides, &current, &mut report),
        }
    }
    if !with_baseline {
        report
            .notes
            .push("no BASELINE_BIN: ratios against the baseline are n/a".into());
    }
    report.print(with_baseline);
    println!("\n(bench took {:.0} s)", t.elapsed().as_secs_f64());
}
