//! GitLab client (to be implemented).

/// Why a GitLab call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    #[error("GitLab rejected the token (HTTP 401)")]
    Unauthorized,
}
