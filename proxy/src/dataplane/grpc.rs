//! gRPC on the request path: telling a call apart, its deadline (`grpc-timeout`), its
//! final status (in the head of a trailers-only answer, else in the trailers), and the
//! trailers-only answer a client gets when the proxy itself fails the call.

use super::body::ResponseBody;
use super::failure::Failure;
use crate::config::grpc::{self as codes, GrpcCodes};
use crate::telemetry::{ClientFault, Outcome};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use std::time::Duration;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `application/grpc`, alone or with a subtype (`+proto`, `+json`) or parameters.
/// gRPC-Web (`application/grpc-web`) is another protocol and is left alone.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// The call's deadline from `grpc-timeout` (1 to 8 digits and a unit, per the gRPC
/// HTTP/2 protocol); `None` when absent or malformed (the call then has no deadline).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `grpc-status` in a head or trailers. A value that is not a number reads as
/// UNKNOWN, as gRPC clients read it.
pub fn status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(&GRPC_STATUS)?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.parse::<u8>().ok())
            .unwrap_or(codes::UNKNOWN),
    )
}

/// A gRPC answer whose status is still to come, in the trailers.
pub fn status_pending(headers: &HeaderMap) -> bool {
    is_grpc(headers) && !headers.contains_key(&GRPC_STATUS)
}

/// A call's outcome for the guard: an error code of the service's set is the
/// version's failure; any other answer counts by its HTTP status (200 for gRPC).
pub fn outcome(code: u8, http_status: StatusCode, errors: GrpcCodes) -> Outcome {
    match errors.contains(code) {
        true => Outcome::GrpcError,
        false => Outcome::from_status(http_status),
    }
}

/// The status a gRPC client gets when the proxy fails its call.
pub fn failure_code(failure: &Failure) -> (u8, &'static str) {
    match failure {
        Failure::NoEndpoint => (codes::UNAVAILABLE, "no upstream endpoint available"),
        Failure::Connect(_) => (codes::UNAVAILABLE, "upstream refused the connection"),
        Failure::Tls(_) => (codes::UNAVAILABLE, "upstream TLS handshake failed"),
        Failure::Reset(_) => (codes::UNAVAILABLE, "upstream failed to answer"),
        Failure::Refused(_) => (codes::UNAVAILABLE, "upstream refused the call unprocessed"),
        Failure::Timeout => (
            codes::DEADLINE_EXCEEDED,
            "deadline exceeded before the upstream answered",
        ),
        Failure::Client(ClientFault::MalformedBody) => (codes::INTERNAL, "malformed request body"),
        Failure::Client(_) => (codes::CANCELLED, "request body ended early"),
    }
}

/// A trailers-only answer: HTTP 200 and the status in the head, no body.
pub fn answer(code: u8, message: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Message(None));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(&GRPC_STATUS, HeaderValue::from(u16::from(code)));
    headers.insert(&GRPC_MESSAGE, HeaderValue::from_static(message));
    response
}

/// The trailers the proxy ends a call with when its deadline passes mid-answer.
pub fn deadline_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(
        &GRPC_STATUS,
        HeaderValue::from(u16::from(codes::DEADLINE_EXCEEDED)),
    );
    trailers.insert(
        &GRPC_MESSAGE,
        HeaderValue::from_static("deadline exceeded at the proxy"),
    );
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                let value = HeaderValue::from_bytes(v.as_bytes()).unwrap();
                (HeaderName::from_static(k), value)
            })
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;x=1",
        ] {
            assert!(is_grpc(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_as_the_protocol_writes_them() {
        let t = |v| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        // Attacker-shaped values: no deadline rather than a wrong one, and no panic.
        for bad in [
            "",
            "m",
            "123456789S",
            "10x",
            "-1S",
            "1.5S",
            " 1S",
            "1 S",
            "\u{00e9}S",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_and_outcomes() {
        assert_eq!(status(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(status(&headers(&[("grpc-status", "abc")])), Some(2));
        assert_eq!(status(&headers(&[("grpc-status", "999")])), Some(2));
        assert_eq!(status(&HeaderMap::new()), None);
        let errors = GrpcCodes::default();
        assert_eq!(outcome(14, StatusCode::OK, errors), Outcome::GrpcError);
        assert_eq!(outcome(5, StatusCode::OK, errors), Outcome::Status2xx);
        assert_eq!(outcome(0, StatusCode::OK, errors), Outcome::Status2xx);
    }
}
