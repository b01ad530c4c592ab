//! Webhooks in a fleet: one deliverer per hook (a lease) and a shared cursor, so a
//! receiver gets each revision once from the fleet, not once per instance; when the
//! deliverer is SIGKILLed another carries on from the shared cursor, in order.

mod common;

use common::fleet::Fleet;
use common::hooks::{assert_in_order, until_revision, Receiver};
use common::nats::NatsNode;
use common::{free_addr, upstreams};
use std::collections::BTreeMap;
use std::time::Instant;
use switchyard::admin::api::ChangeRequest;

fn weights(green: u64, reason: &str) -> ChangeRequest {
    ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".into(), 100),
            ("green".into(), green),
        ])),
        reason: Some(reason.into()),
        ..ChangeRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_revision_reaches_a_hook_once_from_the_fleet_and_survives_its_deliverer() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "green"]).await;
    let hook = free_addr();
    let (mut receiver, mut received) = Receiver::new(hook);
    receiver.start().await;
    let hooks = format!("[hooks]\nwebhooks = [\"http://{hook}/hook\"]\ntimeout = \"500ms\"\n");
    let mut fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, green = 0 }", |_| {
        hooks.clone()
    })
    .await;

    // Steady: N changes from all three instances, each revision delivered exactly once.
    let first = fleet.client(0).status().await.unwrap().revision;
    let mut last = first;
    for n in 1..=15u64 {
        let record = fleet
            .client(n as usize % 3)
            .change("shop", "weights", &weights(n, &format!("change {n}")))
            .await
            .unwrap();
        last = record.revision;
    }
    let events = until_revision(&mut received, last).await;
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    let from = revisions.first().copied().unwrap_or(first);
    assert!(
        from <= first + 1,
        "revisions missing at the start: {revisions:?}"
    );
    assert_eq!(
        revisions,
        (from..=last).collect::<Vec<_>>(),
        "not each revision once, in order"
    );
    // Nothing more comes (no other instance delivers the same revisions).
    let late = tokio::time::timeout(std::time::Duration::from_secs(2), received.recv()).await;
    assert!(late.is_err(), "a revision came twice: {late:?}");

    // Kill the deliverer: the others carry on from the shared cursor.
    let deliverers: Vec<usize> = (0..3)
        .filter(|&i| {
            fleet.proxies[i]
                .log_text()
                .contains("took the lease lease=hook.")
        })
        .collect();
    assert_eq!(deliverers.len(), 1, "not one deliverer:\n{}", fleet.logs());
    let dead = deliverers[0];
    fleet.proxies[dead].kill();
    let alive = (dead + 1) % 3;
    let killed = Instant::now();
    let mut after = last;
    for n in 16..=25u64 {
        let record = fleet
            .client(alive)
            .change("shop", "weights", &weights(n, &format!("change {n}")))
            .await
            .unwrap();
        after = record.revision;
    }
    let events = until_revision(&mut received, after).await;
    println!(
        "deliverer SIGKILLed: revisions {}..={after} delivered by another instance {:?} after the kill",
        last + 1,
        killed.elapsed()
    );
    assert_in_order(&events, last);
}
