//! switchyard: a reverse proxy that weights live traffic between versions of a service
//! and cuts a bad canary back to the stable version on its own.

pub mod admin;
pub mod analysis;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod fleet;
pub mod guard;
pub mod http1;
pub mod rollout;
pub mod routing;
pub mod run;
pub mod telemetry;
pub mod upstream;
pub mod verify;
