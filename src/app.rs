//! The wiring: a validated [`Config`] → the store, the Jira and GitLab clients, and the
//! [`SyncEngine`] over them. Every command that syncs, the demo, the tests and the benchmarks
//! build their engine here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, RuleConfig, SyncConfig};
use crate::engine::dry_run::{DryRunSink, DryRunStore};
use crate::engine::{EngineSettings, SyncEngine};
use crate::gitlab::{GitLabClient, GitLabError};
use crate::http::RequestObserver;
use crate::jira::{JiraClient, JiraError};
use crate::store::{Store, StoreError, StoreOptions};

/// The engine of a real run: the real clients and the SQLite store.
pub type Engine = SyncEngine<JiraClient, GitLabClient, Store>;

/// The engine of a `--dry-run`: the same code over wrapped ports that read for real but keep
/// every write (to GitLab or the store) in memory.
pub type DryRunEngine = SyncEngine<JiraClient, DryRunSink<GitLabClient>, DryRunStore<Store>>;

/// How the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    /// The store file, created and migrated if need be: a real run.
    Writable,
    /// The existing store file, never written, not even migrated: a dry run.
    ReadOnly,
    /// An empty store in memory: a dry run before any sync has made the file.
    InMemory,
}

impl StoreMode {
    /// How a dry run of `cfg` opens the store: it reads what the store knows but never writes,
    /// and starts from an empty store if there is no file yet.
    pub fn for_dry_run(cfg: &Config) -> StoreMode {
        if cfg.store_path.exists() {
            StoreMode::ReadOnly
        } else {
            StoreMode::InMemory
        }
    }
}

/// Why the engine cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store cannot be opened (or is in use by another process).
    #[error("cannot use the store {}", path.display())]
    Store {
        path: PathBuf,
        mode: StoreMode,
        #[source]
        source: StoreError,
    },
    #[error("cannot set up the Jira client")]
    Jira(#[source] JiraError),
    #[error("cannot set up the GitLab client")]
    GitLab(#[source] GitLabError),
}

/// A configuration wired up: its store, clients and engine ([`Engine`] for a run,
/// [`DryRunEngine`] for a dry run).
pub struct App<E = Engine> {
    config: Config,
    mode: StoreMode,
    engine: E,
}

/// The store and the clients, before they become an engine.
struct Parts {
    store: Store,
    jira: JiraClient,
    gitlab: GitLabClient,
}

impl Parts {
    fn open(
        cfg: &Config,
        mode: StoreMode,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Parts, BuildError> {
        let path = &cfg.store_path;
        let store = match mode {
            StoreMode::Writable => Store::open_with(
                path,
                StoreOptions {
                    keep_runs_days: Some(cfg.store_keep_runs_days),
                },
            ),
            StoreMode::ReadOnly => Store::open_read_only(path),
            StoreMode::InMemory => Store::open_in_memory(),
        }
        .map_err(|source| BuildError::Store {
            path: path.clone(),
            mode,
            source,
        })?;
        let mut jira = JiraClient::new(&cfg.jira, &cfg.sync)
            .map_err(BuildError::Jira)?
            .with_fields(cfg.rules.iter().flat_map(|r| r.history.field_ids()));
        let mut gitlab = GitLabClient::new(&cfg.gitlab, &cfg.sync).map_err(BuildError::GitLab)?;
        if let Some(observer) = observer {
            jira.observed_by(Arc::clone(&observer));
            gitlab.observed_by(observer);
        }
        Ok(Parts {
            store,
            jira,
            gitlab,
        })
    }
}

impl App<Engine> {
    /// Opens the store (created and migrated if need be) and builds the clients and the engine
    /// for a real run of `cfg`.
    ///
    /// # Errors
    /// The store cannot be opened (or is in use), or a client cannot be built.
    pub fn build(cfg: &Config) -> Result<Self, BuildError> {
        Self::build_observed(cfg, None)
    }

    /// As [`App::build`], with every request to Jira and GitLab told to `observer` (the
    /// service's and `--once`'s metrics, the watchdog's view of progress).
    ///
    /// # Errors
    /// As [`App::build`].
    pub fn build_observed(
        cfg: &Config,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, BuildError> {
        let p = Parts::open(cfg, StoreMode::Writable, observer)?;
        let settings = EngineSettings::from_config(cfg);
        Ok(App {
            config: cfg.clone(),
            mode: StoreMode::Writable,
            engine: SyncEngine::new(p.jira, p.gitlab, p.store, settings),
        })
    }
}

impl App<DryRunEngine> {
    /// Builds the engine of a dry run of `cfg`: the store is read if it exists (never created,
    /// written or migrated), and no write reaches GitLab.
    ///
    /// # Errors
    /// As [`App::build`].
    pub fn dry_run(cfg: &Config) -> Result<Self, BuildError> {
        let mode = StoreMode::for_dry_run(cfg);
        let p = Parts::open(cfg, mode, None)?;
        let settings = EngineSettings::from_config(cfg);
        Ok(App {
            config: cfg.clone(),
            mode,
            engine: SyncEngine::new(
                p.jira,
                DryRunSink::new(p.gitlab),
                DryRunStore::new(p.store),
                settings,
            ),
        })
    }
}

impl<E> App<E> {
    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine, for an owner of its own (e.g. `Arc::new(app.into_engine())` for a service).
    pub fn into_engine(self) -> E {
        self.engine
    }

    /// How the store was opened.
    pub fn mode(&self) -> StoreMode {
        self.mode
    }

    /// The rules, in the config's order.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.config.rules
    }

    /// The `[sync]` settings (concurrency, shutdown grace, retries).
    pub fn sync(&self) -> &SyncConfig {
        &self.config.sync
    }

    /// Where the store file is.
    pub fn store_path(&self) -> &Path {
        &self.config.store_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config in `dir` (token files and the store beside it).
    fn config(dir: &Path) -> Config {
        std::fs::write(dir.join("jira-token"), "jira-secret\n").unwrap();
        std::fs::write(dir.join("gitlab-token"), "gitlab-secret\n").unwrap();
        let text = format!(
            r#"
[jira]
url = "https://example.atlassian.net"
user = "bot@example.com"
token_file = "{dir}/jira-token"

[gitlab]
url = "https://gitlab.com"
token_file = "{dir}/gitlab-token"

[[rule]]
name = "ops"
jql = "project = OPS"
target = "incident"
gitlab_project = "acme/ops"
"#,
            dir = dir.display()
        );
        Config::from_toml(&text, &dir.join("config.toml")).unwrap()
    }

    /// A dry run reads the store if there is one and never creates it; a run opens it writable.
    #[test]
    fn dry_run_reads_the_store_or_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let app = App::dry_run(&cfg).unwrap();
        assert_eq!(app.mode(), StoreMode::InMemory);
        assert!(!cfg.store_path.exists(), "a dry run creates no store");

        let app = App::build(&cfg).unwrap();
        assert_eq!(app.mode(), StoreMode::Writable);
        assert_eq!(app.store_path(), dir.path().join("jira-gitlab-sync.db"));
        assert_eq!(app.rules().len(), 1);
        drop(app);
        assert_eq!(App::dry_run(&cfg).unwrap().mode(), StoreMode::ReadOnly);
    }

    /// A store that cannot be opened is named in the error.
    #[test]
    fn store_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let err = Parts::open(&cfg, StoreMode::ReadOnly, None)
            .err()
            .expect("there is no store to read");
        assert!(
            matches!(&err, BuildError::Store { path, mode: StoreMode::ReadOnly, .. } if *path == cfg.store_path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("cannot use the store {}", cfg.store_path.display())
        );
    }
}
