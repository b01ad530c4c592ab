//! `GET /metrics`: Prometheus text format, computed from telemetry totals and control state.

use crate::control::ControlSnapshot;
use crate::routing::RoutingTable;
use crate::telemetry::{Outcome, Snapshot};
use std::fmt::Write;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn render(snapshot: &ControlSnapshot, table: &RoutingTable) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "switchyard_revision",
        "gauge",
        "Routing revision the data plane runs.",
    );
    let _ = writeln!(out, "switchyard_revision {}", table.revision);

    let mut totals = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let labels = format!(
                "service=\"{}\",version=\"{}\"",
                escape(&service.name),
                escape(&version.name)
            );
            totals.push((labels, version.stats.totals(), service.share_of(index)));
        }
    }

    header(
        &mut out,
        "switchyard_requests_total",
        "counter",
        "Proxied requests by outcome (status class, or how the upstream failed).",
    );
    for (labels, total, _) in &totals {
        for outcome in Outcome::ALL {
            let count = total.tally.count(outcome);
            let _ = writeln!(
                out,
                "switchyard_requests_total{{{labels},outcome=\"{}\"}} {count}",
                outcome.label()
            );
        }
    }
    header(
        &mut out,
        "switchyard_errors_total",
        "counter",
        "Requests the version failed, by kind.",
    );
    for (labels, total, _) in &totals {
        for outcome in Outcome::ALL.iter().filter(|o| o.is_error()) {
            let count = total.tally.count(*outcome);
            let _ = writeln!(
                out,
                "switchyard_errors_total{{{labels},kind=\"{}\"}} {count}",
                outcome.label()
            );
        }
    }
    header(
        &mut out,
        "switchyard_saved_total",
        "counter",
        "Failed requests answered by another version instead.",
    );
    for (labels, total, _) in &totals {
        let _ = writeln!(
            out,
            "switchyard_saved_total{{{labels}}} {}",
            total.tally.saved
        );
    }
    header(
        &mut out,
        "switchyard_request_duration_seconds",
        "histogram",
        "Time to the response head.",
    );
    for (labels, total, _) in &totals {
        histogram(&mut out, labels, total);
    }
    header(
        &mut out,
        "switchyard_weight_share",
        "gauge",
        "Share of traffic the data plane sends to the version (0 to 1).",
    );
    for (labels, _, share) in &totals {
        let _ = writeln!(out, "switchyard_weight_share{{{labels}}} {share}");
    }

    header(
        &mut out,
        "switchyard_latched",
        "gauge",
        "1 while the service is aborted (all traffic on stable until resume).",
    );
    for (name, state) in &snapshot.services {
        let _ = writeln!(
            out,
            "switchyard_latched{{service=\"{}\"}} {}",
            escape(name),
            u8::from(state.latched)
        );
    }
    header(
        &mut out,
        "switchyard_frozen",
        "gauge",
        "1 while the service is frozen.",
    );
    for (name, state) in &snapshot.services {
        let _ = writeln!(
            out,
            "switchyard_frozen{{service=\"{}\"}} {}",
            escape(name),
            u8::from(state.frozen)
        );
    }
    header(
        &mut out,
        "switchyard_aborts_total",
        "counter",
        "Aborts recorded in the journal (manual and automatic).",
    );
    for name in snapshot.services.keys() {
        let aborts = snapshot.aborts.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "switchyard_aborts_total{{service=\"{}\"}} {aborts}",
            escape(name)
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, labels: &str, total: &Snapshot) {
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
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = total.latency.len();
    let sum = total.latency.mean() * count as f64 / 1e6;
    let _ = writeln!(
        out,
        "switchyard_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "switchyard_request_duration_seconds_sum{{{labels}}} {sum}"
    );
    let _ = writeln!(
        out,
        "switchyard_request_duration_seconds_count{{{labels}}} {count}"
    );
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
