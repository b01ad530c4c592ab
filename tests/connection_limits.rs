//! Limits on client connections: `proxy.max_connections` refuses cleanly past the limit,
//! and a proxy out of file handles backs off, logs once, and keeps serving.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one GET on `stream` (keep-alive) and returns the status line's code.
async fn get_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.split(' ').nth(1).unwrap_or("(closed)").to_string()
}

/// A fresh connection's first GET, retried until it is served (bounded).
async fn served_within(addr: std::net::SocketAddr, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            if get_on(&mut stream).await == "200" {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn connections_past_max_connections_get_a_503_and_the_rest_are_served() {
    let blue = upstream("blue").await;
    let config = format!(
        "max_connections = 4\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    let proxy = TestProxy::start(&config).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(get_on(&mut stream).await, "200");
        held.push(stream);
    }
    let mut extra = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut answer))
        .await
        .expect("a refused connection was left open")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // The connections within the limit are still served.
    for stream in &mut held {
        assert_eq!(get_on(stream).await, "200");
    }
    // One closes: a new client gets its place.
    held.pop();
    assert!(served_within(proxy.addr(), Duration::from_secs(10)).await);
}

#[tokio::test]
async fn out_of_file_handles_the_proxy_backs_off_logs_once_and_keeps_serving() {
    let blue = upstream("blue").await;
    let setup = Setup::new(std::slice::from_ref(&blue), "{ blue = 1 }", "");
    let proxy = Proxy::start(&setup, &[]).await;
    let pid = proxy.child.id() as i32;
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    // A few handles to spare, then none (the hard limit stays).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on our own child: read the limits into `limit`, then set them.
    let got = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) };
    assert_eq!(got, 0, "prlimit failed");
    limit.rlim_cur = open + 8;
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit failed");

    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // The proxy now fails to accept: two seconds of it give at most two log lines.
    let shortage = Duration::from_secs(2);
    tokio::time::sleep(shortage).await;
    let log = proxy.log_text();
    let complaints = log.matches("accept failed").count();
    assert!(
        complaints >= 1,
        "the proxy never ran out of handles:\n{log}"
    );
    assert!(
        complaints <= 2,
        "{complaints} log lines for one shortage of file handles"
    );
    drop(flood);
    assert!(
        served_within(proxy.addr, Duration::from_secs(10)).await,
        "the proxy stopped serving after running out of file handles:\n{}",
        proxy.log_text()
    );
}
