//! The HTTP/1.1 client codec: one exchange on a leased upstream connection, driven in the
//! request's own task (no connection task, no channel between the two).
//!
//! The head is written from a reused buffer, the answer parsed with httparse into the
//! connection's reused read buffer, and the body framed by content-length, chunked
//! coding or the close of the connection. The connection returns to its pool only when
//! an exchange ends exactly at a message boundary.

pub mod body;
pub mod request;

pub use body::{BodyError, BoxError, ResponseBody};

use crate::http1::response_head::{self, FieldsAs, HeadError, Parsed};
use crate::http1::SetField;
use crate::upstream::connect::refused_after_handshake;
use crate::upstream::connection::Connection;
use crate::upstream::pool::Lease;
use crate::upstream::stream::UpstreamStream;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body::Body;
use request::{RequestFraming, Upload, UploadError};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The request as it goes upstream: the body travels separately.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The proxy's fields, written after (and in place of) the map's of the same names.
    pub set: &'a [SetField<'a>],
    /// How the answer's fields are wanted.
    pub answer_fields: FieldsAs,
}

#[derive(Debug)]
pub enum Answer<B> {
    Response(http::response::Parts, ResponseBody<B>),
    /// 101 to an upgrade request: the connection is the tunnel's now.
    Upgraded(http::response::Parts, Upgraded),
}

#[derive(Debug)]
pub struct Upgraded {
    pub stream: UpstreamStream,
    /// Bytes the upstream sent after its 101 head, already read.
    pub read_ahead: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection closed before the answer")]
    Closed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedSwitch,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError<B> {
    /// The head could not be written: the upstream cannot have acted on the request,
    /// which comes back untouched, safe to send anywhere whatever its method.
    #[error("request not sent: {1}")]
    Unsent(B, std::io::Error),
    /// A reused connection closed before a byte of the answer (the upstream's keep-alive
    /// timeout raced this request). A bodiless request comes back; sending it again is
    /// safe when its method is idempotent (RFC 9112 9.3.1).
    #[error("pooled connection closed before answering")]
    Stale(B),
    #[error("no response head before the deadline")]
    Timeout,
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The client's request body failed: the client's fault, not the upstream's.
    #[error("client request body: {0}")]
    Client(BoxError),
}

impl<B> SendError<B> {
    /// The TLS alert the upstream sent instead of an answer, if that is what ended the
    /// exchange (with TLS 1.3 a refused client certificate shows only here).
    pub fn tls_refusal(&self) -> Option<String> {
        match self {
            SendError::Upstream(UpstreamError::Io(err)) => refused_after_handshake(err),
            _ => None,
        }
    }
}

/// How long the upstream may keep the proxy waiting. Time spent waiting on the client
/// (a slow upload) never counts.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the response head: from `started`, and again from each piece of request body
    /// the upstream takes.
    pub head: Duration,
    pub started: Instant,
    /// Between pieces of the response body.
    pub body_idle: Duration,
}

