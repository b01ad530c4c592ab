//! Admin API routing: paths to handlers, size-bounded JSON bodies, bearer checks on TCP.

use super::api::{self, ApiError, ChangeRequest, ErrorBody, HistoryResponse, IncidentsResponse};
use super::context::AdminContext;
use super::{metrics, status};
use crate::control::command::{Change, RolloutAction};
use crate::control::record::Origin;
use crate::control::{ReloadError, RoutingControl};
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
        ["reload"] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let body: ChangeRequest = read_json(request).await?;
            only_who_and_why("reload", &body, true)?;
            let origin = origin(body.actor, body.reason)?;
            let reason = match origin.reason.as_str() {
                "" => format!("reload requested by {}", origin.actor),
                why => format!("reload requested by {}: {why}", origin.actor),
            };
            let reloaded = controller
                .reload(Origin::new("reload", reason).forced(body.force))
                .await
                .map_err(|err| match err {
                    ReloadError::Config(_) => {
                        ApiError::BadRequest(format!("reload rejected, nothing changed: {err}"))
                    }
                    ReloadError::Refused(_) => ApiError::Conflict(err.to_string()),
                    ReloadError::Journal(_) | ReloadError::Stopped => {
                        ApiError::Internal(err.to_string())
                    }
                })?;
            Ok(json(StatusCode::OK, &reloaded))
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
            let (service, action) = (service.to_string(), api::rollout_action(action)?);
            let body: ChangeRequest = read_json(request).await?;
            only_who_and_why("rollout commands", &body, true)?;
            let origin = origin(body.actor, body.reason)?.forced(body.force);
            let status = parts.rollouts.command(&service, action, origin).await?;
            Ok(json(StatusCode::OK, &status))
        }
        ["services", service, "approve"] => {
            only(&method, &Method::POST)?;
            authorize(context, transport, &request)?;
            let service = service.to_string();
            let body: ChangeRequest = read_json(request).await?;
            only_who_and_why("approve", &body, false)?;
            let origin = origin(body.actor, body.reason)?;
            let status = parts
                .rollouts
                .command(&service, RolloutAction::Approve, origin)
                .await?;
            Ok(json(StatusCode::OK, &status))
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
            let request: crate::verify::ChecksRequest = read_json(request).await?;
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
        ["services", service, verb] if Change::VERBS.contains(verb) => {
            only(&method, &api::change_method(verb))?;
            authorize(context, transport, &request)?;
            let (service, verb) = (service.to_string(), verb.to_string());
            let body: ChangeRequest = read_json(request).await?;
            let change = api::change(&verb, &body)?;
            let origin = origin(body.actor, body.reason)?.forced(body.force);
            let record = match change {
                Change::Release { version, spec } => {
                    super::release::release(parts, &service, version, spec, origin).await?
                }
                change => parts.verified.change(&service, change, origin).await?,
            };
            Ok(json(StatusCode::OK, &record))
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

async fn read_json<T: DeserializeOwned + Default>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
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
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::BadRequest(format!("bad request body: {err}")))
}

/// Refuses a body with fields besides actor and reason (and `force`, where a pre-flight
/// gate may refuse the command).
fn only_who_and_why(what: &str, body: &ChangeRequest, gated: bool) -> Result<(), ApiError> {
    let who_and_why = ChangeRequest {
        actor: body.actor.clone(),
        reason: body.reason.clone(),
        force: body.force && gated,
        ..ChangeRequest::default()
    };
    match *body == who_and_why {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!(
            "{what} take only actor and reason{}",
            if gated { " (and force)" } else { "" }
        ))),
    }
}

/// Who and why, checked: one line each, so history stays readable.
fn origin(actor: Option<String>, reason: Option<String>) -> Result<Origin, ApiError> {
    let actor = actor.unwrap_or_else(|| "api".to_string());
    let reason = reason.unwrap_or_default();
    if actor.is_empty() || actor.chars().count() > 64 || actor.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "actor must be 1 to 64 characters, without control characters".into(),
        ));
    }
    if reason.chars().count() > 1024 || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "reason must be one line of at most 1024 characters".into(),
        ));
    }
    Ok(Origin::new(actor, reason))
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
