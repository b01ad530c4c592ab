//! `GET /metrics`: Prometheus text format, computed from telemetry totals and control state.

use super::context::Parts;
use crate::config::grpc::code_name;
use crate::control::ControlSnapshot;
use crate::routing::{RoutingTable, ServiceState};
use crate::telemetry::{ClientFault, Outcome, Snapshot};
use std::fmt::Write;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub async fn render(parts: &Parts) -> String {
    let snapshot = parts.controller.snapshot().await;
    let table = parts.controller.plane.table.load_full();
    let mut out = traffic(&snapshot, &table);
    guard(&mut out, parts, &snapshot).await;
    analysis(&mut out, parts, &snapshot);
    verification(&mut out, &parts.verified.verifier);
    shadow(&mut out, &table);
    if let Some(log) = &table.settings.access_log {
        let name = "switchyard_access_log_dropped_total";
        header(&mut out, name, "counter", "Access log lines dropped: the writer's queue was full or its file could not be written.");
        let _ = writeln!(out, "{name} {}", log.dropped());
    }
    if let Some(tracer) = &table.settings.tracer {
        spans(&mut out, tracer);
    }
    if let Some(fleet) = &parts.controller.fleet {
        fleet_rejections(&mut out, &fleet.rejections);
    }
    out
}

/// What became of the sampled spans.
fn spans(out: &mut String, tracer: &crate::telemetry::spans::Tracer) {
    for (name, help, count) in [
        (
            "switchyard_otlp_spans_exported_total",
            "Spans the OTLP collector accepted.",
            tracer.exported(),
        ),
        (
            "switchyard_otlp_spans_dropped_total",
            "Sampled spans dropped: the exporter's queue was full.",
            tracer.dropped(),
        ),
        (
            "switchyard_otlp_spans_failed_total",
            "Spans whose export failed (collector unreachable, refused or slow).",
            tracer.failed(),
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {count}");
    }
}

/// One count read off a shadow report.
type ReportCount = fn(&crate::telemetry::shadow::ShadowReport) -> u64;

/// What shadow traffic found, per service with a `[shadow]` section.
fn shadow(out: &mut String, table: &RoutingTable) {
    let reports: Vec<(String, crate::telemetry::shadow::ShadowReport)> = table
        .services()
        .iter()
        .filter_map(|s| {
            Some((
                s.name.to_string(),
                crate::dataplane::shadow::report(table, &s.name)?,
            ))
        })
        .collect();
    if reports.is_empty() {
        return;
    }
    let counters: [(&str, &str, ReportCount); 5] = [
        (
            "switchyard_shadow_mirrored_total",
            "Copies of stable's requests sent to the shadow version.",
            |r| r.mirrored,
        ),
        (
            "switchyard_shadow_compared_total",
            "Shadow answers compared with stable's.",
            |r| r.compared,
        ),
        (
            "switchyard_shadow_differing_total",
            "Shadow answers that differed from stable's in some field.",
            |r| r.differing,
        ),
        (
            "switchyard_shadow_noise_compared_total",
            "Stable answers compared with stable's own (noise).",
            |r| r.noise_compared,
        ),
        (
            "switchyard_shadow_noise_differing_total",
            "Stable-against-stable comparisons that differed.",
            |r| r.noise_differing,
        ),
    ];
    for (name, help, value) in counters {
        header(out, name, "counter", help);
        for (service, report) in &reports {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",version=\"{}\"}} {}",
                escape(service),
                escape(&report.version),
                value(report)
            );
        }
    }
    let name = "switchyard_shadow_skipped_total";
    header(out, name, "counter", "Copies not compared, by why.");
    for (service, report) in &reports {
        for (why, n) in &report.skipped {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",version=\"{}\",why=\"{why}\"}} {n}",
                escape(service),
                escape(&report.version)
            );
        }
    }
    let name = "switchyard_shadow_failing";
    header(out, name, "gauge", "1 while the shadow check fails.");
    for (service, report) in &reports {
        let failing = matches!(
            report.verdict,
            crate::telemetry::shadow::ShadowVerdict::Fail { .. }
        );
        let _ = writeln!(
            out,
            "{name}{{service=\"{}\",version=\"{}\"}} {}",
            escape(service),
            escape(&report.version),
            u8::from(failing)
        );
    }
}

