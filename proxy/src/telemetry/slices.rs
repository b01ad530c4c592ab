//! One thread's ring of time slices, plus totals since start.

use super::Outcome;
use hdrhistogram::Histogram;
use std::time::Duration;

/// Length of one slice.
pub const SLICE: Duration = Duration::from_millis(250);
/// Slices kept: one minute of history.
pub(super) const RING: usize = 240;
/// Latency is kept in microseconds, 1 µs to 100 s, two significant digits.
const MAX_LATENCY_MICROS: u64 = 100_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 2).unwrap_or_else(|_| unreachable!())
}

/// Counts by outcome, plus requests saved by a retry elsewhere. Cheap to copy and add:
/// what the guard reads on every tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub counts: [u64; Outcome::ALL.len()],
    pub saved: u64,
}

impl Tally {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()]
    }

    pub fn requests(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &n| sum.saturating_add(n))
    }

    pub fn errors(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.is_error())
            .map(|&o| self.count(o))
            .fold(0, u64::saturating_add)
    }

    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors() as f64 / n as f64,
        }
    }

    /// Saturating: pooled counts come from other instances.
    pub(super) fn add(&mut self, other: &Tally) {
        for (total, count) in self.counts.iter_mut().zip(other.counts.iter()) {
            *total = total.saturating_add(*count);
        }
        self.saved = self.saved.saturating_add(other.saved);
    }
}

/// A tally with its latency histogram.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tally: Tally,
    pub latency: Histogram<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            tally: Tally::default(),
            latency: histogram(),
        }
    }
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.tally.requests()
    }

    pub fn errors(&self) -> u64 {
        self.tally.errors()
    }

    pub fn error_rate(&self) -> f64 {
        self.tally.error_rate()
    }

    /// A latency quantile in seconds (0 when there were no requests).
    pub fn quantile_secs(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e6
    }

    fn add(&mut self, slice: &Slice) {
        self.tally.add(&slice.tally);
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&slice.latency);
    }
}

#[derive(Debug)]
struct Slice {
    index: u64,
    tally: Tally,
    latency: Histogram<u64>,
}

impl Slice {
    fn new() -> Slice {
        Slice {
            index: u64::MAX,
            tally: Tally::default(),
            latency: histogram(),
        }
    }

    fn reset(&mut self, index: u64) {
        self.index = index;
        self.tally = Tally::default();
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
        Shard {
            ring: (0..RING).map(|_| Slice::new()).collect(),
            totals: Slice::new(),
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
        slice.tally.counts[outcome.index()] += 1;
        slice.latency.saturating_record(micros);
        self.totals.tally.counts[outcome.index()] += 1;
        self.totals.latency.saturating_record(micros);
    }

    pub fn record_saved(&mut self, index: u64) {
        self.slice(index).tally.saved += 1;
        self.totals.tally.saved += 1;
    }

    fn in_window(&self, first: u64, last: u64) -> impl Iterator<Item = &Slice> {
        self.ring
            .iter()
            .filter(move |s| s.index >= first && s.index <= last)
    }

    pub fn merge_into(&self, first: u64, last: u64, into: &mut Snapshot) {
        self.in_window(first, last)
            .for_each(|slice| into.add(slice));
    }

    pub fn tally_into(&self, first: u64, last: u64, into: &mut Tally) {
        self.in_window(first, last)
            .for_each(|slice| into.add(&slice.tally));
    }

    pub fn merge_totals_into(&self, into: &mut Snapshot) {
        into.add(&self.totals);
    }

    pub fn tally_totals_into(&self, into: &mut Tally) {
        into.add(&self.totals.tally);
    }
}
