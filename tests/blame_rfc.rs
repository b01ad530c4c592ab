//! Small RFC points on the way through: an HTTP/2 client's split `cookie` fields reach an
//! HTTP/1 upstream as one line (RFC 9113 §8.2.3).

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_clients_cookie_fields_go_upstream_as_one_line() {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (heads, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = heads.send(String::from_utf8_lossy(&head).to_ascii_lowercase());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let proxy = TestProxy::start(&format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{upstream}\"]\n"
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://api.test/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let _ = response.into_body().collect().await;
    let head = seen.recv().await.unwrap();
    let cookies: Vec<&str> = head.lines().filter(|l| l.starts_with("cookie:")).collect();
    assert_eq!(cookies, ["cookie: a=1; b=2; c=3"], "{head}");
}
