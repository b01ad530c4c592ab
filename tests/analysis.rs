//! Analysis against a real Prometheus (Debian's `prometheus`, on loopback, scraping the
//! sample upstreams' `/metrics` every second): a canary whose checkout success drops from 99%
//! to 90% is aborted while every answer stays 200; a healthy canary rolls out to promoted;
//! Prometheus stopped mid-rollout holds it, and the rollout carries on once it is back.

mod common;

use common::prometheus::Prometheus;
use common::*;
use std::time::{Duration, Instant};
use switchyard::admin::api::ServiceStatus;
use switchyard::analysis::{AnalysisStatus, RunOutcome};
use switchyard::rollout::Status;

const RPS: u64 = 200;
/// The most a test lets traffic run.
const MAX: Duration = Duration::from_secs(90);

/// Checkout success of the canary against stable's, over the last 5s of 1s scrapes.
fn analysis(prometheus: &Prometheus) -> String {
    format!(
        r#"
[services.shop.guard]
latency_min_samples = 20
latency_min_increase = "1s"

[[services.shop.analysis]]
name = "checkout success"
prometheus = "{}"
query = 'sum(rate(checkout_ok_total{{version="{{version}}"}}[5s])) / sum(rate(checkout_total{{version="{{version}}"}}[5s]))'
every = "1s"
pass = "canary >= stable - 0.03"
failures = 2
no_data = "hold"
"#,
        prometheus.url()
    )
}

struct Setup {
    proxy: TestProxy,
    stable: switchyard_testkit::SampleUpstream,
    canary: switchyard_testkit::SampleUpstream,
    prometheus: Prometheus,
}

async fn setup(weights: (u64, u64), extra: &str) -> Setup {
    let stable = upstream("blue").await;
    let canary = upstream("canary").await;
    stable.checkouts.set_success(0.99);
    canary.checkouts.set_success(0.99);
    let prometheus = tokio::task::block_in_place(|| Prometheus::start(&[stable.addr, canary.addr]));
    let config = format!("{}{extra}", analysis(&prometheus));
    let proxy = TestProxy::start(&two_versions(&stable, &canary, weights, &config)).await;
    Setup {
        proxy,
        stable,
        canary,
        prometheus,
    }
}

async fn service(proxy: &TestProxy) -> ServiceStatus {
    proxy.admin().service("shop").await.unwrap()
}

