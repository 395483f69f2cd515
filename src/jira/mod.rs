//! Jira client (to be implemented).

pub mod adf;
mod markdown;
pub mod wiki;

/// Why a Jira call failed.
#[derive(Debug, thiserror::Error)]
pub enum JiraError {
    #[error("Jira rejected the credentials (HTTP 401)")]
    Unauthorized,
}
