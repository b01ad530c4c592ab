//! Active health checks, the return points, and the gate.

use super::exposition::{Exposition, Kind, Labels};
use crate::verify::Verifier;
use std::sync::atomic::Ordering;

pub fn render(out: &mut Exposition, verifier: &Verifier) {
    health(out, verifier);
    return_points(out, verifier);
    let counters = &verifier.counters;
    for (name, help, counter) in [
        ("switchyard_gate_refused_total", "Changes refused because the version they give traffic to failed its checks.", &counters.gate_refused),
        ("switchyard_gate_forced_total", "Changes forced past failing checks.", &counters.gate_forced),
        ("switchyard_validations_failed_total", "Validations after an abort, cutback, rollback or switch that found the version taking the traffic failing.", &counters.validations_failed),
        ("switchyard_cutbacks_held_total", "Cutbacks the guard held because the return point failed its checks.", &counters.cutbacks_held),
    ] {
        out.single(name, Kind::Counter, help, counter.load(Ordering::Relaxed));
    }
}

fn health(out: &mut Exposition, verifier: &Verifier) {
    let health: Vec<_> = verifier
        .health
        .snapshot()
        .into_iter()
        .map(|(addr, h)| {
            let labels = Labels::version(&h.service, &h.version).and("endpoint", &addr.to_string());
            (labels, h)
        })
        .collect();
    let mut up = out.family(
        "switchyard_health_up",
        Kind::Gauge,
        "1 while active health checks keep the endpoint in the rotation.",
    );
    for (labels, h) in &health {
        up.sample(labels, u8::from(h.up));
    }
    let mut checks = out.family(
        "switchyard_health_checks_total",
        Kind::Counter,
        "Active health checks by result.",
    );
    for (labels, h) in &health {
        checks.sample(&labels.clone().and("result", "ok"), h.checks - h.failures);
        checks.sample(&labels.clone().and("result", "failed"), h.failures);
    }
    let mut changes = out.family(
        "switchyard_health_changes_total",
        Kind::Counter,
        "Times active health checks took the endpoint out or brought it back.",
    );
    for (labels, h) in &health {
        changes.sample(labels, h.changes);
    }
}

fn return_points(out: &mut Exposition, verifier: &Verifier) {
    let points = verifier.return_point_status();
    let mut passing = out.family(
        "switchyard_return_point_passing",
        Kind::Gauge,
        "1 when the stable version passed its last checks (watched while another version takes traffic).",
    );
    for (service, point) in &points {
        passing.sample(
            &Labels::version(service, &point.version),
            u8::from(point.last.passed),
        );
    }
    let mut passed_at = out.family(
        "switchyard_return_point_last_passed_seconds",
        Kind::Gauge,
        "Unix time the stable version last passed its checks.",
    );
    for (service, point) in &points {
        if let Some(ms) = point.passed_ms {
            let secs = format!("{:.3}", ms as f64 / 1e3);
            passed_at.sample(&Labels::version(service, &point.version), secs);
        }
    }
    let mut held = out.family(
        "switchyard_cutback_held",
        Kind::Gauge,
        "1 while the guard holds a cutback because the return point fails its checks (the alarm).",
    );
    for (service, point) in &points {
        held.sample(
            &Labels::of("service", service),
            u8::from(point.held.is_some()),
        );
    }
}
