//! A keep-alive pool of HTTP/1.1 connections to one endpoint.
//!
//! Idle connections sit on a stack (most recently used first, so the warmest socket is
//! reused and surplus ones age out). A connection goes back on the stack only when its
//! response body has been read to the end; a body dropped half-read closes it.

use super::body::UpstreamRequestBody;
use super::watchdog::Watchdog;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One upstream connection: its request sender and the watchdog of its deadline.
#[derive(Debug)]
pub struct Sender {
    pub requests: SendRequest<UpstreamRequestBody>,
    pub watchdog: Arc<Watchdog>,
}

/// At most this many idle connections are kept per endpoint.
const MAX_IDLE: usize = 512;

#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<(Sender, Instant)>>,
    epoch: tokio::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

impl ConnectError {
    /// True when the failure says the endpoint is down or unreachable, so it should leave
    /// the rotation for a while. The proxy's own trouble (out of file handles or local
    /// ports) says nothing about the endpoint, and must never make a version look dead.
    pub fn blames_endpoint(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            ConnectError::Timeout(_) | ConnectError::Handshake(..) => true,
            ConnectError::Io(_, err) => matches!(
                err.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ),
        }
    }
}

impl Pool {
    pub fn new(addr: SocketAddr, connect_timeout: Duration, idle_timeout: Duration) -> Pool {
        Pool {
            addr,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// A ready connection: a pooled one if any is alive, else a new one.
    pub async fn checkout(&self) -> Result<Sender, ConnectError> {
        while let Some(mut sender) = self.pop_idle() {
            // A kept-alive connection is ready at once; one the peer closed fails here.
            if sender.requests.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect(false).await
    }

    fn pop_idle(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if !sender.requests.is_closed() && now.duration_since(since) < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose exchange finished cleanly.
    pub fn give_back(&self, sender: Sender) {
        if sender.requests.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    /// Drops every idle connection (after the endpoint refused or reset us).
    pub fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Opens and drops a bare TCP connection: does the endpoint take connections at all?
    /// `None` when the attempt says nothing about the endpoint (a timeout, or the proxy's
    /// own trouble such as running out of sockets); only a refusal is a "no".
    pub async fn accepts(&self) -> Option<bool> {
        match self.open().await {
            Ok(_) => Some(true),
            Err(ConnectError::Io(_, err))
                if err.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                Some(false)
            }
            Err(_) => None,
        }
    }

    /// A TCP connection to the endpoint, within the connect timeout.
    async fn open(&self) -> Result<TcpStream, ConnectError> {
        let addr = self.addr;
        tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|err| ConnectError::Io(addr, err))
    }

    /// A new connection; `upgrades` keeps the socket usable after a 101 response.
    pub async fn connect(&self, upgrades: bool) -> Result<Sender, ConnectError> {
        let addr = self.addr;
        let stream = self.open().await?;
        let _ = stream.set_nodelay(true);
        let (requests, connection) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| ConnectError::Handshake(addr, err))?;
        let watchdog = Arc::new(Watchdog::new(self.epoch));
        let ended = watchdog.clone();
        let connection = tokio::spawn(async move {
            let result = match upgrades {
                true => connection.with_upgrades().await,
                false => connection.await,
            };
            ended.connection_ended();
            if let Err(err) = result {
                tracing::debug!(%addr, error = %err, "upstream connection ended with an error");
            }
        });
        // The watchdog runs as a task of its own so that the connection's many wake-ups
        // never poll its timer.
        let dog = watchdog.clone();
        tokio::spawn(async move {
            if dog.wait_for_expiry().await {
                tracing::debug!(%addr, "upstream did not answer in time; connection closed");
                connection.abort();
            }
        });
        Ok(Sender { requests, watchdog })
    }
}
