//! Routing: the immutable table the data plane reads, and the state it is built from.

pub mod path;
pub mod split;
pub mod state;
pub mod table;

pub use state::ServiceState;
pub use table::{Pick, RoutingTable, ServiceRoute, ShadowRoute, VersionRoute};
