//! What a stranger with access to NATS can put on the fleet's subjects does not steer or
//! freeze the fleet: three real instances over a real `nats-server`.

mod common;

use common::fleet::{serves_only, Fleet};
use common::nats::NatsNode;
use common::upstreams;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard::admin::api::ChangeRequest;
use switchyard::control::journal::verify_file;

const SOON: Duration = Duration::from_secs(20);

fn weights(blue: u64, canary: u64) -> ChangeRequest {
    ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".to_string(), blue),
            ("canary".to_string(), canary),
        ])),
        reason: Some("after garbage".to_string()),
        ..ChangeRequest::default()
    }
}

/// Appends `payload` to the fleet's revision stream as a plain NATS client would.
async fn append_raw(nats: &NatsNode, payload: Vec<u8>) -> u64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let ack = js
        .publish("switchyard.edge.revisions", payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    ack.sequence
}

/// Every instance's cache is the same file and its chain verifies.
fn assert_same_verified_cache(fleet: &Fleet) -> Vec<u8> {
    let caches: Vec<Vec<u8>> = fleet
        .setups
        .iter()
        .map(|s| {
            verify_file(&s.journal()).unwrap_or_else(|err| panic!("cache does not verify: {err}"));
            std::fs::read(s.journal()).unwrap()
        })
        .collect();
    for (i, cache) in caches.iter().enumerate().skip(1) {
        assert!(
            cache == &caches[0],
            "instance {i}'s cache differs from instance 0's"
        );
    }
    caches[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_revision_subject_freezes_nothing() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        String::new()
    })
    .await;
    let before = assert_same_verified_cache(&fleet);
    let last_line = before
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap()
        .to_vec();
    // What a stranger may append: garbage, an empty entry, JSON of another shape, a replay
    // of the last revision (right shape, wrong place), a large blob.
    let bad: Vec<Vec<u8>> = vec![
        b"not a revision".to_vec(),
        Vec::new(),
        b"{}".to_vec(),
        last_line,
        vec![0xff; 64 * 1024],
    ];
    let mut last = 0;
    for payload in bad {
        last = append_raw(&nats, payload).await;
    }

    // A change on one instance goes through and every instance serves it.
    let record = fleet
        .client(1)
        .change("shop", "weights", &weights(0, 100))
        .await
        .unwrap_or_else(|err| panic!("change refused after garbage: {err}\n{}", fleet.logs()));
    assert_eq!(
        record.revision,
        last + 1,
        "appended right after the garbage"
    );
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "canary", SOON).await,
            "{}",
            fleet.logs()
        );
    }
    // So does an operator's abort, from another instance.
    let aborted = fleet.setups[2].ctl(&["abort", "shop", "--reason", "after garbage"]);
    assert!(aborted.status.success(), "{}", common::stderr(&aborted));
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "blue", SOON).await,
            "{}",
            fleet.logs()
        );
    }
    fleet.wait_members(3).await;
    // The caches hold only revisions: the same verified chain, the garbage left out.
    let after = assert_same_verified_cache(&fleet);
    assert_eq!(
        after
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        before
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            + 2
    );
    // Skipped, counted, said once per kind (not once per attempt).
    let metrics = common::fleet::metric(
        &fleet.client(0),
        "switchyard_fleet_rejected_total{carrier=\"revision\",reason=\"malformed\"}",
    )
    .await;
    assert_eq!(metrics, 4.0);
    let out_of_chain = common::fleet::metric(
        &fleet.client(0),
        "switchyard_fleet_rejected_total{carrier=\"revision\",reason=\"out_of_chain\"}",
    )
    .await;
    assert_eq!(out_of_chain, 1.0);
    let said = fleet.proxies[0]
        .log_text()
        .matches("fleet revision skipped")
        .count();
    assert_eq!(said, 2, "{}", fleet.proxies[0].log_text());
    let listed = fleet.setups[0].ctl(&["fleet"]);
    let text = common::stdout(&listed);
    assert!(text.contains("SKIPPED on the fleet's subjects, never applied: 4 revision malformed, 1 revision out of chain"), "{text}");
}
