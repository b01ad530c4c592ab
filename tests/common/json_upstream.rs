//! A JSON upstream for shadow tests: each answer carries its own clock and counter (noise
//! between any two answers) and a price, and the upstream keeps what it was sent.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What a test upstream saw.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicU64,
    pub heads: Mutex<Vec<(String, http::HeaderMap)>>,
    pub bodies: Mutex<Vec<Bytes>>,
}

/// How a test upstream answers `GET /item/N`: JSON with its own clock and counter (so two
/// answers of one version differ in `now` and `id`), and a price.
#[derive(Clone, Copy)]
pub struct Answers {
    /// The price it gives for item 7 (every other item costs 5).
    pub price_of_7: u32,
    pub delay: Duration,
}

pub async fn json_upstream(answers: Answers) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let served = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                        let path = request.uri().path().to_string();
                        seen.heads.lock().unwrap().push((
                            format!("{} {path}", request.method()),
                            request.headers().clone(),
                        ));
                        let got = request.into_body().collect().await.unwrap().to_bytes();
                        let got_bytes = got.len();
                        seen.bodies.lock().unwrap().push(got);
                        tokio::time::sleep(answers.delay).await;
                        let price = match path.as_str() {
                            "/item/7" => answers.price_of_7,
                            _ => 5,
                        };
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_nanos();
                        let body = format!(
                            r#"{{"now": {now}, "id": {n}, "path": "{path}", "price": {price}, "got": {got_bytes}}}"#
                        );
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}
