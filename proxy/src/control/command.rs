//! The command model: every command an operator (or the guard, or a rollout) can give, as
//! one serde-tagged enum. `ctl` builds an `Order` and sends it as JSON (`POST /commands`),
//! the admin server decodes it with serde, and the control plane (or, for rollouts, the
//! rollout driver) matches on it. Serde's names are the one spelling of each verb: the
//! API's paths and the CLI's arguments are decoded through them.

use super::record::ChangeKind;
use crate::config::runtime::RuntimeVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A mutating command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
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
    Reload {},
}

/// A change to one service's routing. Variants without fields are written `Name {}`: serde
/// refuses unknown fields only in struct variants of an internally tagged enum.
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
    Promote {},
    /// All traffic to stable now, latched until `Resume`.
    Abort {},
    Resume {},
    /// Back to the stable+weights of a revision; `None`: before the last routing change.
    Rollback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
    },
    Freeze {},
    Unfreeze {},
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
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Weights { .. } => ChangeKind::Weights,
            Change::Switch { .. } => ChangeKind::Switch,
            Change::Promote {} => ChangeKind::Promote,
            Change::Abort {} => ChangeKind::Abort,
            Change::Resume {} => ChangeKind::Resume,
            Change::Rollback { .. } => ChangeKind::Rollback,
            Change::Freeze {} => ChangeKind::Freeze,
            Change::Unfreeze {} => ChangeKind::Unfreeze,
            Change::Release { .. } => ChangeKind::Release,
            Change::Retire { .. } => ChangeKind::Retire,
        }
    }

    /// Its name in messages: its revision's kind, which serde spells the same (tested).
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
    /// Its name in messages, as serde spells it (tested).
    pub fn verb(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Approve => "approve",
        }
    }
}

/// A command with who gives it and why: the body of `POST /commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub command: Command,
    /// Who asks (a user name, or `guard`); `api` when absent.
    #[serde(default = "api_actor")]
    pub actor: String,
    #[serde(default)]
    pub reason: String,
    /// Go ahead even where a pre-flight gate refuses; recorded with the revision.
    #[serde(default)]
    pub force: bool,
}

fn api_actor() -> String {
    "api".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, to check that the messages' names are serde's.
    fn every_change() -> Vec<Change> {
        vec![
            Change::Weights {
                weights: BTreeMap::from([("blue".into(), 9)]),
            },
            Change::Switch {
                version: "green".into(),
            },
            Change::Promote {},
            Change::Abort {},
            Change::Resume {},
            Change::Rollback { to: Some(3) },
            Change::Freeze {},
            Change::Unfreeze {},
            Change::Release {
                version: "v2".into(),
                spec: Box::new(RuntimeVersion {
                    endpoints: vec!["10.0.0.7:80".into()],
                    ..RuntimeVersion::default()
                }),
            },
            Change::Retire {
                version: "v2".into(),
            },
        ]
    }

    #[test]
    fn a_change_is_named_in_messages_as_serde_spells_it() {
        for change in every_change() {
            let value = serde_json::to_value(&change).unwrap();
            assert_eq!(value["action"], change.verb(), "{value}");
            assert_eq!(serde_json::from_value::<Change>(value).unwrap(), change);
        }
        for action in [
            RolloutAction::Start,
            RolloutAction::Pause,
            RolloutAction::Resume,
            RolloutAction::Approve,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.verb());
        }
    }

    #[test]
    fn every_order_travels_as_json_and_back() {
        let mut commands: Vec<Command> = every_change()
            .into_iter()
            .map(|change| Command::Change {
                service: "shop".into(),
                change,
            })
            .collect();
        commands.extend([
            Command::Rollout {
                service: "shop".into(),
                action: RolloutAction::Pause,
            },
            Command::Approve {
                service: "shop".into(),
            },
            Command::Reload {},
        ]);
        for command in commands {
            let order = Order {
                command,
                actor: "ann".into(),
                reason: "why".into(),
                force: true,
            };
            let text = serde_json::to_string(&order).unwrap();
            assert_eq!(
                serde_json::from_str::<Order>(&text).unwrap(),
                order,
                "{text}"
            );
        }
    }

    #[test]
    fn an_order_is_tagged_json_with_who_defaulting_to_api() {
        let text = r#"{"command":{"type":"change","service":"shop","change":{"action":"weights","weights":{"blue":9}}}}"#;
        let order: Order = serde_json::from_str(text).unwrap();
        assert_eq!(order.actor, "api");
        assert_eq!(
            order.command,
            Command::Change {
                service: "shop".into(),
                change: Change::Weights {
                    weights: BTreeMap::from([("blue".into(), 9)]),
                },
            }
        );
    }
}
