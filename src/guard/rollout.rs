//! Progressive rollouts: the canary's share climbs through the configured steps, each held
//! until the guard has called the canary healthy, without a break, for the bake time; the
//! last step (100) promotes it. A bad verdict is the guard's to act on (abort + latch), and
//! the rollout then stops as "aborted". Inconclusive, frozen and paused hold the step. Every
//! step is a journaled revision with actor `rollout`; a change of routing by anyone else
//! pauses the rollout rather than fighting it.
//!
//! State (plan, step, status) survives a restart in `state.dir/rollouts.json` (see `store`).
//! After a restart or a resume the bake of the step in force starts over.

mod plan;
mod store;
#[cfg(test)]
mod tests;

pub use plan::{decide, Decision, Rollout, Status};
pub use store::ROLLOUTS_FILE;

use crate::config::RolloutSettings;
use crate::control::api::{ApiError, RolloutStatus};
use crate::control::change::Change;
use crate::control::record::Origin;
use crate::control::Controller;
use crate::guard::watch::VersionVerdict;
use crate::routing::ServiceState;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

/// How often running rollouts look at their verdicts.
const TICK: Duration = Duration::from_millis(100);

/// What the driver needs from the proxy: the controller in production, a fake in tests.
pub(crate) trait Plant: Sync {
    fn routing(&self, service: &str) -> impl Future<Output = Option<ServiceState>> + Send;
    fn verdict(&self, service: &str) -> Option<VersionVerdict>;
    /// Journals and applies a change; returns its revision.
    fn change(
        &self,
        service: &str,
        change: Change,
        origin: Origin,
    ) -> impl Future<Output = Result<u64, ApiError>> + Send;
}

impl Plant for Controller {
    async fn routing(&self, service: &str) -> Option<ServiceState> {
        Controller::routing(self, service).await
    }

    fn verdict(&self, service: &str) -> Option<VersionVerdict> {
        self.board.get(service)
    }

    async fn change(&self, service: &str, change: Change, origin: Origin) -> Result<u64, ApiError> {
        self.apply(service, change, origin)
            .await
            .map(|record| record.revision)
    }
}

/// `rollout SERVICE start|pause|resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
}

impl Action {
    pub fn parse(action: &str) -> Result<Action, ApiError> {
        match action {
            "start" => Ok(Action::Start),
            "pause" => Ok(Action::Pause),
            "resume" => Ok(Action::Resume),
            other => Err(ApiError::NotFound(format!(
                "no rollout action {other:?} (start, pause, resume)"
            ))),
        }
    }
}

/// A rollout in memory: its record plus what only the running process knows.
struct Live {
    rollout: Rollout,
    /// When the step in force took effect (or the rollout was resumed or reloaded).
    step_started: Instant,
    /// Why a running rollout is not advancing, as of its last look.
    held: Option<String>,
}

impl Live {
    fn new(rollout: Rollout) -> Live {
        Live {
            rollout,
            step_started: Instant::now(),
            held: None,
        }
    }

    fn status(&self) -> RolloutStatus {
        RolloutStatus {
            percent: self.rollout.percent(),
            held: self.held.clone(),
            rollout: self.rollout.clone(),
        }
    }
}

/// Every service's latest rollout.
pub struct Rollouts {
    store: Store,
    live: Mutex<BTreeMap<String, Live>>,
}

impl Rollouts {
    /// Loads the rollouts an earlier run left in `dir`; running ones carry on.
    pub fn open(dir: &Path) -> Rollouts {
        let (store, saved) = Store::open(dir);
        let live = saved
            .into_iter()
            .map(|rollout| (rollout.service.clone(), Live::new(rollout)))
            .collect();
        Rollouts {
            store,
            live: Mutex::new(live),
        }
    }

    pub async fn status(&self, service: &str) -> Option<RolloutStatus> {
        self.live.lock().await.get(service).map(Live::status)
    }

    pub async fn all(&self) -> BTreeMap<String, RolloutStatus> {
        let live = self.live.lock().await;
        live.iter()
            .map(|(name, entry)| (name.clone(), entry.status()))
            .collect()
    }

