//! A client's HTTP/1 connection, served by switchyard's own codec (`http1`): heads read
//! into one reused buffer, each request handed to the request path in this task, its
//! answer written back before the next head is read (pipelined requests wait in the
//! buffer, answered in order). HTTP/2 connections go to hyper's server instead.

mod inbox;
mod respond;

pub use inbox::{ClientIo, InboundBody, InboundError};

use super::client_conn::ClientConn;
use super::proxy::{handle, DataPlane};
use super::ClientRequestBody;
use crate::http1::request_head::{BodyFraming, RequestError, RequestHead, Status};
use crate::http1::response_write::write_refusal;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use inbox::{client_closed, lock, start_body, Inbox, SharedInbox};
use respond::{respond, Answer, Responded};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// A client connection handed over after its 101: the whole stream and the bytes the
/// client sent past its request head.
pub struct UpgradedClient {
    pub io: ClientIo,
    pub read_ahead: Bytes,
}

/// Resolves once the 101 went out and the connection is the tunnel's.
pub type ClientUpgrade = oneshot::Receiver<UpgradedClient>;

/// What a connection needs besides its stream.
pub struct H1Connection {
    pub plane: Arc<DataPlane>,
    pub client: Arc<ClientConn>,
    pub client_headers: Duration,
    /// Flips when the proxy drains: an idle connection closes, a busy one after its answer.
    pub stop: watch::Receiver<bool>,
}

