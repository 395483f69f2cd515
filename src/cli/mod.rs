//! The command line: flags (clap), wiring (config → [`App`]), printing, and outcomes → exit codes.
//!
//! Exit codes are part of the contract: 0 all done (and a service stopped by a signal); 1 the
//! cycle finished but some issues failed (they are named in the log and retried after a
//! backoff), a service was unreachable, or a signal stopped `--once` or `backfill` before the
//! end; 2 fatal (config, credentials, permissions, store; for `retry` and `forget`, a key that
//! is not failing). A second signal exits 130 at once.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use jira_gitlab_sync::app::App;
use jira_gitlab_sync::check::Level;
use jira_gitlab_sync::config::{self, Config, RuleConfig};
use jira_gitlab_sync::daemon::{self, Backoff, Service};
use jira_gitlab_sync::domain::{JiraKey, RunMode, RunOutcome, Target};
use jira_gitlab_sync::dora;
use jira_gitlab_sync::engine::backfill::{BackfillReport, BackfillRequest, Progress};
use jira_gitlab_sync::engine::ports::{GitLabSink, JiraSource, SyncStore};
use jira_gitlab_sync::engine::{EngineError, RunReport, SyncEngine, error_chain};
use jira_gitlab_sync::gitlab::{self, GitLabClient};
use jira_gitlab_sync::http::{Observers, RequestObserver};
use jira_gitlab_sync::liveness::Liveness;
use jira_gitlab_sync::metrics::{self, Metrics};
use jira_gitlab_sync::notify;
use jira_gitlab_sync::store::{FailureChange, Store};
use jira_gitlab_sync::telemetry::{self, LogFormat};
use jira_gitlab_sync::webhook::{self, Receiver, Wakes, WebhookCounts};

use self::output::Out;
use self::progress::{BarProgress, LogProgress};
use self::signals::cancel_on_signals;

#[cfg(feature = "sandbox")]
mod demo;
mod duration;
mod generate;
mod output;
mod progress;
#[cfg(feature = "sandbox")]
mod sandbox;
mod signals;

/// Replicate Jira incidents and issues into GitLab, with Jira's own timestamps, so GitLab's DORA
/// metrics and Value Stream Analytics are right.
#[derive(Debug, Parser)]
#[command(
    name = "jira-gitlab-sync",
    version,
    about,
    long_about = None,
    after_help = "Without a command it runs the service, as `run` does (it writes to GitLab \
                  until stopped); with --once, one cycle of every rule (for cron). Try `check` \
                  first, and `--once --dry-run` to see what it would write."
)]
pub struct Cli {
    /// The config file [default: $JIRA_GITLAB_SYNC_CONFIG, else ./config.toml]. Not for `demo`,
    /// `sandbox`, `completions` or `man`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// With --once: print each planned action with its Jira key; write nothing to GitLab or the
    /// store. (A dry-run service would plan the same writes every cycle for ever, so it is
    /// refused; `backfill` has its own --dry-run.)
    #[arg(long)]
    pub dry_run: bool,

