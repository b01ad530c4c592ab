//! Body types of the proxy: streamed through frame by frame, never collected.

use super::client_body::ClientBody;
use super::endpoint::{Endpoint, InFlight};
use super::pool::Sender;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What is sent upstream: the client's body as it arrives, or nothing (a retry of a
/// bodiless request).
#[derive(Debug)]
pub enum UpstreamRequestBody {
    Client(ClientBody),
    Empty,
}

impl Body for UpstreamRequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamRequestBody::Client(body) => body.poll_frame(cx),
            UpstreamRequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamRequestBody::Client(body) => body.is_end_stream(),
            UpstreamRequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamRequestBody::Client(body) => body.size_hint(),
            UpstreamRequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// What is sent to the client: an upstream body, or a short message of the proxy's own.
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(UpstreamResponse),
    Message(Option<Bytes>),
}

impl ResponseBody {
    /// True when the upstream's body stopped for `upstream_body_idle` and was cut off.
    pub fn upstream_timed_out(&self) -> bool {
        matches!(self, ResponseBody::Upstream(upstream) if upstream.timed_out)
    }

    pub fn message(text: &'static str) -> ResponseBody {
        ResponseBody::Message(Some(Bytes::from_static(text.as_bytes())))
    }

    pub fn owned(text: String) -> ResponseBody {
        ResponseBody::Message(Some(Bytes::from(text)))
    }
}

/// An upstream response body that hands its connection back to the pool when read to the end.
#[derive(Debug)]
pub struct UpstreamResponse {
    body: Incoming,
    connection: Option<(Sender, Arc<Endpoint>)>,
    _in_flight: InFlight,
    /// `upstream_body_idle`: the longest wait for the next body bytes.
    body_idle: Duration,
    timed_out: bool,
}

impl UpstreamResponse {
    pub fn new(
        body: Incoming,
        sender: Option<Sender>,
        endpoint: Arc<Endpoint>,
        in_flight: InFlight,
        body_idle: Duration,
    ) -> Self {
        UpstreamResponse {
            body,
            connection: sender.map(|s| (s, endpoint)),
            _in_flight: in_flight,
            body_idle,
            timed_out: false,
        }
    }

    /// Runs the connection's deadline while the proxy waits on the upstream's body, and
    /// stops it when bytes come. Done before the connection can go back to the pool.
    fn watch_idle<T>(&mut self, polled: &Poll<Option<Result<T, hyper::Error>>>) {
        if let Some((sender, _)) = &self.connection {
            match polled {
                Poll::Pending => sender.watchdog.arm(self.body_idle),
                Poll::Ready(Some(Err(_))) => self.timed_out = sender.watchdog.expired(),
                Poll::Ready(_) => sender.watchdog.disarm(),
            }
        }
    }

    fn finish(&mut self) {
        if let Some((sender, endpoint)) = self.connection.take() {
            endpoint.pool.give_back(sender);
        }
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, Content-Length: 0) may never be polled at all.
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Message(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(upstream) => {
                let polled = Pin::new(&mut upstream.body).poll_frame(cx);
                upstream.watch_idle(&polled);
                match &polled {
                    Poll::Ready(None) => upstream.finish(),
                    Poll::Ready(Some(Ok(_))) if upstream.body.is_end_stream() => upstream.finish(),
                    // A broken body means a broken connection: it is not returned.
                    Poll::Ready(Some(Err(_))) => upstream.connection = None,
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Message(bytes) => bytes.is_none(),
            ResponseBody::Upstream(upstream) => upstream.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Message(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Message(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream(upstream) => upstream.body.size_hint(),
        }
    }
}
