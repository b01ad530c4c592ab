//! Data plane: the request path. Reads the routing table with one lock-free load per
//! request and never waits on the control plane.

pub mod body;
pub mod endpoint;
pub mod failure;
pub mod headers;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod watchdog;
