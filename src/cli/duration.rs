//! Durations as people read them.

/// `3h07m`, `0h00m04s` for short ones.
pub fn hm(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}
