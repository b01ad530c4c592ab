//! What a stranger with access to NATS can put on the fleet's subjects does not steer or
//! freeze the fleet: three real instances over a real `nats-server`.

mod common;

use common::fleet::{metric, serves_only, Fleet};
use common::nats::NatsNode;
use common::signed_receiver::PythonReceiver;
use common::{free_addr, upstreams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use switchyard::admin::api::ChangeRequest;
use switchyard::config::cluster::ClusterTrust;
use switchyard::control::journal::verify_file;
use switchyard::fleet::trust::Trust;

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
    let started = std::time::Instant::now();
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

    // The store lost: the caches, gaps and all, re-seed the log and changes go on.
    let mut nats = nats;
    nats.kill();
    nats.wipe_store();
    nats.start();
    nats.wait_listening();
    let record = loop {
        match fleet
            .client(0)
            .change("shop", "weights", &weights(50, 50))
            .await
        {
            Ok(record) => break record,
            Err(err) => {
                assert!(
                    started.elapsed() < SOON * 2,
                    "never re-joined: {err}\n{}",
                    fleet.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for i in 0..3 {
        fleet.wait_revision_on(i, record.revision).await;
    }
    fleet.wait_members(3).await;
    let reseeded = assert_same_verified_cache(&fleet);
    assert!(
        reseeded.starts_with(&after),
        "the re-seeded chain is not the old one carried on"
    );
    let listed = fleet.client(1).fleet().await.unwrap();
    assert_eq!(listed.log_revision, Some(record.revision), "{listed:?}");
}

/// Three instances whose `[cluster]` signs with its own key and trusts the three's.
async fn start_signed_fleet(
    nats: &NatsNode,
    versions: &[switchyard_testkit::SampleUpstream],
    weights: &str,
    keys: &Path,
) -> Fleet {
    let key = |i: usize| keys.join(format!("edge-{}.key", i + 1));
    for i in 0..3 {
        switchyard::config::key_files::generate(&key(i)).unwrap();
    }
    let trusted: Vec<String> = (0..3)
        .map(|i| format!("\"{}.pub\"", key(i).display()))
        .collect();
    Fleet::start_with_cluster(
        &[nats],
        versions,
        weights,
        |_| String::new(),
        |i| {
            format!(
                "signing_key = \"{}\"\ntrusted_keys = [{}]",
                key(i).display(),
                trusted.join(", ")
            )
        },
    )
    .await
}

/// A trust that signs with `key` (a member's, or a stranger's).
fn signer(key: &Path) -> Trust {
    Trust::load(Some(&ClusterTrust {
        signing_key: key.to_path_buf(),
        trusted_keys: Vec::new(),
    }))
    .unwrap()
}

/// The last revision line of instance 0's cache, as JSON.
fn last_record(fleet: &Fleet) -> serde_json::Value {
    let cache = std::fs::read(fleet.setups[0].journal()).unwrap();
    let line = cache
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap()
        .to_vec();
    serde_json::from_slice(&line).unwrap()
}

/// A `switch` to the canary chained right after `last` as revision `revision`, with its
/// hash: what an attacker who reads the log can write.
fn forged_switch(last: &serde_json::Value, revision: u64) -> Vec<u8> {
    let mut record = last.clone();
    let object = record.as_object_mut().unwrap();
    let hash = object.remove("hash").unwrap();
    object.insert("prev".into(), hash);
    object.insert("revision".into(), revision.into());
    object.insert("actor".into(), "mallory".into());
    object.insert("reason".into(), "forged".into());
    object.insert("kind".into(), "switch".into());
    object.insert("old".into(), last["new"].clone());
    let mut new = last["new"].clone();
    new["weights"] = serde_json::json!({ "blue": 0, "canary": 100 });
    new["latched"] = false.into();
    new["frozen"] = false.into();
    object.insert("new".into(), new);
    let body = serde_json::to_vec(&record).unwrap();
    let hash: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut line = body[..body.len() - 1].to_vec();
    line.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
    line
}

async fn append_with(nats: &NatsNode, headers: Option<async_nats::HeaderMap>, payload: Vec<u8>) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = "switchyard.edge.revisions";
    let published = match headers {
        Some(headers) => {
            js.publish_with_headers(subject, headers, payload.into())
                .await
        }
        None => js.publish(subject, payload.into()).await,
    };
    published.unwrap().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_revision_is_not_applied_and_raises_the_alarm() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let keys = tempfile::tempdir().unwrap();
    let fleet =
        start_signed_fleet(&nats, &versions, "{ blue = 100, canary = 0 }", keys.path()).await;
    let last = last_record(&fleet);
    let after = last["revision"].as_u64().unwrap();
    let stranger = keys.path().join("mallory.key");
    switchyard::config::key_files::generate(&stranger).unwrap();
    let member = signer(&keys.path().join("edge-1.key"));

    // Correctly chained, each in its turn: unsigned, signed by a stranger, signed by a
    // member over other bytes.
    append_with(&nats, None, forged_switch(&last, after + 1)).await;
    let forged = forged_switch(&last, after + 2);
    append_with(&nats, signer(&stranger).sign(&forged), forged).await;
    let forged = forged_switch(&last, after + 3);
    append_with(&nats, member.sign(b"something else"), forged).await;
    fleet.wait_members(3).await;
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "blue", Duration::ZERO).await,
            "{}",
            fleet.logs()
        );
    }
    for i in 0..3 {
        let fleet_status = fleet.client(i).fleet().await.unwrap();
        let counts: Vec<(String, u64)> = fleet_status
            .rejected
            .iter()
            .map(|k| {
                (
                    format!("{}/{}", k.carrier.as_str(), k.reason.as_str()),
                    k.count,
                )
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("revision/unsigned".to_string(), 1),
                ("revision/unknown_signer".to_string(), 1),
                ("revision/bad_signature".to_string(), 1),
            ],
            "edge-{}",
            i + 1
        );
        let status = fleet.setups[i].ctl(&["status"]);
        let text = common::stdout(&status);
        assert!(
            text.contains("SKIPPED on the fleet's subjects, never applied: 1 revision unsigned, 1 revision unknown signer, 1 revision bad signature"),
            "{text}"
        );
    }
    // The same record, signed by a member, is the fleet's: the forgeries above failed only
    // for want of a member's signature.
    let genuine = forged_switch(&last, after + 4);
    append_with(&nats, member.sign(&genuine), genuine).await;
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "canary", SOON).await,
            "{}",
            fleet.logs()
        );
    }
    fleet.wait_members(3).await;
    assert_same_verified_cache(&fleet);
}

