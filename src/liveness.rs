//! Whether the service's rules are moving, for systemd's watchdog: it should be pinged while
//! every run in flight makes progress, not merely while the process is alive.
//!
//! A run's progress is what its HTTP clients report ([`RequestObserver`]): every request
//! attempt that ends (answered, refused or timed out) and every pause taken on purpose
//! (`Retry-After`, a backoff, pacing; the run counts as moving until the pause is over). A run
//! with none of these for longer than a bound is *stalled*: a request that hangs, or anything
//! else that keeps the run from its next step. A rule with no run in flight is never stalled:
//! between runs it waits for its schedule.
//!
//! Which run an attempt belongs to is known from a task-local set by [`Liveness::track`] around
//! the run. An attempt made outside any tracked run (a task the engine spawned, say) counts for
//! every run in flight, so a rule is never taken for stalled because its requests could not be
//! told apart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::http::RequestObserver;

tokio::task_local! {
    /// The rule whose run the current task is doing.
    static RULE: Arc<str>;
}

/// The last sign of progress of each run in flight.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Rule → when its run last showed progress (or the end of a pause it is taking).
    runs: Mutex<HashMap<Arc<str>, Instant>>,
}

/// A run that has shown no progress for longer than the bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub rule: String,
    /// How long since its last sign of progress.
    pub quiet: Duration,
}

impl Liveness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `run` as the run of `rule`: it is in flight (and its progress watched) until it
    /// ends, and the HTTP attempts made within it are its progress.
    pub async fn track<F: Future>(&self, rule: &str, run: F) -> F::Output {
        let name: Arc<str> = Arc::from(rule);
        self.lock().insert(Arc::clone(&name), Instant::now());
        let out = RULE.scope(Arc::clone(&name), run).await;
        self.lock().remove(&name);
        out
    }

    /// The runs in flight with no progress for longer than `bound`, by rule name.
    pub fn stalled(&self, bound: Duration) -> Vec<Stall> {
        let now = Instant::now();
        let mut out: Vec<Stall> = self
            .lock()
            .iter()
            .filter_map(|(rule, last)| {
                let quiet = now.saturating_duration_since(*last);
                (quiet > bound).then(|| Stall {
                    rule: rule.to_string(),
                    quiet,
                })
            })
            .collect();
        out.sort_by(|a, b| a.rule.cmp(&b.rule));
        out
    }

    /// The current task's run (or every run, if the task is none's) moved at `at`.
    fn moved(&self, at: Instant) {
        let rule = RULE.try_with(Arc::clone).ok();
        let mut runs = self.lock();
        match rule {
            Some(rule) => {
                if let Some(last) = runs.get_mut(&rule) {
                    *last = (*last).max(at);
                }
            }
            None => {
                for last in runs.values_mut() {
                    *last = (*last).max(at);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Instant>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RequestObserver for Liveness {
    fn attempt(&self, _: &'static str, _: Option<u16>) {
        self.moved(Instant::now());
    }

    fn waiting(&self, _: &'static str, wait: Duration) {
        self.moved(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    /// A run is stalled once it has shown no progress for longer than the bound; its own
    /// attempts keep it moving, a pause counts until it ends, and a finished run is never
    /// stalled.
    #[tokio::test(start_paused = true)]
    async fn a_run_without_progress_stalls() {
        let live = Arc::new(Liveness::new());
        let (step, mut steps) = tokio::sync::mpsc::channel::<()>(1);
        let (done, mut ack) = tokio::sync::mpsc::channel::<()>(1);
        let l = Arc::clone(&live);
        let run = tokio::spawn(async move {
            l.track("ops", async {
                // Each message: one attempt of this run, then a pause of 30 s.
                while steps.recv().await.is_some() {
                    l.attempt("Jira", Some(200));
                    l.waiting("Jira", Duration::from_secs(30));
                    done.send(()).await.unwrap();
                }
            })
            .await;
        });
        tokio::task::yield_now().await;
        assert!(live.stalled(BOUND).is_empty(), "just started");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            live.stalled(BOUND),
            vec![Stall {
                rule: "ops".into(),
                quiet: Duration::from_secs(11)
            }]
        );
        step.send(()).await.unwrap();
        ack.recv().await.unwrap();
        tokio::time::advance(Duration::from_secs(35)).await;
        assert!(
            live.stalled(BOUND).is_empty(),
            "a pause of 30 s counts as moving until it is over, then the bound runs"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(live.stalled(BOUND).len(), 1, "41 s after the attempt");
        drop(step);
        run.await.unwrap();
        assert!(live.stalled(BOUND).is_empty(), "no run in flight");
    }

    /// Attempts made within one rule's run do not move another's; attempts of no run move
    /// every run.
    #[tokio::test(start_paused = true)]
    async fn attempts_move_their_own_run() {
        let live = Arc::new(Liveness::new());
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let l = Arc::clone(&live);
        let stuck = tokio::spawn(async move { l.track("stuck", hold).await });
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (tick, mut ticks) = tokio::sync::mpsc::channel::<()>(1);
        let l = Arc::clone(&live);
        let busy = tokio::spawn(async move {
            l.track("busy", async {
                tokio::time::advance(Duration::from_secs(11)).await;
                l.attempt("GitLab", Some(201));
                tick.send(()).await.unwrap();
                let _ = wait.await;
            })
            .await
        });
        ticks.recv().await.unwrap();
        let stalled: Vec<String> = live.stalled(BOUND).into_iter().map(|s| s.rule).collect();
        assert_eq!(stalled, vec!["stuck"], "busy moved, stuck did not");
        live.attempt("GitLab", None);
        assert!(
            live.stalled(BOUND).is_empty(),
            "an attempt of no run counts for every run"
        );
        release.send(()).unwrap();
        go.send(()).unwrap();
        stuck.await.unwrap().unwrap();
        busy.await.unwrap();
    }
}
