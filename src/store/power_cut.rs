//! A power-cut test of the store's durability argument (the module doc's "Durability"): the
//! engine runs against the real store and an in-memory Jira and GitLab, and after some cycles
//! the store's files are put back as they were at the last durable commit, which is the most a
//! power cut can take (a checkpoint may have made more durable, never less). GitLab keeps
//! everything it applied. In the end every Jira issue has exactly one GitLab object, in the
//! state Jira says.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use chrono::{DateTime, Utc};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreOptions};
use crate::config::{Config, Destination};
use crate::domain::{
    Commit, IncidentSeverity, IssueScope, IssueSnapshot, JiraId, JiraKey, JiraUser, Mapping,
    NewObject, NewTimelineEvent, PageCursor, ReadBack, RemoteObject, RemoteState, RunMode,
    SearchPage, Target, TimelineEvent,
};
use crate::engine::ports::SyncStore;
use crate::engine::ports::{GitLabSink, JiraSource, ResolvedProject};
use crate::engine::testkit::{Call, MemError, MemGitLab, MemJira, MemObject};
use crate::engine::{EngineSettings, SyncEngine};

/// A port shared by the engines of successive "processes".
struct Shared<T>(Arc<T>);

impl JiraSource for Shared<MemJira> {
    type Error = MemError;

    async fn search(&self, jql: &str, page: &PageCursor) -> Result<SearchPage, MemError> {
        self.0.search(jql, page).await
    }

    async fn count(&self, jql: &str) -> Result<Option<u64>, MemError> {
        self.0.count(jql).await
    }

    async fn issues_by_id(&self, ids: &[JiraId]) -> Result<ReadBack, MemError> {
        self.0.issues_by_id(ids).await
    }

    async fn transitions(
        &self,
        ids: &[JiraId],
    ) -> Result<std::collections::HashMap<JiraId, Vec<crate::domain::Transition>>, MemError> {
        self.0.transitions(ids).await
    }

    async fn myself(&self) -> Result<JiraUser, MemError> {
        self.0.myself().await
    }

    async fn put_remote_link(&self, link: &crate::domain::RemoteLink) -> Result<(), MemError> {
        self.0.put_remote_link(link).await
    }

    fn browse_base(&self) -> String {
        self.0.browse_base()
    }
}

impl GitLabSink for Shared<MemGitLab> {
    type Error = MemError;

    async fn create(&self, dest: &Destination, obj: &NewObject) -> Result<RemoteObject, MemError> {
        self.0.create(dest, obj).await
    }

    async fn find(
        &self,
        dest: &Destination,
        obj: &NewObject,
        browse_url: &str,
        attempted_since: DateTime<Utc>,
    ) -> Result<Option<RemoteObject>, MemError> {
        self.0.find(dest, obj, browse_url, attempted_since).await
    }

    async fn resolve_project(&self, configured: &str) -> Result<ResolvedProject, MemError> {
        self.0.resolve_project(configured).await
    }

    async fn own_objects(
        &self,
        dest: &Destination,
        above_iid: Option<u64>,
        browse_base: &str,
    ) -> Result<Vec<(JiraKey, RemoteObject)>, MemError> {
        self.0.own_objects(dest, above_iid, browse_base).await
    }

    async fn close(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        self.0.close(dest, mapping, at).await
    }

    async fn update(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
    ) -> Result<RemoteObject, MemError> {
        self.0.update(dest, mapping, obj).await
    }

    async fn add_label(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        label: &str,
    ) -> Result<RemoteObject, MemError> {
        self.0.add_label(dest, mapping, label).await
    }

    async fn relabel(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        add: Option<&str>,
        remove: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        self.0.relabel(dest, mapping, add, remove, at).await
    }

    async fn label_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<crate::domain::LabelEvent>, MemError> {
        self.0.label_events(dest, mapping).await
    }

    async fn delete(&self, dest: &Destination, mapping: &Mapping) -> Result<(), MemError> {
        GitLabSink::delete(&*self.0, dest, mapping).await
    }

