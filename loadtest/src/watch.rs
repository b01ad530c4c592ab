//! What the proxy itself thought during a run, read through its admin socket every
//! 100 ms: each version's weight as the data plane sends it, the guard's verdict, and every
//! Prometheus analysis run (its values against its condition). The chart draws the guard's
//! view beside the analysis's from this.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use switchyard::admin::api::ServiceStatus;
use switchyard::analysis::AnalysisStatus;
use switchyard::ctl::client::AdminClient;

const POLL: Duration = Duration::from_millis(100);

/// One reading of the service.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_secs: f64,
    /// Share of traffic per version (0.0..=1.0) the data plane sends.
    pub shares: Vec<(String, f64)>,
    /// The guard's verdict ("healthy", "inconclusive", "bad"), none with nothing to judge.
    pub guard: Option<String>,
}

/// One analysis run, seen when its count of runs went up.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisRun {
    pub at_secs: f64,
    pub name: String,
    pub version: String,
    pub condition: String,
    /// "pass", "fail", "no data", "unreachable".
    pub outcome: String,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
}

/// The service over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceWatch {
    pub samples: Vec<Sample>,
    pub analysis_runs: Vec<AnalysisRun>,
    /// The count of runs last seen per (analysis, version).
    #[serde(skip)]
    runs: BTreeMap<(String, String), u64>,
}

impl ServiceWatch {
    /// Whether the guard ever judged a version bad.
    pub fn guard_said_bad(&self) -> bool {
        self.samples
            .iter()
            .any(|s| s.guard.as_deref() == Some("bad"))
    }

    /// How many readings had each verdict ("none" for no verdict).
    pub fn guard_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for sample in &self.samples {
            let label = sample.guard.clone().unwrap_or_else(|| "none".into());
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        counts
    }
}

/// Reads `service` through `socket` until the returned sender is dropped.
pub fn start(
    socket: PathBuf,
    service: &'static str,
    epoch: Instant,
) -> (Watching, tokio::sync::oneshot::Sender<()>) {
    let watching = Watching::default();
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let seen = watching.clone();
    tokio::spawn(async move {
        let client = AdminClient::new(socket);
        loop {
            if let Ok(status) = client.service(service).await {
                seen.record(&status, epoch.elapsed().as_secs_f64());
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut stopped => return,
            }
        }
    });
    (watching, stop)
}

#[derive(Clone, Default)]
pub struct Watching(Arc<Mutex<ServiceWatch>>);

impl Watching {
    fn record(&self, status: &ServiceStatus, at_secs: f64) {
        let mut watch = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watch.samples.push(Sample {
            at_secs,
            shares: status
                .versions
                .iter()
                .map(|v| (v.name.clone(), v.share))
                .collect(),
            guard: status.guard.as_ref().map(|g| g.verdict.label().to_string()),
        });
        for analysis in &status.analysis {
            let key = (analysis.name.clone(), analysis.version.clone());
            // A new count of runs is a new run (a count that went down: the analysis began
            // again, for a new rollout say). Runs between two readings go unseen.
            if analysis.outcome.is_some() && watch.runs.get(&key) != Some(&analysis.runs) {
                watch.runs.insert(key, analysis.runs);
                watch.analysis_runs.push(new_run(analysis, at_secs));
            }
        }
    }

    pub fn take(&self) -> ServiceWatch {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn new_run(analysis: &AnalysisStatus, at_secs: f64) -> AnalysisRun {
    AnalysisRun {
        at_secs,
        name: analysis.name.clone(),
        version: analysis.version.clone(),
        condition: analysis.condition.clone(),
        outcome: analysis.outcome.map_or("none", |o| o.label()).to_string(),
        canary: analysis.canary_value,
        stable: analysis.stable_value,
    }
}
