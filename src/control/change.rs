//! Operator changes and the rules that turn a service's routing into the next one.

use super::api::{ApiError, ChangeRequest};
use super::record::{ChangeKind, RevisionRecord};
use crate::config::ServiceConfig;
use crate::routing::ServiceState;
use std::collections::BTreeMap;

/// A change to one service's routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace the weights; versions not named get 0.
    Weights(BTreeMap<String, u64>),
    /// All traffic to a version, which becomes stable.
    Switch(String),
    /// The one non-stable version with traffic becomes stable at 100%.
    Promote,
    /// All traffic to stable now, latched until `Resume`.
    Abort,
    Resume,
    /// Back to the stable+weights of a revision; `None`: before the last routing change.
    Rollback {
        to: Option<u64>,
    },
    Freeze,
    Unfreeze,
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Weights(_) => ChangeKind::Weights,
            Change::Switch(_) => ChangeKind::Switch,
            Change::Promote => ChangeKind::Promote,
            Change::Abort => ChangeKind::Abort,
            Change::Resume => ChangeKind::Resume,
            Change::Rollback { .. } => ChangeKind::Rollback,
            Change::Freeze => ChangeKind::Freeze,
            Change::Unfreeze => ChangeKind::Unfreeze,
        }
    }

    /// The change an admin endpoint (`weights`, `switch`, ...) asks for.
    pub fn from_request(action: &str, request: &ChangeRequest) -> Result<Change, ApiError> {
        let missing = |field: &str| {
            ApiError::BadRequest(format!("{action} needs a \"{field}\" field in the body"))
        };
        let change = match action {
            "weights" => {
                Change::Weights(request.weights.clone().ok_or_else(|| missing("weights"))?)
            }
            "switch" => Change::Switch(request.version.clone().ok_or_else(|| missing("version"))?),
            "promote" => Change::Promote,
            "abort" => Change::Abort,
            "resume" => Change::Resume,
            "rollback" => Change::Rollback { to: request.to },
            "freeze" => Change::Freeze,
            "unfreeze" => Change::Unfreeze,
            other => return Err(ApiError::NotFound(format!("no such action {other:?}"))),
        };
        let unused = match &change {
            Change::Weights(_) => request.version.is_some() || request.to.is_some(),
            Change::Switch(_) => request.weights.is_some() || request.to.is_some(),
            Change::Rollback { .. } => request.weights.is_some() || request.version.is_some(),
            _ => request.weights.is_some() || request.version.is_some() || request.to.is_some(),
        };
        if unused {
            return Err(ApiError::BadRequest(format!(
                "{action} takes only actor and reason besides its own field"
            )));
        }
        Ok(change)
    }
}

/// The routing after `change`. `history` is this service's revisions, oldest first.
/// Refuses bad input, no-ops, and (while frozen) any rise in a non-stable version's share.
pub fn next_state(
    service: &ServiceConfig,
    current: &ServiceState,
    change: &Change,
    history: &[&RevisionRecord],
) -> Result<ServiceState, ApiError> {
    let name = &service.name;
    let mut next = current.clone();
    match change {
        Change::Weights(weights) => {
            check_weights(service, weights)?;
            next.weights = weights.clone();
        }
        Change::Switch(version) => {
            known_version(service, version)?;
            single_version(&mut next, version);
        }
        Change::Promote => {
            let canaries: Vec<&String> = current
                .weights
                .iter()
                .filter(|(v, &w)| w > 0 && **v != current.stable)
                .map(|(v, _)| v)
                .collect();
            match canaries.as_slice() {
                [canary] => single_version(&mut next, canary),
                [] => {
                    return Err(ApiError::Conflict(format!(
                        "{name} has no canary to promote: only {} has traffic",
                        current.stable
                    )))
                }
                _ => {
                    return Err(ApiError::Conflict(format!(
                        "{name} has {} non-stable versions with traffic; use switch to pick one",
                        canaries.len()
                    )))
                }
            }
        }
        Change::Abort => next.latched = true,
        Change::Resume => next.latched = false,
        Change::Freeze => next.frozen = true,
        Change::Unfreeze => next.frozen = false,
        Change::Rollback { to } => {
            let target = rollback_target(name, current, *to, history)?;
            for version in target.weights.keys().chain(std::iter::once(&target.stable)) {
                if service.version(version).is_none() {
                    return Err(ApiError::Conflict(format!(
                        "that revision routes to version {version:?}, which {name} no longer has"
                    )));
                }
            }
            next.stable = target.stable.clone();
            next.weights = target.weights.clone();
        }
    }
    if next == *current {
        return Err(ApiError::Conflict(format!(
            "no change: {name} already is {}",
            describe(current)
        )));
    }
    let exempt = matches!(
        change,
        Change::Abort | Change::Rollback { .. } | Change::Unfreeze
    );
    if current.frozen && !exempt {
        check_frozen(name, current, &next, change.kind())?;
    }
    Ok(next)
}

