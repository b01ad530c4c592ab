//! The request path: one table load, pick service, version and endpoint, stream, record.

use super::access_line::{AccessLine, Outputs, Served};
use super::answer_stamp::AnswerStamp;
use super::body::{ResponseBody, UpstreamRequestBody};
use super::client_body::{ClientBody, FaultSlot};
use super::client_conn::ClientConn;
use super::deadline::{clients_deadline, DeadlineJudge};
use super::failure::{plain, Failed, Failure};
use super::fields;
use super::forward::{forward, forward_upgrade, is_retryable};
use super::forwarding::{self, Forwarding};
use super::grpc;
use super::h1::ClientUpgrade;
use super::headers::{
    accepts_trailers, authority, head_size, is_upgrade_request, join_cookies, remove_hop_by_hop,
    strip_h2c,
};
use super::request_id;
use super::served_body::{GrpcCall, ServedBody, Watch};
use super::shadow;
use super::ClientRequestBody;
use crate::config::grpc::DEADLINE_EXCEEDED;
use crate::http1::response_head::FieldsAs;
use crate::routing::table::sticky_cookie_value;
use crate::routing::{Pick, RoutingTable, ServiceRoute, VersionRoute};
use crate::telemetry::{ClientFault, Outcome, VersionStats};
use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use std::sync::Arc;
use std::time::Instant;

/// What the request path shares: the routing table, swapped whole by the control plane,
/// and the guard's doorbell, rung when a canary refuses connections.
#[derive(Debug)]
pub struct DataPlane {
    pub table: ArcSwap<RoutingTable>,
    pub guard_wake: tokio::sync::Notify,
}

impl DataPlane {
    pub fn new(table: RoutingTable) -> DataPlane {
        DataPlane {
            table: ArcSwap::from_pointee(table),
            guard_wake: tokio::sync::Notify::new(),
        }
    }
}

/// Serves one client request. Never fails: every problem becomes a short error response.
/// Every request and answer carries its `x-request-id`; with `[telemetry.otlp]` the
/// request's `traceparent` is decided here. With an access log or a sampled span, the
/// exchange's record goes with the answer's body (or is sent here, if the client leaves
/// before the answer). `upgrade` comes with an HTTP/1.1 upgrade request: it resolves to
/// the client's connection once a 101 went out. The answer comes with the fields the
/// proxy stamps on it, for the client's codec to write.
pub async fn handle(
    plane: Arc<DataPlane>,
    client: Arc<ClientConn>,
    mut request: Request<ClientRequestBody>,
    upgrade: Option<ClientUpgrade>,
) -> (Response<ServedBody>, AnswerStamp) {
    let started = Instant::now();
    // An HTTP/1 head was measured on the wire by its parser; an HTTP/2 one is measured
    // here as HTTP/1.1 would write it, before the proxy adds its request id.
    let oversized =
        request.version() == Version::HTTP_2 && head_size(&request) > client.max_header_bytes;
    let request_id = request_id::take_or_make(request.headers());
    let table = plane.table.load_full();
    let span = match &table.settings.tracer {
        Some(tracer) => tracer
            .start_span(request.headers_mut())
            .map(|ids| (tracer.clone(), ids)),
        None => None,
    };
    let outputs = Outputs {
        log: table.settings.access_log.clone(),
        span,
    };
    let mut line = outputs.any().then(|| {
        AccessLine::begin(
            outputs,
            &request,
            &client,
            &request_id,
            table.revision,
            started,
        )
    });
    let recording = line.is_some();
    let mut served = Served {
        end: "completed",
        ..Served::default()
    };
    // A HEAD answer's body is never sent, so never polled to its end.
    let bodiless = request.method() == http::Method::HEAD;
    let mut stamp = AnswerStamp::new(request_id.clone());
    let mut response = match oversized {
        true => ServedBody::plain(plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large\n",
        )),
        false => {
            let exchange = Exchange {
                started,
                recording,
                upgrade,
                request_id: &request_id,
                stamp: &mut stamp,
            };
            serve(&plane, &table, &client, request, exchange, &mut served).await
        }
    };
    if let Some(mut line) = line.take() {
        line.answered(response.status().as_u16(), served);
        if bodiless || response.body().is_end_stream() {
            line.body_done();
        }
        response.body_mut().log(line);
    }
    (response, stamp)
}

/// When a request started, whether its access log line or span is recorded, its
/// connection's upgrade, its id, and the fields the answer will carry.
struct Exchange<'a> {
    started: Instant,
    recording: bool,
    upgrade: Option<ClientUpgrade>,
    request_id: &'a HeaderValue,
    stamp: &'a mut AnswerStamp,
}

