//! Shadow traffic: a share of stable's requests is copied to another version; its answer
//! is compared with the one stable gave the user, then dropped. The user's request never
//! waits for a copy and never fails because of one: the copy runs in a task of its own,
//! bounded by `max_in_flight`, and reads stable's answer through a tap on the user's
//! response body as it streams by. Copies never feed the versions' statistics.

pub mod compare;

use super::body::{ResponseBody, UpstreamRequestBody};
use super::forward::forward;
use super::forwarding::Forwarding;
use crate::http1::response_head::FieldsAs;
use crate::routing::{RoutingTable, ShadowRoute};
use crate::telemetry::shadow::{ShadowReport, Skip};
use bytes::{Bytes, BytesMut};
use compare::Answer;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

static SHADOW_HEADER: HeaderName = HeaderName::from_static("switchyard-shadow");

/// Longest a copy may take, stable's answer included, before it is given up.
const COPY_DEADLINE: Duration = Duration::from_secs(60);

/// Whether this request to stable is copied: the method is one to copy, the share says
/// so, its body (if any) may fit in `max_body`, and there is room. A body is copied as it
/// streams to stable; the copy goes when it has all passed.
pub fn plan(
    shadow: &ShadowRoute,
    request: &mut Request<UpstreamRequestBody>,
    forwarding: &Forwarding,
) -> Option<Mirror> {
    let settings = &shadow.settings;
    if !settings.methods.contains(request.method()) || fastrand::f64() * 100.0 >= settings.percent {
        return None;
    }
    let too_large = request
        .body()
        .size_hint()
        .exact()
        .is_some_and(|length| length > settings.max_body as u64);
    if too_large {
        shadow.stats.skipped(Skip::TooLarge);
        return None;
    }
    let Some(slot) = Slot::take(&shadow.in_flight, settings.max_in_flight) else {
        shadow.stats.skipped(Skip::InFlight);
        return None;
    };
    let head = copy_head(request, forwarding, settings.forward_credentials);
    let body = match request.body_mut() {
        UpstreamRequestBody::Client(body) => Some(body.copy_to(settings.max_body)),
        UpstreamRequestBody::Empty | UpstreamRequestBody::Whole(_) => None,
    };
    Some(Mirror { head, body, slot })
}

/// What shadowing `service` found so far (`ctl shadow`), if it has a shadow.
pub fn report(table: &RoutingTable, service: &str) -> Option<ShadowReport> {
    let route = table.services().iter().find(|s| *s.name == *service)?;
    let shadow = route.shadow.as_ref()?;
    let version = &route.versions[shadow.version].name;
    Some(shadow.stats.report(version, shadow.bounds()))
}

/// A copy about to be made.
pub struct Mirror {
    head: http::request::Parts,
    /// The request body, when it has all passed to stable.
    body: Option<oneshot::Receiver<Option<Bytes>>>,
    slot: Slot,
}

impl Mirror {
    /// Starts the copy beside stable's `response` to the user; the tap goes on the user's
    /// body, to hand over stable's answer when the user has had it whole.
    pub fn start(
        self,
        response: &Response<ResponseBody>,
        table: Arc<RoutingTable>,
        service: usize,
    ) -> Option<Tap> {
        let shadow = table.services().get(service)?.shadow.as_ref()?;
        let max_body = shadow.settings.max_body;
        let (tx, rx) = oneshot::channel();
        let mut tap = Tap {
            status: response.status(),
            headers: response.headers().clone(),
            body: BytesMut::new(),
            max_body,
            too_large: false,
            to: Some(tx),
        };
        let copy = Copy {
            head: self.head,
            body: self.body,
            table,
            service,
            _slot: self.slot,
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(COPY_DEADLINE, copy.run(rx)).await;
        });
        // An empty body is never polled.
        if response.body().is_end_stream() {
            tap.end();
        }
        Some(tap)
    }
}

/// One of `max_in_flight`; given back when the copy ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(in_flight: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(in_flight.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stable's answer as the user received it: the head, and the body as it streams by.
#[derive(Debug)]
pub struct Tap {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: BytesMut,
    max_body: usize,
    too_large: bool,
    to: Option<oneshot::Sender<Result<Answer, Skip>>>,
}

impl Tap {
    pub fn data(&mut self, bytes: &Bytes) {
        if self.body.len() + bytes.len() > self.max_body {
            self.too_large = true;
        } else {
            self.body.extend_from_slice(bytes);
        }
    }

