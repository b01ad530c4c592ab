//! The HTTP/1 upstream codec against upstreams that misbehave, over real sockets: raw TCP
//! servers that answer exactly the bytes a test scripts, split where it says.

mod common;
use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that runs `serve` on every connection it accepts, and counts them.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start<F, Fut>(serve: F) -> RawUpstream
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let serve = Arc::new(serve);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let index = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(Conn {
                    stream,
                    buf: Vec::new(),
                    index,
                }));
            }
        });
        RawUpstream {
            addr,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// 0 for the first connection the upstream accepted.
    index: usize,
}

impl Conn {
    /// The next request's head (request line and fields); `None` once the proxy closed.
    async fn request(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The path of a request head.
    fn path(head: &str) -> String {
        head.split(' ').nth(1).unwrap_or("").to_string()
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends in two writes with a pause between, so the proxy most likely reads them apart.
    async fn send_split(&mut self, bytes: &[u8], at: usize) {
        self.send(&bytes[..at]).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.send(&bytes[at..]).await;
    }
}

async fn proxy_to(upstream: &RawUpstream) -> TestProxy {
    proxy_with(upstream, "").await
}

/// `timeouts` goes under `[proxy.timeouts]`.
async fn proxy_with(upstream: &RawUpstream, timeouts: &str) -> TestProxy {
    let config = format!(
        "[proxy.timeouts]\n{timeouts}\n[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"{}\"]\n",
        upstream.addr
    );
    TestProxy::start(&config).await
}

/// Status, headers and body, or the error the body ended with.
async fn fetch(
    client: &HttpClient,
    proxy: &TestProxy,
    method: Method,
    path: &str,
) -> (StatusCode, http::HeaderMap, Result<Bytes, String>) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.addr()))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|err| err.to_string());
    (status, headers, body)
}

