//! Per-version request telemetry: outcome counts and latency histograms in short time
//! slices. Each worker thread records into its own shard, so threads never contend; readers
//! merge shards off the request path. Each service's retry budget (`upstream::budget`) is
//! kept here too: per-service runtime state that must outlive any one routing table.
//!
//! In a fleet, each version also keeps the other members' slices (`pool`): the guard reads
//! the pooled views, everything else (status, metrics) this instance's own.

mod access_line_format;
pub mod access_log;
pub mod exchange;
mod otlp_span;
mod outcome;
mod outlet;
mod pool;
pub mod shadow;
mod slices;
pub mod spans;
pub mod trace_context;

pub use outcome::{ClientFault, Outcome};
pub use pool::{sparse, SparseLatency, SILENT_AFTER_SLICES};
pub use slices::{Snapshot, Tally, SLICE};

use crate::upstream::budget::RetryBudget;
use pool::{Heard, Pool};
use slices::Shard;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a shadow is judged on (settings, endpoints, release), and its findings so far.
type JudgedShadow = (String, Arc<shadow::ShadowStats>);

/// All versions' stats, kept across table swaps so a reload or weight change keeps history.
#[derive(Debug)]
pub struct Telemetry {
    epoch: Instant,
    shards: usize,
    versions: Mutex<HashMap<(String, String), Arc<VersionStats>>>,
    budgets: Mutex<HashMap<String, Arc<RetryBudget>>>,
    /// The access log in use, kept across table swaps while its settings stay.
    access_log: Mutex<Option<Arc<access_log::AccessLog>>>,
    /// The span exporter in use, kept across table swaps while its settings stay.
    tracer: Mutex<Option<Arc<spans::Tracer>>>,
    /// What shadowing found, by (service, shadow version).
    shadows: Mutex<HashMap<(String, String), JudgedShadow>>,
    /// When each other member of the fleet last reported.
    heard: Arc<Heard>,
}

impl Telemetry {
    pub fn new(shards: usize) -> Telemetry {
        Telemetry {
            epoch: Instant::now(),
            shards: shards.max(1),
            versions: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            shadows: Mutex::new(HashMap::new()),
            access_log: Mutex::new(None),
            tracer: Mutex::new(None),
            heard: Arc::default(),
        }
    }

    /// The slice `now` falls in (the same numbering for every version).
    pub fn slice_at(&self, now: Instant) -> u64 {
        slice_at(self.epoch, now)
    }

    /// When slice `index` begins.
    pub fn slice_start(&self, index: u64) -> Instant {
        self.epoch + Duration::from_millis(index.saturating_mul(SLICE.as_millis() as u64))
    }

