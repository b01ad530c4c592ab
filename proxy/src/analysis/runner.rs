//! The analysis loop: every `LOOK`, find each version that takes traffic beside stable on a
//! service with analyses, run the queries that are due (all at once, each bounded by its
//! timeout), judge them, publish them, and abort a version whose analysis failed
//! `failures` runs in a row.

use super::{judge, prometheus, AnalysisBoard, AnalysisStatus, RunOutcome};
use crate::clock::unix_ms;
use crate::config::AnalysisSettings;
use crate::control::command::Change;
use crate::control::record::{rfc3339_millis, Origin};
use crate::control::RoutingControl;
use crate::dataplane::proxy::DataPlane;
use crate::guard::evidence::{cause, p99, side};
use crate::guard::incident::{Cutback, IncidentLog};
use crate::routing::RoutingTable;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the loop looks for due runs.
const LOOK: Duration = Duration::from_millis(200);

/// Whether this instance runs a service's analyses: always alone; in a fleet, only where
/// the service's rollout is driven.
pub type Scope = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the loop works with.
pub struct Analysis<C> {
    /// The control plane (the guard's `Verified`, so an abort is validated alike).
    pub control: Arc<C>,
    pub plane: Arc<DataPlane>,
    pub incidents: Arc<IncidentLog>,
    pub board: Arc<AnalysisBoard>,
    pub scope: Scope,
}

/// One analysis of one version under way.
struct Tracked {
    settings: AnalysisSettings,
    stable: String,
    next: Instant,
    status: AnalysisStatus,
    /// The values of the failed runs in a row, for the incident: (when, canary, stable).
    failed: Vec<(String, Option<f64>, Option<f64>)>,
    /// When the streak of failures began (unix ms).
    failing_since: Option<SystemTime>,
}

/// (service, analysis, version)
type Key = (String, String, String);

/// Runs until `stop` turns true.
pub async fn run<C: RoutingControl>(analysis: Analysis<C>, mut stop: watch::Receiver<bool>) {
    let mut tracked: HashMap<Key, Tracked> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = stop.wait_for(|&stop| stop) => return,
        }
        let table = analysis.plane.table.load_full();
        let active = active(&analysis, &table);
        tracked.retain(|key, _| active.iter().any(|(k, _, _)| k == key));
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, settings, stable) in active {
            let entry = tracked
                .entry(key.clone())
                .or_insert_with(|| track(&key, settings, stable));
            if entry.next <= now {
                entry.next = now + entry.settings.every;
                due.push(key);
            }
        }
        let runs = due.iter().map(|key| {
            let entry = &tracked[key];
            run_once(&key.0, &key.2, &entry.settings, &entry.stable)
        });
        let results = futures_util::future::join_all(runs).await;
        for (key, (began, canary, stable, outcome, detail)) in due.into_iter().zip(results) {
            let Some(entry) = tracked.get_mut(&key) else {
                continue;
            };
            note(&key, entry, began, canary, stable, outcome, detail);
            if entry.status.failed_in_a_row >= entry.settings.failures {
                if let Some(entry) = tracked.remove(&key) {
                    abort(&analysis, &table, &key, entry).await;
                }
            }
        }
        let mut board: BTreeMap<String, Vec<AnalysisStatus>> = BTreeMap::new();
        for ((service, _, _), entry) in &tracked {
            board
                .entry(service.clone())
                .or_default()
                .push(entry.status.clone());
        }
        board.values_mut().for_each(|list| {
            list.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)))
        });
        analysis.board.publish(board);
    }
}

