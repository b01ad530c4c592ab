//! The read side of a client's HTTP/1 connection: its half of the stream and the bytes
//! read ahead of what was parsed, shared by the connection (heads) and the request body
//! on its way upstream (the body is polled from the request path, in the same task).

use crate::http1::chunked::{ChunkError, ChunkedDecoder, Decoded};
use crate::http1::request_head::BodyFraming;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};

/// A client's stream, TLS or not, behind one type.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}
pub type ClientIo = Box<dyn ClientStream>;

/// How much of what follows a request is read while its answer is awaited.
const LOOK_AHEAD: usize = 64 * 1024;
/// The most body bytes handed up in one frame: a large read is split, never copied.
const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Read to its end (or there was none): the next request's head is next.
    Done,
    /// Broken off: the connection cannot carry another request.
    Broken,
}

pub struct Inbox {
    io: Option<ReadHalf<ClientIo>>,
    pub buf: BytesMut,
    body: BodyState,
    /// Which request's body `body` is: a body handle kept past its exchange reads nothing
    /// of the next one's.
    request: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("malformed chunked body: {0}")]
    Malformed(ChunkError),
    #[error("client closed the connection mid-body")]
    Closed,
    #[error("reading the client's body: {0}")]
    Io(std::io::Error),
}

pub type SharedInbox = Arc<Mutex<Inbox>>;

pub fn lock(inbox: &SharedInbox) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inbox {
    pub fn new(io: ReadHalf<ClientIo>, read_ahead: BytesMut) -> SharedInbox {
        Arc::new(Mutex::new(Inbox {
            io: Some(io),
            buf: read_ahead,
            body: BodyState::Done,
            request: 0,
        }))
    }

    /// Reads more into the buffer: `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        crate::http1::make_room(&mut self.buf);
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// The last request's body was read to its end: the buffer starts the next head.
    pub fn body_done(&self) -> bool {
        self.body == BodyState::Done
    }

    /// Resolves when the client closes its side while nothing of its request is left to
    /// read (so the read cannot take a body's bytes): it left before its answer. Bytes
    /// that arrive meanwhile (a pipelined request) stay in the buffer, up to a bound.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.body == BodyState::Done && self.buf.len() < LOOK_AHEAD {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// The read half, for the connection to become a tunnel.
    pub fn take_io(&mut self) -> Option<ReadHalf<ClientIo>> {
        self.io.take()
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        loop {
            match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Broken => return Poll::Ready(Some(Err(InboundError::Closed))),
                BodyState::Length(remaining) if !self.buf.is_empty() => {
                    let take = (*remaining).min(self.buf.len().min(MAX_FRAME) as u64);
                    *remaining -= take;
                    if *remaining == 0 {
                        self.body = BodyState::Done;
                    }
                    let data = self.buf.split_to(take as usize).freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Length(_) => {}
                BodyState::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Ok(Decoded::End) => {
                        self.body = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(err) => {
                        self.body = BodyState::Broken;
                        return Poll::Ready(Some(Err(InboundError::Malformed(err))));
                    }
                },
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    self.body = BodyState::Broken;
                    return Poll::Ready(Some(Err(InboundError::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    self.body = BodyState::Broken;
                    return Poll::Ready(Some(Err(InboundError::Io(err))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Resolves when the client left while its answer is awaited (see `Inbox::poll_closed`).
/// While a body is still to be read, it waits: the body's reader will see the close.
pub async fn client_closed(inbox: &SharedInbox) {
    std::future::poll_fn(|cx| lock(inbox).poll_closed(cx)).await
}

/// The body of the request whose head was just taken off the buffer starts now.
pub fn start_body(inbox: &SharedInbox, framing: BodyFraming) -> InboundBody {
    let mut locked = lock(inbox);
    locked.request += 1;
    locked.body = match framing {
        BodyFraming::Empty => BodyState::Done,
        BodyFraming::Length(length) => BodyState::Length(length),
        BodyFraming::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
    };
    InboundBody {
        inbox: inbox.clone(),
        request: locked.request,
    }
}

/// A request body read from the client's connection as it is polled.
pub struct InboundBody {
    inbox: SharedInbox,
    request: u64,
}

impl std::fmt::Debug for InboundBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboundBody")
    }
}

impl InboundBody {
    /// The inbox, if this body is still the current request's.
    fn current(&self) -> Option<MutexGuard<'_, Inbox>> {
        let inbox = lock(&self.inbox);
        (inbox.request == self.request).then_some(inbox)
    }
}

impl Body for InboundBody {
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        match self.current() {
            Some(mut inbox) => inbox.poll_body(cx),
            None => Poll::Ready(Some(Err(InboundError::Closed))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.current()
            .is_none_or(|inbox| inbox.body == BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.current().map(|inbox| inbox.body) {
            Some(BodyState::Length(length)) => SizeHint::with_exact(length),
            Some(BodyState::Done) | None => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
