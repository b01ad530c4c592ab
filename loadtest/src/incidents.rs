//! The guard's cutbacks and the analyses' aborts in a run, from the proxy's own incident log
//! (`state/incidents.jsonl`), timed by when the proxy logged the revision that made each
//! one (after its journal write and table swap), so the time is when clients were moved.
//!
//! A client cannot always see a cutback: a crashed canary answers nothing whether or not
//! it still has traffic (retries on stable answer for it). The proxy's record can.

use crate::proxy::RevisionMark;
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard::guard::incident::{Incident, INCIDENTS_FILE};

#[derive(Debug, Clone, Serialize)]
pub struct GuardCutback {
    pub version: String,
    /// The judge's rule: "error_rate", "latency" or "unreachable".
    pub rule: String,
    /// Seconds into the run when the proxy had moved the traffic.
    pub at_secs: f64,
    pub revision: u64,
    pub summary: String,
    /// Canary requests over the guard's window that failed and reached clients, and that
    /// were answered by stable instead.
    pub failed: u64,
    pub saved: u64,
}

/// An abort by a Prometheus analysis (incident rule "analysis"), with what it saw.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisAbort {
    pub version: String,
    pub analysis: String,
    /// Seconds into the run when the proxy had moved the traffic.
    pub at_secs: f64,
    pub revision: u64,
    pub query: String,
    pub condition: String,
    pub canary_value: Option<f64>,
    pub stable_value: Option<f64>,
    /// The failed runs that made it (each with its values).
    pub failed_runs: usize,
    pub summary: String,
}

/// What the proxy's incident log says cut versions back.
#[derive(Debug, Clone, Default)]
pub struct Cutbacks {
    pub guard: Vec<GuardCutback>,
    pub analysis: Vec<AnalysisAbort>,
}

/// The cutbacks recorded in `state_dir` (none when the file is missing or unreadable).
pub fn read(state_dir: &Path, epoch: SystemTime, revisions: &[RevisionMark]) -> Cutbacks {
    let mut cutbacks = Cutbacks::default();
    let Ok(text) = std::fs::read_to_string(state_dir.join(INCIDENTS_FILE)) else {
        return cutbacks;
    };
    let epoch_ms = epoch
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // An incident's later line (checks attached) replaces its earlier one.
    let mut incidents: Vec<Incident> = Vec::new();
    for incident in text
        .lines()
        .filter_map(|line| serde_json::from_str::<Incident>(line).ok())
    {
        match incidents.iter_mut().find(|i| i.id == incident.id) {
            Some(earlier) => *earlier = incident,
            None => incidents.push(incident),
        }
    }
    for incident in incidents {
        let logged = revisions
            .iter()
            .find(|mark| mark.revision == incident.restored_by);
        let at_secs = logged.map_or_else(
            || incident.ended_ms.saturating_sub(epoch_ms) as f64 / 1e3,
            |mark| mark.at_secs,
        );
        let detection = &incident.detection;
        let text = |key: &str| detection[key].as_str().unwrap_or("").to_string();
        let rule = detection["rule"].as_str().unwrap_or("unknown");
        if rule == "analysis" {
            cutbacks.analysis.push(AnalysisAbort {
                analysis: text("analysis"),
                query: text("query"),
                condition: text("condition"),
                canary_value: detection["canary_value"].as_f64(),
                stable_value: detection["stable_value"].as_f64(),
                failed_runs: detection["failed_runs"].as_array().map_or(0, Vec::len),
                version: incident.version,
                at_secs,
                revision: incident.restored_by,
                summary: incident.summary,
            });
            continue;
        }
        cutbacks.guard.push(GuardCutback {
            rule: rule.to_string(),
            version: incident.version,
            at_secs,
            revision: incident.restored_by,
            summary: incident.summary,
            failed: incident.users.failed,
            saved: incident.users.saved,
        });
    }
    cutbacks
}
