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

use super::record::{ChangeKind, Declared, Origin, PlannedRevision};
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
                }
            }
        }
    }
    for (name, current) in live {
        if config.service(name).is_none() {
            planned.push(PlannedRevision {
                service: name.clone(),
                kind: ChangeKind::Removed,
                old: Some(current.clone()),
                new: None,
                declared: None,
                origin: Origin {
                    reason: join_reason(&origin.reason, "service removed from the config"),
                    ..origin.clone()
                },
            });
        }
    }
    planned
}

/// The file's routing, keeping a live latch and freeze.
fn from_file(service: &ServiceConfig, current: Option<&ServiceState>) -> ServiceState {
    ServiceState {
        stable: service.stable.clone(),
        weights: service.weights.clone(),
        latched: current.is_some_and(|c| c.latched),
        frozen: current.is_some_and(|c| c.frozen),
    }
}

fn missing_version<'s>(service: &ServiceConfig, state: &'s ServiceState) -> Option<&'s String> {
    std::iter::once(&state.stable)
        .chain(state.weights.keys())
        .find(|version| service.version(version).is_none())
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
