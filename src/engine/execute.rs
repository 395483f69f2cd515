//! The executor: applies one planned action to GitLab exactly once and commits each step.
//!
//! An action is "GitLab call + store commit". Before a create an intent is committed; a create
//! whose answer was lost (an ambiguous error) or that an earlier, interrupted run may have sent
//! is looked for before it is sent again. A close, reopen or rewrite is idempotent and simply
//! sent. Each commit carries the cursor only once the snapshot is fully replicated or recorded
//! as failed, so a crash between steps replays the rest of the snapshot, never skips it.
//!
//! What a failure means is read from [`PortError`]: an ambiguous create is retried after a look,
//! an error that [stops the run](PortError::stops_run) ends it, any other is this issue's failure,
//! stored with its snapshot for the next cycle.

use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::{
    Commit, Intent, IssueScope, IssueSnapshot, JiraKey, Mapping, NewObject, RemoteObject,
    RemoteState, RunCounts, Target,
};

use super::plan::{Action, plan};
use super::ports::{GitLabSink, JiraSource, Place, PortError, SyncStore};
use super::{
    Cause, EngineError, IssueFailure, PlannedAction, Source, SyncEngine, error_chain, render,
};

/// GitLab rounds to milliseconds; anything further off means it ignored the time we sent.
const TIMESTAMP_TOLERANCE: chrono::Duration = chrono::Duration::seconds(1);

/// What applying one snapshot did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) counts: RunCounts,
    pub(super) failure: Option<IssueFailure>,
    /// The mapping as last committed, if any commit replicated something.
    pub(super) mapping: Option<Mapping>,
    /// The GitLab write the plan called for, if any.
    pub(super) action: Option<PlannedAction>,
    pub(super) timestamps_ignored: bool,
}