    /// Run one cycle of every rule, then exit (for cron). Only without a command.
    #[arg(long)]
    pub once: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The service: sync every rule on its schedule, writing to GitLab, until SIGTERM or
    /// SIGINT. The same as giving no command.
    Run,
    /// Check the config, the store, credentials, JQL, the token's role and each project's production
    /// environment; writes nothing. Exit 0 ready, 1 works but GitLab's numbers would be off,
    /// 2 would not work.
    Check,
    /// Per rule: cursor, last run, mapped objects, failing keys. Safe while the service runs.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a failing issue due at the next cycle, instead of when its backoff ends. Exit 0
    /// done, 2 no such failing key (or several rules: name one with --rule).
    Retry {
        /// The Jira key, as `status` lists it.
        key: String,
        /// The rule it fails under, where it fails under several.
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
    },
    /// Drop a failing issue: it is not retried until Jira changes it again. Exit 0 done, 2 no
    /// such failing key (or several rules: name one with --rule).
    Forget {
        /// The Jira key, as `status` lists it.
        key: String,
        /// The rule it fails under, where it fails under several.
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
    },
    /// The whole loop against a sandbox Jira and GitLab on loopback: no config, no network.
    Demo,
    /// Serve a seeded sandbox Jira and GitLab on loopback until SIGINT or SIGTERM, with a
    /// ready-to-use config.toml, to try every other command by hand.
    Sandbox {
        /// Incidents seeded in Jira, over the last 30 days.
        #[arg(long, value_name = "N", default_value_t = 24)]
        count: u64,
        /// How many of them, the most recent, are still open; the others are resolved.
        #[arg(long, value_name = "N", default_value_t = 2)]
        open: u64,
        /// Milliseconds both servers wait before every answer, as a round trip to a distant Jira
        /// or GitLab would take [default: 0, loopback speed].
        #[arg(long, value_name = "MS", default_value_t = 0)]
        latency_ms: u64,
        /// Print a line for each request the servers receive (`request jira GET <path>`), within
        /// 0.1 s of its arrival, to see what a command costs in requests.
        #[arg(long)]
        log_requests: bool,
        /// Which Jira the sandbox plays.
        #[arg(long, value_enum, default_value_t = SandboxDeployment::Cloud)]
        deployment: SandboxDeployment,
        /// Where to write config.toml, the token files and the store [default: a new temporary
        /// directory, kept].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Post a signed Jira webhook to URL for every change the sandbox Jira makes, as Jira
        /// Cloud's admin webhooks do (e.g. http://127.0.0.1:8787/webhook/jira); the config
        /// written gets a [webhook] table receiving there.
        #[arg(long, value_name = "URL")]
        webhook_url: Option<url::Url>,
        /// The file holding the webhook's secret [default: a new random one, written to
        /// webhook-secret in --dir].
        #[arg(long, value_name = "FILE", requires = "webhook_url")]
        webhook_secret_file: Option<PathBuf>,
        /// Every SECS seconds, create an incident and resolve the oldest open one, as people
        /// would (with --webhook-url, each change is posted).
        #[arg(long, value_name = "SECS")]
        change_every: Option<u64>,
    },
    /// Replicate historical issues (created in [--since, --until)) with their original times.
    /// Resumable: re-run the same command after an interruption.
    Backfill {
        /// Issues created on or after this (YYYY-MM-DD, UTC, or an RFC 3339 time).
        #[arg(long, value_name = "DATE")]
        since: String,
        /// Issues created before this [default: now].
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Only this rule [default: every rule].
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// GitLab writes in flight at once [default: sync.backfill_concurrency].
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Go on even if the GitLab token cannot keep the original dates (not Owner): the
        /// imported incidents would carry today's dates.
        #[arg(long)]
        accept_inexact_times: bool,
        /// Where an incident rule's project has no production-tier environment, create one
        /// named "production" (tier production) before the first incident; without it backfill
        /// refuses such a project, since GitLab's DORA would never count what it imports.
        #[arg(long)]
        create_environment: bool,
        /// Do not label the imported issues "jira-backfilled" at the end. That label is their
        /// one write without a back-dated updated_at, which Premium's value-stream aggregation
        /// needs to see them before its next full run; without Premium, or where the label is
        /// unwanted, it is only a write per issue.
        #[arg(long)]
        no_marker: bool,
        /// Print what it would do (counts and a sample of actions); write nothing to GitLab or
        /// the store.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make GitLab's DORA recompute past days it missed (incidents imported before the project
    /// had a production environment): for each day since --since on which a replicated
    /// incident was closed, one incident is reopened and closed again at its own closing time.
    /// Re-running repairs only what is left. Exit 0 done, 1 some days failed, 2 fatal.
    Repair {
        /// Days on or after this (YYYY-MM-DD, UTC, or an RFC 3339 time).
        #[arg(long, value_name = "DATE")]
        since: String,
        /// Only this (incident) rule [default: every incident rule].
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// List the days and the incident each would reopen; write nothing to GitLab or the
        /// store.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the shell completion script for SHELL, e.g. `jira-gitlab-sync completions bash >
    /// /usr/share/bash-completion/completions/jira-gitlab-sync`. Needs no config.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page jira-gitlab-sync(1) (roff; read it with `jira-gitlab-sync man |
    /// man -l -`), or write every page into --dir. Needs no config.
    Man {
        /// Write jira-gitlab-sync.1 and one page per command (jira-gitlab-sync-backfill.1 and
        /// so on) into DIR instead, and print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The Jira deployment `sandbox` plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxDeployment {
    Cloud,
    Datacenter,
}

impl SandboxDeployment {
    /// The name, as the config's `jira.deployment` spells it.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            SandboxDeployment::Cloud => "cloud",
            SandboxDeployment::Datacenter => "datacenter",
        }
    }
}

impl Command {
    /// The command's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Check => "check",
            Command::Status { .. } => "status",
            Command::Retry { .. } => "retry",
            Command::Forget { .. } => "forget",
            Command::Demo => "demo",
            Command::Sandbox { .. } => "sandbox",
            Command::Backfill { .. } => "backfill",
            Command::Repair { .. } => "repair",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

impl Cli {
    /// Parses the command line, refusing flags that do not apply to the command given.
    ///
    /// Most are refused by clap's parser itself (`status --dry-run`: no such argument). The
    /// rest cannot be declared, because `--config` and `--log-format` go before or after any
    /// command: `--once` or `--dry-run` with a command, `--dry-run` without `--once`, and
    /// `--config` with a command that reads no config (`demo`, `sandbox`, `completions`, `man`).
    /// Those are refused here, as clap refuses the others (a usage error, exit 2), each with
    /// what to type instead.
    pub fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if let Err(e) = cli.refuse_misplaced_flags() {
            e.exit();
        }
        cli
    }

