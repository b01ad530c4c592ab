//! The one writer: a task that owns the control state and the journal. Every change
//! (an operator's, the guard's, a rollout's, a reload's, a name refresh's) reaches it as
//! a command with a oneshot for the answer, and is carried out whole by this task: a
//! requester that goes away only drops the answer, never a change half-done.
//!
//! Readers see the state through a short synchronous lock that no `.await` ever holds.

use super::change;
use super::command::Change;
use super::error::ControlError;
use super::fleet_link::{FleetLink, Recording, MAX_RACES};
use super::hooks::Hooks;
use super::journal::Journal;
use super::record::{ChangeKind, Declared, Origin, PlannedRevision, RevisionRecord};
use super::{reconcile, unknown_service, ReloadResponse};
use crate::config::Config;
use crate::dataplane::proxy::DataPlane;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::Telemetry;
use crate::upstream::endpoint::EndpointRegistry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the writer; a requester past this waits for room (and, if it goes
/// away meanwhile, its command never starts).
const QUEUE: usize = 256;

/// The control state: written only by the writer task, read by anyone.
pub(crate) struct ControlState {
    pub(crate) config: Config,
    pub(crate) services: BTreeMap<String, ServiceState>,
    /// What the config file said about each service's routing when it was last loaded.
    pub(crate) declared: BTreeMap<String, Declared>,
    pub(crate) revision: u64,
    /// Each service's revisions, oldest first (kept after removal, for the record).
    pub(crate) history: BTreeMap<String, Vec<RevisionRecord>>,
    pub(crate) aborts: BTreeMap<String, u64>,
}

impl ControlState {
    pub(crate) fn new(config: Config) -> ControlState {
        ControlState {
            config,
            services: BTreeMap::new(),
            declared: BTreeMap::new(),
            revision: 0,
            history: BTreeMap::new(),
            aborts: BTreeMap::new(),
        }
    }

    /// Takes a journaled revision into the live state.
    pub(crate) fn absorb(&mut self, record: RevisionRecord) {
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

    /// Numbers `planned` after the last revision, with release metadata from `config`
    /// (or, for a service it no longer has, from the config in force).
    pub(crate) fn records(
        &self,
        planned: Vec<PlannedRevision>,
        config: &Config,
    ) -> Vec<RevisionRecord> {
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

/// The state as readers share it with the writer.
pub(crate) struct Shared(Mutex<ControlState>);

impl Shared {
    pub(crate) fn new(state: ControlState) -> Arc<Shared> {
        Arc::new(Shared(Mutex::new(state)))
    }

    /// A short look (or, for the writer, a short edit); never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A version whose endpoint entries name hosts, and the addresses they resolved to.
pub(crate) struct Resolved {
    pub(crate) service: String,
    pub(crate) version: String,
    /// The entries as the config had them when the lookup began.
    pub(crate) sources: Vec<String>,
    pub(crate) addrs: Vec<SocketAddr>,
}

/// What the writer is asked to do; each carries the oneshot for its answer.
pub(crate) enum Request {
    Apply {
        service: String,
        change: Change,
        origin: Origin,
        reply: oneshot::Sender<Result<RevisionRecord, ControlError>>,
    },
    Reload {
        config: Box<Config>,
        origin: Origin,
        reply: oneshot::Sender<Result<ReloadResponse, String>>,
    },
    Endpoints {
        resolved: Vec<Resolved>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// In a fleet: join the log (check the cache against it, catch up).
    JoinFleet {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// In a fleet: revisions read from the log, in order.
    Logged {
        entries: Vec<crate::fleet::Entry>,
        reply: oneshot::Sender<()>,
    },
    /// Finish what came before, release the journal, answer, and take no more commands.
    Stop { reply: oneshot::Sender<()> },
}

/// What sends commands to the writer.
#[derive(Clone)]
pub(crate) struct Commands(mpsc::Sender<Request>);

impl Commands {
    /// Sends a command and waits for its answer. Dropping this future before the command
    /// is queued means it never starts; after, it completes and only the answer is lost.
    pub(crate) async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.0.send(command(reply)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// The writer is gone (the process is stopping).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopped;

impl From<Stopped> for ControlError {
    fn from(_: Stopped) -> ControlError {
        ControlError::Stopped
    }
}

/// The writer task's own belongings.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) journal: Journal,
    pub(crate) hooks: Hooks,
    pub(crate) plane: Arc<DataPlane>,
    pub(crate) endpoints: EndpointRegistry,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Set with `[cluster]`: revisions go through the fleet's log.
    pub(crate) fleet: Option<FleetLink>,
}

impl Writer {
    /// Starts the writer task; it runs until every `Commands` is dropped.
    pub(crate) fn spawn(self) -> Commands {
        let (commands, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(self.run(receiver));
        Commands(commands)
    }

    async fn run(self, mut receiver: mpsc::Receiver<Request>) {
        while let Some(command) = receiver.recv().await {
            match command {
                Request::Apply {
                    service,
                    change,
                    origin,
                    reply,
                } => {
                    let _ = reply.send(self.apply(&service, change, origin).await);
                }
                Request::Reload {
                    config,
                    origin,
                    reply,
                } => {
                    let _ = reply.send(self.reload(*config, &origin).await);
                }
                Request::Endpoints { resolved, reply } => {
                    let _ = reply.send(self.endpoints(resolved));
                }
                Request::JoinFleet { reply } => {
                    let _ = reply.send(self.join().await);
                }
                Request::Logged { entries, reply } => {
                    self.logged(entries).await;
                    let _ = reply.send(());
                }
                Request::Stop { reply } => {
                    drop(self);
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    pub(crate) async fn apply(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        for _ in 0..MAX_RACES {
            let records = self.plan(service, &change, &origin)?;
            let planned = records.first().cloned();
            match self.record(records).await {
                Ok(written) => {
                    self.commit(None, &written);
                    return written.into_iter().next().ok_or_else(|| {
                        ControlError::NotRecorded("journal returned no record".into())
                    });
                }
                // Caught up already: plan again against the state it follows now.
                Err(Recording::Behind { .. }) => {}
                // Safety never waits: an abort routes here now and reaches the log later.
                Err(Recording::Offline(why)) if change == Change::Abort => {
                    return planned
                        .and_then(|p| self.hold(p, origin.clone()))
                        .ok_or_else(|| {
                            ControlError::NotRecorded(format!(
                                "change not recorded, routing unchanged: {why}"
                            ))
                        });
                }
                Err(Recording::Failed(why) | Recording::Offline(why)) => {
                    return Err(ControlError::NotRecorded(format!(
                        "change not recorded, routing unchanged: {why}"
                    )))
                }
            }
        }
        Err(ControlError::NotRecorded(
            "change not recorded, routing unchanged: the fleet log kept moving on".into(),
        ))
    }

    /// The revision `change` makes, planned against the state in force.
    fn plan(
        &self,
        service: &str,
        change: &Change,
        origin: &Origin,
    ) -> Result<Vec<RevisionRecord>, ControlError> {
        let records = {
            let state = self.shared.lock();
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
            let next = change::next_state(service_config, current, change, &history)?;
            let plan = PlannedRevision {
                service: service.to_string(),
                kind: change.kind(),
                old: Some(current.clone()),
                new: Some(next),
                declared: None,
                origin: origin.clone(),
            };
            state.records(vec![plan], &state.config)
        };
        Ok(records)
    }

    pub(crate) async fn reload(
        &self,
        config: Config,
        origin: &Origin,
    ) -> Result<ReloadResponse, String> {
        let mut written = Vec::new();
        for _ in 0..MAX_RACES {
            let records = {
                let state = self.shared.lock();
                let planned =
                    reconcile::reconcile(&state.services, &state.declared, &config, origin);
                state.records(planned, &config)
            };
            if records.is_empty() {
                break;
            }
            match self.record(records).await {
                Ok(done) => {
                    written.extend(done);
                    break;
                }
                Err(Recording::Behind { written: done }) => written.extend(done),
                Err(Recording::Failed(why) | Recording::Offline(why)) => return Err(why),
            }
        }
        let revision = self.commit(Some(config), &written);
        self.endpoints.retain_used();
        Ok(ReloadResponse {
            revision,
            changes: written,
        })
    }

    /// Takes new addresses for the versions whose entries are still those looked up.
    fn endpoints(&self, resolved: Vec<Resolved>) -> Vec<String> {
        let mut changed = Vec::new();
        {
            let mut state = self.shared.lock();
            for named in resolved {
                let Some(version) = state
                    .config
                    .services
                    .iter_mut()
                    .find(|s| s.name == named.service)
                    .and_then(|s| s.versions.iter_mut().find(|v| v.name == named.version))
                    .filter(|v| v.sources == named.sources)
                else {
                    continue;
                };
                let label = format!("{}/{}", named.service, named.version);
                if version.endpoints != named.addrs {
                    tracing::info!(version = %label, old = ?version.endpoints, new = ?named.addrs, "endpoint addresses changed");
                    version.endpoints = named.addrs;
                    changed.push(label);
                }
            }
        }
        if !changed.is_empty() {
            self.commit(None, &[]);
            self.endpoints.retain_used();
        }
        changed
    }

    /// Takes journaled `written` (and a newly loaded `config`) into the state, swaps in the
    /// table built from it and tells the hooks. Returns the revision in force.
    pub(crate) fn commit(&self, config: Option<Config>, written: &[RevisionRecord]) -> u64 {
        let mut state = self.shared.lock();
        if let Some(config) = config {
            state.config = config;
        }
        // A revision is applied once, however often it is handed over.
        let written: Vec<&RevisionRecord> = written
            .iter()
            .filter(|r| r.revision > state.revision)
            .collect();
        for record in &written {
            state.absorb((*record).clone());
        }
        if let Some(fleet) = &self.fleet {
            fleet.overlay(&mut state.services);
        }
        let table = RoutingTable::build(
            &state.config,
            &state.services,
            &self.endpoints,
            &self.telemetry,
            state.revision,
        );
        self.plane.table.store(Arc::new(table));
        for record in written {
            self.hooks.send(&state.config.hooks, record);
        }
        if let Some(fleet) = &self.fleet {
            fleet.applied.send_replace(state.revision);
        }
        state.revision
    }
}
