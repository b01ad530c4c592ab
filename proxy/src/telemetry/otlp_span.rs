//! One exchange as an OTLP span (OpenTelemetry's HTTP server conventions, plus
//! switchyard's own `switchyard.*` attributes), and a batch as the protobuf body of an
//! OTLP/HTTP export.

use super::exchange::{Entry, NOT_TEXT};
use super::trace_context::SpanIds;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use std::time::{Duration, SystemTime};

/// One sampled exchange.
#[derive(Debug)]
pub struct Recorded {
    pub ids: SpanIds,
    pub entry: Box<Entry>,
}

/// W3C sampled flag, and "the parent's remoteness is known" (bit 8) and "remote" (bit 9).
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The protobuf body of `POST /v1/traces` for `batch`.
pub fn encode(batch: &[Recorded]) -> Vec<u8> {
    let scope = || InstrumentationScope {
        name: "switchyard".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "switchyard"),
                    text("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: batch.iter().map(span_of).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    request.encode_to_vec()
}

fn span_of(recorded: &Recorded) -> Span {
    let Recorded { ids, entry } = recorded;
    let failed = entry.status >= 500;
    Span {
        trace_id: ids.trace_id.to_vec(),
        span_id: ids.span_id.to_vec(),
        trace_state: ids.trace_state.clone(),
        parent_span_id: ids.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: SAMPLED | HAS_IS_REMOTE | if ids.parent.is_some() { IS_REMOTE } else { 0 },
        name: entry
            .method
            .as_ref()
            .and_then(known_method)
            .unwrap_or("HTTP")
            .to_string(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(entry.start),
        end_time_unix_nano: unix_nanos(entry.start + entry.duration),
        attributes: attributes(entry),
        status: Some(Status {
            message: if failed {
                entry.end.to_string()
            } else {
                String::new()
            },
            code: match failed {
                true => status::StatusCode::Error,
                false => status::StatusCode::Unset,
            } as i32,
        }),
        ..Default::default()
    }
}

fn attributes(entry: &Entry) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(20);
    if let Some(method) = &entry.method {
        match known_method(method) {
            Some(known) => out.push(text("http.request.method", known)),
            // The conventions keep the method's values few; an unusual one is told apart.
            None => {
                out.push(text("http.request.method", "_OTHER"));
                out.push(text("http.request.method_original", method.as_str()));
            }
        }
    }
    if let Some(target) = entry.target() {
        // The query often carries tokens and signatures; it never leaves for the collector.
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        out.push(text("url.path", path));
    }
    out.push(text("url.scheme", if entry.tls { "https" } else { "http" }));
    // A value that was not text (`NOT_TEXT`) is no authority either.
    if let Some(authority) = entry.authority() {
        let authority: Option<http::uri::Authority> = authority.parse().ok();
        if let Some(authority) = authority {
            out.push(text("server.address", authority.host()));
            if let Some(port) = authority.port_u16() {
                out.push(int("server.port", port.into()));
            }
        }
    }
    if let Some(protocol) = entry.protocol {
        out.push(text("network.protocol.name", "http"));
        out.push(text(
            "network.protocol.version",
            match protocol {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ));
    }
    if let Ok(client) = entry.client.to_str() {
        out.push(text("client.address", client));
    }
    if let Some(agent) = entry.user_agent().filter(|agent| *agent != NOT_TEXT) {
        out.push(text("user_agent.original", agent));
    }
    out.push(int("http.response.status_code", entry.status.into()));
    if let Some(bytes) = entry.bytes_in {
        out.push(int("http.request.body.size", bytes as i64));
    }
    out.push(int("http.response.body.size", entry.bytes_out as i64));
    if entry.status >= 500 {
        out.push(text("error.type", error_type(entry)));
    }
    if let Some(service) = &entry.service {
        out.push(text("switchyard.service", service));
    }
    if let Some(version) = &entry.version {
        out.push(text("switchyard.version", version));
    }
    out.push(int("switchyard.revision", entry.revision as i64));
    if let Some(endpoint) = entry.endpoint {
        out.push(text("switchyard.endpoint", &endpoint.to_string()));
    }
    out.push(boolean(
        "switchyard.retried",
        entry.end == "retried_on_stable",
    ));
    out.push(text("switchyard.end", entry.end));
    out.push(text("switchyard.request_id", entry.request_id()));
    out
}

/// The method, when it is one of RFC 9110's or PATCH (the conventions' known methods).
fn known_method(method: &http::Method) -> Option<&str> {
    use http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    known.contains(method).then(|| method.as_str())
}

/// Why a 5xx exchange failed: the proxy's end reason, or the upstream's status.
fn error_type(entry: &Entry) -> &str {
    match entry.end {
        "completed" => match entry.status {
            500 => "500",
            502 => "502",
            503 => "503",
            504 => "504",
            _ => "_OTHER",
        },
        end => end,
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn value(value: any_value::Value, key: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, text: &str) -> KeyValue {
    value(any_value::Value::StringValue(text.to_string()), key)
}

fn int(key: &str, number: i64) -> KeyValue {
    value(any_value::Value::IntValue(number), key)
}

fn boolean(key: &str, flag: bool) -> KeyValue {
    value(any_value::Value::BoolValue(flag), key)
}
