//! One open connection to an upstream, with the buffers it keeps between exchanges.

use super::stream::UpstreamStream;
use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// Bytes read ahead of the parser; grows only for heads or chunks that need more.
const READ_BUFFER: usize = 8 * 1024;

#[derive(Debug)]
pub struct Connection {
    pub stream: UpstreamStream,
    /// Bytes read from the upstream and not yet handed on.
    pub read_buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    pub write_buf: Vec<u8>,
    /// True once the connection has carried an exchange: a reused connection the peer
    /// closed meanwhile fails differently from a new one.
    pub reused: bool,
    /// The deadline of the exchange under way, kept across exchanges: moving a timer's
    /// deadline later is one atomic store, where a new timer per request costs an
    /// allocation and a timer-wheel insert and removal.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub fn new(stream: UpstreamStream) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_BUFFER),
            write_buf: Vec::with_capacity(512),
            reused: false,
            timer: None,
        }
    }

    /// Polls a deadline of this connection (set when first polled for an exchange).
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// True when an idle connection may carry a new exchange: nothing unread is left,
    /// and the peer neither closed it nor sent anything unasked.
    pub fn is_fit(&self) -> bool {
        self.read_buf.is_empty() && self.stream.is_idle_fit()
    }
}
