//! A rollout's state and the one decision it makes on each look, as a pure function of
//! what it is shown: the live routing, the guard's verdict and the time.

use crate::config::StepGate;
use crate::control::command::Change;
use crate::control::record::rfc3339_millis;
use crate::guard::watch::VersionVerdict;
use crate::routing::ServiceState;
use crate::telemetry::shadow::{ShadowReport, ShadowVerdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Paused,
    /// The service was cut back (latched) or went away: over, never resumed.
    Aborted,
    /// The canary was promoted.
    Done,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Aborted => "aborted",
            Status::Done => "done",
        }
    }

    /// Running or paused: the rollout still owns the service's canary weight.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// One service's rollout, as kept in `rollouts.json` and shown in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub service: String,
    pub canary: String,
    /// The plan it was started with: a reload changes the next rollout, not this one.
    pub steps: Vec<u32>,
    pub bake_ms: u64,
    /// Index into `steps` of the step in force.
    pub step: usize,
    pub status: Status,
    /// When the status or step last changed (RFC 3339, unix ms), and why.
    pub since: String,
    pub since_ms: u64,
    pub note: String,
    /// The last revision the rollout made.
    pub revision: Option<u64>,
    /// How long the step in force had baked (healthy without a break) when last saved:
    /// a restarted or new driver continues the bake from here.
    #[serde(default)]
    pub baked_ms: u64,
    /// What must say yes before the rollout leaves a step (the steps that have a gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<StepGate>,
    /// The operator's approval of a step that waits for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
    /// The step whose wait for approval was recorded (an `approval_needed` revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_asked: Option<usize>,
    /// `steps[0]` is a shadow step (0%): the canary gets only copies of live requests until
    /// its shadow check passes (`shadow_first`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_first: bool,
}

/// `ctl approve`: who let the rollout leave which step, why, and its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub step: usize,
    pub actor: String,
    pub reason: String,
    pub revision: u64,
}

/// What the rollout should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing; for a running rollout, why it is not advancing.
    Hold(Option<String>),
    /// Move to this step (the last one is the promotion).
    Advance(usize),
    /// Move to this step once the step's webhook gate answers 2xx.
    AskGate(usize),
    /// Hold until an operator approves the step in force (`ctl approve`).
    AwaitApproval,
    /// The rollout changes status on its own (aborted, done, or paused), with the reason.
    Become(Status, String),
    /// The shadow step's check passed (what it found): on to the first step with users.
    ShadowPassed(String),
    /// The shadow step's check failed (the field and a sample): abort, before any user.
    ShadowFailed(String),
}

impl Rollout {
    pub fn new(
        service: &str,
        canary: &str,
        steps: &[u32],
        bake: Duration,
        note: String,
    ) -> Rollout {
        Rollout::with_gates(service, canary, steps, Vec::new(), bake, note)
    }

    pub fn with_gates(
        service: &str,
        canary: &str,
        steps: &[u32],
        gates: Vec<StepGate>,
        bake: Duration,
        note: String,
    ) -> Rollout {
        let (since, since_ms) = now();
        Rollout {
            service: service.to_string(),
            canary: canary.to_string(),
            steps: steps.to_vec(),
            bake_ms: bake.as_millis() as u64,
            step: 0,
            status: Status::Running,
            since,
            since_ms,
            note,
            revision: None,
            baked_ms: 0,
            gates,
            approved: None,
            approval_asked: None,
            shadow_first: false,
        }
    }

    /// The same plan with a shadow step (0%) before its first step.
    pub fn with_shadow_step(mut self) -> Rollout {
        if !self.shadow_first {
            self.steps.insert(0, 0);
            self.gates.iter_mut().for_each(|gate| gate.step += 1);
            self.shadow_first = true;
        }
        self
    }

    /// The step in force is the shadow step.
    pub fn in_shadow_step(&self) -> bool {
        self.shadow_first && self.step == 0
    }

    /// What the step in force waits for before the next one.
    pub fn gate(&self) -> Option<&StepGate> {
        self.gates.iter().find(|gate| gate.step == self.step)
    }

    /// The step in force needs an approval it has not had.
    pub fn awaits_approval(&self) -> bool {
        self.gate().is_some_and(|gate| gate.approve)
            && self.approved.as_ref().is_none_or(|a| a.step != self.step)
    }

    pub fn percent(&self) -> u32 {
        self.steps.get(self.step).copied().unwrap_or(0)
    }

    /// "step 2/6 (5%)", or "step 1/4 (shadow, no users)"
    pub fn position(&self) -> String {
        let share = match self.in_shadow_step() {
            true => "shadow, no users".to_string(),
            false => format!("{}%", self.percent()),
        };
        format!("step {}/{} ({share})", self.step + 1, self.steps.len())
    }

    pub fn bake(&self) -> Duration {
        Duration::from_millis(self.bake_ms)
    }

    pub fn set(&mut self, status: Status, note: String) {
        (self.since, self.since_ms) = now();
        self.status = status;
        self.note = note;
    }

