//! Evidence pooled from the other members of a fleet: each member's recent slices of one
//! version, filed by the slice in which they arrived here, and the sum of everything the
//! members reported (so the guard's "new since last look" works on pooled counts as it
//! does on local ones). Whoever receives the members' reports (the fleet) fills this in;
//! telemetry knows nothing of how they travel.

use super::slices::{Snapshot, Tally, RING};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// A member silent for more than this many slices no longer counts (its recent slices
/// leave the pooled window until it is heard again).
pub const SILENT_AFTER_SLICES: u64 = 2;
/// Members kept per version: a bound on memory whatever arrives.
const MAX_MEMBERS: usize = 1024;

/// A histogram as `(value, count)` pairs of its recorded buckets, lowest first: what one
/// slice of latency weighs on the wire and in the pool (a few dozen pairs, not a full
/// histogram's thousands of counters).
pub type SparseLatency = Vec<(u64, u64)>;

/// The latency of `snapshot` as sparse pairs.
pub fn sparse(snapshot: &Snapshot) -> SparseLatency {
    snapshot
        .latency
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// When each member was last heard, in this instance's slices (shared by every version).
#[derive(Debug, Default)]
pub struct Heard(Mutex<HashMap<Arc<str>, u64>>);

impl Heard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `member` reported in slice `index`; returns its shared name.
    pub(super) fn heard(&self, member: &str, index: u64) -> Option<Arc<str>> {
        let mut heard = self.lock();
        heard.retain(|_, at| index.saturating_sub(*at) < RING as u64);
        if let Some((name, at)) = heard.get_key_value(member).map(|(n, a)| (n.clone(), *a)) {
            heard.insert(name.clone(), at.max(index));
            return Some(name);
        }
        if heard.len() >= MAX_MEMBERS {
            return None;
        }
        let name: Arc<str> = Arc::from(member);
        heard.insert(name.clone(), index);
        Some(name)
    }

    /// The members heard within `SILENT_AFTER_SLICES` of slice `now`.
    pub(super) fn live(&self, now: u64) -> Vec<Arc<str>> {
        self.lock()
            .iter()
            .filter(|(_, &at)| now.saturating_sub(at) <= SILENT_AFTER_SLICES)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// One slice of one version as a member reported it.
#[derive(Debug)]
struct PooledSlice {
    index: u64,
    tally: Tally,
    latency: SparseLatency,
}

/// The other members' evidence about one version.
#[derive(Debug, Default)]
pub(super) struct Pool {
    members: HashMap<Arc<str>, VecDeque<PooledSlice>>,
    /// Everything every member ever reported (only grows).
    totals: Tally,
}

impl Pool {
    /// Files a member's slice as arrived in slice `index`.
    pub(super) fn add(
        &mut self,
        member: Arc<str>,
        index: u64,
        tally: Tally,
        latency: SparseLatency,
    ) {
        self.totals.add(&tally);
        let slices = self.members.entry(member).or_default();
        while slices
            .front()
            .is_some_and(|s| index.saturating_sub(s.index) >= RING as u64)
        {
            slices.pop_front();
        }
        match slices.back_mut() {
            // Two reports in one of our slices (a late one, then the next): one slice.
            Some(last) if last.index == index => {
                last.tally.add(&tally);
                last.latency.extend(latency);
            }
            _ => slices.push_back(PooledSlice {
                index,
                tally,
                latency,
            }),
        }
        self.members.retain(|_, slices| {
            slices
                .back()
                .is_some_and(|s| index.saturating_sub(s.index) < RING as u64)
        });
    }

    pub(super) fn totals(&self) -> Tally {
        self.totals
    }

    /// Adds the live members' slices in `first..=last` to `into`.
    pub(super) fn merge_into(&self, live: &[Arc<str>], first: u64, last: u64, into: &mut Snapshot) {
        for slice in self.in_window(live, first, last) {
            into.tally.add(&slice.tally);
            for &(value, count) in &slice.latency {
                into.latency.saturating_record_n(value, count);
            }
        }
    }

    /// Adds the live members' counts in `first..=last` to `into`.
    pub(super) fn tally_into(&self, live: &[Arc<str>], first: u64, last: u64, into: &mut Tally) {
        for slice in self.in_window(live, first, last) {
            into.add(&slice.tally);
        }
    }

    fn in_window<'a>(
        &'a self,
        live: &'a [Arc<str>],
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = &'a PooledSlice> {
        live.iter()
            .filter_map(|member| self.members.get(member))
            .flatten()
            .filter(move |s| s.index >= first && s.index <= last)
    }
}
