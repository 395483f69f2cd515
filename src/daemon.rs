//! Service mode: one worker per rule, woken by ticks; tokio-cron-scheduler only produces ticks.
//!
//! Ticks are on time: each rule's schedule is the one tokio-cron-scheduler makes of its `cron`
//! (its `Job`, whose stored schedule is read back), and one tokio timer sleeps until the next due
//! tick of any rule ([`Cron`]). The scheduler's own loop is not run: it checks its jobs every
//! 500 ms, so a due tick fired up to half a second late, and it woke the process twice a second
//! whatever the schedules.
//!
//! A tick is `try_send` into the rule's one-slot channel: if a run is already queued the tick is
//! dropped (logged at debug), so runs of one rule never overlap and never pile up. A run that
//! fails (Jira or GitLab unreachable) puts the rule into capped, jittered backoff; it never stops
//! the service. On shutdown every worker stops between actions, commits, and the service waits
//! at most the grace period.
//!
//! After each run the service reports it (`Reporting`): to the metrics (and their textfile,
//! if configured) and on systemd's `STATUS=` line. Each run is tracked by [`Liveness`], so the
//! watchdog ([`spawn_watchdog`]) pings only while every run in flight makes progress.
//!
//! At most [`MAX_RUNNING_RULES`] rules run at once (the service is given `[sync]
//! rule_concurrency` with [`Service::with_max_running`]); a rule ticked while that many run waits for
//! one of them to finish (its tick stays queued). Every rule on the same schedule otherwise starts
//! in the same instant: at 100 rules that was 100 run futures (~25 KB each) and 100 connections
//! to Jira (~30 KB each) alive together, 5 to 6 MiB of heap that glibc keeps.
//!
//! With `[webhook]`, webhooks wake rules too ([`Service::with_wakes`]): the receiver
//! (`webhook`) records which rules a webhook concerns and the issue it names; a waker task
//! ([`Service::spawn_waker`]) ticks those rules [`webhook::DEBOUNCE`] after the first webhook of
//! a burst, through the same one-slot channels, so a run in flight is followed by one more run,
//! never two at once. Each run takes the issues waiting for its rule and its search reads them
//! consistently (`reconcileIssues`); the time from a webhook to the write of its issue is
//! measured. The webhook counts are written to the store's meta in batches
//! ([`Service::spawn_webhook_counts`]) for `status`.
//!
//! Not here: what a run does (the engine), signals (the CLI), the systemd protocol (`notify`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tokio_cron_scheduler::Job;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::{RunMode, RunOutcome};
use crate::engine::ports::{GitLabSink, JiraSource, SyncStore};
use crate::engine::{EngineError, RunReport, SyncEngine, error_chain};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::notify;
use crate::webhook::{self, Wakes, WebhookCounts, WebhookTotals};

/// After the grace period a run abandons its action in flight and records its end; this much
/// longer is left for that before the service gives up on a worker.
pub const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// How often, at most, the webhook counts are written to the store while webhooks come: one
/// small write per interval however many arrive (a flood of forged ones included), none while
/// none do.
pub const WEBHOOK_COUNTS_EVERY: Duration = Duration::from_secs(5);

/// How many rules run at once, at most. Enough that rules do not wait on each other in a normal
/// service (an idle run is one Jira search; the rules share each server's rate limits, so more
/// runs at once would not go faster where a limit binds), and it bounds the memory and the
/// connections to Jira and GitLab of a service with many rules: with it the idle service at 100
/// rules on a 1 s schedule holds 6.0 MiB of anonymous memory instead of 11.6, and 20 sockets
/// instead of 104 (idle RSS 30.1 → 18.1 MiB with the release profile's LTO; README, Performance).
pub const MAX_RUNNING_RULES: usize = 16;

/// How a rule backs off after failed runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            max: Duration::from_secs(30 * 60),
        }
    }
}

