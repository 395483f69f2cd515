//! sandbox (to be implemented).
