//! What shadow traffic found, per service with a `[shadow]` section.

use super::exposition::{Exposition, Kind, Labels};
use crate::routing::RoutingTable;
use crate::telemetry::shadow::{ShadowReport, ShadowVerdict};

/// One count read off a shadow report.
type ReportCount = fn(&ShadowReport) -> u64;

pub fn render(out: &mut Exposition, table: &RoutingTable) {
    let reports: Vec<(Labels, ShadowReport)> = table
        .services()
        .iter()
        .filter_map(|s| {
            let report = crate::dataplane::shadow::report(table, &s.name)?;
            Some((Labels::version(&s.name, &report.version), report))
        })
        .collect();
    if reports.is_empty() {
        return;
    }
    let counters: [(&'static str, &str, ReportCount); 5] = [
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
        let mut family = out.family(name, Kind::Counter, help);
        for (labels, report) in &reports {
            family.sample(labels, value(report));
        }
    }
    let mut skipped = out.family(
        "switchyard_shadow_skipped_total",
        Kind::Counter,
        "Copies not compared, by why.",
    );
    for (labels, report) in &reports {
        for (why, n) in &report.skipped {
            skipped.sample(&labels.clone().and("why", why), n);
        }
    }
    let mut failing = out.family(
        "switchyard_shadow_failing",
        Kind::Gauge,
        "1 while the shadow check fails.",
    );
    for (labels, report) in &reports {
        let fails = matches!(report.verdict, ShadowVerdict::Fail { .. });
        failing.sample(labels, u8::from(fails));
    }
}
