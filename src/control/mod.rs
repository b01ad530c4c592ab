//! Control plane: owns the config and routing state, journals every change, builds tables
//! and swaps them in. Every change goes through `apply` (or `reload`) under one async lock,
//! never on the request path: validate, write + fsync the revision, then swap the table.

pub mod api;
pub mod change;
pub mod hooks;
pub mod journal;
pub mod reconcile;
pub mod record;
pub mod resolve;

use crate::config::{Config, ConfigError};
use crate::dataplane::proxy::DataPlane;
use crate::guard::incident::IncidentLog;
use crate::guard::rollout::Rollouts;
use crate::guard::watch::Board;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::Telemetry;
use crate::upstream::endpoint::{EndpointRegistry, EndpointSettings};
use api::{ApiError, ReloadResponse};
use change::Change;
use hooks::Hooks;
use journal::{Journal, JournalError};
use record::{ChangeKind, Declared, Origin, PlannedRevision, RevisionRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

pub use change::describe;

pub struct Controller {
    pub plane: Arc<DataPlane>,
    pub telemetry: Arc<Telemetry>,
    /// The guard's latest verdicts and the incidents it recorded.
    pub board: Board,
    pub incidents: IncidentLog,
    /// Progressive rollouts (driven by `guard::rollout::run`).
    pub rollouts: Rollouts,
    endpoints: EndpointRegistry,
    config_path: PathBuf,
    journal: Journal,
    hooks: Hooks,
    state: Mutex<ControlState>,
    /// Held by a reload or an endpoint-name refresh from its lookups to its swap, so an
    /// older reading of the file or of DNS never lands after a newer one.
    topology: Mutex<()>,
}

/// A consistent copy of the control state, for status pages and metrics.
#[derive(Debug, Clone)]
pub struct ControlSnapshot {
    pub config: Config,
    pub services: BTreeMap<String, ServiceState>,
    pub revision: u64,
    /// The last revision that changed each service.
    pub last_change: BTreeMap<String, u64>,
    /// Aborts recorded per service over the whole journal.
    pub aborts: BTreeMap<String, u64>,
}

struct ControlState {
    config: Config,
    services: BTreeMap<String, ServiceState>,
    /// What the config file said about each service's routing when it was last loaded.
    declared: BTreeMap<String, Declared>,
    revision: u64,
    /// Each service's revisions, oldest first (kept after removal, for the record).
    history: BTreeMap<String, Vec<RevisionRecord>>,
    aborts: BTreeMap<String, u64>,
}

impl ControlState {
    /// Takes a journaled revision into the live state.
    fn absorb(&mut self, record: RevisionRecord) {
        match &record.new {
            Some(state) => {
                self.services.insert(record.service.clone(), state.clone());
            }
            None => {
                self.services.remove(&record.service);
                self.declared.remove(&record.service);
            }
        }
        if let Some(declared) = &record.declared {
            self.declared
                .insert(record.service.clone(), declared.clone());
        }
        if record.kind == ChangeKind::Abort {
            *self.aborts.entry(record.service.clone()).or_default() += 1;
        }
        self.revision = self.revision.max(record.revision);
        self.history
            .entry(record.service.clone())
            .or_default()
            .push(record);
    }

    fn records(&self, planned: Vec<PlannedRevision>, config: &Config) -> Vec<RevisionRecord> {
        let now = SystemTime::now();
        planned
            .into_iter()
            .zip(self.revision + 1..)
            .map(|(plan, revision)| {
                let service = config
                    .service(&plan.service)
                    .or_else(|| self.config.service(&plan.service));
                plan.into_record(revision, service, now)
            })
            .collect()
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reload not recorded, routing unchanged: {0}")]
    Journal(#[from] JournalError),
}

impl Controller {
    /// Opens the journal in `config.state_dir`, replays it, reconciles it with `config`
    /// and builds the first table: the proxy comes back with the last acknowledged routing.
    pub async fn open(
        config: Config,
        config_path: PathBuf,
        shards: usize,
        accept_broken_journal: bool,
    ) -> Result<Controller, JournalError> {
        let opened = Journal::open(&config.state_dir, accept_broken_journal)?;
        let incidents = IncidentLog::open(&config.state_dir).map_err(|err| JournalError::Io {
            path: err.path,
            source: err.source,
        })?;
        if let Some(bytes) = opened.torn_bytes {
            tracing::warn!(
                journal = %opened.journal.path().display(),
                bytes,
                "dropped a torn last journal line (a crash mid-write; that change was never acknowledged)"
            );
        }
        let mut state = ControlState {
            config: config.clone(),
            services: BTreeMap::new(),
            declared: BTreeMap::new(),
            revision: 0,
            history: BTreeMap::new(),
            aborts: BTreeMap::new(),
        };
        for record in opened.records {
            state.absorb(record);
        }
        let mut planned = Vec::new();
        if let Some(broken) = &opened.broken {
            tracing::warn!(
                line = broken.line,
                why = %broken.why,
                kept_as = %broken.kept_as.display(),
                "journal chain was broken: starting a new chain from the state that still reads"
            );
            let reason = format!(
                "journal chain broken at line {} ({}); old journal kept as {}",
                broken.line,
                broken.why,
                broken.kept_as.display()
            );
            planned.extend(state.services.iter().map(|(name, live)| PlannedRevision {
                service: name.clone(),
                kind: ChangeKind::Recovered,
                old: Some(live.clone()),
                new: Some(live.clone()),
                declared: state.declared.get(name).cloned(),
                origin: Origin::new("startup", reason.clone()),
            }));
        }
        let origin = Origin::new("startup", "");
        planned.extend(reconcile::reconcile(
            &state.services,
            &state.declared,
            &config,
            &origin,
        ));
        let records = state.records(planned, &config);
        let written = match records.is_empty() {
            true => Vec::new(),
            false => opened.journal.append(records).await?,
        };
        let hooks = Hooks::default();
        for record in written {
            hooks.send(&config.hooks, &record);
            state.absorb(record);
        }
        let endpoints = EndpointRegistry::new(EndpointSettings {
            connect_timeout: config.timeouts.connect.0,
            idle_timeout: config.timeouts.upstream_idle.0,
            backoff: config.timeouts.endpoint_backoff.0,
        });
        let telemetry = Arc::new(Telemetry::new(shards));
        let table = RoutingTable::build(
            &config,
            &state.services,
            &endpoints,
            &telemetry,
            state.revision,
        );
        Ok(Controller {
            plane: Arc::new(DataPlane::new(table)),
            telemetry,
            board: Board::default(),
            incidents,
            rollouts: Rollouts::open(&config.state_dir),
            endpoints,
            config_path,
            journal: opened.journal,
            hooks,
            state: Mutex::new(state),
            topology: Mutex::new(()),
        })
    }

    /// The one way routing changes: checks `change` against the live state, journals it
    /// (written and fsynced), then swaps in the new table. Bad input changes nothing.
    pub async fn apply(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ApiError> {
        let mut state = self.state.lock().await;
        let (service_config, current) =
            match (state.config.service(service), state.services.get(service)) {
                (Some(config), Some(current)) => (config, current),
                _ => return Err(unknown_service(&state.config, service)),
            };
        let history: Vec<&RevisionRecord> = state
            .history
            .get(service)
            .map(|h| h.iter().collect())
            .unwrap_or_default();
        let next = change::next_state(service_config, current, &change, &history)?;
        let plan = PlannedRevision {
            service: service.to_string(),
            kind: change.kind(),
            old: Some(current.clone()),
            new: Some(next),
            declared: None,
            origin,
        };
        let records = state.records(vec![plan], &state.config);
        let written = self.journal.append(records).await.map_err(|err| {
            ApiError::Internal(format!("change not recorded, routing unchanged: {err}"))
        })?;
        for record in &written {
            state.absorb(record.clone());
        }
        self.swap(&state);
        for record in &written {
            self.hooks.send(&state.config.hooks, record);
        }
        written
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("journal returned no record".into()))
    }

    /// Re-reads the config file and reconciles live routing with it (see `reconcile`) in
    /// one table swap. An invalid file changes nothing and its problems are returned.
    pub async fn reload(&self, origin: Origin) -> Result<ReloadResponse, ReloadError> {
        let _topology = self.topology.lock().await;
        // Off the runtime's threads: loading resolves endpoint names, which may block.
        let path = self.config_path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|err| ConfigError::Unreadable {
                path: self.config_path.clone(),
                reason: err.to_string(),
            })??;
        let mut state = self.state.lock().await;
        let planned = reconcile::reconcile(&state.services, &state.declared, &config, &origin);
        let records = state.records(planned, &config);
        let written = match records.is_empty() {
            true => Vec::new(),
            false => self.journal.append(records).await?,
        };
        state.config = config;
        for record in &written {
            state.absorb(record.clone());
        }
        self.swap(&state);
        self.endpoints.retain_used();
        for record in &written {
            self.hooks.send(&state.config.hooks, record);
        }
        Ok(ReloadResponse {
            revision: state.revision,
            changes: written,
        })
    }

    fn swap(&self, state: &ControlState) {
        let table = RoutingTable::build(
            &state.config,
            &state.services,
            &self.endpoints,
            &self.telemetry,
            state.revision,
        );
        self.plane.table.store(Arc::new(table));
    }

    pub async fn config(&self) -> Config {
        self.state.lock().await.config.clone()
    }

    pub async fn snapshot(&self) -> ControlSnapshot {
        let state = self.state.lock().await;
        ControlSnapshot {
            config: state.config.clone(),
            services: state.services.clone(),
            revision: state.revision,
            last_change: state
                .history
                .iter()
                .filter_map(|(name, h)| Some((name.clone(), h.last()?.revision)))
                .collect(),
            aborts: state.aborts.clone(),
        }
    }

    /// A service's live routing.
    pub async fn routing(&self, service: &str) -> Option<ServiceState> {
        self.state.lock().await.services.get(service).cloned()
    }

    /// A service's last `limit` revisions, oldest first.
    pub async fn history(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, ApiError> {
        let state = self.state.lock().await;
        match state.history.get(service) {
            Some(history) => Ok(history[history.len().saturating_sub(limit)..].to_vec()),
            None => Err(unknown_service(&state.config, service)),
        }
    }
}

pub(crate) fn unknown_service(config: &Config, service: &str) -> ApiError {
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    ApiError::NotFound(format!(
        "no service {service:?} (services: {})",
        names.join(", ")
    ))
}