    fn refuse_misplaced_flags(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        use clap::error::ErrorKind;
        let refuse =
            |message: String| Err(Cli::command().error(ErrorKind::ArgumentConflict, message));
        let Some(command) = &self.command else {
            if self.dry_run && !self.once {
                return refuse(
                    "--dry-run needs --once: a dry run plans one cycle and exits \
                     (jira-gitlab-sync --config FILE --once --dry-run); a dry-run service would \
                     plan the same writes every cycle for ever"
                        .to_owned(),
                );
            }
            return Ok(());
        };
        let name = command.name();
        if self.dry_run {
            return refuse(match command {
                Command::Backfill { .. } => {
                    "--dry-run goes after `backfill`: jira-gitlab-sync backfill --since DATE \
                     --dry-run"
                        .to_owned()
                }
                Command::Repair { .. } => {
                    "--dry-run goes after `repair`: jira-gitlab-sync repair --since DATE --dry-run"
                        .to_owned()
                }
                _ => format!("--dry-run does not go with `{name}`: it is for --once and backfill"),
            });
        }
        if self.once {
            return refuse(format!(
                "--once does not go with `{name}`: --once runs one cycle of every rule in place of \
                 a command (jira-gitlab-sync --config FILE --once)"
            ));
        }
        if matches!(command, Command::Demo) && self.config.is_some() {
            return refuse(
                "--config does not go with `demo`: the demo runs against its own sandbox and \
                 needs no config"
                    .to_owned(),
            );
        }
        if matches!(command, Command::Completions { .. } | Command::Man { .. })
            && self.config.is_some()
        {
            return refuse(format!(
                "--config does not go with `{name}`: it prints what the command line itself \
                 defines and needs no config"
            ));
        }
        if matches!(command, Command::Sandbox { .. }) && self.config.is_some() {
            return refuse(
                "--config does not go with `sandbox`: it writes its own config.toml (in --dir)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The process outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Clean = 0,
    Partial = 1,
    Fatal = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // The scheduler crate narrates its internals at info; keep that out of operators' logs.
    // `demo`, `check`, `status`, `retry` and `forget` print for a person: log lines among them
    // would only get in the way, so only warnings unless asked.
    let default_filter = match cli.command {
        Some(
            Command::Demo
            | Command::Sandbox { .. }
            | Command::Check
            | Command::Status { .. }
            | Command::Retry { .. }
            | Command::Forget { .. }
            | Command::Completions { .. }
            | Command::Man { .. },
        ) => "warn",
        _ => "info,tokio_cron_scheduler=warn",
    };
    let out = Out::new(telemetry::init(cli.log_format, default_filter) == LogFormat::Json);
    // One thread runs every task. The work is waiting on Jira, GitLab and the store (whose
    // statements run on the store's own thread), and with worker threads each HTTP answer
    // crossed threads twice, from the connection's task on a worker to the engine here and
    // back: measured on a 2-core machine, a backfill's 5,000 issues took 31,000 futex calls
    // that way and 1,200 this way, and 25 % less CPU in all. DNS lookups still run on
    // tokio's blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            return Exit::Fatal.into();
        }
    };
    let exit = runtime.block_on(async {
        match dispatch(cli, out).await {
            Ok(exit) => exit,
            Err(e) => {
                out.error(&format!("{e:#}"));
                Exit::Fatal
            }
        }
    });
    exit.into()
}

async fn dispatch(cli: Cli, out: Out) -> anyhow::Result<Exit> {
    let path = config::resolve_path(cli.config.as_deref());
    match cli.command {
        None if cli.once => {
            let cfg = load_config_to_sync(&path, out)?;
            webhook_unused(&cfg, "--once");
            let cancel = stop_on_signals(&cfg);
            if cli.dry_run {
                // A dry run writes nothing, metrics included.
                once(App::dry_run(&cfg)?, None, &cancel, out).await
            } else {
                let metrics = Recorder::new(&cfg);
                let app = App::build_observed(&cfg, metrics.observer())?;
                once(app, Some(&metrics), &cancel, out).await
            }
        }
        None | Some(Command::Run) => {
            let cfg = load_config_to_sync(&path, out)?;
            let cancel = stop_on_signals(&cfg);
            service(&cfg, cancel).await
        }
        Some(Command::Check) => {
            let cfg = load_config(&path)?;
            check(&cfg, &path, out).await
        }
        Some(Command::Status { json }) => status(&path, json, out).await,
        Some(Command::Retry { key, rule }) => {
            change_failure(&path, &key, rule.as_deref(), FailureCommand::Retry, out).await
        }
        Some(Command::Forget { key, rule }) => {
            change_failure(&path, &key, rule.as_deref(), FailureCommand::Forget, out).await
        }
        Some(Command::Demo) => demo(out).await,
        Some(Command::Completions { shell }) => generate::completions(shell),
        Some(Command::Man { dir }) => generate::man(dir.as_deref()),
        Some(Command::Sandbox {
            count,
            open,
            latency_ms,
            log_requests,
            deployment,
            dir,
            webhook_url,
            webhook_secret_file,
            change_every,
        }) => {
            let options = SandboxOptions {
                count,
                open,
                latency: std::time::Duration::from_millis(latency_ms),
                log_requests,
                deployment,
                dir,
                webhook_url,
                webhook_secret_file,
                change_every: change_every
                    .filter(|s| *s > 0)
                    .map(std::time::Duration::from_secs),
            };
            sandbox(options, out).await
        }
        Some(Command::Backfill {
            since,
            until,
            rule,
            concurrency,
            accept_inexact_times,
            create_environment,
            no_marker,
            dry_run,
        }) => {
            let cfg = load_config_to_sync(&path, out)?;
            webhook_unused(&cfg, "backfill");
            let since = config::parse_since("--since", &since)?;
            let until = until
                .map(|u| config::parse_since("--until", &u))
                .transpose()?;
            if until.is_some_and(|u| u <= since) {
                anyhow::bail!("--until must be after --since");
            }
            let rules: Vec<_> = match &rule {
                Some(name) => vec![cfg.rule(name)?.clone()],
                None => cfg.rules.clone(),
            };
            let req = BackfillRequest {
                since,
                until,
                concurrency: concurrency.unwrap_or(cfg.sync.backfill_concurrency).max(1),
                sample: 20,
            };
            let cancel = stop_on_signals(&cfg);
            let how = BackfillRun {
                dry_run,
                accept_inexact_times,
                create_environment,
                marker: !no_marker,
                cancel: &cancel,
                out,
                // A dry run writes nothing, metrics included.
                metrics: if dry_run {
                    Recorder::none()
                } else {
                    Recorder::new(&cfg)
                },
            };
            backfill(&cfg, &rules, &req, &how).await
        }
        Some(Command::Repair {
            since,
            rule,
            dry_run,
        }) => {
            let cfg = load_config_to_sync(&path, out)?;
            let since = config::parse_since("--since", &since)?;
            let rules: Vec<RuleConfig> = match &rule {
                Some(name) => {
                    let r = cfg.rule(name)?.clone();
                    if r.destination.target != Target::Incident {
                        return Err(dora::DoraError::NotIncidentRule(r.name).into());
                    }
                    vec![r]
                }
                None => cfg
                    .rules
                    .iter()
                    .filter(|r| r.destination.target == Target::Incident)
                    .cloned()
                    .collect(),
            };
            let cancel = stop_on_signals(&cfg);
            repair(&cfg, &rules, since, dry_run, &cancel, out).await
        }
    }
}

/// A token that SIGTERM or SIGINT cancels from now on (a second signal exits at once).
fn stop_on_signals(cfg: &Config) -> CancellationToken {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone(), cfg.sync.shutdown_grace);
    cancel
}

/// Returns the projects (of issue and incident rules) where GitLab would not keep Jira's times.
async fn inexact_projects(
    cfg: &Config,
    rules: &[RuleConfig],
    observer: Option<Arc<dyn RequestObserver>>,
) -> anyhow::Result<Vec<String>> {
    let mut gitlab = GitLabClient::new(&cfg.gitlab, &cfg.sync)?;
    if let Some(o) = observer {
        gitlab.observed_by(o);
    }
    let admin = gitlab
        .current_user()
        .await
        .context("cannot check the GitLab token")?
        .is_admin
        .unwrap_or(false);
    let mut out = Vec::new();
    if admin {
        return Ok(out);
    }
    for rule in rules {
        let dest = &rule.destination;
        if dest.target == Target::Alert || out.contains(&dest.project) {
            continue;
        }
        let p = gitlab
            .project(&dest.project)
            .await
            .with_context(|| format!("cannot check project {}", dest.project))?;
        if p.access_level() < gitlab::OWNER {
            out.push(dest.project.clone());
        }
    }
    Ok(out)
}

/// How a backfill runs: its flags, the stop request, where it prints, its metrics.
struct BackfillRun<'a> {
    dry_run: bool,
    accept_inexact_times: bool,
    create_environment: bool,
    /// Label the imported issues with the value-stream marker at the end (not `--no-marker`).
    marker: bool,
    cancel: &'a CancellationToken,
    out: Out,
    metrics: Recorder,
}

