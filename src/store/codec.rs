//! How values cross into and out of SQLite: [`Cell`], which decodes a stored value or names it
//! in a [`StoreError::Corrupt`]; the one timestamp format; the `ToSql` impls of the domain's
//! names; and [`Int`], a `u64` bound as SQLite's integer.

use chrono::{DateTime, Datelike as _, NaiveDateTime, SecondsFormat, Utc};
use rusqlite::ToSql;
use rusqlite::types::ToSqlOutput;

use super::StoreError;
use crate::domain::{IssueScope, JiraKey, RemoteState, RunMode, RunOutcome, Target, UnknownName};

/// The one timestamp format in the file: fixed width, so text order is time order.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// How much of a bad value a [`StoreError::Corrupt`] quotes.
const CORRUPT_EXCERPT_CHARS: usize = 120;

/// Where a value came from, for decoding it into a domain type or a [`StoreError::Corrupt`].
#[derive(Clone)]
pub(super) struct Cell {
    pub(super) table: &'static str,
    pub(super) column: &'static str,
    /// The row, as a person would name it.
    pub(super) key: String,
}

impl Cell {
    /// A cell of a row known so far only by its rule.
    pub(super) fn new(table: &'static str, column: &'static str, rule: &str) -> Cell {
        Cell {
            table,
            column,
            key: rule.to_owned(),
        }
    }

    /// The same row, now also named by its Jira key.
    pub(super) fn key(&self, key: &JiraKey) -> Cell {
        Cell {
            key: format!("{}/{key}", self.key),
            ..self.clone()
        }
    }

    /// Another column of the same row.
    pub(super) fn column(&self, column: &'static str) -> Cell {
        Cell {
            column,
            ..self.clone()
        }
    }

    pub(super) fn corrupt(&self, value: &str) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            column: self.column,
            key: self.key.clone(),
            value: value.chars().take(CORRUPT_EXCERPT_CHARS).collect(),
        }
    }

    /// One of an enum's names as the store writes them (`domain::string_enum!`).
    pub(super) fn name<T: std::str::FromStr<Err = UnknownName>>(
        &self,
        text: &str,
    ) -> Result<T, StoreError> {
        text.parse().map_err(|_| self.corrupt(text))
    }

    pub(super) fn timestamp(&self, text: String) -> Result<DateTime<Utc>, StoreError> {
        parse_timestamp(&text).ok_or_else(|| self.corrupt(&text))
    }

    pub(super) fn jira_key(&self, text: String) -> Result<JiraKey, StoreError> {
        JiraKey::parse(&text).map_err(|bad| self.corrupt(&bad))
    }

    /// An attempts count, which this program keeps between 0 and `u32::MAX`.
    pub(super) fn count(&self, value: i64) -> Result<u32, StoreError> {
        u32::try_from(value).map_err(|_| self.corrupt(&value.to_string()))
    }
}

/// Formats `t` the one way the store writes times (millisecond precision, always 24 characters).
pub(super) fn format_timestamp(t: DateTime<Utc>) -> String {
    // For four-digit years chrono's RFC 3339 writer spells it the same, without interpreting
    // the format string on every call (a store write formats several times).
    if (0..=9999).contains(&t.year()) {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    } else {
        t.format(TIMESTAMP_FORMAT).to_string()
    }
}

/// Parses a time written by [`format_timestamp`]; anything else, even another valid RFC 3339
/// spelling, is `None`, because it would break the store's text ordering.
pub(super) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT)
        .ok()?
        .and_utc();
    (format_timestamp(t) == text).then_some(t)
}

impl ToSql for JiraKey {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// The enums the store writes, by their one name (`domain::string_enum!`); reading them back
/// goes through [`Cell::name`], which reports an unknown name as corrupt with its row.
macro_rules! to_sql_by_name {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
    )+};
}

to_sql_by_name!(Target, RemoteState, RunMode, RunOutcome, IssueScope);

/// A `u64` bound as SQLite's signed 64-bit integer; a value above `i64::MAX` (which no count or
/// GitLab iid reaches) fails the statement instead of wrapping.
pub(super) struct Int(pub(super) u64);

impl ToSql for Int {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        i64::try_from(self.0)
            .map(ToSqlOutput::from)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast spelling is the format's, to the character, over the years it is used for
    /// (sub-millisecond parts dropped, not rounded), and the slow one past them.
    #[test]
    fn timestamps_are_spelled_one_way() {
        let times = [
            0_i64,
            1,
            999,
            1_750_000_000_123,
            1_750_000_000_999,
            -62_135_596_800_000,
            253_402_300_799_999,
            253_402_300_800_000,
        ];
        for ms in times {
            let t = DateTime::from_timestamp_millis(ms).expect("in range")
                + chrono::Duration::microseconds(789);
            let s = format_timestamp(t);
            assert_eq!(s, t.format(TIMESTAMP_FORMAT).to_string(), "{ms}");
            if (0..=9999).contains(&t.year()) {
                assert_eq!(s.len(), 24, "{s}");
                assert_eq!(
                    parse_timestamp(&s),
                    DateTime::from_timestamp_millis(ms),
                    "{s}"
                );
            }
        }
    }
}
