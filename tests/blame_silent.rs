//! A connection that never sends a byte is closed at `client_headers`, counted from accept.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_client_headers_from_accept() {
    let upstream = upstream("blue").await;
    let proxy = TestProxy::start(&format!(
        "\n[proxy.timeouts]\nclient_headers = \"1s\"\n\n[services.api]\nstable = \"blue\"\n\
         weights = {{ blue = 100 }}\n\n[services.api.versions.blue]\nendpoints = [\"{}\"]\n",
        upstream.addr
    ))
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr()).await.unwrap());
    }
    for mut stream in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a silent connection was still open after {:?}",
            started.elapsed()
        );
    }
    // A client that does speak is served as before.
    let reply = get(&client(), proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, http::StatusCode::OK);
}
