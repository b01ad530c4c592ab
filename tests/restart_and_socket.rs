//! Restarts of the real binary: replayed routing, torn and broken journals, and the admin
//! socket's ownership rules.

mod common;

use common::{stderr, Client, Proxy, Setup};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use switchyard::admin::api::ChangeRequest;
use switchyard::control::journal::verify_file;

fn weights(pairs: &[(&str, u64)]) -> ChangeRequest {
    ChangeRequest {
        weights: Some(pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect()),
        reason: Some("test".into()),
        ..ChangeRequest::default()
    }
}

async fn live_weights(setup: &Setup) -> BTreeMap<String, u64> {
    let status = setup.client().service("shop").await.unwrap();
    status
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_routing_and_the_abort_latch() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    let client = setup.client();
    client
        .change("shop", "weights", &weights(&[("blue", 30), ("canary", 70)]))
        .await
        .unwrap();
    client
        .change("shop", "abort", &ChangeRequest::default())
        .await
        .unwrap();
    proxy.terminate();
    let proxy = Proxy::start(&setup, &[]).await;
    let status = setup.client().service("shop").await.unwrap();
    assert!(status.latched, "an abort is never forgotten");
    assert_eq!(
        live_weights(&setup).await["canary"],
        70,
        "not the config's initial weights"
    );
    let mut http = Client::connect(proxy.addr).await;
    assert_eq!(http.tally(20).await, BTreeMap::from([("blue".into(), 20)]));
    drop(proxy);

    // The file's weights edited while the proxy was down: applied at start, latch kept.
    setup.write(&upstreams, "{ blue = 50, canary = 50 }", "");
    let _proxy = Proxy::start(&setup, &[]).await;
    assert_eq!(live_weights(&setup).await["canary"], 50);
    assert!(setup.client().service("shop").await.unwrap().latched);
    let last = last_revision(&setup).await;
    assert_eq!(
        (last.actor.as_str(), last.kind.label()),
        ("startup", "config_edit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_dropped_with_a_warning() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    setup
        .client()
        .change("shop", "weights", &weights(&[("blue", 60), ("canary", 40)]))
        .await
        .unwrap();
    proxy.kill();
    let good = std::fs::read(setup.journal()).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(br#"{"revision":3,"time":"2030-01-01T00:00:00.000Z","time_ms":1,"serv"#);
    std::fs::write(setup.journal(), &torn).unwrap();
    let proxy = Proxy::start(&setup, &[]).await;
    assert!(
        proxy.log_text().contains("torn last journal line"),
        "{}",
        proxy.log_text()
    );
    assert_eq!(std::fs::read(setup.journal()).unwrap(), good);
    assert_eq!(live_weights(&setup).await["canary"], 40);
    verify_file(&setup.journal()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chain_refuses_to_start_unless_accepted() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    for canary in [10, 20, 30] {
        let change = weights(&[("blue", 100 - canary), ("canary", canary)]);
        setup
            .client()
            .change("shop", "weights", &change)
            .await
            .unwrap();
    }
    proxy.kill();
    let text = std::fs::read_to_string(setup.journal()).unwrap();
    let edited = text.replacen("\"canary\":10", "\"canary\":99", 1);
    assert_ne!(text, edited);
    std::fs::write(setup.journal(), &edited).unwrap();

    let log = Proxy::try_start(&setup, &[])
        .await
        .err()
        .expect("must refuse to start");
    let line = log
        .lines()
        .find(|l| l.contains("chain is broken"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("journal.jsonl:2:") && line.contains("--accept-broken-journal"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(setup.journal()).unwrap(),
        edited,
        "refusing changes nothing"
    );

    let _proxy = Proxy::start(&setup, &["--accept-broken-journal"]).await;
    assert_eq!(
        live_weights(&setup).await["canary"],
        30,
        "the state that still reads is kept"
    );
    let kept: Vec<_> = std::fs::read_dir(setup.dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("journal.broken-"))
        .collect();
    assert_eq!(kept.len(), 1, "the broken journal is kept aside");
    verify_file(&setup.journal()).unwrap();
    let last = last_revision(&setup).await;
    assert_eq!(last.kind.label(), "recovered");
    assert!(last.reason.contains("line 2"), "{}", last.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_is_private_and_never_stolen() {
    let upstreams = common::upstreams(&["blue"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 1 }", "");
    // A stale socket file from a crashed run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&setup.socket).unwrap());
    assert!(setup.socket.exists());
    let mut proxy = Proxy::start(&setup, &[]).await;
    let meta = std::fs::symlink_metadata(&setup.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // A live one is not: a second proxy (own state dir) on the same socket refuses.
    let second = Setup::new(&upstreams, "{ blue = 1 }", "");
    let config = std::fs::read_to_string(&second.config).unwrap();
    let config = config.replace(
        &second.socket.display().to_string(),
        &setup.socket.display().to_string(),
    );
    std::fs::write(&second.config, config).unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&second.config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("another switchyard is answering"),
        "{}",
        stderr(&output)
    );
    assert!(
        setup.client().status().await.is_ok(),
        "the first proxy still answers"
    );

    // A file that is not a socket is never removed.
    proxy.terminate();
    assert!(!setup.socket.exists(), "a clean exit removes the socket");
    std::fs::write(&setup.socket, "precious").unwrap();
    let log = Proxy::try_start(&setup, &[])
        .await
        .err()
        .expect("must refuse");
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&setup.socket).unwrap(), "precious");
}

/// The service's newest revision.
async fn last_revision(setup: &Setup) -> switchyard::control::record::RevisionRecord {
    let mut history = setup.client().history("shop", 1).await.unwrap();
    history.revisions.remove(0)
}
