//! The response head coming down: parsed with httparse from the connection's read
//! buffer, its values shared with that buffer instead of copied, and its body framing
//! decided by RFC 9112 6.3.

use super::chunked::ChunkedDecoder;
use super::fields::{FieldFacts, FieldKind};
use super::raw_fields::{RawFields, MAX_LINES};
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// The largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_FIELDS: usize = 128;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or a body fully read).
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes: the connection cannot be reused.
    UntilClose,
}

#[derive(Debug)]
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another exchange after this one.
    pub keep_alive: bool,
    /// The hop-by-hop fields were left out of `parts` (they named no other field, and
    /// this is no 101): the proxy need not look for them again.
    pub hop_by_hop_removed: bool,
    /// With `FieldsAs::Raw`, when nothing in the head needed rewriting: the fields, left
    /// as the upstream wrote them (`parts.headers` is then empty).
    pub raw: Option<Box<RawFields>>,
}

/// What the caller wants the response's fields as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldsAs {
    /// A `HeaderMap`, for anyone to read.
    Map,
    /// Lines of the head, when only switchyard's HTTP/1 writer will read them and the
    /// head needs no rewriting beyond leaving fields out.
    Raw,
}

#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet: read more.
    Partial,
    /// A 1xx interim answer (not 101), consumed: the final one follows.
    Interim,
    Final(Head),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("bad content-length")]
    BadLength,
}

/// Where one field sits in the buffer, so values can share it once it is frozen.
#[derive(Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
    kind: FieldKind,
}

/// Parses a response head from the front of `buf`, consuming it when complete.
pub fn parse(buf: &mut BytesMut, method: &Method, wanted: FieldsAs) -> Result<Parsed, HeadError> {
    // Neither array is zeroed first: at up to 128 fields that would cost more than the parse.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(err) => return Err(HeadError::Malformed(err.to_string())),
    };
    if length > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let code = response.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        // RFC 9110 15.2: a 1xx answer has no body; the final answer follows.
        buf.advance(length);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code)
        .map_err(|_| HeadError::Malformed(format!("status code {code}")))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let mut spans = [const { MaybeUninit::<Span>::uninit() }; MAX_FIELDS];
    let mut facts = FieldFacts::default();
    let count = response.headers.len();
    for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
        let kind = FieldKind::of(field.name.as_bytes());
        facts.note(kind, field.value);
        span.write(Span {
            name: (field.name.as_ptr() as usize - base, field.name.len()),
            value: (field.value.as_ptr() as usize - base, field.value.len()),
            kind,
        });
    }
    if facts.bad_length && !facts.transfer_encoding {
        return Err(HeadError::BadLength);
    }
    let head = buf.split_to(length).freeze();
    let strip = !facts.names_fields && status != StatusCode::SWITCHING_PROTOCOLS;
    let framing = framing(method, status, &facts);
    let codings = facts.other_codings && framing != Framing::Empty;
    // SAFETY: the loop above wrote the first `count` spans (`count` is the number of
    // fields parsed, at most `MAX_FIELDS`, and `zip` visited each of them).
    let spans = unsafe { std::slice::from_raw_parts(spans.as_ptr().cast::<Span>(), count) };
    let (headers, raw) = match wanted {
        // Raw lines only when no field is rewritten, only left out.
        FieldsAs::Raw if strip && !codings && !facts.length_list && count <= MAX_LINES => {
            (HeaderMap::new(), Some(raw_fields(head, spans, &facts)))
        }
        _ => {
            let mut headers = map_fields(&head, spans, &facts, strip)?;
            if codings {
                keep_transfer_codings(&head, spans, &mut headers);
            }
            (headers, None)
        }
    };
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    let keep_alive = match version {
        Version::HTTP_10 => facts.keep_alive && !facts.close && !facts.transfer_encoding,
        _ => !facts.close,
    } && framing != Framing::UntilClose
        // Both framings at once smells of smuggling: answer this one, then close.
        && !(facts.transfer_encoding && facts.length.is_some());
    Ok(Parsed::Final(Head {
        parts,
        framing,
        keep_alive,
        hop_by_hop_removed: strip,
        raw,
    }))
}

