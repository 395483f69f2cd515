//! jira-gitlab-sync: replicate Jira incidents and issues into GitLab so that GitLab's DORA
//! metrics and Value Stream Analytics see them, with Jira's own timestamps.
//!
//! The command line (flags, printing, signals, exit codes, the demo's driver) is the binary's
//! (`src/main.rs`, `src/cli/`); nothing here depends on it.
//!
//! # Layout
//! - [`app`]: config → store, Jira and GitLab clients, and the engine over them.
//! - [`check`]: `check`: credentials, JQL, the token's role, production environments.
//! - [`config`]: `config.toml` → validated, typed [`config::Config`]; secrets from env or files.
//! - [`daemon`]: service mode: cron ticks → one worker per rule, backoff, graceful stop.
//! - [`domain`]: snapshots, mappings, actions' vocabulary, and the three interfaces the engine
//!   drives ([`domain::JiraSource`], [`domain::GitLabSink`], [`domain::SyncStore`]).
//! - [`http`]: the shared HTTP client: timeouts, pacing, `Retry-After`, backoff, redaction.
//! - [`jira`]: Jira Cloud and Data Center search, `/myself`, ADF → Markdown.
//! - [`gitlab`]: GitLab issues, incidents and alerts.
//! - [`store`]: the SQLite store: migrations, cursors, mappings, intents, failures, run log.
//! - [`engine`]: the pure planner and the executor that replays a plan exactly once.
//! - [`notify`]: systemd `READY=1` / `STOPPING=1` / watchdog.
//! - [`sandbox`]: in-process fake Jira and GitLab servers, for `demo`, tests and benchmarks
//!   (feature `sandbox`, on by default).
//! - [`status`]: `status`: what the store says about each rule.
//! - [`secret`]: the redacting `Secret` type and where secrets are read from.
//! - [`telemetry`]: logging setup (human on a terminal, JSON under systemd).

pub mod app;
pub mod check;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod gitlab;
pub mod http;
pub mod jira;
pub mod notify;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secret;
pub mod status;
pub mod store;
pub mod telemetry;
