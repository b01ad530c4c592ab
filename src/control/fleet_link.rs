//! The writer's side of a fleet (`[cluster]`): revisions go to the fleet's shared log first
//! and this instance applies them from it, so the whole fleet has one gap-free, hash-chained
//! sequence. The local journal is the cache of what this instance applied: its lines are
//! the log's lines, byte for byte, so both chains carry the same hashes.
//!
//! A change is planned against the state this instance applied, appended with the log's
//! last revision as its expected predecessor, and journaled and swapped in once the log
//! holds it. When another instance appended first, the writer catches up from the log and
//! plans the change again, so a freeze or a latch is always checked against the state the
//! change will follow.

use super::command::Change;
use super::error::ControlError;
use super::journal::{self, GENESIS};
use super::record::{ChangeKind, Origin, RevisionRecord};
use super::writer::{Commands, Request, Writer};
use crate::config::Config;
use crate::fleet::log::GAP;
use crate::fleet::{Entry, Fleet, LogError, Reason, RevisionLog};
use crate::routing::ServiceState;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How many times a change is planned again after losing a race for the log.
pub(crate) const MAX_RACES: usize = 1000;

/// The writer's handle on the fleet.
pub(crate) struct FleetLink {
    pub(crate) log: RevisionLog,
    /// The revision this instance applied last (members announce it).
    pub(crate) applied: watch::Sender<u64>,
    /// Set once this instance's cache is known to be a prefix of the log.
    joined: AtomicBool,
    /// Set once the startup reconciliation went through the log (it is tried again on
    /// every join until it does).
    reconciled: AtomicBool,
    /// This instance's name, part of every append's id.
    instance: String,
    /// Aborts waiting for the log, oldest first (at most one per service), as planned;
    /// kept in `pending.jsonl` too, so a restart during the outage keeps them.
    held: Mutex<Vec<RevisionRecord>>,
}

/// Why revisions were not recorded.
pub(crate) enum Recording {
    /// Another instance appended first; `written` made it before that.
    Behind {
        written: Vec<RevisionRecord>,
    },
    /// The log cannot be reached (or this instance has not joined it yet).
    Offline(String),
    Failed(String),
}

impl FleetLink {
    /// `held`: aborts an earlier run held for the log (from `pending.jsonl`).
    pub(crate) fn new(
        log: RevisionLog,
        instance: &str,
        applied: u64,
        held: Vec<RevisionRecord>,
    ) -> FleetLink {
        if !held.is_empty() {
            tracing::warn!(
                aborts = held.len(),
                "aborts held for the fleet log before the restart are in force here; they are appended when NATS answers"
            );
        }
        FleetLink {
            log,
            applied: watch::channel(applied).0,
            joined: AtomicBool::new(false),
            reconciled: AtomicBool::new(false),
            instance: instance.to_string(),
            held: Mutex::new(held),
        }
    }

