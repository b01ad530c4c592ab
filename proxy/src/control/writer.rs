//! The one writer: a task that owns the control state and the journal. Every change
//! (an operator's, the guard's, a rollout's, a reload's, a name refresh's) reaches it as
//! a command with a oneshot for the answer, and is carried out whole by this task: a
//! requester that goes away only drops the answer, never a change half-done.
//!
//! Readers see the state through a short synchronous lock that no `.await` ever holds.

use super::change;
use super::command::Change;
use super::error::ControlError;
use super::fleet_link::{FleetLink, Recording};
use super::hooks::Hooks;
use super::journal::{Journal, JournalError};
use super::pending::PendingFile;
use super::record::{ChangeKind, Declared, Origin, PlannedRevision, RevisionRecord};
use super::{promises, reconcile, runtime, unknown_service, ReloadResponse};
use crate::config::Config;
use crate::dataplane::proxy::DataPlane;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::Telemetry;
use crate::upstream::endpoint::EndpointRegistry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands waiting for the writer; a requester past this waits for room (and, if it goes
/// away meanwhile, its command never starts).
const QUEUE: usize = 256;

/// The control state: written only by the writer task, read by anyone.
pub(crate) struct ControlState {
    /// The config in force: the file's, with the runtime versions the routing carries
    /// (`runtime::effective`); rebuilt on every commit.
    pub(crate) config: Config,
    /// The config file as last loaded (endpoint names looked up again since).
    pub(crate) file: Config,
    /// Runtime versions' endpoint names, looked up again since they were released.
    pub(crate) refreshed: runtime::Refreshed,
    pub(crate) services: BTreeMap<String, ServiceState>,
    /// What the config file said about each service's routing when it was last loaded.
    pub(crate) declared: BTreeMap<String, Declared>,
    pub(crate) revision: u64,
    /// Each service's revisions, oldest first (kept after removal, for the record).
    pub(crate) history: BTreeMap<String, Vec<RevisionRecord>>,
    pub(crate) aborts: BTreeMap<String, u64>,
    /// Aborts in force but not yet journaled, oldest first.
    pub(crate) pending: Vec<RevisionRecord>,
    /// Set while the journal cannot be written.
    pub(crate) outage: Option<Outage>,
    /// In a fleet: how far this instance knows the fleet's log to go.
    pub(crate) log: Option<LogProgress>,
}

/// What a fleet member knows of the fleet's log, to tell whether it has caught up.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogProgress {
    /// Its cache is known to be part of the log.
    pub(crate) joined: bool,
    /// The log's last revision when last read (`None` before it was ever reached).
    pub(crate) last: Option<u64>,
    /// The last log sequence read past, applied or skipped (not a revision of ours).
    pub(crate) passed: u64,
}

impl ControlState {
    pub(crate) fn new(config: Config) -> ControlState {
        ControlState {
            file: config.clone(),
            config,
            refreshed: runtime::Refreshed::new(),
            services: BTreeMap::new(),
            declared: BTreeMap::new(),
            revision: 0,
            history: BTreeMap::new(),
            aborts: BTreeMap::new(),
            pending: Vec::new(),
            outage: None,
            log: None,
        }
    }

    /// In a fleet, unless this instance applied the log as far as it is known to go: why
    /// it cannot answer for the fleet's routing yet.
    pub(crate) fn not_caught_up(&self) -> Option<ControlError> {
        let log = self.log?;
        let of = match log.last {
            Some(last) if log.joined && last <= self.revision.max(log.passed) => return None,
            Some(last) if log.joined => format!("applied {} of {last}", self.revision),
            Some(last) => format!(
                "applied {} of {last}, and not joined to the log",
                self.revision
            ),
            None => format!(
                "applied {}; the fleet's log has not been reached since this instance started",
                self.revision
            ),
        };
        Some(ControlError::NotCaughtUp(format!(
            "this instance has not caught up with the fleet's log yet ({of}); try again or ask another instance"
        )))
    }

