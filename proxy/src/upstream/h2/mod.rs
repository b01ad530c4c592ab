//! HTTP/2 to upstreams: per endpoint, a few connections that each carry many requests at
//! once. A request takes a stream on the first connection below the peer's stream limit;
//! only when all are full (or closing after a GOAWAY) is another connection opened.
//!
//! Finding a stream is lock-free (one snapshot load and a compare-and-swap on the
//! connection's stream count); opening a connection is serialized per endpoint, so a
//! burst of requests opens one connection, not one each.

mod body;
mod connection;

pub use body::H2ResponseBody;
pub use connection::{H2Connection, SendFailure, StreamSlot, DEFAULT_MAX_STREAMS};

use super::connect::ConnectError;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A request body as hyper's HTTP/2 client takes it: one type for every kind of body.
pub type H2Body = http_body_util::combinators::UnsyncBoxBody<Bytes, crate::upstream::h1::BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum H2ConnectError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("the upstream closed the new HTTP/2 connection at once")]
    ClosedAtOnce,
}

#[derive(Debug)]
pub struct H2Pool {
    connections: ArcSwap<Vec<Arc<H2Connection>>>,
    /// Held while a connection is opened.
    opening: tokio::sync::Mutex<()>,
    idle_timeout: Duration,
}

impl H2Pool {
    pub fn new(idle_timeout: Duration) -> H2Pool {
        H2Pool {
            connections: ArcSwap::from_pointee(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            idle_timeout,
        }
    }

    /// A stream on an open connection, or on a new one made from `connect`'s stream (in
    /// clear or TLS: anything that reads and writes).
    pub async fn stream<IO, F>(
        &self,
        connect: impl FnOnce() -> F,
    ) -> Result<StreamSlot, H2ConnectError>
    where
        F: Future<Output = Result<IO, ConnectError>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(slot) = self.try_stream() {
            return Ok(slot);
        }
        let _opening = self.opening.lock().await;
        // Another request may have opened one while this one waited.
        if let Some(slot) = self.try_stream() {
            return Ok(slot);
        }
        // The same peer: a new connection starts from the limit the others learned.
        let max_streams = self
            .connections
            .load()
            .iter()
            .map(|connection| connection.max_streams())
            .max()
            .unwrap_or(DEFAULT_MAX_STREAMS);
        let io = connect().await?;
        let connection = H2Connection::open(io, self.idle_timeout, max_streams)
            .await
            .map_err(H2ConnectError::Handshake)?;
        let slot = connection.try_stream();
        let mut connections: Vec<Arc<H2Connection>> = self
            .connections
            .load()
            .iter()
            .filter(|connection| !connection.is_closed())
            .cloned()
            .collect();
        connections.push(connection);
        self.connections.store(Arc::new(connections));
        slot.ok_or(H2ConnectError::ClosedAtOnce)
    }

    fn try_stream(&self) -> Option<StreamSlot> {
        self.connections
            .load()
            .iter()
            .find_map(|connection| connection.try_stream())
    }

    /// Connections that take new streams (for tests and status).
    pub fn open_connections(&self) -> usize {
        self.connections
            .load()
            .iter()
            .filter(|connection| !connection.is_closed())
            .count()
    }
}
