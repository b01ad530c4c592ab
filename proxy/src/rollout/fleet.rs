//! Rollouts in a fleet (`[cluster]`): each service's rollout record lives in the fleet's
//! shared state (KV `rollout.SERVICE`), so every instance shows it and a new driver
//! continues where the last one stood, step and bake. One instance at a time drives a
//! running rollout: the holder of the service's rollout lease. It renews the lease while
//! the rollout runs and gives it up when it stops; when the holder dies or loses NATS its
//! lease expires and another instance takes over, crediting the bake saved last.
//!
//! Every write of a record names the KV revision it read (compare-and-set). When two
//! writes cross (an operator pauses on one instance while the driver advances on
//! another), the driver keeps its step and takes the pause; anyone else takes the
//! shared record.

use super::plan::{Rollout, Status};
use super::Live;
use crate::fleet::{key_part, Fleet, Lease, Leases, LogError, Records, Written};
use crate::routing::ServiceState;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How often an instance reads the shared rollouts.
const PULL_EVERY: Duration = Duration::from_millis(500);

pub(super) struct FleetRollouts {
    leases: Leases,
    records: Records,
    pulled: Mutex<Option<Instant>>,
}

/// What a write of a record came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Stored,
    /// Another instance wrote first and its record was taken instead of ours.
    Theirs,
}

fn key(service: &str) -> String {
    format!("rollout.{}", key_part(service))
}

impl FleetRollouts {
    pub(super) fn new(fleet: &Fleet) -> FleetRollouts {
        FleetRollouts {
            leases: fleet.leases.clone(),
            records: fleet.records.clone(),
            pulled: Mutex::new(None),
        }
    }

    /// Reads the shared rollouts (at most every `PULL_EVERY` unless `now`) and takes in those
    /// another instance wrote since this one last looked.
    pub(super) async fn pull(&self, live: &mut BTreeMap<String, Live>, now: bool) {
        {
            let mut pulled = self.pulled.lock().unwrap_or_else(PoisonError::into_inner);
            if !now && pulled.is_some_and(|at| at.elapsed() < PULL_EVERY) {
                return;
            }
            *pulled = Some(Instant::now());
        }
        let keys = match self.records.keys("rollout.").await {
            Ok(keys) => keys,
            Err(err) => return tracing::debug!(%err, "shared rollouts not read"),
        };
        for key in keys {
            let Ok(Some((bytes, revision))) = self.records.get(&key).await else {
                continue;
            };
            let Ok(theirs) = serde_json::from_slice::<Rollout>(&bytes) else {
                tracing::warn!(%key, "a shared rollout record does not read; ignored");
                continue;
            };
            match live.get_mut(&theirs.service) {
                Some(entry) if entry.shared_revision == revision || entry.dirty => {}
                Some(entry) => entry.take(theirs, revision),
                None => {
                    let mut entry = Live::new(theirs.clone());
                    entry.driving = false;
                    entry.take(theirs, revision);
                    live.insert(entry.rollout.service.clone(), entry);
                }
            }
        }
    }

