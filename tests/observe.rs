use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use chrono::Utc;
use jira_gitlab_sync::sandbox::gitlab::{Fault, FaultTarget};
use jira_gitlab_sync::sandbox::jira::FakeIssue;
use serde_json::Value;
use tokio::sync::Notify;

use crate::support::{
    Finished, NotifySocket, Running, Setup, Signal, World, ago, edit_config, free_port,
    output_text, refused_url, rule,
};

/// One sample of a text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (format 0.0.4), checking every line is one:
/// `# HELP` or `# TYPE`, or `name{label="value",…} number`.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number ends {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("labels close: {line:?}"));
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("label=value: {line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("a quoted label value: {line:?}"));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {line:?}"
        );
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// The value of the series `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// The sum of the series `name` whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// A rule that runs once when the service starts and then not again for a year, so what the
/// metrics count is that one run.
fn once_at_start() -> String {
    format!(
        "{}cron = \"0 0 0 1 1 *\"\n",
        rule("ops", "incident", "project = OPS")
    )
}

/// The service's metrics, scraped over loopback, count what happened: issues created and
/// closed, each request to Jira and GitLab (as the fakes received them), a 429, the lag from
/// Jira's change; the textfile holds the same; systemd gets the cycle's outcome on `STATUS=`
/// and watchdog pings.
#[tokio::test]
async fn service_metrics_count_what_happened() {
    let port = free_port();
    let w = World::start(Setup {
        rules: format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\ntextfile = \"{{dir}}/sync.prom\"\n",
            once_at_start()
        ),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "open one", ago(30)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "resolved one", ago(90)).resolved_at(ago(45)));
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::RateLimited {
            retry_after_secs: Some(0),
        },
    );
    let socket_path = w.dir.path().join("notify.sock");
    let mut socket = NotifySocket::bind(&socket_path);
    let daemon = w.launch(
        &["--log-format", "human"],
        &[
            ("NOTIFY_SOCKET", &socket_path),
            ("WATCHDOG_USEC", Path::new("2000000")),
        ],
    );

    // STATUS= is sent once the run is counted and the textfile written.
    let at = socket
        .wait_for_line("the cycle's STATUS=", |l| l.contains("last: ops"))
        .await;
    let status = socket.received[at]
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .expect("a STATUS line")
        .to_owned();
    assert!(
        status.starts_with("STATUS=1 rule ok; last: ops 2 created 1 closed at ")
            && status.ends_with("Z; 0 failing"),
        "{status}"
    );
    socket.wait_for("WATCHDOG=1").await;

    let answer = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the metrics endpoint answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = answer.text().await.expect("a body");
    let m = parse(&text);
    let rule = [("rule", "ops")];
    assert_eq!(w.gitlab_issues().len(), 2, "two objects made");
    assert_eq!(
        value(&m, "jira_gitlab_sync_issues_created_total", &rule),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&m, "jira_gitlab_sync_issues_closed_total", &rule),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "jira_gitlab_sync_issues_failed_total", &rule),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "jira_gitlab_sync_runs_total",
            &[("rule", "ops"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "jira_gitlab_sync_open_failures", &rule),
        Some(0.0)
    );
    assert_eq!(
        sum(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "jira")]
        ),
        w.jira.requests().len() as f64,
        "every request Jira received, counted once: {text}"
    );
    assert_eq!(
        sum(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "gitlab")]
        ),
        w.gitlab.requests().len() as f64,
        "every request GitLab received (the 429 and its retry too): {text}"
    );
    assert_eq!(
        value(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "gitlab"), ("status", "4xx")]
        ),
        Some(1.0),
        "the 429 is GitLab's one 4xx"
    );
    assert_eq!(
        value(
            &m,
            "jira_gitlab_sync_rate_limited_total",
            &[("service", "gitlab")]
        ),
        Some(1.0)
    );
    let success = value(&m, "jira_gitlab_sync_last_success_timestamp_seconds", &rule)
        .expect("a last success");
    let now = Utc::now().timestamp() as f64;
    assert!(
        success <= now + 1.0 && success > now - 60.0,
        "{success} vs {now}"
    );
    assert!(value(&m, "jira_gitlab_sync_cycle_duration_seconds", &rule).is_some_and(|d| d > 0.0));
    assert_eq!(
        value(&m, "jira_gitlab_sync_replication_lag_seconds_count", &rule),
        Some(2.0),
        "one lag per issue written"
    );
    let lag =
        value(&m, "jira_gitlab_sync_replication_lag_seconds_sum", &rule).expect("the lags' sum");
    assert!(
        // Jira's clock, read from a `Date` header to the second, may be a second behind.
        (75.0 * 60.0 - 2.0..75.0 * 60.0 + 120.0).contains(&lag),
        "changed 30 and 45 minutes ago, written just now: {lag}"
    );
    let file = std::fs::read_to_string(w.dir.path().join("sync.prom")).expect("the textfile");
    assert_eq!(file, text, "the textfile holds what /metrics serves");

    daemon.terminate();
    let Finished { status, output, .. } = daemon.exit().await;
    assert_eq!(status.code(), Some(0), "{output}");
}

