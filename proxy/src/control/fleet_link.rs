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
use super::fleet_alarm::WentBack;
use super::journal::{self, GENESIS};
use super::record::{ChangeKind, Origin, RevisionRecord};
use super::writer::{Commands, Request, Writer};
use crate::fleet::log::GAP;
use crate::fleet::{Entry, Fleet, LogError, Reason, RevisionLog};
use crate::routing::ServiceState;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};
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
    /// The log went back, as this instance noticed it (until it joins the log again).
    went_back: Mutex<Option<WentBack>>,
    /// This instance carried the log on after it went back: the alarm to record
    /// (`fleet_alarm`), kept until it is.
    alarm_due: Mutex<Option<WentBack>>,
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
            went_back: Mutex::default(),
            alarm_due: Mutex::default(),
        }
    }

    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Notes a log that went back; the first noticed stands until this instance joins again.
    fn notice_went_back(&self, went_back: WentBack) {
        let mut noticed = self
            .went_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        noticed.get_or_insert(went_back);
    }

    fn take_went_back(&self) -> Option<WentBack> {
        self.went_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn alarm_due(&self) -> Option<WentBack> {
        *self
            .alarm_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_alarm_due(&self, alarm: Option<WentBack>) {
        *self
            .alarm_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = alarm;
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
            return self.journal.append(records).await.map_err(|err| {
                self.journal_failed(&err);
                Recording::Failed(super::writer::unwritable(&err))
            });
        };
        if !fleet.joined.load(Ordering::Acquire) {
            return Err(Recording::Offline(
                "this instance has not joined the fleet log (NATS unreachable since it started, or its cache diverged: see its log)".into(),
            ));
        }
        // Aborts held during an outage reach the log before anything planned over them.
        let held = !fleet.held().is_empty();
        if held && records.iter().any(|r| r.kind != ChangeKind::Abort) {
            return Err(Recording::Offline(
                "an abort applied during the NATS outage is not in the fleet log yet; it goes first".into(),
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
            let line_bytes = line.clone();
            let appended = fleet
                .log
                .append(record.revision - 1, &id, Bytes::from(line), patient)
                .await;
            match appended {
                Ok(sequence) => {
                    self.passed(sequence);
                    let line = journal::Line {
                        record,
                        bytes: line_bytes,
                    };
                    written.extend(self.cache(vec![line]).await)
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

    /// Writes revisions the log holds to the local cache, byte for byte as the log has
    /// them (so both chains carry the same hashes). A cache that cannot be written does
    /// not stop this instance from applying what the fleet applies (it says so).
    async fn cache(&self, lines: Vec<journal::Line>) -> Vec<RevisionRecord> {
        let records = lines.iter().map(|l| l.record.clone()).collect();
        if let Err(err) = self.journal.append_exact(lines).await {
            tracing::error!(%err, "local cache of the fleet log not written; applying the revision anyway");
        }
        records
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
        let mut healed = false;
        let mut next = self.log_position() + 1;
        while next <= last {
            let taken = match fleet.log.read(next).await {
                Ok(entry) => self.take(&entry).await,
                Err(err) => {
                    tracing::debug!(revision = next, %err, "cannot read the fleet log");
                    break;
                }
            };
            match taken {
                Ok(Some(record)) => caught_up.push(record),
                // Not a revision of ours: skipped (and said) by `take`.
                Ok(None) => {}
                // Once: what this instance applied so far stays applied; the cache is cut
                // back to where it agrees with the log and read on from there.
                Err(Taken::Diverged) if !healed => {
                    healed = true;
                    let records: Vec<_> = caught_up.drain(..).map(|(_, r)| r).collect();
                    self.commit(None, &records);
                    match self.heal().await {
                        Ok(()) => next = self.log_position() + 1,
                        Err(why) => {
                            tracing::error!(%why, "the local cache disagrees with the fleet log and could not be set right");
                            break;
                        }
                    }
                    continue;
                }
                Err(Taken::Diverged) => break,
            }
            next += 1;
        }
        caught_up
    }

    /// The cache disagrees with the log (a line that differs, byte for byte, from the
    /// log's): finds the first revision where they part, cuts the cache back to just
    /// before it and rebuilds the state from what is left, so the log's records are read
    /// from there like any others. Says so once.
    async fn heal(&self) -> Result<(), String> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let cached = {
            let state = self.shared.lock();
            let mut cached: Vec<RevisionRecord> =
                state.history.values().flatten().cloned().collect();
            cached.sort_by_key(|r| r.revision);
            cached
        };
        let mut keep = cached.len();
        while let Some(record) = keep.checked_sub(1).map(|at| &cached[at]) {
            let entry = fleet
                .log
                .read(record.revision)
                .await
                .map_err(|e| e.to_string())?;
            let line = entry.payload.strip_suffix(b"\n").unwrap_or(&entry.payload);
            if journal::decode_line(line)?.hash == record.hash {
                break;
            }
            keep -= 1;
        }
        let last_hash = keep
            .checked_sub(1)
            .map_or(GENESIS.to_string(), |at| cached[at].hash.clone());
        self.journal
            .truncate(keep, last_hash)
            .await
            .map_err(|e| e.to_string())?;
        {
            let mut state = self.shared.lock();
            let mut rebuilt = super::writer::ControlState::new(state.file.clone());
            rebuilt.log = state.log;
            // Read on from where the cache and the log agree (skipped entries again too).
            let agreed = keep.checked_sub(1).map_or(0, |at| cached[at].revision);
            if let Some(log) = &mut rebuilt.log {
                log.passed = agreed;
            }
            for record in &cached[..keep] {
                rebuilt.absorb(record.clone());
            }
            rebuilt.derive_config();
            *state = rebuilt;
        }
        let from = cached.get(keep).map_or(0, |r| r.revision);
        tracing::warn!(
            from,
            "the local cache disagreed with the fleet log from revision {from} on: took the log's records"
        );
        Ok(())
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

    /// Checks one log entry against the chain this instance holds and caches it. An entry
    /// that is not a revision of this fleet's is skipped: counted, said at most once a
    /// minute, never applied; the next revision is appended after it. A signed revision
    /// that does not follow this instance's last cached line means the cache disagrees
    /// with the log.
    async fn take(&self, entry: &Entry) -> Result<Option<(String, RevisionRecord)>, Taken> {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        // A re-seeded log's stand-in for an entry the old log held and was skipped.
        if entry.payload == GAP {
            self.passed(entry.sequence);
            return Ok(None);
        }
        let record = match self.check(entry) {
            Ok(record) => record,
            Err(Checked::Skip(reason, why)) => {
                fleet.log.skip(entry, reason, &why);
                self.passed(entry.sequence);
                return Ok(None);
            }
            Err(Checked::Diverged) => return Err(Taken::Diverged),
        };
        self.passed(entry.sequence);
        let line = journal::Line {
            record,
            bytes: entry.payload.to_vec(),
        };
        Ok(self
            .cache(vec![line])
            .await
            .pop()
            .map(|record| (entry.id.clone(), record)))
    }

    /// The revision `entry` carries, if it is one that follows this instance's chain.
    fn check(&self, entry: &Entry) -> Result<RevisionRecord, Checked> {
        entry
            .signature
            .clone()
            .map_err(|(reason, why)| Checked::Skip(reason, why))?;
        let record = decode_entry(entry).map_err(|why| Checked::Skip(Reason::Malformed, why))?;
        if record.revision != entry.sequence {
            return Err(Checked::Skip(
                Reason::OutOfChain,
                format!("carries revision {}", record.revision),
            ));
        }
        if record.prev != self.journal.last_hash() {
            return Err(Checked::Diverged);
        }
        Ok(record)
    }

    /// Applies entries the follower read from the log, in order; any gap before them is
    /// read from the log first. Entries already applied are skipped.
    pub(crate) async fn logged(&self, entries: Vec<Entry>) {
        let mut applied = Vec::new();
        for entry in entries {
            self.log_reaches(entry.sequence);
            let position = self
                .log_position()
                .max(applied.last().map_or(0, |r: &RevisionRecord| r.revision));
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
            match self.take(&entry).await {
                Ok(taken) => applied.extend(taken.map(|(_, record)| record)),
                Err(Taken::Diverged) => {
                    // Set right by a catch-up, which reads the log from where they agree.
                    self.commit(None, &applied);
                    applied.clear();
                    let caught_up: Vec<_> =
                        self.catch_up().await.into_iter().map(|(_, r)| r).collect();
                    self.commit(None, &caught_up);
                    return;
                }
            }
        }
        self.commit(None, &applied);
    }

    /// Applies an abort the log cannot take now: it routes at once, and is appended when
    /// the log is back. Returns the revision as planned (its number is the log's to give).
    pub(crate) fn hold_for_log(&self, planned: RevisionRecord) -> Option<RevisionRecord> {
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
                verified: Vec::new(),
                applied_at: Some(UNIX_EPOCH + Duration::from_millis(abort.time_ms)),
            };
            match self
                .apply(&abort.service, Change::Abort {}, origin, None)
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
            self.record_went_back().await;
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
        if revision > 0 && last < revision && self.log_is_prefix(fleet, &cached, last).await? {
            // The log is behind this cache (a new or lost store, or a member less advanced
            // re-seeded it first) and a prefix of it: the cache carries it on. An empty log
            // at start may be a fleet's first (seeded from a standalone journal): only one
            // that holds something, or one seen going back, raises the alarm.
            self.seed(fleet, cached, last).await?;
            let found = (last > 0).then_some(WentBack {
                log_held: last,
                cache_had: revision,
            });
            if let Some(went_back) = fleet.take_went_back().or(found) {
                fleet.set_alarm_due(Some(went_back));
            }
        } else if revision > 0 {
            let ours = cached
                .last()
                .map_or(GENESIS.to_string(), |r| r.hash.clone());
            let theirs = match revision <= last {
                true => {
                    let entry = fleet.log.read(revision).await.map_err(|e| e.to_string())?;
                    Some(decode_entry(&entry)?.hash)
                }
                false => None,
            };
            if let Some(theirs) = theirs.as_ref().filter(|theirs| **theirs != ours) {
                tracing::debug!(%ours, %theirs, revision, "the cache's last line differs from the log's");
                self.heal().await?;
            } else if theirs.is_none() {
                return Err(format!(
                    "the local cache (revision {revision}) is not part of the fleet log (last revision {last}); this instance serves its cached routing and stays out of the fleet: set {} aside and restart to rejoin",
                    self.journal.path().display()
                ));
            }
        }
        fleet.joined.store(true, Ordering::Release);
        fleet.log.set_alarm(None);
        // Carried on by another member, or not behind after all: not this one's alarm.
        fleet.take_went_back();
        self.log_reaches(last);
        let caught_up: Vec<_> = self.catch_up().await.into_iter().map(|(_, r)| r).collect();
        self.commit(None, &caught_up);
        self.reconcile_once().await?;
        self.flush_held().await;
        self.record_went_back().await;
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
            let config = self.shared.lock().file.clone();
            self.reload(config, &Origin::new("startup", ""))
                .await
                .map_err(|err| err.to_string())?;
            if let Some(fleet) = &self.fleet {
                fleet.reconciled.store(true, Ordering::Release);
            }
        }
        self.caught_up();
        Ok(())
    }

    /// Whether the log's last revision `last` is one of this cache's (the log is a
    /// prefix of the cache).
    async fn log_is_prefix(
        &self,
        fleet: &FleetLink,
        cached: &[RevisionRecord],
        last: u64,
    ) -> Result<bool, String> {
        if last == 0 {
            return Ok(true);
        }
        let entry = fleet.log.read(last).await.map_err(|e| e.to_string())?;
        let theirs = decode_entry(&entry)?.hash;
        Ok(cached
            .iter()
            .any(|r| r.revision == last && r.hash == theirs))
    }

    /// A log behind this instance's cache (empty: a new NATS cluster, or one that lost its
    /// store) is carried on from the cache after revision `after`, if no other instance
    /// does first. The cache's lines go as they are, byte for byte.
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
        fleet.notice_went_back(WentBack {
            log_held: last,
            cache_had: position,
        });
        fleet.joined.store(false, Ordering::Release);
        true
    }
}

/// Why a log entry was not taken.
enum Taken {
    /// It does not follow this instance's last cached line: the cache disagrees with the
    /// log somewhere before it.
    Diverged,
}

/// What checking a log entry found, when it is not a revision to take.
enum Checked {
    Skip(Reason, String),
    Diverged,
}

/// The record a log entry carries, its own hash checked over the entry's bytes.
fn decode_entry(entry: &Entry) -> Result<RevisionRecord, String> {
    let line = entry.payload.strip_suffix(b"\n").unwrap_or(&entry.payload);
    journal::decode_line(line)
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