    /// Claims (or renews) the lease of every running rollout and gives up the others';
    /// marks which this instance drives.
    pub(super) async fn lead(&self, live: &mut BTreeMap<String, Live>) {
        for (service, entry) in live.iter_mut() {
            let running = entry.rollout.status == Status::Running;
            let lease = entry
                .lease
                .get_or_insert_with(|| Lease::new(&self.leases, key(service)));
            if !running {
                lease.release().await;
                entry.driving = false;
                continue;
            }
            // About to try for a free lease: first make sure the rollout still runs (the
            // last driver writes its final record before it lets the lease go).
            if !entry.driving && lease.due() {
                if let Ok(Some((bytes, revision))) = self.records.get(&key(service)).await {
                    if revision != entry.shared_revision {
                        if let Ok(theirs) = serde_json::from_slice::<Rollout>(&bytes) {
                            entry.take(theirs, revision);
                        }
                    }
                }
                if entry.rollout.status != Status::Running {
                    continue;
                }
            }
            let lease = entry
                .lease
                .get_or_insert_with(|| Lease::new(&self.leases, key(service)));
            let was = entry.driving;
            entry.driving = lease.hold().await;
            match (was, entry.driving) {
                // Taking over: the bake goes on from what the last driver saved.
                (false, true) => {
                    entry.credit_bake();
                    entry.took_over = true;
                    entry.held = None;
                }
                (_, false) => {
                    entry.held = Some(match &lease.holder {
                        Some(holder) => format!("driven by {holder}"),
                        None => "waiting for the rollout lease (NATS)".into(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Claims the lease of `service` for an operator's start or resume here.
    pub(super) async fn claim(&self, entry: &mut Live) -> Result<(), String> {
        let lease = entry
            .lease
            .get_or_insert_with(|| Lease::new(&self.leases, key(&entry.rollout.service)));
        if lease.hold().await {
            entry.driving = true;
            return Ok(());
        }
        Err(match &lease.holder {
            Some(holder) => {
                format!("the rollout is driven by {holder} just now; try again in a few seconds")
            }
            None => "the rollout lease cannot be taken: fleet unreachable (NATS)".into(),
        })
    }

    /// Writes `entry`'s record to the shared state. When another instance wrote first:
    /// the driver keeps its step and takes an operator's pause; anyone else takes theirs.
    pub(super) async fn push(&self, entry: &mut Live) -> Result<Pushed, LogError> {
        let key = key(&entry.rollout.service);
        for _ in 0..3 {
            let bytes =
                serde_json::to_vec(&entry.rollout).map_err(|e| LogError::Other(e.to_string()))?;
            match self
                .records
                .put(&key, Bytes::from(bytes), entry.shared_revision)
                .await?
            {
                Written::At(revision) => {
                    entry.shared_revision = revision;
                    entry.dirty = false;
                    return Ok(Pushed::Stored);
                }
                Written::Conflict => {}
            }
            let Some((bytes, revision)) = self.records.get(&key).await? else {
                entry.shared_revision = 0;
                continue;
            };
            let theirs: Rollout =
                serde_json::from_slice(&bytes).map_err(|e| LogError::Other(e.to_string()))?;
            let driving = entry.lease.as_ref().is_some_and(Lease::held);
            if !driving {
                entry.take(theirs, revision);
                entry.dirty = false;
                return Ok(Pushed::Theirs);
            }
            if theirs.status == Status::Paused && entry.rollout.status == Status::Running {
                entry.rollout.status = theirs.status;
                entry.rollout.note = theirs.note;
                entry.rollout.since = theirs.since;
                entry.rollout.since_ms = theirs.since_ms;
            }
            entry.shared_revision = revision;
        }
        Err(LogError::Other(
            "the shared rollout record kept moving".into(),
        ))
    }
}

impl Live {
    /// False once a fleet driver's lease is too old to trust (checked again just before a
    /// step, without the network).
    pub(super) fn still_driving(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::held)
    }

    /// Takes the shared record another instance wrote.
    fn take(&mut self, theirs: Rollout, revision: u64) {
        self.rollout = theirs;
        self.shared_revision = revision;
        self.held = None;
        self.credit_bake();
    }

    /// A driver that took over after its predecessor made the next step but died before
    /// recording it finds that step in force: it is the rollout's, not an outsider's.
    pub(super) fn recognise_step_made(&mut self, routing: &ServiceState) {
        let next = self.rollout.step + 1;
        if self.rollout.follows(routing) || next >= self.rollout.steps.len() {
            return;
        }
        let mut ahead = self.rollout.clone();
        ahead.step = next;
        if ahead.follows(routing) {
            tracing::info!(service = %self.rollout.service, step = next + 1, "the last driver made this step before it went away");
            self.rollout.step = next;
            self.rollout.baked_ms = 0;
            self.credit_bake();
            self.dirty = true;
        }
    }
}
