//! Proxy header hygiene: hop-by-hop headers out, forwarding headers in.

use super::forwarding::via_after;
use crate::http1::fields::FieldKind;
use crate::http1::HOP_BY_HOP;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// End-to-end headers that a `Connection` option can never remove: the message's
/// authority, framing and meaning, and what earlier proxies recorded (RFC 9110 7.6.1: a
/// sender must not list fields meant for every recipient; a receiver need not obey one).
static END_TO_END: [HeaderName; 14] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::AUTHORIZATION,
    header::COOKIE,
    header::CACHE_CONTROL,
    header::FORWARDED,
    header::VIA,
    header::EXPECT,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    // Set by the proxy for every request: a client's `Connection` cannot take it away.
    HeaderName::from_static("x-request-id"),
];

/// Why a request has no single authority (RFC 9112 3.2, RFC 9110 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityError {
    TwoHosts,
    NoHost,
    BadHost,
}

impl AuthorityError {
    pub fn text(self) -> &'static str {
        match self {
            AuthorityError::TwoHosts => "more than one Host header\n",
            AuthorityError::NoHost => "no Host header\n",
            AuthorityError::BadHost => "Host is not a valid authority\n",
        }
    }
}

/// The one authority of a request: an absolute-form target or `:authority` wins over
/// `Host`; else the single `Host`. `None` only for HTTP/1.0 without a Host.
pub fn authority(
    uri: &http::Uri,
    version: http::Version,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, AuthorityError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::TwoHosts);
    }
    if let Some(target) = uri.authority() {
        // Parsed as an authority with the target already; user info is refused here.
        let target = target.as_str();
        if target.contains('@') || target.starts_with(':') {
            return Err(AuthorityError::BadHost);
        }
        return HeaderValue::from_str(target)
            .map(Some)
            .map_err(|_| AuthorityError::BadHost);
    }
    match host {
        Some(host) if is_host_and_port(host.as_bytes()) => Ok(Some(host.clone())),
        Some(_) => Err(AuthorityError::BadHost),
        None if version == http::Version::HTTP_10 || version == http::Version::HTTP_09 => Ok(None),
        None => Err(AuthorityError::NoHost),
    }
}

