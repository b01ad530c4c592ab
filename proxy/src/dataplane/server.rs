//! The client-facing listener: accept, optional TLS, HTTP/1.1 and HTTP/2, graceful drain.

use super::client_conn::ClientConn;
use super::client_idle::{IdleIo, IdleMonitor};
use super::proxy::{handle, DataPlane};
use crate::config::Config;
use crate::telemetry::exchange::Entry;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
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
    pub max_connections: usize,
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
            max_connections: config.max_connections,
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
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut backoff = AcceptBackoff::default();
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&stop| stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file handles and the like: back off, never stop accepting.
                let pause = backoff.failed(&err);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    _ = stop.wait_for(|&stop| stop) => break,
                }
            }
        };
        backoff.succeeded();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max = settings.max_connections,
                    "at proxy.max_connections: refusing new connections"
                );
                refusing = true;
            }
            refuse(stream, settings.tls.is_some());
            log_refusal(&plane, peer, settings.tls.is_some());
            continue;
        };
        refusing = false;
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
                let first_byte = tokio::time::Instant::now() + settings.client_headers_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    // The head deadline runs from accept: a connection that never sends
                    // a byte is closed like one that sends half a head (hyper's own
                    // timer only starts at the first byte). A peek (not `readable`,
                    // which a fresh socket reports at once) waits for that byte or EOF.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout_at(first_byte, stream.peek(&mut first)).await {
                        Ok(_) => connection.serve(stream).await,
                        Err(_) => tracing::debug!(%peer, "no request within client_headers"),
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = settings.tls_handshake_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
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

/// A connection past `max_connections`: a plain client is told why (503, closed); a TLS
/// one is closed before its handshake. Nothing waits: the answer fits a fresh socket.
fn refuse(stream: TcpStream, tls: bool) {
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\n\r\ntoo many connections\n";
    if !tls {
        let _ = stream.try_write(REFUSAL);
    }
    if let Ok(stream) = stream.into_std() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The access log's line for a refused connection (no request was read).
fn log_refusal(plane: &DataPlane, peer: SocketAddr, tls: bool) {
    let table = plane.table.load();
    if let Some(log) = &table.settings.access_log {
        let entry = Box::new(Entry::refused(client_ip_header(peer), tls, table.revision));
        log.send(entry);
    }
}

/// How long the accept loop pauses after a failed accept: 10 ms doubling to 1 s, so a
/// proxy out of file handles keeps serving what it has and logs once, not 20 times a second.
#[derive(Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, err: &std::io::Error) -> Duration {
        let pause = match self.pause {
            None => {
                tracing::warn!(error = %err, "accept failed; backing off until it works again");
                Self::FIRST
            }
            Some(pause) => (pause * 2).min(Self::MAX),
        };
        self.pause = Some(pause);
        pause
    }

    fn succeeded(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!("accepting connections again");
        }
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
