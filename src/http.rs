//! http (to be implemented).
