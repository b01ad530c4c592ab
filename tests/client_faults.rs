//! Client-caused failures never count against a version: an attacker who steers requests
//! to the canary (sticky cookie) and abandons uploads or sends broken chunking must not get
//! it aborted. Written as the attacker sends it: raw bytes over a socket.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STICKY: &str = "sticky = { cookie = \"sy_user\" }";

/// A cookie value the proxy sends to the canary.
async fn canary_cookie(proxy: &TestProxy) -> String {
    let client = client();
    for i in 0..10_000 {
        let cookie = format!("sy_user=attacker{i}");
        let reply = get(&client, proxy.addr(), "/", &[("cookie", &cookie)]).await;
        if reply.version.as_deref() == Some("canary") {
            return cookie;
        }
    }
    panic!("no cookie lands on the canary");
}

/// Sends `head` and `body` raw, then either closes (`close_after`) or reads the answer.
async fn raw(proxy: &TestProxy, bytes: &[u8], close_after: bool) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if close_after {
        // Give the proxy time to forward the head and the first bytes upstream.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn metrics(proxy: &TestProxy) -> String {
    let (status, text) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    assert_eq!(status, 200);
    text
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_and_broken_chunking_on_the_canary_never_abort_it() {
    let Pair {
        proxy,
        stable: _stable,
        canary: _canary,
    } = pair("blue", "canary", (95, 5), STICKY).await;
    let cookie = canary_cookie(&proxy).await;

    for _ in 0..5 {
        let upload = format!(
            "POST /upload HTTP/1.1\r\nHost: shop\r\nCookie: {cookie}\r\nContent-Length: 100000\r\n\r\n0123456789"
        );
        raw(&proxy, upload.as_bytes(), true).await;
    }
    for _ in 0..5 {
        let broken = format!(
            "POST /upload HTTP/1.1\r\nHost: shop\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxyz\r\n0\r\n\r\n"
        );
        let answer = raw(&proxy, broken.as_bytes(), false).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "malformed chunking must get a 400, got: {answer:?}"
        );
    }
    // The guard looks at the evidence for a while (20 looks, about 2 s).
    proxy.guard_looks(20).await;

    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    assert!(
        history.iter().all(|r| r.actor != "guard"),
        "the guard acted on client faults: {history:?}"
    );
    assert!(
        proxy.proxy.incidents.list(Some("shop")).is_empty(),
        "an incident was recorded for client faults"
    );
    let text = metrics(&proxy).await;
    let blamed = metric(
        &text,
        "switchyard_errors_total{service=\"shop\",version=\"canary\"",
    );
    assert_eq!(
        blamed, 0,
        "client faults were counted against the canary:\n{text}"
    );
    let faults = metric(
        &text,
        "switchyard_client_faults_total{service=\"shop\",version=\"canary\"",
    );
    assert!(
        faults >= 10,
        "client faults not counted ({faults}):\n{text}"
    );

    // The canary is still in the rotation and serves the sticky user.
    let reply = get(&client(), proxy.addr(), "/", &[("cookie", &cookie)]).await;
    assert_eq!(reply.version.as_deref(), Some("canary"), "{reply:?}");
}