/// What every step of applying one snapshot needs: the rule and where it writes.
struct Ctx<'a> {
    rule: &'a RuleConfig,
    place: &'a Place,
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Plans and applies one snapshot, committing each GitLab write (with `cursor`, once the
    /// snapshot is fully replicated or recorded as failed). Independent of any run state, so
    /// snapshots of different keys may be applied concurrently.
    ///
    /// # Errors
    /// The run must stop: the store failed, or GitLab refused something no later request can get
    /// past ([`PortError::stops_run`]). A failure of this issue alone is recorded and returned in
    /// the [`Outcome`].
    pub(super) async fn apply(
        &self,
        rule: &RuleConfig,
        place: &Place,
        snap: IssueSnapshot,
        mapping: Option<Mapping>,
        source: Source,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Outcome, EngineError> {
        let cx = &Ctx { rule, place };
        // A row from before ids were kept takes them now; a moved issue's row takes its new key
        // (so its title, which shows the key, is rewritten).
        let mapping = mapping.map(|m| Mapping {
            jira_id: m.jira_id.or_else(|| snap.id.clone()),
            project_id: m.project_id.or(Some(place.project_id)),
            jira_key: snap.key.clone(),
            // The rule's search returned it: it is in scope (again).
            scope: if source == Source::Search {
                IssueScope::InScope
            } else {
                m.scope
            },
            ..m
        });
        let browse = self.jira.browse_url(&snap.key);
        let obj = render::new_object(rule, &snap, &browse);
        let hash = render::content_hash(&obj);
        let action = plan(&snap, mapping.as_ref(), &hash);
        let span = info_span!("issue", jira_key = %snap.key, action = action.verb());
        async {
            let mut out = Outcome::default();
            if action.writes_gitlab() {
                out.action = Some(PlannedAction {
                    jira_key: snap.key.clone(),
                    action: action.verb(),
                    title: obj.title.clone(),
                });
            }
            match action {
                Action::Skip(reason) => {
                    debug!(?reason, "nothing to do");
                    out.counts.skipped += 1;
                    if source == Source::Retry
                        && let Some(m) = mapping
                    {
                        // A newer change already replicated: the stored failure is obsolete.
                        self.commit(cx, &mut out, Commit::Replicated(m), None)
                            .await?;
                    }
                }
                Action::Touch => {
                    let mut m = mapping.expect("plan() touches only mapped issues");
                    m.jira_updated = snap.updated;
                    m.content_hash = Some(hash);
                    out.counts.skipped += 1;
                    self.commit(cx, &mut out, Commit::Replicated(m), cursor)
                        .await?;
                }
                Action::Create { then_close } => {
                    let m = match self.create(cx, &mut out, &snap, &obj, &hash).await? {
                        Ok(m) => m,
                        Err(e) => {
                            self.fail(cx, &mut out, snap, e, cursor).await?;
                            return Ok(out);
                        }
                    };
                    out.counts.created += 1;
                    info!(iid = ?m.iid, "created in GitLab");
                    // An adopted object may be closed already, or hold older text.
                    let close = then_close && m.state != RemoteState::Closed;
                    let stale = m.content_hash.is_none();
                    let commit_cursor = if close || stale { None } else { cursor };
                    self.commit(cx, &mut out, Commit::Replicated(m.clone()), commit_cursor)
                        .await?;
                    if close {
                        let edit = stale.then_some((&obj, hash));
                        self.set_state(cx, &mut out, snap, m, true, edit, cursor)
                            .await?;
                    } else if stale {
                        self.rewrite(cx, &mut out, snap, m, &obj, hash, cursor)
                            .await?;
                    }
                }
                Action::Reclose { edit } => {
                    let m = mapping.expect("plan() recloses only mapped issues");
                    self.set_state(cx, &mut out, snap.clone(), m, false, None, None)
                        .await?;
                    if out.failure.is_none()
                        && let Some(reopened) = out.mapping.clone()
                    {
                        let edit = edit.then_some((&obj, hash));
                        self.set_state(cx, &mut out, snap, reopened, true, edit, cursor)
                            .await?;
                    }
                }
                Action::Close { edit } | Action::Reopen { edit } => {
                    let close = matches!(action, Action::Close { .. });
                    let m = mapping.expect("plan() closes and reopens only mapped issues");
                    let edit = edit.then_some((&obj, hash));
                    self.set_state(cx, &mut out, snap, m, close, edit, cursor)
                        .await?;
                }
                Action::Update => {
                    let m = mapping.expect("plan() updates only mapped issues");
                    self.rewrite(cx, &mut out, snap, m, &obj, hash, cursor)
                        .await?;
                }
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    async fn commit(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        if let Commit::Replicated(m) = &commit {
            out.mapping = Some(m.clone());
        }
        self.store
            .commit(&cx.rule.name, commit, cursor)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))
    }

    /// Records a per-issue failure (or stops the run if GitLab refuses everything).
    async fn fail(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        e: G::Error,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        if e.stops_run() {
            return Err(EngineError::GitLab {
                rule: cx.rule.name.clone(),
                jira_key: snap.key,
                source: Cause::new(e),
            });
        }
        let message = error_chain(&e);
        warn!(jira_key = %snap.key, error = %message, "replication failed; it is retried next cycle");
        out.counts.failed += 1;
        out.failure = Some(IssueFailure {
            jira_key: snap.key.to_string(),
            error: message.clone(),
        });
        self.commit(
            cx,
            out,
            Commit::Failed {
                snapshot: snap,
                error: message,
            },
            cursor,
        )
        .await
    }

    /// Creates the GitLab object for `snap` exactly once: the intent is committed first, and any
    /// attempt after one whose outcome is unknown starts with a lookup.
    ///
    /// The outer error stops the run (the intent could not be recorded, so nothing may be sent);
    /// the inner one is this issue's failure.
    async fn create(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: &IssueSnapshot,
        obj: &NewObject,
        hash: &str,
    ) -> Result<Result<Mapping, G::Error>, EngineError> {
        let intent = self
            .store
            .begin_intent(&cx.rule.name, cx.place, snap.id.as_ref(), &snap.key)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))?;
        let adopted = match self.adoptable(cx, &snap.key).await? {
            Ok(adopted) => adopted,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .create_once(cx, out, snap, obj, &intent, adopted)
            .await
            .map(|(m, current)| Mapping {
                // An adopted object made from older Jira text keeps no hash of the new one, so
                // the rewrite that follows (and any later plan) carries the edit over.
                content_hash: current.then(|| hash.to_owned()),
                ..m
            }))
    }

    async fn create_once(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: &IssueSnapshot,
        obj: &NewObject,
        intent: &Intent,
        mut adopted: Option<RemoteObject>,
    ) -> Result<(Mapping, bool), G::Error> {
        let dest = &cx.place.dest;
        let browse = self.jira.browse_url(&snap.key);
        let mut attempt = 0u32;
        let remote = loop {
            if attempt == 0
                && let Some(found) = adopted.take()
            {
                info!(iid = ?found.iid, "found an object the sync made that the store did not know; adopting it");
                break found;
            }
            attempt += 1;
            if (intent.previous_attempts > 0 || attempt > 1)
                && let Some(found) = self
                    .gitlab
                    .find(dest, obj, &browse, intent.started_at)
                    .await?
            {
                info!(iid = ?found.iid, "found what an earlier attempt created; not creating again");
                break found;
            }
            match self.gitlab.create(dest, obj).await {
                Ok(r) => break r,
                Err(e) if e.is_ambiguous() && attempt < self.settings.retry.max_attempts => {
                    let delay = self.settings.retry.backoff(attempt, rand::random());
                    warn!(
                        cause = %error_chain(&e),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "create may or may not have reached GitLab; will look before retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        };
        if dest.target != Target::Alert
            && (remote.created_at - snap.created).abs() > TIMESTAMP_TOLERANCE
        {
            self.timestamps_ignored(cx, out, "created_at", snap.created, remote.created_at);
        }
        // What GitLab holds, where its answer shows it: an adopted object may predate an edit.
        let current = remote.content.as_ref().is_none_or(|(title, description)| {
            *title == obj.title && description.trim_end() == obj.description.trim_end()
        });
        Ok((mapping_from(cx, snap, &remote), current))
    }

    /// Closes (`close`) or reopens the object, then commits; then rewrites it if `edit` holds
    /// the new content and its hash.
    #[allow(clippy::too_many_arguments)]
    async fn set_state(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        close: bool,
        edit: Option<(&NewObject, String)>,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let dest = &cx.place.dest;
        let result = if close {
            let at = snap.resolved_at.unwrap_or(snap.updated);
            self.gitlab.close(dest, &m, at).await
        } else {
            self.gitlab.reopen(dest, &m, snap.updated).await
        };
        let remote = match result {
            Ok(r) => r,
            Err(e) => return self.fail(cx, out, snap, e, cursor).await,
        };
        if close {
            out.counts.closed += 1;
            info!(closed_at = ?remote.closed_at, "closed in GitLab");
            if dest.target != Target::Alert
                && let (Some(asked), Some(got)) = (snap.resolved_at, remote.closed_at)
                && (got - asked).abs() > TIMESTAMP_TOLERANCE
            {
                self.timestamps_ignored(cx, out, "closed_at", asked, got);
            }
        } else {
            out.counts.reopened += 1;
            info!("reopened in GitLab");
        }
        let updated = Mapping {
            jira_resolved_at: if close { snap.resolved_at } else { None },
            ..m.followed(&remote, snap.updated)
        };
        match edit {
            None => {
                self.commit(cx, out, Commit::Replicated(updated), cursor)
                    .await
            }
            Some((obj, hash)) => {
                self.commit(cx, out, Commit::Replicated(updated.clone()), None)
                    .await?;
                self.rewrite(cx, out, snap, updated, obj, hash, cursor)
                    .await
            }
        }
    }

    /// The object the sync made for `key` in the project that the store does not know (a lost
    /// or restored store), if any. The project is looked through once per process, before its
    /// first create: the objects above the highest iid the store knows (all of the sync user's
    /// when it knows none).
    async fn adoptable(
        &self,
        cx: &Ctx<'_>,
        key: &JiraKey,
    ) -> Result<Result<Option<RemoteObject>, G::Error>, EngineError> {
        let mut all = self.adoptable.lock().await;
        let objects = match all.entry(cx.place.project_id) {
            Entry::Occupied(seen) => seen.into_mut(),
            Entry::Vacant(slot) => {
                let above = self
                    .store
                    .max_iid(cx.place)
                    .await
                    .map_err(|e| EngineError::store(cx.rule, e))?;
                let found = match self
                    .gitlab
                    .own_objects(&cx.place.dest, above, &self.jira.browse_base())
                    .await
                {
                    Ok(found) => found,
                    Err(e) => return Ok(Err(e)),
                };
                if !found.is_empty() {
                    warn!(
                        project = %cx.place.project(),
                        count = found.len(),
                        "GitLab holds objects the sync made that the store does not know (a lost or \
                         restored store?); they are adopted instead of created again"
                    );
                }
                slot.insert(found.into_iter().collect())
            }
        };
        Ok(Ok(objects.remove(key)))
    }

    /// Rewrites the title and description after a Jira edit, then commits the new hash.
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        obj: &NewObject,
        hash: String,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let remote = match self.gitlab.update(&cx.place.dest, &m, obj).await {
            Ok(r) => r,
            Err(e) => return self.fail(cx, out, snap, e, cursor).await,
        };
        out.counts.updated += 1;
        info!("title and description rewritten after a Jira edit");
        let updated = Mapping {
            content_hash: Some(hash),
            ..m.followed(&remote, snap.updated)
        };
        self.commit(cx, out, Commit::Replicated(updated), cursor)
            .await
    }

    fn timestamps_ignored(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        field: &str,
        asked: DateTime<Utc>,
        got: DateTime<Utc>,
    ) {
        out.timestamps_ignored = true;
        let project = &cx.place.dest.project;
        let first = self
            .warned_timestamps
            .lock()
            .map(|mut w| w.insert(project.clone()))
            .unwrap_or(true);
        if first {
            warn!(
                project = %project,
                field,
                asked = %asked,
                stored = %got,
                "GitLab ignored the Jira time we sent: the token is not Owner of the project, so \
                 GitLab records the sync's clock and DORA time to restore will be off; give the \
                 token's user the Owner role for exact times"
            );
        }
    }
}

fn mapping_from(cx: &Ctx<'_>, snap: &IssueSnapshot, remote: &RemoteObject) -> Mapping {
    Mapping {
        rule: cx.rule.name.clone(),
        jira_key: snap.key.clone(),
        jira_id: snap.id.clone(),
        target: cx.place.target(),
        project: cx.place.project().to_owned(),
        project_id: Some(cx.place.project_id),
        iid: remote.iid,
        web_url: remote.web_url.clone(),
        state: remote.state,
        jira_updated: snap.updated,
        created_at: remote.created_at,
        closed_at: remote.closed_at,
        content_hash: None,
        jira_resolved_at: None,
        scope: crate::domain::IssueScope::InScope,
    }
}
