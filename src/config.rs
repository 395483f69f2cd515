//! config (to be implemented).