impl Backoff {
    /// The pause after `failures` consecutive failed runs (≥ 1): doubling from `base`, capped at
    /// `max`, with jitter in `[½, 1]` of that (`unit` in `[0, 1)`).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        crate::http::jittered_backoff(self.base, self.max, failures, unit)
    }
}

/// The end of one run, as the service reports it (to tests and the demo).
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// Boxed: a report is large beside a failure, and events are cloned to every subscriber.
    Finished(Box<RunReport>),
    Failed {
        rule: String,
        error: String,
    },
}

/// The service: rules, their workers and tick channels.
pub struct Service<J, G, S> {
    engine: Arc<SyncEngine<J, G, S>>,
    rules: Vec<RuleConfig>,
    ticks: Vec<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    events: broadcast::Sender<RunEvent>,
    backoff: Backoff,
    liveness: Arc<Liveness>,
    reporting: Arc<Reporting>,
    /// One permit per run in progress ([`MAX_RUNNING_RULES`]).
    running: Arc<Semaphore>,
    /// What webhooks woke, with `[webhook]`.
    wakes: Option<Arc<Wakes>>,
}

/// Sends ticks to one rule's worker.
#[derive(Clone, Debug)]
pub struct Ticker {
    rule: String,
    tx: mpsc::Sender<()>,
}

impl Ticker {
    /// Asks for a run; returns false if one is already queued (the tick is dropped).
    pub fn tick(&self) -> bool {
        match self.tx.try_send(()) {
            Ok(()) => true,
            Err(_) => {
                debug!(rule = %self.rule, "tick dropped: a run of this rule is already queued");
                false
            }
        }
    }
}

