//! The Jira account's profile time zone, in which Jira reads every JQL date literal.
//!
//! Read from `/myself` at most once an hour (or taken from `jira.time_zone`), remembered in the
//! store so a fresh `--once` process does not ask again, and compared with what was known before:
//! a change means bounds written earlier were read in another zone, so the next search reaches
//! further back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::ports::{JiraSource, SyncStore};

/// How long the Jira account's time zone is trusted before `/myself` is asked again.
const ZONE_TTL: Duration = Duration::from_secs(3600);

/// The store's key for the zone, kept as `<zone>@<when read>`.
const ZONE_META_KEY: &str = "jira.time_zone";

/// Why the zone could not be had.
pub(crate) enum ZoneError<J, S> {
    Jira(J),
    Store(S),
}

/// The account's zone, cached in memory and in the store.
pub(crate) struct AccountZone {
    /// Configured instead of read (`jira.time_zone`).
    configured: Option<Tz>,
    cached: Mutex<Option<(Tz, tokio::time::Instant)>>,
}

impl AccountZone {
    pub(crate) fn new(configured: Option<Tz>) -> Self {
        Self {
            configured,
            cached: Mutex::new(None),
        }
    }

    /// The zone, from config, memory, the store, or `/myself` (in that order); and whether it
    /// changed since it was last read.
    pub(crate) async fn get<J: JiraSource, S: SyncStore>(
        &self,
        jira: &J,
        store: &S,
    ) -> Result<(Tz, bool), ZoneError<J::Error, S::Error>> {
        if let Some(tz) = self.configured {
            return Ok((tz, false));
        }
        let mut cached = self.cached.lock().await;
        if let Some((tz, at)) = *cached
            && at.elapsed() < ZONE_TTL
        {
            return Ok((tz, false));
        }
        let stored = store
            .meta(ZONE_META_KEY)
            .await
            .map_err(ZoneError::Store)?
            .and_then(|v| parse_zone_meta(&v));
        if let Some((tz, read_at)) = stored {
            let age = (Utc::now() - read_at).to_std().unwrap_or(Duration::MAX);
            if age < ZONE_TTL && cached.is_none() {
                *cached = Some((tz, tokio::time::Instant::now() - age));
                return Ok((tz, false));
            }
        }
        let me = jira.myself().await.map_err(ZoneError::Jira)?;
        let previous = cached.map(|(tz, _)| tz).or(stored.map(|(tz, _)| tz));
        let changed = previous.is_some_and(|p| p != me.time_zone);
        if changed {
            warn!(
                from = %previous.map(|p| p.to_string()).unwrap_or_default(),
                to = %me.time_zone,
                "the Jira account's time zone changed; this run searches a day further back"
            );
        }
        info!(account = %me.display_name, zone = %me.time_zone, "Jira dates are read in the account's zone");
        store
            .set_meta(
                ZONE_META_KEY,
                &format!("{}@{}", me.time_zone, Utc::now().to_rfc3339()),
            )
            .await
            .map_err(ZoneError::Store)?;
        *cached = Some((me.time_zone, tokio::time::Instant::now()));
        Ok((me.time_zone, changed))
    }
}

fn parse_zone_meta(v: &str) -> Option<(Tz, DateTime<Utc>)> {
    let (tz, at) = v.split_once('@')?;
    Some((
        tz.parse().ok()?,
        DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
    ))
}
