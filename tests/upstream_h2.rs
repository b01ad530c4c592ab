//! `protocol = "h2c"`: HTTP/2 in clear to upstreams. A real hyper HTTP/2 server stands in
//! for the upstream and counts its connections; clients are real HTTP/1.1 and HTTP/2
//! clients on loopback.

mod common;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// An HTTP/2 (prior knowledge) upstream. `/slow` answers after 300 ms; any other path
/// echoes: the request's body back, its trailers back as trailers (plus one of its
/// own), and what it saw (`te`, the HTTP version, the authority) as headers.
struct H2Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Upstream {
    /// `max_streams`: its SETTINGS_MAX_CONCURRENT_STREAMS; `goaway_after`: requests per
    /// connection after which it sends GOAWAY and closes gracefully.
    async fn start(max_streams: u32, goaway_after: Option<usize>) -> H2Upstream {
        let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, max_streams, goaway_after));
            }
        });
        H2Upstream {
            addr,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(stream: tokio::net::TcpStream, max_streams: u32, goaway_after: Option<usize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let (count, notify) = (served.clone(), enough.clone());
    let service = hyper::service::service_fn(move |request| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if goaway_after.is_some_and(|limit| n >= limit) {
            notify.notify_one();
        }
        answer(request)
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(max_streams)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = enough.notified() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

type EchoBody = StreamBody<tokio_stream_like::Frames>;

mod tokio_stream_like {
    //! The echo's body: the request's frames as they come, then the upstream's trailers.
    use super::*;
    use hyper::body::Body as _;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Frames {
        pub body: Incoming,
        pub done: bool,
    }

    impl futures_core::Stream for Frames {
        type Item = Result<Frame<Bytes>, hyper::Error>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                    let mut trailers = frame.into_trailers().unwrap_or_default();
                    trailers.insert("x-upstream-trailer", HeaderValue::from_static("yes"));
                    self.done = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-upstream-trailer", HeaderValue::from_static("yes"));
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                other => other,
            }
        }
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if request.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut response = Response::builder()
        .header("x-seen-version", format!("{:?}", request.version()))
        .header(
            "x-seen-authority",
            request.uri().authority().map_or("", |a| a.as_str()),
        )
        .header(
            "x-seen-host",
            request
                .headers()
                .get("host")
                .map_or(&b""[..], |h| h.as_bytes()),
        )
        .header(
            "x-seen-te",
            request
                .headers()
                .get("te")
                .map_or(&b""[..], |h| h.as_bytes()),
        )
        .header("x-seen-forwarding", forwarding_seen(request.headers()));
    if let Some(kind) = request.headers().get("content-type") {
        response = response.header("content-type", kind);
    }
    let body = tokio_stream_like::Frames {
        body: request.into_body(),
        done: false,
    };
    Ok(response.body(StreamBody::new(body)).unwrap())
}

/// Every value of the fields the proxy sets, as `name=value` joined by `|`.
fn forwarding_seen(headers: &HeaderMap) -> String {
    let names = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
    ];
    let mut seen = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            seen.push(format!("{name}={}", value.to_str().unwrap_or("?")));
        }
    }
    seen.join("|")
}

fn config(upstream: &H2Upstream) -> String {
    format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n",
        upstream.addr
    )
}

/// An HTTP/2 client connection to the proxy.
async fn h2_client(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_and_te_pass_both_ways_to_an_h2c_upstream() {
    let upstream = H2Upstream::start(100, None).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let mut h2 = h2_client(proxy.addr()).await;

    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("sent"));
    let body = Full::new(Bytes::from_static(b"hello"))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let request = Request::post("http://api.test/echo")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    // (The body type differs from `client`'s: a connection of its own.)
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let head = response.headers().clone();
    assert_eq!(head["x-seen-version"], "HTTP/2.0");
    assert_eq!(head["x-seen-authority"], "api.test");
    assert_eq!(head["x-seen-te"], "trailers");
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("no trailers reached the client");
    assert_eq!(trailers["x-client-trailer"], "sent");
    assert_eq!(trailers["x-upstream-trailer"], "yes");
    assert_eq!(collected.to_bytes(), "hello");

    // An HTTP/1.1 client reaches the same HTTP/2 upstream; its Host becomes :authority.
    let reply = get(&client(), proxy.addr(), "/plain", &[("host", "api.test")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.headers["x-seen-version"], "HTTP/2.0");
    assert_eq!(reply.headers["x-seen-authority"], "api.test");
    assert_eq!(reply.headers["x-seen-host"], "");

    // The proxy's own fields replace a client's forged ones on HTTP/2 too.
    let forged = [
        ("host", "api.test"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "bank.example"),
        ("x-request-id", "req-7"),
        ("via", "1.0 fred"),
    ];
    let reply = get(&client(), proxy.addr(), "/plain", &forged).await;
    assert_eq!(
        reply.headers["x-seen-forwarding"],
        "x-request-id=req-7|x-forwarded-for=127.0.0.1|x-forwarded-proto=http|\
         x-forwarded-host=api.test|via=1.0 fred, 1.1 switchyard"
    );

    let reply = h2
        .send_request(
            Request::get("http://api.test/")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(upstream.connections(), 1, "requests were not multiplexed");
}

/// Sends `n` requests to `/slow` at once over one HTTP/2 client connection.
async fn burst(proxy: SocketAddr, n: usize) -> Vec<StatusCode> {
    let client = h2_client(proxy).await;
    let calls = (0..n).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let request = Request::get("http://api.test/slow")
                .body(Full::default())
                .unwrap();
            let response = client.send_request(request).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
    });
    let mut statuses = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        statuses.push(call.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_share_few_connections_within_the_peers_stream_limit() {
    // A peer allowing 100 streams: 40 requests at once on one connection.
    let roomy = H2Upstream::start(100, None).await;
    let proxy = TestProxy::start(&config(&roomy)).await;
    let statuses = burst(proxy.addr(), 40).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(roomy.connections(), 1);

    // A peer allowing 4: once its SETTINGS are known (two requests in), 20 at once
    // need at least five connections, and no more than the burst.
    let tight = H2Upstream::start(4, None).await;
    let proxy = TestProxy::start(&config(&tight)).await;
    for _ in 0..2 {
        assert_eq!(burst(proxy.addr(), 1).await, [StatusCode::OK]);
    }
    let statuses = burst(proxy.addr(), 20).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let connections = tight.connections();
    assert!((5..=20).contains(&connections), "{connections} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_goaway_is_replaced_without_failing_requests() {
    // The upstream says GOAWAY after every third request on a connection.
    let upstream = H2Upstream::start(100, Some(3)).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let mut client = h2_client(proxy.addr()).await;
    for n in 0..12 {
        let request = Request::get("http://api.test/x")
            .body(Full::default())
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
        response.into_body().collect().await.unwrap();
    }
    assert!(
        upstream.connections() >= 4,
        "{} connections",
        upstream.connections()
    );
    let metrics = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "")
        .await
        .1;
    assert!(
        metrics.contains("version=\"blue\",outcome=\"2xx\"} 12"),
        "{metrics}"
    );
}
