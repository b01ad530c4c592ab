//! `release` on the admin API: the new version's endpoint names looked up off the
//! runtime's threads, the version added through the writer (no traffic yet), and with
//! `rollout`, the service's configured rollout started, whose gate runs the version's
//! checks before its first step.

use super::api::ApiError;
use super::context::Parts;
use crate::config::runtime::RuntimeVersion;
use crate::control::command::{Change, RolloutAction};
use crate::control::record::{Origin, RevisionRecord};
use crate::control::RoutingControl;
use std::time::Duration;

/// How long the endpoint names of one release may take to look up.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// Adds `version` to `service`, and starts its rollout when `spec.rollout` asks for one.
pub(super) async fn release(
    parts: &Parts,
    service: &str,
    version: String,
    spec: Box<RuntimeVersion>,
    origin: Origin,
) -> Result<RevisionRecord, ApiError> {
    let config = parts.controller.service(service)?;
    spec.check()
        .map_err(|why| ApiError::BadRequest(format!("release: {why}")))?;
    if spec.rollout {
        // Refused before anything is recorded; the writer checks it again.
        if config.rollout.is_none() {
            return Err(ApiError::Conflict(format!(
                "{service} has no rollout configured (add [services.{service}.rollout] with steps and bake); release without --rollout"
            )));
        }
        let routing = parts.controller.routing_of(service);
        if let Some(held) = routing.filter(|r| r.latched || r.frozen) {
            let why = match held.latched {
                true => "latched after an abort (resume first)",
                false => "frozen (unfreeze first)",
            };
            return Err(ApiError::Conflict(format!(
                "{service} is {why}: its rollout could not start; nothing changed"
            )));
        }
        let rollouts = parts.rollouts.all().await;
        if let Some(running) = rollouts
            .get(service)
            .filter(|r| r.rollout.status.is_active())
        {
            return Err(ApiError::Conflict(format!(
                "a rollout of {} is already {} on {service}; nothing changed",
                running.rollout.canary,
                running.rollout.status.label()
            )));
        }
    }
    let spec = resolved(spec).await?;
    // From here the release and its rollout's start are one act: a client that hangs up
    // in between must not leave a release whose rollout never started.
    let parts = parts.clone();
    let service = service.to_string();
    tokio::spawn(async move { record_and_start(&parts, &service, version, spec, origin).await })
        .await
        .map_err(|err| ApiError::Internal(format!("release: {err}")))?
}

/// Records the release, then starts its rollout when it asked for one.
async fn record_and_start(
    parts: &Parts,
    service: &str,
    version: String,
    spec: Box<RuntimeVersion>,
    origin: Origin,
) -> Result<RevisionRecord, ApiError> {
    let rollout = spec.rollout;
    let change = Change::Release {
        version: version.clone(),
        spec,
    };
    let record = parts
        .verified
        .change(service, change, origin.clone())
        .await?;
    if rollout {
        parts
            .rollouts
            .command(service, RolloutAction::Start, origin)
            .await
            .map_err(|err| {
                ApiError::Conflict(format!(
                    "released {service}/{version} as revision {} (no traffic), but its rollout did not start: {err}",
                    record.revision
                ))
            })?;
    }
    Ok(record)
}

/// `spec` with its endpoints' addresses, or the entry that has none.
async fn resolved(spec: Box<RuntimeVersion>) -> Result<Box<RuntimeVersion>, ApiError> {
    let lookup = tokio::task::spawn_blocking(move || {
        let mut spec = spec;
        spec.resolve(crate::control::resolve::lookup).map(|()| spec)
    });
    match tokio::time::timeout(LOOKUP_LIMIT, lookup).await {
        Ok(Ok(Ok(spec))) => Ok(spec),
        Ok(Ok(Err(why))) => Err(ApiError::BadRequest(format!("release: {why}"))),
        Ok(Err(_)) => Err(ApiError::Internal(
            "release: the endpoint lookup failed".into(),
        )),
        Err(_) => Err(ApiError::BadRequest(format!(
            "release: endpoint names did not resolve within {}s",
            LOOKUP_LIMIT.as_secs()
        ))),
    }
}
