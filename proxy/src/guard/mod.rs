//! The guard: judges each canary against its stable version on live traffic and cuts a
//! bad one back at once.

pub mod after_switch;
pub mod evidence;
pub mod incident;
pub mod judge;
pub mod probe;
pub mod watch;

use crate::dataplane::proxy::DataPlane;
use crate::verify::Verifier;
use incident::IncidentLog;
use std::sync::Arc;
use watch::Board;

/// What the guard works with: the control plane (through its narrow interface), the data
/// plane it watches, and its own verdicts and incidents.
pub struct Guard<C> {
    pub control: Arc<C>,
    /// What the checks found: the guard never cuts back into a failing return point.
    pub verifier: Arc<Verifier>,
    pub plane: Arc<DataPlane>,
    pub board: Arc<Board>,
    pub incidents: Arc<IncidentLog>,
}
