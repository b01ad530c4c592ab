//! The guard's cutbacks in a run, from the proxy's own incident log
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

/// The cutbacks recorded in `state_dir` (none when the file is missing or unreadable).
pub fn read(state_dir: &Path, epoch: SystemTime, revisions: &[RevisionMark]) -> Vec<GuardCutback> {
    let Ok(text) = std::fs::read_to_string(state_dir.join(INCIDENTS_FILE)) else {
        return Vec::new();
    };
    let epoch_ms = epoch
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    text.lines()
        .filter_map(|line| serde_json::from_str::<Incident>(line).ok())
        .map(|incident| {
            let logged = revisions
                .iter()
                .find(|mark| mark.revision == incident.restored_by);
            let at_secs = logged.map_or_else(
                || incident.ended_ms.saturating_sub(epoch_ms) as f64 / 1e3,
                |mark| mark.at_secs,
            );
            GuardCutback {
                rule: incident.detection["rule"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
                version: incident.version,
                at_secs,
                revision: incident.restored_by,
                summary: incident.summary,
                failed: incident.users.failed,
                saved: incident.users.saved,
            }
        })
        .collect()
}
