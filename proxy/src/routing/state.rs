//! The routing intent of one service: what the control plane records and the table is built from.

use crate::config::runtime::RuntimeVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub stable: String,
    pub weights: BTreeMap<String, u64>,
    /// Set by an abort (manual or the guard): all traffic on stable until `resume`.
    #[serde(default)]
    pub latched: bool,
    /// Set by `freeze`: no increase of traffic toward a non-stable version.
    #[serde(default)]
    pub frozen: bool,
    /// Versions added at runtime (`ctl release`), by name: topology the journal carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime: BTreeMap<String, RuntimeVersion>,
}

impl ServiceState {
    /// The weights traffic actually follows: everything on stable while latched.
    pub fn effective_weights(&self) -> BTreeMap<String, u64> {
        if self.latched {
            BTreeMap::from([(self.stable.clone(), 1)])
        } else {
            self.weights.clone()
        }
    }
}
