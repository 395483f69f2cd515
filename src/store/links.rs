//! Remote links on Jira issues (`[jira] link_back`, schema `0009_remote_links.sql`): the link
//! each GitLab object should have, what Jira last accepted, and the backoff of links that
//! failed. The engine decides what a link says and when to send it; this module only keeps the
//! two states and says which links are due.
//!
//! Durability: every write here is NORMAL (see the store's module doc). A wanted link is written
//! before the commit of the mapping it comes from, so the prefix a power cut leaves never holds
//! a mapping without its link; a lost `sent` makes the link sent again, which Jira applies as an
//! update of the same link (by its global id), so nothing is doubled.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::codec::{Cell, format_timestamp};
use super::writer::Mode;
use super::{Store, StoreError, all, exec, one};
use crate::domain::{DueLink, DueLinks, Failure, RemoteLink};

/// A rule's remote links as `status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounts {
    /// Links Jira has accepted in their wanted state.
    pub linked: u64,
    /// Links not yet accepted in their wanted state, including the failing ones.
    pub pending: u64,
    /// Pending links whose last attempt failed (each retried after a backoff), and links given
    /// up because Jira no longer shows the issue.
    pub failing: u64,
}

fn encode(link: &RemoteLink) -> Result<String, StoreError> {
    serde_json::to_string(link).map_err(|source| StoreError::Encode {
        key: link.jira_key.clone(),
        source,
    })
}

impl Store {
    /// See [`SyncStore::want_link`](crate::engine::ports::SyncStore::want_link).
    pub(super) async fn want_remote_link(
        &self,
        rule: &str,
        link: &RemoteLink,
    ) -> Result<bool, StoreError> {
        let json = encode(link)?;
        let (rule, global_id, key) = (
            rule.to_owned(),
            link.global_id.clone(),
            link.jira_key.to_string(),
        );
        let now = format_timestamp(Utc::now());
        self.call(Mode::Write, move |conn| {
            // An unchanged link changes nothing: no row is touched, and a link already sent
            // stays sent.
            let changed = exec(
                conn,
                "INSERT INTO remote_links (global_id, rule, jira_key, wanted, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (global_id) DO UPDATE SET
                    rule = excluded.rule,
                    jira_key = excluded.jira_key,
                    wanted = excluded.wanted,
                    attempts = 0,
                    last_error = NULL,
                    next_attempt_at = NULL,
                    abandoned_at = NULL,
                    updated_at = excluded.updated_at
                 WHERE remote_links.wanted IS NOT excluded.wanted",
                params![global_id, rule, key, json, now],
                "recording a wanted remote link",
            )?;
            if changed == 0 {
                return Ok(false);
            }
            // Wanted again as Jira last accepted it (a change and its undoing): nothing to send.
            let pending: Option<i64> = one(
                conn,
                "SELECT 1 FROM remote_links WHERE global_id = ?1 AND sent IS NOT wanted",
                [&global_id],
                |row| row.get(0),
                "recording a wanted remote link",
            )?;
            Ok(pending.is_some())
        })
        .await
    }

