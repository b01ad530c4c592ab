//! The guard: judges each canary against its stable version on live traffic and cuts a
//! bad one back at once.

pub mod after_switch;
pub mod incident;
pub mod judge;
pub mod probe;
pub mod watch;
