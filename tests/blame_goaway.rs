//! An HTTP/2 upstream that refuses streams it never processed (a graceful GOAWAY below
//! them, or REFUSED_STREAM): the proxy sends those requests again on another connection,
//! bodies and all, and never counts them against the version (RFC 9113 §8.7).

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Refuse {
    /// GOAWAY(NO_ERROR) after this many streams, with the last one taken.
    GoAwayEvery(usize),
    /// RST_STREAM(REFUSED_STREAM) on every nth stream.
    EveryNth(usize),
}

struct Upstream {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(refuse: Refuse) -> Upstream {
    let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, refuse, counter.clone()));
        }
    });
    Upstream {
        addr,
        refused,
        task,
    }
}

/// Refuses some streams as `refuse` says, and answers the others with their own body.
async fn serve(stream: tokio::net::TcpStream, refuse: Refuse, refused: Arc<AtomicUsize>) {
    match refuse {
        Refuse::GoAwayEvery(n) => goaway_every(stream, n, refused).await,
        Refuse::EveryNth(n) => refuse_every_nth(stream, n, refused).await,
    }
}

/// The h2 crate's server, resetting every nth stream with REFUSED_STREAM.
async fn refuse_every_nth(stream: tokio::net::TcpStream, n: usize, refused: Arc<AtomicUsize>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let mut taken = 0;
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        taken += 1;
        if taken % n == 0 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            refused.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        tokio::spawn(async move {
            let mut body = request.into_body();
            let mut echoed = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                echoed.extend_from_slice(&chunk);
            }
            if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
                let _ = send.send_data(Bytes::from(echoed), true);
            }
        });
    }
}

/// Raw frames (h2 closes at once on an abrupt GOAWAY): GOAWAY(NO_ERROR) as soon as the
/// nth stream's HEADERS arrive, with that stream as the last one taken. Streams above it
/// are never processed; those at or below it are answered, then the connection closes.
async fn goaway_every(mut stream: tokio::net::TcpStream, n: usize, refused: Arc<AtomicUsize>) {
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    let _ = stream.write_all(&frame(0x4, 0, 0, &[])).await; // our SETTINGS: defaults
    let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut last_taken: Option<u32> = None;
    let mut taken = 0;
    let mut open = 0;
    loop {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        let end_stream = flags & 0x1 != 0;
        let mut out = Vec::new();
        match kind {
            0x4 if flags & 0x1 == 0 => out.extend(frame(0x4, 0x1, 0, &[])), // SETTINGS ACK
            0x6 if flags & 0x1 == 0 => out.extend(frame(0x6, 0x1, 0, &payload)), // PING ACK
            0x1 if last_taken.is_some_and(|last| id > last) => {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            0x1 => {
                taken += 1;
                open += 1;
                bodies.insert(id, Vec::new());
                if taken == n {
                    last_taken = Some(id);
                    let mut goaway = id.to_be_bytes().to_vec();
                    goaway.extend_from_slice(&0u32.to_be_bytes());
                    out.extend(frame(0x7, 0, 0, &goaway));
                }
            }
            0x0 => {
                if let Some(body) = bodies.get_mut(&id) {
                    body.extend_from_slice(&payload);
                }
            }
            _ => {}
        }
        if (kind == 0x0 || kind == 0x1) && end_stream {
            if let Some(body) = bodies.remove(&id) {
                out.extend(frame(0x1, 0x4, id, &[0x88])); // HEADERS :status 200
                out.extend(frame(0x0, 0x1, id, &body)); // DATA, END_STREAM
                open -= 1;
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if last_taken.is_some() && open == 0 {
            // Everything taken is answered: close our side, and read until the proxy
            // closes its own (closing with unread bytes would reset the answers).
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(1..)) {}
            return;
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn config(upstream: &Upstream) -> String {
    format!(
        "\n[services.api]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\n\
         [services.api.versions.blue]\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\n",
        upstream.addr
    )
}

/// 10 HTTP/1.1 clients, 20 POSTs each with a body of their own: every one answered with
/// its body, none counted against the version.
async fn every_request_answered(refuse: Refuse) {
    let upstream = upstream(refuse).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let clients = (0..10).map(|c| {
        let addr = proxy.addr();
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for i in 0..20 {
                let body = format!("client {c} request {i} ").repeat(50);
                let request = http::Request::post("/echo")
                    .header("host", "api.test")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let reply = client.send(request).await;
                assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
                assert_eq!(reply.body, body);
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    assert!(
        upstream.refused.load(Ordering::SeqCst) > 0,
        "the upstream never refused"
    );
    let (_, text) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("switchyard_errors_total") && !line.ends_with(" 0"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        text.contains(
            "switchyard_requests_total{service=\"api\",version=\"blue\",outcome=\"2xx\"} 200"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_goaway_every_5_streams_costs_no_request() {
    every_request_answered(Refuse::GoAwayEvery(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_sent_again_and_never_counted() {
    every_request_answered(Refuse::EveryNth(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_everything_gets_a_bounded_retry_and_no_blame() {
    let upstream = upstream(Refuse::EveryNth(1)).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let mut client = Client::connect(proxy.addr()).await;
    for body in ["small".repeat(10), "large".repeat(30_000)] {
        let request = http::Request::post("/echo")
            .header("host", "api.test")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let reply = client.send(request).await;
        assert_eq!(
            reply.status,
            http::StatusCode::SERVICE_UNAVAILABLE,
            "{reply:?}"
        );
    }
    // Each went at most 11 times (the 150 KB one stops early once more than the 64 KiB
    // kept for a retry has gone out).
    let refused = upstream.refused.load(Ordering::SeqCst);
    assert!((12..=22).contains(&refused), "{refused}");
    let (_, text) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    assert!(
        !text
            .contains("switchyard_errors_total{service=\"api\",version=\"blue\",kind=\"reset\"} 1"),
        "{text}"
    );
    let counted = text
        .lines()
        .filter(|line| {
            line.starts_with("switchyard_requests_total{service=\"api\"") && !line.ends_with(" 0")
        })
        .count();
    assert_eq!(counted, 0, "{text}");
}