    /// See [`SyncStore::due_links`](crate::engine::ports::SyncStore::due_links).
    pub(super) async fn due_remote_links(
        &self,
        rule: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<DueLinks, StoreError> {
        let rule = rule.to_owned();
        let now = format_timestamp(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows: Vec<(String, String, i64)> = all(
                conn,
                "SELECT global_id, wanted, attempts FROM remote_links
                 WHERE rule = ?1 AND sent IS NOT wanted AND abandoned_at IS NULL
                   AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)
                 ORDER BY next_attempt_at, global_id LIMIT ?3",
                params![rule, now, limit],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                "listing due remote links",
            )?;
            let mut due = Vec::with_capacity(rows.len());
            for (global_id, wanted, attempts) in rows {
                let cell = Cell {
                    table: "remote_links",
                    column: "wanted",
                    key: global_id,
                };
                let link: RemoteLink =
                    serde_json::from_str(&wanted).map_err(|_| cell.corrupt(&wanted))?;
                let attempts = cell.column("attempts").count(attempts)?;
                due.push(DueLink { link, attempts });
            }
            let next: Option<String> = one(
                conn,
                "SELECT min(next_attempt_at) FROM remote_links
                 WHERE rule = ?1 AND sent IS NOT wanted AND abandoned_at IS NULL
                   AND next_attempt_at > ?2",
                params![rule, now],
                |row| row.get(0),
                "listing due remote links",
            )?
            .flatten();
            let next_due = next
                .map(|t| Cell::new("remote_links", "next_attempt_at", &rule).timestamp(t))
                .transpose()?;
            Ok(DueLinks { due, next_due })
        })
        .await
    }

    /// See [`SyncStore::link_sent`](crate::engine::ports::SyncStore::link_sent).
    pub(super) async fn remote_link_sent(&self, link: &RemoteLink) -> Result<(), StoreError> {
        let json = encode(link)?;
        let global_id = link.global_id.clone();
        let now = format_timestamp(Utc::now());
        self.call(Mode::Write, move |conn| {
            // What was sent, which may be older than what is wanted by now (then still pending).
            exec(
                conn,
                "UPDATE remote_links
                 SET sent = ?2, attempts = 0, last_error = NULL, next_attempt_at = NULL,
                     updated_at = ?3
                 WHERE global_id = ?1",
                params![global_id, json, now],
                "recording a sent remote link",
            )?;
            Ok(())
        })
        .await
    }

    /// See [`SyncStore::link_failed`](crate::engine::ports::SyncStore::link_failed).
    pub(super) async fn remote_link_failed(
        &self,
        link: &RemoteLink,
        error: &str,
        gone: bool,
    ) -> Result<(), StoreError> {
        let json = encode(link)?;
        let (global_id, error) = (link.global_id.clone(), error.to_owned());
        let at = Utc::now();
        let now = format_timestamp(at);
        self.call(Mode::Write, move |conn| {
            let attempts: Option<i64> = one(
                conn,
                "SELECT attempts FROM remote_links WHERE global_id = ?1 AND wanted = ?2",
                params![global_id, json],
                |row| row.get(0),
                "recording a failed remote link",
            )?;
            // Another link is wanted by now: it is due at once, whatever this one did.
            let Some(before) = attempts else {
                return Ok(());
            };
            let attempts = before.saturating_add(1);
            let wait = Failure::backoff(u32::try_from(attempts).unwrap_or(u32::MAX));
            exec(
                conn,
                "UPDATE remote_links
                 SET attempts = ?2, last_error = ?3, next_attempt_at = ?4, updated_at = ?5,
                     abandoned_at = CASE WHEN ?6 THEN ?5 ELSE NULL END
                 WHERE global_id = ?1",
                params![
                    global_id,
                    attempts,
                    error,
                    format_timestamp(at + wait),
                    now,
                    gone
                ],
                "recording a failed remote link",
            )?;
            Ok(())
        })
        .await
    }

    /// How many of `rule`'s remote links are linked, pending and failing.
    ///
    /// # Errors
    /// [`StoreError::Query`] if SQLite fails.
    pub async fn link_counts(&self, rule: &str) -> Result<LinkCounts, StoreError> {
        let rule = rule.to_owned();
        self.read(move |conn| {
            let counts = one(
                conn,
                "SELECT count(*) FILTER (WHERE sent IS wanted),
                        count(*) FILTER (WHERE sent IS NOT wanted AND abandoned_at IS NULL),
                        count(*) FILTER (WHERE sent IS NOT wanted
                                           AND (attempts > 0 OR abandoned_at IS NOT NULL))
                 FROM remote_links WHERE rule = ?1",
                [&rule],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
                "counting remote links",
            )?;
            let (linked, pending, failing) = counts.unwrap_or_default();
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(LinkCounts {
                linked: n(linked),
                pending: n(pending),
                failing: n(failing),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::domain::JiraKey;
    use crate::engine::ports::SyncStore;

    fn link(resolved: bool) -> RemoteLink {
        RemoteLink {
            issue: "10001".into(),
            jira_key: JiraKey::parse("OPS-1").expect("a key"),
            global_id: "gitlab:gitlab.example.com:7:3".into(),
            url: "https://gitlab.example.com/acme/ops/-/issues/3".into(),
            title: "acme/ops#3 [OPS-1] down".into(),
            resolved,
        }
    }

    /// A wanted link is due until sent; wanting it again unchanged is not a change; a new state
    /// (resolved) is due again; wanting the state Jira already has is nothing to send.
    #[tokio::test]
    async fn wanted_sent_and_changed() {
        let store = Store::open_in_memory().expect("a store");
        let now = Utc::now();
        assert!(store.want_link("ops", &link(false)).await.expect("want"));
        assert!(!store.want_link("ops", &link(false)).await.expect("want"));
        let due = store.due_links("ops", now, 10).await.expect("due");
        assert_eq!(due.due.len(), 1);
        assert!(
            store
                .due_links("other", now, 10)
                .await
                .expect("due")
                .due
                .is_empty(),
            "another rule's links are its own"
        );
        store.link_sent(&link(false)).await.expect("sent");
        assert!(
            store
                .due_links("ops", now, 10)
                .await
                .expect("due")
                .due
                .is_empty()
        );
        assert!(store.want_link("ops", &link(true)).await.expect("want"));
        assert_eq!(
            store.due_links("ops", now, 10).await.expect("due").due[0].link,
            link(true)
        );
        assert!(
            !store.want_link("ops", &link(false)).await.expect("want"),
            "back to what Jira has: nothing to send"
        );
        let counts = store.link_counts("ops").await.expect("counts");
        assert_eq!((counts.linked, counts.pending, counts.failing), (1, 0, 0));
    }

    /// A failed link waits for its backoff, then is due with its attempts; a gone one is given
    /// up until another link is wanted.
    #[tokio::test]
    async fn failures_back_off_and_gone_gives_up() {
        let store = Store::open_in_memory().expect("a store");
        store.want_link("ops", &link(false)).await.expect("want");
        store
            .link_failed(&link(false), "HTTP 503", false)
            .await
            .expect("failed");
        let now = Utc::now();
        let due = store.due_links("ops", now, 10).await.expect("due");
        assert!(due.due.is_empty(), "waits for its backoff");
        let next = due.next_due.expect("the next attempt is known");
        assert!(next > now && next <= now + Duration::minutes(2), "{next}");
        let later = store
            .due_links("ops", next + Duration::seconds(1), 10)
            .await
            .expect("due");
        assert_eq!(later.due[0].attempts, 1);
        let counts = store.link_counts("ops").await.expect("counts");
        assert_eq!((counts.pending, counts.failing), (1, 1));

        store
            .link_failed(&link(false), "no such issue", true)
            .await
            .expect("failed");
        let far = Utc::now() + Duration::days(1);
        assert!(
            store
                .due_links("ops", far, 10)
                .await
                .expect("due")
                .due
                .is_empty()
        );
        assert!(store.want_link("ops", &link(true)).await.expect("want"));
        assert_eq!(
            store
                .due_links("ops", Utc::now(), 10)
                .await
                .expect("due")
                .due
                .len(),
            1,
            "another link is tried again at once"
        );
    }
}
