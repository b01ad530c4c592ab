//! Incident records: what a cutback was about, written to `state.dir/incidents.jsonl`
//! (one JSON object a line) and kept in memory for `ctl incidents`, the API and the page.

use super::judge::Side;
use crate::config::Release;
use crate::control::record::CheckReport;
use crate::verify::gate::IncidentNotes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub const INCIDENTS_FILE: &str = "incidents.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub service: String,
    /// The version that was cut back, and the stable version that took its traffic.
    pub version: String,
    pub stable: String,
    /// When the canary started going bad (first evidence after its last calm moment).
    pub started: String,
    pub started_ms: u64,
    /// The cutback.
    pub ended: String,
    pub ended_ms: u64,
    /// How long users were exposed, start to cutback.
    pub duration_ms: u64,
    pub users: UserImpact,
    /// The revision that sent traffic to the version, and what that version is.
    pub cause: Option<Cause>,
    /// The rule and its numbers.
    pub detection: serde_json::Value,
    pub summary: String,
    /// The revision that put all traffic back on stable (0 when the cutback was held).
    pub restored_by: u64,
    /// The cutback was held: the return point fails its checks, so routing was kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The checks of the version that takes the traffic, run right after the cutback
    /// (or, when it was held, the return point's failing ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<CheckReport>,
    /// What the numbers alone do not say, e.g. that rolling back does not fix this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// What users experienced over the guard's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserImpact {
    pub canary: SideReport,
    pub stable: SideReport,
    /// Canary requests that failed and reached the user.
    pub failed: u64,
    /// Canary requests that failed and were answered by stable instead.
    pub saved: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl From<&Side> for SideReport {
    fn from(side: &Side) -> Self {
        SideReport {
            requests: side.requests,
            errors: side.errors,
            error_rate: side.error_rate(),
            p99_ms: side.p99.unwrap_or_default().as_secs_f64() * 1e3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub revision: u64,
    pub time: String,
    pub actor: String,
    pub reason: String,
    pub release: Release,
}

/// Everything known about a cutback when it happens; the log numbers and keeps it.
#[derive(Debug)]
pub struct Cutback<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub stable: &'a str,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub canary: Side,
    pub stable_side: Side,
    pub saved: u64,
    pub cause: Option<Cause>,
    /// The rule and its numbers (the guard's finding, an analysis's values), and one line.
    pub detection: serde_json::Value,
    pub summary: String,
    pub restored_by: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("incident log {}: {source}", path.display())]
pub struct IncidentError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug)]
pub struct IncidentLog {
    path: PathBuf,
    incidents: Mutex<Vec<Incident>>,
}

impl IncidentLog {
    /// Opens the log in `dir`, reading what earlier runs recorded (a torn last line from a
    /// crash is skipped).
    pub fn open(dir: &Path) -> Result<IncidentLog, IncidentError> {
        let path = dir.join(INCIDENTS_FILE);
        let incidents = match std::fs::read_to_string(&path) {
            Ok(text) => {
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
                incidents
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(IncidentError { path, source }),
        };
        Ok(IncidentLog {
            path,
            incidents: Mutex::new(incidents),
        })
    }

    /// Records a cutback as an incident, durably, and returns it.
    pub async fn record(&self, cutback: Cutback<'_>) -> Result<Incident, IncidentError> {
        let incident = {
            let incidents = self
                .incidents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let id = incidents.last().map_or(1, |last| last.id + 1);
            incident_of(id, cutback)
        };
        self.write(incident).await
    }

    /// Records a bad verdict that was not cut back because the return point fails its
    /// checks (or its health checks): the alarm, with those checks and what to do.
    pub async fn record_held(
        &self,
        cutback: Cutback<'_>,
        checks: Option<CheckReport>,
        advice: String,
    ) -> Result<Incident, IncidentError> {
        let mut incident = {
            let incidents = self
                .incidents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let id = incidents.last().map_or(1, |last| last.id + 1);
            incident_of(id, cutback)
        };
        incident.held = true;
        incident.restored_by = 0;
        incident.checks = checks;
        incident.advice = Some(advice);
        self.write(incident).await
    }

    /// Adds the validation run after the cutback made by revision `restored_by` to its
    /// incident, if there is one (written again as a later line, which wins on load).
    pub async fn attach_checks(
        &self,
        restored_by: u64,
        checks: CheckReport,
        advice: Option<String>,
    ) -> Result<Option<Incident>, IncidentError> {
        let found = self
            .incidents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|i| i.restored_by == restored_by && !i.held)
            .cloned();
        let Some(mut incident) = found else {
            return Ok(None);
        };
        incident.checks = Some(checks);
        incident.advice = advice;
        self.write(incident).await.map(Some)
    }

    /// Appends `incident` durably, then shows it (replacing an earlier one of its id).
    async fn write(&self, incident: Incident) -> Result<Incident, IncidentError> {
        let mut line = serde_json::to_vec(&incident).unwrap_or_default();
        line.push(b'\n');
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|result| result);
        written.map_err(|source| IncidentError {
            path: self.path.clone(),
            source,
        })?;
        let mut incidents = self
            .incidents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match incidents.iter_mut().find(|i| i.id == incident.id) {
            Some(earlier) => *earlier = incident.clone(),
            None => incidents.push(incident.clone()),
        }
        Ok(incident)
    }

    /// Incidents, newest first, optionally of one service.
    pub fn list(&self, service: Option<&str>) -> Vec<Incident> {
        let incidents = self
            .incidents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        incidents
            .iter()
            .rev()
            .filter(|incident| service.is_none_or(|s| incident.service == s))
            .cloned()
            .collect()
    }
}

fn incident_of(id: u64, cutback: Cutback<'_>) -> Incident {
    use crate::control::record::rfc3339_millis;
    let canary = SideReport::from(&cutback.canary);
    Incident {
        id,
        service: cutback.service.to_string(),
        version: cutback.version.to_string(),
        stable: cutback.stable.to_string(),
        started: rfc3339_millis(cutback.started_ms),
        started_ms: cutback.started_ms,
        ended: rfc3339_millis(cutback.ended_ms),
        ended_ms: cutback.ended_ms,
        duration_ms: cutback.ended_ms.saturating_sub(cutback.started_ms),
        users: UserImpact {
            failed: canary.errors.saturating_sub(cutback.saved),
            saved: cutback.saved,
            canary,
            stable: SideReport::from(&cutback.stable_side),
        },
        cause: cutback.cause,
        detection: cutback.detection,
        summary: cutback.summary,
        restored_by: cutback.restored_by,
        held: false,
        checks: None,
        advice: None,
    }
}

impl IncidentNotes for IncidentLog {
    fn attach_checks(
        &self,
        restored_by: u64,
        checks: CheckReport,
        advice: Option<String>,
    ) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            IncidentLog::attach_checks(self, restored_by, checks, advice)
                .await
                .map(|found| found.is_some())
                .map_err(|err| err.to_string())
        })
    }
}
