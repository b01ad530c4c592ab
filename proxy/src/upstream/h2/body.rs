//! A response body from an HTTP/2 upstream: its stream stays claimed until the body is
//! done or dropped, and `upstream_body_idle` bounds each wait for the next frame.

use super::StreamSlot;
use crate::upstream::h1::BodyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct H2ResponseBody {
    body: Incoming,
    _slot: StreamSlot,
    idle: Duration,
    /// Made on the first wait, then moved along: most bodies never wait.
    idle_timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl H2ResponseBody {
    pub fn new(body: Incoming, slot: StreamSlot, idle: Duration) -> H2ResponseBody {
        H2ResponseBody {
            body,
            _slot: slot,
            idle,
            idle_timer: None,
            waiting: false,
        }
    }
}

impl Body for H2ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Http2)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::IdleTimeout(this.idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
