//! `GET /status`: every service's routing joined with live per-version telemetry.

use super::api::{GuardStatus, RolloutStatus, ServiceStatus, StatusResponse, VersionStatus};
use super::context::AdminContext;
use crate::config::grpc::code_name;
use crate::control::error::ControlError;
use crate::control::ControlSnapshot;
use crate::guard::watch::VersionVerdict;
use crate::routing::RoutingTable;
use crate::telemetry::VersionStats;
use crate::verify::ReturnPoint;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The window live rates and latencies cover.
pub const WINDOW: Duration = Duration::from_secs(10);

pub async fn build(context: &AdminContext) -> StatusResponse {
    build_with_snapshot(context).await.0
}

/// One service's status, or why it has none (judged on the same snapshot).
pub async fn service(context: &AdminContext, name: &str) -> Result<ServiceStatus, ControlError> {
    let (status, snapshot) = build_with_snapshot(context).await;
    status
        .services
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| snapshot.no_service(name))
}

async fn build_with_snapshot(context: &AdminContext) -> (StatusResponse, ControlSnapshot) {
    let parts = &context.parts;
    // The rollouts are read before the routing: a rollout marks a step done only after
    // the writer applied it, so this order never shows a step done on older routing.
    let live = Live {
        verdicts: parts.board.all(),
        rollouts: parts.rollouts.all().await,
        analyses: &parts.analyses,
        return_points: parts.verified.verifier.return_point_status(),
    };
    let snapshot = parts.controller.snapshot().await;
    let table = parts.controller.plane.table.load_full();
    let fleet = match &parts.controller.fleet {
        Some(fleet) => Some(fleet_status(fleet, snapshot.revision).await),
        None => None,
    };
    let status = StatusResponse {
        revision: table.revision,
        listen: context.proxy_addr.to_string(),
        admin_listen: context.admin_addr.map(|addr| addr.to_string()),
        window_secs: WINDOW.as_secs(),
        journal: snapshot.journal.clone(),
        fleet,
        services: services(&snapshot, &table, live, Instant::now()),
    };
    (status, snapshot)
}

/// How long status waits for NATS to list the members: status answers, whatever NATS does.
const FLEET_LIMIT: Duration = Duration::from_secs(1);

async fn fleet_status(fleet: &crate::fleet::Fleet, applied: u64) -> crate::fleet::FleetStatus {
    match tokio::time::timeout(FLEET_LIMIT, fleet.status(applied)).await {
        Ok(status) => status,
        Err(_) => crate::fleet::FleetStatus {
            fleet: fleet.settings.name.clone(),
            instance: fleet.settings.instance.clone(),
            connected: fleet.log.connected(),
            log_revision: None,
            applied,
            members: Vec::new(),
            problem: Some(format!(
                "NATS did not list the members within {}s",
                FLEET_LIMIT.as_secs()
            )),
            rejected: fleet.rejections.counts(),
            log_alarm: fleet.log.alarm(),
        },
    }
}

/// The guard's and the rollouts' view of each service.
struct Live<'a> {
    verdicts: BTreeMap<String, VersionVerdict>,
    rollouts: BTreeMap<String, RolloutStatus>,
    return_points: BTreeMap<String, ReturnPoint>,
    analyses: &'a crate::analysis::AnalysisBoard,
}

fn services(
    snapshot: &ControlSnapshot,
    table: &RoutingTable,
    mut live: Live<'_>,
    now: Instant,
) -> Vec<ServiceStatus> {
    let mut services = Vec::new();
    for service in &snapshot.config.services {
        let (Some(state), Some(route)) = (
            snapshot.services.get(&service.name),
            table.services().iter().find(|r| *r.name == *service.name),
        ) else {
            continue;
        };
        let versions = route
            .versions
            .iter()
            .enumerate()
            .map(|(index, version)| {
                let window = version.stats.window(WINDOW, now);
                let secs = WINDOW.as_secs_f64();
                VersionStatus {
                    name: version.name.to_string(),
                    release: version.release.clone(),
                    weight: state.weights.get(&*version.name).copied().unwrap_or(0),
                    share: route.share_of(index),
                    stable: *version.name == state.stable,
                    runtime: state.runtime.contains_key(&*version.name),
                    endpoints: version
                        .endpoints
                        .iter()
                        .map(|e| e.addr.to_string())
                        .collect(),
                    refusing: Some(
                        version
                            .endpoints
                            .iter()
                            .filter(|e| e.is_backing_off(now))
                            .map(|e| e.addr.to_string())
                            .collect(),
                    ),
                    requests_per_sec: window.requests() as f64 / secs,
                    errors_per_sec: window.errors() as f64 / secs,
                    error_rate: window.error_rate(),
                    p50_ms: window.quantile_secs(0.5) * 1e3,
                    p99_ms: window.quantile_secs(0.99) * 1e3,
                    grpc: grpc_statuses(&version.stats),
                }
            })
            .collect();
        services.push(ServiceStatus {
            name: service.name.clone(),
            hosts: service.hosts.clone(),
            stable: state.stable.clone(),
            latched: state.latched,
            frozen: state.frozen,
            revision: snapshot
                .last_change
                .get(&service.name)
                .copied()
                .unwrap_or(0),
            versions,
            guard: live.verdicts.remove(&service.name).map(guard_status),
            rollout: live.rollouts.remove(&service.name),
            analysis: live.analyses.of(&service.name),
            return_point: live.return_points.remove(&service.name),
            shadow: crate::dataplane::shadow::report(table, &service.name),
        });
    }
    services
}

/// Non-zero gRPC status counts by name.
fn grpc_statuses(stats: &VersionStats) -> BTreeMap<String, u64> {
    stats
        .grpc_statuses()
        .iter()
        .enumerate()
        .filter(|(_, &count)| count > 0)
        .map(|(code, &count)| (code_name(code as u8).to_string(), count))
        .collect()
}

fn guard_status(verdict: VersionVerdict) -> GuardStatus {
    GuardStatus {
        healthy_for_secs: verdict
            .healthy_since
            .map(|since| since.elapsed().as_secs_f64()),
        version: verdict.version,
        verdict: verdict.verdict,
        detail: verdict.detail,
        log_likelihood_ratio: verdict.log_likelihood_ratio,
    }
}
