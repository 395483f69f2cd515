//! `demo`: the whole loop on a fresh machine, with no credentials and no network. A sandbox Jira
//! and GitLab start on loopback inside the process, a month of incidents is seeded, the real
//! service (scheduler, engine, store, HTTP clients) replicates them, then a live incident is
//! created and resolved in Jira and picked up by the scheduler. The table at the end puts Jira's
//! and GitLab's times side by side; the two medians of time to restore must agree. Then a second
//! Jira project whose incidents go To Do → In Progress → Mitigated → Done is backfilled with
//! `[rule.stage_labels]` and `closed_from = "status:Mitigated"`: its table shows when each stage
//! label was added in GitLab and the time to restore from Mitigated, beside the one the
//! resolution would give.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use jira_gitlab_sync::app::App;
use jira_gitlab_sync::config::{ClosedFrom, Config, HistoryConfig};
use jira_gitlab_sync::daemon::{Backoff, RunEvent, Service};
use jira_gitlab_sync::domain::{RemoteState, RunCounts};
use jira_gitlab_sync::engine::backfill::{BackfillRequest, NoProgress};
use jira_gitlab_sync::engine::median;
use jira_gitlab_sync::sandbox::gitlab::{FakeGitLab, FakeGitLabConfig};
use jira_gitlab_sync::sandbox::jira::{FakeIssue, FakeJira, FakeJiraConfig};

use super::SandboxDeployment;
use super::duration::hm;
use super::sandbox::{millis, seed, write_files};

/// Incidents seeded over the last 30 days.
const SEEDED: u64 = 24;

/// How long the demo waits for the scheduler to pick a change up before giving up.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Incidents of the staged project (`INC`), backfilled with stage labels.
const STAGED: u64 = 8;

/// The staged project's stage labels, by Jira status.
const STAGE_LABELS: [(&str, &str); 3] = [
    ("To Do", "workflow::to do"),
    ("In Progress", "workflow::in progress"),
    ("Mitigated", "workflow::mitigated"),
];

/// The demo's result.
struct DemoOutcome {
    table: String,
    jira_median: Option<chrono::Duration>,
    gitlab_median: Option<chrono::Duration>,
    /// The staged project's table and medians of time to restore from Mitigated.
    stages: String,
    stage_jira_median: Option<chrono::Duration>,
    stage_gitlab_median: Option<chrono::Duration>,
}

impl DemoOutcome {
    /// Returns true if and only if both sides compute the same median time to restore, for
    /// today's table and for restore from Mitigated.
    fn medians_agree(&self) -> bool {
        self.jira_median.is_some()
            && self.jira_median == self.gitlab_median
            && self.stage_jira_median.is_some()
            && self.stage_jira_median == self.stage_gitlab_median
    }
}

/// Runs the demo and prints its story, the table and the two medians on stdout. Returns true if
/// and only if the medians agree.
///
/// # Errors
/// A sandbox server cannot start, or the loop does not pick a change up in time.
pub async fn run() -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let outcome = drive(|line| println!("• {line}")).await?;
    println!();
    print!("{}", outcome.table);
    println!();
    let show = |d: Option<chrono::Duration>| d.map_or_else(|| "-".to_owned(), hm);
    let verdict = |a: Option<chrono::Duration>, b: Option<chrono::Duration>| {
        if a.is_some() && a == b {
            "they agree"
        } else {
            "THEY DIFFER"
        }
    };
    println!(
        "median time to restore: Jira {}, GitLab {} — {}",
        show(outcome.jira_median),
        show(outcome.gitlab_median),
        verdict(outcome.jira_median, outcome.gitlab_median)
    );
    println!();
    print!("{}", outcome.stages);
    println!();
    println!(
        "median time to restore from Mitigated: Jira's changelog {}, GitLab {} — {}",
        show(outcome.stage_jira_median),
        show(outcome.stage_gitlab_median),
        verdict(outcome.stage_jira_median, outcome.stage_gitlab_median)
    );
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(outcome.medians_agree())
}

