//! A fleet member keeps following after a NATS outage in which its guard cut a canary back:
//! the held abort reaches the log with the time of the cut, the validation that follows the
//! cutback is recorded once the log is back, later changes from any instance are served by
//! all three, and every member's journal is the log, byte for byte (real `nats-server`,
//! three real switchyard processes).

mod common;

use common::fleet::{log_bytes, serves_only, Fleet};
use common::nats::NatsNode;
use common::{upstreams, Load};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard::admin::api::ChangeRequest;
use switchyard::control::record::{ChangeKind, RevisionRecord};

const SOON: Duration = Duration::from_secs(20);
/// Checks that blue passes: the validation after the cutback is a revision of its own.
const CHECKS: &str =
    "\n[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\nexpect_status = \"2xx\"\n";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn history(fleet: &Fleet, i: usize) -> Vec<RevisionRecord> {
    fleet
        .client(i)
        .history("shop", 1000)
        .await
        .unwrap()
        .revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_with_a_guard_cutback_every_member_follows_the_log_byte_for_byte() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 90, canary = 10 }", |_| {
        CHECKS.to_string()
    })
    .await;
    nats.kill();

    // Only edge-2 serves traffic; its guard cuts the failing canary back, NATS down.
    let onset = unix_ms();
    versions[1].faults.set_error_rate(0.5);
    let load = Load::start(fleet.proxies[1].addr, 200, Duration::from_secs(30));
    let deadline = Instant::now() + SOON;
    while !fleet.client(1).service("shop").await.unwrap().latched {
        assert!(
            Instant::now() < deadline,
            "never cut back\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = unix_ms();
    load.stop().await;
    versions[1].faults.set_error_rate(0.0);

    nats.start();
    nats.wait_listening();
    for i in 0..3 {
        let deadline = Instant::now() + SOON;
        while !fleet.client(i).service("shop").await.unwrap().latched {
            assert!(
                Instant::now() < deadline,
                "the held abort did not reach edge-{}\n{}",
                i + 1,
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(serves_only(fleet.proxies[i].addr, "blue", Duration::ZERO).await);
    }
    let logged = history(&fleet, 0).await;
    let abort = logged
        .iter()
        .find(|r| r.kind == ChangeKind::Abort)
        .unwrap_or_else(|| panic!("no abort in the log: {logged:#?}\n{}", fleet.logs()))
        .clone();
    assert_eq!(abort.actor, "guard");
    assert!(
        (onset..=seen).contains(&abort.time_ms),
        "the abort is dated {} ms, not at the cut ({onset}..={seen})",
        abort.time_ms
    );
    let deadline = Instant::now() + SOON;
    while !history(&fleet, 0)
        .await
        .iter()
        .any(|r| r.kind == ChangeKind::Validated && r.revision > abort.revision)
    {
        assert!(
            Instant::now() < deadline,
            "the validation after the cutback was never recorded\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 20 changes, from every instance in turn: each is served by all three.
    let resume = ChangeRequest {
        reason: Some("canary fixed".into()),
        ..ChangeRequest::default()
    };
    fleet
        .client(2)
        .change("shop", "resume", &resume)
        .await
        .unwrap();
    for n in 1..20u64 {
        let canary = 10 + n;
        let weights = ChangeRequest {
            weights: Some(BTreeMap::from([
                ("blue".into(), 100 - canary),
                ("canary".into(), canary),
            ])),
            ..ChangeRequest::default()
        };
        let i = (n % 3) as usize;
        let record = fleet.client(i).change("shop", "weights", &weights).await;
        let record = record
            .unwrap_or_else(|err| panic!("change {n} on edge-{}: {err}\n{}", i + 1, fleet.logs()));
        for member in 0..3 {
            fleet.wait_revision_on(member, record.revision).await;
        }
    }
    fleet.wait_members(3).await;
    let log = log_bytes(&nats).await;
    for (i, setup) in fleet.setups.iter().enumerate() {
        let journal = std::fs::read(setup.journal()).unwrap();
        assert!(
            journal == log,
            "edge-{}'s journal is not the log, byte for byte\n{}",
            i + 1,
            fleet.logs()
        );
    }
    for proxy in &fleet.proxies {
        assert_eq!(
            proxy
                .log_text()
                .matches("fleet log revision not applied")
                .count(),
            0,
            "{}",
            fleet.logs()
        );
    }
}
