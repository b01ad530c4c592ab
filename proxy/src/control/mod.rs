//! Control plane: owns the config and routing state, journals every change, builds tables
//! and swaps them in. Every change is a command to one writer task (see `writer`), never on
//! the request path: validate, write + fsync the revision, then swap the table.

pub mod change;
pub mod command;
pub mod error;
mod fleet_alarm;
mod fleet_link;
pub mod hooks;
pub mod journal;
pub mod pending;
pub mod promises;
pub mod reconcile;
pub mod record;
pub mod resolve;
pub mod runtime;
mod writer;

use crate::config::{Config, ConfigError, ServiceConfig};
use crate::dataplane::proxy::DataPlane;
use crate::fleet::Fleet;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::Telemetry;
use crate::upstream::endpoint::{EndpointRegistry, EndpointSettings};
use crate::upstream::tls_cache;
use command::Change;
use error::ControlError;
use fleet_link::FleetLink;
use futures_util::future::BoxFuture;
use hooks::Hooks;
use journal::{Journal, JournalError};
use pending::PendingFile;
use record::CheckReport;
use record::{ChangeKind, Origin, PlannedRevision, RevisionRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::Mutex;
use writer::{Commands, ControlState, Outage, Request, Shared, Writer};

pub use change::describe;

pub struct Controller {
    pub plane: Arc<DataPlane>,
    pub telemetry: Arc<Telemetry>,
    /// The fleet this instance shares its routing with (`[cluster]`).
    pub fleet: Option<Fleet>,
    config_path: PathBuf,
    /// The one writer of the control state.
    commands: Commands,
    shared: Arc<Shared>,
    /// Held by a reload or an endpoint-name refresh from its lookups until the writer has
    /// answered, so an older reading of the file or of DNS never lands after a newer one.
    topology: Mutex<()>,
    /// What runs the checks the gate asks for (`run.rs` sets `verify`'s).
    checks: OnceLock<Arc<dyn CheckRunner>>,
}

/// Runs a version's checks for the gate (`promises`), outside the writer, so an abort
/// never waits behind them.
pub trait CheckRunner: Send + Sync {
    /// `version` of `service` (as `service` configures it) checked now.
    fn run(&self, service: ServiceConfig, version: String) -> BoxFuture<'static, CheckReport>;
    /// Counts a gate's outcome: refused, or forced past failing checks.
    fn counted(&self, refused: bool);
}

/// Rounds of "checks due, run them, ask again" before giving up on a routing that keeps
/// moving.
const GATE_ROUNDS: usize = 3;

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
    /// Set while the journal cannot be written.
    pub journal: Option<JournalOutage>,
    /// In a fleet, while this instance has not caught up with the fleet's log: why it
    /// cannot answer for a service it does not know.
    pub not_caught_up: Option<ControlError>,
}

impl ControlSnapshot {
    /// Why `service` is not in this snapshot (judged on the snapshot itself, so a member
    /// catching up meanwhile is never reported as lacking the service).
    pub fn no_service(&self, service: &str) -> ControlError {
        match &self.not_caught_up {
            Some(behind) => behind.clone(),
            None => no_such_service(&self.config, service),
        }
    }
}

/// The journal cannot be written: aborts apply and wait; other changes are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalOutage {
    /// Since when (unix ms), and the last error.
    pub since_ms: u64,
    pub error: String,
    /// Aborts in force that wait to be journaled.
    pub pending: usize,
}

