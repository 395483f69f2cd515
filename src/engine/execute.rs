//! The executor: applies one planned action to GitLab exactly once and commits each step.
//!
//! An action is "GitLab call + store commit". Before a create an intent is committed; a create
//! whose answer was lost (an ambiguous error) or that an earlier, interrupted run may have sent
//! is looked for before it is sent again. A close, reopen or rewrite is idempotent and simply
//! sent. Each commit carries the cursor only once the snapshot is fully replicated or recorded
//! as failed, so a crash between steps replays the rest of the snapshot, never skips it.
//!
//! One commit is put off: the mapping of an object created already resolved waits for its
//! close, whose commit carries it ([`Outcome::unsaved`]; the commit of a failure carries it
//! first). Until then the store holds the create's intent, which is what a crash in between
//! leaves either way: the next attempt looks the object up and adopts it (the store's module
//! doc, "Mapping commits").
//!
//! What a failure means is read from [`PortError`]: an ambiguous create is retried after a look,
//! an error that [stops the run](PortError::stops_run) ends it, and so does the third
//! [outage](PortError::is_outage) in a row; any other is this issue's failure, stored with its
//! snapshot for a later cycle.
//!
//! What people do in GitLab is followed, not fought: an object a person
//! [deleted](PortError::is_gone) is recorded as gone and never written again; an issue a person
//! moved to another project (its answer carries `moved_to_id`) is followed to its copy, which
//! every later write addresses; an alert recovery with [nothing to
//! close](PortError::nothing_to_close) is recorded as resolved. A request [too
//! large](PortError::is_too_large) for a proxy is sent again with its description halved.

use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::RuleConfig;
use crate::domain::{
    Commit, IncidentDetails, IncidentSeverity, Intent, IssueScope, IssueSnapshot, JiraKey, Mapping,
    MovedTo, NewObject, RemoteObject, RemoteState, RunCounts, Target,
};

use super::incident::Known;
use super::plan::{Action, plan};
use super::ports::{GitLabSink, JiraSource, Place, PortError, SyncStore};
use super::{
    Cause, EngineError, IssueFailure, OUTAGE_STREAK, PlannedAction, RunLog, Source, SyncEngine,
    error_chain, render,
};

/// GitLab rounds to milliseconds; anything further off means it ignored the time we sent.
const TIMESTAMP_TOLERANCE: chrono::Duration = chrono::Duration::seconds(1);

/// Moves followed within one write at most: more means something is wrong with the answers,
/// and the object is treated as gone rather than chased for ever.
const MAX_MOVES_FOLLOWED: u32 = 10;

