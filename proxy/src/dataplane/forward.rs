//! Sending a request upstream, in the request's own task: to one of the version's
//! endpoints, again on another when none saw it; an upgrade on a connection of its own,
//! then tunnelled.

use super::body::{ResponseBody, UpstreamRequestBody, UpstreamResponse};
use super::failure::{Failed, Failure};
use super::h1::ClientUpgrade;
use super::h2_forward::forward_h2;
use crate::http1::response_head::FieldsAs;
use crate::http1::{set_in, SetField};
use crate::routing::VersionRoute;
use crate::upstream::endpoint::{next_endpoint, Endpoint};
use crate::upstream::h1::{self, Answer, Deadlines, RequestHead, SendError};
use http::{Request, Response};
use http_body::Body as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idempotent and bodiless: safe to send twice (RFC 9110 9.2.2).
pub(super) fn is_retryable(request: &Request<UpstreamRequestBody>) -> bool {
    use http::Method;
    let method = request.method();
    (method == Method::GET
        || method == Method::HEAD
        || method == Method::OPTIONS
        || method == Method::DELETE)
        && request.body().is_end_stream()
}

/// Sends a request to one of the version's endpoints, in this task. A refused connection,
/// or a request that never left the proxy, is tried again on another endpoint: no
/// upstream saw it, so this is always safe. A pooled connection that the upstream closed
/// just as it was reused gets a bodiless idempotent request once more. When no endpoint
/// took the request, it comes back with the failure. `tried` is set to each endpoint as
/// it is tried (the last one is the access log's `endpoint`). `set` are the proxy's own
/// fields for the request (`Forwarding`). An HTTP/1 upstream's answer keeps its fields as
/// written when `answer_fields` says only the HTTP/1 writer reads them.
pub(super) async fn forward(
    version: &VersionRoute,
    request: Request<UpstreamRequestBody>,
    limits: (Duration, Duration),
    started: Instant,
    tried: &mut Option<std::net::SocketAddr>,
    set: &[SetField<'_>],
    answer_fields: FieldsAs,
) -> Result<Response<ResponseBody>, Failed> {
    if version.protocol.is_http2() {
        let mut request = request;
        set_in(set, request.headers_mut());
        let head_deadline = started + limits.0;
        return forward_h2(version, request, head_deadline, limits.1, started, tried).await;
    }
    let attempts = version.endpoints.len().clamp(1, 3) + 1;
    let deadlines = deadlines(limits, started);
    let retryable = is_retryable(&request);
    let (parts, mut body) = request.into_parts();
    let mut last_refused: Option<Arc<Endpoint>> = None;
    let mut failure = Failure::NoEndpoint;
    for _ in 0..attempts {
        let Some(endpoint) = next_endpoint(&version.endpoints, started, last_refused.as_ref())
        else {
            break;
        };
        *tried = Some(endpoint.addr);
        let in_flight = endpoint.start_request();
        let lease = match endpoint.checkout(started).await {
            Ok(lease) => lease,
            Err(err) => {
                if err.blames_endpoint() {
                    endpoint.mark_refused(Instant::now());
                }
                failure = Failure::from(err);
                last_refused = Some(endpoint);
                continue;
            }
        };
        endpoint.mark_healthy();
        let head = RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            set,
            answer_fields,
        };
        match h1::send(lease, head, body, deadlines, false).await {
            Ok(Answer::Response(head, body)) => {
                let body = ResponseBody::Upstream(UpstreamResponse::new(body, in_flight));
                return Ok(Response::from_parts(head, body));
            }
            Ok(Answer::Upgraded(..)) => {
                return Err(Failure::Reset("unasked upgrade".to_string()).into())
            }
            Err(SendError::Unsent(unsent, err)) => {
                body = unsent;
                failure = Failure::Reset(err.to_string());
            }
            Err(SendError::Stale(unsent)) if retryable => {
                body = unsent;
                failure = Failure::Reset("pooled connection closed".to_string());
            }
            Err(SendError::Timeout) => return Err(Failure::Timeout.into()),
            Err(err) => match err.tls_refusal() {
                Some(reason) => {
                    endpoint.refused_tls(&reason, Instant::now());
                    return Err(Failure::Tls(reason).into());
                }
                None => return Err(Failure::Reset(err.to_string()).into()),
            },
        }
    }
    Err(Failed {
        failure,
        unsent: Some(Box::new(Request::from_parts(parts, body))),
    })
}

/// `response_headers` and `upstream_body_idle`, from the request's start.
fn deadlines((head, body_idle): (Duration, Duration), started: Instant) -> Deadlines {
    Deadlines {
        head,
        started: tokio::time::Instant::from_std(started),
        body_idle,
    }
}

/// Passes an upgrade (WebSocket and the like) through on a connection of its own.
pub(super) async fn forward_upgrade(
    version: &VersionRoute,
    request: Request<UpstreamRequestBody>,
    set: &[SetField<'_>],
    on_client_upgrade: ClientUpgrade,
    limits: (Duration, Duration),
    started: Instant,
    tried: &mut Option<std::net::SocketAddr>,
) -> Result<Response<ResponseBody>, Failure> {
    let endpoint = next_endpoint(&version.endpoints, started, None).ok_or(Failure::NoEndpoint)?;
    *tried = Some(endpoint.addr);
    let in_flight = endpoint.start_request();
    let lease = endpoint.checkout_unpooled().await.map_err(|err| {
        if err.blames_endpoint() {
            endpoint.mark_refused(Instant::now());
        }
        Failure::from(err)
    })?;
    let (parts, body) = request.into_parts();
    let head = RequestHead {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        set,
        answer_fields: FieldsAs::Map,
    };
    let answer = h1::send(lease, head, body, deadlines(limits, started), true)
        .await
        .map_err(|err| match err {
            SendError::Timeout => Failure::Timeout,
            err => Failure::Reset(err.to_string()),
        })?;
    match answer {
        Answer::Upgraded(head, upstream) => {
            tokio::spawn(async move {
                let _in_flight = in_flight;
                tunnel(on_client_upgrade, upstream).await;
            });
            Ok(Response::from_parts(head, ResponseBody::Message(None)))
        }
        // The upstream declined the upgrade: an ordinary response on a connection not pooled.
        Answer::Response(head, body) => Ok(Response::from_parts(
            head,
            ResponseBody::Upstream(UpstreamResponse::new(body, in_flight)),
        )),
    }
}

/// Copies both ways between the upgraded client and upstream connections until either
/// side closes; bytes either side sent right behind its head go first.
async fn tunnel(on_client_upgrade: ClientUpgrade, upstream: h1::Upgraded) {
    use tokio::io::AsyncWriteExt;
    let Ok(client) = on_client_upgrade.await else {
        tracing::debug!("upgrade did not complete: the client's connection ended first");
        return;
    };
    let mut stream = upstream.stream;
    let mut client_io = client.io;
    let early = async {
        if !upstream.read_ahead.is_empty() {
            client_io.write_all(&upstream.read_ahead).await?;
        }
        if !client.read_ahead.is_empty() {
            stream.write_all(&client.read_ahead).await?;
        }
        std::io::Result::Ok(())
    };
    if let Err(err) = early.await {
        tracing::debug!(error = %err, "upgraded connection ended");
        return;
    }
    if let Err(err) = tokio::io::copy_bidirectional(&mut client_io, &mut stream).await {
        tracing::debug!(error = %err, "upgraded connection ended");
    }
}