/// An evidence report as members publish it (postcard, see `fleet::evidence`).
#[derive(serde::Serialize)]
struct Report {
    format: u8,
    instance: String,
    started_ms: u64,
    slice: u64,
    versions: Vec<VersionSlice>,
    /// Shadow findings (none here; an empty list encodes alike whatever its type).
    shadows: Vec<u8>,
}

#[derive(serde::Serialize)]
struct VersionSlice {
    service: String,
    version: String,
    counts: [u64; 8],
    saved: u64,
    latency: Vec<(u64, u64)>,
}

/// One slice from a made-up member: stable clean, the canary failing half its requests.
fn forged_evidence(slice: u64) -> Vec<u8> {
    let version = |name: &str, ok: u64, failed: u64| VersionSlice {
        service: "shop".into(),
        version: name.into(),
        // 2xx, 3xx, 4xx, 5xx, ...
        counts: [ok, 0, 0, failed, 0, 0, 0, 0],
        saved: 0,
        latency: vec![(2_000, ok + failed)],
    };
    postcard::to_allocvec(&Report {
        format: 3,
        instance: "edge-9".into(),
        started_ms: 1,
        slice,
        versions: vec![version("blue", 167, 0), version("canary", 84, 83)],
        shadows: Vec::new(),
    })
    .unwrap()
}

/// Publishes twelve forged slices (2,000 requests), 250 ms apart, signed by `by`.
async fn publish_forged_evidence(nats: &NatsNode, by: Option<&Trust>) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    for slice in 0..12 {
        let payload = forged_evidence(slice);
        let subject = "switchyard.edge.evidence";
        match by.and_then(|t| t.sign(&payload)) {
            Some(headers) => {
                client
                    .publish_with_headers(subject, headers, payload.into())
                    .await
            }
            None => client.publish(subject, payload.into()).await,
        }
        .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    client.flush().await.unwrap();
}

