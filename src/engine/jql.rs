//! The JQL the engine sends: the rule's own query with time bounds and an order appended.
//!
//! Jira reads date literals (`"yyyy-MM-dd HH:mm"`) at minute precision in the searching
//! account's profile time zone, not UTC. Bounds are therefore formatted in that zone and rounded
//! down, so a bound never excludes a change it should include.

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

/// A JQL date literal for `t` in `zone`, rounded down to the minute.
///
/// In the hour a clock is set back, a local time names two instants and Jira may read the later
/// one; the literal then steps back an hour, which can only widen the search.
pub fn literal(t: DateTime<Utc>, zone: Tz) -> String {
    let local = t.with_timezone(&zone).naive_local();
    let floored = local
        .date()
        .and_hms_opt(
            chrono::Timelike::hour(&local),
            chrono::Timelike::minute(&local),
            0,
        )
        .expect("hour and minute of a valid time are valid");
    match zone.from_local_datetime(&floored) {
        LocalResult::Ambiguous(_, _) => literal(t - chrono::Duration::hours(1), zone),
        _ => format!("\"{}\"", floored.format("%Y-%m-%d %H:%M")),
    }
}

/// `(<rule>) AND updated >= <lower> ORDER BY updated ASC, key ASC`: every change since `lower`,
/// oldest first, ties broken by key so paging is stable. With `upper`, only changes before it
/// (`AND updated < <upper>`, rounded up), as a minute walked on its own is asked.
pub fn changed_since(
    rule_jql: &str,
    lower: DateTime<Utc>,
    upper: Option<DateTime<Utc>>,
    zone: Tz,
) -> String {
    let upper = upper
        .map(|u| format!(" AND updated < {}", literal_ceil(u, zone)))
        .unwrap_or_default();
    format!(
        "({rule_jql}) AND updated >= {}{upper} ORDER BY updated ASC, key ASC",
        literal(lower, zone)
    )
}

/// `(<rule>) AND created >= <from> AND created < <to> ORDER BY created ASC, key ASC`: one
/// window of history, oldest first, for backfill.
pub fn created_between(rule_jql: &str, from: DateTime<Utc>, to: DateTime<Utc>, zone: Tz) -> String {
    format!(
        "{} ORDER BY created ASC, key ASC",
        created_filter(rule_jql, from, to, zone)
    )
}

/// The filter of [`created_between`] without an order, for counting.
pub fn created_filter(rule_jql: &str, from: DateTime<Utc>, to: DateTime<Utc>, zone: Tz) -> String {
    format!(
        "({rule_jql}) AND created >= {} AND created < {}",
        literal(from, zone),
        literal_ceil(to, zone)
    )
}

/// Like [`literal`] but rounded up, for exclusive upper bounds.
fn literal_ceil(t: DateTime<Utc>, zone: Tz) -> String {
    let up = if chrono::Timelike::second(&t) == 0 && chrono::Timelike::nanosecond(&t) == 0 {
        t
    } else {
        t + chrono::Duration::minutes(1)
    };
    literal(up, zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Bounds are written in the user's zone, not UTC, and rounded down to the minute.
    #[rstest::rstest]
    #[case::kolkata(
        "2025-03-01T10:00:59Z",
        chrono_tz::Asia::Kolkata,
        "\"2025-03-01 15:30\""
    )]
    #[case::utc("2025-03-01T10:00:59Z", chrono_tz::UTC, "\"2025-03-01 10:00\"")]
    #[case::la_dst(
        "2025-07-01T10:00:00Z",
        chrono_tz::America::Los_Angeles,
        "\"2025-07-01 03:00\""
    )]
    fn literal_in_user_zone(#[case] t: &str, #[case] zone: Tz, #[case] expected: &str) {
        assert_eq!(literal(utc(t), zone), expected);
    }

    /// In the repeated hour of a DST fall-back, the bound steps back an hour rather than risk
    /// Jira reading the later of the two instants.
    #[test]
    fn ambiguous_local_time_steps_back() {
        // 2025-11-02 01:30 happens twice in New York; this instant is the second one (EST).
        let t = utc("2025-11-02T06:30:00Z");
        assert_eq!(
            literal(t, chrono_tz::America::New_York),
            "\"2025-11-02 00:30\""
        );
    }

    /// The incremental query wraps the rule's JQL so its ORs cannot escape the bound.
    #[test]
    fn rule_jql_is_parenthesised() {
        let q = changed_since(
            "project = A OR project = B",
            utc("2025-01-01T00:00:00Z"),
            None,
            chrono_tz::UTC,
        );
        assert_eq!(
            q,
            "(project = A OR project = B) AND updated >= \"2025-01-01 00:00\" ORDER BY updated ASC, key ASC"
        );
        let minute = changed_since(
            "p = X",
            utc("2025-01-01T00:00:00Z"),
            Some(utc("2025-01-01T00:01:00Z")),
            chrono_tz::UTC,
        );
        assert!(
            minute.contains("updated >= \"2025-01-01 00:00\" AND updated < \"2025-01-01 00:01\""),
            "{minute}"
        );
    }

    /// Backfill windows round the exclusive end up, so no second of the window is dropped.
    #[test]
    fn window_end_rounds_up() {
        let q = created_between(
            "p = X",
            utc("2025-01-01T00:00:00Z"),
            utc("2025-01-02T00:00:30Z"),
            chrono_tz::UTC,
        );
        assert!(q.contains("created < \"2025-01-02 00:01\""), "{q}");
    }
}
