//! The admin API: HTTP/1.1 + JSON on a Unix socket and optionally TCP, plus `/metrics`
//! and a self-refreshing status page at `/`.

pub mod api;
mod commands;
mod context;
mod metrics;
mod release;
pub mod rest;
mod routes;
mod server;
mod status;

pub use context::Parts;
pub use routes::MAX_BODY_BYTES;
pub use server::{AdminError, AdminServer, MAX_HEAD_BYTES};
