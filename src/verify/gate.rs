//! The gate: a change that gives a version traffic it did not have (or makes it stable)
//! first runs that version's checks; failing ones refuse the change unless forced.

use crate::control::record::ChangeKind;
use crate::routing::ServiceState;

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
