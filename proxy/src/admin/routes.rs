//! Admin API routing: paths to handlers, size-bounded JSON bodies, bearer checks on TCP.

use super::api::{ApiError, ChangeRequest, ErrorBody, HistoryResponse, IncidentsResponse};
use super::context::{AdminContext, Parts};
use super::{commands, metrics, rest, status};
use crate::control::command::{Command, Order};
use crate::control::RoutingControl;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const DEFAULT_HISTORY: usize = 50;
const PAGE: &str = include_str!("page.html");

/// Which listener a request came in on: only TCP needs the bearer token for mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

type Reply = Response<Full<Bytes>>;

pub async fn handle(
    context: Arc<AdminContext>,
    transport: Transport,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    Ok(match route(&context, transport, request).await {
        Ok(reply) => reply,
        Err(err) => json(
            err.status(),
            &ErrorBody {
                error: err.to_string(),
            },
        ),
    })
}

async fn route(
    context: &AdminContext,
    transport: Transport,
    request: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let parts = &context.parts;
    let controller = &parts.controller;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => {
            only(&method, &Method::GET)?;
            Ok(reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                PAGE.into(),
            ))
        }
        ["status"] => {
            only(&method, &Method::GET)?;
            let status = status::build(context).await;
            Ok(json(StatusCode::OK, &status))
        }
        ["fleet"] => {
            only(&method, &Method::GET)?;
            let fleet = controller.fleet.as_ref().ok_or_else(|| {
                ApiError::NotFound("this instance is not in a fleet (no [cluster] section)".into())
            })?;
            let applied = controller.snapshot().await.revision;
            Ok(json(StatusCode::OK, &fleet.status(applied).await))
        }
        ["metrics"] => {
            only(&method, &Method::GET)?;
            let text = metrics::render(parts).await;
            Ok(reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                text.into(),
            ))
        }
        ["commands"] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let order: Order = read_json(request).await?.ok_or_else(|| {
                ApiError::BadRequest("the body is an order: {\"command\": {\"type\": ...}, \"actor\": ..., \"reason\": ...}".into())
            })?;
            answer(parts, order).await
        }
        ["reload"] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let body = read_envelope(request).await?;
            rest::only_who_and_why("reload", &body, true)?;
            answer(parts, rest::order(Command::Reload {}, &body)).await
        }
        ["incidents"] => {
            only(&method, &Method::GET)?;
            let service = query_param(query.as_deref(), "service")?;
            let incidents = parts.incidents.list(service);
            if let Some(service) = service.filter(|_| incidents.is_empty()) {
                controller.service(service)?;
            }
            Ok(json(StatusCode::OK, &IncidentsResponse { incidents }))
        }
        ["services", service, "rollout", action] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let (service, action) = (service.to_string(), rest::rollout_action(action)?);
            let body = read_envelope(request).await?;
            rest::only_who_and_why("rollout commands", &body, true)?;
            answer(
                parts,
                rest::order(Command::Rollout { service, action }, &body),
            )
            .await
        }
        ["services", service, "approve"] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let service = service.to_string();
            let body = read_envelope(request).await?;
            rest::only_who_and_why("approve", &body, false)?;
            answer(parts, rest::order(Command::Approve { service }, &body)).await
        }
        ["services", service] => {
            only(&method, &Method::GET)?;
            let found = status::service(context, service).await?;
            Ok(json(StatusCode::OK, &found))
        }
        ["services", service, "checks"] => {
            only(&method, &Method::POST)?;
            // Not a change, but it sends requests to upstreams: a mutation's authority.
            authorize(context, transport, &request)?;
            let request: crate::verify::ChecksRequest =
                read_json(request).await?.unwrap_or_default();
            let table = controller.plane.table.load_full();
            let verifier = &parts.verified.verifier;
            let found =
                crate::verify::run_checks(controller.as_ref(), &table, verifier, service, &request)
                    .await?;
            Ok(json(StatusCode::OK, &found))
        }
        ["services", service, "shadow"] => {
            only(&method, &Method::GET)?;
            controller.service(service)?;
            let table = controller.plane.table.load_full();
            let report = crate::dataplane::shadow::report(&table, service).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "{service} has no [services.{service}.shadow] section"
                ))
            })?;
            Ok(json(StatusCode::OK, &report))
        }
        ["services", service, "history"] => {
            only(&method, &Method::GET)?;
            let limit = history_limit(query.as_deref())?;
            let revisions = controller.history(service, limit).await?;
            let service = service.to_string();
            Ok(json(
                StatusCode::OK,
                &HistoryResponse { service, revisions },
            ))
        }
        ["services", service, verb] if method == Method::PUT || method == Method::POST => {
            authorize(context, transport, &request)?;
            let (service, verb) = (service.to_string(), verb.to_string());
            let body = read_envelope(request).await?;
            let change = rest::change(&verb, &body)?;
            only(&method, &rest::method_of(&change))?;
            answer(
                parts,
                rest::order(Command::Change { service, change }, &body),
            )
            .await
        }
        _ => Err(ApiError::NotFound(format!(
            "no such endpoint: {method} {path}"
        ))),
    }
}

fn only(method: &Method, expected: &Method) -> Result<(), ApiError> {
    match method == expected {
        true => Ok(()),
        false => Err(ApiError::MethodNotAllowed(format!(
            "use {expected} here, not {method}"
        ))),
    }
}

/// Mutations over TCP need `Authorization: Bearer <token>`; the Unix socket is guarded by
/// its file mode instead.
fn authorize(
    context: &AdminContext,
    transport: Transport,
    request: &Request<Incoming>,
) -> Result<(), ApiError> {
    if transport == Transport::Unix {
        return Ok(());
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "changes over TCP need an Authorization: Bearer <token> header".into(),
            )
        })?;
    let expected = context.token.as_deref().unwrap_or_default();
    match !expected.is_empty() && bool::from(presented.ct_eq(expected)) {
        true => Ok(()),
        false => Err(ApiError::Unauthorized("wrong bearer token".into())),
    }
}

/// The JSON body, none when it is empty.
async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<Option<T>, ApiError> {
    let too_large = || ApiError::TooLarge(format!("request body is over {MAX_BODY_BYTES} bytes"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|err| match err.is::<LengthLimitError>() {
            true => too_large(),
            false => ApiError::BadRequest("could not read the request body".into()),
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| ApiError::BadRequest(format!("bad request body: {err}")))
}

/// A per-verb path's body; empty is who and why left out.
async fn read_envelope(request: Request<Incoming>) -> Result<ChangeRequest, ApiError> {
    Ok(read_json(request).await?.unwrap_or_default())
}

async fn answer(parts: &Parts, order: Order) -> Result<Reply, ApiError> {
    Ok(json(StatusCode::OK, &commands::run(parts, order).await?))
}

fn history_limit(query: Option<&str>) -> Result<usize, ApiError> {
    match query_param(query, "limit")? {
        None => Ok(DEFAULT_HISTORY),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number above 0, not {value:?}"
                ))
            }),
    }
}

/// The value of the one query parameter an endpoint understands (`key=value`), if given.
fn query_param<'q>(query: Option<&'q str>, key: &str) -> Result<Option<&'q str>, ApiError> {
    match query.map(|q| q.split_once('=')) {
        None => Ok(None),
        Some(Some((name, value))) if name == key && !value.is_empty() => Ok(Some(value)),
        Some(_) => Err(ApiError::BadRequest(format!(
            "unknown query {:?}: only {key}=VALUE is understood",
            query.unwrap_or_default()
        ))),
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    reply(status, "application/json", body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
