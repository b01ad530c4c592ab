//! The response going out (the server direction): its head written into the connection's
//! reused buffer straight from the response's parts, and its body framed as that head says.

use super::fields::FieldKind;
use super::raw_fields::{replaced_by, replacing_lengths, RawFields};
use super::{write_field, SetField};
use http::{header, HeaderMap, Method, StatusCode};
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the response body travels to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body goes out (HEAD, 1xx, 204, 304), whatever the fields describe.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes: an HTTP/1.0 client and a body of unknown length.
    UntilClose,
}

impl ResponseFraming {
    /// RFC 9112 6: no body where none may be; a length the upstream stated, or one the
    /// body knows, as Content-Length; else chunked to an HTTP/1.1 client and the close
    /// of the connection to an HTTP/1.0 one.
    pub fn choose(
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
        exact: Option<u64>,
        http11: bool,
    ) -> ResponseFraming {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || method == Method::HEAD
        {
            return ResponseFraming::Empty;
        }
        let stated = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| super::fields::parse_length(value.as_bytes()));
        match (stated.or(exact), http11) {
            (Some(length), _) => ResponseFraming::Length(length),
            (None, true) => ResponseFraming::Chunked,
            (None, false) => ResponseFraming::UntilClose,
        }
    }
}

impl ResponseFraming {
    /// Whether a field of this kind gives way to the framing written from `self`: both
    /// framing fields do, except a stated length where no body goes out (HEAD, 304).
    fn replaces(self, kind: FieldKind) -> bool {
        match kind {
            FieldKind::ContentLength => self != ResponseFraming::Empty,
            FieldKind::TransferEncoding => true,
            _ => false,
        }
    }
}

/// What the connection says about itself in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1's default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked to keep the connection is told it is kept.
    KeepAliveHttp10,
    Close,
}

/// An answer's fields: the upstream's, as a map or as the raw lines it wrote (then the map
/// holds none of them), and the ones the proxy sets.
#[derive(Clone, Copy)]
pub struct ResponseFields<'a> {
    pub map: &'a HeaderMap,
    pub raw: Option<&'a RawFields>,
    pub set: &'a [SetField<'a>],
}

