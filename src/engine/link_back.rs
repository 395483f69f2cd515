//! `[jira] link_back`: a remote link on each Jira issue pointing at the GitLab issue or
//! incident replicated from it (alerts have no object to link), kept in step with Jira's
//! resolution.
//!
//! How it never blocks or doubles the GitLab side:
//! - **Wanted, then sent.** The link an object should have is recorded in the store
//!   ([`SyncStore::want_link`]) just before each commit of its mapping, so a mapping the store
//!   holds never lacks it, whatever a crash interrupts. Links are sent by a pass at the end of
//!   each run (`SyncEngine::send_links`), after every GitLab write and apart from the cursor: a
//!   link that fails is logged, counted and retried after a backoff (a minute, doubling, at most
//!   six hours), and never fails an issue or a run, nor makes a GitLab write happen again.
//! - **Once.** Jira creates or updates a remote link by its global id, and every request sends
//!   the whole link (Jira nulls the fields a request leaves out), so a link sent again after a
//!   lost answer or a crash updates the one link. What Jira last accepted is recorded, so an
//!   unchanged link is not sent again: an idle cycle sends nothing.
//! - **Its identity is the object's.** The global id is `gitlab:<gitlab host>:<project id>:<iid>`
//!   of the object as the store identifies it (the original's, after a person moved it): the
//!   link's address and title follow a move, and it stays one link.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::RuleConfig;
use crate::domain::{DueLink, Mapping, RemoteLink, Target};

use super::execute::{Ctx, Outcome};
use super::ports::{GitLabSink, JiraSource, PortError, SyncStore};
use super::{EngineError, OUTAGE_STREAK, SyncEngine, error_chain};

/// Links read from the store, and sent, per round of a pass.
const LINK_BATCH: usize = 100;

/// What the engine needs to know to write a link: the GitLab it links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkBackSettings {
    /// `gitlab.url`'s host, in every global id.
    host: String,
    /// `gitlab.url` with a trailing slash: what precedes a project's path in its objects' URLs.
    base: String,
}

impl LinkBackSettings {
    /// For the GitLab at `gitlab_url`.
    pub fn new(gitlab_url: &url::Url) -> Self {
        let base = gitlab_url.as_str();
        Self {
            host: gitlab_url.host_str().unwrap_or_default().to_owned(),
            base: if base.ends_with('/') {
                base.to_owned()
            } else {
                format!("{base}/")
            },
        }
    }

    /// `gitlab:<gitlab host>:<project id>:<iid>`.
    pub fn global_id(&self, project_id: u64, iid: u64) -> String {
        format!("gitlab:{}:{project_id}:{iid}", self.host)
    }

    /// The path of the project the object lives in now, from its URL
    /// (`<base><path>/-/issues/<iid>`), or the project as configured where the URL says
    /// nothing.
    fn project_path(&self, m: &Mapping) -> String {
        m.web_url
            .as_deref()
            .and_then(|u| {
                let rest = match u.strip_prefix(&self.base) {
                    Some(rest) => rest.to_owned(),
                    None => url::Url::parse(u)
                        .ok()?
                        .path()
                        .trim_start_matches('/')
                        .to_owned(),
                };
                rest.split_once("/-/")
                    .map(|(path, _)| path.to_owned())
                    .filter(|p| !p.is_empty())
            })
            .unwrap_or_else(|| m.project.clone())
    }

    /// The link the object of `m` should have on its Jira issue, titled after the object's
    /// `title`; `None` for what has nothing to link (an alert, an object not created yet, one a
    /// person deleted).
    pub fn link_for(&self, m: &Mapping, title: &str, resolved: bool) -> Option<RemoteLink> {
        if m.target == Target::Alert || m.gone_at.is_some() {
            return None;
        }
        let (project_id, iid) = (m.project_id?, m.iid?);
        let (_, shown_iid) = m.address();
        let url = m.web_url.clone()?;
        Some(RemoteLink {
            issue: m
                .jira_id
                .as_ref()
                .map_or_else(|| m.jira_key.to_string(), |id| id.as_str().to_owned()),
            jira_key: m.jira_key.clone(),
            global_id: self.global_id(project_id, iid),
            url,
            title: format!(
                "{}#{} {title}",
                self.project_path(m),
                shown_iid.unwrap_or(iid)
            ),
            resolved,
        })
    }
}

