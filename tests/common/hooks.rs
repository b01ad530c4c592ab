//! A webhook receiver for tests, and checks on what it received.

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// A webhook receiver on a fixed address, started and stopped at will.
pub struct Receiver {
    addr: SocketAddr,
    accepting: Option<tokio::task::JoinHandle<()>>,
    events: mpsc::UnboundedSender<serde_json::Value>,
}

impl Receiver {
    pub fn new(addr: SocketAddr) -> (Receiver, mpsc::UnboundedReceiver<serde_json::Value>) {
        let (events, received) = mpsc::unbounded_channel();
        let receiver = Receiver {
            addr,
            accepting: None,
            events,
        };
        (receiver, received)
    }

    pub async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let events = self.events.clone();
        self.accepting = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let events = events.clone();
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let events = events.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let _ = events.send(serde_json::from_slice(&body).unwrap());
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(bytes::Bytes::new())))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
    }
}

/// Waits for events until one with `revision` arrives; returns every one seen.
pub async fn until_revision(
    received: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    revision: u64,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), received.recv())
            .await
            .unwrap_or_else(|_| panic!("revision {revision} never arrived; got {seen:?}"))
            .unwrap();
        let done = event["revision"].as_u64() == Some(revision);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// Revisions strictly after `after` up to the last one, each once at least, in order.
pub fn assert_in_order(events: &[serde_json::Value], after: u64) {
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    let mut expected = after + 1;
    for &revision in &revisions {
        // A repeat (at least once) is allowed; a gap or a step back is not.
        assert!(
            revision == expected || revision + 1 == expected,
            "out of order or missing: {revisions:?}"
        );
        expected = revision + 1;
    }
    for event in events {
        let hash = event["hash"].as_str().unwrap_or("");
        assert_eq!(hash.len(), 64, "no hash to deduplicate on: {event}");
    }
}