    /// The body ended: hands the answer over. (A tap dropped before, with a body that
    /// broke off or a user who left, hands over nothing.)
    pub fn end(&mut self) {
        let Some(to) = self.to.take() else { return };
        let answer = match self.too_large {
            true => Err(Skip::TooLarge),
            false => Ok(Answer {
                status: self.status,
                headers: std::mem::take(&mut self.headers),
                body: std::mem::take(&mut self.body).freeze(),
            }),
        };
        let _ = to.send(answer);
    }
}

/// A copy under way, in a task of its own.
struct Copy {
    head: http::request::Parts,
    body: Option<oneshot::Receiver<Option<Bytes>>>,
    table: Arc<RoutingTable>,
    service: usize,
    _slot: Slot,
}

impl Copy {
    async fn run(mut self, stable_answer: oneshot::Receiver<Result<Answer, Skip>>) {
        let Some(service) = self.table.services().get(self.service) else {
            return;
        };
        let Some(shadow) = &service.shadow else {
            return;
        };
        let body = match self.body.take() {
            None => None,
            Some(passed) => match passed.await {
                Ok(Some(body)) => Some(body),
                Ok(None) => return shadow.stats.skipped(Skip::TooLarge),
                // The client broke its body off: stable never got it whole either.
                Err(_) => return shadow.stats.skipped(Skip::RequestBody),
            },
        };
        let settings = &shadow.settings;
        let limits = (
            self.table.settings.response_headers_timeout,
            self.table.settings.upstream_body_idle,
        );
        shadow.stats.mirrored();
        let shadowed = self
            .send(
                &service.versions[shadow.version],
                &body,
                limits,
                settings.max_body,
            )
            .await;
        // Stable is asked again only for what is safe to ask twice: `allow_side_effects`
        // is about the shadow version, never a second write on production.
        let learn_noise =
            self.head.method.is_safe() && fastrand::f64() * 100.0 < settings.noise_percent;
        let noise = match learn_noise {
            true => Some(
                self.send(
                    &service.versions[service.stable],
                    &body,
                    limits,
                    settings.max_body,
                )
                .await,
            ),
            false => None,
        };
        let stable = match stable_answer.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(skip)) => return shadow.stats.skipped(skip),
            Err(_) => return shadow.stats.skipped(Skip::NoStableAnswer),
        };
        if compare::encoded(&stable) {
            return shadow.stats.skipped(Skip::Encoded);
        }
        let request = label(&self.head);
        // Stable answered: a shadow that did not (or too much) differs, it is not excused.
        let diffs = match shadowed {
            Ok(answer) if compare::encoded(&answer) => return shadow.stats.skipped(Skip::Encoded),
            Ok(answer) => compare::compare(settings, &stable, &answer),
            Err(failed) => compare::unanswered(&stable, failed),
        };
        shadow.stats.compared(&request, &diffs);
        if let Some(Ok(again)) = noise {
            shadow
                .stats
                .noise(&compare::compare(settings, &stable, &again));
        }
    }

    /// Sends the copy to `version` and reads its answer whole (up to `max_body`).
    async fn send(
        &self,
        version: &crate::routing::VersionRoute,
        body: &Option<Bytes>,
        limits: (Duration, Duration),
        max_body: usize,
    ) -> Result<Answer, Skip> {
        let body = match body {
            Some(bytes) => UpstreamRequestBody::Whole(Some(bytes.clone())),
            None => UpstreamRequestBody::Empty,
        };
        let request = Request::from_parts(self.head.clone(), body);
        let response = forward(
            version,
            request,
            limits,
            Instant::now(),
            &mut None,
            &[],
            FieldsAs::Map,
        )
        .await
        .map_err(|_| Skip::ShadowFailed)?;
        let (parts, mut body) = response.into_parts();
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Skip::ShadowFailed)?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > max_body {
                    return Err(Skip::TooLarge);
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: bytes.freeze(),
        })
    }
}

/// The copy's head: the request as it goes to stable, marked, credentials left out
/// unless the config says otherwise.
fn copy_head(
    request: &Request<UpstreamRequestBody>,
    forwarding: &Forwarding,
    credentials: bool,
) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    forwarding.set_in(&mut parts.headers);
    if !credentials {
        parts.headers.remove(AUTHORIZATION);
        parts.headers.remove(COOKIE);
    }
    parts
        .headers
        .insert(SHADOW_HEADER.clone(), HeaderValue::from_static("1"));
    parts
}

/// Method and path, for samples: the query may carry secrets, so it is left out.
fn label(head: &http::request::Parts) -> String {
    let query = match head.uri.query() {
        Some(_) => "?…",
        None => "",
    };
    format!("{} {}{query}", head.method, head.uri.path())
}
