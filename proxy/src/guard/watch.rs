//! The guard's loop: every `interval` (and at once when the data plane rings or a probe
//! reports), judge each version that has traffic but is not stable, and cut a bad one back.
//!
//! In a fleet the judge is shown the pooled evidence (this instance's slices plus those the
//! live members reported, `VersionStats::pooled_*`), so it judges the fleet's traffic as one;
//! connection failures and probes, which say whether *this* instance reaches the canary,
//! stay local. Without a fleet, or while NATS is away, the pool is empty and the guard
//! judges on its own traffic.

use super::after_switch::{self, AfterSwitch};
use super::evidence::{cause, p99, side, LATENCY_REFRESH};
use super::incident::Cutback;
use super::judge::{Evidence, Finding, Judge, Verdict, VerdictKind};
use super::probe;
use super::Guard;
use crate::clock::unix_ms;
use crate::control::command::Change;
use crate::control::record::CheckReport;
use crate::control::record::{ChangeKind, Origin};
use crate::control::RoutingControl;
use crate::dataplane::proxy::DataPlane;
use crate::routing::{RoutingTable, ServiceRoute, VersionRoute};
use crate::telemetry::{Outcome, Tally};
use crate::upstream::endpoint::Endpoint;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// The latest verdict per service and version, for status, metrics and rollouts.
#[derive(Debug, Default)]
pub struct Board {
    verdicts: Mutex<BTreeMap<String, VersionVerdict>>,
    /// Judging passes since start: shows the guard is alive.
    looks: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionVerdict {
    pub version: String,
    pub verdict: VerdictKind,
    pub detail: String,
    pub log_likelihood_ratio: f64,
    /// Since when the verdict has been healthy without a break, for bake times.
    #[serde(skip)]
    pub healthy_since: Option<tokio::time::Instant>,
}

impl Board {
    pub fn get(&self, service: &str) -> Option<VersionVerdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .cloned()
    }

    /// Every service's latest verdict.
    pub fn all(&self) -> BTreeMap<String, VersionVerdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }

    fn set(&self, service: &str, verdict: Option<VersionVerdict>) {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        match verdict {
            Some(verdict) => verdicts.insert(service.to_string(), verdict),
            None => verdicts.remove(service),
        };
    }
}

/// What the guard remembers about one version under judgment.
struct Watched {
    judge: Judge,
    /// This instance's totals at the last look (for connection failures)...
    seen: Tally,
    /// ...and the pooled ones (for the judge's new outcomes).
    seen_pooled: Tally,
    latency_read: Option<Instant>,
    /// The last moment the evidence was calm (nothing pointing at a problem).
    calm_at: SystemTime,
    healthy_since: Option<tokio::time::Instant>,
    probing: probe::Probing,
}

type VersionKey = (String, String);

/// A version whose endpoints are to be probed, and for how many rounds.
struct Suspect {
    key: VersionKey,
    id: u64,
    endpoints: Vec<Arc<Endpoint>>,
    rounds: u64,
}

/// One look's outcome: the versions to cut back and those to probe.
struct Looked<'t> {
    bad: Vec<(&'t ServiceRoute, &'t VersionRoute, Finding)>,
    to_probe: Vec<Suspect>,
}

/// What a confirming probe found in one round.
struct ProbeReport {
    key: VersionKey,
    id: u64,
    round: probe::Round,
}

/// Runs until `stop` turns true.
pub async fn run<C: RoutingControl>(guard: Guard<C>, mut stop: watch::Receiver<bool>) {
    let mut watched: HashMap<VersionKey, Watched> = HashMap::new();
    let mut after_switch = AfterSwitch::default();
    let mut probe_ids = 0;
    let (reports, mut probed) = mpsc::unbounded_channel();
    while let Some(report) = next_look(&guard.plane, &mut stop, &mut probed).await {
        if let Some(report) = report {
            if let Some(entry) = watched.get_mut(&report.key) {
                entry.probing.report(report.id, report.round);
            }
        }
        let table = guard.plane.table.load_full();
        let looked = judge_all(&table, &guard.board, &mut watched, &mut probe_ids);
        for suspect in looked.to_probe {
            let reports = reports.clone();
            tokio::spawn(async move {
                probe::probe(&suspect.endpoints, suspect.rounds, |round| {
                    let key = suspect.key.clone();
                    let _ = reports.send(ProbeReport {
                        key,
                        id: suspect.id,
                        round,
                    });
                })
                .await;
            });
        }
        for (service, version, finding) in looked.bad {
            cut_back(&guard, &table, service, version, finding, &mut watched).await;
        }
        for regression in after_switch.look(&table, guard.control.as_ref()) {
            after_switch::switch_back(&guard, &table, regression).await;
        }
    }
}

