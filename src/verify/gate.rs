//! The gate: a change that gives a version traffic it did not have (or makes it stable)
//! first runs that version's checks; failing ones refuse the change unless forced.
//!
//! `Verified` is the control plane as operators, rollouts and the guard use it: the gate
//! in front of every change, the validation (`validate`) behind every abort, cutback,
//! rollback and switch. The checks run here, outside the writer, so a gate that waits on
//! a slow version never holds up an abort queued behind it; the change then goes to the
//! writer only if the routing is still what the checks were run for (else it is
//! re-planned and checked again).

use super::{check_version, validate, Verifier};
use crate::config::ServiceConfig;
use crate::control::change::next_state;
use crate::control::command::Change;
use crate::control::error::ControlError;
use crate::control::record::{ChangeKind, Origin, RevisionRecord};
use crate::control::RoutingControl;
use crate::dataplane::proxy::DataPlane;
use crate::guard::incident::IncidentLog;
use crate::routing::ServiceState;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Times a gated change is re-planned when the routing moved while its checks ran.
const ATTEMPTS: usize = 3;

/// The control plane with the gate in front and the validation behind.
pub struct Verified<C> {
    pub control: Arc<C>,
    pub plane: Arc<DataPlane>,
    pub verifier: Arc<Verifier>,
    pub incidents: Arc<IncidentLog>,
}

impl<C> Clone for Verified<C> {
    fn clone(&self) -> Self {
        Verified {
            control: self.control.clone(),
            plane: self.plane.clone(),
            verifier: self.verifier.clone(),
            incidents: self.incidents.clone(),
        }
    }
}

impl<C: RoutingControl + 'static> Verified<C> {
    /// Runs the gate for `change`, then hands it to the control plane.
    async fn gated(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        // Abort, rollback, freeze and unfreeze never wait on checks.
        let may_be_gated = matches!(
            change.kind(),
            ChangeKind::Weights | ChangeKind::Switch | ChangeKind::Promote | ChangeKind::Resume
        );
        if !may_be_gated {
            return self.control.change(service, change, origin).await;
        }
        for _ in 0..ATTEMPTS {
            let config = self.control.service(service)?;
            let Some(current) = self.control.routing_of(service) else {
                return self.control.change(service, change, origin).await;
            };
            let history = self.control.revisions(service);
            let history: Vec<&RevisionRecord> = history.iter().collect();
            let next = next_state(&config, &current, &change, &history)?;
            let stepping = origin.actor == "rollout";
            let gated = gated_versions(change.kind(), &current, &next, stepping);
            let origin = match gated.is_empty() {
                true => origin.clone(),
                false => self.check(&config, &gated, &change, origin.clone()).await?,
            };
            // Only onto the routing planned from: a change that slipped in meanwhile may
            // have made another version's checks due.
            match self
                .control
                .change_if(service, change.clone(), origin, current)
                .await
            {
                Err(ControlError::Moved) => continue,
                answer => return answer,
            }
        }
        Err(ControlError::Moved)
    }

    /// Runs the checks of `versions`: the origin to record them with, or the one-line
    /// refusal when one fails and the change is not forced.
    async fn check(
        &self,
        config: &ServiceConfig,
        versions: &[String],
        change: &Change,
        origin: Origin,
    ) -> Result<Origin, ControlError> {
        let table = self.plane.table.load_full();
        let mut reports = Vec::new();
        for version in versions {
            reports.push(check_version(config, &table, version).await.report);
        }
        let failing = reports.iter().position(|r| !r.passed);
        let counters = &self.verifier.counters;
        if let Some(index) = failing {
            let summary = reports[index].summary();
            if !origin.forced {
                counters.gate_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %config.name, "{} refused: {summary}", change.verb());
                return Err(ControlError::Refused(format!(
                    "{} refused: {summary}; nothing changed (--force overrides)",
                    change.verb()
                )));
            }
            counters.gate_forced.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(service = %config.name, "{} forced past failing checks: {summary}", change.verb());
        }
        let shown = reports.swap_remove(failing.unwrap_or(0));
        Ok(origin.with_checks(shown))
    }
}

