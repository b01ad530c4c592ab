//! SIGKILL the proxy in the middle of a burst of weight changes, many times; every restart
//! must come back with the last acknowledged routing (or the one change that was written
//! but not yet acknowledged when it died), and the journal chain must verify.

mod common;

use common::{Client, Proxy, Setup};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::admin::api::ChangeRequest;
use switchyard::control::journal::verify_file;

const ROUNDS: usize = 20;
const MAX_CHANGES_PER_ROUND: usize = 2_000;

type Weights = BTreeMap<String, u64>;

#[derive(Default)]
struct Progress {
    /// The last change the server acknowledged: (revision, weights).
    acked: Option<(u64, Weights)>,
    /// A change sent but not answered when the process died.
    in_flight: Option<Weights>,
    changes: usize,
}

/// All traffic to one version, with a weight that differs from change to change.
fn random_weights() -> Weights {
    let weight = fastrand::u64(1..1_000_000);
    let (on, off) = if fastrand::bool() {
        ("blue", "canary")
    } else {
        ("canary", "blue")
    };
    BTreeMap::from([(on.to_string(), weight), (off.to_string(), 0)])
}

async fn burst(setup_socket: std::path::PathBuf, progress: Arc<Mutex<Progress>>) {
    let client = switchyard::ctl::client::AdminClient::new(setup_socket);
    for _ in 0..MAX_CHANGES_PER_ROUND {
        let weights = random_weights();
        progress.lock().unwrap().in_flight = Some(weights.clone());
        let request = ChangeRequest {
            actor: Some("crash-test".into()),
            weights: Some(weights.clone()),
            ..ChangeRequest::default()
        };
        match client.change("shop", "weights", &request).await {
            Ok(record) => {
                let mut progress = progress.lock().unwrap();
                progress.acked = Some((record.revision, weights));
                progress.in_flight = None;
                progress.changes += 1;
            }
            Err(_) => return, // the process died under us
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_never_loses_an_acknowledged_change() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 1 }", "");
    let mut last_acked: Option<(u64, Weights)> = None;
    let (mut total_changes, mut in_flight_kept, mut torn) = (0, 0, 0);
    for round in 0..ROUNDS {
        let mut proxy = Proxy::start(&setup, &[]).await;
        if proxy.log_text().contains("torn") {
            torn += 1;
        }
        assert!(
            verify_file(&setup.journal()).is_ok(),
            "round {round}: chain does not verify"
        );
        let (live, live_revision) = live_routing(&setup).await;
        if let Some((revision, weights)) = &last_acked {
            assert_eq!(
                (&live_revision, &live),
                (revision, weights),
                "round {round}: restart did not come back with the last acknowledged change"
            );
            // And traffic follows it.
            let expected = weights.iter().find(|(_, &w)| w > 0).unwrap().0;
            let mut client = Client::connect(proxy.addr).await;
            assert_eq!(&client.get("/").await.1, expected, "round {round}");
        }

        let progress = Arc::new(Mutex::new(Progress {
            acked: last_acked.clone(),
            ..Progress::default()
        }));
        let task = tokio::spawn(burst(setup.socket.clone(), progress.clone()));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(5..60))).await;
        proxy.kill(); // SIGKILL
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        let progress = std::mem::take(&mut *progress.lock().unwrap());
        total_changes += progress.changes;
        last_acked = progress.acked.clone();
        // A change written and fsynced just before the kill, but not yet answered, may
        // survive: then it is what the restart must show (and it is the next revision).
        if let Some(weights) = progress.in_flight {
            drop(proxy);
            let restarted = Proxy::start(&setup, &[]).await;
            if restarted.log_text().contains("torn") {
                torn += 1;
            }
            let (live, revision) = live_routing(&setup).await;
            let acked_revision = last_acked.as_ref().map_or(1, |(r, _)| *r);
            if live == weights && revision == acked_revision + 1 {
                in_flight_kept += 1;
                last_acked = Some((revision, weights));
            }
            drop(restarted);
        }
    }
    eprintln!(
        "{ROUNDS} SIGKILL rounds, {total_changes} acknowledged changes, \
         {in_flight_kept} unacknowledged-but-written changes kept, {torn} torn lines dropped"
    );
    assert!(
        total_changes > ROUNDS,
        "the bursts should have made changes"
    );
}

/// The weights traffic follows now, and the revision they belong to.
async fn live_routing(setup: &Setup) -> (Weights, u64) {
    let status = setup.client().service("shop").await.unwrap();
    let live = status
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    (live, setup.client().status().await.unwrap().revision)
}