async fn backfill(
    cfg: &Config,
    rules: &[RuleConfig],
    req: &BackfillRequest,
    how: &BackfillRun<'_>,
) -> anyhow::Result<Exit> {
    let inexact = tokio::select! {
        inexact = inexact_projects(cfg, rules, how.metrics.observer()) => inexact?,
        () = how.cancel.cancelled() => {
            how.out.note("backfill stopped before it started: nothing was written");
            return Ok(Exit::Partial);
        }
    };
    if !inexact.is_empty() {
        let list = inexact.join(", ");
        if !how.accept_inexact_times && !how.dry_run {
            anyhow::bail!(
                "the GitLab token is not Owner of {list}: GitLab would ignore Jira's created and \
                 resolution times and stamp the imported incidents with today's date, which \
                 DORA would count as today's failures. Give the token's user the Owner role, or \
                 pass --accept-inexact-times to import anyway"
            );
        }
        tracing::warn!(projects = %list, "the token is not Owner: imported objects will not keep Jira's times");
    }
    // Before anything is written: incidents imported into a project without a production-tier
    // environment would never be counted by DORA.
    let mut gitlab = GitLabClient::new(&cfg.gitlab, &cfg.sync)?;
    if let Some(o) = how.metrics.observer() {
        gitlab.observed_by(o);
    }
    let ensured = tokio::select! {
        r = dora::ensure_production(&gitlab, rules, how.create_environment, how.dry_run) => r,
        () = how.cancel.cancelled() => {
            how.out.note("backfill stopped before it started: nothing was written");
            return Ok(Exit::Partial);
        }
    };
    match ensured {
        Ok(notes) => notes.iter().for_each(|n| how.out.note(n)),
        Err(e @ dora::DoraError::NoProductionEnvironment(_)) if how.dry_run => {
            how.out.note(&format!("backfill would refuse: {e}"));
        }
        Err(e) => return Err(e.into()),
    }
    if how.dry_run {
        let engine = App::dry_run(cfg)?.into_engine();
        let exit = backfill_rules(&engine, rules, req, how).await;
        if how.marker && rules.iter().any(|r| r.destination.target != Target::Alert) {
            how.out.note(&format!(
                "  then each imported issue would get the label {} (one write without \
                 updated_at, for value-stream analytics)",
                dora::MARKER_LABEL
            ));
        }
        exit
    } else {
        let engine = App::build_observed(cfg, how.metrics.observer())?.into_engine();
        let mut exit = backfill_rules(&engine, rules, req, how).await?;
        if how.marker && exit != Exit::Fatal && !how.cancel.is_cancelled() {
            exit = exit.max(mark_backfilled(&gitlab, engine.store(), rules, req, how).await?);
        }
        how.metrics.write(how.out);
        Ok(exit)
    }
}

