//! The guard's verdicts and looks, incidents, rollouts in progress, and the latest run of
//! each Prometheus analysis run here.

use super::exposition::{Exposition, Kind, Labels};
use super::traffic::per_service;
use super::Parts;
use crate::analysis::{AnalysisStatus, RunOutcome};
use crate::control::ControlSnapshot;

pub async fn guard(out: &mut Exposition, parts: &Parts, snapshot: &ControlSnapshot) {
    let mut verdicts = out.family(
        "switchyard_guard_verdict",
        Kind::Gauge,
        "The guard's latest verdict on the version it judges: 0 healthy, 1 inconclusive, 2 bad.",
    );
    for (service, verdict) in parts.board.all() {
        let labels = Labels::version(&service, &verdict.version);
        verdicts.sample(&labels, verdict.verdict.level());
    }
    out.single(
        "switchyard_guard_looks_total",
        Kind::Counter,
        "Times the guard has judged every canary.",
        parts.board.looks(),
    );
    let incidents = parts.incidents.list(None);
    per_service(
        out,
        snapshot,
        ("switchyard_incidents_total", Kind::Counter),
        "Incidents recorded (automatic cutbacks), over the whole incident log.",
        |name, _| incidents.iter().filter(|i| i.service == name).count() as u64,
    );
    let mut percent = out.family(
        "switchyard_rollout_percent",
        Kind::Gauge,
        "The canary's percent at the step in force, for running or paused rollouts.",
    );
    for (service, rollout) in parts.rollouts.all().await {
        if rollout.rollout.status.is_active() {
            let labels = Labels::version(&service, &rollout.rollout.canary);
            percent.sample(&labels, rollout.percent);
        }
    }
}

pub fn analysis(out: &mut Exposition, parts: &Parts, snapshot: &ControlSnapshot) {
    let all: Vec<(Labels, AnalysisStatus)> = snapshot
        .services
        .keys()
        .flat_map(|service| {
            parts.analyses.of(service).into_iter().map(move |a| {
                let labels = Labels::of("service", service)
                    .and("analysis", &a.name)
                    .and("version", &a.version);
                (labels, a)
            })
        })
        .collect();
    let mut outcomes = out.family(
        "switchyard_analysis_outcome",
        Kind::Gauge,
        "An analysis's last run: 0 pass, 1 no data, 2 Prometheus unreachable, 3 fail.",
    );
    for (labels, a) in &all {
        let Some(outcome) = a.outcome else { continue };
        let level = match outcome {
            RunOutcome::Pass => 0,
            RunOutcome::NoData => 1,
            RunOutcome::Unreachable => 2,
            RunOutcome::Fail => 3,
        };
        outcomes.sample(labels, level);
    }
    let mut failed = out.family(
        "switchyard_analysis_failed_in_a_row",
        Kind::Gauge,
        "Failed runs in a row of an analysis (it aborts at its `failures`).",
    );
    for (labels, a) in &all {
        failed.sample(labels, a.failed_in_a_row);
    }
    let mut values = out.family(
        "switchyard_analysis_value",
        Kind::Gauge,
        "The value an analysis's query gave at its last run, for the canary and for stable.",
    );
    for (labels, a) in &all {
        for (side, value) in [("canary", a.canary_value), ("stable", a.stable_value)] {
            if let Some(value) = value {
                values.sample(&labels.clone().and("side", side), value);
            }
        }
    }
}
