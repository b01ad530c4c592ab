//! The request going up: its head written straight into a reused buffer, and its body
//! streamed frame by frame in the framing the head announced.

use super::RequestHead;
use crate::http1::chunked::{write_chunk_start, write_last_chunk};
use crate::http1::{is_set, write_field};
use crate::upstream::stream::UpstreamStream;
use bytes::{Buf, Bytes};
use http::{header, HeaderMap};
use http_body::Body;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// How the request body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body at all.
    Empty,
    /// Exactly this many bytes, as the client's Content-Length said.
    Length(u64),
    /// A body of unknown length (an HTTP/2 client's, say), sent chunked.
    Chunked,
}

impl RequestFraming {
    pub fn of(headers: &HeaderMap, body_is_empty: bool) -> RequestFraming {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        match (length, body_is_empty) {
            (Some(length), _) => RequestFraming::Length(length),
            (None, true) => RequestFraming::Empty,
            (None, false) => RequestFraming::Chunked,
        }
    }
}

/// Writes `METHOD target HTTP/1.1`, the headers, the proxy's own and the framing header
/// into `out`, reusing its allocation: no string is built per request.
pub fn write_head(out: &mut Vec<u8>, head: &RequestHead<'_>, framing: RequestFraming) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        let reframed = framing == RequestFraming::Chunked && name == header::CONTENT_LENGTH;
        if reframed || is_set(head.set, name) {
            continue;
        }
        write_field(out, name, value);
    }
    for (name, value) in head.set {
        write_field(out, name, value);
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError<E> {
    /// The client's body failed (an abandoned upload, broken chunking): the client's fault.
    #[error("client body: {0}")]
    Client(E),
    /// The client's body ended before the length it announced, or ran past it.
    #[error("client body does not match its content-length")]
    ClientLength,
    /// Writing to the upstream failed.
    #[error("writing the request body upstream: {0}")]
    Upstream(std::io::Error),
}

/// The request body on its way up: polled alongside the response, in the same task, so
/// an upstream that answers while the body still streams (an echo) never deadlocks.
#[derive(Debug)]
pub struct Upload<B> {
    body: B,
    chunked: bool,
    /// Bytes a content-length body still owes.
    owed: u64,
    /// Framing bytes before `data` (a chunk-size line, or the last chunk and trailers).
    prefix: Vec<u8>,
    prefix_sent: usize,
    data: Bytes,
    suffix: &'static [u8],
    /// The body has ended; what is pending is all that is left.
    ended: bool,
    /// The last poll waited on the client, not the upstream: the upstream's deadlines
    /// do not run meanwhile.
    pub waiting_on_client: bool,
    /// Bytes went upstream since `took_some` last looked.
    progressed: bool,
}

impl<B> Upload<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    pub fn new(body: B, framing: RequestFraming) -> Upload<B> {
        Upload {
            body,
            chunked: framing == RequestFraming::Chunked,
            owed: match framing {
                RequestFraming::Length(length) => length,
                _ => 0,
            },
            prefix: Vec::new(),
            prefix_sent: 0,
            data: Bytes::new(),
            suffix: b"",
            ended: false,
            waiting_on_client: false,
            progressed: false,
        }
    }

    fn pending(&self) -> bool {
        self.prefix_sent < self.prefix.len() || !self.data.is_empty() || !self.suffix.is_empty()
    }

    /// Moves the body along until it is all written (`Ready(Ok)`), or neither the client
    /// nor the upstream can go on right now (`Pending`).
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut UpstreamStream,
    ) -> Poll<Result<(), UploadError<B::Error>>> {
        loop {
            while self.pending() {
                let slices = [
                    IoSlice::new(&self.prefix[self.prefix_sent..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.suffix),
                ];
                let written = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices))
                    .map_err(UploadError::Upstream)?;
                if written == 0 {
                    return Poll::Ready(Err(UploadError::Upstream(
                        std::io::ErrorKind::WriteZero.into(),
                    )));
                }
                self.advance(written);
            }
            // TLS may hold written bytes back in its session: out before anything waits.
            ready!(Pin::new(&mut *stream).poll_flush(cx)).map_err(UploadError::Upstream)?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let polled = Pin::new(&mut self.body).poll_frame(cx);
            self.waiting_on_client = polled.is_pending();
            match ready!(polled) {
                None => self.end(None)?,
                Some(Err(err)) => return Poll::Ready(Err(UploadError::Client(err))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.queue(data)?,
                    Err(frame) => self.end(frame.into_trailers().ok())?,
                },
            }
        }
    }

    /// True when the upstream took some of the body since the last call.
    pub fn took_some(&mut self) -> bool {
        std::mem::take(&mut self.progressed)
    }

    fn advance(&mut self, mut written: usize) {
        self.progressed = true;
        let prefix = (self.prefix.len() - self.prefix_sent).min(written);
        self.prefix_sent += prefix;
        written -= prefix;
        let data = self.data.len().min(written);
        self.data.advance(data);
        written -= data;
        self.suffix = &self.suffix[written.min(self.suffix.len())..];
    }

    fn queue(&mut self, data: Bytes) -> Result<(), UploadError<B::Error>> {
        if data.is_empty() {
            return Ok(());
        }
        self.prefix.clear();
        self.prefix_sent = 0;
        if self.chunked {
            write_chunk_start(&mut self.prefix, data.len());
            self.suffix = b"\r\n";
        } else {
            let length = data.len() as u64;
            if length > self.owed {
                return Err(UploadError::ClientLength);
            }
            self.owed -= length;
        }
        self.data = data;
        Ok(())
    }

    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), UploadError<B::Error>> {
        self.ended = true;
        if !self.chunked {
            // Trailers cannot travel with a content-length body; they are dropped.
            return match self.owed {
                0 => Ok(()),
                _ => Err(UploadError::ClientLength),
            };
        }
        self.prefix.clear();
        self.prefix_sent = 0;
        write_last_chunk(&mut self.prefix, trailers.as_ref());
        self.suffix = b"";
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue, Method, Uri};

    static X_SEEN: HeaderName = HeaderName::from_static("x-seen");

    fn head<'a>(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> RequestHead<'a> {
        RequestHead {
            method,
            uri,
            headers,
            set: &[],
            answer_fields: crate::http1::response_head::FieldsAs::Map,
        }
    }

    #[test]
    fn head_is_written_in_order_with_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let uri: Uri = "http://shop/a/b?c=d".parse().unwrap();
        let mut out = Vec::new();
        let post = head(&Method::POST, &uri, &headers);
        write_head(&mut out, &post, RequestFraming::Length(5));
        assert_eq!(
            out,
            b"POST /a/b?c=d HTTP/1.1\r\nhost: shop\r\ncontent-length: 5\r\n\r\n"
        );
        let put = head(&Method::PUT, &uri, &headers);
        write_head(&mut out, &put, RequestFraming::Chunked);
        assert_eq!(
            out,
            b"PUT /a/b?c=d HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn the_proxys_fields_come_last_in_place_of_the_clients() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.append(&X_SEEN, HeaderValue::from_static("forged"));
        headers.append(&X_SEEN, HeaderValue::from_static("forged too"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let uri: Uri = "/".parse().unwrap();
        static PROXY: HeaderValue = HeaderValue::from_static("proxy");
        let set = [(&X_SEEN, &PROXY)];
        let get = RequestHead {
            set: &set,
            ..head(&Method::GET, &uri, &headers)
        };
        let mut out = Vec::new();
        write_head(&mut out, &get, RequestFraming::Empty);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nhost: shop\r\naccept: */*\r\nx-seen: proxy\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_the_client() {
        let mut headers = HeaderMap::new();
        assert_eq!(RequestFraming::of(&headers, true), RequestFraming::Empty);
        assert_eq!(RequestFraming::of(&headers, false), RequestFraming::Chunked);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(
            RequestFraming::of(&headers, false),
            RequestFraming::Length(12)
        );
    }
}
