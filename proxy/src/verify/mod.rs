//! Verified versions: active health checks of every endpoint (`health`), smoke checks of
//! a version as a whole (`smoke`), both over connections of their own (`request`); the
//! gate that runs a version's checks before it is given traffic (`gate`), the watch on the
//! return point (`return_point`), and what all of them last found (`Verifier`).

pub mod gate;
pub mod health;
pub mod request;
pub mod return_point;
pub mod smoke;
pub mod validate;

use crate::config::ServiceConfig;
use crate::control::error::ControlError;
use crate::control::record::rfc3339_millis;
use crate::control::record::CheckReport;
use crate::control::RoutingControl;
use crate::routing::RoutingTable;
use crate::telemetry::shadow::ShadowVerdict;
use crate::upstream::connect::Dial;
use health::HealthBoard;
use serde::Serialize;
use smoke::{CheckRun, Target};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the checks last found, shared by the checkers, the guard, the gate and the admin API.
#[derive(Debug, Default)]
pub struct Verifier {
    pub health: Arc<HealthBoard>,
    return_points: Mutex<BTreeMap<String, ReturnPoint>>,
    pub counters: Counters,
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub gate_refused: AtomicU64,
    pub gate_forced: AtomicU64,
    pub validations_failed: AtomicU64,
    pub cutbacks_held: AtomicU64,
}

/// The stable version of a service, as its watch last found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReturnPoint {
    pub version: String,
    /// When its checks last ran and last passed (RFC 3339).
    pub checked: String,
    pub checked_ms: u64,
    pub passed: Option<String>,
    pub passed_ms: Option<u64>,
    /// The last run's report.
    pub last: CheckReport,
    /// A bad verdict on another version that was not cut back because this return
    /// point fails its checks (the alarm stays up until the return point passes).
    pub held: Option<String>,
}

impl Verifier {
    fn return_points(&self) -> MutexGuard<'_, BTreeMap<String, ReturnPoint>> {
        self.return_points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every service's return point as last checked.
    pub fn return_point_status(&self) -> BTreeMap<String, ReturnPoint> {
        self.return_points().clone()
    }

    /// Takes a run of a service's stable version's checks.
    pub fn note_return_point(&self, service: &str, report: &CheckReport) {
        let now = unix_ms();
        let mut points = self.return_points();
        let previous = points
            .get(service)
            .filter(|p| p.version == report.version)
            .cloned();
        let (passed, passed_ms) = match report.passed {
            true => (Some(rfc3339_millis(now)), Some(now)),
            false => previous
                .as_ref()
                .map_or((None, None), |p| (p.passed.clone(), p.passed_ms)),
        };
        let held = previous.and_then(|p| p.held).filter(|_| !report.passed);
        points.insert(
            service.to_string(),
            ReturnPoint {
                version: report.version.clone(),
                checked: rfc3339_millis(now),
                checked_ms: now,
                passed,
                passed_ms,
                last: report.clone(),
                held,
            },
        );
    }

    /// The failing report of `stable`'s last checks, when they failed: the guard must not
    /// cut back into it.
    pub fn failing_return_point(&self, service: &str, stable: &str) -> Option<CheckReport> {
        self.return_points()
            .get(service)
            .filter(|p| p.version == stable && !p.last.passed)
            .map(|p| p.last.clone())
    }

