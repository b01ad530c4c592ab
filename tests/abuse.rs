//! Replays HTTP/1 and HTTP/2 abuse against the real binary while a normal client keeps
//! asking beside it: smuggling variants, slowloris, slow readers, abandoned uploads, rapid
//! reset, CONTINUATION flood, HPACK bomb, streams held at window 0. The normal client must
//! be served throughout, nothing smuggled may reach the upstream, every held connection
//! must be let go, and the proxy's resident memory must stay bounded.

mod common;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, so held connections are let go within the test.
const EXTRA: &str = "\n[proxy.timeouts]\nclient_headers = \"1s\"\nclient_idle = \"1s\"\nupstream_body_idle = \"1s\"\n";
/// Growth of the proxy's resident memory the whole replay may cause.
const RSS_BUDGET_KIB: u64 = 256 * 1024;

/// An upstream that records every request target it is sent and streams `/big` slowly
/// enough to stay busy: smuggled requests would show up in `seen`.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(LOOPBACK_ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                log.lock().unwrap().push(request.uri().to_string());
                async move {
                    use http_body_util::BodyExt;
                    let big = request.uri().path() == "/big";
                    let _ = request.into_body().collect().await;
                    let body = match big {
                        true => bytes::Bytes::from(vec![b'x'; 8 * 1024 * 1024]),
                        false => bytes::Bytes::from_static(b"ok\n"),
                    };
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(body)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// A well-behaved client asking every 20 ms on its own keep-alive connection.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Bystander {
    fn start(addr: SocketAddr) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut served, mut failed) = (0, 0);
            let mut client = Client::connect(addr).await;
            while !flag.load(Ordering::Relaxed) {
                let asked = tokio::time::timeout(Duration::from_secs(5), client.get("/ok")).await;
                match asked {
                    Ok((status, _)) if status == 200 => served += 1,
                    _ => {
                        failed += 1;
                        client = Client::connect(addr).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (served, failed)
        });
        Bystander { stop, task }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The highest resident memory seen while sampling every 50 ms.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (high, flag) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    high.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssWatch { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Writes `bytes`, then reads until the proxy closes (bounded); the answer as text.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until the proxy closes `stream` (or resets it); false if it is still open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";

/// Request smuggling and framing tricks; none may get `/smuggled` to the upstream.
fn smuggling_cases() -> Vec<String> {
    let tail = SMUGGLED;
    let cases = [
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: +5\r\n\r\nhello{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 5, 40\r\n\r\nhello{tail}"),
        format!("POST /a HTTP/1.0\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nx\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"\r\n\"\r\nhello\r\n0\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n{tail}"),
        format!("POST /a HTTP/1.1\nHost: shop\nContent-Length: 5\n\nhello{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\n Content-Length: 40\r\nContent-Length: 5\r\n\r\nhello{tail}"),
        format!("GET /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 40\r\n\r\n{tail}"),
        format!("POST /a HTTP/1.1\r\nHost: shop\r\nConnection: Content-Length\r\nContent-Length: 40\r\n\r\n{tail}"),
    ];
    cases.into_iter().collect()
}

async fn slowloris(addr: SocketAddr, count: usize) -> usize {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(stream);
    }
    // A byte now and then, never the end of the head.
    for _ in 0..3 {
        for stream in &mut held {
            let _ = stream.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut still_open = 0;
    for stream in &mut held {
        if !closed_within(stream, Duration::from_secs(10)).await {
            still_open += 1;
        }
    }
    still_open
}

async fn slow_readers(addr: SocketAddr, count: usize) -> usize {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // Read a byte a second, as the slow reader does.
    for _ in 0..3 {
        for stream in &mut held {
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_millis(10), stream.read(&mut byte)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut still_open = 0;
    for stream in &mut held {
        // Whatever is still buffered may arrive; the proxy must have given up on the rest.
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        })
        .await
        .is_ok();
        if !closed || total >= 8 * 1024 * 1024 {
            still_open += 1;
        }
    }
    still_open
}

async fn abandoned_uploads(addr: SocketAddr, count: usize) {
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\n0123456789",
            )
            .await;
    }
}

// HTTP/2 frames, written by hand: a client library would never send these.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// GET / with :authority shop, as an HPACK block (static table, literal authority).
fn request_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 4];
    block.extend_from_slice(b"shop");
    block
}

/// An HPACK integer with an `n`-bit prefix, first byte ORed with `high`.
fn hpack_int(value: usize, n: u8, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Writes the whole attack, then waits for the proxy to close (bounded).
async fn h2_attack(addr: SocketAddr, frames: Vec<u8>) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frames);
    let _ = stream.write_all(&bytes).await;
    closed_within(&mut stream, Duration::from_secs(10)).await
}

fn rapid_reset(streams: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..streams {
        let id = 2 * i + 1;
        out.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(),
        ));
        out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    out
}

fn continuation_flood(frames: usize) -> Vec<u8> {
    let mut out = frame(HEADERS, END_STREAM, 1, &request_block());
    let mut junk = vec![0x40, 5];
    junk.extend_from_slice(b"x-pad");
    hpack_int(1000, 7, 0, &mut junk);
    junk.extend(std::iter::repeat_n(b'a', 1000));
    for _ in 0..frames {
        out.extend(frame(CONTINUATION, 0, 1, &junk));
    }
    out
}

