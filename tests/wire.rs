//! On the wire: HTTP/2, TLS with ALPN, streaming, upgrades, header hygiene, bad requests.

mod common;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_version_proxy(
    extra_proxy_keys: &str,
) -> (TestProxy, switchyard_testkit::SampleUpstream) {
    let blue = upstream("blue").await;
    let config = format!(
        "{extra_proxy_keys}\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    (TestProxy::start(&config).await, blue)
}

#[tokio::test]
async fn http2_prior_knowledge_in_clear() {
    let (proxy, _blue) = one_version_proxy("").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    for _ in 0..20 {
        let response = client
            .get(format!("http://{}/", proxy.addr()).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["switchyard-version"], "blue");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"version=blue\n");
    }
}

#[tokio::test]
async fn tls_with_alpn_serves_h2_and_http11() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let (proxy, _blue) = one_version_proxy(&tls).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (alpn, expected) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TokioIo::new(connector.connect(name, tcp).await.unwrap());
        let request = Request::get("https://localhost/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = if expected == http::Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
            tokio::spawn(conn);
            let mut request = request;
            *request.uri_mut() = "/".parse().unwrap();
            request
                .headers_mut()
                .insert("host", "localhost".parse().unwrap());
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"version=blue\n");
        assert_eq!(headers["switchyard-version"], "blue");
    }
}

#[tokio::test]
async fn bodies_far_larger_than_any_buffer_stream_both_ways() {
    let (proxy, _blue) = one_version_proxy("").await;
    const SIZE: u64 = 64 * 1024 * 1024;
    // Download: counted as it arrives.
    let client = client();
    let response = client
        .get(
            format!("http://{}/bytes/{SIZE}", proxy.addr())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);

    // Upload and echo: generated as sent, counted as echoed.
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let frames = futures_iter(chunks, chunk);
    let upload = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/echo", proxy.addr()))
        .body(StreamBody::new(frames))
        .unwrap();
    let response = upload.request(request).await.unwrap();
    let mut body = response.into_body();
    let mut echoed = 0u64;
    while let Some(frame) = body.frame().await {
        echoed += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(echoed, SIZE);
}

fn futures_iter(
    count: usize,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    struct Chunks(usize, Bytes);
    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(None);
            }
            self.0 -= 1;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.1.clone()))))
        }
    }
    Chunks(count, chunk)
}

async fn raw_exchange(proxy: &TestProxy, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut reply),
    )
    .await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let (proxy, _blue) = one_version_proxy("").await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"hello through the proxy"[..], b"and again"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let (proxy, _blue) = one_version_proxy("").await;
    let reply = raw_exchange(
        &proxy,
        b"GET /headers HTTP/1.1\r\nHost: shop.test\r\nConnection: close, x-private\r\nx-private: secret\r\n\
          Keep-Alive: timeout=5\r\nX-Forwarded-For: 10.9.8.7\r\nTE: gzip, trailers;q=0.5\r\n\r\n",
    )
    .await;
    let lower = reply.to_ascii_lowercase();
    assert!(
        lower.contains("x-forwarded-for: 10.9.8.7, 127.0.0.1"),
        "{reply}"
    );
    assert!(lower.contains("x-forwarded-proto: http"), "{reply}");
    assert!(lower.contains("x-forwarded-host: shop.test"), "{reply}");
    assert!(lower.contains("via: 1.1 switchyard"), "{reply}");
    assert!(!lower.contains("x-private"), "{reply}");
    assert!(!lower.contains("keep-alive: timeout"), "{reply}");
    // TE is hop-by-hop, but "the client takes trailers" holds end to end (both upstream
    // codecs pass trailers on); transfer codings do not.
    assert!(lower.contains("\nte: trailers\n"), "{reply}");
    assert!(!lower.contains("gzip"), "{reply}");
}

/// A client that sends the proxy's own fields (to pass for HTTPS, another host, another
/// request) gets them replaced, never doubled: the upstream sees one of each, the proxy's.
#[tokio::test]
async fn forged_forwarding_fields_are_replaced_not_doubled() {
    let (proxy, _blue) = one_version_proxy("").await;
    let reply = raw_exchange(
        &proxy,
        b"GET /headers HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: bank.example\r\nX-Request-Id: a b\r\nx-request-id: two\r\n\
          Via: 1.0 fred\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, listing) = reply.split_once("\r\n\r\n").expect("an answer");
    let seen = |name: &str| -> Vec<&str> {
        listing
            .lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            .collect()
    };
    assert_eq!(seen("x-forwarded-proto"), ["http"], "{listing}");
    assert_eq!(seen("x-forwarded-host"), ["shop.test"], "{listing}");
    assert_eq!(seen("via"), ["1.0 fred, 1.1 switchyard"], "{listing}");
    let ids = seen("x-request-id");
    assert!(ids.len() == 1 && ids[0].len() == 32, "{listing}");
    // The answer carries the same id the upstream saw.
    let answered = format!("x-request-id: {}\r\n", ids[0]);
    assert!(head.to_ascii_lowercase().contains(&answered), "{head}");
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_a_clear_error_and_the_proxy_carries_on() {
    let (proxy, _blue) = one_version_proxy("max_header_bytes = 8192").await;
    let garbage = raw_exchange(&proxy, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");

    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let oversized = raw_exchange(&proxy, &huge).await;
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized:?}");

    // Far past the limit, in one header or in many.
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        many.extend_from_slice(format!("x-h{i}: {}\r\n", "b".repeat(90)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let too_many = raw_exchange(&proxy, &many).await;
    assert!(
        too_many.starts_with("HTTP/1.1 431"),
        "{:?}",
        &too_many[..too_many.len().min(200)]
    );

    let bad_length = raw_exchange(
        &proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    )
    .await;
    assert!(bad_length.starts_with("HTTP/1.1 400"), "{bad_length:?}");

    // Nothing else changed: ordinary requests still work.
    let reply = get(&client(), proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn slow_clients_that_never_finish_their_headers_are_cut_off() {
    let blue = upstream("blue").await;
    let config = format!(
        "[proxy.timeouts]\nclient_headers = \"300ms\"\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        blue.addr
    );
    let proxy = TestProxy::start(&config).await;
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a client trickling headers kept its connection"
    );
    let reply = get(&client(), proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_http10_upstream_does_not_downgrade_or_close_the_clients_connection() {
    // An upstream that speaks HTTP/1.0 and closes after every answer.
    let listener = tokio::net::TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nold",
                    )
                    .await;
            });
        }
    });
    let config = format!(
        "[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{upstream_addr}\"]\n"
    );
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    for round in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"old") {
            let read = stream.read(&mut byte).await.unwrap();
            assert_eq!(
                read, 1,
                "round {round}: the proxy closed the client's connection"
            );
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
        assert!(reply.starts_with("http/1.1 200"), "round {round}: {reply}");
        assert!(
            !reply.contains("connection: close"),
            "round {round}: {reply}"
        );
    }
}
