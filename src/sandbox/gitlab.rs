//! The fake GitLab (in progress).
