//! The rollout driver against a fake proxy, in paused tokio time: bake times are exact.

use super::*;
use crate::config::{Config, ServiceConfig};
use crate::control::command::Change;
use crate::control::promises::next_kept;
use crate::control::record::ChangeKind;
use crate::guard::judge::VerdictKind;
use crate::guard::watch::VersionVerdict;
use crate::routing::ServiceState;
use crate::telemetry::shadow::ShadowReport;
use std::sync::Mutex as StdMutex;

#[path = "shadow_step_tests.rs"]
mod shadow_step;
use tokio::time::advance;

const BAKE: Duration = Duration::from_secs(30);
const MS: Duration = Duration::from_millis(1);

/// The controller's rules (`next_kept`) over one service, with a verdict set by the test.
struct FakePlant {
    service: ServiceConfig,
    routing: StdMutex<ServiceState>,
    verdict: StdMutex<Option<VersionVerdict>>,
    changes: StdMutex<Vec<(Change, Origin)>>,
    analysis: StdMutex<Option<String>>,
    notes: StdMutex<Vec<(ChangeKind, Origin)>>,
    shadow: StdMutex<Option<ShadowReport>>,
    /// The summaries of the incidents a failed shadow step recorded.
    incidents: StdMutex<Vec<String>>,
}

impl Plant for FakePlant {
    fn routing(&self, _: &str) -> Option<ServiceState> {
        Some(self.routing.lock().unwrap().clone())
    }

    fn verdict(&self, _: &str) -> Option<VersionVerdict> {
        self.verdict.lock().unwrap().clone()
    }

    fn analysis_hold(&self, _: &str, _: &str, _: Instant) -> Option<String> {
        self.analysis.lock().unwrap().clone()
    }

    fn shadow(&self, _: &str) -> Option<ShadowReport> {
        self.shadow.lock().unwrap().clone()
    }

    async fn abort_on_shadow(
        &self,
        service: &str,
        _: &ShadowReport,
        summary: &str,
    ) -> Result<u64, ControlError> {
        let origin = Origin::new("rollout", summary.to_string());
        let revision = self.change(service, Change::Abort {}, origin).await?;
        self.incidents.lock().unwrap().push(summary.to_string());
        Ok(revision)
    }

    async fn note(&self, _: &str, kind: ChangeKind, origin: Origin) -> Result<u64, ControlError> {
        let mut notes = self.notes.lock().unwrap();
        notes.push((kind, origin));
        Ok(500 + notes.len() as u64)
    }

    async fn change(&self, _: &str, change: Change, origin: Origin) -> Result<u64, ControlError> {
        let mut routing = self.routing.lock().unwrap();
        *routing = next_kept(&self.service, &routing, &change, &[])?;
        let mut changes = self.changes.lock().unwrap();
        changes.push((change, origin));
        Ok(100 + changes.len() as u64)
    }
}

impl FakePlant {
    fn new() -> FakePlant {
        FakePlant::with_steps("[10, 50, 100]")
    }

    fn with_steps(steps: &str) -> FakePlant {
        FakePlant::with_config(steps, "")
    }

    /// `steps`, and `extra` added to the service's rollout section.
    fn with_config(steps: &str, extra: &str) -> FakePlant {
        let text = r#"
[proxy]
listen = "127.0.0.1:0"
[services.shop]
stable = "blue"
weights = { blue = 100 }
[services.shop.rollout]
steps = STEPS
bake = "30s"
EXTRA
[services.shop.versions.blue]
endpoints = ["127.0.0.1:1"]
[services.shop.versions.canary]
endpoints = ["127.0.0.1:2"]
"#
        .replace("STEPS", steps)
        .replace("EXTRA", extra);
        let config = Config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let service = config.services[0].clone();
        FakePlant {
            routing: StdMutex::new(ServiceState {
                stable: "blue".into(),
                weights: service.weights.clone(),
                latched: false,
                frozen: false,
                ..ServiceState::default()
            }),
            service,
            verdict: StdMutex::new(None),
            changes: StdMutex::new(Vec::new()),
            analysis: StdMutex::new(None),
            notes: StdMutex::new(Vec::new()),
            shadow: StdMutex::new(None),
            incidents: StdMutex::new(Vec::new()),
        }
    }

    fn plan(&self) -> RolloutSettings {
        self.service.rollout.clone().unwrap()
    }

    /// The canary's weight (the stable's is 100 minus it in every step).
    fn canary(&self) -> u64 {
        let routing = self.routing.lock().unwrap();
        routing.weights.get("canary").copied().unwrap_or(0)
    }

