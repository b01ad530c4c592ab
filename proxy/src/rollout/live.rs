//! A rollout in memory: its record plus what only the running process knows (when its
//! step began, the bake credited to it, its lease and gate in a fleet).

use super::{baked, gate, Rollout, RolloutStatus, BAKE_SLICE};
use crate::guard::watch::VersionVerdict;
use std::time::Duration;
use tokio::time::Instant;

/// A rollout in memory: its record plus what only the running process knows.
pub(super) struct Live {
    pub(super) rollout: Rollout,
    /// When the step in force took effect (or the rollout was resumed or reloaded).
    pub(super) step_started: Instant,
    /// Why a running rollout is not advancing, as of its last look.
    pub(super) held: Option<String>,
    /// When the bake was last saved.
    pub(super) bake_saved: Instant,
    /// When this process took the bake over (the step began, or it was credited with a
    /// saved bake at a restart or a takeover).
    pub(super) credited_at: Instant,
    /// Since then: the guard called the canary healthy, and then something else (a break
    /// that ends the credit).
    pub(super) seen_healthy: bool,
    pub(super) credit_broken: bool,
    /// Changed since last written where it is kept.
    pub(super) dirty: bool,
    /// In a fleet: whether this instance drives it (holds its lease); always alone.
    pub(super) driving: bool,
    /// This instance just began driving it.
    pub(super) took_over: bool,
    /// In a fleet: its lease, and the KV revision of its shared record as last read or written.
    pub(super) lease: Option<crate::fleet::Lease>,
    pub(super) shared_revision: u64,
    /// The step's webhook gate: when it may be asked again after it did not say yes, and
    /// the question on its way.
    pub(super) gate_retry_at: Option<Instant>,
    pub(super) asking: Option<gate::Asking>,
}

impl Live {
    pub(super) fn new(rollout: Rollout) -> Live {
        let mut live = Live {
            rollout,
            step_started: Instant::now(),
            held: None,
            bake_saved: Instant::now(),
            credited_at: Instant::now(),
            seen_healthy: false,
            credit_broken: false,
            dirty: false,
            driving: true,
            took_over: false,
            lease: None,
            shared_revision: 0,
            gate_retry_at: None,
            asking: None,
        };
        live.credit_bake();
        live
    }

    /// The step counts as in force since long enough ago to carry the bake saved last.
    pub(super) fn credit_bake(&mut self) {
        let now = Instant::now();
        self.step_started = now
            .checked_sub(Duration::from_millis(self.rollout.baked_ms))
            .unwrap_or(now);
        self.bake_saved = now;
        self.credited_at = now;
        self.seen_healthy = false;
        self.credit_broken = false;
    }

    /// The verdict as the bake counts it. The bake saved before this process took it over
    /// (a restart, a new driver) stands until the guard breaks its healthy streak: a guard
    /// healthy since before the takeover continues it, and a first healthy streak after it
    /// (a fresh guard gathering evidence) adds to it; after a break the bake starts over.
    pub(super) fn credited(&mut self, verdict: Option<VersionVerdict>) -> Option<VersionVerdict> {
        let mut verdict = verdict?;
        if verdict.version != self.rollout.canary {
            return Some(verdict);
        }
        match verdict.healthy_since {
            Some(_) => self.seen_healthy = true,
            None => self.credit_broken |= self.seen_healthy,
        }
        let credit = self
            .credited_at
            .saturating_duration_since(self.step_started);
        if let (Some(since), false) = (verdict.healthy_since, self.credit_broken) {
            verdict.healthy_since = Some(match since <= self.credited_at {
                true => self.step_started,
                false => since.checked_sub(credit).unwrap_or(since),
            });
        }
        Some(verdict)
    }

    /// Keeps the bake so far for a restart or a new driver: every `BAKE_SLICE`, and at once
    /// when the guard stops calling the canary healthy (the bake starts over).
    pub(super) fn note_bake(&mut self, verdict: Option<&VersionVerdict>, now: Instant) {
        let Some(verdict) = verdict.filter(|v| v.version == self.rollout.canary) else {
            return;
        };
        let baked_ms =
            baked(self.step_started, Some(verdict), now).map_or(0, |d| d.as_millis() as u64);
        let broken = baked_ms == 0 && self.rollout.baked_ms != 0;
        let due = baked_ms > 0 && now.saturating_duration_since(self.bake_saved) >= BAKE_SLICE;
        if broken || due {
            self.rollout.baked_ms = baked_ms;
            self.bake_saved = now;
            self.dirty = true;
        }
    }

    /// The step in force starts its bake now.
    pub(super) fn step_begins(&mut self) {
        self.rollout.baked_ms = 0;
        self.credit_bake();
    }

    pub(super) fn status(&self) -> RolloutStatus {
        RolloutStatus {
            percent: self.rollout.percent(),
            held: self.held.clone(),
            rollout: self.rollout.clone(),
        }
    }
}