    fn refusal(&self, err: &LogError) -> String {
        format!("{err}; the fleet keeps its last routing until NATS is back")
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<RevisionRecord>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts held aborts over the routing the log says (until the log has them).
    pub(crate) fn overlay(&self, services: &mut BTreeMap<String, ServiceState>) {
        for held in self.held().iter() {
            if let (true, Some(state)) = (services.contains_key(&held.service), &held.new) {
                services.insert(held.service.clone(), state.clone());
            }
        }
    }
}

impl Writer {
    /// Records `records` where this instance keeps revisions: the local journal alone, or
    /// the fleet log and then the local cache.
    pub(crate) async fn record(
        &self,
        records: Vec<RevisionRecord>,
    ) -> Result<Vec<RevisionRecord>, Recording> {
        let Some(fleet) = &self.fleet else {
            return self
                .journal
                .append(records)
                .await
                .map_err(|err| Recording::Failed(err.to_string()));
        };
        if !fleet.joined.load(Ordering::Acquire) {
            return Err(Recording::Offline(
                "this instance has not joined the fleet log (NATS unreachable since it started, or its cache diverged: see its log)".into(),
            ));
        }
        let mut written = Vec::new();
        for mut record in records {
            // The log gives the number: the sequence after the last one read past (a
            // skipped entry takes a number no revision has).
            record.revision = self.log_position() + 1;
            let line = journal::chained_line(&mut record, &self.journal.last_hash())
                .map_err(|err| Recording::Failed(err.to_string()))?;
            let id = format!(
                "{}-{}-{:016x}",
                fleet.instance,
                record.revision,
                fastrand::u64(..)
            );
            // Safety never waits: an abort the log cannot take at once is held instead.
            let patient = record.kind != ChangeKind::Abort;
            let appended = fleet
                .log
                .append(record.revision - 1, &id, Bytes::from(line), patient)
                .await;
            match appended {
                Ok(sequence) => {
                    self.passed(sequence);
                    written.extend(self.cache(vec![record]).await)
                }
                // Another instance appended first, or the answer was lost: the log says
                // which. If our entry is there it was applied like any other.
                Err(err @ (LogError::Behind | LogError::Unconfirmed(_))) => {
                    let caught_up = self.catch_up().await;
                    let ours = caught_up.iter().position(|(entry_id, _)| *entry_id == id);
                    let records: Vec<_> = caught_up.into_iter().map(|(_, r)| r).collect();
                    // In log order: ours so far, then what the log holds after them.
                    self.commit(None, &written);
                    self.commit(None, &records);
                    match ours {
                        Some(at) => written.push(records[at].clone()),
                        None => {
                            return Err(match err {
                                LogError::Behind => Recording::Behind { written },
                                err => Recording::Offline(fleet.refusal(&err)),
                            });
                        }
                    }
                }
                Err(err @ LogError::Unreachable(_)) => {
                    return Err(Recording::Offline(fleet.refusal(&err)))
                }
                Err(err) => return Err(Recording::Failed(fleet.refusal(&err))),
            }
        }
        Ok(written)
    }

    /// Writes revisions the log holds to the local cache. A cache that cannot be written
    /// does not stop this instance from applying what the fleet applies (it says so).
    async fn cache(&self, records: Vec<RevisionRecord>) -> Vec<RevisionRecord> {
        match self.journal.append(records.clone()).await {
            Ok(written) => written,
            Err(err) => {
                tracing::error!(%err, "local cache of the fleet log not written; applying the revision anyway");
                records
            }
        }
    }

    /// Reads and caches every revision the log holds past the one applied; returns them
    /// with their append ids, for the caller to commit.
    pub(crate) async fn catch_up(&self) -> Vec<(String, RevisionRecord)> {
        let Some(fleet) = &self.fleet else {
            return Vec::new();
        };
        let last = match fleet.log.last().await {
            Ok(last) => last,
            Err(err) => {
                tracing::debug!(%err, "cannot catch up with the fleet log");
                return Vec::new();
            }
        };
        self.log_reaches(last);
        let mut caught_up = Vec::new();
        for next in self.log_position() + 1..=last {
            match fleet.log.read(next).await {
                // An entry that is not a revision of ours is skipped (and said) by `take`.
                Ok(entry) => caught_up.extend(self.take(&entry).await),
                Err(err) => {
                    tracing::debug!(revision = next, %err, "cannot read the fleet log");
                    break;
                }
            }
        }
        caught_up
    }

    /// The last log sequence this instance read past: applied, or skipped as not a
    /// revision of this fleet's. The next append follows it.
    pub(crate) fn log_position(&self) -> u64 {
        let state = self.shared.lock();
        let passed = state.log.map_or(0, |log| log.passed);
        state.revision.max(passed)
    }

    /// Notes that this instance read past log sequence `sequence`.
    fn passed(&self, sequence: u64) {
        if let Some(fleet) = &self.fleet {
            fleet.log.pass(sequence);
        }
        if let Some(log) = &mut self.shared.lock().log {
            log.passed = log.passed.max(sequence);
        }
    }

    /// Notes that this instance joined the log, caught up and reconciled its config with
    /// it: from now on a service it does not know is one the fleet does not have.
    fn caught_up(&self) {
        if let Some(log) = &mut self.shared.lock().log {
            log.joined = true;
        }
    }

