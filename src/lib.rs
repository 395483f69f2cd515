//! jira-gitlab-sync: replicate Jira incidents and issues into GitLab so that GitLab's DORA
//! metrics and Value Stream Analytics see them, with Jira's own timestamps.
//!
//! The command line (flags, printing, signals, exit codes, the demo's driver) is the binary's
//! (`src/main.rs`, `src/cli/`); nothing here depends on it.
//!
//! # Layout
//! - [`domain`]: snapshots, mappings, runs and their names; imports nothing from the crate.
//! - [`config`]: `config.toml` → validated, typed [`config::Config`]; secrets from env or files.
//! - [`engine`]: the pure planner, the page walker, the executor that replays a plan exactly
//!   once, backfill, `--dry-run`; and the three ports it drives ([`engine::ports`]:
//!   `JiraSource`, `GitLabSink`, `SyncStore`, each with an error that classifies itself).
//! - [`jira`], [`gitlab`], [`store`]: the adapters that implement the ports (Jira Cloud and Data
//!   Center search, ADF → Markdown; GitLab issues, incidents and alerts; the SQLite store).
//! - [`http`]: the shared HTTP client: timeouts, pacing, `Retry-After`, backoff, redaction.
//! - [`app`]: config → store, Jira and GitLab clients, and the engine over them.
//! - [`daemon`]: service mode: cron ticks → one worker per rule, backoff, graceful stop; each
//!   run reported to the metrics and systemd's status line; the watchdog.
//! - [`check`]: `check`: credentials, JQL, the token's role, production environments.
//! - [`dora`]: DORA days that count: production environments before backfill, `repair` of the
//!   days GitLab missed, backfill's value-stream marker.
//! - [`liveness`]: whether each run in flight makes progress, for the service's watchdog.
//! - [`metrics`]: Prometheus metrics (`[metrics]`): fed by run reports and the HTTP clients,
//!   served on `GET /metrics` or written to a node_exporter textfile.
//! - [`notify`]: systemd `READY=1` / `STOPPING=1` / watchdog.
//! - [`sandbox`]: in-process fake Jira and GitLab servers, for `demo`, tests and benchmarks
//!   (feature `sandbox`, on by default).
//! - [`status`]: `status`: what the store says about each rule.
//! - [`secret`]: the redacting `Secret` type and where secrets are read from.
//! - [`telemetry`]: logging setup (human on a terminal, JSON under systemd).
//! - [`webhook`]: `[webhook]`: the service's `POST /webhook/jira`, verified and deduplicated,
//!   waking the rules an issue could concern.

pub mod app;
pub mod check;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod dora;
pub mod engine;
pub mod gitlab;
pub mod http;
pub mod jira;
pub mod liveness;
pub mod metrics;
pub mod notify;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secret;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod webhook;