/// Backfill's last step: the value-stream marker on each imported issue ([`dora::mark_backfilled`]).
async fn mark_backfilled(
    gitlab: &GitLabClient,
    store: &Store,
    rules: &[RuleConfig],
    req: &BackfillRequest,
    how: &BackfillRun<'_>,
) -> anyhow::Result<Exit> {
    let mut exit = Exit::Clean;
    for rule in rules
        .iter()
        .filter(|r| r.destination.target != Target::Alert)
    {
        let r = dora::mark_backfilled(
            gitlab,
            store,
            rule,
            req.since,
            req.until,
            req.concurrency,
            how.cancel,
        )
        .await?;
        how.out.result(&r, || {
            let mut s = format!(
                "  value-stream marker ({}): {} issue(s) labelled now, {} earlier\n",
                dora::MARKER_LABEL,
                r.marked,
                r.already
            );
            for (key, error) in &r.failed {
                let _ = writeln!(
                    s,
                    "  marker failed for {key}: {error} (the next backfill adds it)"
                );
            }
            s
        });
        if !r.failed.is_empty() {
            exit = Exit::Partial;
        }
    }
    Ok(exit)
}

/// `repair`: the days GitLab's DORA missed, recomputed ([`dora::repair`]).
async fn repair(
    cfg: &Config,
    rules: &[RuleConfig],
    since: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    cancel: &CancellationToken,
    out: Out,
) -> anyhow::Result<Exit> {
    let gitlab = GitLabClient::new(&cfg.gitlab, &cfg.sync)?;
    let store = if dry_run {
        match jira_gitlab_sync::app::StoreMode::for_dry_run(cfg) {
            jira_gitlab_sync::app::StoreMode::InMemory => {
                out.note("repair: no store yet, so nothing was replicated to repair");
                return Ok(Exit::Clean);
            }
            _ => Store::open_read_only(&cfg.store_path)
                .with_context(|| format!("cannot use the store {}", cfg.store_path.display()))?,
        }
    } else {
        Store::open(&cfg.store_path)
            .with_context(|| format!("cannot use the store {}", cfg.store_path.display()))?
    };
    let report = dora::repair(&gitlab, &store, rules, since, dry_run, cancel).await?;
    out.result(&report, || repair_summary(&report, dry_run));
    Ok(if report.has_failures() || cancel.is_cancelled() {
        Exit::Partial
    } else {
        Exit::Clean
    })
}

/// A repair's summary for a person.
fn repair_summary(r: &dora::RepairReport, dry_run: bool) -> String {
    use dora::RepairOutcome as O;
    let mut s = String::new();
    for d in &r.days {
        let what = match &d.outcome {
            O::Planned => "would reopen and close again".to_owned(),
            O::Repaired => "reopened and closed again".to_owned(),
            O::Finished => {
                "closed again (an earlier repair had stopped after reopening it)".to_owned()
            }
            O::Open => {
                "not repaired: GitLab holds none of its incidents closed on that day (a person \
                 reopened them or closed them at another time)"
                    .to_owned()
            }
            O::Failed(e) => format!("failed: {e}"),
        };
        let _ = writeln!(
            s,
            "{} {}  {} #{} closed {}  {what}",
            d.project,
            d.day,
            d.jira_key,
            d.iid,
            d.closed_at.format("%H:%M:%S")
        );
    }
    let repaired = r
        .days
        .iter()
        .filter(|d| matches!(d.outcome, O::Repaired | O::Finished))
        .count();
    let _ = writeln!(
        s,
        "repair: {} day(s) {}, {} repaired before",
        if dry_run { r.days.len() } else { repaired },
        if dry_run { "to repair" } else { "repaired" },
        r.already_repaired
    );
    for n in &r.notes {
        let _ = writeln!(s, "  {n}");
    }
    s
}

async fn backfill_rules<J, G, S>(
    engine: &SyncEngine<J, G, S>,
    rules: &[RuleConfig],
    req: &BackfillRequest,
    how: &BackfillRun<'_>,
) -> anyhow::Result<Exit>
where
    J: JiraSource,
    G: GitLabSink,
    S: SyncStore,
{
    let (cancel, out) = (how.cancel, how.out);
    let mut exit = Exit::Clean;
    for rule in rules {
        let bar = (!out.is_json() && std::io::stderr().is_terminal()).then(BarProgress::new);
        let log = LogProgress::new(std::time::Duration::from_secs(5));
        let progress: &dyn Progress = match &bar {
            Some(b) => b,
            None => &log,
        };
        let (report, stopped) = engine.backfill_reporting(rule, req, progress, cancel).await;
        if let Some(b) = &bar {
            b.finish();
        }
        if !how.dry_run
            && let Some(m) = &how.metrics.metrics
        {
            m.record_backfill(&report);
        }
        out.result(&report, || backfill_summary(&report, how.dry_run));
        if report.counts.failed > 0 {
            exit = exit.max(Exit::Partial);
        }
        if let Some(e) = stopped {
            out.error(&error_chain(&e));
            exit = exit.max(if e.is_retryable() {
                Exit::Partial
            } else {
                Exit::Fatal
            });
            break;
        }
        if report.outcome == RunOutcome::Cancelled || cancel.is_cancelled() {
            out.note("  stopped before the end: run the same command again to resume");
            exit = exit.max(Exit::Partial);
            break;
        }
    }
    Ok(exit)
}