/// `host[:port]` as RFC 3986 3.2.2 writes it, and nothing else: no user info, no path,
/// no blanks, an IP literal in brackets, a port of digits. Percent-encoding only within
/// an IP literal (a zone), as the `http` crate reads authorities.
fn is_host_and_port(bytes: &[u8]) -> bool {
    fn reg_name(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
    }
    let (host_ok, rest) = match bytes.split_first() {
        Some((b'[', literal)) => match literal.iter().position(|&b| b == b']') {
            Some(end) => (
                end > 0
                    && literal[..end]
                        .iter()
                        .all(|&b| reg_name(b) || b == b':' || b == b'%'),
                &literal[end + 1..],
            ),
            None => return false,
        },
        _ => {
            let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
            (
                end > 0 && bytes[..end].iter().all(|&b| reg_name(b)),
                &bytes[end..],
            )
        }
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => port.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// The size of a request head as HTTP/1.1 writes it: request line, `name: value` lines,
/// the blank line. HTTP/2 heads are measured the same way, so one limit means one thing.
pub fn head_size<B>(request: &http::Request<B>) -> usize {
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(1, |path| path.as_str().len());
    let line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

/// Removes hop-by-hop headers, including any the Connection header names. `Upgrade` is
/// kept (with `Connection: upgrade`) when the exchange is an upgrade being passed through.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass telling names apart by length, nothing removed.
    let carries_any = headers
        .keys()
        .any(|name| FieldKind::of(name.as_str().as_bytes()).is_hop_by_hop());
    if carries_any {
        remove_named_by_connection(headers, keep_upgrade);
        for hop in &HOP_BY_HOP {
            if !(keep_upgrade && hop == header::UPGRADE) {
                headers.remove(hop);
            }
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the fields `Connection` names as this hop's, except end-to-end ones.
fn remove_named_by_connection(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("keep-alive") && !token.eq_ignore_ascii_case("close")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .filter(|name| !END_TO_END.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// True for an HTTP/1.1 request asking to switch protocols (e.g. WebSocket).
/// Takes `h2c` out of `Upgrade` (dropping the field when nothing else is left), as Envoy
/// does: a cleartext HTTP/2 tunnel to the upstream would carry requests past host
/// routing, match rules and accounting (h2c smuggling). WebSocket and other upgrades stay.
pub fn strip_h2c(headers: &mut HeaderMap) {
    let is_h2c = |token: &str| token.trim().eq_ignore_ascii_case("h2c");
    let values = headers.get_all(header::UPGRADE);
    let tokens = || {
        values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
    };
    if !tokens().any(is_h2c) {
        return;
    }
    let kept: Vec<&str> = tokens()
        .filter(|token| !is_h2c(token) && !token.trim().is_empty())
        .map(str::trim)
        .collect();
    let kept = HeaderValue::from_str(&kept.join(", ")).ok();
    headers.remove(header::UPGRADE);
    if let Some(kept) = kept.filter(|value| !value.is_empty()) {
        headers.insert(header::UPGRADE, kept);
    }
}

/// An HTTP/2 client may split `cookie` into several fields; an HTTP/1 upstream gets them
/// as one, joined with "; " (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let cookies = headers.get_all(header::COOKIE);
    if cookies.iter().nth(1).is_none() {
        return;
    }
    let parts: Vec<&[u8]> = cookies.iter().map(HeaderValue::as_bytes).collect();
    let joined = HeaderValue::from_bytes(&parts.join(&b"; "[..]));
    if let Ok(joined) = joined {
        headers.insert(header::COOKIE, joined);
    }
}

pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// True when the request's `TE` lists `trailers`.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| {
            let name = token.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("trailers")
        })
}

/// Appends this proxy to Via (on answers; requests carry it in their `Forwarding`).
pub fn add_via(headers: &mut HeaderMap) {
    let via = via_after(headers.get(header::VIA));
    headers.insert(header::VIA, via);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::forwarding::X_FORWARDED_FOR;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn connection_never_removes_end_to_end_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, Host, content-length, x-forwarded-for, x-hop"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert!(!headers.contains_key("x-hop"));
    }

    #[test]
    fn one_authority_per_request() {
        let h11 = http::Version::HTTP_11;
        let mut headers = HeaderMap::new();
        let origin: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            authority(&origin, h11, &headers),
            Err(AuthorityError::NoHost)
        );
        assert_eq!(
            authority(&origin, http::Version::HTTP_10, &headers),
            Ok(None)
        );
        headers.append(header::HOST, HeaderValue::from_static("shop"));
        assert_eq!(authority(&origin, h11, &headers).unwrap().unwrap(), "shop");
        let absolute: http::Uri = "http://internal:81/x".parse().unwrap();
        assert_eq!(
            authority(&absolute, h11, &headers).unwrap().unwrap(),
            "internal:81"
        );
        headers.append(header::HOST, HeaderValue::from_static("other"));
        assert_eq!(
            authority(&origin, h11, &headers),
            Err(AuthorityError::TwoHosts)
        );
        for bad in ["a b", "user@shop", "shop/x", ""] {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                authority(&origin, h11, &headers),
                Err(AuthorityError::BadHost),
                "{bad}"
            );
        }
    }

    #[test]
    fn keeps_upgrade_for_upgrades() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&headers));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(headers.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn appends_this_proxy_to_via() {
        let mut headers = HeaderMap::new();
        add_via(&mut headers);
        assert_eq!(headers[header::VIA], "1.1 switchyard");
        headers.insert(header::VIA, HeaderValue::from_static("1.0 fred"));
        add_via(&mut headers);
        assert_eq!(headers[header::VIA], "1.0 fred, 1.1 switchyard");
    }

    /// The old reading: the `http` crate's authority, without user info or an empty host.
    fn http_reads_as_host(bytes: &[u8]) -> bool {
        http::uri::Authority::try_from(bytes)
            .is_ok_and(|a| !a.as_str().contains('@') && !a.host().is_empty())
    }

    #[test]
    fn host_values_read_as_the_http_crate_reads_them_but_stricter_on_ports() {
        let same = [
            "shop",
            "shop:8080",
            "127.0.0.1",
            "127.0.0.1:18193",
            "[::1]",
            "[::1]:443",
            "[fe80::1%25eth0]:80",
            "a-b.c_d~e",
            "shop:",
            "x!$&'()*+,;=",
            "UPPER.case",
            "",
            " ",
            "a b",
            "user@shop",
            "u:p@shop",
            "shop/x",
            "shop?x",
            "shop#x",
            ":80",
            "[::1",
            "::1]",
            "a:1:2",
            "sh%6fp",
            "shop\t",
            "sh\"op",
            "sh<op",
            "[::1]:80:80",
            "shop:8080/",
            "é",
        ];
        for host in same {
            assert_eq!(
                is_host_and_port(host.as_bytes()),
                http_reads_as_host(host.as_bytes()),
                "{host:?}"
            );
        }
        // Stricter than the `http` crate, by RFC 3986 3.2.3 (a port is digits) and 3.2.2
        // (brackets hold a whole, non-empty IP literal, with nothing before or after it but
        // a port).
        for host in ["[::1]x", "[]", "shop:http", "shop:8o", "a[::1]", "[::1]]"] {
            assert!(!is_host_and_port(host.as_bytes()), "{host:?}");
        }
    }
}
