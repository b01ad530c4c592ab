//! Faults a sample upstream can be told to have, changed at run time.

use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Fault switches, read on every request. Rates are in parts per million.
#[derive(Debug, Default)]
pub struct Faults {
    error_ppm: AtomicU32,
    latency_micros: AtomicU64,
    jitter_micros: AtomicU64,
    tail_ppm: AtomicU32,
    tail_micros: AtomicU64,
    slow_body_chunks: AtomicU32,
    slow_body_pause_micros: AtomicU64,
    reset: AtomicBool,
    stall: AtomicBool,
    garbage: AtomicBool,
    /// Paths answered with a 500 whatever else is set (one load per request).
    broken_paths: ArcSwapOption<Vec<String>>,
    /// Replaces the usual `version=NAME` body.
    body: ArcSwapOption<String>,
    /// Share of `/item/N` paths whose JSON carries a wrong price (the same items every
    /// time): a bug only some paths show.
    wrong_price_ppm: AtomicU32,
}

/// What one request should suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error,
    Reset,
    Stall,
}

impl Faults {
    /// Fraction of requests answered with a 500 (0.0 to 1.0).
    pub fn set_error_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1e6) as u32;
        self.error_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn error_rate(&self) -> f64 {
        f64::from(self.error_ppm.load(Ordering::Relaxed)) / 1e6
    }

    /// Every response waits `base` plus a uniform random extra of up to `jitter`.
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.latency_micros
            .store(base.as_micros() as u64, Ordering::Relaxed);
        self.jitter_micros
            .store(jitter.as_micros() as u64, Ordering::Relaxed);
    }

    /// A fraction of responses (0.0 to 1.0) waits `extra` on top of the usual latency:
    /// a long tail, the way a slow dependency or a GC pause shows up.
    pub fn set_tail_latency(&self, fraction: f64, extra: Duration) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6) as u32;
        self.tail_ppm.store(ppm, Ordering::Relaxed);
        self.tail_micros
            .store(extra.as_micros() as u64, Ordering::Relaxed);
    }

    /// Answers send their body in `chunks` pieces with `pause` before each (0 chunks: off).
    pub fn set_slow_body(&self, chunks: u32, pause: Duration) {
        self.slow_body_chunks.store(chunks, Ordering::Relaxed);
        self.slow_body_pause_micros
            .store(pause.as_micros() as u64, Ordering::Relaxed);
    }

    /// The slow-body setting: (chunks, pause before each), if on.
    pub fn slow_body(&self) -> Option<(u32, Duration)> {
        match self.slow_body_chunks.load(Ordering::Relaxed) {
            0 => None,
            chunks => {
                let pause = self.slow_body_pause_micros.load(Ordering::Relaxed);
                Some((chunks, Duration::from_micros(pause)))
            }
        }
    }

    /// Close the connection after reading the request, without answering.
    pub fn set_reset(&self, on: bool) {
        self.reset.store(on, Ordering::Relaxed);
    }

    /// Never answer (the connection stays open).
    pub fn set_stall(&self, on: bool) {
        self.stall.store(on, Ordering::Relaxed);
    }

    /// Answer every new connection with bytes that are not HTTP.
    pub fn set_garbage(&self, on: bool) {
        self.garbage.store(on, Ordering::Relaxed);
    }

    pub fn garbage(&self) -> bool {
        self.garbage.load(Ordering::Relaxed)
    }

    /// Answers exactly `path` with a 500 (other paths are untouched), on top of any
    /// paths already broken: healthy on `/healthz`, broken on `/`.
    pub fn break_path(&self, path: &str) {
        let mut paths = self
            .broken_paths
            .load_full()
            .map_or_else(Vec::new, |p| (*p).clone());
        paths.push(path.to_string());
        self.broken_paths.store(Some(Arc::new(paths)));
    }

    pub fn is_broken_path(&self, path: &str) -> bool {
        self.broken_paths
            .load()
            .as_ref()
            .is_some_and(|paths| paths.iter().any(|p| p == path))
    }

    /// Answers the usual routes with `body` instead of `version=NAME` (a wrong page).
    pub fn set_body(&self, body: &str) {
        self.body.store(Some(Arc::new(body.to_string())));
    }

    pub fn body(&self) -> Option<Arc<String>> {
        self.body.load_full()
    }

    /// Answers a `fraction` of the `/item/N` paths (always the same ones) with a wrong
    /// price.
    pub fn set_wrong_price_paths(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6) as u32;
        self.wrong_price_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Whether item `item`'s price is wrong: a hash of the item, so a path is wrong or
    /// right on every request.
    pub fn wrong_price(&self, item: u64) -> bool {
        let ppm = u64::from(self.wrong_price_ppm.load(Ordering::Relaxed));
        ppm > 0 && item.wrapping_mul(2_654_435_761) % 1_000_000 < ppm
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.set_error_rate(0.0);
        self.set_latency(Duration::ZERO, Duration::ZERO);
        self.set_tail_latency(0.0, Duration::ZERO);
        self.set_slow_body(0, Duration::ZERO);
        self.set_reset(false);
        self.set_stall(false);
        self.set_garbage(false);
        self.broken_paths.store(None);
        self.body.store(None);
        self.set_wrong_price_paths(0.0);
    }

    pub fn delay(&self) -> Duration {
        let base = self.latency_micros.load(Ordering::Relaxed);
        let jitter = self.jitter_micros.load(Ordering::Relaxed);
        let extra = if jitter == 0 {
            0
        } else {
            fastrand::u64(..=jitter)
        };
        let tail_ppm = self.tail_ppm.load(Ordering::Relaxed);
        let tail = if tail_ppm > 0 && fastrand::u32(..1_000_000) < tail_ppm {
            self.tail_micros.load(Ordering::Relaxed)
        } else {
            0
        };
        Duration::from_micros(base + extra + tail)
    }

    pub fn draw(&self) -> Fault {
        if self.stall.load(Ordering::Relaxed) {
            return Fault::Stall;
        }
        if self.reset.load(Ordering::Relaxed) {
            return Fault::Reset;
        }
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        if ppm > 0 && fastrand::u32(..1_000_000) < ppm {
            return Fault::Error;
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_items_are_wrong_every_time_and_about_the_share_asked() {
        let faults = Faults::default();
        assert!(!(0..10_000).any(|item| faults.wrong_price(item)));
        faults.set_wrong_price_paths(0.03);
        let wrong: Vec<u64> = (0..10_000).filter(|&i| faults.wrong_price(i)).collect();
        assert!(
            (250..=350).contains(&wrong.len()),
            "{} of 10000",
            wrong.len()
        );
        assert!(wrong.iter().all(|&item| faults.wrong_price(item)));
        faults.heal();
        assert!(!faults.wrong_price(wrong[0]));
    }
}
