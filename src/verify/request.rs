//! One HTTP/1.1 exchange on a connection of its own, for health and smoke checks: never a
//! user's pooled connection, closed after the answer, everything under one deadline.

use crate::upstream::connect::{refused_after_handshake, ConnectError, Dial, ALPN_HTTP1};
use crate::upstream::stream::UpstreamStream;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// What to ask.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: &'a str,
    /// Read up to this many body bytes (0: the body is not read).
    pub body_limit: usize,
}

/// What came back within the deadline.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The body's first `body_limit` bytes.
    pub body: Bytes,
    pub elapsed: Duration,
}

/// Why no answer came; shown to operators as the "got" of a failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection refused")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The certificate did not verify, or the upstream refused our TLS.
    #[error("TLS refused: {0}")]
    Tls(String),
    #[error("{0}")]
    Exchange(String),
}

/// Sends `probe` to an endpoint on a new connection (TLS when its version has `tls`);
/// the whole exchange (connect, answer and the body's first bytes) must fit in `deadline`.
pub async fn send(dial: &Dial, probe: &Probe<'_>, deadline: Duration) -> Result<Reply, ProbeError> {
    let started = Instant::now();
    let mut reply = timeout(deadline, exchange(dial, probe, deadline))
        .await
        .map_err(|_| ProbeError::Timeout(deadline))??;
    reply.elapsed = started.elapsed();
    Ok(reply)
}

/// Aborts the connection's task when the exchange ends or is dropped at an `.await`.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens a connection as requests do; a failure in the words a failed check shows.
pub async fn open(dial: &Dial, deadline: Duration) -> Result<UpstreamStream, ProbeError> {
    dial.open(ALPN_HTTP1, deadline)
        .await
        .map_err(|err| match err {
            ConnectError::Timeout(_) => ProbeError::Timeout(deadline),
            ConnectError::Io(_, err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                ProbeError::Refused
            }
            ConnectError::Io(_, err) => ProbeError::Connect(err.to_string()),
            ConnectError::Tls { reason, .. } => ProbeError::Tls(reason),
        })
}

async fn exchange(dial: &Dial, probe: &Probe<'_>, deadline: Duration) -> Result<Reply, ProbeError> {
    let stream = open(dial, deadline).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange_error)?;
    let _driver = Driver(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut request = Request::builder()
        .method(probe.method.clone())
        .uri(probe.path)
        .body(Full::new(Bytes::copy_from_slice(probe.body.as_bytes())))
        .map_err(|err| ProbeError::Exchange(err.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(probe.host).map_err(|err| ProbeError::Exchange(err.to_string()))?,
    );
    headers.insert(USER_AGENT, HeaderValue::from_static("switchyard-check"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in probe.headers {
        headers.insert(name.clone(), value.clone());
    }
    let response = sender.send_request(request).await.map_err(exchange_error)?;
    let status = response.status().as_u16();
    let mut body = BytesMut::new();
    let mut incoming = response.into_body();
    while body.len() < probe.body_limit {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = probe.body_limit - body.len();
                    body.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(err)) => return Err(exchange_error(err)),
            None => break,
        }
    }
    Ok(Reply {
        status,
        body: body.freeze(),
        elapsed: Duration::ZERO,
    })
}

fn exchange_error(err: hyper::Error) -> ProbeError {
    if let Some(reason) = refused_after_handshake(&err) {
        return ProbeError::Tls(reason);
    }
    if err.is_incomplete_message() {
        return ProbeError::Exchange("connection closed before a complete answer".into());
    }
    if err.is_parse() {
        return ProbeError::Exchange("an answer that is not HTTP".into());
    }
    ProbeError::Exchange(err.to_string())
}