    /// Runs an operator's command. `plan` is the service's configured rollout (for start).
    pub(crate) async fn command(
        &self,
        plant: &impl Plant,
        service: &str,
        action: Action,
        plan: Option<&RolloutSettings>,
        origin: Origin,
    ) -> Result<RolloutStatus, ApiError> {
        let mut live = self.live.lock().await;
        let routing = plant
            .routing(service)
            .await
            .ok_or_else(|| ApiError::NotFound(format!("no service {service:?}")))?;
        let who = match origin.reason.as_str() {
            "" => origin.actor.clone(),
            why => format!("{}: {why}", origin.actor),
        };
        match (action, live.get_mut(service)) {
            (Action::Start, Some(entry)) if entry.rollout.status.is_active() => {
                return Err(ApiError::Conflict(format!(
                    "a rollout of {} is already {} at {}; pause or resume it",
                    entry.rollout.canary,
                    entry.rollout.status.label(),
                    entry.rollout.position()
                )));
            }
            (Action::Start, _) => {
                let plan = plan.ok_or_else(|| {
                    ApiError::Conflict(format!(
                        "{service} has no rollout configured: add [services.{service}.rollout] with steps and bake"
                    ))
                })?;
                let note = format!("started by {who}");
                let mut entry = Live::new(Rollout::new(
                    service,
                    &plan.canary,
                    &plan.steps,
                    plan.bake,
                    note.clone(),
                ));
                check_can_run(service, &entry.rollout, &routing)?;
                put_in_force(plant, &mut entry, &routing, &note).await?;
                live.insert(service.to_string(), entry);
            }
            (Action::Pause, Some(entry)) if entry.rollout.status == Status::Running => {
                entry
                    .rollout
                    .set(Status::Paused, format!("paused by {who}"));
                entry.held = None;
            }
            (Action::Resume, Some(entry)) if entry.rollout.status == Status::Paused => {
                check_can_run(service, &entry.rollout, &routing)?;
                let note = format!("resumed by {who}");
                put_in_force(plant, entry, &routing, &note).await?;
                entry.rollout.set(Status::Running, note);
                entry.step_started = Instant::now();
            }
            (action, entry) => {
                let verb = if action == Action::Pause {
                    "pause"
                } else {
                    "resume"
                };
                let state = entry.map_or("there is no rollout".to_string(), |entry| {
                    format!(
                        "the rollout is {} ({})",
                        entry.rollout.status.label(),
                        entry.rollout.note
                    )
                });
                return Err(ApiError::Conflict(format!(
                    "{service}: nothing to {verb}: {state}"
                )));
            }
        }
        let status = live
            .get(service)
            .map(Live::status)
            .ok_or_else(|| ApiError::Internal("rollout vanished".into()))?;
        self.save(&live).await.map_err(|err| {
            ApiError::Internal(format!(
                "rollout {} in memory but its state was not saved ({}: {err}); it is lost on restart",
                status.rollout.status.label(),
                self.store.path().display()
            ))
        })?;
        Ok(status)
    }

    /// One look at every active rollout: advance, hold, or change status.
    pub(crate) async fn tick(&self, plant: &impl Plant) {
        let mut live = self.live.lock().await;
        let mut changed = false;
        for (service, entry) in live.iter_mut() {
            if !entry.rollout.status.is_active() {
                continue;
            }
            let routing = plant.routing(service).await;
            let verdict = plant.verdict(service);
            let decision = decide(
                &entry.rollout,
                entry.step_started,
                routing.as_ref(),
                verdict.as_ref(),
                Instant::now(),
            );
            match decision {
                Decision::Hold(held) => entry.held = held,
                Decision::Advance(next) => {
                    // `decide` advances only on live routing.
                    if let Some(routing) = routing {
                        changed |= advance(plant, entry, &routing.stable, next).await;
                    }
                }
                Decision::Become(status, note) => {
                    tracing::warn!(service = %service, status = status.label(), "rollout {}", note);
                    entry.rollout.set(status, note);
                    entry.held = None;
                    changed = true;
                }
            }
        }
        if changed {
            if let Err(err) = self.save(&live).await {
                tracing::error!(file = %self.store.path().display(), error = %err, "rollout state not saved");
            }
        }
    }

    async fn save(&self, live: &BTreeMap<String, Live>) -> std::io::Result<()> {
        let rollouts = live.values().map(|l| l.rollout.clone()).collect();
        self.store.save(rollouts).await
    }
}

/// Refuses to run a rollout whose canary is already stable, or on a latched service.
fn check_can_run(service: &str, rollout: &Rollout, routing: &ServiceState) -> Result<(), ApiError> {
    if routing.stable == rollout.canary {
        return Err(ApiError::Conflict(format!(
            "{} is already stable on {service}: nothing to roll out",
            rollout.canary
        )));
    }
    if routing.latched {
        return Err(ApiError::Conflict(format!(
            "{service} is latched after an abort (all traffic on {}); lift it with `resume` first",
            routing.stable
        )));
    }
    Ok(())
}

/// Sets the routing of the rollout's current step unless it is already in force.
async fn put_in_force(
    plant: &impl Plant,
    entry: &mut Live,
    routing: &ServiceState,
    why: &str,
) -> Result<(), ApiError> {
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
        .change(&rollout.service, change, Origin::new("rollout", reason))
        .await?;
    entry.rollout.revision = Some(revision);
    entry.step_started = Instant::now();
    Ok(())
}

/// Puts step `next` in force (the promotion at the last step); false if it was refused.
async fn advance(plant: &impl Plant, entry: &mut Live, stable: &str, next: usize) -> bool {
    let rollout = &entry.rollout;
    let last = next + 1 >= rollout.steps.len();
    let baked = format!("after {:.1}s healthy", rollout.bake().as_secs_f64());
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
            entry.step_started = Instant::now();
            entry.held = None;
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

/// `rollout SERVICE start|pause|resume` against the running controller.
pub async fn command(
    controller: &Controller,
    service: &str,
    action: Action,
    origin: Origin,
) -> Result<RolloutStatus, ApiError> {
    let config = controller.config().await;
    let plan = config
        .service(service)
        .ok_or_else(|| crate::control::unknown_service(&config, service))?
        .rollout
        .as_ref();
    controller
        .rollouts
        .command(controller, service, action, plan, origin)
        .await
}

/// The driver: looks at every running rollout each `TICK` until `stop` turns true.
pub async fn run(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|&stop| stop) => return,
        }
        controller.rollouts.tick(controller.as_ref()).await;
    }
}