    fn stable(&self) -> String {
        self.routing.lock().unwrap().stable.clone()
    }

    fn changes(&self) -> usize {
        self.changes.lock().unwrap().len()
    }

    fn last_change(&self) -> (Change, Origin) {
        self.changes.lock().unwrap().last().unwrap().clone()
    }

    fn edit(&self, edit: impl FnOnce(&mut ServiceState)) {
        edit(&mut self.routing.lock().unwrap());
    }

    fn healthy_since(&self, since: Instant) {
        *self.verdict.lock().unwrap() = Some(verdict(VerdictKind::Healthy, Some(since)));
    }

    fn inconclusive(&self) {
        *self.verdict.lock().unwrap() = Some(verdict(VerdictKind::Inconclusive, None));
    }
}

fn verdict(verdict: VerdictKind, healthy_since: Option<Instant>) -> VersionVerdict {
    VersionVerdict {
        version: "canary".into(),
        verdict,
        detail: "test".into(),
        log_likelihood_ratio: 0.0,
        healthy_since,
    }
}

async fn started(plant: &FakePlant) -> (tempfile::TempDir, Rollouts) {
    let dir = tempfile::tempdir().unwrap();
    let rollouts = Rollouts::open(dir.path());
    let plan = plant.plan();
    let origin = Origin::new("alice", "ship it");
    let status = rollouts
        .command(plant, "shop", RolloutAction::Start, Some(&plan), origin)
        .await
        .unwrap();
    assert_eq!(
        (status.rollout.status, status.percent),
        (Status::Running, 10)
    );
    (dir, rollouts)
}

async fn status(rollouts: &Rollouts) -> RolloutStatus {
    rollouts.all().await.remove("shop").unwrap()
}

fn held(status: &RolloutStatus) -> String {
    status.held.clone().unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn start_puts_the_first_step_in_force_as_a_rollout_revision() {
    let plant = FakePlant::new();
    let (dir, rollouts) = started(&plant).await;
    assert_eq!(plant.canary(), 10);
    assert_eq!(plant.routing.lock().unwrap().weights["blue"], 90);
    let (change, origin) = plant.last_change();
    assert!(matches!(change, Change::Weights { .. }));
    assert_eq!(origin.actor, "rollout");
    assert!(
        origin.reason.contains("started by alice: ship it"),
        "{origin:?}"
    );
    assert_eq!(status(&rollouts).await.rollout.revision, Some(101));
    let saved: Vec<Rollout> =
        serde_json::from_slice(&std::fs::read(dir.path().join(ROLLOUTS_FILE)).unwrap()).unwrap();
    assert_eq!(saved, vec![status(&rollouts).await.rollout]);
}

#[tokio::test(start_paused = true)]
async fn each_step_waits_a_full_bake_of_healthy_verdicts_and_the_last_promotes() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    rollouts.tick(&plant).await;
    assert!(held(&status(&rollouts).await).contains("waiting for the guard"));

    plant.healthy_since(Instant::now());
    advance(BAKE - MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10);
    assert!(held(&status(&rollouts).await).starts_with("baking: healthy for"));
    advance(MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
    assert_eq!(status(&rollouts).await.rollout.step, 1);

    // The verdict stayed healthy all along, yet the new step bakes from its own start.
    advance(BAKE - MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
    advance(MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.stable(), "canary");
    let (change, origin) = plant.last_change();
    assert_eq!(
        (change, origin.actor.as_str()),
        (Change::Promote {}, "rollout")
    );
    let done = status(&rollouts).await;
    assert_eq!((done.rollout.status, done.percent), (Status::Done, 100));

    let changes = plant.changes();
    advance(BAKE * 3).await;
    rollouts.tick(&plant).await;
    assert_eq!(
        plant.changes(),
        changes,
        "a finished rollout changed routing"
    );
}

#[tokio::test(start_paused = true)]
async fn inconclusive_holds_and_a_break_in_healthy_restarts_the_bake() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE - Duration::from_secs(1)).await;
    rollouts.tick(&plant).await;
    plant.inconclusive();
    for _ in 0..10 {
        advance(BAKE).await;
        rollouts.tick(&plant).await;
        assert_eq!(plant.canary(), 10, "advanced on an inconclusive verdict");
    }
    assert!(held(&status(&rollouts).await).contains("inconclusive"));

    plant.healthy_since(Instant::now());
    advance(BAKE - MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10, "healthiness before the break counted");
    advance(MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_freeze_holds_the_step_until_unfrozen() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    plant.edit(|routing| routing.frozen = true);
    advance(BAKE * 2).await;
    rollouts.tick(&plant).await;
    let frozen = status(&rollouts).await;
    assert_eq!(
        (frozen.rollout.status, held(&frozen)),
        (Status::Running, "frozen".into())
    );
    assert_eq!(plant.canary(), 10);
    plant.edit(|routing| routing.frozen = false);
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_cutback_stops_the_rollout_for_good() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE / 2).await;
    plant.edit(|routing| routing.latched = true);
    rollouts.tick(&plant).await;
    let aborted = status(&rollouts).await;
    assert_eq!(aborted.rollout.status, Status::Aborted);
    assert!(
        aborted.rollout.note.contains("cut back at step 1/3"),
        "{aborted:?}"
    );

    plant.edit(|routing| routing.latched = false);
    let changes = plant.changes();
    advance(BAKE * 2).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.changes(), changes, "an aborted rollout moved on");
    let resume = rollouts
        .command(
            &plant,
            "shop",
            RolloutAction::Resume,
            None,
            Origin::new("bob", ""),
        )
        .await;
    assert!(matches!(resume, Err(ControlError::Refused(m)) if m.contains("nothing to resume")));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_and_resume_bakes_the_step_afresh() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    let pause = |action| rollouts.command(&plant, "shop", action, None, Origin::new("bob", "look"));
    assert_eq!(
        pause(RolloutAction::Pause).await.unwrap().rollout.status,
        Status::Paused
    );
    assert!(matches!(
        pause(RolloutAction::Pause).await,
        Err(ControlError::Refused(_))
    ));
    advance(BAKE * 2).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10, "advanced while paused");

    let resumed = pause(RolloutAction::Resume).await.unwrap();
    assert_eq!(resumed.rollout.status, Status::Running);
    assert!(resumed.rollout.note.contains("resumed by bob: look"));
    advance(BAKE - MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10);
    advance(MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_change_by_hand_pauses_and_resume_returns_to_the_step() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    let by_hand = [("blue".to_string(), 70), ("canary".to_string(), 30)].into();
    plant
        .change(
            "shop",
            Change::Weights { weights: by_hand },
            Origin::new("carol", ""),
        )
        .await
        .unwrap();
    rollouts.tick(&plant).await;
    let paused = status(&rollouts).await;
    assert_eq!(paused.rollout.status, Status::Paused);
    assert!(paused
        .rollout
        .note
        .contains("routing changed outside the rollout"));
    rollouts
        .command(
            &plant,
            "shop",
            RolloutAction::Resume,
            None,
            Origin::new("carol", ""),
        )
        .await
        .unwrap();
    assert_eq!(plant.canary(), 10);
    let (_, origin) = plant.last_change();
    assert!(origin.reason.contains("resumed by carol"), "{origin:?}");
}

