//! A step's webhook gate: once the step has baked (and its analyses and approval are in),
//! the rollout POSTs the step to the gate's URL and goes on only on a 2xx within the gate's
//! timeout. Anything else holds the step, says why, and asks again after `RETRY`.
//!
//! The POST runs in a task of its own, so the driver never waits on a receiver: each look
//! only checks whether the answer is in.

use super::Live;
use crate::analysis::client::exchange;
use crate::config::WebhookGate;
use bytes::Bytes;
use http::Method;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a gate that did not say yes is left before it is asked again.
pub const RETRY: Duration = Duration::from_secs(2);

/// A question put to a step's gate, whose answer is on its way.
pub(super) struct Asking {
    step: usize,
    answer: JoinHandle<Result<(), String>>,
}

/// True when the gate of `entry`'s step has said yes; otherwise asks it (when due) and
/// says in `held` what the rollout waits for.
pub(super) async fn opens(entry: &mut Live, now: Instant) -> bool {
    let Some(gate) = entry.rollout.gate().and_then(|g| g.webhook.clone()) else {
        return true;
    };
    let step = entry.rollout.step;
    match entry.asking.take() {
        Some(asking) if asking.step == step && asking.answer.is_finished() => {
            let answer = asking
                .answer
                .await
                .unwrap_or_else(|err| Err(format!("the question was lost ({err})")));
            return answered(entry, &gate, answer, now);
        }
        Some(asking) if asking.step == step => {
            entry.asking = Some(asking);
            asking_again(entry, &gate);
            return false;
        }
        // An answer about another step is no answer; its task ends by its timeout.
        _ => {}
    }
    if entry.gate_retry_at.is_some_and(|at| now < at) {
        return false;
    }
    let body = serde_json::json!({
        "event": "rollout_gate",
        "service": entry.rollout.service,
        "canary": entry.rollout.canary,
        "step": step + 1,
        "steps": entry.rollout.steps.len(),
        "percent": entry.rollout.percent(),
        "next_percent": entry.rollout.steps.get(step + 1),
    });
    entry.asking = Some(Asking {
        step,
        answer: tokio::spawn(ask(gate.clone(), Bytes::from(body.to_string()))),
    });
    asking_again(entry, &gate);
    false
}

/// Says the gate is being asked, unless what it answered last still says more.
fn asking_again(entry: &mut Live, gate: &WebhookGate) {
    let last_answer = entry
        .held
        .as_ref()
        .is_some_and(|held| held.starts_with("webhook gate "));
    if !last_answer {
        entry.held = Some(format!("asking the webhook gate {}", gate.url));
    }
}

/// One POST, bounded by the gate's timeout: `Ok` on a 2xx.
async fn ask(gate: WebhookGate, body: Bytes) -> Result<(), String> {
    let timeout = Duration::from_millis(gate.timeout_ms);
    let asked = async {
        let url = gate.url.parse().map_err(|_| "not a URL".to_string())?;
        let (status, _) = exchange(Method::POST, &url, body).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("answered {status}")),
        }
    };
    tokio::time::timeout(timeout, asked)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

fn answered(
    entry: &mut Live,
    gate: &WebhookGate,
    answer: Result<(), String>,
    now: Instant,
) -> bool {
    let service = &entry.rollout.service;
    let why = match answer {
        Ok(()) => {
            tracing::info!(%service, url = %gate.url, "webhook gate said yes");
            entry.gate_retry_at = None;
            return true;
        }
        Err(why) => why,
    };
    let held = format!(
        "webhook gate {}: {why}; asked again every {}s",
        gate.url,
        RETRY.as_secs()
    );
    if entry.held.as_ref() != Some(&held) {
        tracing::warn!(%service, "rollout held: {held}");
    }
    entry.held = Some(held);
    entry.gate_retry_at = Some(now + RETRY);
    false
}
