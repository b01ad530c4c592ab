//! The admin API's one request/response model, shared by the server and the `ctl` client.

use super::record::RevisionRecord;
use crate::config::Release;
use crate::guard::incident::Incident;
use crate::guard::rollout::Rollout;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of every mutating call. Which fields an endpoint needs: `weights` for
/// `PUT /services/{svc}/weights`, `version` for `switch`, optional `to` for `rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// Who asks (a user name, or `guard`); `api` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// Body of `POST /reload` (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// The revision the data plane runs after the reload.
    pub revision: u64,
    /// Routing revisions the reload recorded (empty when it only changed topology).
    pub changes: Vec<RevisionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub revision: u64,
    /// The proxy listener actually bound.
    pub listen: String,
    /// The admin TCP listener actually bound, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Length of the window the rates and latencies cover.
    pub window_secs: u64,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub hosts: Vec<String>,
    pub stable: String,
    pub latched: bool,
    pub frozen: bool,
    /// The last revision that changed this service.
    pub revision: u64,
    pub versions: Vec<VersionStatus>,
    /// The guard's latest verdict on the version it judges (none: nothing to judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardStatus>,
    /// The service's latest rollout, if it ever had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    pub version: String,
    /// "healthy", "inconclusive" or "bad".
    pub verdict: String,
    pub detail: String,
    pub log_likelihood_ratio: f64,
    /// How long the verdict has been healthy without a break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_for_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The canary's percent at the step in force.
    pub percent: u32,
    /// Why a running rollout is not advancing right now (e.g. "frozen", "baking ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentsResponse {
    /// Newest first.
    pub incidents: Vec<Incident>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionStatus {
    pub name: String,
    pub release: Release,
    /// The recorded weight.
    pub weight: u64,
    /// Share of traffic the data plane actually sends (0.0..=1.0; all on stable while latched).
    pub share: f64,
    pub stable: bool,
    pub endpoints: Vec<String>,
    /// Endpoints left out of the rotation after refusing a connection, until
    /// `endpoint_backoff` has passed; absent from a server too old to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusing: Option<Vec<String>>,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub service: String,
    /// Oldest first.
    pub revisions: Vec<RevisionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A refused admin request: an HTTP status and one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The change was not recorded (journal write failed); routing is unchanged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
