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
mod plan;
mod store;
#[cfg(test)]
mod tests;

pub use plan::{baked, decide, Approval, Decision, Evidence, Rollout, Status};
pub use store::ROLLOUTS_FILE;

use crate::analysis::AnalysisBoard;
use crate::config::RolloutSettings;
use crate::control::command::{Change, RolloutAction};
use crate::control::error::ControlError;
use crate::control::record::{ChangeKind, Origin};
use crate::control::RoutingControl;
use crate::dataplane::proxy::DataPlane;
use crate::guard::incident::{Cutback, IncidentLog};
use crate::guard::judge::Side;
use crate::guard::watch::{Board, VersionVerdict};
use crate::routing::ServiceState;
use crate::telemetry::shadow::ShadowReport;
use fleet::{FleetRollouts, Pushed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::Duration;
use store::Store;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::time::Instant;

/// How often running rollouts look at their verdicts.
const TICK: Duration = Duration::from_millis(100);
/// How often the bake of a step is saved while it runs: what a restart or a new driver
/// may have to bake again.
pub const BAKE_SLICE: Duration = Duration::from_secs(1);

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
        let record = self.control.change(service, Change::Abort, origin).await?;
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

/// A rollout in memory: its record plus what only the running process knows.
struct Live {
    rollout: Rollout,
    /// When the step in force took effect (or the rollout was resumed or reloaded).
    step_started: Instant,
    /// Why a running rollout is not advancing, as of its last look.
    held: Option<String>,
    /// When the bake was last saved.
    bake_saved: Instant,
    /// When this process took the bake over (the step began, or it was credited with a
    /// saved bake at a restart or a takeover).
    credited_at: Instant,
    /// Since then: the guard called the canary healthy, and then something else (a break
    /// that ends the credit).
    seen_healthy: bool,
    credit_broken: bool,
    /// Changed since last written where it is kept.
    dirty: bool,
    /// In a fleet: whether this instance drives it (holds its lease); always alone.
    driving: bool,
    /// This instance just began driving it.
    took_over: bool,
    /// In a fleet: its lease, and the KV revision of its shared record as last read or written.
    lease: Option<crate::fleet::Lease>,
    shared_revision: u64,
    /// The step's webhook gate: when it may be asked again after it did not say yes, and
    /// the question on its way.
    gate_retry_at: Option<Instant>,
    asking: Option<gate::Asking>,
}

impl Live {
    fn new(rollout: Rollout) -> Live {
        let mut live = Live {
            rollout,
            step_started: Instant::now(),
            held: None,
            bake_saved: Instant::now(),
            credited_at: Instant::now(),
            seen_healthy: false,
            credit_broken: false,
            dirty: false,
            driving: true,
            took_over: false,
            lease: None,
            shared_revision: 0,
            gate_retry_at: None,
            asking: None,
        };
        live.credit_bake();
        live
    }

    /// The step counts as in force since long enough ago to carry the bake saved last.
    fn credit_bake(&mut self) {
        let now = Instant::now();
        self.step_started = now
            .checked_sub(Duration::from_millis(self.rollout.baked_ms))
            .unwrap_or(now);
        self.bake_saved = now;
        self.credited_at = now;
        self.seen_healthy = false;
        self.credit_broken = false;
    }

    /// The verdict as the bake counts it. The bake saved before this process took it over
    /// (a restart, a new driver) stands until the guard breaks its healthy streak: a guard
    /// healthy since before the takeover continues it, and a first healthy streak after it
    /// (a fresh guard gathering evidence) adds to it; after a break the bake starts over.
    fn credited(&mut self, verdict: Option<VersionVerdict>) -> Option<VersionVerdict> {
        let mut verdict = verdict?;
        if verdict.version != self.rollout.canary {
            return Some(verdict);
        }
        match verdict.healthy_since {
            Some(_) => self.seen_healthy = true,
            None => self.credit_broken |= self.seen_healthy,
        }
        let credit = self
            .credited_at
            .saturating_duration_since(self.step_started);
        if let (Some(since), false) = (verdict.healthy_since, self.credit_broken) {
            verdict.healthy_since = Some(match since <= self.credited_at {
                true => self.step_started,
                false => since.checked_sub(credit).unwrap_or(since),
            });
        }
        Some(verdict)
    }

    /// Keeps the bake so far for a restart or a new driver: every `BAKE_SLICE`, and at once
    /// when the guard stops calling the canary healthy (the bake starts over).
    fn note_bake(&mut self, verdict: Option<&VersionVerdict>, now: Instant) {
        let Some(verdict) = verdict.filter(|v| v.version == self.rollout.canary) else {
            return;
        };
        let baked_ms =
            baked(self.step_started, Some(verdict), now).map_or(0, |d| d.as_millis() as u64);
        let broken = baked_ms == 0 && self.rollout.baked_ms != 0;
        let due = baked_ms > 0 && now.saturating_duration_since(self.bake_saved) >= BAKE_SLICE;
        if broken || due {
            self.rollout.baked_ms = baked_ms;
            self.bake_saved = now;
            self.dirty = true;
        }
    }

    /// The step in force starts its bake now.
    fn step_begins(&mut self) {
        self.rollout.baked_ms = 0;
        self.credit_bake();
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

/// Refuses to run a rollout whose canary is already stable, or on a latched service.
fn check_can_run(
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
fn check_shadowed(plant: &impl Plant, rollout: &Rollout) -> Result<(), ControlError> {
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
async fn put_in_force(
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
async fn approve(plant: &impl Plant, entry: &mut Live, origin: Origin) -> Result<(), ControlError> {
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
async fn ask_approval(plant: &impl Plant, entry: &mut Live) {
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
fn baked_for(rollout: &Rollout) -> String {
    format!("after {:.1}s healthy", rollout.bake().as_secs_f64())
}

/// Ends the rollout whose shadow step failed (abort revision and incident); false while
/// the abort could not be made (the next look tries again).
async fn abort_on_shadow(
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
async fn advance(
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
