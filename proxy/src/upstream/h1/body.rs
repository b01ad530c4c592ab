//! The response body, read straight from the upstream connection as the client takes it,
//! in the request's own task. The request body, if still streaming, moves along in the
//! same polls. At a clean message boundary the connection goes back to its pool.

use super::request::{Upload, UploadError};
use crate::http1::chunked::{ChunkError, Decoded};
use crate::http1::raw_fields::RawFields;
use crate::http1::response_head::Framing;
use crate::upstream::pool::Lease;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Read size for bodies: large enough that a big download takes few reads.
const BODY_READ: usize = 64 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection before the body was complete")]
    ClosedEarly,
    #[error("reading the upstream body: {0}")]
    Io(std::io::Error),
    #[error("bad chunked body from the upstream: {0}")]
    Chunked(#[from] ChunkError),
    #[error("the client's request body failed: {0}")]
    Client(BoxError),
    #[error("no body bytes from the upstream for {0:?}")]
    IdleTimeout(Duration),
    #[error("upstream HTTP/2 stream failed: {0}")]
    Http2(hyper::Error),
}

impl BodyError {
    /// True when the client, not the upstream, broke the exchange.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, BodyError::Client(_))
    }
}

#[derive(Debug)]
pub struct ResponseBody<B> {
    /// `None` once the exchange is over (connection released or closed).
    lease: Option<Lease>,
    framing: Framing,
    /// Boxed: only requests with a body have one.
    upload: Option<Box<Upload<B>>>,
    keep_alive: bool,
    /// `upstream_body_idle`: the longest wait for the next body bytes.
    idle: Duration,
    /// When the wait under way gives up; `None` while bytes flow.
    idle_deadline: Option<Instant>,
    /// The head's hop-by-hop fields were left out as it was parsed (none named others).
    pub hop_by_hop_removed: bool,
    /// The head's fields as the upstream wrote them, when they were wanted so.
    pub raw_fields: Option<Box<RawFields>>,
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(
        lease: Lease,
        framing: Framing,
        upload: Option<Box<Upload<B>>>,
        keep_alive: bool,
        idle: Duration,
    ) -> ResponseBody<B> {
        let mut body = ResponseBody {
            lease: Some(lease),
            framing,
            upload,
            keep_alive,
            idle,
            idle_deadline: None,
            hop_by_hop_removed: false,
            raw_fields: None,
        };
        if body.framing == Framing::Empty {
            body.finish();
        }
        body
    }

    /// Ends the exchange: the connection goes back to its pool only if the answer was
    /// read exactly to its end, the request body was all sent, nothing unasked follows
    /// and both sides allow keep-alive. Otherwise it is closed.
    fn finish(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        let clean = self.keep_alive
            && self.upload.is_none()
            && self.framing == Framing::Empty
            && lease.connection().read_buf.is_empty();
        self.upload = None;
        if clean {
            lease.release();
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.lease = None;
        self.upload = None;
        self.framing = Framing::Empty;
        Poll::Ready(Some(Err(error)))
    }

    /// Moves a still-streaming request body along. An upstream that stopped taking it
    /// may still be answering (an early 413): its answer is read, the connection closed.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), BodyError> {
        let (Some(upload), Some(lease)) = (self.upload.as_mut(), self.lease.as_mut()) else {
            return Ok(());
        };
        match upload.poll(cx, &mut lease.connection().stream) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.upload = None;
                Ok(())
            }
            Poll::Ready(Err(UploadError::Client(err))) => Err(BodyError::Client(err.into())),
            Poll::Ready(Err(UploadError::ClientLength)) => Err(BodyError::Client(
                "request body does not match its content-length".into(),
            )),
            Poll::Ready(Err(UploadError::Upstream(_))) => {
                self.upload = None;
                self.keep_alive = false;
                Ok(())
            }
        }
    }
}

/// Takes the next piece of body out of the buffer, as the framing says.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
    Ok(match framing {
        Framing::Empty => Decoded::End,
        Framing::Length(_) | Framing::UntilClose if buf.is_empty() => Decoded::NeedMore,
        Framing::Length(remaining) => {
            let take = (*remaining).min(buf.len() as u64);
            *remaining -= take;
            if *remaining == 0 {
                *framing = Framing::Empty;
            }
            Decoded::Data(buf.split_to(take as usize).freeze())
        }
        Framing::UntilClose => Decoded::Data(buf.split().freeze()),
        Framing::Chunked(decoder) => {
            let decoded = decoder.decode(buf)?;
            if decoder.is_done() {
                *framing = Framing::Empty;
            }
            decoded
        }
    })
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Err(err) = this.poll_upload(cx) {
            return this.fail(err);
        }
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let connection = lease.connection();
            let decoded = match decode(&mut this.framing, &mut connection.read_buf) {
                Ok(decoded) => decoded,
                Err(err) => return this.fail(err.into()),
            };
            let frame = match decoded {
                Decoded::Data(data) => Frame::data(data),
                Decoded::Trailers(trailers) => Frame::trailers(trailers),
                Decoded::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {
                    let wanted = match this.framing {
                        Framing::Length(remaining) => (remaining as usize).min(BODY_READ),
                        _ => BODY_READ,
                    };
                    connection.read_buf.reserve(wanted);
                    let read = tokio_util::io::poll_read_buf(
                        Pin::new(&mut connection.stream),
                        cx,
                        &mut connection.read_buf,
                    );
                    match read {
                        // An upstream echoing an upload the client paused is not idle.
                        Poll::Pending
                            if this.upload.as_ref().is_some_and(|u| u.waiting_on_client) =>
                        {
                            this.idle_deadline = None;
                            return Poll::Pending;
                        }
                        Poll::Pending => {
                            // The clock is read only when the proxy actually has to wait.
                            let idle = this.idle;
                            let deadline = *this
                                .idle_deadline
                                .get_or_insert_with(|| Instant::now() + idle);
                            return match connection.poll_deadline(cx, deadline) {
                                Poll::Ready(()) => this.fail(BodyError::IdleTimeout(idle)),
                                Poll::Pending => Poll::Pending,
                            };
                        }
                        Poll::Ready(Ok(0)) if this.framing == Framing::UntilClose => {
                            this.framing = Framing::Empty;
                            this.keep_alive = false;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(0)) => return this.fail(BodyError::ClosedEarly),
                        Poll::Ready(Ok(_)) => {
                            this.idle_deadline = None;
                            continue;
                        }
                        Poll::Ready(Err(err)) => return this.fail(BodyError::Io(err)),
                    }
                }
            };
            if this.framing == Framing::Empty {
                this.finish();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}