fn hpack_bomb(references: usize) -> Vec<u8> {
    // One 4 KB entry into the dynamic table, then thousands of one-byte references to it.
    let mut block = request_block();
    block.extend_from_slice(&[0x40, 6]);
    block.extend_from_slice(b"x-bomb");
    hpack_int(4000, 7, 0, &mut block);
    block.extend(std::iter::repeat_n(b'b', 4000));
    let mut out = Vec::new();
    let mut first = true;
    let references: Vec<u8> = vec![0x80 | 62; references];
    let mut rest: &[u8] = &references;
    let mut payload = block;
    loop {
        let room = 16_000usize.saturating_sub(payload.len());
        let take = room.min(rest.len());
        payload.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        let last = rest.is_empty();
        let flags = if last { END_HEADERS } else { 0 };
        let kind = if first { HEADERS } else { CONTINUATION };
        let flags = if first { flags | END_STREAM } else { flags };
        out.extend(frame(kind, flags, 1, &payload));
        first = false;
        payload = Vec::new();
        if last {
            return out;
        }
    }
}

async fn window_zero_hold(addr: SocketAddr, streams: usize) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut bodies = Vec::new();
    for _ in 0..streams {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let request = http::Request::get(format!("http://{addr}/big"))
            .body(())
            .unwrap();
        let Ok((response, _)) = client.send_request(request, true) else {
            break;
        };
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), response).await {
            bodies.push(response.into_body());
        }
    }
    // Never release any window; the proxy must end these streams.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        for mut body in bodies {
            while let Some(Ok(_)) = body.data().await {}
        }
    })
    .await
    .is_ok();
    drop(client);
    connection.abort();
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_replay_keeps_a_normal_client_served_and_memory_bounded() {
    let (upstream, seen) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        config: dir.path().join("switchyard.toml"),
        socket: dir.path().join("admin.sock"),
        dir,
    };
    std::fs::write(
        &setup.config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n{EXTRA}\n[admin]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n\n\
             [services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n\
             [services.shop.versions.blue]\nendpoints = [\"{upstream}\"]\n",
            setup.socket.display(),
            setup.dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&setup, &[]).await;
    let addr = proxy.addr;
    let pid = proxy.child.id();
    // Warm up: connections, pools and allocator arenas exist before the baseline.
    let mut warm = Client::connect(addr).await;
    for _ in 0..50 {
        assert_eq!(warm.get("/ok").await.0, 200);
    }
    let baseline = rss_kib(pid).unwrap();
    let rss = RssWatch::start(pid);
    let bystander = Bystander::start(addr);
    let started = Instant::now();

    let mut report = Vec::new();
    // A "smuggled" request the proxy itself parsed and answered is plain pipelining.
    let mut answered_smuggled = 0;
    for case in smuggling_cases() {
        let answer = send_raw(addr, case.as_bytes()).await;
        answered_smuggled += answer.matches("HTTP/1.1 ").count().saturating_sub(1);
        let status = answer.split(' ').nth(1).unwrap_or("closed").to_string();
        report.push(format!(
            "smuggling {:?}: {status}",
            &case[..case.find("\r\n\r\n").unwrap_or(40).min(90)]
        ));
    }
    let (open_slowloris, open_readers, _) = tokio::join!(
        slowloris(addr, 50),
        slow_readers(addr, 20),
        abandoned_uploads(addr, 50),
    );
    let reset_closed = h2_attack(addr, rapid_reset(5000)).await;
    let continuation_closed = h2_attack(addr, continuation_flood(2000)).await;
    let bomb_closed = h2_attack(addr, hpack_bomb(30_000)).await;
    let window_zero_ended = window_zero_hold(addr, 20).await;

    let (served, failed) = bystander.finish().await;
    let peak = rss.peak();
    eprintln!(
        "{}\nslowloris left open: {open_slowloris}/50; slow readers left open: {open_readers}/20\n\
         rapid reset closed: {reset_closed}; CONTINUATION flood closed: {continuation_closed}; \
         HPACK bomb closed: {bomb_closed}; window-0 streams ended: {window_zero_ended}\n\
         bystander: {served} served, {failed} failed in {:?}; RSS {baseline} KiB -> peak {peak} KiB",
        report.join("\n"),
        started.elapsed()
    );
    let smuggled: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|target| target.contains("smuggled"))
        .cloned()
        .collect();
    assert!(
        smuggled.len() <= answered_smuggled,
        "smuggled past the proxy to the upstream: {smuggled:?}, answered {answered_smuggled}"
    );
    assert_eq!(open_slowloris, 0, "slowloris connections still held");
    assert_eq!(open_readers, 0, "slow readers still held");
    assert!(reset_closed, "rapid reset: connection kept open");
    assert!(
        continuation_closed,
        "CONTINUATION flood: connection kept open"
    );
    assert!(bomb_closed, "HPACK bomb: connection kept open");
    assert!(window_zero_ended, "streams at window 0 still held");
    assert_eq!(failed, 0, "the normal client was refused {failed} times");
    assert!(
        served > 100,
        "the normal client was barely served ({served})"
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET_KIB,
        "memory grew from {baseline} KiB to {peak} KiB"
    );
}