/// What a run's link pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkReport {
    /// Links Jira accepted.
    pub sent: u64,
    /// Links Jira refused or did not answer (each retried after a backoff).
    pub failed: u64,
}

/// When a rule's pending links are due, as this process knows without asking the store.
#[derive(Clone, Copy, Debug)]
pub(super) enum LinksDue {
    /// None is pending.
    Nothing,
    /// The earliest is due then.
    At(DateTime<Utc>),
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Records the link the object of `m` should have, before `m` is committed (with `link_back`
    /// on, for an object with something to link).
    ///
    /// # Errors
    /// The store failed: nothing may be committed then.
    pub(super) async fn want_link(
        &self,
        cx: &Ctx<'_>,
        out: &Outcome,
        m: &Mapping,
    ) -> Result<(), EngineError> {
        let (Some(settings), Some((title, resolved))) = (&self.settings.link_back, &out.link)
        else {
            return Ok(());
        };
        let Some(link) = settings.link_for(m, title, *resolved) else {
            return Ok(());
        };
        let pending = self
            .store
            .want_link(&cx.rule.name, &link)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))?;
        if pending {
            debug!(global_id = %link.global_id, "the remote link on Jira is due");
            self.set_links_due(&cx.rule.name, Some(LinksDue::At(Utc::now())));
        }
        Ok(())
    }

    /// Sends `rule`'s due remote links to Jira, up to `concurrency` at once, until none is due
    /// or `cancel` fires (callers bound it by the grace period too). Never fails: a link that fails is logged, counted and retried after a
    /// backoff; a store that fails ends the pass (the links stay due).
    pub(super) async fn send_links(
        &self,
        rule: &RuleConfig,
        cancel: &CancellationToken,
    ) -> LinkReport {
        let mut report = LinkReport::default();
        if self.settings.link_back.is_none() {
            return report;
        }
        match self.links_due(&rule.name) {
            Some(LinksDue::Nothing) => return report,
            Some(LinksDue::At(t)) if t > Utc::now() => return report,
            _ => {}
        }
        // Failures in a row that look like Jira being down end the pass: the rest stay due.
        let mut outages = 0u32;
        // Each link is sent once per pass at most, whatever the store answers.
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            if cancel.is_cancelled() {
                // Not known any more: the next run reads what is due.
                self.set_links_due(&rule.name, None);
                break;
            }
            let due = match self
                .store
                .due_links(&rule.name, Utc::now(), LINK_BATCH)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    error!(cause = %error_chain(&e), "cannot read the remote links due; they are sent by a later run");
                    self.set_links_due(&rule.name, None);
                    break;
                }
            };
            if due.due.is_empty() {
                self.set_links_due(
                    &rule.name,
                    Some(due.next_due.map_or(LinksDue::Nothing, LinksDue::At)),
                );
                break;
            }
            let fresh: Vec<DueLink> = due
                .due
                .into_iter()
                .filter(|d| tried.insert(d.link.global_id.clone()))
                .collect();
            if fresh.is_empty() {
                // Still due after this pass sent them (wanted anew meanwhile): the next run.
                self.set_links_due(&rule.name, None);
                break;
            }
            let concurrency = self.settings.concurrency.max(1);
            let mut sends = futures_util::stream::iter(fresh)
                .map(|d| async move {
                    let result = self.jira.put_remote_link(&d.link).await;
                    (d, result)
                })
                .buffer_unordered(concurrency);
            let mut stop = false;
            while let Some((d, result)) = sends.next().await {
                if let Err(e) = self.link_done(&mut report, &mut outages, d, result).await {
                    error!(cause = %error_chain(&e), "cannot record a remote link's outcome; it is sent again by a later run");
                    stop = true;
                }
                // Asked to stop: the links in flight are dropped (each is sent again by a later
                // run, which Jira applies to the same link).
                if cancel.is_cancelled() {
                    stop = true;
                    break;
                }
            }
            if stop || outages >= OUTAGE_STREAK {
                if outages >= OUTAGE_STREAK {
                    warn!(
                        failures = outages,
                        "Jira looks down: the remote links still due wait for a later run"
                    );
                }
                self.set_links_due(&rule.name, None);
                break;
            }
        }
        if report.sent + report.failed > 0 {
            info!(
                sent = report.sent,
                failed = report.failed,
                "remote links on Jira"
            );
        }
        report
    }

    /// Records what became of one link.
    async fn link_done(
        &self,
        report: &mut LinkReport,
        outages: &mut u32,
        d: DueLink,
        result: Result<(), J::Error>,
    ) -> Result<(), S::Error> {
        match result {
            Ok(()) => {
                *outages = 0;
                report.sent += 1;
                debug!(jira_key = %d.link.jira_key, global_id = %d.link.global_id, "remote link on Jira");
                self.store.link_sent(&d.link).await
            }
            Err(e) => {
                report.failed += 1;
                let gone = e.is_gone();
                if e.is_retryable() {
                    *outages += 1;
                } else {
                    *outages = 0;
                }
                let message = error_chain(&e);
                let retry_in = crate::domain::Failure::backoff(d.attempts.saturating_add(1))
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                if gone {
                    warn!(jira_key = %d.link.jira_key, error = %message, "cannot put the remote link on Jira; not tried again unless the GitLab object changes");
                } else {
                    warn!(
                        jira_key = %d.link.jira_key,
                        error = %message,
                        retry_in_secs = retry_in.as_secs(),
                        "cannot put the remote link on Jira; it is tried again after a backoff (GitLab is not affected)"
                    );
                }
                self.store.link_failed(&d.link, &message, gone).await
            }
        }
    }

    fn links_due(&self, rule: &str) -> Option<LinksDue> {
        self.links_due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(rule)
            .copied()
    }

    /// What this process knows of when `rule`'s links are due; `None`: not known (read the
    /// store). A link wanted now makes them due now, whatever was known.
    fn set_links_due(&self, rule: &str, due: Option<LinksDue>) {
        let mut all = self
            .links_due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match due {
            None => {
                all.remove(rule);
            }
            Some(d) => {
                all.insert(rule.to_owned(), d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IssueScope, JiraId, JiraKey, MovedTo, RemoteState};

    fn mapping(target: Target) -> Mapping {
        let t = Utc::now();
        Mapping {
            rule: "ops".into(),
            jira_key: JiraKey::parse("OPS-7").expect("a key"),
            jira_id: Some(JiraId::parse("10007").expect("an id")),
            target,
            project: "acme/ops".into(),
            project_id: Some(12),
            iid: Some(3),
            web_url: Some("https://git.example.com/gitlab/acme/sub/ops/-/issues/3".into()),
            state: RemoteState::Opened,
            jira_updated: t,
            created_at: t,
            closed_at: None,
            content_hash: None,
            moved_to: None,
            gone_at: None,
            jira_resolved_at: None,
            scope: IssueScope::InScope,
        }
    }

    fn settings() -> LinkBackSettings {
        LinkBackSettings::new(&url::Url::parse("https://git.example.com/gitlab/").expect("a URL"))
    }

    /// The link names the object by host, project id and iid, titles it with the project's path
    /// under GitLab's own path, and sits on the issue's id.
    #[test]
    fn link_of_an_incident() {
        let link = settings()
            .link_for(&mapping(Target::Incident), "[OPS-7] down", true)
            .expect("an incident has a link");
        assert_eq!(link.global_id, "gitlab:git.example.com:12:3");
        assert_eq!(link.title, "acme/sub/ops#3 [OPS-7] down");
        assert_eq!(link.issue, "10007");
        assert!(link.resolved);
    }

    /// Alerts and objects a person deleted have nothing to link.
    #[test]
    fn nothing_to_link() {
        assert!(
            settings()
                .link_for(&mapping(Target::Alert), "t", false)
                .is_none()
        );
        let gone = Mapping {
            gone_at: Some(Utc::now()),
            ..mapping(Target::Issue)
        };
        assert!(settings().link_for(&gone, "t", false).is_none());
    }

    /// A moved object keeps its link's identity (the original's) and shows where it is now.
    #[test]
    fn moved_object_keeps_its_global_id() {
        let moved = Mapping {
            moved_to: Some(MovedTo {
                project_id: 40,
                iid: 9,
            }),
            web_url: Some("https://git.example.com/gitlab/acme/other/-/issues/9".into()),
            ..mapping(Target::Issue)
        };
        let link = settings()
            .link_for(&moved, "[OPS-7] down", false)
            .expect("a link");
        assert_eq!(link.global_id, "gitlab:git.example.com:12:3");
        assert_eq!(link.title, "acme/other#9 [OPS-7] down");
        assert_eq!(
            link.url,
            "https://git.example.com/gitlab/acme/other/-/issues/9"
        );
    }
}
