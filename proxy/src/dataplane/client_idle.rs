//! `client_idle`: a client connection whose exchanges wait on the client (a request body
//! that stopped arriving, a response the client stopped reading, an HTTP/2 stream held at
//! window 0) for that long is dropped.
//!
//! Each body that can wait on the client holds a `StallClock` and says, with one relaxed
//! store, when it starts and stops waiting. The connection's monitor looks only while some
//! body is open, and sleeps until the oldest wait would pass the limit; waits on the
//! upstream never count.

use futures_util::task::AtomicWaker;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One client connection's watch over its open bodies.
#[derive(Debug)]
pub struct IdleMonitor {
    epoch: Instant,
    limit: Duration,
    open: Mutex<Vec<Weak<AtomicU64>>>,
    /// Set when a body opens; the monitor, waiting with nothing open, is woken by it.
    /// (An atomic and one waker: the monitor is polled every time its connection's task
    /// wakes, and a `Notify` costs a lock on each of those polls.)
    opened: AtomicBool,
    waiting: AtomicWaker,
}

/// A body's side of the watch: since when it waits on the client (0: it does not).
#[derive(Debug)]
pub struct StallClock {
    epoch: Instant,
    since_ms: Arc<AtomicU64>,
}

impl IdleMonitor {
    pub fn new(limit: Duration) -> IdleMonitor {
        IdleMonitor {
            epoch: Instant::now(),
            limit,
            open: Mutex::new(Vec::new()),
            opened: AtomicBool::new(false),
            waiting: AtomicWaker::new(),
        }
    }

    /// A clock for a body that may wait on the client; watched until dropped.
    pub fn clock(&self) -> StallClock {
        let since_ms = Arc::new(AtomicU64::new(0));
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&since_ms));
        self.opened.store(true, Ordering::Release);
        self.waiting.wake();
        StallClock {
            epoch: self.epoch,
            since_ms,
        }
    }

    /// Resolves once some body has waited on the client for longer than the limit.
    pub async fn stalled(&self) {
        loop {
            let next = self.next_look();
            match next {
                None => self.body_opened().await,
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Resolves when a body opened since the last time it resolved. The waker is
    /// registered only while it waits: a body opening while the monitor sleeps on a
    /// deadline must not wake the connection's task (for HTTP/2, a poll of the whole
    /// connection) for nothing.
    async fn body_opened(&self) {
        std::future::poll_fn(|cx| {
            self.waiting.register(cx.waker());
            match self.opened.swap(false, Ordering::AcqRel) {
                true => {
                    self.waiting.take();
                    Poll::Ready(())
                }
                false => Poll::Pending,
            }
        })
        .await
    }

    /// When to look next: the oldest wait's deadline, a full limit from now when bodies
    /// are open but none waits, or `None` with nothing open.
    fn next_look(&self) -> Option<Instant> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|clock| clock.strong_count() > 0);
        if open.is_empty() {
            return None;
        }
        let oldest = open
            .iter()
            .filter_map(Weak::upgrade)
            .map(|since| since.load(Ordering::Relaxed))
            .filter(|&since| since != 0)
            .min();
        Some(match oldest {
            Some(since) => self.epoch + Duration::from_millis(since - 1) + self.limit,
            None => Instant::now() + self.limit,
        })
    }
}

impl StallClock {
    /// The body handed data to the client (or asked the client for more) and now waits.
    #[inline]
    pub fn waiting(&self) {
        if self.since_ms.load(Ordering::Relaxed) == 0 {
            let now = Instant::now().saturating_duration_since(self.epoch);
            self.since_ms
                .store(now.as_millis() as u64 + 1, Ordering::Relaxed);
        }
    }

    /// The client made progress.
    #[inline]
    pub fn progressing(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }
}

/// The client's socket, watched for writes the client does not take: a slow reader fills
/// the socket's buffer, and from then on every write waits on the client.
pub struct IdleIo<S> {
    io: S,
    monitor: Arc<IdleMonitor>,
    /// Made at the first write that waits, kept for the connection's life.
    clock: Option<StallClock>,
}

impl<S> IdleIo<S> {
    pub fn new(io: S, monitor: Arc<IdleMonitor>) -> IdleIo<S> {
        IdleIo {
            io,
            monitor,
            clock: None,
        }
    }

    fn wrote<T>(&mut self, polled: Poll<T>) -> Poll<T> {
        match (&polled, &self.clock) {
            (Poll::Pending, None) => {
                let clock = self.monitor.clock();
                clock.waiting();
                self.clock = Some(clock);
            }
            (Poll::Pending, Some(clock)) => clock.waiting(),
            (Poll::Ready(_), Some(clock)) => clock.progressing(),
            (Poll::Ready(_), None) => {}
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_the_client_past_the_limit_stalls_the_connection() {
        let monitor = IdleMonitor::new(Duration::from_secs(30));
        let clock = monitor.clock();
        clock.waiting();
        let started = Instant::now();
        monitor.stalled().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited <= Duration::from_millis(30_002),
            "{waited:?}"
        );
    }

    /// Counts the wakes of the task that polls with it.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_opening_wakes_the_monitor_only_while_nothing_was_open() {
        let monitor = IdleMonitor::new(Duration::from_secs(30));
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut stalled = std::pin::pin!(monitor.stalled());
        assert!(stalled.as_mut().poll(&mut cx).is_pending());
        let _first = monitor.clock();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the first body wakes it");
        // Now it sleeps until the open body could pass the limit: more bodies opening on
        // the connection (every HTTP/2 stream) must not wake its task.
        assert!(stalled.as_mut().poll(&mut cx).is_pending());
        let _more: Vec<_> = (0..3).map(|_| monitor.clock()).collect();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken for nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_and_closed_bodies_never_stall() {
        let monitor = Arc::new(IdleMonitor::new(Duration::from_secs(30)));
        let watching = tokio::spawn({
            let monitor = monitor.clone();
            async move { monitor.stalled().await }
        });
        let clock = monitor.clock();
        for _ in 0..10 {
            clock.waiting();
            tokio::time::sleep(Duration::from_secs(20)).await;
            clock.progressing();
        }
        drop(clock);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!watching.is_finished(), "a progressing client was dropped");
        watching.abort();
    }
}