/// How long a reload may spend reading the file and looking up endpoint names.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);
/// Problems a rejected reload spells out; the rest are counted (`check` lists them all).
const PROBLEMS_SHOWN: usize = 3;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// One line, however many problems the file has.
    #[error("{}", summary(.0))]
    Config(#[from] ConfigError),
    #[error("reload not recorded, routing unchanged: {0}")]
    Journal(String),
    /// The file's routing breaks a promise (gate, latch, freeze): one line.
    #[error("{0}")]
    Refused(String),
    #[error("reload not done: the control plane has stopped")]
    Stopped,
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
        Controller::open_with(config, config_path, shards, accept_broken_journal, None).await
    }

    /// `open`, in `fleet` when given: then the local journal is the cache of the fleet's
    /// log, and the startup reconciliation goes through the log once this instance joins it.
    pub async fn open_with(
        config: Config,
        config_path: PathBuf,
        shards: usize,
        accept_broken_journal: bool,
        fleet: Option<Fleet>,
    ) -> Result<Controller, JournalError> {
        let opened = Journal::open(&config.state_dir, accept_broken_journal)?;
        if let Some(bytes) = opened.torn_bytes {
            tracing::warn!(
                journal = %opened.journal.path().display(),
                bytes,
                "dropped a torn last journal line (a crash mid-write; that change was never acknowledged)"
            );
        }
        let mut state = ControlState::new(config.clone());
        if fleet.is_some() {
            state.log = Some(writer::LogProgress::default());
        }
        for record in opened.records {
            state.absorb(record);
        }
        // In a fleet the file holds aborts waiting for the fleet log (whose numbers the log
        // gives): they are held again, never written to the local cache.
        let journaled = if fleet.is_some() { 0 } else { state.revision };
        let (pending_file, mut recovered) = open_pending(&config, journaled);
        let held = match fleet.is_some() {
            true => std::mem::take(&mut recovered),
            false => Vec::new(),
        };
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
            &state.departed(),
            &config,
            &origin,
        ));
        if fleet.is_some() {
            planned.clear();
        }
        // Aborts applied before a restart while the journal could not be written come
        // first, in their order, with their own time and evidence.
        for record in &recovered {
            state.absorb(record.clone());
        }
        let records = state.records(planned, &config);
        let reconciled = !records.is_empty();
        let records: Vec<RevisionRecord> = recovered.iter().cloned().chain(records).collect();
        let written = match records.is_empty() {
            true => Vec::new(),
            false => match opened.journal.append(records.clone()).await {
                Ok(written) => written,
                // Still unwritable: start with the aborts in force and let the writer retry.
                Err(err) if !reconciled => {
                    tracing::error!(error = %err, pending = recovered.len(), "the journal cannot be written: aborts from before the restart stay in force and wait to be recorded");
                    state.pending = recovered;
                    state.outage = Some(Outage::logged(err.to_string()));
                    Vec::new()
                }
                Err(err) => return Err(err),
            },
        };
        let hooks = Hooks::new_in(
            &config.state_dir,
            &config.hooks,
            fleet.as_ref().map(|f| (f, state.revision)),
        );
        for record in written {
            hooks.send(&config.hooks, &record);
            match record.revision <= state.revision {
                true => state.replace(record),
                false => state.absorb(record),
            }
        }
        if state.pending.is_empty() && held.is_empty() {
            if let Some(file) = &pending_file {
                let _ = file.write(&[]);
            }
        }
        let endpoints = EndpointRegistry::new(EndpointSettings {
            connect_timeout: config.timeouts.connect.0,
            idle_timeout: config.timeouts.upstream_idle.0,
            backoff: config.timeouts.endpoint_backoff.0,
        });
        let telemetry = Arc::new(Telemetry::new(shards));
        let link = fleet
            .as_ref()
            .map(|f| FleetLink::new(f.log.clone(), &f.settings.instance, state.revision, held));
        if let Some(link) = &link {
            link.overlay(&mut state.services);
        }
        state.derive_config();
        let table = RoutingTable::build(
            &state.config,
            &state.services,
            &endpoints,
            &telemetry,
            state.revision,
        );
        let plane = Arc::new(DataPlane::new(table));
        let applied = link.as_ref().map(|l| l.applied.subscribe());
        let shared = Shared::new(state);
        let commands = Writer {
            shared: shared.clone(),
            journal: opened.journal,
            pending_file,
            hooks,
            plane: plane.clone(),
            endpoints,
            telemetry: telemetry.clone(),
            fleet: link,
        }
        .spawn();
        if let (Some(fleet), Some(applied)) = (&fleet, applied) {
            fleet_link::spawn_follower(fleet, commands.clone(), applied);
        }
        Ok(Controller {
            plane,
            telemetry,
            fleet,
            config_path,
            commands,
            shared,
            topology: Mutex::new(()),
            checks: OnceLock::new(),
        })
    }

    /// The one way routing changes: the writer checks `change` against the live state,
    /// journals it (written and fsynced), then swaps in the new table. Bad input changes
    /// nothing. Dropping this future never leaves the change half-done.
    pub async fn apply(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        self.apply_if(service, change, origin, None).await
    }

    /// `apply`, but only while the service's routing is still `expect` (else `Moved`).
    /// When the writer's plan finds checks due (the gate), they run here and the change
    /// is asked for again with their reports.
    pub async fn apply_if(
        &self,
        service: &str,
        change: Change,
        mut origin: Origin,
        expect: Option<ServiceState>,
    ) -> Result<RevisionRecord, ControlError> {
        for _ in 0..GATE_ROUNDS {
            let answer = self
                .commands
                .call(|reply| Request::Apply {
                    service: service.to_string(),
                    change: change.clone(),
                    origin: origin.clone(),
                    expect: expect.clone(),
                    reply,
                })
                .await?;
            match answer {
                Err(ControlError::ChecksDue(due)) => {
                    let config = self.shared.lock().config.clone();
                    origin = self.run_checks(&config, due, origin, change.verb()).await?;
                }
                answer => return answer,
            }
        }
        Err(ControlError::Moved)
    }

    /// Runs the checks the gate asked for: the origin with their reports, or the one-line
    /// refusal when one fails and the change is not forced.
    async fn run_checks(
        &self,
        config: &Config,
        due: Vec<(String, String)>,
        mut origin: Origin,
        verb: &str,
    ) -> Result<Origin, ControlError> {
        let runner = self.checks.get().ok_or_else(|| {
            ControlError::Refused(format!(
                "{verb} refused: no checks can run here to let a version have traffic"
            ))
        })?;
        for (service, version) in due {
            let service_config = config
                .service(&service)
                .cloned()
                .ok_or_else(|| no_such_service(config, &service))?;
            let report = runner.run(service_config, version).await;
            if !report.passed {
                // A reload may touch several services: it names the one.
                let summary = match verb {
                    "reload" => format!("{service}/{}", report.summary()),
                    _ => report.summary(),
                };
                if !origin.forced {
                    runner.counted(true);
                    tracing::warn!("{verb} refused: {summary}");
                    return Err(ControlError::Refused(format!(
                        "{verb} refused: {summary}; nothing changed (--force overrides)"
                    )));
                }
                runner.counted(false);
                tracing::warn!("{verb} forced past failing checks: {summary}");
            }
            origin.verified.push((service, report));
        }
        Ok(origin)
    }

    /// Sets what runs the gate's checks (once; later calls change nothing).
    pub fn set_checks(&self, runner: Arc<dyn CheckRunner>) {
        let _ = self.checks.set(runner);
    }

    /// Re-reads the config file and reconciles live routing with it (see `reconcile`) in
    /// one table swap. An invalid file, or one whose routing breaks a promise (a version
    /// given traffic fails its checks, unless `origin` is forced; a latch or a freeze),
    /// changes nothing and says why in one line.
    pub async fn reload(&self, mut origin: Origin) -> Result<ReloadResponse, ReloadError> {
        let _topology = self.topology.lock().await;
        // Off the runtime's threads: applying resolves endpoint names, which may block,
        // and reads TLS files; a lookup that outlives the limit is left to finish on its
        // own, unheard.
        let path = self.config_path.clone();
        let unreadable = |reason: String| ConfigError::Unreadable {
            path: self.config_path.clone(),
            reason,
        };
        let loading = tokio::task::spawn_blocking(move || {
            let mut config = Config::load(&path)?;
            resolve::resolve_names(&mut config, &path)?;
            tls_cache::shared().apply(&config, &path)?;
            Ok::<_, ConfigError>(config)
        });
        let config = tokio::time::timeout(RELOAD_LIMIT, loading)
            .await
            .map_err(|_| {
                unreadable(format!(
                    "endpoint name lookups did not finish within {}s",
                    RELOAD_LIMIT.as_secs()
                ))
            })?
            .map_err(|err| unreadable(err.to_string()))??;
        for _ in 0..GATE_ROUNDS {
            let loaded = Box::new(config.clone());
            let reloaded = self
                .commands
                .call(|reply| Request::Reload {
                    config: loaded,
                    origin: origin.clone(),
                    reply,
                })
                .await
                .map_err(|_| ReloadError::Stopped)?;
            origin = match reloaded {
                Ok(reloaded) => return Ok(reloaded),
                Err(ControlError::ChecksDue(due)) => self
                    .run_checks(&config, due, origin, "reload")
                    .await
                    .map_err(|err| ReloadError::Refused(err.to_string()))?,
                Err(ControlError::NotRecorded(why)) => return Err(ReloadError::Journal(why)),
                Err(ControlError::Stopped) => return Err(ReloadError::Stopped),
                Err(err) => {
                    return Err(ReloadError::Refused(format!(
                        "reload refused: {err}; nothing changed"
                    )))
                }
            };
        }
        Err(ReloadError::Refused(
            "reload refused: the routing kept changing while its checks ran; nothing changed, try again".into(),
        ))
    }

    /// Lets the writer finish the commands already sent, then stops it: the journal is
    /// released (a new process may open it) and later changes are refused.
    pub async fn stop(&self) {
        let _ = self.commands.call(|reply| Request::Stop { reply }).await;
    }

    pub async fn config(&self) -> Config {
        self.shared.lock().config.clone()
    }

    pub async fn snapshot(&self) -> ControlSnapshot {
        let state = self.shared.lock();
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
            journal: state.outage.as_ref().map(|outage| JournalOutage {
                since_ms: outage.since_ms,
                error: outage.error.clone(),
                pending: state.pending.len(),
            }),
            not_caught_up: state.not_caught_up(),
        }
    }

    /// A service's live routing.
    pub async fn routing(&self, service: &str) -> Option<ServiceState> {
        self.shared.lock().services.get(service).cloned()
    }

    /// A service's last `limit` revisions, oldest first.
    pub async fn history(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, ControlError> {
        let state = self.shared.lock();
        match state.history.get(service) {
            Some(history) => Ok(history[history.len().saturating_sub(limit)..].to_vec()),
            None => Err(unknown_service(&state, service)),
        }
    }
}