    /// A service's retry budget, kept across table swaps like its stats.
    pub fn retry_budget(&self, service: &str) -> Arc<RetryBudget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.entry(service.to_string()).or_default().clone()
    }

    /// The access log for `settings` (`None`: off): the one in use while its settings
    /// stay, a new one (with its own writer) when a reload changed them.
    pub fn access_log(
        &self,
        settings: Option<&crate::config::access_log::AccessLogSettings>,
    ) -> Option<Arc<access_log::AccessLog>> {
        let mut current = self
            .access_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(settings) = settings else {
            *current = None;
            return None;
        };
        match current.as_ref() {
            Some(log) if log.settings == *settings => Some(log.clone()),
            _ => {
                let log = access_log::AccessLog::start(settings.clone());
                *current = Some(log.clone());
                Some(log)
            }
        }
    }

    /// The span exporter for `settings` (`None`: off), kept while its settings stay.
    pub fn tracer(
        &self,
        settings: Option<&crate::config::otlp::OtlpSettings>,
    ) -> Option<Arc<spans::Tracer>> {
        let mut current = self.tracer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(settings) = settings else {
            *current = None;
            return None;
        };
        match current.as_ref() {
            Some(tracer) if tracer.settings == *settings => Some(tracer.clone()),
            _ => {
                let tracer = spans::Tracer::start(settings.clone());
                *current = Some(tracer.clone());
                Some(tracer)
            }
        }
    }

    /// Writes the access log's queued lines and exports the queued spans, then stops
    /// both threads (at shutdown, after the requests drained). Blocks.
    pub fn close_outputs(&self) {
        let log = self
            .access_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(log) = log {
            log.close();
        }
        let tracer = self
            .tracer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(tracer) = tracer {
            tracer.close();
        }
    }

    /// What shadowing `version` of `service` found, kept across table swaps; created on
    /// first use.
    /// `judged` describes what is compared (settings, endpoints, release): when it
    /// changes, the counts start afresh, so a fixed version is not held to old findings.
    pub fn shadow(&self, service: &str, version: &str, judged: &str) -> Arc<shadow::ShadowStats> {
        let mut shadows = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = shadows
            .entry((service.to_string(), version.to_string()))
            .or_insert_with(|| (judged.to_string(), Arc::default()));
        if kept.0 != judged {
            *kept = (judged.to_string(), Arc::default());
        }
        kept.1.clone()
    }

    /// Every shadow judged here, with a fingerprint of what is judged: ((service, version),
    /// fingerprint, findings). Members pool each other's findings only where it agrees.
    pub fn shadows(&self) -> Vec<((String, String), u64, Arc<shadow::ShadowStats>)> {
        let shadows = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
        shadows
            .iter()
            .map(|(key, (judged, stats))| (key.clone(), fingerprint(judged), stats.clone()))
            .collect()
    }

    /// The findings on a shadow, if this instance judges the same (`fingerprint`).
    pub fn find_shadow(
        &self,
        service: &str,
        version: &str,
        judged: u64,
    ) -> Option<Arc<shadow::ShadowStats>> {
        let shadows = self.shadows.lock().unwrap_or_else(PoisonError::into_inner);
        let (mine, stats) = shadows.get(&(service.to_string(), version.to_string()))?;
        (fingerprint(mine) == judged).then(|| stats.clone())
    }

    /// The stats of one version, created on first use.
    pub fn version(&self, service: &str, version: &str) -> Arc<VersionStats> {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions
            .entry((service.to_string(), version.to_string()))
            .or_insert_with(|| {
                Arc::new(VersionStats::new(
                    self.epoch,
                    self.shards,
                    self.heard.clone(),
                ))
            })
            .clone()
    }

    /// The stats of one version, only if some routing table has made them.
    pub fn find(&self, service: &str, version: &str) -> Option<Arc<VersionStats>> {
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions
            .get(&(service.to_string(), version.to_string()))
            .cloned()
    }

    /// Every version's stats, by (service, version).
    pub fn versions(&self) -> Vec<((String, String), Arc<VersionStats>)> {
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Notes that fleet member `member` reported at `now`; `None` when it is one too many
    /// members to keep.
    pub fn heard(&self, member: &str, now: Instant) -> Option<Arc<str>> {
        self.heard.heard(member, self.slice_at(now))
    }
}

/// FNV-1a: the same number on every member for the same text (std's hasher promises no
/// such thing across builds).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn slice_at(epoch: Instant, now: Instant) -> u64 {
    // u64 arithmetic: a u128 division on every request shows in profiles.
    now.saturating_duration_since(epoch).as_millis() as u64 / SLICE.as_millis() as u64
}

#[derive(Debug)]
pub struct VersionStats {
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
    /// Kept out of the slices on purpose: the guard never sees what clients did.
    client_faults: [AtomicU64; ClientFault::ALL.len()],
    /// gRPC calls by final status code (0 to 16; anything else counts as UNKNOWN).
    grpc_codes: [AtomicU64; GRPC_CODES],
    /// The other fleet members' slices of this version.
    pool: Mutex<Pool>,
    heard: Arc<Heard>,
}

/// The canonical gRPC status codes, 0 to 16.
pub const GRPC_CODES: usize = 17;

thread_local! {
    static SHARD_INDEX: usize = next_shard_index();
}

