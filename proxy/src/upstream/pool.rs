//! Idle keep-alive connections to one endpoint, and the lease that returns one.
//!
//! Each worker thread has a stack of its own (the warmest socket is reused first, and
//! surplus ones age out at the bottom), so taking and returning a connection touches a
//! lock no other thread contends for. A full stack spills into a shared overflow, which a
//! worker with none of its own draws from before opening a new connection.
//!
//! A connection comes back only through `Lease::release`, which the codec calls at a
//! clean message boundary; a lease dropped before that closes its connection.

use super::connection::Connection;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Idle connections kept per worker stack, and in the shared overflow.
const PER_WORKER: usize = 256;
const OVERFLOW: usize = 512;

#[derive(Debug)]
struct Idle {
    connection: Box<Connection>,
    since: Instant,
}

/// A stack on a cache line of its own, so two workers never write the same line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stack(Mutex<VecDeque<Idle>>);

impl Stack {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub struct Pool {
    workers: Box<[Stack]>,
    overflow: Stack,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Pool {
        let stacks = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool {
            workers: (0..stacks).map(|_| Stack::default()).collect(),
            overflow: Stack::default(),
            idle_timeout,
        }
    }

    fn own_stack(&self) -> &Stack {
        &self.workers[worker_index() % self.workers.len()]
    }

    /// A fit idle connection: this worker's own first, then the overflow, then another
    /// worker's (a request that moved threads must not open a connection while idle ones
    /// wait elsewhere). `now` may be a little old (the request's start): an idle
    /// connection then expires a little early, never late.
    pub fn take(&self, now: Instant) -> Option<Box<Connection>> {
        let own = worker_index() % self.workers.len();
        self.take_from(&self.workers[own], now)
            .or_else(|| self.take_from(&self.overflow, now))
            .or_else(|| {
                (1..self.workers.len())
                    .map(|step| &self.workers[(own + step) % self.workers.len()])
                    .find_map(|stack| self.take_from(stack, now))
            })
    }

    fn take_from(&self, stack: &Stack, now: Instant) -> Option<Box<Connection>> {
        let mut idle = stack.lock();
        while let Some(entry) = idle.pop_back() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout
                && entry.connection.is_fit()
            {
                return Some(entry.connection);
            }
        }
        None
    }

    fn put(&self, connection: Box<Connection>, now: Instant) {
        let entry = Idle {
            connection,
            since: now,
        };
        let Err(entry) = self.push(self.own_stack(), entry, PER_WORKER) else {
            return;
        };
        // Past both limits the connection is simply closed.
        let _ = self.push(&self.overflow, entry, OVERFLOW);
    }

    fn push(&self, stack: &Stack, entry: Idle, limit: usize) -> Result<(), Idle> {
        let mut idle = stack.lock();
        // The oldest connection sits at the bottom: drop it once it has idled too long.
        if idle.front().is_some_and(|oldest| {
            entry.since.saturating_duration_since(oldest.since) >= self.idle_timeout
        }) {
            idle.pop_front();
        }
        if idle.len() >= limit {
            return Err(entry);
        }
        idle.push_back(entry);
        Ok(())
    }

    /// Closes every idle connection (after the endpoint refused or reset us).
    pub fn clear(&self) {
        for stack in self.workers.iter().chain(std::iter::once(&self.overflow)) {
            stack.lock().clear();
        }
    }

    /// Idle connections held, over all stacks (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.workers
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|stack| stack.lock().len())
            .sum()
    }
}

/// The index of the calling thread among those that use pools, fixed per thread.
fn worker_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

/// A connection lent out for one exchange. `release` returns it to its pool; dropped
/// without that, the connection is closed, so an exchange cut off anywhere never leaves
/// a half-read connection in the pool.
#[derive(Debug)]
pub struct Lease {
    /// Boxed: it moves between pool and exchange as a pointer.
    connection: Option<Box<Connection>>,
    /// Where the connection goes back to; `None` for one that is never reused (upgrades).
    home: Option<Arc<Pool>>,
}

impl Lease {
    pub fn new(connection: Box<Connection>, home: Option<Arc<Pool>>) -> Lease {
        Lease {
            connection: Some(connection),
            home,
        }
    }

    pub fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    /// The exchange ended at a clean message boundary: the connection goes back to the
    /// pool (or is closed when it has none).
    pub fn release(mut self) {
        if let (Some(mut connection), Some(home)) = (self.connection.take(), self.home.take()) {
            connection.reused = true;
            home.put(connection, Instant::now());
        }
    }

    /// Takes the connection out for good (an upgraded connection becomes a tunnel).
    pub fn detach(mut self) -> Box<Connection> {
        self.connection
            .take()
            .expect("a lease holds its connection until released")
    }
}
