//! What the access log and the span exporter could not send.

use super::exposition::{Exposition, Kind};
use crate::routing::table::ProxySettings;

pub fn render(out: &mut Exposition, settings: &ProxySettings) {
    if let Some(log) = &settings.access_log {
        out.single(
            "switchyard_access_log_dropped_total",
            Kind::Counter,
            "Access log lines dropped: the writer's queue was full or its file could not be written.",
            log.dropped(),
        );
    }
    let Some(tracer) = &settings.tracer else {
        return;
    };
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
        out.single(name, Kind::Counter, help, count);
    }
}
