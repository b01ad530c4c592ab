//! The sample upstream's faults that the load harness relies on.

use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_testkit::SampleUpstream;
use tokio::net::TcpStream;

type Sender = http1::SendRequest<Empty<bytes::Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    Ok(sender)
}

async fn get(sender: &mut Sender) -> Result<String, hyper::Error> {
    let request = http::Request::get("/")
        .header("host", "sample")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn start() -> SampleUpstream {
    SampleUpstream::start("canary", SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

/// A test that stops an upstream and then connects must see a refusal, not a race with
/// the runtime closing the socket later.
#[tokio::test]
async fn a_stop_refuses_the_very_next_connect() {
    let upstream = start().await;
    for _ in 0..20 {
        upstream.stop();
        let refused = TcpStream::connect(upstream.addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        upstream.restart().await.unwrap();
        let mut sender = connect(upstream.addr).await.unwrap();
        assert_eq!(get(&mut sender).await.unwrap(), "version=canary\n");
    }
}

#[tokio::test]
async fn a_crash_drops_open_connections_and_refuses_new_ones_until_restart() {
    let upstream = start().await;
    let mut kept_alive = connect(upstream.addr).await.unwrap();
    assert_eq!(get(&mut kept_alive).await.unwrap(), "version=canary\n");

    upstream.crash();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        get(&mut kept_alive).await.is_err(),
        "open connection survived"
    );
    assert!(
        connect(upstream.addr).await.is_err(),
        "new connection accepted"
    );

    upstream.restart().await.unwrap();
    let mut fresh = connect(upstream.addr).await.unwrap();
    assert_eq!(get(&mut fresh).await.unwrap(), "version=canary\n");
}

#[tokio::test]
async fn a_stop_keeps_open_connections_serving() {
    let upstream = start().await;
    let mut kept_alive = connect(upstream.addr).await.unwrap();
    get(&mut kept_alive).await.unwrap();
    upstream.stop();
    assert_eq!(get(&mut kept_alive).await.unwrap(), "version=canary\n");
}

#[tokio::test]
async fn a_slow_body_arrives_whole_in_pieces() {
    let upstream = start().await;
    upstream.faults.set_slow_body(3, Duration::from_millis(150));
    let mut sender = connect(upstream.addr).await.unwrap();
    let started = Instant::now();
    assert_eq!(get(&mut sender).await.unwrap(), "version=canary\n");
    assert!(started.elapsed() >= Duration::from_millis(450));
    // The connection stays usable once healed.
    upstream.faults.heal();
    let started = Instant::now();
    assert_eq!(get(&mut sender).await.unwrap(), "version=canary\n");
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn tail_latency_hits_the_chosen_fraction() {
    let upstream = start().await;
    upstream
        .faults
        .set_tail_latency(1.0, Duration::from_millis(400));
    let mut sender = connect(upstream.addr).await.unwrap();
    let started = Instant::now();
    get(&mut sender).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));

    upstream
        .faults
        .set_tail_latency(0.0, Duration::from_millis(400));
    let started = Instant::now();
    get(&mut sender).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(400));
}
