//! HTTP/1.1, one codec for both directions, as Pingora's `protocols/http/v1` has a server
//! and a client side: the request head coming in (`request_head`), the response head coming
//! back (`response_head`), the chunked coding both bodies use, and the framing rules both
//! heads are read by (`fields`). The exchange that drives the client direction over a
//! pooled connection is `upstream::h1`.

pub mod chunked;
pub mod fields;
pub mod request_head;
pub mod response_head;
pub mod response_write;

use http::header::{self, HeaderName};

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
