//! An abort held while NATS is down survives a restart of its instance during the outage:
//! the restarted instance serves the cut-back table from its cache and appends the abort
//! (once) when NATS returns.

mod common;

use common::fleet::{serves_only, Fleet};
use common::nats::NatsNode;
use common::{upstreams, Proxy};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard::admin::api::ChangeRequest;
use switchyard::control::record::ChangeKind;

const SOON: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_abort_survives_a_restart_during_the_outage_and_reaches_the_log_once() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let mut fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        String::new()
    })
    .await;
    let all_canary = ChangeRequest {
        weights: Some(BTreeMap::from([("blue".into(), 0), ("canary".into(), 100)])),
        reason: Some("all to canary".into()),
        ..ChangeRequest::default()
    };
    fleet
        .client(0)
        .change("shop", "weights", &all_canary)
        .await
        .unwrap();
    for proxy in &fleet.proxies {
        assert!(serves_only(proxy.addr, "canary", SOON).await);
    }
    nats.kill();

    let aborted = fleet.setups[1].ctl(&["abort", "shop", "--reason", "bad canary, NATS down"]);
    assert!(aborted.status.success(), "{}", common::stderr(&aborted));
    assert!(serves_only(fleet.proxies[1].addr, "blue", SOON).await);

    // Restarted while NATS is still down: the abort is in force from the start.
    fleet.proxies[1].terminate();
    fleet.proxies[1] = Proxy::start(&fleet.setups[1], &[]).await;
    let restarted = fleet.proxies[1].addr;
    assert!(
        serves_only(restarted, "blue", Duration::ZERO).await,
        "the restarted instance forgot the held abort\n{}",
        fleet.logs()
    );
    let status = fleet.client(1).service("shop").await.unwrap();
    assert!(status.latched, "{status:?}");
    assert!(serves_only(fleet.proxies[0].addr, "canary", Duration::ZERO).await);

    // NATS back: the abort reaches the log once and every instance applies it.
    nats.start();
    nats.wait_listening();
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "blue", SOON).await,
            "{} does not serve the held abort after NATS returned\n{}",
            proxy.addr,
            fleet.logs()
        );
    }
    fleet.wait_members(3).await;
    let history = fleet.client(2).history("shop", 100).await.unwrap();
    let aborts: Vec<_> = history
        .revisions
        .iter()
        .filter(|r| r.kind == ChangeKind::Abort)
        .collect();
    assert_eq!(aborts.len(), 1, "{aborts:#?}");
    assert_eq!(aborts[0].reason, "bad canary, NATS down");
    // Nothing is held any more: a second restart has nothing to append.
    fleet.proxies[1].terminate();
    fleet.proxies[1] = Proxy::start(&fleet.setups[1], &[]).await;
    fleet.wait_members(3).await;
    let history = fleet.client(1).history("shop", 100).await.unwrap();
    assert_eq!(
        history
            .revisions
            .iter()
            .filter(|r| r.kind == ChangeKind::Abort)
            .count(),
        1
    );
}
