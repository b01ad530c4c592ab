//! Active health checks in a running proxy: an endpoint that hangs leaves the rotation
//! after `fall` checks and users see no error from it; healed, it returns after `rise`.

mod common;
use common::*;
use std::time::{Duration, Instant};
use switchyard_testkit::SampleUpstream;

fn config(blue: &[SampleUpstream]) -> String {
    format!(
        r#"
[proxy.timeouts]
response_headers = "2s"

[services.shop]
stable = "blue"
weights = {{ blue = 1 }}

[services.shop.health]
path = "/healthz"
interval = "100ms"
timeout = "100ms"
fall = 2
rise = 2

[services.shop.versions.blue]
endpoints = ["{}", "{}"]
"#,
        blue[0].addr, blue[1].addr
    )
}

/// Waits (bounded) until the health board shows `addr` up or down.
async fn wait_for(proxy: &TestProxy, addr: std::net::SocketAddr, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let board = proxy.proxy.verifier.health.snapshot();
        if board.get(&addr).is_some_and(|h| h.up == up) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never went up={up}: {board:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hung_endpoint_leaves_the_rotation_and_comes_back_when_healed() {
    let blue = upstreams(&["blue-1", "blue-2"]).await;
    let proxy = TestProxy::start(&config(&blue)).await;
    let client = client();
    wait_for(&proxy, blue[1].addr, true).await;

    blue[1].faults.set_stall(true);
    wait_for(&proxy, blue[1].addr, false).await;
    for _ in 0..40 {
        let reply =
            tokio::time::timeout(Duration::from_secs(1), get(&client, proxy.addr(), "/", &[]))
                .await
                .expect("no user request waits on the hung endpoint");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "version=blue-1\n");
    }
    let health = proxy.proxy.verifier.health.snapshot()[&blue[1].addr].clone();
    assert_eq!(health.changes, 1);
    assert_eq!(
        health.last_failure.as_deref(),
        Some("no answer within 100ms")
    );

    blue[1].faults.heal();
    wait_for(&proxy, blue[1].addr, true).await;
    let mut served_by_second = 0;
    for _ in 0..60 {
        let reply = get(&client, proxy.addr(), "/", &[]).await;
        assert_eq!(reply.status, 200);
        served_by_second += usize::from(reply.body == "version=blue-2\n");
    }
    assert!(
        served_by_second > 0,
        "the healed endpoint takes traffic again"
    );
    proxy.proxy.shutdown().await;
}

/// Waits (bounded) until the return point of "shop" was last found `passed`.
async fn wait_for_return_point(proxy: &TestProxy, passed: bool) -> switchyard::verify::ReturnPoint {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let points = proxy.proxy.verifier.return_point_status();
        if let Some(point) = points.get("shop").filter(|p| p.last.passed == passed) {
            return point.clone();
        }
        assert!(
            Instant::now() < deadline,
            "return point never passed={passed}: {points:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_return_point_is_checked_while_a_canary_takes_traffic() {
    let checks = "checks_every = \"1s\"\n[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\n";
    let pair = pair("blue", "canary", (95, 5), checks).await;
    let point = wait_for_return_point(&pair.proxy, true).await;
    assert_eq!(point.version, "blue");
    assert!(point.passed.is_some());

    pair.stable.faults.break_path("/");
    let point = wait_for_return_point(&pair.proxy, false).await;
    assert_eq!(point.last.failed[0].got, "status 500 (expected 2xx)");
    assert!(point.passed.is_some(), "when it last passed is kept");
    pair.proxy.proxy.shutdown().await;
}
