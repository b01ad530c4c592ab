//! A response on its way to the client: while the client has data it has not taken, the
//! connection's `client_idle` clock runs; an upstream body that breaks off counts against
//! the version that sent it.

use super::body::ResponseBody;
use super::client_body::FaultSlot;
use super::client_idle::StallClock;
use crate::telemetry::{Outcome, VersionStats};
use crate::upstream::h1::BodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Debug)]
pub struct ServedBody {
    body: ResponseBody,
    /// Set for upstream bodies only: the proxy's own short messages need no watching.
    watch: Option<Watch>,
    started: Instant,
}

/// Who is to blame when an upstream body breaks off, and the client's stall clock.
#[derive(Debug)]
pub struct Watch {
    /// HTTP/2 only: an HTTP/1 client that does not read shows on its socket.
    pub stall: Option<StallClock>,
    pub stats: Arc<VersionStats>,
    /// Set when the request had a body: if it broke, the break is the client's doing.
    pub fault: Option<Arc<FaultSlot>>,
}

impl ServedBody {
    pub fn new(body: ResponseBody, watch: Option<Watch>) -> Self {
        ServedBody {
            body,
            watch,
            started: Instant::now(),
        }
    }
}

impl ServedBody {
    /// A response of the proxy's own, or one nobody needs to watch.
    pub fn plain(response: http::Response<ResponseBody>) -> http::Response<ServedBody> {
        response.map(|body| ServedBody::new(body, None))
    }
}

impl Watch {
    fn broke_off(&self, timed_out: bool, started: Instant) {
        if let Some(fault) = self.fault.as_ref().and_then(|slot| slot.get()) {
            self.stats.record_client_fault(fault);
            return;
        }
        let outcome = match timed_out {
            true => Outcome::Timeout,
            false => Outcome::Reset,
        };
        self.stats
            .record(outcome, started.elapsed(), Instant::now());
    }
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(watch) = &this.watch {
            if let Some(stall) = &watch.stall {
                match &polled {
                    // The client has data it has not taken.
                    Poll::Ready(Some(Ok(_))) => stall.waiting(),
                    // It took it all, or the wait is the upstream's.
                    _ => stall.progressing(),
                }
            }
            if let Poll::Ready(Some(Err(err))) = &polled {
                let timed_out = matches!(err, BodyError::IdleTimeout(_));
                watch.broke_off(timed_out, this.started);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
