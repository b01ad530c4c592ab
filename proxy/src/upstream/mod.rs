//! The upstream side: endpoints, their keep-alive pools, the retry budget, connections
//! (plain or TLS), the HTTP/1 client codec that drives an upstream connection inside the
//! request's own task, and shared HTTP/2 connections.
//!
//! Below both `routing` and `dataplane`: nothing here imports the request path, the
//! routing table or the guard.

pub mod budget;
pub mod connect;
pub mod connection;
pub mod endpoint;
pub mod h1;
pub mod h2;
pub mod pool;
pub mod stream;
pub mod tls;
pub mod tls_cache;
