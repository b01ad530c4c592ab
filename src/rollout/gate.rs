//! A step's webhook gate: once the step has baked (and its analyses and approval are in),
//! the rollout POSTs the step to the gate's URL and goes on only on a 2xx within the gate's
//! timeout. Anything else holds the step, says why, and asks again after `RETRY`.

use super::Live;
use crate::analysis::client::exchange;
use bytes::Bytes;
use http::Method;
use std::time::Duration;
use tokio::time::Instant;

/// How long a gate that did not say yes is left before it is asked again.
pub const RETRY: Duration = Duration::from_secs(2);

/// True when the gate of `entry`'s step said yes just now.
pub(super) async fn opens(entry: &mut Live, now: Instant) -> bool {
    if entry.gate_retry_at.is_some_and(|at| now < at) {
        return false;
    }
    let rollout = &entry.rollout;
    let Some(gate) = rollout.gate().and_then(|gate| gate.webhook.clone()) else {
        return true;
    };
    let body = serde_json::json!({
        "event": "rollout_gate",
        "service": rollout.service,
        "canary": rollout.canary,
        "step": rollout.step + 1,
        "steps": rollout.steps.len(),
        "percent": rollout.percent(),
        "next_percent": rollout.steps.get(rollout.step + 1),
    });
    let timeout = Duration::from_millis(gate.timeout_ms);
    let asked = async {
        let url = gate.url.parse().map_err(|_| "not a URL".to_string())?;
        let body = Bytes::from(body.to_string());
        let (status, _) = exchange(Method::POST, &url, body).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("answered {status}")),
        }
    };
    let why = match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(())) => {
            tracing::info!(service = %rollout.service, url = %gate.url, "webhook gate said yes");
            entry.gate_retry_at = None;
            return true;
        }
        Ok(Err(why)) => why,
        Err(_) => format!("no answer within {timeout:?}"),
    };
    let held = format!(
        "webhook gate {}: {why}; asked again every {}s",
        gate.url,
        RETRY.as_secs()
    );
    if entry.held.as_ref() != Some(&held) {
        tracing::warn!(service = %rollout.service, "rollout held: {held}");
    }
    entry.held = Some(held);
    entry.gate_retry_at = Some(Instant::now() + RETRY);
    false
}
