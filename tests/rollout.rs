//! Progressive rollouts over real sockets: ~500 requests/s, steps 10% -> 50% -> promote,
//! one-second bakes. Started with the real `switchyard ctl`.

mod common;

use common::*;
use http::Method;
use std::time::{Duration, Instant};
use switchyard::admin::api::{RolloutStatus, ServiceStatus};
use switchyard::rollout::Status;

const RPS: u64 = 500;
/// The most a test lets traffic run.
const MAX: Duration = Duration::from_secs(15);

const ROLLOUT: &str = r#"
[services.shop.guard]
latency_min_samples = 20
# These tests are about steps and the error-rate cutback: on a loaded machine a healthy
# canary's p99 over a few hundred requests is noise, so only a gross one counts.
latency_min_increase = "1s"

[services.shop.rollout]
steps = [10, 50, 100]
bake = "1s"
"#;

/// The proxy, and the stable and canary upstreams (they serve until dropped).
async fn setup() -> (TestProxy, [switchyard_testkit::SampleUpstream; 2]) {
    let stable = upstream("blue").await;
    let canary = upstream("canary").await;
    let proxy = TestProxy::start(&two_versions(&stable, &canary, (100, 0), ROLLOUT)).await;
    (proxy, [stable, canary])
}

async fn service(proxy: &TestProxy) -> ServiceStatus {
    proxy.admin().service("shop").await.unwrap()
}

/// Polls status until `until` holds for the rollout (bounded by `within`).
async fn wait_for(
    proxy: &TestProxy,
    within: Duration,
    until: impl Fn(&RolloutStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = service(proxy).await;
        if status.rollout.as_ref().is_some_and(&until) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never got there: {:?}",
            status.rollout
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_rollout(proxy: &TestProxy) {
    let out = ctl(proxy, &["rollout", "shop", "start", "--reason", "e2e"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("rollout of canary running at step 1/3 (10%)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_rolls_out_step_by_step_to_promoted() {
    let (proxy, _upstreams) = setup().await;
    let started = Instant::now();
    let traffic = Load::start(proxy.addr(), RPS, MAX);
    start_rollout(&proxy).await;

    let halfway = wait_for(&proxy, MAX, |r| r.percent == 50).await;
    let guard = halfway.guard.expect("a verdict at 50%");
    assert_eq!(
        (guard.version.as_str(), guard.verdict.label()),
        ("canary", "healthy")
    );
    let (_, metrics) = admin_raw_on(&proxy.admin(), Method::GET, "/metrics", "").await;
    for expected in [
        "switchyard_rollout_percent{service=\"shop\",version=\"canary\"} 50",
        "switchyard_guard_verdict{service=\"shop\",version=\"canary\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "no {expected:?}:\n{metrics}"
        );
    }

    let done = wait_for(&proxy, MAX.saturating_sub(started.elapsed()), |r| {
        r.rollout.status == Status::Done
    })
    .await;
    let took = started.elapsed();
    let load = traffic.stop().await;
    eprintln!("promoted {took:?} after start; {load:?}");
    assert_eq!(done.stable, "canary");
    assert_eq!(load.failed, 0, "users saw errors: {load:?}");

    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    let rollout: Vec<String> = history
        .iter()
        .filter(|r| r.actor == "rollout")
        .map(|r| {
            format!(
                "{} {}",
                r.kind.label(),
                switchyard::control::describe(r.new.as_ref().unwrap())
            )
        })
        .collect();
    assert_eq!(
        rollout,
        [
            "weights stable=blue blue=90 canary=10",
            "weights stable=blue blue=50 canary=50",
            "promote stable=canary canary=100",
        ]
    );
    let text = stdout(&ctl(&proxy, &["history", "shop"]).await);
    assert!(text.contains("rollout started by tester: e2e"), "{text}");
    assert!(text.contains("rollout promotes canary"), "{text}");
    let text = stdout(&ctl(&proxy, &["status", "shop"]).await);
    assert!(
        text.contains("rollout of canary done at step 3/3 (100%)"),
        "{text}"
    );
    assert!(proxy.proxy.incidents.list(None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_turns_bad_mid_rollout_is_cut_back_and_the_rollout_aborts() {
    let (proxy, [_stable, canary]) = setup().await;
    let traffic = Load::start(proxy.addr(), RPS, MAX);
    start_rollout(&proxy).await;
    wait_for(&proxy, Duration::from_secs(12), |r| r.percent == 50).await;

    canary.faults.set_error_rate(0.3);
    let onset = Instant::now();
    let aborted = wait_for(&proxy, Duration::from_secs(3), |r| {
        r.rollout.status == Status::Aborted
    })
    .await;
    let took = onset.elapsed();
    let load = traffic.stop().await;
    eprintln!("rollout aborted {took:?} after the canary turned bad; {load:?}");
    assert!(aborted.latched, "{aborted:?}");
    assert_eq!(aborted.stable, "blue");
    let rollout = aborted.rollout.unwrap();
    assert!(
        rollout.rollout.note.contains("cut back at step 2/3 (50%)"),
        "{rollout:?}"
    );

    let incidents = proxy.proxy.incidents.list(Some("shop"));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let cause = incidents[0].cause.as_ref().expect("a cause");
    assert_eq!(cause.actor, "rollout");
    assert!(cause.reason.contains("step 2/3"), "{cause:?}");
    let text = stdout(&ctl(&proxy, &["incidents", "shop"]).await);
    assert!(text.contains("canary error rate"), "{text}");

    // Nothing moves afterwards, and the rollout cannot be resumed.
    let revision = proxy.proxy.controller.plane.table.load().revision;
    proxy.guard_looks(15).await;
    assert_eq!(proxy.proxy.controller.plane.table.load().revision, revision);
    let out = ctl(&proxy, &["rollout", "shop", "resume"]).await;
    assert!(
        stderr(&out).contains("nothing to resume"),
        "{}",
        stderr(&out)
    );
}
