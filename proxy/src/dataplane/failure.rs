//! Why an upstream exchange produced no response, and the short answer the client gets.

use super::body::{ResponseBody, UpstreamRequestBody};
use crate::telemetry::{ClientFault, Outcome};
use crate::upstream::connect::ConnectError;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

/// Why an upstream exchange produced no response.
#[derive(Debug)]
pub enum Failure {
    NoEndpoint,
    Connect(String),
    /// The endpoint's certificate did not verify, or it refused our TLS. The endpoint
    /// logs it once per change, so the request path does not.
    Tls(String),
    Reset(String),
    /// The upstream refused the stream unprocessed, as often as the proxy sent it again
    /// (or its body outgrew what is kept for that): never the version's failure.
    Refused(String),
    Timeout,
    /// The client broke the exchange: never the version's doing.
    Client(ClientFault),
}

impl Failure {
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::NoEndpoint | Failure::Connect(_) | Failure::Tls(_) => Outcome::ConnectFailed,
            Failure::Reset(_) => Outcome::Reset,
            // Never recorded as a version's outcome, like client faults.
            Failure::Refused(_) => Outcome::Status5xx,
            Failure::Timeout => Outcome::Timeout,
            // Never recorded as a version's outcome; `record` counts it apart.
            Failure::Client(_) => Outcome::Status4xx,
        }
    }

    /// Why the exchange ended, for the access log.
    pub fn end_reason(&self) -> &'static str {
        match self {
            Failure::NoEndpoint => "no_endpoint",
            Failure::Connect(_) => "upstream_connect_failed",
            Failure::Tls(_) => "upstream_tls_refused",
            Failure::Reset(_) => "upstream_reset",
            Failure::Refused(_) => "upstream_refused_stream",
            Failure::Timeout => "upstream_timeout",
            Failure::Client(ClientFault::Gone) => "client_gone",
            Failure::Client(_) => "client_body_broken",
        }
    }

    pub fn response(&self) -> Response<ResponseBody> {
        let (status, text) = match self {
            Failure::NoEndpoint => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no upstream endpoint available\n",
            ),
            Failure::Connect(_) => (StatusCode::BAD_GATEWAY, "upstream refused the connection\n"),
            Failure::Tls(_) => (StatusCode::BAD_GATEWAY, "upstream TLS handshake failed\n"),
            Failure::Reset(_) => (StatusCode::BAD_GATEWAY, "upstream failed to answer\n"),
            Failure::Refused(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream refused the request unprocessed\n",
            ),
            Failure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream did not answer in time\n",
            ),
            Failure::Client(ClientFault::MalformedBody) => {
                (StatusCode::BAD_REQUEST, "malformed request body\n")
            }
            Failure::Client(_) => (StatusCode::BAD_REQUEST, "request body ended early\n"),
        };
        plain(status, text)
    }

    pub fn detail(&self) -> &str {
        match self {
            Failure::NoEndpoint => "every endpoint is backing off",
            Failure::Connect(detail)
            | Failure::Tls(detail)
            | Failure::Reset(detail)
            | Failure::Refused(detail) => detail,
            Failure::Timeout => "response headers timed out",
            Failure::Client(fault) => fault.label(),
        }
    }
}

impl From<ConnectError> for Failure {
    fn from(err: ConnectError) -> Failure {
        match err {
            ConnectError::Tls { .. } => Failure::Tls(err.to_string()),
            err => Failure::Connect(err.to_string()),
        }
    }
}

/// A failed exchange, with the request itself when it never left the proxy: such a
/// request may go elsewhere whatever its method, since no upstream has seen it.
#[derive(Debug)]
pub struct Failed {
    pub failure: Failure,
    /// Boxed: failures are rare, and this keeps every `Result` that carries one small.
    pub unsent: Option<Box<Request<UpstreamRequestBody>>>,
}

impl From<Failure> for Failed {
    /// A failure after the request was (or may have been) written.
    fn from(failure: Failure) -> Failed {
        Failed {
            failure,
            unsent: None,
        }
    }
}

pub fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::message(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