/// Serves one request with the table of its start, noting in `note` what the access
/// log and the span want to know.
async fn serve(
    plane: &DataPlane,
    table: &Arc<RoutingTable>,
    client: &ClientConn,
    mut request: Request<ClientRequestBody>,
    exchange: Exchange<'_>,
    note: &mut Served,
) -> Response<ServedBody> {
    let Exchange {
        started,
        recording,
        upgrade,
        request_id,
        stamp,
    } = exchange;
    let authority = match authority(request.uri(), request.version(), request.headers()) {
        Ok(authority) => authority,
        Err(err) => return ServedBody::plain(plain(StatusCode::BAD_REQUEST, err.text())),
    };
    let host = authority.as_ref().and_then(|a| a.to_str().ok());
    let grpc_call = grpc::is_grpc(request.headers());
    let Some(service) = table.service_for(host, request.method(), request.uri(), request.headers())
    else {
        return ServedBody::plain(match grpc_call {
            true => grpc::answer(
                crate::config::grpc::UNIMPLEMENTED,
                "no service for this host",
            ),
            false => plain(StatusCode::NOT_FOUND, "no service for this host\n"),
        });
    };
    let pick = service.pick(request.headers(), request.uri());
    let chosen = pick.version();
    // On a shared HTTP/2 connection, one client's malformed field must cost no one else.
    if service.versions[chosen].protocol.is_http2() {
        if let Some(name) = fields::first_invalid(request.headers()) {
            tracing::debug!(field = %name, "malformed field refused");
            return ServedBody::plain(match grpc_call {
                true => grpc::answer(crate::config::grpc::INTERNAL, "malformed metadata"),
                false => plain(StatusCode::BAD_REQUEST, "malformed header field\n"),
            });
        }
    }
    strip_h2c(request.headers_mut());
    // Upgrades pass only to HTTP/1 versions; for HTTP/2 ones the request goes as it is.
    let client_upgrade = upgrade.filter(|_| {
        request.version() == Version::HTTP_11
            && is_upgrade_request(request.headers())
            && !service.versions[chosen].protocol.is_http2()
    });
    let upgrade = client_upgrade.is_some();
    let http2 = request.version() == Version::HTTP_2;
    let fault = (!request.body().is_end_stream()).then(FaultSlot::new);
    let from = forwarding::Client {
        ip: &client.ip,
        tls: client.tls,
    };
    let forwarding = Forwarding::new(
        request.headers(),
        request_id.clone(),
        from,
        authority.as_ref(),
    );
    let forwarding_fields = forwarding.fields();
    let mut request = prepare_upstream_request(request, client, upgrade, authority, fault.as_ref());
    let mirror = match (&service.shadow, client_upgrade.is_some()) {
        (Some(shadow_route), false) if chosen == service.stable => {
            shadow::plan(shadow_route, &mut request, &forwarding)
        }
        _ => None,
    };
    // A gRPC client's deadline replaces the response head timeout: it said how long it waits.
    let grpc_deadline = grpc_call
        .then(|| grpc::timeout(request.headers()))
        .flatten();
    let timeout = grpc_deadline.unwrap_or(table.settings.response_headers_timeout);
    let judge = grpc_deadline.map(|deadline| {
        let stable = service.versions[service.stable].stats.clone();
        DeadlineJudge::new(deadline, stable, table.settings.response_headers_timeout)
    });
    let body_idle = table.settings.upstream_body_idle;
    // Dropped with this future when the client leaves before the answer.
    let client_left = ClientLeft(Some(service.versions[chosen].stats.clone()));

    if let Some(retry) = &service.retry {
        retry.budget.deposit(retry.ratio);
    }
    // A canary request that may be sent again keeps a copy of its head.
    let retry_head = match (&service.retry, client_upgrade.is_some()) {
        (Some(_), false) if chosen != service.stable && is_retryable(&request) => {
            Some(head_of(&request))
        }
        _ => None,
    };
    let deadlines = (timeout, body_idle);
    // Only switchyard's HTTP/1 writer reads an answer's fields as the upstream wrote them;
    // hyper's HTTP/2 side, gRPC's status and a shadow comparison read a map.
    let answer_fields = match http2 || grpc_call || mirror.is_some() {
        true => FieldsAs::Map,
        false => FieldsAs::Raw,
    };
    let mut result = match client_upgrade {
        Some(on_client_upgrade) => forward_upgrade(
            &service.versions[chosen],
            request,
            forwarding_fields.as_slice(),
            on_client_upgrade,
            deadlines,
            started,
            &mut note.endpoint,
        )
        .await
        .map_err(Failed::from),
        None => {
            let version = &service.versions[chosen];
            forward(
                version,
                request,
                deadlines,
                started,
                &mut note.endpoint,
                forwarding_fields.as_slice(),
                answer_fields,
            )
            .await
        }
    };
    blame_client(&mut result, fault.as_deref());
    let call = Call {
        started,
        grpc: grpc_call,
        judge: judge.as_ref(),
    };
    let outcome = record(plane, service, chosen, &result, &call);
    if recording {
        note.upstream = Some(started.elapsed());
    }
    let served = match second_try(service, chosen, outcome, &mut result, retry_head) {
        Some(request) => {
            note.end = "retried_on_stable";
            service.versions[chosen].stats.record_saved(Instant::now());
            let stable = service.stable;
            let version = &service.versions[stable];
            let endpoint = &mut note.endpoint;
            result = forward(
                version,
                request,
                deadlines,
                started,
                endpoint,
                forwarding_fields.as_slice(),
                answer_fields,
            )
            .await;
            blame_client(&mut result, fault.as_deref());
            record(plane, service, stable, &result, &call);
            if result.is_ok() {
                stamp.add_retried_from(service.versions[chosen].header_value.clone());
            }
            stable
        }
        None => chosen,
    };
    client_left.answered();
    let version = &service.versions[served];
    if recording {
        note.service = Some(service.name.clone());
        note.version = Some(version.name.clone());
    }
    match result {
        Ok(mut response) => {
            // A copy is compared with stable's own answer only, never a retried one.
            let tap = mirror.filter(|_| served == chosen).and_then(|mirror| {
                mirror.start(&response, table.clone(), service_index(table, service))
            });
            finish_response(&mut response, stamp, table, service, version, pick);
            // HTTP/1 stalls show on the socket; an HTTP/2 stream at window 0 only here.
            let stall = http2.then(|| client.idle.clock());
            // A gRPC call whose status comes in the trailers is recorded when they do.
            let grpc = (grpc_call && grpc::status_pending(response.headers())).then(|| {
                let call =
                    GrpcCall::new(version.stats.clone(), service.grpc_errors, started, judge);
                Box::new(call)
            });
            let watch = Watch {
                stall,
                stats: version.stats.clone(),
                fault,
                grpc,
                tap: tap.map(Box::new),
            };
            response.map(|body| ServedBody::new(body, Some(watch)))
        }
        Err(Failed { failure, .. }) => {
            note.end = failure.end_reason();
            if !matches!(failure, Failure::Client(_) | Failure::Tls(_)) {
                tracing::warn!(service = %service.name, version = %version.name, error = failure.detail(), "upstream failure");
            }
            let mut answer = match grpc_call {
                true => {
                    let (code, message) = grpc::failure_code(&failure);
                    grpc::answer(code, message)
                }
                false => failure.response(),
            };
            finish_response(&mut answer, stamp, table, service, version, pick);
            ServedBody::plain(answer)
        }
    }
}

