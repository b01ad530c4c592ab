//! Pooled evidence: every slice (250 ms) each member publishes what its proxy saw in the
//! slice that just ended, per version with traffic (outcome counts and the latency
//! histogram's recorded buckets), on the core NATS subject `switchyard.NAME.evidence`;
//! every member files what the others publish into its telemetry's pool, where the guard
//! reads it as it reads its own slices. Core NATS, not JetStream: a lost report is only
//! less evidence, and nothing needs replaying.
//!
//! A report is postcard (varints), latency values delta-encoded: about 26 bytes plus, per
//! version with traffic, its names, counts and two or three bytes per latency bucket used.

use super::rejected::{Carrier, Reason, Rejections};
use super::trust::Trust;
use crate::telemetry::shadow::{Pooled, POOLED_FIELDS};
use crate::telemetry::{sparse, Outcome, SparseLatency, Tally, Telemetry};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The wire format's number: a report of another format is not read (a fleet mid-upgrade
/// then judges each instance's own evidence until all run the same format). A change to
/// the outcomes (`Outcome::ALL`) is a change of format.
const FORMAT: u8 = 3;
const OUTCOMES: usize = Outcome::ALL.len();
/// Slices left behind by a stalled publisher that are still sent (older ones are dropped).
const CATCH_UP_SLICES: u64 = 4;
/// Past the end of a slice, so requests finishing at its edge are in it.
const GRACE: Duration = Duration::from_millis(5);
/// Publishers whose last report is remembered (for replays); past it the memory starts over.
const MAX_PUBLISHERS: usize = 1024;
/// Bounds on what one report may carry (a report past them is not read).
const MAX_VERSIONS: usize = 1024;
const MAX_BUCKETS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    format: u8,
    instance: String,
    /// When the publisher started (ms since the epoch): with `slice`, what makes a report
    /// newer than the last one heard, so a captured report replayed later is not filed.
    started_ms: u64,
    /// The publisher's own slice number (receivers file by arrival, once).
    slice: u64,
    versions: Vec<VersionSlice>,
    /// What its shadows found so far (cumulative, not per slice).
    shadows: Vec<ShadowCounts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ShadowCounts {
    service: String,
    version: String,
    /// What is judged (settings, endpoints, release): pooled only where it agrees.
    judged: u64,
    counts: Pooled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VersionSlice {
    service: String,
    version: String,
    /// Per outcome, in `Outcome::ALL` order.
    counts: [u64; OUTCOMES],
    saved: u64,
    /// `(value - previous value, count)` per recorded latency bucket, in microseconds.
    latency: Vec<(u64, u64)>,
}

/// This instance's side of the evidence subject.
#[derive(Clone)]
pub struct Evidence {
    client: async_nats::Client,
    subject: String,
    instance: String,
    started_ms: u64,
    rejections: Rejections,
    trust: Trust,
}

impl Evidence {
    pub fn new(
        client: async_nats::Client,
        fleet: &str,
        instance: &str,
        rejections: Rejections,
        trust: Trust,
    ) -> Evidence {
        Evidence {
            client,
            subject: format!("switchyard.{fleet}.evidence"),
            instance: instance.to_string(),
            started_ms: super::members::now_ms(),
            rejections,
            trust,
        }
    }

    /// Publishes this instance's slices and pools the other members' until `stop`.
    pub async fn run(self, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.clone().publish(telemetry.clone()) => {}
            _ = self.pool(telemetry) => {}
            _ = stop.wait_for(|&stop| stop) => {}
        }
    }

    async fn publish(self, telemetry: Arc<Telemetry>) {
        let mut next = telemetry.slice_at(Instant::now());
        loop {
            let ends = telemetry.slice_start(next + 1) + GRACE;
            tokio::time::sleep_until(ends.into()).await;
            let current = telemetry.slice_at(Instant::now());
            // While NATS is away nothing is sent: the others judge without us meanwhile.
            let connected =
                self.client.connection_state() == async_nats::connection::State::Connected;
            for slice in next.max(current.saturating_sub(CATCH_UP_SLICES))..current {
                if !connected {
                    break;
                }
                let payload = encode(&report(&self.instance, self.started_ms, &telemetry, slice));
                let sent = match self.trust.sign(&payload) {
                    Some(signature) => {
                        self.client
                            .publish_with_headers(self.subject.clone(), signature, payload.into())
                            .await
                    }
                    None => {
                        self.client
                            .publish(self.subject.clone(), payload.into())
                            .await
                    }
                };
                if let Err(err) = sent {
                    tracing::debug!(%err, "evidence not published");
                }
            }
            next = current;
        }
    }

    async fn pool(&self, telemetry: Arc<Telemetry>) {
        let mut reports = match self.client.subscribe(self.subject.clone()).await {
            Ok(reports) => reports,
            Err(err) => {
                tracing::error!(%err, "cannot subscribe to the fleet's evidence: this instance judges on its own traffic alone");
                return;
            }
        };
        let mut heard = Heard::default();
        while let Some(message) = reports.next().await {
            if let Err((reason, why)) = self
                .trust
                .verify(message.headers.as_ref(), &message.payload)
            {
                self.rejections.reject(Carrier::Evidence, reason, &why);
                continue;
            }
            match decode(&message.payload) {
                Some(report) if report.instance == self.instance => {}
                Some(report) if !heard.newer(&report) => self.rejections.reject(
                    Carrier::Evidence,
                    Reason::Replayed,
                    &format!(
                        "a report from {} no newer than the last one heard from it",
                        report.instance
                    ),
                ),
                Some(report) => file(&telemetry, report, Instant::now()),
                None => self.rejections.reject(
                    Carrier::Evidence,
                    Reason::Malformed,
                    "a report that does not decode (another format or another writer)",
                ),
            }
        }
    }
}

