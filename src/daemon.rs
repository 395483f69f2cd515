//! Service mode: one worker per rule, woken by ticks; tokio-cron-scheduler only produces ticks.
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

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};
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

    /// Starts a cron scheduler that ticks each rule on its schedule, plus one tick now so a
    /// (re)started service syncs at once.
    ///
    /// # Errors
    /// The scheduler cannot start or a schedule is invalid (config validation makes that rare).
    pub async fn start_cron(
        &self,
    ) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        for (i, rule) in self.rules.iter().enumerate() {
            let ticker = self.ticker(i).expect("index within the rules");
            ticker.tick();
            let job = Job::new(rule.cron.as_str(), move |_, _| {
                ticker.tick();
            })?;
            scheduler.add(job).await?;
        }
        scheduler.start().await?;
        Ok(scheduler)
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
