//! Requests, errors, latency and shares per version; latch, freeze and aborts per service.

use super::exposition::{Exposition, Family, Kind, Labels};
use crate::config::grpc::code_name;
use crate::control::ControlSnapshot;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::{ClientFault, Outcome, Snapshot};

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn render(out: &mut Exposition, snapshot: &ControlSnapshot, table: &RoutingTable) {
    out.single(
        "switchyard_revision",
        Kind::Gauge,
        "Routing revision the data plane runs.",
        table.revision,
    );
    out.single(
        "switchyard_journal_writable",
        Kind::Gauge,
        "0 while the journal cannot be written (only aborts apply), else 1.",
        u8::from(snapshot.journal.is_none()),
    );
    out.single(
        "switchyard_journal_pending",
        Kind::Gauge,
        "Aborts in force that wait to be journaled.",
        snapshot.journal.as_ref().map_or(0, |j| j.pending),
    );
    versions(out, table);
    per_service(
        out,
        snapshot,
        ("switchyard_latched", Kind::Gauge),
        "1 while the service is aborted (all traffic on stable until resume).",
        |_, state| u64::from(state.latched),
    );
    per_service(
        out,
        snapshot,
        ("switchyard_frozen", Kind::Gauge),
        "1 while the service is frozen.",
        |_, state| u64::from(state.frozen),
    );
    per_service(
        out,
        snapshot,
        ("switchyard_aborts_total", Kind::Counter),
        "Aborts recorded in the journal (manual and automatic).",
        |name, _| snapshot.aborts.get(name).copied().unwrap_or(0),
    );
}

/// A metric with one value per service.
pub fn per_service(
    out: &mut Exposition,
    snapshot: &ControlSnapshot,
    (name, kind): (&'static str, Kind),
    help: &str,
    value: impl Fn(&str, &ServiceState) -> u64,
) {
    let mut family = out.family(name, kind, help);
    for (service, state) in &snapshot.services {
        family.sample(&Labels::of("service", service), value(service, state));
    }
}

fn versions(out: &mut Exposition, table: &RoutingTable) {
    let mut rows = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let labels = Labels::version(&service.name, &version.name);
            rows.push((
                labels,
                version,
                version.stats.totals(),
                service.share_of(index),
            ));
        }
    }
    let mut requests = out.family(
        "switchyard_requests_total",
        Kind::Counter,
        "Proxied requests by outcome (status class, or how the upstream failed).",
    );
    for (labels, _, total, _) in &rows {
        for outcome in Outcome::ALL {
            let labels = labels.clone().and("outcome", outcome.label());
            requests.sample(&labels, total.tally.count(outcome));
        }
    }
    let mut errors = out.family(
        "switchyard_errors_total",
        Kind::Counter,
        "Requests the version failed, by kind.",
    );
    for (labels, _, total, _) in &rows {
        for outcome in Outcome::ALL.iter().filter(|o| o.is_error()) {
            let labels = labels.clone().and("kind", outcome.label());
            errors.sample(&labels, total.tally.count(*outcome));
        }
    }
    let mut grpc = out.family(
        "switchyard_grpc_calls_total",
        Kind::Counter,
        "gRPC calls by final status (grpc-status), for versions that served any.",
    );
    for (labels, version, _, _) in &rows {
        let statuses = version.stats.grpc_statuses();
        if statuses.iter().all(|&count| count == 0) {
            continue;
        }
        for (code, count) in statuses.iter().enumerate() {
            grpc.sample(&labels.clone().and("status", code_name(code as u8)), count);
        }
    }
    let mut saved = out.family(
        "switchyard_saved_total",
        Kind::Counter,
        "Failed requests answered by another version instead.",
    );
    for (labels, _, total, _) in &rows {
        saved.sample(labels, total.tally.saved);
    }
    let mut faults = out.family(
        "switchyard_client_faults_total",
        Kind::Counter,
        "Exchanges the client made fail (abandoned or malformed body, client gone); never counted against the version.",
    );
    for (labels, version, _, _) in &rows {
        for fault in ClientFault::ALL {
            let labels = labels.clone().and("kind", fault.label());
            faults.sample(&labels, version.stats.client_faults(fault));
        }
    }
    let mut durations = out.family(
        "switchyard_request_duration_seconds",
        Kind::Histogram,
        "Time to the response head.",
    );
    for (labels, _, total, _) in &rows {
        histogram(&mut durations, labels, total);
    }
    let mut shares = out.family(
        "switchyard_weight_share",
        Kind::Gauge,
        "Share of traffic the data plane sends to the version (0 to 1).",
    );
    for (labels, _, _, share) in &rows {
        shares.sample(labels, share);
    }
    let mut up = out.family(
        "switchyard_endpoint_up",
        Kind::Gauge,
        "0 while the endpoint is left out after refusing a connection, else 1.",
    );
    let now = std::time::Instant::now();
    for (labels, version, _, _) in &rows {
        for endpoint in version.endpoints.iter() {
            let labels = labels.clone().and("endpoint", &endpoint.addr.to_string());
            up.sample(&labels, u8::from(!endpoint.is_backing_off(now)));
        }
    }
}

fn histogram(family: &mut Family, labels: &Labels, total: &Snapshot) {
    let mut counts = [0u64; BUCKETS.len()];
    for value in total.latency.iter_recorded() {
        let secs = value.value_iterated_to() as f64 / 1e6;
        if let Some(bucket) = BUCKETS.iter().position(|&bound| secs <= bound) {
            counts[bucket] += value.count_at_value();
        }
    }
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(counts) {
        cumulative += count;
        let le = labels.clone().and("le", &bound.to_string());
        family.suffixed("_bucket", &le, cumulative);
    }
    let count = total.latency.len();
    let sum = total.latency.mean() * count as f64 / 1e6;
    family.suffixed("_bucket", &labels.clone().and("le", "+Inf"), count);
    family.suffixed("_sum", labels, sum);
    family.suffixed("_count", labels, count);
}
