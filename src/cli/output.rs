//! Where a command's own messages go: plain lines for people, or, when the logs are JSON lines
//! (`--log-format json`, or `auto` when stderr is the journal), JSON lines too, so that a cron
//! log or the journal holds nothing else. Each problem is told once: here, or in the log, never
//! both.

use jira_gitlab_sync::telemetry;
use serde::Serialize;
use tracing::Level;

/// How a command prints what it has to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Out {
    json: bool,
}

impl Out {
    /// Plain lines, or JSON lines when `json`.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Returns true if and only if output is JSON lines.
    pub fn is_json(self) -> bool {
        self.json
    }

    /// A problem that ends the command (or a rule's run): `error: …` on stderr (led by the
    /// journal's priority prefix when stderr is the journal), or one ERROR event in the JSON
    /// log. Nothing else reports it.
    pub fn error(self, message: &str) {
        if self.json {
            tracing::error!("{message}");
        } else {
            telemetry::eprint_lines(Level::ERROR, &format!("error: {message}"));
        }
    }

    /// Something the command goes on despite: `warning: …` on stderr, or one WARN event in the
    /// JSON log.
    pub fn warn(self, message: &str) {
        if self.json {
            tracing::warn!("{message}");
        } else {
            telemetry::eprint_lines(Level::WARN, &format!("warning: {message}"));
        }
    }

    /// A line for the person who ran the command: on stdout, or an INFO event in the JSON log.
    pub fn note(self, message: &str) {
        if self.json {
            tracing::info!("{message}");
        } else {
            println!("{message}");
        }
    }

    /// A result: `human()`'s text on stdout, or `value` as one JSON line.
    pub fn result<T: Serialize>(self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string(value) {
                Ok(line) => println!("{line}"),
                Err(e) => self.error(&format!("cannot write the result as JSON: {e}")),
            }
        } else {
            print!("{}", human());
        }
    }
}