/// Polls status until `until` holds (bounded by `within`).
async fn wait_for(
    proxy: &TestProxy,
    within: Duration,
    what: &str,
    until: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = service(proxy).await;
        if until(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn checkout(status: &ServiceStatus) -> Option<&AnalysisStatus> {
    status
        .analysis
        .iter()
        .find(|a| a.name == "checkout success" && a.version == "canary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_checkouts_drop_to_90_percent_is_aborted_while_every_answer_is_200() {
    let setup = setup((80, 20), "").await;
    let proxy = &setup.proxy;
    let traffic = Load::start_on(proxy.addr(), "/checkout", RPS, MAX);
    let passing = wait_for(proxy, MAX, "passed", |s| {
        checkout(s).is_some_and(|a| a.outcome == Some(RunOutcome::Pass))
    })
    .await;
    eprintln!("passing: {:?}", checkout(&passing));
    let (_, metrics) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    let labels = r#"service="shop",analysis="checkout success",version="canary""#;
    assert!(
        metrics.contains(&format!("switchyard_analysis_outcome{{{labels}}} 0\n"))
            && metrics.contains(&format!(
                "switchyard_analysis_value{{{labels},side=\"stable\"}}"
            )),
        "{metrics}"
    );

    setup.canary.checkouts.set_success(0.90);
    let dropped = Instant::now();
    let cut = wait_for(proxy, MAX, "latched", |s| s.latched).await;
    let took = dropped.elapsed();
    let load = traffic.stop().await;
    eprintln!("aborted {took:?} after the drop; {load:?}");
    assert_eq!(cut.stable, "blue");
    assert_eq!(load.failed, 0, "users saw errors: {load:?}");
    let guard = cut.guard.as_ref().map(|g| g.verdict.label());
    assert_ne!(guard, Some("bad"), "the guard, not the analysis, judged it");

    let incidents = proxy
        .admin()
        .incidents(Some("shop"))
        .await
        .unwrap()
        .incidents;
    let incident = &incidents[0];
    assert_eq!(incident.version, "canary");
    let detection = &incident.detection;
    assert_eq!(detection["rule"], "analysis");
    assert_eq!(detection["condition"], "canary >= stable - 0.03");
    assert!(
        detection["query"]
            .as_str()
            .unwrap()
            .contains(r#"checkout_ok_total{version="canary"}"#),
        "{detection}"
    );
    let canary = detection["canary_value"].as_f64().unwrap();
    let stable = detection["stable_value"].as_f64().unwrap();
    assert!(canary < stable - 0.03, "{detection}");
    assert!((0.95..=1.0).contains(&stable), "{detection}");
    assert_eq!(detection["failed_runs"].as_array().unwrap().len(), 2);
    assert!(
        incident.summary.contains("checkout success"),
        "{incident:?}"
    );

    let history = proxy.proxy.controller.history("shop", 5).await.unwrap();
    let abort = history.last().unwrap();
    assert_eq!(
        (abort.kind.label(), abort.actor.as_str()),
        ("abort", "analysis")
    );
    let text = stdout(&ctl(proxy, &["incidents", "shop"]).await);
    assert!(text.contains("checkout success"), "{text}");
    drop(setup.stable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_promotes_and_prometheus_stopped_mid_rollout_holds_it() {
    // A bake of 3s: longer than the runs it takes an unreachable Prometheus to replace a
    // pass, so the hold shows whatever instant Prometheus went away.
    let rollout = "\n[services.shop.rollout]\nsteps = [20, 50, 100]\nbake = \"3s\"\n";
    let mut setup = setup((100, 0), rollout).await;
    let proxy = &setup.proxy;
    let traffic = Load::start_on(proxy.addr(), "/checkout", RPS, MAX);
    let out = ctl(proxy, &["rollout", "shop", "start", "--reason", "e2e"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    wait_for(proxy, MAX, "passed", |s| {
        checkout(s).is_some_and(|a| a.outcome == Some(RunOutcome::Pass))
    })
    .await;
    tokio::task::block_in_place(|| setup.prometheus.stop());
    let held = wait_for(proxy, MAX, "held on Prometheus", |s| {
        s.rollout
            .as_ref()
            .and_then(|r| r.held.as_deref())
            .is_some_and(|h| h.contains("Prometheus unreachable"))
    })
    .await;
    let runs = checkout(&held).unwrap().runs;
    // The step it holds at: it may have moved on between the last pass and the stop.
    let percent = held.rollout.as_ref().unwrap().percent;
    // Runs for longer than a bake, all unreachable: the step stays.
    let still = wait_for(proxy, MAX, "run on", |s| {
        checkout(s).is_some_and(|a| a.runs >= runs + 5)
    })
    .await;
    let rollout = still.rollout.as_ref().unwrap();
    assert_eq!(
        (rollout.rollout.status, rollout.percent),
        (Status::Running, percent),
        "advanced without Prometheus: {rollout:?}"
    );
    assert_eq!(still.stable, "blue");
    let text = stdout(&ctl(proxy, &["status", "shop"]).await);
    assert!(text.contains("Prometheus unreachable"), "{text}");

    tokio::task::block_in_place(|| setup.prometheus.resume());
    let done = wait_for(proxy, MAX, "promoted", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.rollout.status == Status::Done)
    })
    .await;
    let load = traffic.stop().await;
    assert_eq!(done.stable, "canary");
    assert_eq!(load.failed, 0, "users saw errors: {load:?}");
    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    assert!(
        history.iter().all(|r| r.kind.label() != "abort"),
        "{history:#?}"
    );
}
