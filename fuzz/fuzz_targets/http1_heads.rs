//! The HTTP/1 codec on any bytes, both directions: a request head as a client sends it,
//! a response head as an upstream sends it, and a chunked body. Never a panic or a loop;
//! a whole request head parses the same from exactly its own bytes, and every offset
//! it keeps lies inside them.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use switchyard::http1::chunked::{ChunkedDecoder, Decoded};
use switchyard::http1::request_head::{RequestHead, Status};
use switchyard::http1::response_head::{self, Parsed};

const MAX: usize = 8192;

fuzz_target!(|data: &[u8]| {
    request(data);
    response(data);
    chunked(data);
});

fn request(data: &[u8]) {
    let mut head = RequestHead::default();
    let Ok(Status::Complete) = head.parse(data, MAX) else {
        return;
    };
    let length = head.length;
    assert!(length <= data.len() && length <= MAX);
    assert!(head.target.range().end <= length);
    for field in &head.fields {
        assert!(field.name.range().end <= length && field.value.range().end <= length);
    }
    let fields = head.fields.clone();
    let framing = head.framing;
    let mut again = RequestHead::default();
    assert!(matches!(again.parse(&data[..length], MAX), Ok(Status::Complete)));
    assert_eq!(again.length, length);
    assert_eq!(again.fields, fields);
    assert_eq!(again.framing, framing);
    for cut in [0, length / 2, length.saturating_sub(1)] {
        assert!(!matches!(again.parse(&data[..cut], MAX), Ok(Status::Complete)) || cut == length);
    }
}

fn response(data: &[u8]) {
    for method in [Method::GET, Method::HEAD] {
        let mut buf = BytesMut::from(data);
        let before = buf.len();
        if let Ok(Parsed::Final(_) | Parsed::Interim) = response_head::parse(&mut buf, &method) {
            assert!(buf.len() < before);
        }
    }
}

fn chunked(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut decoder = ChunkedDecoder::new();
    // Each piece consumes input or ends the body: at most one piece per byte, plus the end.
    for _ in 0..=data.len() + 1 {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
            Ok(Decoded::End | Decoded::NeedMore) | Err(_) => return,
        }
    }
    panic!("the chunked decoder went round without consuming input");
}
