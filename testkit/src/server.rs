//! The sample upstream server itself.

use super::checkout::Checkouts;
use super::faults::{Fault, Faults};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, std::io::Error>;

/// The listening socket and the task accepting on it.
struct Listening {
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl Listening {
    fn start(
        listener: TcpListener,
        name: &str,
        faults: &Arc<Faults>,
        checkouts: &Arc<Checkouts>,
        crashes: &watch::Sender<u64>,
    ) -> Listening {
        let listener = Arc::new(listener);
        let task = tokio::spawn(accept_loop(
            listener.clone(),
            name.to_string(),
            (faults.clone(), checkouts.clone()),
            crashes.subscribe(),
        ));
        Listening { listener, task }
    }

    /// Stops listening before returning, so the very next connect is refused: aborting
    /// the task alone closes the socket only when the runtime next gets to it.
    fn stop(self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open, as `self.listener` keeps it; shutting a
        // listening socket down stops it listening (Linux) and touches no memory.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        self.task.abort();
    }
}

/// A running sample upstream. Dropping it stops the listener.
pub struct SampleUpstream {
    pub name: String,
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    /// The business signal `/checkout` counts and `/metrics` exports.
    pub checkouts: Arc<Checkouts>,
    accept: Mutex<Option<Listening>>,
    /// Bumped by `crash`: every open connection is dropped when it changes.
    crashes: watch::Sender<u64>,
}

impl SampleUpstream {
    /// Starts an upstream named `name` on `addr` (port 0 picks a free port).
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<SampleUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let checkouts = Arc::new(Checkouts::default());
        let name = name.to_string();
        let (crashes, _) = watch::channel(0);
        let accept = Listening::start(listener, &name, &faults, &checkouts, &crashes);
        Ok(SampleUpstream {
            name,
            addr,
            faults,
            checkouts,
            accept: Mutex::new(Some(accept)),
            crashes,
        })
    }

    /// Stops listening: new connections are refused until `restart`.
    pub fn stop(&self) {
        if let Some(listening) = self
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            listening.stop();
        }
    }

    /// Dies like a crashed process: stops listening and drops every open connection,
    /// answered or not. `restart` brings it back.
    pub fn crash(&self) {
        self.stop();
        self.crashes.send_modify(|count| *count += 1);
    }

    /// Listens again on the same address after `stop` or `crash`.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        let listening = Listening::start(
            listener,
            &self.name,
            &self.faults,
            &self.checkouts,
            &self.crashes,
        );
        *self.accept.lock().unwrap_or_else(PoisonError::into_inner) = Some(listening);
        Ok(())
    }
}

impl Drop for SampleUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    name: String,
    (faults, checkouts): (Arc<Faults>, Arc<Checkouts>),
    crashes: watch::Receiver<u64>,
) {
    let name: Arc<str> = Arc::from(name);
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if faults.garbage() {
            tokio::spawn(async move {
                let _ = stream.write_all(b"this is not HTTP at all\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let name = name.clone();
        let faults = faults.clone();
        let checkouts = checkouts.clone();
        let mut crashes = crashes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                respond(name.clone(), faults.clone(), checkouts.clone(), request)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = crashed(&mut crashes) => {}
            }
        });
    }
}

/// Resolves on the next `crash`; never if the upstream was dropped without one.
async fn crashed(crashes: &mut watch::Receiver<u64>) {
    if crashes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Debug)]
struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected reset")
    }
}

impl std::error::Error for InjectedReset {}