/// Runs the demo, printing progress through `say`.
async fn drive(mut say: impl FnMut(&str)) -> anyhow::Result<DemoOutcome> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let jira = FakeJira::start(FakeJiraConfig {
        user_time_zone: chrono_tz::Europe::Berlin,
        response_offset: chrono::FixedOffset::east_opt(3600).expect("valid offset"),
        ..FakeJiraConfig::cloud()
    })
    .await
    .context("cannot start the sandbox Jira")?;
    let gitlab = FakeGitLab::start(FakeGitLabConfig::default())
        .await
        .context("cannot start the sandbox GitLab")?;

    let now = Utc::now();
    seed(&jira, SEEDED, 2, now);
    say(&format!(
        "sandbox Jira at {} holds {SEEDED} incidents from the last 30 days; sandbox GitLab at {}",
        jira.base_url(),
        gitlab.base_url()
    ));

    let path = write_files(dir.path(), SandboxDeployment::Cloud, &jira, &gitlab, now)?;
    let mut cfg = Config::load(&path).context("the demo config")?;
    for rule in &mut cfg.rules {
        // Every second, so the live incident below is picked up at once.
        rule.cron = "* * * * * *".to_owned();
    }
    let engine = Arc::new(App::build(&cfg)?.into_engine());
    let service = Service::new(Arc::clone(&engine), cfg.rules.clone(), Backoff::default());
    let mut events = service.subscribe();
    let scheduler = service
        .start_cron()
        .await
        .context("cannot start the scheduler")?;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(service.run(cancel.clone(), Duration::from_secs(5)));

    let first = wait_for(&mut events, |c| c.created > 0).await?;
    say(&format!(
        "the service replicated the history: {} created, {} closed, with Jira's own times",
        first.created, first.closed
    ));

    let live_key = format!("OPS-{}", SEEDED + 1);
    jira.insert(
        FakeIssue::new(
            &live_key,
            "Live: API error rate above 5%",
            millis(Utc::now()),
        )
        .with_priority(Some("Highest")),
    );
    say(&format!(
        "created {live_key} in Jira just now; waiting for the next tick…"
    ));
    wait_for(&mut events, |c| c.created > 0).await?;
    say(&format!(
        "the scheduler picked {live_key} up and created it in GitLab"
    ));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    jira.resolve(&live_key, millis(Utc::now()));
    say(&format!(
        "resolved {live_key} in Jira; waiting for the next tick…"
    ));
    wait_for(&mut events, |c| c.closed > 0).await?;
    say(&format!(
        "the scheduler closed {live_key} in GitLab at Jira's resolution time"
    ));

    cancel.cancel();
    let _ = running.await;
    let mut scheduler = scheduler;
    scheduler.shutdown().await;

    let mappings = engine.store().all_mappings("ops-incidents").await?;
    let gl = gitlab.issues(1);
    let mut rows = Vec::new();
    let mut jira_ttr = Vec::new();
    let mut gitlab_ttr = Vec::new();
    let mut issues = jira.issues();
    issues.retain(|i| i.project == "OPS");
    issues.sort_by_key(|i| i.created);
    for issue in &issues {
        let m = mappings.iter().find(|m| m.jira_key.as_str() == issue.key);
        let g = m
            .and_then(|m| m.iid)
            .and_then(|iid| gl.iter().find(|g| g.iid == iid));
        if let Some(r) = issue.resolutiondate {
            jira_ttr.push(r - issue.created);
        }
        if let Some(g) = g
            && let Some(c) = g.closed_at
        {
            gitlab_ttr.push(c - g.created_at);
        }
        rows.push((issue, g));
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<8} {:>6} {:<7} {:<17} {:<17} {:>8} {:>8}",
        "JIRA", "GITLAB", "STATE", "CREATED (UTC)", "CLOSED (UTC)", "TTR JIRA", "TTR GL"
    );
    for (issue, g) in &rows {
        let fmt = |t: Option<DateTime<Utc>>| {
            t.map_or_else(
                || "-".to_owned(),
                |t| t.format("%m-%d %H:%M:%S").to_string(),
            )
        };
        let ttr = |d: Option<chrono::Duration>| d.map_or_else(|| "-".to_owned(), hm);
        let _ = writeln!(
            table,
            "{:<8} {:>6} {:<7} {:<17} {:<17} {:>8} {:>8}",
            issue.key,
            g.map_or_else(|| "-".to_owned(), |g| format!("#{}", g.iid)),
            g.map_or("-", |g| match g.state {
                RemoteState::Opened => "opened",
                RemoteState::Closed => "closed",
            }),
            fmt(g.map(|g| g.created_at)),
            fmt(g.and_then(|g| g.closed_at)),
            ttr(issue.resolutiondate.map(|r| r - issue.created)),
            ttr(g.and_then(|g| g.closed_at.map(|c| c - g.created_at))),
        );
    }
    let staged = stages(&engine, &cfg, &jira, &gitlab, now, &mut say).await?;
    let outcome = DemoOutcome {
        table,
        jira_median: median(&mut jira_ttr),
        gitlab_median: median(&mut gitlab_ttr),
        stages: staged.0,
        stage_jira_median: staged.1,
        stage_gitlab_median: staged.2,
    };
    Ok(outcome)
}

