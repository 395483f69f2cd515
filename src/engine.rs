//! engine (to be implemented).