    async fn reopen(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        obj: &NewObject,
        at: DateTime<Utc>,
    ) -> Result<RemoteObject, MemError> {
        self.0.reopen(dest, mapping, obj, at).await
    }

    async fn moved_copy(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        copy_id: u64,
    ) -> Result<Option<(u64, RemoteObject)>, MemError> {
        self.0.moved_copy(dest, mapping, copy_id).await
    }

    async fn set_severity(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        severity: IncidentSeverity,
    ) -> Result<(), MemError> {
        self.0.set_severity(dest, mapping, severity).await
    }

    async fn timeline_events(
        &self,
        dest: &Destination,
        mapping: &Mapping,
    ) -> Result<Vec<TimelineEvent>, MemError> {
        self.0.timeline_events(dest, mapping).await
    }

    async fn create_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, MemError> {
        self.0.create_timeline_event(dest, mapping, event).await
    }

    async fn update_timeline_event(
        &self,
        dest: &Destination,
        mapping: &Mapping,
        id: &str,
        event: &NewTimelineEvent,
    ) -> Result<TimelineEvent, MemError> {
        self.0.update_timeline_event(dest, mapping, id, event).await
    }
}

/// A config with one incident rule writing `concurrency` issues at once, with or without
/// `timeline_events`, its token files in `dir`.
fn config(dir: &Path, concurrency: usize, timeline_events: bool) -> Config {
    std::fs::write(dir.join("jira-token"), "jira-secret\n").unwrap();
    std::fs::write(dir.join("gitlab-token"), "gitlab-secret\n").unwrap();
    let text = format!(
        r#"
[sync]
backfill_concurrency = {concurrency}

[jira]
url = "https://jira.example"
user = "bot@example.com"
token_file = "{dir}/jira-token"

[gitlab]
url = "https://gitlab.example"
token_file = "{dir}/gitlab-token"

[[rule]]
name = "ops"
jql = "project = OPS"
target = "incident"
gitlab_project = "acme/ops"
since = "2025-01-01"
timeline_events = {timeline_events}
"#,
        dir = dir.display()
    );
    Config::from_toml(&text, &dir.join("config.toml")).unwrap()
}

/// The store's files: the database and its write-ahead log.
fn files(db: &Path) -> [PathBuf; 2] {
    [db.to_path_buf(), db.with_extension("db-wal")]
}

/// Copies the store's files into `image` (a missing WAL is recorded as missing).
fn save(db: &Path, image: &Path) {
    for (from, to) in files(db).iter().zip(files(image)) {
        match std::fs::copy(from, &to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&to);
            }
            Err(e) => panic!("cannot copy {}: {e}", from.display()),
        }
    }
}

/// Puts the files of `image` back as the store's, as a power cut after the image was taken
/// would leave them (the shared-memory index is rebuilt from the WAL on open).
fn power_cut(db: &Path, image: &Path) {
    for (to, from) in files(db).iter().zip(files(image)) {
        match std::fs::copy(&from, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(to);
            }
            Err(e) => panic!("cannot restore {}: {e}", to.display()),
        }
    }
    let _ = std::fs::remove_file(db.with_extension("db-shm"));
}

fn minute(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + n * 60, 0).expect("a valid time")
}

fn issue(n: i64, updated: i64, resolved: Option<i64>) -> IssueSnapshot {
    IssueSnapshot {
        id: Some(JiraId::parse(&format!("{}", 10_000 + n)).unwrap()),
        key: JiraKey::parse(&format!("OPS-{n}")).unwrap(),
        summary: format!("incident {n}"),
        description: None,
        created: minute(n),
        updated: minute(updated),
        resolved_at: resolved.map(minute),
        status: if resolved.is_some() { "Done" } else { "Open" }.into(),
        priority: None,
        labels: Vec::new(),
        issue_type: Some("Incident".into()),
        fields: Default::default(),
        transitions: None,
    }
}