    /// The change that puts `step` in force: the canary at its percent and the stable at
    /// the rest, or the promotion at 100.
    pub fn change_to(&self, step: usize, stable: &str) -> Change {
        match self.steps.get(step).copied() {
            Some(percent) if percent < 100 => Change::Weights {
                weights: BTreeMap::from([
                    (stable.to_string(), u64::from(100 - percent)),
                    (self.canary.clone(), u64::from(percent)),
                ]),
            },
            _ => Change::Promote {},
        }
    }

    /// True when `routing` sends the current step's share to the canary and the rest to
    /// stable (in any weight units).
    pub fn follows(&self, routing: &ServiceState) -> bool {
        let weight = |v: &str| u128::from(routing.weights.get(v).copied().unwrap_or(0));
        let total: u128 = routing.weights.values().map(|&w| u128::from(w)).sum();
        let canary = weight(&self.canary);
        canary + weight(&routing.stable) == total
            && canary * 100 == u128::from(self.percent()) * total
    }
}

/// What a rollout is shown on each look, besides its routing.
#[derive(Debug, Default)]
pub struct Evidence<'a> {
    /// The guard's verdict on the service's canary.
    pub verdict: Option<&'a VersionVerdict>,
    /// Why the analyses hold the step (none: every one passed a run at this step).
    pub analysis: Option<String>,
    /// What shadowing the service found (pooled over the fleet in one).
    pub shadow: Option<&'a ShadowReport>,
}

/// The decision for a rollout that has held its step since `step_started`.
pub fn decide(
    rollout: &Rollout,
    step_started: Instant,
    routing: Option<&ServiceState>,
    evidence: Evidence<'_>,
    now: Instant,
) -> Decision {
    if !rollout.status.is_active() {
        return Decision::Hold(None);
    }
    let Some(routing) = routing else {
        return Decision::Become(Status::Aborted, "the service left the config".into());
    };
    let canary = &rollout.canary;
    if routing.stable == *canary {
        return Decision::Become(Status::Done, format!("{canary} became stable"));
    }
    if routing.latched {
        return Decision::Become(
            Status::Aborted,
            format!(
                "cut back at {}: all traffic on {} (latched)",
                rollout.position(),
                routing.stable
            ),
        );
    }
    if rollout.status == Status::Paused {
        return Decision::Hold(None);
    }
    if !rollout.follows(routing) {
        return Decision::Become(
            Status::Paused,
            format!(
                "routing changed outside the rollout ({}); resume returns to {}",
                crate::control::describe(routing),
                rollout.position()
            ),
        );
    }
    if routing.frozen {
        return Decision::Hold(Some("frozen".into()));
    }
    if rollout.in_shadow_step() {
        return decide_shadow(canary, evidence.shadow);
    }
    let held = |why: String| Decision::Hold(Some(why));
    let Some(verdict) = evidence.verdict.filter(|v| v.version == *canary) else {
        return held(format!("waiting for the guard's first verdict on {canary}"));
    };
    let Some(baked) = baked(step_started, Some(verdict), now) else {
        return held(format!("guard: {} ({})", verdict.verdict, verdict.detail));
    };
    if baked < rollout.bake() {
        return held(format!(
            "baking: healthy for {:.1}s of {:.1}s",
            baked.as_secs_f64(),
            rollout.bake().as_secs_f64()
        ));
    }
    if let Some(why) = evidence.analysis {
        return held(why);
    }
    if rollout.awaits_approval() {
        return Decision::AwaitApproval;
    }
    match rollout.gate().and_then(|gate| gate.webhook.as_ref()) {
        Some(_) => Decision::AskGate(rollout.step + 1),
        None => Decision::Advance(rollout.step + 1),
    }
}

/// The shadow step's decision, on the shadow check alone: a canary without users has no
/// guard verdict, and needs none yet.
fn decide_shadow(canary: &str, shadow: Option<&ShadowReport>) -> Decision {
    let Some(report) = shadow.filter(|report| report.version == canary) else {
        return Decision::Hold(Some(format!(
            "shadow step: {canary} is not the service's shadow version ([shadow] version = {canary:?})"
        )));
    };
    let scope = report.scope();
    match &report.verdict {
        ShadowVerdict::Inconclusive { reason } => Decision::Hold(Some(format!(
            "shadow step: too few samples yet ({reason}, {scope})"
        ))),
        ShadowVerdict::Pass => Decision::ShadowPassed(format!(
            "shadow check passed: {} of {} compared answers differed (noise {} of {}), {scope}",
            report.differing, report.compared, report.noise_differing, report.noise_compared
        )),
        ShadowVerdict::Fail { summary } => Decision::ShadowFailed(format!(
            "shadow check failed before any user traffic: {summary} ({scope})"
        )),
    }
}

/// How long the step in force has baked: healthy without a break since it took effect;
/// `None` while the guard does not call the canary healthy.
pub fn baked(
    step_started: Instant,
    verdict: Option<&VersionVerdict>,
    now: Instant,
) -> Option<Duration> {
    let healthy_since = verdict?.healthy_since?;
    Some(now.saturating_duration_since(healthy_since.max(step_started)))
}

fn now() -> (String, u64) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (rfc3339_millis(ms), ms)
}