/// Where `service` stands in `table` (for a task that outlives this borrow of it).
fn service_index(table: &RoutingTable, service: &ServiceRoute) -> usize {
    table
        .services()
        .iter()
        .position(|s| std::ptr::eq(s, service))
        .unwrap_or(usize::MAX)
}

/// Counts a client that went away before its answer, against nobody.
struct ClientLeft(Option<Arc<VersionStats>>);

impl ClientLeft {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for ClientLeft {
    fn drop(&mut self) {
        if let Some(stats) = &self.0 {
            stats.record_client_fault(ClientFault::Gone);
        }
    }
}

/// An exchange whose client body broke is the client's doing, whatever the upstream
/// made of it: even an answer is dropped (the client gets a 400 if it is still there).
/// Results are changed in place here and below: a response is large, and each move of
/// one is a copy.
fn blame_client(result: &mut Result<Response<ResponseBody>, Failed>, fault: Option<&FaultSlot>) {
    if let Some(fault) = fault.and_then(FaultSlot::get) {
        *result = Err(Failure::Client(fault).into());
    }
}

/// What to send to stable after a non-stable version failed a request: the request
/// itself when it never left the proxy (safe whatever its method: no upstream saw it),
/// else a copy of an idempotent bodiless one (`retry_head`) within the retry budget.
/// `None`: the first result stands.
fn second_try(
    service: &ServiceRoute,
    chosen: usize,
    outcome: Option<Outcome>,
    result: &mut Result<Response<ResponseBody>, Failed>,
    retry_head: Option<http::request::Parts>,
) -> Option<Request<UpstreamRequestBody>> {
    let retry = service.retry.as_ref()?;
    if chosen == service.stable || !outcome.is_some_and(Outcome::is_error) {
        return None;
    }
    if let Err(Failed {
        unsent: unsent @ Some(_),
        ..
    }) = result
    {
        return unsent.take().map(|request| *request);
    }
    match retry_head {
        Some(head) if retry.budget.try_withdraw() => {
            Some(Request::from_parts(head, UpstreamRequestBody::Empty))
        }
        _ => None,
    }
}

/// What `record` needs to know of the exchange besides its result.
struct Call<'a> {
    started: Instant,
    grpc: bool,
    /// Set when a gRPC client chose the deadline.
    judge: Option<&'a DeadlineJudge>,
}

