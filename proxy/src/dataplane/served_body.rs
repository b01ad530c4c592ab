//! A response on its way to the client: while the client has data it has not taken, the
//! connection's `client_idle` clock runs; an upstream body that breaks off counts against
//! the version that sent it.

use super::access_line::AccessLine;
use super::body::ResponseBody;
use super::client_body::FaultSlot;
use super::client_idle::StallClock;
use super::deadline::{clients_deadline, DeadlineJudge};
use super::grpc;
use super::shadow::Tap;
use crate::config::grpc::{GrpcCodes, DEADLINE_EXCEEDED, UNKNOWN};
use crate::http1::raw_fields::RawFields;
use crate::telemetry::{ClientFault, Outcome, VersionStats};
use crate::upstream::h1::BodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::time::Sleep;

#[derive(Debug)]
pub struct ServedBody {
    body: ResponseBody,
    /// Set for upstream bodies only: the proxy's own short messages need no watching.
    watch: Option<Watch>,
    started: Instant,
    /// The exchange's access log line, sent when this body is done with.
    line: Option<Box<AccessLine>>,
}

/// Who is to blame when an upstream body breaks off, and the client's stall clock.
#[derive(Debug)]
pub struct Watch {
    /// HTTP/2 only: an HTTP/1 client that does not read shows on its socket.
    pub stall: Option<StallClock>,
    pub stats: Arc<VersionStats>,
    /// Set when the request had a body: if it broke, the break is the client's doing.
    pub fault: Option<Arc<FaultSlot>>,
    /// A gRPC call whose status is still to come. This and `tap` are boxed: few answers
    /// have them, and every answer is moved several times on its way out.
    pub grpc: Option<Box<GrpcCall>>,
    /// Stable's answer, wanted by a shadow copy for comparison.
    pub tap: Option<Box<Tap>>,
}

/// A gRPC call under way: its outcome is recorded when its status arrives in the
/// trailers, and its deadline (`grpc-timeout`) ends it with DEADLINE_EXCEEDED.
#[derive(Debug)]
pub struct GrpcCall {
    stats: Arc<VersionStats>,
    errors: GrpcCodes,
    started: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set when the client chose the deadline: whose fault its passing is.
    judge: Option<DeadlineJudge>,
    /// No status yet: a call dropped now was left by its client.
    open: bool,
}

impl GrpcCall {
    pub fn new(
        stats: Arc<VersionStats>,
        errors: GrpcCodes,
        started: Instant,
        judge: Option<DeadlineJudge>,
    ) -> GrpcCall {
        let deadline = judge.as_ref().map(|judge| {
            Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + judge.deadline(),
            )))
        });
        GrpcCall {
            stats,
            errors,
            started,
            deadline,
            judge,
            open: true,
        }
    }

    fn end(&mut self, code: u8) {
        if std::mem::take(&mut self.open) {
            self.stats.record_grpc_status(code);
            if code == DEADLINE_EXCEEDED && self.past_clients_deadline() {
                return;
            }
            let outcome = grpc::outcome(code, http::StatusCode::OK, self.errors);
            self.stats.record_since(outcome, self.started);
        }
    }

    /// The client's deadline has passed and the version was not slow: the client's fault.
    fn past_clients_deadline(&self) -> bool {
        clients_deadline(self.judge.as_ref(), &self.stats, self.started.elapsed())
    }

    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.open
            && self
                .deadline
                .as_mut()
                .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// Follows the answer: trailers carry the status; an answer without one ended
    /// wrongly (UNKNOWN, as the client reads it); a broken one was recorded as such.
    fn follow(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.end(grpc::status(trailers).unwrap_or(UNKNOWN));
                }
            }
            Poll::Ready(None) => self.end(UNKNOWN),
            Poll::Ready(Some(Err(_))) => self.open = false,
            Poll::Pending => {}
        }
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        if self.open {
            self.stats.record_client_fault(ClientFault::Gone);
        }
    }
}

impl ServedBody {
    pub fn new(body: ResponseBody, watch: Option<Watch>) -> Self {
        ServedBody {
            body,
            watch,
            started: Instant::now(),
            line: None,
        }
    }
}

impl ServedBody {
    /// The upstream's fields as it wrote them, when the answer carries them so.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.body.raw_fields()
    }

    /// Hands the exchange's access log line to this body, to send when it is done.
    pub fn log(&mut self, line: AccessLine) {
        self.line = Some(Box::new(line));
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        if let Some(line) = &mut self.line {
            // A body of known length may never be polled to its end.
            if self.body.is_end_stream() {
                line.body_done();
            }
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
    fn broke_off(&mut self, timed_out: bool, started: Instant) {
        if let Some(fault) = self.fault.as_ref().and_then(|slot| slot.get()) {
            self.stats.record_client_fault(fault);
            return;
        }
        // An upstream resets a call whose deadline has passed.
        if let Some(call) = &mut self.grpc {
            if call.open && call.past_clients_deadline() {
                call.open = false;
                return;
            }
        }
        let outcome = match timed_out {
            true => Outcome::Timeout,
            false => Outcome::Reset,
        };
        self.stats.record_since(outcome, started);
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
        if let Some(call) = this.watch.as_mut().and_then(|watch| watch.grpc.as_mut()) {
            if call.deadline_passed(cx) {
                call.end(DEADLINE_EXCEEDED);
                // Dropping the upstream body resets its stream: the upstream stops too.
                this.body = ResponseBody::Message(None);
                return Poll::Ready(Some(Ok(Frame::trailers(grpc::deadline_trailers()))));
            }
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(line) = &mut this.line {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => line.sent(frame.data_ref().map_or(0, Bytes::len)),
                Poll::Ready(None) => line.body_done(),
                Poll::Ready(Some(Err(err))) => line.broke(matches!(err, BodyError::IdleTimeout(_))),
                Poll::Pending => {}
            }
        }
        if let Some(watch) = &mut this.watch {
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
            if let Some(call) = &mut watch.grpc {
                call.follow(&polled);
            }
            if let Some(tap) = &mut watch.tap {
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            tap.data(data);
                        }
                        // A body of known length may never be polled to its end.
                        if this.body.is_end_stream() {
                            tap.end();
                        }
                    }
                    Poll::Ready(None) => tap.end(),
                    _ => {}
                }
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