fn next_shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl VersionStats {
    fn new(epoch: Instant, shards: usize, heard: Arc<Heard>) -> VersionStats {
        VersionStats {
            epoch,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            client_faults: Default::default(),
            grpc_codes: Default::default(),
            pool: Mutex::default(),
            heard,
        }
    }

    /// Records one finished exchange. Called on the request path: one uncontended lock.
    pub fn record(&self, outcome: Outcome, latency: Duration, now: Instant) {
        let shard = SHARD_INDEX.with(|i| *i) % self.shards.len();
        let slice = self.slice_at(now);
        let mut shard = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.record(slice, outcome, latency);
    }

    /// `record` for an exchange that started at `started` and ends now: one clock read
    /// for both its latency and the slice it is filed under.
    pub fn record_since(&self, outcome: Outcome, started: Instant) {
        let now = Instant::now();
        self.record(outcome, now.saturating_duration_since(started), now);
    }

    /// Counts a request that failed on this version and was answered by another instead.
    pub fn record_saved(&self, now: Instant) {
        let shard = SHARD_INDEX.with(|i| *i) % self.shards.len();
        let slice = self.slice_at(now);
        let mut shard = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.record_saved(slice);
    }

    /// Counts an exchange the client made fail (rare: one shared counter is enough).
    pub fn record_client_fault(&self, fault: ClientFault) {
        self.client_faults[fault.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Client faults of one kind since start, for `/metrics`.
    pub fn client_faults(&self, fault: ClientFault) -> u64 {
        self.client_faults[fault.index()].load(Ordering::Relaxed)
    }

    /// Counts a gRPC call's final status (its outcome is recorded apart, by `record`).
    pub fn record_grpc_status(&self, code: u8) {
        let index = match code as usize {
            index if index < GRPC_CODES => index,
            _ => 2, // UNKNOWN, as gRPC clients read codes they do not know
        };
        self.grpc_codes[index].fetch_add(1, Ordering::Relaxed);
    }

    /// gRPC calls that ended with each status code since start, by code.
    pub fn grpc_statuses(&self) -> [u64; GRPC_CODES] {
        std::array::from_fn(|code| self.grpc_codes[code].load(Ordering::Relaxed))
    }

    fn slice_at(&self, now: Instant) -> u64 {
        slice_at(self.epoch, now)
    }

    /// The slices that end within `window` before `now` (the current, unfinished one included).
    fn slice_range(&self, window: Duration, now: Instant) -> (u64, u64) {
        let last = self.slice_at(now);
        let count = (window.as_millis() / SLICE.as_millis()).max(1) as u64;
        ((last + 1).saturating_sub(count), last)
    }

    /// Merged stats, latency included, of the recent `window`.
    pub fn window(&self, window: Duration, now: Instant) -> Snapshot {
        let (first, last) = self.slice_range(window, now);
        let mut merged = Snapshot::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.merge_into(first, last, &mut merged);
        }
        merged
    }

    /// Counts only of the recent `window`: no histogram is touched.
    pub fn window_tally(&self, window: Duration, now: Instant) -> Tally {
        let (first, last) = self.slice_range(window, now);
        let mut tally = Tally::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.tally_into(first, last, &mut tally);
        }
        tally
    }

    /// Counts only, since start.
    pub fn total_tally(&self) -> Tally {
        let mut tally = Tally::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.tally_totals_into(&mut tally);
        }
        tally
    }

    /// Counts since start, for `/metrics`.
    pub fn totals(&self) -> Snapshot {
        let mut merged = Snapshot::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.merge_totals_into(&mut merged);
        }
        merged
    }

    /// This instance's stats of one slice (what it reports to the fleet).
    pub fn slice(&self, index: u64) -> Snapshot {
        let mut merged = Snapshot::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.merge_into(index, index, &mut merged);
        }
        merged
    }

    /// Files a slice another fleet member (named as `Telemetry::heard` returned it)
    /// reported, as arrived at `now`.
    pub fn pool(&self, member: Arc<str>, tally: Tally, latency: SparseLatency, now: Instant) {
        let index = self.slice_at(now);
        self.pooled().add(member, index, tally, latency);
    }

    fn pooled(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `window`, with the slices of the fleet's live members added: what the guard judges.
    pub fn pooled_window(&self, window: Duration, now: Instant) -> Snapshot {
        let mut merged = self.window(window, now);
        let (first, last) = self.slice_range(window, now);
        let live = self.heard.live(last);
        self.pooled().merge_into(&live, first, last, &mut merged);
        merged
    }

    /// `window_tally`, with the slices of the fleet's live members added.
    pub fn pooled_window_tally(&self, window: Duration, now: Instant) -> Tally {
        let mut tally = self.window_tally(window, now);
        let (first, last) = self.slice_range(window, now);
        let live = self.heard.live(last);
        self.pooled().tally_into(&live, first, last, &mut tally);
        tally
    }

    /// `total_tally`, with everything the fleet's members reported added (only grows).
    pub fn pooled_total_tally(&self) -> Tally {
        let mut tally = self.total_tally();
        tally.add(&self.pooled().totals());
        tally
    }
}