async fn respond(
    name: Arc<str>,
    faults: Arc<Faults>,
    checkouts: Arc<Checkouts>,
    request: Request<Incoming>,
) -> Result<Response<Body>, InjectedReset> {
    // What Prometheus scrapes is the upstream's own, never one of its faults.
    if request.uri().path() == "/metrics" {
        let mut answer = text(&name, StatusCode::OK, checkouts.metrics(&name));
        answer.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return Ok(answer);
    }
    let delay = faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let grpc = is_grpc(&request);
    match faults.draw() {
        Fault::Stall => std::future::pending::<()>().await,
        Fault::Reset => return Err(InjectedReset),
        Fault::Error if grpc => return Ok(grpc_unavailable(&name)),
        Fault::Error => {
            return Ok(text(
                &name,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("version={name} failed\n"),
            ))
        }
        Fault::None => {}
    }
    let path = request.uri().path().to_string();
    if faults.is_broken_path(&path) {
        return Ok(text(
            &name,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("version={name} is broken on {path}\n"),
        ));
    }
    if grpc {
        return Ok(grpc_answer(&name));
    }
    if request.headers().contains_key(header::UPGRADE) {
        return Ok(upgrade(&name, request));
    }
    if let Some(item) = path
        .strip_prefix("/item/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(item_json(&name, item, faults.wrong_price(item)));
    }
    if let Some(size) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(stream_bytes(&name, size));
    }
    match path.as_str() {
        // An upload handler: reads the whole body before it answers.
        "/upload" => match request.into_body().collect().await {
            Ok(body) => Ok(text(
                &name,
                StatusCode::OK,
                format!("version={name} received={}\n", body.to_bytes().len()),
            )),
            Err(_) => Ok(text(
                &name,
                StatusCode::BAD_REQUEST,
                format!("version={name} body broken\n"),
            )),
        },
        "/echo" => {
            let body = request.into_body().map_err(std::io::Error::other).boxed();
            Ok(with_name(&name, Response::new(body)))
        }
        "/checkout" => {
            let outcome = match checkouts.checkout() {
                true => "ok",
                false => "declined",
            };
            Ok(text(
                &name,
                StatusCode::OK,
                format!("version={name} checkout={outcome}\n"),
            ))
        }
        "/headers" => {
            let mut listing = String::new();
            for (key, value) in request.headers() {
                listing.push_str(&format!(
                    "{key}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            Ok(text(&name, StatusCode::OK, listing))
        }
        _ => {
            let body = faults
                .body()
                .map_or_else(|| format!("version={name}\n"), |body| body.to_string());
            match faults.slow_body() {
                Some((chunks, pause)) => Ok(slow_text(&name, body, chunks, pause)),
                None => Ok(text(&name, StatusCode::OK, body)),
            }
        }
    }
}

fn is_grpc(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC call's answer: one message naming the version, then trailers `grpc-status: 0`.
fn grpc_answer(name: &str) -> Response<Body> {
    let message = format!("version={name}");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message.as_bytes());
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(framed))
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    with_name(name, response)
}

/// An injected failure, as a gRPC server reports one: trailers-only UNAVAILABLE (HTTP 200).
fn grpc_unavailable(name: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("14"));
    headers.insert(
        "grpc-message",
        http::HeaderValue::from_static("injected by the sample upstream"),
    );
    with_name(name, response)
}

fn with_name(name: &str, mut response: Response<Body>) -> Response<Body> {
    if let Ok(value) = http::HeaderValue::from_str(name) {
        response.headers_mut().insert("x-upstream", value);
    }
    response
}

/// An item as a JSON API answers it: its price (wrong when `wrong`), and the time it was
/// served, which differs between any two answers (noise a shadow comparison must learn).
fn item_json(name: &str, item: u64, wrong: bool) -> Response<Body> {
    let price = item * 7 % 1000 + 100 + u64::from(wrong);
    let served_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let body = format!("{{\"item\":{item},\"price\":{price},\"served_at_ms\":{served_at_ms}}}");
    let mut response = text(name, StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(name: &str, status: StatusCode, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = with_name(name, Response::new(body));
    *response.status_mut() = status;
    response
}

/// Sends `body` in `chunks` pieces, waiting `pause` before each: a slow upstream body.
fn slow_text(name: &str, body: String, chunks: u32, pause: Duration) -> Response<Body> {
    let body = Bytes::from(body);
    let length = body.len();
    let piece = length.div_ceil(chunks.max(1) as usize).max(1);
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut start = 0;
        while start < length {
            tokio::time::sleep(pause).await;
            let end = (start + piece).min(length);
            if sender
                .send(Ok(Frame::data(body.slice(start..end))))
                .await
                .is_err()
            {
                return;
            }
            start = end;
        }
    });
    let mut response = with_name(
        name,
        Response::new(StreamBody::new(ChannelStream(receiver)).boxed()),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
    response
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

struct ChannelStream(mpsc::Receiver<FrameResult>);

impl futures_core::Stream for ChannelStream {
    type Item = FrameResult;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<FrameResult>> {
        self.get_mut().0.poll_recv(context)
    }
}

/// Streams `size` bytes in 64 KiB chunks, generated as they are sent.
fn stream_bytes(name: &str, size: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let frames = chunks(size, CHUNK, chunk);
    let mut response = with_name(name, Response::new(StreamBody::new(frames).boxed()));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from(size));
    response
}

fn chunks(
    size: u64,
    chunk_len: u64,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static
{
    let mut remaining = size;
    from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let n = remaining.min(chunk_len);
        remaining -= n;
        Some(Ok(Frame::data(chunk.slice(..n as usize))))
    })
}

/// A stream from a closure that yields the next item, without extra crates.
fn from_fn<T, F: FnMut() -> Option<T> + Unpin>(next: F) -> ClosureStream<F> {
    ClosureStream(next)
}

struct ClosureStream<F>(F);

impl<T, F: FnMut() -> Option<T> + Unpin> futures_core::Stream for ClosureStream<F> {
    type Item = T;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready((self.get_mut().0)())
    }
}

/// Accepts an upgrade and echoes whatever the client sends on the upgraded connection.
fn upgrade(name: &str, mut request: Request<Incoming>) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
    });
    let empty = Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = with_name(name, Response::new(empty));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Some(protocol) = request.headers().get(header::UPGRADE) {
        headers.insert(header::UPGRADE, protocol.clone());
    }
    response
}
