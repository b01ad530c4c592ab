//! Event hooks: each revision is POSTed as a small JSON event to every configured webhook
//! by one background task. The queue is bounded and a change only ever `try_send`s, so a
//! slow or dead hook can delay other events but never a change.

use super::record::RevisionRecord;
use crate::config::HooksConfig;
use crate::routing::ServiceState;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Events waiting for delivery; past this, new events are dropped with a warning.
const QUEUE: usize = 256;

/// What a webhook receives.
#[derive(Debug, Serialize)]
pub struct HookEvent<'r> {
    pub event: &'static str,
    pub revision: u64,
    pub time: &'r str,
    pub service: &'r str,
    pub kind: &'static str,
    pub actor: &'r str,
    pub reason: &'r str,
    /// The routing after the change; absent when the service was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<&'r ServiceState>,
}

struct Delivery {
    hooks: HooksConfig,
    body: Bytes,
    revision: u64,
}

pub struct Hooks {
    queue: mpsc::Sender<Delivery>,
}

impl Hooks {
    /// Starts the delivery task (needs a tokio runtime).
    pub fn start() -> Hooks {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(receiver));
        Hooks { queue }
    }

    /// Queues the event of `record` for every hook in `hooks`; never waits.
    pub fn send(&self, hooks: &HooksConfig, record: &RevisionRecord) {
        if hooks.webhooks.is_empty() {
            return;
        }
        let event = HookEvent {
            event: "revision",
            revision: record.revision,
            time: &record.time,
            service: &record.service,
            kind: record.kind.label(),
            actor: &record.actor,
            reason: &record.reason,
            routing: record.new.as_ref(),
        };
        let Ok(body) = serde_json::to_vec(&event) else {
            return;
        };
        let delivery = Delivery {
            hooks: hooks.clone(),
            body: Bytes::from(body),
            revision: record.revision,
        };
        if self.queue.try_send(delivery).is_err() {
            tracing::warn!(
                revision = record.revision,
                "webhook queue full: event dropped"
            );
        }
    }
}

async fn deliver_all(mut receiver: mpsc::Receiver<Delivery>) {
    while let Some(delivery) = receiver.recv().await {
        for url in &delivery.hooks.webhooks {
            deliver(url, &delivery).await;
        }
    }
}

async fn deliver(url: &Uri, delivery: &Delivery) {
    let attempts = delivery.hooks.attempts.max(1);
    for attempt in 1..=attempts {
        let result = tokio::time::timeout(delivery.hooks.timeout, post(url, delivery.body.clone()))
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()));
        match result {
            Ok(()) => return,
            Err(err) if attempt == attempts => {
                tracing::warn!(%url, revision = delivery.revision, error = %err, "webhook gave up");
            }
            Err(err) => {
                tracing::debug!(%url, attempt, error = %err, "webhook failed; retrying");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
        }
    }
}

async fn post(url: &Uri, body: Bytes) -> Result<(), String> {
    let authority = url.authority().ok_or("no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::post(path)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}
