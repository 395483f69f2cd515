//! `status`: what the store says about each rule — cursor, last run, mapped objects, failing
//! keys with their next attempt, objects a person deleted in GitLab — as a table for people or
//! JSON for scripts. Reads the store without locking it, so it works while the service runs.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::checked_meta_key;
use crate::store::{LinkCounts, LockState, RuleStatus, Store, StoreError, StrayEntry};
use crate::webhook::{COUNTS_META_KEY, WebhookTotals};

/// One failing issue.
#[derive(Clone, Debug, Serialize)]
pub struct FailingKey {
    pub jira_key: String,
    pub attempts: u32,
    pub last_error: String,
    pub last_failed_at: DateTime<Utc>,
    /// When a cycle retries it next (`retry KEY` makes it due now).
    pub next_attempt_at: DateTime<Utc>,
}

/// One rule's state: what the store says of it, whether the config still has it, and its
/// failing keys.
#[derive(Clone, Debug, Serialize)]
pub struct RuleView {
    #[serde(flatten)]
    pub status: RuleStatus,
    /// How its last run stands: its outcome (`ok`, `partial`, `failed`, `cancelled`) once it
    /// ended; `running` while a process holds the store; `interrupted` when none does (its
    /// process died: killed, crashed, a power cut); `never` before its first run.
    pub last_run_state: &'static str,
    /// False for a rule the store knows but the config no longer has.
    pub configured: bool,
    pub failing: Vec<FailingKey>,
    /// The keys whose GitLab object a person deleted (`gone` counts them).
    pub gone_keys: Vec<String>,
    /// Issues followed by id that the rule's search no longer returns: out of scope or deleted.
    pub strays: Vec<StrayEntry>,
    /// When the rule last completed a cycle (its whole search), as recorded: by every run that
    /// wrote something, and while the rule is idle, every
    /// [`IDLE_CHECKPOINT`](crate::engine::IDLE_CHECKPOINT) (idle cycles write nothing).
    pub last_checked: Option<DateTime<Utc>>,
    /// Remote links on Jira issues (`[jira] link_back`): linked, pending (not yet accepted in
    /// their current state), failing (retried after a backoff, or given up: the issue is gone).
    pub remote_links: LinkCounts,
}

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub store: String,
    /// False when no sync has run with this store path yet.
    pub store_exists: bool,
    pub rules: Vec<RuleView>,
    /// What the service's webhook endpoint (`[webhook]`) received since the store began:
    /// `received` counts every request, `rejected` (unsigned, wrongly signed, too large,
    /// malformed, too slow) and `ignored` (a retry already received, an event naming no issue) are among
    /// them. Written by the service every few seconds while webhooks come.
    pub webhooks: WebhookTotals,
}

/// Reads the store at `path` for the configured `rules` (and any other rule it holds).
///
/// # Errors
/// The store exists but cannot be read.
pub async fn collect(path: &Path, rules: &[String]) -> Result<StatusReport, StoreError> {
    let empty = |name: &String| RuleView {
        status: RuleStatus::empty(name),
        last_run_state: "never",
        configured: true,
        failing: Vec::new(),
        gone_keys: Vec::new(),
        strays: Vec::new(),
        last_checked: None,
        remote_links: LinkCounts::default(),
    };
    let store = match Store::open_read_only(path) {
        Ok(s) => s,
        Err(StoreError::Missing { .. }) => {
            return Ok(StatusReport {
                store: path.display().to_string(),
                store_exists: false,
                rules: rules.iter().map(empty).collect(),
                webhooks: WebhookTotals::default(),
            });
        }
        Err(e) => return Err(e),
    };
    // A run without an end is running only while a process holds the store: checked before
    // and after reading, so a process that started in between is not taken for gone.
    let held_before = is_held(path);
    let known = store.rule_status().await?;
    let held = held_before || is_held(path);
    let mut views: Vec<RuleView> = rules.iter().map(empty).collect();
    for s in known {
        let idx = match views.iter().position(|v| v.status.rule == s.rule) {
            Some(i) => i,
            None => {
                views.push(RuleView {
                    configured: false,
                    ..empty(&s.rule)
                });
                views.len() - 1
            }
        };
        let failing = store
            .failure_list(&s.rule)
            .await?
            .into_iter()
            .map(|f| FailingKey {
                jira_key: f.jira_key.to_string(),
                attempts: f.attempts,
                last_error: f.last_error,
                last_failed_at: f.last_failed_at,
                next_attempt_at: f.next_attempt_at,
            })
            .collect();
        let gone_keys = if s.gone > 0 {
            store
                .gone_list(&s.rule)
                .await?
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        };
        let strays = store.strays(&s.rule).await?;
        let remote_links = store.link_counts(&s.rule).await?;
        let last_checked = store
            .get_meta(&checked_meta_key(&s.rule))
            .await?
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc));
        let v = &mut views[idx];
        v.last_checked = last_checked;
        v.last_run_state = match &s.last_run {
            None => "never",
            Some(run) => match run.outcome {
                Some(o) => o.as_str(),
                None if held => "running",
                None => "interrupted",
            },
        };
        v.status = s;
        v.failing = failing;
        v.gone_keys = gone_keys;
        v.strays = strays;
        v.remote_links = remote_links;
    }
    let webhooks = store
        .get_meta(COUNTS_META_KEY)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default();
    Ok(StatusReport {
        store: path.display().to_string(),
        store_exists: true,
        rules: views,
        webhooks,
    })
}

