//! The admin API client over the Unix socket (used by `switchyard ctl` and by tests).

use crate::admin::api::{
    self, ChangeRequest, ErrorBody, HistoryResponse, IncidentsResponse, ServiceStatus,
    StatusResponse,
};
use crate::admin::rest;
use crate::control::command::{Command, Order};
use crate::control::record::RevisionRecord;
use crate::telemetry::shadow::ShadowReport;
use crate::verify::{ChecksRequest, ChecksResponse};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach switchyard at {}: {source} (is it running? pick the socket with --socket or $SWITCHYARD_SOCKET)", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to switchyard at {}: {why}", path.display())]
    Http { path: PathBuf, why: String },
    /// The server refused the request; `message` is its one-line error.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from switchyard: {0}")]
    Decode(String),
    /// The command ran and found failures (e.g. checks); its output, printed as usual.
    #[error("{0}")]
    Failed(String),
}

pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: impl Into<PathBuf>) -> AdminClient {
        AdminClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(Method::GET, "/status", None::<&()>).await
    }

    pub async fn service(&self, service: &str) -> Result<ServiceStatus, ClientError> {
        self.call(Method::GET, &format!("/services/{service}"), None::<&()>)
            .await
    }

    pub async fn history(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<HistoryResponse, ClientError> {
        let path = format!("/services/{service}/history?limit={limit}");
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Sends a command; `T` is its answer: a `RevisionRecord` for a change, a
    /// `RolloutStatus` for a rollout command, a `ReloadResponse` for a reload.
    pub async fn send<T: DeserializeOwned>(&self, order: &Order) -> Result<T, ClientError> {
        self.call(Method::POST, api::COMMANDS_PATH, Some(order))
            .await
    }

    /// A change given as a per-verb path would take it (`verb` and its body), sent as the
    /// `Order` it is.
    pub async fn change(
        &self,
        service: &str,
        verb: &str,
        request: &ChangeRequest,
    ) -> Result<RevisionRecord, ClientError> {
        let change = rest::change(verb, request).map_err(|err| ClientError::Api {
            status: err.status(),
            message: err.to_string(),
        })?;
        let command = Command::Change {
            service: service.to_string(),
            change,
        };
        self.send(&rest::order(command, request)).await
    }

    /// Runs a version's checks now (none: every version with traffic).
    pub async fn checks(
        &self,
        service: &str,
        version: Option<String>,
    ) -> Result<ChecksResponse, ClientError> {
        let path = format!("/services/{service}/checks");
        let request = ChecksRequest { version };
        self.call(Method::POST, &path, Some(&request)).await
    }

    /// What shadowing the service found so far.
    pub async fn shadow(&self, service: &str) -> Result<ShadowReport, ClientError> {
        let path = format!("/services/{service}/shadow");
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Incidents, newest first, optionally of one service.
    pub async fn incidents(&self, service: Option<&str>) -> Result<IncidentsResponse, ClientError> {
        let path = match service {
            Some(service) => format!("/incidents?service={service}"),
            None => "/incidents".to_string(),
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// The fleet this instance shares its routing with.
    pub async fn fleet(&self) -> Result<crate::fleet::FleetStatus, ClientError> {
        self.call(Method::GET, "/fleet", None::<&()>).await
    }

    /// A typed call: a JSON body out, a JSON answer back, or the server's error.
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(body) => serde_json::to_vec(body)
                .map_err(|err| ClientError::Decode(err.to_string()))?
                .into(),
            None => Bytes::new(),
        };
        let (status, bytes) = self.raw(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("switchyard answered {status}"));
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Decode(err.to_string()))
    }

    /// One request with any body; returns the status and the whole answer.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let http_error = |why: String| ClientError::Http {
            path: self.socket.clone(),
            why,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| http_error(err.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "switchyard");
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| http_error(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| http_error(err.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| http_error(err.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}