impl<J, G, S> Service<J, G, S>
where
    J: JiraSource + 'static,
    G: GitLabSink + 'static,
    S: SyncStore + 'static,
{
    pub fn new(engine: Arc<SyncEngine<J, G, S>>, rules: Vec<RuleConfig>, backoff: Backoff) -> Self {
        let ticks = rules.iter().map(|_| mpsc::channel(1)).collect();
        let (events, _) = broadcast::channel(256);
        let reporting = Arc::new(Reporting::new(&rules, None, None));
        Self {
            engine,
            rules,
            ticks,
            events,
            backoff,
            liveness: Arc::new(Liveness::new()),
            reporting,
            running: Arc::new(Semaphore::new(MAX_RUNNING_RULES)),
            wakes: None,
        }
    }

    /// Runs of each rule read the issues webhooks named for it (`wakes`, fed by the receiver)
    /// consistently; [`Service::spawn_waker`] ticks the rules they woke.
    #[must_use]
    pub fn with_wakes(mut self, wakes: Arc<Wakes>) -> Self {
        self.wakes = Some(wakes);
        self
    }

    /// Ticks the rules webhooks woke, [`webhook::DEBOUNCE`] after the first webhook of each
    /// burst, until `cancel` fires. Nothing without [`Service::with_wakes`].
    pub fn spawn_waker(&self, cancel: CancellationToken) {
        let Some(wakes) = self.wakes.clone() else {
            return;
        };
        let tickers: Vec<Ticker> = (0..self.rules.len())
            .filter_map(|i| self.ticker(i))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = wakes.notified() => {}
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(webhook::DEBOUNCE) => {}
                }
                for i in wakes.woken() {
                    if let Some(t) = tickers.get(i) {
                        debug!(rule = %t.rule, "woken by a webhook");
                        t.tick();
                    }
                }
            }
        });
    }

    /// Keeps `counts` in the store for `status`: starts them from what the store holds, then
    /// writes them at most every [`WEBHOOK_COUNTS_EVERY`] while webhooks come, and once more
    /// when `cancel` fires (await the handle for that last write).
    pub fn spawn_webhook_counts(
        &self,
        counts: Arc<WebhookCounts>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let engine = Arc::clone(&self.engine);
        tokio::spawn(async move {
            let store = engine.store();
            match store.meta(webhook::COUNTS_META_KEY).await {
                Ok(Some(v)) => match serde_json::from_str::<WebhookTotals>(&v) {
                    Ok(base) => counts.set_base(base),
                    Err(e) => {
                        debug!(cause = %e, "the stored webhook counts are unreadable; counting from 0")
                    }
                },
                Ok(None) => {}
                Err(e) => debug!(cause = %error_chain(&e), "cannot read the stored webhook counts"),
            }
            let write = || async {
                if !counts.dirty() {
                    return;
                }
                let text = serde_json::to_string(&counts.totals()).unwrap_or_default();
                if let Err(e) = store.set_meta(webhook::COUNTS_META_KEY, &text).await {
                    counts.unwritten();
                    debug!(cause = %error_chain(&e), "cannot write the webhook counts");
                }
            };
            let mut every = tokio::time::interval(WEBHOOK_COUNTS_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = every.tick() => write().await,
                }
            }
            write().await;
        })
    }

    /// At most `n` (≥ 1) rules run at once instead of [`MAX_RUNNING_RULES`].
    #[must_use]
    pub fn with_max_running(mut self, n: usize) -> Self {
        self.running = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// Tracks every run with `liveness` (which the HTTP clients should observe too, so it sees
    /// the runs' progress).
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Records every run in `metrics`, and writes them to `textfile` after each run.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, textfile: Option<PathBuf>) -> Self {
        self.reporting = Arc::new(Reporting::new(&self.rules, Some(metrics), textfile));
        self
    }

    /// The ticker of the rule at `index` (in config order).
    pub fn ticker(&self, index: usize) -> Option<Ticker> {
        Some(Ticker {
            rule: self.rules.get(index)?.name.clone(),
            tx: self.ticks.get(index)?.0.clone(),
        })
    }

    /// Every run's end, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// Starts ticking each rule on its schedule ([`Cron`]), plus one tick now so a (re)started
    /// service syncs at once.
    ///
    /// # Errors
    /// A schedule is invalid (config validation makes that rare).
    pub async fn start_cron(&self) -> Result<Cron, tokio_cron_scheduler::JobSchedulerError> {
        let mut dues = Vec::new();
        let now = Utc::now();
        for (i, rule) in self.rules.iter().enumerate() {
            let ticker = self.ticker(i).expect("index within the rules");
            ticker.tick();
            let schedule = schedule_of(&rule.cron)?;
            if let Some(next) = next_tick(&schedule, now) {
                dues.push(Due {
                    ticker,
                    schedule,
                    next,
                });
            }
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(tick_on_schedule(dues, stop.clone(), Utc::now));
        Ok(Cron {
            stop,
            task: Some(task),
        })
    }

    /// Runs the workers until `cancel` fires, then waits for them to stop: each run stops
    /// between actions, or abandons its action in flight at the end of the engine's grace
    /// period and records its end. Returns true if and only if every worker stopped within
    /// `grace` plus [`RECORD_MARGIN`].
    pub async fn run(mut self, cancel: CancellationToken, grace: Duration) -> bool {
        let tracker = TaskTracker::new();
        let mut workers = Vec::new();
        for (index, (rule, (_, rx))) in self
            .rules
            .iter()
            .cloned()
            .zip(self.ticks.drain(..))
            .enumerate()
        {
            let worker = Worker {
                index,
                wakes: self.wakes.clone(),
                engine: Arc::clone(&self.engine),
                rule,
                events: self.events.clone(),
                cancel: cancel.child_token(),
                backoff: self.backoff.clone(),
                liveness: Arc::clone(&self.liveness),
                reporting: Arc::clone(&self.reporting),
                running: Arc::clone(&self.running),
            };
            let name = worker.rule.name.clone();
            let span = info_span!("worker", rule = %name);
            let handle = tracker.spawn(worker.run(rx).instrument(span));
            workers.push((name, handle));
        }
        tracker.close();
        cancel.cancelled().await;
        info!(
            grace_secs = grace.as_secs(),
            "shutting down: finishing the actions in flight"
        );
        if tokio::time::timeout(grace + RECORD_MARGIN, tracker.wait())
            .await
            .is_ok()
        {
            info!("every rule stopped cleanly");
            return true;
        }
        for (name, handle) in &workers {
            if !handle.is_finished() {
                error!(rule = %name, "still running at the end of the grace period");
            }
        }
        false
    }
}

