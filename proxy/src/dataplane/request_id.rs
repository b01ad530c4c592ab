//! Request ids and trace context: every request carries an `x-request-id` (the client's
//! when it is a sane token, else a new one) upstream and back to the client; the W3C
//! `traceparent`'s trace id goes to the access log (`telemetry::trace_context` reads it).

use crate::telemetry::trace_context::TraceParent;
use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given id kept; a longer one is replaced.
const MAX_ID: usize = 128;

/// The request's id: the client's when it sent one sane token, else a new one. The map
/// is left as it came: the id goes upstream with the request's `Forwarding`, in place of
/// whatever the client sent under that name.
pub fn take_or_make(headers: &HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) if fit(id.as_bytes()) => id.clone(),
        _ => new_id(),
    }
}

/// A token of at most 128 URL-safe characters: nothing that could split a log line or
/// smuggle markup into a dashboard.
fn fit(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits in hex.
fn new_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    let bits = fastrand::u128(..);
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[(bits >> (4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The trace id of a valid `traceparent`.
pub fn trace_id(headers: &HeaderMap) -> Option<[u8; 16]> {
    TraceParent::from_headers(headers).map(|parent| parent.trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace_context::TRACEPARENT;

    #[test]
    fn a_sane_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_static("abc-123_x.y:z"),
        );
        assert_eq!(take_or_make(&headers), "abc-123_x.y:z");
        for bad in ["", "has space", "<script>", &"a".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(
                X_REQUEST_ID.clone(),
                HeaderValue::from_str(bad).expect("value"),
            );
            let id = take_or_make(&headers);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert!(fit(id.as_bytes()));
        }
        let mut two = HeaderMap::new();
        two.append(X_REQUEST_ID.clone(), HeaderValue::from_static("a"));
        two.append(X_REQUEST_ID.clone(), HeaderValue::from_static("b"));
        assert_eq!(take_or_make(&two).len(), 32);
        assert_eq!(take_or_make(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn trace_ids_come_only_from_valid_traceparents() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT.clone(), HeaderValue::from_static(value));
            trace_id(&headers).map(|id| crate::telemetry::trace_context::to_hex(&id))
        };
        assert_eq!(
            with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            with("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            with("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(with("garbage"), None);
    }
}
