//! The page walker shared by the live cycle and backfill: it walks one ordered JQL search to its
//! end without leaning on deep offsets, and ends only where Jira itself says the search ends.
//!
//! The rules, in one place:
//! - After each page, re-query from the last value of the sort field seen (`updated` for the
//!   cycle, `created` for backfill) rather than asking for the next page, so issues that change
//!   while we page cannot shift others out of view, and Data Center's result window is never
//!   reached. Only when a whole page sits within one minute — JQL's precision, so a re-query
//!   would return the same page — does the walk follow the server's page cursor instead.
//!   Re-queried pages overlap by that minute; callers drop what they have already seen.
//! - The walk ends only on Jira's own last-page signal (Cloud `isLast: true`; Data Center
//!   `startAt + issues == total`), which the client reads into [`SearchPage::next`] being
//!   `None`. An empty page that is not the last is asked again up to [`EMPTY_PAGE_RETRIES`]
//!   times, then the walk fails ([`WalkError::EmptyPage`]); a page token Jira already gave in
//!   this walk fails it too ([`WalkError::RepeatedToken`]). A failed walk leaves the cursor where
//!   the last commit put it.
//! - A minute walked by offset (Data Center's `startAt`, in a walk over `updated`) is checked
//!   before the walk moves past it: it is walked on its own (`updated >= m AND updated < m+1`)
//!   and every page must report the same `total`, equal to the distinct keys seen; otherwise an
//!   issue edited meanwhile shifted the offsets, and the minute is walked again (at most
//!   [`MINUTE_WALKS`] times, then [`WalkError::UnstableMinute`]).

use std::collections::HashSet;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{IssueSnapshot, JiraId, PageCursor, SearchPage};

use super::jql;
use super::ports::{JiraSource, MAX_RECONCILE, PortError};

/// How many times an empty page that is not the last is asked again before the walk fails.
pub(crate) const EMPTY_PAGE_RETRIES: u32 = 3;

/// How many times a minute walked by offset is walked before the walk gives up on it.
pub(crate) const MINUTE_WALKS: u32 = 3;

/// Why a walk stopped before Jira's last page.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// The search itself failed.
    #[error("the search failed")]
    Search(#[source] E),
    /// Jira kept answering an empty page that it did not mark as the last.
    #[error(
        "Jira answered an empty page that is not the last one {attempts} times in a row; the run \
         stops here and the cursor stays before what was not seen"
    )]
    EmptyPage { attempts: u32 },
    /// Jira gave a page token it had already given in this walk: following it would page for
    /// ever.
    #[error(
        "Jira returned a page token it had already given in this walk; the run stops instead of \
         paging for ever, and the cursor stays before what was not seen"
    )]
    RepeatedToken,
    /// A minute walked by offset kept changing under the walk.
    #[error(
        "the issues changed in the minute from {minute} kept shifting while they were paged by \
         offset ({walks} walks); the cursor stays before that minute"
    )]
    UnstableMinute { minute: DateTime<Utc>, walks: u32 },
}

impl<E: PortError> PortError for WalkError<E> {
    /// A failed search as it classifies itself; Jira's paging misbehaving is an outage: the
    /// next cycle walks again from the cursor.
    fn is_retryable(&self) -> bool {
        match self {
            WalkError::Search(e) => e.is_retryable(),
            _ => true,
        }
    }

    fn stops_run(&self) -> bool {
        match self {
            WalkError::Search(e) => e.stops_run(),
            _ => false,
        }
    }
}

/// A minute being walked on its own, by offset, and what its pages said.
struct MinuteCheck {
    start: DateTime<Utc>,
    keys: HashSet<String>,
    totals: HashSet<u64>,
    walks: u32,
}

/// One walk of an ordered search.
pub(crate) struct PageWalk {
    /// The lower bound of the current query.
    bound: DateTime<Utc>,
    page: PageCursor,
    zone: Tz,
    /// The field the search is ordered by.
    order: fn(&IssueSnapshot) -> DateTime<Utc>,
    /// Whether a minute walked by offset is checked (the order field can change under the walk).
    check_minutes: bool,
    minute: Option<MinuteCheck>,
    /// Every page token Jira gave in this walk.
    tokens: HashSet<String>,
    /// Issues every page asks Jira to read consistently (`reconcileIssues`): those a webhook
    /// named. The OpenAPI asks for the same list "with each paginated request".
    reconcile: Vec<JiraId>,
    done: bool,
    /// Search requests sent so far.
    pub(crate) requests: u64,
}

