//! A member whose cache disagrees with the fleet log (a line whose bytes, and so hash,
//! differ from the log's) takes the log's records, says so once and carries on following
//! (real `nats-server`, three real switchyard processes).

mod common;

use common::fleet::{log_bytes, Fleet};
use common::nats::NatsNode;
use common::{upstreams, Proxy};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use switchyard::admin::api::ChangeRequest;

const HASH_PREFIX: &str = ",\"hash\":\"";

fn weights(canary: u64, reason: &str) -> ChangeRequest {
    ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".into(), 100 - canary),
            ("canary".into(), canary),
        ])),
        reason: Some(reason.into()),
        ..ChangeRequest::default()
    }
}

/// `line` with `from` replaced by `to` and its own hash made right again: a line that
/// reads as valid but is not the log's.
fn rewritten(line: &str, from: &str, to: &str) -> String {
    let at = line.rfind(HASH_PREFIX).unwrap();
    let body = format!("{}}}", line[..at].replace(from, to));
    let hash: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}{HASH_PREFIX}{hash}\"}}", &body[..body.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_cache_disagrees_with_the_log_takes_the_logs_records_and_follows() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let mut fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 100, canary = 0 }", |_| {
        String::new()
    })
    .await;
    for (canary, reason) in [(10, "first step"), (20, "second step")] {
        fleet
            .client(0)
            .change("shop", "weights", &weights(canary, reason))
            .await
            .unwrap();
    }
    fleet.wait_members(3).await;

    // edge-3's cache gets a last line that is valid on its own but not the log's.
    fleet.proxies[2].terminate();
    let journal = fleet.setups[2].journal();
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let last = lines.pop().unwrap();
    assert!(last.contains("second step"), "{last}");
    lines.push(rewritten(&last, "second step", "second step (cache)"));
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    fleet.proxies[2] = Proxy::start(&fleet.setups[2], &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fleet.proxies[2].log_text().contains("joined the fleet log") {
        assert!(
            std::time::Instant::now() < deadline,
            "edge-3 never rejoined\n{}",
            fleet.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let record = fleet
        .client(2)
        .change("shop", "weights", &weights(30, "from the healed member"))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", fleet.logs()));
    for i in 0..3 {
        fleet.wait_revision_on(i, record.revision).await;
    }
    let log = log_bytes(&nats).await;
    for (i, setup) in fleet.setups.iter().enumerate() {
        let journal = std::fs::read(setup.journal()).unwrap();
        assert!(
            journal == log,
            "edge-{}'s journal is not the log\n{}",
            i + 1,
            fleet.logs()
        );
    }
    let said = fleet.proxies[2]
        .log_text()
        .matches("disagreed with the fleet log")
        .count();
    assert_eq!(said, 1, "{}", fleet.logs());
    let history = fleet.client(2).history("shop", 100).await.unwrap();
    assert!(history
        .revisions
        .iter()
        .all(|r| !r.reason.contains("(cache)")));
}