/// Writes the status line, the fields (the upstream's first, unless one the proxy set
/// replaces them; then the proxy's), the framing field and `Connection` into `out`
/// (cleared first). The response's own framing fields are replaced by `framing`'s.
pub fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: ResponseFields<'_>,
    framing: ResponseFraming,
    persistence: Persistence,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let replacing = replacing_lengths(fields.set);
    let gives_way =
        |kind, name: &[u8]| framing.replaces(kind) || replaced_by(name, replacing, fields.set);
    for (kind, name, line) in fields.raw.iter().flat_map(|raw| raw.iter()) {
        if gives_way(kind, name) {
            continue;
        }
        has_date |= kind == FieldKind::Date;
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in fields.map {
        let name_bytes = name.as_str().as_bytes();
        let kind = FieldKind::of(name_bytes);
        if gives_way(kind, name_bytes) {
            continue;
        }
        has_date |= kind == FieldKind::Date;
        write_field(out, name, value);
    }
    for (name, value) in fields.set {
        write_field(out, name, value);
    }
    match framing {
        ResponseFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::Empty | ResponseFraming::UntilClose => {}
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAliveHttp10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response of the proxy's own to a head it refused, closing the connection.
pub fn write_refusal(out: &mut Vec<u8>, status: StatusCode, message: &str) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\ndate: ",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        message.len() + 1
    );
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// The `Date` field's value (RFC 9110 6.6.1), formatted once a second per thread.
fn with_date(use_it: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        use_it(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(out: &[u8]) -> String {
        let text = String::from_utf8_lossy(out).into_owned();
        // The date changes; the rest is exact.
        let start = text.find("date: ").expect("a date");
        let end = start + text[start..].find("\r\n").unwrap();
        format!("{}date: D{}", &text[..start], &text[end..])
    }

    #[test]
    fn framing_by_what_is_known() {
        let mut headers = HeaderMap::new();
        let choose = |method: &Method, status: u16, headers: &HeaderMap, exact, http11| {
            let status = StatusCode::from_u16(status).unwrap();
            ResponseFraming::choose(method, status, headers, exact, http11)
        };
        assert_eq!(
            choose(&Method::GET, 200, &headers, Some(3), true),
            ResponseFraming::Length(3)
        );
        assert_eq!(
            choose(&Method::GET, 200, &headers, None, true),
            ResponseFraming::Chunked
        );
        assert_eq!(
            choose(&Method::GET, 200, &headers, None, false),
            ResponseFraming::UntilClose
        );
        assert_eq!(
            choose(&Method::HEAD, 200, &headers, None, true),
            ResponseFraming::Empty
        );
        assert_eq!(
            choose(&Method::GET, 304, &headers, None, true),
            ResponseFraming::Empty
        );
        assert_eq!(
            choose(&Method::GET, 101, &headers, Some(0), true),
            ResponseFraming::Empty
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        assert_eq!(
            choose(&Method::GET, 200, &headers, None, false),
            ResponseFraming::Length(7)
        );
    }

    #[test]
    fn heads_as_written() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        headers.insert("x-a", HeaderValue::from_static("b"));
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::OK,
            ResponseFields {
                map: &headers,
                raw: None,
                set: &[],
            },
            ResponseFraming::Chunked,
            Persistence::Close,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nx-a: b\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: D\r\n\r\n"
        );
        write_head(
            &mut out,
            StatusCode::OK,
            ResponseFields {
                map: &headers,
                raw: None,
                set: &[],
            },
            ResponseFraming::Empty,
            Persistence::KeepAliveHttp10,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-a: b\r\nconnection: keep-alive\r\ndate: D\r\n\r\n"
        );
        headers.insert(header::DATE, HeaderValue::from_static("then"));
        write_head(
            &mut out,
            StatusCode::from_u16(599).unwrap(),
            ResponseFields {
                map: &headers,
                raw: None,
                set: &[],
            },
            ResponseFraming::Length(2),
            Persistence::KeepAlive,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 599 \r\nx-a: b\r\ndate: then\r\ncontent-length: 2\r\n\r\n"
        );
    }

    const WIRE: &[u8] = b"HTTP/1.1 200 OK\r\nDate: then\r\nX-Request-Id: theirs\r\nVia: 1.0 cache\r\nSet-Cookie: a=1\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";

    #[test]
    fn raw_lines_go_first_and_give_way_to_what_the_proxy_set() {
        use crate::http1::response_head::{parse, FieldsAs, Parsed};
        let mut wire = bytes::BytesMut::from(WIRE);
        let Ok(Parsed::Final(head)) = parse(&mut wire, &Method::GET, FieldsAs::Raw) else {
            panic!("a head")
        };
        let ours = crate::http1::proxy_set_for_tests();
        let mut out = Vec::new();
        let raw = ResponseFields {
            map: &HeaderMap::new(),
            raw: head.raw.as_deref(),
            set: &ours,
        };
        write_head(
            &mut out,
            StatusCode::OK,
            raw,
            ResponseFraming::Length(3),
            Persistence::KeepAlive,
        );
        let want = "HTTP/1.1 200 OK\r\nDate: then\r\nVia: 1.0 cache\r\nSet-Cookie: a=1\r\nx-request-id: ours\r\nvia: 1.1 switchyard\r\nset-cookie: sticky=1\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(String::from_utf8_lossy(&out), want);
        // The same answer read into a map: the same lines, in the map's spelling.
        let mut wire = bytes::BytesMut::from(WIRE);
        let Ok(Parsed::Final(mapped)) = parse(&mut wire, &Method::GET, FieldsAs::Map) else {
            panic!("a head")
        };
        let map = ResponseFields {
            map: &mapped.parts.headers,
            raw: None,
            set: &ours,
        };
        write_head(
            &mut out,
            StatusCode::OK,
            map,
            ResponseFraming::Length(3),
            Persistence::KeepAlive,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            want.to_ascii_lowercase()
                .replace("http/1.1 200 ok", "HTTP/1.1 200 OK")
        );
        // For HEAD and 304 the upstream's stated length stays.
        let bare = ResponseFields { set: &[], ..raw };
        write_head(
            &mut out,
            StatusCode::OK,
            bare,
            ResponseFraming::Empty,
            Persistence::KeepAlive,
        );
        assert!(
            String::from_utf8_lossy(&out).contains("Content-Length: 3\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