/// A backfill's summary for a person.
fn backfill_summary(r: &BackfillReport, dry_run: bool) -> String {
    let mut s = String::new();
    let c = &r.counts;
    let verb = if dry_run { "would create" } else { "created" };
    let _ = writeln!(
        s,
        "backfill {}: {} issue(s) read{}{}",
        r.rule,
        c.seen,
        r.total.map(|t| format!(" of {t}")).unwrap_or_default(),
        r.resumed_from
            .map(|t| format!(", resumed from {}", t.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  {verb} {}, closed {}, reopened {}, updated {}, unchanged {}, failed {} in {:.1} s ({})",
        c.created,
        c.closed,
        c.reopened,
        c.updated,
        c.skipped,
        c.failed,
        r.elapsed_ms as f64 / 1000.0,
        r.outcome.as_str()
    );
    if let Some(m) = r.median_restore_secs {
        let _ = writeln!(
            s,
            "  median time to restore of what was imported: {}",
            duration::hm(chrono::Duration::seconds(m))
        );
    }
    if r.timestamps_ignored {
        let _ = writeln!(
            s,
            "  GitLab did not keep Jira's times for some objects (token not Owner)"
        );
    }
    if r.incidents_filed_as_issues {
        let _ = writeln!(
            s,
            "  GitLab filed some incidents as plain issues (token below Reporter): DORA does not count them"
        );
    }
    for f in &r.failures {
        let _ = writeln!(s, "  failed {}: {}", f.jira_key, f.error);
    }
    if dry_run {
        for p in &r.planned {
            let _ = writeln!(
                s,
                "  {:<13} {:<12} {}",
                p.action,
                p.jira_key.as_str(),
                p.title
            );
        }
    }
    s
}

/// The long-running service: cron ticks per rule until SIGTERM/SIGINT; metrics served and
/// written as configured; systemd told its status after each run, and its watchdog pinged while
/// every run in flight makes progress.
async fn service(cfg: &Config, cancel: CancellationToken) -> anyhow::Result<Exit> {
    // Bound before the service says it is ready: a port in use fails the start.
    let listener = match cfg.metrics.listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    // The webhook receiver too, with its secret read now: a start without it fails.
    let webhook = match &cfg.webhook {
        Some(w) => Some((w.read_secret()?, webhook::bind(w.listen).await?)),
        None => None,
    };
    let liveness = Arc::new(Liveness::new());
    let recorder = Recorder::new(cfg);
    let mut observers: Vec<Arc<dyn RequestObserver>> = vec![liveness.clone()];
    observers.extend(recorder.observer());
    let app = App::build_observed(cfg, Some(Arc::new(Observers(observers))))?;
    let mut service = Service::new(
        Arc::new(app.into_engine()),
        cfg.rules.clone(),
        Backoff::default(),
    )
    .with_max_running(cfg.sync.rule_concurrency)
    .with_liveness(Arc::clone(&liveness));
    if let Some(m) = &recorder.metrics {
        service = service.with_metrics(Arc::clone(m), cfg.metrics.textfile.clone());
    }
    let mut counts_written = None;
    if let Some((secret, listener)) = webhook {
        let wakes = Arc::new(Wakes::new(&cfg.rules));
        let counts = Arc::new(WebhookCounts::default());
        service = service.with_wakes(Arc::clone(&wakes));
        service.spawn_waker(cancel.clone());
        counts_written = Some(service.spawn_webhook_counts(Arc::clone(&counts), cancel.clone()));
        let receiver = Arc::new(Receiver::new(
            secret,
            wakes,
            counts,
            recorder.metrics.clone(),
        ));
        let addr = listener.local_addr().ok();
        let stop = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = receiver.serve(listener, stop).await {
                error!(cause = %e, "the webhook endpoint stopped");
            }
        });
        info!(listen = ?addr, path = webhook::PATH, "webhooks received");
    }
    let mut scheduler = service
        .start_cron()
        .await
        .context("cannot start the scheduler")?;
    if let (Some(listener), Some(m)) = (listener, &recorder.metrics) {
        let (m, stop) = (Arc::clone(m), cancel.clone());
        let addr = listener.local_addr().ok();
        tokio::spawn(async move {
            if let Err(e) = m.serve(listener, stop).await {
                error!(cause = %e, "the metrics endpoint stopped");
            }
        });
        info!(listen = ?addr, "metrics served on GET /metrics");
    }
    // Ready once the config is valid and the store is open; a Jira or GitLab outage at start is
    // retried by the rules' backoff, not a failed start.
    notify::ready(&format!("syncing {} rule(s)", cfg.rules.len()));
    if let Some(interval) = notify::watchdog_interval() {
        let slowest = cfg.jira.timeout.max(cfg.gitlab.timeout) + cfg.sync.retry.max_delay;
        if let Some(why) = daemon::watchdog_too_short(interval, slowest) {
            tracing::warn!("{why}");
        }
        daemon::spawn_watchdog(liveness, interval, cancel.clone());
    }
    info!(rules = cfg.rules.len(), store = %cfg.store_path.display(), "service started");
    // STOPPING=1 as soon as shutdown starts. Not from a spawned task: the service can stop and
    // the runtime drop such a task before it ever runs. `run` only returns after the token
    // fired, and `biased` polls the token first, so this always happens, and before the exit.
    let run = service.run(cancel.clone(), cfg.sync.shutdown_grace);
    tokio::pin!(run);
    let clean = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            notify::stopping();
            run.await
        }
        clean = &mut run => clean,
    };
    scheduler.shutdown().await;
    if let Some(task) = counts_written
        && let Err(e) = task.await
    {
        error!(error = %e, "the webhook counts were not written at the end");
    }
    // Every run was recorded (cancelled, or abandoned at the end of the grace period): a stop,
    // not a failure. Only a worker that did not even record its run exits 1.
    Ok(if clean { Exit::Clean } else { Exit::Partial })
}

