//! Body types of the proxy: streamed through frame by frame, never collected.

use super::client_body::ClientBody;
use crate::http1::raw_fields::RawFields;
use crate::upstream::endpoint::InFlight;
use crate::upstream::h1::{self, BodyError, BoxError};
use crate::upstream::h2::H2ResponseBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What is sent upstream: the client's body as it arrives, nothing (a retry of a
/// bodiless request), or a body the proxy holds whole (a shadow copy's).
#[derive(Debug)]
pub enum UpstreamRequestBody {
    /// Boxed: most requests have no body, and every request is moved several times.
    Client(Box<ClientBody>),
    Empty,
    Whole(Option<Bytes>),
}

impl Body for UpstreamRequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamRequestBody::Client(body) => body.poll_frame(cx),
            UpstreamRequestBody::Empty => Poll::Ready(None),
            UpstreamRequestBody::Whole(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamRequestBody::Client(body) => body.is_end_stream(),
            UpstreamRequestBody::Empty => true,
            UpstreamRequestBody::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamRequestBody::Client(body) => body.size_hint(),
            UpstreamRequestBody::Empty => SizeHint::with_exact(0),
            UpstreamRequestBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// What is sent to the client: an upstream body, or a short message of the proxy's own.
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(UpstreamResponse),
    /// From an HTTP/2 upstream.
    Http2(UpstreamH2Response),
    Message(Option<Bytes>),
}

impl ResponseBody {
    /// True when the codec already left the upstream head's hop-by-hop fields out.
    pub fn hop_by_hop_removed(&self) -> bool {
        matches!(self, ResponseBody::Upstream(upstream) if upstream.body.hop_by_hop_removed)
    }

    /// The upstream's fields as it wrote them, when the answer carries them so.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        match self {
            ResponseBody::Upstream(upstream) => upstream.body.raw_fields.as_deref(),
            _ => None,
        }
    }

    pub fn message(text: &'static str) -> ResponseBody {
        ResponseBody::Message(Some(Bytes::from_static(text.as_bytes())))
    }

    pub fn owned(text: String) -> ResponseBody {
        ResponseBody::Message(Some(Bytes::from(text)))
    }
}

/// An upstream response body, counted in flight against its endpoint until dropped.
#[derive(Debug)]
pub struct UpstreamResponse {
    body: h1::ResponseBody<UpstreamRequestBody>,
    _in_flight: InFlight,
}

impl UpstreamResponse {
    pub fn new(body: h1::ResponseBody<UpstreamRequestBody>, in_flight: InFlight) -> Self {
        UpstreamResponse {
            body,
            _in_flight: in_flight,
        }
    }
}

/// An HTTP/2 upstream's response body, counted in flight against its endpoint until dropped.
#[derive(Debug)]
pub struct UpstreamH2Response {
    body: H2ResponseBody,
    _in_flight: InFlight,
}

impl UpstreamH2Response {
    pub fn new(body: H2ResponseBody, in_flight: InFlight) -> Self {
        UpstreamH2Response {
            body,
            _in_flight: in_flight,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Message(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(upstream) => Pin::new(&mut upstream.body).poll_frame(cx),
            ResponseBody::Http2(upstream) => Pin::new(&mut upstream.body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Message(bytes) => bytes.is_none(),
            ResponseBody::Upstream(upstream) => upstream.body.is_end_stream(),
            ResponseBody::Http2(upstream) => upstream.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Message(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Message(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream(upstream) => upstream.body.size_hint(),
            ResponseBody::Http2(upstream) => upstream.body.size_hint(),
        }
    }
}
