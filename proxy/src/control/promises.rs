//! The promises every revision keeps, whatever asked for it (an operator's verb, a
//! `rollback`, a reload, a rollout step, the guard): checked here, in the writer's plan,
//! the one place every change passes through.
//!
//! - Gate: a version that had no traffic gets some (or becomes stable) only after its
//!   checks passed; a rollout step's rise needs them too. `--force` lets failing checks
//!   through, on the record, but the checks still run.
//! - Latch: while a service is latched, only `resume` lifts it, and the versions its last
//!   abort cut back cannot become stable.
//! - Freeze: while frozen, no non-stable version's share of the traffic rises.
//! - Return point: a `retire` never removes the version that was stable before the current
//!   one took over (where `rollback` and the guard's watch after a switch go back), unless
//!   forced, on the record.
//!
//! The checks themselves run outside the writer (so an abort never queues behind them): a
//! plan that needs them is answered with `ControlError::ChecksDue`, the requester runs
//! them and asks again with their reports (`Origin::verified`).

use super::error::ControlError;
use super::record::{ChangeKind, PlannedRevision, RevisionRecord};
use crate::routing::ServiceState;
use std::collections::BTreeMap;

/// The actor of the startup reconciliation: the file an instance starts with is its
/// starting point, not a change to check (there may be no traffic to give yet).
const STARTUP: &str = "startup";

/// The actor of the guard's changes.
const GUARD: &str = "guard";

/// Checks `plan` against the promises. `history`: the service's revisions, oldest first.
/// Fills in the plan's `checks` with the report of the version it gates.
pub fn enforce(
    plan: &mut PlannedRevision,
    history: &[&RevisionRecord],
) -> Result<(), ControlError> {
    let Some(next) = &plan.new else {
        return Ok(());
    };
    let current = plan.old.as_ref();
    if let Some(current) = current {
        keep_latch(&plan.service, current, next, plan.kind, history)?;
        if current.frozen && !matches!(plan.kind, ChangeKind::Abort | ChangeKind::Unfreeze) {
            keep_freeze(&plan.service, current, next, plan.kind)?;
        }
    }
    if plan.kind == ChangeKind::Retire && !plan.origin.forced {
        keep_return_point(&plan.service, current, next, history)?;
    }
    // An abort never waits on checks: it only sends traffic back to the return point
    // (whose own checks the return-point watch and the guard look after).
    if plan.origin.actor == STARTUP || plan.kind == ChangeKind::Abort {
        return Ok(());
    }
    let stepping = plan.origin.actor == "rollout";
    let gated = gated_versions(current, next, stepping);
    let mut due = Vec::new();
    for version in gated {
        match plan.origin.report(&plan.service, &version) {
            Some(report) if report.passed || plan.origin.forced => {
                // The record shows a failure first, else the first version checked.
                let shown = plan.origin.checks.as_ref();
                if shown.is_none_or(|s| s.passed && !report.passed) {
                    plan.origin.checks = Some(report.clone());
                }
            }
            Some(report) => {
                return Err(ControlError::Refused(format!(
                    "{}: {}; nothing changed (--force overrides)",
                    plan.service,
                    report.summary()
                )))
            }
            None => due.push((plan.service.clone(), version)),
        }
    }
    match due.is_empty() {
        true => Ok(()),
        false => Err(ControlError::ChecksDue(due)),
    }
}

/// The versions that must pass their checks before `current` becomes `next`: each one
/// that goes from no traffic to some (of a new service: each but its stable), a new
/// stable, and for a rollout's step (`stepping`) each non-stable one whose share rises.
pub fn gated_versions(
    current: Option<&ServiceState>,
    next: &ServiceState,
    stepping: bool,
) -> Vec<String> {
    let before = current
        .map(ServiceState::effective_weights)
        .unwrap_or_default();
    let after = next.effective_weights();
    let mut gated: Vec<String> = after
        .iter()
        .filter(|(_, &w)| w > 0)
        .map(|(version, _)| version)
        .filter(|version| match current {
            None => **version != next.stable,
            Some(_) => {
                let (old, old_total) = share(&before, version);
                let (new, new_total) = share(&after, version);
                old == 0
                    || (stepping && **version != next.stable && new * old_total > old * new_total)
            }
        })
        .cloned()
        .collect();
    let new_stable = current.is_some_and(|c| c.stable != next.stable);
    if new_stable && !gated.contains(&next.stable) {
        gated.push(next.stable.clone());
    }
    gated
}