/// Whether a GET came back whole: a broken upstream body may fail the client's answer
/// before or after its head went out, but must never look complete.
async fn came_back_whole(client: &HttpClient, proxy: &TestProxy, path: &str) -> bool {
    let uri = format!("http://{}{path}", proxy.addr()).parse().unwrap();
    match client.get(uri).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// Idle connections the proxy holds to its one endpoint.
fn pooled(proxy: &TestProxy) -> usize {
    let table = proxy.proxy.controller.plane.table.load();
    table.services()[0].versions[0].endpoints[0]
        .pool
        .idle_count()
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-check: split\r\n\r\nhello";

#[tokio::test]
async fn a_head_split_at_every_byte_boundary_is_read_whole_on_one_connection() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            let at: usize = Conn::path(&head).trim_start_matches('/').parse().unwrap();
            conn.send_split(ANSWER, at).await;
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    let head_len = ANSWER.len() - 5;
    for at in 1..head_len {
        let (status, headers, body) = fetch(&client, &proxy, Method::GET, &format!("/{at}")).await;
        assert_eq!(status, StatusCode::OK, "split at {at}");
        assert_eq!(headers["x-check"], "split", "split at {at}");
        assert_eq!(body.unwrap(), "hello", "split at {at}");
    }
    assert_eq!(
        upstream.connections(),
        1,
        "clean exchanges reuse one connection"
    );
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_pass_through() {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5;name=value\r\nhello\r\n6 ; another\r\n, worl\r\n1\r\nd\r\n0;last\r\nx-sum: 11\r\n\r\n";
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            let at: usize = Conn::path(&head).trim_start_matches('/').parse().unwrap();
            conn.send_split(CHUNKED, at).await;
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    let head_len = CHUNKED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for at in head_len..CHUNKED.len() {
        let (status, _, body) = fetch(&client, &proxy, Method::GET, &format!("/{at}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "hello, world", "split at {at}");
    }
    assert_eq!(upstream.connections(), 1);

    // An HTTP/2 client gets the trailers too.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let response = h2
        .get(
            format!("http://{}/{head_len}", proxy.addr())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-sum"], "11");
    assert_eq!(collected.to_bytes(), "hello, world");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_fails_and_its_connection_is_closed() {
    let upstream = RawUpstream::start(|mut conn| async move {
        if conn.request().await.is_some() {
            conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                .await;
            // Closes with 5 bytes owed.
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    assert!(
        !came_back_whole(&client, &proxy, "/").await,
        "a truncated body must not look complete"
    );
    assert_eq!(pooled(&proxy), 0);
}

#[tokio::test]
async fn bytes_past_the_content_length_are_never_read_as_the_next_answer() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            match conn.index {
                // Five bytes announced, a forged second answer right behind them.
                0 => {
                    conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
                        .await
                }
                _ => conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal").await,
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    let (_, _, body) = fetch(&client, &proxy, Method::GET, "/").await;
    assert_eq!(body.unwrap(), "hello");
    let (_, _, body) = fetch(&client, &proxy, Method::GET, "/").await;
    assert_eq!(body.unwrap(), "real");
    assert_eq!(
        upstream.connections(),
        2,
        "the connection with extra bytes was reused"
    );
}

#[tokio::test]
async fn garbage_sent_while_a_connection_idles_keeps_it_out_of_use() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            if conn.index == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
                    .await;
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    let (_, _, body) = fetch(&client, &proxy, Method::GET, "/").await;
    assert_eq!(body.unwrap(), "ok");
    // Wait until the unasked bytes were certainly sent (and seen by the proxy's poller).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, _, body) = fetch(&client, &proxy, Method::GET, "/").await;
    assert_eq!(body.unwrap(), "ok");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn interim_answers_before_the_final_one_are_skipped() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.send_split(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                30,
            )
            .await;
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    for _ in 0..3 {
        let (status, headers, body) = fetch(&client, &proxy, Method::GET, "/").await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(!headers.contains_key("link"));
        assert_eq!(body.unwrap(), "ok");
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn head_and_304_answers_with_a_content_length_have_no_body() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            match head.starts_with("HEAD") {
                true => {
                    conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                        .await
                }
                false => {
                    conn.send(
                        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: \"v1\"\r\n\r\n",
                    )
                    .await
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    for _ in 0..2 {
        let (status, headers, body) = fetch(&client, &proxy, Method::HEAD, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-length"], "10");
        assert_eq!(body.unwrap(), "");
        let (status, headers, body) = fetch(&client, &proxy, Method::GET, "/").await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers["etag"], "\"v1\"");
        assert_eq!(body.unwrap(), "");
    }
    assert_eq!(upstream.connections(), 1, "bodiless answers end cleanly");
}

#[tokio::test]
async fn an_answer_cut_off_early_gives_502_or_a_broken_body() {
    let upstream = RawUpstream::start(|mut conn| async move {
        if let Some(head) = conn.request().await {
            match Conn::path(&head).as_str() {
                "/half-head" => conn.send(b"HTTP/1.1 200 OK\r\ncontent-le").await,
                "/nothing" => {}
                _ => {
                    conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
                        .await
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    for path in ["/half-head", "/nothing"] {
        let (status, _, _) = fetch(&client, &proxy, Method::GET, path).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}");
    }
    assert!(!came_back_whole(&client, &proxy, "/half-chunk").await);
    assert_eq!(pooled(&proxy), 0);
}

/// A user who walks away mid-answer leaves the rest of it on the upstream connection. Were
/// that connection pooled, the next user would be handed the first user's bytes.
#[tokio::test]
async fn a_half_read_answer_never_reaches_the_next_user() {
    let (release, released) = tokio::sync::watch::channel(false);
    let upstream = RawUpstream::start(move |mut conn| {
        let mut released = released.clone();
        async move {
            while let Some(head) = conn.request().await {
                let user = Conn::path(&head);
                if user == "/alice" {
                    conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 26\r\n\r\nalice's secret, ")
                        .await;
                    let _ = released.wait_for(|&go| go).await;
                    conn.send(b"part two\r\n").await;
                } else {
                    let body = format!("for {user}");
                    conn.send(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let alice = client();
    let response = alice
        .get(format!("http://{}/alice", proxy.addr()).parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"alice's"));
    drop(body);
    drop(alice);
    // The proxy notices the client leave when it next writes or reads; wait for the
    // upstream request to be over, then let the rest of Alice's answer go out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.proxy.controller.plane.table.load().services()[0].versions[0].endpoints[0]
        .in_flight()
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "alice's exchange never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(true).unwrap();
    assert_eq!(
        pooled(&proxy),
        0,
        "a half-read connection went back to the pool"
    );
    let bob = client();
    for _ in 0..3 {
        let (status, _, body) = fetch(&bob, &proxy, Method::GET, "/bob").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "for /bob");
    }
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_upstream_body_that_stops_is_cut_off_after_upstream_body_idle_and_counted() {
    let upstream = RawUpstream::start(|mut conn| async move {
        if conn.request().await.is_some() {
            conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                .await;
            // Never the other five bytes; holds the connection open.
            std::future::pending::<()>().await;
        }
    })
    .await;
    let proxy = proxy_with(&upstream, "upstream_body_idle = \"300ms\"").await;
    let started = std::time::Instant::now();
    let whole = tokio::time::timeout(
        Duration::from_secs(20),
        came_back_whole(&client(), &proxy, "/"),
    )
    .await
    .expect("the stalled body was never cut off");
    assert!(!whole);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (status, text) = admin_raw_on(&proxy.admin(), Method::GET, "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|line| line.starts_with("switchyard_requests_total{")
                && line.contains("outcome=\"timeout\"")
                && line.ends_with(" 1")),
        "the cut-off body was not counted as the version's timeout:\n{text}"
    );
    assert_eq!(pooled(&proxy), 0);
}

#[tokio::test]
async fn an_answers_hop_by_hop_fields_never_reach_the_client() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            match Conn::path(&head).as_str() {
                // Connection names nothing but keep-alive: the codec drops the fields itself.
                "/plain" => {
                    conn.send(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-kept: 1\r\ncontent-length: 2\r\n\r\nok")
                        .await
                }
                // Connection names another field: the proxy's own pass removes it too.
                _ => {
                    conn.send(b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-secret\r\nx-secret: 1\r\nx-kept: 1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                        .await
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    for path in ["/plain", "/named"] {
        let (status, headers, body) = fetch(&client, &proxy, Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body.unwrap(), "ok", "{path}");
        assert_eq!(headers["x-kept"], "1", "{path}");
        for hop in ["keep-alive", "proxy-connection", "x-secret"] {
            assert!(
                !headers.contains_key(hop),
                "{path}: {hop} reached the client"
            );
        }
        assert_eq!(headers["via"], "1.1 switchyard", "{path}");
    }
    assert_eq!(upstream.connections(), 1);
}

/// An upstream's answer that carries the fields the proxy stamps (as a confused or
/// hostile upstream might): the client gets the proxy's, once; Via and Set-Cookie keep the
/// upstream's beside the proxy's. Both ways the codec reads answers: raw lines (`/plain`)
/// and a map (`/named`, whose Connection names a field).
#[tokio::test]
async fn the_proxys_answer_fields_replace_an_upstreams_and_lists_keep_both() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            let connection = match Conn::path(&head).as_str() {
                "/plain" => "keep-alive",
                _ => "keep-alive, x-secret",
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nconnection: {connection}\r\nX-Request-Id: forged\r\n\
                 Switchyard-Version: forged\r\nVia: 1.0 cache\r\nSet-Cookie: a=1\r\n\
                 content-length: 2\r\n\r\nok"
            );
            conn.send(answer.as_bytes()).await;
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let client = client();
    for path in ["/plain", "/named"] {
        let request = Request::get(format!("http://{}{path}", proxy.addr()))
            .header("x-request-id", "mine-1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let all = |name: &str| -> Vec<String> {
            let values = headers.get_all(name).iter();
            values.map(|v| v.to_str().unwrap().to_string()).collect()
        };
        assert_eq!(all("x-request-id"), ["mine-1"], "{path}");
        assert_eq!(all("switchyard-version"), ["blue"], "{path}");
        assert_eq!(all("via"), ["1.0 cache", "1.1 switchyard"], "{path}");
        assert_eq!(all("set-cookie"), ["a=1"], "{path}");
    }
}

#[tokio::test]
async fn an_absolute_form_target_goes_upstream_in_origin_form() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while let Some(head) = conn.request().await {
            let line = head.lines().next().unwrap_or("").to_string();
            conn.send(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{line}",
                    line.len()
                )
                .as_bytes(),
            )
            .await;
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET http://shop.example/a/b?c=d HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.ends_with("GET /a/b?c=d HTTP/1.1"), "{answer}");
}