    /// Notes that the fleet's log holds at least `last` revisions (for "not caught up").
    fn log_reaches(&self, last: u64) {
        if let Some(log) = &mut self.shared.lock().log {
            log.last = Some(log.last.map_or(last, |known| known.max(last)));
        }
    }

    /// Checks one log entry against the chain this instance holds and caches it. An entry
    /// that is not a revision following this chain is skipped: counted, said at most once
    /// a minute, never applied; the next revision is appended after it.
    async fn take(&self, entry: &Entry) -> Option<(String, RevisionRecord)> {
        let fleet = self.fleet.as_ref()?;
        if entry.payload == GAP {
            self.passed(entry.sequence);
            return None;
        }
        let record = match self.check(entry) {
            Ok(record) => record,
            Err((reason, why)) => {
                fleet.log.skip(entry, reason, &why);
                self.passed(entry.sequence);
                return None;
            }
        };
        self.passed(entry.sequence);
        let record = self.cache(vec![record]).await.pop()?;
        Some((entry.id.clone(), record))
    }

    /// The revision `entry` carries, if it is one that follows this instance's chain.
    fn check(&self, entry: &Entry) -> Result<RevisionRecord, (Reason, String)> {
        entry.signature.clone()?;
        let line = entry.payload.strip_suffix(b"\n").unwrap_or(&entry.payload);
        let record = journal::decode_line(line).map_err(|why| (Reason::Malformed, why))?;
        if record.revision != entry.sequence {
            return Err((
                Reason::OutOfChain,
                format!("carries revision {}", record.revision),
            ));
        }
        if record.prev != self.journal.last_hash() {
            return Err((
                Reason::OutOfChain,
                format!(
                    "revision {} does not follow this instance's last revision",
                    record.revision
                ),
            ));
        }
        Ok(record)
    }

    /// Applies entries the follower read from the log, in order; any gap before them is
    /// read from the log first. Entries already applied are skipped.
    pub(crate) async fn logged(&self, entries: Vec<Entry>) {
        let mut applied = Vec::new();
        for entry in entries {
            self.log_reaches(entry.sequence);
            let position = self.log_position();
            if entry.sequence <= position {
                continue;
            }
            if entry.sequence > position + 1 {
                self.commit(None, &applied);
                applied.clear();
                let caught_up: Vec<_> = self.catch_up().await.into_iter().map(|(_, r)| r).collect();
                self.commit(None, &caught_up);
                continue;
            }
            applied.extend(self.take(&entry).await.map(|(_, record)| record));
        }
        self.commit(None, &applied);
    }

    /// `apply` in a fleet: plan against the state applied, append to the log, and when
    /// another instance appended first, catch up and plan again.
    pub(crate) async fn apply_in_fleet(
        &mut self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        let refused = |why: &str| {
            ControlError::NotRecorded(format!("change not recorded, routing unchanged: {why}"))
        };
        for _ in 0..MAX_RACES {
            let records = self.plan(service, &change, &origin)?;
            let planned = records.first().cloned();
            match self.record(records).await {
                Ok(written) => {
                    self.commit(None, &written);
                    return written
                        .into_iter()
                        .next()
                        .ok_or_else(|| refused("the log returned no record"));
                }
                // Caught up already: plan again against the state it follows now.
                Err(Recording::Behind { .. }) => {}
                // Safety never waits: an abort routes here now and reaches the log later.
                Err(Recording::Offline(why) | Recording::Failed(why))
                    if change == Change::Abort =>
                {
                    return planned
                        .and_then(|p| self.hold(p))
                        .ok_or_else(|| refused(&why));
                }
                Err(Recording::Failed(why) | Recording::Offline(why)) => return Err(refused(&why)),
            }
        }
        let why = "the fleet log kept moving on";
        match change {
            // Whatever the log does, an abort is in force here at once.
            Change::Abort => self
                .plan(service, &change, &origin)?
                .into_iter()
                .next()
                .and_then(|p| self.hold(p))
                .ok_or_else(|| refused(why)),
            _ => Err(refused(why)),
        }
    }

