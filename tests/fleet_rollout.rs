//! Rollouts in a fleet: three real switchyard processes and a real `nats-server`. One
//! instance drives a rollout (its lease); SIGKILL it mid-bake and another takes over and
//! continues the step's bake from the shared state.

mod common;

use common::fleet::Fleet;
use common::nats::NatsNode;
use common::{upstreams, Load};
use std::time::{Duration, Instant};
use switchyard::admin::api::RolloutStatus;
use switchyard::ctl::client::AdminClient;
use switchyard::rollout::Status;

const RPS: u64 = 150;

fn rollout_toml(bake: &str) -> String {
    format!(
        r#"
[services.shop.guard]
latency_min_samples = 20
latency_min_increase = "1s"

[services.shop.rollout]
steps = [10, 50, 100]
bake = "{bake}"
"#
    )
}

async fn rollout(client: &AdminClient) -> Option<RolloutStatus> {
    client.service("shop").await.ok()?.rollout
}

/// Waits (bounded) until `until` holds for the rollout as instance `i` shows it.
async fn wait_for(
    fleet: &Fleet,
    i: usize,
    within: Duration,
    until: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = rollout(&fleet.client(i)).await.filter(|s| until(s)) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never got there on instance {i}: {:?}\n{}",
            rollout(&fleet.client(i)).await,
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rollout's revisions in the fleet's log, as instance `i` has them: one per step.
async fn rollout_steps(fleet: &Fleet, i: usize) -> Vec<String> {
    let history = fleet.client(i).history("shop", 1000).await.unwrap();
    history
        .revisions
        .iter()
        .filter(|r| r.actor == "rollout")
        .map(|r| r.reason.clone())
        .collect()
}

fn start(fleet: &Fleet, i: usize) {
    let out = fleet.setups[i].ctl(&["rollout", "shop", "start", "--reason", "fleet"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_of_three_drives_a_rollout_one_revision_per_step() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        rollout_toml("1s")
    })
    .await;
    let loads: Vec<Load> = fleet
        .proxies
        .iter()
        .map(|p| Load::start(p.addr, RPS, Duration::from_secs(60)))
        .collect();
    start(&fleet, 1);
    // Every instance shows the same rollout, and it ends done.
    for i in 0..3 {
        wait_for(&fleet, i, Duration::from_secs(45), |s| {
            s.rollout.status == Status::Done
        })
        .await;
    }
    for load in loads {
        assert_eq!(load.stop().await.failed, 0);
    }
    let steps = rollout_steps(&fleet, 0).await;
    assert_eq!(steps.len(), 3, "one revision per step: {steps:#?}");
    assert!(steps[0].contains("canary at step 1/3 (10%)"), "{steps:#?}");
    assert!(steps[1].contains("step 2/3: canary at 50%"), "{steps:#?}");
    assert!(steps[2].contains("promotes canary"), "{steps:#?}");
    // Only edge-2 drove a step. (Another member may take the lease it lets go in the
    // moment after the final record, find the rollout done, and drive nothing: on a busy
    // machine that window is wide enough to hit.)
    let drivers: Vec<usize> = (0..3)
        .filter(|&i| {
            let log = fleet.proxies[i].log_text();
            log.contains("rollout step") || log.contains("rollout promotes")
        })
        .collect();
    assert_eq!(
        drivers,
        [1],
        "the rollout had other drivers:\n{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_driver_mid_bake_hands_the_rollout_over_with_its_bake() {
    const BAKE: Duration = Duration::from_secs(8);
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let mut fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        rollout_toml("8s")
    })
    .await;
    let mut loads: Vec<Load> = fleet
        .proxies
        .iter()
        .map(|p| Load::start(p.addr, RPS, Duration::from_secs(60)))
        .collect();
    start(&fleet, 0);
    // Half-way through the first step's bake, as the shared state says.
    let before = wait_for(&fleet, 1, Duration::from_secs(30), |s| {
        s.rollout.step == 0 && s.rollout.baked_ms >= 4_000
    })
    .await;
    loads.remove(0).stop().await;
    fleet.proxies[0].kill();
    let killed = Instant::now();

    // Another instance takes the lease and bakes on from the saved bake: the step comes
    // about a full bake sooner than if it started over.
    let mut took_over = None;
    let advanced = loop {
        let mut stepped = None;
        for i in 1..3 {
            let Some(status) = rollout(&fleet.client(i)).await else {
                continue;
            };
            if status.rollout.step > 0 {
                stepped = Some(killed.elapsed());
                break;
            }
            // The new driver: neither showing another's lease nor waiting for one.
            let driving = status.held.as_deref().is_some_and(|h| {
                !h.starts_with("driven by") && !h.starts_with("waiting for the rollout lease")
            });
            if took_over.is_none() && driving {
                took_over = Some(killed.elapsed());
            }
        }
        if let Some(at) = stepped {
            break at;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no other instance advanced the rollout\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took_over = took_over.expect("no instance was seen driving before the step");
    let left = BAKE - Duration::from_millis(before.rollout.baked_ms);
    println!(
        "driver SIGKILLed with {:.1}s of {:.0}s baked: taken over after {took_over:?}, next step after {advanced:?}",
        before.rollout.baked_ms as f64 / 1000.0,
        BAKE.as_secs_f64()
    );
    assert!(
        took_over < Duration::from_secs(3 + 1 + 3),
        "taken over after {took_over:?}, past the lease's TTL and a bake slice"
    );
    assert!(
        advanced < took_over + left + Duration::from_secs(2),
        "the step's bake started over: taken over after {took_over:?}, stepped after {advanced:?}"
    );
    wait_for(&fleet, 1, Duration::from_secs(45), |s| {
        s.rollout.status == Status::Done
    })
    .await;
    for load in loads {
        assert_eq!(load.stop().await.failed, 0);
    }
    let steps = rollout_steps(&fleet, 1).await;
    assert_eq!(steps.len(), 3, "one revision per step: {steps:#?}");
}
