//! What checking one expectation found: kept in a run's result, written by `expect`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub expectation: String,
    pub pass: bool,
    pub detail: String,
}
