//! One exchange on a connection of its own, for health and smoke checks: never a user's
//! pooled connection, closed after the answer, everything under one deadline. HTTP/1.1,
//! or HTTP/2 to a version that speaks it (`h2c` in clear, `h2` over TLS).

use crate::upstream::connect::{
    refused_after_handshake, ConnectError, Dial, ALPN_ANY, ALPN_H2, ALPN_HTTP1,
};
use crate::upstream::stream::UpstreamStream;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// Sends `probe` to an endpoint on a new connection (TLS when its version has `tls`, in
/// HTTP/2 when `http2`); the whole exchange (connect, answer and the body's first bytes)
/// must fit in `deadline`.
pub async fn send(
    dial: &Dial,
    http2: bool,
    probe: &Probe<'_>,
    deadline: Duration,
) -> Result<Reply, ProbeError> {
    let started = Instant::now();
    let mut reply = timeout(deadline, exchange(dial, http2, probe, deadline))
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

/// Opens a connection as requests do, offering `alpn` over TLS; a failure in the words a
/// failed check shows.
async fn open(
    dial: &Dial,
    alpn: &[&[u8]],
    deadline: Duration,
) -> Result<UpstreamStream, ProbeError> {
    dial.open(alpn, deadline).await.map_err(|err| match err {
        ConnectError::Timeout(_) => ProbeError::Timeout(deadline),
        ConnectError::Io(_, err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            ProbeError::Refused
        }
        ConnectError::Io(_, err) => ProbeError::Connect(err.to_string()),
        ConnectError::Tls { reason, .. } => ProbeError::Tls(reason),
    })
}

/// A bare connection (with its TLS handshake, whatever HTTP the upstream chooses).
pub async fn connect(dial: &Dial, deadline: Duration) -> Result<(), ProbeError> {
    open(dial, ALPN_ANY, deadline).await.map(drop)
}

async fn exchange(
    dial: &Dial,
    http2: bool,
    probe: &Probe<'_>,
    deadline: Duration,
) -> Result<Reply, ProbeError> {
    let alpn = if http2 { ALPN_H2 } else { ALPN_HTTP1 };
    let io = TokioIo::new(open(dial, alpn, deadline).await?);
    let request = request(dial, http2, probe)?;
    let (response, _driver) = match http2 {
        true => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(exchange_error)?;
            let driver = Driver(tokio::spawn(async move {
                let _ = connection.await;
            }));
            (sender.send_request(request).await, driver)
        }
        false => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(exchange_error)?;
            let driver = Driver(tokio::spawn(async move {
                let _ = connection.await;
            }));
            (sender.send_request(request).await, driver)
        }
    };
    read_reply(response.map_err(exchange_error)?, probe.body_limit).await
}

/// The probe as a request: HTTP/1.1 with Host, or HTTP/2 with the host as :authority.
fn request(
    dial: &Dial,
    http2: bool,
    probe: &Probe<'_>,
) -> Result<Request<Full<Bytes>>, ProbeError> {
    let invalid = |err: http::Error| ProbeError::Exchange(err.to_string());
    let uri = match http2 {
        true => http::Uri::builder()
            .scheme(if dial.tls.is_some() { "https" } else { "http" })
            .authority(probe.host)
            .path_and_query(probe.path)
            .build()
            .map_err(invalid)?,
        false => probe
            .path
            .parse()
            .map_err(|err: http::uri::InvalidUri| ProbeError::Exchange(err.to_string()))?,
    };
    let mut request = Request::builder()
        .method(probe.method.clone())
        .uri(uri)
        .body(Full::new(Bytes::copy_from_slice(probe.body.as_bytes())))
        .map_err(invalid)?;
    let headers = request.headers_mut();
    if !http2 {
        let host = HeaderValue::from_str(probe.host)
            .map_err(|err| ProbeError::Exchange(err.to_string()))?;
        headers.insert(HOST, host);
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    headers.insert(USER_AGENT, HeaderValue::from_static("switchyard-check"));
    for (name, value) in probe.headers {
        headers.insert(name.clone(), value.clone());
    }
    Ok(request)
}

/// The status and the body's first `body_limit` bytes.
async fn read_reply(
    response: http::Response<Incoming>,
    body_limit: usize,
) -> Result<Reply, ProbeError> {
    let status = response.status().as_u16();
    let mut body = BytesMut::new();
    let mut incoming = response.into_body();
    while body.len() < body_limit {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = body_limit - body.len();
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
