//! Upstreams that refuse, reset, stall or answer garbage: a clean 502/503/504, the proxy
//! carries on, and a healthy endpoint of the same version takes over from a refusing one.

mod common;
use common::*;
use switchyard_testkit::SampleUpstream;

async fn proxy_for(endpoints: &[&SampleUpstream], extra: &str) -> TestProxy {
    let list: Vec<String> = endpoints
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect();
    let config = format!(
        "{extra}\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [{}]\n",
        list.join(", ")
    );
    TestProxy::start(&config).await
}

#[tokio::test]
async fn refused_connections_give_502_and_a_refusing_endpoint_is_skipped() {
    let down = upstream("blue").await;
    down.stop();
    let proxy = proxy_for(&[&down], "").await;
    let reply = get(&client(), proxy.addr(), "/", &[]).await;
    assert!(reply.status == 502 || reply.status == 503, "{reply:?}");
    assert!(reply.body.contains("upstream"), "{reply:?}");

    let up = upstream("blue").await;
    let proxy = proxy_for(&[&down, &up], "").await;
    let client = client();
    for _ in 0..100 {
        let reply = get(&client, proxy.addr(), "/", &[]).await;
        assert_eq!(
            reply.status, 200,
            "a refusing endpoint failed a request: {reply:?}"
        );
    }

    // The operator sees which endpoint is left out, in status and in metrics.
    let admin = proxy.admin();
    let status = admin.service("shop").await.unwrap();
    assert_eq!(
        status.versions[0].refusing,
        Some(vec![down.addr.to_string()])
    );
    let (_, metrics) = admin_raw_on(&admin, http::Method::GET, "/metrics", "").await;
    for (endpoint, up) in [(down.addr, 0), (up.addr, 1)] {
        let line = format!(
            "switchyard_endpoint_up{{service=\"shop\",version=\"blue\",endpoint=\"{endpoint}\"}} {up}"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_recovered_endpoint_is_used_again() {
    let blue = upstream("blue").await;
    let proxy = proxy_for(&[&blue], "[proxy.timeouts]\nendpoint_backoff = \"100ms\"").await;
    let client = client();
    blue.stop();
    assert_ne!(get(&client, proxy.addr(), "/", &[]).await.status, 200);
    blue.restart().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(get(&client, proxy.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn resets_and_garbage_give_502() {
    let blue = upstream("blue").await;
    let proxy = proxy_for(&[&blue], "").await;
    let client = client();
    blue.faults.set_reset(true);
    let reset = get(&client, proxy.addr(), "/", &[]).await;
    assert_eq!(reset.status, 502, "{reset:?}");
    blue.faults.heal();
    blue.faults.set_garbage(true);
    let garbage = get(&client, proxy.addr(), "/fresh", &[]).await;
    assert_eq!(garbage.status, 502, "{garbage:?}");
    blue.faults.heal();
    assert_eq!(get(&client, proxy.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn a_stalled_upstream_gives_504_after_the_response_timeout() {
    let blue = upstream("blue").await;
    let proxy = proxy_for(&[&blue], "[proxy.timeouts]\nresponse_headers = \"200ms\"").await;
    blue.faults.set_stall(true);
    let client = client();
    let reply = get(&client, proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    blue.faults.heal();
    assert_eq!(get(&client, proxy.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn upstream_5xx_is_passed_through_and_counted() {
    let blue = upstream("blue").await;
    let proxy = proxy_for(&[&blue], "").await;
    blue.faults.set_error_rate(1.0);
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, proxy.addr(), "/", &[]).await.status, 500);
    }
    let table = proxy.proxy.controller.plane.table.load();
    let stats = &table.services()[0].versions[0].stats;
    let totals = stats.totals();
    assert_eq!(totals.errors(), 10);
    assert_eq!(totals.requests(), 10);
}
