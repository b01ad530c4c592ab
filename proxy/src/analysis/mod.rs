//! Analysis on the team's own signals: the `[[services.NAME.analysis]]` PromQL queries, run
//! against Prometheus while a non-stable version takes traffic. The guard is the fast judge
//! in the request path; analysis is the slow one beside it:
//!
//! - a run passes, fails, or has nothing to judge (no data, Prometheus unreachable or
//!   refusing the query); nothing to judge is never a pass;
//! - `failures` failed runs in a row abort the canary through the writer, latched, with an
//!   incident holding the query, the values and the condition (`runner`);
//! - a rollout step advances only once every analysis has passed a run begun after the
//!   step took effect (`step_hold`), so an unreachable Prometheus holds the rollout.
//!
//! In a fleet only the member driving the service's rollout runs its queries (`Scope`).

pub mod client;
mod prometheus;
mod runner;
mod verdict;

pub use prometheus::{query, QueryError};
pub use runner::{run, Analysis, Scope};
pub use verdict::judge;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// What one run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Pass,
    Fail,
    /// An empty answer or NaN, with `no_data = "hold"`.
    NoData,
    /// Prometheus unreachable, too slow, or refusing the query.
    Unreachable,
}

impl RunOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Pass => "pass",
            RunOutcome::Fail => "fail",
            RunOutcome::NoData => "no data",
            RunOutcome::Unreachable => "unreachable",
        }
    }
}

/// One analysis of one version, as status shows it and rollouts read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisStatus {
    pub name: String,
    /// The version judged (against stable when the condition says so).
    pub version: String,
    pub condition: String,
    pub runs: u64,
    pub failed_in_a_row: u32,
    /// Failed runs in a row that abort.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// The last run in one line.
    pub detail: String,
    /// When the last run began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When the last run began, for a rollout's step.
    #[serde(skip)]
    pub ran_at: Option<Instant>,
}

/// The latest analyses per service.
#[derive(Debug, Default)]
pub struct AnalysisBoard {
    services: Mutex<BTreeMap<String, Vec<AnalysisStatus>>>,
}

impl AnalysisBoard {
    pub fn of(&self, service: &str) -> Vec<AnalysisStatus> {
        self.lock().get(service).cloned().unwrap_or_default()
    }

    fn publish(&self, services: BTreeMap<String, Vec<AnalysisStatus>>) {
        *self.lock() = services;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<AnalysisStatus>>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a rollout step of `canary`, in force since `step_started`, may not advance on the
/// analyses named `configured` (as `found` on the board); `None` when every one has passed
/// a run begun since.
pub fn step_hold(
    configured: &[String],
    found: &[AnalysisStatus],
    canary: &str,
    step_started: Instant,
) -> Option<String> {
    for name in configured {
        let status = found
            .iter()
            .find(|s| s.name == *name && s.version == canary);
        let why = match status {
            Some(s) if s.ran_at.is_some_and(|at| at >= step_started) => match s.outcome {
                Some(RunOutcome::Pass) => continue,
                Some(RunOutcome::Fail) => format!(
                    "failed {} of {} runs that abort: {}",
                    s.failed_in_a_row, s.failures, s.detail
                ),
                _ => format!("{} (holds)", s.detail),
            },
            Some(s) if s.outcome.is_some_and(|o| o != RunOutcome::Pass) => {
                format!("{} (holds; waiting for a run at this step)", s.detail)
            }
            _ => "waiting for a run at this step".to_string(),
        };
        return Some(format!("analysis {name:?}: {why}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(outcome: RunOutcome, ran_at: Instant) -> AnalysisStatus {
        AnalysisStatus {
            name: "checkout".into(),
            version: "canary".into(),
            condition: "canary >= stable - 0.01".into(),
            runs: 3,
            failed_in_a_row: u32::from(outcome == RunOutcome::Fail),
            failures: 2,
            outcome: Some(outcome),
            canary_value: Some(0.9),
            stable_value: Some(0.99),
            detail: format!("{} detail", outcome.label()),
            last_run: None,
            ran_at: Some(ran_at),
        }
    }

    #[test]
    fn a_step_goes_on_only_on_a_pass_begun_since_it_took_effect() {
        let configured = vec!["checkout".to_string()];
        let step = Instant::now();
        let before = step - Duration::from_secs(1);
        let after = step + Duration::from_secs(1);
        let hold = |found: &[AnalysisStatus]| step_hold(&configured, found, "canary", step);
        assert_eq!(hold(&[status(RunOutcome::Pass, after)]), None);
        assert_eq!(hold(&[status(RunOutcome::Pass, step)]), None);
        let cases = [
            (vec![], "waiting for a run"),
            (vec![status(RunOutcome::Pass, before)], "waiting for a run"),
            (
                vec![status(RunOutcome::Unreachable, before)],
                "unreachable detail (holds; waiting",
            ),
            (
                vec![status(RunOutcome::NoData, after)],
                "no data detail (holds)",
            ),
            (
                vec![status(RunOutcome::Unreachable, after)],
                "unreachable detail (holds)",
            ),
            (vec![status(RunOutcome::Fail, after)], "failed 1 of 2"),
        ];
        for (found, expected) in cases {
            let why = hold(&found).expect("held");
            assert!(why.contains(expected), "{why}");
            assert!(why.starts_with("analysis \"checkout\""), "{why}");
        }
        // Another version's pass is not the canary's.
        let mut other = status(RunOutcome::Pass, after);
        other.version = "green".into();
        assert!(hold(&[other]).is_some());
        // No analysis configured: nothing holds.
        assert_eq!(step_hold(&[], &[], "canary", step), None);
    }
}
