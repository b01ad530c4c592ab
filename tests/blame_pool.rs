//! An upstream that sends a second, unasked response after the real one must not get a
//! later user's request: a pooled HTTP/1 connection with anything readable on it (bytes
//! or EOF) is closed before it is handed out, so no user ever gets another's answer.

mod common;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Answers each request with a cookie naming the path's user, then 50 ms later sends a
/// second answer nobody asked for (and says so on `sent`).
async fn poisoning_upstream(sent: mpsc::UnboundedSender<()>) -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let user = head
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/');
                    let answer = |who: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\nSet-Cookie: session={who}\r\nContent-Length: {}\r\n\r\n{who}",
                            who.len()
                        )
                    };
                    if stream.write_all(answer(user).as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let stale = format!("stale-{user}");
                    if stream.write_all(answer(&stale).as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = sent.send(());
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_second_answer_never_reaches_another_user() {
    let (sent, mut unasked) = mpsc::unbounded_channel();
    let upstream = poisoning_upstream(sent).await;
    let proxy = TestProxy::start(&format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{upstream}\"]\n"
    ))
    .await;
    let mut alice = Client::connect(proxy.addr()).await;
    let mut bob = Client::connect(proxy.addr()).await;
    let mut wrong = 0;
    for round in 0..40 {
        let (client, user) = match round % 2 {
            0 => (&mut alice, "alice"),
            _ => (&mut bob, "bob"),
        };
        let request = http::Request::get(format!("/{user}"))
            .header("host", "api.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let reply = client.send(request).await;
        let cookie = reply
            .headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        if reply.body != user || cookie.as_deref() != Some(&format!("session={user}")) {
            wrong += 1;
        }
        // The unasked answer is on the pooled connection before the next request.
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), unasked.recv()).await;
        assert!(waited.is_ok(), "the upstream never sent its second answer");
        // Give the bytes time to cross loopback (the check is on the next hand-out).
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(wrong, 0, "{wrong} of 40 answers went to the wrong user");
}
