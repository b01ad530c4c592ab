//! One HTTP/2 connection to an upstream, shared by many requests: hyper's client drives
//! it in a task of its own (HTTP/2 multiplexes, so no one request can own it), and a
//! count of open streams keeps it within the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.

use super::H2Body;
use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Set in `streams` once the connection takes no new stream (idle-closed or ended).
const CLOSED: u32 = 1 << 31;
/// Streams assumed allowed before a peer's first SETTINGS arrive, when no other
/// connection to it told its limit (RFC 9113 suggests at least 100).
pub const DEFAULT_MAX_STREAMS: u32 = 100;

#[derive(Debug)]
pub struct H2Connection {
    /// Dropped when the connection task ends: a request that raced into hyper's queue as
    /// its dispatcher stopped is only handed back (unsent) once no sender is left.
    sender: ArcSwapOption<SendRequest<H2Body>>,
    /// Streams open on the connection, plus `CLOSED` once it takes no more.
    streams: AtomicU32,
    /// The peer's current limit, refreshed by the connection task.
    max_streams: AtomicU32,
    /// Streams ever opened: the connection task tells an idle connection by it.
    opened: AtomicU64,
}

/// A request's claim on one stream of a connection, held until its response is done.
#[derive(Debug)]
pub struct StreamSlot {
    connection: Arc<H2Connection>,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendFailure {
    /// The connection was closing (GOAWAY, or closed) before the request went out: it
    /// may go on another connection as it is.
    Unsent(Box<Request<H2Body>>),
    /// The upstream refused the stream unprocessed (a graceful GOAWAY whose
    /// `last_stream_id` is below it, or REFUSED_STREAM): it may be sent again, on
    /// another connection (RFC 9113 §8.7).
    Refused(hyper::Error),
    Failed(hyper::Error),
}

impl H2Connection {
    /// Runs the HTTP/2 handshake on `io` and starts the connection's task; an idle
    /// connection closes after `idle_timeout` without a stream. Until the peer's SETTINGS
    /// arrive, it is assumed to allow `max_streams` (hyper queues any excess).
    pub async fn open<IO>(
        io: IO,
        idle_timeout: Duration,
        max_streams: u32,
    ) -> Result<Arc<H2Connection>, hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = http2::Builder::new(TokioExecutor::new())
            .initial_max_send_streams(max_streams as usize)
            .handshake(TokioIo::new(io))
            .await?;
        let shared = Arc::new(H2Connection {
            sender: ArcSwapOption::from_pointee(sender),
            streams: AtomicU32::new(0),
            max_streams: AtomicU32::new(max_streams),
            opened: AtomicU64::new(0),
        });
        let state = shared.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + idle_timeout;
            let mut idle_check = tokio::time::interval_at(start, idle_timeout);
            let mut opened_at_last_check = 0;
            let ended = poll_fn(|cx| {
                let polled = Pin::new(&mut connection).poll(cx);
                let max = connection
                    .current_max_send_streams()
                    .min(CLOSED as usize - 1);
                state.max_streams.store(max as u32, Ordering::Relaxed);
                if let Poll::Ready(result) = polled {
                    return Poll::Ready(result);
                }
                while idle_check.poll_tick(cx).is_ready() {
                    let opened = state.opened.load(Ordering::Relaxed);
                    let unused = opened == opened_at_last_check;
                    opened_at_last_check = opened;
                    if unused && state.close_if_idle() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending
            })
            .await;
            state.streams.fetch_or(CLOSED, Ordering::Relaxed);
            state.sender.store(None);
            if let Err(err) = ended {
                tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
            }
        });
        Ok(shared)
    }

    /// A stream on this connection, if it is open and below the peer's limit.
    pub fn try_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        if self.sender_closed() {
            return None;
        }
        let max = self.max_streams.load(Ordering::Relaxed);
        let mut streams = self.streams.load(Ordering::Relaxed);
        loop {
            if streams & CLOSED != 0 || streams >= max {
                return None;
            }
            match self.streams.compare_exchange_weak(
                streams,
                streams + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => streams = now,
            }
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot {
            connection: self.clone(),
        })
    }

    /// True once the connection takes no new stream.
    pub fn is_closed(&self) -> bool {
        self.streams.load(Ordering::Relaxed) & CLOSED != 0 || self.sender_closed()
    }

    fn sender_closed(&self) -> bool {
        self.sender
            .load()
            .as_ref()
            .is_none_or(|sender| sender.is_closed())
    }

    /// Marks an idle connection closed; fails when a stream was opened meanwhile.
    fn close_if_idle(&self) -> bool {
        self.streams
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The peer's stream limit as last seen.
    pub fn max_streams(&self) -> u32 {
        self.max_streams.load(Ordering::Relaxed)
    }
}

