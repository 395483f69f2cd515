//! The advisory lock on `<path>.lock` that keeps a second writing process off a store file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Takes the advisory lock on `<path>.lock` and writes our pid into it.
pub(super) fn lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock_error = |source| StoreError::LockFile {
        path: path.to_path_buf(),
        lock_path: lock_path.clone(),
        source,
    };
    // Not truncated on open: while another process holds it, its pid is what we want to read.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(source)) => return Err(lock_error(source)),
    }
    file.set_len(0).map_err(lock_error)?;
    (&file)
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(lock_error)?;
    Ok(file)
}
