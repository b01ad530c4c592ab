//! Small RFC points on the way through: an HTTP/2 client's split `cookie` fields reach an
//! HTTP/1 upstream as one line (RFC 9113 §8.2.3); an upstream's `Content-Length: 5, 5`
//! reaches the client as one value (RFC 9110 §8.6); `Transfer-Encoding: gzip, chunked`
//! keeps its gzip as a content coding when the proxy re-frames the body.

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

/// `gzip.compress(b"hello, gzip", mtime=0)`.
const GZIPPED: [u8; 31] = [
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 72, 205, 201, 201, 215, 81, 72, 175, 202, 44, 0, 0, 74,
    155, 177, 92, 11, 0, 0, 0,
];

/// An upstream that answers `/length` with a listed Content-Length and `/gzip` with a gzip
/// transfer coding under chunked.
async fn odd_framing_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let answer = if head.starts_with(b"GET /length") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec()
                    } else {
                        let mut answer =
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
                        answer.extend_from_slice(format!("{:x}\r\n", GZIPPED.len()).as_bytes());
                        answer.extend_from_slice(&GZIPPED);
                        answer.extend_from_slice(b"\r\n0\r\n\r\n");
                        answer
                    };
                    head.clear();
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_content_length_goes_out_as_one_value_and_gzip_transfer_coding_is_kept() {
    let upstream = odd_framing_upstream().await;
    let proxy = TestProxy::start(&format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{upstream}\"]\n"
    ))
    .await;

    // The exact bytes the client gets.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET /length HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let lengths: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["content-length: 5"], "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");

    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/gzip")
        .header("host", "api.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-encoding"], "gzip", "{headers:?}");
    let transfer: Vec<_> = headers.get_all("transfer-encoding").iter().collect();
    assert!(
        transfer.is_empty() || transfer == ["chunked"],
        "{headers:?}"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], GZIPPED, "the gzip bytes, unchanged");
}
