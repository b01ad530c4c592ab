//! One open connection to an upstream, with the buffers it keeps between exchanges.

use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Bytes read ahead of the parser; grows only for heads or chunks that need more.
const READ_BUFFER: usize = 8 * 1024;

#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
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
    pub fn new(stream: TcpStream) -> Connection {
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

    /// True when an idle connection may carry a new exchange: the peer neither closed it
    /// nor sent anything unasked. Costs no system call unless the socket turned readable
    /// while idle (the runtime clears readiness when a read drains the socket).
    pub fn is_fit(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}