/// Waits for the guard's next look: the shortest guard interval of the running table, at
/// once when the data plane rings, or when a probe reports (`Some(Some(report))`). `None`
/// once `stop` turns true.
async fn next_look(
    plane: &DataPlane,
    stop: &mut watch::Receiver<bool>,
    probed: &mut mpsc::UnboundedReceiver<ProbeReport>,
) -> Option<Option<ProbeReport>> {
    let interval = plane
        .table
        .load()
        .services()
        .iter()
        .filter(|s| s.guard.enabled)
        .map(|s| s.guard.interval)
        .min()
        .unwrap_or(Duration::from_secs(1));
    tokio::select! {
        _ = tokio::time::sleep(interval) => Some(None),
        _ = plane.guard_wake.notified() => Some(None),
        Some(report) = probed.recv() => Some(Some(report)),
        _ = stop.wait_for(|&stop| stop) => None,
    }
}

/// Judges every guarded non-stable version with traffic; returns the bad ones, and those
/// whose connections were just refused, to be probed.
fn judge_all<'t>(
    table: &'t RoutingTable,
    board: &Board,
    watched: &mut HashMap<VersionKey, Watched>,
    probe_ids: &mut u64,
) -> Looked<'t> {
    let now = Instant::now();
    let mut bad = Vec::new();
    let mut to_probe = Vec::new();
    let mut live = Vec::new();
    for service in table.services().iter().filter(|s| s.guard.enabled) {
        let guard = &service.guard;
        let stable = &service.versions[service.stable];
        let stable_tally = stable.stats.pooled_window_tally(guard.window, now);
        let mut shown = None;
        for (index, version) in service.versions.iter().enumerate() {
            if index == service.stable || service.share_of(index) == 0.0 {
                continue;
            }
            let key = (service.name.to_string(), version.name.to_string());
            live.push(key.clone());
            let totals = version.stats.total_tally();
            let pooled = version.stats.pooled_total_tally();
            let first_look = !watched.contains_key(&key);
            let entry = watched.entry(key.clone()).or_insert_with(|| Watched {
                judge: Judge::new(guard),
                seen: totals,
                seen_pooled: pooled,
                latency_read: None,
                calm_at: SystemTime::now(),
                healthy_since: None,
                probing: probe::Probing::default(),
            });
            let canary_tally = version.stats.pooled_window_tally(guard.window, now);
            let judgeable = canary_tally.requests() >= guard.latency_min_samples
                && stable_tally.requests() >= guard.latency_min_samples;
            let due = entry
                .latency_read
                .is_none_or(|at| now.duration_since(at) >= LATENCY_REFRESH);
            let (canary_p99, stable_p99) = match judgeable && due {
                true => {
                    entry.latency_read = Some(now);
                    (
                        Some(p99(version.stats.pooled_window(guard.window, now))),
                        Some(p99(stable.stats.pooled_window(guard.window, now))),
                    )
                }
                false => (None, None),
            };
            // Lost connections are a reason to probe; on the first look, those of the
            // recent window too, as they came before the guard started counting.
            let lost =
                |tally: &Tally| tally.count(Outcome::ConnectFailed) + tally.count(Outcome::Reset);
            let newly_refused =
                totals.count(Outcome::ConnectFailed) - entry.seen.count(Outcome::ConnectFailed);
            let newly_lost = lost(&totals) - lost(&entry.seen);
            let suspect = newly_lost > 0
                || (first_look && lost(&version.stats.window_tally(guard.window, now)) > 0);
            if let Some(id) = entry.probing.start(suspect, probe_ids) {
                to_probe.push(Suspect {
                    key: key.clone(),
                    id,
                    endpoints: version.endpoints.to_vec(),
                    rounds: guard.unreachable_after,
                });
            }
            let evidence = Evidence {
                canary_new_requests: pooled.requests() - entry.seen_pooled.requests(),
                canary_new_errors: pooled.errors() - entry.seen_pooled.errors(),
                canary_new_unreachable: newly_refused + entry.probing.take_refused_rounds(),
                canary_all_refusing: version.endpoints.iter().all(|e| e.is_backing_off(now)),
                canary_window: side(&canary_tally, canary_p99),
                stable_window: side(&stable_tally, stable_p99),
            };
            entry.seen = totals;
            entry.seen_pooled = pooled;
            let verdict = entry.judge.observe(&evidence);
            if entry.judge.log_likelihood_ratio() <= 0.0 && evidence.canary_new_unreachable == 0 {
                entry.calm_at = SystemTime::now();
            }
            let detail = match &verdict {
                Verdict::Healthy => "not worse than stable".to_string(),
                Verdict::Inconclusive => "gathering evidence".to_string(),
                Verdict::Bad(finding) => finding.summary.clone(),
            };
            entry.healthy_since = match verdict {
                Verdict::Healthy => entry
                    .healthy_since
                    .or_else(|| Some(tokio::time::Instant::now())),
                _ => None,
            };
            shown = Some(VersionVerdict {
                version: version.name.to_string(),
                verdict: verdict.kind(),
                detail,
                log_likelihood_ratio: entry.judge.log_likelihood_ratio(),
                healthy_since: entry.healthy_since,
            });
            if let Verdict::Bad(finding) = verdict {
                bad.push((service, version, finding));
            }
        }
        board.set(&service.name, shown);
    }
    // Versions that lost their traffic start afresh if they get it back.
    watched.retain(|key, _| live.contains(key));
    board.looks.fetch_add(1, Ordering::Relaxed);
    Looked { bad, to_probe }
}