/// The start of `t`'s minute. Every zone in use today is offset from UTC by whole minutes, so
/// this is the minute as JQL reads it in any zone.
fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

impl PageWalk {
    /// A walk from `from`, over a search ordered by `order`, with bounds written in `zone`.
    fn new(
        from: DateTime<Utc>,
        zone: Tz,
        order: fn(&IssueSnapshot) -> DateTime<Utc>,
        check_minutes: bool,
    ) -> Self {
        Self {
            bound: from,
            page: PageCursor::First,
            zone,
            order,
            check_minutes,
            minute: None,
            tokens: HashSet::new(),
            reconcile: Vec::new(),
            done: false,
            requests: 0,
        }
    }

    /// A walk over `updated`, as the live cycle orders its search. `updated` moves when an issue
    /// is edited, so minutes walked by offset are checked.
    pub(crate) fn by_updated(from: DateTime<Utc>, zone: Tz) -> Self {
        Self::new(from, zone, |s| s.updated, true)
    }

    /// Every page of the walk asks Jira to read `ids` consistently (at most
    /// [`MAX_RECONCILE`], the first ones).
    #[must_use]
    pub(crate) fn reconciling(mut self, ids: &[JiraId]) -> Self {
        self.reconcile = ids.iter().take(MAX_RECONCILE).cloned().collect();
        self
    }

    /// A walk over `created`, as backfill orders its search (`created` never moves).
    pub(crate) fn by_created(from: DateTime<Utc>, zone: Tz) -> Self {
        Self::new(from, zone, |s| s.created, false)
    }

    /// Fetches the next page of `query(lower, upper)` — issues with the sort field at or after
    /// `lower` and, when `upper` is set, before it — or `None` once Jira said the walk is over.
    ///
    /// # Errors
    /// The search failed, or Jira's paging cannot be trusted ([`WalkError`]); the walk can be
    /// retried from the cursor.
    pub(crate) async fn next<J: JiraSource>(
        &mut self,
        jira: &J,
        query: impl Fn(DateTime<Utc>, Option<DateTime<Utc>>) -> String,
    ) -> Result<Option<SearchPage>, WalkError<J::Error>> {
        if self.done {
            return Ok(None);
        }
        let (lower, upper) = match &self.minute {
            Some(m) => (m.start, Some(m.start + chrono::Duration::minutes(1))),
            None => (self.bound, None),
        };
        let jql = query(lower, upper);
        let mut empty = 0;
        let result = loop {
            self.requests += 1;
            let result = if self.reconcile.is_empty() {
                jira.search(&jql, &self.page).await
            } else {
                jira.search_reconciling(&jql, &self.page, &self.reconcile)
                    .await
            }
            .map_err(WalkError::Search)?;
            let is_empty = result.issues.is_empty() && result.undecodable.is_empty();
            if !is_empty || result.next.is_none() {
                break result;
            }
            // An empty page that is not the last: Jira's index answered nothing where it says
            // there is more. Asking again costs a request; taking it as the end loses issues.
            empty += 1;
            if empty > EMPTY_PAGE_RETRIES {
                return Err(WalkError::EmptyPage { attempts: empty });
            }
            tracing::warn!(
                attempt = empty,
                "Jira answered an empty page that is not the last one; asking again"
            );
        };
        if let Some(PageCursor::Token(t)) = &result.next
            && !self.tokens.insert(t.clone())
        {
            return Err(WalkError::RepeatedToken);
        }
        if let Some(m) = &mut self.minute {
            m.keys
                .extend(result.issues.iter().map(|s| s.key.to_string()));
            m.keys
                .extend(result.undecodable.iter().map(|bad| bad.key.clone()));
            m.totals.extend(result.total);
        }
        self.step(result.next.clone(), result.issues.last().map(self.order))?;
        Ok(Some(result))
    }