    /// `reload`'s routing changes in a fleet, appended like any change.
    pub(crate) async fn reconcile_in_fleet(
        &mut self,
        config: &Config,
        origin: &Origin,
    ) -> Result<Vec<RevisionRecord>, String> {
        let mut written = Vec::new();
        for _ in 0..MAX_RACES {
            let records = self.reconciled(config, origin);
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
        Ok(written)
    }

    /// Applies an abort the log cannot take now: it routes at once, and is appended when
    /// the log is back. Returns the revision as planned (its number is the log's to give).
    pub(crate) fn hold(&self, planned: RevisionRecord) -> Option<RevisionRecord> {
        let fleet = self.fleet.as_ref()?;
        planned.new.as_ref()?;
        {
            let mut held = fleet.held();
            held.retain(|h| h.service != planned.service);
            held.push(planned.clone());
        }
        self.save_held();
        tracing::warn!(service = %planned.service, "abort applied here while the fleet log is unreachable; it is appended when NATS is back");
        self.commit(None, &[]);
        Some(planned)
    }

    /// Appends the aborts held during an outage, each planned again against the routing
    /// the log has now (one that finds the service already aborted is done).
    async fn flush_held(&mut self) {
        let Some(fleet) = &self.fleet else { return };
        let held = std::mem::take(&mut *fleet.held());
        if held.is_empty() {
            return;
        }
        {
            // Plan against the log's routing (the table keeps the abort meanwhile).
            let mut state = self.shared.lock();
            for abort in &held {
                let logged = state
                    .history
                    .get(&abort.service)
                    .and_then(|h| h.last())
                    .and_then(|r| r.new.clone());
                if let Some(logged) = logged {
                    state.services.insert(abort.service.clone(), logged);
                }
            }
        }
        for abort in held {
            let origin = Origin {
                actor: abort.actor.clone(),
                reason: abort.reason.clone(),
                evidence: abort.evidence.clone(),
                forced: abort.forced,
                checks: abort.checks.clone(),
            };
            match self
                .apply(&abort.service, Change::Abort, origin, None)
                .await
            {
                Ok(record) => {
                    tracing::info!(service = %abort.service, revision = record.revision, "held abort appended to the fleet log")
                }
                Err(err) => {
                    tracing::info!(service = %abort.service, %err, "held abort not appended (the log's routing needs none)")
                }
            }
        }
        // What is still held (NATS lost again meanwhile) is held anew; the rest is done.
        self.save_held();
        self.commit(None, &[]);
    }

    /// Keeps the held aborts in `pending.jsonl`, where a restart finds them.
    fn save_held(&self) {
        let (Some(fleet), Some(file)) = (&self.fleet, &self.pending_file) else {
            return;
        };
        let held = fleet.held().clone();
        if let Err(err) = file.write(&held) {
            tracing::error!(file = %file.path().display(), error = %err, "held aborts not saved: a restart during the outage would forget them");
        }
    }

    /// Joins the log once NATS answers: checks that the local cache is a prefix of it (or
    /// seeds an empty log from the cache), then catches up. Until then changes are refused.
    pub(crate) async fn join(&mut self) -> Result<(), String> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        if fleet.joined.load(Ordering::Acquire) && !self.log_went_back(fleet).await {
            // A follower that lost its server may not have noticed yet: read what it missed.
            let caught_up: Vec<_> = self.catch_up().await.into_iter().map(|(_, r)| r).collect();
            self.commit(None, &caught_up);
            let reconciled = self.reconcile_once().await;
            self.flush_held().await;
            return reconciled;
        }
        let last = fleet.log.last().await.map_err(|err| err.to_string())?;
        let (revision, cached) = {
            let state = self.shared.lock();
            let mut cached: Vec<RevisionRecord> =
                state.history.values().flatten().cloned().collect();
            cached.sort_by_key(|r| r.revision);
            (state.revision, cached)
        };
        if revision > 0 && last < revision {
            // The log is behind this cache (a new or lost store, or a member less advanced
            // re-seeded it first): if it is a prefix of the cache, the cache carries it on.
            let theirs = match last {
                0 => GENESIS.to_string(),
                _ => {
                    let entry = fleet.log.read(last).await.map_err(|e| e.to_string())?;
                    let line = entry.payload.strip_suffix(b"\n").unwrap_or(&entry.payload);
                    journal::decode_line(line)?.hash
                }
            };
            let ours = match last {
                0 => Some(GENESIS.to_string()),
                _ => cached
                    .iter()
                    .find(|r| r.revision == last)
                    .map(|r| r.hash.clone()),
            };
            if ours.as_deref() != Some(theirs.as_str()) {
                return Err(format!(
                    "the fleet log (last revision {last}) is not part of the local cache (revision {revision}); this instance serves its cached routing and stays out of the fleet: set {} aside and restart to rejoin",
                    self.journal.path().display()
                ));
            }
            self.seed(fleet, cached, last).await?;
        } else if revision > 0 {
            let ours = cached
                .last()
                .map_or(GENESIS.to_string(), |r| r.hash.clone());
            let theirs = match revision <= last {
                true => {
                    let entry = fleet.log.read(revision).await.map_err(|e| e.to_string())?;
                    let line = entry.payload.strip_suffix(b"\n").unwrap_or(&entry.payload);
                    journal::decode_line(line)?.hash
                }
                false => String::new(),
            };
            if ours != theirs {
                return Err(format!(
                    "the local cache (revision {revision}) is not part of the fleet log (last revision {last}); this instance serves its cached routing and stays out of the fleet: set {} aside and restart to rejoin",
                    self.journal.path().display()
                ));
            }
        }
        fleet.joined.store(true, Ordering::Release);
        fleet.log.set_alarm(None);
        self.log_reaches(last);
        let caught_up: Vec<_> = self.catch_up().await.into_iter().map(|(_, r)| r).collect();
        self.commit(None, &caught_up);
        self.reconcile_once().await?;
        self.flush_held().await;
        Ok(())
    }