/// What the fleet's subjects carried that this instance skipped.
fn fleet_rejections(out: &mut String, rejections: &crate::fleet::Rejections) {
    let name = "switchyard_fleet_rejected_total";
    header(
        out,
        name,
        "counter",
        "Fleet revisions and evidence reports skipped, never applied, by why",
    );
    for kind in rejections.counts() {
        let _ = writeln!(
            out,
            "{name}{{carrier=\"{}\",reason=\"{}\"}} {}",
            kind.carrier.as_str(),
            kind.reason.as_str(),
            kind.count
        );
    }
}

/// Active health checks, the return points, and the gate.
fn verification(out: &mut String, verifier: &crate::verify::Verifier) {
    let health = verifier.health.snapshot();
    let endpoint_labels = |addr: &std::net::SocketAddr,
                           h: &crate::verify::health::EndpointHealth| {
        format!(
            "service=\"{}\",version=\"{}\",endpoint=\"{addr}\"",
            escape(&h.service),
            escape(&h.version)
        )
    };
    header(
        out,
        "switchyard_health_up",
        "gauge",
        "1 while active health checks keep the endpoint in the rotation.",
    );
    for (addr, h) in &health {
        let _ = writeln!(
            out,
            "switchyard_health_up{{{}}} {}",
            endpoint_labels(addr, h),
            u8::from(h.up)
        );
    }
    header(
        out,
        "switchyard_health_checks_total",
        "counter",
        "Active health checks by result.",
    );
    for (addr, h) in &health {
        let labels = endpoint_labels(addr, h);
        let _ = writeln!(
            out,
            "switchyard_health_checks_total{{{labels},result=\"ok\"}} {}",
            h.checks - h.failures
        );
        let _ = writeln!(
            out,
            "switchyard_health_checks_total{{{labels},result=\"failed\"}} {}",
            h.failures
        );
    }
    header(
        out,
        "switchyard_health_changes_total",
        "counter",
        "Times active health checks took the endpoint out or brought it back.",
    );
    for (addr, h) in &health {
        let _ = writeln!(
            out,
            "switchyard_health_changes_total{{{}}} {}",
            endpoint_labels(addr, h),
            h.changes
        );
    }
    let points = verifier.return_point_status();
    header(out, "switchyard_return_point_passing", "gauge", "1 when the stable version passed its last checks (watched while another version takes traffic).");
    for (service, point) in &points {
        let labels = format!(
            "service=\"{}\",version=\"{}\"",
            escape(service),
            escape(&point.version)
        );
        let _ = writeln!(
            out,
            "switchyard_return_point_passing{{{labels}}} {}",
            u8::from(point.last.passed)
        );
    }
    header(
        out,
        "switchyard_return_point_last_passed_seconds",
        "gauge",
        "Unix time the stable version last passed its checks.",
    );
    for (service, point) in &points {
        if let Some(ms) = point.passed_ms {
            let labels = format!(
                "service=\"{}\",version=\"{}\"",
                escape(service),
                escape(&point.version)
            );
            let _ = writeln!(
                out,
                "switchyard_return_point_last_passed_seconds{{{labels}}} {:.3}",
                ms as f64 / 1e3
            );
        }
    }
    header(
        out,
        "switchyard_cutback_held",
        "gauge",
        "1 while the guard holds a cutback because the return point fails its checks (the alarm).",
    );
    for (service, point) in &points {
        let _ = writeln!(
            out,
            "switchyard_cutback_held{{service=\"{}\"}} {}",
            escape(service),
            u8::from(point.held.is_some())
        );
    }
    let counters = &verifier.counters;
    for (name, help, counter) in [
        ("switchyard_gate_refused_total", "Changes refused because the version they give traffic to failed its checks.", &counters.gate_refused),
        ("switchyard_gate_forced_total", "Changes forced past failing checks.", &counters.gate_forced),
        ("switchyard_validations_failed_total", "Validations after an abort, cutback, rollback or switch that found the version taking the traffic failing.", &counters.validations_failed),
        ("switchyard_cutbacks_held_total", "Cutbacks the guard held because the return point failed its checks.", &counters.cutbacks_held),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(std::sync::atomic::Ordering::Relaxed));
    }
}