    /// Walks to the end, handing each page to `tx` as soon as it is read, so that the next page
    /// is fetched while the receiver works on this one (the channel's capacity is how far
    /// ahead). Stops at Jira's last page, after sending the walk's error on, once `cancel` fires
    /// (a search in flight is dropped: it is a read), or once the receiver is gone. Returns the
    /// search requests sent. A receiver that sees the channel close while `cancel` has fired
    /// cannot tell the end of the walk from the cancellation, and takes it as cancelled.
    pub(crate) async fn prefetch<J: JiraSource>(
        mut self,
        jira: &J,
        query: impl Fn(DateTime<Utc>, Option<DateTime<Utc>>) -> String,
        tx: mpsc::Sender<Result<SearchPage, WalkError<J::Error>>>,
        cancel: &CancellationToken,
    ) -> u64 {
        loop {
            let page = tokio::select! {
                biased;
                () = cancel.cancelled() => return self.requests,
                page = self.next(jira, &query) => page,
            };
            let item = match page {
                Ok(Some(page)) => Ok(page),
                Ok(None) => return self.requests,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            // A send fails only once the receiver stopped (and dropped its end).
            if tx.send(item).await.is_err() || failed {
                return self.requests;
            }
        }
    }

    /// Moves past a page whose server cursor is `next` and whose last issue sorts at `last`.
    fn step<E>(
        &mut self,
        next: Option<PageCursor>,
        last: Option<DateTime<Utc>>,
    ) -> Result<(), WalkError<E>> {
        if let Some(m) = &mut self.minute {
            match next {
                Some(next) => self.page = next,
                None => {
                    let total = m.totals.iter().next().copied();
                    let whole = m.totals.len() == 1 && total == Some(m.keys.len() as u64);
                    if whole {
                        // Every issue of the minute was seen: move past it.
                        self.bound = m.start + chrono::Duration::minutes(1);
                        self.minute = None;
                    } else if m.walks >= MINUTE_WALKS {
                        return Err(WalkError::UnstableMinute {
                            minute: m.start,
                            walks: m.walks,
                        });
                    } else {
                        tracing::info!(
                            minute = %m.start,
                            seen = m.keys.len(),
                            totals = ?m.totals,
                            "issues moved while a minute was paged by offset; walking it again"
                        );
                        m.walks += 1;
                        m.keys.clear();
                        m.totals.clear();
                    }
                    self.page = PageCursor::First;
                }
            }
            return Ok(());
        }
        match (next, last) {
            (Some(next), Some(last)) => {
                if jql::literal(last, self.zone) != jql::literal(self.bound, self.zone) {
                    self.bound = last;
                    self.page = PageCursor::First;
                } else if self.check_minutes && matches!(next, PageCursor::Offset(_)) {
                    // Paging this minute by offset: walk it on its own, and check it.
                    self.minute = Some(MinuteCheck {
                        start: minute_of(self.bound),
                        keys: HashSet::new(),
                        totals: HashSet::new(),
                        walks: 1,
                    });
                    self.page = PageCursor::First;
                } else {
                    self.page = next;
                }
            }
            // Not the last page, yet nothing to re-query from (only undecodable issues): follow
            // Jira's cursor.
            (Some(next), None) => self.page = next,
            (None, _) => self.done = true,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{JiraKey, JiraUser};
    use crate::engine::testkit::MemError;

    fn at(m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_699_999_980 + m * 60, 0).expect("valid time")
    }

    type Step = Result<(), WalkError<MemError>>;

    /// A page whose last issue is in a later minute re-queries from it, starting afresh.
    #[test]
    fn a_later_minute_requeries_from_it() {
        let mut w = PageWalk::by_updated(at(0), chrono_tz::UTC);
        let s: Step = w.step(Some(PageCursor::Token("t".into())), Some(at(5)));
        s.expect("a step");
        assert_eq!(
            (w.bound, &w.page, w.done),
            (at(5), &PageCursor::First, false)
        );
    }

    /// A page that sits in the bound's own minute follows the server's token: a re-query would
    /// return the same page for ever.
    #[test]
    fn one_minute_follows_the_token() {
        let mut w = PageWalk::by_updated(at(3), chrono_tz::UTC);
        let same_minute = at(3) + chrono::Duration::seconds(40);
        let s: Step = w.step(Some(PageCursor::Token("t".into())), Some(same_minute));
        s.expect("a step");
        assert_eq!((w.bound, &w.page), (at(3), &PageCursor::Token("t".into())));
    }

    /// Backfill follows offsets within a minute as they come (`created` never moves).
    #[test]
    fn backfill_follows_offsets() {
        let mut w = PageWalk::by_created(at(3), chrono_tz::UTC);
        let s: Step = w.step(Some(PageCursor::Offset(100)), Some(at(3)));
        s.expect("a step");
        assert_eq!((w.bound, &w.page), (at(3), &PageCursor::Offset(100)));
        assert!(w.minute.is_none());
    }

    /// Only Jira's last-page signal ends the walk.
    #[test]
    fn the_last_page_ends_the_walk() {
        let mut w = PageWalk::by_created(at(0), chrono_tz::UTC);
        let s: Step = w.step(None, Some(at(9)));
        s.expect("a step");
        assert!(w.done);
        let mut w = PageWalk::by_created(at(0), chrono_tz::UTC);
        let s: Step = w.step(Some(PageCursor::Offset(50)), None);
        s.expect("a step");
        assert!(!w.done, "a page of undecodable issues is not the end");
    }

    /// A Jira that answers a script of pages, recording the queries and cursors asked.
    #[derive(Default)]
    struct Script {
        pages: Mutex<VecDeque<SearchPage>>,
        asked: Mutex<Vec<(String, PageCursor)>>,
    }

    impl JiraSource for Script {
        type Error = MemError;

        async fn search(&self, jql: &str, page: &PageCursor) -> Result<SearchPage, MemError> {
            self.asked
                .lock()
                .expect("unpoisoned")
                .push((jql.to_owned(), page.clone()));
            self.pages
                .lock()
                .expect("unpoisoned")
                .pop_front()
                .ok_or(MemError::Refused)
        }

        async fn count(&self, _jql: &str) -> Result<Option<u64>, MemError> {
            Ok(None)
        }

        async fn issues_by_id(
            &self,
            _ids: &[crate::domain::JiraId],
        ) -> Result<crate::domain::ReadBack, MemError> {
            Err(MemError::Refused)
        }

        async fn transitions(
            &self,
            _ids: &[crate::domain::JiraId],
        ) -> Result<
            std::collections::HashMap<crate::domain::JiraId, Vec<crate::domain::Transition>>,
            MemError,
        > {
            Err(MemError::Refused)
        }

        async fn myself(&self) -> Result<JiraUser, MemError> {
            Err(MemError::Refused)
        }

        /// A walk writes nothing to Jira.
        async fn put_remote_link(&self, _link: &crate::domain::RemoteLink) -> Result<(), MemError> {
            Err(MemError::Refused)
        }

        fn browse_base(&self) -> String {
            String::new()
        }
    }

    fn issue(key: &str, updated: DateTime<Utc>) -> IssueSnapshot {
        IssueSnapshot {
            id: None,
            key: JiraKey::parse(key).expect("a key"),
            summary: String::new(),
            description: None,
            created: updated,
            updated,
            resolved_at: None,
            status: String::new(),
            priority: None,
            labels: Vec::new(),
            issue_type: None,
            fields: Default::default(),
            transitions: None,
        }
    }

    fn page(keys: &[&str], at: DateTime<Utc>, next: Option<PageCursor>) -> SearchPage {
        SearchPage {
            issues: keys.iter().map(|k| issue(k, at)).collect(),
            next,
            ..SearchPage::default()
        }
    }

    fn query(lower: DateTime<Utc>, upper: Option<DateTime<Utc>>) -> String {
        format!("{lower}..{upper:?}")
    }

    async fn walk_all(script: &Script) -> Result<usize, WalkError<MemError>> {
        let mut w = PageWalk::by_updated(at(0), chrono_tz::UTC);
        let mut seen = 0;
        while let Some(p) = w.next(script, query).await? {
            seen += p.issues.len();
        }
        Ok(seen)
    }

    /// An empty page that is not the last is asked again, and the walk goes on.
    #[tokio::test]
    async fn an_empty_page_is_asked_again() {
        let s = Script::default();
        let token = |t: &str| Some(PageCursor::Token(t.into()));
        s.pages.lock().expect("unpoisoned").extend([
            page(&[], at(0), token("a")),
            page(&[], at(0), token("a")),
            page(&["OPS-1"], at(1), None),
        ]);
        assert_eq!(walk_all(&s).await.expect("the walk ends"), 1);
        let asked = s.asked.lock().expect("unpoisoned").clone();
        assert_eq!(asked.len(), 3);
        assert!(
            asked.iter().all(|(_, c)| *c == PageCursor::First),
            "the same request again"
        );
    }

    /// Four empty pages in a row fail the walk with "empty page".
    #[tokio::test]
    async fn empty_pages_fail_the_walk() {
        let s = Script::default();
        for _ in 0..4 {
            s.pages.lock().expect("unpoisoned").push_back(page(
                &[],
                at(0),
                Some(PageCursor::Offset(0)),
            ));
        }
        let e = walk_all(&s).await.expect_err("the walk fails");
        assert!(matches!(e, WalkError::EmptyPage { attempts: 4 }), "{e:?}");
        assert!(e.to_string().contains("empty page"), "{e}");
        assert!(e.is_retryable());
    }

    /// A token Jira already gave fails the walk.
    #[tokio::test]
    async fn a_repeated_token_fails_the_walk() {
        let s = Script::default();
        let t = Some(PageCursor::Token("same".into()));
        s.pages.lock().expect("unpoisoned").extend([
            page(&["OPS-1"], at(0), t.clone()),
            page(&["OPS-2"], at(0), t.clone()),
            page(&["OPS-3"], at(0), t),
        ]);
        let e = walk_all(&s).await.expect_err("the walk fails");
        assert!(matches!(e, WalkError::RepeatedToken), "{e:?}");
    }

    fn dc_page(keys: &[&str], at: DateTime<Utc>, next: Option<u64>, total: u64) -> SearchPage {
        SearchPage {
            total: Some(total),
            ..page(keys, at, next.map(PageCursor::Offset))
        }
    }

    /// A minute paged by offset is walked on its own; when its total moves under the walk, it
    /// is walked again, and only a whole walk moves the bound past it.
    #[tokio::test]
    async fn a_minute_by_offset_is_checked() {
        let s = Script::default();
        let m = at(0) + chrono::Duration::seconds(10);
        s.pages.lock().expect("unpoisoned").extend([
            // The search from the bound: one minute, by offset.
            dc_page(&["OPS-1", "OPS-2"], m, Some(2), 5),
            // The minute alone: an issue left it between the pages (3 → 2), so OPS-3 slid.
            dc_page(&["OPS-1", "OPS-2"], m, Some(2), 3),
            dc_page(&["OPS-4"], m, None, 2),
            // Again: whole.
            dc_page(&["OPS-1", "OPS-3"], m, Some(2), 3),
            dc_page(&["OPS-4"], m, None, 3),
            // After the minute.
            dc_page(&["OPS-2"], at(5), None, 1),
        ]);
        walk_all(&s).await.expect("the walk ends");
        let asked = s.asked.lock().expect("unpoisoned").clone();
        assert_eq!(asked.len(), 6, "{asked:#?}");
        let minute = query(at(0), Some(at(1)));
        assert_eq!(asked[1], (minute.clone(), PageCursor::First));
        assert_eq!(asked[2], (minute.clone(), PageCursor::Offset(2)));
        assert_eq!(asked[3], (minute, PageCursor::First), "walked again");
        assert_eq!(
            asked[5],
            (query(at(1), None), PageCursor::First),
            "then past it"
        );
    }

    /// A minute that keeps moving fails the walk.
    #[tokio::test]
    async fn an_unstable_minute_fails_the_walk() {
        let s = Script::default();
        let m = at(0);
        s.pages
            .lock()
            .expect("unpoisoned")
            .push_back(dc_page(&["OPS-1"], m, Some(1), 9));
        for n in 0..MINUTE_WALKS {
            s.pages.lock().expect("unpoisoned").extend([
                dc_page(&["OPS-1"], m, Some(1), 9 - u64::from(n)),
                dc_page(&["OPS-2"], m, None, 8 - u64::from(n)),
            ]);
        }
        let e = walk_all(&s).await.expect_err("the walk fails");
        assert!(
            matches!(
                e,
                WalkError::UnstableMinute {
                    walks: MINUTE_WALKS,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