    /// Records that a cutback was held; true the first time for this failing run, so the
    /// alarm is raised once, not at every look of the guard.
    pub fn hold_cutback(&self, service: &str, why: &str) -> bool {
        let mut points = self.return_points();
        match points.get_mut(service) {
            Some(point) if point.held.is_none() => {
                point.held = Some(why.to_string());
                self.counters.cutbacks_held.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Forgets services no longer watched (only their stable takes traffic).
    pub fn retain_return_points(&self, watched: impl Fn(&str) -> bool) {
        self.return_points().retain(|service, _| watched(service));
    }
}

/// Where `version` of `service` runs, for its checks: its endpoints as the live table has
/// them, with whether active health checks hold each out of the rotation.
pub fn target(service: &ServiceConfig, table: &RoutingTable, version: &str) -> Target {
    let route = table
        .services()
        .iter()
        .find(|s| *s.name == *service.name)
        .and_then(|s| s.versions.iter().find(|v| *v.name == *version));
    let config = service.version(version);
    let http2 = match (route, config) {
        (Some(route), _) => route.protocol.is_http2(),
        (None, Some(config)) => config.protocol.is_http2(),
        (None, None) => false,
    };
    let endpoints = match route {
        Some(route) => route
            .endpoints
            .iter()
            .map(|e| (e.dial(), !e.is_checked_down()))
            .collect(),
        None => config
            .map(|v| {
                v.endpoints
                    .iter()
                    .map(|&addr| (Dial::to(v, addr), true))
                    .collect()
            })
            .unwrap_or_default(),
    };
    Target {
        version: version.to_string(),
        host: service.hosts.first().cloned(),
        endpoints,
        http2,
    }
}

/// Runs `version`'s checks now.
pub async fn check_version(
    service: &ServiceConfig,
    table: &RoutingTable,
    version: &str,
) -> CheckRun {
    let mut run = smoke::run(&service.verify.checks, &target(service, table, version)).await;
    if let Some(result) = shadow_check(table, &service.name, version) {
        run.add(result);
    }
    run
}

/// The shadow check of `version`, when it is the service's shadow: its answers to copies
/// of live requests against stable's. Not enough of them yet is not a failure.
fn shadow_check(table: &RoutingTable, service: &str, version: &str) -> Option<smoke::CheckResult> {
    let route = table.services().iter().find(|s| *s.name == *service)?;
    let shadow = route.shadow.as_ref()?;
    if *route.versions[shadow.version].name != *version {
        return None;
    }
    let (passed, got) = match shadow.stats.verdict(shadow.bounds()) {
        ShadowVerdict::Pass => (true, "answers match stable's, beyond noise".to_string()),
        ShadowVerdict::Inconclusive { reason } => (true, format!("inconclusive: {reason}")),
        ShadowVerdict::Fail { summary } => (false, summary),
    };
    Some(smoke::CheckResult {
        check: "shadow".to_string(),
        endpoint: "-".to_string(),
        passed,
        got,
        ms: 0,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /services/{svc}/checks`: `{"version": ..}`, or `{}` for every version with traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What `checks` found: every version's run, and whether all passed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct ChecksResponse {
    pub service: String,
    pub passed: bool,
    pub runs: Vec<CheckRun>,
}

/// Runs the checks of one version of `service` now, or of every version with traffic
/// (stable first). A run of the stable version also refreshes the return point.
pub async fn run_checks(
    control: &impl RoutingControl,
    table: &RoutingTable,
    verifier: &Verifier,
    service: &str,
    request: &ChecksRequest,
) -> Result<ChecksResponse, ControlError> {
    let config = control.service(service)?;
    let routing = control
        .routing_of(service)
        .ok_or_else(|| ControlError::NotFound(format!("no service {service:?}")))?;
    let versions = match &request.version {
        Some(version) if config.version(version).is_some() => vec![version.clone()],
        Some(version) => {
            let names: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
            return Err(ControlError::NotFound(format!(
                "{service} has no version {version:?} (versions: {})",
                names.join(", ")
            )));
        }
        None => {
            let weights = routing.effective_weights();
            let others = weights
                .iter()
                .filter(|(v, &w)| w > 0 && **v != routing.stable)
                .map(|(v, _)| v.clone());
            std::iter::once(routing.stable.clone())
                .chain(others)
                .collect()
        }
    };
    let mut runs = Vec::new();
    for version in versions {
        let run = check_version(&config, table, &version).await;
        if version == routing.stable {
            verifier.note_return_point(service, &run.report);
        }
        runs.push(run);
    }
    Ok(ChecksResponse {
        service: service.to_string(),
        passed: runs.iter().all(|r| r.report.passed),
        runs,
    })
}
