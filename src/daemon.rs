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
//! Not here: what a run does (the engine), signals (the CLI), systemd notification (`notify`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_cron_scheduler::Job;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::RunMode;
use crate::engine::ports::{GitLabSink, JiraSource, SyncStore};
use crate::engine::{RunReport, SyncEngine, error_chain};

/// After the grace period a run abandons its action in flight and records its end; this much
/// longer is left for that before the service gives up on a worker.
pub const RECORD_MARGIN: Duration = Duration::from_secs(5);

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
    Finished(RunReport),
    Failed { rule: String, error: String },
}

/// The service: rules, their workers and tick channels.
pub struct Service<J, G, S> {
    engine: Arc<SyncEngine<J, G, S>>,
    rules: Vec<RuleConfig>,
    ticks: Vec<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    events: broadcast::Sender<RunEvent>,
    backoff: Backoff,
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
        Self {
            engine,
            rules,
            ticks,
            events,
            backoff,
        }
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
        for (rule, (_, rx)) in self.rules.iter().cloned().zip(self.ticks.drain(..)) {
            let engine = Arc::clone(&self.engine);
            let events = self.events.clone();
            let token = cancel.child_token();
            let backoff = self.backoff.clone();
            let name = rule.name.clone();
            let span = info_span!("worker", rule = %rule.name);
            let handle =
                tracker.spawn(worker(engine, rule, rx, events, token, backoff).instrument(span));
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

async fn worker<J, G, S>(
    engine: Arc<SyncEngine<J, G, S>>,
    rule: RuleConfig,
    mut ticks: mpsc::Receiver<()>,
    events: broadcast::Sender<RunEvent>,
    cancel: CancellationToken,
    backoff: Backoff,
) where
    J: JiraSource,
    G: GitLabSink,
    S: SyncStore,
{
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
        match engine.run_rule(&rule, RunMode::Service, &cancel).await {
            Ok(report) => {
                failures = 0;
                not_before = None;
                let _ = events.send(RunEvent::Finished(report));
            }
            Err(e) => {
                failures += 1;
                let delay = backoff.delay(failures, rand::random());
                let message = error_chain(&e);
                warn!(error = %message, failures, retry_in_secs = delay.as_secs(), "run failed; backing off");
                not_before = Some(Instant::now() + delay);
                let _ = events.send(RunEvent::Failed {
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
}
