//! One exchange's record, from the request's start to its body's end: the access log's
//! line and, when sampled, its span. It is sent when dropped, wherever that is: with the
//! served body when the body is done (or the client left mid-body), or in the request's
//! future when the client left before the answer.

use super::client_conn::ClientConn;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::exchange::{Entry, RequestText, TextField};
use crate::telemetry::spans::Tracer;
use crate::telemetry::trace_context::SpanIds;
use http::header::{HeaderValue, ToStrError, CONTENT_LENGTH, HOST, USER_AGENT};
use http::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What serving a request found, for its line.
#[derive(Debug, Default)]
pub struct Served {
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    /// Why the exchange ended, as far as the request path knows.
    pub end: &'static str,
    /// From the request's start to the upstream's answer head.
    pub upstream: Option<Duration>,
    /// The upstream address that answered (or was last tried).
    pub endpoint: Option<SocketAddr>,
}

/// Where a finished exchange goes: the access log, a sampled span, or both.
#[derive(Debug)]
pub struct Outputs {
    pub log: Option<Arc<AccessLog>>,
    pub span: Option<(Arc<Tracer>, SpanIds)>,
}

impl Outputs {
    pub fn any(&self) -> bool {
        self.log.is_some() || self.span.is_some()
    }
}

#[derive(Debug)]
pub struct AccessLine {
    outputs: Outputs,
    /// Taken when the line is sent.
    entry: Option<Box<Entry>>,
    started: Instant,
    /// Answered, and the body not yet whole.
    body_pending: bool,
}

impl AccessLine {
    pub fn begin<B>(
        outputs: Outputs,
        request: &Request<B>,
        client: &ClientConn,
        request_id: &HeaderValue,
        revision: u64,
        started: Instant,
    ) -> AccessLine {
        let headers = request.headers();
        let uri = request.uri();
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map(|a| a.as_str());
        let host = headers.get(HOST).filter(|_| authority.is_none());
        let agent = headers.get(USER_AGENT);
        let id = request_id.to_str().ok();
        let mut text = RequestText::with_capacity(
            target.len()
                + authority.map_or(0, str::len)
                + host.map_or(0, |h| h.len())
                + agent.map_or(0, |a| a.len())
                + id.map_or(0, str::len),
        );
        text.set(TextField::Target, Some(Ok::<_, ToStrError>(target)));
        match authority {
            Some(authority) => text.set(TextField::Authority, Some(Ok::<_, ToStrError>(authority))),
            None => text.set(TextField::Authority, host.map(HeaderValue::to_str)),
        }
        text.set(TextField::RequestId, Some(request_id.to_str()));
        text.set(TextField::UserAgent, agent.map(HeaderValue::to_str));
        let entry = Entry {
            start: SystemTime::now() - started.elapsed(),
            duration: Duration::ZERO,
            method: Some(request.method().clone()),
            protocol: Some(request.version()),
            tls: client.tls,
            // No answer at all: the client left first (NGINX's 499).
            status: 499,
            end: "client_gone",
            bytes_in: headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            bytes_out: 0,
            upstream: None,
            service: None,
            version: None,
            endpoint: None,
            revision,
            trace_id: super::request_id::trace_id(headers),
            client: client.ip.clone(),
            text,
        };
        AccessLine {
            outputs,
            entry: Some(Box::new(entry)),
            started,
            body_pending: false,
        }
    }

    pub fn answered(&mut self, status: u16, served: Served) {
        self.body_pending = true;
        if let Some(entry) = self.entry.as_mut() {
            entry.status = status;
            entry.end = served.end;
            entry.service = served.service;
            entry.version = served.version;
            entry.upstream = served.upstream;
            entry.endpoint = served.endpoint;
        }
    }

    pub fn sent(&mut self, bytes: usize) {
        if let Some(entry) = self.entry.as_mut() {
            entry.bytes_out += bytes as u64;
        }
    }

    /// The body is whole.
    pub fn body_done(&mut self) {
        self.body_pending = false;
    }

    /// The upstream's body broke off.
    pub fn broke(&mut self, timed_out: bool) {
        self.body_pending = false;
        if let Some(entry) = self.entry.as_mut() {
            entry.end = match timed_out {
                true => "upstream_body_timeout",
                false => "upstream_body_reset",
            };
        }
    }
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        if self.body_pending {
            entry.end = "client_gone";
        }
        entry.duration = self.started.elapsed();
        match (self.outputs.log.take(), self.outputs.span.take()) {
            (Some(log), Some((tracer, ids))) => {
                tracer.record(ids, entry.clone());
                log.send(entry);
            }
            (Some(log), None) => log.send(entry),
            (None, Some((tracer, ids))) => tracer.record(ids, entry),
            (None, None) => {}
        }
    }
}
