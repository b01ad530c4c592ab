//! The admin API on the wire, shared by the server and the `ctl` client: the answers, and
//! the one place where a refusal becomes an HTTP status. A command travels as an `Order`
//! (`POST /commands`); `admin::rest` reads the older per-verb paths into the same `Order`.

use crate::config::Release;
use crate::control::error::ControlError;
use crate::control::record::RevisionRecord;
use crate::guard::incident::Incident;
use crate::guard::judge::VerdictKind;
use crate::verify::ReturnPoint;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::control::{JournalOutage, ReloadResponse};

/// Where an `Order` (a command with who and why) is POSTed.
pub const COMMANDS_PATH: &str = "/commands";
pub use crate::rollout::RolloutStatus;

/// Body of the per-verb paths (`admin::rest`). Which fields a verb needs: `weights` for
/// `PUT /services/{svc}/weights`, `version` for `switch`, optional `to` for `rollback`;
/// rollout commands and reload take only actor and reason.
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
    /// `release`: the new version's endpoints (`IP:port` or `name:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// `release`: "http1" (default) or "h2c".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `release`: what was deployed (version, commit, notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// `release`: start the service's configured rollout of the new version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout: bool,
    /// Go ahead even where a pre-flight gate refuses (recorded in the revision).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
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
    /// Present while the journal cannot be written: aborts still apply and wait to be
    /// recorded; other changes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalOutage>,
    /// In a fleet: the members that share this routing and what each applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetStatus>,
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
    /// The latest run of each Prometheus analysis of a version with traffic (run here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::analysis::AnalysisStatus>,
    /// The stable version's last checks, while another version takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_point: Option<ReturnPoint>,
    /// What shadow traffic found, when the service has a `[shadow]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::telemetry::shadow::ShadowReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    pub version: String,
    pub verdict: VerdictKind,
    pub detail: String,
    pub log_likelihood_ratio: f64,
    /// How long the verdict has been healthy without a break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_for_secs: Option<f64>,
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
    /// Added at runtime (`ctl release`), not in the config file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime: bool,
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
    /// gRPC calls since start by final status name; empty for a version with none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub grpc: std::collections::BTreeMap<String, u64>,
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
    /// This instance cannot answer now; another may (a fleet member not caught up).
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> ApiError {
        let message = err.to_string();
        match err {
            ControlError::NotFound(_) => ApiError::NotFound(message),
            ControlError::Invalid(_) => ApiError::BadRequest(message),
            ControlError::Refused(_) | ControlError::Moved | ControlError::ChecksDue(_) => {
                ApiError::Conflict(message)
            }
            ControlError::NotRecorded(_) | ControlError::Stopped => ApiError::Internal(message),
            ControlError::NotCaughtUp(_) => ApiError::Unavailable(message),
        }
    }
}