    /// The last routing of each service that was removed (and is not back).
    pub(crate) fn departed(&self) -> BTreeMap<String, ServiceState> {
        self.history
            .iter()
            .filter(|(name, _)| !self.services.contains_key(*name))
            .filter_map(|(name, h)| Some((name.clone(), h.last()?.old.clone()?)))
            .collect()
    }

    /// Puts the journaled (chained) copy of a pending revision in its place in history.
    pub(crate) fn replace(&mut self, record: RevisionRecord) {
        let kept = self
            .history
            .get_mut(&record.service)
            .and_then(|h| h.iter_mut().rev().find(|r| r.revision == record.revision));
        if let Some(kept) = kept {
            *kept = record;
        }
    }

    /// Rebuilds the config in force from the file and the routing's runtime versions.
    pub(crate) fn derive_config(&mut self) {
        let services = &self.services;
        self.refreshed.retain(|(service, version), _| {
            services
                .get(service)
                .is_some_and(|s| s.runtime.contains_key(version))
        });
        self.config = runtime::effective(&self.file, &self.services, &self.refreshed);
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
        /// Apply only if the routing is still this (what a pre-flight gate checked).
        expect: Option<ServiceState>,
        reply: oneshot::Sender<Result<RevisionRecord, ControlError>>,
    },
    /// Record a revision that leaves the routing as it is (a validation, an alarm).
    Note {
        service: String,
        kind: ChangeKind,
        origin: Origin,
        reply: oneshot::Sender<Result<RevisionRecord, ControlError>>,
    },
    Reload {
        config: Box<Config>,
        origin: Origin,
        reply: oneshot::Sender<Result<ReloadResponse, ControlError>>,
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

/// What sends commands to the writer: aborts on a lane of their own that the writer
/// serves first, so safety never queues behind operators' changes.
#[derive(Clone)]
pub(crate) struct Commands {
    safety: mpsc::Sender<Request>,
    others: mpsc::Sender<Request>,
}

impl Commands {
    /// Sends a command and waits for its answer. Dropping this future before the command
    /// is queued means it never starts; after, it completes and only the answer is lost.
    pub(crate) async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        let request = command(reply);
        let lane = match &request {
            Request::Apply {
                change: Change::Abort {},
                ..
            } => &self.safety,
            _ => &self.others,
        };
        lane.send(request).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

/// How often the writer tries again to journal the aborts it applied without the journal.
const RETRY: Duration = Duration::from_secs(1);
/// An unwritable journal is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The journal cannot be written: since when, why, and when that was last logged.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub(crate) since_ms: u64,
    pub(crate) error: String,
    logged_at: Option<Instant>,
}

impl Outage {
    fn new(error: String) -> Outage {
        Outage {
            since_ms: unix_ms(SystemTime::now()),
            error,
            logged_at: None,
        }
    }

    /// An outage found, and logged, at start.
    pub(crate) fn logged(error: String) -> Outage {
        Outage {
            logged_at: Some(Instant::now()),
            ..Outage::new(error)
        }
    }

    /// True when the condition should be logged now (at most once a `LOG_EVERY`).
    fn log_due(&mut self, now: Instant) -> bool {
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            self.logged_at = Some(now);
        }
        due
    }
}

/// Why a change other than an abort is refused while the journal cannot be written.
pub(crate) fn unwritable(err: &JournalError) -> String {
    format!("{err} (only aborts apply until the journal can be written)")
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// Where aborts applied without the journal wait for it (see `pending`).
    pub(crate) pending_file: Option<PendingFile>,
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
        let (safety, safety_lane) = mpsc::channel(QUEUE);
        let (others, other_lane) = mpsc::channel(QUEUE);
        tokio::spawn(self.run(safety_lane, other_lane));
        Commands { safety, others }
    }

