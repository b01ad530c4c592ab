//! One thread's ring of time slices, plus totals since start.

use super::Outcome;
use hdrhistogram::Histogram;
use std::time::Duration;

/// Length of one slice.
pub const SLICE: Duration = Duration::from_millis(250);
/// Slices kept: one minute of history.
const RING: usize = 240;
/// Latency is kept in microseconds, 1 µs to 100 s, two significant digits.
const MAX_LATENCY_MICROS: u64 = 100_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 2).unwrap_or_else(|_| unreachable!())
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub counts: [u64; Outcome::ALL.len()],
    pub saved: u64,
    pub latency: Histogram<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            counts: [0; Outcome::ALL.len()],
            saved: 0,
            latency: histogram(),
        }
    }
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.is_error())
            .map(|o| self.counts[o.index()])
            .sum()
    }

    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors() as f64 / n as f64,
        }
    }

    /// A latency quantile in seconds (0 when there were no requests).
    pub fn quantile_secs(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e6
    }

    fn add(&mut self, slice: &Slice) {
        for (total, count) in self.counts.iter_mut().zip(slice.counts.iter()) {
            *total += count;
        }
        self.saved += slice.saved;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&slice.latency);
    }
}

#[derive(Debug)]
struct Slice {
    index: u64,
    counts: [u64; Outcome::ALL.len()],
    saved: u64,
    latency: Histogram<u64>,
}

impl Slice {
    fn reset(&mut self, index: u64) {
        self.index = index;
        self.counts = [0; Outcome::ALL.len()];
        self.saved = 0;
        self.latency.reset();
    }
}

#[derive(Debug)]
pub struct Shard {
    ring: Vec<Slice>,
    totals: Slice,
}

impl Default for Shard {
    fn default() -> Self {
        let slice = || Slice {
            index: u64::MAX,
            counts: [0; Outcome::ALL.len()],
            saved: 0,
            latency: histogram(),
        };
        Shard {
            ring: (0..RING).map(|_| slice()).collect(),
            totals: slice(),
        }
    }
}

impl Shard {
    fn slice(&mut self, index: u64) -> &mut Slice {
        let slot = &mut self.ring[(index % RING as u64) as usize];
        if slot.index != index {
            slot.reset(index);
        }
        slot
    }

    pub fn record(&mut self, index: u64, outcome: Outcome, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_MICROS);
        let slice = self.slice(index);
        slice.counts[outcome.index()] += 1;
        slice.latency.saturating_record(micros);
        self.totals.counts[outcome.index()] += 1;
        self.totals.latency.saturating_record(micros);
    }

    pub fn record_saved(&mut self, index: u64) {
        self.slice(index).saved += 1;
        self.totals.saved += 1;
    }

    pub fn merge_into(&self, first: u64, last: u64, into: &mut Snapshot) {
        for slice in &self.ring {
            if slice.index >= first && slice.index <= last {
                into.add(slice);
            }
        }
    }

    pub fn merge_totals_into(&self, into: &mut Snapshot) {
        into.add(&self.totals);
    }
}
