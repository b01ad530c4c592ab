//! What the request path knows of the client connection a request came in on.

use super::client_idle::IdleMonitor;
use http::HeaderValue;
use std::sync::Arc;

/// Facts about the client connection a request came in on.
#[derive(Debug)]
pub struct ClientConn {
    pub ip: HeaderValue,
    pub tls: bool,
    /// The connection's `client_idle` watch.
    pub idle: Arc<IdleMonitor>,
    /// `max_header_bytes`, held exactly here (hyper's own bound is a buffer size).
    pub max_header_bytes: usize,
}
