//! What the driver reads and changes: the `Plant` (a fake in tests) and its production
//! form, `Wired`.

use crate::analysis::AnalysisBoard;
use crate::control::command::Change;
use crate::control::error::ControlError;
use crate::control::record::{ChangeKind, Origin};
use crate::control::RoutingControl;
use crate::dataplane::proxy::DataPlane;
use crate::guard::incident::{Cutback, IncidentLog};
use crate::guard::judge::Side;
use crate::guard::watch::{Board, VersionVerdict};
use crate::routing::ServiceState;
use crate::telemetry::shadow::ShadowReport;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;

/// What the driver needs from the proxy: the control plane and the guard's verdicts in
/// production, a fake in tests.
pub(crate) trait Plant: Sync {
    fn routing(&self, service: &str) -> Option<ServiceState>;
    fn verdict(&self, service: &str) -> Option<VersionVerdict>;
    /// Why the service's analyses hold a step of `canary` in force since `since`.
    fn analysis_hold(&self, service: &str, canary: &str, since: Instant) -> Option<String>;
    /// What shadowing the service found so far, if it has a shadow.
    fn shadow(&self, service: &str) -> Option<ShadowReport>;
    /// Ends a rollout whose shadow step failed: all traffic on stable, latched (an abort
    /// revision carrying the report), and an incident. Returns the revision.
    fn abort_on_shadow(
        &self,
        service: &str,
        report: &ShadowReport,
        summary: &str,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;
    /// Journals and applies a change; returns its revision.
    fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;
    /// Journals a revision that leaves the routing as it is; returns its revision.
    fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;
}

/// The production plant: what the driver reads and changes.
pub struct Wired<C> {
    pub control: Arc<C>,
    /// The guard's verdicts.
    pub board: Arc<Board>,
    pub analyses: Arc<AnalysisBoard>,
    /// The live routing table, where shadowing keeps its findings.
    pub plane: Arc<DataPlane>,
    /// Where a failed shadow step's incident goes.
    pub incidents: Arc<IncidentLog>,
}

impl<C: RoutingControl> Plant for Wired<C> {
    fn routing(&self, service: &str) -> Option<ServiceState> {
        self.control.routing_of(service)
    }

    fn verdict(&self, service: &str) -> Option<VersionVerdict> {
        self.board.get(service)
    }

    fn analysis_hold(&self, service: &str, canary: &str, since: Instant) -> Option<String> {
        let configured: Vec<String> = match self.control.service(service) {
            Ok(config) => config.analyses.into_iter().map(|a| a.name).collect(),
            Err(err) => return Some(format!("analyses unknown: {err}")),
        };
        crate::analysis::step_hold(&configured, &self.analyses.of(service), canary, since)
    }

    fn shadow(&self, service: &str) -> Option<ShadowReport> {
        crate::dataplane::shadow::report(&self.plane.table.load(), service)
    }

    async fn abort_on_shadow(
        &self,
        service: &str,
        report: &ShadowReport,
        summary: &str,
    ) -> Result<u64, ControlError> {
        let evidence = serde_json::json!({"rule": "shadow", "shadow": report, "summary": summary});
        let origin = Origin::new("rollout", summary.to_string()).with_evidence(evidence.clone());
        let record = self
            .control
            .change(service, Change::Abort {}, origin)
            .await?;
        let stable = record
            .new
            .as_ref()
            .map_or(String::new(), |s| s.stable.clone());
        let cutback = Cutback {
            service,
            version: &report.version,
            stable: &stable,
            started_ms: record.time_ms,
            ended_ms: record.time_ms,
            // No user was ever sent to it.
            canary: Side::default(),
            stable_side: Side::default(),
            saved: 0,
            cause: None,
            detection: evidence,
            summary: summary.to_string(),
            restored_by: record.revision,
        };
        if let Err(err) = self.incidents.record(cutback).await {
            tracing::error!(error = %err, "incident not recorded");
        }
        Ok(record.revision)
    }

    async fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<u64, ControlError> {
        self.control
            .change(service, change, origin)
            .await
            .map(|record| record.revision)
    }

    async fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<u64, ControlError> {
        self.control
            .note(service, kind, origin)
            .await
            .map(|record| record.revision)
    }
}