/// A write to an object that exists.
#[derive(Clone, Copy)]
enum Write<'a> {
    /// Close it at this time.
    Close(DateTime<Utc>),
    /// Reopen it (an alert fires again with this content).
    Reopen(&'a NewObject, DateTime<Utc>),
    /// Rewrite its title and description.
    Update(&'a NewObject),
}

/// What became of a write to an object that exists.
enum Sent<E> {
    /// GitLab answered; for an issue a person moved, the copy's answer.
    Done(RemoteObject),
    /// The object is gone (a person deleted it, or moved it out of the token's sight): why.
    Gone(&'static str),
    /// This issue's failure.
    Failed(E),
}

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
    /// GitLab filed an incident as a plain issue (the token is below Reporter).
    pub(super) filed_as_issue: bool,
    /// The object came from an earlier run (adopted, or found after a lost answer), which may
    /// have written its incident details too.
    pub(super) adopted: bool,
    /// From the change in Jira to its GitLab write, by Jira's clock, when the snapshot was
    /// written to GitLab (a live run's change, not a backfill's history).
    pub(super) lag: Option<std::time::Duration>,
    /// With `[jira] link_back`: the GitLab title, and whether Jira has the issue resolved, for
    /// the remote link each commit of a mapping wants first.
    pub(super) link: Option<(String, bool)>,
    /// A created object's mapping not committed yet, because its close follows at once: the
    /// next commit of the issue carries it (a newer mapping supersedes it, keeping details
    /// settled with it; anything else is committed after it).
    pub(super) unsaved: Option<Commit>,
}

/// A write as the log tells it: made, and planned (`--dry-run`).
pub(super) type Said = (&'static str, &'static str);
const CREATED: Said = ("created in GitLab", "would be created in GitLab (dry run)");
const CLOSED: Said = ("closed in GitLab", "would be closed in GitLab (dry run)");
const REOPENED: Said = (
    "reopened in GitLab",
    "would be reopened in GitLab (dry run)",
);
/// A stage label step replayed ([`super::history`]).
pub(super) const STAGE_REPLAYED: Said = (
    "stage replayed in GitLab",
    "stage would be replayed in GitLab (dry run)",
);

/// What every step of applying one snapshot needs: the rule, where it writes, and the run's
/// log entry, opened before the first write.
pub(super) struct Ctx<'a> {
    pub(super) rule: &'a RuleConfig,
    pub(super) place: &'a Place,
    pub(super) log: &'a RunLog,
}

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// Plans and applies one snapshot, committing each GitLab write (with `cursor`, once the
    /// snapshot is fully replicated or recorded as failed). Independent of any run state but the
    /// rule's outage count, so snapshots of different keys may be applied concurrently.
    ///
    /// # Errors
    /// The run must stop: the store failed, GitLab refused something no later request can get
    /// past ([`PortError::stops_run`]), or GitLab looks down ([`OUTAGE_STREAK`] outages in a
    /// row). A failure of this issue alone is recorded and returned in the [`Outcome`].
    pub(super) async fn apply(
        &self,
        cx: &Ctx<'_>,
        snap: IssueSnapshot,
        mapping: Option<Mapping>,
        source: Source,
        cursor: Option<DateTime<Utc>>,
        begun: Option<Intent>,
    ) -> Result<Outcome, EngineError> {
        let (rule, place) = (cx.rule, cx.place);
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
        // The rule's history keys: transitions read, `created`/`resolved_at` from their
        // sources; a snapshot with stage steps to replay holds the cursor back until they are.
        let shaped = self.shape(cx, snap, mapping.as_ref()).await?;
        let (snap, history) = (shaped.snap, shaped.history);
        let staged = history.is_some() && !rule.history.stage_labels.is_empty();
        let before = history.as_ref().and(mapping.clone());
        let (cursor, final_cursor) = if staged {
            (None, cursor)
        } else {
            (cursor, cursor)
        };
        let browse = self.jira.browse_url(&snap.key);
        let obj = render::new_object(rule, &snap, &browse);
        let hash = render::content_hash(&obj);
        let action = plan(&snap, mapping.as_ref(), &hash);
        let span = info_span!("issue", jira_key = %snap.key, action = action.verb());
        let changed_at = snap.updated;
        // Incident details (`incident`): while some are still to be written, the snapshot's
        // cursor waits for them, so a crash before they are committed replays the snapshot.
        let mut details = self
            .details_due(rule, &snap, &obj, &browse, mapping.as_ref())
            .await?
            .map(|(wanted, stored)| (wanted, stored, mapping.clone(), snap.clone()));
        // What the writes carry when no details are due.
        let (held_cursor, held_final) = (cursor, final_cursor);
        // Details come last: while they are due, neither the write nor the stage replay
        // moves the cursor; their commit does.
        let (cursor, mut final_cursor, details_cursor) = match details {
            Some(_) => (None, None, final_cursor),
            None => (cursor, final_cursor, None),
        };
        async {
            // Set by a create: what its incident holds beyond the store (`incident::Known`).
            let mut created = None;
            let mut out = Outcome {
                link: self
                    .settings
                    .link_back
                    .as_ref()
                    .map(|_| (obj.title.clone(), snap.resolved_at.is_some())),
                ..Outcome::default()
            };
            if !matches!(action, Action::Skip(_)) {
                self.open_log(rule, cx.log).await?;
            }
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
                Action::Create { then_close } => 'create: {
                    let m = match self.create(cx, &mut out, &snap, &obj, &hash, begun).await? {
                        Ok(m) => m,
                        Err(e) => {
                            self.fail(cx, &mut out, snap, e, cursor).await?;
                            break 'create;
                        }
                    };
                    out.counts.created += 1;
                    info!(iid = ?m.iid, "{}", self.said(CREATED));
                    let mut cursor = cursor;
                    let mut settled = None;
                    if let Some((wanted, stored, ..)) = &details {
                        if !out.adopted && wanted.is_default() && *stored == Default::default() {
                            // GitLab's defaults are what it wants: nothing to send, and the
                            // details settle with the mapping.
                            settled = Some(IncidentDetails {
                                severity: Some(IncidentSeverity::GITLAB_DEFAULT),
                                ..IncidentDetails::default()
                            });
                        } else {
                            // Before the mapping, adopted or not: a store that holds the
                            // mapping must say which events to look for.
                            created = Some(self.begin_details(cx, &mut out, &m, wanted).await?);
                        }
                    }
                    if settled.is_some() {
                        details = None;
                        cursor = held_cursor;
                        final_cursor = held_final;
                    }
                    // An adopted object may be closed already, or hold older text.
                    let close = then_close && m.state != RemoteState::Closed;
                    let stale = m.content_hash.is_none();
                    let commit_cursor = if close || stale { None } else { cursor };
                    let first = match settled {
                        Some(details) => Commit::Settled {
                            mapping: m.clone(),
                            details,
                        },
                        None => Commit::Replicated(m.clone()),
                    };
                    if close && !stale {
                        // The close follows at once; its commit carries the mapping.
                        out.unsaved = Some(first);
                    } else {
                        self.commit(cx, &mut out, first, commit_cursor).await?;
                    }
                    if close {
                        let edit = stale.then_some(hash);
                        self.set_state(cx, &mut out, snap, m, true, &obj, edit, cursor)
                            .await?;
                    } else if stale {
                        self.rewrite(cx, &mut out, snap, m, &obj, hash, cursor)
                            .await?;
                    }
                }
                Action::Reclose { edit } => {
                    let m = mapping.expect("plan() recloses only mapped issues");
                    self.set_state(cx, &mut out, snap.clone(), m, false, &obj, None, None)
                        .await?;
                    if out.failure.is_none()
                        && let Some(reopened) = out.mapping.clone()
                    {
                        let edit = edit.then_some(hash);
                        self.set_state(cx, &mut out, snap, reopened, true, &obj, edit, cursor)
                            .await?;
                    }
                }
                Action::Close { edit } | Action::Reopen { edit } => {
                    let close = matches!(action, Action::Close { .. });
                    let m = mapping.expect("plan() closes and reopens only mapped issues");
                    let edit = edit.then_some(hash);
                    self.set_state(cx, &mut out, snap, m, close, &obj, edit, cursor)
                        .await?;
                }
                Action::Update => {
                    let m = mapping.expect("plan() updates only mapped issues");
                    self.rewrite(cx, &mut out, snap, m, &obj, hash, cursor)
                        .await?;
                }
            }
            if let Some(h) = history {
                self.finish_history(cx, &mut out, h, before, final_cursor, staged)
                    .await?;
            }
            if let Some((wanted, stored, entry, snap)) = details {
                match out.mapping.clone().or(entry) {
                    Some(m)
                        if out.failure.is_none() && m.gone_at.is_none() && !out.filed_as_issue =>
                    {
                        let known = match created {
                            _ if out.adopted => Known::MayHoldMore,
                            Some(known) => known,
                            None => Known::Stored,
                        };
                        self.write_details(
                            cx,
                            &mut out,
                            snap,
                            &m,
                            &wanted,
                            stored,
                            known,
                            details_cursor,
                        )
                        .await?;
                    }
                    _ => self.cursor_only(cx, details_cursor).await?,
                }
            }
            let c = &out.counts;
            if source != Source::Backfill && c.created + c.closed + c.reopened + c.updated > 0 {
                out.lag = Some(
                    (Utc::now() + self.skew() - changed_at)
                        .to_std()
                        .unwrap_or_default(),
                );
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// What the log says of a write GitLab answered (`what`: as made, and as planned): a dry
    /// run's writes are answered without being sent.
    pub(super) fn said(&self, what: Said) -> &'static str {
        if self.gitlab.plans_only() {
            what.1
        } else {
            what.0
        }
    }

    /// Commits `commit` with `cursor`, and the unsaved mapping of `out` with it (module doc).
    pub(super) async fn commit(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let Some(unsaved) = out.unsaved.take() else {
            return self.commit_now(cx, out, commit, cursor).await;
        };
        match (unsaved, commit) {
            // A newer state of the same object: it supersedes the unsaved one.
            (Commit::Settled { details, .. }, Commit::Replicated(m)) => {
                let settled = Commit::Settled {
                    mapping: m,
                    details,
                };
                self.commit_now(cx, out, settled, cursor).await
            }
            (_, newer @ (Commit::Replicated(_) | Commit::Settled { .. })) => {
                self.commit_now(cx, out, newer, cursor).await
            }
            // A failure or details: the mapping first, the cursor with the last.
            (unsaved, other) => {
                self.commit_now(cx, out, unsaved, None).await?;
                self.commit_now(cx, out, other, cursor).await
            }
        }
    }

    async fn commit_now(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        commit: Commit,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        self.open_log(cx.rule, cx.log).await?;
        if let Commit::Replicated(m) | Commit::Settled { mapping: m, .. } = &commit {
            out.mapping = Some(m.clone());
            // Before the mapping: a mapping the store holds never lacks its link.
            self.want_link(cx, out, m).await?;
        }
        self.store
            .commit(&cx.rule.name, commit, cursor)
            .await
            .map_err(|e| EngineError::store(cx.rule, e))
    }

    /// Records a per-issue failure (or stops the run if GitLab refuses everything, or looks
    /// down: the [`OUTAGE_STREAK`]th outage in a row is not recorded, so the cursor stays
    /// before it and the next cycle reads it again).
    pub(super) async fn fail(
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
        if e.is_outage() {
            let streak = self.outage(&cx.rule.name);
            if streak >= OUTAGE_STREAK {
                return Err(EngineError::Outage {
                    rule: cx.rule.name.clone(),
                    jira_key: snap.key,
                    failures: streak,
                    source: Cause::new(e),
                });
            }
        } else {
            self.answered(&cx.rule.name);
        }
        let message = error_chain(&e);
        warn!(jira_key = %snap.key, error = %message, "replication failed; it is retried after a backoff");
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

    /// Creates the GitLab object for `snap` exactly once: the intent is committed first (or
    /// was, with its page's: `begun`), and any attempt after one whose outcome is unknown starts
    /// with a lookup.
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
        begun: Option<Intent>,
    ) -> Result<Result<Mapping, G::Error>, EngineError> {
        let intent = match begun {
            Some(intent) => intent,
            None => self
                .store
                .begin_intent(&cx.rule.name, cx.place, snap.id.as_ref(), &snap.key)
                .await
                .map_err(|e| EngineError::store(cx.rule, e))?,
        };
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
        // Creates sent whose outcome is unknown; while any may have been applied, look first.
        let mut lost = 0u32;
        let mut look = intent.previous_attempts > 0;
        let mut keep = render::body_chars(obj);
        let mut cut: Option<NewObject> = None;
        let remote = loop {
            if let Some(found) = adopted.take() {
                info!(iid = ?found.iid, "found an object the sync made that the store did not know; adopting it");
                out.adopted = true;
                break found;
            }
            if look
                && let Some(found) = self
                    .gitlab
                    .find(dest, obj, &browse, intent.started_at)
                    .await?
            {
                info!(iid = ?found.iid, "found what an earlier attempt created; not creating again");
                out.adopted = true;
                break found;
            }
            match self.gitlab.create(dest, cut.as_ref().unwrap_or(obj)).await {
                Ok(r) => break r,
                Err(e) if e.is_too_large() && keep > 0 => {
                    keep /= 2;
                    warn!(
                        cause = %error_chain(&e),
                        kept_chars = keep,
                        "the create was refused as too large; sending it again with the description halved"
                    );
                    cut = Some(render::truncated(obj, keep));
                }
                Err(e) if e.is_ambiguous() && lost + 1 < self.settings.retry.max_attempts => {
                    lost += 1;
                    look = true;
                    let delay = self.settings.retry.backoff(lost, rand::random());
                    warn!(
                        cause = %error_chain(&e),
                        attempt = lost,
                        delay_ms = delay.as_millis() as u64,
                        "create may or may not have reached GitLab; will look before retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.answered(&cx.rule.name);
        if dest.target != Target::Alert
            && (remote.created_at - snap.created).abs() > TIMESTAMP_TOLERANCE
        {
            self.timestamps_ignored(cx, out, "created_at", snap.created, remote.created_at);
        }
        if dest.target == Target::Incident && remote.incident == Some(false) {
            self.filed_as_issue(cx, out);
        }
        // What GitLab holds, where its answer shows it: an adopted object may predate an edit.
        // A description cut to fit is current: the cut is what fits.
        let sent = cut.as_ref().unwrap_or(obj);
        let current = remote.content.as_ref().is_none_or(|(title, description)| {
            *title == sent.title && description.trim_end() == sent.description.trim_end()
        });
        Ok((mapping_from(cx, snap, &remote), current))
    }

    /// Closes (`close`) or reopens the object, then commits; then rewrites it with `obj` if
    /// `edit` holds the new content's hash.
    #[allow(clippy::too_many_arguments)]
    async fn set_state(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        mut m: Mapping,
        close: bool,
        obj: &NewObject,
        edit: Option<String>,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let dest = &cx.place.dest;
        let write = if close {
            Write::Close(closing_time(&snap))
        } else {
            Write::Reopen(obj, snap.updated)
        };
        let remote = match self.send(cx, out, &mut m, write).await? {
            Sent::Done(r) => r,
            Sent::Gone(why) => return self.gone(cx, out, snap, m, why, cursor).await,
            Sent::Failed(e) => return self.fail(cx, out, snap, e, cursor).await,
        };
        if close {
            out.counts.closed += 1;
            info!(closed_at = ?remote.closed_at, "{}", self.said(CLOSED));
            if dest.target != Target::Alert
                && let (Some(asked), Some(got)) = (snap.resolved_at, remote.closed_at)
                && (got - asked).abs() > TIMESTAMP_TOLERANCE
            {
                self.timestamps_ignored(cx, out, "closed_at", asked, got);
            }
        } else {
            out.counts.reopened += 1;
            info!("{}", self.said(REOPENED));
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
            Some(hash) => {
                self.commit(cx, out, Commit::Replicated(updated.clone()), None)
                    .await?;
                self.rewrite(cx, out, snap, updated, obj, hash, cursor)
                    .await
            }
        }
    }

    /// Sends `write` to the object of `m`. An issue a person moved is followed to its copy
    /// (recorded in `m` and committed) and the write sent there; an object a person deleted is
    /// [`Sent::Gone`]; an alert recovery with nothing open to close is done.
    async fn send(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        m: &mut Mapping,
        write: Write<'_>,
    ) -> Result<Sent<G::Error>, EngineError> {
        let mut moves = 0u32;
        loop {
            let remote = match self.send_once(cx, m, write).await {
                Ok(r) => r,
                Err(e) if e.is_gone() => return Ok(Sent::Gone("a person deleted it in GitLab")),
                Err(e) if matches!(write, Write::Close(_)) && e.nothing_to_close() => {
                    self.answered(&cx.rule.name);
                    info!(
                        cause = %error_chain(&e),
                        "GitLab had nothing open to close (a person resolved the alert, or an \
                         earlier recovery's answer was lost); recorded as resolved"
                    );
                    return Ok(Sent::Done(RemoteObject {
                        iid: m.iid,
                        web_url: m.web_url.clone(),
                        state: RemoteState::Closed,
                        created_at: m.created_at,
                        closed_at: None,
                        content: None,
                        incident: None,
                        moved_to_id: None,
                    }));
                }
                Err(e) => return Ok(Sent::Failed(e)),
            };
            self.answered(&cx.rule.name);
            let Some(copy_id) = remote.moved_to_id.filter(|_| m.target != Target::Alert) else {
                return Ok(Sent::Done(remote));
            };
            moves += 1;
            if moves > MAX_MOVES_FOLLOWED {
                return Ok(Sent::Gone("moved again and again while being followed"));
            }
            let copy = match self.gitlab.moved_copy(&cx.place.dest, m, copy_id).await {
                Ok(Some((project_id, copy))) => copy
                    .iid
                    .map(|iid| (MovedTo { project_id, iid }, copy.web_url)),
                Ok(None) => None,
                Err(e) => return Ok(Sent::Failed(e)),
            };
            let Some((to, web_url)) = copy else {
                return Ok(Sent::Gone(
                    "a person moved it to a project the token cannot see",
                ));
            };
            info!(
                from_iid = ?m.address().1,
                to_project_id = to.project_id,
                to_iid = to.iid,
                "a person moved the GitLab issue to another project; following it to the copy"
            );
            m.moved_to = Some(to);
            m.web_url = web_url;
            self.commit(cx, out, Commit::Replicated(m.clone()), None)
                .await?;
        }
    }

    /// One write to the object `m` addresses; a rewrite or reopen refused as too large is sent
    /// again with the description halved, until it fits or there is nothing left to cut.
    async fn send_once(
        &self,
        cx: &Ctx<'_>,
        m: &Mapping,
        write: Write<'_>,
    ) -> Result<RemoteObject, G::Error> {
        let dest = &cx.place.dest;
        let (obj, reopen_at) = match write {
            Write::Close(at) => return self.gitlab.close(dest, m, at).await,
            Write::Reopen(obj, at) => (obj, Some(at)),
            Write::Update(obj) => (obj, None),
        };
        let mut keep = render::body_chars(obj);
        let mut cut: Option<NewObject> = None;
        loop {
            let sent = cut.as_ref().unwrap_or(obj);
            let result = match reopen_at {
                Some(at) => self.gitlab.reopen(dest, m, sent, at).await,
                None => self.gitlab.update(dest, m, sent).await,
            };
            match result {
                Err(e) if e.is_too_large() && keep > 0 => {
                    keep /= 2;
                    warn!(
                        cause = %error_chain(&e),
                        kept_chars = keep,
                        "the write was refused as too large; sending it again with the description halved"
                    );
                    cut = Some(render::truncated(obj, keep));
                }
                other => return other,
            }
        }
    }

    /// Records that the object of `m` is gone from GitLab: warned once, here, and never written
    /// again (the plan skips it), so no failure is kept either.
    pub(super) async fn gone(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        m: Mapping,
        why: &'static str,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        self.answered(&cx.rule.name);
        let (project_id, iid) = m.address();
        warn!(
            project_id = ?project_id,
            iid = ?iid,
            reason = why,
            "the GitLab object is gone ({why}); recorded as gone, it is never written again"
        );
        out.counts.skipped += 1;
        let m = Mapping {
            gone_at: Some(Utc::now()),
            jira_updated: snap.updated.max(m.jira_updated),
            ..m
        };
        self.commit(cx, out, Commit::Replicated(m), cursor).await
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

    /// Rewrites the title and description after a Jira edit, then commits the new hash (of the
    /// whole text, even if a cut of it was what fitted).
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        cx: &Ctx<'_>,
        out: &mut Outcome,
        snap: IssueSnapshot,
        mut m: Mapping,
        obj: &NewObject,
        hash: String,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<(), EngineError> {
        let remote = match self.send(cx, out, &mut m, Write::Update(obj)).await? {
            Sent::Done(r) => r,
            Sent::Gone(why) => return self.gone(cx, out, snap, m, why, cursor).await,
            Sent::Failed(e) => return self.fail(cx, out, snap, e, cursor).await,
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

impl<J: JiraSource, G: GitLabSink, S: SyncStore> SyncEngine<J, G, S> {
    /// GitLab filed an incident as a plain issue: warned once per project per process.
    fn filed_as_issue(&self, cx: &Ctx<'_>, out: &mut Outcome) {
        out.filed_as_issue = true;
        let first = self
            .warned_issue_type
            .lock()
            .map(|mut w| w.insert(cx.place.project_id))
            .unwrap_or(true);
        if first {
            warn!(
                project = %cx.place.project(),
                "GitLab was asked for an incident and filed it as a plain issue: the token's role \
                 is below Reporter, so GitLab drops issue_type=incident silently and DORA does not \
                 count these; give the token's user Reporter at least (Owner for exact times)"
            );
        }
    }

    /// One more outage in a row for `rule`'s run; returns how many now.
    fn outage(&self, rule: &str) -> u32 {
        let mut streaks = self
            .outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = streaks.entry(rule.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    /// GitLab answered for `rule` (whatever it said): the outages in a row start again.
    pub(super) fn answered(&self, rule: &str) {
        self.outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(rule);
    }
}

/// The time GitLab is asked to close `snap`'s object at: the moment service counts as restored
/// (DORA's time to restore ends there; the incident's "End time" event is written there too).
pub(super) fn closing_time(snap: &IssueSnapshot) -> DateTime<Utc> {
    snap.resolved_at.unwrap_or(snap.updated)
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
        moved_to: None,
        gone_at: None,
        jira_resolved_at: None,
        scope: crate::domain::IssueScope::InScope,
    }
}