/// A small deterministic generator, so a failing sequence of cuts replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// An object the store knows with a high iid, so that the adoption scan (which looks above the
/// highest iid the store knows) finds nothing: only the create intents then stand between a
/// mapping lost to a power cut and a second create. (Concurrent creates put the store there in
/// earnest: their mappings commit out of iid order.)
async fn seed_high_iid(db: &Path, gitlab: &MemGitLab) {
    let mut old = issue(999, 0, Some(1));
    old.key = JiraKey::parse("OLD-1").unwrap();
    gitlab.objects.lock().unwrap().push(MemObject {
        id: 50_000,
        project_id: 1,
        iid: 1_000,
        jira_key: old.key.clone(),
        title: "[OLD-1] an old incident".into(),
        description: String::new(),
        state: RemoteState::Closed,
        created_at: old.created,
        closed_at: old.resolved_at,
        incident: true,
        moved_to_id: None,
        labels: Vec::new(),
        label_events: Vec::new(),
        severity: None,
        events: Vec::new(),
    });
    let store = Store::open(db).unwrap();
    let mapping = Mapping {
        rule: "ops".into(),
        jira_key: old.key.clone(),
        jira_id: old.id.clone(),
        target: Target::Incident,
        project: "acme/ops".into(),
        project_id: Some(1),
        iid: Some(1_000),
        web_url: None,
        state: RemoteState::Closed,
        jira_updated: old.updated,
        created_at: old.created,
        closed_at: old.resolved_at,
        content_hash: None,
        moved_to: None,
        gone_at: None,
        jira_resolved_at: old.resolved_at,
        scope: IssueScope::InScope,
    };
    store
        .commit("ops", Commit::Replicated(mapping), None)
        .await
        .unwrap();
    // Closing the last connection checkpoints: this much is durable.
}

