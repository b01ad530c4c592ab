//! Progressive rollouts: the canary's share climbs through the configured steps, each held
//! until the guard has called the canary healthy, without a break, for the bake time; the
//! last step (100) promotes it. A bad verdict is the guard's to act on (abort + latch), and
//! the rollout then stops as "aborted". Inconclusive, frozen and paused hold the step. Every
//! step is a journaled revision with actor `rollout`; a change of routing by anyone else
//! pauses the rollout rather than fighting it.
//!
//! A step also waits for every `[[analysis]]` of the service to pass a run begun at that
//! step (`crate::analysis::step_hold`), and for its gate when it has one: an operator's
//! `ctl approve` (recorded as an `approved` revision) or a webhook that answers 2xx
//! (`gate`). Nothing to judge, an unreachable Prometheus or a silent webhook holds it.
//!
//! State (plan, step, status, bake so far) survives a restart in `state.dir/rollouts.json`
//! (see `store`): after a restart the bake of the step in force goes on from what was saved
//! last (at most a `BAKE_SLICE` is lost); after a resume it starts over. In a fleet the
//! state is shared and one instance drives each rollout (see `fleet`).
//!
//! One task, the driver, owns the rollouts: operators' commands reach it as messages, so a
//! requester that goes away never leaves a step made but not recorded. It uses the control
//! plane only through `RoutingControl`, and reads the guard's verdicts from its `Board`.

mod fleet;
mod gate;
mod live;
mod plan;
mod plant;
mod steps;
mod store;
#[cfg(test)]
mod tests;

pub use plan::{baked, decide, Approval, Decision, Evidence, Rollout, Status};
pub use store::ROLLOUTS_FILE;

use crate::config::RolloutSettings;
use crate::control::command::RolloutAction;
use crate::control::error::ControlError;
use crate::control::record::Origin;
use crate::control::RoutingControl;
use fleet::{FleetRollouts, Pushed};
use live::Live;
pub(crate) use plant::Plant;
pub use plant::Wired;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::Duration;
use steps::{
    abort_on_shadow, advance, approve, ask_approval, baked_for, check_can_run, check_shadowed,
    put_in_force,
};
use store::Store;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::time::Instant;

/// How often running rollouts look at their verdicts.
const TICK: Duration = Duration::from_millis(100);
/// How often the bake of a step is saved while it runs: what a restart or a new driver
/// may have to bake again.
pub const BAKE_SLICE: Duration = Duration::from_secs(1);

/// A rollout with what the running process knows of it, for status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The canary's percent at the step in force.
    pub percent: u32,
    /// Why a running rollout is not advancing right now (e.g. "frozen", "baking ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Every service's latest rollout.
pub struct Rollouts {
    store: Store,
    live: Mutex<BTreeMap<String, Live>>,
    /// The services whose rollout this instance drives, in a fleet (where it alone runs
    /// their analyses).
    driven: std::sync::Mutex<BTreeSet<String>>,
    /// Set in a fleet: the shared records and the leases.
    fleet: Option<FleetRollouts>,
}

impl Rollouts {
    /// Loads the rollouts an earlier run left in `dir`; running ones carry on.
    pub fn open(dir: &Path) -> Rollouts {
        Rollouts::open_in(dir, None)
    }