/// The ticker of every rule, on time; stops with [`Cron::shutdown`] (or when dropped).
pub struct Cron {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cron {
    /// Stops ticking and waits for the ticker to end.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            error!(error = %e, "the scheduler ended abnormally");
        }
    }
}

impl Drop for Cron {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A rule's schedule and its next due tick.
struct Due {
    ticker: Ticker,
    schedule: croner::Cron,
    next: DateTime<Utc>,
}

/// How often, at least, the ticker reads the wall clock again while it waits: a clock stepped
/// (NTP, a suspended VM) moves the ticks with it within this.
const CLOCK_CHECK: Duration = Duration::from_secs(60);

/// `cron` as tokio-cron-scheduler schedules it: the schedule its `Job` stores.
fn schedule_of(cron: &str) -> Result<croner::Cron, tokio_cron_scheduler::JobSchedulerError> {
    let mut job = Job::new(cron, |_, _| {})?;
    job.job_data()?
        .schedule()
        .ok_or(tokio_cron_scheduler::JobSchedulerError::ParseSchedule)
}

/// The first time after `after` that `schedule` names, on a whole second. croner carries the
/// fraction of a second it is asked from into its answer, so `after` is cut to its second
/// first: ticks never drift by the time it takes to wake.
pub fn next_tick(schedule: &croner::Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let whole = after.with_nanosecond(0)?;
    schedule.find_next_occurrence(&whole, false).ok()
}

/// The instant on tokio's clock at which the wall clock reads `at`, `wall_now` and `mono_now`
/// being the same moment; a time already past is due now.
pub fn deadline(at: DateTime<Utc>, wall_now: DateTime<Utc>, mono_now: Instant) -> Instant {
    mono_now + (at - wall_now).to_std().unwrap_or(Duration::ZERO)
}

/// Sleeps until the earliest due tick, ticks every rule then due, and so on until `stop`.
/// `wall` is the wall clock (injected so that a test can drive it with tokio's paused time).
async fn tick_on_schedule(
    mut dues: Vec<Due>,
    stop: CancellationToken,
    wall: impl Fn() -> DateTime<Utc>,
) {
    loop {
        let Some(earliest) = dues.iter().map(|d| d.next).min() else {
            return;
        };
        let now = Instant::now();
        let wake = deadline(earliest, wall(), now).min(now + CLOCK_CHECK);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = wall();
        dues.retain_mut(|d| {
            if d.next > now {
                return true;
            }
            d.ticker.tick();
            // Ticks missed while the process could not run are not made up: one run covers them.
            match next_tick(&d.schedule, now.max(d.next)) {
                Some(next) => {
                    d.next = next;
                    true
                }
                None => false,
            }
        });
    }
}

/// One rule's worker: what it needs to run the rule and report its runs.
struct Worker<J, G, S> {
    /// The rule's place in the config (its slot in `wakes`).
    index: usize,
    wakes: Option<Arc<Wakes>>,
    engine: Arc<SyncEngine<J, G, S>>,
    rule: RuleConfig,
    events: broadcast::Sender<RunEvent>,
    cancel: CancellationToken,
    backoff: Backoff,
    liveness: Arc<Liveness>,
    reporting: Arc<Reporting>,
    running: Arc<Semaphore>,
}

impl<J, G, S> Worker<J, G, S>
where
    J: JiraSource,
    G: GitLabSink,
    S: SyncStore,
{
    async fn run(self, mut ticks: mpsc::Receiver<()>) {
        let (rule, cancel) = (&self.rule, &self.cancel);
        let mut failures: u32 = 0;
        let mut not_before: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                tick = ticks.recv() => {
                    if tick.is_none() {
                        break;
                    }
                }
            }
            if let Some(t) = not_before
                && Instant::now() < t
            {
                debug!(
                    wait_secs = (t - Instant::now()).as_secs(),
                    "tick skipped: backing off after a failed run"
                );
                continue;
            }
            // The semaphore is never closed; an error would only mean the service is going away.
            let permit = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                permit = Arc::clone(&self.running).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let started = Instant::now();
            // The issues webhooks named since the last run began: this run reads them.
            let named = self
                .wakes
                .as_ref()
                .map(|w| w.take(self.index))
                .unwrap_or_default();
            let ids: Vec<_> = named.iter().map(|(id, _)| id.clone()).collect();
            // Boxed: the run's future (~25 KB) exists only while the rule runs, not in every idle
            // worker's task for the life of the service.
            let result = self
                .liveness
                .track(
                    &rule.name,
                    Box::pin(self.engine.run_rule_reconciling(
                        rule,
                        RunMode::Service,
                        cancel,
                        &ids,
                    )),
                )
                .await;
            self.webhook_lags(&result, named);
            // An idle cycle reads no failures from the store; counting them must not either.
            let open_failures = if self.engine.knows_no_failures(&rule.name) {
                Some(0)
            } else {
                match self.engine.store().failures(&rule.name).await {
                    Ok(f) => Some(f.len()),
                    Err(e) => {
                        debug!(cause = %error_chain(&e), "cannot count the rule's failing issues");
                        None
                    }
                }
            };
            drop(permit);
            self.reporting
                .finished(&rule.name, &result, started.elapsed(), open_failures);
            match result {
                Ok(report) => {
                    failures = 0;
                    not_before = None;
                    let _ = self.events.send(RunEvent::Finished(Box::new(report)));
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.backoff.delay(failures, rand::random());
                    let message = error_chain(&e);
                    warn!(error = %message, failures, retry_in_secs = delay.as_secs(), "run failed; backing off");
                    not_before = Some(Instant::now() + delay);
                    let _ = self.events.send(RunEvent::Failed {
                        rule: rule.name.clone(),
                        error: message,
                    });
                }
            }
            if cancel.is_cancelled() {
                break;
            }
        }
    }
}