/// Cycles of creates and resolutions, the store rolled back to its last durable commit after
/// most of them: no Jira issue ends with two GitLab objects or none, and each is closed if and
/// only if Jira resolved it; with timeline events, each incident ends with exactly one "Start
/// time" and, once resolved, one "End time", at Jira's times (a new incident's event begins are
/// committed before its mapping, a known incident's durably before the create, and neither's
/// commit is durable: cuts take the commits back, and the events are looked up). Several seeds, each a replayable sequence of cuts. With the intents
/// committed like the rest (NORMAL), the first cut after a create doubles it. One issue at a
/// time, each seed's cuts are replayable and must take mappings and closes back; several at
/// once (as cycles apply them), which commits are durable at a cut depends on timing, and only
/// the outcome is checked.
#[tokio::test]
async fn power_cuts_lose_nothing_and_double_nothing() {
    for (seed, concurrency, timeline) in [3_u64, 17, 2026]
        .into_iter()
        .flat_map(|seed| [(seed, 1), (seed, 8)])
        .flat_map(|(seed, c)| [(seed, c, false), (seed, c, true)])
    {
        let dir = TempDir::new().unwrap();
        let cfg = config(dir.path(), concurrency, timeline);
        let db = dir.path().join("sync.db");
        let image = dir.path().join("image.db");
        let jira = Arc::new(MemJira::default());
        let gitlab = Arc::new(MemGitLab::default());
        seed_high_iid(&db, &gitlab).await;
        let mut rng = Lcg(seed);
        let mut issues: Vec<IssueSnapshot> = Vec::new();
        let mut clock = 1_000;
        let mut cuts = 0;
        for cycle in 0..12 {
            // Jira moves on: new issues, and some open ones resolved.
            for _ in 0..rng.below(6) {
                let n = issues.len() as i64 + 1;
                clock += 1;
                issues.push(issue(n, clock, None));
            }
            for (i, s) in issues.iter_mut().enumerate() {
                if s.resolved_at.is_none() && rng.below(3) == 0 {
                    clock += 1;
                    *s = issue(i as i64 + 1, clock, Some(clock));
                }
            }
            *jira.issues.lock().unwrap_or_else(PoisonError::into_inner) = issues.clone();

            let store = Store::open_with(&db, StoreOptions::default()).unwrap();
            // What a power cut can leave at most: the files as of the last durable commit (or
            // as opened, before any).
            save(&db, &image);
            let (hook_db, hook_image) = (db.clone(), image.clone());
            *store
                .inner
                .on_durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Box::new(move || save(&hook_db, &hook_image)));
            let engine = SyncEngine::new(
                Shared(Arc::clone(&jira)),
                Shared(Arc::clone(&gitlab)),
                store,
                EngineSettings::from_config(&cfg),
            );
            engine
                .run_rule(&cfg.rules[0], RunMode::Service, &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, cycle {cycle}: {e}"));
            drop(engine);
            if rng.below(4) != 0 {
                power_cut(&db, &image);
                cuts += 1;
            }
        }
        // Power stays on: two cycles settle what the last cut took back.
        for _ in 0..2 {
            let store = Store::open(&db).unwrap();
            let engine = SyncEngine::new(
                Shared(Arc::clone(&jira)),
                Shared(Arc::clone(&gitlab)),
                store,
                EngineSettings::from_config(&cfg),
            );
            engine
                .run_rule(&cfg.rules[0], RunMode::Service, &CancellationToken::new())
                .await
                .unwrap();
        }
        assert!(cuts > 0, "seed {seed}: the power was cut");
        let calls = gitlab.calls();
        let count = |c: Call| calls.iter().filter(|&&x| x == c).count();
        let resolved = issues.iter().filter(|s| s.resolved_at.is_some()).count();
        if timeline && concurrency == 1 {
            assert!(
                count(Call::Events) > 0,
                "seed {seed}: cuts took details back, and their begun events were looked up"
            );
        }
        // The begins of a new incident's events are not synced (only an event for an incident
        // the store already knew is): cuts take mappings back with timeline events too.
        if concurrency == 1 {
            assert!(
                count(Call::Find) > 0,
                "seed {seed}: cuts took mappings back, and their intents were looked up"
            );
        }
        // Every durable begin of an event makes the commits before it durable too: only without
        // timeline events do cuts take closes back.
        if concurrency == 1 && !timeline {
            assert!(
                count(Call::Close) > resolved,
                "seed {seed}: cuts took closes back, and they were sent again"
            );
        }
        let objects: Vec<MemObject> = gitlab
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.iid != 1_000)
            .cloned()
            .collect();
        for s in &issues {
            let mine: Vec<_> = objects.iter().filter(|o| o.jira_key == s.key).collect();
            assert_eq!(
                mine.len(),
                1,
                "seed {seed}: {} has exactly one object: {mine:#?}",
                s.key
            );
            let state = if s.resolved_at.is_some() {
                RemoteState::Closed
            } else {
                RemoteState::Opened
            };
            assert_eq!(mine[0].state, state, "seed {seed}: {}", s.key);
            assert_eq!(mine[0].created_at, s.created, "seed {seed}: {}", s.key);
            if timeline {
                let at = |tag: crate::domain::TimelineTag| -> Vec<DateTime<Utc>> {
                    mine[0]
                        .events
                        .iter()
                        .filter(|e| e.has_tag(tag))
                        .map(|e| e.occurred_at)
                        .collect()
                };
                assert_eq!(
                    at(crate::domain::TimelineTag::Start),
                    [s.created],
                    "seed {seed}: {} has one start event",
                    s.key
                );
                assert_eq!(
                    at(crate::domain::TimelineTag::End),
                    s.resolved_at.into_iter().collect::<Vec<_>>(),
                    "seed {seed}: {} has one end event once resolved",
                    s.key
                );
            }
        }
        assert_eq!(
            objects.len(),
            issues.len(),
            "seed {seed}: no object for anything else"
        );
    }
}