/// The last report heard from each publisher, by `(started_ms, slice)`.
#[derive(Default)]
struct Heard(std::collections::HashMap<String, (u64, u64)>);

impl Heard {
    /// True (and remembered) when `report` is newer than the last one from its publisher.
    fn newer(&mut self, report: &Report) -> bool {
        let at = (report.started_ms, report.slice);
        if let Some(last) = self.0.get(&report.instance) {
            if at <= *last {
                return false;
            }
        } else if self.0.len() >= MAX_PUBLISHERS {
            // Only made-up names fill it (a fleet has far fewer members): start over.
            self.0.clear();
        }
        self.0.insert(report.instance.clone(), at);
        true
    }
}

/// What this instance saw in `slice`: every version with traffic.
fn report(instance: &str, started_ms: u64, telemetry: &Telemetry, slice: u64) -> Report {
    let versions = telemetry
        .versions()
        .into_iter()
        .filter_map(|((service, version), stats)| {
            let snapshot = stats.slice(slice);
            if snapshot.requests() == 0 && snapshot.tally.saved == 0 {
                return None;
            }
            let mut previous = 0;
            let latency = sparse(&snapshot)
                .into_iter()
                .map(|(value, count)| {
                    let delta = value - previous;
                    previous = value;
                    (delta, count)
                })
                .collect();
            Some(VersionSlice {
                service,
                version,
                counts: snapshot.tally.counts,
                saved: snapshot.tally.saved,
                latency,
            })
        })
        .collect();
    let shadows = telemetry
        .shadows()
        .into_iter()
        .map(|((service, version), judged, stats)| ShadowCounts {
            service,
            version,
            judged,
            counts: stats.own(),
        })
        .filter(|shadow| shadow.counts.mirrored > 0)
        .collect();
    Report {
        format: FORMAT,
        instance: instance.to_string(),
        started_ms,
        slice,
        versions,
        shadows,
    }
}

fn encode(report: &Report) -> Vec<u8> {
    // A Vec of plain data always serializes.
    postcard::to_allocvec(report).unwrap_or_default()
}

/// A report of this format within bounds, else `None`.
fn decode(bytes: &[u8]) -> Option<Report> {
    let report: Report = postcard::from_bytes(bytes).ok()?;
    let within = report.format == FORMAT
        && report.versions.len() <= MAX_VERSIONS
        && report
            .versions
            .iter()
            .all(|v| v.latency.len() <= MAX_BUCKETS)
        && report.shadows.len() <= MAX_VERSIONS
        && report
            .shadows
            .iter()
            .all(|s| s.counts.fields.len() <= POOLED_FIELDS);
    within.then_some(report)
}

/// Files a member's report into the pools of the versions this instance knows (names it
/// has no routing for are not kept).
fn file(telemetry: &Telemetry, report: Report, now: Instant) {
    let Some(member) = telemetry.heard(&report.instance, now) else {
        return;
    };
    for slice in report.versions {
        let Some(stats) = telemetry.find(&slice.service, &slice.version) else {
            continue;
        };
        // One slice of one instance is far below 2^32 requests: more is not believed.
        let cap = |n: u64| n.min(u32::MAX as u64);
        let tally = Tally {
            counts: slice.counts.map(cap),
            saved: cap(slice.saved),
        };
        let mut value = 0u64;
        let latency: SparseLatency = slice
            .latency
            .into_iter()
            .map(|(delta, count)| {
                value = value.saturating_add(delta);
                (value, cap(count))
            })
            .collect();
        stats.pool(member.clone(), tally, latency, now);
    }
    for shadow in report.shadows {
        if let Some(stats) = telemetry.find_shadow(&shadow.service, &shadow.version, shadow.judged)
        {
            stats.pool(&member, shadow.counts);
        }
    }
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