impl<J, G, S> Worker<J, G, S> {
    /// Measures, for each issue a webhook `named` that the run wrote, the time from the webhook
    /// to the write; a failed run gives the issues back for the next one.
    fn webhook_lags(
        &self,
        result: &Result<RunReport, EngineError>,
        named: Vec<(crate::domain::JiraId, std::time::Instant)>,
    ) {
        if named.is_empty() {
            return;
        }
        let report = match result {
            Ok(r) => r,
            Err(_) => {
                if let Some(w) = &self.wakes {
                    w.put_back(self.index, named);
                }
                return;
            }
        };
        let named: HashMap<String, std::time::Instant> = named
            .into_iter()
            .map(|(id, at)| (id.as_str().to_owned(), at))
            .collect();
        for (issue, written) in &report.written {
            if let Some(received) = named.get(issue) {
                let lag = written.saturating_duration_since(*received);
                debug!(
                    jira_id = %issue,
                    lag_ms = lag.as_millis() as u64,
                    "written after its webhook"
                );
                if let Some(m) = &self.reporting.metrics {
                    m.webhook_lag(&self.rule.name, lag);
                }
            }
        }
    }
}

/// What the service tells the outside after each run: the metrics (and their textfile), and
/// systemd's `STATUS=` line.
#[derive(Debug)]
struct Reporting {
    metrics: Option<Arc<Metrics>>,
    textfile: Option<PathBuf>,
    /// Whether the last textfile write failed (warned once, until one succeeds again).
    textfile_failing: AtomicBool,
    board: Mutex<StatusBoard>,
}