impl H1Connection {
    /// Serves requests until the client leaves, a head is refused, or the proxy drains.
    /// `read_ahead` holds what was read before (to tell HTTP/1 from HTTP/2); the first
    /// head must be whole by `first_deadline` (counted from accept), each later one
    /// within `client_headers` of the answer before it.
    pub async fn serve(self, io: ClientIo, read_ahead: BytesMut, first_deadline: Instant) {
        // Watched once for the connection's life: waiting on the signal anew for every
        // request would take the channel's shared lock twice a request.
        let mut stop = self.stop.clone();
        let mut stopped = std::pin::pin!(async move {
            let _ = stop.wait_for(|&stop| stop).await;
        });
        let (read, mut write) = tokio::io::split(io);
        let inbox = Inbox::new(read, read_ahead);
        let mut head = RequestHead::default();
        let mut out = Vec::with_capacity(4096);
        // One timer for the connection's life, moved on after each answer: moving a
        // deadline later is an atomic store, where a timer per head would be put into the
        // runtime's wheel and taken out again for every request.
        let mut head_deadline = std::pin::pin!(tokio::time::sleep_until(first_deadline));
        loop {
            let max = self.client.max_header_bytes;
            let read = tokio::select! {
                biased;
                read = read_head(&inbox, &mut head, max) => read,
                () = &mut head_deadline => {
                    tracing::debug!("no whole request head within client_headers");
                    return;
                }
                () = &mut stopped => return,
            };
            let head_bytes = match read {
                Ok(bytes) => bytes,
                Err(HeadRead::Refused(err)) => {
                    tracing::debug!(error = %err, "request head refused");
                    write_refusal(&mut out, err.status(), &err.to_string());
                    return close(&inbox, write, &out).await;
                }
                Err(HeadRead::Gone) => return,
            };
            let body = start_body(&inbox, head.framing);
            if head.expect_continue && head.framing != BodyFraming::Empty {
                // Asked first, answered at once (RFC 9110 10.1.1): the request path
                // reads the body as soon as it knows where it goes.
                if write
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let request = match request(&head, head_bytes, body) {
                Ok(request) => request,
                Err(err) => {
                    write_refusal(&mut out, http::StatusCode::BAD_REQUEST, err);
                    return close(&inbox, write, &out).await;
                }
            };
            let (upgraded_tx, upgrade_rx) = head.upgrade.then(oneshot::channel).unzip();
            let method = request.method().clone();
            // Pinned where it is made: the request path's future is large, and moving it
            // into the select would copy it for every request.
            let mut exchange = std::pin::pin!(handle(
                self.plane.clone(),
                self.client.clone(),
                request,
                upgrade_rx
            ));
            let (response, stamp) = tokio::select! {
                biased;
                answer = &mut exchange => answer,
                // Dropping the exchange counts the client as gone and frees its upstream.
                () = client_closed(&inbox) => {
                    tracing::debug!("client left before its answer");
                    return;
                }
            };
            // The signal flips once, from running to draining: any change is the drain (an
            // atomic read, where polling the wait above would register a waker anew).
            let draining = self.stop.has_changed().unwrap_or(true);
            let keep_alive = head.keep_alive && !draining;
            let http11 = head.version == http::Version::HTTP_11;
            let stamped = stamp.fields();
            let answer = Answer {
                method: &method,
                http11,
                keep_alive,
                stamp: stamped.as_slice(),
            };
            match respond(&mut write, &mut out, response, answer, &inbox).await {
                Responded::KeepAlive if lock(&inbox).body_done() => {}
                // A body left unread must not be read as the next request.
                Responded::KeepAlive | Responded::Close => return close(&inbox, write, &[]).await,
                Responded::Gone => return,
                Responded::Switched => {
                    if let Some(to_tunnel) = upgraded_tx {
                        hand_over(&inbox, write, to_tunnel);
                    }
                    return;
                }
            }
            head_deadline
                .as_mut()
                .reset(Instant::now() + self.client_headers);
        }
    }
}

/// How long, and how much, a client's further bytes are read and dropped after the
/// proxy closed its side: closing a socket with unread bytes resets the connection, and
/// a reset can destroy the last answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Sends `last` (a refusal, or nothing), closes the sending side, and lingers a moment
/// reading what the client still sends.
async fn close(inbox: &SharedInbox, mut write: WriteHalf<ClientIo>, last: &[u8]) {
    if write.write_all(last).await.is_err() || write.shutdown().await.is_err() {
        return;
    }
    let mut dropped = 0;
    let drain = std::future::poll_fn(|cx| loop {
        let mut inbox = lock(inbox);
        dropped += inbox.buf.len();
        inbox.buf.clear();
        if dropped > LINGER_BYTES {
            return std::task::Poll::Ready(());
        }
        match std::task::ready!(inbox.poll_fill(cx)) {
            Ok(0) | Err(_) => return std::task::Poll::Ready(()),
            Ok(_) => {}
        }
    });
    let _ = tokio::time::timeout(LINGER, drain).await;
}

enum HeadRead {
    Refused(RequestError),
    /// The client closed (or the stream failed) before a whole head.
    Gone,
}

/// Reads until a whole head is in the buffer, then takes its bytes off the front.
async fn read_head(
    inbox: &SharedInbox,
    head: &mut RequestHead,
    max: usize,
) -> Result<Bytes, HeadRead> {
    std::future::poll_fn(|cx| {
        let mut inbox = lock(inbox);
        loop {
            if !inbox.buf.is_empty() {
                match head.parse(&inbox.buf, max) {
                    Ok(Status::Complete) => {
                        let length = head.length;
                        return std::task::Poll::Ready(Ok(inbox.buf.split_to(length).freeze()));
                    }
                    Ok(Status::Partial) => {}
                    Err(err) => return std::task::Poll::Ready(Err(HeadRead::Refused(err))),
                }
            }
            match std::task::ready!(inbox.poll_fill(cx)) {
                Ok(0) | Err(_) => return std::task::Poll::Ready(Err(HeadRead::Gone)),
                Ok(_) => {}
            }
        }
    })
    .await
}

/// The request for the request path: its values share the head's bytes.
fn request(
    head: &RequestHead,
    bytes: Bytes,
    body: InboundBody,
) -> Result<Request<ClientRequestBody>, &'static str> {
    let target = head.target.range();
    let uri = Uri::from_maybe_shared(bytes.slice(target)).map_err(|_| "bad request target")?;
    // Sized for the client's fields only: the proxy's own go beside the map
    // (`Forwarding`), and the few it may still add (Host, TE) are rare.
    let mut headers = HeaderMap::with_capacity(head.fields.len());
    for field in &head.fields {
        let name =
            HeaderName::from_bytes(field.name.of_buf(&bytes)).map_err(|_| "bad header name")?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(field.value.range()))
            .map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    let mut request = Request::new(ClientRequestBody::Http1(body));
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = headers;
    Ok(request)
}

/// After a 101: the stream, whole again, and what the client sent past its head go to
/// the tunnel.
fn hand_over(
    inbox: &SharedInbox,
    write: WriteHalf<ClientIo>,
    to_tunnel: oneshot::Sender<UpgradedClient>,
) {
    let mut inbox = lock(inbox);
    let Some(read) = inbox.take_io() else {
        return;
    };
    let read_ahead = inbox.buf.split().freeze();
    let io = read.unsplit(write);
    let _ = to_tunnel.send(UpgradedClient { io, read_ahead });
}
