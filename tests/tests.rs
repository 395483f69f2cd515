//! Integration tests: the real clients over HTTP on loopback against the sandbox's fake Jira and
//! GitLab, a real SQLite file in a temp dir, and the real binary where exit codes or process
//! death matter. One binary, one module per area.

mod support;

/// Backfill: history in windows, resumable, exactly once, paced.
mod backfill;
/// Lost answers and killed processes at random points: nothing lost, nothing twice.
mod chaos;
/// The command line: exit codes, config errors, credentials, secrets.
mod cli;
/// DORA days that count: production environments before backfill, `repair`, the marker.
mod dora;
/// One GitLab object per Jira issue whatever moves: keys, rules, project paths, lost stores;
/// and Jira text that cannot act on GitLab.
mod identity;
/// Incident details over GraphQL: severity from the priority mapping, timeline events at Jira's
/// times, each written once; the sandbox's GraphQL answers.
mod incident;
/// Nothing lost on the Jira side: complete walks, Jira's clock, exact resolutions, issues followed.
mod jira_side;
/// `[jira] link_back`: remote links on Jira issues to their GitLab objects, once, never in the
/// way of GitLab.
mod link_back;
/// One message per problem, naming the cause and the fix; JSON lines only with JSON logs.
mod messages;
/// Observability: metrics over loopback and in a textfile, systemd status and watchdog,
/// journal priorities, `status` of a dead run, the backfill bar.
mod observe;
/// What packages ship: shell completions and manual pages generated from the command line,
/// the Debian package's unit, user and config.
mod packaging;
/// Walking Jira's result pages on Cloud and Data Center.
mod paging;
/// What people do in GitLab (delete, move, resolve alerts), backoff, `retry`/`forget`, 413, outages.
mod people;
/// Cycles of the sync: what gets created, closed and reopened, and with which times.
mod replicate;
/// Rate limits, lost answers and crashes: nothing lost, nothing twice.
mod resilience;
/// Service mode (schedule, shutdown, systemd notification), the operator commands (`check`,
/// `status`, `demo`) and the shipped deployment files.
mod service;
/// Jira's workflow in GitLab: stage labels from the changelog, restore time from a status.
mod stages;
/// Every stop stops: signals, fatal errors and hung writes end every mode within the grace
/// period, with the run recorded.
mod stops;
/// Transport safety: redirects stay within one origin; what the config refuses.
mod transport;
/// Jira webhooks as a "sync now" signal: seconds from a change to GitLab, nothing from a forged
/// or replayed request.
mod webhooks;
