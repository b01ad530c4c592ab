//! Slow clients: each opens a connection and sends a request head one byte at a time,
//! never finishing it (slowloris). A proxy should drop them on its header timeout and
//! keep serving everyone else at full speed.

use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The head a slow client dribbles out; it never sends the final blank line.
const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Slow: ";

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    /// Connections the proxy closed while the head was still coming.
    dropped_by_proxy: AtomicU64,
    failed_to_connect: AtomicU64,
    bytes_sent: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrickleReport {
    pub clients: usize,
    pub opened: u64,
    pub dropped_by_proxy: u64,
    pub failed_to_connect: u64,
    pub bytes_sent: u64,
}

pub struct Trickle {
    clients: usize,
    counters: Arc<Counters>,
    tasks: JoinSet<()>,
}

impl Trickle {
    /// Starts `clients` slow clients at `start`; each stops at `stop` (instants).
    pub fn start(
        target: SocketAddr,
        clients: usize,
        interval: Duration,
        start: Instant,
        stop: Instant,
    ) -> Trickle {
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        for index in 0..clients {
            let counters = counters.clone();
            // Spread the clients over the first interval.
            let begin = start + interval.mul_f64(index as f64 / clients.max(1) as f64);
            tasks.spawn(async move {
                tokio::time::sleep_until(begin.into()).await;
                while Instant::now() < stop {
                    trickle_once(target, interval, stop, &counters).await;
                }
            });
        }
        Trickle {
            clients,
            counters,
            tasks,
        }
    }

    pub async fn finished(mut self) -> TrickleReport {
        while self.tasks.join_next().await.is_some() {}
        let c = &self.counters;
        TrickleReport {
            clients: self.clients,
            opened: c.opened.load(Ordering::Relaxed),
            dropped_by_proxy: c.dropped_by_proxy.load(Ordering::Relaxed),
            failed_to_connect: c.failed_to_connect.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }
}

/// One connection: dribble until the proxy hangs up or the run ends.
async fn trickle_once(target: SocketAddr, interval: Duration, stop: Instant, counters: &Counters) {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
    else {
        counters.failed_to_connect.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(interval).await;
        return;
    };
    counters.opened.fetch_add(1, Ordering::Relaxed);
    let filler = std::iter::repeat(&b'x');
    for byte in HEAD.iter().chain(filler) {
        if Instant::now() >= stop {
            return;
        }
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            counters.dropped_by_proxy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.bytes_sent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(interval.min(stop.saturating_duration_since(Instant::now()))).await;
    }
}
