//! A sample client that puts load on a proxy: the demo's traffic and the load harness's
//! generator. Open loop at a constant rate (or closed loop, as fast as answers come), over
//! HTTP/1.1 or HTTP/2 with prior knowledge, on many keep-alive connections.
//!
//! Open-loop latency is measured from the time a request was *meant* to be sent, as wrk2
//! does: a slow answer delays the requests queued behind it on its connection, and that
//! wait counts, so a stall cannot hide itself (coordinated omission).

mod conn;
mod record;

pub use record::{
    Ending, LoadReport, Recorder, Sample, SecondReport, VersionReport, NO_VERSION, TENTH,
};

use http::{HeaderName, HeaderValue};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (cleartext): open-loop requests overlap on a connection.
    H2,
    /// Unary gRPC calls over HTTP/2 (prior knowledge): POST `application/grpc` with an
    /// empty message; the call's `grpc-status` decides how it ended.
    Grpc,
}

impl Protocol {
    fn is_http2(self) -> bool {
        self != Protocol::Http1
    }
}

/// One stream of load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    /// The Host header (HTTP/1.1) or authority (HTTP/2).
    pub host: String,
    /// The request target; with `paths` above 1, `{n}` in it counts 0, 1, ... `paths - 1`
    /// round and round (a spread of URLs, as real traffic has).
    pub path: String,
    pub paths: u32,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub protocol: Protocol,
    pub connections: usize,
    /// Requests per second over all connections; `None` is closed loop: each connection
    /// sends its next request as soon as the last one is answered.
    pub rate: Option<f64>,
    /// When to start and stop sending, counted from the recorder's epoch.
    pub start: Duration,
    pub stop: Duration,
    /// Connections open spread evenly over this time after `start`, so thousands of them
    /// do not overflow the target's accept backlog at once.
    pub ramp: Duration,
    /// Longest a request may take, body included, before it counts as a timeout.
    pub timeout: Duration,
    /// The response header that names the version that answered.
    pub version_header: HeaderName,
}

impl LoadSpec {
    /// A plain GET / stream to `target` with the usual defaults.
    pub fn new(target: SocketAddr, connections: usize, rate: Option<f64>) -> LoadSpec {
        LoadSpec {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            paths: 1,
            headers: Vec::new(),
            protocol: Protocol::Http1,
            connections,
            rate,
            start: Duration::ZERO,
            stop: Duration::from_secs(10),
            ramp: Duration::ZERO,
            timeout: Duration::from_secs(10),
            version_header: HeaderName::from_static("switchyard-version"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the load needs at least one connection")]
    NoConnections,
    #[error("the rate must be a positive number of requests per second, not {0}")]
    BadRate(f64),
    #[error("path {0:?} is not a valid request target")]
    BadPath(String),
    #[error("host {0:?} is not a valid Host header")]
    BadHost(String),
}

/// Load in progress. Dropping it stops every connection at once.
pub struct Load {
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts every connection of `spec`; each records into `recorder`.
    pub fn start(spec: LoadSpec, recorder: Arc<Recorder>) -> Result<Load, LoadError> {
        if spec.connections == 0 {
            return Err(LoadError::NoConnections);
        }
        if let Some(rate) = spec.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(LoadError::BadRate(rate));
            }
        }
        let shared = Arc::new(conn::Shared::new(spec, recorder)?);
        let mut tasks = JoinSet::new();
        for index in 0..shared.spec.connections {
            tasks.spawn(conn::connection(shared.clone(), index));
        }
        Ok(Load { tasks })
    }

    /// Waits until every connection has sent its last request and heard the answer.
    pub async fn finished(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
