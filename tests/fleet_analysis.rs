//! Analysis in a fleet: three real switchyard processes, a real `nats-server` and a real
//! Prometheus. Only the member driving the rollout runs the queries; when the canary's
//! checkouts drop, it alone aborts, once, and every member applies the abort from the log.

mod common;

use common::fleet::Fleet;
use common::nats::NatsNode;
use common::prometheus::Prometheus;
use common::{upstreams, Load};
use std::time::{Duration, Instant};
use switchyard::admin::api::ServiceStatus;
use switchyard::analysis::RunOutcome;

const RPS: u64 = 100;
const MAX: Duration = Duration::from_secs(90);

fn config(prometheus: &Prometheus) -> String {
    format!(
        r#"
[services.shop.guard]
latency_min_samples = 20
latency_min_increase = "1s"

[services.shop.rollout]
steps = [20, 50, 100]
bake = "5m"

[[services.shop.analysis]]
name = "checkout success"
prometheus = "{}"
query = 'sum(rate(checkout_ok_total{{version="{{version}}"}}[5s])) / sum(rate(checkout_total{{version="{{version}}"}}[5s]))'
every = "1s"
pass = "canary >= stable - 0.03"
failures = 2
"#,
        prometheus.url()
    )
}

async fn wait_for(
    fleet: &Fleet,
    i: usize,
    what: &str,
    until: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + MAX;
    loop {
        if let Ok(status) = fleet.client(i).service("shop").await {
            if until(&status) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never {what} on instance {i}: {:?}\n{}",
            fleet.client(i).service("shop").await,
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_rollout_driver_queries_and_its_abort_reaches_the_whole_fleet() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    for version in &versions {
        version.checkouts.set_success(0.99);
    }
    let addrs: Vec<_> = versions.iter().map(|v| v.addr).collect();
    let prometheus = tokio::task::block_in_place(|| Prometheus::start(&addrs));
    let text = config(&prometheus);
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        text.clone()
    })
    .await;
    let loads: Vec<Load> = fleet
        .proxies
        .iter()
        .map(|p| Load::start_on(p.addr, "/checkout", RPS, MAX))
        .collect();
    let out = fleet.setups[1].ctl(&["rollout", "shop", "start", "--reason", "fleet"]);
    assert!(out.status.success(), "{}", common::stderr(&out));

    let passed = |s: &ServiceStatus| {
        s.analysis
            .iter()
            .any(|a| a.version == "canary" && a.outcome == Some(RunOutcome::Pass))
    };
    wait_for(&fleet, 1, "passed on the driver", passed).await;
    for i in [0, 2] {
        let status = fleet.client(i).service("shop").await.unwrap();
        assert!(
            status.analysis.is_empty(),
            "instance {i} runs the queries too: {:?}",
            status.analysis
        );
    }

    versions[1].checkouts.set_success(0.90);
    for i in 0..3 {
        wait_for(&fleet, i, "latched", |s| s.latched).await;
    }
    for load in loads {
        assert_eq!(load.stop().await.failed, 0);
    }
    let history = fleet.client(0).history("shop", 100).await.unwrap();
    let aborts: Vec<_> = history
        .revisions
        .iter()
        .filter(|r| r.kind.label() == "abort")
        .collect();
    assert_eq!(aborts.len(), 1, "{aborts:#?}");
    assert_eq!(aborts[0].actor, "analysis");
    let evidence = aborts[0].evidence.as_ref().unwrap();
    assert_eq!(evidence["analysis"], "checkout success");
    let deciders: Vec<usize> = (0..3)
        .filter(|&i| fleet.proxies[i].log_text().contains("analysis aborted"))
        .collect();
    assert_eq!(deciders, [1], "{}", fleet.logs());
    let incidents = fleet.client(1).incidents(Some("shop")).await.unwrap();
    assert_eq!(incidents.incidents[0].detection["rule"], "analysis");
}
