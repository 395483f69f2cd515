//! The page walker shared by the live cycle and backfill: it walks one ordered JQL search to its
//! end without leaning on deep offsets.
//!
//! The rule, in one place: after each page, re-query from the last value of the sort field seen
//! (`updated` for the cycle, `created` for backfill) rather than asking for the next page, so
//! issues that change while we page cannot shift others out of view, and Data Center's result
//! window is never reached. Only when a whole page sits within one minute — JQL's precision, so a
//! re-query would return the same page — does the walk follow the server's page cursor instead.
//! Re-queried pages overlap by that minute; callers drop what they have already seen.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::domain::{IssueSnapshot, PageCursor, SearchPage};

use super::jql;
use super::ports::JiraSource;

/// One walk of an ordered search.
pub(crate) struct PageWalk {
    /// The lower bound of the current query.
    bound: DateTime<Utc>,
    page: PageCursor,
    zone: Tz,
    /// The field the search is ordered by.
    order: fn(&IssueSnapshot) -> DateTime<Utc>,
    done: bool,
    /// Search requests sent so far.
    pub(crate) requests: u64,
}

impl PageWalk {
    /// A walk from `from`, over a search ordered by `order`, with bounds written in `zone`.
    pub(crate) fn new(
        from: DateTime<Utc>,
        zone: Tz,
        order: fn(&IssueSnapshot) -> DateTime<Utc>,
    ) -> Self {
        Self {
            bound: from,
            page: PageCursor::First,
            zone,
            order,
            done: false,
            requests: 0,
        }
    }

    /// A walk over `updated`, as the live cycle orders its search.
    pub(crate) fn by_updated(from: DateTime<Utc>, zone: Tz) -> Self {
        Self::new(from, zone, |s| s.updated)
    }

    /// A walk over `created`, as backfill orders its search.
    pub(crate) fn by_created(from: DateTime<Utc>, zone: Tz) -> Self {
        Self::new(from, zone, |s| s.created)
    }

    /// Fetches the next page of `query(bound)`, or `None` once the walk has reached the end.
    ///
    /// # Errors
    /// The search failed; the walk can be retried from the same position.
    pub(crate) async fn next<J: JiraSource>(
        &mut self,
        jira: &J,
        query: impl Fn(DateTime<Utc>) -> String,
    ) -> Result<Option<SearchPage>, J::Error> {
        if self.done {
            return Ok(None);
        }
        self.requests += 1;
        let result = jira.search(&query(self.bound), &self.page).await?;
        self.step(result.next.clone(), result.issues.last().map(self.order));
        Ok(Some(result))
    }

    /// Moves past a page whose server cursor is `next` and whose last issue sorts at `last`.
    fn step(&mut self, next: Option<PageCursor>, last: Option<DateTime<Utc>>) {
        match (next, last) {
            (Some(next), Some(last)) => {
                if jql::literal(last, self.zone) != jql::literal(self.bound, self.zone) {
                    self.bound = last;
                    self.page = PageCursor::First;
                } else {
                    self.page = next;
                }
            }
            _ => self.done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_699_999_980 + m * 60, 0).expect("valid time")
    }

    /// A page whose last issue is in a later minute re-queries from it, starting afresh.
    #[test]
    fn a_later_minute_requeries_from_it() {
        let mut w = PageWalk::by_updated(at(0), chrono_tz::UTC);
        w.step(Some(PageCursor::Token("t".into())), Some(at(5)));
        assert_eq!(
            (w.bound, &w.page, w.done),
            (at(5), &PageCursor::First, false)
        );
    }

    /// A page that sits in the bound's own minute follows the server's cursor: a re-query would
    /// return the same page for ever.
    #[test]
    fn one_minute_follows_the_cursor() {
        let mut w = PageWalk::by_updated(at(3), chrono_tz::UTC);
        let same_minute = at(3) + chrono::Duration::seconds(40);
        w.step(Some(PageCursor::Offset(100)), Some(same_minute));
        assert_eq!((w.bound, &w.page), (at(3), &PageCursor::Offset(100)));
    }

    /// No next page, or an empty page, ends the walk.
    #[test]
    fn the_last_page_ends_the_walk() {
        let mut w = PageWalk::by_created(at(0), chrono_tz::UTC);
        w.step(None, Some(at(9)));
        assert!(w.done);
        let mut w = PageWalk::by_created(at(0), chrono_tz::UTC);
        w.step(Some(PageCursor::Offset(50)), None);
        assert!(w.done);
    }
}