/// `--once` writes the textfile at its end, parseable, with what it did; a dry run writes none.
#[tokio::test]
async fn once_writes_the_textfile() {
    let w = World::start(Setup {
        rules: format!(
            "{}\n[metrics]\ntextfile = \"{{dir}}/textfile/sync.prom\"\n",
            rule("ops", "incident", "project = OPS")
        ),
        ..Setup::default()
    })
    .await;
    let dir = w.dir.path().join("textfile");
    std::fs::create_dir(&dir).expect("the textfile's directory");
    w.jira.insert(FakeIssue::new("OPS-1", "one", ago(20)));
    w.jira.insert(FakeIssue::new("OPS-2", "two", ago(10)));

    let out = w.binary(&["--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let text = std::fs::read_to_string(dir.join("sync.prom")).expect("the textfile is written");
    let m = parse(&text);
    assert_eq!(
        value(
            &m,
            "jira_gitlab_sync_issues_created_total",
            &[("rule", "ops")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sum(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "jira")]
        ),
        w.jira.requests().len() as f64
    );
    assert_eq!(
        sum(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "gitlab")]
        ),
        w.gitlab.requests().len() as f64
    );
    assert!(
        value(
            &m,
            "jira_gitlab_sync_last_success_timestamp_seconds",
            &[("rule", "ops")]
        )
        .is_some()
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("the directory reads")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(names, vec!["sync.prom"], "no temporary file is left");

    std::fs::remove_file(dir.join("sync.prom")).expect("removed");
    let out = w.binary(&["--once", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        !dir.join("sync.prom").exists(),
        "a dry run writes nothing, metrics included"
    );
}

/// A dry run's log says what it would write: its GitLab writes are answered without being
/// sent, and no line claims one was made.
#[tokio::test]
async fn a_dry_run_logs_what_it_would_write() {
    let w = World::start(Setup {
        rules: once_at_start(),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "open", ago(20)));
    w.jira
        .insert(FakeIssue::new("OPS-2", "resolved", ago(30)).resolved_at(ago(10)));
    let out = w.binary(&["--once", "--dry-run"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.matches("would be created in GitLab (dry run)").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("would be closed in GitLab (dry run)").count(),
        1,
        "{text}"
    );
    let claims: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("in GitLab") && !l.contains("(dry run)"))
        .collect();
    assert!(claims.is_empty(), "{claims:?}");
    assert!(w.gitlab_issues().is_empty(), "nothing was written");
}

/// While a rule's run is stuck (GitLab never answers its create), the watchdog is not pinged:
/// the status line says which rule stalled, and pings resume once it moves again.
#[tokio::test]
async fn no_watchdog_ping_while_a_rule_is_stuck() {
    let w = World::start(Setup {
        rules: once_at_start(),
        ..Setup::default()
    })
    .await;
    // A request may take ten minutes before it times out: far longer than the test.
    edit_config(&w, "timeout_secs = 5", "timeout_secs = 600");
    w.jira.insert(FakeIssue::new("OPS-1", "stuck", ago(10)));
    let (release, arrived) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );
    let socket_path = w.dir.path().join("notify.sock");
    let mut socket = NotifySocket::bind(&socket_path);
    let mut daemon = w.launch(
        &["--log-format", "human"],
        &[
            ("NOTIFY_SOCKET", &socket_path),
            ("WATCHDOG_USEC", Path::new("2000000")),
            ("RUST_LOG", Path::new("info,jira_gitlab_sync=debug")),
        ],
    );
    socket.wait_for("WATCHDOG=1").await;
    arrived.notified().await;

    let is_stall = |l: &str| l.starts_with("STATUS=stalled: ops");
    socket.wait_for_line("the stall on STATUS=", is_stall).await;
    // Two more ticks of the watchdog that would have pinged, and did not.
    const WITHHELD: &str = "watchdog ping withheld";
    let withheld = daemon.output().matches(WITHHELD).count();
    daemon.wait_for_count(WITHHELD, withheld + 2).await;
    socket.drain();
    // The stall began at its last STATUS (an earlier one, on a slow machine, may have ended).
    let stalled = socket
        .received
        .iter()
        .rposition(|m| m.lines().any(is_stall))
        .expect("the stall's STATUS");
    assert!(
        !socket.received[stalled..]
            .iter()
            .any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "no ping while the rule is stuck: {:?}",
        socket.received
    );
    assert!(
        daemon
            .output()
            .contains("watchdog pings stop, so systemd restarts the service"),
        "the log says why: {}",
        daemon.output()
    );

    release.notify_one();
    let done = socket
        .wait_for_line_from(stalled, "the run's STATUS=", |l| {
            l.contains("last: ops 1 created")
        })
        .await;
    socket
        .wait_for_line_from(done, "pings again", |l| l == "WATCHDOG=1")
        .await;
    daemon.terminate();
    let Finished { status, output, .. } = daemon.exit().await;
    assert_eq!(status.code(), Some(0), "{output}");
}

/// stderr of `--once` with `JOURNAL_STREAM` set to `journal` (`None`: to stderr's own device
/// and inode), as lines.
async fn once_stderr(w: &World, journal: Option<&str>, args: &[&str]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let path = w.dir.path().join("stderr");
    let file = std::fs::File::create(&path).expect("the stderr file");
    let meta = file.metadata().expect("its metadata");
    let stream = journal.map_or_else(|| format!("{}:{}", meta.dev(), meta.ino()), str::to_owned);
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    let status = w
        .command(&all)
        .env("JOURNAL_STREAM", &stream)
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .await
        .expect("the binary runs");
    assert_eq!(status.code(), Some(2), "GitLab refuses the token: fatal");
    std::fs::read_to_string(&path)
        .expect("stderr reads")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// When stderr is the journal (`JOURNAL_STREAM` names its device and inode), each line leads
/// with its sd-daemon priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and is
/// pure JSON after it; anywhere else, no line has a prefix.
#[tokio::test]
async fn journal_priorities_only_when_stderr_is_the_journal() {
    let w = World::start(Setup {
        gitlab_token: Some("glpat-wrong".into()),
        ..Setup::default()
    })
    .await;
    w.jira.insert(FakeIssue::new("OPS-1", "one", ago(10)));
    // A token file every user may read is a warning.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            w.dir.path().join("jira-token"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
    }

    let lines = once_stderr(&w, None, &[]).await;
    let mut seen = BTreeMap::new();
    for line in &lines {
        let (prefix, rest) = line.split_at(line.find('>').map_or(0, |i| i + 1));
        let json: Value = serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("JSON after the prefix ({e}): {line:?}"));
        let level = json["level"].as_str().expect("a level field");
        let want = match level {
            "ERROR" => "<3>",
            "WARN" => "<4>",
            "INFO" => "<6>",
            _ => "<7>",
        };
        assert_eq!(prefix, want, "{line}");
        seen.insert(want, ());
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        ["<3>", "<4>", "<6>", "<7>"],
        "each priority shows: {lines:#?}"
    );

    let human = once_stderr(&w, None, &["--log-format", "human"]).await;
    assert!(
        human.iter().any(|l| l.starts_with("<3>error: ")),
        "a person's error line has its priority too: {human:#?}"
    );
    assert!(
        human.iter().all(|l| l.starts_with('<')),
        "every line: {human:#?}"
    );

    let elsewhere = once_stderr(&w, Some("1:1"), &[]).await;
    assert!(
        !elsewhere.is_empty()
            && elsewhere
                .iter()
                .all(|l| !l.starts_with('<') && serde_json::from_str::<Value>(l).is_err()),
        "stderr is not that stream: human lines, no prefix: {elsewhere:#?}"
    );
}

