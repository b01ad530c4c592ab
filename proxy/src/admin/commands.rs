//! Carries out an `Order`, whichever way it came (`POST /commands` or a per-verb path):
//! who and why checked, then a change through the gate, a rollout command through the
//! driver, or a reload.

use super::api::{ApiError, ReloadResponse, RolloutStatus};
use super::context::Parts;
use crate::control::command::{Change, Command, Order, RolloutAction};
use crate::control::record::{Origin, RevisionRecord};
use crate::control::{ReloadError, RoutingControl};
use serde::Serialize;

/// What a command answers: the revision a change made, the rollout's state, or what a
/// reload did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Revision(Box<RevisionRecord>),
    Rollout(Box<RolloutStatus>),
    Reload(ReloadResponse),
}

pub async fn run(parts: &Parts, order: Order) -> Result<Answer, ApiError> {
    let origin = origin(order.actor, order.reason)?;
    match order.command {
        Command::Change { service, change } => {
            let origin = origin.forced(order.force);
            let record = match change {
                Change::Release { version, spec } => {
                    super::release::release(parts, &service, version, spec, origin).await?
                }
                change => parts.verified.change(&service, change, origin).await?,
            };
            Ok(Answer::Revision(Box::new(record)))
        }
        Command::Rollout {
            action: RolloutAction::Approve,
            ..
        } => Err(ApiError::BadRequest(
            "approving is a command of its own: {\"type\": \"approve\", \"service\": ...}".into(),
        )),
        Command::Rollout { service, action } => {
            let origin = origin.forced(order.force);
            let status = parts.rollouts.command(&service, action, origin).await?;
            Ok(Answer::Rollout(Box::new(status)))
        }
        Command::Approve { .. } if order.force => Err(ApiError::BadRequest(
            "an approval takes no force: it is the gate".into(),
        )),
        Command::Approve { service } => {
            let approve = RolloutAction::Approve;
            let status = parts.rollouts.command(&service, approve, origin).await?;
            Ok(Answer::Rollout(Box::new(status)))
        }
        Command::Reload {} => reload(parts, origin, order.force).await.map(Answer::Reload),
    }
}

async fn reload(parts: &Parts, origin: Origin, force: bool) -> Result<ReloadResponse, ApiError> {
    let reason = match origin.reason.as_str() {
        "" => format!("reload requested by {}", origin.actor),
        why => format!("reload requested by {}: {why}", origin.actor),
    };
    parts
        .controller
        .reload(Origin::new("reload", reason).forced(force))
        .await
        .map_err(|err| match err {
            ReloadError::Config(_) => {
                ApiError::BadRequest(format!("reload rejected, nothing changed: {err}"))
            }
            ReloadError::Refused(_) => ApiError::Conflict(err.to_string()),
            ReloadError::Journal(_) | ReloadError::Stopped => ApiError::Internal(err.to_string()),
        })
}

/// Who and why, checked: one line each, so history stays readable.
fn origin(actor: String, reason: String) -> Result<Origin, ApiError> {
    if actor.is_empty() || actor.chars().count() > 64 || actor.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "actor must be 1 to 64 characters, without control characters".into(),
        ));
    }
    if reason.chars().count() > 1024 || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "reason must be one line of at most 1024 characters".into(),
        ));
    }
    Ok(Origin::new(actor, reason))
}
