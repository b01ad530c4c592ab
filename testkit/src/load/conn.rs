//! One load connection: its send schedule, (re)connecting, and one exchange at a time
//! (HTTP/1.1) or overlapping exchanges (open-loop HTTP/2).

use super::record::{Ending, Recorder, Sample};
use super::{LoadError, LoadSpec, Protocol};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// What every connection of one load stream shares.
pub(super) struct Shared {
    pub spec: LoadSpec,
    recorder: Arc<Recorder>,
    uri: Uri,
    host: HeaderValue,
    /// The next `{n}` when the stream spreads over several paths.
    next_path: AtomicU64,
}

impl Shared {
    pub fn new(spec: LoadSpec, recorder: Arc<Recorder>) -> Result<Shared, LoadError> {
        let uri = target(&spec, 0)?;
        let host =
            HeaderValue::from_str(&spec.host).map_err(|_| LoadError::BadHost(spec.host.clone()))?;
        Ok(Shared {
            spec,
            recorder,
            uri,
            host,
            next_path: AtomicU64::new(0),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::default());
        *request.uri_mut() = match self.spec.paths {
            0 | 1 => self.uri.clone(),
            paths => {
                let n = self.next_path.fetch_add(1, Ordering::Relaxed) % u64::from(paths);
                target(&self.spec, n).unwrap_or_else(|_| self.uri.clone())
            }
        };
        if self.spec.protocol == Protocol::Grpc {
            // One empty message: no compression flag, length 0.
            *request.body_mut() = Full::new(Bytes::from_static(&[0; 5]));
            *request.method_mut() = http::Method::POST;
            let headers = request.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let headers = request.headers_mut();
        if self.spec.protocol == Protocol::Http1 {
            headers.insert(header::HOST, self.host.clone());
        }
        for (name, value) in &self.spec.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }
}

/// The request target with `{n}` in the path replaced by `n`.
fn target(spec: &LoadSpec, n: u64) -> Result<Uri, LoadError> {
    let path = spec.path.replace("{n}", &n.to_string());
    match spec.protocol {
        Protocol::Http1 => path.parse::<Uri>(),
        Protocol::H2 | Protocol::Grpc => format!("http://{}{path}", spec.host).parse::<Uri>(),
    }
    .map_err(|_| LoadError::BadPath(spec.path.clone()))
}

/// When a connection sends: a fixed schedule (open loop) or right after each answer.
struct Schedule {
    next: Instant,
    interval: Option<Duration>,
    stop: Instant,
    /// Past this, an open-loop connection that fell behind gives up on its backlog.
    give_up: Instant,
}

impl Schedule {
    fn new(shared: &Shared, index: usize) -> Schedule {
        let spec = &shared.spec;
        let epoch = shared.recorder.epoch();
        let fraction = index as f64 / spec.connections as f64;
        let interval = spec
            .rate
            .map(|rate| Duration::from_secs_f64(spec.connections as f64 / rate));
        // Spread connections evenly over the ramp and their first sends over one interval.
        let phase = spec.ramp.mul_f64(fraction) + interval.unwrap_or_default().mul_f64(fraction);
        let stop = epoch + spec.stop;
        Schedule {
            next: epoch + spec.start + phase,
            interval,
            stop,
            give_up: stop + spec.timeout,
        }
    }

    /// The next send time, or `None` when the stream is over.
    fn next_send(&mut self, recorder: &Recorder) -> Option<Instant> {
        if self.next >= self.stop {
            return None;
        }
        if let Some(interval) = self.interval {
            let now = Instant::now();
            if now >= self.give_up {
                let backlog = self.stop.saturating_duration_since(self.next);
                let unsent = (backlog.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
                recorder.record_unsent(unsent);
                return None;
            }
        }
        Some(self.next)
    }

    fn sent(&mut self, answered: Instant) {
        self.next = match self.interval {
            Some(interval) => self.next + interval,
            None => answered,
        };
    }
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn connect(shared: &Shared) -> Option<Sender> {
        let connect = async {
            let stream = TcpStream::connect(shared.spec.target).await.ok()?;
            let _ = stream.set_nodelay(true);
            let io = TokioIo::new(stream);
            match shared.spec.protocol {
                Protocol::Http1 => {
                    let (sender, connection) = http1::handshake(io).await.ok()?;
                    tokio::spawn(connection);
                    Some(Sender::Http1(sender))
                }
                Protocol::H2 | Protocol::Grpc => {
                    let (sender, connection) =
                        http2::handshake(TokioExecutor::new(), io).await.ok()?;
                    tokio::spawn(connection);
                    Some(Sender::H2(sender))
                }
            }
        };
        tokio::time::timeout(shared.spec.timeout, connect)
            .await
            .ok()
            .flatten()
    }

    async fn usable(&mut self) -> bool {
        match self {
            Sender::Http1(sender) => sender.ready().await.is_ok(),
            Sender::H2(sender) => !sender.is_closed(),
        }
    }
}

/// Runs one connection of the stream until its schedule ends.
pub(super) async fn connection(shared: Arc<Shared>, index: usize) {
    let mut schedule = Schedule::new(&shared, index);
    let mut sender: Option<Sender> = None;
    let overlap = shared.spec.protocol.is_http2() && shared.spec.rate.is_some();
    let mut in_flight = JoinSet::new();
    while let Some(due) = schedule.next_send(&shared.recorder) {
        tokio::time::sleep_until(due.into()).await;
        let sent = match shared.spec.rate {
            Some(_) => due,
            None => Instant::now(),
        };
        if let Some(current) = sender.as_mut() {
            if !current.usable().await {
                sender = None;
            }
        }
        if sender.is_none() {
            sender = Sender::connect(&shared).await;
        }
        match sender.as_mut() {
            None => record(&shared, sent, Ending::ConnectFailed, None),
            Some(Sender::H2(h2)) if overlap => {
                let mut h2 = Sender::H2(h2.clone());
                let shared = shared.clone();
                in_flight.spawn(async move {
                    let (ending, version) = exchange(&shared, &mut h2).await;
                    record(&shared, sent, ending, version);
                });
                while in_flight.try_join_next().is_some() {}
            }
            Some(current) => {
                let (ending, version) = exchange(&shared, current).await;
                if !matches!(ending, Ending::Status(_) | Ending::Grpc(_)) {
                    // The connection's state is unknown after a failure: start afresh.
                    sender = None;
                }
                record(&shared, sent, ending, version);
            }
        }
        schedule.sent(Instant::now());
    }
    while in_flight.join_next().await.is_some() {}
}

fn record(shared: &Shared, sent: Instant, ending: Ending, version: Option<HeaderValue>) {
    shared.recorder.record(Sample {
        sent,
        latency: sent.elapsed(),
        version,
        ending,
    });
}

/// Sends one request and reads the whole answer, within the stream's timeout.
async fn exchange(shared: &Shared, sender: &mut Sender) -> (Ending, Option<HeaderValue>) {
    let request = shared.request();
    let whole = async {
        let response = match sender {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::H2(sender) => sender.send_request(request).await,
        };
        let Ok(response) = response else {
            return (Ending::Broken, None);
        };
        let status = response.status().as_u16();
        let version = response.headers().get(&shared.spec.version_header).cloned();
        let mut grpc_status = grpc_status(response.headers());
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Err(_) => return (Ending::Broken, version),
                Ok(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        grpc_status = grpc_status.or(self::grpc_status(trailers));
                    }
                }
            }
        }
        match shared.spec.protocol {
            // An answer without a status is UNKNOWN to a gRPC client.
            Protocol::Grpc if status == 200 => (Ending::Grpc(grpc_status.unwrap_or(2)), version),
            _ => (Ending::Status(status), version),
        }
    };
    tokio::time::timeout(shared.spec.timeout, whole)
        .await
        .unwrap_or((Ending::Timeout, None))
}

/// The `grpc-status` of a head or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?;
    Some(value.to_str().ok()?.parse().unwrap_or(2))
}
