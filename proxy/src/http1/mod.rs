//! HTTP/1.1, one codec for both directions, as Pingora's `protocols/http/v1` has a server
//! and a client side: the request head coming in (`request_head`), the response head coming
//! back (`response_head`), the chunked coding both bodies use, and the framing rules both
//! heads are read by (`fields`). The exchange that drives the client direction over a
//! pooled connection is `upstream::h1`.

pub mod chunked;
pub mod fields;
pub mod raw_fields;
pub mod request_head;
pub mod response_head;
pub mod response_write;

use bytes::BytesMut;
use http::header::{self, HeaderName};

/// Reads start this large.
const READ_SIZE: usize = 8 * 1024;
/// A buffer with less room than this left grows before a read.
const MIN_ROOM: usize = 2 * 1024;

/// One `name: value` line of a head or a trailer section, either direction.
pub fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &http::HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A field the proxy sets on a message it passes on. The writer puts it after the
/// message's own fields, in place of any of that name there: passing a message on then
/// costs no change to its map.
pub type SetField<'a> = (&'a HeaderName, &'a http::HeaderValue);

/// The most fields the proxy sets on one message.
const MAX_SET: usize = 5;
static UNSET_NAME: HeaderName = HeaderName::from_static("x-unset");
static UNSET_VALUE: http::HeaderValue = http::HeaderValue::from_static("");

/// The fields the proxy sets on one message, borrowed from where it keeps them: small to
/// hold across a send, nothing cloned.
#[derive(Debug)]
pub struct SetFields<'a> {
    pairs: [SetField<'a>; MAX_SET],
    len: usize,
}

impl<'a> SetFields<'a> {
    pub fn new() -> SetFields<'a> {
        SetFields {
            pairs: [(&UNSET_NAME, &UNSET_VALUE); MAX_SET],
            len: 0,
        }
    }

    /// Adds one; past `MAX_SET` (more than any message gets) nothing is added.
    pub fn push(&mut self, name: &'a HeaderName, value: &'a http::HeaderValue) {
        if let Some(pair) = self.pairs.get_mut(self.len) {
            *pair = (name, value);
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[SetField<'a>] {
        &self.pairs[..self.len]
    }
}

impl Default for SetFields<'_> {
    fn default() -> Self {
        SetFields::new()
    }
}

/// True when `name` is one of `set`'s, so the message's own field of that name gives way.
pub fn is_set(set: &[SetField<'_>], name: &HeaderName) -> bool {
    set.iter().any(|(set_name, _)| *set_name == name)
}

/// Sets `set` in a map that goes out as it is (HTTP/2, or a copy).
pub fn set_in(set: &[SetField<'_>], headers: &mut http::HeaderMap) {
    for (name, value) in set {
        headers.insert(*name, (*value).clone());
    }
}

/// What the proxy sets on an answer in the codec's tests: an id, and two lists.
#[cfg(test)]
fn proxy_set_for_tests() -> [SetField<'static>; 3] {
    use http::HeaderValue;
    static ID: HeaderName = HeaderName::from_static("x-request-id");
    static OURS: HeaderValue = HeaderValue::from_static("ours");
    static VIA: HeaderName = header::VIA;
    static VIA_SELF: HeaderValue = HeaderValue::from_static("1.1 switchyard");
    static COOKIE: HeaderName = header::SET_COOKIE;
    static STICKY: HeaderValue = HeaderValue::from_static("sticky=1");
    [(&ID, &OURS), (&VIA, &VIA_SELF), (&COOKIE, &STICKY)]
}

/// Room in `buf` for the next read, both directions. Heads taken off its front still share
/// the buffer, so reserving a whole read's room every time would allocate afresh for every
/// message; it grows only when little room is left.
pub fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_ROOM {
        buf.reserve(READ_SIZE);
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
pub static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
