//! Verified versions: active health checks of every endpoint (`health`), smoke checks of
//! a version as a whole (`smoke`), both over connections of their own (`request`).

pub mod health;
pub mod request;
pub mod smoke;