async fn latched(fleet: &Fleet, i: usize) -> bool {
    fleet.client(i).service("shop").await.unwrap().latched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_evidence_has_no_effect_on_any_verdict() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let keys = tempfile::tempdir().unwrap();
    let fleet =
        start_signed_fleet(&nats, &versions, "{ blue = 90, canary = 10 }", keys.path()).await;
    let stranger = keys.path().join("mallory.key");
    switchyard::config::key_files::generate(&stranger).unwrap();

    publish_forged_evidence(&nats, None).await;
    publish_forged_evidence(&nats, Some(&signer(&stranger))).await;
    // Every instance saw all 24 and its guard looked at least twice since.
    for i in 0..3 {
        let client = fleet.client(i);
        let deadline = std::time::Instant::now() + SOON;
        let looks = metric(&client, "switchyard_guard_looks_total").await;
        loop {
            let unsigned = metric(
                &client,
                "switchyard_fleet_rejected_total{carrier=\"evidence\",reason=\"unsigned\"}",
            )
            .await;
            let unknown = metric(
                &client,
                "switchyard_fleet_rejected_total{carrier=\"evidence\",reason=\"unknown_signer\"}",
            )
            .await;
            let looked = metric(&client, "switchyard_guard_looks_total").await - looks;
            if unsigned == 12.0 && unknown == 12.0 && looked >= 2.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "edge-{}: {unsigned} unsigned, {unknown} unknown signer, {looked} looks",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !latched(&fleet, i).await,
            "edge-{} cut back on forged evidence",
            i + 1
        );
    }

    // The same reports signed by a member's key are the fleet's evidence: the forgeries
    // failed only for want of a signature.
    publish_forged_evidence(&nats, Some(&signer(&keys.path().join("edge-2.key")))).await;
    for i in 0..3 {
        let deadline = std::time::Instant::now() + SOON;
        while !latched(&fleet, i).await {
            assert!(
                std::time::Instant::now() < deadline,
                "edge-{} did not judge signed evidence\n{}",
                i + 1,
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Those signed reports captured and sent again are replays: not filed a second time.
    publish_forged_evidence(&nats, Some(&signer(&keys.path().join("edge-2.key")))).await;
    let replayed = "switchyard_fleet_rejected_total{carrier=\"evidence\",reason=\"replayed\"}";
    for i in 0..3 {
        let client = fleet.client(i);
        let deadline = std::time::Instant::now() + SOON;
        while metric(&client, replayed).await < 12.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "edge-{}: replays filed",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_keeps_a_held_abort_is_reseeded_from_the_caches_and_raises_a_signed_alarm() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("hook.secret");
    std::fs::write(&secret, "fleet-alarm-secret\n").unwrap();
    let hook = free_addr();
    let mut receiver = PythonReceiver::start(hook.port(), &secret, None)
        .listening(hook)
        .await;
    let hooks = format!(
        "[hooks]\nwebhooks = [\"http://{hook}/events\"]\nsecret_file = \"{}\"\ntimeout = \"2s\"\n",
        secret.display()
    );
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        hooks.clone()
    })
    .await;
    fleet
        .client(0)
        .change("shop", "weights", &weights(0, 100))
        .await
        .unwrap();
    for proxy in &fleet.proxies {
        assert!(serves_only(proxy.addr, "canary", SOON).await);
    }
    nats.kill();
    let aborted = fleet.setups[1].ctl(&["abort", "shop", "--reason", "bad canary, NATS down"]);
    assert!(aborted.status.success(), "{}", common::stderr(&aborted));
    assert!(serves_only(fleet.proxies[1].addr, "blue", SOON).await);

    // During the outage `ctl fleet` says NATS is unreachable, and fails.
    let listed = fleet.setups[0].ctl(&["fleet"]);
    assert!(!listed.status.success());
    let text = common::stdout(&listed) + &common::stderr(&listed);
    assert!(text.contains("NATS UNREACHABLE from edge-1"), "{text}");

    // NATS comes back with nothing: the log forgot every revision.
    nats.wipe_store();
    nats.start();
    nats.wait_listening();
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "blue", SOON).await,
            "{} does not serve the held abort after the store was lost\n{}",
            proxy.addr,
            fleet.logs()
        );
    }
    fleet.wait_members(3).await;
    assert!(latched(&fleet, 1).await, "{}", fleet.logs());
    let history = fleet.client(2).history("shop", 100).await.unwrap();
    let aborts = history
        .revisions
        .iter()
        .filter(|r| r.kind == switchyard::control::record::ChangeKind::Abort)
        .count();
    assert_eq!(aborts, 1, "{history:#?}");
    // One chain again, the same on all three, and the log holds it.
    let cache = assert_same_verified_cache(&fleet);
    let revisions = cache
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let listed = fleet.client(0).fleet().await.unwrap();
    assert_eq!(listed.log_revision, Some(revisions), "{listed:?}");
    assert!(
        fleet.logs().contains("the fleet log went back"),
        "{}",
        fleet.logs()
    );

    // The receiver hears of it as a signed alarm, once for the fleet: the member that
    // carried the log on recorded it, the others found it recorded.
    let alarm = receiver
        .until(|line| line["body"]["kind"] == "fleet_log_went_back")
        .await;
    assert_eq!(alarm["verified"], true, "{alarm}");
    assert_eq!(alarm["event"], "alarm", "{alarm}");
    let body = &alarm["body"];
    assert_eq!(body["event"], "alarm", "{body}");
    assert_eq!(body["evidence"]["log_held"], 0, "{body}");
    assert_eq!(body["service"], "shop", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the fleet log went back: it held 0 revision(s)"),
        "{reason}"
    );
    let history = fleet.client(0).history("shop", 100).await.unwrap();
    let alarms = history
        .revisions
        .iter()
        .filter(|r| r.kind == switchyard::control::record::ChangeKind::FleetLogWentBack)
        .count();
    assert_eq!(alarms, 1, "{history:#?}");
}
