//! The SQLite store (to be implemented).

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store task failed")]
    Join(#[from] tokio::task::JoinError),
}
