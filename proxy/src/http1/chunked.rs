//! The chunked transfer coding (RFC 9112 7.1), decoded from a read buffer in place.
//!
//! Nothing is consumed until a whole size line or trailer section is in the buffer, so a
//! chunk split anywhere across reads decodes the same as one read whole.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The line that opens a chunk of `length` bytes (hex digits by hand: no formatting
/// machinery for every chunk).
pub fn write_chunk_start(out: &mut Vec<u8>, length: usize) {
    let mut value = length as u64;
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, the trailer fields if any, and the blank line that ends the body.
pub fn write_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        super::write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The longest chunk-size line accepted, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// The largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedDecoder {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    Done,
}

#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("bad chunk size line")]
    BadSize,
    #[error("chunk size line too long")]
    SizeLineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("bad trailer section")]
    BadTrailers,
    #[error("trailer section too large")]
    TrailersTooLarge,
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::Size
    }

    pub fn is_done(&self) -> bool {
        *self == ChunkedDecoder::Done
    }

    /// Decodes the next piece from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match *self {
                ChunkedDecoder::Size => {
                    let Some(line_end) = find_crlf(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    *self = match size {
                        0 => ChunkedDecoder::Trailers,
                        n => ChunkedDecoder::Data(n),
                    };
                }
                ChunkedDecoder::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = remaining.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    *self = match remaining - take {
                        0 => ChunkedDecoder::DataEnd,
                        left => ChunkedDecoder::Data(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkedDecoder::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    buf.advance(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers => return self.trailers(buf),
                ChunkedDecoder::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            *self = ChunkedDecoder::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let (length, parsed) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                return Err(ChunkError::TrailersTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(ChunkError::BadTrailers),
        };
        if length > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkError::BadTrailers)?;
            let value =
                HeaderValue::from_bytes(field.value).map_err(|_| ChunkError::BadTrailers)?;
            trailers.append(name, value);
        }
        buf.advance(length);
        *self = ChunkedDecoder::Done;
        Ok(Decoded::Trailers(trailers))
    }
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

/// The position of the first CRLF, if the buffer holds one within `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ChunkError> {
    match buf.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) if at <= limit => Ok(Some(at)),
        Some(_) => Err(ChunkError::SizeLineTooLong),
        None if buf.len() > limit => Err(ChunkError::SizeLineTooLong),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ; chunk-ext ]`: hex digits, then optional extensions, which are
/// ignored. Anything else (a sign, a bare LF, no digits) is an error.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::BadSize);
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\n') || rest.contains(&b'\r') {
        return Err(ChunkError::BadSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::BadSize)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::BadSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_as_written() {
        for (length, text) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (65536, "10000\r\n"),
        ] {
            let mut out = Vec::new();
            write_chunk_start(&mut out, length);
            assert_eq!(out, text.as_bytes());
        }
        let mut out = Vec::new();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        write_last_chunk(&mut out, Some(&trailers));
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }

    fn decode_all(wire: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Trailers(map) => trailers = Some(map),
                Decoded::End => return Ok((body, trailers)),
                Decoded::NeedMore => {
                    assert!(
                        fed < wire.len(),
                        "decoder wants more than the whole message"
                    );
                    let next = (fed + split).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    const WIRE: &[u8] =
        b"5;name=value;other\r\nhello\r\n7 ; ext\r\n, world\r\n0;last\r\nx-sum: 12\r\nx-more: a\r\n\r\n";

    #[test]
    fn extensions_and_trailers_decode_at_every_split() {
        for split in 1..=WIRE.len() {
            let (body, trailers) = decode_all(WIRE, split).unwrap();
            assert_eq!(body, b"hello, world", "split {split}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-sum"], "12");
            assert_eq!(trailers["x-more"], "a");
        }
    }

    #[test]
    fn no_trailers() {
        let (body, trailers) = decode_all(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(body, b"abc");
        assert!(trailers.is_none());
    }

    #[test]
    fn bad_input_is_an_error() {
        for wire in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad header line\r\n\r\n",
        ] {
            assert!(
                decode_all(wire, wire.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn endless_size_lines_and_trailers_are_refused() {
        let mut line = vec![b'1'; 1];
        line.extend(std::iter::repeat_n(b';', MAX_SIZE_LINE + 10));
        assert_eq!(
            decode_all(&line, line.len()),
            Err(ChunkError::SizeLineTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for i in 0..2000 {
            trailers.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        assert!(decode_all(&trailers, 4096).is_err());
    }
}
