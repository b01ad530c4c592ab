//! Validation: after every abort, guard cutback, rollback and switch, the checks of the
//! version now taking the traffic run, and the result is journaled as a `validated`
//! revision (so history and webhooks show it) and added to the cutback's incident. When
//! the version taking the traffic fails too, the record says that rolling back does not
//! fix this: a hotfix is needed. A service without smoke checks is validated with the
//! connect check, journaled only when it fails.

use super::check_version;
use super::gate::Verified;
use crate::control::error::ControlError;
use crate::control::record::{ChangeKind, Origin, RevisionRecord};
use crate::control::RoutingControl;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a guard cutback's incident may take to appear (it is written just after the
/// cutback returns) before the validation gives up on adding itself to it.
const INCIDENT_WAIT: Duration = Duration::from_secs(5);
/// A validation that could not be recorded is tried again after this, doubling up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Whether a revision of `kind` is followed by a validation.
pub fn follows(kind: ChangeKind) -> bool {
    matches!(
        kind,
        ChangeKind::Abort | ChangeKind::Rollback | ChangeKind::Switch
    )
}

/// What an operator must be told when the version taking the traffic fails its checks.
pub fn advice(kind: ChangeKind, version: &str) -> String {
    match kind {
        ChangeKind::Switch => format!(
            "{version}, now taking all traffic, fails its checks: switch to a version that passes, or fix it"
        ),
        _ => format!(
            "{version}, the version now taking the traffic, fails its checks too: rolling back does not fix this, a hotfix is needed"
        ),
    }
}

/// Validates what `record` put in force; runs in its own task, after the change.
pub async fn after<C: RoutingControl + 'static>(verified: Verified<C>, record: RevisionRecord) {
    let Some(routing) = &record.new else { return };
    let Ok(config) = verified.control.service(&record.service) else {
        return;
    };
    let version = routing.stable.clone();
    let table = verified.plane.table.load_full();
    let report = check_version(&config, &table, &version).await.report;
    verified
        .verifier
        .note_return_point(&record.service, &report);
    let advice = (!report.passed).then(|| advice(record.kind, &version));
    let mut reason = format!(
        "checks of {version} after revision {} ({}): {}",
        record.revision,
        record.kind.label(),
        report.summary()
    );
    if let Some(advice) = &advice {
        verified
            .verifier
            .counters
            .validations_failed
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(service = %record.service, revision = record.revision, "{advice}: {}", report.summary());
        reason = format!("{advice}; {reason}");
    }
    // Without smoke checks only "every endpoint accepts a connection" is known: that is
    // journaled when it fails, not after every abort that went as expected.
    let worth_a_revision = !config.verify.checks.is_empty() || !report.passed;
    let origin = Origin::new("checks", reason).with_checks(report.clone());
    // Side by side: a validation waiting for the journal never holds up the incident.
    let recorded = async {
        if worth_a_revision {
            record_validation(&verified, &record, origin).await;
        }
    };
    let attached = async {
        if record.actor == "guard" {
            attach_to_incident(&verified, &record, report, advice).await;
        }
    };
    tokio::join!(recorded, attached);
}

/// Records the validation; while it cannot be (the journal or the fleet log out of reach)
/// it is tried again, as long as the routing is still what it validated (a later change
/// has a validation of its own).
async fn record_validation<C: RoutingControl + 'static>(
    verified: &Verified<C>,
    record: &RevisionRecord,
    origin: Origin,
) {
    let mut wait = RETRY_FIRST;
    let mut said = false;
    loop {
        let noted = verified
            .control
            .note(&record.service, ChangeKind::Validated, origin.clone())
            .await;
        match noted {
            Ok(_) => return,
            Err(err @ (ControlError::NotRecorded(_) | ControlError::NotCaughtUp(_))) => {
                if !said {
                    said = true;
                    tracing::warn!(service = %record.service, revision = record.revision, error = %err, "validation not recorded yet: retrying until it is");
                }
            }
            Err(err) => {
                tracing::error!(service = %record.service, error = %err, "validation not recorded");
                return;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
        if verified.control.routing_of(&record.service) != record.new {
            return;
        }
    }
}

/// Adds the validation to the guard's incident for `record`, once the guard has written it.
async fn attach_to_incident<C>(
    verified: &Verified<C>,
    record: &RevisionRecord,
    report: crate::control::record::CheckReport,
    advice: Option<String>,
) {
    let deadline = tokio::time::Instant::now() + INCIDENT_WAIT;
    loop {
        match verified
            .incidents
            .attach_checks(record.revision, report.clone(), advice.clone())
            .await
        {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(false) => return,
            Err(err) => {
                tracing::error!(error = %err, "validation not added to the incident");
                return;
            }
        }
    }
}