impl Reporting {
    fn new(rules: &[RuleConfig], metrics: Option<Arc<Metrics>>, textfile: Option<PathBuf>) -> Self {
        Self {
            metrics,
            textfile,
            textfile_failing: AtomicBool::new(false),
            board: Mutex::new(StatusBoard::new(rules.iter().map(|r| r.name.clone()))),
        }
    }

    /// A run of `rule` ended after `elapsed`, leaving `open_failures` issues to retry (if
    /// known).
    fn finished(
        &self,
        rule: &str,
        result: &Result<RunReport, EngineError>,
        elapsed: Duration,
        open_failures: Option<usize>,
    ) {
        if let Some(m) = &self.metrics {
            m.record(rule, result, elapsed);
            if let Some(n) = open_failures {
                m.set_open_failures(rule, n);
            }
            if let Some(path) = &self.textfile {
                match m.write_textfile(path) {
                    Ok(()) => {
                        if self.textfile_failing.swap(false, Ordering::Relaxed) {
                            info!(path = %path.display(), "the metrics file is written again");
                        }
                    }
                    Err(e) => {
                        if !self.textfile_failing.swap(true, Ordering::Relaxed) {
                            warn!(cause = %error_chain(&e), "metrics are not written to their file (told once, until it works again)");
                        }
                    }
                }
            }
        }
        let line = {
            let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
            board.record(rule, result.as_ref().ok(), open_failures, Utc::now());
            board.line()
        };
        notify::status(&line);
    }
}

/// How the last run of a rule ended, for the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LastRun {
    /// It went through (outcome ok or partial), with what it wrote.
    Done(String),
    Cancelled,
    Failed,
}

/// What systemd's status line says: per rule how its last run ended, the latest run, and the
/// issues failing in all.
#[derive(Debug)]
struct StatusBoard {
    rules: Vec<String>,
    last: HashMap<String, LastRun>,
    failing: HashMap<String, usize>,
    latest: Option<(String, LastRun, DateTime<Utc>)>,
}

impl StatusBoard {
    /// A board for `rules`, none of which has run.
    fn new(rules: impl IntoIterator<Item = String>) -> Self {
        Self {
            rules: rules.into_iter().collect(),
            last: HashMap::new(),
            failing: HashMap::new(),
            latest: None,
        }
    }

    /// A run of `rule` ended at `at` with `report` (`None`: it failed), leaving
    /// `open_failures` issues to retry (if known).
    fn record(
        &mut self,
        rule: &str,
        report: Option<&RunReport>,
        open_failures: Option<usize>,
        at: DateTime<Utc>,
    ) {
        let last = match report {
            Some(r) if r.outcome == RunOutcome::Cancelled => LastRun::Cancelled,
            Some(r) => {
                let c = &r.counts;
                let did: Vec<String> = [
                    (c.created, "created"),
                    (c.closed, "closed"),
                    (c.reopened, "reopened"),
                    (c.updated, "updated"),
                    (c.failed, "failed"),
                ]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
                LastRun::Done(if did.is_empty() {
                    "nothing new".to_owned()
                } else {
                    did.join(" ")
                })
            }
            None => LastRun::Failed,
        };
        self.last.insert(rule.to_owned(), last.clone());
        if let Some(n) = open_failures {
            self.failing.insert(rule.to_owned(), n);
        }
        self.latest = Some((rule.to_owned(), last, at));
    }