async fn check(cfg: &Config, path: &std::path::Path, out: Out) -> anyhow::Result<Exit> {
    let findings = jira_gitlab_sync::check::run(cfg, path).await;
    if out.is_json() {
        for f in &findings {
            out.result(f, String::new);
        }
    } else {
        print!("{}", jira_gitlab_sync::check::render(&findings));
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    Ok(match worst {
        Level::Ok => Exit::Clean,
        Level::Warn => Exit::Partial,
        Level::Error => Exit::Fatal,
    })
}

async fn status(path: &std::path::Path, json: bool, out: Out) -> anyhow::Result<Exit> {
    let (store, rules) = Config::load_store_and_rules(path)
        .with_context(|| format!("invalid configuration in {}", path.display()))?;
    let report = jira_gitlab_sync::status::collect(&store, &rules)
        .await
        .with_context(|| format!("cannot read the store {}", store.display()))?;
    if out.is_json() {
        // JSON lines: the report on one line.
        out.result(&report, String::new);
    } else if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", jira_gitlab_sync::status::render(&report));
    }
    Ok(Exit::Clean)
}

/// What `retry` and `forget` do to a failing issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureCommand {
    Retry,
    Forget,
}

/// `retry KEY` / `forget KEY`: on the store opened for writing (refused while another process,
/// such as the service, holds it). Exit 0 done, 2 unknown or ambiguous key.
async fn change_failure(
    path: &std::path::Path,
    key: &str,
    rule: Option<&str>,
    command: FailureCommand,
    out: Out,
) -> anyhow::Result<Exit> {
    let (store_path, _) = Config::load_store_and_rules(path)
        .with_context(|| format!("invalid configuration in {}", path.display()))?;
    let key = JiraKey::parse(key.trim())
        .map_err(|bad| anyhow::anyhow!("{bad:?} is not a Jira key (like OPS-123)"))?;
    if !store_path.exists() {
        out.error(&format!(
            "no sync has run yet: the store {} does not exist",
            store_path.display()
        ));
        return Ok(Exit::Fatal);
    }
    let opened = store_path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&opened))
        .await
        .context("the store could not be opened")?
        .with_context(|| format!("cannot use the store {}", store_path.display()))?;
    let changed = match command {
        FailureCommand::Retry => store.retry_failure(&key, rule).await,
        FailureCommand::Forget => store.forget_failure(&key, rule).await,
    }
    .with_context(|| format!("cannot change the store {}", store_path.display()))?;
    let under = rule.map(|r| format!(" under rule {r}")).unwrap_or_default();
    Ok(match changed {
        FailureChange::Done { rule } => {
            out.note(&match command {
                FailureCommand::Retry => {
                    format!("{key} (rule {rule}) is retried at the next cycle")
                }
                FailureCommand::Forget => format!(
                    "{key} (rule {rule}) is forgotten: not retried until Jira changes it again"
                ),
            });
            Exit::Clean
        }
        FailureChange::Unknown => {
            out.error(&format!(
                "{key} is not failing{under}; `status` lists the failing keys"
            ));
            Exit::Fatal
        }
        FailureChange::Ambiguous { rules } => {
            out.error(&format!(
                "{key} is failing under several rules: {}; name one with --rule",
                rules.join(", ")
            ));
            Exit::Fatal
        }
    })
}

/// `demo`: the whole loop against the sandbox; exit 1 if the two medians differ.
#[cfg(feature = "sandbox")]
async fn demo(_out: Out) -> anyhow::Result<Exit> {
    Ok(if demo::run().await? {
        Exit::Clean
    } else {
        Exit::Partial
    })
}

/// Without the sandbox there is nothing to run the demo against.
#[cfg(not(feature = "sandbox"))]
async fn demo(out: Out) -> anyhow::Result<Exit> {
    out.error(
        "this binary was built without the sandbox that demo runs against; rebuild it with \
         default features (cargo build --release) or with --features sandbox",
    );
    Ok(Exit::Fatal)
}

/// What `sandbox` serves, from its flags.
#[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
pub struct SandboxOptions {
    /// Incidents seeded.
    pub count: u64,
    /// How many of the most recent stay open.
    pub open: u64,
    /// Added before every answer of both servers.
    pub latency: std::time::Duration,
    /// Print a line per request received.
    pub log_requests: bool,
    pub deployment: SandboxDeployment,
    /// Where the files go (default: a new temporary directory, kept).
    pub dir: Option<PathBuf>,
    /// Where the sandbox Jira posts its webhooks, if anywhere.
    pub webhook_url: Option<url::Url>,
    /// The file holding their secret (default: generated into `dir`).
    pub webhook_secret_file: Option<PathBuf>,
    /// How often the sandbox creates an incident and resolves the oldest open one.
    pub change_every: Option<std::time::Duration>,
}

