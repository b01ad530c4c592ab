//! One authority per request: the host that chose the service is the host the upstream
//! gets. Raw bytes, as an attacker sends them (a client library would refuse most).

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// "shop" on host shop, "internal" on host internal; each upstream echoes its headers.
async fn two_services() -> (TestProxy, Vec<switchyard_testkit::SampleUpstream>) {
    let shop = upstream("shop").await;
    let internal = upstream("internal").await;
    let config = format!(
        r#"
[services.shop]
hosts = ["shop"]
stable = "shop"
weights = {{ shop = 1 }}
[services.shop.versions.shop]
endpoints = ["{}"]

[services.internal]
hosts = ["internal"]
stable = "internal"
weights = {{ internal = 1 }}
[services.internal.versions.internal]
endpoints = ["{}"]
"#,
        shop.addr, internal.addr
    );
    (TestProxy::start(&config).await, vec![shop, internal])
}

/// Sends one raw request on a fresh connection and returns the whole answer.
async fn raw(proxy: &TestProxy, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy kept the connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn an_absolute_form_target_is_the_host_the_upstream_gets() {
    let (proxy, _upstreams) = two_services().await;
    let answer = raw(
        &proxy,
        "GET http://internal/headers HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(
        answer.contains("version: internal") || answer.contains("x-upstream: internal"),
        "{answer}"
    );
    assert!(answer.contains("host: internal\n"), "{answer}");
    assert!(
        !answer.contains("host: shop"),
        "the client's Host was forwarded: {answer}"
    );
}

#[tokio::test]
async fn two_hosts_or_none_get_a_400() {
    let (proxy, _upstreams) = two_services().await;
    for request in [
        "GET /headers HTTP/1.1\r\nHost: shop\r\nHost: internal\r\nConnection: close\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: internal\r\nHost: internal\r\nConnection: close\r\n\r\n",
        "GET /headers HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: user@internal\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(&proxy, request).await;
        assert_eq!(status(&answer), "400", "{request:?} got {answer}");
    }
}

#[tokio::test]
async fn connection_never_strips_host_or_end_to_end_headers() {
    let (proxy, _upstreams) = two_services().await;
    let answer = raw(
        &proxy,
        "GET /headers HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 10.9.9.9\r\nCookie: a=b\r\nX-Hop: 1\r\nConnection: close, Host, X-Forwarded-For, Cookie, X-Hop\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(answer.contains("host: internal\n"), "{answer}");
    assert!(
        answer.contains("x-forwarded-for: 10.9.9.9, 127.0.0.1\n"),
        "{answer}"
    );
    assert!(answer.contains("cookie: a=b\n"), "{answer}");
    assert!(
        !answer.contains("x-hop"),
        "a Connection-named header was kept: {answer}"
    );
}

#[tokio::test]
async fn http2_authority_replaces_host() {
    let (proxy, _upstreams) = two_services().await;
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://internal/headers")
        .header("host", "shop")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("host: internal\n"), "{body}");
    assert!(!body.contains("host: shop"), "{body}");
}
