//! Reading the evidence, for the guard's watchers and the analysis: a side's numbers from
//! its tally, its p99, and the revision that sent users to a version.

use super::incident::Cause;
use super::judge::Side;
use crate::control::record::ChangeKind;
use crate::control::RoutingControl;
use crate::routing::RoutingTable;
use crate::telemetry::{Snapshot, Tally};
use std::time::Duration;

/// Latency windows are merged (histograms, the costly part) at most this often.
pub(crate) const LATENCY_REFRESH: Duration = Duration::from_millis(200);

pub(crate) fn side(tally: &Tally, p99: Option<Duration>) -> Side {
    Side {
        requests: tally.requests(),
        errors: tally.errors(),
        p99,
    }
}

pub(crate) fn p99(snapshot: Snapshot) -> Duration {
    Duration::from_micros(snapshot.latency.value_at_quantile(0.99))
}

/// The latest revision that raised the version's traffic: what sent users to it.
pub(crate) fn cause(
    control: &impl RoutingControl,
    service: &str,
    version: &str,
    table: &RoutingTable,
) -> Option<Cause> {
    let history = control.revisions(service);
    let weight = |state: &Option<crate::routing::ServiceState>| {
        state
            .as_ref()
            .filter(|s| !s.latched)
            .and_then(|s| s.weights.get(version).copied())
            .unwrap_or(0)
    };
    let record = history
        .iter()
        .rev()
        .find(|r| r.kind != ChangeKind::Abort && weight(&r.new) > weight(&r.old))?;
    let release = table
        .services()
        .iter()
        .find(|s| &*s.name == service)
        .and_then(|s| s.versions.iter().find(|v| &*v.name == version))
        .map(|v| v.release.clone())
        .unwrap_or_default();
    Some(Cause {
        revision: record.revision,
        time: record.time.clone(),
        actor: record.actor.clone(),
        reason: record.reason.clone(),
        release,
    })
}
