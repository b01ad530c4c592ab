//! Incidents, guard verdicts and rollout commands through the real binary: the admin API on
//! its socket, `switchyard ctl`, and `/metrics`, bad input included.

mod common;

use common::{admin_raw, fails, incident, ok, write_incidents, Proxy, Setup};
use http::{Method, StatusCode};
use std::time::{Duration, Instant};
use switchyard::admin::api::{IncidentsResponse, StatusResponse};

/// One-line JSON error with the given status, mentioning `expected`.
fn refused(reply: (StatusCode, String), status: StatusCode, expected: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let body: serde_json::Value = serde_json::from_str(&reply.1).unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(!message.contains('\n'), "{message:?}");
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
}

async fn started() -> (Setup, Proxy) {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    write_incidents(
        &setup.dir.path().join("state"),
        &[
            incident(1, "shop", "canary error rate 30.00% over 40 requests"),
            incident(2, "shop", "canary p99 90.0 ms against stable 4.0 ms"),
        ],
    );
    let proxy = Proxy::start(&setup, &[]).await;
    (setup, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_show_in_the_api_ctl_and_metrics() {
    let (setup, _proxy) = started().await;

    let (status, body) = admin_raw(&setup, Method::GET, "/incidents", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all: IncidentsResponse = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = all.incidents.iter().map(|i| i.id).collect();
    assert_eq!(ids, [2, 1], "newest first");
    let (_, body) = admin_raw(&setup, Method::GET, "/incidents?service=shop", "").await;
    let shop: IncidentsResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(shop, all);

    let text = ok(setup.ctl(&["incidents"]));
    for expected in [
        "ID",
        "DURATION",
        "FAILED/SAVED",
        "RESTORED_BY",
        "2024-05-01T12:00:00.000Z",
        "0.84s",
        "2/28",
        "canary error rate 30.00% over 40 requests",
        "canary p99 90.0 ms",
    ] {
        assert!(
            text.contains(expected),
            "ctl incidents lacks {expected:?}:\n{text}"
        );
    }
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(ok(setup.ctl(&["incidents", "shop"])), text);
    let json: IncidentsResponse =
        serde_json::from_str(&ok(setup.ctl(&["--json", "incidents", "shop"]))).unwrap();
    assert_eq!(json, all);

    let (_, metrics) = admin_raw(&setup, Method::GET, "/metrics", "").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "switchyard_incidents_total{service=\"shop\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_incident_and_rollout_requests_are_refused_and_change_nothing() {
    let (setup, _proxy) = started().await;
    let journal = std::fs::read(setup.journal()).unwrap();
    let get = |path: &'static str| admin_raw(&setup, Method::GET, path, "");
    let post = |path: &'static str, body: &'static str| admin_raw(&setup, Method::POST, path, body);

    refused(
        get("/incidents?service=nope").await,
        StatusCode::NOT_FOUND,
        "no service \"nope\"",
    );
    refused(
        get("/incidents?limit=3").await,
        StatusCode::BAD_REQUEST,
        "only service=VALUE",
    );
    refused(
        get("/incidents?service=").await,
        StatusCode::BAD_REQUEST,
        "only service=VALUE",
    );
    refused(
        post("/incidents", "").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "use GET",
    );
    fails(setup.ctl(&["incidents", "nope"]), "no service \"nope\"");

    refused(
        post("/services/shop/rollout/start", "").await,
        StatusCode::CONFLICT,
        "no rollout configured",
    );
    refused(
        post("/services/nope/rollout/start", "").await,
        StatusCode::NOT_FOUND,
        "no service \"nope\"",
    );
    refused(
        post("/services/shop/rollout/launch", "").await,
        StatusCode::NOT_FOUND,
        "no rollout action \"launch\"",
    );
    refused(
        post("/services/shop/rollout/pause", "").await,
        StatusCode::CONFLICT,
        "nothing to pause: there is no rollout",
    );
    refused(
        post("/services/shop/rollout/start", r#"{"weights":{"blue":1}}"#).await,
        StatusCode::BAD_REQUEST,
        "only actor and reason",
    );
    refused(
        post("/services/shop/rollout/start", r#"{"reason":"a\nb"}"#).await,
        StatusCode::BAD_REQUEST,
        "one line",
    );
    refused(
        get("/services/shop/rollout/start").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "use POST",
    );
    fails(
        setup.ctl(&["rollout", "shop", "start", "--reason", "try"]),
        "no rollout configured",
    );
    fails(
        setup.ctl(&["rollout", "nope", "resume"]),
        "no service \"nope\"",
    );
    assert_eq!(
        std::fs::read(setup.journal()).unwrap(),
        journal,
        "the journal changed"
    );
    assert!(!setup.dir.path().join("state/rollouts.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_verdict_shows_in_status_ctl_and_metrics() {
    let (setup, _proxy) = started().await;
    // The canary has 5% of the traffic: the guard judges it (with no requests, inconclusive).
    let deadline = Instant::now() + Duration::from_secs(5);
    let guard = loop {
        let status = setup.client().service("shop").await.unwrap();
        if let Some(guard) = status.guard {
            break guard;
        }
        assert!(Instant::now() < deadline, "no guard verdict in status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (guard.version.as_str(), guard.verdict.label()),
        ("canary", "inconclusive")
    );
    let json: StatusResponse = serde_json::from_str(&ok(setup.ctl(&["--json", "status"]))).unwrap();
    assert_eq!(
        json.services[0].guard.as_ref().unwrap().verdict.label(),
        "inconclusive"
    );
    let text = ok(setup.ctl(&["status"]));
    assert!(text.contains("guard: canary inconclusive"), "{text}");
    let (_, metrics) = admin_raw(&setup, Method::GET, "/metrics", "").await;
    for expected in [
        "switchyard_guard_verdict{service=\"shop\",version=\"canary\"} 1",
        "switchyard_saved_total{service=\"shop\",version=\"canary\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "no {expected:?} in:\n{metrics}"
        );
    }
    let looks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_guard_looks_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(looks > 0, "{metrics}");
}