    /// The startup reconciliation, through the log like any change: a service this config
    /// adds is added for the fleet (once: the others find it done). Until it went through,
    /// this instance has not caught up.
    async fn reconcile_once(&mut self) -> Result<(), String> {
        let done = self
            .fleet
            .as_ref()
            .is_none_or(|f| f.reconciled.load(Ordering::Acquire));
        if !done {
            let config = self.shared.lock().config.clone();
            self.reload(config, &Origin::new("startup", "")).await?;
            if let Some(fleet) = &self.fleet {
                fleet.reconciled.store(true, Ordering::Release);
            }
        }
        self.caught_up();
        Ok(())
    }

    /// A log behind this instance's cache (empty: a new NATS cluster, or one that lost its
    /// store) is carried on from the cache after revision `after`, if no other instance
    /// does first.
    async fn seed(
        &self,
        fleet: &FleetLink,
        cached: Vec<RevisionRecord>,
        after: u64,
    ) -> Result<(), String> {
        let mut prev = cached
            .iter()
            .find(|r| r.revision == after)
            .map_or(GENESIS.to_string(), |r| r.hash.clone());
        let revision = cached.last().map_or(0, |r| r.revision);
        // Sequence, id, payload: the cache's revisions at their numbers, and a gap entry
        // where the old log held something that was skipped.
        let mut entries = Vec::new();
        let mut next = after + 1;
        for mut record in cached.into_iter().filter(|r| r.revision > after) {
            for gap in next..record.revision {
                let id = format!("{}-gap-{gap}", fleet.instance);
                entries.push((gap, id, Bytes::from_static(GAP)));
            }
            let hash = record.hash.clone();
            let line = journal::chained_line(&mut record, &prev).map_err(|e| e.to_string())?;
            if record.hash != hash {
                return Err(format!(
                    "the local cache does not re-read as written at revision {}",
                    record.revision
                ));
            }
            let id = format!("{}-seed-{}", fleet.instance, record.revision);
            entries.push((record.revision, id, Bytes::from(line)));
            next = record.revision + 1;
            prev = hash;
        }
        for (sequence, id, payload) in entries {
            match fleet.log.append(sequence - 1, &id, payload, true).await {
                Ok(_) => {}
                // Another instance carried it on first: join it as it is now.
                Err(LogError::Behind) => {
                    return Err("another instance seeded the fleet log at the same time; joining it on the next try".into())
                }
                Err(err) => return Err(err.to_string()),
            }
        }
        if revision > after {
            tracing::warn!(
                after,
                revision,
                "the fleet log was behind this instance's cache: carried it on from the cache"
            );
        }
        Ok(())
    }

