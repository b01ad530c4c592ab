//! A client's request body on its way upstream. It tells apart what the client did wrong
//! (an upload abandoned, broken chunking) from what the upstream did. (The upstream's
//! deadlines stay off while the proxy waits on the client: the codec sees that itself.)

use super::client_idle::StallClock;
use super::h1::{InboundBody, InboundError};
use crate::telemetry::ClientFault;
use crate::upstream::h1::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Where the request path learns that the client's body failed.
#[derive(Debug)]
pub struct FaultSlot(AtomicU8);

const NO_FAULT: u8 = u8::MAX;

impl FaultSlot {
    pub fn new() -> Arc<FaultSlot> {
        Arc::new(FaultSlot(AtomicU8::new(NO_FAULT)))
    }

    pub fn get(&self) -> Option<ClientFault> {
        let index = self.0.load(Ordering::Relaxed) as usize;
        ClientFault::ALL.get(index).copied()
    }

    fn set(&self, fault: ClientFault) {
        self.0.store(fault.index() as u8, Ordering::Relaxed);
    }
}

/// A body error and whose fault it is.
type BlamedError = (ClientFault, BoxError);

/// A client's request body as its connection delivers it.
#[derive(Debug)]
pub enum ClientRequestBody {
    /// Read by switchyard's own HTTP/1 server side.
    Http1(InboundBody),
    /// An HTTP/2 stream's, from hyper's server. Boxed: it is ten times the size of the
    /// HTTP/1 body, and every request is moved several times on its way.
    Http2(Box<Incoming>),
}

impl ClientRequestBody {
    /// Polls for the next frame; a failure comes with whose fault it is.
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BlamedError>>> {
        match self {
            ClientRequestBody::Http1(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| (classify_http1(&err), err.into())),
            ClientRequestBody::Http2(body) => Pin::new(&mut **body)
                .poll_frame(cx)
                .map_err(|err| (classify(&err), err.into())),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        match self {
            ClientRequestBody::Http1(body) => body.is_end_stream(),
            ClientRequestBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientRequestBody::Http1(body) => body.size_hint(),
            ClientRequestBody::Http2(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
pub struct ClientBody {
    body: ClientRequestBody,
    fault: Arc<FaultSlot>,
    stall: StallClock,
    /// A copy of what passes, for a shadow copy of the request.
    copy: Option<BodyCopy>,
}

/// The body as it passes, up to a bound, handed over whole when it has all passed: `None`
/// when it outgrew the bound; nothing (the sender dropped) when it broke off.
#[derive(Debug)]
struct BodyCopy {
    kept: BytesMut,
    max: usize,
    overflowed: bool,
    to: oneshot::Sender<Option<Bytes>>,
}

impl ClientBody {
    pub fn new(body: ClientRequestBody, fault: Arc<FaultSlot>, stall: StallClock) -> ClientBody {
        ClientBody {
            body,
            fault,
            stall,
            copy: None,
        }
    }

    /// From now on, what passes is copied (up to `max` bytes) for the receiver.
    pub fn copy_to(&mut self, max: usize) -> oneshot::Receiver<Option<Bytes>> {
        let (to, from) = oneshot::channel();
        self.copy = Some(BodyCopy {
            kept: BytesMut::new(),
            max,
            overflowed: false,
            to,
        });
        from
    }

    pub fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.body.poll_frame(cx);
        match &polled {
            Poll::Pending => self.stall.waiting(),
            Poll::Ready(Some(Err((fault, _)))) => {
                self.stall.progressing();
                self.fault.set(*fault);
                self.copy = None;
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.stall.progressing();
                if let (Some(copy), Some(data)) = (&mut self.copy, frame.data_ref()) {
                    copy.keep(data);
                }
                // A body of known length may never be polled to its end.
                if self.body.is_end_stream() {
                    self.finish_copy();
                }
            }
            Poll::Ready(None) => {
                self.stall.progressing();
                self.finish_copy();
            }
        }
        polled.map_err(|(_, err)| err)
    }

    fn finish_copy(&mut self) {
        if let Some(copy) = self.copy.take() {
            let whole = (!copy.overflowed).then(|| copy.kept.freeze());
            let _ = copy.to.send(whole);
        }
    }
}

impl BodyCopy {
    fn keep(&mut self, data: &Bytes) {
        if self.kept.len() + data.len() > self.max {
            self.overflowed = true;
            self.kept = BytesMut::new();
        } else if !self.overflowed {
            self.kept.extend_from_slice(data);
        }
    }
}

/// Broken chunking is malformed; a closed or failed connection is abandoned.
fn classify_http1(err: &InboundError) -> ClientFault {
    match err {
        InboundError::Malformed(_) => ClientFault::MalformedBody,
        InboundError::Closed | InboundError::Io(_) => ClientFault::AbandonedBody,
    }
}

/// Broken framing is malformed; anything else (closed, reset, cut short) is abandoned.
fn classify(err: &hyper::Error) -> ClientFault {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return ClientFault::MalformedBody;
            }
        }
        source = cause.source();
    }
    if err.is_parse() {
        return ClientFault::MalformedBody;
    }
    ClientFault::AbandonedBody
}
