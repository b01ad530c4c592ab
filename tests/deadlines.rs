//! A deadline for every phase: an upstream that stops mid-body, a client that stops
//! reading (HTTP/1 slow reader, HTTP/2 stream held at window 0), a client that stops
//! sending its body. Each used to hold its client and an upstream connection forever.

mod common;
use bytes::Bytes;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUTS: &str =
    "[proxy.timeouts]\nresponse_headers = \"5s\"\nupstream_body_idle = \"1s\"\nclient_idle = \"1s\"\n";

fn service(addr: SocketAddr) -> String {
    format!(
        "{TIMEOUTS}\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{addr}\"]\n"
    )
}

/// An upstream that answers every request with a head promising 1000 bytes, sends ten,
/// and then nothing, holding the connection open.
async fn stalling_upstream() -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(600)).await;
            });
        }
    });
    addr
}

async fn metric(proxy: &TestProxy, prefix: &str) -> u64 {
    let (_, text) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn an_upstream_that_stops_mid_body_is_cut_off_and_counted_as_its_timeout() {
    let proxy = TestProxy::start(&service(stalling_upstream().await)).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the client still hangs after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    let timeouts = metric(
        &proxy,
        "switchyard_errors_total{service=\"shop\",version=\"blue\",kind=\"timeout\"}",
    )
    .await;
    assert_eq!(
        timeouts, 1,
        "the cut-off was not counted as the version's timeout"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let blue = upstream("blue").await;
    let proxy = TestProxy::start(&service(blue.addr)).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let size = 64 * 1024 * 1024;
    stream
        .write_all(format!("GET /bytes/{size} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The attacker reads nothing while socket buffers fill, then drains what is left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection is still open");
    assert!(
        total < size,
        "the slow reader was served all {total} bytes: never dropped"
    );
}

#[tokio::test]
async fn an_http2_stream_held_at_window_zero_is_dropped() {
    let blue = upstream("blue").await;
    let proxy = TestProxy::start(&service(blue.addr)).await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/bytes/1000000", proxy.addr()))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    // Never give the stream any window: the proxy must let go of it.
    let mut body = response.into_body();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match body.data().await {
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream at window 0 is still held");
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_is_dropped_and_not_blamed_on_the_version() {
    let blue = upstream("blue").await;
    let proxy = TestProxy::start(&service(blue.addr)).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a client that stopped sending is still held");
    let blamed = metric(
        &proxy,
        "switchyard_errors_total{service=\"shop\",version=\"blue\"",
    )
    .await;
    assert_eq!(blamed, 0, "a stalled upload was blamed on the version");
}
