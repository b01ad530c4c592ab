//! Opening connections to an endpoint (TCP, then TLS when its version has `tls`), and what
//! a failed attempt says about the endpoint.

use super::stream::UpstreamStream;
use super::tls::{tls_error_text, UpstreamTls};
use super::tls_cache;
use crate::config::upstream_tls::host_of;
use crate::config::VersionConfig;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// ALPN offered on connections that carry HTTP/1.1.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN offered on connections that carry HTTP/2 (`protocol = "h2"`).
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN offered where any HTTP will do (a bare connect check, the guard's probes).
pub const ALPN_ANY: &[&[u8]] = &[b"h2", b"http/1.1"];

/// TLS to one endpoint: the version's client config and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub tls: Arc<UpstreamTls>,
    pub name: ServerName<'static>,
}

/// Where and how to connect: an address, and TLS when the version has it.
#[derive(Debug, Clone)]
pub struct Dial {
    pub addr: SocketAddr,
    pub tls: Option<TlsTarget>,
}

impl Dial {
    /// How to reach `addr`, one of `version`'s endpoints: TLS with the name its
    /// certificate must carry when the version has `tls`.
    pub fn to(version: &VersionConfig, addr: SocketAddr) -> Dial {
        let tls = version.tls.as_ref().map(|tls| {
            let client = tls_cache::shared().get(&tls.settings);
            // An endpoint written as an address is verified as that address; one that
            // came from a name, as the (only) name.
            let written_as_ip = version
                .sources
                .iter()
                .any(|s| s.parse::<SocketAddr>() == Ok(addr));
            let host = match written_as_ip {
                true => None,
                false => version.sources.iter().find_map(|s| host_of(s)),
            };
            TlsTarget {
                name: client.name_for(host, addr),
                tls: client,
            }
        });
        Dial { addr, tls }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The handshake failed: the certificate did not verify, or the upstream refused us.
    #[error("TLS to {addr} (name {name:?}) refused: {reason}")]
    Tls {
        addr: SocketAddr,
        name: String,
        reason: String,
    },
}

impl ConnectError {
    /// True when the failure says the endpoint is down, unreachable or untrustworthy, so
    /// it should leave the rotation for a while. The proxy's own trouble (out of file
    /// handles or local ports) says nothing about the endpoint, and must never make a
    /// version look dead.
    pub fn blames_endpoint(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            ConnectError::Timeout(_) | ConnectError::Tls { .. } => true,
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

    /// True when the endpoint plainly refused: nothing listens there, or its TLS cannot
    /// be trusted (for the proxy both mean no request can go there).
    pub fn is_refusal(&self) -> bool {
        match self {
            ConnectError::Io(_, err) => err.kind() == std::io::ErrorKind::ConnectionRefused,
            ConnectError::Tls { .. } => true,
            ConnectError::Timeout(_) => false,
        }
    }
}

impl Dial {
    /// Plain TCP to `addr`.
    pub fn plain(addr: SocketAddr) -> Dial {
        Dial { addr, tls: None }
    }

    pub async fn open(
        &self,
        alpn: &[&[u8]],
        timeout: Duration,
    ) -> Result<UpstreamStream, ConnectError> {
        open(self.addr, self.tls.as_ref(), alpn, timeout).await
    }
}

/// A connection to `addr` within `timeout` (TCP connect and TLS handshake together), with
/// Nagle off (heads and small bodies go out at once). Over TLS, `alpn` is offered and
/// the stream tells what the upstream chose.
pub async fn open(
    addr: SocketAddr,
    tls: Option<&TlsTarget>,
    alpn: &[&[u8]],
    timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    tokio::time::timeout(timeout, open_within(addr, tls, alpn))
        .await
        .map_err(|_| ConnectError::Timeout(addr))?
}

async fn open_within(
    addr: SocketAddr,
    tls: Option<&TlsTarget>,
    alpn: &[&[u8]],
) -> Result<UpstreamStream, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| ConnectError::Io(addr, err))?;
    let _ = stream.set_nodelay(true);
    let Some(target) = tls else {
        return Ok(UpstreamStream::Plain(stream));
    };
    let connector = tokio_rustls::TlsConnector::from(target.tls.config().clone());
    let offered: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
    let tls = connector
        .with_alpn(offered)
        .connect(target.name.clone(), stream)
        .await
        .map_err(|err| tls_failure(addr, target, err))?;
    // Without ALPN the protocol is HTTP/1.1 (RFC 7301): an offer that leaves it out
    // needs the upstream to choose one of its protocols.
    if tls.get_ref().1.alpn_protocol().is_none() && !alpn.contains(&b"http/1.1".as_slice()) {
        let names: Vec<String> = alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        return Err(ConnectError::Tls {
            addr,
            name: target.name.to_str().into_owned(),
            reason: format!("the upstream did not choose {} (ALPN)", names.join(" or ")),
        });
    }
    Ok(UpstreamStream::Tls(Box::new(tls)))
}

fn tls_failure(addr: SocketAddr, target: &TlsTarget, err: std::io::Error) -> ConnectError {
    let tls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let Some(tls_error) = tls_error else {
        // The peer closed or reset during the handshake: plain connection trouble.
        return ConnectError::Io(addr, err);
    };
    let mut reason = tls_error_text(tls_error);
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) = tls_error {
        reason = format!("{reason}, checked against {}", target.tls.trusted());
    }
    ConnectError::Tls {
        addr,
        name: target.name.to_str().into_owned(),
        reason,
    }
}

/// A TLS alert the upstream sent in place of an answer (with TLS 1.3 a refused client
/// certificate shows only when the first answer is read), as the reason to show.
pub fn refused_after_handshake(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(err) = source {
        // An `io::Error`'s own `source` skips the error it wraps: look inside it first.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for err in inner.into_iter().chain(std::iter::once(err)) {
            if let Some(alert @ rustls::Error::AlertReceived(_)) = err.downcast_ref() {
                return Some(tls_error_text(alert));
            }
        }
        source = err.source();
    }
    None
}
