//! Why a store operation failed: [`StoreError`], which of its kinds are worth retrying, and
//! [`query`], which wraps a failed statement with what the store was doing.

use std::io;
use std::path::PathBuf;

use rusqlite::ErrorCode;

use crate::domain::JiraKey;
use crate::engine::ports::PortError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory the store file goes in could not be created.
    #[error("cannot create the store's directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The lock file next to the store could not be opened, locked or written.
    #[error("cannot lock the store {} (the file {})", path.display(), lock_path.display())]
    LockFile {
        path: PathBuf,
        lock_path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process holds the store's lock.
    #[error(
        "the store {} is in use by another jira-gitlab-sync process ({}); stop it, or point [store] path at another file",
        path.display(),
        holder_label(*holder)
    )]
    Locked {
        path: PathBuf,
        /// The holder's pid as it wrote it into the lock file, if it could be read.
        holder: Option<u32>,
    },
    /// SQLite could not open the file, set its pragmas, or read its schema version.
    #[error("cannot open the store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A read-only open found no file.
    #[error(
        "the store {} does not exist: no sync has run yet with this store path",
        path.display()
    )]
    Missing { path: PathBuf },
    /// A migration's SQL failed; the store is left at its previous version.
    #[error("cannot migrate the store {} to schema version {version}", path.display())]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was written by a newer build.
    #[error(
        "the store {} has schema version {found}, but this build knows only up to {known}; run a newer jira-gitlab-sync, or point [store] path at another file",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    /// A read-only open found a store that needs migrating, which only a writing open does.
    #[error(
        "the store {} has schema version {found}, older than this build's {known}; run the sync once to migrate it",
        path.display()
    )]
    Outdated {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    /// A statement failed. `context` says what the store was doing.
    #[error("store query failed while {context}")]
    Query {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A value in the file is not one this build writes (the file was edited or damaged).
    #[error(
        "the store's {table}.{column} for {key} holds {value:?}, which is not a value this program writes (was the file edited?)"
    )]
    Corrupt {
        table: &'static str,
        column: &'static str,
        /// The row: `<rule>/<jira key>`, `run <id>` or the like.
        key: String,
        /// The value, or its beginning if long.
        value: String,
    },
    /// A snapshot could not be turned into JSON for the failures table.
    #[error("cannot encode the snapshot of {key} as JSON")]
    Encode {
        key: JiraKey,
        #[source]
        source: serde_json::Error,
    },
    /// `finish_run` named a run the log does not have.
    #[error("run {id} is not in the store's run log")]
    UnknownRun { id: i64 },
    /// The store's writer thread could not be started.
    #[error("cannot start the store's writer thread")]
    Thread {
        #[source]
        source: io::Error,
    },
    /// A store call panicked on the writer thread, or the writer has stopped.
    #[error("a store call panicked, or the store's writer thread has stopped")]
    Writer,
}

impl PortError for StoreError {
    /// Returns true if and only if the error is SQLite reporting the database busy or locked by
    /// another connection past the busy timeout: trying the same call again later may succeed.
    /// A store held by another process ([`StoreError::Locked`]) is not retryable: it needs a
    /// person.
    fn is_retryable(&self) -> bool {
        match self {
            StoreError::Open { source, .. }
            | StoreError::Migrate { source, .. }
            | StoreError::Query { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

/// Returns true if and only if `err` is `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code).
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// "pid 1234", or what to say when the lock file did not tell.
fn holder_label(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// A [`StoreError::Query`] maker for `map_err`.
pub(super) fn query(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { context, source }
}
