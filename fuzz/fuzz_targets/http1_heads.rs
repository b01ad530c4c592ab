//! The HTTP/1 codec on any bytes, both directions: a request head as a client sends it,
//! a response head as an upstream sends it, and a chunked body. Never a panic or a loop;
//! a whole request head parses the same from exactly its own bytes, and every offset
//! it keeps lies inside them; a response head's fields kept as raw lines say exactly
//! what its map says.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use switchyard::http1::chunked::{ChunkedDecoder, Decoded};
use switchyard::http1::request_head::{RequestHead, Status};
use switchyard::http1::response_head::{self, FieldsAs, Head, Parsed};

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
    assert!(matches!(
        again.parse(&data[..length], MAX),
        Ok(Status::Complete)
    ));
    assert_eq!(again.length, length);
    assert_eq!(again.fields, fields);
    assert_eq!(again.framing, framing);
    for cut in [0, length / 2, length.saturating_sub(1)] {
        assert!(!matches!(again.parse(&data[..cut], MAX), Ok(Status::Complete)) || cut == length);
    }
}

fn response(data: &[u8]) {
    for method in [Method::GET, Method::HEAD] {
        let parse = |wanted| {
            let mut buf = BytesMut::from(data);
            let parsed = response_head::parse(&mut buf, &method, wanted);
            if let Ok(Parsed::Final(_) | Parsed::Interim) = parsed {
                assert!(buf.len() < data.len());
            }
            (parsed, buf)
        };
        match (parse(FieldsAs::Map), parse(FieldsAs::Raw)) {
            ((Ok(Parsed::Final(map)), map_rest), (Ok(Parsed::Final(raw)), raw_rest)) => {
                assert_eq!(map_rest, raw_rest);
                assert_eq!((map.framing, map.keep_alive), (raw.framing, raw.keep_alive));
                assert_eq!(fields(&map), fields(&raw));
            }
            ((Ok(Parsed::Partial), _), (Ok(Parsed::Partial), _))
            | ((Ok(Parsed::Interim), _), (Ok(Parsed::Interim), _))
            | ((Err(_), _), (Err(_), _)) => {}
            (map, raw) => panic!("map {:?} but raw {:?}", map.0, raw.0),
        }
    }
}

/// A head's fields as lower-case names and values, from its map or its raw lines; the
/// lines in the map's order (each name's values together, where the name first came:
/// the order between names carries no meaning, within one name it does).
fn fields(head: &Head) -> Vec<(String, Vec<u8>)> {
    match &head.raw {
        Some(raw) => {
            let mut lines: Vec<(String, Vec<u8>)> = raw
                .iter()
                .map(|(_, name, text)| {
                    let value = text[name.len() + 1..].trim_ascii().to_vec();
                    (String::from_utf8_lossy(name).to_ascii_lowercase(), value)
                })
                .collect();
            let first =
                |name: &str, lines: &[(String, Vec<u8>)]| lines.iter().position(|(n, _)| n == name);
            let order: Vec<usize> = lines
                .iter()
                .map(|(name, _)| first(name, &lines).unwrap_or(0))
                .collect();
            let mut keyed: Vec<(usize, (String, Vec<u8>))> =
                order.into_iter().zip(lines.drain(..)).collect();
            keyed.sort_by_key(|(first, _)| *first);
            keyed.into_iter().map(|(_, line)| line).collect()
        }
        None => head
            .parts
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
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