impl<C: RoutingControl + 'static> RoutingControl for Verified<C> {
    fn service(&self, service: &str) -> Result<ServiceConfig, ControlError> {
        self.control.service(service)
    }

    fn routing_of(&self, service: &str) -> Option<ServiceState> {
        self.control.routing_of(service)
    }

    fn revisions(&self, service: &str) -> Vec<RevisionRecord> {
        self.control.revisions(service)
    }

    async fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        let record = self.gated(service, change, origin).await?;
        if validate::follows(record.kind) {
            tokio::spawn(validate::after(self.clone(), record.clone()));
        }
        Ok(record)
    }

    async fn change_if(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
        expect: ServiceState,
    ) -> Result<RevisionRecord, ControlError> {
        self.control
            .change_if(service, change, origin, expect)
            .await
    }

    async fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        self.control.note(service, kind, origin).await
    }
}

/// The versions `kind` (from `current` to `next`) must see pass their checks first:
/// the new stable of a switch or promote, every version a change takes from no traffic
/// to some, and, for a rollout's step (`stepping`), every non-stable version whose share
/// rises.
pub fn gated_versions(
    kind: ChangeKind,
    current: &ServiceState,
    next: &ServiceState,
    stepping: bool,
) -> Vec<String> {
    let before = current.effective_weights();
    let after = next.effective_weights();
    let share = |weights: &std::collections::BTreeMap<String, u64>, version: &str| {
        let total: u128 = weights.values().map(|&w| u128::from(w)).sum();
        (
            u128::from(weights.get(version).copied().unwrap_or(0)),
            total.max(1),
        )
    };
    let mut gated: Vec<String> = after
        .iter()
        .filter(|(_, &w)| w > 0)
        .map(|(version, _)| version)
        .filter(|version| {
            let (old, old_total) = share(&before, version);
            let (new, new_total) = share(&after, version);
            old == 0 || (stepping && **version != next.stable && new * old_total > old * new_total)
        })
        .cloned()
        .collect();
    if matches!(kind, ChangeKind::Switch | ChangeKind::Promote) && !gated.contains(&next.stable) {
        gated.push(next.stable.clone());
    }
    gated
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state(stable: &str, weights: &[(&str, u64)], latched: bool) -> ServiceState {
        ServiceState {
            stable: stable.into(),
            weights: weights
                .iter()
                .map(|(v, w)| (v.to_string(), *w))
                .collect::<BTreeMap<_, _>>(),
            latched,
            frozen: false,
        }
    }

    #[test]
    fn gates_what_gains_traffic_or_stability() {
        let blue = state("blue", &[("blue", 100)], false);
        let canary5 = state("blue", &[("blue", 95), ("canary", 5)], false);
        let canary10 = state("blue", &[("blue", 90), ("canary", 10)], false);
        assert_eq!(
            gated_versions(ChangeKind::Weights, &blue, &canary5, false),
            ["canary"]
        );
        assert!(
            gated_versions(ChangeKind::Weights, &canary5, &canary10, false).is_empty(),
            "had traffic already"
        );
        assert_eq!(
            gated_versions(ChangeKind::Weights, &canary5, &canary10, true),
            ["canary"],
            "a rollout step"
        );
        assert!(
            gated_versions(ChangeKind::Weights, &canary10, &canary5, true).is_empty(),
            "a step down"
        );
        let latched = state("blue", &[("blue", 95), ("canary", 5)], true);
        assert_eq!(
            gated_versions(ChangeKind::Resume, &latched, &canary5, false),
            ["canary"]
        );
        let green = state("green", &[("green", 100)], false);
        assert_eq!(
            gated_versions(ChangeKind::Switch, &blue, &green, false),
            ["green"]
        );
        let promoted = state("canary", &[("canary", 100)], false);
        assert_eq!(
            gated_versions(ChangeKind::Promote, &canary5, &promoted, false),
            ["canary"]
        );
        assert!(gated_versions(ChangeKind::Abort, &canary5, &latched, false).is_empty());
    }
}