#[tokio::test(start_paused = true)]
async fn step_and_status_survive_a_restart_and_the_bake_starts_over() {
    let plant = FakePlant::new();
    let (dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
    let before = status(&rollouts).await;
    drop(rollouts);

    let reopened = Rollouts::open(dir.path());
    assert_eq!(status(&reopened).await.rollout, before.rollout);
    advance(BAKE - MS).await;
    reopened.tick(&plant).await;
    assert_eq!(plant.canary(), 50, "the bake before the restart counted");
    advance(MS).await;
    reopened.tick(&plant).await;
    assert_eq!(plant.stable(), "canary");
}

#[tokio::test(start_paused = true)]
async fn start_refuses_what_it_cannot_roll_out_and_changes_nothing() {
    let plant = FakePlant::new();
    let dir = tempfile::tempdir().unwrap();
    let rollouts = Rollouts::open(dir.path());
    let plan = plant.plan();
    let start = |plan: Option<&RolloutSettings>| {
        let plan = plan.cloned();
        let rollouts = &rollouts;
        let plant = &plant;
        async move {
            let origin = Origin::new("alice", "");
            rollouts
                .command(plant, "shop", RolloutAction::Start, plan.as_ref(), origin)
                .await
        }
    };
    let conflict = |result: Result<RolloutStatus, ControlError>, expected: &str| match result {
        Err(ControlError::Refused(message)) => assert!(message.contains(expected), "{message}"),
        other => panic!("expected a conflict about {expected:?}, got {other:?}"),
    };
    conflict(start(None).await, "no rollout configured");
    plant.edit(|routing| routing.latched = true);
    conflict(start(Some(&plan)).await, "latched");
    plant.edit(|routing| (routing.latched, routing.frozen) = (false, true));
    conflict(start(Some(&plan)).await, "frozen");
    plant.edit(|routing| routing.stable = "canary".into());
    conflict(start(Some(&plan)).await, "already stable");
    assert_eq!(plant.changes(), 0);
    assert!(rollouts.all().await.is_empty());
    assert!(!dir.path().join(ROLLOUTS_FILE).exists());

    plant.edit(|routing| (routing.stable, routing.frozen) = ("blue".into(), false));
    start(Some(&plan)).await.unwrap();
    conflict(
        start(Some(&plan)).await,
        "already running at step 1/3 (10%)",
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_bake_continues_the_bake_where_it_was_saved() {
    let plant = FakePlant::new();
    let (dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE / 2).await;
    rollouts.tick(&plant).await;
    assert_eq!(status(&rollouts).await.rollout.baked_ms, 15_000);
    drop(rollouts);

    let reopened = Rollouts::open(dir.path());
    advance(BAKE / 2 - MS).await;
    reopened.tick(&plant).await;
    assert_eq!(plant.canary(), 10, "advanced before the bake was done");
    advance(MS).await;
    reopened.tick(&plant).await;
    assert_eq!(
        plant.canary(),
        50,
        "the bake before the restart did not count"
    );
    assert_eq!(status(&reopened).await.rollout.baked_ms, 0);
}

#[tokio::test(start_paused = true)]
async fn a_broken_bake_is_saved_as_starting_over() {
    let plant = FakePlant::new();
    let (dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE / 2).await;
    rollouts.tick(&plant).await;
    plant.inconclusive();
    rollouts.tick(&plant).await;
    drop(rollouts);
    let reopened = Rollouts::open(dir.path());
    assert_eq!(status(&reopened).await.rollout.baked_ms, 0);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_guard_after_a_restart_adds_to_the_saved_bake_until_it_breaks() {
    let plant = FakePlant::new();
    let (dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE / 2).await;
    rollouts.tick(&plant).await;
    drop(rollouts);

    // The restarted guard gathers evidence first, then calls the canary healthy.
    let reopened = Rollouts::open(dir.path());
    *plant.verdict.lock().unwrap() = None;
    reopened.tick(&plant).await;
    plant.inconclusive();
    advance(BAKE / 10).await;
    reopened.tick(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE / 2 - MS).await;
    reopened.tick(&plant).await;
    assert_eq!(plant.canary(), 10, "advanced before the bake was done");
    advance(MS).await;
    reopened.tick(&plant).await;
    assert_eq!(plant.canary(), 50, "the saved bake did not count");
}

#[tokio::test(start_paused = true)]
async fn a_baked_step_waits_for_every_analysis_to_pass() {
    let plant = FakePlant::new();
    let (_dir, rollouts) = started(&plant).await;
    *plant.analysis.lock().unwrap() = Some("analysis \"checkout\": Prometheus unreachable".into());
    plant.healthy_since(Instant::now());
    advance(BAKE * 3).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10, "advanced while an analysis held");
    assert!(
        held(&status(&rollouts).await).contains("Prometheus unreachable"),
        "{:?}",
        status(&rollouts).await
    );
    *plant.analysis.lock().unwrap() = None;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
}

#[tokio::test(start_paused = true)]
async fn an_approval_step_waits_for_approve_which_is_recorded() {
    let plant = FakePlant::with_steps("[{ percent = 10, approve = true }, 50, 100]");
    let (_dir, rollouts) = started(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE * 3).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10);
    assert!(held(&status(&rollouts).await).contains("ctl approve shop"));
    let plan = plant.plan();
    let approve = |who: &str| {
        rollouts.command(
            &plant,
            "shop",
            RolloutAction::Approve,
            Some(&plan),
            Origin::new(who, "numbers look right"),
        )
    };
    rollouts.tick(&plant).await;
    let asked: Vec<ChangeKind> = plant.notes.lock().unwrap().iter().map(|n| n.0).collect();
    assert_eq!(asked, [ChangeKind::ApprovalNeeded], "asked once per step");
    let approved = approve("carol").await.unwrap();
    let approval = approved.rollout.approved.clone().unwrap();
    assert_eq!((approval.step, approval.actor.as_str()), (0, "carol"));
    assert_eq!(approval.revision, 502);
    let (kind, origin) = plant.notes.lock().unwrap()[1].clone();
    assert_eq!(kind, ChangeKind::Approved);
    assert!(origin.reason.contains("numbers look right"), "{origin:?}");
    assert!(
        approve("dave").await.is_err(),
        "a second approval of one step"
    );
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
    let refused = approve("erin").await.unwrap_err();
    assert!(
        refused.to_string().contains("needs no approval"),
        "{refused}"
    );
}