/// Sends one request on `lease` and waits for the final response head. A dropped future
/// closes the connection with the lease: nothing half-done ever returns to the pool.
pub async fn send<B>(
    mut lease: Lease,
    head: RequestHead<'_>,
    body: B,
    deadlines: Deadlines,
    upgrade: bool,
) -> Result<Answer<B>, SendError<B>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let framing = RequestFraming::of(head.headers, body.is_end_stream());
    let connection = lease.connection();
    request::write_head(&mut connection.write_buf, &head, framing);
    let written = match connection.stream.write_all(&connection.write_buf).await {
        Ok(()) => connection.stream.flush().await,
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        return Err(SendError::Unsent(body, err));
    }
    let (upload, bodiless) = match framing {
        RequestFraming::Empty => (None, Some(body)),
        framing => (Some(Box::new(Upload::new(body, framing))), None),
    };
    let mut exchange = HeadExchange {
        connection,
        method: head.method,
        answer_fields: head.answer_fields,
        upload,
        upload_broke: false,
        answered: false,
        timeout: deadlines.head,
        deadline: deadlines.started + deadlines.head,
    };
    let answer = std::future::poll_fn(|cx| exchange.poll_head(cx)).await;
    let HeadExchange {
        upload,
        upload_broke,
        answered,
        ..
    } = exchange;
    let final_head = match answer {
        Ok(final_head) => final_head,
        Err(HeadFailure::Closed) if lease.connection().reused && !answered => {
            return Err(match bodiless {
                Some(body) => SendError::Stale(body),
                None => SendError::Upstream(UpstreamError::Closed),
            })
        }
        Err(HeadFailure::Closed) => return Err(SendError::Upstream(UpstreamError::Closed)),
        Err(HeadFailure::Io(err)) => return Err(SendError::Upstream(UpstreamError::Io(err))),
        Err(HeadFailure::Head(err)) => return Err(SendError::Upstream(err.into())),
        Err(HeadFailure::Timeout) => return Err(SendError::Timeout),
        Err(HeadFailure::Client(err)) => return Err(SendError::Client(err)),
    };
    if final_head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(SendError::Upstream(UpstreamError::UnaskedSwitch));
        }
        let Connection {
            stream,
            mut read_buf,
            ..
        } = *lease.detach();
        let read_ahead = read_buf.split().freeze();
        return Ok(Answer::Upgraded(
            final_head.parts,
            Upgraded { stream, read_ahead },
        ));
    }
    let keep_alive = final_head.keep_alive && !upload_broke;
    let mut body = ResponseBody::new(
        lease,
        final_head.framing,
        upload,
        keep_alive,
        deadlines.body_idle,
    );
    body.hop_by_hop_removed = final_head.hop_by_hop_removed;
    body.raw_fields = final_head.raw;
    Ok(Answer::Response(final_head.parts, body))
}

enum HeadFailure {
    Closed,
    Io(std::io::Error),
    Head(HeadError),
    Timeout,
    Client(BoxError),
}

/// Waiting for the response head while the request body, if any, keeps streaming.
struct HeadExchange<'a, B> {
    connection: &'a mut Connection,
    method: &'a Method,
    answer_fields: FieldsAs,
    upload: Option<Box<Upload<B>>>,
    /// The upstream stopped taking the body: whatever it answers, the connection closes.
    upload_broke: bool,
    /// Some bytes of an answer arrived (a 1xx counts).
    answered: bool,
    timeout: Duration,
    deadline: Instant,
}

impl<B> HeadExchange<'_, B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<response_head::Head, HeadFailure>> {
        if let Some(upload) = self.upload.as_mut() {
            let polled = upload.poll(cx, &mut self.connection.stream);
            if upload.took_some() {
                // The upstream is taking the body: its clock starts again.
                self.deadline = Instant::now() + self.timeout;
            }
            match polled {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(UploadError::Client(err))) => {
                    return Poll::Ready(Err(HeadFailure::Client(err.into())))
                }
                Poll::Ready(Err(UploadError::ClientLength)) => {
                    return Poll::Ready(Err(HeadFailure::Client(
                        "request body does not match its content-length".into(),
                    )))
                }
                Poll::Ready(Err(UploadError::Upstream(_))) => {
                    self.upload = None;
                    self.upload_broke = true;
                }
            }
        }
        loop {
            let buf = &mut self.connection.read_buf;
            // Most answers come whole in one read: nothing to parse before the first.
            if !buf.is_empty() {
                match response_head::parse(buf, self.method, self.answer_fields) {
                    Ok(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                    Ok(Parsed::Interim) => continue,
                    Ok(Parsed::Partial) => {}
                    Err(err) => return Poll::Ready(Err(HeadFailure::Head(err))),
                }
            }
            crate::http1::make_room(buf);
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut self.connection.stream), cx, buf);
            match read {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(HeadFailure::Closed)),
                Poll::Ready(Ok(_)) => self.answered = true,
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(Err(match err.kind() {
                        std::io::ErrorKind::ConnectionReset if !self.answered => {
                            HeadFailure::Closed
                        }
                        _ => HeadFailure::Io(err),
                    }))
                }
                Poll::Pending if self.upload.as_ref().is_some_and(|u| u.waiting_on_client) => {
                    return Poll::Pending
                }
                Poll::Pending => {
                    return match self.connection.poll_deadline(cx, self.deadline) {
                        Poll::Ready(()) => Poll::Ready(Err(HeadFailure::Timeout)),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}