/// Every (service, analysis, version) to judge now, with the settings and the stable.
fn active<C: RoutingControl>(
    analysis: &Analysis<C>,
    table: &RoutingTable,
) -> Vec<(Key, AnalysisSettings, String)> {
    let mut active = Vec::new();
    for route in table.services() {
        let Ok(service) = analysis.control.service(&route.name) else {
            continue;
        };
        if service.analyses.is_empty() || !(analysis.scope)(&service.name) {
            continue;
        }
        let Some(routing) = analysis.control.routing_of(&service.name) else {
            continue;
        };
        if routing.latched {
            continue;
        }
        let canaries = routing
            .weights
            .iter()
            .filter(|(version, &weight)| weight > 0 && **version != routing.stable);
        for (version, _) in canaries {
            for settings in &service.analyses {
                let key = (service.name.clone(), settings.name.clone(), version.clone());
                active.push((key, settings.clone(), routing.stable.clone()));
            }
        }
    }
    active
}

fn track(key: &Key, settings: AnalysisSettings, stable: String) -> Tracked {
    let status = AnalysisStatus {
        name: settings.name.clone(),
        version: key.2.clone(),
        condition: settings.condition.to_string(),
        runs: 0,
        failed_in_a_row: 0,
        failures: settings.failures,
        outcome: None,
        canary_value: None,
        stable_value: None,
        detail: "not run yet".into(),
        last_run: None,
        ran_at: None,
    };
    Tracked {
        settings,
        stable,
        next: Instant::now(),
        status,
        failed: Vec::new(),
        failing_since: None,
    }
}

type RunResult = (Instant, Option<f64>, Option<f64>, RunOutcome, String);

/// One run: the canary's query (and stable's, when the condition compares), judged.
async fn run_once(
    service: &str,
    version: &str,
    settings: &AnalysisSettings,
    stable: &str,
) -> RunResult {
    let began = Instant::now();
    let timeout = settings.timeout();
    let ask = |version: &str| {
        let query = settings.query_for(service, version);
        async move { prometheus::query(&settings.prometheus, &query, timeout).await }
    };
    let (canary, stable) = match settings.against_stable() {
        true => {
            let (canary, stable) = tokio::join!(ask(version), ask(stable));
            (canary, stable.map(Some))
        }
        false => (ask(version).await, Ok(None)),
    };
    match (canary, stable) {
        (Ok(canary), Ok(stable)) => {
            let (outcome, detail) = judge(settings, canary, stable.flatten());
            (began, canary, stable.flatten(), outcome, detail)
        }
        (Err(err), _) | (_, Err(err)) => {
            (began, None, None, RunOutcome::Unreachable, err.to_string())
        }
    }
}

/// Takes a run into the analysis's status; logs a change of outcome once.
fn note(
    key: &Key,
    entry: &mut Tracked,
    began: Instant,
    canary: Option<f64>,
    stable: Option<f64>,
    outcome: RunOutcome,
    detail: String,
) {
    let status = &mut entry.status;
    let time = rfc3339_millis(unix_ms(SystemTime::now()));
    if status.outcome != Some(outcome) {
        let (service, name, version) = key;
        match outcome {
            RunOutcome::Pass => {
                tracing::info!(%service, analysis = %name, %version, "analysis passes: {detail}")
            }
            _ => {
                tracing::warn!(%service, analysis = %name, %version, outcome = outcome.label(), "analysis: {detail}")
            }
        }
    }
    match outcome {
        RunOutcome::Fail => {
            status.failed_in_a_row += 1;
            entry.failing_since.get_or_insert_with(SystemTime::now);
            entry.failed.push((time.clone(), canary, stable));
        }
        RunOutcome::Pass => {
            status.failed_in_a_row = 0;
            entry.failing_since = None;
            entry.failed.clear();
        }
        // Nothing to judge is neither a pass nor a failure: the streak stands.
        RunOutcome::NoData | RunOutcome::Unreachable => {}
    }
    status.runs += 1;
    status.outcome = Some(outcome);
    status.canary_value = canary;
    status.stable_value = stable;
    status.detail = detail;
    status.last_run = Some(time);
    status.ran_at = Some(began);
}

