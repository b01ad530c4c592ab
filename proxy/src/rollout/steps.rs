//! What the driver does to one rollout: checks before it runs, putting a step in force,
//! approvals, and advancing or aborting it. Each change goes through the `Plant`.

use super::{Approval, Live, Plant, Rollout, Status};
use crate::control::error::ControlError;
use crate::control::record::{ChangeKind, Origin};
use crate::routing::ServiceState;
use crate::telemetry::shadow::ShadowReport;

/// Refuses to run a rollout whose canary is already stable, or on a latched service.
pub(super) fn check_can_run(
    service: &str,
    rollout: &Rollout,
    routing: &ServiceState,
) -> Result<(), ControlError> {
    if routing.stable == rollout.canary {
        return Err(ControlError::Refused(format!(
            "{} is already stable on {service}: nothing to roll out",
            rollout.canary
        )));
    }
    if routing.latched {
        return Err(ControlError::Refused(format!(
            "{service} is latched after an abort (all traffic on {}); lift it with `resume` first",
            routing.stable
        )));
    }
    Ok(())
}

/// Refuses a shadow step that could never be judged: the canary is not being shadowed.
pub(super) fn check_shadowed(plant: &impl Plant, rollout: &Rollout) -> Result<(), ControlError> {
    let (service, canary) = (&rollout.service, &rollout.canary);
    match plant.shadow(service) {
        Some(report) if report.version == *canary => Ok(()),
        _ => Err(ControlError::Refused(format!(
            "{service}: the rollout begins with a shadow step, but {canary} is not shadowed \
             (set [services.{service}.shadow] version = {canary:?}); nothing changed"
        ))),
    }
}

/// Sets the routing of the rollout's current step unless it is already in force.
pub(super) async fn put_in_force(
    plant: &impl Plant,
    entry: &mut Live,
    routing: &ServiceState,
    why: &str,
    forced: bool,
) -> Result<(), ControlError> {
    if entry.rollout.follows(routing) {
        return Ok(());
    }
    let rollout = &entry.rollout;
    let reason = format!(
        "rollout {why}; {} at {}",
        rollout.canary,
        rollout.position()
    );
    let change = rollout.change_to(rollout.step, &routing.stable);
    let revision = plant
        .change(
            &rollout.service,
            change,
            Origin::new("rollout", reason).forced(forced),
        )
        .await?;
    entry.rollout.revision = Some(revision);
    entry.step_begins();
    Ok(())
}

/// `ctl approve`: the step in force, which waits for approval, may go on once it has
/// baked; the approval is a revision (who, why) and part of the rollout's record.
pub(super) async fn approve(
    plant: &impl Plant,
    entry: &mut Live,
    origin: Origin,
) -> Result<(), ControlError> {
    let rollout = &entry.rollout;
    let service = rollout.service.clone();
    if !rollout.gate().is_some_and(|gate| gate.approve) {
        return Err(ControlError::Refused(format!(
            "{service}: the rollout's {} needs no approval",
            rollout.position()
        )));
    }
    if let Some(done) = rollout.approved.as_ref().filter(|a| a.step == rollout.step) {
        return Err(ControlError::Refused(format!(
            "{service}: {} was already approved by {} (revision {})",
            rollout.position(),
            done.actor,
            done.revision
        )));
    }
    let position = rollout.position();
    let (actor, reason) = (origin.actor.clone(), origin.reason.clone());
    let why = match reason.as_str() {
        "" => format!("approved the rollout of {} at {position}", rollout.canary),
        why => format!(
            "approved the rollout of {} at {position}: {why}",
            rollout.canary
        ),
    };
    let revision = plant
        .note(
            &service,
            ChangeKind::Approved,
            Origin::new(actor.clone(), why),
        )
        .await?;
    entry.rollout.approved = Some(Approval {
        step: entry.rollout.step,
        actor: actor.clone(),
        reason,
        revision,
    });
    let status = entry.rollout.status;
    entry
        .rollout
        .set(status, format!("{position} approved by {actor}"));
    tracing::info!(%service, revision, "rollout {}", entry.rollout.note);
    Ok(())
}

/// Records, once per step, that the step waits for approval: an `approval_needed`
/// revision, which the webhooks deliver to whoever approves.
pub(super) async fn ask_approval(plant: &impl Plant, entry: &mut Live) {
    let rollout = &entry.rollout;
    let service = rollout.service.clone();
    let why = format!(
        "{} at {} waits for approval: switchyard ctl approve {service}",
        rollout.canary,
        rollout.position()
    );
    let asked = plant
        .note(
            &service,
            ChangeKind::ApprovalNeeded,
            Origin::new("rollout", why),
        )
        .await;
    if let Err(err) = asked {
        // Best effort: the hold itself shows in status either way.
        tracing::warn!(%service, error = %err, "approval needed, but not recorded");
    }
    entry.rollout.approval_asked = Some(entry.rollout.step);
    entry.dirty = true;
}

/// Why a baked step goes on: "after 30.0s healthy".
pub(super) fn baked_for(rollout: &Rollout) -> String {
    format!("after {:.1}s healthy", rollout.bake().as_secs_f64())
}

/// Ends the rollout whose shadow step failed (abort revision and incident); false while
/// the abort could not be made (the next look tries again).
pub(super) async fn abort_on_shadow(
    plant: &impl Plant,
    entry: &mut Live,
    report: &ShadowReport,
    why: String,
) -> bool {
    let service = entry.rollout.service.clone();
    match plant.abort_on_shadow(&service, report, &why).await {
        Ok(revision) => {
            tracing::warn!(%service, revision, "rollout {why}");
            entry.rollout.revision = Some(revision);
            entry.rollout.set(Status::Aborted, why);
            entry.held = None;
            true
        }
        Err(err) => {
            tracing::error!(%service, error = %err, "the failed shadow step could not abort");
            entry.held = Some(format!("{why}; the abort failed ({err}), trying again"));
            false
        }
    }
}

/// Puts step `next` in force (the promotion at the last step); false if it was refused.
/// `baked`: why the step in force may be left.
pub(super) async fn advance(
    plant: &impl Plant,
    entry: &mut Live,
    stable: &str,
    next: usize,
    baked: String,
) -> bool {
    let rollout = &entry.rollout;
    let last = next + 1 >= rollout.steps.len();
    let reason = match last {
        true => format!("rollout promotes {} ({baked})", rollout.canary),
        false => format!(
            "rollout step {}/{}: {} at {}% ({baked})",
            next + 1,
            rollout.steps.len(),
            rollout.canary,
            rollout.steps[next]
        ),
    };
    let change = rollout.change_to(next, stable);
    let service = rollout.service.clone();
    match plant
        .change(&service, change, Origin::new("rollout", reason.clone()))
        .await
    {
        Ok(revision) => {
            let rollout = &mut entry.rollout;
            rollout.step = next.min(rollout.steps.len().saturating_sub(1));
            rollout.revision = Some(revision);
            let status = if last { Status::Done } else { Status::Running };
            rollout.set(status, reason);
            entry.step_begins();
            entry.held = None;
            entry.gate_retry_at = None;
            tracing::info!(service = %service, revision, "{}", entry.rollout.note);
            true
        }
        Err(err) => {
            tracing::warn!(service = %service, error = %err, "rollout could not advance");
            entry.held = Some(format!("could not advance: {err}"));
            false
        }
    }
}
