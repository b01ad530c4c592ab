//! A client's request body on its way upstream. It tells apart what the client did wrong
//! (an upload abandoned, broken chunking) from what the upstream did, and keeps the
//! upstream's deadline off while the proxy waits on the client.

use super::client_idle::StallClock;
use super::watchdog::Watchdog;
use crate::telemetry::ClientFault;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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

#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    fault: Arc<FaultSlot>,
    stall: StallClock,
    /// The upstream connection's deadline and its length: off while the client is slow,
    /// started again on each piece of body the upstream takes.
    deadline: Option<(Arc<Watchdog>, Duration)>,
}

impl ClientBody {
    pub fn new(body: Incoming, fault: Arc<FaultSlot>, stall: StallClock) -> ClientBody {
        ClientBody {
            body,
            fault,
            stall,
            deadline: None,
        }
    }

    /// The upstream connection this body is about to be written to.
    pub fn watched_by(&mut self, watchdog: Arc<Watchdog>, timeout: Duration) {
        self.deadline = Some((watchdog, timeout));
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
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                self.stall.waiting();
                if let Some((watchdog, _)) = &self.deadline {
                    watchdog.disarm();
                }
            }
            Poll::Ready(Some(Err(err))) => {
                self.stall.progressing();
                self.fault.set(classify(err));
            }
            Poll::Ready(_) => {
                self.stall.progressing();
                if let Some((watchdog, timeout)) = &self.deadline {
                    watchdog.arm(*timeout);
                }
            }
        }
        polled
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
