//! Spans to an OTLP/HTTP collector. The request path decides sampling and hands a
//! sampled exchange to a bounded queue (dropped and counted when full, never waited
//! for); an exporter thread batches them (up to 512, or what came within a second) and
//! posts each batch as protobuf with hyper, on a small runtime of its own.

use super::otlp_span::{encode, Recorded};
use super::outlet::{Batches, Outlet};
use super::trace_context::{Sampler, SpanIds};
use crate::config::otlp::OtlpSettings;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Spans waiting for the exporter; past it they are dropped.
const QUEUE: usize = 16 * 1024;
/// Most spans in one export.
const BATCH: usize = 512;
/// The exporter sends what is queued this often (at once while it is behind): with
/// `QUEUE`, up to about 80,000 spans a second before any is dropped.
const EXPORT_EVERY: Duration = Duration::from_millis(200);
/// One export, connect to answer.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Tracer {
    pub settings: OtlpSettings,
    sampler: Sampler,
    spans: Outlet<Recorded>,
    counts: Arc<ExportCounts>,
}

#[derive(Debug, Default)]
struct ExportCounts {
    exported: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("the collector answered {0}")]
    Status(StatusCode),
    #[error("no answer within {POST_TIMEOUT:?}")]
    Timeout,
}

impl Tracer {
    /// Starts the exporter thread.
    pub fn start(settings: OtlpSettings) -> Arc<Tracer> {
        let counts = Arc::new(ExportCounts::default());
        let exporter = Exporter {
            url: settings.traces_url.clone(),
            counts: counts.clone(),
        };
        let spans = Outlet::start("otlp-export", QUEUE, move |spans, _| exporter.run(spans));
        Arc::new(Tracer {
            sampler: Sampler::new(settings.sample),
            settings,
            spans,
            counts,
        })
    }

    /// Decides whether this request is recorded, and sets its `traceparent` for the
    /// upstream (see `Sampler::start`).
    pub fn start_span(&self, headers: &mut http::HeaderMap) -> Option<SpanIds> {
        self.sampler.start(headers)
    }

    /// Queues a finished span, or drops it (counted) when the queue is full.
    pub fn record(&self, ids: SpanIds, entry: Box<super::exchange::Entry>) {
        self.spans.send(Recorded { ids, entry });
    }

    pub fn dropped(&self) -> u64 {
        self.spans.dropped()
    }

    pub fn exported(&self) -> u64 {
        self.counts.exported.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Exports what is queued and stops the exporter (at shutdown). Blocks.
    pub fn close(&self) {
        self.spans.close();
    }
}

struct Exporter {
    url: Uri,
    counts: Arc<ExportCounts>,
}

impl Exporter {
    fn run(self, mut spans: Batches<Recorded>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(error = %err, "span exporter not started: spans are not exported");
                let mut batch = Vec::new();
                while spans.next(&mut batch, BATCH, EXPORT_EVERY) {
                    self.counts
                        .failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                return;
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut failing = false;
        while spans.next(&mut batch, BATCH, EXPORT_EVERY) {
            let body = encode(&batch);
            let count = batch.len() as u64;
            batch.clear();
            let posted = runtime.block_on(async {
                tokio::time::timeout(POST_TIMEOUT, post(&self.url, body))
                    .await
                    .unwrap_or(Err(ExportError::Timeout))
            });
            match posted {
                Ok(()) => {
                    failing = false;
                    self.counts.exported.fetch_add(count, Ordering::Relaxed);
                }
                Err(err) => {
                    // Said once per outage, not once per batch.
                    if !failing {
                        tracing::warn!(url = %self.url, error = %err, "spans not exported");
                    }
                    failing = true;
                    self.counts.failed.fetch_add(count, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One `POST` on a connection of its own (at most one a second at low rates).
async fn post(url: &Uri, body: Vec<u8>) -> Result<(), ExportError> {
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(ExportError::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = Request::post(url.path())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read to its end, so the collector's answer is whole before the connection goes.
    response.into_body().collect().await?;
    drop(sender);
    let _ = connection.await;
    match status.is_success() {
        true => Ok(()),
        false => Err(ExportError::Status(status)),
    }
}
