//! Data plane: the request path. Reads the routing table with one lock-free load per
//! request and never waits on the control plane.

pub mod access_line;
pub mod answer_stamp;
pub mod body;
pub mod client_body;
pub mod client_conn;
pub mod client_idle;
pub mod deadline;
pub mod failure;
mod fields;
mod forward;
pub mod forwarding;
pub mod grpc;
mod h1;
mod h2_forward;
pub mod headers;
pub mod proxy;
mod replay_body;
pub mod request_id;
pub mod served_body;
pub mod server;
pub mod shadow;
pub mod tls;

pub use client_body::ClientRequestBody;