/// A rejected file in one line: its first problems, and how many more there are.
fn summary(err: &ConfigError) -> String {
    let ConfigError::Invalid { path, problems } = err else {
        return err.to_string();
    };
    let shown: Vec<String> = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(|p| format!("{}:{}: {}", path.display(), p.line, p.message))
        .collect();
    match problems.len().saturating_sub(PROBLEMS_SHOWN) {
        0 => shown.join("; "),
        more => format!(
            "{}; and {more} more problems (`switchyard check --config {}` lists them all)",
            shown.join("; "),
            path.display()
        ),
    }
}

/// The file of aborts waiting for the journal, and those of them the journal lacks.
fn open_pending(config: &Config, journaled: u64) -> (Option<PendingFile>, Vec<RevisionRecord>) {
    match PendingFile::open(&config.state_dir) {
        Ok((file, records)) => {
            let missing = records
                .into_iter()
                .filter(|r| r.revision > journaled)
                .collect();
            (Some(file), missing)
        }
        Err(err) => {
            tracing::error!(dir = %config.state_dir.display(), error = %err, "cannot reserve the file for pending aborts: an abort applied while the journal is unwritable would not survive a restart");
            (None, Vec::new())
        }
    }
}

/// What the guard and the rollout driver may do with the control plane: read a service's
/// config, routing and history, and ask the writer for a change.
pub trait RoutingControl: Send + Sync {
    fn service(&self, service: &str) -> Result<ServiceConfig, ControlError>;
    fn routing_of(&self, service: &str) -> Option<ServiceState>;
    /// The service's revisions, oldest first.
    fn revisions(&self, service: &str) -> Vec<RevisionRecord>;
    fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> impl Future<Output = Result<RevisionRecord, ControlError>> + Send;
    /// Records a revision that leaves the routing as it is (a validation, an alarm).
    fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> impl Future<Output = Result<RevisionRecord, ControlError>> + Send;
}

