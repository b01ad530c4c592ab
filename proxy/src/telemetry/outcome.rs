//! How one proxied exchange ended.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// The upstream refused or could not be reached.
    ConnectFailed,
    /// The upstream closed or reset the connection, or sent something that is not HTTP.
    Reset,
    /// The upstream did not answer in time.
    Timeout,
    /// A gRPC call ended with a status the service counts as the server's failure
    /// (`grpc_error_codes`), whatever the HTTP status.
    GrpcError,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Status2xx,
        Outcome::Status3xx,
        Outcome::Status4xx,
        Outcome::Status5xx,
        Outcome::ConnectFailed,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::GrpcError,
    ];

    pub fn from_status(status: http::StatusCode) -> Outcome {
        match status.as_u16() {
            500..=599 => Outcome::Status5xx,
            400..=499 => Outcome::Status4xx,
            300..=399 => Outcome::Status3xx,
            _ => Outcome::Status2xx,
        }
    }

    /// Failures the version is to blame for (a 4xx is the client's doing).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::Status5xx
                | Outcome::ConnectFailed
                | Outcome::Reset
                | Outcome::Timeout
                | Outcome::GrpcError
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Status2xx => "2xx",
            Outcome::Status3xx => "3xx",
            Outcome::Status4xx => "4xx",
            Outcome::Status5xx => "5xx",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::GrpcError => "grpc_error",
        }
    }
}

/// How a client made an exchange fail. Never the version's doing: counted apart from
/// `Outcome`, so it never reaches the guard or a version's error rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The client's body ended early (connection closed or stream reset mid-upload).
    AbandonedBody,
    /// The client's body framing was broken (bad chunk sizes and the like).
    MalformedBody,
    /// The client went away (or was dropped for idling) before the exchange finished.
    Gone,
    /// A gRPC call outlived the deadline its client set (`grpc-timeout`), and the
    /// version was no slower than it recently is.
    Deadline,
}

impl ClientFault {
    pub const ALL: [ClientFault; 4] = [
        ClientFault::AbandonedBody,
        ClientFault::MalformedBody,
        ClientFault::Gone,
        ClientFault::Deadline,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            ClientFault::AbandonedBody => "abandoned_body",
            ClientFault::MalformedBody => "malformed_body",
            ClientFault::Gone => "gone",
            ClientFault::Deadline => "deadline",
        }
    }
}
