//! A fleet: three real switchyard processes sharing one routing through real `nats-server`
//! processes (single node, and a three-node JetStream cluster with replicas 3).

mod common;

use common::fleet::Fleet;
use common::nats::NatsNode;
use common::{upstreams, Proxy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use switchyard::admin::api::ChangeRequest;
use switchyard::control::journal::verify_file;
use switchyard::control::record::ChangeKind;
use switchyard_testkit::SampleUpstream;

/// Three instances of fleet "edge", blue serving all, started and joined.
async fn start_fleet(nodes: &[&NatsNode], upstreams: &[SampleUpstream]) -> Fleet {
    Fleet::start_with(nodes, upstreams, "{ blue = 100, canary = 0 }", |_| {
        String::new()
    })
    .await
}

/// Waits until each of `instances` runs `revision`; returns how long each took from `from`.
async fn wait_revision_on(
    fleet: &Fleet,
    instances: &[usize],
    revision: u64,
    from: Instant,
) -> Vec<Duration> {
    let mut took = Vec::new();
    for &i in instances {
        took.push(fleet.wait_revision_on(i, revision).await - from);
    }
    took
}

/// Waits until every instance runs `revision`; returns how long each took from `from`.
async fn wait_revision(fleet: &Fleet, revision: u64, from: Instant) -> Vec<Duration> {
    wait_revision_on(fleet, &[0, 1, 2], revision, from).await
}

fn weights(blue: u64, canary: u64, reason: &str) -> ChangeRequest {
    ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".to_string(), blue),
            ("canary".to_string(), canary),
        ])),
        reason: Some(reason.to_string()),
        ..ChangeRequest::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Every instance's local cache is the same verified chain, revisions 1..=N.
