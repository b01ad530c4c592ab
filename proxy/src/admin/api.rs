//! The admin API on the wire, shared by the server and the `ctl` client: how a `Command`
//! travels as HTTP (method, path, JSON body), the answers, and the one place where a
//! refusal becomes an HTTP status.

use crate::config::runtime::RuntimeVersion;
use crate::config::Release;
use crate::control::command::{Change, Command, Order, RolloutAction};
use crate::control::error::ControlError;
use crate::control::record::RevisionRecord;
use crate::guard::incident::Incident;
use crate::guard::judge::VerdictKind;
use crate::verify::ReturnPoint;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::control::{JournalOutage, ReloadResponse};
pub use crate::rollout::RolloutStatus;

/// Body of every mutating call. Which fields an endpoint needs: `weights` for
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

/// The method and path that carry `command`.
pub fn route(command: &Command) -> (Method, String) {
    match command {
        Command::Change { service, change } => (
            change_method(change.verb()),
            format!("/services/{service}/{}", change.verb()),
        ),
        Command::Rollout { service, action } => (
            Method::POST,
            format!("/services/{service}/rollout/{}", action.verb()),
        ),
        Command::Approve { service } => (Method::POST, format!("/services/{service}/approve")),
        Command::Reload => (Method::POST, "/reload".to_string()),
    }
}

/// The method of a change: PUT for `weights` (it replaces them whole), else POST.
pub fn change_method(verb: &str) -> Method {
    match verb {
        "weights" => Method::PUT,
        _ => Method::POST,
    }
}

/// The body that carries `order` (its command's own fields, who and why).
pub fn body(order: &Order) -> ChangeRequest {
    let mut body = ChangeRequest {
        actor: Some(order.actor.clone()),
        reason: Some(order.reason.clone()).filter(|r| !r.is_empty()),
        force: order.force,
        ..ChangeRequest::default()
    };
    if let Command::Change { change, .. } = &order.command {
        match change {
            Change::Weights { weights } => body.weights = Some(weights.clone()),
            Change::Switch { version } => body.version = Some(version.clone()),
            Change::Rollback { to } => body.to = *to,
            Change::Release { version, spec } => {
                body.version = Some(version.clone());
                body.endpoints = Some(spec.endpoints.clone());
                body.protocol = Some(spec.protocol.clone()).filter(|p| !p.is_empty());
                body.release = Some(spec.release.clone()).filter(|r| !r.is_empty());
                body.rollout = spec.rollout;
            }
            Change::Retire { version } => body.version = Some(version.clone()),
            _ => {}
        }
    }
    body
}

/// The change `verb` asks for with `body`'s fields; refuses missing and unused ones.
pub fn change(verb: &str, body: &ChangeRequest) -> Result<Change, ApiError> {
    let missing =
        |field: &str| ApiError::BadRequest(format!("{verb} needs a \"{field}\" field in the body"));
    let change = match verb {
        "weights" => Change::Weights {
            weights: body.weights.clone().ok_or_else(|| missing("weights"))?,
        },
        "switch" => Change::Switch {
            version: body.version.clone().ok_or_else(|| missing("version"))?,
        },
        "promote" => Change::Promote,
        "abort" => Change::Abort,
        "resume" => Change::Resume,
        "rollback" => Change::Rollback { to: body.to },
        "freeze" => Change::Freeze,
        "unfreeze" => Change::Unfreeze,
        "release" => Change::Release {
            version: body.version.clone().ok_or_else(|| missing("version"))?,
            spec: Box::new(RuntimeVersion {
                endpoints: body.endpoints.clone().ok_or_else(|| missing("endpoints"))?,
                protocol: body.protocol.clone().unwrap_or_default(),
                release: body.release.clone().unwrap_or_default(),
                rollout: body.rollout,
                addrs: Vec::new(),
            }),
        },
        "retire" => Change::Retire {
            version: body.version.clone().ok_or_else(|| missing("version"))?,
        },
        other => return Err(ApiError::NotFound(format!("no such action {other:?}"))),
    };
    let release_fields = body.endpoints.is_some()
        || body.protocol.is_some()
        || body.release.is_some()
        || body.rollout;
    let unused = match &change {
        Change::Weights { .. } => body.version.is_some() || body.to.is_some() || release_fields,
        Change::Switch { .. } | Change::Retire { .. } => {
            body.weights.is_some() || body.to.is_some() || release_fields
        }
        Change::Rollback { .. } => {
            body.weights.is_some() || body.version.is_some() || release_fields
        }
        Change::Release { .. } => body.weights.is_some() || body.to.is_some(),
        _ => {
            body.weights.is_some() || body.version.is_some() || body.to.is_some() || release_fields
        }
    };
    if unused {
        return Err(ApiError::BadRequest(format!(
            "{verb} takes only actor and reason (and force) besides its own field"
        )));
    }
    Ok(change)
}

/// The rollout action `verb` names.
pub fn rollout_action(verb: &str) -> Result<RolloutAction, ApiError> {
    RolloutAction::ALL
        .into_iter()
        .find(|action| action.verb() == verb)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no rollout action {verb:?} (start, pause, resume)"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_to_changes_and_back() {
        let request = ChangeRequest {
            version: Some("green".into()),
            ..ChangeRequest::default()
        };
        let switch = Change::Switch {
            version: "green".into(),
        };
        assert_eq!(change("switch", &request).unwrap(), switch);
        assert!(change("weights", &request).is_err());
        assert!(change("promote", &request).is_err());
        assert!(change("explode", &ChangeRequest::default()).is_err());
        let order = Order {
            command: Command::Change {
                service: "shop".into(),
                change: switch.clone(),
            },
            actor: "ann".into(),
            reason: String::new(),
            force: true,
        };
        let sent = body(&order);
        assert_eq!(change("switch", &sent).unwrap(), switch);
        assert!(sent.force);
        assert_eq!(
            route(&order.command),
            (Method::POST, "/services/shop/switch".to_string())
        );
    }

    #[test]
    fn every_verb_routes_to_itself() {
        for verb in Change::VERBS {
            let body = ChangeRequest {
                weights: (verb == "weights").then(|| BTreeMap::from([("blue".into(), 1)])),
                version: ["switch", "release", "retire"]
                    .contains(&verb)
                    .then(|| "blue".into()),
                endpoints: (verb == "release").then(|| vec!["127.0.0.1:1".into()]),
                ..ChangeRequest::default()
            };
            let decoded = change(verb, &body).unwrap();
            assert_eq!(decoded.verb(), verb);
            let command = Command::Change {
                service: "shop".into(),
                change: decoded,
            };
            assert_eq!(route(&command).1, format!("/services/shop/{verb}"));
        }
        for action in RolloutAction::ALL {
            assert_eq!(rollout_action(action.verb()).unwrap(), action);
        }
    }

    #[test]
    fn the_command_enum_is_tagged_json() {
        let command = Command::Change {
            service: "shop".into(),
            change: Change::Weights {
                weights: BTreeMap::from([("blue".into(), 9)]),
            },
        };
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(
            text,
            r#"{"command":"change","service":"shop","change":{"action":"weights","weights":{"blue":9}}}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), command);
        for bad in [
            r#"{"command":"change","service":"shop","change":{"action":"weights","weights":{},"x":1}}"#,
            r#"{"command":"change","service":"shop","x":1,"change":{"action":"promote"}}"#,
            r#"{"command":"change","service":"shop","change":{"action":"explode"}}"#,
            r#"{"command":"explode"}"#,
        ] {
            assert!(serde_json::from_str::<Command>(bad).is_err(), "{bad}");
        }
    }
}
