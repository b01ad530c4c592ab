//! Requesters that go away mid-change (a `ctl` killed by Ctrl-C, a curl with a short
//! `--max-time`, a dropped future) never leave a change half-done: it completes or never
//! starts. Afterwards the journal verifies, its revisions are contiguous, the routing in
//! force is the last journaled one, and a restart (clean or SIGKILL) comes back with it.

mod common;

use common::{Proxy, Setup};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use switchyard::admin::api::ChangeRequest;
use switchyard::control::journal::verify_file;
use switchyard::control::record::RevisionRecord;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const HANGUPS: usize = 60;

fn weights_body(canary: u64) -> String {
    format!(
        "{{\"weights\":{{\"blue\":{},\"canary\":{canary}}},\"reason\":\"hangup\"}}",
        100 - canary
    )
}

/// Writes a weights change on the admin socket and hangs up: after the whole request
/// (before the answer), or part-way through its body.
async fn hang_up(socket: &Path, canary: u64, mid_body: bool) {
    let body = weights_body(canary);
    let head = format!(
        "PUT /services/shop/weights HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let sent = if mid_body { body.len() / 2 } else { body.len() };
    stream.write_all(&body.as_bytes()[..sent]).await.unwrap();
    if !mid_body && fastrand::bool() {
        // Sometimes give the server a moment to start the change before hanging up.
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3_000))).await;
    }
    drop(stream);
}

fn journal_records(path: &Path) -> Vec<RevisionRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The journal verifies, its revisions are 1, 2, 3, ... and the last one is returned.
fn check_journal(path: &Path) -> RevisionRecord {
    verify_file(path).unwrap_or_else(|err| panic!("journal does not verify: {err}"));
    let records = journal_records(path);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            record.revision,
            index as u64 + 1,
            "revisions must be contiguous"
        );
    }
    records.last().cloned().expect("a journal with revisions")
}

async fn live(setup: &Setup) -> (u64, BTreeMap<String, u64>) {
    let status = setup.client().status().await.unwrap();
    let shop = status.services.iter().find(|s| s.name == "shop").unwrap();
    let weights = shop
        .versions
        .iter()
        .filter(|v| v.weight > 0)
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    (status.revision, weights)
}

/// The journal's last revision once the proxy has taken in every change it was sent: the
/// journal stops growing and the routing in force is its last revision (bounded wait).
async fn settled(setup: &Setup) -> RevisionRecord {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut before = check_journal(&setup.journal()).revision;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = check_journal(&setup.journal());
        if last.revision == before && live(setup).await.0 == last.revision {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the journal never settled"
        );
        before = last.revision;
    }
}

fn in_force(record: &RevisionRecord) -> (u64, BTreeMap<String, u64>) {
    let state = record.new.as_ref().unwrap();
    let weights = state
        .weights
        .iter()
        .filter(|(_, &w)| w > 0)
        .map(|(v, &w)| (v.clone(), w))
        .collect();
    (record.revision, weights)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_clients_that_hang_up_mid_change_leave_a_sound_journal() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;

    let mut tasks = Vec::new();
    for i in 0..HANGUPS {
        let socket = setup.socket.clone();
        let mid_body = i % 3 == 0;
        tasks.push(tokio::spawn(async move {
            hang_up(&socket, 1 + i as u64 % 90, mid_body).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // One normal change, answered: weights no hang-up sends (theirs give canary 1 to
    // 60), so a hang-up that landed last cannot make it a no-op.
    let request = ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".to_string(), 23),
            ("canary".to_string(), 77),
        ])),
        ..ChangeRequest::default()
    };
    let acked = setup
        .client()
        .change("shop", "weights", &request)
        .await
        .unwrap_or_else(|err| panic!("a change after the hang-ups failed: {err}"));

    // A hang-up whose request the server had not read yet may still land after it.
    let last = settled(&setup).await;
    assert!(
        last.revision >= acked.revision,
        "the acknowledged change is kept"
    );
    assert_eq!(live(&setup).await, in_force(&last), "routing in force");

    proxy.terminate();
    let mut proxy = Proxy::start(&setup, &[]).await;
    assert_eq!(live(&setup).await, in_force(&last), "after a clean restart");
    proxy.kill();
    let _proxy = Proxy::start(&setup, &[]).await;
    assert_eq!(live(&setup).await, in_force(&last), "after SIGKILL");
    assert_eq!(check_journal(&setup.journal()).revision, last.revision);
}

