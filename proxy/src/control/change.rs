//! The rules that turn a service's routing into the next one.

use super::command::Change;
use super::error::ControlError;
use super::record::RevisionRecord;
use super::runtime;
use crate::config::ServiceConfig;
use crate::routing::ServiceState;
use std::collections::BTreeMap;

/// The routing after `change`. `history` is this service's revisions, oldest first.
/// Refuses bad input and no-ops; the promises (gate, latch, freeze) are `promises`'.
pub fn next_state(
    service: &ServiceConfig,
    current: &ServiceState,
    change: &Change,
    history: &[&RevisionRecord],
) -> Result<ServiceState, ControlError> {
    let name = &service.name;
    let mut next = current.clone();
    match change {
        Change::Weights { weights } => {
            check_weights(service, weights)?;
            next.weights = weights.clone();
        }
        Change::Switch { version } => {
            known_version(service, version)?;
            single_version(&mut next, version);
        }
        Change::Promote {} => {
            let canaries: Vec<&String> = current
                .weights
                .iter()
                .filter(|(v, &w)| w > 0 && **v != current.stable)
                .map(|(v, _)| v)
                .collect();
            match canaries.as_slice() {
                [canary] => single_version(&mut next, canary),
                [] => {
                    return Err(ControlError::Refused(format!(
                        "{name} has no canary to promote: only {} has traffic",
                        current.stable
                    )))
                }
                _ => {
                    return Err(ControlError::Refused(format!(
                        "{name} has {} non-stable versions with traffic; use switch to pick one",
                        canaries.len()
                    )))
                }
            }
        }
        Change::Abort {} => next.latched = true,
        Change::Resume {} => next.latched = false,
        Change::Release { version, spec } => runtime::release(service, &mut next, version, spec)?,
        Change::Retire { version } => runtime::retire(service, &mut next, version)?,
        Change::Freeze {} => next.frozen = true,
        Change::Unfreeze {} => next.frozen = false,
        Change::Rollback { to } => {
            let target = rollback_target(name, current, *to, history)?;
            for version in target.weights.keys().chain(std::iter::once(&target.stable)) {
                if service.version(version).is_none() {
                    return Err(ControlError::Refused(format!(
                        "that revision routes to version {version:?}, which {name} no longer has"
                    )));
                }
            }
            next.stable = target.stable.clone();
            next.weights = target.weights.clone();
        }
    }
    if next == *current {
        return Err(ControlError::Refused(format!(
            "no change: {name} already is {}",
            describe(current)
        )));
    }
    Ok(next)
}

fn known_version(service: &ServiceConfig, version: &str) -> Result<(), ControlError> {
    if service.version(version).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = service.versions.iter().map(|v| v.name.as_str()).collect();
    Err(ControlError::NotFound(format!(
        "{} has no version {version:?} (versions: {})",
        service.name,
        names.join(", ")
    )))
}

fn check_weights(
    service: &ServiceConfig,
    weights: &BTreeMap<String, u64>,
) -> Result<(), ControlError> {
    for version in weights.keys() {
        known_version(service, version)?;
    }
    let sum = weights
        .values()
        .try_fold(0u64, |sum, &w| sum.checked_add(w))
        .ok_or_else(|| ControlError::Invalid("weights add up past 2^64".into()))?;
    if sum == 0 {
        return Err(ControlError::Invalid(
            "weights are all zero: no version would get traffic".into(),
        ));
    }
    Ok(())
}

/// Everything on `version`, which becomes stable. A latch stays: only `resume` lifts it
/// (see `promises`).
fn single_version(state: &mut ServiceState, version: &str) {
    state.stable = version.to_string();
    state.weights = BTreeMap::from([(version.to_string(), 100)]);
}

fn rollback_target<'h>(
    name: &str,
    current: &ServiceState,
    to: Option<u64>,
    history: &[&'h RevisionRecord],
) -> Result<&'h ServiceState, ControlError> {
    let same_routing =
        |s: &ServiceState| s.stable == current.stable && s.weights == current.weights;
    match to {
        Some(revision) => {
            let record = history
                .iter()
                .find(|r| r.revision == revision)
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "{name} has no revision {revision} (see history)"
                    ))
                })?;
            record.new.as_ref().ok_or_else(|| {
                ControlError::Refused(format!(
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
                ControlError::Refused(format!("{name} has no earlier routing to return to"))
            }),
    }
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
