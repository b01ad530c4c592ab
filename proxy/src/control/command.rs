//! The command model: every command an operator (or the guard, or a rollout) can give, as
//! one serde-tagged enum. `ctl` builds it, the admin server decodes it, and the control
//! plane (or, for rollouts, the rollout driver) carries it out.

use super::record::ChangeKind;
use crate::config::runtime::RuntimeVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A mutating command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A change to one service's routing.
    Change { service: String, change: Change },
    /// `rollout SERVICE start|pause|resume`.
    Rollout {
        service: String,
        action: RolloutAction,
    },
    /// `approve SERVICE`: the rollout's step that waits for approval may go on.
    Approve { service: String },
    /// Re-read the config file.
    Reload,
}

/// A change to one service's routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Replace the weights; versions not named get 0.
    Weights {
        weights: BTreeMap<String, u64>,
    },
    /// All traffic to a version, which becomes stable.
    Switch {
        version: String,
    },
    /// The one non-stable version with traffic becomes stable at 100%.
    Promote,
    /// All traffic to stable now, latched until `Resume`.
    Abort,
    Resume,
    /// Back to the stable+weights of a revision; `None`: before the last routing change.
    Rollback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
    },
    Freeze,
    Unfreeze,
    /// Add a version at runtime, with no traffic (`ctl release`).
    Release {
        version: String,
        spec: Box<RuntimeVersion>,
    },
    /// Remove a version added at runtime that takes no traffic (`ctl retire`).
    Retire {
        version: String,
    },
}

impl Change {
    pub const VERBS: [&'static str; 10] = [
        "weights", "switch", "promote", "abort", "resume", "rollback", "freeze", "unfreeze",
        "release", "retire",
    ];

    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Weights { .. } => ChangeKind::Weights,
            Change::Switch { .. } => ChangeKind::Switch,
            Change::Promote => ChangeKind::Promote,
            Change::Abort => ChangeKind::Abort,
            Change::Resume => ChangeKind::Resume,
            Change::Rollback { .. } => ChangeKind::Rollback,
            Change::Freeze => ChangeKind::Freeze,
            Change::Unfreeze => ChangeKind::Unfreeze,
            Change::Release { .. } => ChangeKind::Release,
            Change::Retire { .. } => ChangeKind::Retire,
        }
    }

    /// Its name on the command line and in the admin API path.
    pub fn verb(&self) -> &'static str {
        self.kind().label()
    }
}

/// `rollout SERVICE start|pause|resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    /// Put the canary at the first step; it advances on healthy verdicts.
    Start,
    /// Hold the step in force.
    Pause,
    /// Carry on from the step in force (its bake starts over).
    Resume,
    /// Let the step in force go on once it has baked (`ctl approve`; a step with
    /// `approve = true`). Its own command and path, not a `rollout` verb.
    Approve,
}

impl RolloutAction {
    pub const ALL: [RolloutAction; 3] = [
        RolloutAction::Start,
        RolloutAction::Pause,
        RolloutAction::Resume,
    ];

    pub fn verb(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Approve => "approve",
        }
    }
}

/// A command with who gives it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub command: Command,
    pub actor: String,
    pub reason: String,
    /// Go ahead even where a pre-flight gate refuses; recorded with the revision.
    #[serde(default)]
    pub force: bool,
}
