//! What the admin API serves from: the proxy's parts and its own addresses and token.

use crate::control::Controller;
use crate::guard::incident::IncidentLog;
use crate::guard::watch::Board;
use crate::rollout::RolloutHandle;
use crate::verify::gate::Verified;
use std::net::SocketAddr;
use std::sync::Arc;

/// The parts of the proxy the admin API reads and commands.
#[derive(Clone)]
pub struct Parts {
    pub controller: Arc<Controller>,
    pub board: Arc<Board>,
    pub incidents: Arc<IncidentLog>,
    pub rollouts: RolloutHandle,
    /// The latest run of each Prometheus analysis.
    pub analyses: Arc<crate::analysis::AnalysisBoard>,
    /// The control plane behind the gate: what operator changes go through.
    pub verified: Arc<Verified<Controller>>,
}

/// What every admin request is served with.
pub(crate) struct AdminContext {
    pub(crate) parts: Parts,
    pub(crate) proxy_addr: SocketAddr,
    pub(crate) admin_addr: Option<SocketAddr>,
    pub(crate) token: Option<Vec<u8>>,
}
