//! `--wait-fleet`: after a change is acknowledged, wait until every live member of the
//! fleet reports it applied.

use super::client::{AdminClient, ClientError};
use crate::fleet::FleetStatus;
use std::time::{Duration, Instant};

/// Between two looks at the members.
const POLL: Duration = Duration::from_millis(5);

/// Waits up to `limit` until every live member has applied what this instance applied when
/// it acknowledged the change (a revision at least the change's own). `Ok`: one line saying
/// so; `ClientError::Failed`: one line naming the members that lag.
pub async fn wait(client: &AdminClient, limit: Duration) -> Result<String, ClientError> {
    let started = Instant::now();
    // The instance applied the change before it answered: its own revision covers it.
    let target = client.fleet().await?.applied;
    loop {
        let fleet = client.fleet().await?;
        if let Some(problem) = unreachable(&fleet) {
            return Err(ClientError::Failed(format!(
                "--wait-fleet: cannot list the fleet's members ({problem}); the change is recorded here\n"
            )));
        }
        let lagging: Vec<String> = fleet
            .members
            .iter()
            .filter(|m| m.applied < target)
            .map(|m| format!("{} (at {})", m.instance, m.applied))
            .collect();
        if lagging.is_empty() {
            return Ok(format!(
                "fleet {}: all {} live member(s) applied revision {target} ({} ms)\n",
                fleet.fleet,
                fleet.members.len(),
                started.elapsed().as_millis()
            ));
        }
        if started.elapsed() >= limit {
            return Err(ClientError::Failed(format!(
                "fleet {}: revision {target} not applied within {}s by {}; the change is recorded in the fleet's log and they apply it when they catch up\n",
                fleet.fleet,
                limit.as_secs_f64(),
                lagging.join(", ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn unreachable(fleet: &FleetStatus) -> Option<String> {
    match (&fleet.problem, fleet.connected) {
        (Some(problem), _) => Some(problem.clone()),
        (None, false) => Some("NATS unreachable from this instance".into()),
        (None, true) => None,
    }
}