impl StreamSlot {
    /// Sends the request on this slot's connection. The future may be dropped at any
    /// point: hyper then resets the stream, and the connection carries on.
    pub async fn send(&self, request: Request<H2Body>) -> Result<Response<Incoming>, SendFailure> {
        // No sender is held while waiting: see `H2Connection::sender`.
        let sent = match self.connection.sender.load_full() {
            Some(sender) => SendRequest::clone(&sender).try_send_request(request),
            None => {
                self.connection.streams.fetch_or(CLOSED, Ordering::Relaxed);
                return Err(SendFailure::Unsent(Box::new(request)));
            }
        };
        sent.await.map_err(|mut err| {
            match err.take_message() {
                Some(request) => {
                    // Closing: no other request should try this connection again.
                    self.connection.streams.fetch_or(CLOSED, Ordering::Relaxed);
                    SendFailure::Unsent(Box::new(request))
                }
                None => {
                    let err = err.into_error();
                    match refusal(&err) {
                        Some(Refusal::GoAway) => {
                            self.connection.streams.fetch_or(CLOSED, Ordering::Relaxed);
                            SendFailure::Refused(err)
                        }
                        Some(Refusal::Stream) => SendFailure::Refused(err),
                        None => SendFailure::Failed(err),
                    }
                }
            }
        })
    }
}

enum Refusal {
    /// Above a graceful GOAWAY's `last_stream_id`: the connection takes nothing more.
    GoAway,
    /// RST_STREAM with REFUSED_STREAM.
    Stream,
}

/// How the upstream refused a stream it never processed, if it did. h2 gives a stream
/// above a GOAWAY's `last_stream_id` that GOAWAY's error; streams the peer cut off by
/// closing get a broken pipe instead, so only refused ones match.
///
/// hyper's connection task ends as soon as a graceful GOAWAY arrives; a request it had
/// opened but still held back (the connection at its stream limit: "pending open", never
/// written) loses its callback then, and comes back as "dispatch task is gone". Such a
/// stream was never sent, so it is refused like one above `last_stream_id`. (hyper offers
/// no predicate for this kind; its text is the one mark.)
fn refusal(err: &hyper::Error) -> Option<Refusal> {
    if err.is_user() && err.to_string().starts_with("dispatch task is gone") {
        return Some(Refusal::GoAway);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            let reason = h2.reason();
            return match () {
                _ if !h2.is_remote() => None,
                _ if h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR) => {
                    Some(Refusal::GoAway)
                }
                _ if h2.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM) => {
                    Some(Refusal::Stream)
                }
                _ => None,
            };
        }
        source = cause.source();
    }
    None
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.connection.streams.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;

    /// Pins the one mark hyper gives a stream it held back ("pending open") when a
    /// graceful GOAWAY ended its connection: if a hyper upgrade changes it, this fails
    /// rather than the proxy blaming a version for requests it never sent.
    #[tokio::test]
    async fn a_stream_held_back_when_a_graceful_goaway_arrives_is_a_refusal() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::Builder::new()
                .max_concurrent_streams(1)
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            let (_, mut respond) = connection.accept().await.unwrap().unwrap();
            connection.graceful_shutdown();
            // The stream it took is answered; the connection then closes.
            let answer = http::Response::new(());
            respond.send_response(answer, true).unwrap();
            while connection.accept().await.is_some() {}
        });
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .initial_max_send_streams(1)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(client_io))
            .await
            .unwrap();
        let request = || Request::get("http://upstream/").body(Empty::new()).unwrap();
        // Both queued before the connection task runs: the first opens the one stream
        // allowed, the second waits as h2's pending open.
        let first = sender.send_request(request());
        let held_back = sender.send_request(request());
        tokio::spawn(connection);
        let err = tokio::time::timeout(Duration::from_secs(30), held_back)
            .await
            .expect("the held-back stream never ended")
            .expect_err("the held-back stream was answered");
        assert!(
            matches!(refusal(&err), Some(Refusal::GoAway)),
            "hyper's error for a held-back stream changed: {err:?}"
        );
        assert!(first.await.is_ok(), "the stream taken is answered");
        server.abort();
    }
}
