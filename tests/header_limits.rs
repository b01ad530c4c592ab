//! `max_header_bytes` holds exactly: on HTTP/1 a head one byte over gets 431, on HTTP/2
//! a head over the limit gets 431 on its stream and the connection lives on.

mod common;
use bytes::Bytes;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: usize = 4096;

async fn proxy() -> (TestProxy, switchyard_testkit::SampleUpstream) {
    let blue = upstream("blue").await;
    let config = format!(
        "max_header_bytes = {LIMIT}\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    (TestProxy::start(&config).await, blue)
}

/// A request head of exactly `size` bytes.
fn head_of_size(size: usize) -> String {
    let start = "GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = size - start.len() - end.len();
    format!("{start}{}{end}", "a".repeat(pad))
}

async fn status_of(head: &str, proxy: &TestProxy) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split(' ')
        .nth(1)
        .unwrap_or("(no answer)")
        .to_string()
}

#[tokio::test]
async fn http1_heads_up_to_the_limit_pass_and_larger_ones_get_431() {
    let (proxy, _blue) = proxy().await;
    assert_eq!(status_of(&head_of_size(LIMIT), &proxy).await, "200");
    assert_eq!(status_of(&head_of_size(LIMIT + 1), &proxy).await, "431");
    assert_eq!(status_of(&head_of_size(8 * 1024), &proxy).await, "431");
    assert_eq!(status_of(&head_of_size(100 * 1024), &proxy).await, "431");
}

#[tokio::test]
async fn http2_heads_over_the_limit_get_431_and_the_connection_lives_on() {
    let (proxy, _blue) = proxy().await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let uri = format!("http://{}/", proxy.addr());
    for (pad, expected) in [(20_000, 431), (LIMIT, 431), (100, 200)] {
        client = client.ready().await.unwrap();
        let request = http::Request::get(&uri)
            .header("x-pad", "a".repeat(pad))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.expect("the connection was dropped");
        assert_eq!(response.status(), expected, "pad {pad}");
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk: Bytes = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
    }
}
