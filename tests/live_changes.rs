//! Changes while traffic flows: no request errors across weight changes, webhooks that
//! never delay a change, and the Prometheus metrics.

mod common;

use common::{admin_raw, Client, Setup};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use switchyard::admin::api::ChangeRequest;
use switchyard::config::Config;
use switchyard::run::RunningProxy;
use tokio::sync::mpsc;

async fn start(setup: &Setup) -> RunningProxy {
    let config = Config::load(&setup.config).unwrap();
    RunningProxy::start(config, &setup.config, 2).await.unwrap()
}

fn weights(blue: u64, canary: u64) -> ChangeRequest {
    ChangeRequest {
        weights: Some(BTreeMap::from([
            ("blue".into(), blue),
            ("canary".into(), canary),
        ])),
        ..ChangeRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_weights_change_under_load() {
    const CLIENTS: usize = 16;
    const REQUESTS_PER_CLIENT: usize = 200;
    const CHANGES: u64 = 100;
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 50, canary = 50 }", "");
    let proxy = start(&setup).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut seen = BTreeMap::new();
            for _ in 0..REQUESTS_PER_CLIENT {
                let (status, version) = client.get("/").await;
                assert_eq!(status, StatusCode::OK, "a request failed during a change");
                *seen.entry(version).or_insert(0usize) += 1;
            }
            seen
        }));
    }
    let admin = setup.client();
    for change in 0..CHANGES {
        let canary = change % 11 * 10;
        admin
            .change("shop", "weights", &weights(100 - canary, canary))
            .await
            .unwrap();
    }
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for client in clients {
        for (version, count) in client.await.unwrap() {
            *total.entry(version).or_default() += count;
        }
    }
    assert_eq!(total.values().sum::<usize>(), CLIENTS * REQUESTS_PER_CLIENT);
    assert!(
        total.contains_key("blue") && total.contains_key("canary"),
        "{total:?}"
    );
    assert_eq!(proxy.controller.plane.table.load().revision, 1 + CHANGES);
    proxy.shutdown().await;
}

/// A webhook receiver that answers 503 to its first request (so delivery must retry) and
/// sends every other POST body on the channel.
async fn receiver() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (events, requests) = (events.clone(), requests.clone());
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let events = events.clone();
                let first = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    assert_eq!(request.uri().path(), "/hook");
                    let body = request.into_body().collect().await?.to_bytes();
                    let mut response = http::Response::new(Full::new(bytes::Bytes::new()));
                    if first {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    } else {
                        let _ = events.send(serde_json::from_slice(&body).unwrap());
                    }
                    Ok::<_, hyper::Error>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_each_revision_without_delaying_it() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let (addr, mut events) = receiver().await;
    // A hook that accepts connections but never answers: each attempt runs into the timeout.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let hooks = format!(
        "\n[hooks]\nwebhooks = [\"http://{addr}/hook\", \"http://{}/stalled\"]\ntimeout = \"3s\"\nattempts = 3",
        stalled.local_addr().unwrap()
    );
    setup.write(&upstreams, "{ blue = 95, canary = 5 }", &hooks);
    let proxy = start(&setup).await;
    let admin = setup.client();
    let started = Instant::now();
    let first = admin
        .change("shop", "weights", &weights(50, 50))
        .await
        .unwrap();
    let abort = ChangeRequest {
        actor: Some("guard".into()),
        reason: Some("canary 5xx".into()),
        ..ChangeRequest::default()
    };
    let second = admin.change("shop", "abort", &abort).await.unwrap();
    // Well below one hook timeout: the stalled hook is not on the change's path.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "changes waited for a hook: {:?}",
        started.elapsed()
    );

    let startup = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(startup["kind"], "added");
    let event = tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event["event"], "revision");
    assert_eq!(event["revision"], first.revision);
    assert_eq!(event["kind"], "weights");
    assert_eq!(event["routing"]["weights"]["canary"], 50);
    let event = tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event["revision"], second.revision);
    assert_eq!(
        (&event["kind"], &event["actor"], &event["reason"]),
        (&"abort".into(), &"guard".into(), &"canary 5xx".into())
    );
    assert_eq!(event["routing"]["latched"], true);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_shares_and_aborts() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    upstreams[1].faults.set_error_rate(1.0);
    let setup = Setup::new(
        &upstreams,
        "{ blue = 50, canary = 50 }",
        // Metrics are under test: without the guard, the canary's 5xx reach the client
        // and both sides count the same requests.
        "[services.shop.guard]\nenabled = false",
    );
    let proxy = start(&setup).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut answered = BTreeMap::new();
    for _ in 0..40 {
        let (status, version) = client.get("/").await;
        *answered.entry((version, status.as_u16())).or_insert(0u64) += 1;
    }
    setup
        .client()
        .change("shop", "abort", &ChangeRequest::default())
        .await
        .unwrap();
    let (status, text) = admin_raw(&setup, Method::GET, "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let blue_ok = answered
        .get(&("blue".to_string(), 200))
        .copied()
        .unwrap_or(0);
    let canary_5xx = answered
        .get(&("canary".to_string(), 500))
        .copied()
        .unwrap_or(0);
    for expected in [
        "switchyard_revision 2".to_string(),
        format!("switchyard_requests_total{{service=\"shop\",version=\"blue\",outcome=\"2xx\"}} {blue_ok}"),
        format!("switchyard_requests_total{{service=\"shop\",version=\"canary\",outcome=\"5xx\"}} {canary_5xx}"),
        format!("switchyard_errors_total{{service=\"shop\",version=\"canary\",kind=\"5xx\"}} {canary_5xx}"),
        format!("switchyard_request_duration_seconds_bucket{{service=\"shop\",version=\"blue\",le=\"+Inf\"}} {blue_ok}"),
        "switchyard_weight_share{service=\"shop\",version=\"blue\"} 1".to_string(),
        "switchyard_weight_share{service=\"shop\",version=\"canary\"} 0".to_string(),
        "switchyard_latched{service=\"shop\"} 1".to_string(),
        "switchyard_aborts_total{service=\"shop\"} 1".to_string(),
        "# TYPE switchyard_request_duration_seconds histogram".to_string(),
    ] {
        assert!(text.lines().any(|line| line == expected), "metrics lack {expected:?}:\n{text}");
    }
    assert!(blue_ok > 0 && canary_5xx > 0, "{answered:?}");
    proxy.shutdown().await;
}
