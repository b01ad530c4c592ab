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
pub type SetField = (&'static HeaderName, http::HeaderValue);

/// True when `name` is one of `set`'s, so the message's own field of that name gives way.
pub fn is_set(set: &[SetField], name: &HeaderName) -> bool {
    set.iter().any(|(set_name, _)| *set_name == name)
}

/// Sets `set` in a map that goes out as it is (HTTP/2, or a copy).
pub fn set_in(set: &[SetField], headers: &mut http::HeaderMap) {
    for (name, value) in set {
        headers.insert(*name, value.clone());
    }
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
