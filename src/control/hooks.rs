//! Event hooks: each revision is POSTed as a small JSON event to every configured webhook.
//! Each webhook has its own background task and bounded queue, and a change only ever
//! `try_send`s: a slow or dead hook delays only its own later events, never a change.

use super::record::RevisionRecord;
use crate::config::HooksConfig;
use crate::routing::ServiceState;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Events waiting for delivery per hook; past this, new events are dropped with a warning.
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
    body: Bytes,
    revision: u64,
    timeout: Duration,
    attempts: u32,
}

/// The delivery queues, one per webhook URL, created on first use.
#[derive(Default)]
pub struct Hooks {
    queues: Mutex<HashMap<Uri, mpsc::Sender<Arc<Delivery>>>>,
}

impl Hooks {
    /// Queues the event of `record` for every hook in `hooks`; never waits. Needs a tokio
    /// runtime (a hook's first event starts its task).
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
        let delivery = Arc::new(Delivery {
            body: Bytes::from(body),
            revision: record.revision,
            timeout: hooks.timeout,
            attempts: hooks.attempts.max(1),
        });
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        for url in &hooks.webhooks {
            let queue = queues.entry(url.clone()).or_insert_with(|| {
                let (queue, receiver) = mpsc::channel(QUEUE);
                tokio::spawn(deliver_all(url.clone(), receiver));
                queue
            });
            if queue.try_send(delivery.clone()).is_err() {
                tracing::warn!(%url, revision = record.revision, "webhook queue full: event dropped");
            }
        }
    }
}

async fn deliver_all(url: Uri, mut receiver: mpsc::Receiver<Arc<Delivery>>) {
    while let Some(delivery) = receiver.recv().await {
        deliver(&url, &delivery).await;
    }
}

async fn deliver(url: &Uri, delivery: &Delivery) {
    for attempt in 1..=delivery.attempts {
        let result = tokio::time::timeout(delivery.timeout, post(url, delivery.body.clone()))
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()));
        match result {
            Ok(()) => return,
            Err(err) if attempt == delivery.attempts => {
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
