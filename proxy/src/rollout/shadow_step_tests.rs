//! A rollout that begins with a shadow step, in paused time: the step is judged by the
//! shadow check alone, and no user is sent to the canary before it passes.

use super::*;
use crate::control::command::Change;
use crate::telemetry::shadow::{ShadowReport, ShadowVerdict};

const SHADOWED: &str = r#"shadow_first = true
[services.shop.shadow]
version = "canary""#;

fn shadowed() -> FakePlant {
    FakePlant::with_config("[10, 50, 100]", SHADOWED)
}

fn report(version: &str, verdict: ShadowVerdict) -> ShadowReport {
    ShadowReport {
        version: version.into(),
        mirrored: 250,
        compared: 240,
        differing: 12,
        noise_compared: 30,
        noise_differing: 1,
        skipped: Default::default(),
        fields: Vec::new(),
        instances: 1,
        verdict,
    }
}

fn shadow(plant: &FakePlant, verdict: ShadowVerdict) {
    *plant.shadow.lock().unwrap() = Some(report("canary", verdict));
}

async fn started_in_shadow(plant: &FakePlant) -> (tempfile::TempDir, Rollouts) {
    let dir = tempfile::tempdir().unwrap();
    let rollouts = Rollouts::open(dir.path());
    // Not shadowed (yet): the step could never be judged.
    let refused = rollouts
        .command(
            plant,
            "shop",
            RolloutAction::Start,
            Some(&plant.plan()),
            Origin::new("alice", "ship it"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("canary is not shadowed"), "{refused}");
    shadow(
        plant,
        ShadowVerdict::Inconclusive {
            reason: "0 of 200 compared requests".into(),
        },
    );
    let status = rollouts
        .command(
            plant,
            "shop",
            RolloutAction::Start,
            Some(&plant.plan()),
            Origin::new("alice", "ship it"),
        )
        .await
        .unwrap();
    assert_eq!(
        (status.rollout.status, status.percent, status.rollout.step),
        (Status::Running, 0, 0)
    );
    assert_eq!(status.rollout.steps, vec![0, 10, 50, 100]);
    assert_eq!(status.rollout.position(), "step 1/4 (shadow, no users)");
    (dir, rollouts)
}

/// No change so far ever gave the canary a share of users.
fn never_had_users(plant: &FakePlant) -> bool {
    plant.changes.lock().unwrap().iter().all(|(change, _)| match change {
        Change::Weights { weights } => weights.get("canary").copied().unwrap_or(0) == 0,
        _ => false,
    } || matches!(change, Change::Abort {}))
}

#[tokio::test(start_paused = true)]
async fn the_shadow_step_holds_on_too_few_samples_then_passes_to_the_first_step() {
    let plant = shadowed();
    let (_dir, rollouts) = started_in_shadow(&plant).await;
    assert_eq!(plant.canary(), 0);

    // A reload that shadows another version leaves nothing to judge the step on.
    *plant.shadow.lock().unwrap() = Some(report("other", ShadowVerdict::Pass));
    rollouts.tick(&plant).await;
    assert!(
        held(&status(&rollouts).await).contains("is not the service's shadow version"),
        "{:?}",
        status(&rollouts).await
    );
    // A healthy guard counts for nothing here, however long: the canary has no users.
    plant.healthy_since(Instant::now());
    shadow(
        &plant,
        ShadowVerdict::Inconclusive {
            reason: "120 of 200 compared requests".into(),
        },
    );
    advance(BAKE * 4).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 0);
    assert_eq!(plant.changes(), 0);
    let why = held(&status(&rollouts).await);
    assert_eq!(
        why,
        "shadow step: too few samples yet (120 of 200 compared requests, this instance)"
    );

    shadow(&plant, ShadowVerdict::Pass);
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10);
    let (change, origin) = plant.last_change();
    assert!(matches!(change, Change::Weights { .. }));
    assert_eq!(origin.actor, "rollout");
    assert_eq!(
        origin.reason,
        "rollout step 2/4: canary at 10% (shadow check passed: 12 of 240 compared answers \
         differed (noise 1 of 30), this instance)"
    );
    let status = status(&rollouts).await;
    assert_eq!((status.rollout.step, status.percent), (1, 10));
    assert_eq!(status.rollout.revision, Some(101));

    // From here on the guard's bake rules, from the step's own start.
    advance(BAKE - MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 10);
    advance(MS).await;
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_failed_shadow_step_aborts_with_an_incident_before_any_user() {
    let plant = shadowed();
    let (_dir, rollouts) = started_in_shadow(&plant).await;
    plant.healthy_since(Instant::now());
    advance(BAKE * 2).await;
    let summary = "$.price differs in 10.0% of 240 compared requests (noise 0.0%); \
                   e.g. GET /item/7: stable 5, shadow 6";
    shadow(
        &plant,
        ShadowVerdict::Fail {
            summary: summary.into(),
        },
    );
    rollouts.tick(&plant).await;

    let status = status(&rollouts).await;
    assert_eq!(status.rollout.status, Status::Aborted);
    let expected =
        format!("shadow check failed before any user traffic: {summary} (this instance)");
    assert_eq!(status.rollout.note, expected);
    let (change, origin) = plant.last_change();
    assert!(matches!(change, Change::Abort {}));
    assert_eq!(
        (origin.actor.as_str(), origin.reason.as_str()),
        ("rollout", expected.as_str())
    );
    assert_eq!(*plant.incidents.lock().unwrap(), vec![expected]);
    assert!(plant.routing.lock().unwrap().latched);
    assert!(never_had_users(&plant));

    // Over: later looks change nothing.
    rollouts.tick(&plant).await;
    assert_eq!(plant.changes(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shadow_step_paused_and_resumed_is_judged_again_and_a_pause_holds_it() {
    let plant = shadowed();
    let (_dir, rollouts) = started_in_shadow(&plant).await;
    let origin = Origin::new("bob", "look first");
    rollouts
        .command(&plant, "shop", RolloutAction::Pause, None, origin.clone())
        .await
        .unwrap();
    shadow(&plant, ShadowVerdict::Pass);
    rollouts.tick(&plant).await;
    assert_eq!(plant.canary(), 0, "a paused shadow step went on");
    rollouts
        .command(&plant, "shop", RolloutAction::Resume, None, origin)
        .await
        .unwrap();
    rollouts.tick(&plant).await;
    assert_eq!((plant.canary(), plant.changes()), (10, 1));
}

#[test]
fn the_shadow_step_moves_the_gates_one_step_on() {
    let rollout = Rollout::with_gates(
        "shop",
        "canary",
        &[10, 100],
        vec![crate::config::StepGate {
            step: 0,
            approve: true,
            webhook: None,
        }],
        BAKE,
        String::new(),
    )
    .with_shadow_step();
    assert_eq!(rollout.steps, vec![0, 10, 100]);
    assert_eq!(rollout.gates[0].step, 1);
    // Applied twice, it is the same plan.
    assert_eq!(rollout.clone().with_shadow_step(), rollout);
}
