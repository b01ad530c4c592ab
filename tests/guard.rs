//! The guard over real sockets: ~1,000 requests/s, canary at 10%.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Waits until the service is latched (all traffic on stable); returns when.
/// These tests measure milliseconds under 1,000 requests/s each: run one at a time, so
/// they measure the guard and not four loads fighting over two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Real traffic on both versions before a fault, so the guard judges the fault against a
/// baseline of thousands of healthy answers, as in production.
const WARM_UP: Duration = Duration::from_secs(4);

async fn wait_for_cutback(proxy: &TestProxy, within: Duration) -> Option<Instant> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let table = proxy.proxy.controller.plane.table.load();
        let service = &table.services()[0];
        if (0..service.versions.len()).all(|v| v == service.stable || service.share_of(v) == 0.0) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

async fn canary_setup() -> (
    TestProxy,
    switchyard_testkit::SampleUpstream,
    switchyard_testkit::SampleUpstream,
) {
    let Pair {
        proxy,
        stable,
        canary,
    } = pair("blue", "canary", (90, 10), "").await;
    (proxy, stable, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_one_in_five_is_cut_back_within_a_second_and_users_see_no_error() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (proxy, _stable, canary) = canary_setup().await;
    let addr = proxy.addr();
    let traffic = tokio::spawn(load(addr, 1000, WARM_UP * 2));
    tokio::time::sleep(WARM_UP).await;
    canary.faults.set_error_rate(0.2);
    let onset = Instant::now();
    let cut = wait_for_cutback(&proxy, Duration::from_secs(4))
        .await
        .expect("never cut back");
    let LoadResult {
        sent,
        failed,
        retried,
    } = traffic.await.unwrap();
    let elapsed = cut - onset;
    eprintln!("cutback {elapsed:?} after onset; {sent} requests, {failed} failed, {retried} saved by retry");
    assert!(elapsed < Duration::from_secs(1), "cutback took {elapsed:?}");
    assert_eq!(failed, 0, "users saw {failed} errors");
    assert!(
        retried > 0,
        "no canary failure was retried, so the test proved nothing"
    );

    let incidents = proxy.proxy.incidents.list(Some("shop"));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = &incidents[0];
    assert_eq!(incident.version, "canary");
    assert_eq!(incident.users.failed, 0, "{incident:?}");
    assert!(incident.users.saved > 0, "{incident:?}");
    assert!(incident.summary.contains("error rate"), "{incident:?}");
    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.actor, "guard");
    assert_eq!(last.revision, incident.restored_by);
    assert!(last.evidence.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_endpoints_all_go_down_is_cut_back_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (proxy, _stable, canary) = canary_setup().await;
    let addr = proxy.addr();
    let traffic = tokio::spawn(load(addr, 1000, WARM_UP));
    tokio::time::sleep(WARM_UP / 2).await;
    canary.crash();
    let onset = Instant::now();
    let cut = wait_for_cutback(&proxy, Duration::from_secs(2))
        .await
        .expect("never cut back");
    let LoadResult { sent, failed, .. } = traffic.await.unwrap();
    let elapsed = cut - onset;
    eprintln!("cutback {elapsed:?} after the canary went down; {sent} requests, {failed} failed");
    // The guard is rung by the first refused connection, not its next look: tens of ms
    // on an idle machine (loadtest measures it); 1 s bounds it on two busy cores too.
    assert!(elapsed < Duration::from_secs(1), "cutback took {elapsed:?}");
    assert_eq!(failed, 0, "users saw {failed} errors");
    let incident = &proxy.proxy.incidents.list(None)[0];
    assert!(
        incident.summary.contains("refuses connections"),
        "{incident:?}"
    );
}

/// One failed request is enough: the guard confirms with probes of its own instead of
/// waiting for more users to reach a dead canary, so low traffic does not slow the cutback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_went_down_is_cut_back_after_one_failed_request() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let forced =
        "[[services.shop.match]]\nheader = \"x-canary\"\nvalue = \"1\"\nversion = \"canary\"";
    let Pair {
        proxy,
        stable: _stable,
        canary,
    } = pair("blue", "canary", (90, 10), forced).await;
    canary.crash();
    let reply = get(&client(), proxy.addr(), "/", &[("x-canary", "1")]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.version.as_deref(),
        Some("blue"),
        "not saved by stable"
    );
    assert!(
        wait_for_cutback(&proxy, Duration::from_secs(2))
            .await
            .is_some(),
        "one failed request and the probes did not cut the canary back"
    );
    // The incident is written just after the swap.
    let incident = wait_for_incident(&proxy).await;
    assert!(
        incident.summary.contains("refuses connections"),
        "{incident:?}"
    );

    // Forced traffic still goes to the dead canary; a request no endpoint took goes to
    // stable whatever its method, body and all.
    let mut client = Client::connect(proxy.addr()).await;
    let order = http::Request::post("/echo")
        .header("host", "shop")
        .header("x-canary", "1")
        .body(http_body_util::Full::new(bytes::Bytes::from("order 42")))
        .unwrap();
    let reply = client.send(order).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.version.as_deref(), Some("blue"));
    assert_eq!(reply.body, "order 42");
    assert_eq!(reply.headers["switchyard-retried-from"], "canary");
}

async fn wait_for_incident(proxy: &TestProxy) -> switchyard::guard::incident::Incident {
    for _ in 0..2000 {
        if let Some(incident) = proxy.proxy.incidents.list(None).pop() {
            return incident;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no incident was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_never_cut_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (proxy, stable, canary) = canary_setup().await;
    for side in [&stable, &canary] {
        side.faults.set_error_rate(0.01);
        side.faults
            .set_latency(Duration::from_millis(1), Duration::from_millis(2));
    }
    let sent = load(proxy.addr(), 1000, Duration::from_secs(12)).await.sent;
    assert!(sent > 5000, "only {sent} requests");
    assert!(proxy.proxy.incidents.list(None).is_empty());
    let verdict = proxy.proxy.board.get("shop").expect("judged");
    assert_eq!(verdict.verdict.label(), "healthy", "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_at_very_low_traffic_stays_inconclusive() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let stable = upstream("blue").await;
    let canary = upstream("canary").await;
    let proxy = TestProxy::start(&two_versions(&stable, &canary, (999, 1), "")).await;
    canary.faults.set_error_rate(0.5);
    load(proxy.addr(), 200, Duration::from_secs(3)).await;
    assert!(proxy.proxy.incidents.list(None).is_empty());
    if let Some(verdict) = proxy.proxy.board.get("shop") {
        assert_eq!(verdict.verdict.label(), "inconclusive", "{verdict:?}");
    }
}