/// Whether a process holds the store's lock (an error reading it counts as held: `status`
/// then says `running`, as it did before it could tell).
fn is_held(path: &Path) -> bool {
    !matches!(
        Store::lock_state(path),
        Ok(LockState::Free | LockState::NoStore)
    )
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// The report as a plain table.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    if !report.store_exists {
        let _ = writeln!(
            out,
            "no sync has run yet: the store {} does not exist",
            report.store
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:<21} {:<21} {:<11} {:>7} {:>6} {:>7} {:>7}",
        "RULE", "CURSOR", "LAST RUN", "OUTCOME", "MAPPED", "OPEN", "CLOSED", "FAILING"
    );
    for view in &report.rules {
        let r = &view.status;
        let last = r
            .last_run
            .as_ref()
            .map_or_else(|| "-".to_owned(), |run| when(Some(run.started_at)));
        let outcome = view.last_run_state;
        let name = if view.configured {
            r.rule.clone()
        } else {
            format!("{} (not in config)", r.rule)
        };
        let _ = writeln!(
            out,
            "{:<20} {:<21} {:<21} {:<11} {:>7} {:>6} {:>7} {:>7}",
            name,
            when(r.cursor),
            last,
            outcome,
            r.mapped,
            r.open,
            r.closed,
            r.failed
        );
        if let Some(t) = view.last_checked {
            let _ = writeln!(out, "    last checked: {}", when(Some(t)));
        }
        if let Some(run) = &r.last_run {
            let c = &run.counts;
            let _ = writeln!(
                out,
                "    last run: {} created, {} closed, {} reopened, {} updated, {} unchanged, {} failed{}",
                c.created,
                c.closed,
                c.reopened,
                c.updated,
                c.skipped,
                c.failed,
                run.error
                    .as_deref()
                    .map(|e| format!("; stopped: {e}"))
                    .unwrap_or_default()
            );
        }
        for f in &view.failing {
            let _ = writeln!(
                out,
                "    failing {} ({} attempts, last {}, next {}): {}",
                f.jira_key,
                f.attempts,
                when(Some(f.last_failed_at)),
                when(Some(f.next_attempt_at)),
                f.last_error
            );
        }
        if !view.gone_keys.is_empty() {
            let _ = writeln!(
                out,
                "    gone from GitLab (deleted there; never written again): {}",
                view.gone_keys.join(", ")
            );
        }
        for s in &view.strays {
            let what = match s.scope {
                crate::domain::IssueScope::Deleted => "deleted in Jira",
                _ => "no longer matches the rule's JQL; followed by id until resolved",
            };
            let _ = writeln!(
                out,
                "    {} {what} (GitLab {}{})",
                s.jira_key,
                s.state,
                s.web_url
                    .as_deref()
                    .map(|u| format!(": {u}"))
                    .unwrap_or_default()
            );
        }
        let links = &view.remote_links;
        if links.linked + links.pending + links.failing > 0 {
            let _ = writeln!(
                out,
                "    remote links on Jira: {} linked, {} pending, {} failing",
                links.linked, links.pending, links.failing
            );
        }
        if r.pending_intents > 0 {
            let _ = writeln!(
                out,
                "    {} create(s) were cut short (the process stopped before GitLab answered); the \
                 next run looks them up before creating again",
                r.pending_intents
            );
        }
    }
    let w = &report.webhooks;
    if w.received > 0 {
        let _ = writeln!(
            out,
            "webhooks: {} received, {} rejected, {} ignored",
            w.received, w.rejected, w.ignored
        );
    }
    out
}