/// Requests, errors, latency and shares per version; latch, freeze and aborts per service.
fn traffic(snapshot: &ControlSnapshot, table: &RoutingTable) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "switchyard_revision",
        "gauge",
        "Routing revision the data plane runs.",
    );
    let _ = writeln!(out, "switchyard_revision {}", table.revision);
    header(
        &mut out,
        "switchyard_journal_writable",
        "gauge",
        "0 while the journal cannot be written (only aborts apply), else 1.",
    );
    let writable = u8::from(snapshot.journal.is_none());
    let _ = writeln!(out, "switchyard_journal_writable {writable}");
    header(
        &mut out,
        "switchyard_journal_pending",
        "gauge",
        "Aborts in force that wait to be journaled.",
    );
    let pending = snapshot.journal.as_ref().map_or(0, |j| j.pending);
    let _ = writeln!(out, "switchyard_journal_pending {pending}");

    let mut totals = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let labels = format!(
                "service=\"{}\",version=\"{}\"",
                escape(&service.name),
                escape(&version.name)
            );
            totals.push((
                labels,
                version.stats.totals(),
                service.share_of(index),
                &version.endpoints,
            ));
        }
    }

    header(
        &mut out,
        "switchyard_requests_total",
        "counter",
        "Proxied requests by outcome (status class, or how the upstream failed).",
    );
    for (labels, total, _, _) in &totals {
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
    for (labels, total, _, _) in &totals {
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
        "switchyard_grpc_calls_total",
        "counter",
        "gRPC calls by final status (grpc-status), for versions that served any.",
    );
    for service in table.services() {
        for version in service.versions.iter() {
            let statuses = version.stats.grpc_statuses();
            if statuses.iter().all(|&count| count == 0) {
                continue;
            }
            for (code, count) in statuses.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "switchyard_grpc_calls_total{{service=\"{}\",version=\"{}\",status=\"{}\"}} {count}",
                    escape(&service.name),
                    escape(&version.name),
                    code_name(code as u8)
                );
            }
        }
    }
    header(
        &mut out,
        "switchyard_saved_total",
        "counter",
        "Failed requests answered by another version instead.",
    );
    for (labels, total, _, _) in &totals {
        let _ = writeln!(
            out,
            "switchyard_saved_total{{{labels}}} {}",
            total.tally.saved
        );
    }
    header(
        &mut out,
        "switchyard_client_faults_total",
        "counter",
        "Exchanges the client made fail (abandoned or malformed body, client gone); never counted against the version.",
    );
    for service in table.services() {
        for version in service.versions.iter() {
            for fault in ClientFault::ALL {
                let _ = writeln!(
                    out,
                    "switchyard_client_faults_total{{service=\"{}\",version=\"{}\",kind=\"{}\"}} {}",
                    escape(&service.name),
                    escape(&version.name),
                    fault.label(),
                    version.stats.client_faults(fault)
                );
            }
        }
    }
    header(
        &mut out,
        "switchyard_request_duration_seconds",
        "histogram",
        "Time to the response head.",
    );
    for (labels, total, _, _) in &totals {
        histogram(&mut out, labels, total);
    }
    header(
        &mut out,
        "switchyard_weight_share",
        "gauge",
        "Share of traffic the data plane sends to the version (0 to 1).",
    );
    for (labels, _, share, _) in &totals {
        let _ = writeln!(out, "switchyard_weight_share{{{labels}}} {share}");
    }
    header(
        &mut out,
        "switchyard_endpoint_up",
        "gauge",
        "0 while the endpoint is left out after refusing a connection, else 1.",
    );
    let now = std::time::Instant::now();
    for (labels, _, _, endpoints) in &totals {
        for endpoint in endpoints.iter() {
            let up = u8::from(!endpoint.is_backing_off(now));
            let addr = endpoint.addr;
            let _ = writeln!(
                out,
                "switchyard_endpoint_up{{{labels},endpoint=\"{addr}\"}} {up}"
            );
        }
    }

    per_service(
        &mut out,
        snapshot,
        ("switchyard_latched", "gauge"),
        "1 while the service is aborted (all traffic on stable until resume).",
        |_, state| u64::from(state.latched),
    );
    per_service(
        &mut out,
        snapshot,
        ("switchyard_frozen", "gauge"),
        "1 while the service is frozen.",
        |_, state| u64::from(state.frozen),
    );
    per_service(
        &mut out,
        snapshot,
        ("switchyard_aborts_total", "counter"),
        "Aborts recorded in the journal (manual and automatic).",
        |name, _| snapshot.aborts.get(name).copied().unwrap_or(0),
    );
    out
}

