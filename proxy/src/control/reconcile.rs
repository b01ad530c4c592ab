//! What a (re)loaded config file does to live routing.
//!
//! The rule: the config file owns topology (services, versions, endpoints, hosts, matches,
//! sticky); the journal owns routing (weights, stable, latch, freeze). A service keeps its
//! live routing across a reload or restart unless
//!  (a) the file's own `weights`/`stable` for it differ from what the previously loaded file
//!      said (an operator edited them): the file's routing is applied (`config_edit`), or
//!  (b) the live routing names a version the file no longer has: back to the file's routing
//!      (`version_removed`).
//! Either way the latch and the freeze are kept: an abort is never forgotten by a reload.
//! A new service gets a first revision (`added`); a service gone from the file is recorded
//! as `removed`, and if it comes back (a file cut off at a section boundary and then
//! repaired does this) it keeps the latch and freeze it had when it left. Topology-only
//! edits record no revision.
//!
//! Versions added at runtime (`ctl release`) are kept: the file's routing keeps them, and
//! the live routing may name them. When the file comes to define a version of the same
//! name, the file's definition wins and the runtime entry is dropped (`config_edit`).

use super::record::{ChangeKind, Declared, Origin, PlannedRevision};
use crate::config::runtime::RuntimeVersion;
use crate::config::{Config, ServiceConfig};
use crate::routing::ServiceState;
use std::collections::BTreeMap;

/// The revisions that bring live routing in line with `config`.
/// `departed`: the last routing of services that were removed, by name.
pub fn reconcile(
    live: &BTreeMap<String, ServiceState>,
    declared: &BTreeMap<String, Declared>,
    departed: &BTreeMap<String, ServiceState>,
    config: &Config,
    origin: &Origin,
) -> Vec<PlannedRevision> {
    let mut planned = Vec::new();
    for service in &config.services {
        let file = Declared::of(service);
        let plan = |kind, old: Option<&ServiceState>, new, detail: String| PlannedRevision {
            service: service.name.clone(),
            kind,
            old: old.cloned(),
            new: Some(new),
            declared: Some(file.clone()),
            origin: Origin {
                reason: join_reason(&origin.reason, &detail),
                ..origin.clone()
            },
        };
        let Some(current) = live.get(&service.name) else {
            let before = departed.get(&service.name);
            let new = from_file(service, before);
            let detail = match before.filter(|b| b.latched || b.frozen) {
                Some(_) => "service added back to the config; its latch and freeze are kept",
                None => "service added from the config",
            };
            planned.push(plan(ChangeKind::Added, None, new, detail.into()));
            continue;
        };
        match declared.get(&service.name) {
            Some(before) if *before != file => {
                let new = from_file(service, Some(current));
                planned.push(plan(
                    ChangeKind::ConfigEdit,
                    Some(current),
                    new,
                    "weights/stable edited in the config file".into(),
                ));
            }
            _ => {
                if let Some(missing) = missing_version(service, current) {
                    let new = from_file(service, Some(current));
                    planned.push(plan(
                        ChangeKind::VersionRemoved,
                        Some(current),
                        new,
                        format!("version {missing:?} left the config; back to the file's routing"),
                    ));
                } else if let Some(new) = without_file_versions(service, current) {
                    let named: Vec<&String> = current
                        .runtime
                        .keys()
                        .filter(|v| !new.runtime.contains_key(*v))
                        .collect();
                    planned.push(plan(
                        ChangeKind::ConfigEdit,
                        Some(current),
                        new,
                        format!("the config file now defines runtime version {named:?}: the file's definition wins"),
                    ));
                }
            }
        }
    }
    for (name, current) in live {
        if config.service(name).is_none() {
            let detail = match current.runtime.keys().collect::<Vec<_>>() {
                runtime if runtime.is_empty() => "service removed from the config".to_string(),
                runtime => format!(
                    "service removed from the config, with its runtime versions {runtime:?} (back if it is added back)"
                ),
            };
            planned.push(PlannedRevision {
                service: name.clone(),
                kind: ChangeKind::Removed,
                old: Some(current.clone()),
                new: None,
                declared: None,
                origin: Origin {
                    reason: join_reason(&origin.reason, &detail),
                    ..origin.clone()
                },
            });
        }
    }
    planned
}

/// The file's routing, keeping a live latch and freeze, and the runtime versions whose
/// names the file does not define.
fn from_file(service: &ServiceConfig, current: Option<&ServiceState>) -> ServiceState {
    ServiceState {
        stable: service.stable.clone(),
        weights: service.weights.clone(),
        latched: current.is_some_and(|c| c.latched),
        frozen: current.is_some_and(|c| c.frozen),
        runtime: current.map_or_else(Default::default, |c| runtime_kept(service, c)),
    }
}

fn runtime_kept(service: &ServiceConfig, state: &ServiceState) -> BTreeMap<String, RuntimeVersion> {
    let mut kept = state.runtime.clone();
    kept.retain(|name, _| service.version(name).is_none());
    kept
}

/// The live routing without the runtime versions the file now defines, if it had any.
fn without_file_versions(service: &ServiceConfig, state: &ServiceState) -> Option<ServiceState> {
    let kept = runtime_kept(service, state);
    (kept.len() < state.runtime.len()).then(|| ServiceState {
        runtime: kept,
        ..state.clone()
    })
}

/// A version the live routing names that neither the file nor the runtime versions have.
fn missing_version<'s>(service: &ServiceConfig, state: &'s ServiceState) -> Option<&'s String> {
    std::iter::once(&state.stable)
        .chain(state.weights.keys())
        .find(|version| service.version(version).is_none() && !state.runtime.contains_key(*version))
}

fn join_reason(reason: &str, detail: &str) -> String {
    match reason {
        "" => detail.to_string(),
        reason => format!("{reason}: {detail}"),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
