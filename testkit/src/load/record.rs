//! What a load run saw, per version: counts, errors and latency, for the whole run, per
//! second (with latency) and per 100 ms (counts only, to time a share change finely).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use switchyard::config::grpc::{code_name, GrpcCodes};

/// Width of the fine count buckets.
pub const TENTH: Duration = Duration::from_millis(100);
/// The name recorded for a response without the version header (or no response at all).
pub const NO_VERSION: &str = "(none)";
/// Longest latency kept exactly; longer ones count as this.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

fn histogram(significant_digits: u8) -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, significant_digits)
        .unwrap_or_else(|_| unreachable!())
}

/// How one request ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Status(u16),
    ConnectFailed,
    /// The connection broke mid-exchange, or the reply was not HTTP.
    Broken,
    Timeout,
    /// A gRPC call's final status.
    Grpc(u8),
}

impl Ending {
    /// What a user would call a failure: a 5xx or no answer at all; for gRPC calls, a
    /// status that is the server's failure by default (UNKNOWN, DEADLINE_EXCEEDED,
    /// INTERNAL, UNAVAILABLE, DATA_LOSS).
    pub fn is_error(self) -> bool {
        match self {
            Ending::Status(status) => status >= 500,
            Ending::Grpc(code) => GrpcCodes::default().contains(code),
            _ => true,
        }
    }

    fn label(self) -> String {
        match self {
            Ending::Status(status) => status.to_string(),
            Ending::ConnectFailed => "connect_failed".into(),
            Ending::Broken => "broken".into(),
            Ending::Timeout => "timeout".into(),
            Ending::Grpc(code) => format!("grpc_{}", code_name(code)),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was meant to be sent (open loop) or was sent (closed loop).
    pub sent: Instant,
    pub latency: Duration,
    /// The version header's value, if the response had one.
    pub version: Option<http::HeaderValue>,
    pub ending: Ending,
}

/// Collects samples from every connection of a run (one short lock per sample).
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    tally: Mutex<Tally>,
}

#[derive(Debug)]
struct Tally {
    /// Latency of every request, whatever the version.
    latency: Histogram<u64>,
    versions: Vec<VersionTally>,
    endings: BTreeMap<String, u64>,
    unsent: u64,
}

#[derive(Debug)]
struct VersionTally {
    name: String,
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
    seconds: Vec<Option<Second>>,
    tenths: Vec<u32>,
}

#[derive(Debug)]
struct Second {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Recorder {
    /// `epoch` is time zero of the run: seconds and tenths count from it.
    pub fn new(epoch: Instant) -> Recorder {
        Recorder {
            epoch,
            tally: Mutex::new(Tally {
                latency: histogram(3),
                versions: Vec::new(),
                endings: BTreeMap::new(),
                unsent: 0,
            }),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn record(&self, sample: Sample) {
        let offset = sample.sent.saturating_duration_since(self.epoch);
        let micros = (sample.latency.as_micros() as u64).clamp(1, MAX_LATENCY_MICROS);
        let error = sample.ending.is_error();
        let name = sample
            .version
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or(NO_VERSION);
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        *tally.endings.entry(sample.ending.label()).or_default() += 1;
        tally.latency.saturating_record(micros);
        let version = tally.version(name);
        version.requests += 1;
        version.errors += u64::from(error);
        version.latency.saturating_record(micros);
        let second = offset.as_secs() as usize;
        if version.seconds.len() <= second {
            version.seconds.resize_with(second + 1, || None);
        }
        let slot = version.seconds[second].get_or_insert_with(|| Second {
            requests: 0,
            errors: 0,
            latency: histogram(2),
        });
        slot.requests += 1;
        slot.errors += u64::from(error);
        slot.latency.saturating_record(micros);
        let tenth = (offset.as_millis() / TENTH.as_millis()) as usize;
        if version.tenths.len() <= tenth {
            version.tenths.resize(tenth + 1, 0);
        }
        version.tenths[tenth] += 1;
    }

    /// Counts intended requests that were never sent because the run ended first.
    pub fn record_unsent(&self, count: u64) {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unsent += count;
    }

    /// Everything seen so far, summarised.
    pub fn report(&self) -> LoadReport {
        let tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let requests: u64 = tally.versions.iter().map(|v| v.requests).sum();
        LoadReport {
            requests,
            errors: tally.versions.iter().map(|v| v.errors).sum(),
            unsent: tally.unsent,
            p50_ms: millis(&tally.latency, 0.5),
            p99_ms: millis(&tally.latency, 0.99),
            p999_ms: millis(&tally.latency, 0.999),
            endings: tally.endings.clone(),
            versions: tally
                .versions
                .iter()
                .map(|v| v.summarise(requests))
                .collect(),
        }
    }
}

impl Tally {
    fn version(&mut self, name: &str) -> &mut VersionTally {
        let index = match self.versions.iter().position(|v| v.name == name) {
            Some(index) => index,
            None => {
                self.versions.push(VersionTally {
                    name: name.to_string(),
                    requests: 0,
                    errors: 0,
                    latency: histogram(3),
                    seconds: Vec::new(),
                    tenths: Vec::new(),
                });
                self.versions.len() - 1
            }
        };
        &mut self.versions[index]
    }
}

fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

impl VersionTally {
    fn summarise(&self, all_requests: u64) -> VersionReport {
        VersionReport {
            name: self.name.clone(),
            requests: self.requests,
            errors: self.errors,
            share: share(self.requests, all_requests),
            p50_ms: millis(&self.latency, 0.5),
            p99_ms: millis(&self.latency, 0.99),
            p999_ms: millis(&self.latency, 0.999),
            max_ms: self.latency.max() as f64 / 1000.0,
            per_second: self
                .seconds
                .iter()
                .map(|second| match second {
                    None => SecondReport::default(),
                    Some(s) => SecondReport {
                        requests: s.requests,
                        errors: s.errors,
                        p50_ms: millis(&s.latency, 0.5),
                        p99_ms: millis(&s.latency, 0.99),
                    },
                })
                .collect(),
            per_tenth: self.tenths.clone(),
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        n => part as f64 / n as f64,
    }
}

/// A run's results as the client saw them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    /// Requests that were due but not sent before the run's end (the target fell behind).
    pub unsent: u64,
    /// Latency over every request.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// How requests ended: status codes and transport failures, with counts.
    pub endings: BTreeMap<String, u64>,
    pub versions: Vec<VersionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    /// This version's part of all requests.
    pub share: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Index = second of the run (by send time).
    pub per_second: Vec<SecondReport>,
    /// Requests per 100 ms of the run (by send time).
    pub per_tenth: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SecondReport {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadReport {
    pub fn version(&self, name: &str) -> Option<&VersionReport> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// All versions' requests sent during second `second`.
    pub fn requests_in_second(&self, second: usize) -> u64 {
        self.versions
            .iter()
            .filter_map(|v| v.per_second.get(second))
            .map(|s| s.requests)
            .sum()
    }
}

impl VersionReport {
    pub fn second(&self, second: usize) -> SecondReport {
        self.per_second.get(second).copied().unwrap_or_default()
    }
}
