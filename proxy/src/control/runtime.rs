//! Versions added at runtime (`ctl release`, `ctl retire`): the rules, and the config in
//! force, which is the file's plus the versions the journaled routing carries.
//!
//! A runtime version lives in its service's routing (`ServiceState::runtime`), so every
//! revision carries it: a restart replays it, a fleet member applies it from the log, a
//! rollback keeps it. The file owns its own versions: when the file comes to define a
//! version of the same name, the file's wins (see `reconcile`).

use super::error::ControlError;
use crate::config::runtime::{check_name, RuntimeVersion};
use crate::config::{Config, ServiceConfig};
use crate::routing::ServiceState;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Runtime versions one service may carry at once.
pub const MAX_RUNTIME_VERSIONS: usize = 64;

/// Addresses looked up again for runtime versions' names, by (service, version).
pub(crate) type Refreshed = BTreeMap<(String, String), Vec<SocketAddr>>;

/// `next` with `version` added; refuses bad input, a name taken, a rollout not configured.
pub fn release(
    service: &ServiceConfig,
    next: &mut ServiceState,
    version: &str,
    spec: &RuntimeVersion,
) -> Result<(), ControlError> {
    let name = &service.name;
    check_name(version).map_err(|why| ControlError::Invalid(format!("release: {why}")))?;
    spec.check()
        .map_err(|why| ControlError::Invalid(format!("release: {why}")))?;
    if spec.addrs.is_empty() {
        return Err(ControlError::Invalid(
            "release: its endpoints were not looked up (no address)".into(),
        ));
    }
    if service.version(version).is_some() {
        let from = match next.runtime.contains_key(version) {
            true => "released at runtime",
            false => "from the config file",
        };
        return Err(ControlError::Refused(format!(
            "{name} already has a version {version:?} ({from}); pick another name"
        )));
    }
    if next.runtime.len() >= MAX_RUNTIME_VERSIONS {
        return Err(ControlError::Refused(format!(
            "{name} already has {MAX_RUNTIME_VERSIONS} runtime versions: retire some first"
        )));
    }
    if spec.rollout && service.rollout.is_none() {
        return Err(ControlError::Refused(format!(
            "{name} has no rollout configured (add [services.{name}.rollout] with steps and bake); release without --rollout"
        )));
    }
    if spec.rollout {
        next.runtime.values_mut().for_each(|v| v.rollout = false);
    }
    next.runtime.insert(version.to_string(), spec.clone());
    Ok(())
}

/// `next` without `version`, which must be a runtime version that takes no traffic.
pub fn retire(
    service: &ServiceConfig,
    next: &mut ServiceState,
    version: &str,
) -> Result<(), ControlError> {
    let name = &service.name;
    if !next.runtime.contains_key(version) {
        return Err(match service.version(version) {
            Some(_) => ControlError::Refused(format!(
                "retire refused: {version} is defined in the config file; remove it there and reload"
            )),
            None => ControlError::NotFound(format!(
                "{name} has no runtime version {version:?} (see `ctl status {name}`)"
            )),
        });
    }
    let refused = |why: String| Err(ControlError::Refused(format!("retire refused: {why}")));
    if next.stable == version {
        return refused(format!(
            "{version} is {name}'s stable version; switch to another first"
        ));
    }
    if let Some(weight) = next.weights.get(version).filter(|&&w| w > 0) {
        return refused(format!(
            "{version} has weight {weight} on {name}; set it to 0 first (ctl weights)"
        ));
    }
    if service.matches.iter().any(|m| m.version == version) {
        return refused(format!("{version} is the target of a match rule of {name}"));
    }
    if service
        .shadow
        .as_ref()
        .is_some_and(|s| s.version == version)
    {
        return refused(format!("{version} is {name}'s shadow target"));
    }
    next.runtime.remove(version);
    next.weights.remove(version);
    Ok(())
}

/// The config in force: `file` with every service's runtime versions added (a name the
/// file defines is the file's), and the rollout of a version released with `--rollout`
/// until that version is stable.
pub(crate) fn effective(
    file: &Config,
    services: &BTreeMap<String, ServiceState>,
    refreshed: &Refreshed,
) -> Config {
    let mut config = file.clone();
    for service in &mut config.services {
        let Some(state) = services.get(&service.name) else {
            continue;
        };
        for (name, spec) in &state.runtime {
            if service.version(name).is_some() {
                continue;
            }
            let addrs = refreshed.get(&(service.name.clone(), name.clone()));
            let at = service.versions.partition_point(|v| v.name < *name);
            service
                .versions
                .insert(at, spec.version_config(name, addrs));
            // Rolled out until it is stable: then the file's canary is the rollout's again.
            let candidate = spec.rollout && state.stable != *name;
            if let (true, Some(rollout)) = (candidate, service.rollout.as_mut()) {
                rollout.canary = name.clone();
            }
        }
    }
    config
}

/// Every runtime version, as "service/version".
pub(crate) fn listed(services: &BTreeMap<String, ServiceState>) -> Vec<String> {
    services
        .iter()
        .flat_map(|(service, state)| state.runtime.keys().map(move |v| format!("{service}/{v}")))
        .collect()
}
