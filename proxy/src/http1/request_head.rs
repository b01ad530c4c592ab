//! The request head coming in (the server direction): parsed with httparse where it sits
//! in the connection's read buffer and kept there, its fields as offsets into it, its body
//! framing decided by RFC 9112 6.3 and refused wherever two readers could disagree.
//!
//! One `RequestHead` serves every request of a connection: its field list is cleared,
//! not freed, between requests.

use super::fields::{FieldFacts, FieldKind};
use http::{Method, StatusCode, Version};
use std::mem::MaybeUninit;
use std::ops::Range;

/// The most fields a request head may carry (hyper's limit, which the proxy kept so far).
pub const MAX_FIELDS: usize = 100;

/// How the request body is delimited. A request never runs until the connection closes
/// (RFC 9112 6.3 point 7): without either field it has no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// Where a piece of the head sits in the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(piece: &[u8], base: usize) -> Span {
        let start = piece.as_ptr() as usize - base;
        // Heads are bounded far below 4 GiB (`max_bytes`), so offsets fit.
        Span {
            start: start as u32,
            end: (start + piece.len()) as u32,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The bytes of this span in `buf`, the buffer the head was parsed from.
    pub fn of_buf(self, buf: &[u8]) -> &[u8] {
        &buf[self.range()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// The last complete head parsed, as offsets into the buffer it was parsed from.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub target: Span,
    pub version: Version,
    pub fields: Vec<Field>,
    /// The head's length in bytes, blank line included: the body (or the next request)
    /// starts there.
    pub length: usize,
    pub framing: BodyFraming,
    /// The connection may carry another request after this one's answer.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// HTTP/1.1 with `Connection: upgrade` and an `Upgrade` field.
    pub upgrade: bool,
}

#[derive(Debug)]
pub enum Status {
    /// The buffer holds no complete head yet: read more.
    Partial,
    Complete,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("bad content-length")]
    BadLength,
    #[error("both transfer-encoding and content-length")]
    LengthAndTransferEncoding,
    #[error("transfer-encoding that does not end in chunked")]
    NotChunked,
    #[error("transfer-encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("no host field")]
    NoHost,
    #[error("more than one host field")]
    ManyHosts,
    #[error("request target not in a form this method takes")]
    BadTarget,
}

impl RequestError {
    /// The status the client is answered with before the connection is closed.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::TooLarge(_) | RequestError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl Default for RequestHead {
    fn default() -> RequestHead {
        RequestHead {
            method: Method::GET,
            target: Span::default(),
            version: Version::HTTP_11,
            fields: Vec::with_capacity(32),
            length: 0,
            framing: BodyFraming::Empty,
            keep_alive: false,
            expect_continue: false,
            upgrade: false,
        }
    }
}

impl RequestHead {
    /// Parses the head at the front of `buf`; nothing is consumed. A head (or the part
    /// of one read so far) over `max_bytes` is refused.
    pub fn parse(&mut self, buf: &[u8], max_bytes: usize) -> Result<Status, RequestError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() > max_bytes => {
                return Err(RequestError::TooLarge(max_bytes))
            }
            Ok(httparse::Status::Partial) => return Ok(Status::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyFields),
            Err(err) => return Err(RequestError::Malformed(err)),
        };
        if length > max_bytes {
            return Err(RequestError::TooLarge(max_bytes));
        }
        // httparse sets every part of a complete head.
        let (Some(method), Some(target), Some(minor)) =
            (request.method, request.path, request.version)
        else {
            return Err(RequestError::Malformed(httparse::Error::Token));
        };
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| RequestError::Malformed(httparse::Error::Token))?;
        let version = match minor {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        check_target(&method, target.as_bytes())?;
        let base = buf.as_ptr() as usize;
        let mut facts = FieldFacts::default();
        let mut upgrade_field = false;
        self.fields.clear();
        for field in request.headers.iter() {
            facts.note(FieldKind::of(field.name.as_bytes()), field.value);
            upgrade_field |= field.name.eq_ignore_ascii_case("upgrade");
            self.fields.push(Field {
                name: Span::of(field.name.as_bytes(), base),
                value: Span::of(field.value, base),
            });
        }
        self.framing = framing(version, &facts)?;
        match (facts.hosts, version) {
            (0, Version::HTTP_11) => return Err(RequestError::NoHost),
            (0 | 1, _) => {}
            _ => return Err(RequestError::ManyHosts),
        }
        self.method = method;
        self.target = Span::of(target.as_bytes(), base);
        self.version = version;
        self.length = length;
        self.keep_alive = match version {
            Version::HTTP_10 => facts.keep_alive && !facts.close,
            _ => !facts.close,
        };
        let http11 = version == Version::HTTP_11;
        self.expect_continue = http11 && facts.expect_continue;
        self.upgrade = http11 && facts.upgrade && upgrade_field;
        Ok(Status::Complete)
    }

    /// The name and value of each field, in order, from the buffer the head was parsed from.
    pub fn fields<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> {
        self.fields
            .iter()
            .map(move |field| (field.name.of_buf(buf), field.value.of_buf(buf)))
    }
}

