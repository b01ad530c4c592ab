//! In a fleet the shadow's counts are pooled like the guard's evidence: each instance alone
//! has too few compared answers for a verdict, together they fail the gate (real
//! `nats-server`, three real switchyard processes).

mod common;

use common::fleet::Fleet;
use common::nats::NatsNode;
use common::{client, get, stderr, stdout, upstreams};
use std::time::{Duration, Instant};
use switchyard::telemetry::shadow::{ShadowReport, ShadowVerdict};

const SHADOW: &str = r#"
[services.shop.shadow]
version = "canary"
percent = 100
noise_percent = 50
min_samples = 90
compare = { status = true, body = "json" }
"#;

/// What serves until dropped.
type Running = (NatsNode, Vec<switchyard_testkit::SampleUpstream>);

/// Requests each instance serves: fewer than `min_samples` (90), three times more.
const EACH: usize = 40;

/// Three instances of a fleet shadowing the canary, each sent `EACH` users' requests;
/// returns edge-1's report once it pools all three, with what must live as long as the
/// fleet (NATS, the upstreams).
async fn shadowed_fleet(wrong_prices: bool) -> (Fleet, ShadowReport, Running) {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    if wrong_prices {
        versions[1].faults.set_wrong_price_paths(1.0);
    }
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        SHADOW.to_string()
    })
    .await;
    let http = client();
    for proxy in &fleet.proxies {
        for i in 0..EACH {
            let reply = get(&http, proxy.addr, &format!("/item/{i}"), &[]).await;
            assert_eq!(reply.version.as_deref(), Some("blue"));
        }
    }
    // Edge-1 judges all three instances' copies: more than it ever made.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let out = fleet.setups[0].ctl(&["--json", "shadow", "shop"]);
        let report: ShadowReport = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("ctl shadow: {e}: {}{}", stdout(&out), stderr(&out)));
        if report.instances == 3 && report.compared >= 90 && report.noise_compared >= 20 {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "never pooled: {report:?}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(report.compared > EACH as u64, "{report:?}");
    let shown = stdout(&fleet.setups[0].ctl(&["shadow", "shop"]));
    assert!(shown.contains("(fleet-wide, 3 instances)"), "{shown}");
    (fleet, report, (nats, versions))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_shadow_counts_fail_the_gate_where_no_instance_alone_has_enough() {
    let (fleet, report, _running) = shadowed_fleet(true).await;
    let ShadowVerdict::Fail { summary } = &report.verdict else {
        panic!("every price differs: {report:?}")
    };
    assert!(summary.starts_with("$.price differs"), "{summary}");
    // The gate on edge-1 judges the pooled counts.
    let out = fleet.setups[0].ctl(&["weights", "shop", "blue=90", "canary=10"]);
    assert!(
        !out.status.success(),
        "the gate let a failing shadow take traffic"
    );
    let refusal = stderr(&out);
    assert!(
        refusal.contains("shadow") && refusal.contains("$.price"),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_shadow_counts_pass_the_gate_where_no_instance_alone_has_enough() {
    let (fleet, report, _running) = shadowed_fleet(false).await;
    // `served_at_ms` differs, between stable's own answers too: noise.
    assert_eq!(report.verdict, ShadowVerdict::Pass, "{report:?}");
    let out = fleet.setups[0].ctl(&["weights", "shop", "blue=90", "canary=10"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