    /// The line: e.g. `3 rules ok; last: incidents 2 created 1 closed at 12:00:03Z; 0 failing`.
    fn line(&self) -> String {
        let ok = self
            .rules
            .iter()
            .filter(|r| matches!(self.last.get(*r), Some(LastRun::Done(_))))
            .count();
        let failed: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| matches!(self.last.get(*r), Some(LastRun::Failed)))
            .map(String::as_str)
            .collect();
        let waiting = self
            .rules
            .iter()
            .filter(|r| !self.last.contains_key(*r))
            .count();
        let mut line = format!("{ok} rule{} ok", if ok == 1 { "" } else { "s" });
        if !failed.is_empty() {
            line.push_str(&format!(", run failed: {}", failed.join(", ")));
        }
        if waiting > 0 {
            line.push_str(&format!(", {waiting} not run yet"));
        }
        if let Some((rule, last, at)) = &self.latest {
            let what = match last {
                LastRun::Done(did) => did.as_str(),
                LastRun::Cancelled => "cancelled",
                LastRun::Failed => "failed",
            };
            line.push_str(&format!(
                "; last: {rule} {what} at {}",
                at.format("%H:%M:%SZ")
            ));
        }
        let failing: usize = self.failing.values().sum();
        line.push_str(&format!("; {failing} failing"));
        line
    }
}

/// Pings systemd's watchdog every half `interval` (its `WatchdogSec=`) while no run is stalled:
/// a run in flight that has shown no progress for longer than `interval` stops the pings, so
/// systemd restarts the service, and says so on the status line and in the log. The pings
/// resume if the run moves again before then.
pub fn spawn_watchdog(liveness: Arc<Liveness>, interval: Duration, cancel: CancellationToken) {
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        let mut withheld: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let stalled = liveness.stalled(interval);
            if stalled.is_empty() {
                if !withheld.is_empty() {
                    info!(rules = %withheld.join(", "), "the stalled run moved again: watchdog pings resume");
                    withheld.clear();
                }
                notify::watchdog_ping();
                continue;
            }
            let names: Vec<String> = stalled.iter().map(|s| s.rule.clone()).collect();
            if names != withheld {
                for s in stalled.iter().filter(|s| !withheld.contains(&s.rule)) {
                    error!(
                        rule = %s.rule,
                        quiet_secs = s.quiet.as_secs(),
                        watchdog_secs = interval.as_secs(),
                        "the rule's run has made no progress for longer than WatchdogSec: \
                         watchdog pings stop, so systemd restarts the service"
                    );
                }
                let quiet = stalled.iter().map(|s| s.quiet).max().unwrap_or_default();
                notify::status(&format!(
                    "stalled: {} (no progress for {} s); watchdog pings withheld",
                    names.join(", "),
                    quiet.as_secs()
                ));
                withheld = names;
            }
            debug!(rules = %withheld.join(", "), "watchdog ping withheld: a run is stalled");
        }
    });
}