/// `sandbox`: serve the seeded sandbox until a signal; exit 0 once stopped.
#[cfg(feature = "sandbox")]
async fn sandbox(options: SandboxOptions, _out: Out) -> anyhow::Result<Exit> {
    sandbox::run(options).await?;
    Ok(Exit::Clean)
}

/// Without the sandbox there is nothing to serve.
#[cfg(not(feature = "sandbox"))]
async fn sandbox(_options: SandboxOptions, out: Out) -> anyhow::Result<Exit> {
    out.error(
        "this binary was built without the sandbox; rebuild it with default features \
         (cargo build --release) or with --features sandbox",
    );
    Ok(Exit::Fatal)
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("invalid configuration in {}", path.display()))
}

/// The config of a command that syncs, with a warning for each secret file every user may read.
fn load_config_to_sync(path: &std::path::Path, out: Out) -> anyhow::Result<Config> {
    let cfg = load_config(path)?;
    for exposed in &cfg.exposed_secrets {
        out.warn(&exposed.to_string());
    }
    Ok(cfg)
}

/// `[webhook]` is the service's: `mode` (`--once`, `backfill`) neither reads its secret nor
/// listens, and says so (at info: the same config serves both, that is no mistake).
fn webhook_unused(cfg: &Config, mode: &str) {
    if cfg.webhook.is_some() {
        info!("[webhook] is used by the service only: {mode} ignores it");
    }
}

/// One cycle of every rule (`--once`). Stopped by a signal, it exits 1: the next run goes on.
/// A rule whose run stops is told once (`error: …`, or one ERROR line in a JSON log); each
/// rule's summary is its `run finished` log line.
async fn once<J, G, S>(
    app: App<SyncEngine<J, G, S>>,
    metrics: Option<&Recorder>,
    cancel: &CancellationToken,
    out: Out,
) -> anyhow::Result<Exit>
where
    J: JiraSource,
    G: GitLabSink,
    S: SyncStore,
{
    let dry_run = metrics.is_none();
    let results: Vec<_> = futures_util::stream::iter(app.rules())
        .map(|rule| {
            let engine = app.engine();
            async move {
                let started = std::time::Instant::now();
                let result = engine.run_rule(rule, RunMode::Once, cancel).await;
                (rule, result, started.elapsed())
            }
        })
        .buffer_unordered(app.sync().rule_concurrency)
        .collect()
        .await;
    if let Some(m) = metrics {
        for (rule, result, elapsed) in &results {
            m.run(app.engine(), rule, result, *elapsed).await;
        }
        m.write(out);
    }
    let mut exit = Exit::Clean;
    let mut reports = Vec::new();
    for (_, result, _) in results {
        match result {
            Ok(report) => {
                if report.counts.failed > 0 || report.outcome == RunOutcome::Cancelled {
                    exit = exit.max(Exit::Partial);
                }
                reports.push(report);
            }
            Err(e) => {
                let fatal = !e.is_retryable();
                out.error(&error_chain(&e));
                exit = exit.max(if fatal { Exit::Fatal } else { Exit::Partial });
            }
        }
    }
    if dry_run {
        for r in &reports {
            out.result(r, || plan_text(r));
        }
    }
    Ok(exit)
}

/// The metrics of a command that syncs (`--once`, `backfill`), if `[metrics]` asks for any:
/// fed by its runs and its HTTP clients, written to the textfile at the end.
struct Recorder {
    metrics: Option<Arc<Metrics>>,
    textfile: Option<PathBuf>,
}

impl Recorder {
    fn new(cfg: &Config) -> Self {
        Self {
            metrics: cfg
                .metrics
                .enabled()
                .then(|| Arc::new(Metrics::new(cfg.rules.iter().map(|r| r.name.as_str())))),
            textfile: cfg.metrics.textfile.clone(),
        }
    }

    fn none() -> Self {
        Self {
            metrics: None,
            textfile: None,
        }
    }

    /// What the HTTP clients tell, if metrics are kept.
    fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.metrics
            .as_ref()
            .map(|m| Arc::clone(m) as Arc<dyn RequestObserver>)
    }

    /// Records one run of `rule` and the failing issues it left.
    async fn run<J, G, S>(
        &self,
        engine: &SyncEngine<J, G, S>,
        rule: &RuleConfig,
        result: &Result<RunReport, EngineError>,
        elapsed: std::time::Duration,
    ) where
        J: JiraSource,
        G: GitLabSink,
        S: SyncStore,
    {
        let Some(m) = &self.metrics else {
            return;
        };
        m.record(&rule.name, result, elapsed);
        if let Ok(failing) = engine.store().failures(&rule.name).await {
            m.set_open_failures(&rule.name, failing.len());
        }
    }

    /// Writes the textfile, if one is configured; a failure is a warning.
    fn write(&self, out: Out) {
        if let (Some(m), Some(path)) = (&self.metrics, &self.textfile)
            && let Err(e) = m.write_textfile(path)
        {
            out.warn(&error_chain(&e));
        }
    }
}

/// A dry run's plan for one rule, for a person.
fn plan_text(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rule {}: would create {}, close {}, reopen {}, update {} ({} unchanged, {} failed)",
        r.rule,
        r.counts.created,
        r.counts.closed,
        r.counts.reopened,
        r.counts.updated,
        r.counts.skipped,
        r.counts.failed
    );
    for p in &r.planned {
        let _ = writeln!(
            s,
            "  {:<13} {:<12} {}",
            p.action,
            p.jira_key.as_str(),
            p.title
        );
    }
    s
}