    /// True when the log holds fewer revisions than this instance read from it (its store
    /// was lost, or it moved backwards): this instance then joins it again, its cached
    /// routing (every abort and latch) in force meanwhile, and carries it on from its cache.
    async fn log_went_back(&self, fleet: &FleetLink) -> bool {
        let position = self.log_position();
        let Ok(last) = fleet.log.last().await else {
            return false;
        };
        if last >= position {
            return false;
        }
        let why = format!(
            "the fleet log went back: it holds {last} revision(s), this instance read {position}; serving the cached routing with every abort and latch in force, and re-seeding the log from the cache"
        );
        tracing::error!("{why}");
        fleet.log.set_alarm(Some(why));
        fleet.joined.store(false, Ordering::Release);
        true
    }
}

/// Starts the tasks that keep this instance in the fleet: the follower of the log and the
/// member announcements. Both end when the writer stops.
pub(crate) fn spawn_follower(fleet: &Fleet, commands: Commands, applied: watch::Receiver<u64>) {
    tokio::spawn(follow(fleet.log.clone(), commands, applied.clone()));
    tokio::spawn(fleet.members.clone().run(applied));
}

/// Joins the log whenever NATS answers, then hands every revision it holds past the one
/// applied to the writer, in order; after an outage it follows again from there.
async fn follow(log: RevisionLog, commands: Commands, applied: watch::Receiver<u64>) {
    let started = tokio::time::Instant::now();
    let mut said = Said::default();
    loop {
        if !log.connected() {
            if started.elapsed() > Duration::from_secs(2) && !said.unreachable {
                said.unreachable = true;
                tracing::warn!("NATS unreachable: serving the routing this instance applied last (its local cache); operator changes are refused until NATS answers");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        match commands.call(|reply| Request::JoinFleet { reply }).await {
            Err(_) => return,
            Ok(Err(why)) => {
                if said.join_failure.as_deref() != Some(why.as_str()) {
                    tracing::error!("cannot join the fleet log: {why}");
                    said.join_failure = Some(why);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(Ok(())) => {
                if said.unreachable || said.join_failure.is_some() || !said.joined {
                    tracing::info!("joined the fleet log");
                }
                said = Said {
                    joined: true,
                    ..Said::default()
                };
            }
        }
        let from = *applied.borrow() + 1;
        match log.follow(from).await {
            Ok(entries) => {
                let mut entries = std::pin::pin!(entries);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    let delivered = tokio::select! {
                        entry = entries.next() => {
                            let Some(Ok(entry)) = entry else { break };
                            commands
                                .call(|reply| Request::Logged {
                                    entries: vec![entry],
                                    reply,
                                })
                                .await
                        }
                        // Aborts held during an outage go out as soon as the log is back,
                        // and a consumer that lost its server is made good by a catch-up.
                        _ = tick.tick() => match log.connected() {
                            true => commands
                                .call(|reply| Request::JoinFleet { reply })
                                .await
                                .map(|_| ()),
                            false => Ok(()),
                        },
                    };
                    if delivered.is_err() {
                        return;
                    }
                }
            }
            Err(err) => tracing::debug!(%err, "cannot follow the fleet log yet"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the follower has already logged, so each condition is logged once.
#[derive(Default)]
struct Said {
    unreachable: bool,
    join_failure: Option<String>,
    joined: bool,
}
