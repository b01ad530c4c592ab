//! `GET /metrics`: Prometheus text format, computed from telemetry totals and control state.

mod checks;
mod exposition;
mod judges;
mod outlets;
mod shadow;
mod traffic;

use super::context::Parts;
use exposition::{Exposition, Kind, Labels};

pub async fn render(parts: &Parts) -> String {
    let snapshot = parts.controller.snapshot().await;
    let table = parts.controller.plane.table.load_full();
    let mut out = Exposition::default();
    traffic::render(&mut out, &snapshot, &table);
    judges::guard(&mut out, parts, &snapshot).await;
    judges::analysis(&mut out, parts, &snapshot);
    checks::render(&mut out, &parts.verified.verifier);
    shadow::render(&mut out, &table);
    outlets::render(&mut out, &table.settings);
    if let Some(fleet) = &parts.controller.fleet {
        fleet_rejections(&mut out, &fleet.rejections);
    }
    out.into_text()
}

/// What the fleet's subjects carried that this instance skipped.
fn fleet_rejections(out: &mut Exposition, rejections: &crate::fleet::Rejections) {
    let mut family = out.family(
        "switchyard_fleet_rejected_total",
        Kind::Counter,
        "Fleet revisions and evidence reports skipped, never applied, by why",
    );
    for kind in rejections.counts() {
        let labels =
            Labels::of("carrier", kind.carrier.as_str()).and("reason", kind.reason.as_str());
        family.sample(&labels, kind.count);
    }
}
