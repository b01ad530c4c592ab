//! A business signal for analysis tests and demos: `/checkout` always answers 200, but only
//! a set share of checkouts succeed; `/metrics` exports both counts in Prometheus's text
//! format, labelled with the upstream's name as `version`:
//! `checkout_total{version="canary"}` and `checkout_ok_total{version="canary"}`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The counts and the success share (parts per million; all succeed by default).
#[derive(Debug)]
pub struct Checkouts {
    success_ppm: AtomicU32,
    total: AtomicU64,
    ok: AtomicU64,
}

impl Default for Checkouts {
    fn default() -> Self {
        Checkouts {
            success_ppm: AtomicU32::new(1_000_000),
            total: AtomicU64::new(0),
            ok: AtomicU64::new(0),
        }
    }
}

impl Checkouts {
    /// The share of checkouts that succeed from now on (0.0 to 1.0).
    pub fn set_success(&self, ratio: f64) {
        let ppm = (ratio.clamp(0.0, 1.0) * 1e6) as u32;
        self.success_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Counts one checkout; whether it succeeded. Spread evenly, so any run of checkouts
    /// succeeds at the set share (no randomness for a test to wait out).
    pub fn checkout(&self) -> bool {
        let n = self.total.fetch_add(1, Ordering::Relaxed);
        let ppm = u64::from(self.success_ppm.load(Ordering::Relaxed));
        let ok = (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000;
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Both counters in Prometheus's text exposition format.
    pub fn metrics(&self, version: &str) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let ok = self.ok.load(Ordering::Relaxed);
        format!(
            "# HELP checkout_total Checkouts attempted.\n# TYPE checkout_total counter\ncheckout_total{{version=\"{version}\"}} {total}\n\
             # HELP checkout_ok_total Checkouts that succeeded.\n# TYPE checkout_ok_total counter\ncheckout_ok_total{{version=\"{version}\"}} {ok}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_over_any_hundred() {
        let checkouts = Checkouts::default();
        checkouts.set_success(0.9);
        let ok = (0..100).filter(|_| checkouts.checkout()).count();
        assert_eq!(ok, 90);
        let text = checkouts.metrics("canary");
        assert!(
            text.contains("checkout_total{version=\"canary\"} 100\n"),
            "{text}"
        );
        assert!(
            text.contains("checkout_ok_total{version=\"canary\"} 90\n"),
            "{text}"
        );
    }
}