fn known_version(service: &ServiceConfig, version: &str) -> Result<(), ApiError> {
    if service.version(version).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = service.versions.iter().map(|v| v.name.as_str()).collect();
    Err(ApiError::NotFound(format!(
        "{} has no version {version:?} (versions: {})",
        service.name,
        names.join(", ")
    )))
}

fn check_weights(service: &ServiceConfig, weights: &BTreeMap<String, u64>) -> Result<(), ApiError> {
    for version in weights.keys() {
        known_version(service, version)?;
    }
    let sum = weights
        .values()
        .try_fold(0u64, |sum, &w| sum.checked_add(w))
        .ok_or_else(|| ApiError::BadRequest("weights add up past 2^64".into()))?;
    if sum == 0 {
        return Err(ApiError::BadRequest(
            "weights are all zero: no version would get traffic".into(),
        ));
    }
    Ok(())
}

/// Everything on `version`, which becomes stable; nothing is left to hold back, so no latch.
fn single_version(state: &mut ServiceState, version: &str) {
    state.stable = version.to_string();
    state.weights = BTreeMap::from([(version.to_string(), 100)]);
    state.latched = false;
}

fn rollback_target<'h>(
    name: &str,
    current: &ServiceState,
    to: Option<u64>,
    history: &[&'h RevisionRecord],
) -> Result<&'h ServiceState, ApiError> {
    let same_routing =
        |s: &ServiceState| s.stable == current.stable && s.weights == current.weights;
    match to {
        Some(revision) => {
            let record = history
                .iter()
                .find(|r| r.revision == revision)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("{name} has no revision {revision} (see history)"))
                })?;
            record.new.as_ref().ok_or_else(|| {
                ApiError::Conflict(format!(
                    "revision {revision} removed {name}: nothing to return to"
                ))
            })
        }
        None => history
            .iter()
            .rev()
            .filter_map(|r| r.old.as_ref())
            .find(|old| !same_routing(old))
            .ok_or_else(|| {
                ApiError::Conflict(format!("{name} has no earlier routing to return to"))
            }),
    }
}

/// A version's share of the traffic the data plane sends, as (weight, total).
fn share(state: &ServiceState, version: &str) -> (u128, u128) {
    let weights = state.effective_weights();
    let total: u128 = weights.values().map(|&w| u128::from(w)).sum();
    let own = weights.get(version).map_or(0, |&w| u128::from(w));
    (own, total.max(1))
}

fn check_frozen(
    name: &str,
    current: &ServiceState,
    next: &ServiceState,
    kind: ChangeKind,
) -> Result<(), ApiError> {
    let versions = current
        .weights
        .keys()
        .chain(next.weights.keys())
        .chain([&next.stable]);
    for version in versions.filter(|v| **v != current.stable) {
        let (old, old_total) = share(current, version);
        let (new, new_total) = share(next, version);
        if new * old_total > old * new_total {
            return Err(ApiError::Conflict(format!(
                "{name} is frozen: {} would raise {version}'s share of traffic ({:.1}% -> {:.1}%); unfreeze first (abort and rollback still work)",
                kind.label(),
                percent(old, old_total),
                percent(new, new_total),
            )));
        }
    }
    Ok(())
}

fn percent(part: u128, total: u128) -> f64 {
    part as f64 * 100.0 / total as f64
}

/// One line describing a routing, e.g. `stable=blue blue=95 canary=5 latched`.
pub fn describe(state: &ServiceState) -> String {
    let mut text = format!("stable={}", state.stable);
    for (version, weight) in &state.weights {
        text.push_str(&format!(" {version}={weight}"));
    }
    if state.latched {
        text.push_str(" latched");
    }
    if state.frozen {
        text.push_str(" frozen");
    }
    text
}

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
