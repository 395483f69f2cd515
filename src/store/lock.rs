//! The exclusive advisory lock that keeps a second writing process off a store.
//!
//! The lock is taken on the database file itself, reached through any symlink, so two paths to
//! one file (a symlink, a hard link, `./x.db` and `/abs/x.db`) are one lock. It is `flock(2)`,
//! which on Linux is independent of the `fcntl(2)` byte-range locks SQLite takes on the same
//! file. The holder's pid is written beside the resolved file (`<file>.lock`) only so that a
//! refused process can say who holds the store.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StoreError;

/// The file a store path names, with every symlink resolved. A store not created yet is
/// resolved through its directory.
pub(super) fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path.file_name().ok_or(e)?;
            Ok(std::fs::canonicalize(dir)?.join(name))
        }
        Err(e) => Err(e),
    }
}

/// Files the store creates are its owner's alone (0600): they hold Jira keys and titles. SQLite
/// gives the WAL and shared-memory files the database file's mode, so creating the database
/// file here (before SQLite opens it) makes those 0600 too. Existing files keep their mode.
pub(super) fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600)
    }
    #[cfg(not(unix))]
    options
}

/// How often, and how far apart, a held lock is tried again before the store is reported in use.
const LOCK_TRIES: u32 = 10;
const LOCK_PAUSE: Duration = Duration::from_millis(20);

/// Tries the lock a few times over a fifth of a second. A lock is held for that long only by a
/// process that uses the store: but any child a process starts (`fork`) shares its open files
/// until it runs its program (`exec`), so for that instant a lock just released can still look
/// held, as it can while a stopped service is still exiting.
fn try_lock_briefly(file: &File) -> Result<(), TryLockError> {
    let mut tries = 1;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                tries += 1;
                std::thread::sleep(LOCK_PAUSE);
            }
            other => return other,
        }
    }
}

/// Whether a process holds a store, as [`Store::lock_state`](super::Store::lock_state) found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No store file yet: nothing to hold.
    NoStore,
    /// The store is there and no process holds it.
    Free,
    /// A process holds it; its pid as it wrote it, if that could be read.
    Held { holder: Option<u32> },
}

/// The file beside the resolved store file that names the holder's pid.
fn pid_path(resolved: &Path) -> PathBuf {
    let mut pid_path = resolved.as_os_str().to_owned();
    pid_path.push(".lock");
    PathBuf::from(pid_path)
}

/// The pid the holder of `resolved` wrote, if it can be read.
fn holder(resolved: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_path(resolved))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// Whether a process holds the store at `path`, found by trying its lock once and letting go at
/// once; nothing is created or written.
pub(super) fn probe(path: &Path) -> std::io::Result<LockState> {
    let resolved = resolve(path)?;
    let file = match File::open(&resolved) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::NoStore),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(LockState::Free),
        Err(TryLockError::WouldBlock) => Ok(LockState::Held {
            holder: holder(&resolved),
        }),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Takes the exclusive lock on the database file at `path` (created if missing, empty, which
/// SQLite takes for a new database) and records our pid beside it.
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    let resolved = resolve(path).unwrap_or_else(|_| path.to_path_buf());
    let pid_path = pid_path(&resolved);
    let lock_error = |source| StoreError::LockFile {
        path: path.to_path_buf(),
        lock_path: resolved.clone(),
        source,
    };
    let file = private(OpenOptions::new().read(true).write(true).create(true))
        .truncate(false)
        .open(&resolved)
        .map_err(lock_error)?;
    match try_lock_briefly(&file) {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder: holder(&resolved),
            });
        }
        Err(TryLockError::Error(source)) => return Err(lock_error(source)),
    }
    // Who holds it, for the message a refused process prints; not part of the lock.
    let pid_error = |source| StoreError::LockFile {
        path: path.to_path_buf(),
        lock_path: pid_path.clone(),
        source,
    };
    let mut pid_file = private(OpenOptions::new().write(true).create(true))
        .truncate(true)
        .open(&pid_path)
        .map_err(pid_error)?;
    pid_file
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(pid_error)?;
    Ok(file)
}
