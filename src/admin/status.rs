//! `GET /status`: every service's routing joined with live per-version telemetry.

use super::routes::AdminContext;
use crate::control::api::{ServiceStatus, StatusResponse, VersionStatus};
use crate::control::ControlSnapshot;
use crate::routing::RoutingTable;
use std::time::{Duration, Instant};

/// The window live rates and latencies cover.
pub const WINDOW: Duration = Duration::from_secs(10);

pub async fn build(context: &AdminContext) -> StatusResponse {
    let snapshot = context.controller.snapshot().await;
    let table = context.controller.plane.table.load_full();
    StatusResponse {
        revision: table.revision,
        listen: context.proxy_addr.to_string(),
        admin_listen: context.admin_addr.map(|addr| addr.to_string()),
        window_secs: WINDOW.as_secs(),
        services: services(&snapshot, &table, Instant::now()),
    }
}

fn services(snapshot: &ControlSnapshot, table: &RoutingTable, now: Instant) -> Vec<ServiceStatus> {
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
                    endpoints: version
                        .endpoints
                        .iter()
                        .map(|e| e.addr.to_string())
                        .collect(),
                    requests_per_sec: window.requests() as f64 / secs,
                    errors_per_sec: window.errors() as f64 / secs,
                    error_rate: window.error_rate(),
                    p50_ms: window.quantile_secs(0.5) * 1e3,
                    p99_ms: window.quantile_secs(0.99) * 1e3,
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
        });
    }
    services
}