    async fn run(
        mut self,
        mut safety: mpsc::Receiver<Request>,
        mut others: mpsc::Receiver<Request>,
    ) {
        loop {
            let waiting = !self.shared.lock().pending.is_empty();
            let request = tokio::select! {
                biased;
                Some(request) = safety.recv() => request,
                Some(request) = others.recv() => request,
                _ = tokio::time::sleep(RETRY), if waiting => {
                    let _ = self.flush().await;
                    continue;
                }
                else => return,
            };
            match request {
                Request::Apply {
                    service,
                    change,
                    origin,
                    expect,
                    reply,
                } => {
                    let _ = reply.send(self.apply(&service, change, origin, expect).await);
                }
                Request::Note {
                    service,
                    kind,
                    origin,
                    reply,
                } => {
                    let _ = reply.send(self.note(&service, kind, origin).await);
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

    /// Journals the aborts applied without the journal, in order. Ok when none is left.
    async fn flush(&mut self) -> Result<(), JournalError> {
        let pending = self.shared.lock().pending.clone();
        if pending.is_empty() {
            return Ok(());
        }
        match self.journal.append(pending).await {
            Ok(written) => {
                tracing::warn!(
                    revisions = written.len(),
                    "the journal can be written again: aborts applied meanwhile are recorded"
                );
                let mut state = self.shared.lock();
                state.pending.clear();
                state.outage = None;
                for record in written {
                    state.replace(record);
                }
                drop(state);
                self.save_pending();
                Ok(())
            }
            Err(err) => {
                self.journal_failed(&err);
                Err(err)
            }
        }
    }

    /// Notes that the journal cannot be written (logged at most once a minute).
    pub(crate) fn journal_failed(&self, err: &JournalError) {
        let mut state = self.shared.lock();
        let pending = state.pending.len();
        let outage = state
            .outage
            .get_or_insert_with(|| Outage::new(err.to_string()));
        outage.error = err.to_string();
        if outage.log_due(Instant::now()) {
            tracing::error!(
                error = %err,
                pending,
                "the journal cannot be written: aborts still apply at once and wait to be recorded; other changes are refused"
            );
        }
    }

    /// Keeps the pending aborts where a restart finds them.
    fn save_pending(&self) {
        let Some(file) = &self.pending_file else {
            return;
        };
        let pending = self.shared.lock().pending.clone();
        if let Err(err) = file.write(&pending) {
            tracing::error!(file = %file.path().display(), error = %err, "pending aborts not saved: a restart now would forget them");
        }
    }

    /// The one path of a change, whatever asked for it: plan it against the state in force
    /// (where every promise is checked: `promises`), record it (the journal, or in a fleet
    /// the log and then the cache), take it into the state and swap the table. Only while
    /// the routing is still `expect`, when given. When another fleet member appended first,
    /// the writer has caught up: plan again. An abort that cannot be recorded applies anyway
    /// and is held until it can be.
    pub(crate) async fn apply(
        &mut self,
        service: &str,
        change: Change,
        origin: Origin,
        expect: Option<ServiceState>,
    ) -> Result<RevisionRecord, ControlError> {
        let refused = |why: &str| {
            ControlError::NotRecorded(format!("change not recorded, routing unchanged: {why}"))
        };
        let flushed = self.flush().await.map_err(|err| unwritable(&err));
        if let (Err(why), false) = (&flushed, change == Change::Abort {}) {
            return Err(refused(why));
        }
        for _ in 0..super::fleet_link::MAX_RACES {
            if let Some(expected) = &expect {
                if self.shared.lock().services.get(service) != Some(expected) {
                    return Err(ControlError::Moved);
                }
            }
            let records = self.plan(service, &change, &origin)?;
            let recorded = match &flushed {
                Ok(()) => self.record(records.clone()).await,
                Err(why) => Err(Recording::Failed(why.clone())),
            };
            match recorded {
                Ok(written) => {
                    self.commit(None, &written);
                    return written
                        .into_iter()
                        .next()
                        .ok_or_else(|| refused("nothing was recorded"));
                }
                Err(Recording::Behind { .. }) => {}
                // Safety never waits: in force now, recorded as soon as it can be.
                Err(Recording::Offline(why) | Recording::Failed(why))
                    if change == Change::Abort {} =>
                {
                    return self.hold(records).ok_or_else(|| refused(&why));
                }
                Err(Recording::Offline(why) | Recording::Failed(why)) => return Err(refused(&why)),
            }
        }
        let why = "the fleet log kept moving on";
        match change {
            // Whatever the log does, an abort is in force here at once.
            Change::Abort {} => {
                let records = self.plan(service, &change, &origin)?;
                self.hold(records).ok_or_else(|| refused(why))
            }
            _ => Err(refused(why)),
        }
    }

    /// Applies aborts that cannot be recorded now: they route at once and wait (in
    /// `pending.jsonl`) for the journal, or in a fleet for the log. Returns the first.
    fn hold(&self, records: Vec<RevisionRecord>) -> Option<RevisionRecord> {
        if self.fleet.is_some() {
            return records
                .into_iter()
                .next()
                .and_then(|r| self.hold_for_log(r));
        }
        self.shared.lock().pending.extend(records.iter().cloned());
        self.save_pending();
        self.commit(None, &records);
        records.into_iter().next()
    }

    /// In a fleet the note goes through the log like any revision (so every instance's
    /// cache stays the log, line for line).
    async fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        let written = self.note_each(&[service.to_string()], kind, origin).await?;
        written
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::NotRecorded("journal returned no record".into()))
    }

    /// One revision of `kind` for each of `services`, routing as it is, written together.
    pub(crate) async fn note_each(
        &self,
        services: &[String],
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<Vec<RevisionRecord>, ControlError> {
        for _ in 0..super::fleet_link::MAX_RACES {
            let records = {
                let state = self.shared.lock();
                let mut plans = Vec::new();
                for service in services {
                    let current = state
                        .services
                        .get(service)
                        .ok_or_else(|| unknown_service(&state, service))?;
                    plans.push(PlannedRevision {
                        service: service.clone(),
                        kind,
                        old: Some(current.clone()),
                        new: Some(current.clone()),
                        declared: None,
                        origin: origin.clone(),
                    });
                }
                state.records(plans, &state.config)
            };
            match self.record(records).await {
                Ok(written) => {
                    self.commit(None, &written);
                    return Ok(written);
                }
                // Caught up already: number it again after what the log holds now.
                Err(Recording::Behind { .. }) => {}
                Err(Recording::Offline(why) | Recording::Failed(why)) => {
                    return Err(ControlError::NotRecorded(format!("not recorded: {why}")))
                }
            }
        }
        Err(ControlError::NotRecorded(
            "not recorded: the fleet log kept moving on".into(),
        ))
    }

    /// The revision `change` makes, planned against the state in force, promises kept.
    pub(crate) fn plan(
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
                    _ => return Err(unknown_service(&state, service)),
                };
            let history: Vec<&RevisionRecord> = state
                .history
                .get(service)
                .map(|h| h.iter().collect())
                .unwrap_or_default();
            let next = change::next_state(service_config, current, change, &history)?;
            let mut plan = PlannedRevision {
                service: service.to_string(),
                kind: change.kind(),
                old: Some(current.clone()),
                new: Some(next),
                declared: None,
                origin: origin.clone(),
            };
            promises::enforce(&mut plan, &history)?;
            state.records(vec![plan], &state.config)
        };
        Ok(records)
    }

    /// Brings live routing in line with a newly loaded `config`, through the same
    /// pipeline as any change; refused whole when one of its revisions breaks a promise.
    pub(crate) async fn reload(
        &mut self,
        config: Config,
        origin: &Origin,
    ) -> Result<ReloadResponse, ControlError> {
        let written = self.reconcile(&config, origin).await?;
        let revision = self.commit(Some(config), &written);
        self.endpoints.retain_used();
        let kept_runtime = runtime::listed(&self.shared.lock().services);
        if !kept_runtime.is_empty() {
            tracing::info!("reload kept runtime versions: {}", kept_runtime.join(", "));
        }
        Ok(ReloadResponse {
            revision,
            changes: written,
            kept_runtime,
        })
    }

    /// Records the routing changes `config` makes (see `reconcile`); in a fleet, planned
    /// again after what another member appended first.
    async fn reconcile(
        &mut self,
        config: &Config,
        origin: &Origin,
    ) -> Result<Vec<RevisionRecord>, ControlError> {
        self.flush()
            .await
            .map_err(|err| ControlError::NotRecorded(unwritable(&err)))?;
        let mut written = Vec::new();
        for _ in 0..super::fleet_link::MAX_RACES {
            let records = self.reconciled(config, origin)?;
            if records.is_empty() {
                break;
            }
            match self.record(records).await {
                Ok(done) => {
                    written.extend(done);
                    break;
                }
                Err(Recording::Behind { written: done }) => written.extend(done),
                Err(Recording::Failed(why) | Recording::Offline(why)) => {
                    return Err(ControlError::NotRecorded(why))
                }
            }
        }
        Ok(written)
    }

    /// The revisions that bring live routing in line with `config`, promises kept: the
    /// checks every one of them needs are asked for at once.
    pub(crate) fn reconciled(
        &self,
        config: &Config,
        origin: &Origin,
    ) -> Result<Vec<RevisionRecord>, ControlError> {
        let state = self.shared.lock();
        let mut planned = reconcile::reconcile(
            &state.services,
            &state.declared,
            &state.departed(),
            config,
            origin,
        );
        let mut due = Vec::new();
        for plan in &mut planned {
            let history: Vec<&RevisionRecord> = state
                .history
                .get(&plan.service)
                .map(|h| h.iter().collect())
                .unwrap_or_default();
            match promises::enforce(plan, &history) {
                Ok(()) => {}
                Err(ControlError::ChecksDue(more)) => due.extend(more),
                Err(err) => return Err(err),
            }
        }
        if !due.is_empty() {
            return Err(ControlError::ChecksDue(due));
        }
        Ok(state.records(planned, config))
    }

    /// Takes new addresses for the versions whose entries are still those looked up.
    fn endpoints(&self, resolved: Vec<Resolved>) -> Vec<String> {
        let mut changed = Vec::new();
        {
            let mut state = self.shared.lock();
            let state = &mut *state;
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
                if version.endpoints == named.addrs {
                    continue;
                }
                tracing::info!(version = %label, old = ?version.endpoints, new = ?named.addrs, "endpoint addresses changed");
                version.endpoints = named.addrs.clone();
                changed.push(label);
                // Kept where the next commit rebuilds the config in force from.
                let in_file = state
                    .file
                    .services
                    .iter_mut()
                    .find(|s| s.name == named.service)
                    .and_then(|s| s.versions.iter_mut().find(|v| v.name == named.version))
                    .filter(|v| v.sources == named.sources);
                match in_file {
                    Some(version) => version.endpoints = named.addrs,
                    None => {
                        state
                            .refreshed
                            .insert((named.service, named.version), named.addrs);
                    }
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
            state.file = config;
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
        state.derive_config();
        let table = RoutingTable::build(
            &state.config,
            &state.services,
            &self.endpoints,
            &self.telemetry,
            state.revision,
        );
        self.plane.table.store(Arc::new(table));
        // A retired version's endpoints (and their pooled connections) go with it.
        if written.iter().any(|r| r.kind == ChangeKind::Retire) {
            self.endpoints.retain_used();
        }
        for record in written {
            self.hooks.send(&state.config.hooks, record);
        }
        if let Some(fleet) = &self.fleet {
            let passed = state.log.map_or(0, |log| log.passed);
            fleet.applied.send_replace(state.revision.max(passed));
        }
        state.revision
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