/// The guard's verdicts and looks, incidents, and rollouts in progress.
async fn guard(out: &mut String, parts: &Parts, snapshot: &ControlSnapshot) {
    header(
        out,
        "switchyard_guard_verdict",
        "gauge",
        "The guard's latest verdict on the version it judges: 0 healthy, 1 inconclusive, 2 bad.",
    );
    for (service, verdict) in parts.board.all() {
        let _ = writeln!(
            out,
            "switchyard_guard_verdict{{service=\"{}\",version=\"{}\"}} {}",
            escape(&service),
            escape(&verdict.version),
            verdict.verdict.level()
        );
    }
    header(
        out,
        "switchyard_guard_looks_total",
        "counter",
        "Times the guard has judged every canary.",
    );
    let _ = writeln!(out, "switchyard_guard_looks_total {}", parts.board.looks());
    let incidents = parts.incidents.list(None);
    per_service(
        out,
        snapshot,
        ("switchyard_incidents_total", "counter"),
        "Incidents recorded (automatic cutbacks), over the whole incident log.",
        |name, _| incidents.iter().filter(|i| i.service == name).count() as u64,
    );
    header(
        out,
        "switchyard_rollout_percent",
        "gauge",
        "The canary's percent at the step in force, for running or paused rollouts.",
    );
    for (service, rollout) in parts.rollouts.all().await {
        if rollout.rollout.status.is_active() {
            let _ = writeln!(
                out,
                "switchyard_rollout_percent{{service=\"{}\",version=\"{}\"}} {}",
                escape(&service),
                escape(&rollout.rollout.canary),
                rollout.percent
            );
        }
    }
}

/// The latest run of each Prometheus analysis run here.
fn analysis(out: &mut String, parts: &Parts, snapshot: &ControlSnapshot) {
    let all: Vec<(String, crate::analysis::AnalysisStatus)> = snapshot
        .services
        .keys()
        .flat_map(|service| {
            let found = parts.analyses.of(service);
            found.into_iter().map(move |a| (service.clone(), a))
        })
        .collect();
    let labels = |service: &str, a: &crate::analysis::AnalysisStatus| {
        format!(
            "service=\"{}\",analysis=\"{}\",version=\"{}\"",
            escape(service),
            escape(&a.name),
            escape(&a.version)
        )
    };
    header(
        out,
        "switchyard_analysis_outcome",
        "gauge",
        "An analysis's last run: 0 pass, 1 no data, 2 Prometheus unreachable, 3 fail.",
    );
    for (service, a) in &all {
        let Some(outcome) = a.outcome else { continue };
        let level = match outcome {
            crate::analysis::RunOutcome::Pass => 0,
            crate::analysis::RunOutcome::NoData => 1,
            crate::analysis::RunOutcome::Unreachable => 2,
            crate::analysis::RunOutcome::Fail => 3,
        };
        let _ = writeln!(
            out,
            "switchyard_analysis_outcome{{{}}} {level}",
            labels(service, a)
        );
    }
    header(
        out,
        "switchyard_analysis_failed_in_a_row",
        "gauge",
        "Failed runs in a row of an analysis (it aborts at its `failures`).",
    );
    for (service, a) in &all {
        let _ = writeln!(
            out,
            "switchyard_analysis_failed_in_a_row{{{}}} {}",
            labels(service, a),
            a.failed_in_a_row
        );
    }
    header(
        out,
        "switchyard_analysis_value",
        "gauge",
        "The value an analysis's query gave at its last run, for the canary and for stable.",
    );
    for (service, a) in &all {
        for (side, value) in [("canary", a.canary_value), ("stable", a.stable_value)] {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "switchyard_analysis_value{{{},side=\"{side}\"}} {value}",
                    labels(service, a)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric with one value per service; `(name, kind)` as in `header`.
fn per_service(
    out: &mut String,
    snapshot: &ControlSnapshot,
    (name, kind): (&str, &str),
    help: &str,
    value: impl Fn(&str, &ServiceState) -> u64,
) {
    header(out, name, kind, help);
    for (service, state) in &snapshot.services {
        let _ = writeln!(
            out,
            "{name}{{service=\"{}\"}} {}",
            escape(service),
            value(service, state)
        );
    }
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