/// Counts the exchange against the version (a client fault only as such: `None`); a
/// refused or reset connection on a non-stable version rings the guard at once: it may
/// be the first sign that the version went down.
fn record(
    plane: &DataPlane,
    service: &ServiceRoute,
    version: usize,
    result: &Result<Response<ResponseBody>, Failed>,
    call: &Call<'_>,
) -> Option<Outcome> {
    let stats = &service.versions[version].stats;
    let outcome = match result {
        Ok(response) if call.grpc && grpc::is_grpc(response.headers()) => {
            // No status in the head: the call goes on, and ends in the served body.
            let code = grpc::status(response.headers())?;
            stats.record_grpc_status(code);
            let elapsed = call.started.elapsed();
            if code == DEADLINE_EXCEEDED && clients_deadline(call.judge, stats, elapsed) {
                return None;
            }
            grpc::outcome(code, response.status(), service.grpc_errors)
        }
        Ok(response) => Outcome::from_status(response.status()),
        Err(Failed {
            failure: Failure::Client(fault),
            ..
        }) => {
            stats.record_client_fault(*fault);
            return None;
        }
        Err(Failed {
            failure: Failure::Refused(_),
            ..
        }) => {
            if call.grpc {
                stats.record_grpc_status(crate::config::grpc::UNAVAILABLE);
            }
            return None;
        }
        Err(failed) => {
            if call.grpc {
                stats.record_grpc_status(grpc::failure_code(&failed.failure).0);
            }
            let cut_off = matches!(failed.failure, Failure::Timeout | Failure::Reset(_));
            if cut_off && clients_deadline(call.judge, stats, call.started.elapsed()) {
                return None;
            }
            failed.failure.outcome()
        }
    };
    stats.record_since(outcome, call.started);
    let lost_connection = outcome == Outcome::ConnectFailed || outcome == Outcome::Reset;
    if lost_connection && version != service.stable {
        plane.guard_wake.notify_one();
    }
    Some(outcome)
}

fn head_of(request: &Request<UpstreamRequestBody>) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts
}

/// Rewrites a client request for the upstream: the request's one authority as Host,
/// HTTP/1.1, hop-by-hop headers out (the forwarding fields go beside it).
fn prepare_upstream_request(
    request: Request<ClientRequestBody>,
    client: &ClientConn,
    upgrade: bool,
    authority: Option<HeaderValue>,
    fault: Option<&Arc<FaultSlot>>,
) -> Request<UpstreamRequestBody> {
    // The target stays as it came (absolute-form, or HTTP/2's parts): the codec writes
    // its path and query in origin-form without building a new URI.
    let (mut parts, body) = request.into_parts();
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    let trailers = accepts_trailers(&parts.headers);
    remove_hop_by_hop(&mut parts.headers, upgrade);
    // "The client takes trailers" holds end to end when both hops carry them (gRPC needs
    // it): both upstream codecs pass trailers through.
    if trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // An origin-form target's authority is its one Host field already.
    if let (Some(host), Some(_)) = (authority, parts.uri.authority()) {
        parts.headers.insert(header::HOST, host);
    }
    let body = match fault {
        Some(fault) => {
            let body = ClientBody::new(body, fault.clone(), client.idle.clock());
            UpstreamRequestBody::Client(Box::new(body))
        }
        None => UpstreamRequestBody::Empty,
    };
    Request::from_parts(parts, body)
}

/// Response hygiene, and the fields the proxy stamps: Via, version served, sticky cookie.
fn finish_response(
    response: &mut Response<ResponseBody>,
    stamp: &mut AnswerStamp,
    table: &RoutingTable,
    service: &ServiceRoute,
    version: &VersionRoute,
    pick: Pick,
) {
    // The upstream's protocol version is hop-by-hop too: an HTTP/1.0 upstream must not
    // downgrade (and close) the client's HTTP/1.1 connection. hyper writes the client's
    // own version for HTTP/2.
    *response.version_mut() = Version::HTTP_11;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let hop_by_hop_removed = response.body().hop_by_hop_removed();
    if !hop_by_hop_removed {
        remove_hop_by_hop(response.headers_mut(), switching);
    }
    stamp.add_via();
    if let Some(name) = &table.settings.version_header {
        stamp.add_version(name.clone(), version.header_value.clone());
    }
    if let (Pick::NewSticky(_, key), Some(cookie)) = (pick, service.sticky_cookie_name()) {
        let value = format!(
            "{cookie}={}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
            sticky_cookie_value(key)
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            stamp.add_cookie(value);
        }
    }
}