/// RFC 9112 6.1 and 6.3: one framing or none; anything two parsers could read two ways
/// is refused rather than guessed at.
fn framing(version: Version, facts: &FieldFacts) -> Result<BodyFraming, RequestError> {
    if facts.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(RequestError::TransferEncodingInHttp10);
        }
        if facts.length.is_some() || facts.bad_length {
            return Err(RequestError::LengthAndTransferEncoding);
        }
        if !facts.chunked_last {
            return Err(RequestError::NotChunked);
        }
        return Ok(BodyFraming::Chunked);
    }
    // A list is tolerated coming back from an upstream, never from a client: two
    // parsers may read "5, 5" differently (RFC 9110 8.6 lets a recipient refuse it).
    if facts.bad_length || facts.length_list {
        return Err(RequestError::BadLength);
    }
    Ok(match facts.length {
        None | Some(0) => BodyFraming::Empty,
        Some(length) => BodyFraming::Length(length),
    })
}

/// RFC 9112 3.2: origin-form for most, absolute-form for any, authority-form only for
/// CONNECT, asterisk-form only for OPTIONS. httparse refuses blanks and control bytes;
/// of the printable bytes RFC 3986 leaves out, `<`, `>` and `` ` `` are refused too, as
/// hyper refused them, while `"`, `\`, `^`, `{`, `|`, `}` and non-ASCII bytes pass: clients
/// send them unescaped in paths and queries, and hyper took them.
fn check_target(method: &Method, target: &[u8]) -> Result<(), RequestError> {
    if !target.iter().all(|&b| is_uri_byte(b)) {
        return Err(RequestError::BadTarget);
    }
    let fits = match target {
        [b'/', ..] => method != Method::CONNECT,
        b"*" => method == Method::OPTIONS,
        _ if method == Method::CONNECT => is_authority(target),
        _ => is_absolute(target),
    };
    fits.then_some(()).ok_or(RequestError::BadTarget)
}

fn is_uri_byte(b: u8) -> bool {
    !matches!(b, b'<' | b'>' | b'`')
}

/// `scheme "://" authority [path]` with a scheme of RFC 3986 3.1 characters and an
/// authority with a host.
fn is_absolute(target: &[u8]) -> bool {
    let Some(colon) = target.iter().position(|&b| b == b':') else {
        return false;
    };
    let (scheme, rest) = target.split_at(colon);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let Some(after) = rest.strip_prefix(b"://") else {
        return false;
    };
    let end = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    let authority = http::uri::Authority::try_from(&after[..end]);
    scheme_ok && authority.is_ok_and(|authority| !authority.host().is_empty())
}

/// `host:port` and nothing else.
fn is_authority(target: &[u8]) -> bool {
    match target.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let port = &target[colon + 1..];
            colon > 0
                && !port.is_empty()
                && port.iter().all(u8::is_ascii_digit)
                && !target[..colon]
                    .iter()
                    .any(|&b| matches!(b, b'/' | b'@' | b'?' | b'#'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Result<RequestHead, RequestError> {
        let mut head = RequestHead::default();
        match head.parse(wire, 8192)? {
            Status::Complete => Ok(head),
            Status::Partial => panic!("partial: {:?}", String::from_utf8_lossy(wire)),
        }
    }

    #[test]
    fn a_head_split_at_every_byte_is_partial_until_whole() {
        let wire = b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc";
        let whole = wire.len() - 3;
        let mut head = RequestHead::default();
        for cut in 0..whole {
            assert!(matches!(
                head.parse(&wire[..cut], 8192),
                Ok(Status::Partial)
            ));
        }
        assert!(matches!(head.parse(wire, 8192), Ok(Status::Complete)));
        assert_eq!(head.length, whole);
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.target.of_buf(wire), b"/a?b=c");
        assert_eq!(head.framing, BodyFraming::Length(3));
        let fields: Vec<_> = head.fields(wire).collect();
        assert_eq!(fields[2], (&b"X-A"[..], &b"1"[..]));
        assert!(head.keep_alive);
    }

    #[test]
    fn framing_by_rfc_9112() {
        let cases: [(&[u8], Result<BodyFraming, RequestError>); 10] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(BodyFraming::Empty)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", Ok(BodyFraming::Length(5))),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", Err(RequestError::BadLength)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok(BodyFraming::Chunked)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(RequestError::BadLength)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", Err(RequestError::BadLength)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Err(RequestError::LengthAndTransferEncoding)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(RequestError::NotChunked)),
            (b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(RequestError::TransferEncodingInHttp10)),
            (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(RequestError::BadLength)),
        ];
        for (wire, expected) in cases {
            let got = parse(wire).map(|head| head.framing);
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn connection_facts() {
        let head = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!head.keep_alive);
        let head = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(head.keep_alive);
        let head = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!head.keep_alive);
        let head = parse(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap();
        assert!(head.expect_continue);
        let head = parse(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(head.upgrade);
        let head = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n").unwrap();
        assert!(!head.upgrade, "upgrade to nothing");
    }

    #[test]
    fn hosts_and_targets() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            RequestError::NoHost
        );
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
            RequestError::ManyHosts
        );
        for good in [
            &b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        ] {
            assert!(parse(good).is_ok(), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err(), RequestError::BadTarget);
        }
    }

    #[test]
    fn oversize_and_malformed_heads() {
        let mut head = RequestHead::default();
        let long = [b"GET / HTTP/1.1\r\nHost: x\r\nX: ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(
            head.parse(&long, 100).unwrap_err(),
            RequestError::TooLarge(100)
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(RequestError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