/// Why `interval` (`WatchdogSec=`) is too short for `rules`' requests, if it is: a request may
/// take `request_bound` (its timeout plus the longest backoff before it) and, all that time,
/// show no progress.
pub fn watchdog_too_short(interval: Duration, request_bound: Duration) -> Option<String> {
    (interval <= request_bound).then(|| {
        format!(
            "WatchdogSec ({} s) is not longer than one request may take (timeout_secs plus \
             retry_max_delay_secs: {} s): a slow answer would be taken for a stalled rule and \
             the service restarted; raise WatchdogSec",
            interval.as_secs(),
            request_bound.as_secs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    /// A due tick's deadline is the wall-clock time it names, to the nanosecond, on tokio's
    /// clock; and the tick after one is on a whole second, however late the wake-up was.
    #[test]
    fn ticks_are_due_on_the_second() {
        let schedule = schedule_of("*/5 * * * * *").expect("a schedule");
        let now = utc("2026-03-01T12:00:03.250Z");
        let next = next_tick(&schedule, now).expect("a next tick");
        assert_eq!(next, utc("2026-03-01T12:00:05Z"));
        let mono = Instant::now();
        assert_eq!(
            deadline(next, now, mono),
            mono + Duration::from_millis(1750)
        );
        assert_eq!(
            next_tick(&schedule, utc("2026-03-01T12:00:05.004Z")),
            Some(utc("2026-03-01T12:00:10Z")),
            "a wake-up 4 ms late does not carry over"
        );
        assert_eq!(
            deadline(next, next + chrono::Duration::seconds(1), mono),
            mono
        );
    }

    /// The ticker wakes exactly when a tick is due (tokio's paused clock, the wall clock driven
    /// by it): not on a polling grid.
    #[tokio::test(start_paused = true)]
    async fn the_ticker_ticks_on_time() {
        let (tx, mut rx) = mpsc::channel(1);
        let ticker = Ticker {
            rule: "r".into(),
            tx,
        };
        let start = Instant::now();
        let base = utc("2026-03-01T12:00:03.250Z");
        let wall = move || base + chrono::Duration::from_std(start.elapsed()).expect("small");
        let schedule = schedule_of("*/5 * * * * *").expect("a schedule");
        let next = next_tick(&schedule, base).expect("a next tick");
        let stop = CancellationToken::new();
        let task = tokio::spawn(tick_on_schedule(
            vec![Due {
                ticker,
                schedule,
                next,
            }],
            stop.clone(),
            wall,
        ));
        let mut at = Vec::new();
        for _ in 0..3 {
            rx.recv().await.expect("a tick");
            at.push(start.elapsed());
        }
        stop.cancel();
        task.await.expect("the ticker ends");
        assert_eq!(
            at,
            [1750, 6750, 11750].map(Duration::from_millis),
            "at 12:00:05, :10 and :15 exactly"
        );
    }

    /// Failed runs back off exponentially from the base, capped, with jitter within [½, 1].
    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(30),
            max: Duration::from_secs(600),
        };
        assert_eq!(b.delay(0, 0.3), Duration::ZERO);
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(60));
        assert_eq!(
            b.delay(2, 0.0),
            Duration::from_secs(30),
            "jitter keeps half"
        );
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(600), "capped");
        assert_eq!(b.delay(200, 1.0), Duration::from_secs(600), "no overflow");
    }

    fn report(rule: &str, outcome: RunOutcome, created: u64, closed: u64) -> RunReport {
        RunReport {
            rule: rule.into(),
            mode: RunMode::Service,
            run_id: Some(1),
            outcome,
            counts: crate::domain::RunCounts {
                created,
                closed,
                ..Default::default()
            },
            failures: Vec::new(),
            planned: Vec::new(),
            jira_requests: 1,
            timestamps_ignored: false,
            incidents_filed_as_issues: false,
            reconcile: None,
            links: Default::default(),
            elapsed_ms: 10,
            lags: Vec::new(),
            written: Box::default(),
        }
    }

    /// The status line says how many rules' last runs went through, what the latest did and
    /// when, and how many issues fail in all.
    #[test]
    fn the_status_line_sums_up_the_last_runs() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut board = StatusBoard::new(["incidents", "issues", "alerts"].map(String::from));
        board.record(
            "issues",
            Some(&report("issues", RunOutcome::Ok, 0, 0)),
            Some(0),
            at("2026-12-01T11:58:00Z"),
        );
        assert_eq!(
            board.line(),
            "1 rule ok, 2 not run yet; last: issues nothing new at 11:58:00Z; 0 failing"
        );
        board.record(
            "alerts",
            Some(&report("alerts", RunOutcome::Partial, 1, 0)),
            Some(2),
            at("2026-12-01T11:59:00Z"),
        );
        board.record(
            "incidents",
            Some(&report("incidents", RunOutcome::Ok, 2, 1)),
            Some(1),
            at("2026-12-01T12:00:03Z"),
        );
        assert_eq!(
            board.line(),
            "3 rules ok; last: incidents 2 created 1 closed at 12:00:03Z; 3 failing"
        );
        board.record("alerts", None, None, at("2026-12-01T12:01:00Z"));
        assert_eq!(
            board.line(),
            "2 rules ok, run failed: alerts; last: alerts failed at 12:01:00Z; 3 failing",
            "a failed run keeps the rule's last known failing count"
        );
    }
}
