//! The client-facing listener: accept, optional TLS, then HTTP/1 on switchyard's own codec
//! (`dataplane::h1`) or HTTP/2 on hyper's (by ALPN, or by the preface in the clear),
//! graceful drain.

use super::client_conn::ClientConn;
use super::client_idle::{IdleIo, IdleMonitor};
use super::h1::{ClientIo, H1Connection};
use super::proxy::{handle, DataPlane};
use super::ClientRequestBody;
use crate::config::Config;
use crate::telemetry::exchange::Entry;
use bytes::{Buf, BytesMut};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// What an HTTP/2 client sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type H2Builder = hyper::server::conn::http2::Builder<TokioExecutor>;

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

    fn http2(&self) -> H2Builder {
        let mut builder = H2Builder::new(TokioExecutor::new());
        builder
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
    let http2 = Arc::new(settings.http2());
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
        // The first head's deadline runs from accept: a connection that never sends a
        // byte is closed like one that sends half a head.
        let connection = Connection {
            plane: plane.clone(),
            client,
            http2: http2.clone(),
            graceful: graceful.watcher(),
            stop: stop.clone(),
            client_headers: settings.client_headers_timeout,
            first_deadline: Instant::now() + settings.client_headers_timeout,
        };
        match &settings.tls {
            None => {
                tokio::spawn(async move {
                    let _slot = slot;
                    connection.serve(stream, false).await
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = settings.tls_handshake_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            // The handshake had its own deadline; the head's starts now.
                            let mut connection = connection;
                            connection.first_deadline = Instant::now() + connection.client_headers;
                            connection.serve(tls, h2).await
                        }
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
    // HTTP/2 connections are sent GOAWAY; HTTP/1 ones close after the answer under way.
    // Every connection holds a slot until it ends, so all slots back means all ended.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        let _ = slots.acquire_many(all).await;
    };
    if tokio::time::timeout(settings.drain, drained).await.is_err() {
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
    http2: Arc<H2Builder>,
    graceful: hyper_util::server::graceful::Watcher,
    stop: watch::Receiver<bool>,
    client_headers: Duration,
    first_deadline: Instant,
}

impl Connection {
    /// Serves the connection as HTTP/2 when ALPN chose it (`h2`) or it opens with the
    /// HTTP/2 preface, else as HTTP/1; until it ends, or a body waits on the client past
    /// `client_idle`.
    async fn serve<S>(self, stream: S, h2: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let idle = self.client.idle.clone();
        let mut stream = IdleIo::new(stream, idle.clone());
        let served = async move {
            let mut read_ahead = BytesMut::new();
            if !h2 {
                match sniff(&mut stream, &mut read_ahead, self.first_deadline).await {
                    Sniffed::Http1 => return self.serve_http1(Box::new(stream), read_ahead).await,
                    Sniffed::Http2 => {}
                    Sniffed::Nothing => return,
                }
            }
            self.serve_http2(Rewound::new(read_ahead, stream)).await
        };
        tokio::select! {
            () = served => {}
            // Dropping the connection ends its exchanges and frees their upstream connections.
            () = idle.stalled() => tracing::debug!("client idle too long; connection dropped"),
        }
    }

    async fn serve_http1(self, io: ClientIo, read_ahead: BytesMut) {
        let connection = H1Connection {
            plane: self.plane,
            client: self.client,
            client_headers: self.client_headers,
            stop: self.stop,
        };
        connection.serve(io, read_ahead, self.first_deadline).await
    }

    async fn serve_http2<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            plane,
            client,
            http2,
            graceful,
            ..
        } = self;
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let request = request.map(|body| ClientRequestBody::Http2(Box::new(body)));
            // Boxed where it is made: hyper spawns a task for every stream, and moving the
            // request path's large future into it would copy it several times.
            let (plane, client) = (plane.clone(), client.clone());
            Box::pin(async move {
                let (mut response, stamp) = handle(plane, client, request, None).await;
                stamp.set_in(response.headers_mut());
                Ok::<_, std::convert::Infallible>(response)
            })
        });
        let connection = http2.serve_connection(TokioIo::new(stream), service);
        if let Err(err) = graceful.watch(connection).await {
            tracing::debug!(error = %err, "client connection ended with an error");
        }
    }
}

enum Sniffed {
    Http1,
    Http2,
    /// Closed, failed or silent past the first head's deadline.
    Nothing,
}

/// Reads until the bytes either are the HTTP/2 preface or cannot be.
async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
    deadline: Instant,
) -> Sniffed {
    use tokio::io::AsyncReadExt;
    while read.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(read) {
        read.reserve(8 * 1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(read)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Sniffed::Nothing,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!("no request within client_headers");
                return Sniffed::Nothing;
            }
        }
    }
    match read.starts_with(H2_PREFACE) {
        true => Sniffed::Http2,
        false => Sniffed::Http1,
    }
}

/// A stream whose first bytes were read already: they are read again first.
struct Rewound<S> {
    read: BytesMut,
    stream: S,
}

impl<S> Rewound<S> {
    fn new(read: BytesMut, stream: S) -> Rewound<S> {
        Rewound { read, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let take = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..take]);
        self.read.advance(take);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
