//! Sends a request to a version that speaks HTTP/2 (`protocol = "h2c"`): on a stream of
//! one of the endpoint's shared connections, with the request's own head and body
//! streamed through, trailers both ways.

use super::body::{ResponseBody, UpstreamH2Response, UpstreamRequestBody};
use super::failure::{Failed, Failure};
use super::replay_body::ReplayBody;
use crate::routing::VersionRoute;
use crate::upstream::endpoint::{next_endpoint, Endpoint};
use crate::upstream::h2::{H2Body, H2ConnectError, H2ResponseBody, SendFailure};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request as it waits for a stream: still the proxy's own, or already in hyper's
/// shape (handed back unsent by a connection that was closing).
enum Pending {
    Ours(http::request::Parts, UpstreamRequestBody),
    Hyper(Request<H2Body>),
}

/// Like the HTTP/1 path: a refused connection, or a request a closing connection handed
/// back, goes to another endpoint (no upstream saw it). `head_deadline` bounds the wait
/// for the response head; `body_idle` each wait for body data. `tried` is set to each
/// endpoint as it is tried.
pub(super) async fn forward_h2(
    version: &VersionRoute,
    request: Request<UpstreamRequestBody>,
    head_deadline: Instant,
    body_idle: Duration,
    started: Instant,
    tried: &mut Option<std::net::SocketAddr>,
) -> Result<Response<ResponseBody>, Failed> {
    let mut attempts = version.endpoints.len().clamp(1, 3) + 1;
    let mut refusals = MAX_REFUSALS;
    let mut replay: Option<Replay> = None;
    let (parts, body) = request.into_parts();
    let mut pending = Pending::Ours(parts, body);
    let mut last_refused: Option<Arc<Endpoint>> = None;
    let mut failure = Failure::NoEndpoint;
    let deadline = tokio::time::Instant::from_std(head_deadline);
    while attempts > 0 {
        attempts -= 1;
        let Some(endpoint) = next_endpoint(&version.endpoints, started, last_refused.as_ref())
        else {
            break;
        };
        *tried = Some(endpoint.addr);
        let in_flight = endpoint.start_request();
        let slot = match tokio::time::timeout_at(deadline, endpoint.h2_stream()).await {
            Err(_) => return Err(give_back(Failure::Timeout, pending)),
            Ok(Ok(slot)) => slot,
            Ok(Err(err)) => {
                let blames = match &err {
                    H2ConnectError::Connect(err) => err.blames_endpoint(),
                    _ => true,
                };
                if blames {
                    endpoint.mark_refused(Instant::now());
                }
                failure = match err {
                    H2ConnectError::Connect(err) => Failure::from(err),
                    err => Failure::Connect(err.to_string()),
                };
                last_refused = Some(endpoint);
                continue;
            }
        };
        endpoint.mark_healthy();
        let request = match pending {
            Pending::Ours(parts, body) => {
                let (request, kept) = into_h2(parts, body, &endpoint);
                replay = Some(kept);
                request
            }
            Pending::Hyper(request) => request,
        };
        match tokio::time::timeout_at(deadline, slot.send(request)).await {
            Err(_) => return Err(Failure::Timeout.into()),
            Ok(Ok(response)) => {
                let response = response.map(|body| {
                    let body = H2ResponseBody::new(body, slot, body_idle);
                    ResponseBody::Http2(UpstreamH2Response::new(body, in_flight))
                });
                return Ok(response);
            }
            Ok(Err(SendFailure::Unsent(request))) => {
                // Never sent: like a refusal, it costs no attempt (within the bound).
                pending = Pending::Hyper(*request);
                failure = Failure::Refused("upstream connection closing".to_string());
                if refusals > 0 {
                    refusals -= 1;
                    attempts += 1;
                }
            }
            Ok(Err(SendFailure::Refused(err))) => {
                // Never processed: again, on another connection, body and all.
                let again = replay.as_ref().and_then(Replay::request);
                match again {
                    Some(request) if refusals > 0 => {
                        refusals -= 1;
                        attempts += 1;
                        pending = Pending::Hyper(request);
                        failure = Failure::Refused(err.to_string());
                    }
                    _ => return Err(Failure::Refused(err.to_string()).into()),
                }
            }
            Ok(Err(SendFailure::Failed(err))) => {
                return Err(Failure::Reset(err.to_string()).into());
            }
        }
    }
    Err(give_back(failure, pending))
}

/// A failure with the request, when it is still in the proxy's shape (and so may go to
/// stable instead).
fn give_back(failure: Failure, pending: Pending) -> Failed {
    match pending {
        Pending::Ours(parts, body) => Failed {
            failure,
            unsent: Some(Box::new(Request::from_parts(parts, body))),
        },
        Pending::Hyper(_) => failure.into(),
    }
}

/// Sends of one request that the upstream refused unprocessed, beyond the first.
const MAX_REFUSALS: u32 = 10;

/// What it takes to send a request again: its head, and its body as far as it is kept.
struct Replay {
    head: http::request::Parts,
    body: ReplayBody,
}

impl Replay {
    /// The request anew, unless its body outgrew what is kept.
    fn request(&self) -> Option<Request<H2Body>> {
        let body = self.body.again()?;
        Some(Request::from_parts(
            copy_head(&self.head),
            body.boxed_unsync(),
        ))
    }
}

/// The prepared request in HTTP/2's shape: scheme, authority (from Host) and path in
/// the target, no Host field; and what it takes to send it again.
fn into_h2(
    mut parts: http::request::Parts,
    body: UpstreamRequestBody,
    endpoint: &Endpoint,
) -> (Request<H2Body>, Replay) {
    let addr = endpoint.addr;
    let scheme = match endpoint.tls {
        Some(_) => Scheme::HTTPS,
        None => Scheme::HTTP,
    };
    let host = parts.headers.remove(header::HOST);
    // The target's own authority when it has one (the proxy's Host is a copy of it).
    let authority = match parts.uri.authority() {
        Some(target) => Some(target.clone()),
        None => host.and_then(|host| Authority::try_from(host.as_bytes()).ok()),
    }
    .or_else(|| Authority::try_from(addr.to_string()).ok());
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = Uri::builder().scheme(scheme).path_and_query(path);
    if let Some(authority) = authority {
        uri = uri.authority(authority);
    }
    // Every part is already valid on its own: building cannot fail.
    parts.uri = uri.build().unwrap_or_default();
    parts.version = Version::HTTP_2;
    let body = ReplayBody::new(body);
    let replay = Replay {
        head: copy_head(&parts),
        body: body.reader(),
    };
    (Request::from_parts(parts, body.boxed_unsync()), replay)
}

fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}
