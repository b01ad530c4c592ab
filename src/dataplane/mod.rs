//! Data plane: the request path. Reads the routing table with one lock-free load per
//! request and never waits on the control plane.

pub mod body;
pub mod failure;
pub mod headers;
pub mod proxy;
pub mod server;
pub mod tls;