/// Whether a field stays out of what the proxy passes on: a Content-Length that
/// Transfer-Encoding overrides (RFC 9112 6.3 point 3), or a hop-by-hop field.
fn left_out(kind: FieldKind, facts: &FieldFacts, strip: bool) -> bool {
    (facts.transfer_encoding && kind == FieldKind::ContentLength) || (strip && kind.is_hop_by_hop())
}

/// The fields as lines of `head`, hop-by-hop ones left out (the caller checked that
/// nothing else needs rewriting, and that they fit).
fn raw_fields(head: Bytes, spans: &[Span], facts: &FieldFacts) -> Box<RawFields> {
    let mut raw = RawFields::new(head);
    let mut length_kept = false;
    for span in spans {
        if left_out(span.kind, facts, true) {
            continue;
        }
        // One Content-Length, once (RFC 9110 8.6): the others repeat its value.
        if span.kind == FieldKind::ContentLength && std::mem::replace(&mut length_kept, true) {
            continue;
        }
        raw.keep(
            span.kind,
            span.name.0,
            span.name.1,
            span.value.0 + span.value.1,
        );
    }
    raw
}

/// The fields as a map whose values share `head`.
fn map_fields(
    head: &Bytes,
    spans: &[Span],
    facts: &FieldFacts,
    strip: bool,
) -> Result<HeaderMap, HeadError> {
    // Room for what the proxy adds (via, version, cookie), so the map never grows.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    let mut length_written = false;
    for span in spans {
        if left_out(span.kind, facts, strip) {
            continue;
        }
        let name = HeaderName::from_bytes(&head[span.name.0..span.name.0 + span.name.1])
            .map_err(|_| HeadError::Malformed("bad header name".into()))?;
        let bytes = head.slice(span.value.0..span.value.0 + span.value.1);
        if span.kind == FieldKind::ContentLength {
            // One value, once: "5, 5" or a repeated field would reach the client as a list
            // its parser may read differently (RFC 9110 8.6).
            if std::mem::replace(&mut length_written, true) {
                continue;
            }
            if let (Some(length), true) = (facts.length, bytes.contains(&b',')) {
                headers.append(name, HeaderValue::from(length));
                continue;
            }
        }
        let value = HeaderValue::from_maybe_shared(bytes)
            .map_err(|_| HeadError::Malformed("bad header value".into()))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The transfer codings other than chunked (`Transfer-Encoding: gzip, chunked`), added to
/// `Content-Encoding` after any content coding already there: the proxy removes chunked
/// and re-frames the body, and the client still learns the body is gzip (RFC 9110 8.4:
/// codings are listed in the order applied; a transfer coding is applied after them).
fn keep_transfer_codings(head: &[u8], spans: &[Span], headers: &mut HeaderMap) {
    let mut codings: Vec<&[u8]> = Vec::new();
    for span in spans {
        if span.kind != FieldKind::TransferEncoding {
            continue;
        }
        let value = &head[span.value.0..span.value.0 + span.value.1];
        codings.extend(
            value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|c| {
                    !c.is_empty()
                        && !c.eq_ignore_ascii_case(b"chunked")
                        && !c.eq_ignore_ascii_case(b"identity")
                }),
        );
    }
    let mut value: Vec<u8> = Vec::new();
    for existing in headers.get_all(header::CONTENT_ENCODING) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(&codings.join(&b", "[..]));
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(header::CONTENT_ENCODING, value);
    }
}

