//! One answer written to the client: the head from the response's parts, then the body
//! as it comes, with what is ready at once gathered so a short answer leaves in one write.

use super::inbox::{client_closed, SharedInbox};
use super::ClientIo;
use crate::dataplane::served_body::ServedBody;
use crate::http1::chunked::{write_chunk_start, write_last_chunk};
use crate::http1::response_write::{write_head, Persistence, ResponseFields, ResponseFraming};
use crate::http1::SetField;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::Body;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncWriteExt, WriteHalf};

/// Pieces at least this large are written from where they are, not copied into `out`.
const WRITE_DIRECT: usize = 16 * 1024;
/// `out` is written once it holds this much.
const GATHER_MAX: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Responded {
    /// Answered whole; the connection may carry the next request.
    KeepAlive,
    /// Answered (or cut off) and the connection must close.
    Close,
    /// The client's side failed while writing.
    Gone,
    /// A 101 went out: the connection is the tunnel's.
    Switched,
}

/// What the answer depends on of the request.
pub struct Answer<'a> {
    pub method: &'a Method,
    pub http11: bool,
    /// Both sides may keep the connection for another request.
    pub keep_alive: bool,
    /// The fields the proxy stamps on the answer.
    pub stamp: &'a [SetField<'a>],
}

/// Writes `response`; `inbox` is watched for the client leaving while the body waits.
pub async fn respond(
    write: &mut WriteHalf<ClientIo>,
    out: &mut Vec<u8>,
    response: Response<ServedBody>,
    answer: Answer<'_>,
    inbox: &SharedInbox,
) -> Responded {
    let Answer {
        method,
        http11,
        keep_alive,
        stamp,
    } = answer;
    let (parts, body) = response.into_parts();
    let exact = body.size_hint().exact();
    let framing = ResponseFraming::choose(method, parts.status, &parts.headers, exact, http11);
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let keep = keep_alive && framing != ResponseFraming::UntilClose;
    let persistence = match (switching, keep, http11) {
        (true, ..) | (false, true, true) => Persistence::KeepAlive,
        (false, true, false) => Persistence::KeepAliveHttp10,
        (false, false, _) => Persistence::Close,
    };
    let fields = ResponseFields {
        map: &parts.headers,
        raw: body.raw_fields(),
        set: stamp,
    };
    write_head(out, parts.status, fields, framing, persistence);
    let ending = match framing {
        _ if switching => Responded::Switched,
        _ if !keep => Responded::Close,
        _ => Responded::KeepAlive,
    };
    if framing == ResponseFraming::Empty {
        // No body goes out; the request path has already counted it as sent.
        drop(body);
        return match flush(write, out).await {
            Ok(()) => ending,
            Err(_) => Responded::Gone,
        };
    }
    match write_body(write, out, body, framing, inbox).await {
        Ok(true) => ending,
        Ok(false) => Responded::Close,
        Err(_) => Responded::Gone,
    }
}

/// Streams the body in `framing`: `Ok(false)` when it broke off or did not match its
/// length, so the connection must close (the client sees a body cut short).
async fn write_body(
    write: &mut WriteHalf<ClientIo>,
    out: &mut Vec<u8>,
    mut body: ServedBody,
    framing: ResponseFraming,
    inbox: &SharedInbox,
) -> std::io::Result<bool> {
    let chunked = framing == ResponseFraming::Chunked;
    let mut remaining = match framing {
        ResponseFraming::Length(length) => Some(length),
        _ => None,
    };
    let mut ended = false;
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more at once: what is gathered goes now, then wait.
                flush(write, out).await?;
                let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
                tokio::select! {
                    biased;
                    frame = next => frame,
                    () = client_closed(inbox) => {
                        return Err(std::io::ErrorKind::ConnectionAborted.into())
                    }
                }
            }
        };
        let frame = match frame {
            None => {
                if chunked && !ended {
                    write_last_chunk(out, None);
                }
                flush(write, out).await?;
                return Ok(remaining.is_none_or(|left| left == 0));
            }
            Some(Err(_)) => {
                flush(write, out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                // Trailers travel only in chunked coding; elsewhere they are dropped.
                if let (true, Ok(trailers)) = (chunked && !ended, frame.into_trailers()) {
                    write_last_chunk(out, Some(&trailers));
                    ended = true;
                }
                continue;
            }
        };
        if data.is_empty() || ended {
            continue;
        }
        let data = match &mut remaining {
            Some(left) if data.len() as u64 > *left => {
                // More than the stated length: what fits goes, then the connection closes.
                let fits = data.slice(..*left as usize);
                put(write, out, fits, false).await?;
                flush(write, out).await?;
                return Ok(false);
            }
            Some(left) => {
                *left -= data.len() as u64;
                data
            }
            None => data,
        };
        put(write, out, data, chunked).await?;
    }
}

/// Adds a piece of body to `out`, or writes it from where it is when it is large.
async fn put(
    write: &mut WriteHalf<ClientIo>,
    out: &mut Vec<u8>,
    data: Bytes,
    chunked: bool,
) -> std::io::Result<()> {
    if chunked {
        write_chunk_start(out, data.len());
    }
    if data.len() >= WRITE_DIRECT {
        write.write_all(out).await?;
        out.clear();
        write.write_all(&data).await?;
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    if out.len() >= GATHER_MAX {
        write.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

async fn flush(write: &mut WriteHalf<ClientIo>, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        write.write_all(out).await?;
        out.clear();
    }
    write.flush().await
}