/// All traffic back on stable, latched, like a guard's bad verdict; then the incident.
async fn abort<C: RoutingControl>(
    analysis: &Analysis<C>,
    table: &RoutingTable,
    (service, name, version): &Key,
    entry: Tracked,
) {
    let settings = &entry.settings;
    let summary = format!(
        "analysis {name:?} failed {} runs in a row: {}",
        entry.status.failed_in_a_row, entry.status.detail
    );
    let runs: Vec<serde_json::Value> = entry
        .failed
        .iter()
        .map(|(time, canary, stable)| {
            serde_json::json!({"time": time, "canary": canary, "stable": stable})
        })
        .collect();
    let evidence = serde_json::json!({
        "rule": "analysis",
        "analysis": name,
        "prometheus": settings.prometheus,
        "query": settings.query_for(service, version),
        "stable_query": settings.against_stable().then(|| settings.query_for(service, &entry.stable)),
        "condition": settings.condition.to_string(),
        "canary_value": entry.status.canary_value,
        "stable_value": entry.status.stable_value,
        "failures": settings.failures,
        "failed_runs": runs,
        "summary": summary,
    });
    let origin = Origin::new("analysis", format!("{version} is bad: {summary}"))
        .with_evidence(evidence.clone());
    let record = match analysis
        .control
        .change(service, Change::Abort {}, origin)
        .await
    {
        Ok(record) => record,
        Err(_)
            if analysis
                .control
                .routing_of(service)
                .is_some_and(|r| r.latched) =>
        {
            tracing::info!(%service, %version, "already cut back");
            return;
        }
        Err(err) => {
            tracing::error!(%service, %version, error = %err, "analysis could not abort");
            return;
        }
    };
    tracing::warn!(%service, %version, revision = record.revision, "analysis aborted the canary: {summary}");
    let Some(route) = table.services().iter().find(|s| *s.name == **service) else {
        return;
    };
    let now = std::time::Instant::now();
    let window = route.guard.window;
    let stats = |name: &str| {
        route.versions.iter().find(|v| *v.name == *name).map(|v| {
            (
                v.stats.window_tally(window, now),
                p99(v.stats.window(window, now)),
            )
        })
    };
    let (canary, canary_p99) = stats(version).unwrap_or_default();
    let (stable, stable_p99) = stats(&entry.stable).unwrap_or_default();
    let cutback = Cutback {
        service,
        version,
        stable: &entry.stable,
        started_ms: unix_ms(entry.failing_since.unwrap_or_else(SystemTime::now)),
        ended_ms: record.time_ms,
        canary: side(&canary, Some(canary_p99)),
        stable_side: side(&stable, Some(stable_p99)),
        saved: canary.saved,
        cause: cause(analysis.control.as_ref(), service, version, table),
        detection: evidence,
        summary,
        restored_by: record.revision,
    };
    if let Err(err) = analysis.incidents.record(cutback).await {
        tracing::error!(error = %err, "incident not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::analysis::{parse_condition, NoData};

    #[test]
    fn only_a_pass_ends_a_streak_of_failures() {
        let settings = AnalysisSettings {
            name: "checkout".into(),
            prometheus: "http://127.0.0.1:9".into(),
            query: "x{version=\"{version}\"}".into(),
            every: Duration::from_secs(1),
            condition: parse_condition("canary >= stable - 0.01").unwrap(),
            failures: 2,
            no_data: NoData::Hold,
        };
        let key: Key = ("shop".into(), "checkout".into(), "canary".into());
        let mut entry = track(&key, settings, "blue".into());
        let mut run = |outcome| {
            let values = (Some(0.9), Some(0.99));
            note(
                &key,
                &mut entry,
                Instant::now(),
                values.0,
                values.1,
                outcome,
                "x".into(),
            );
            (entry.status.failed_in_a_row, entry.failed.len())
        };
        assert_eq!(run(RunOutcome::Fail), (1, 1));
        assert_eq!(run(RunOutcome::NoData), (1, 1));
        assert_eq!(run(RunOutcome::Unreachable), (1, 1));
        assert_eq!(run(RunOutcome::Fail), (2, 2));
        assert_eq!(run(RunOutcome::Pass), (0, 0));
    }
}