/// `status` shows a run whose process died (`kill -9`) as `interrupted` once nothing holds the
/// store, not as `running` until the next process opens it; `running` while one does.
#[tokio::test]
async fn status_says_interrupted_when_the_process_is_gone() {
    let w = World::start(Setup::default()).await;
    w.jira.insert(FakeIssue::new("OPS-1", "one", ago(10)));
    let (release, arrived) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    w.gitlab.push_fault(
        FaultTarget::CreateIssue,
        Fault::HoldUntil(Arc::clone(&release), Some(Arc::clone(&arrived))),
    );
    let daemon = w.launch(&["--log-format", "human"], &[]);
    arrived.notified().await;

    let state = |out: &std::process::Output| -> String {
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json ({e}): {}", output_text(out)));
        report["rules"][0]["last_run_state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let out = w.binary(&["status", "--json"]).await;
    assert_eq!(state(&out), "running", "{}", output_text(&out));

    daemon.signal(Signal::Kill);
    let finished = daemon.exit().await;
    assert_eq!(finished.status.code(), None, "killed by a signal");
    release.notify_one();

    let out = w.binary(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(state(&out), "interrupted", "{}", output_text(&out));
    let table = w.binary(&["status"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("ops "))
        .unwrap_or_else(|| panic!("the rule's row: {text}"));
    assert!(row.contains("interrupted"), "{text}");
}

/// `backfill` on a terminal shows its bar, and the per-issue INFO lines are kept for
/// `RUST_LOG=debug` (they would drown it), with `--dry-run` too. (The terminal is `script`'s,
/// from util-linux.)
#[tokio::test]
async fn backfill_bar_is_not_drowned_by_issue_lines() {
    let w = World::start(Setup::default()).await;
    for n in 1..=12 {
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{n}"), "old", ago(600 + n)));
    }
    let on_terminal = |log: &str, args: &[&str]| {
        let command = format!(
            "{} --config {} backfill --since 2024-12-01 {}",
            env!("CARGO_BIN_EXE_jira-gitlab-sync"),
            w.config_path.display(),
            args.join(" ")
        );
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env("RUST_LOG", log)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        script
    };
    let dry = on_terminal("info", &["--dry-run"])
        .output()
        .await
        .expect("script runs");
    let text = output_text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{text}");
    assert!(text.contains("would create 12"), "{text}");
    assert!(!text.contains("created in GitLab"), "{text}");

    let real = on_terminal("info", &[])
        .output()
        .await
        .expect("script runs");
    let text = output_text(&real);
    assert_eq!(real.status.code(), Some(0), "{text}");
    assert!(text.contains("created 12"), "the summary: {text}");
    assert!(
        !text.contains("created in GitLab"),
        "no per-issue line under the bar: {text}"
    );
    assert_eq!(w.gitlab_issues().len(), 12);

    // Newer than where the first backfill stopped, so the next one, resuming, reads them.
    for n in 13..=14 {
        w.jira
            .insert(FakeIssue::new(&format!("OPS-{n}"), "old", ago(600 - n)));
    }
    let debug = on_terminal("debug", &[])
        .output()
        .await
        .expect("script runs");
    let text = output_text(&debug);
    assert_eq!(
        text.matches("created in GitLab").count(),
        2,
        "at debug the per-issue lines show: {text}"
    );
}

/// `check` tries `[metrics]`: a port in use is a warning naming metrics.listen (and the service
/// refuses to start on it), a textfile directory that is not there an error naming
/// metrics.textfile.
#[tokio::test]
async fn check_tries_the_metrics_port_and_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let w = World::start(Setup {
        rules: format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\ntextfile = \"{{dir}}/none/sync.prom\"\n",
            rule("ops", "incident", "project = OPS")
        ),
        ..Setup::default()
    })
    .await;
    let out = w.binary(&["check"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        text.lines()
            .any(|l| l.starts_with("warn") && l.contains("metrics.listen") && l.contains("in use")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("error")
            && l.contains("metrics.textfile")
            && l.contains("none")),
        "{text}"
    );

    let daemon: Running = w.launch(&["--log-format", "human"], &[]);
    let Finished { status, output, .. } = daemon.exit().await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("metrics.listen") && output.contains(&port.to_string()),
        "{output}"
    );
    drop(taken);
}

/// Each attempt the HTTP client makes is told to its observer, an unanswered one too
/// (`no_answer`), and so is each backoff between them: the metrics count every attempt.
#[tokio::test]
async fn unanswered_attempts_are_counted() {
    use jira_gitlab_sync::engine::ports::JiraSource as _;
    use jira_gitlab_sync::http::{Observers, RequestObserver};
    use jira_gitlab_sync::jira::JiraClient;
    use jira_gitlab_sync::metrics::Metrics;

    let w = World::start(Setup::default()).await;
    let refused = refused_url();
    edit_config(
        &w,
        &format!("url = \"{}\"", w.jira.base_url()),
        &format!("url = \"{refused}\""),
    );
    /// Counts the pauses it is told of.
    #[derive(Debug, Default)]
    struct Pauses(std::sync::atomic::AtomicUsize);
    impl RequestObserver for Pauses {
        fn attempt(&self, _: &'static str, _: Option<u16>) {}
        fn waiting(&self, _: &'static str, _: std::time::Duration) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    let cfg = w.config();
    let metrics = Arc::new(Metrics::new(["ops"]));
    let pauses = Arc::new(Pauses::default());
    let mut jira = JiraClient::new(&cfg.jira, &cfg.sync).expect("a client");
    jira.observed_by(Arc::new(Observers(vec![metrics.clone(), pauses.clone()])));
    jira.myself().await.expect_err("nothing listens there");
    assert_eq!(
        pauses.0.load(std::sync::atomic::Ordering::Relaxed),
        cfg.sync.retry.max_attempts as usize - 1,
        "a backoff before each retry"
    );
    let m = parse(&metrics.render());
    assert_eq!(
        value(
            &m,
            "jira_gitlab_sync_requests_total",
            &[("service", "jira"), ("status", "no_answer")]
        ),
        Some(f64::from(cfg.sync.retry.max_attempts)),
        "each attempt of the request: {}",
        metrics.render()
    );
}