fn assert_one_chain(fleet: &Fleet) -> usize {
    let journals: Vec<Vec<u8>> = fleet
        .setups
        .iter()
        .map(|s| {
            verify_file(&s.journal()).unwrap_or_else(|err| panic!("cache does not verify: {err}"));
            std::fs::read(s.journal()).unwrap()
        })
        .collect();
    let records: Vec<serde_json::Value> = journals[0]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["revision"], i as u64 + 1, "revisions have a gap");
    }
    for (i, journal) in journals.iter().enumerate().skip(1) {
        assert!(
            journal == &journals[0],
            "instance {i}'s cache differs from instance 0's"
        );
    }
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_is_served_by_all_three() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = start_fleet(&[&nats], &versions).await;
    let http = common::client();

    let mut propagation = Vec::new();
    for n in 0..50u64 {
        let canary = if n % 2 == 0 { 100 } else { 0 };
        let started = Instant::now();
        let record = fleet
            .client(n as usize % 3)
            .change(
                "shop",
                "weights",
                &weights(100 - canary, canary, "propagation"),
            )
            .await
            .unwrap();
        let took = wait_revision(&fleet, record.revision, started).await;
        propagation.push(*took.iter().max().unwrap());
    }
    // What each instance serves now is the last change (canary at 0).
    for proxy in &fleet.proxies {
        let reply = common::get(&http, proxy.addr, "/", &[]).await;
        assert_eq!(reply.version.as_deref(), Some("blue"), "{reply:?}");
    }
    let record = fleet
        .client(1)
        .change("shop", "weights", &weights(0, 100, "all to canary"))
        .await
        .unwrap();
    wait_revision(&fleet, record.revision, Instant::now()).await;
    for proxy in &fleet.proxies {
        let reply = common::get(&http, proxy.addr, "/", &[]).await;
        assert_eq!(reply.version.as_deref(), Some("canary"), "{reply:?}");
    }
    propagation.sort();
    println!(
        "fleet propagation over 50 changes (ack on one instance -> all three applied): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99),
        propagation.last().unwrap()
    );
    // The aim is 100 ms; a loaded two-core machine is only held to a generous bound.
    assert!(
        percentile(&propagation, 0.99) < Duration::from_secs(2),
        "{propagation:?}"
    );
    fleet.wait_members(3).await;
    let listed = fleet.client(2).fleet().await.unwrap();
    assert_eq!(
        listed
            .members
            .iter()
            .map(|m| m.instance.as_str())
            .collect::<Vec<_>>(),
        ["edge-1", "edge-2", "edge-3"]
    );
    let ctl = fleet.setups[1].ctl(&["fleet"]);
    assert!(ctl.status.success(), "{}", common::stderr(&ctl));
    let text = common::stdout(&ctl);
    assert!(text.contains("fleet edge: 3 member(s)"), "{text}");
    assert!(text.contains("edge-3"), "{text}");
    assert_eq!(assert_one_chain(&fleet) as u64, record.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_two_instances_make_one_gap_free_chain() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = start_fleet(&[&nats], &versions).await;
    let before = fleet.client(0).status().await.unwrap().revision;
    let mut tasks = Vec::new();
    for instance in 0..2 {
        for n in 0..100u64 {
            let client = fleet.client(instance);
            tasks.push(tokio::spawn(async move {
                let reason = format!("instance {instance} change {n}");
                client
                    .change(
                        "shop",
                        "weights",
                        &weights(1000, 1 + instance as u64 * 100 + n, &reason),
                    )
                    .await
            }));
        }
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        let record = task
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("change refused: {err}"));
        acknowledged.push(record.revision);
    }
    acknowledged.sort();
    acknowledged.dedup();
    assert_eq!(acknowledged.len(), 200, "two changes got the same revision");
    let last = *acknowledged.last().unwrap();
    assert_eq!(last, before + 200, "revisions are not contiguous");
    wait_revision(&fleet, last, Instant::now()).await;
    fleet.wait_members(3).await;
    assert_eq!(assert_one_chain(&fleet) as u64, last);
    // Every acknowledged change is in the history once.
    let history = fleet.client(2).history("shop", 1000).await.unwrap();
    let reasons: std::collections::BTreeSet<String> = history
        .revisions
        .iter()
        .filter(|r| r.reason.starts_with("instance "))
        .map(|r| r.reason.clone())
        .collect();
    assert_eq!(reasons.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nats_node_of_three_down_changes_nothing() {
    let mut nodes = NatsNode::cluster();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = {
        let refs: Vec<&NatsNode> = nodes.iter().collect();
        start_fleet(&refs, &versions).await
    };
    // The fleet is formed (every instance applied the seeded routing) before a node goes.
    wait_revision(&fleet, 1, Instant::now()).await;
    nodes[1].kill();
    for n in 0..10u64 {
        let record = fleet
            .client(n as usize % 3)
            .change("shop", "weights", &weights(90, 10 + n, "one node down"))
            .await
            .unwrap_or_else(|err| panic!("change refused with one NATS node down: {err}"));
        wait_revision(&fleet, record.revision, Instant::now()).await;
    }
    assert_one_chain(&fleet);
}

/// Waits (bounded) until `proxy` serves only `version` on a few requests.
async fn wait_serving(proxy: &Proxy, version: &str) {
    assert!(
        serves_within(proxy, version, Duration::from_secs(20)).await,
        "{} never served only {version}",
        proxy.addr
    );
}

async fn serves_within(proxy: &Proxy, version: &str, limit: Duration) -> bool {
    let http = common::client();
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for _ in 0..10 {
            let reply = common::get(&http, proxy.addr, "/", &[]).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            all &= reply.version.as_deref() == Some(version);
        }
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_serves_refuses_changes_and_holds_an_abort_until_it_is_back() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = start_fleet(&[&nats], &versions).await;
    let record = fleet
        .client(0)
        .change("shop", "weights", &weights(0, 100, "all to canary"))
        .await
        .unwrap();
    wait_revision(&fleet, record.revision, Instant::now()).await;
    nats.kill();

    // Every instance keeps serving the last routing.
    for proxy in &fleet.proxies {
        wait_serving(proxy, "canary").await;
    }
    // An operator change is refused with one clear line, and changes nothing.
    let refused = fleet.setups[0].ctl(&["weights", "shop", "blue=50", "canary=50"]);
    assert!(!refused.status.success());
    let line = common::stderr(&refused);
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    assert!(line.contains("unreachable"), "{line}");
    assert_eq!(
        fleet.client(0).status().await.unwrap().revision,
        record.revision
    );

    // An abort applies here at once, with NATS still down.
    let started = Instant::now();
    let aborted = fleet.setups[1].ctl(&["abort", "shop", "--reason", "bad canary, NATS down"]);
    assert!(aborted.status.success(), "{}", common::stderr(&aborted));
    wait_serving(&fleet.proxies[1], "blue").await;
    println!(
        "abort during a NATS outage served locally after {:?}",
        started.elapsed()
    );
    wait_serving(&fleet.proxies[0], "canary").await;

    // NATS back: the abort reaches the log once and every instance applies it.
    nats.start();
    nats.wait_listening();
    for proxy in &fleet.proxies {
        if !serves_within(proxy, "blue", Duration::from_secs(20)).await {
            for proxy in &fleet.proxies {
                eprintln!("---- {}\n{}", proxy.addr, proxy.log_text());
            }
            panic!(
                "{} does not serve the held abort after NATS returned",
                proxy.addr
            );
        }
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
    assert_one_chain(&fleet);
    // Changes go through again.
    fleet
        .client(0)
        .change("shop", "weights", &weights(90, 10, "after the outage"))
        .await
        .unwrap();
    let log = fleet.proxies[1].log_text();
    assert_eq!(log.matches("NATS unreachable").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_while_nats_is_down_serves_from_its_cache() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let mut fleet = start_fleet(&[&nats], &versions).await;
    let record = fleet
        .client(0)
        .change("shop", "weights", &weights(0, 100, "all to canary"))
        .await
        .unwrap();
    wait_revision(&fleet, record.revision, Instant::now()).await;
    fleet.proxies[2].terminate();
    nats.kill();
    let restarted = Proxy::start(&fleet.setups[2], &[]).await;
    wait_serving(&restarted, "canary").await;
    let status = fleet.client(2).status().await.unwrap();
    assert_eq!(status.revision, record.revision);
    let listed = fleet.setups[2].ctl(&["fleet"]);
    assert!(!listed.status.success());
    assert!(
        common::stdout(&listed).contains("NATS UNREACHABLE"),
        "{}",
        common::stdout(&listed)
    );
    fleet.proxies[2] = restarted;
    nats.start();
    nats.wait_listening();
    fleet.wait_members(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_instance_during_changes_loses_no_acknowledged_change() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let mut fleet = start_fleet(&[&nats], &versions).await;
    let client = fleet.client(0);
    let changes = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for n in 1..=200u64 {
            match client
                .change("shop", "weights", &weights(1000, n, &format!("change {n}")))
                .await
            {
                Ok(record) => acknowledged.push(record.reason),
                Err(_) => break,
            }
        }
        acknowledged
    });
    // Changes go at a few hundred a second: 300 ms in, the kill lands among them.
    let mid_changes = Duration::from_millis(300);
    tokio::time::sleep(mid_changes).await;
    fleet.proxies[0].kill();
    let acknowledged = changes.await.unwrap();
    assert!(!acknowledged.is_empty());
    let last = fleet.client(1).status().await.unwrap().revision;
    let history = fleet.client(1).history("shop", 1000).await.unwrap();
    let logged: std::collections::BTreeSet<String> =
        history.revisions.iter().map(|r| r.reason.clone()).collect();
    for reason in &acknowledged {
        assert!(
            logged.contains(reason),
            "acknowledged {reason:?} is not in the log"
        );
    }
    wait_revision_on(&fleet, &[1, 2], last, Instant::now()).await;
    println!(
        "{} changes acknowledged before SIGKILL, all in the log",
        acknowledged.len()
    );
}
