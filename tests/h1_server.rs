//! The client-facing HTTP/1 server side, switchyard's own: pipelined requests answered in
//! order, `Expect: 100-continue`, HTTP/1.0 keep-alive, chunked uploads, and a body left
//! unread closing the connection instead of being read as the next request.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy() -> (TestProxy, switchyard_testkit::SampleUpstream) {
    let blue = upstream("blue").await;
    let config = format!(
        "[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    (TestProxy::start(&config).await, blue)
}

/// Reads until the connection closes (bounded).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Reads until `marker` has arrived (bounded).
async fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let reading = async {
        while !String::from_utf8_lossy(&reply).contains(marker) {
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(
                read > 0,
                "closed before {marker:?}: {:?}",
                String::from_utf8_lossy(&reply)
            );
            reply.extend_from_slice(&chunk[..read]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .unwrap_or_else(|_| panic!("no {marker:?} in {:?}", String::from_utf8_lossy(&reply)));
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    // Four requests in one write: bodies by length and chunked between them.
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello\
              POST /echo HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
              GET /item/7 HTTP/1.1\r\nHost: shop\r\n\r\n\
              GET /headers HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let reply = read_all(&mut stream).await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{reply}");
    let at = |marker: &str| {
        reply
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in {reply}"))
    };
    assert!(at("received=5") < at("second"), "{reply}");
    assert!(at("second") < at("\"item\":7"), "{reply}");
    assert!(at("x-forwarded-for") > at("\"item\":7"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("\r\ndate: "), "{reply}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let reply = read_until(&mut stream, "received=5").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[tokio::test]
async fn http10_keeps_the_connection_only_when_asked() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    for round in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let reply = read_until(&mut stream, "version=blue\n").await;
        let lower = reply.to_ascii_lowercase();
        assert!(
            lower.contains("connection: keep-alive\r\n"),
            "round {round}: {reply}"
        );
        assert!(lower.contains("content-length: "), "round {round}: {reply}");
        assert!(
            !lower.contains("transfer-encoding"),
            "round {round}: {reply}"
        );
    }
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let reply = read_all(&mut stream).await;
    assert!(
        reply.to_ascii_lowercase().contains("connection: close\r\n"),
        "{reply}"
    );
    assert!(reply.ends_with("version=blue\n"), "{reply}");
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_after_the_answer() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    // The upstream answers `/` without reading; the rest of the body must never be read
    // as a request of its own.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    // One answer, then the close (`read_all` returned).
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
}

#[tokio::test]
async fn chunked_uploads_with_extensions_and_trailers_arrive_whole() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;a=b\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(&mut stream).await;
    assert!(reply.contains("received=7"), "{reply}");
}

#[tokio::test]
async fn an_answer_slower_than_client_headers_is_not_cut_and_the_idle_connection_then_closes() {
    let blue = upstream("blue").await;
    let config = format!(
        "[proxy.timeouts]\nclient_headers = \"300ms\"\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    let proxy = TestProxy::start(&config).await;
    // The answer takes longer than the head deadline: that deadline is for heads only.
    blue.faults
        .set_latency(Duration::from_millis(900), Duration::ZERO);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    for round in 0..2 {
        stream
            .write_all(b"GET /item/1 HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await
            .unwrap();
        let reply = read_until(&mut stream, "}").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "round {round}: {reply}");
        blue.faults.heal();
    }
    // Idle past `client_headers` after an answer: the connection closes, with nothing sent.
    let started = std::time::Instant::now();
    let rest = read_all(&mut stream).await;
    assert_eq!(rest, "");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}
