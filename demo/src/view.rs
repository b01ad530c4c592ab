//! What the demo shows each second: per version, the proxy's own telemetry next to what
//! the client saw (the `switchyard-version` header of each answer).

use std::time::{Duration, Instant};
use switchyard::routing::RoutingTable;
use switchyard_testkit::load::LoadReport;

/// The proxy's telemetry is read over this trailing window.
pub const PROXY_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    /// The version's share of traffic in the live routing table.
    pub weight: f64,
    /// From the proxy's telemetry, over the last two seconds.
    pub proxy_rps: f64,
    pub proxy_error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Failed requests of this version that a retry on stable answered instead.
    pub saved: u64,
    /// From the client, over the last whole second.
    pub client_rps: u64,
    pub client_errors: u64,
    pub client_share: f64,
}

#[derive(Debug, Clone)]
pub struct View {
    pub elapsed: Duration,
    pub duration: Duration,
    pub revision: u64,
    pub rows: Vec<Row>,
}

/// Reads the live table and telemetry, and the client's last whole second.
pub fn gather(
    table: &RoutingTable,
    client: &LoadReport,
    elapsed: Duration,
    duration: Duration,
    now: Instant,
) -> View {
    let second = (elapsed.as_secs() as usize).checked_sub(1);
    let client_total = second.map_or(0, |s| client.requests_in_second(s));
    let mut rows = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let window = version.stats.window(PROXY_WINDOW, now);
            let seen = second
                .and_then(|s| client.version(&version.name).map(|v| v.second(s)))
                .unwrap_or_default();
            rows.push(Row {
                name: version.name.to_string(),
                weight: service.share_of(index),
                proxy_rps: window.requests() as f64 / PROXY_WINDOW.as_secs_f64(),
                proxy_error_rate: window.error_rate(),
                p50_ms: window.quantile_secs(0.5) * 1e3,
                p99_ms: window.quantile_secs(0.99) * 1e3,
                saved: window.tally.saved,
                client_rps: seen.requests,
                client_errors: seen.errors,
                client_share: match client_total {
                    0 => 0.0,
                    n => seen.requests as f64 / n as f64,
                },
            });
        }
    }
    View {
        elapsed,
        duration,
        revision: table.revision,
        rows,
    }
}