/// Seeds the staged project `INC` (To Do → In Progress → Mitigated → Done over the last month),
/// backfills it with stage labels and `closed_from = "status:Mitigated"`, and returns its
/// table with the medians of time to restore from Mitigated: Jira's changelog's and GitLab's.
async fn stages(
    engine: &jira_gitlab_sync::app::Engine,
    cfg: &Config,
    jira: &FakeJira,
    gitlab: &FakeGitLab,
    now: DateTime<Utc>,
    say: &mut impl FnMut(&str),
) -> anyhow::Result<(String, Option<chrono::Duration>, Option<chrono::Duration>)> {
    let minutes = chrono::Duration::minutes;
    for n in 1..=STAGED {
        let k = n as i64;
        let created = millis(now - chrono::Duration::days(30) + chrono::Duration::hours(k * 80));
        let progress = created + minutes(5 + (k * 7) % 25);
        let mitigated = progress + minutes(20 + (k * 37) % 200);
        let done = mitigated + minutes(60 + (k * 113) % 900);
        let mut issue = FakeIssue::new(&format!("INC-{n}"), "Elevated error rate", created)
            .with_priority(Some("High"));
        issue.status = "To Do".to_owned();
        jira.insert(
            issue
                .transitioned(progress, "In Progress", "indeterminate")
                .transitioned(mitigated, "Mitigated", "indeterminate")
                .transitioned(done, "Done", "done"),
        );
    }
    let mut rule = cfg
        .rules
        .first()
        .context("the demo config has a rule")?
        .clone();
    rule.name = "inc-stages".to_owned();
    rule.jql = "project = INC".to_owned();
    rule.history = HistoryConfig {
        stage_labels: STAGE_LABELS
            .iter()
            .map(|(s, l)| ((*s).to_owned(), (*l).to_owned()))
            .collect(),
        closed_from: ClosedFrom::Status("Mitigated".to_owned()),
        ..HistoryConfig::default()
    };
    let request = BackfillRequest {
        since: now - chrono::Duration::days(31),
        until: None,
        concurrency: 4,
        sample: 0,
    };
    let report = engine
        .backfill(&rule, &request, &NoProgress, &CancellationToken::new())
        .await?;
    say(&format!(
        "backfilled INC with [rule.stage_labels] and closed_from = \"status:Mitigated\": {} \
         created, each Jira transition a GitLab label event at its own time",
        report.counts.created
    ));
    let mappings = engine.store().all_mappings("inc-stages").await?;
    let gl = gitlab.issues(1);
    let mut issues = jira.issues();
    issues.retain(|i| i.project == "INC");
    issues.sort_by_key(|i| i.created);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<8} {:>6} {:<17} {:<17} {:<17} {:>9} {:>8} {:>9}",
        "JIRA",
        "GITLAB",
        "TO DO (UTC)",
        "IN PROGRESS",
        "MITIGATED",
        "TTR JIRA*",
        "TTR GL",
        "RESOLVED"
    );
    let (mut jira_ttr, mut gitlab_ttr) = (Vec::new(), Vec::new());
    let fmt = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%m-%d %H:%M:%S").to_string(),
        )
    };
    let ttr = |d: Option<chrono::Duration>| d.map_or_else(|| "-".to_owned(), hm);
    for issue in &issues {
        let g = mappings
            .iter()
            .find(|m| m.jira_key.as_str() == issue.key)
            .and_then(|m| m.iid)
            .and_then(|iid| gl.iter().find(|g| g.iid == iid));
        let events = g.map(|g| gitlab.label_events(1, g.iid)).unwrap_or_default();
        let added = |label: &str| {
            events
                .iter()
                .filter(|e| e.added && e.label == label)
                .map(|e| e.created_at)
                .max()
        };
        // Jira's own answer: the latest entry into Mitigated, from the changelog.
        let entered = issue
            .history
            .iter()
            .filter(|h| {
                h.items
                    .iter()
                    .any(|i| i.field == "status" && i.to_string.as_deref() == Some("Mitigated"))
            })
            .map(|h| h.at)
            .max();
        let jira_restore = entered.map(|at| at - issue.created);
        jira_ttr.extend(jira_restore);
        let gl_restore = g.and_then(|g| g.closed_at.map(|c| c - g.created_at));
        gitlab_ttr.extend(gl_restore);
        let _ = writeln!(
            table,
            "{:<8} {:>6} {:<17} {:<17} {:<17} {:>9} {:>8} {:>9}",
            issue.key,
            g.map_or_else(|| "-".to_owned(), |g| format!("#{}", g.iid)),
            fmt(added(STAGE_LABELS[0].1)),
            fmt(added(STAGE_LABELS[1].1)),
            fmt(added(STAGE_LABELS[2].1)),
            ttr(jira_restore),
            ttr(gl_restore),
            ttr(issue.resolutiondate.map(|r| r - issue.created)),
        );
    }
    let _ = writeln!(
        table,
        "(stage columns: when GitLab's label event says the label was added; TTR JIRA*: to the \
         entry into Mitigated in Jira's changelog; RESOLVED: what the resolution would give)"
    );
    Ok((table, median(&mut jira_ttr), median(&mut gitlab_ttr)))
}

/// Waits for the next run that satisfies `pred`.
async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<RunEvent>,
    pred: impl Fn(&RunCounts) -> bool,
) -> anyhow::Result<RunCounts> {
    let deadline = tokio::time::Instant::now() + PICKUP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => bail!("the service did not pick the change up within {PICKUP_TIMEOUT:?}"),
            Ok(Err(e)) => bail!("the service stopped reporting runs: {e}"),
            Ok(Ok(RunEvent::Failed { error, .. })) => bail!("a sync run failed: {error}"),
            Ok(Ok(RunEvent::Finished(r))) if pred(&r.counts) => return Ok(r.counts),
            Ok(Ok(_)) => {}
        }
    }
}