    /// `open`, in `fleet` when given: the shared records win over the local file once read.
    pub fn open_in(dir: &Path, fleet: Option<&crate::fleet::Fleet>) -> Rollouts {
        let (store, saved) = Store::open(dir);
        let live = saved
            .into_iter()
            .map(|rollout| {
                let mut entry = Live::new(rollout);
                entry.driving = fleet.is_none();
                (entry.rollout.service.clone(), entry)
            })
            .collect();
        Rollouts {
            store,
            live: Mutex::new(live),
            driven: std::sync::Mutex::default(),
            fleet: fleet.map(FleetRollouts::new),
        }
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
        action: RolloutAction,
        plan: Option<&RolloutSettings>,
        origin: Origin,
    ) -> Result<RolloutStatus, ControlError> {
        let mut live = self.live.lock().await;
        if let Some(fleet) = &self.fleet {
            fleet.pull(&mut live, true).await;
        }
        let routing = plant
            .routing(service)
            .ok_or_else(|| ControlError::NotFound(format!("no service {service:?}")))?;
        let who = match origin.reason.as_str() {
            "" => origin.actor.clone(),
            why => format!("{}: {why}", origin.actor),
        };
        match (action, live.get_mut(service)) {
            (RolloutAction::Start, Some(entry)) if entry.rollout.status.is_active() => {
                return Err(ControlError::Refused(format!(
                    "a rollout of {} is already {} at {}; pause or resume it",
                    entry.rollout.canary,
                    entry.rollout.status.label(),
                    entry.rollout.position()
                )));
            }
            (RolloutAction::Start, _) => {
                let plan = plan.ok_or_else(|| {
                    ControlError::Refused(format!(
                        "{service} has no rollout configured: add [services.{service}.rollout] with steps and bake"
                    ))
                })?;
                let note = format!("started by {who}");
                let mut rollout = Rollout::with_gates(
                    service,
                    &plan.canary,
                    &plan.steps,
                    plan.gates.clone(),
                    plan.bake,
                    note.clone(),
                );
                if plan.shadow_first {
                    check_shadowed(plant, &rollout)?;
                    rollout = rollout.with_shadow_step();
                }
                let mut entry = Live::new(rollout);
                check_can_run(service, &entry.rollout, &routing)?;
                if let Some(old) = live.get_mut(service) {
                    entry.lease = old.lease.take();
                    entry.shared_revision = old.shared_revision;
                }
                self.claim(&mut entry).await?;
                put_in_force(plant, &mut entry, &routing, &note, origin.forced).await?;
                live.insert(service.to_string(), entry);
            }
            (RolloutAction::Pause, Some(entry)) if entry.rollout.status == Status::Running => {
                entry
                    .rollout
                    .set(Status::Paused, format!("paused by {who}"));
                entry.held = None;
            }
            (RolloutAction::Resume, Some(entry)) if entry.rollout.status == Status::Paused => {
                check_can_run(service, &entry.rollout, &routing)?;
                self.claim(entry).await?;
                let note = format!("resumed by {who}");
                put_in_force(plant, entry, &routing, &note, origin.forced).await?;
                entry.rollout.set(Status::Running, note);
                entry.step_begins();
            }
            (RolloutAction::Approve, entry) => {
                let entry = entry
                    .filter(|e| e.rollout.status.is_active())
                    .ok_or_else(|| {
                        ControlError::Refused(format!(
                            "{service}: no rollout is running: nothing to approve"
                        ))
                    })?;
                approve(plant, entry, origin).await?;
            }
            (action, entry) => {
                let verb = action.verb();
                let state = entry.map_or("there is no rollout".to_string(), |entry| {
                    format!(
                        "the rollout is {} ({})",
                        entry.rollout.status.label(),
                        entry.rollout.note
                    )
                });
                return Err(ControlError::Refused(format!(
                    "{service}: nothing to {verb}: {state}"
                )));
            }
        }
        let entry = live
            .get_mut(service)
            .ok_or_else(|| ControlError::NotRecorded("rollout vanished".into()))?;
        if let Some(fleet) = &self.fleet {
            match fleet.push(entry).await {
                Ok(Pushed::Stored) => {}
                Ok(Pushed::Theirs) => {
                    return Err(ControlError::Refused(format!(
                    "{service}: the rollout changed on another instance meanwhile ({}): look again",
                    entry.rollout.note
                )))
                }
                Err(err) => {
                    entry.dirty = true;
                    tracing::warn!(%service, %err, "rollout not written to the fleet's shared state yet");
                }
            }
        }
        let status = entry.status();
        self.save(&live).await.map_err(|err| {
            ControlError::NotRecorded(format!(
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
        if let Some(fleet) = &self.fleet {
            fleet.pull(&mut live, false).await;
            fleet.lead(&mut live).await;
        }
        let mut changed = false;
        for (service, entry) in live.iter_mut() {
            let status = entry.rollout.status;
            // Another instance drives it (a paused one anyone may mark aborted or done).
            if !status.is_active() || (status == Status::Running && !entry.driving) {
                continue;
            }
            let routing = plant.routing(service);
            if std::mem::take(&mut entry.took_over) {
                if let Some(routing) = &routing {
                    entry.recognise_step_made(routing);
                }
            }
            let verdict = entry.credited(plant.verdict(service));
            let shadow = plant.shadow(service);
            let evidence = Evidence {
                verdict: verdict.as_ref(),
                analysis: match entry.rollout.in_shadow_step() {
                    true => None,
                    false => {
                        plant.analysis_hold(service, &entry.rollout.canary, entry.step_started)
                    }
                },
                shadow: shadow.as_ref(),
            };
            let now = Instant::now();
            let decision = decide(
                &entry.rollout,
                entry.step_started,
                routing.as_ref(),
                evidence,
                now,
            );
            match decision {
                Decision::Hold(held) => {
                    entry.held = held;
                    if status == Status::Running {
                        entry.note_bake(verdict.as_ref(), now);
                    }
                }
                // `decide` advances only on live routing; a driver whose lease ran out
                // since it last looked leaves the step to the next.
                Decision::Advance(next) => {
                    if let (Some(routing), true) = (routing, entry.still_driving()) {
                        let why = baked_for(&entry.rollout);
                        entry.dirty |= advance(plant, entry, &routing.stable, next, why).await;
                    }
                }
                Decision::ShadowPassed(why) => {
                    if let (Some(routing), true) = (routing, entry.still_driving()) {
                        entry.dirty |= advance(plant, entry, &routing.stable, 1, why).await;
                    }
                }
                Decision::ShadowFailed(why) => {
                    if let (Some(report), true) = (&shadow, entry.still_driving()) {
                        entry.dirty |= abort_on_shadow(plant, entry, report, why).await;
                    }
                }
                Decision::AwaitApproval => {
                    entry.held = Some(format!(
                        "waiting for approval: switchyard ctl approve {service}"
                    ));
                    entry.note_bake(verdict.as_ref(), now);
                    let step = entry.rollout.step;
                    if entry.rollout.approval_asked != Some(step) && entry.still_driving() {
                        ask_approval(plant, entry).await;
                    }
                }
                Decision::AskGate(next) => {
                    if let (Some(routing), true) = (routing, entry.still_driving()) {
                        if gate::opens(entry, now).await {
                            let why = baked_for(&entry.rollout);
                            entry.dirty |= advance(plant, entry, &routing.stable, next, why).await;
                        }
                    }
                }
                Decision::Become(status, note) => {
                    tracing::warn!(service = %service, status = status.label(), "rollout {}", note);
                    entry.rollout.set(status, note);
                    entry.held = None;
                    entry.dirty = true;
                }
            }
            changed |= entry.dirty;
        }
        if changed {
            if let Err(err) = self.save(&live).await {
                tracing::error!(file = %self.store.path().display(), error = %err, "rollout state not saved");
            }
        }
        match &self.fleet {
            Some(fleet) => {
                for entry in live.values_mut().filter(|e| e.dirty) {
                    if let Err(err) = fleet.push(entry).await {
                        tracing::debug!(service = %entry.rollout.service, %err, "rollout not written to the fleet's shared state yet");
                    }
                }
            }
            None => live.values_mut().for_each(|e| e.dirty = false),
        }
        if self.fleet.is_some() {
            let driven = live
                .iter()
                .filter(|(_, e)| e.driving && e.rollout.status == Status::Running)
                .map(|(service, _)| service.clone())
                .collect();
            *self.driven.lock().unwrap_or_else(PoisonError::into_inner) = driven;
        }
    }

    /// Whether this instance runs `service`'s analyses: alone always; in a fleet, where its
    /// rollout is driven.
    pub fn drives(&self, service: &str) -> bool {
        self.fleet.is_none()
            || self
                .driven
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(service)
    }

    /// In a fleet, takes the service's rollout lease for an operator's start or resume here.
    async fn claim(&self, entry: &mut Live) -> Result<(), ControlError> {
        match &self.fleet {
            Some(fleet) => fleet
                .claim(entry)
                .await
                .map_err(|why| ControlError::Refused(format!("{}: {why}", entry.rollout.service))),
            None => Ok(()),
        }
    }

    async fn save(&self, live: &BTreeMap<String, Live>) -> std::io::Result<()> {
        let rollouts = live.values().map(|l| l.rollout.clone()).collect();
        self.store.save(rollouts).await
    }
}

/// An operator's rollout command on its way to the driver.
struct Order {
    service: String,
    action: RolloutAction,
    origin: Origin,
    reply: oneshot::Sender<Result<RolloutStatus, ControlError>>,
}

/// What the rest of the proxy holds of the rollouts: their status, and a way to command
/// the driver.
#[derive(Clone)]
pub struct RolloutHandle {
    rollouts: Arc<Rollouts>,
    orders: mpsc::Sender<Order>,
}

impl RolloutHandle {
    /// Runs `rollout SERVICE start|pause|resume` in the driver and returns its answer.
    /// Dropping this future never leaves a command half-done.
    pub async fn command(
        &self,
        service: &str,
        action: RolloutAction,
        origin: Origin,
    ) -> Result<RolloutStatus, ControlError> {
        let (reply, answer) = oneshot::channel();
        let order = Order {
            service: service.to_string(),
            action,
            origin,
            reply,
        };
        self.orders
            .send(order)
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Every service's latest rollout.
    pub async fn all(&self) -> BTreeMap<String, RolloutStatus> {
        self.rollouts.all().await
    }

    /// Whether this instance runs `service`'s analyses (see `Rollouts::drives`).
    pub fn drives(&self, service: &str) -> bool {
        self.rollouts.drives(service)
    }
}

/// Starts the driver over the rollouts saved in `dir` (and, in a fleet, shared): it looks at every running rollout
/// each `TICK`, and runs operators' commands, until `stop` turns true.
pub fn spawn<C: RoutingControl + 'static>(
    dir: &Path,
    fleet: Option<&crate::fleet::Fleet>,
    plant: Wired<C>,
    mut stop: watch::Receiver<bool>,
) -> RolloutHandle {
    let rollouts = Arc::new(Rollouts::open_in(dir, fleet));
    let (orders, mut received) = mpsc::channel::<Order>(64);
    let driven = rollouts.clone();
    tokio::spawn(async move {
        loop {
            let order = tokio::select! {
                _ = tokio::time::sleep(TICK) => None,
                Some(order) = received.recv() => Some(order),
                _ = stop.wait_for(|&stop| stop) => return,
            };
            let Some(order) = order else {
                driven.tick(&plant).await;
                continue;
            };
            let status = match plant.control.service(&order.service) {
                Ok(service) => {
                    let plan = service.rollout.as_ref();
                    driven
                        .command(&plant, &order.service, order.action, plan, order.origin)
                        .await
                }
                Err(err) => Err(err),
            };
            let _ = order.reply.send(status);
        }
    });
    RolloutHandle { rollouts, orders }
}
