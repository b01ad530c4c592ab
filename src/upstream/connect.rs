//! Opening TCP connections to an endpoint, and what a failed attempt says about it.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
}

impl ConnectError {
    /// True when the failure says the endpoint is down or unreachable, so it should leave
    /// the rotation for a while. The proxy's own trouble (out of file handles or local
    /// ports) says nothing about the endpoint, and must never make a version look dead.
    pub fn blames_endpoint(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            ConnectError::Timeout(_) => true,
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

    /// True when the endpoint plainly refused: nothing listens there.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ConnectError::Io(_, err) if err.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// A TCP connection to `addr` within `timeout`, with Nagle off (heads and small bodies
/// go out at once).
pub async fn open(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(addr))?
        .map_err(|err| ConnectError::Io(addr, err))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