fn framing(method: &Method, status: StatusCode, facts: &FieldFacts) -> Framing {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return Framing::Empty;
    }
    if facts.transfer_encoding {
        return match facts.chunked_last {
            true => Framing::Chunked(ChunkedDecoder::new()),
            false => Framing::UntilClose,
        };
    }
    match facts.length {
        Some(0) => Framing::Empty,
        Some(length) => Framing::Length(length),
        None => Framing::UntilClose,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_head(wire: &[u8], method: &Method) -> Head {
        let mut buf = BytesMut::from(wire);
        match parse(&mut buf, method, FieldsAs::Map).unwrap() {
            Parsed::Final(head) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_content_length_reaches_the_client_as_one_value() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5,5\r\ncontent-length: 5\r\n\r\nhello",
        ] {
            let head = final_head(wire, &Method::GET);
            let values: Vec<_> = head
                .parts
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .collect();
            assert_eq!(values, ["5"], "{:?}", String::from_utf8_lossy(wire));
            assert_eq!(head.framing, Framing::Length(5));
        }
        let mut disagreeing =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n"[..]);
        assert_eq!(
            parse(&mut disagreeing, &Method::GET, FieldsAs::Map).unwrap_err(),
            HeadError::BadLength
        );
    }

    #[test]
    fn transfer_codings_besides_chunked_become_content_codings() {
        let head = final_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            &Method::GET,
        );
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert_eq!(head.parts.headers[header::CONTENT_ENCODING], "gzip");
        assert!(!head.parts.headers.contains_key(header::TRANSFER_ENCODING));
        let head = final_head(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(head.parts.headers[header::CONTENT_ENCODING], "br, gzip");
        // Nothing to say for identity (never a content coding), nor for an answer with no
        // body (HEAD, 304): a cache would take it as the stored body's coding.
        for (wire, method) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                Method::GET,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity, chunked\r\n\r\n",
                Method::GET,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Method::GET,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Method::HEAD,
            ),
        ] {
            let head = final_head(wire, &method);
            assert!(
                !head.parts.headers.contains_key(header::CONTENT_ENCODING),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn a_head_split_at_every_byte_is_partial_until_whole() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b\r\n\r\nabc";
        let head_len = wire.len() - 3;
        for cut in 0..head_len {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(
                matches!(
                    parse(&mut buf, &Method::GET, FieldsAs::Map),
                    Ok(Parsed::Partial)
                ),
                "cut {cut}"
            );
        }
        let mut buf = BytesMut::from(&wire[..]);
        let Parsed::Final(head) = parse(&mut buf, &Method::GET, FieldsAs::Map).unwrap() else {
            panic!()
        };
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(head.parts.headers["x-a"], "b");
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_unless_connection_names_others() {
        let head = final_head(
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nx-a: b\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
        );
        assert!(head.hop_by_hop_removed);
        let names: Vec<&str> = head.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "content-length"]);
        let head = final_head(
            b"HTTP/1.1 200 OK\r\nconnection: x-secret\r\nx-secret: 1\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
        );
        assert!(
            !head.hop_by_hop_removed,
            "the proxy's own pass must see Connection"
        );
        assert!(head.parts.headers.contains_key("connection"));
    }

    #[test]
    fn framing_by_rfc_9112() {
        let get = &Method::GET;
        let head = final_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(head.parts.headers["content-length"], "10");
        let head = final_head(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
            get,
        );
        assert_eq!(head.framing, Framing::Empty);
        let head = final_head(b"HTTP/1.1 204 No Content\r\n\r\n", get);
        assert_eq!(head.framing, Framing::Empty);
        let head = final_head(b"HTTP/1.1 200 OK\r\n\r\n", get);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
        let head = final_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 4\r\n\r\n",
            get,
        );
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert!(!head.parts.headers.contains_key("content-length"));
        assert!(!head.keep_alive, "both framings: close afterwards");
        let head = final_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", get);
        assert_eq!(head.framing, Framing::UntilClose);
        let head = final_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n",
            get,
        );
        assert!(!head.keep_alive);
        let head = final_head(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", get);
        assert!(!head.keep_alive);
        let head = final_head(
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n",
            get,
        );
        assert!(head.keep_alive);
        let head = final_head(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", get);
        assert_eq!(head.framing, Framing::Length(7));
    }

    #[test]
    fn interim_answers_are_consumed() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(matches!(
            parse(&mut buf, &Method::GET, FieldsAs::Map),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse(&mut buf, &Method::GET, FieldsAs::Map),
            Ok(Parsed::Final(_))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_heads_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3x\r\n\r\n",
            b"this is not HTTP at all\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            assert!(
                parse(&mut buf, &Method::GET, FieldsAs::Map).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nx-filler: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        let mut buf = BytesMut::from(&huge[..]);
        assert_eq!(
            parse(&mut buf, &Method::GET, FieldsAs::Map).unwrap_err(),
            HeadError::TooLarge
        );
    }

    /// The fields a raw head passes on, as (lower-case name, value) pairs.
    fn raw_pairs(head: &Head) -> Vec<(String, String)> {
        let raw = head.raw.as_ref().expect("raw lines");
        raw.iter()
            .map(|(_, name, text)| {
                let value = &text[name.len() + 1..];
                (
                    String::from_utf8_lossy(name).to_ascii_lowercase(),
                    String::from_utf8_lossy(value.trim_ascii()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn raw_lines_pass_on_what_the_map_holds_or_give_way_to_it() {
        let raw_cases: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\nETag: \"x\"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nCONTENT-LENGTH: 5\r\nkeep-alive: timeout=5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-empty:\r\nx-tab:\t a\tb \r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\ntransfer-encoding: chunked\ncontent-length: 9\nx-a: b\n\n",
            b"HTTP/1.1 404 Not Found\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nproxy-authenticate: x\r\nte: trailers\r\ntrailer: x\r\nupgrade: h2c\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-obs: caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n",
        ];
        for wire in raw_cases {
            let mut buf = BytesMut::from(wire);
            let Parsed::Final(raw) = parse(&mut buf, &Method::GET, FieldsAs::Raw).unwrap() else {
                panic!()
            };
            let map = final_head(wire, &Method::GET);
            assert!(raw.parts.headers.is_empty());
            let from_map: Vec<(String, String)> = map
                .parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            assert_eq!(
                raw_pairs(&raw),
                from_map,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!((raw.framing, raw.keep_alive), (map.framing, map.keep_alive));
        }
        // Anything rewritten, or a Connection that names fields, takes the map.
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: x-secret\r\nx-secret: 1\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            let Parsed::Final(head) = parse(&mut buf, &Method::GET, FieldsAs::Raw).unwrap() else {
                panic!()
            };
            assert!(head.raw.is_none(), "{:?}", String::from_utf8_lossy(wire));
            assert!(!head.parts.headers.is_empty());
        }
        // More fields than the lines hold: a map, every field in it.
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..=MAX_LINES {
            wire.extend_from_slice(format!("x-{n}: {n}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&wire[..]);
        let Parsed::Final(head) = parse(&mut buf, &Method::GET, FieldsAs::Raw).unwrap() else {
            panic!()
        };
        assert!(head.raw.is_none());
        assert_eq!(head.parts.headers.len(), MAX_LINES + 1);
    }

    #[test]
    fn a_field_the_proxy_set_replaces_the_upstreams_unless_it_is_a_list() {
        use super::super::raw_fields::{replaced_by, replacing_lengths};
        let set = crate::http1::proxy_set_for_tests();
        let lengths = replacing_lengths(&set);
        assert!(replaced_by(b"X-Request-ID", lengths, &set));
        assert!(!replaced_by(b"Via", lengths, &set));
        assert!(!replaced_by(b"set-cookie", lengths, &set));
        assert!(!replaced_by(b"x-request", lengths, &set));
        assert!(
            !replaced_by(b"content-type", lengths, &set),
            "same length, other name"
        );
    }
}
