//! The response-header deadline of an upstream connection, watched from the side.
//!
//! A timer per request costs a timer-wheel insert and removal on every exchange. Instead
//! the request path stores a deadline (one relaxed atomic store, and one to clear it) and
//! a watchdog task beside each upstream connection sleeps until the deadline it sees; when
//! one passes with the exchange still waiting, the connection is dropped, which fails the
//! exchange.
//! While idle the watchdog looks every second, so a deadline is noticed at most that late.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Watchdog {
    epoch: Instant,
    /// Milliseconds after `epoch` by which response headers are due; 0 while idle.
    deadline_ms: AtomicU64,
    expired: AtomicBool,
    ended: AtomicBool,
}

impl Watchdog {
    pub fn new(epoch: Instant) -> Watchdog {
        Watchdog {
            epoch,
            deadline_ms: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// The connection is gone by itself: the watchdog may stop.
    pub fn connection_ended(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    /// Starts the clock of one exchange.
    #[inline]
    pub fn arm(&self, timeout: Duration) {
        let due = Instant::now().saturating_duration_since(self.epoch) + timeout;
        self.deadline_ms
            .store(due.as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// The response headers arrived.
    #[inline]
    pub fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }

    /// True once the watchdog gave up on an exchange (the connection is then gone).
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// Returns true when an armed deadline passes (the caller then drops the connection),
    /// false once the connection ended by itself.
    pub async fn wait_for_expiry(&self) -> bool {
        loop {
            if self.ended.load(Ordering::Relaxed) {
                return false;
            }
            let wake = match self.deadline_ms.load(Ordering::Relaxed) {
                0 => Instant::now() + IDLE_LOOK,
                due => {
                    let now = self.epoch.elapsed().as_millis() as u64;
                    if now >= due {
                        self.expired.store(true, Ordering::Relaxed);
                        return true;
                    }
                    Instant::now() + Duration::from_millis(due - now)
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_armed_deadline_expires() {
        let dog = Watchdog::new(Instant::now());
        dog.arm(Duration::from_millis(200));
        let started = Instant::now();
        assert!(dog.wait_for_expiry().await);
        assert!(dog.expired());
        // Paused time: the watchdog slept exactly until the deadline, give or take its ms.
        let slept = started.elapsed();
        assert!(
            slept >= Duration::from_millis(200) && slept <= Duration::from_millis(202),
            "{slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watchdog_stops_when_its_connection_ends() {
        let dog = Watchdog::new(Instant::now());
        dog.connection_ended();
        assert!(!dog.wait_for_expiry().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmed_deadline_never_expires() {
        let dog = std::sync::Arc::new(Watchdog::new(Instant::now()));
        dog.arm(Duration::from_millis(200));
        dog.disarm();
        let watching = tokio::spawn({
            let dog = dog.clone();
            async move { dog.wait_for_expiry().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watching.is_finished(), "an idle connection expired");
        assert!(!dog.expired());
        watching.abort();
    }
}