/// A version's share of `weights`, as (weight, total).
fn share(weights: &BTreeMap<String, u64>, version: &str) -> (u128, u128) {
    let total: u128 = weights.values().map(|&w| u128::from(w)).sum();
    let own = weights.get(version).map_or(0, |&w| u128::from(w));
    (own, total.max(1))
}

/// The versions the last abort (or the guard's switch back) in `history` cut back (since
/// the last `resume`), with the revision.
fn aborted(history: &[&RevisionRecord]) -> BTreeMap<String, u64> {
    let mut aborted = BTreeMap::new();
    for record in history {
        match record.kind {
            ChangeKind::Abort => {
                let Some(old) = &record.old else { continue };
                for (version, _) in old.effective_weights().iter().filter(|(_, &w)| w > 0) {
                    if *version != old.stable {
                        aborted.insert(version.clone(), record.revision);
                    }
                }
            }
            // The guard's switch back from a bad new stable cuts that version back too.
            ChangeKind::Switch if record.actor == GUARD => {
                if let Some(old) = &record.old {
                    aborted.insert(old.stable.clone(), record.revision);
                }
            }
            ChangeKind::Resume => aborted.clear(),
            _ => {}
        }
    }
    aborted
}

fn keep_latch(
    service: &str,
    current: &ServiceState,
    next: &ServiceState,
    kind: ChangeKind,
    history: &[&RevisionRecord],
) -> Result<(), ControlError> {
    if !current.latched || kind == ChangeKind::Resume {
        return Ok(());
    }
    if !next.latched {
        return Err(ControlError::Refused(format!(
            "{service} is latched by an abort: {} cannot lift it; resume first",
            kind.label()
        )));
    }
    if let Some(revision) = aborted(history).get(&next.stable) {
        let version = &next.stable;
        return Err(ControlError::Refused(format!(
            "{service} is latched: {version} was aborted at revision {revision} and stays at 0 until resume"
        )));
    }
    Ok(())
}

/// Refuses retiring the stable the current one replaced: the latest revision that changed
/// the stable to today's names it.
fn keep_return_point(
    service: &str,
    current: Option<&ServiceState>,
    next: &ServiceState,
    history: &[&RevisionRecord],
) -> Result<(), ControlError> {
    let Some(current) = current else {
        return Ok(());
    };
    let retired = current
        .runtime
        .keys()
        .find(|version| !next.runtime.contains_key(*version));
    let took_over = history.iter().rev().find_map(|record| {
        let (old, new) = (record.old.as_ref()?, record.new.as_ref()?);
        (old.stable != new.stable && new.stable == current.stable)
            .then_some((&old.stable, record.revision))
    });
    match (retired, took_over) {
        (Some(retired), Some((previous, revision))) if retired == previous => {
            Err(ControlError::Refused(format!(
                "retire refused: {retired} is {service}'s return point (stable until {} took over at revision {revision}; rollback and the guard's watch go back to it); retire it once {} is trusted, or --force",
                current.stable, current.stable
            )))
        }
        _ => Ok(()),
    }
}

fn keep_freeze(
    service: &str,
    current: &ServiceState,
    next: &ServiceState,
    kind: ChangeKind,
) -> Result<(), ControlError> {
    let before = current.effective_weights();
    let after = next.effective_weights();
    let versions = current
        .weights
        .keys()
        .chain(next.weights.keys())
        .chain([&next.stable]);
    for version in versions.filter(|v| **v != current.stable) {
        let (old, old_total) = share(&before, version);
        let (new, new_total) = share(&after, version);
        if new * old_total > old * new_total {
            return Err(ControlError::Refused(format!(
                "{service} is frozen: {} would raise {version}'s share of traffic ({:.1}% -> {:.1}%); unfreeze first (abort works; so does a rollback that raises no share)",
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

/// What `change` makes of `current`, held to the latch and the freeze (the gate's checks
/// aside): for tests of code that plans with the control plane's rules.
#[cfg(test)]
pub(crate) fn next_kept(
    service: &crate::config::ServiceConfig,
    current: &ServiceState,
    change: &super::command::Change,
    history: &[&RevisionRecord],
) -> Result<ServiceState, ControlError> {
    let next = super::change::next_state(service, current, change, history)?;
    let mut plan = PlannedRevision {
        service: service.name.clone(),
        kind: change.kind(),
        old: Some(current.clone()),
        new: Some(next.clone()),
        declared: None,
        origin: super::record::Origin::new("ops", ""),
    };
    match enforce(&mut plan, history) {
        Ok(()) | Err(ControlError::ChecksDue(_)) => Ok(next),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
#[path = "promises_tests.rs"]
mod tests;