/// All traffic back on stable (one journaled revision, one swap), then the incident;
/// unless the return point fails its checks, in which case the cutback is held.
async fn cut_back<C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    service: &ServiceRoute,
    version: &VersionRoute,
    finding: Finding,
    watched: &mut HashMap<VersionKey, Watched>,
) {
    let key = (service.name.to_string(), version.name.to_string());
    let stable = &service.versions[service.stable];
    if let Some(failing) = guard
        .verifier
        .failing_return_point(&service.name, &stable.name)
    {
        let started = watched.get(&key).map_or(SystemTime::now(), |w| w.calm_at);
        return hold(guard, table, service, version, &finding, started, failing).await;
    }
    let evidence = serde_json::to_value(&finding).unwrap_or_default();
    let origin = Origin::new(
        "guard",
        format!("{} is bad: {}", version.name, finding.summary),
    )
    .with_evidence(evidence);
    let record = match guard
        .control
        .change(&service.name, Change::Abort {}, origin)
        .await
    {
        Ok(record) => record,
        // In a fleet another member may have decided first: its abort is in the log and
        // applied here, so this verdict has nothing left to do (no second abort).
        Err(_)
            if guard
                .control
                .routing_of(&service.name)
                .is_some_and(|r| r.latched) =>
        {
            tracing::info!(service = %service.name, version = %version.name, "already cut back (another member of the fleet decided first)");
            watched.remove(&key);
            return;
        }
        Err(err) => {
            tracing::error!(service = %service.name, version = %version.name, error = %err, "guard could not cut back");
            return;
        }
    };
    let started = watched
        .remove(&key)
        .map_or(SystemTime::now(), |w| w.calm_at);
    tracing::warn!(
        service = %service.name,
        version = %version.name,
        revision = record.revision,
        "guard cut back: {}",
        finding.summary
    );
    let cutback = describe(
        guard,
        table,
        service,
        version,
        &finding,
        started,
        record.time_ms,
        record.revision,
    );
    if let Err(err) = guard.incidents.record(cutback).await {
        tracing::error!(error = %err, "incident not recorded");
    }
}

/// A bad verdict with a failing return point: cutting back would move everyone onto a
/// version known broken, so the routing is kept and the alarm raised, once per failing
/// stretch: a `cutback_held` revision (history, webhooks), an incident, status, metric.
async fn hold<C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    service: &ServiceRoute,
    version: &VersionRoute,
    finding: &Finding,
    started: SystemTime,
    failing: CheckReport,
) {
    let stable = &service.versions[service.stable];
    let why = format!(
        "{} is bad ({}) but the return point {}",
        version.name,
        finding.summary,
        failing.summary()
    );
    if !guard.verifier.hold_cutback(&service.name, &why) {
        return;
    }
    let advice = format!(
        "cutback held, routing kept: {} fails its checks, so rolling back does not fix this; a hotfix is needed",
        stable.name
    );
    tracing::error!(service = %service.name, version = %version.name, "{advice}: {why}");
    let origin = Origin::new("guard", format!("{advice}: {why}"))
        .with_evidence(serde_json::to_value(finding).unwrap_or_default())
        .with_checks(failing.clone());
    let ended_ms = match guard
        .control
        .note(&service.name, ChangeKind::CutbackHeld, origin)
        .await
    {
        Ok(record) => record.time_ms,
        Err(err) => {
            tracing::error!(service = %service.name, error = %err, "held cutback not journaled");
            unix_ms(SystemTime::now())
        }
    };
    let cutback = describe(
        guard, table, service, version, finding, started, ended_ms, 0,
    );
    if let Err(err) = guard
        .incidents
        .record_held(cutback, Some(failing), advice)
        .await
    {
        tracing::error!(error = %err, "incident not recorded");
    }
}

/// The numbers of a cutback (or a held one) for its incident.
#[allow(clippy::too_many_arguments)]
fn describe<'a, C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    service: &'a ServiceRoute,
    version: &'a VersionRoute,
    finding: &'a Finding,
    started: SystemTime,
    ended_ms: u64,
    restored_by: u64,
) -> Cutback<'a> {
    let now = Instant::now();
    let stable = &service.versions[service.stable];
    let window = service.guard.window;
    // This instance's users: in a fleet, each instance's incident tells of its own.
    let canary = version.stats.window_tally(window, now);
    Cutback {
        service: &service.name,
        version: &version.name,
        stable: &stable.name,
        started_ms: unix_ms(started),
        ended_ms,
        canary: side(&canary, Some(p99(version.stats.window(window, now)))),
        stable_side: side(
            &stable.stats.window_tally(window, now),
            Some(p99(stable.stats.window(window, now))),
        ),
        saved: canary.saved,
        cause: cause(guard.control.as_ref(), &service.name, &version.name, table),
        detection: serde_json::to_value(finding).unwrap_or_default(),
        summary: finding.summary.clone(),
        restored_by,
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