async fn start_in_process(setup: &Setup) -> switchyard::run::RunningProxy {
    let config = switchyard::config::Config::load(&setup.config).unwrap();
    switchyard::run::RunningProxy::start(config, &setup.config, 1)
        .await
        .unwrap()
}

/// The routing the data plane runs and the controller holds agree with the journal's last
/// revision, in this process and after restarting the real binary on the same state.
async fn check_in_force(proxy: switchyard::run::RunningProxy, setup: &Setup) {
    let last = check_journal(&setup.journal());
    let table_revision = proxy.controller.plane.table.load().revision;
    assert_eq!(
        table_revision, last.revision,
        "the table runs the last revision"
    );
    let routing = proxy.controller.routing("shop").await.unwrap();
    assert_eq!(Some(&routing), last.new.as_ref());
    proxy.shutdown().await;
    let mut binary = Proxy::start(setup, &[]).await;
    assert_eq!(live(setup).await, in_force(&last), "after a restart");
    binary.kill();
    let _binary = Proxy::start(setup, &[]).await;
    assert_eq!(live(setup).await, in_force(&last), "after SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_change_futures_complete_or_never_start() {
    use switchyard::control::command::Change;
    use switchyard::control::record::Origin;
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let proxy = start_in_process(&setup).await;
    for i in 0..200u64 {
        let canary = 1 + i % 90;
        let change = Change::Weights {
            weights: BTreeMap::from([
                ("blue".to_string(), 100 - canary),
                ("canary".to_string(), canary),
            ]),
        };
        let apply = proxy
            .controller
            .apply("shop", change, Origin::new("test", "dropped"));
        // Polled once (0) or for a while, then dropped wherever it stands.
        let wait = Duration::from_micros(fastrand::u64(0..2_000) * u64::from(i % 2 == 1));
        let _ = tokio::time::timeout(wait, apply).await;
    }
    let last = proxy
        .controller
        .apply(
            "shop",
            Change::Weights {
                weights: BTreeMap::from([("blue".to_string(), 61), ("canary".to_string(), 39)]),
            },
            Origin::new("test", "answered"),
        )
        .await
        .unwrap();
    assert_eq!(check_journal(&setup.journal()).revision, last.revision);
    check_in_force(proxy, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reloads_complete_or_never_start() {
    use switchyard::control::record::Origin;
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let proxy = start_in_process(&setup).await;
    for i in 0..60u64 {
        let canary = 1 + i % 90;
        setup.write(
            &upstreams,
            &format!("{{ blue = {}, canary = {canary} }}", 100 - canary),
            "",
        );
        let reload = proxy.controller.reload(Origin::new("test", "dropped"));
        let wait = Duration::from_micros(fastrand::u64(0..5_000) * u64::from(i % 2 == 1));
        let _ = tokio::time::timeout(wait, reload).await;
    }
    setup.write(&upstreams, "{ blue = 58, canary = 42 }", "");
    let reloaded = proxy
        .controller
        .reload(Origin::new("test", "answered"))
        .await
        .unwrap();
    assert_eq!(check_journal(&setup.journal()).revision, reloaded.revision);
    let routing = proxy.controller.routing("shop").await.unwrap();
    assert_eq!(
        routing.weights,
        BTreeMap::from([("blue".to_string(), 58), ("canary".to_string(), 42)]),
        "the file read last is the one in force"
    );
    check_in_force(proxy, &setup).await;
}
