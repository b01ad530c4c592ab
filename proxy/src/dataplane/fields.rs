//! What the proxy forwards on a shared HTTP/2 connection must be valid there: one
//! client's malformed field must not make the upstream drop a connection other clients'
//! streams are on. Field names and values as RFC 9113 §8.2.1 allows them, and gRPC
//! binary metadata (`-bin`) as base64, which gRPC servers decode and may fail the
//! connection over.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The first field a shared HTTP/2 connection must not carry, if any.
pub fn first_invalid(headers: &HeaderMap) -> Option<&HeaderName> {
    headers
        .iter()
        .find(|(name, value)| !valid_name(name) || !valid_value(name, value))
        .map(|(name, _)| name)
}

fn valid_name(name: &HeaderName) -> bool {
    // http's names are lowercase tokens already; this keeps the rule whatever made them.
    name.as_str()
        .bytes()
        .all(|b| b > 0x20 && b < 0x7f && !b.is_ascii_uppercase())
}

fn valid_value(name: &HeaderName, value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let clean = !bytes.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n');
    let trimmed =
        !matches!(bytes.first(), Some(b' ' | b'\t')) && !matches!(bytes.last(), Some(b' ' | b'\t'));
    clean && trimmed && (!name.as_str().ends_with("-bin") || is_base64(bytes))
}

/// Base64 as gRPC sends binary metadata: standard alphabet, padding optional.
fn is_base64(bytes: &[u8]) -> bool {
    let data = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    data.iter().all(alphabet)
        && data.len() % 4 != 1
        && (data.len() == bytes.len() || bytes.len().is_multiple_of(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, value: &[u8]) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).unwrap(),
        );
        first_invalid(&headers).is_none()
    }

    #[test]
    fn binary_metadata_is_base64() {
        for good in [&b""[..], b"AAH+", b"AAH+/w", b"AAH+/w==", b"AAE", b"AAE="] {
            assert!(check("x-echo-bin", good), "{good:?}");
        }
        for bad in [&b"!!!"[..], b"AAH+/", b"AA=H", b"AAH+/w=", b"A===", b"AA H"] {
            assert!(!check("x-echo-bin", bad), "{bad:?}");
        }
        // The same value is fine outside binary metadata.
        assert!(check("x-echo", b"!!!"));
    }

    #[test]
    fn values_per_rfc_9113() {
        assert!(check("x-a", b"a b"));
        for bad in [&b" a"[..], b"a ", b"\ta", b"a\t"] {
            assert!(!check("x-a", bad), "{bad:?}");
        }
    }
}
