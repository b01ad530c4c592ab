//! The gate's checks and the validation behind a change.
//!
//! Which versions must pass their checks before a change is the writer's plan's to say
//! (`control::promises`); `GateChecks` is what runs them when it asks, outside the writer,
//! so a gate that waits on a slow version never holds up an abort queued behind it.
//! `Verified` is the control plane as operators, rollouts and the guard use it: the
//! validation (`validate`) behind every abort, cutback, rollback and switch.

use super::{check_version, validate, Verifier};
use crate::config::ServiceConfig;
use crate::control::command::Change;
use crate::control::error::ControlError;
use crate::control::record::CheckReport;
use crate::control::record::{ChangeKind, Origin, RevisionRecord};
use crate::control::{CheckRunner, RoutingControl};
use crate::dataplane::proxy::DataPlane;
use crate::routing::ServiceState;
use futures_util::future::BoxFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The control plane with the validation behind.
pub struct Verified<C> {
    pub control: Arc<C>,
    pub plane: Arc<DataPlane>,
    pub verifier: Arc<Verifier>,
    pub incidents: Arc<dyn IncidentNotes>,
}

/// Where the validation behind a guard's cutback joins the guard's incident: the guard's
/// incident log, which stands above this module and so is known here by this alone.
pub trait IncidentNotes: Send + Sync {
    /// Adds `checks` to the incident that revision `restored_by` ended: `Ok(false)` while
    /// the guard has not written that incident yet.
    fn attach_checks(
        &self,
        restored_by: u64,
        checks: CheckReport,
        advice: Option<String>,
    ) -> BoxFuture<'_, Result<bool, String>>;
}

impl<C> Clone for Verified<C> {
    fn clone(&self) -> Self {
        Verified {
            control: self.control.clone(),
            plane: self.plane.clone(),
            verifier: self.verifier.clone(),
            incidents: self.incidents.clone(),
        }
    }
}

/// The gate's checks, as the control plane runs them (`control::CheckRunner`): against
/// the endpoints the live table has for the version (else those its config names).
pub struct GateChecks {
    pub plane: Arc<DataPlane>,
    pub verifier: Arc<Verifier>,
}

impl CheckRunner for GateChecks {
    fn run(&self, service: ServiceConfig, version: String) -> BoxFuture<'static, CheckReport> {
        let table = self.plane.table.load_full();
        Box::pin(async move { check_version(&service, &table, &version).await.report })
    }

    fn counted(&self, refused: bool) {
        let counter = match refused {
            true => &self.verifier.counters.gate_refused,
            false => &self.verifier.counters.gate_forced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl<C: RoutingControl + 'static> RoutingControl for Verified<C> {
    fn service(&self, service: &str) -> Result<ServiceConfig, ControlError> {
        self.control.service(service)
    }

    fn routing_of(&self, service: &str) -> Option<ServiceState> {
        self.control.routing_of(service)
    }

    fn revisions(&self, service: &str) -> Vec<RevisionRecord> {
        self.control.revisions(service)
    }

    async fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        let record = self.control.change(service, change, origin).await?;
        if validate::follows(record.kind) {
            tokio::spawn(validate::after(self.clone(), record.clone()));
        }
        Ok(record)
    }

    async fn note(
        &self,
        service: &str,
        kind: ChangeKind,
        origin: Origin,
    ) -> Result<RevisionRecord, ControlError> {
        self.control.note(service, kind, origin).await
    }
}
