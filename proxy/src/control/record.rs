//! One revision: what changed for a service, who asked, why, and when.

use crate::config::{Release, ServiceConfig};
use crate::routing::ServiceState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::clock::rfc3339_millis;

/// The result of one version's checks (`verify` runs them; revisions and incidents keep
/// them): `{version, passed, failed: [...], ms}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub version: String,
    pub passed: bool,
    pub failed: Vec<CheckFailure>,
    /// Time the whole run took.
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    pub check: String,
    pub endpoint: String,
    pub got: String,
}

/// What kind of change a revision records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Weights,
    Switch,
    Promote,
    Abort,
    Resume,
    Rollback,
    Freeze,
    Unfreeze,
    /// A version added at runtime (`ctl release`).
    Release,
    /// A version added at runtime, removed (`ctl retire`).
    Retire,
    /// A service appeared in the config (or the journal was empty).
    Added,
    /// A service left the config.
    Removed,
    /// The operator edited the service's weights or stable in the config file.
    ConfigEdit,
    /// The live routing named a version the config no longer has: back to the file's routing.
    VersionRemoved,
    /// Restarted from a journal whose chain was broken (`--accept-broken-journal`).
    Recovered,
    /// The checks of the version taking the traffic, run after an abort, cutback,
    /// rollback or switch (routing unchanged).
    Validated,
    /// The guard found a version bad but did not cut back: the return point fails its
    /// checks (routing unchanged; the alarm).
    CutbackHeld,
    /// A rollout's step waits for `ctl approve` (routing unchanged): the event for
    /// whoever approves.
    ApprovalNeeded,
    /// An operator approved a rollout's step that waits for approval (routing unchanged).
    Approved,
    /// The fleet log held fewer revisions than this instance had read (NATS lost its
    /// store, or a backup was restored): this instance carried it on from its cache, every
    /// abort and latch kept (routing unchanged; the alarm).
    FleetLogWentBack,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Weights => "weights",
            ChangeKind::Switch => "switch",
            ChangeKind::Promote => "promote",
            ChangeKind::Abort => "abort",
            ChangeKind::Resume => "resume",
            ChangeKind::Rollback => "rollback",
            ChangeKind::Freeze => "freeze",
            ChangeKind::Unfreeze => "unfreeze",
            ChangeKind::Release => "release",
            ChangeKind::Retire => "retire",
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::ConfigEdit => "config_edit",
            ChangeKind::VersionRemoved => "version_removed",
            ChangeKind::Recovered => "recovered",
            ChangeKind::Validated => "validated",
            ChangeKind::CutbackHeld => "cutback_held",
            ChangeKind::ApprovalNeeded => "approval_needed",
            ChangeKind::Approved => "approved",
            ChangeKind::FleetLogWentBack => "fleet_log_went_back",
        }
    }
}

/// The routing a config file declares for a service; remembered so a reload can tell an
/// operator's edit of the file from a file that merely still says what it said before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    pub stable: String,
    pub weights: BTreeMap<String, u64>,
}

impl Declared {
    pub fn of(service: &ServiceConfig) -> Declared {
        Declared {
            stable: service.stable.clone(),
            weights: service.weights.clone(),
        }
    }
}

/// Who asked for a change and why. `evidence` carries machine-made proof (the guard's
/// verdict) alongside the human-readable reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    pub actor: String,
    pub reason: String,
    pub evidence: Option<serde_json::Value>,
    /// The requester overrode a pre-flight gate (`--force`).
    pub forced: bool,
    /// The checks that the gate ran before the change, or the validation after one.
    pub checks: Option<CheckReport>,
    /// Checks run for this request, by service: what the gate (`promises`) accepts as
    /// proof that a version may get traffic. Not recorded (`checks` is).
    pub verified: Vec<(String, CheckReport)>,
    /// When the change took effect, if before it could be recorded (an abort held while
    /// the fleet log was out of reach): its revision keeps that time.
    pub applied_at: Option<SystemTime>,
}

impl Origin {
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Origin {
        Origin {
            actor: actor.into(),
            reason: reason.into(),
            evidence: None,
            forced: false,
            checks: None,
            verified: Vec::new(),
            applied_at: None,
        }
    }

    /// The report of `version` of `service` among the checks run for this request.
    pub fn report(&self, service: &str, version: &str) -> Option<&CheckReport> {
        self.verified
            .iter()
            .find(|(s, r)| s == service && r.version == version)
            .map(|(_, r)| r)
    }

    pub fn forced(mut self, forced: bool) -> Origin {
        self.forced = forced;
        self
    }

    pub fn with_checks(mut self, checks: CheckReport) -> Origin {
        self.checks = Some(checks);
        self
    }

    pub fn with_evidence(mut self, evidence: serde_json::Value) -> Origin {
        self.evidence = Some(evidence);
        self
    }
}

/// One line of the journal. Field order is the line's byte order: `hash` must stay last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub revision: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub time_ms: u64,
    pub service: String,
    pub actor: String,
    pub reason: String,
    pub kind: ChangeKind,
    /// Routing before; none when the service is new.
    pub old: Option<ServiceState>,
    /// Routing after; none when the service was removed.
    pub new: Option<ServiceState>,
    /// Release metadata of every version the old or new routing names.
    #[serde(default)]
    pub releases: BTreeMap<String, Release>,
    /// The config file's own routing for the service, on changes the config caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
    /// The requester overrode a pre-flight gate (`--force`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// `{version, passed, failed: [{check, endpoint, got}], ms}`: the gate's checks of the
    /// version the change gave traffic to, or the validation a `validated` revision records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<CheckReport>,
    /// Hash of the previous line (hex); 64 zeros for the first.
    pub prev: String,
    /// SHA-256 (hex) of this line's bytes up to this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// A change ready to be journaled: everything but its place in the chain.
#[derive(Debug, Clone)]
pub struct PlannedRevision {
    pub service: String,
    pub kind: ChangeKind,
    pub old: Option<ServiceState>,
    pub new: Option<ServiceState>,
    pub declared: Option<Declared>,
    pub origin: Origin,
}

impl PlannedRevision {
    /// The record for this change at `revision`, with release metadata from `service`.
    pub fn into_record(
        self,
        revision: u64,
        service: Option<&ServiceConfig>,
        now: SystemTime,
    ) -> RevisionRecord {
        let mut releases = BTreeMap::new();
        for state in [&self.old, &self.new].into_iter().flatten() {
            let named = state
                .weights
                .iter()
                .filter(|(_, &w)| w > 0)
                .map(|(name, _)| name)
                .chain(std::iter::once(&state.stable));
            for name in named {
                if let Some(version) = service.and_then(|s| s.version(name)) {
                    releases.insert(name.clone(), version.release.clone());
                }
            }
        }
        let time_ms = self
            .origin
            .applied_at
            .unwrap_or(now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        RevisionRecord {
            revision,
            time: rfc3339_millis(time_ms),
            time_ms,
            service: self.service,
            actor: self.origin.actor,
            reason: self.origin.reason,
            kind: self.kind,
            old: self.old,
            new: self.new,
            releases,
            declared: self.declared,
            evidence: self.origin.evidence,
            forced: self.origin.forced,
            checks: self.origin.checks,
            prev: String::new(),
            hash: String::new(),
        }
    }
}