impl RoutingControl for Controller {
    fn service(&self, service: &str) -> Result<ServiceConfig, ControlError> {
        let state = self.shared.lock();
        state
            .config
            .service(service)
            .cloned()
            .ok_or_else(|| unknown_service(&state, service))
    }

    fn routing_of(&self, service: &str) -> Option<ServiceState> {
        self.shared.lock().services.get(service).cloned()
    }

    fn revisions(&self, service: &str) -> Vec<RevisionRecord> {
        let state = self.shared.lock();
        state.history.get(service).cloned().unwrap_or_default()
    }

    async fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        self.apply(service, change, origin).await
    }

    async fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        let service = service.to_string();
        self.commands
            .call(|reply| Request::Note {
                service,
                kind,
                origin,
                reply,
            })
            .await?
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// The revision the data plane runs after the reload.
    pub revision: u64,
    /// Routing revisions the reload recorded (empty when it only changed topology).
    pub changes: Vec<RevisionRecord>,
    /// Versions added at runtime that the reload kept, as "service/version".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_runtime: Vec<String>,
}

/// A service this instance does not route: unknown, or (in a fleet) perhaps only not known
/// *yet*, when this instance has not caught up with the fleet's log.
pub(crate) fn unknown_service(state: &ControlState, service: &str) -> ControlError {
    match state.not_caught_up() {
        Some(behind) => behind,
        None => no_such_service(&state.config, service),
    }
}

fn no_such_service(config: &Config, service: &str) -> ControlError {
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    ControlError::NotFound(format!(
        "no service {service:?} (services: {})",
        names.join(", ")
    ))
}
