//! h2c smuggling: `Upgrade: h2c` is taken out before the request goes upstream, so no
//! cleartext HTTP/2 tunnel past host routing, match rules and accounting ever opens.
//! (WebSocket upgrades still pass: tests/wire.rs.)

mod common;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// An upstream that would take the h2c upgrade (101) whenever offered; it reports the
/// head it got.
async fn h2c_willing_upstream(heads: mpsc::UnboundedSender<String>) -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await.to_ascii_lowercase();
                let answer: &[u8] = if head.contains("upgrade: h2c") {
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain"
                };
                let _ = heads.send(head);
                let _ = stream.write_all(answer).await;
            });
        }
    });
    addr
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_h2c_never_reaches_the_upstream() {
    let (heads, mut seen) = mpsc::unbounded_channel();
    let upstream = h2c_willing_upstream(heads).await;
    let proxy = TestProxy::start(&format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{upstream}\"]\n"
    ))
    .await;
    // As h2csmuggler sends it; also with h2c among other protocols.
    for upgrade in ["h2c", "H2C", "websocket-not, h2c"] {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!(
            "GET /secret HTTP/1.1\r\nHost: api.test\r\nUpgrade: {upgrade}\r\n\
             HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"
        );
        client.write_all(request.as_bytes()).await.unwrap();
        let answer = read_head(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{upgrade}: {answer}");
        let head = seen.recv().await.unwrap();
        assert!(!head.contains("h2c"), "{upgrade}: {head}");
        assert!(!head.contains("http2-settings"), "{upgrade}: {head}");
    }
}
