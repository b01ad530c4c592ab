//! The client-facing listener: accept, optional TLS, HTTP/1.1 and HTTP/2, graceful drain.

use super::client_idle::{IdleIo, IdleMonitor};
use super::proxy::{handle, ClientConn, DataPlane};
use crate::config::Config;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How far past `max_header_bytes` an HTTP/2 head is still decoded (to answer 431).
const H2_HEAD_SLACK: usize = 64 * 1024;

/// Listener settings fixed at start (a reload cannot move the listening socket).
#[derive(Clone)]
pub struct ServerSettings {
    pub tls: Option<TlsAcceptor>,
    pub tls_handshake_timeout: Duration,
    pub client_headers_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain: Duration,
    pub client_idle: Duration,
}

impl ServerSettings {
    pub fn from_config(config: &Config, tls: Option<TlsAcceptor>) -> ServerSettings {
        ServerSettings {
            tls,
            tls_handshake_timeout: config.timeouts.tls_handshake.0,
            client_headers_timeout: config.timeouts.client_headers.0,
            max_header_bytes: config.max_header_bytes,
            drain: config.timeouts.drain.0,
            client_idle: config.timeouts.client_idle.0,
        }
    }

    fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.client_headers_timeout)
            // hyper's read buffer bounds the request head; 8 KiB is its floor.
            .max_buf_size(self.max_header_bytes.max(8192))
            .keep_alive(true)
            // Small responses go out in one copy-and-write instead of a writev of pieces.
            .writev(false);
        builder
            .http2()
            .timer(TokioTimer::new())
            // Room past the limit, so that a head a little too large is decoded and gets
            // its 431 from the request path instead of the connection being torn down.
            .max_header_list_size((self.max_header_bytes + H2_HEAD_SLACK) as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        builder
    }
}

/// Accepts until `stop` flips, then drains open connections for up to the drain time.
pub async fn serve(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    settings: ServerSettings,
    mut stop: watch::Receiver<bool>,
) {
    let http = Arc::new(settings.http());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&stop| stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment, never stop accepting.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = Arc::new(ClientConn {
            ip: client_ip_header(peer),
            tls: settings.tls.is_some(),
            idle: Arc::new(IdleMonitor::new(settings.client_idle)),
            max_header_bytes: settings.max_header_bytes,
        });
        let connection = Connection {
            plane: plane.clone(),
            client,
            http: http.clone(),
            graceful: graceful.watcher(),
        };
        match &settings.tls {
            None => {
                tokio::spawn(connection.serve(stream));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = settings.tls_handshake_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection.serve(tls).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("stopped accepting; draining open connections");
    if tokio::time::timeout(settings.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with connections still open; closing them");
    }
}

struct Connection {
    plane: Arc<DataPlane>,
    client: Arc<ClientConn>,
    http: Arc<auto::Builder<TokioExecutor>>,
    graceful: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            plane,
            client,
            http,
            graceful,
        } = self;
        let idle = client.idle.clone();
        let stream = IdleIo::new(stream, idle.clone());
        let service = service_fn(move |request| handle(plane.clone(), client.clone(), request));
        let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::select! {
            served = graceful.watch(connection.into_owned()) => {
                if let Err(err) = served {
                    tracing::debug!(error = %err, "client connection ended with an error");
                }
            }
            // Dropping the connection ends its exchanges and frees their upstream connections.
            () = idle.stalled() => tracing::debug!("client idle too long; connection dropped"),
        }
    }
}

fn client_ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Binds the proxy listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
